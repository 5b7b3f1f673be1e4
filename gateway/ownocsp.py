"""OCSP responses for this server's own certificates, kept fresh, and the OCSP responder on port 5577.

X-Road peers never ask a CA about our certificates themselves: the consumer sends the OCSP
responses of its certificates inside each request, and a consumer that needs the provider's
asks the provider's port 5577 (``GET /?cert=<hex SHA-1 of the certificate>&cert=…``, answered
with a ``multipart/related`` of ``application/ocsp-response`` parts).  Signatures embed the
responses of the signing certificate.  This service fetches them from the responder the global
configuration lists for the issuing CA (else the certificate's AIA), verifies them (responder
authorised, fresh), refreshes them every ``ocsp.fetch_interval`` and before they go stale.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry, Gauge
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from protocols.errors import VdxpError


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def sha1_hex(cert: x509.Certificate) -> str:
    return hashlib.sha1(der(cert)).hexdigest()  # noqa: S324 - X-Road's identifier of a certificate


def issuer_in_conf(cert: x509.Certificate, conf: Any) -> tuple[x509.Certificate, tuple[Any, ...]] | None:
    """The approved CA certificate (top or intermediate) that issued ``cert``, with its OCSP entries."""
    for ca in conf.cas:
        candidates = [(ca.top_ca, ca.top_ca_ocsp), *[(i.cert, i.ocsp) for i in ca.intermediates]]
        for issuer, ocsp_infos in candidates:
            if issuer.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, Exception):  # noqa: S112 - another CA with the same name
                continue
            return issuer, tuple(ocsp_infos)
    return None


@dataclass
class Entry:
    cert: x509.Certificate
    purpose: str  # "auth" or "sign:<member>"
    status: Any = None  # protocols.ocsp.OcspStatus
    error: str | None = None


class OwnOcsp(Service):
    """Keeps verified OCSP responses for the registered certificates."""

    log = Logger()

    def __init__(self, reactor: Any, conf_source: Any, http: Any, registry: CollectorRegistry, *,
                 fetch_interval: float = 1200.0, freshness: float = 3600.0, timeout: float = 10.0) -> None:
        self._reactor = reactor
        self._conf_source = conf_source  # has check_valid() -> InstalledConf
        self._http = http
        self.fetch_interval = fetch_interval
        self.freshness = freshness
        self.timeout = timeout
        self.entries: dict[str, Entry] = {}
        self._call: Any = None
        self._good = _gauge(registry)
        self._failures = 0
        # Called before every refresh: may add certificates (e.g. signing keys that became ready).
        self.before_refresh: Any = None

    def add(self, cert: x509.Certificate, purpose: str) -> None:
        self.entries.setdefault(sha1_hex(cert), Entry(cert, purpose))

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._schedule(0)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._call is not None and self._call.active():
            self._call.cancel()

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._call = self._reactor.callLater(delay, lambda: Deferred.fromCoroutine(self._tick()))

    async def _tick(self) -> None:
        await self.refresh()
        if any(e.status is None or e.error for e in self.entries.values()):
            # Something failed: retry soon, backing off up to the normal interval.
            self._failures += 1
            delay = min(5.0 * 2 ** (self._failures - 1), self.fetch_interval)
        else:
            self._failures = 0
            # Refresh before the freshness window closes, and at least every fetch_interval.
            delay = min(self.fetch_interval, self.freshness / 2)
        self._schedule(delay * (0.9 + 0.2 * secrets.randbelow(100) / 100))

    async def ensure(self, cert: x509.Certificate, purpose: str) -> tuple[bytes, ...]:
        """The responses for ``cert``, fetching them now if there are none yet."""
        self.add(cert, purpose)
        found = self.responses_for(cert)
        if not found:
            await self.refresh(only=sha1_hex(cert))
            found = self.responses_for(cert)
        return found

    async def refresh(self, only: str | None = None) -> None:
        from hsm.ocsp import OcspClient

        if self.before_refresh is not None and only is None:
            self.before_refresh()
        try:
            conf = self._conf_source.check_valid().own_shared
        except VdxpError as exc:
            for entry in self.entries.values():
                entry.error = str(exc)
            return
        freshness = float(getattr(conf, "ocsp_freshness_seconds", self.freshness) or self.freshness)
        for key, entry in list(self.entries.items()):
            if only is not None and key != only:
                continue
            found = issuer_in_conf(entry.cert, conf)
            if found is None:
                entry.error = "cert.issuer_not_approved: the issuing CA is not an approved CA of the federation"
                self._good.labels(purpose=entry.purpose).set(0)
                continue
            issuer, ocsp_infos = found
            trusted = [o.cert for o in ocsp_infos if o.cert is not None]
            client = OcspClient(self._http, self._reactor, self.timeout, freshness_seconds=freshness,
                                trusted_responders=trusted)
            url = ocsp_infos[0].url if ocsp_infos else None
            try:
                status = await client.fetch(entry.cert, issuer, url)
            except VdxpError as exc:
                entry.error = str(exc)
                self._good.labels(purpose=entry.purpose).set(0)
                self.log.error("OCSP for our {purpose} certificate {cert} failed: {error}", purpose=entry.purpose,
                               cert=key, error=str(exc), code=exc.code)
                continue
            entry.status, entry.error = status, None
            self._good.labels(purpose=entry.purpose).set(1 if status.is_good else 0)
            if not status.is_good:
                self.log.error("OCSP says our {purpose} certificate {cert} is {status}", purpose=entry.purpose,
                               cert=key, status=status.status, code="ocsp.not_good")

    def response(self, cert_sha1_hex: str) -> bytes | None:
        entry = self.entries.get(cert_sha1_hex.lower())
        if entry is None or entry.status is None:
            return None
        return bytes(entry.status.der)

    def responses_for(self, cert: x509.Certificate) -> tuple[bytes, ...]:
        found = self.response(sha1_hex(cert))
        return (found,) if found is not None else ()

    def health(self) -> tuple[bool, str]:
        auth = [e for e in self.entries.values() if e.purpose == "auth"]
        for e in auth:
            if e.status is None or not e.status.is_good:
                return False, e.error or f"authentication certificate OCSP status {getattr(e.status, 'status', '?')}"
        return True, "authentication certificate OCSP good"


def _gauge(registry: CollectorRegistry) -> Gauge:
    key = id(registry)
    if key not in _gauges:
        _gauges[key] = Gauge("vdxp_ocsp_own_good", "1 when the OCSP status of our certificate is good and fresh.",
                             ["purpose"], registry=registry)
    return _gauges[key]


_gauges: dict[int, Gauge] = {}


class OcspResponderResource(Resource):
    """``GET /?cert=<sha1 hex>&cert=…`` → ``multipart/related`` of ``application/ocsp-response`` parts."""

    isLeaf = True

    def __init__(self, own: OwnOcsp) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._own = own

    def render_GET(self, request: Request) -> bytes:
        wanted = [v.decode("ascii", "replace") for v in (request.args or {}).get(b"cert", [])]
        if not wanted or len(wanted) > 20:
            request.setResponseCode(400)
            return b"give 1 to 20 cert=<hex SHA-1> parameters\n"
        parts = []
        for h in wanted:
            resp = self._own.response(h)
            if resp is None:
                request.setResponseCode(500)
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")  # type: ignore[no-untyped-call]
                return f"no OCSP response for certificate {h}\n".encode()
            parts.append(resp)
        boundary = secrets.token_hex(16)
        body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/ocsp-response\r\n\r\n" + p
                        + b"\r\n" for p in parts) + b"--" + boundary.encode() + b"--\r\n"
        request.setHeader(b"content-type",  # type: ignore[no-untyped-call]
                          f'multipart/related; boundary="{boundary}"'.encode())
        return body
