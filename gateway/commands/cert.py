"""``vdxp-gateway cert``: import certificates onto the token next to their keys, list them."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from gateway.devpki import load_certificate
from gateway.tokencli import add_token_arguments, display_name, open_token


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("cert", help="import and list certificates",
                       description="Import certificates onto the token (next to the key they certify) "
                                   "and list them with the days left to expiry.")
    csub = p.add_subparsers(dest="cert_command", metavar="ACTION", required=True)
    imp = csub.add_parser("import", help="store a certificate (PEM or DER) next to its key")
    add_token_arguments(imp)
    imp.add_argument("file", type=Path, help="certificate file")
    imp.set_defaults(func=_import)
    ls = csub.add_parser("list", help="list certificates with days to expiry")
    add_token_arguments(ls)
    ls.add_argument("--warn-days", type=int, default=30, help="mark certificates expiring within N days")
    ls.set_defaults(func=_list)


def _import(args: argparse.Namespace) -> int:
    cert = load_certificate(args.file)
    token = open_token(args)
    key = token.import_certificate(cert)
    print(f"imported {display_name(cert.subject)} (serial {cert.serial_number:x}) for key {key.key_id}")
    return 0


def _list(args: argparse.Namespace) -> int:
    token = open_token(args)
    now = datetime.now(UTC)
    count = 0
    for key in token.list_keys():
        for cert in key.certificates:
            count += 1
            days = (cert.not_valid_after_utc - now).days
            flag = "  EXPIRED" if days < 0 else ("  EXPIRES SOON" if days <= args.warn_days else "")
            print(f"{key.key_id}  {key.usage or '-':4}  {display_name(cert.subject)}  serial "
                  f"{cert.serial_number:x}  not after {cert.not_valid_after_utc:%Y-%m-%d}  {days} days{flag}")
    if not count:
        print("no certificates on the token")
    return 0
