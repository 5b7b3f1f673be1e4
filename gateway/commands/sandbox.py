"""``vdxp-gateway sandbox``: a whole federation on loopback addresses (see :mod:`gateway.sandbox`).

    vdxp-gateway sandbox up DIR [--addresses 127.0.0.0/24]
    vdxp-gateway sandbox status DIR
    vdxp-gateway sandbox down DIR
    vdxp-gateway sandbox example-service --listen ENDPOINT

``up`` returns once every process is up and prints ``DIR/sandbox.json`` (exit 0); on failure it
stops what it started and prints one line ``error: <code>: <what>`` (exit 1).  ``status`` prints
the JSON with ``"alive"`` per process (exit 0 when all are alive, 1 otherwise).  ``down`` stops
everything by PID and keeps the files (exit 0, also when nothing was running).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway import sandbox


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("sandbox", help="a whole federation on loopback addresses: up, status, down",
                       description="Start a development federation in the background (central, CA with OCSP, "
                                   "TSA, a provider and a consumer gateway, an example service), each on its own "
                                   "loopback address, and describe it in DIR/sandbox.json.")
    ssub = p.add_subparsers(dest="sandbox_command", metavar="ACTION", required=True)

    up = ssub.add_parser("up", help="build and start a sandbox in DIR (new or empty), print sandbox.json")
    up.add_argument("dir", type=Path, help="directory for everything (tokens, PKI, configurations, logs)")
    up.add_argument("--addresses", default=sandbox.DEFAULT_ADDRESSES,
                    help=f"loopback range, at least a /28 (default {sandbox.DEFAULT_ADDRESSES}); two sandboxes "
                         "run side by side on different ranges")
    up.add_argument("--timeout", type=float, default=sandbox.START_TIMEOUT,
                    help=f"seconds each process may take to come up (default {sandbox.START_TIMEOUT:.0f})")
    up.add_argument("--quiet", action="store_true",
                    help="no progress lines on standard error (they are only shown on a terminal anyway)")
    up.add_argument("--sign-key-type", choices=("rsa", "ec"), default="rsa",
                    help="the gateways' member signing keys: rsa (RSA-2048, default) or ec (P-256)")
    up.set_defaults(func=_up)

    st = ssub.add_parser("status", help="print sandbox.json with \"alive\" for every process")
    st.add_argument("dir", type=Path)
    st.set_defaults(func=_status)

    dn = ssub.add_parser("down", help="stop every process of the sandbox (SIGTERM, then SIGKILL); keep the files")
    dn.add_argument("dir", type=Path)
    dn.add_argument("--timeout", type=float, default=sandbox.STOP_TIMEOUT,
                    help=f"seconds between SIGTERM and SIGKILL (default {sandbox.STOP_TIMEOUT:.0f})")
    dn.set_defaults(func=_down)

    ex = ssub.add_parser("example-service", help="run the example provider service in the foreground",
                         description="The example service behind the sandbox's provider gateway: SOAP echo "
                                     "(POST /soap) and REST items (GET/POST /items[/ID]).")
    ex.add_argument("--listen", default="tcp:8081:interface=127.0.0.1",
                    help="Twisted server endpoint (default tcp:8081:interface=127.0.0.1)")
    ex.set_defaults(func=_example)


def _up(args: argparse.Namespace) -> int:
    def progress(text: str) -> None:
        if not args.quiet and sys.stderr.isatty():
            sys.stderr.write(f"sandbox: {text}\n")
            sys.stderr.flush()

    data = sandbox.up(args.dir, args.addresses, timeout=args.timeout, progress=progress,
                      sign_key_type=args.sign_key_type)
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0


def _status(args: argparse.Namespace) -> int:
    data = sandbox.status(args.dir)
    print(json.dumps(data, indent=2, ensure_ascii=False))
    alive = [p["alive"] for p in data.get("processes", [])]
    alive += [g["alive"] for g in data["gateways"]]
    return 0 if all(alive) else 1


def _down(args: argparse.Namespace) -> int:
    for name, pid, was_running in sandbox.down(args.dir, args.timeout):
        print(f"{name} (pid {pid}): {'stopped' if was_running else 'not running'}")
    return 0


def _example(args: argparse.Namespace) -> int:
    from twisted.internet import task
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from gateway.exampleservice import run_forever
    from protocols.errors import UsageError

    try:
        serverFromString(MemoryReactor(), args.listen)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"bad --listen endpoint {args.listen!r}: {exc}") from None

    def main(reactor: Any) -> Any:
        observer: Any = textFileLogObserver(sys.stderr)
        globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

        def failed(failure: Any) -> None:
            sys.stderr.write(f"error: sandbox.listen_failed: cannot listen on {args.listen}: "
                             f"{failure.getErrorMessage()}\n")
            raise SystemExit(1)

        return run_forever(reactor, args.listen, sys.stdout).addErrback(failed)

    task.react(main)
    return 0  # pragma: no cover - react exits
