"""gateway.rounds.Rounds: rounds after a delay, never overlapping, surviving a failed round."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gateway.rounds import Rounds


class _Counter(Rounds):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.started: list[float] = []
        self.gate: Deferred[None] | None = None
        self.fail = False

    def first_delay(self) -> float:
        return 1.0

    def next_delay(self) -> float:
        return 10.0

    async def run_once(self) -> Any:
        self.started.append(self._reactor.seconds())
        if self.gate is not None:
            await self.gate
        if self.fail:
            raise RuntimeError("this round fails")


def test_rounds_follow_each_other_and_survive_a_failure() -> None:
    clock = Clock()
    rounds = _Counter(clock)
    rounds.startService()
    clock.advance(1)
    assert rounds.started == [1.0]
    rounds.gate = Deferred()
    clock.advance(10)
    assert rounds.started == [1.0, 11.0]
    clock.advance(100)  # the round in progress has not finished: no second one meanwhile
    assert rounds.started == [1.0, 11.0]
    rounds.fail = True
    gate, rounds.gate = rounds.gate, None
    gate.callback(None)  # finishes (and fails) at 111: the next one 10 s later
    clock.advance(10)
    assert rounds.started == [1.0, 11.0, 121.0]
    rounds.fail = False
    rounds.gate = Deferred()
    clock.advance(10)
    stopping = rounds.stopService()
    assert stopping is not None and not stopping.called  # stop hands back the round in progress
    rounds.gate.callback(None)
    assert stopping.called
    clock.advance(100)
    assert rounds.started == [1.0, 11.0, 121.0, 131.0] and not clock.getDelayedCalls()
