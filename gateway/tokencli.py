"""Token selection shared by the ``token``, ``key`` and ``cert`` commands.

A token is named either through the gateway configuration (``-c FILE [--token ID]``,
the first token by default) or directly (``--token-label LABEL`` with ``--pin-file``
or ``--pin-env``; ``--module`` overrides the automatic SoftHSM2 search).  PINs are
never taken from the command line.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from hsm.config import PinSource, TokenSpec
from hsm.token import Token
from protocols.errors import UsageError


def display_name(name: x509.Name) -> str:
    """RFC 4514 text with X-Road's attribute names (serialNumber, businessCategory)."""
    return name.rfc4514_string({NameOID.SERIAL_NUMBER: "serialNumber", NameOID.BUSINESS_CATEGORY: "businessCategory"})


def add_token_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("token selection")
    g.add_argument("-c", "--config", type=Path, help="gateway configuration file (tokens from it)")
    g.add_argument("--token", metavar="ID", help="token id in the configuration (default: the first)")
    g.add_argument("--token-label", metavar="LABEL", help="token label, without a configuration file")
    g.add_argument("--module", metavar="PATH", help="PKCS#11 library (default: SoftHSM2, found automatically)")
    g.add_argument("--pin-file", type=Path, metavar="FILE", help="file holding the user PIN (mode 0600)")
    g.add_argument("--pin-env", metavar="NAME", help="environment variable holding the user PIN")


def pin_source(args: argparse.Namespace, *, prompt: str | None = None) -> PinSource:
    if args.pin_file is not None:
        return PinSource(file=args.pin_file)
    if args.pin_env is not None:
        return PinSource(env=args.pin_env)
    if prompt is not None and sys.stdin.isatty():
        # Put the PIN into this process's environment only: never argv, never a file.
        os.environ["_VDXP_PROMPTED_PIN"] = getpass.getpass(prompt)
        return PinSource(env="_VDXP_PROMPTED_PIN")
    raise UsageError("give the PIN with --pin-file FILE or --pin-env NAME", code="usage.pin_missing")


def token_spec(args: argparse.Namespace) -> TokenSpec:
    if args.config is not None:
        from gateway.config import load_config

        cfg = load_config(args.config)
        if not cfg.tokens:
            raise UsageError(f"{args.config}: no tokens configured", code="config.invalid")
        if args.token is None:
            return cfg.tokens[0]
        try:
            return cfg.token(args.token)
        except KeyError:
            raise UsageError(f"no token {args.token!r} in {args.config}", code="usage.token_unknown") from None
    if args.token_label is None:
        raise UsageError("name the token with -c FILE [--token ID] or --token-label LABEL",
                         code="usage.token_missing")
    return TokenSpec(id=args.token_label, label=args.token_label, module=args.module,
                     pin=pin_source(args, prompt=f"User PIN for token {args.token_label}: "))


def open_token(args: argparse.Namespace) -> Token:
    return Token(token_spec(args))
