"""The message log as a daemon component: opens the database, brings its schema up to date, and
offers :class:`gateway.messagelog.store.MessageLog` to the relay (``services["messagelog"]``).

The relay writes through it before passing any message on; when the database cannot be opened or
migrated at start, every message is refused (``LoggingFailed.DatabaseError``) and the schema is
tried again on the next message, so the gateway recovers without a restart.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gateway.daemon import Component, ComponentContext
from gateway.messagelog.store import LogEntry, LoggingFailed, MessageLog
from gateway.store.db import DatabaseError, open_database

__all__ = ["MessageLogService", "messagelog_component"]


class MessageLogService(Service):
    log = Logger()

    def __init__(self, ctx: ComponentContext) -> None:
        config = ctx.config
        self.db = open_database(ctx.reactor, config.database, synchronous=config.message_log.synchronous)
        self.message_log = MessageLog(self.db, config.message_log, ctx.metrics.registry, ctx.reactor)
        self._schema: Deferred[int] | None = None
        self.schema_version: int | None = None

    def startService(self) -> None:
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
        return await self.message_log.write(entry)

    def stopService(self) -> Any:
        super().stopService()
        return self.db.close()

    def health(self) -> tuple[bool, str]:
        return self.message_log.health()


def messagelog_component() -> Component:
    def build(ctx: ComponentContext) -> Any:
        if not ctx.config.message_log.enabled:
            from twisted.application.service import MultiService

            return MultiService()
        service = MessageLogService(ctx)
        ctx.add_health_check("message log", service.health)
        return service

    return Component(name="messagelog", build=build, sections=frozenset({"message_log", "database"}), reloadable=True)
