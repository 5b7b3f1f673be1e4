"""``vdxp-gateway demo``: the self-contained demonstration (see :mod:`gateway.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo", help="show the HSM signer, batch hash chains, OCSP and RFC 3161 working end to end",
        description="Create a SoftHSM2 token, keys and certificates from a development CA, start a "
                    "development OCSP responder and TSA on 127.0.0.1, batch-sign messages with X-Road hash "
                    "chains, and verify every signature, chain, OCSP response and time-stamp token.")
    p.add_argument("--dir", type=Path, help="working directory (new or empty; default: a new temporary one)")
    p.add_argument("--messages", type=int, default=200, help="messages signed per key and mode (default 200)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gateway.demo import main

    return main(args.dir, args.messages)
