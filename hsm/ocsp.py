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
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from hsm.http import HttpFetchError, fetch
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
        try:
            answer = await fetch(self._http, self._clock, "POST", url, data=body,
                                 headers={"Content-Type": OCSP_REQUEST_TYPE, "Accept": OCSP_RESPONSE_TYPE},
                                 timeout=self._timeout, max_bytes=self._max_bytes,
                                 accept=("application/ocsp-response", ""))
        except HttpFetchError as exc:
            kind = {"unreachable": "ocsp.unreachable", "timeout": "ocsp.timeout"}.get(exc.kind, "ocsp.http_error")
            raise OcspError(f"OCSP responder: {exc}", code=kind) from None
        der = answer.body
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
