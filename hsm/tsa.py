"""RFC 3161 time-stamping client (HTTP POST ``application/timestamp-query``).

:class:`TsaClient` asks one TSA for a token over a precomputed digest and verifies the
answer with :func:`protocols.tsp.verify_response` against the configured TSA
certificates (X-Road's ``approvedTSA``).  The HTTP client and the clock are injected;
the whole exchange (connect, headers, body) is bounded by ``timeout_seconds`` on that
clock and the body by ``max_response_bytes``.

Errors (:class:`~protocols.errors.TimestampError`): ``tsa.unreachable`` (connection
refused, DNS, connection lost), ``tsa.timeout``, ``tsa.http_error`` (non-200 status or
wrong content type), ``tsa.response_too_large``, and the verification codes of
:mod:`protocols.tsp` (``tsa.malformed``, ``tsa.rejected``, ``tsa.nonce_mismatch``, ...).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from treq.client import HTTPClient
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IAgent

from hsm.http import HttpFetchError, fetch
from protocols.errors import TimestampError
from protocols.tsp import TimestampToken, build_request, verify_response

__all__ = ["QUERY_CONTENT_TYPE", "REPLY_CONTENT_TYPE", "TsaClient"]

QUERY_CONTENT_TYPE = "application/timestamp-query"
REPLY_CONTENT_TYPE = "application/timestamp-reply"
DEFAULT_MAX_RESPONSE_BYTES = 1 << 20


def _seconds(clock: IReactorTime) -> float:
    return clock.seconds()  # type: ignore[misc]  # zope interface method (no mypy-zope plugin)


class TsaClient:
    """Time-stamps digests at one TSA.

    ``http_client`` is a ``treq.HTTPClient`` (or anything with its ``request``, such as
    ``treq.testing.StubTreq``) or an ``IAgent``; ``clock`` bounds every wait;
    ``tsa_certs`` are the certificates a token may be signed with.
    """

    log = Logger()

    def __init__(
        self,
        http_client: Any,
        clock: IReactorTime,
        url: str,
        tsa_certs: Sequence[x509.Certificate],
        timeout_seconds: float = 10.0,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        cert_req: bool = True,
        policy: str | None = None,
        nonce_source: Callable[[], int] | None = None,
    ) -> None:
        if IAgent.providedBy(http_client):
            http_client = HTTPClient(http_client)
        self._http = http_client
        self._clock = clock
        self.url = url
        self.tsa_certs = tuple(tsa_certs)
        self.timeout_seconds = timeout_seconds
        self.max_response_bytes = max_response_bytes
        self._cert_req = cert_req
        self._policy = policy
        self._nonce_source = nonce_source or (lambda: secrets.randbits(64))

    async def timestamp(self, digest: bytes, hash_name: str) -> TimestampToken:
        """Get and verify a token over ``digest`` (a ``hash_name`` digest, e.g. ``sha512``)."""
        nonce = self._nonce_source()
        query = build_request(digest, hash_name, nonce=nonce, cert_req=self._cert_req, policy=self._policy)
        started = _seconds(self._clock)
        try:
            answer = await fetch(self._http, self._clock, "POST", self.url, data=query,
                                 headers={"Content-Type": QUERY_CONTENT_TYPE, "Accept": REPLY_CONTENT_TYPE},
                                 timeout=self.timeout_seconds, max_bytes=self.max_response_bytes,
                                 accept=(REPLY_CONTENT_TYPE,))
        except HttpFetchError as exc:
            code = {"unreachable": "tsa.unreachable", "timeout": "tsa.timeout",
                    "too_large": "tsa.response_too_large"}.get(exc.kind, "tsa.http_error")
            raise TimestampError(f"TSA: {exc}", code=code) from None
        body = answer.body
        now = datetime.fromtimestamp(_seconds(self._clock), UTC)
        token = verify_response(
            body, digest=digest, hash_name=hash_name, nonce=nonce, tsa_certs=self.tsa_certs, at=now
        )
        self.log.debug(
            "Time-stamped at {url}: serial {serial}, genTime {gen_time} in {elapsed_ms:.1f} ms",
            url=self.url,
            serial=token.serial,
            gen_time=token.gen_time.isoformat(),
            elapsed_ms=(_seconds(self._clock) - started) * 1000,
        )
        return token
