"""`vdxp-gateway check-config -c FILE`: validate a configuration file completely.

Prints ``OK: <summary>`` and exits 0, or prints every problem as one line
``<key path>: <message>`` on stderr and exits 2.  Nothing is opened or bound: tokens
are not logged into, listeners are parsed but not bound.
"""

from __future__ import annotations

import argparse
import sys

from gateway.config import ConfigError, load_config

DEFAULT_CONFIG = "/etc/vdxp-gateway/gateway.yaml"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "check-config",
        help="validate a configuration file and print every problem",
        description="Validate a gateway configuration file. Exit 0 if valid, 2 otherwise.",
    )
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"configuration file (default {DEFAULT_CONFIG})")
    p.set_defaults(func=check_config)


def check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        if exc.code != "config.invalid":
            # Missing file or YAML syntax: one coded line, like every CLI failure.
            sys.stderr.write(f"error: {exc.code}: {exc.lines()[0]}\n")
        else:
            for line in exc.lines():
                sys.stderr.write(f"{line}\n")
        return 2
    sys.stdout.write(f"OK: {config.summary()}\n")
    return 0
