# -*- test-case-name: tests.test_daemon -*-
"""The health check endpoint, as X-Road's (``GET /`` → ``200 OK`` or ``500`` + reasons).

Components register checks on :class:`HealthChecks`: callables returning
``(ok, reason)`` or a ``Deferred`` of it (e.g. "auth key accessible", "global
configuration valid").  Each check gets ``health.check_timeout`` seconds on the
injected clock; an exception or a timeout is a failure naming the check.  The combined
result is cached (``health.ok_cache`` when healthy, ``health.failure_cache`` when not,
like X-Road's 2 s / 30 s) so a load balancer polling hard does not hammer the HSM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.defer import Deferred, TimeoutError, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from gateway.config import HealthConfig

__all__ = ["HealthCheck", "HealthChecks", "HealthReport", "HealthResource", "HealthResult"]

HealthResult = tuple[bool, str]
HealthCheck = Callable[[], "HealthResult | Deferred[HealthResult]"]


@dataclass(frozen=True)
class HealthReport:
    ok: bool
    reasons: tuple[str, ...]
    """``"<check>: <reason>"`` for every failing check."""
    checked_at: float

    def body(self) -> bytes:
        if self.ok:
            return b"OK\n"
        return ("\n".join(self.reasons) + "\n").encode("utf-8")


class HealthChecks:
    """Named health checks with a cached combined result."""

    log = Logger()

    def __init__(self, clock: IReactorTime, settings: HealthConfig | None = None) -> None:
        self._clock = clock
        self._settings = settings if settings is not None else HealthConfig()
        self._checks: dict[str, HealthCheck] = {}
        self._cached: HealthReport | None = None
        self._waiting: list[Deferred[HealthReport]] | None = None

    def _now(self) -> float:
        return self._clock.seconds()  # type: ignore[misc]  # zope interface method (no mypy-zope plugin)

    def configure(self, settings: HealthConfig) -> None:
        """New cache and timeout settings (on reload); drops the cached result."""
        self._settings = settings
        self._cached = None

    def register(self, name: str, check: HealthCheck) -> Callable[[], None]:
        """Add a check; returns a function that removes it again."""
        if name in self._checks:
            raise ValueError(f"health check {name!r} is already registered")
        self._checks[name] = check
        self._cached = None

        def unregister() -> None:
            if self._checks.get(name) is check:
                del self._checks[name]
                self._cached = None

        return unregister

    @property
    def names(self) -> list[str]:
        return sorted(self._checks)

    def evaluate(self) -> Deferred[HealthReport]:
        """The combined result, from the cache while it is fresh."""
        now = self._now()
        cached = self._cached
        if cached is not None:
            ttl = self._settings.ok_cache_seconds if cached.ok else self._settings.failure_cache_seconds
            if now < cached.checked_at + ttl:
                return succeed(cached)
        waiter: Deferred[HealthReport] = Deferred()
        if self._waiting is not None:  # an evaluation is under way: share it
            self._waiting.append(waiter)
            return waiter
        self._waiting = [waiter]
        Deferred.fromCoroutine(self._run()).addErrback(self._crashed)
        return waiter

    async def _run(self) -> None:
        checks = sorted(self._checks.items())
        pending = [self._one(name, check) for name, check in checks]
        reasons: list[str] = []
        for name, d in zip([n for n, _ in checks], pending, strict=True):
            ok, reason = await d
            if not ok:
                reasons.append(f"{name}: {reason}")
        report = HealthReport(ok=not reasons, reasons=tuple(reasons), checked_at=self._now())
        if self._cached is None or self._cached.ok != report.ok:
            if report.ok:
                self.log.info("Health check passes")
            else:
                self.log.warn("Health check fails: {reasons}", reasons="; ".join(reasons))
        self._cached = report
        self._deliver(report)

    def _one(self, name: str, check: HealthCheck) -> Deferred[HealthResult]:
        d: Deferred[HealthResult] = maybeDeferred(cast(Callable[[], Any], check))
        d.addTimeout(self._settings.check_timeout_seconds, self._clock)

        def failed(failure: Failure) -> HealthResult:
            if failure.check(TimeoutError):  # type: ignore[no-untyped-call]
                return (False, f"no answer within {self._settings.check_timeout_seconds:g} s")
            self.log.failure("Health check {check} raised", failure=failure, check=name)
            return (False, f"check failed: {failure.getErrorMessage()}")

        def shape(result: object) -> HealthResult:
            if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], bool):
                return (result[0], str(result[1]))
            return (False, f"check returned {result!r}, not (ok, reason)")

        d.addCallbacks(shape, failed)
        return d

    def _deliver(self, report: HealthReport) -> None:
        waiting, self._waiting = self._waiting or [], None
        for waiter in waiting:
            waiter.callback(report)

    def _crashed(self, failure: Failure) -> None:
        self.log.failure("Health evaluation crashed", failure=failure)
        report = HealthReport(False, ("health: internal error",), self._now())
        self._deliver(report)


class HealthResource(Resource):
    """``GET /`` → ``200 OK`` or ``500`` with one failing check per line (text/plain)."""

    isLeaf = True

    def __init__(self, checks: HealthChecks) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._checks = checks

    def render_GET(self, request: Request) -> int | bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")  # type: ignore[no-untyped-call]
        request.setHeader(b"Cache-Control", b"no-store")  # type: ignore[no-untyped-call]
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            return b"not found\n"
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(report: HealthReport) -> None:
            if gone:
                return
            request.setResponseCode(200 if report.ok else 500)
            request.write(report.body())  # type: ignore[no-untyped-call]
            request.finish()  # type: ignore[no-untyped-call]

        self._checks.evaluate().addCallback(answer)
        return NOT_DONE_YET
