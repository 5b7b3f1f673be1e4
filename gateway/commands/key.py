"""``vdxp-gateway key``: generate keys on a token and make certificate requests for them."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from gateway.tokencli import add_token_arguments, display_name, open_token
from protocols.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("key", help="generate keys and certificate requests",
                       description="Generate key pairs on a token and certificate signing requests for them.")
    ksub = p.add_subparsers(dest="key_command", metavar="ACTION", required=True)

    gen = ksub.add_parser("generate", help="generate a key pair on the token (the private key never leaves it)")
    add_token_arguments(gen)
    gen.add_argument("--usage", choices=("sign", "auth"),
                     help="sign: a member's message-signing key; auth: the server's TLS authentication key "
                          "(required unless --label names another key, e.g. a TSA's)")
    gen.add_argument("--member", metavar="ID",
                     help="owning member, INSTANCE/CLASS/CODE (e.g. VN-TEST/GOV/000.00.00.H41)")
    gen.add_argument("--type", dest="key_type", choices=("rsa", "ec"), default="rsa", help="default rsa")
    gen.add_argument("--bits", type=int, default=2048, help="RSA key size (default 2048)")
    gen.add_argument("--label", help="CKA_LABEL (default usage:member)")
    gen.set_defaults(func=_generate)

    csr = ksub.add_parser("csr", help="make a certificate signing request for a key on the token",
                          description="Make a PKCS#10 request signed by the key on the token, with the subject "
                                      "of the certificate profile (X-Road Basic): auth CN=<server>, "
                                      "serialNumber=<member code>; sign CN/O=<member name>, "
                                      "businessCategory=<member class>, serialNumber=<member code>.")
    add_token_arguments(csr)
    csr.add_argument("--key-id", required=True, help="key id (hex CKA_ID, from `token list`)")
    csr.add_argument("--profile", choices=("sign", "auth", "tsa"), required=True,
                     help="tsa: a time-stamping authority's key (subject CN=<server>, O=<member name>)")
    csr.add_argument("--member", required=True, metavar="ID", help="INSTANCE/CLASS/CODE")
    csr.add_argument("--member-name", required=True, help="the member's (agency's) name")
    csr.add_argument("--server", help="server code or DNS name (auth profile)")
    csr.add_argument("--format", choices=("pem", "der"), default="pem")
    csr.add_argument("--out", type=Path, help="output file (default: standard output)")
    csr.set_defaults(func=_csr)


def _generate(args: argparse.Namespace) -> int:
    from protocols.certprofile import MemberId
    from protocols.errors import VdxpError

    if args.label is None and (args.usage is None or args.member is None):
        raise UsageError("give --usage and --member (or --label for a key of another kind)",
                         code="usage.key_usage_missing")
    if args.member is not None:
        try:
            MemberId.parse(args.member)
        except VdxpError as exc:
            raise UsageError(f"--member: {exc.message}", code="usage.member_invalid") from None
    token = open_token(args)
    key = token.generate_key(args.key_type, bits=args.bits, usage=args.usage, member=args.member,
                             label=args.label)
    print(f"generated {key.key_type.upper()}-{key.bits} key {key.key_id} ({key.label}) on token {token.spec.id}")
    return 0


def make_csr(token: object, key_id: str, profile: str, member: str, member_name: str,
             server: str | None) -> bytes:
    """A DER CSR for the key ``key_id`` on ``token`` (an :class:`hsm.token.Token`)."""
    from hsm.signer import resolve_mechanism
    from hsm.softkey import ecdsa_raw_to_der
    from hsm.token import Token
    from protocols import certprofile, csr

    assert isinstance(token, Token)
    mid = certprofile.MemberId.parse(member)
    if profile in ("auth", "tsa"):
        if not server:
            raise UsageError(f"the {profile} profile needs --server", code="usage.server_missing")
        subject = certprofile.auth_subject(mid, member_name, server)
    else:
        subject = certprofile.sign_subject(mid, member_name)
    key = token.find_key(key_id=key_id)
    info = csr.csr_info_der(subject, key.public_key_der)
    mechanism = resolve_mechanism(token.spec.sign_mechanism, key.key_type)
    sig = token.sign(key.key_id, mechanism, hashlib.sha256(info).digest(), "sha256")
    if mechanism == "ecdsa":
        return csr.assemble_csr(info, "sha256-ecdsa", ecdsa_raw_to_der(sig))
    return csr.assemble_csr(info, "sha256-rsa-pss" if mechanism == "rsa-pss" else "sha256-rsa", sig)


def _csr(args: argparse.Namespace) -> int:
    from protocols import csr

    token = open_token(args)
    der = make_csr(token, args.key_id, args.profile, args.member, args.member_name, args.server)
    req = csr.load_csr(der)
    data = der if args.format == "der" else req.public_bytes(serialization.Encoding.PEM)
    if args.out:
        args.out.write_bytes(data)
        print(f"wrote {args.out}: {display_name(req.subject)}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
    return 0
