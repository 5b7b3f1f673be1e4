"""The message log: durable writes per second, one time-stamp over 10 000 records, the message
path with and without time-stamping running (issue 5).  Prints Markdown; exit 0.

    .venv/bin/python bench/bench_messagelog.py [--seconds 3] [--records 10000] [--no-postgres]

Everything runs on this machine, in one temporary directory (``$TMPDIR`` chooses its filesystem)
that is removed at the end, also after Ctrl-C or SIGTERM, as are the processes started here:

* **databases**: SQLite in WAL mode with ``synchronous=FULL`` (the WAL is fsync'ed at every
  commit: a committed record survives a power loss) and ``synchronous=NORMAL`` (fsync only at
  checkpoints: survives a crash of the process, not of the machine), and a throw-away PostgreSQL
  cluster (``tests/pgcluster.py``) started with ``fsync=on`` and ``synchronous_commit=on`` (the
  WAL is flushed at every commit; the settings are read back from the server and printed);
* **records**: a 4 KiB SOAP request and a ~10 KB XAdES signature document (real ones: RSA-2048,
  the signing certificate, its intermediate and root, and an OCSP response; a pool of distinct
  documents, cycled), without attachments, and the same with a 1 MiB attachment;
* **TSA**: the real development TSA, ``vdxp-gateway tsa serve`` in a process of its own, its EC key
  on a SoftHSM2 token and its certificate from the development PKI, made exactly as the sandbox
  makes them (``gateway.sandbox``: ``pki init``, ``token init``, ``key generate``, ``key csr``,
  ``pki issue``), reached by the gateway's own :class:`hsm.tsa.TsaClient` over HTTP.

1. **Durable writes**: 1 and 16 writers, each calling ``MessageLog.write`` again as soon as the
   last one returned, for ``--seconds`` per row: records/s, write latency (p50/p99), and records
   per transaction (group commit: the writes that wait while a transaction commits share the next).
2. **One time-stamp over ``--records`` records**: the log is filled with that many un-stamped
   records, then one ``Timestamper.run_once()`` (``max_records`` = ``--records``) is timed, split
   into its phases by timing wrappers around the message log's ``unstamped``/``save_timestamp``,
   around the TSA client, and around ``build_batch`` (nothing replaced: the real database, the real
   hash chain, the real TSA).
3. **Message path while stamping**: 16 writers as in 1 (4 KiB + ~10 KB records), without a
   timestamper, then with a ``Timestamper`` running every 1 s against the TSA.
4. **Export/verify**: the stamped records of 2 archived (``Archiver.archive()``, as ``log export``)
   and the archives verified (linkinginfo chains, every container read).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import io
import os
import platform
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SOAP_HEAD, SOAP_MID, SOAP_TAIL, ignoring_signals, on_term  # noqa: E402

MESSAGE_BYTES = 4096
ATTACHMENT_BYTES = 1 << 20
SIGNATURE_POOL = 256
FILL_CONCURRENCY = 200
STAMP_INTERVAL = 1.0
WARMUP_WRITES = 20
TSA_PROBES = 10

CLIENT = "VN-TEST/GOV/000.00.00.H41/edoc"
SERVICE = "VN-TEST/GOV/000.00.00.G22/example/echo"
SUBSYSTEM = "VN-TEST/GOV/000.00.00.G22/example"
SIGNER = "VN-TEST/GOV/000.00.00.H41"



class Interrupted(Exception):
    """Ctrl-C or SIGTERM: clean up and exit 130."""


# ---------------------------------------------------------------------------------------------
# The machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def filesystem_of(path: Path) -> str:
    """``fstype on mountpoint (device, options)`` of the mount holding ``path``."""
    best: tuple[str, str, str, str] | None = None
    target = str(path.resolve())
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown filesystem"
    for line in mounts:
        parts = line.split()
        if len(parts) < 4:
            continue
        device, mount, fstype, options = parts[0], parts[1].replace("\\040", " "), parts[2], parts[3]
        if (target == mount or target.startswith(mount.rstrip("/") + "/")) and (best is None
                                                                              or len(mount) > len(best[1])):
            best = (device, mount, fstype, options)
    if best is None:
        return "unknown filesystem"
    device, mount, fstype, options = best
    return f"{fstype} on {mount} ({device}, {options})"


def fsync_probe(directory: Path, overwrite: bool, seconds: float = 1.0) -> str:
    """Raw disk: 4 KiB written and fdatasync'ed in a loop, appended (the file grows, so the
    filesystem's journal commits too) or over a preallocated 16 MiB (as a reused WAL)."""
    path = directory / "fsync-probe"
    block = os.urandom(4096)
    times: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if overwrite:
            os.write(fd, bytes(4096 * 4096))
            os.fsync(fd)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            if overwrite:
                os.pwrite(fd, block, (len(times) % 4096) * 4096)
            else:
                os.write(fd, block)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return (f"{'overwriting' if overwrite else 'appending'} {len(times) / max(sum(times), 1e-9):,.0f}/s "
            f"(median {statistics.median(times) * 1000:.2f} ms)")


def postgres_pids(port: int) -> list[int]:
    """The postmaster listening on ``port`` and its children (backends, WAL writer, checkpointer…)."""
    postmaster = None
    procs: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        procs[int(entry.name)] = int(stat[stat.rfind(")") + 2:].split()[1])
        if b"postgres" in cmdline and f"port={port} ".encode() in cmdline + b" ":
            postmaster = int(entry.name)
    if postmaster is None:
        return []
    return [postmaster, *(pid for pid, ppid in procs.items() if ppid == postmaster)]


class CpuMeter:
    """Cores used during a span by this bench and the processes it started, and by everything else
    on the machine (other programs share these CPUs: a busy machine shows here)."""

    def __init__(self, ours: Callable[[], list[int]]) -> None:
        self._ours = ours
        self._start: tuple[float, float, dict[int, float]] = (0.0, 0.0, {})

    def _sample(self) -> tuple[float, float, dict[int, float]]:
        from bench.bench_relay import cpu_seconds, machine_busy

        return time.perf_counter(), machine_busy(), {pid: cpu_seconds([pid]) for pid in self._ours()}

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> tuple[float, float]:
        """(cores used by us, cores used by everything else) since :meth:`start`."""
        t0, busy0, ours0 = self._start
        t1, busy1, ours1 = self._sample()
        elapsed = max(t1 - t0, 1e-9)
        ours = sum(ours1.get(pid, 0.0) - ours0.get(pid, 0.0) for pid in set(ours0) | set(ours1)
                   if pid in ours1)
        return ours / elapsed, max(0.0, (busy1 - busy0) - ours) / elapsed


# ---------------------------------------------------------------------------------------------
# Records


def soap_message(size: int) -> bytes:
    head, tail = (SOAP_HEAD + "bench-message-0000" + SOAP_MID).encode(), SOAP_TAIL.encode()
    pad = size - len(head) - len(tail)
    return head + base64.b64encode(os.urandom(pad))[:pad] + tail


def signature_documents(count: int) -> list[bytes]:
    """Real XAdES signature documents as the signer makes them: RSA-2048 over a different
    ``/message.xml`` digest each, with the signing certificate, intermediate and root CA
    certificates and an OCSP response embedded."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.x509.oid import NameOID

    from protocols import ocsp
    from protocols.xades import MIME_TEXT_XML, prepare_signature

    now = datetime.now(UTC)

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def name(cn: str, *extra: x509.NameAttribute[Any]) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "VDXP bench"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn), *extra])

    def issue(subject: x509.Name, subject_key: rsa.RSAPrivateKey, issuer: x509.Name, issuer_key: rsa.RSAPrivateKey,
              ca: bool) -> x509.Certificate:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .sign(issuer_key, hashes.SHA256()))

    root_key, inter_key, sign_key, ocsp_key = key(), key(), key(), key()
    root_name, inter_name = name("VDXP bench root CA"), name("VDXP bench intermediate CA")
    root = issue(root_name, root_key, root_name, root_key, True)
    inter = issue(inter_name, inter_key, root_name, root_key, True)
    sign_cert = issue(name("UBND tinh H41", x509.NameAttribute(NameOID.SERIAL_NUMBER, "000.00.00.H41"),
                           x509.NameAttribute(NameOID.BUSINESS_CATEGORY, "GOV")), sign_key, inter_name, inter_key,
                      False)
    ocsp_cert = issue(name("VDXP bench OCSP"), ocsp_key, inter_name, inter_key, False)
    response = ocsp.build_response(ocsp.cert_id(sign_cert, inter, "sha1"), status="good", responder_cert=ocsp_cert,
                                   responder_key=ocsp_key, this_update=now - timedelta(minutes=5))
    out = []
    for i in range(count):
        prepared = prepare_signature(reference_uri="/message.xml",
                                     reference_digest=hashlib.sha512(b"message %d" % i).digest(),
                                     mime_type=MIME_TEXT_XML, signing_cert=sign_cert, mechanism="rsa-pkcs1",
                                     extra_certs=[inter, root], ocsp_responses=[response], signing_time=now)
        out.append(prepared.finish(sign_key.sign(prepared.data_to_sign, padding.PKCS1v15(), hashes.SHA512())))
    return out


@dataclass
class Records:
    message: bytes
    signatures: list[bytes]
    attachment: bytes
    n: int = 0

    def entry(self, with_attachment: bool) -> Any:
        from gateway.messagelog.store import LogEntry

        self.n += 1
        attachments = [("application/octet-stream", io.BytesIO(self.attachment))] if with_attachment else []
        return LogEntry(side="client", direction="request", protocol="soap", query_id=f"bench-{self.n}",
                        client=CLIENT, service=SERVICE, service_subsystem=SUBSYSTEM, signer=SIGNER,
                        message=self.message, signature=self.signatures[self.n % len(self.signatures)],
                        x_request_id=f"rid-{self.n}", attachments=attachments)


# ---------------------------------------------------------------------------------------------
# Databases


@dataclass(frozen=True)
class Backend:
    label: str
    kind: str  # sqlite-full, sqlite-normal, postgresql
    dsn: str | None = None


OPEN_DATABASES: list[Any] = []


async def open_log(reactor: Any, backend: Backend, work: Path, name: str) -> tuple[Any, Any]:
    """A fresh, migrated message log on ``backend``; (MessageLog, registry)."""
    from prometheus_client import CollectorRegistry

    from gateway.config import MessageLogConfig
    from gateway.store.db import PostgresDatabase, SqliteDatabase

    db: Any
    if backend.kind == "postgresql":
        assert backend.dsn is not None
        db = PostgresDatabase(reactor, backend.dsn)
        OPEN_DATABASES.append(db)

        def reset(conn: Any) -> None:
            conn.cursor().execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")

        await db.run(reset)
    else:
        path = work / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        db = SqliteDatabase(reactor, path, synchronous="full" if backend.kind == "sqlite-full" else "normal")
        OPEN_DATABASES.append(db)
    registry = CollectorRegistry()
    log = _timed_log_class()(db, MessageLogConfig(), registry, reactor)
    await log.start()
    return log, registry


async def close_log(log: Any) -> None:
    await log.db.close()
    path = getattr(log.db, "path", None)
    if path is not None:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)


def stop_database_threads() -> None:
    """After an interruption: the databases' threads are not the reactor's, stop them here."""
    for db in OPEN_DATABASES:
        pool = getattr(db, "_pool", None)
        if pool is not None and getattr(db, "_started", False) and not pool.joined:
            with contextlib.suppress(Exception):
                pool.stop()


@functools.cache
def _timed_log_class() -> type:
    from gateway.messagelog.store import MessageLog

    class _TimedLog(MessageLog):
        """The message log, with the times of ``unstamped`` and ``save_timestamp`` noted."""

        marks: dict[str, float]

        async def unstamped(self, limit: int) -> list[tuple[int, bytes]]:
            self.marks = {"read_start": time.perf_counter()}
            found = await super().unstamped(limit)
            self.marks["read_end"] = time.perf_counter()
            return found

        async def save_timestamp(self, *args: Any, **kw: Any) -> int:
            self.marks["store_start"] = time.perf_counter()
            ts_id = await super().save_timestamp(*args, **kw)
            self.marks["store_end"] = time.perf_counter()
            return ts_id

    return _TimedLog



# ---------------------------------------------------------------------------------------------
# Measurements


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (seconds) in ms."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))] * 1000


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    errors: int = 0
    cpu_ours: float = float("nan")
    cpu_other: float = float("nan")

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


async def write_load(log: Any, records: Records, writers: int, seconds: float, attachment: bool,
                     meter: CpuMeter) -> Load:
    from twisted.internet.defer import Deferred, gatherResults

    for _ in range(WARMUP_WRITES):
        await log.write(records.entry(attachment))
    load = Load()
    end = time.perf_counter() + seconds

    async def writer() -> None:
        while time.perf_counter() < end:
            entry = records.entry(attachment)
            t = time.perf_counter()
            try:
                await log.write(entry)
            except Exception:
                load.errors += 1
                continue
            load.latencies.append(time.perf_counter() - t)

    meter.start()
    started = time.perf_counter()
    await gatherResults([Deferred.fromCoroutine(writer()) for _ in range(writers)])
    load.elapsed = time.perf_counter() - started
    load.cpu_ours, load.cpu_other = meter.stop()
    return load


def batch_mean(registry: Any, before: tuple[float, float] = (0.0, 0.0)) -> float:
    total = (registry.get_sample_value("vdxp_messagelog_batch_records_sum") or 0.0) - before[0]
    count = (registry.get_sample_value("vdxp_messagelog_batch_records_count") or 0.0) - before[1]
    return total / count if count else float("nan")


def batch_counts(registry: Any) -> tuple[float, float]:
    return (registry.get_sample_value("vdxp_messagelog_batch_records_sum") or 0.0,
            registry.get_sample_value("vdxp_messagelog_batch_records_count") or 0.0)


class TimedTsa:
    """The TSA client, with the time of each request noted."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.spans: list[tuple[float, float]] = []

    async def timestamp(self, digest: bytes, hash_name: str) -> Any:
        t = time.perf_counter()
        try:
            return await self.client.timestamp(digest, hash_name)
        finally:
            self.spans.append((t, time.perf_counter()))


@contextlib.contextmanager
def timed_build_batch(spans: list[tuple[float, float, int]]) -> Iterator[None]:
    """Note the time of ``build_batch`` inside the timestamper (and the size of the chains made)."""
    import gateway.messagelog.timestamper as ts

    original = ts.__dict__["build_batch"]

    def timed(*args: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        batch = original(*args, **kw)
        spans.append((t, time.perf_counter(), sum(len(c) for c in batch.chains)))
        return batch

    ts.__dict__["build_batch"] = timed
    try:
        yield
    finally:
        ts.__dict__["build_batch"] = original


@dataclass
class WriteRow:
    backend: str
    record: str
    writers: int
    load: Load
    per_tx: float
    record_bytes: int


@dataclass
class StampRow:
    backend: str
    records: int
    fill_seconds: float
    fill_rate: float
    stamped: int
    total: float
    read: float
    digests: float
    chain: float
    tsa: float
    store: float
    chain_bytes: int
    cpu_ours: float
    cpu_other: float

    @property
    def other(self) -> float:
        return self.total - self.read - self.digests - self.chain - self.tsa - self.store


@dataclass
class PathRow:
    backend: str
    stamping: bool
    load: Load
    per_tx: float
    rounds: list[tuple[float, int]] = field(default_factory=list)
    left_unstamped: int = 0


@dataclass
class Results:
    writes: list[WriteRow] = field(default_factory=list)
    stamps: list[StampRow] = field(default_factory=list)
    paths: list[PathRow] = field(default_factory=list)
    tsa_alone: list[float] = field(default_factory=list)
    pg_settings: dict[str, str] = field(default_factory=dict)
    exports: list[tuple[str, str, float, float, float]] = field(default_factory=list)  # backend, step, n, s, bytes


def progress(text: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


async def measure(reactor: Any, args: argparse.Namespace, backends: list[Backend], work: Path, records: Records,
                  tsa: Any, results: Results, meter: CpuMeter) -> None:
    from gateway.messagelog.timestamper import Timestamper, TsaEndpoint

    # the TSA on its own: one digest per request (warms the connection path up too)
    for i in range(TSA_PROBES):
        t = time.perf_counter()
        await tsa.timestamp(hashlib.sha512(b"probe %d" % i).digest(), "sha512")
        results.tsa_alone.append(time.perf_counter() - t)

    if any(b.kind == "postgresql" for b in backends):
        log, _registry = await open_log(reactor, next(b for b in backends if b.kind == "postgresql"), work, "pg")

        def settings(conn: Any) -> dict[str, str]:
            cur = conn.cursor()
            out = {}
            for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "full_page_writes",
                         "shared_buffers", "wal_buffers"):
                cur.execute(f"SHOW {name}")
                out[name] = str(cur.fetchone()[0])
            return out

        results.pg_settings = await log.db.run(settings)
        await close_log(log)

    # 1. durable writes
    for backend in backends:
        for attachment in (False, True):
            for writers in (1, 16):
                label = "4 KiB SOAP + 10 KB signature" + (" + 1 MiB attachment" if attachment else "")
                progress(f"writes: {backend.label}, {label}, {writers} writer(s)")
                log, registry = await open_log(reactor, backend, work, "writes")
                try:
                    await log.write(records.entry(attachment))
                    before = batch_counts(registry)
                    load = await write_load(log, records, writers, args.seconds, attachment, meter)
                    per_tx = batch_mean(registry, before)
                finally:
                    await close_log(log)
                size = len(records.message) + len(records.signatures[0]) + (ATTACHMENT_BYTES if attachment else 0)
                results.writes.append(WriteRow(backend.label, label, writers, load, per_tx, size))

    # 2. one time-stamp over --records records
    for backend in backends:
        progress(f"stamping {args.records:,} records in one request: {backend.label}")
        log, registry = await open_log(reactor, backend, work, "stamp")
        try:
            from twisted.internet.defer import DeferredSemaphore, gatherResults

            gate = DeferredSemaphore(FILL_CONCURRENCY)
            entries = [records.entry(False) for _ in range(args.records)]
            t = time.perf_counter()
            await gatherResults([gate.run(_writing, log, e) for e in entries])
            fill = time.perf_counter() - t
            assert await log.count_unstamped() == args.records
            timed_tsa = TimedTsa(tsa)
            endpoints = [TsaEndpoint("tsa-1", tsa.url, timed_tsa)]
            stamper = Timestamper(reactor, log, functools.partial(list, endpoints), interval=lambda: 60.0,
                                  max_records=args.records, registry=registry)
            spans: list[tuple[float, float, int]] = []
            with timed_build_batch(spans):
                meter.start()
                t0 = time.perf_counter()
                stamped = await stamper.run_once()
                t1 = time.perf_counter()
                cpu = meter.stop()
            if stamped != args.records or len(timed_tsa.spans) != 1 or len(spans) != 1:
                raise RuntimeError(f"expected {args.records} records stamped in one request, got {stamped} "
                                   f"({len(timed_tsa.spans)} TSA requests; last error {stamper.last_error})")
            left = await log.count_unstamped()
            if left:
                raise RuntimeError(f"{left} records still un-stamped after the round")
            await export_and_verify(reactor, log, backend, work, args.records, results)
            m = log.marks
            (tsa_start, tsa_end), (chain_start, chain_end, chain_bytes) = timed_tsa.spans[0], spans[0]
            results.stamps.append(StampRow(
                backend=backend.label, records=args.records, fill_seconds=fill, fill_rate=args.records / fill,
                stamped=stamped, total=t1 - t0, read=m["read_end"] - m["read_start"],
                digests=chain_start - m["read_end"], chain=chain_end - chain_start, tsa=tsa_end - tsa_start,
                store=m["store_end"] - m["store_start"], chain_bytes=chain_bytes, cpu_ours=cpu[0],
                cpu_other=cpu[1]))
        finally:
            await close_log(log)

    # 3. the message path with and without a timestamper running
    for backend in backends:
        for stamping in (False, True):
            progress(f"message path: {backend.label}, timestamper {'every 1 s' if stamping else 'off'}")
            log, registry = await open_log(reactor, backend, work, "path")
            try:
                await log.write(records.entry(False))
                row = PathRow(backend.label, stamping, Load(), float("nan"))
                looping: Any = None
                if stamping:
                    looping = _round_timer(Timestamper)(
                        reactor, log, lambda: [TsaEndpoint("tsa-1", tsa.url, tsa)],
                        interval=lambda: STAMP_INTERVAL, max_records=args.records, registry=registry)
                    looping.startService()
                before = batch_counts(registry)
                row.load = await write_load(log, records, 16, args.seconds, False, meter)
                row.per_tx = batch_mean(registry, before)
                if looping is not None:
                    stopping = looping.stopService()
                    if stopping is not None:
                        await stopping
                    row.rounds = list(looping.rounds)
                    if looping.last_error:
                        raise RuntimeError(f"time-stamping failed: {looping.last_error}")
                row.left_unstamped = await log.count_unstamped()
                results.paths.append(row)
            finally:
                await close_log(log)


async def export_and_verify(reactor: Any, log: Any, backend: Backend, work: Path, records: int,
                            results: Results) -> None:
    """4. The archiver over the stamped records (one ASiC-E container each, linked 32 MiB ZIPs, on
    its own thread as in the daemon), then the archives verified as `log verify` reads them: the
    linkinginfo chain of each and every container read and checked for X-Road's structure."""
    from prometheus_client import CollectorRegistry
    from twisted.python.threadpool import ThreadPool

    from gateway.messagelog.archiver import Archiver
    from protocols.asic import read_container
    from protocols.logarchive import verify_archive

    directory = work / f"archive-{backend.kind}"
    pool = ThreadPool(minthreads=1, maxthreads=1, name="bench-archiver")
    pool.start()
    try:
        archiver = Archiver(reactor, log, directory, registry=CollectorRegistry(), threadpool=pool)
        t = time.perf_counter()
        written = await archiver.archive()
        seconds = time.perf_counter() - t
    finally:
        pool.stop()
    size = float(sum(p.stat().st_size for p in written))
    results.exports.append((backend.label, f"export: {len(written)} archive(s) of ASiC-E containers", records,
                            seconds, size))
    t = time.perf_counter()
    previous: str | None = None
    count = 0
    for path in written:  # in the order written: each links to the one before
        def check(container: Any) -> None:
            nonlocal count
            read_container(container.data)
            count += 1

        previous = verify_archive(path.read_bytes(), previous, on_container=check).last_digest
    seconds = time.perf_counter() - t
    if count != records:
        raise RuntimeError(f"verified {count} containers, expected {records}")
    results.exports.append((backend.label, "verify: linkinginfo chains + every container's structure", records,
                            seconds, size))


def _writing(log: Any, entry: Any) -> Any:
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(log.write(entry))


def _round_timer(base: type) -> type:
    class RoundTimed(base):  # type: ignore[misc]
        """The timestamper, with the duration and size of every round noted."""

        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            self.rounds: list[tuple[float, int]] = []

        async def run_once(self) -> int:
            t = time.perf_counter()
            n: int = await super().run_once()
            self.rounds.append((time.perf_counter() - t, n))
            return n

    return RoundTimed


# ---------------------------------------------------------------------------------------------
# The TSA (as the sandbox makes it)


@dataclass
class TsaProcess:
    url: str
    cert: Path
    pid: int


def start_tsa(directory: Path, stack: contextlib.ExitStack) -> TsaProcess:
    from gateway import sandbox

    pki = directory / "pki"
    sandbox.cli(sandbox._child_env(), "pki", "init", str(pki), "--instance", sandbox.INSTANCE)
    trust = sandbox.prepare_trust_token(directory / "trust", pki)
    plan = sandbox._Plan(directory, sandbox.layout_for(sandbox.DEFAULT_ADDRESSES), {})
    config = directory / "trust" / "tsa.yaml"
    import yaml

    config.write_text(yaml.safe_dump(sandbox._trust_config(plan, trust), sort_keys=False))
    proc = sandbox._spawn("tsa-1", ["tsa", "serve", "-c", str(config), "--cert", str(directory / "trust" / "tsa.pem"),
                                    "--chain", str(pki / "intermediate.pem"), "--key-label", "tsa",
                                    "--listen", "tcp:0:interface=127.0.0.1"],
                          trust.env, directory / "logs" / "tsa-1.log", directory)

    def stop() -> None:
        sandbox.stop_processes([(proc.pid, proc.started)])
        if proc.popen is not None:
            proc.popen.poll()

    stack.callback(stop)
    match = sandbox._wait_for_line(proc, re.compile(r"^TSA listening on (\S+)"))
    return TsaProcess(url=f"http://{match.group(1)}/", cert=directory / "trust" / "tsa.pem", pid=proc.pid)


# ---------------------------------------------------------------------------------------------
# Output


def fmt(x: float, digits: int = 1) -> str:
    return "-" if x != x else f"{x:,.{digits}f}"


def table(header: tuple[str, ...], rows: list[tuple[str, ...]], numeric_from: int) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
           "|" + "|".join("-" * (w + 2) if i < numeric_from else "-" * (w + 1) + ":"
                          for i, w in enumerate(widths)) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.rjust(w) if i >= numeric_from else c.ljust(w)
                                     for i, (c, w) in enumerate(zip(r, widths, strict=True))) + " |")
    return "\n".join(out)


def render(args: argparse.Namespace, results: Results, env: dict[str, str], records: Records) -> str:
    lines = ["## Message log benchmark (bench/bench_messagelog.py)", ""]
    lines += [f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}), Linux {platform.release()}; "
              f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {env['postgres']}",
              f"- Storage: {env['tmp']} — {env['fs']}; raw 4 KiB write + fdatasync in a loop, "
              f"{env['fsync']}",
              "- Durability: SQLite WAL journal, `synchronous=FULL` = the WAL fsync'ed at every commit (survives a "
              "power loss), `synchronous=NORMAL` = fsync only at checkpoints (survives a process crash, not a power "
              "loss); PostgreSQL " + (", ".join(f"`{k}={v}`" for k, v in results.pg_settings.items()
                                             if k != "server_version") or "not run (--no-postgres)"),
              f"- Records: SOAP request {len(records.message):,} B; signature document "
              f"{statistics.mean(len(s) for s in records.signatures):,.0f} B (real XAdES, RSA-2048, 3 certificates "
              f"+ OCSP response, a pool of {len(records.signatures)} distinct ones cycled); no hash chain "
              f"(batch signing off); body logging on; attachment rows add one {ATTACHMENT_BYTES:,} B attachment "
              "(stored in 1 MiB chunks)",
              f"- {args.seconds:g} s per row after {WARMUP_WRITES} warm-up writes; every writer calls "
              "`MessageLog.write` again as soon as the last returned; latency = `write()` call to its result; "
              "records/transaction = the message log's own group-commit histogram; CPU in cores (of "
              f"{os.cpu_count()}) during the row: this process, the PostgreSQL cluster and the TSA, and all other "
              "programs on the machine (/proc/stat)", ""]

    lines += ["### 1. Durable log writes (`MessageLog.write`)", ""]
    rows: list[tuple[str, ...]] = []
    for w in results.writes:
        rows.append((w.backend, w.record, str(w.writers), fmt(w.load.rate, 0),
                     fmt(w.load.rate * w.record_bytes / 1e6, 1), fmt(pct(w.load.latencies, 0.5), 2),
                     fmt(pct(w.load.latencies, 0.99), 2), fmt(w.per_tx, 1), str(w.load.errors),
                     fmt(w.load.cpu_ours, 2), fmt(w.load.cpu_other, 2)))
    lines += [table(("database", "record", "writers", "records/s", "MB/s", "p50 ms", "p99 ms", "records/transaction",
                     "errors", "CPU: bench + PG + TSA", "CPU: other programs"), rows, 2), ""]

    lines += [f"### 2. {args.records:,} records time-stamped in one request (`Timestamper.run_once()`)", ""]
    rows = []
    for s in results.stamps:
        rows.append((s.backend, f"{s.stamped:,}", fmt(s.total * 1000, 0), fmt(s.read * 1000, 0),
                     fmt(s.digests * 1000, 0), fmt(s.chain * 1000, 0), fmt(s.tsa * 1000, 1), fmt(s.store * 1000, 0),
                     fmt(s.other * 1000, 0), fmt(s.cpu_other, 2)))
    lines += [table(("database", "records stamped", "total ms", "read un-stamped ms", "SHA-512 of signatures ms",
                     "hash chain (build_batch) ms", "TSA request ms", "store token + chains ms", "other ms",
                     "CPU: other programs"), rows, 1), ""]
    tsa = results.tsa_alone
    lines += [f"- TSA request alone (one digest, gateway's TsaClient incl. token verification, new TCP connection "
              f"each): median {statistics.median(tsa) * 1000:.1f} ms, max {max(tsa) * 1000:.1f} ms over {len(tsa)}; "
              "the request for 10,000 records is the same size (one SHA-512 digest of the hash chain result)."]
    for s in results.stamps:
        lines.append(f"- {s.backend}: filling the log took {s.fill_seconds:.1f} s ({s.fill_rate:,.0f} records/s, "
                     f"{FILL_CONCURRENCY} concurrent writes); the {s.stamped:,} time-stamp hash chains "
                     f"(`ts_hash_chain`) total {s.chain_bytes / 1e6:.1f} MB ({s.chain_bytes / max(s.stamped, 1):,.0f} "
                     "B each), written with the token in one transaction (1 INSERT + "
                     f"{s.stamped:,} UPDATEs).")
    lines.append("")

    lines += [f"### 3. Message path (16 writers, 4 KiB + 10 KB records) with and without time-stamping "
              f"(interval {STAMP_INTERVAL:g} s, real TSA)", ""]
    rows = []
    for p in results.paths:
        stamped = sum(n for _d, n in p.rounds)
        durations = [d for d, n in p.rounds if n > 0]
        rows.append((p.backend, "every 1 s" if p.stamping else "off", fmt(p.load.rate, 0),
                     fmt(pct(p.load.latencies, 0.5), 2), fmt(pct(p.load.latencies, 0.99), 2),
                     fmt(max(p.load.latencies, default=float("nan")) * 1000, 1), fmt(p.per_tx, 1),
                     str(len(durations)) if p.stamping else "-", f"{stamped:,}" if p.stamping else "-",
                     (f"{statistics.mean(durations) * 1000:,.0f} / {max(durations) * 1000:,.0f}"
                      if durations else "-"), f"{p.left_unstamped:,}" if p.stamping else "-", str(p.load.errors),
                     fmt(p.load.cpu_ours, 2), fmt(p.load.cpu_other, 2)))
    lines += [table(("database", "timestamper", "records/s", "p50 ms", "p99 ms", "max ms", "records/transaction",
                     "rounds", "records stamped", "round ms (mean / max)", "un-stamped at the end", "errors",
                     "CPU: bench + PG + TSA", "CPU: other programs"), rows, 2), ""]
    lines += ["- A round = read the oldest un-stamped records, hash chain, one TSA request, store token and chains "
              "in one transaction; rounds run on the same reactor and database thread(s) as the writes (SQLite: "
              "one thread, so the writes wait for the round's transactions; PostgreSQL: a pool of 4 connections).",
              "- Closed loop: each writer waits for its write, so a stall delays only the 16 writes in flight (see "
              "max ms); with messages arriving regardless, as at a gateway, every message arriving during a stall "
              "waits for it.", ""]

    lines += ["### 4. Export and verify (the records of 2)", ""]
    rows4 = [(b, step, f"{n:,.0f}", fmt(sec, 2), fmt(n / sec if sec else float("nan"), 0),
              fmt(size / sec / 1e6 if sec else float("nan"), 1)) for b, step, n, sec, size in results.exports]
    lines += [table(("database", "step", "records", "seconds", "records/s", "MB/s"), rows4, 2), ""]
    lines += ["- Export = `Archiver.archive()` (what `vdxp-gateway log export` runs): containers built from the "
              "log (message, signature, hash chains, token) and written, ZIP archives of at most 32 MiB linked by "
              "linkinginfo, each synced, committed and renamed; MB/s over the archives' size.",
              "- Verify = `protocols.logarchive.verify_archive` on every archive in order (each entry hashed into "
              "the chain) with `protocols.asic.read_container` on every container; the signature and time-stamp "
              "of each container (`log verify --conf`) are not part of this row.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Main




def run_reactor(coroutine_fn: Callable[[Any], Any]) -> None:
    """Run ``coroutine_fn(reactor)`` on the reactor (once per process); Ctrl-C and SIGTERM stop the
    reactor, and then raise :class:`Interrupted` here."""
    from twisted.internet import reactor as _reactor
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    reactor: Any = _reactor
    outcome: list[Any] = []

    def go() -> None:
        d = Deferred.fromCoroutine(coroutine_fn(reactor))
        d.addBoth(outcome.append)
        d.addBoth(lambda _r: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()  # installs its own SIGINT/SIGTERM handlers (stopping the reactor): ours again after
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if not outcome:
        raise Interrupted
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()


def setup_and_measure(args: argparse.Namespace, stack: contextlib.ExitStack, results: Results
                      ) -> tuple[dict[str, str], Records]:
    """Everything started is registered on ``stack`` (closed by the caller, whatever happens)."""
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vdxp-bench-mlog-")))
    progress(f"working in {work}")
    env = {"tmp": str(work.parent), "fs": filesystem_of(work), "postgres": "PostgreSQL not run"}
    env["fsync"] = f"{fsync_probe(work, False)}, {fsync_probe(work, True)}"
    progress("signature documents, development PKI, TSA token and key (through the CLI), TSA")
    records = Records(soap_message(MESSAGE_BYTES), signature_documents(SIGNATURE_POOL), os.urandom(ATTACHMENT_BYTES))
    tsa_proc = start_tsa(work / "tsa", stack)
    progress(f"TSA at {tsa_proc.url}")
    backends = [Backend("SQLite synchronous=FULL", "sqlite-full"),
                Backend("SQLite synchronous=NORMAL", "sqlite-normal")]
    if not args.no_postgres:
        from tests.pgcluster import pg_cluster

        progress("PostgreSQL cluster (fsync=on)")
        dsn = stack.enter_context(pg_cluster(fsync=True))
        backends.append(Backend("PostgreSQL", "postgresql", str(dsn)))
    pg_port = next((int(b.dsn.rsplit(":", 1)[1].split("/")[0]) for b in backends if b.dsn), None)
    meter = CpuMeter(lambda: [os.getpid(), tsa_proc.pid, *(postgres_pids(pg_port) if pg_port else [])])

    async def body(reactor: Any) -> None:
        from cryptography import x509

        from gateway.globalconf.client import make_http_client
        from hsm.tsa import TsaClient

        cert = x509.load_pem_x509_certificates(tsa_proc.cert.read_bytes())[0]
        tsa = TsaClient(make_http_client(reactor, None), reactor, tsa_proc.url, [cert], timeout_seconds=10.0)
        await measure(reactor, args, backends, work, records, tsa, results, meter)

    run_reactor(body)
    if results.pg_settings:
        env["postgres"] = f"PostgreSQL {results.pg_settings['server_version']}"
    return env, records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each row (default 3)")
    parser.add_argument("--records", type=int, default=10000, help="records stamped in one request (default 10000)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.records < 2:
        parser.error("--seconds must be positive and --records at least 2")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (`cmd &`)
    started = time.perf_counter()
    results = Results()
    stack = contextlib.ExitStack()
    try:
        env, records = setup_and_measure(args, stack, results)
    except (KeyboardInterrupt, Interrupted):
        sys.stderr.write("interrupted: stopping and removing everything started\n")
        return 130
    finally:
        with ignoring_signals():
            stop_database_threads()
            stack.close()
    print(render(args, results, env, records))
    python = os.path.relpath(sys.executable)
    python = python if not python.startswith("..") else "python"
    print(f"_Run: `{' '.join([python, *sys.argv])}`, {time.perf_counter() - started:.0f} s in all._")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
