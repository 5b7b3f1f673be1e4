"""`vdxp-gateway pki`: a development PKI (root, intermediate, OCSP responder, CA database).

vdxp-gateway pki init DIR [--key-type ec|rsa] [--instance VN-TEST] [--ocsp-url URL]
vdxp-gateway pki issue DIR --csr FILE --profile auth|sign|tsa|ocsp [--days N] [--out FILE]
vdxp-gateway pki revoke DIR --serial HEX [--reason keyCompromise]
vdxp-gateway pki status DIR --serial HEX
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from gateway import devpki
from protocols.errors import CertificateError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("pki", help="development PKI: init, issue, revoke, status")
    pki_sub = p.add_subparsers(dest="pki_command", metavar="ACTION")
    pki_sub.required = True

    init = pki_sub.add_parser("init", help="create a root CA, an intermediate CA and an OCSP responder")
    init.add_argument("dir", type=Path)
    init.add_argument("--key-type", choices=devpki.KEY_TYPES, default="ec")
    init.add_argument("--instance", default=devpki.DEFAULT_INSTANCE)
    init.add_argument(
        "--ocsp-url", default=devpki.DEFAULT_OCSP_URL, help="default OCSP URL put in issued certificates"
    )
    init.set_defaults(func=_init)

    issue = pki_sub.add_parser("issue", help="issue a certificate from a CSR (PEM or DER)")
    issue.add_argument("dir", type=Path)
    issue.add_argument("--csr", type=Path, required=True)
    issue.add_argument("--profile", choices=devpki.PROFILES, required=True)
    issue.add_argument("--days", type=int, default=devpki.DEFAULT_ISSUE_DAYS)
    issue.add_argument(
        "--ocsp-url", default=None, help="OCSP URL for the AIA extension (default from pki.json)"
    )
    issue.add_argument("--out", type=Path, default=None, help="write the PEM here instead of stdout")
    issue.set_defaults(func=_issue)

    revoke = pki_sub.add_parser("revoke", help="mark a certificate revoked in index.txt")
    revoke.add_argument("dir", type=Path)
    revoke.add_argument("--serial", required=True, help="serial number in hex")
    revoke.add_argument("--reason", choices=list(devpki.REASONS), default="unspecified")
    revoke.set_defaults(func=_revoke)

    status = pki_sub.add_parser("status", help="print what index.txt says about a serial")
    status.add_argument("dir", type=Path)
    status.add_argument("--serial", required=True, help="serial number in hex")
    status.set_defaults(func=_status)


def _init(args: argparse.Namespace) -> int:
    pki = devpki.init_pki(args.dir, key_type=args.key_type, instance=args.instance, ocsp_url=args.ocsp_url)
    paths = pki.paths
    print(f"created development PKI for {pki.instance} in {paths.dir.resolve()}")
    for label, path in (("root", paths.root), ("intermediate", paths.intermediate), ("ocsp", paths.ocsp)):
        print(f"{label}: {path.resolve()}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    pki = devpki.Pki.load(args.dir)
    try:
        csr_bytes = args.csr.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {args.csr}: {exc}", code="cert.csr_invalid") from None
    cert = pki.issue(csr_bytes, args.profile, days=args.days, ocsp_url=args.ocsp_url)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    serial = devpki.serial_hex(cert.serial_number)
    if args.out is None:
        sys.stdout.write(pem.decode("ascii"))
        sys.stderr.write(f"issued {args.profile} certificate serial {serial}\n")
    else:
        args.out.write_bytes(pem)
        print(f"issued {args.profile} certificate serial {serial} to {args.out}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    pki = devpki.Pki.load(args.dir)
    entry = pki.revoke(args.serial, args.reason)
    print(f"revoked {devpki.serial_hex(entry.serial)} ({args.reason})")
    return 0


def _status(args: argparse.Namespace) -> int:
    pki = devpki.Pki.load(args.dir)
    status = pki.status(args.serial)
    line: str = status.status
    if status.revocation_time is not None:
        line += f" {status.revocation_time.isoformat()}"
    if status.reason is not None:
        line += f" {status.reason.value}"
    print(line)
    return 0 if status.status == "good" else 1
