"""``vdxp-gateway log verify``: offline verification of message-log containers and archives.

``FILE`` is an ASiC-E container (``.asice``) or a log archive (``.zip``; decrypt a ``.zip.gpg``
first).  A container is verified against ``--conf DIR``, a saved verification configuration (a
global configuration directory: ``instance-identifier`` and ``<INSTANCE>/shared-params.xml``,
e.g. unpacked from a security server's ``/verificationconf``): its time-stamp by an approved TSA
of the own instance, its hash chains, and its signature at the time-stamp's time.  An archive's
``linkinginfo`` chain is verified from ``--previous HEX`` (the last digest of the previous archive
of the group, printed when that one was verified) or ``--first``; with ``--conf`` every container
in it is verified too, without it they are only read.

One line per container on stdout, then a summary; a progress count on stderr while an archive is
verified, when stderr is a terminal.  Exit 0 when everything verifies, 1 otherwise (the reason as
one coded ``error:`` line on stderr), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from protocols.asic import (
    CONTAINER_LIMITS,
    ContainerVerification,
    SafeZip,
    VerificationConf,
    read_container,
    verify_container,
)
from protocols.errors import UsageError, VdxpError
from protocols.logarchive import ARCHIVE_LIMITS, ArchiveContainer, verify_archive
from protocols.sigverify import VerificationCache

_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}|[0-9a-fA-F]{96}|[0-9a-fA-F]{128}")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("log", help="message log: verify archived containers and archives offline",
                       description="The message log's archived evidence: ASiC-E containers and linked log archives.")
    lsub = p.add_subparsers(dest="log_command", metavar="ACTION", required=True)
    v = lsub.add_parser(
        "verify", help="verify an ASiC-E container or a log archive offline",
        description="Verify an ASiC-E container (.asice) or a message-log archive (.zip) offline: the archive's "
                    "linkinginfo hash chain, and each container's time-stamp, hash chains and signature at the "
                    "time-stamp's time against a saved verification configuration.")
    v.add_argument("file", type=Path, metavar="FILE", help="an .asice container or a log archive .zip")
    v.add_argument("--conf", type=Path, metavar="DIR",
                   help="verification configuration: a global configuration directory (instance-identifier, "
                        "<INSTANCE>/shared-params.xml); required for a container")
    chain = v.add_mutually_exclusive_group()
    chain.add_argument("--previous", metavar="HEX", help="archives: the last digest of the previous archive")
    chain.add_argument("--first", action="store_true", help="archives: the first archive of its group")
    v.set_defaults(func=_verify)
    e = lsub.add_parser(
        "export", help="write log archives now, or one query's containers",
        description="Without --query-id: archive every time-stamped record not archived yet, now (the "
                    "daemon's archiver does this every message_log.archive_interval; a running daemon and this "
                    "command never fork the archive chain). With --query-id: write the ASiC-E containers of "
                    "that query into --out.")
    e.add_argument("-c", "--config", required=True, type=Path, metavar="FILE", help="the gateway's configuration")
    e.add_argument("--query-id", metavar="ID", help="export the containers of this query (not archived)")
    e.add_argument("--out", type=Path, metavar="DIR",
                   help="where to write (default: message_log.archive_dir for archives; required with --query-id)")
    e.set_defaults(func=_export)


def _describe(result: ContainerVerification) -> str:
    kinds = []
    if result.batch_signature:
        kinds.append("batch signature")
    if result.batch_timestamp:
        kinds.append("batch time-stamp")
    extra = f"; {', '.join(kinds)}" if kinds else ""
    unverified = (f"; unverified hash chain inputs: {', '.join(uri for uri, _ in result.unverified_digests)}"
                  if result.unverified_digests else "")
    query = f" {result.query_id}" if result.query_id else ""
    return (f"{result.signer} ({result.message_kind}{query}), signed by "
            f"{result.signature.signing_cert.subject.rfc4514_string()}, time-stamped "
            f"{result.validation_time.strftime('%Y-%m-%dT%H:%M:%SZ')} by {result.tsa_name}{extra}{unverified}")


def _failure(error: VdxpError) -> str:
    xroad = f"{error.xroad_code}: " if error.xroad_code else ""
    return f"{xroad}{error.code}: {error.message}"


def _read_conf(path: Path | None) -> VerificationConf | None:
    if path is None:
        return None
    from gateway.globalconf.disk import read_conf_dir

    try:
        return read_conf_dir(path)
    except VdxpError as exc:
        raise UsageError(f"--conf {path}: {exc.message}", code=exc.code) from None
    except OSError as exc:
        raise UsageError(f"--conf {path}: {exc.strerror}", code="usage.conf_unreadable") from None


def _is_archive(path: Path) -> bool:
    """By the name (.asice, .zip); otherwise by the content: a ZIP without a ``mimetype`` entry."""
    name = path.name.lower()
    if name.endswith(".asice"):
        return False
    if name.endswith(".zip"):
        return True
    try:
        with path.open("rb") as fp:
            names = {info.filename for info in SafeZip(fp, ARCHIVE_LIMITS, what=path.name).entries}
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", code="usage.file_unreadable") from None
    return bool(names) and "mimetype" not in names


def _verify(args: argparse.Namespace) -> int:
    path: Path = args.file
    if path.name.lower().endswith(".gpg"):
        raise UsageError(f"{path} is encrypted: decrypt it first (gpg --decrypt {path} > {path.stem})",
                         code="usage.encrypted_archive")
    if not path.is_file():
        raise UsageError(f"{path} is not a readable file", code="usage.file_unreadable")
    if _is_archive(path):
        if args.previous is None and not args.first:
            raise UsageError("a log archive needs --previous HEX (the last digest of the previous archive) or "
                             "--first", code="usage.previous_missing")
        if args.previous is not None and not _HEX_DIGEST.fullmatch(args.previous):
            raise UsageError(f"--previous {args.previous[:140]!r} is not a SHA-256, SHA-384 or SHA-512 hex digest",
                             code="usage.previous_invalid")
        return _verify_archive(path, args.previous, _read_conf(args.conf))
    if args.previous is not None or args.first:
        raise UsageError("--previous and --first apply to log archives, not to a container", code="usage.invalid")
    if args.conf is None:
        raise UsageError("verifying a container needs --conf DIR (a verification configuration)",
                         code="usage.conf_missing")
    conf = _read_conf(args.conf)
    assert conf is not None
    return _verify_container(path, conf)


def _read_file(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise VdxpError(f"{path} has {size} bytes, over the limit of {limit}", code="asic.zip_too_large")
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", code="usage.file_unreadable") from None


def _verify_container(path: Path, conf: VerificationConf) -> int:
    data = _read_file(path, CONTAINER_LIMITS.max_zip_bytes)
    try:
        result = verify_container(data, conf)
    except VdxpError as exc:
        print(f"FAILED {path.name}: {_failure(exc)}")
        raise
    print(f"ok     {path.name}: {_describe(result)}")
    return 0


@dataclass
class _Progress:
    """A count on stderr, only when it is a terminal; cleared before each line on stdout."""

    stream: TextIO
    shown: bool = False
    active: bool = field(init=False)

    def __post_init__(self) -> None:
        try:
            self.active = self.stream.isatty()
        except (AttributeError, ValueError):
            self.active = False

    def show(self, done: int, total: int) -> None:
        if self.active:
            self.stream.write(f"\rverifying: {done}/{total} containers")
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.active and self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False


def _verify_archive(path: Path, previous: str | None, conf: VerificationConf | None) -> int:
    progress = _Progress(sys.stderr)
    cache = VerificationCache()
    failures: list[tuple[str, VdxpError]] = []
    width = 6

    def on_container(entry: ArchiveContainer) -> None:
        try:
            if conf is None:
                read_container(entry.data)
                line = f"{'read':<{width}} {entry.name}: container readable (signature not verified: no --conf)"
            else:
                line = f"{'ok':<{width}} {entry.name}: {_describe(verify_container(entry.data, conf, cache=cache))}"
        except VdxpError as exc:
            failures.append((entry.name, exc))
            line = f"FAILED {entry.name}: {_failure(exc)}"
        progress.clear()
        print(line, flush=True)
        progress.show(entry.index, entry.total)

    try:
        with path.open("rb") as fp:
            result = verify_archive(fp, previous, on_container=on_container)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", code="usage.file_unreadable") from None
    except VdxpError as exc:
        progress.clear()
        print(f"FAILED {path.name}: {exc.message}")
        raise
    finally:
        progress.clear()
    previous_name = f", after {result.previous_archive}" if result.previous_archive else ", first archive"
    print(f"ok     {path.name}: linkinginfo chain of {result.entries} container(s) verifies ({result.algorithm}"
          f"{previous_name})")
    print(f"last digest: {result.last_digest}")
    verified = result.entries - len(failures)
    if conf is None:
        print(f"summary: {result.entries} container(s) read, {len(failures)} unreadable; signatures not verified "
              "(give --conf DIR)")
    else:
        print(f"summary: {result.entries} container(s), {verified} verified, {len(failures)} failed")
    if failures:
        name, first = failures[0]
        raise VdxpError(f"{len(failures)} of {result.entries} container(s) in {path.name} do not verify; first: "
                        f"{name}: {first.code}: {first.message}", code="log.container_invalid")
    return 0


def _export(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry
    from twisted.internet import defer, task

    from gateway.config import load_config
    from gateway.messagelog.archiver import Archiver
    from gateway.messagelog.containers import container_name, record_container
    from gateway.messagelog.store import MessageLog
    from gateway.store.db import open_database

    if args.query_id is not None and args.out is None:
        raise UsageError("--query-id needs --out DIR")
    cfg = load_config(args.config)
    settings = cfg.message_log
    lines: list[str] = []
    failed: list[VdxpError] = []

    async def run(reactor: object) -> None:
        db = open_database(reactor, cfg.database, synchronous=settings.synchronous)
        log = MessageLog(db, settings, CollectorRegistry(), reactor)
        try:
            await log.start()
            if args.query_id is not None:
                records = await log.records(args.query_id)
                if not records:
                    raise VdxpError(f"no logged messages of query {args.query_id}", code="mlog.not_found")
                args.out.mkdir(parents=True, exist_ok=True)
                for record in records:
                    path = args.out / container_name(record)
                    path.write_bytes(await record_container(log, record))
                    lines.append(f"{path}")
                return
            archiver = Archiver.for_config(reactor, log, cfg, CollectorRegistry(), directory=args.out)
            await archiver.recover()
            written = await archiver.archive()
            lines.extend(str(p) for p in written)
            lines.append(f"{len(written)} archive(s) written to {archiver.directory}")
        except VdxpError as exc:
            failed.append(exc)
        finally:
            await db.close()

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))
    except SystemExit as exc:
        if exc.code:
            return int(exc.code)
    if failed:
        raise failed[0]
    for line in lines:
        print(line)
    return 0
