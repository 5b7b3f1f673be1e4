"""`vdxp-gateway tsa`: the development time-stamping authority and a test query.

``tsa serve`` runs :class:`gateway.devtsa.TsaResource` with the key on a PKCS#11
token (through :func:`gateway.keys.open_digest_signer`); ``tsa query`` time-stamps a
file at a TSA and prints the verified genTime and serial number (exit 0), or the
error (exit 1).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

from cryptography import x509

from protocols.errors import CertificateError, UsageError, VdxpError

DEFAULT_LISTEN = "tcp:8318:interface=127.0.0.1"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("tsa", help="RFC 3161 time-stamping: development TSA server, test queries")
    actions = p.add_subparsers(dest="tsa_command", metavar="ACTION", parser_class=type(p))
    actions.required = True

    serve = actions.add_parser("serve", help="run the development TSA (key on a PKCS#11 token)")
    serve.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ENDPOINT",
                       help=f"Twisted server endpoint (default {DEFAULT_LISTEN})")
    serve.add_argument("--cert", required=True, type=Path, metavar="FILE",
                       help="TSA certificate (PEM or DER), with critical EKU timeStamping")
    serve.add_argument("--chain", type=Path, metavar="FILE", help="intermediate/CA certificates to embed (PEM)")
    serve.add_argument("--key-label", required=True, metavar="LABEL", help="label of the TSA key on the token")
    serve.add_argument("-c", "--config", required=True, type=Path, metavar="GATEWAY_YAML",
                       help="gateway configuration naming the token")
    serve.add_argument("--policy", default=None, metavar="OID", help="TSA policy OID (default: the dev policy)")
    serve.add_argument("--hash", default="sha256", choices=("sha256", "sha384", "sha512"),
                       help="hash of the signed attributes (default sha256)")
    serve.set_defaults(func=_serve)

    query = actions.add_parser("query", help="time-stamp a file at a TSA and print the verified token")
    query.add_argument("--url", required=True, help="TSA URL (http:// or https://)")
    query.add_argument("--cert", required=True, type=Path, action="append", metavar="TSA_CERT",
                       help="accepted TSA certificate (PEM or DER; repeatable)")
    query.add_argument("--data", required=True, type=Path, metavar="FILE", help="the data to time-stamp")
    query.add_argument("--hash", default="sha512", choices=("sha256", "sha384", "sha512"),
                       help="imprint hash (default sha512, as X-Road)")
    query.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    query.add_argument("--out", type=Path, metavar="FILE", help="write the token (CMS DER) to FILE")
    query.set_defaults(func=_query)


def load_certificates(path: Path) -> list[x509.Certificate]:
    """All certificates of a PEM file, or the one certificate of a DER file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read certificate file {path}: {exc.strerror}") from None
    try:
        if b"-----BEGIN" in raw:
            certs = x509.load_pem_x509_certificates(raw)
        else:
            certs = [x509.load_der_x509_certificate(raw)]
    except ValueError as exc:
        raise CertificateError(f"{path} holds no readable certificate: {exc}", code="cert.unreadable") from None
    return certs


def _run(main: Any) -> int:
    """Run ``main(reactor)`` under :func:`twisted.internet.task.react`; a
    :class:`VdxpError` is printed as ``error: <code>: <message>`` (exit 1, 2 for usage)."""
    from twisted.internet.task import react

    async def wrapper(reactor: Any) -> None:
        try:
            code: int = await main(reactor)
        except VdxpError as exc:
            sys.stderr.write(f"error: {exc}\n")
            code = 2 if isinstance(exc, UsageError) else 1
        if code:
            raise SystemExit(code)

    react(wrapper)
    return 0  # pragma: no cover - react() exits


def _serve(args: argparse.Namespace) -> int:
    certs = load_certificates(args.cert)
    tsa_cert = certs[0]
    chain = certs[1:] + (load_certificates(args.chain) if args.chain else [])
    if not args.config.is_file():
        raise UsageError(f"configuration file {args.config} not found")

    async def main(reactor: Any) -> int:
        from twisted.internet.endpoints import serverFromString
        from twisted.logger import globalLogBeginner, textFileLogObserver
        from twisted.web.server import Site

        from gateway.devtsa import DEV_POLICY_OID, TsaResource, check_signer_matches
        from gateway.keys import open_digest_signer

        observer: Any = textFileLogObserver(sys.stderr)
        globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
        signer = open_digest_signer(args.config, args.key_label, reactor)
        await check_signer_matches(signer, tsa_cert, args.hash)
        resource = TsaResource(signer, tsa_cert, chain, reactor, args.policy or DEV_POLICY_OID, hash_name=args.hash)
        try:
            endpoint = serverFromString(reactor, args.listen)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError, KeyError) as exc:
            raise UsageError(f"bad --listen endpoint {args.listen!r}: {exc}") from None
        port = await endpoint.listen(Site(resource))  # type: ignore[no-untyped-call]
        address = port.getHost()
        sys.stdout.write(f"TSA listening on {getattr(address, 'host', '')}:{getattr(address, 'port', '')}\n")
        sys.stdout.flush()
        from twisted.internet.defer import Deferred

        await Deferred()  # until SIGINT/SIGTERM stop the reactor
        return 0

    return _run(main)


def _query(args: argparse.Namespace) -> int:
    tsa_certs = [c for path in args.cert for c in load_certificates(path)]
    try:
        data = args.data.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.data}: {exc.strerror}") from None
    digest = hashlib.new(args.hash, data).digest()

    async def main(reactor: Any) -> int:
        from twisted.web.client import Agent, HTTPConnectionPool

        from hsm.tsa import TsaClient

        pool = HTTPConnectionPool(reactor, persistent=False)  # type: ignore[no-untyped-call]
        agent = Agent(reactor, pool=pool)  # type: ignore[no-untyped-call]
        client = TsaClient(agent, reactor, args.url, tsa_certs, timeout_seconds=args.timeout)
        try:
            token = await client.timestamp(digest, args.hash)
        finally:
            await pool.closeCachedConnections()  # type: ignore[no-untyped-call]
        if args.out is not None:
            args.out.write_bytes(token.token_der)
        sys.stdout.write(
            f"genTime: {token.gen_time.isoformat()}\n"
            f"serial: {token.serial}\n"
            f"policy: {token.policy}\n"
            f"imprint: {token.hash_name}:{token.imprint.hex()}\n"
            f"tsa: {token.signer_cert.subject.rfc4514_string()}\n"
        )
        return 0

    return _run(main)
