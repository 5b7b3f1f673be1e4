"""One storage interface, served by SQLite (the embedded default) and PostgreSQL (clusters).

Callers never touch a connection on the reactor thread: they hand :meth:`Database.run` a
function of a DB-API connection; it runs on the database's own thread(s) inside one
transaction (committed when the function returns, rolled back when it raises) and its result
comes back as an awaitable.  SQL is written once with ``?`` placeholders and the types
``{id}`` (an auto-increment primary key), ``{blob}``, ``{bigint}`` and ``{real}``; the
PostgreSQL connection turns ``?`` into ``%s`` and the types into its own.

SQLite runs on one thread with one connection (WAL journal; ``synchronous=FULL`` by default,
so a committed record survives a power loss; ``normal`` trades that for speed); PostgreSQL on a
small pool of threads, one connection each (psycopg 3), reconnecting after a failure.

Schema changes are versioned migrations (:class:`Migration`) recorded in ``schema_migrations``;
:meth:`Database.migrate` applies the missing ones in order, each in its own transaction, and
refuses a database whose schema is newer than this program knows.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from protocols.errors import VdxpError

__all__ = [
    "Database",
    "DatabaseError",
    "Migration",
    "SqliteDatabase",
    "open_database",
]

T = TypeVar("T")

SQLITE_TYPES = {
    "id": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "blob": "BLOB",
    "bigint": "INTEGER",
    "real": "REAL",
}
POSTGRES_TYPES = {
    "id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "blob": "BYTEA",
    "bigint": "BIGINT",
    "real": "DOUBLE PRECISION",
}


class DatabaseError(VdxpError):
    """The database failed (unreachable, locked beyond the busy timeout, disk full, read-only,
    schema too new); ``code`` says which (``db.unavailable``, ``db.full``, ``db.read_only``,
    ``db.locked``, ``db.timeout``, ``db.schema_too_new``, ``db.failed``)."""


@dataclass(frozen=True)
class Migration:
    """One schema change: ``version`` (1, 2, …), what it does, and its SQL statements."""

    version: int
    description: str
    statements: tuple[str, ...]


class Database(Protocol):
    """What the message log, and later the outbox, inbox and mailboxes, are written through."""

    kind: Literal["sqlite", "postgresql"]

    def run(self, fn: Callable[[Any], T], *, timeout: float | None = None) -> Deferred[T]:
        """``fn(connection)`` in one transaction on the database's thread; fails with
        :class:`DatabaseError` (or what ``fn`` raised)."""
        ...

    def sql(self, text: str) -> str:
        """``text`` in this database's dialect (placeholders and type names)."""
        ...

    def migrate(self, migrations: Sequence[Migration]) -> Deferred[int]:
        """Apply the missing migrations; the schema version after."""
        ...

    def close(self) -> Deferred[None]:
        ...


def _classify_sqlite(exc: BaseException) -> DatabaseError:
    text = str(exc)
    lowered = text.lower()
    if "disk is full" in lowered or "database or disk is full" in lowered:
        code = "db.full"
    elif "readonly" in lowered or "read-only" in lowered or "attempt to write a readonly" in lowered:
        code = "db.read_only"
    elif "locked" in lowered or "busy" in lowered:
        code = "db.locked"
    elif "unable to open" in lowered or "disk i/o error" in lowered:
        code = "db.unavailable"
    else:
        code = "db.failed"
    return DatabaseError(f"SQLite: {text}", code=code)


class _Threaded:
    """A thread pool of fixed size whose threads each hold one connection."""

    kind: Literal["sqlite", "postgresql"]
    types: dict[str, str]
    default_timeout = 30.0

    def __init__(self, reactor: Any, threads: int, name: str) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=threads, maxthreads=threads, name=name)
        self._local = threading.local()
        self._started = False
        self._closed = False

    def sql(self, text: str) -> str:
        return text.format(**self.types)

    def _connection(self) -> Any:
        raise NotImplementedError

    def _forget_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: S110 - a broken connection may fail to close; it is dropped anyway
                pass

    def _classify(self, exc: BaseException) -> DatabaseError:
        raise NotImplementedError

    def _in_thread(self, fn: Callable[[Any], T]) -> T:
        try:
            conn = self._connection()
        except DatabaseError:
            raise
        except Exception as exc:
            raise self._classify(exc) from exc
        try:
            result = fn(conn)
            conn.commit()
            return result
        except BaseException as exc:
            try:
                conn.rollback()
            except Exception:
                self._forget_connection()
            if isinstance(exc, VdxpError):
                raise
            if self._is_db_error(exc):
                if self._is_connection_error(exc):
                    self._forget_connection()
                raise self._classify(exc) from exc
            raise

    def _is_db_error(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def _is_connection_error(self, exc: BaseException) -> bool:
        return False

    def run(self, fn: Callable[[Any], T], *, timeout: float | None = None) -> Deferred[T]:
        if self._closed:
            raise DatabaseError("the database is closed", code="db.unavailable")
        if not self._started:
            self._pool.start()
            self._started = True
        d: Deferred[T] = deferToThreadPool(self._reactor, self._pool, self._in_thread, fn)
        limit = self.default_timeout if timeout is None else timeout

        def timed_out(_r: object, seconds: float) -> Any:
            raise DatabaseError(f"the database did not answer within {seconds:g} s", code="db.timeout")

        d.addTimeout(limit, self._reactor, onTimeoutCancel=timed_out)
        return d

    def migrate(self, migrations: Sequence[Migration]) -> Deferred[int]:
        ordered = sorted(migrations, key=lambda m: m.version)
        versions = [m.version for m in ordered]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"migration versions must be 1..n without gaps, got {versions}")

        def apply(conn: Any) -> int:
            cur = conn.cursor()
            cur.execute(self.sql("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                                 "description TEXT NOT NULL, applied_at {real} NOT NULL)"))
            cur.execute("SELECT MAX(version) FROM schema_migrations")
            row = cur.fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
            if current > len(ordered):
                raise DatabaseError(f"the database schema is version {current}, newer than this program knows "
                                    f"({len(ordered)}); upgrade vdxp-gateway", code="db.schema_too_new")
            return current

        async def run_all() -> int:
            current = await self.run(apply)
            for migration in ordered[current:]:
                def step(conn: Any, m: Migration = migration) -> None:
                    cur = conn.cursor()
                    for statement in m.statements:
                        cur.execute(self.sql(statement))
                    cur.execute(self.sql("INSERT INTO schema_migrations (version, description, applied_at) "
                                         "VALUES (?, ?, ?)"), (m.version, m.description, time.time()))
                await self.run(step)
                current = migration.version
            return current

        return Deferred.fromCoroutine(run_all())

    def close(self) -> Deferred[None]:
        self._closed = True
        if not self._started:
            return Deferred.fromCoroutine(_nothing())

        def close_all() -> None:
            self._forget_connection()

        async def shut() -> None:
            # Every thread closes its own connection (SQLite connections belong to their thread).
            await deferToThreadPool(self._reactor, self._pool, close_all)
            self._pool.stop()

        return Deferred.fromCoroutine(shut())


async def _nothing() -> None:
    return None


class SqliteDatabase(_Threaded):
    """SQLite in WAL mode on one thread (one writer is all SQLite allows anyway)."""

    kind: Literal["sqlite", "postgresql"] = "sqlite"
    types = SQLITE_TYPES

    def __init__(self, reactor: Any, path: Path, *, synchronous: Literal["full", "normal"] = "full",
                 busy_timeout_ms: int = 5000) -> None:
        super().__init__(reactor, 1, "vdxp-sqlite")
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(self.path), isolation_level="DEFERRED", check_same_thread=True)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.synchronous == 'full' else 'NORMAL'}")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise _classify_sqlite(exc) from exc
        try:
            self.path.chmod(0o600)  # the log holds message bodies
        except OSError:
            pass
        self._local.conn = conn
        return conn

    def _classify(self, exc: BaseException) -> DatabaseError:
        return _classify_sqlite(exc)

    def _is_db_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error)

    def _is_connection_error(self, exc: BaseException) -> bool:
        # After a disk or I/O error the connection may be unusable: open a fresh one next time.
        return isinstance(exc, sqlite3.OperationalError)


class PostgresDatabase(_Threaded):
    """PostgreSQL through psycopg 3, a few threads with one connection each."""

    kind: Literal["sqlite", "postgresql"] = "postgresql"
    types = POSTGRES_TYPES

    def __init__(self, reactor: Any, dsn: str, *, password: Callable[[], str | None] | None = None,
                 threads: int = 4, connect_timeout: float = 10.0) -> None:
        super().__init__(reactor, threads, "vdxp-postgres")
        self.dsn = dsn
        self._password = password
        self.connect_timeout = connect_timeout

    def sql(self, text: str) -> str:
        return super().sql(text).replace("?", "%s")

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - psycopg is a dependency
            raise DatabaseError("PostgreSQL needs the psycopg package", code="db.unavailable") from exc
        kwargs: dict[str, Any] = {"connect_timeout": max(1, int(self.connect_timeout))}
        if self._password is not None:
            secret = self._password()
            if secret is not None:
                kwargs["password"] = secret
        try:
            conn = psycopg.connect(self.dsn.replace("postgres://", "postgresql://", 1), **kwargs)
        except psycopg.Error as exc:
            raise DatabaseError(f"PostgreSQL: cannot connect: {_first_line(exc)}", code="db.unavailable") from exc
        self._local.conn = conn
        return conn

    def _classify(self, exc: BaseException) -> DatabaseError:
        import psycopg

        if isinstance(exc, psycopg.OperationalError):
            return DatabaseError(f"PostgreSQL: {_first_line(exc)}", code="db.unavailable")
        text = _first_line(exc)
        code = "db.full" if "could not extend file" in text or "No space left" in text else "db.failed"
        return DatabaseError(f"PostgreSQL: {text}", code=code)

    def _is_db_error(self, exc: BaseException) -> bool:
        import psycopg

        return isinstance(exc, psycopg.Error)

    def _is_connection_error(self, exc: BaseException) -> bool:
        import psycopg

        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def open_database(reactor: Any, config: Any, *, synchronous: Literal["full", "normal"] = "full") -> Database:
    """The database a :class:`gateway.config.DatabaseConfig` names."""
    if config.kind == "sqlite":
        return SqliteDatabase(reactor, config.path, synchronous=synchronous)
    source = config.password  # a PinSource: file (0600), environment variable or systemd credential
    return PostgresDatabase(reactor, config.url, password=source.read if source is not None else None)
