"""The archiver: time-stamped records become ASiC-E containers in ZIP archives linked by a hash
chain (``linkinginfo``, :mod:`protocols.logarchive`), and archived records are cleaned up after
the retention period.

Every ``archive_interval`` the time-stamped records not archived yet are written, oldest first,
one container per record (``<queryId>-request|response-<random>.asice``), into archives of at most
``archive_max_bytes``, per group (``archive_grouping``: ``none``; ``member``: the member of the
client for records made on the client side, of the service for the server side; ``subsystem``:
the same with the subsystem).  Each group has its own chain: the first archive starts with ``-``,
the next names its predecessor and that archive's last digest.  Archives may be encrypted for
their group's GnuPG key (``archive_encryption``).

Crash safety: an archive is written as ``NAME.part`` and synced; then, in one transaction, the
group's chain state moves to it (only if nobody moved it meanwhile) and its records are marked
archived; then it is renamed to ``NAME``.  At start, a ``.part`` whose name is the chain's last
archive is completed; any other is deleted (its records were never marked archived and go into
the next archive).  Retention deletes only archived records, older than ``keep_records_for``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from twisted.internet.threads import deferToThreadPool

from gateway.messagelog.containers import container_name, record_container
from gateway.messagelog.store import ArchiveConflict, MessageLog, StoredRecord
from gateway.metrics import per_registry
from gateway.rounds import Rounds
from protocols.errors import VdxpError
from protocols.logarchive import archive_name, build_archive

__all__ = ["Archiver", "group_of"]

BATCH = 500


def group_of(record: StoredRecord, grouping: str) -> str:
    """The archive group of a record: ``""`` (none), or the local member or subsystem."""
    if grouping == "none":
        return ""
    local = record.client if record.side == "client" else record.service.rsplit("/", 1)[0]
    parts = local.split("/")
    if grouping == "member":
        return "/".join(parts[:3])
    return "/".join(parts[:4])


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.archives = Counter("vdxp_archiver_archives", "Log archives written.", ["result"], registry=registry)
        self.records = Counter("vdxp_archiver_records", "Records written to log archives.", registry=registry)
        self.cleaned = Counter("vdxp_archiver_cleaned_records", "Archived records deleted after the retention period.",
                               registry=registry)
        self.last = Gauge("vdxp_archiver_last_success_timestamp_seconds", "When archiving last succeeded.",
                          registry=registry)


_metrics = per_registry(_Metrics)


class Archiver(Rounds):
    round_name = "archiving round"

    def __init__(self, reactor: Any, message_log: MessageLog, directory: Path, *, registry: CollectorRegistry,
                 interval: float = 6 * 3600.0, grouping: str = "none", max_bytes: int = 32 * 1024 * 1024,
                 keep_seconds: float = 30 * 86400.0, encryption_keys: Callable[[str], Path | None] | None = None,
                 threadpool: Any = None) -> None:
        super().__init__(reactor)
        self.message_log = message_log
        self.directory = directory
        self.interval = interval
        self.grouping = grouping
        self.max_bytes = max_bytes
        self.keep_seconds = keep_seconds
        self._encryption_key = encryption_keys or (lambda _group: None)
        self._threadpool = threadpool
        self.metrics = _metrics(registry)
        self.last_error: str | None = None

    # -- the loop ------------------------------------------------------------------------------

    @classmethod
    def for_config(cls, reactor: Any, message_log: MessageLog, config: Any, registry: CollectorRegistry, *,
                   directory: Path | None = None, threadpool: Any = None) -> Archiver:
        """The archiver a gateway configuration describes (``message_log`` archive settings; the
        directory ``message_log.archive_dir``, by default ``<state_dir>/archive``)."""
        settings = config.message_log
        return cls(reactor, message_log, directory or settings.archive_dir or config.server.state_dir / "archive",
                   registry=registry, interval=settings.archive_interval_seconds, grouping=settings.archive_grouping,
                   max_bytes=settings.archive_max_bytes, keep_seconds=settings.keep_records_for_seconds,
                   encryption_keys=settings.encryption_key, threadpool=threadpool)

    def next_delay(self) -> float:
        return self.interval

    def health(self) -> tuple[bool, str]:
        return (False, f"archiving fails: {self.last_error}") if self.last_error else (True, "archiving ok")

    async def run_once(self) -> list[Path]:
        """Recover leftovers, archive what is time-stamped, clean what is old; the archives written."""
        try:
            await self.recover()
            written = await self.archive()
            cleaned = await self.message_log.clean(self._reactor.seconds() - self.keep_seconds)
        except (VdxpError, OSError) as exc:
            self.last_error = str(exc)
            self.metrics.archives.labels(result="failed").inc()
            self.log.error("archiving failed: {error}", error=str(exc))
            return []
        self.last_error = None
        self.metrics.last.set(self._reactor.seconds())
        if cleaned:
            self.metrics.cleaned.inc(cleaned)
            self.log.info("deleted {count} archived message log records older than the retention period",
                          count=cleaned)
        return written

    # -- archiving -------------------------------------------------------------------------------

    async def recover(self) -> None:
        state = await self.message_log.archive_state()
        finished = {name for _digest, name in state.values()}
        if not self.directory.is_dir():
            return
        for part in self.directory.glob("*.part"):
            final = part.with_name(part.name[: -len(".part")])
            if final.name in finished:
                os.replace(part, final)
                self.log.info("completed the archive {name} written before a stop", name=final.name)
            else:
                part.unlink()
                self.log.warn("removed the unfinished archive {name} (its records go into the next one)",
                              name=part.name)

    async def archive(self) -> list[Path]:
        """Write archives for every time-stamped record not archived yet; the archives written."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        written: list[Path] = []
        state = await self.message_log.archive_state()
        pending: dict[str, list[tuple[StoredRecord, str, bytes]]] = {}
        sizes: dict[str, int] = {}
        after = 0
        while True:
            batch = await self.message_log.archivable(after, BATCH)
            if not batch:
                break
            after = batch[-1].id
            for record in batch:
                data = await record_container(self.message_log, record, verifiable_only=False)
                group = group_of(record, self.grouping)
                items = pending.setdefault(group, [])
                if items and sizes[group] + len(data) > self.max_bytes:
                    written.append(await self._write(group, items, state))
                    items.clear()
                    sizes[group] = 0
                items.append((record, container_name(record), data))
                sizes[group] = sizes.get(group, 0) + len(data)
        for group, items in pending.items():
            if items:
                written.append(await self._write(group, items, state))
        return written

    async def _write(self, group: str, items: Sequence[tuple[StoredRecord, str, bytes]],
                     state: dict[str, tuple[str, str]]) -> Path:
        previous = state.get(group)
        first = datetime.fromtimestamp(items[0][0].created_at, UTC)
        last = datetime.fromtimestamp(items[-1][0].created_at, UTC)
        created = datetime.fromtimestamp(self._reactor.seconds(), UTC)
        key = self._encryption_key(group)

        def write() -> tuple[Path, str]:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".mlog-", suffix=".tmp", delete=False) as f:
                tmp = Path(f.name)
                try:
                    built = build_archive(f, [(name, data) for _r, name, data in items], created=created,
                                          previous_digest=previous[0] if previous else None,
                                          previous_archive=previous[1] if previous else None)
                    f.flush()
                    os.fsync(f.fileno())
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
            name = archive_name(first, last, built.last_digest, group or None, encrypted=key is not None)
            part = self.directory / (name + ".part")
            if key is not None:
                try:
                    _gpg_encrypt(tmp, part, key)
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                os.replace(tmp, part)
            os.chmod(part, 0o600)
            return part, built.last_digest

        if self._threadpool is not None:
            part, digest = await deferToThreadPool(self._reactor, self._threadpool, write)
        else:
            part, digest = write()
        final = part.with_name(part.name[: -len(".part")])
        try:
            await self.message_log.commit_archive(group, previous[0] if previous else None, digest, final.name,
                                                  [r.id for r, _n, _d in items])
        except ArchiveConflict:
            part.unlink(missing_ok=True)
            self.metrics.archives.labels(result="conflict").inc()
            raise
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, final)
        _fsync_dir(self.directory)
        state[group] = (digest, final.name)
        self.metrics.archives.labels(result="ok").inc()
        self.metrics.records.inc(len(items))
        self.log.info("wrote log archive {name} ({count} records)", name=final.name, count=len(items))
        return final


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _gpg_encrypt(source: Path, target: Path, public_key: Path) -> None:
    """Encrypt ``source`` for the key in ``public_key`` (an exported OpenPGP public key) with GnuPG,
    in a throw-away home directory (nothing is imported into a user's keyring)."""
    with tempfile.TemporaryDirectory(prefix="vdxp-gpg-") as home:
        os.chmod(home, 0o700)
        out = subprocess.run(["gpg", "--batch", "--quiet", "--homedir", home, "--trust-model", "always",
                              "--recipient-file", str(public_key), "--output", str(target), "--encrypt", str(source)],
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise VdxpError(f"gpg could not encrypt the archive: {out.stderr.strip()[:500]}", code="mlog.gpg_failed")
