"""The message log store on a real SQLite file (WAL) and a real PostgreSQL cluster, same schema."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from pgcluster import pg_cluster
from prometheus_client import CollectorRegistry

from gateway.config import MessageLogConfig
from gateway.messagelog.store import MIGRATIONS, LogEntry, LoggingFailed, MessageLog
from gateway.store.db import Database, DatabaseError, Migration, PostgresDatabase, SqliteDatabase

SERVICE = "VN-TEST/GOV/000.00.00.G22/example/echo"
SUBSYSTEM = "VN-TEST/GOV/000.00.00.G22/example"


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str]:
    with pg_cluster() as dsn:
        yield dsn


def _entry(**kw: Any) -> LogEntry:
    base: dict[str, Any] = dict(
        side="client", direction="request", protocol="soap", query_id="q-1", client="VN-TEST/GOV/000.00.00.H41/edoc",
        service=SERVICE, service_subsystem=SUBSYSTEM, signer="VN-TEST/GOV/000.00.00.H41",
        message=b"<s:Envelope><s:Header/><s:Body><m:echo>secret text</m:echo></s:Body></s:Envelope>",
        signature=b"<XAdESSignatures>sig</XAdESSignatures>", hash_chain=b"<chain/>", hash_chain_result=b"<result/>",
        x_request_id="rid-1", stripped_message=b"<s:Envelope><s:Header/><s:Body/></s:Envelope>")
    base.update(kw)
    return LogEntry(**base)


class _Clock:
    """The reactor, but with a fixed time for the records."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, fn: Any, *args: Any) -> Any:
        from twisted.internet import reactor

        return reactor.callLater(delay, fn, *args)


async def _open(kind: str, tmp_path: Path, pg_dsn: str | None) -> Database:
    from twisted.internet import reactor

    if kind == "sqlite":
        return SqliteDatabase(reactor, tmp_path / "state" / "gateway.db")
    assert pg_dsn is not None
    db = PostgresDatabase(reactor, pg_dsn, threads=2)
    # a fresh schema per test: drop what an earlier test made

    def reset(conn: Any) -> None:
        conn.cursor().execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")

    await db.run(reset)
    return db


@pytest.fixture(params=["sqlite", "postgresql"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _log(kind: str, tmp_path: Path, request: pytest.FixtureRequest,
               settings: MessageLogConfig | None = None) -> MessageLog:
    dsn = request.getfixturevalue("pg_dsn") if kind == "postgresql" else None
    db = await _open(kind, tmp_path, dsn)
    log = MessageLog(db, settings or MessageLogConfig(), CollectorRegistry(), _Clock())
    assert await log.start() == len(MIGRATIONS)
    return log


@pytest_twisted.ensureDeferred
async def test_records_and_chunked_attachments_round_trip(kind: str, tmp_path: Path,
                                                          request: pytest.FixtureRequest) -> None:
    log = await _log(kind, tmp_path, request)
    try:
        big = os.urandom(2 * 1024 * 1024 + 1234)  # three chunks
        f = io.BytesIO(big)
        f.seek(100)
        record_id = await log.write(_entry(attachments=[("application/pdf", f), ("text/plain", io.BytesIO(b""))]))
        assert f.tell() == 0  # left at its start, ready to be sent on
        await log.write(_entry(direction="response", query_id="q-1", x_request_id=None, hash_chain=None,
                               hash_chain_result=None))
        await log.write(_entry(query_id="q-2"))
        records = await log.records("q-1")
        assert [(r.direction, r.id == record_id) for r in records] == [("request", True), ("response", False)]
        first = records[0]
        assert first.message.endswith(b"secret text</m:echo></s:Body></s:Envelope>") and first.body_logged
        assert (first.attachments, first.attachments_size, first.truncated) == (2, len(big), False)
        assert first.signature_hash == base64.b64encode(hashlib.sha512(first.signature).digest()).decode()
        assert (first.hash_chain, first.hash_chain_result, first.x_request_id) == (b"<chain/>", b"<result/>", "rid-1")
        assert (first.timestamp_id, first.archived, first.created_at) == (None, False, 1_700_000_000.0)
        assert records[1].hash_chain is None and records[1].x_request_id is None
        assert await log.attachment(record_id, 1) == ("application/pdf", big)
        assert await log.attachment(record_id, 2) == ("text/plain", b"")
        assert await log.attachment(record_id, 3) is None
        assert len(await log.records()) == 3
        assert log.metrics.records.labels(side="client", direction="request", result="ok")._value.get() == 2
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_concurrent_writes_share_transactions(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from twisted.internet import defer

    log = await _log(kind, tmp_path, request)
    try:
        ids = await defer.gatherResults([defer.Deferred.fromCoroutine(log.write(_entry(query_id=f"q{i}")))
                                         for i in range(50)])
        assert sorted(ids) == ids and len(set(ids)) == 50
        assert [r.query_id for r in await log.records()] == [f"q{i}" for i in range(50)]
        samples = {s.name: s.value for m in log.metrics.batch.collect() for s in m.samples}
        assert (samples["vdxp_messagelog_batch_records_sum"], samples["vdxp_messagelog_batch_records_count"]) \
            == (50, 1)  # one transaction for the burst
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_body_logging_off_keeps_headers_only(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    log = await _log(kind, tmp_path, request, MessageLogConfig(body_logging=False,
                                                                body_logging_exceptions=("VN-TEST/GOV/X/other",)))
    try:
        rid = await log.write(_entry(attachments=[("application/pdf", io.BytesIO(b"%PDF secret"))]))
        await log.write(_entry(query_id="q-other", service="VN-TEST/GOV/X/other/svc",
                               service_subsystem="VN-TEST/GOV/X/other"))
        stripped = (await log.records("q-1"))[0]
        assert stripped.message == b"<s:Envelope><s:Header/><s:Body/></s:Envelope>" and not stripped.body_logged
        assert stripped.attachments_size == len(b"%PDF secret") and await log.attachment(rid, 1) is None
        excepted = (await log.records("q-other"))[0]
        assert excepted.body_logged and b"secret text" in excepted.message
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_oversized_bodies_follow_the_policy(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    log = await _log(kind, tmp_path, request, MessageLogConfig(max_loggable_body_bytes=1000))
    try:
        with pytest.raises(LoggingFailed) as info:
            await log.write(_entry(attachments=[("application/json", io.BytesIO(b"x" * 1001))]))
        assert (info.value.code, info.value.xroad_code) == ("mlog.too_large", "LoggingFailed")
        assert "exceeds maximum loggable size" in info.value.message
        assert await log.records() == []
        await log.write(_entry(attachments=[("application/json", io.BytesIO(b"x" * 1000))]))  # at the limit
    finally:
        await log.db.close()
    log = await _log(kind, tmp_path / "t", request, MessageLogConfig(max_loggable_body_bytes=1000,
                                                                     oversize="truncate"))
    try:
        rid = await log.write(_entry(attachments=[("application/json", io.BytesIO(b"y" * 5000))]))
        record = (await log.records())[0]
        assert (record.truncated, record.attachments_size) == (True, 5000)
        assert await log.attachment(rid, 1) == ("application/json", b"y" * 1000)
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_migrations_are_versioned_and_a_newer_schema_is_refused(kind: str, tmp_path: Path,
                                                                       request: pytest.FixtureRequest) -> None:
    log = await _log(kind, tmp_path, request)
    db = log.db
    try:
        n = len(MIGRATIONS)
        assert await db.migrate(MIGRATIONS) == n  # nothing to do the second time
        later = (*MIGRATIONS, Migration(n + 1, "a column", ("ALTER TABLE logrecord ADD COLUMN note TEXT",)))
        assert await db.migrate(later) == n + 1

        def columns(conn: Any) -> list[Any]:
            cur = conn.cursor()
            cur.execute(db.sql("SELECT version, description FROM schema_migrations ORDER BY version"))
            return list(cur.fetchall())

        assert [tuple(r) for r in await db.run(columns)] == [
            *((m.version, m.description) for m in MIGRATIONS), (n + 1, "a column")]
        with pytest.raises(DatabaseError) as info:
            await db.migrate(MIGRATIONS)  # an older program on the newer database
        assert info.value.code == "db.schema_too_new"
        with pytest.raises(ValueError):
            db.migrate((Migration(2, "a gap", ()),))
    finally:
        await db.close()


@pytest_twisted.ensureDeferred
async def test_sqlite_disk_full_fails_closed_and_recovers(tmp_path: Path) -> None:
    """SQLite's page limit stands in for a full disk: the same SQLITE_FULL error, no root needed."""
    from twisted.internet import reactor

    db = SqliteDatabase(reactor, tmp_path / "gateway.db")
    log = MessageLog(db, MessageLogConfig(), CollectorRegistry(), _Clock())
    await log.start()
    try:
        await log.write(_entry())

        def cap(conn: sqlite3.Connection) -> int:
            pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            conn.execute(f"PRAGMA max_page_count={pages}")
            return pages

        await db.run(cap)
        with pytest.raises(LoggingFailed) as info:
            await log.write(_entry(query_id="big", attachments=[("application/pdf", io.BytesIO(os.urandom(200_000)))]))
        assert (info.value.code, info.value.xroad_code) == ("mlog.database", "LoggingFailed.DatabaseError")
        assert "full" in info.value.message
        assert not log.health()[0] and "db.full" in log.health()[1]
        assert [r.query_id for r in await log.records()] == ["q-1"]  # nothing half-written

        def uncap(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA max_page_count=1073741823")

        await db.run(uncap)
        assert not log.health()[0]
        assert await log.probe() == (True, "message log writable")  # healthy again without a message
        assert log.health()[0]
        await log.write(_entry(query_id="big", attachments=[("application/pdf", io.BytesIO(os.urandom(200_000)))]))
        assert log.health()[0] and [r.query_id for r in await log.records()] == ["q-1", "big"]
        assert oct((tmp_path / "gateway.db").stat().st_mode & 0o777) == "0o600"
    finally:
        await db.close()


@pytest_twisted.ensureDeferred
async def test_postgresql_down_fails_closed_and_reconnects() -> None:
    from twisted.internet import reactor

    with pg_cluster() as cluster:
        db = PostgresDatabase(reactor, cluster, threads=1, connect_timeout=2)
        log = MessageLog(db, MessageLogConfig(timeout_seconds=10), CollectorRegistry(), _Clock())
        try:
            await log.start()
            await log.write(_entry())
            cluster.stop()
            for _ in range(2):  # the broken connection, then no server at all
                with pytest.raises(LoggingFailed) as info:
                    await log.write(_entry(query_id="lost"))
                assert info.value.xroad_code == "LoggingFailed.DatabaseError" and not log.health()[0]
            cluster.start()
            await log.write(_entry(query_id="after"))  # a new connection, no restart
            assert log.health()[0]
            assert [r.query_id for r in await log.records()] == ["q-1", "after"]
        finally:
            await db.close()


@pytest_twisted.ensureDeferred
async def test_wal_journal_and_full_sync_by_default(tmp_path: Path) -> None:
    from twisted.internet import reactor

    db = SqliteDatabase(reactor, tmp_path / "gateway.db")
    try:
        def pragmas(conn: sqlite3.Connection) -> tuple[str, int]:
            return (conn.execute("PRAGMA journal_mode").fetchone()[0], conn.execute("PRAGMA synchronous").fetchone()[0])

        assert await db.run(pragmas) == ("wal", 2)  # 2 = FULL
    finally:
        await db.close()
    db = SqliteDatabase(reactor, tmp_path / "g2.db", synchronous="normal")
    try:
        assert (await db.run(pragmas))[1] == 1
    finally:
        await db.close()



@pytest_twisted.ensureDeferred
async def test_sqlite_locked_beyond_the_busy_timeout_fails_closed_and_recovers(tmp_path: Path) -> None:
    from twisted.internet import reactor

    path = tmp_path / "gateway.db"
    db = SqliteDatabase(reactor, path, busy_timeout_ms=300)
    log = MessageLog(db, MessageLogConfig(), CollectorRegistry(), _Clock())
    await log.start()
    other = sqlite3.connect(str(path), isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # another program holds the database
        with pytest.raises(LoggingFailed) as info:
            await log.write(_entry(query_id="while-locked"))
        assert info.value.xroad_code == "LoggingFailed.DatabaseError" and "db.locked" in (log.last_failure or "")
        other.execute("ROLLBACK")
        await log.write(_entry(query_id="after"))
        assert [r.query_id for r in await log.records()] == ["after"]
    finally:
        other.close()
        await db.close()
