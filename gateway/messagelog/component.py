"""The message log as a daemon component: opens the database, brings its schema up to date, and
offers :class:`gateway.messagelog.store.MessageLog` to the relay (``services["messagelog"]``).

The relay writes through it before passing any message on; when the database cannot be opened or
migrated at start, every message is refused (``LoggingFailed.DatabaseError``) and the schema is
tried again on the next message, so the gateway recovers without a restart.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gateway.daemon import Component, ComponentContext
from gateway.messagelog.store import LogEntry, LoggingFailed, MessageLog
from gateway.messagelog.timestamper import Timestamper, TsaEndpoint
from gateway.store.db import DatabaseError, open_database

DEFAULT_TIMESTAMP_INTERVAL = 60.0

__all__ = ["MessageLogService", "messagelog_component"]


class MessageLogService(MultiService):
    log = Logger()

    def __init__(self, ctx: ComponentContext) -> None:
        super().__init__()
        config = ctx.config
        settings = config.message_log
        self._ctx = ctx
        self.db = open_database(ctx.reactor, config.database, synchronous=settings.synchronous)
        self.message_log = MessageLog(self.db, settings, ctx.metrics.registry, ctx.reactor)
        self._schema: Deferred[int] | None = None
        self.schema_version: int | None = None
        self._tsa_clients: dict[tuple[str, bytes], Any] = {}
        self.timestamper = Timestamper(ctx.reactor, self.message_log, self._tsas, interval=self._interval,
                                       failure_period=settings.timestamp_failure_period_seconds,
                                       max_records=settings.timestamp_records_limit, registry=ctx.metrics.registry)
        self.timestamper.setServiceParent(self)
        from twisted.python.threadpool import ThreadPool

        from gateway.messagelog.archiver import Archiver

        self._archive_pool = ThreadPool(minthreads=1, maxthreads=1, name="vdxp-archiver")
        self.archiver = Archiver.for_config(ctx.reactor, self.message_log, config, ctx.metrics.registry,
                                            threadpool=self._archive_pool)
        self.archiver.setServiceParent(self)

    def _installed(self) -> Any:
        conf = self._ctx.peers.get("globalconf")
        try:
            return conf.check_valid() if conf is not None and hasattr(conf, "check_valid") else None
        except Exception:
            return None

    def _interval(self) -> float:
        own = self._ctx.config.message_log.timestamp_interval_seconds
        if own is not None:
            return own
        installed = self._installed()
        private = installed.own_private if installed is not None else None
        return float(private.time_stamping_interval_seconds) if private is not None else DEFAULT_TIMESTAMP_INTERVAL

    def _tsas(self) -> list[TsaEndpoint]:
        """The configured TSAs in priority order, else the approved TSAs of global configuration."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        wanted: list[tuple[str, str, Any]] = []
        for tsa in self._ctx.config.tsa:
            try:
                cert = x509.load_pem_x509_certificates(tsa.cert.read_bytes())[0]
            except (OSError, ValueError) as exc:
                self.log.error("TSA {name}: cannot read its certificate {path}: {error}", name=tsa.name,
                               path=str(tsa.cert), error=str(exc))
                continue
            wanted.append((tsa.name, tsa.url, cert))
        if not self._ctx.config.tsa:
            installed = self._installed()
            if installed is not None:
                wanted = [(t.name, t.url, t.cert) for t in installed.own_shared.tsas]
        out = []
        for name, url, cert in wanted:
            key = (url, cert.public_bytes(serialization.Encoding.DER))
            client = self._tsa_clients.get(key)
            if client is None:
                from gateway.globalconf.client import make_http_client
                from hsm.tsa import TsaClient

                client = self._tsa_clients[key] = TsaClient(
                    make_http_client(self._ctx.reactor, None), self._ctx.reactor, url, [cert],
                    timeout_seconds=self._ctx.config.message_log.tsa_timeout_seconds)
            out.append(TsaEndpoint(name, url, client))
        return out

    def startService(self) -> None:
        self._archive_pool.start()
        super().startService()
        Deferred.fromCoroutine(self._ensure_schema()).addErrback(lambda _f: None)

    async def _ensure_schema(self) -> None:
        if self.schema_version is not None:
            return
        if self._schema is None:
            self._schema = Deferred.fromCoroutine(self.message_log.start())
        try:
            self.schema_version = await self._schema
            self.log.info("message log ready ({kind}, schema version {version})", kind=self.db.kind,
                          version=self.schema_version)
        except DatabaseError as exc:
            self._schema = None  # try again with the next message
            self.message_log.last_failure = f"{exc.code}: {exc.message}"
            self.log.error("message log database unavailable ({code}): {error}", code=exc.code, error=exc.message)
            raise LoggingFailed(f"Cannot log the message: {exc.message}", code="mlog.database",
                                xroad_code="LoggingFailed.DatabaseError") from None

    async def write(self, entry: LogEntry) -> int:
        await self._ensure_schema()
        record_id = await self.message_log.write(entry)
        if self._ctx.config.message_log.timestamp_immediately:
            # Synchronous time-stamping: the message waits for its own token (X-Road's
            # timestamp-immediately); the record stays logged either way.
            await self.timestamper.stamp_record(record_id, entry.signature)
        return record_id

    def stopService(self) -> Any:
        from twisted.internet.defer import maybeDeferred

        stopping = maybeDeferred(super().stopService)

        async def stop() -> None:
            await stopping
            self._archive_pool.stop()
            await self.db.close()

        return Deferred.fromCoroutine(stop())

    def health(self) -> Deferred[tuple[bool, str]]:
        async def check() -> tuple[bool, str]:
            space = self._disk_space_problem()
            if space is not None:
                return False, space
            for ok, text in (await self.message_log.probe(), self.timestamper.health(), self.archiver.health()):
                if not ok:
                    return ok, text
            return True, "message log writable, time-stamping and archiving ok"

        return Deferred.fromCoroutine(check())

    def _disk_space_problem(self) -> str | None:
        """SQLite: the file system of the log nearly full (less than 5 % of it, at most 256 MiB, free)
        — a full disk refuses big messages first, while small writes still fit in the journal."""
        path = getattr(self.db, "path", None)
        if path is None:
            return None
        try:
            st = os.statvfs(path.parent)
        except OSError as exc:
            return f"message log: cannot read the file system of {path.parent}: {exc.strerror}"
        free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        if free < min(256 * 1024 * 1024, total // 20):
            return f"message log: the file system of {path.parent} is nearly full ({free // 1024} KiB free)"
        return None


def messagelog_component() -> Component:
    def build(ctx: ComponentContext) -> Any:
        if not ctx.config.message_log.enabled:
            from twisted.application.service import MultiService

            return MultiService()
        service = MessageLogService(ctx)
        ctx.add_health_check("message log", service.health)
        return service

    return Component(name="messagelog", build=build, sections=frozenset({"message_log", "database", "tsa"}),
                     reloadable=True)
