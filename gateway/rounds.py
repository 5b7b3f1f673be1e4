"""A service that works in rounds: the first after ``first_delay()`` seconds, each next one
``next_delay()`` seconds after the previous round finished (so rounds never overlap).  A round that
fails is logged and the next one still comes; stopping cancels the wait and hands back the round in
progress, so the daemon's shutdown waits for it."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

__all__ = ["Rounds"]


class Rounds(Service):
    log = Logger()
    #: what a round does, for the log line of a failed one
    round_name = "round"

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._call: Any = None
        self._running: Deferred[Any] | None = None

    def next_delay(self) -> float:
        raise NotImplementedError

    def first_delay(self) -> float:
        return self.next_delay()

    async def run_once(self) -> Any:
        raise NotImplementedError

    def startService(self) -> None:
        super().startService()
        self._schedule(self.first_delay())

    def stopService(self) -> Any:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        return self._running

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._call = self._reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None
        self._running = Deferred.fromCoroutine(self.run_once())
        self._running.addErrback(lambda f: self.log.failure("{name} failed", f, name=self.round_name))
        self._running.addBoth(lambda _r: self._schedule(self.next_delay()))
