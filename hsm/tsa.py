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
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgent

from protocols.errors import TimestampError
from protocols.tsp import TimestampToken, build_request, verify_response

__all__ = ["QUERY_CONTENT_TYPE", "REPLY_CONTENT_TYPE", "TsaClient"]

QUERY_CONTENT_TYPE = "application/timestamp-query"
REPLY_CONTENT_TYPE = "application/timestamp-reply"
DEFAULT_MAX_RESPONSE_BYTES = 1 << 20


class _ResponseTooLarge(Exception):
    pass


class _BoundedBody(Protocol):
    """Collects a response body up to ``limit`` bytes; beyond that it stops the
    transfer and fails (or, with ``truncate``, succeeds with the first bytes)."""

    def __init__(self, limit: int, truncate: bool = False) -> None:
        self._limit = limit
        self._truncate = truncate
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self.finished: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, d: Deferred[bytes]) -> None:
        self._done = True
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        self._size += len(data)
        self._chunks.append(data)
        if self._size > self._limit:
            self._done = True
            if self.transport is not None:
                self.transport.stopProducing()
            if self._truncate:
                self.finished.callback(b"".join(self._chunks)[: self._limit])
            else:
                self.finished.errback(_ResponseTooLarge())

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._done:
            return
        self._done = True
        if isinstance(reason.value, (ResponseDone, PotentialDataLoss)):
            self.finished.callback(b"".join(self._chunks))
        else:
            self.finished.errback(reason)


async def _read_body(response: Any, limit: int, truncate: bool = False) -> bytes:
    collector = _BoundedBody(limit, truncate)
    response.deliverBody(collector)
    return await collector.finished


def _seconds(clock: IReactorTime) -> float:
    return clock.seconds()  # type: ignore[misc]  # zope interface method (no mypy-zope plugin)


class TsaClient:
    """Time-stamps digests at one TSA.

    ``http_client`` is a ``treq.HTTPClient`` (or anything with its ``post``, such as
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
        exchange: Deferred[bytes] = Deferred.fromCoroutine(self._exchange(query))

        def timed_out(result: object, timeout: float) -> bytes:
            # whatever the cancelled exchange ended with (CancelledError, ResponseNeverReceived, ...)
            raise TimestampError(f"TSA {self.url} did not answer within {timeout:g} s", code="tsa.timeout")

        exchange.addTimeout(self.timeout_seconds, self._clock, onTimeoutCancel=timed_out)
        body = await exchange
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

    async def _exchange(self, query: bytes) -> bytes:
        try:
            response = await self._http.post(
                self.url,
                data=query,
                headers={"Content-Type": [QUERY_CONTENT_TYPE], "Accept": [REPLY_CONTENT_TYPE]},
            )
        except CancelledError:
            raise
        except Exception as exc:
            raise TimestampError(f"cannot reach TSA {self.url}: {exc}", code="tsa.unreachable") from exc
        if response.code != 200:
            detail = await self._drain(response)
            raise TimestampError(
                f"TSA {self.url} answered HTTP {response.code}" + (f": {detail}" if detail else ""),
                code="tsa.http_error",
            )
        raw_type = response.headers.getRawHeaders(b"content-type", [b""])[0]
        content_type = raw_type.split(b";")[0].strip().lower().decode("latin-1")
        if content_type != REPLY_CONTENT_TYPE:
            await self._drain(response)
            raise TimestampError(
                f"TSA {self.url} answered with content type {content_type or '(none)'!r}, "
                f"expected {REPLY_CONTENT_TYPE}",
                code="tsa.http_error",
            )
        length = response.length
        if isinstance(length, int) and length > self.max_response_bytes:
            await self._drain(response)
            raise self._too_large()
        try:
            return await _read_body(response, self.max_response_bytes)
        except CancelledError:
            raise
        except _ResponseTooLarge:
            raise self._too_large() from None
        except Exception as exc:
            raise TimestampError(
                f"connection to TSA {self.url} failed while reading the answer: {exc}", code="tsa.unreachable"
            ) from exc

    def _too_large(self) -> TimestampError:
        return TimestampError(
            f"TSA {self.url} answer exceeds {self.max_response_bytes} bytes", code="tsa.response_too_large"
        )

    async def _drain(self, response: Any) -> str:
        """Read (at most 512 bytes of) an unwanted body, for the error message."""
        try:
            data = await _read_body(response, 512, truncate=True)
        except CancelledError:
            raise
        except Exception:
            return ""
        return data.decode("utf-8", "replace").strip()[:200]
