"""OCSP client and cache: fetch, verify and keep responses for our own certificates.

:class:`OcspClient` POSTs an ``application/ocsp-request`` to the responder named in the
certificate's AIA extension (or an explicit URL), with a deadline on the injected clock
and a bound on the response size, and verifies the answer with
:func:`protocols.ocsp.verify_response`.  :class:`OcspCache` keeps verified responses while
they are fresh, shares one fetch between concurrent callers for the same certificate and
never caches failures.

Error codes (besides the verification codes of :mod:`protocols.ocsp`): ``ocsp.no_url``,
``ocsp.unreachable``, ``ocsp.timeout``, ``ocsp.http_error``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID
from twisted.internet import defer
from twisted.internet import error as net_error
from twisted.internet import protocol as tx_protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web import client as web_client
from twisted.web import http
from twisted.web._newclient import RequestTransmissionFailed, ResponseFailed, ResponseNeverReceived

from protocols import ocsp
from protocols.errors import OcspError

OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
DEFAULT_REFRESH_MARGIN_SECONDS = 300.0


class OcspHttpClient(Protocol):
    """What we need of a ``treq.client.HTTPClient`` (``treq.testing.StubTreq`` works too)."""

    def post(self, url: str, /, *, data: bytes, headers: dict[bytes | str, bytes | str]) -> Deferred[Any]: ...


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    """The OCSP responder URLs in the certificate's Authority Information Access."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [
        str(desc.access_location.value)
        for desc in aia
        if desc.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(desc.access_location, x509.UniformResourceIdentifier)
    ]


class _BoundedBody(tx_protocol.Protocol):
    """Collects a response body, failing once it grows past ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.finished: Deferred[bytes] = Deferred(self._cancel)
        self._finished = self.finished
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def _cancel(self, _: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self._finished.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._finished.errback(
                OcspError(f"the OCSP response is larger than {self._limit} bytes", code="ocsp.http_error")
            )
            if self.transport is not None:
                self.transport.stopProducing()
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = tx_protocol.connectionDone) -> None:
        if self._finished.called:
            return
        if reason.check(web_client.ResponseDone, http.PotentialDataLoss):  # type: ignore[no-untyped-call]
            self._finished.callback(b"".join(self._parts))
        else:
            self._finished.errback(reason)


def _now(clock: IReactorTime) -> datetime:
    return datetime.fromtimestamp(clock.seconds(), UTC)  # type: ignore[misc]


class OcspClient:
    """Fetches and verifies OCSP responses over HTTP."""

    def __init__(
        self,
        http_client: OcspHttpClient,
        clock: IReactorTime,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        *,
        freshness_seconds: float = ocsp.DEFAULT_FRESHNESS_SECONDS,
        trusted_responders: Sequence[x509.Certificate] = (),
        use_nonce: bool = True,
        hash_name: str = "sha256",
        max_clock_skew_seconds: float = ocsp.DEFAULT_MAX_CLOCK_SKEW_SECONDS,
    ) -> None:
        self._http = http_client
        self._clock = clock
        self._timeout = timeout_seconds
        self._max_bytes = max_response_bytes
        self._freshness = freshness_seconds
        self._trusted = tuple(trusted_responders)
        self._use_nonce = use_nonce
        self._hash_name = hash_name
        self._skew = max_clock_skew_seconds

    async def fetch(self, cert: x509.Certificate, issuer: x509.Certificate, url: str | None = None) -> ocsp.OcspStatus:
        """Ask the responder (``url`` or the AIA one) about ``cert`` and verify the answer."""
        if url is None:
            urls = ocsp_urls(cert)
            if not urls:
                raise OcspError(
                    f"certificate {cert.serial_number:X} names no OCSP responder (no AIA OCSP URL)",
                    code="ocsp.no_url",
                )
            url = urls[0]
        nonce = os.urandom(16) if self._use_nonce else None
        body = ocsp.build_request(cert, issuer, self._hash_name, nonce)
        exchange: Deferred[bytes] = Deferred.fromCoroutine(self._exchange(url, body))
        exchange.addTimeout(self._timeout, self._clock)
        try:
            der = await exchange
        except defer.TimeoutError:
            raise OcspError(f"no OCSP response from {url} within {self._timeout:g} s", code="ocsp.timeout") from None
        return ocsp.verify_response(
            der,
            cert=cert,
            issuer=issuer,
            at=_now(self._clock),
            freshness_seconds=self._freshness,
            trusted_responders=self._trusted,
            nonce=nonce,
            max_clock_skew_seconds=self._skew,
        )

    async def _exchange(self, url: str, body: bytes) -> bytes:
        try:
            response = await self._http.post(
                url,
                data=body,
                headers={b"Content-Type": OCSP_REQUEST_TYPE, b"Accept": OCSP_RESPONSE_TYPE},
            )
        except (
            net_error.ConnectError,
            net_error.DNSLookupError,
            net_error.ConnectionLost,
            ResponseFailed,
            ResponseNeverReceived,
            RequestTransmissionFailed,
        ) as exc:
            if _was_cancelled(exc):
                raise defer.CancelledError() from None
            raise OcspError(f"cannot reach the OCSP responder {url}: {exc}", code="ocsp.unreachable") from None
        code = int(response.code)
        if code != 200:
            await _discard(response)
            raise OcspError(f"the OCSP responder {url} answered HTTP {code}", code="ocsp.http_error")
        content_types = response.headers.getRawHeaders(b"content-type") or []
        if content_types and not any(
            ct.split(b";")[0].strip().lower() == b"application/ocsp-response" for ct in content_types
        ):
            await _discard(response)
            raise OcspError(
                f"the OCSP responder {url} answered {content_types[0].decode('latin-1')!r}, "
                "not application/ocsp-response",
                code="ocsp.http_error",
            )
        length = response.length
        if isinstance(length, int) and length > self._max_bytes:
            await _discard(response)
            raise OcspError(f"the OCSP response is larger than {self._max_bytes} bytes", code="ocsp.http_error")
        collector = _BoundedBody(self._max_bytes)
        response.deliverBody(collector)
        try:
            return await collector.finished
        except (ResponseFailed, net_error.ConnectionLost) as exc:
            raise OcspError(f"the OCSP response from {url} was cut off: {exc}", code="ocsp.unreachable") from None


def _was_cancelled(exc: Exception) -> bool:
    reasons = getattr(exc, "reasons", None) or []
    return any(isinstance(r, Failure) and r.check(defer.CancelledError) for r in reasons)  # type: ignore[no-untyped-call]


async def _discard(response: Any) -> None:
    collector = _BoundedBody(64 * 1024)
    response.deliverBody(collector)
    try:
        await collector.finished
    except Exception:  # noqa: S110 - the body of an error answer is of no interest
        pass


class OcspFetcher(Protocol):
    async def fetch(
        self, cert: x509.Certificate, issuer: x509.Certificate, url: str | None = None
    ) -> ocsp.OcspStatus: ...


def _key(cert: x509.Certificate, issuer: x509.Certificate) -> tuple[bytes, bytes]:
    return (
        hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest(),
        hashlib.sha256(issuer.public_bytes(serialization.Encoding.DER)).digest(),
    )


@dataclass
class _Inflight:
    waiters: list[Deferred[ocsp.OcspStatus]]


class OcspCache:
    """Verified OCSP responses, kept while fresh; one fetch at a time per certificate.

    A cached response is served while ``now < min(thisUpdate + freshness, nextUpdate) -
    refresh_margin``; after that the next caller triggers a fetch.  Failures reach every
    waiting caller and are not remembered.
    """

    def __init__(
        self,
        client: OcspFetcher,
        clock: IReactorTime,
        freshness_seconds: float = ocsp.DEFAULT_FRESHNESS_SECONDS,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN_SECONDS,
    ) -> None:
        self._client = client
        self._clock = clock
        self._freshness = timedelta(seconds=freshness_seconds)
        self._margin = timedelta(seconds=refresh_margin)
        self._entries: dict[tuple[bytes, bytes], ocsp.OcspStatus] = {}
        self._inflight: dict[tuple[bytes, bytes], _Inflight] = {}
        self.fetches = 0

    def _fresh(self, status: ocsp.OcspStatus) -> bool:
        until = status.this_update + self._freshness
        if status.next_update is not None:
            until = min(until, status.next_update)
        return _now(self._clock) < until - self._margin

    def cached(self, cert: x509.Certificate, issuer: x509.Certificate) -> ocsp.OcspStatus | None:
        """The cached response if it is still fresh, else ``None`` (and it is dropped)."""
        key = _key(cert, issuer)
        status = self._entries.get(key)
        if status is None:
            return None
        if not self._fresh(status):
            del self._entries[key]
            return None
        return status

    def put(self, cert: x509.Certificate, issuer: x509.Certificate, status: ocsp.OcspStatus) -> None:
        """Remember an already verified response (for example one a peer sent us)."""
        self._entries[_key(cert, issuer)] = status

    def invalidate(self, cert: x509.Certificate, issuer: x509.Certificate) -> None:
        self._entries.pop(_key(cert, issuer), None)

    async def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> ocsp.OcspStatus:
        """A fresh verified response for ``cert``: from the cache, or fetched now."""
        hit = self.cached(cert, issuer)
        if hit is not None:
            return hit
        key = _key(cert, issuer)
        waiter: Deferred[ocsp.OcspStatus] = Deferred()
        inflight = self._inflight.get(key)
        if inflight is not None:
            inflight.waiters.append(waiter)
        else:
            self._inflight[key] = _Inflight([waiter])
            self.fetches += 1
            # _fetch never fails: it hands its outcome to the waiters.
            Deferred.fromCoroutine(self._fetch(key, cert, issuer))
        return await waiter

    async def _fetch(self, key: tuple[bytes, bytes], cert: x509.Certificate, issuer: x509.Certificate) -> None:
        outcome: ocsp.OcspStatus | Failure
        try:
            outcome = await self._client.fetch(cert, issuer)
        except BaseException:
            outcome = Failure()  # type: ignore[no-untyped-call]
        else:
            self._entries[key] = outcome
        inflight = self._inflight.pop(key)
        for waiter in inflight.waiters:
            if waiter.called:  # cancelled by its caller
                continue
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)
