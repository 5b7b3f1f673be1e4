"""``vdxp-gateway token``: initialise (SoftHSM2, development) and list tokens."""

from __future__ import annotations

import argparse
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from gateway.tokencli import add_token_arguments, display_name, open_token
from hsm.config import PinSource, resolve_module
from hsm.inittoken import init_token
from hsm.p11thread import ModuleThread
from hsm.token import KeyInfo
from protocols.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("token", help="initialise and list PKCS#11 tokens",
                       description="Initialise (SoftHSM2, for development) and list PKCS#11 tokens.")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)

    init = tsub.add_parser("init", help="initialise a token in the first free slot (development)",
                           description="Initialise a token in the first free slot of the PKCS#11 module "
                                       "(SoftHSM2 honours $SOFTHSM2_CONF). PINs come from files, environment "
                                       "variables or a prompt, never from the command line.")
    init.add_argument("--label", required=True, help="token label (1-32 bytes)")
    init.add_argument("--module", metavar="PATH", help="PKCS#11 library (default: SoftHSM2)")
    init.add_argument("--pin-file", type=Path, metavar="FILE",
                      help="user PIN file (mode 0600); with --generate-pins it is created")
    init.add_argument("--pin-env", metavar="NAME", help="environment variable holding the user PIN")
    init.add_argument("--so-pin-file", type=Path, metavar="FILE",
                      help="security officer PIN file (default with --generate-pins: PIN_FILE.so)")
    init.add_argument("--so-pin-env", metavar="NAME", help="environment variable holding the SO PIN")
    init.add_argument("--generate-pins", action="store_true",
                      help="create random PINs and write them to new 0600 files")
    init.set_defaults(func=_init)

    ls = tsub.add_parser("list", help="show the token, its keys (usage, member) and certificates")
    add_token_arguments(ls)
    ls.set_defaults(func=_list)


def write_secret_file(path: Path, value: str) -> None:
    """Create ``path`` with mode 0600 from the start and write ``value`` (refuses to overwrite)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists; not overwriting a secret", code="usage.file_exists") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value + "\n")


def _pin(file: Path | None, env: str | None, what: str) -> str:
    if file is not None:
        return PinSource(file=file).read()
    if env is not None:
        return PinSource(env=env).read()
    import getpass
    import sys

    if sys.stdin.isatty():
        first = getpass.getpass(f"{what}: ")
        if first != getpass.getpass(f"{what} again: "):
            raise UsageError(f"the two {what}s differ", code="usage.pin_mismatch")
        return first
    raise UsageError(f"give the {what} with a file or an environment variable", code="usage.pin_missing")


def _init(args: argparse.Namespace) -> int:
    module = resolve_module(args.module)
    if args.generate_pins:
        if args.pin_file is None:
            raise UsageError("--generate-pins needs --pin-file FILE", code="usage.pin_missing")
        so_file = args.so_pin_file or args.pin_file.with_name(args.pin_file.name + ".so")
        user_pin, so_pin = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        write_secret_file(args.pin_file, user_pin)
        write_secret_file(so_file, so_pin)
    else:
        so_pin = _pin(args.so_pin_file, args.so_pin_env, "SO PIN")
        user_pin = _pin(args.pin_file, args.pin_env, "user PIN")
    serial = ModuleThread.for_module(module).call(init_token, module, args.label, so_pin, user_pin)
    print(f"token {args.label!r} initialised (serial {serial}) in {module}")
    return 0


def describe_key(key: KeyInfo, now: datetime | None = None) -> list[str]:
    now = now or datetime.now(UTC)
    usage = key.usage or "-"
    lines = [f"  key {key.key_id}  {key.key_type.upper()}-{key.bits}  usage {usage}  "
             f"member {key.member or '-'}  label {key.label!r}"]
    for cert in key.certificates:
        days = (cert.not_valid_after_utc - now).days
        lines.append(f"    cert serial {cert.serial_number:x}  subject {display_name(cert.subject)}  "
                     f"expires {cert.not_valid_after_utc:%Y-%m-%d} ({days} days)")
    return lines


def _list(args: argparse.Namespace) -> int:
    token = open_token(args)
    info = token.info()
    keys = token.list_keys()
    print(f"token {info['id']}: label {info['label']!r} serial {info['serial']} "
          f"({info['manufacturer']} {info['model']}) module {info['module']}")
    if not keys:
        print("  no keys")
    for key in keys:
        print("\n".join(describe_key(key)))
    return 0
