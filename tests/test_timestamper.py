"""The message log's batch timestamper on a real SQLite store, with TSAs that answer, fail or recover.

The TSAs here are in-process stand-ins with the TsaClient interface (``timestamp(digest, hash)``);
the end-to-end test (tests/test_messagelog_e2e.py) uses the sandbox's real RFC 3161 TSA.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from test_sigverify import _make_pki, _sign
from twisted.internet.task import Clock

from gateway.config import MessageLogConfig
from gateway.messagelog.store import LogEntry, LoggingFailed, MessageLog
from gateway.messagelog.timestamper import SIGNATURES_URI, Timestamper, TsaEndpoint, signature_value
from gateway.store.db import SqliteDatabase
from protocols.errors import HashChainError, TimestampError
from protocols.hashchain import verify_hash_chain


class _Token:
    def __init__(self, digest: bytes) -> None:
        self.token_der = b"TOKEN:" + digest


class _Tsa:
    """A TSA stand-in: answers with a token naming the digest, or fails while ``down``."""

    def __init__(self, name: str, down: bool = False) -> None:
        self.name, self.down, self.asked = name, down, []

    async def timestamp(self, digest: bytes, hash_name: str) -> _Token:
        assert hash_name == "sha512" and len(digest) == 64
        self.asked.append(digest)
        if self.down:
            raise TimestampError(f"{self.name} is down", code="tsa.unreachable")
        return _Token(digest)


@pytest.fixture(scope="module")
def signatures() -> list[bytes]:
    pki = _make_pki()
    return [_sign(pki, reference_data=f"<m>{i}</m>".encode()) for i in range(3)]


def _entry(signature: bytes, qid: str) -> LogEntry:
    return LogEntry(side="client", direction="request", protocol="soap", query_id=qid, client="VN/GOV/A/s",
                    service="VN/GOV/B/s/echo", service_subsystem="VN/GOV/B/s", signer="VN/GOV/A",
                    message=b"<m/>", signature=signature, attachments=[("text/plain", io.BytesIO(b"x"))])


async def _setup(tmp_path: Path, tsas: list[_Tsa], period: float = 100.0) -> tuple[MessageLog, Timestamper, Clock]:
    from twisted.internet import reactor

    db = SqliteDatabase(reactor, tmp_path / "gateway.db")
    log = MessageLog(db, MessageLogConfig(), CollectorRegistry(), reactor)
    await log.start()
    clock = Clock()
    clock.advance(1_000_000)
    stamper = Timestamper(clock, log, lambda: [TsaEndpoint(t.name, f"http://{t.name}/", t) for t in tsas],
                          interval=lambda: 60.0, failure_period=period, registry=CollectorRegistry())
    return log, stamper, clock


@pytest_twisted.ensureDeferred
async def test_a_batch_gets_one_token_and_each_record_its_hash_chain(tmp_path: Path, signatures: list[bytes]) -> None:
    tsa = _Tsa("tsa-1")
    log, stamper, _clock = await _setup(tmp_path, [tsa])
    try:
        ids = [await log.write(_entry(sig, f"q{i}")) for i, sig in enumerate(signatures)]
        assert await stamper.run_once() == 3
        assert len(tsa.asked) == 1 and await log.unstamped(10) == []
        for record_id, sig in zip(ids, signatures, strict=True):
            found = await log.timestamp_of(record_id)
            assert found is not None
            token, result, chain = found
            assert token == b"TOKEN:" + hashlib.sha512(result).digest() == b"TOKEN:" + tsa.asked[0]
            assert chain is not None
            # the record's chain leads from its signature document to the stamped result
            verify_hash_chain(result, {"/ts-hashchain.xml": chain, SIGNATURES_URI: sig}.get, {SIGNATURES_URI: None})
            with pytest.raises(HashChainError):
                verify_hash_chain(result, {"/ts-hashchain.xml": chain, SIGNATURES_URI: sig + b" "}.get,
                                  {SIGNATURES_URI: None})
        assert stamper.metrics.stamped._value.get() == 3
        assert await stamper.run_once() == 0 and len(tsa.asked) == 1  # nothing waits, nothing asked
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_a_single_record_is_stamped_over_its_signature_value(tmp_path: Path, signatures: list[bytes]) -> None:
    tsa = _Tsa("tsa-1")
    log, stamper, _clock = await _setup(tmp_path, [tsa])
    try:
        record_id = await log.write(_entry(signatures[0], "only"))
        assert await stamper.run_once() == 1
        assert tsa.asked == [hashlib.sha512(signature_value(signatures[0])).digest()]
        found = await log.timestamp_of(record_id)
        assert found is not None and found[1] == b"" and found[2] is None
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_tsas_are_tried_in_priority_order(tmp_path: Path, signatures: list[bytes]) -> None:
    first, second = _Tsa("tsa-1", down=True), _Tsa("tsa-2")
    log, stamper, _clock = await _setup(tmp_path, [first, second])
    try:
        await log.write(_entry(signatures[0], "a"))
        await log.write(_entry(signatures[1], "b"))
        assert await stamper.run_once() == 2
        assert len(first.asked) == 1 and len(second.asked) == 1 and stamper.failing_since is None
        assert stamper.metrics.requests.labels(tsa="tsa-1", result="tsa.unreachable")._value.get() == 1
        assert stamper.metrics.requests.labels(tsa="tsa-2", result="ok")._value.get() == 1
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_failing_longer_than_the_period_refuses_messages_until_stamping_recovers(
        tmp_path: Path, signatures: list[bytes]) -> None:
    tsa = _Tsa("tsa-1", down=True)
    log, stamper, clock = await _setup(tmp_path, [tsa], period=100.0)
    try:
        await log.write(_entry(signatures[0], "before"))
        assert await stamper.run_once() == 0
        assert stamper.failing_since == clock.seconds() and stamper.health()[0]  # failing, still accepting
        clock.advance(100)
        await log.write(_entry(signatures[1], "within the period"))
        clock.advance(1)
        assert stamper.refusing() and not stamper.health()[0]
        with pytest.raises(LoggingFailed) as info:
            await log.write(_entry(signatures[2], "refused"))
        assert (info.value.code, info.value.xroad_code) == ("mlog.timestamper_failed",
                                                            "LoggingFailed.TimestamperFailed")
        assert "Cannot time-stamp messages" in info.value.message and "tsa-1 is down" in info.value.message
        assert [r.query_id for r in await log.records()] == ["before", "within the period"]
        tsa.down = False
        assert await stamper.run_once() == 2  # by itself, at the next round
        assert not stamper.refusing() and stamper.health() == (True, "time-stamping ok")
        await log.write(_entry(signatures[2], "after"))
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_recovery_with_nothing_waiting_and_nothing_ever_stamped(tmp_path: Path) -> None:
    """X-Road once never recovered from a TSA outage when no record had been stamped: here the
    TSAs are probed while stamping is failing and nothing waits."""
    tsa = _Tsa("tsa-1", down=True)
    log, stamper, clock = await _setup(tmp_path, [tsa], period=10.0)
    try:
        stamper._failed("tsa-1 is down")  # e.g. the last round before the records were cleaned up
        clock.advance(11)
        assert stamper.refusing()
        assert await stamper.run_once() == 0 and len(tsa.asked) == 1 and stamper.refusing()
        tsa.down = False
        assert await stamper.run_once() == 0 and len(tsa.asked) == 2
        assert not stamper.refusing() and stamper.failing_since is None
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_no_tsa_at_all_is_a_failure(tmp_path: Path, signatures: list[bytes]) -> None:
    log, stamper, clock = await _setup(tmp_path, [], period=5.0)
    try:
        await log.write(_entry(signatures[0], "x"))
        assert await stamper.run_once() == 0
        assert "no time-stamping authority" in (stamper.last_error or "")
        clock.advance(6)
        with pytest.raises(LoggingFailed):
            await log.write(_entry(signatures[1], "y"))
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_a_zero_period_never_refuses(tmp_path: Path, signatures: list[bytes]) -> None:
    log, stamper, clock = await _setup(tmp_path, [_Tsa("tsa-1", down=True)], period=0.0)
    try:
        await log.write(_entry(signatures[0], "x"))
        await stamper.run_once()
        clock.advance(1_000_000)
        assert not stamper.refusing()
        await log.write(_entry(signatures[1], "y"))
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_the_loop_runs_at_the_interval(tmp_path: Path, signatures: list[bytes]) -> None:
    tsa = _Tsa("tsa-1")
    log, stamper, clock = await _setup(tmp_path, [tsa])
    try:
        await log.write(_entry(signatures[0], "x"))
        stamper.startService()
        clock.advance(59)
        assert tsa.asked == []
        clock.advance(1)
        assert stamper._running is not None
        await stamper._running
        assert len(tsa.asked) == 1 and await log.unstamped(10) == []
        await stamper.stopService()
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_real_clients_fail_over_from_a_garbage_and_a_silent_tsa(tmp_path: Path, signatures: list[bytes]) -> None:
    """TsaClient against real HTTP servers on 127.0.0.1: one answers garbage, one never answers
    (bounded by the client's timeout); the third in priority order gets the request."""
    from test_sigverify import _make_pki as make_pki
    from twisted.internet import reactor
    from twisted.web.resource import Resource
    from twisted.web.server import NOT_DONE_YET, Site

    from gateway.globalconf.client import make_http_client
    from hsm.tsa import TsaClient

    class Garbage(Resource):
        isLeaf = True

        def render_POST(self, request: object) -> bytes:
            request.setHeader(b"content-type", b"application/timestamp-reply")  # type: ignore[attr-defined]
            return b"\x30\x03garbage, not DER"

    class Silent(Resource):
        isLeaf = True

        def render_POST(self, request: object) -> int:
            return NOT_DONE_YET

    ports = [reactor.listenTCP(0, Site(r), interface="127.0.0.1") for r in (Garbage(), Silent())]
    cert = make_pki().ca
    http = make_http_client(reactor, None)
    garbage, silent = (TsaClient(http, reactor, f"http://127.0.0.1:{p.getHost().port}/", [cert], timeout_seconds=0.5)
                       for p in ports)
    good = _Tsa("tsa-3")
    log, stamper, _clock = await _setup(tmp_path, [])
    stamper._tsas = lambda: [TsaEndpoint("garbage", garbage.url, garbage), TsaEndpoint("silent", silent.url, silent),
                             TsaEndpoint("tsa-3", "http://tsa-3/", good)]
    try:
        await log.write(_entry(signatures[0], "a"))
        await log.write(_entry(signatures[1], "b"))
        assert await stamper.run_once() == 2 and len(good.asked) == 1
        results = {(tsa, result) for tsa in ("garbage", "silent", "tsa-3")
                   for result in ("tsa.malformed", "tsa.timeout", "ok")
                   if stamper.metrics.requests.labels(tsa=tsa, result=result)._value.get()}
        assert results == {("garbage", "tsa.malformed"), ("silent", "tsa.timeout"), ("tsa-3", "ok")}
    finally:
        await log.db.close()
        for p in ports:
            await p.stopListening()


@pytest_twisted.ensureDeferred
async def test_synchronous_stamping_of_one_record(tmp_path: Path, signatures: list[bytes]) -> None:
    tsa = _Tsa("tsa-1")
    log, stamper, _clock = await _setup(tmp_path, [tsa])
    try:
        record_id = await log.write(_entry(signatures[0], "now"))
        await stamper.stamp_record(record_id, signatures[0])
        assert tsa.asked == [hashlib.sha512(signature_value(signatures[0])).digest()]
        found = await log.timestamp_of(record_id)
        assert found is not None and found[0] == b"TOKEN:" + tsa.asked[0] and found[2] is None
        tsa.down = True
        other = await log.write(_entry(signatures[1], "refused"))
        with pytest.raises(LoggingFailed) as info:
            await stamper.stamp_record(other, signatures[1])
        assert info.value.xroad_code == "LoggingFailed.TimestamperFailed"
        assert await log.timestamp_of(other) is None
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_a_large_batch_is_linked_in_several_short_transactions(tmp_path: Path, signatures: list[bytes]) -> None:
    from twisted.internet import defer

    tsa = _Tsa("tsa-1")
    log, stamper, _clock = await _setup(tmp_path, [tsa])
    try:
        await defer.gatherResults([defer.Deferred.fromCoroutine(log.write(_entry(signatures[i % 3], f"q{i}")))
                                   for i in range(1234)])
        assert await stamper.run_once() == 1234 and len(tsa.asked) == 1
        assert await log.unstamped(2000) == [] and await log.count_unstamped() == 0
        last = (await log.records(limit=2000))[-1]
        found = await log.timestamp_of(last.id)
        assert found is not None and found[2] is not None
        verify_hash_chain(found[1], {"/ts-hashchain.xml": found[2], SIGNATURES_URI: last.signature}.get,
                          {SIGNATURES_URI: None})
    finally:
        await log.db.close()
