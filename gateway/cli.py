"""The ``vdxp-gateway`` command line.

Each sub-command lives in :mod:`gateway.commands` as a module with a
``register(subparsers)`` function that adds its parser and sets ``func``: a callable
taking the parsed namespace and returning an exit code.

Exit codes: 0 success, 2 usage or configuration error, 1 any other failure.  Every
failure is printed as one line ``error: <dotted.code>: <what went wrong>``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from protocols.errors import UsageError, VdxpError

COMMAND_MODULES = (
    "run",
    "check_config",
    "token",
    "key",
    "cert",
    "pki",
    "tsa",
    "ocsp",
    "conf",
    "log",
    "central",
    "demo",
    "sandbox",
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"error: usage.invalid: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vdxp-gateway",
        description="X-Road compatible security-server gateway for the VDXP document exchange axis.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"gateway.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except UsageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    except VdxpError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_FAILURE
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
