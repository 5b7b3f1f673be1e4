"""The message log store: every signed request and response, with its signature and hash chain.

A record is written *before* its message is passed on (to the provider, the service or the
information system); a message that cannot be logged is refused with an X-Road
``LoggingFailed`` fault, never passed on unlogged.  The schema follows X-Road's ``logrecord``
(message, signature, hash chain and result, signature hash, client and service, query id,
``X-Road-Request-Id``, time-stamp reference, archived flag) with the attachments (SOAP
attachments, REST bodies) in 1 MiB chunks so that no message has to be held whole in memory.
Time-stamps (``tsrecord``) are written by the timestamper; the archiver sets ``archived``.

The same schema serves SQLite and PostgreSQL (:mod:`gateway.store.db`); its versions are the
:data:`MIGRATIONS`.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.config import MessageLogConfig
from gateway.metrics import per_registry
from gateway.store.db import Database, DatabaseError, Migration
from protocols.errors import VdxpError

__all__ = [
    "CHUNK",
    "MIGRATIONS",
    "ArchiveConflict",
    "LogEntry",
    "LoggingFailed",
    "MessageLog",
    "StoredRecord",
]

CHUNK = 1 << 20

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "message log: records, attachments, time-stamps", (
        """CREATE TABLE tsrecord (
            id {id},
            created_at {real} NOT NULL,
            tsa_url TEXT NOT NULL,
            hash_chain_result {blob} NOT NULL,
            token {blob} NOT NULL
        )""",
        """CREATE TABLE logrecord (
            id {id},
            created_at {real} NOT NULL,
            side TEXT NOT NULL,
            direction TEXT NOT NULL,
            protocol TEXT NOT NULL,
            query_id TEXT NOT NULL,
            x_request_id TEXT,
            client TEXT NOT NULL,
            service TEXT NOT NULL,
            signer TEXT NOT NULL,
            message {blob} NOT NULL,
            body_logged INTEGER NOT NULL,
            message_size {bigint} NOT NULL,
            attachments INTEGER NOT NULL,
            attachments_size {bigint} NOT NULL,
            truncated INTEGER NOT NULL,
            signature {blob} NOT NULL,
            signature_hash TEXT NOT NULL,
            hash_chain {blob},
            hash_chain_result {blob},
            timestamp_id {bigint} REFERENCES tsrecord(id),
            ts_hash_chain {blob},
            archived INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX logrecord_query_id ON logrecord (query_id)",
        "CREATE INDEX logrecord_unstamped ON logrecord (id) WHERE timestamp_id IS NULL",
        "CREATE INDEX logrecord_unarchived ON logrecord (id) WHERE archived = 0",
        """CREATE TABLE logattachment (
            record_id {bigint} NOT NULL REFERENCES logrecord(id) ON DELETE CASCADE,
            part INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            content_type TEXT NOT NULL,
            data {blob} NOT NULL,
            PRIMARY KEY (record_id, part, seq)
        )""",
    )),
    Migration(2, "message log: archive chain state per group", (
        """CREATE TABLE archive_state (
            grp TEXT PRIMARY KEY,
            last_digest TEXT NOT NULL,
            last_archive TEXT NOT NULL,
            updated_at {real} NOT NULL
        )""",
        "CREATE INDEX logrecord_archived_created ON logrecord (archived, created_at)",
    )),
)


class ArchiveConflict(VdxpError):
    code = "mlog.archive_conflict"


class LoggingFailed(VdxpError):
    """The message could not be logged (so it must not be passed on); ``xroad_code`` is the
    fault code under the side's prefix: ``LoggingFailed`` + a sub-code."""

    code = "mlog.failed"


@dataclass(frozen=True)
class LogEntry:
    """One signed message as it is logged.

    ``message`` is the SOAP envelope (or the REST message head as signed); ``attachments`` are
    ``(content type, file)`` pairs read from their start in 1 MiB chunks (SOAP attachments, or the
    REST body); ``service_subsystem`` decides body logging; ``signer`` is the member whose key
    made ``signature``.
    """

    side: Literal["client", "server"]
    direction: Literal["request", "response"]
    protocol: Literal["soap", "rest"]
    query_id: str
    client: str
    service: str
    service_subsystem: str
    signer: str
    message: bytes
    signature: bytes
    hash_chain: bytes | None = None
    hash_chain_result: bytes | None = None
    x_request_id: str | None = None
    attachments: Sequence[tuple[str, IO[bytes]]] = field(default=())
    stripped_message: bytes | None = None  # the message without its body, when bodies are not logged


@dataclass(frozen=True)
class StoredRecord:
    id: int
    created_at: float
    side: str
    direction: str
    protocol: str
    query_id: str
    x_request_id: str | None
    client: str
    service: str
    signer: str
    message: bytes
    body_logged: bool
    message_size: int
    attachments: int
    attachments_size: int
    truncated: bool
    signature: bytes
    signature_hash: str
    hash_chain: bytes | None
    hash_chain_result: bytes | None
    timestamp_id: int | None
    archived: bool


_SELECT = ("SELECT id, created_at, side, direction, protocol, query_id, x_request_id, client, service, signer, "
           "message, body_logged, message_size, attachments, attachments_size, truncated, signature, signature_hash, "
           "hash_chain, hash_chain_result, timestamp_id, archived FROM logrecord ")


def signature_hash(signature_xml: bytes) -> str:
    """X-Road's ``signaturehash``: base64 of the SHA-512 of the signature document (the
    timestamper's hash chain inputs)."""
    return base64.b64encode(hashlib.sha512(signature_xml).digest()).decode("ascii")


@dataclass
class _Pending:
    entry: LogEntry
    body: bool
    sizes: list[int]
    truncated: bool
    created_at: float
    started: float
    done: Deferred[int]


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter("vdxp_messagelog_records", "Messages written to the message log.",
                               ["side", "direction", "result"], registry=registry)
        self.seconds = Histogram("vdxp_messagelog_write_seconds", "Time to write one message log record.",
                                 registry=registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0))
        self.bytes = Counter("vdxp_messagelog_bytes", "Bytes of messages and attachments logged.", registry=registry)
        self.batch = Histogram("vdxp_messagelog_batch_records", "Records written in one transaction.",
                               registry=registry, buckets=(1, 2, 5, 10, 20, 50, 100, 200))


_metrics = per_registry(_Metrics)


class MessageLog:
    """Writes and reads log records through a :class:`gateway.store.db.Database`."""

    log = Logger()

    def __init__(self, db: Database, settings: MessageLogConfig, registry: CollectorRegistry,
                 clock: Any, *, max_batch: int = 200) -> None:
        self.db = db
        self.settings = settings
        self._clock = clock  # the reactor: seconds() for record times, callLater() to gather writes
        self.metrics = _metrics(registry)
        self.max_batch = max_batch
        self._queue: list[_Pending] = []
        self._busy = False
        self._gather: Any = None
        # Called before every write; raises LoggingFailed to refuse messages (the timestamper's
        # "failing for longer than the acceptable period").
        self.gate: Callable[[], None] | None = None
        self.last_failure: str | None = None  # for the health check
        self.failures = 0

    async def start(self) -> int:
        """Bring the schema up to date; its version."""
        return await self.db.migrate(MIGRATIONS)

    async def write(self, entry: LogEntry) -> int:
        """Log ``entry`` durably; its record id.  Raises :class:`LoggingFailed` (with the X-Road
        sub-code) when it cannot, after which the caller must not pass the message on.

        Records written in the same reactor turn, and those that arrive while a transaction is
        being committed, share the next transaction (group commit): one disk sync for many."""
        if self.gate is not None:
            try:
                self.gate()
            except LoggingFailed as exc:
                self._count(entry, exc.code.replace("mlog.", ""))
                raise
        body = self.settings.logs_body(entry.service_subsystem)
        limit = self.settings.max_loggable_body_bytes
        sizes = [_size(f) for _ct, f in entry.attachments]
        truncated = False
        if body and any(s > limit for s in sizes):
            if self.settings.oversize == "reject":
                self._count(entry, "too_large")
                raise LoggingFailed(f"Message size exceeds maximum loggable size ({limit} bytes)",
                                    code="mlog.too_large", xroad_code="LoggingFailed")
            truncated = True
        pending = _Pending(entry, body, sizes, truncated, self._clock.seconds(), time.monotonic(), Deferred())
        self._queue.append(pending)
        if self._gather is None and not self._busy:
            self._gather = self._clock.callLater(0, self._gathered)
        return await pending.done

    def _gathered(self) -> None:
        self._gather = None
        self._pump()

    def _pump(self) -> None:
        if self._busy or not self._queue:
            return
        batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
        self._busy = True
        limit = self.settings.max_loggable_body_bytes

        def insert_all(conn: Any) -> list[int]:
            return [self._insert(conn, p, limit) for p in batch]

        try:
            d = self.db.run(insert_all, timeout=self.settings.timeout_seconds)
        except DatabaseError as exc:
            self._batch_failed(batch, exc)
            return
        d.addCallbacks(self._batch_written, self._batch_error, callbackArgs=(batch,), errbackArgs=(batch,))

    def _insert(self, conn: Any, p: _Pending, limit: int) -> int:
        entry = p.entry
        message = entry.message if p.body else (entry.stripped_message or b"")
        cur = conn.cursor()
        cur.execute(self.db.sql(
            "INSERT INTO logrecord (created_at, side, direction, protocol, query_id, x_request_id, client, "
            "service, signer, message, body_logged, message_size, attachments, attachments_size, truncated, "
            "signature, signature_hash, hash_chain, hash_chain_result) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"),
            (p.created_at, entry.side, entry.direction, entry.protocol, entry.query_id, entry.x_request_id,
             entry.client, entry.service, entry.signer, message, int(p.body), len(entry.message),
             len(entry.attachments), sum(p.sizes), int(p.truncated), entry.signature, signature_hash(entry.signature),
             entry.hash_chain, entry.hash_chain_result))
        record_id = int(cur.fetchone()[0])
        if p.body:
            sql = self.db.sql("INSERT INTO logattachment (record_id, part, seq, content_type, data) "
                              "VALUES (?, ?, ?, ?, ?)")
            for part, (content_type, f) in enumerate(entry.attachments, 1):
                _copy_chunks(cur, sql, record_id, part, content_type, f, limit)
        return record_id

    def _batch_written(self, ids: list[int], batch: list[_Pending]) -> None:
        self._busy = False
        self.last_failure = None
        limit = self.settings.max_loggable_body_bytes
        now = time.monotonic()
        self.metrics.batch.observe(len(batch))
        for p, record_id in zip(batch, ids, strict=True):
            self._count(p.entry, "ok")
            self.metrics.seconds.observe(now - p.started)
            self.metrics.bytes.inc(len(p.entry.message if p.body else (p.entry.stripped_message or b""))
                                   + (sum(min(s, limit) for s in p.sizes) if p.body else 0))
            p.done.callback(record_id)
        self._pump()

    def _batch_error(self, failure: Failure, batch: list[_Pending]) -> None:
        exc = failure.value
        if not isinstance(exc, DatabaseError):
            self.log.failure("message log write failed", failure)
            exc = DatabaseError(f"{type(exc).__name__}: {exc}", code="db.failed")
        self._batch_failed(batch, exc)
        self._pump()

    def _batch_failed(self, batch: list[_Pending], exc: DatabaseError) -> None:
        self._busy = False
        self.failures += 1
        self.last_failure = f"{exc.code}: {exc.message}"
        self.log.error("message log write failed ({code}): {error}", code=exc.code, error=exc.message)
        for p in batch:
            self._count(p.entry, exc.code.replace("db.", ""))
            p.done.errback(LoggingFailed(f"Cannot log the message: {exc.message}", code="mlog.database",
                                         xroad_code="LoggingFailed.DatabaseError"))

    def _count(self, entry: LogEntry, result: str) -> None:
        self.metrics.records.labels(side=entry.side, direction=entry.direction, result=result).inc()

    async def unstamped(self, limit: int) -> list[tuple[int, bytes]]:
        """``(record id, SHA-512 of its signature document)`` of the oldest records without a
        time-stamp (the digest is the stored ``signaturehash``: the documents are not read again)."""
        def select(conn: Any) -> list[tuple[int, bytes]]:
            cur = conn.cursor()
            cur.execute(self.db.sql("SELECT id, signature_hash FROM logrecord WHERE timestamp_id IS NULL "
                                    "ORDER BY id LIMIT ?"), (limit,))
            return [(int(r[0]), base64.b64decode(r[1])) for r in cur.fetchall()]

        return await self.db.run(select)

    async def signature_of(self, record_id: int) -> bytes | None:
        def select(conn: Any) -> bytes | None:
            cur = conn.cursor()
            cur.execute(self.db.sql("SELECT signature FROM logrecord WHERE id = ?"), (record_id,))
            row = cur.fetchone()
            return bytes(row[0]) if row is not None else None

        return await self.db.run(select)

    async def count_unstamped(self) -> int:
        def count(conn: Any) -> int:
            cur = conn.cursor()
            cur.execute("SELECT COUNT(*) FROM logrecord WHERE timestamp_id IS NULL")
            return int(cur.fetchone()[0])

        return await self.db.run(count)

    async def save_timestamp(self, token: bytes, tsa_url: str, hash_chain_result: bytes,
                             stamped: Sequence[tuple[int, bytes | None]], created_at: float,
                             chunk: int = 500) -> int:
        """Store a time-stamp token and link the records it covers (each with its own time-stamp
        hash chain, or None when the token is over the single record's signature value); the
        ``tsrecord`` id.  The links are written ``chunk`` records per transaction, so message writes
        (on SQLite's one database thread) wait for a short transaction, not for 10,000 updates; a
        record whose link was not written (a stop in between) is simply stamped again later."""
        update = self.db.sql("UPDATE logrecord SET timestamp_id = ?, ts_hash_chain = ? "
                             "WHERE id = ? AND timestamp_id IS NULL")

        def save(conn: Any) -> int:
            cur = conn.cursor()
            cur.execute(self.db.sql("INSERT INTO tsrecord (created_at, tsa_url, hash_chain_result, token) "
                                    "VALUES (?, ?, ?, ?) RETURNING id"),
                        (created_at, tsa_url, hash_chain_result, token))
            ts_id = int(cur.fetchone()[0])
            cur.executemany(update, [(ts_id, chain, record_id) for record_id, chain in stamped[:chunk]])
            return ts_id

        ts_id = await self.db.run(save)
        for start in range(chunk, len(stamped), chunk):
            part = stamped[start:start + chunk]

            def link(conn: Any, part: Sequence[tuple[int, bytes | None]] = part) -> None:
                conn.cursor().executemany(update, [(ts_id, chain, record_id) for record_id, chain in part])

            await self.db.run(link)
        return ts_id

    async def timestamp_of(self, record_id: int) -> tuple[bytes, bytes, bytes | None] | None:
        """(token, time-stamp hash chain result, the record's hash chain) of a stamped record."""
        def select(conn: Any) -> tuple[bytes, bytes, bytes | None] | None:
            cur = conn.cursor()
            cur.execute(self.db.sql("SELECT t.token, t.hash_chain_result, r.ts_hash_chain FROM logrecord r "
                                    "JOIN tsrecord t ON t.id = r.timestamp_id WHERE r.id = ?"), (record_id,))
            row = cur.fetchone()
            if row is None:
                return None
            return bytes(row[0]), bytes(row[1]), bytes(row[2]) if row[2] is not None else None

        return await self.db.run(select)

    async def archivable(self, after_id: int, limit: int) -> list[StoredRecord]:
        """Time-stamped records not archived yet, with ids above ``after_id``, oldest first."""
        def select(conn: Any) -> list[StoredRecord]:
            cur = conn.cursor()
            cur.execute(self.db.sql(_SELECT + "WHERE archived = 0 AND timestamp_id IS NOT NULL AND id > ? "
                                    "ORDER BY id LIMIT ?"), (after_id, limit))
            return [_record(row) for row in cur.fetchall()]

        return await self.db.run(select)

    async def archive_state(self) -> dict[str, tuple[str, str]]:
        """Per archive group: (last digest, last archive name)."""
        def select(conn: Any) -> dict[str, tuple[str, str]]:
            cur = conn.cursor()
            cur.execute("SELECT grp, last_digest, last_archive FROM archive_state")
            return {str(r[0]): (str(r[1]), str(r[2])) for r in cur.fetchall()}

        return await self.db.run(select)

    async def commit_archive(self, group: str, expected: str | None, digest: str, name: str,
                             record_ids: Sequence[int]) -> None:
        """Record that ``name`` (ending in ``digest``) follows the group's last archive ``expected``
        and holds ``record_ids``, in one transaction; :class:`ArchiveConflict` when another archiver
        moved the group's chain in between (nothing is changed then)."""
        def commit(conn: Any) -> None:
            cur = conn.cursor()
            now = self._clock.seconds()
            if expected is None:
                cur.execute(self.db.sql("INSERT INTO archive_state (grp, last_digest, last_archive, updated_at) "
                                        "SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM archive_state "
                                        "WHERE grp = ?)"), (group, digest, name, now, group))
            else:
                cur.execute(self.db.sql("UPDATE archive_state SET last_digest = ?, last_archive = ?, updated_at = ? "
                                        "WHERE grp = ? AND last_digest = ?"), (digest, name, now, group, expected))
            if cur.rowcount != 1:
                raise ArchiveConflict(f"the archive chain of group {group or '(all)'} moved meanwhile")
            cur.executemany(self.db.sql("UPDATE logrecord SET archived = 1 WHERE id = ?"),
                            [(rid,) for rid in record_ids])

        await self.db.run(commit)

    async def clean(self, older_than: float) -> int:
        """Delete archived records logged before ``older_than`` (and time-stamps no record uses);
        never a record that is not archived.  The number of records deleted."""
        def delete(conn: Any) -> int:
            cur = conn.cursor()
            cur.execute(self.db.sql("DELETE FROM logattachment WHERE record_id IN (SELECT id FROM logrecord "
                                    "WHERE archived = 1 AND created_at < ?)"), (older_than,))
            cur.execute(self.db.sql("DELETE FROM logrecord WHERE archived = 1 AND created_at < ?"), (older_than,))
            deleted = int(cur.rowcount)
            cur.execute("DELETE FROM tsrecord WHERE id NOT IN (SELECT timestamp_id FROM logrecord "
                        "WHERE timestamp_id IS NOT NULL)")
            return deleted

        return await self.db.run(delete)

    async def records(self, query_id: str | None = None, *, limit: int = 1000) -> list[StoredRecord]:
        """Records (all, or of one query id), oldest first."""
        def select(conn: Any) -> list[StoredRecord]:
            cur = conn.cursor()
            if query_id is None:
                cur.execute(self.db.sql(_SELECT + "ORDER BY id LIMIT ?"), (limit,))
            else:
                cur.execute(self.db.sql(_SELECT + "WHERE query_id = ? ORDER BY id LIMIT ?"), (query_id, limit))
            return [_record(row) for row in cur.fetchall()]

        return await self.db.run(select)

    async def attachment(self, record_id: int, part: int) -> tuple[str, bytes] | None:
        """One attachment of a record, whole (for tests and small exports; the archiver streams)."""
        def select(conn: Any) -> tuple[str, bytes] | None:
            cur = conn.cursor()
            cur.execute(self.db.sql("SELECT content_type, data FROM logattachment WHERE record_id = ? AND part = ? "
                                    "ORDER BY seq"), (record_id, part))
            rows = cur.fetchall()
            if not rows:
                return None
            return str(rows[0][0]), b"".join(bytes(r[1]) for r in rows)

        return await self.db.run(select)

    def health(self) -> tuple[bool, str]:
        if self.last_failure is not None:
            return False, f"message log: {self.last_failure}"
        return True, "message log writable"

    async def probe(self) -> tuple[bool, str]:
        """After a failed write: is the database writable again?  A real write that changes
        nothing (it needs space in the journal, so a full disk still fails it); clears the failure
        when it succeeds, so the health check recovers without waiting for the next message."""
        if self.last_failure is None:
            return self.health()

        def touch(conn: Any) -> None:
            conn.cursor().execute("UPDATE schema_migrations SET applied_at = applied_at "
                                  "WHERE version = (SELECT MAX(version) FROM schema_migrations)")

        try:
            await self.db.run(touch, timeout=min(self.settings.timeout_seconds, 5.0))
        except DatabaseError as exc:
            self.last_failure = f"{exc.code}: {exc.message}"
            return False, f"message log: {self.last_failure}"
        self.last_failure = None
        return True, "message log writable"


def _size(f: IO[bytes]) -> int:
    position = f.tell()
    f.seek(0, 2)
    size = f.tell()
    f.seek(position)
    return size


def _copy_chunks(cur: Any, sql: str, record_id: int, part: int, content_type: str, f: IO[bytes],
                 limit: int) -> None:
    """Copy ``f`` (from its start, at most ``limit`` bytes) into chunk rows; ``f`` is left at its start."""
    f.seek(0)
    left = limit
    seq = 0
    try:
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break
            cur.execute(sql, (record_id, part, seq, content_type, chunk))
            seq += 1
            left -= len(chunk)
        if seq == 0:
            cur.execute(sql, (record_id, part, 0, content_type, b""))
    finally:
        f.seek(0)


def _record(row: Sequence[Any]) -> StoredRecord:
    return StoredRecord(
        id=int(row[0]), created_at=float(row[1]), side=row[2], direction=row[3], protocol=row[4], query_id=row[5],
        x_request_id=row[6], client=row[7], service=row[8], signer=row[9], message=bytes(row[10]),
        body_logged=bool(row[11]), message_size=int(row[12]), attachments=int(row[13]),
        attachments_size=int(row[14]), truncated=bool(row[15]), signature=bytes(row[16]), signature_hash=row[17],
        hash_chain=bytes(row[18]) if row[18] is not None else None,
        hash_chain_result=bytes(row[19]) if row[19] is not None else None,
        timestamp_id=int(row[20]) if row[20] is not None else None, archived=bool(row[21]))
