"""`vdxp-gateway ocsp`: the development OCSP responder and a one-shot OCSP check.

    vdxp-gateway ocsp serve --pki DIR [--listen tcp:8888:interface=127.0.0.1] [--next-update SECONDS]
    vdxp-gateway ocsp check --cert FILE --issuer FILE [--url URL] [--trusted-responder FILE]...

``serve`` prints ``listening on http://HOST:PORT/`` once the socket is bound (so
``tcp:0`` works for tests), then answers until SIGINT/SIGTERM.  ``check`` prints the
verified status and exits 0 for good, 1 for anything else (revoked, unknown or a coded
error).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, cast

from protocols.errors import VdxpError

DEFAULT_LISTEN = "tcp:8888:interface=127.0.0.1"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ocsp", help="development OCSP responder; check a certificate's OCSP status")
    ocsp_sub = p.add_subparsers(dest="ocsp_command", metavar="ACTION")
    ocsp_sub.required = True

    serve = ocsp_sub.add_parser("serve", help="answer OCSP requests for a development PKI")
    serve.add_argument("--pki", type=Path, required=True, help="directory made by `pki init`")
    serve.add_argument("--listen", default=DEFAULT_LISTEN, help=f"Twisted endpoint string (default {DEFAULT_LISTEN})")
    serve.add_argument("--next-update", type=float, default=3600.0, help="seconds from thisUpdate to nextUpdate")
    serve.set_defaults(func=_serve)

    check = ocsp_sub.add_parser("check", help="fetch and verify the OCSP status of a certificate")
    check.add_argument("--cert", type=Path, required=True)
    check.add_argument("--issuer", type=Path, required=True)
    check.add_argument("--url", default=None, help="responder URL (default: the certificate's AIA)")
    check.add_argument(
        "--trusted-responder",
        type=Path,
        action="append",
        default=[],
        help="an approved OCSP responder certificate",
    )
    check.add_argument("--timeout", type=float, default=10.0)
    check.add_argument("--freshness", type=float, default=3600.0, help="maximum age of thisUpdate, in seconds")
    check.set_defaults(func=_check)


def _serve(args: argparse.Namespace) -> int:
    from twisted.internet import task

    from gateway.devocsp import OcspResponderResource

    # Load the PKI before starting the reactor, so errors are one coded line.
    def main(reactor: Any) -> Any:
        from twisted.internet.defer import Deferred
        from twisted.internet.endpoints import serverFromString
        from twisted.web.server import Site

        resource = OcspResponderResource(args.pki, reactor, next_update_seconds=args.next_update)
        try:
            endpoint = serverFromString(reactor, args.listen)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError, KeyError) as exc:
            sys.stderr.write(f"error: usage.invalid: bad --listen endpoint {args.listen!r}: {exc}\n")
            raise SystemExit(2) from None

        async def run() -> None:
            try:
                port = await endpoint.listen(Site(resource))  # type: ignore[no-untyped-call]
            except Exception as exc:
                sys.stderr.write(f"error: ocsp.listen_failed: cannot listen on {args.listen}: {exc}\n")
                raise SystemExit(1) from None
            address = port.getHost()
            host = getattr(address, "host", "127.0.0.1")
            print(f"listening on http://{host}:{getattr(address, 'port', 0)}/", flush=True)
            await Deferred()  # until the reactor stops

        return Deferred.fromCoroutine(run())

    # Validate the directory up front (raises a coded CertificateError, exit 1).
    from twisted.internet.interfaces import IReactorTime
    from twisted.internet.task import Clock

    OcspResponderResource(args.pki, cast(IReactorTime, Clock()))
    task.react(main)
    return 0  # pragma: no cover - react exits


def _check(args: argparse.Namespace) -> int:
    from twisted.internet import task

    from gateway import devpki

    cert = devpki.load_certificate(args.cert)
    issuer = devpki.load_certificate(args.issuer)
    trusted = [devpki.load_certificate(p) for p in args.trusted_responder]

    def main(reactor: Any) -> Any:
        import treq
        from twisted.internet.defer import Deferred
        from twisted.web.client import Agent, HTTPConnectionPool
        from twisted.web.iweb import IAgent

        from hsm.ocsp import OcspClient

        pool = HTTPConnectionPool(reactor, persistent=False)  # type: ignore[no-untyped-call]
        agent = cast(IAgent, Agent(reactor, pool=pool))  # type: ignore[no-untyped-call]
        http_client = treq.client.HTTPClient(agent)
        client = OcspClient(
            http_client,
            reactor,
            timeout_seconds=args.timeout,
            freshness_seconds=args.freshness,
            trusted_responders=trusted,
        )

        async def run() -> None:
            try:
                status = await client.fetch(cert, issuer, args.url)
            except VdxpError as exc:
                sys.stderr.write(f"error: {exc}\n")
                raise SystemExit(1) from None
            line = f"{status.status} thisUpdate={status.this_update.isoformat()}"
            if status.next_update is not None:
                line += f" nextUpdate={status.next_update.isoformat()}"
            if status.revocation_time is not None:
                line += f" revocationTime={status.revocation_time.isoformat()}"
            if status.revocation_reason is not None:
                line += f" reason={status.revocation_reason}"
            print(line, flush=True)
            if status.status != "good":
                raise SystemExit(1)

        return Deferred.fromCoroutine(run())

    task.react(main)
    return 0  # pragma: no cover - react exits
