"""Bounded HTTP exchanges on Twisted, for the TSA, OCSP and configuration clients.

One call, one deadline on the injected clock (connect, headers and body together),
a body read with a size limit, and one exception type whose ``kind`` tells the
caller which coded error to raise: ``unreachable``, ``timeout``, ``http_error``,
``too_large``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss


class HttpFetchError(Exception):
    """``kind`` is ``unreachable``, ``timeout``, ``http_error`` or ``too_large``."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


@dataclass(frozen=True)
class HttpResult:
    status: int
    content_type: str  # lower case, without parameters
    content_type_raw: str
    body: bytes


class _TooLarge(Exception):
    pass


class _BoundedBody(Protocol):
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self.finished: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, _d: Deferred[bytes]) -> None:
        self._done = True
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._done = True
            if self.transport is not None:
                self.transport.stopProducing()
            self.finished.errback(_TooLarge())
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._done:
            return
        self._done = True
        if isinstance(reason.value, ResponseDone | PotentialDataLoss):
            self.finished.callback(b"".join(self._chunks))
        else:
            self.finished.errback(reason)


async def _exchange(http: Any, method: str, url: str, data: bytes | None, headers: Mapping[str, str],
                    max_bytes: int, accept: Sequence[str] | None) -> HttpResult:
    try:
        response = await http.request(method, url, data=data, unbuffered=True,
                                      headers={k: [v] for k, v in headers.items()})
    except CancelledError:
        raise
    except Exception as exc:
        raise HttpFetchError("unreachable", f"cannot reach {url}: {exc}") from exc
    raw = response.headers.getRawHeaders(b"content-type", [b""])[0].decode("latin-1")
    content_type = raw.split(";")[0].strip().lower()
    if response.code != 200:
        response.deliverBody(_BoundedBody(0))  # discard
        raise HttpFetchError("http_error", f"{url} answered HTTP {response.code}", status=response.code)
    if accept is not None and content_type not in accept:
        response.deliverBody(_BoundedBody(0))
        raise HttpFetchError("http_error", f"{url} answered with content type {content_type or '(none)'!r}, "
                             f"expected {' or '.join(accept)}", status=response.code)
    if isinstance(response.length, int) and response.length > max_bytes:
        response.deliverBody(_BoundedBody(0))
        raise HttpFetchError("too_large", f"{url}: answer of {response.length} bytes exceeds {max_bytes}")
    collector = _BoundedBody(max_bytes)
    response.deliverBody(collector)
    try:
        body = await collector.finished
    except CancelledError:
        raise
    except _TooLarge:
        raise HttpFetchError("too_large", f"{url}: answer exceeds {max_bytes} bytes") from None
    except Exception as exc:
        raise HttpFetchError("unreachable", f"connection to {url} failed while reading: {exc}") from exc
    return HttpResult(response.code, content_type, raw, body)


async def fetch(http: Any, clock: IReactorTime, method: str, url: str, *, data: bytes | None = None,
                headers: Mapping[str, str] | None = None, timeout: float = 30.0, max_bytes: int = 1 << 20,
                accept: Sequence[str] | None = None) -> HttpResult:
    """One HTTP exchange through ``http`` (a ``treq.client.HTTPClient``) within ``timeout`` seconds."""
    d: Deferred[HttpResult] = Deferred.fromCoroutine(
        _exchange(http, method, url, data, headers or {}, max_bytes, accept))

    def timed_out(_result: object, seconds: float) -> HttpResult:
        raise HttpFetchError("timeout", f"{url} did not answer within {seconds:g} s")

    d.addTimeout(timeout, clock, onTimeoutCancel=timed_out)
    return await d
