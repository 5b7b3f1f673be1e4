# -*- test-case-name: tests.test_daemon -*-
"""Log output for the daemon: JSON lines or text, with a level that can change on reload.

:func:`choose_format` decides ``auto``: JSON under systemd (``JOURNAL_STREAM`` or
``INVOCATION_ID`` set) or when the output is not a terminal, text otherwise.  Every JSON
line is one Twisted event (``eventAsJSON``) plus ``message`` (the formatted text),
``level`` and ``time_iso`` for people grepping the journal.

:class:`LogOutput` is a Twisted log observer whose format and minimum level can be
changed while running (SIGHUP).  Only the CLI edge installs it globally
(:meth:`LogOutput.begin`).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Literal, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    eventAsJSON,
    formatEvent,
    formatEventAsClassicLogText,
    globalLogBeginner,
)
from zope.interface import implementer

__all__ = ["LEVELS", "LogOutput", "choose_format", "json_line"]

LEVELS: Mapping[str, LogLevel] = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}


def choose_format(
    configured: str, stream: IO[str] | None = None, environ: Mapping[str, str] | None = None
) -> Literal["json", "text"]:
    """The effective format for ``logging.format`` (``auto``, ``json`` or ``text``)."""
    if configured == "json":
        return "json"
    if configured == "text":
        return "text"
    env = os.environ if environ is None else environ
    if env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"):
        return "json"
    out = sys.stdout if stream is None else stream
    try:
        return "text" if out.isatty() else "json"
    except (ValueError, io.UnsupportedOperation):
        return "json"


def json_line(event: LogEvent) -> str:
    """One JSON line for ``event``, with the rendered ``message`` next to its fields."""
    enriched = {k: v for k, v in event.items() if k not in ("log_logger", "log_source", "log_level")}
    enriched["message"] = formatEvent(event)
    level = event.get("log_level")
    enriched["level"] = level.name if level is not None else "info"
    failure = event.get("log_failure")
    if failure is not None:
        enriched["traceback"] = failure.getTraceback()
        enriched.pop("log_failure", None)
    when = event.get("log_time")
    if isinstance(when, int | float):
        enriched["time_iso"] = datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")
    return eventAsJSON(enriched) + "\n"


@implementer(ILogObserver)
class _Writer:
    def __init__(self, stream: IO[str], fmt: Literal["json", "text"]) -> None:
        self.stream = stream
        self.format = fmt

    def __call__(self, event: LogEvent) -> None:
        if self.format == "json":
            text: str | None = json_line(event)
        else:
            text = formatEventAsClassicLogText(event)
        if not text:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # nowhere left to report it


@implementer(ILogObserver)
class LogOutput:
    """A log observer writing to ``stream`` with a changeable format and level."""

    def __init__(self, stream: IO[str], fmt: Literal["json", "text"], level: str = "info") -> None:
        self._writer = _Writer(stream, fmt)
        self._predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
        self._filter = FilteringLogObserver(
            cast(ILogObserver, self._writer), [cast(ILogFilterPredicate, self._predicate)]
        )
        self.level = level

    @property
    def format(self) -> Literal["json", "text"]:
        return self._writer.format

    def configure(self, fmt: Literal["json", "text"], level: str) -> None:
        """Switch format and minimum level (both take effect for the next event)."""
        self._writer.format = fmt
        self._predicate.defaultLogLevel = LEVELS[level]
        self._predicate.clearLogLevels()
        self.level = level

    def __call__(self, event: LogEvent) -> None:
        self._filter(event)

    def begin(self) -> None:
        """Make this the process' only log observer (the CLI edge calls this once)."""
        globalLogBeginner.beginLoggingTo([cast(ILogObserver, self)], discardBuffer=False, redirectStandardIO=False)
