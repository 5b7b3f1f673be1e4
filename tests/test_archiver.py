"""The archiver on a real SQLite store: linked archives, size limit, groups, crash leftovers, a moved
chain, retention, GnuPG encryption.  Containers' own verification is in the end-to-end tests
(tests/test_relay_e2e.py) with the sandbox's real TSA; here the time-stamps are stand-ins."""

from __future__ import annotations

import io
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from test_sigverify import _make_pki, _sign
from twisted.internet.task import Clock

from gateway.config import MessageLogConfig
from gateway.messagelog.archiver import Archiver, group_of
from gateway.messagelog.store import ArchiveConflict, LogEntry, MessageLog
from gateway.messagelog.timestamper import Timestamper, TsaEndpoint
from gateway.store.db import SqliteDatabase
from protocols.logarchive import ArchiveError, verify_archive

_PKI = _make_pki()
SIGNATURE = _sign(_PKI)


class _Token:
    def __init__(self, digest: bytes) -> None:
        self.token_der = b"TOKEN:" + digest


class _Tsa:
    async def timestamp(self, digest: bytes, hash_name: str) -> _Token:
        return _Token(digest)


def _entry(qid: str, client: str = "VN/GOV/A/s", attachment: bytes = b"") -> LogEntry:
    return LogEntry(side="client", direction="request", protocol="soap", query_id=qid, client=client,
                    service="VN/GOV/B/t/echo", service_subsystem="VN/GOV/B/t", signer=client.rsplit("/", 1)[0],
                    message=f"<m>{qid}</m>".encode(), signature=SIGNATURE,
                    attachments=[("application/pdf", io.BytesIO(attachment))] if attachment else ())


async def _setup(tmp_path: Path, **kw: object) -> tuple[MessageLog, Timestamper, Archiver, Clock]:
    from twisted.internet import reactor

    log = MessageLog(SqliteDatabase(reactor, tmp_path / "gateway.db"), MessageLogConfig(), CollectorRegistry(),
                     reactor)
    await log.start()
    clock = Clock()
    clock.advance(1_700_000_000)
    stamper = Timestamper(clock, log, lambda: [TsaEndpoint("tsa", "http://tsa/", _Tsa())], interval=lambda: 60.0,
                          registry=CollectorRegistry())
    archiver = Archiver(clock, log, tmp_path / "archive", registry=CollectorRegistry(), **kw)  # type: ignore[arg-type]
    return log, stamper, archiver, clock


@pytest_twisted.ensureDeferred
async def test_archives_are_linked_and_records_marked(tmp_path: Path) -> None:
    log, stamper, archiver, _clock = await _setup(tmp_path)
    try:
        for i in range(5):
            await log.write(_entry(f"q{i}"))
        assert await archiver.archive() == []  # nothing is time-stamped yet: nothing archived
        await stamper.run_once()
        first = await archiver.archive()
        assert len(first) == 1 and first[0].name.startswith("mlog-") and first[0].name.endswith(".zip")
        assert oct(first[0].stat().st_mode & 0o777) == "0o600"
        one = verify_archive(first[0].read_bytes(), None)
        assert one.entries == 5 and one.algorithm == "SHA-512" and first[0].name.endswith(one.last_digest[:16] + ".zip")
        with zipfile.ZipFile(first[0]) as z:
            names = z.namelist()
            assert names[-1] == "linkinginfo" and all(n.endswith(".asice") for n in names[:-1])
            assert z.read(names[0]).startswith(b"PK")  # a container inside
        assert all(r.archived for r in await log.records())
        assert await archiver.archive() == []  # nothing new
        for i in range(3):
            await log.write(_entry(f"r{i}"))
        await stamper.run_once()
        second = await archiver.archive()
        two = verify_archive(second[0].read_bytes(), one.last_digest)
        assert two.entries == 3 and two.previous_archive == first[0].name
        with pytest.raises(ArchiveError) as info:
            verify_archive(second[0].read_bytes(), None)
        assert info.value.code == "logarchive.previous_digest_mismatch"
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_archives_split_at_the_size_limit(tmp_path: Path) -> None:
    log, stamper, archiver, _clock = await _setup(tmp_path, max_bytes=1024 * 1024)
    try:
        for i in range(5):
            await log.write(_entry(f"q{i}", attachment=os.urandom(300_000)))
        await stamper.run_once()
        written = await archiver.archive()
        assert len(written) == 2
        a = verify_archive(written[0].read_bytes(), None)
        b = verify_archive(written[1].read_bytes(), a.last_digest)
        assert a.entries + b.entries == 5 and all(p.stat().st_size <= 1024 * 1024 + 4096 for p in written)
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_groups_have_their_own_chains(tmp_path: Path) -> None:
    log, stamper, archiver, _clock = await _setup(tmp_path, grouping="member")
    try:
        await log.write(_entry("a1", client="VN/GOV/A/s"))
        await log.write(_entry("b1", client="VN/GOV/B/x"))
        await log.write(_entry("a2", client="VN/GOV/A/other"))
        await stamper.run_once()
        written = sorted(await archiver.archive())
        assert [p.name.split("-2")[0] for p in written] == ["mlog-VN%2FGOV%2FA", "mlog-VN%2FGOV%2FB"]
        assert [verify_archive(p.read_bytes(), None).entries for p in written] == [2, 1]
        records = {r.query_id: r for r in await log.records()}
        assert group_of(records["a2"], "subsystem") == "VN/GOV/A/other" and group_of(records["a2"], "none") == ""
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_leftovers_of_a_stop_are_completed_or_removed(tmp_path: Path) -> None:
    log, stamper, archiver, _clock = await _setup(tmp_path)
    try:
        await log.write(_entry("q0"))
        await stamper.run_once()
        [done] = await archiver.archive()
        # a stop after the commit, before the rename: the .part is the chain's last archive
        os.replace(done, done.with_name(done.name + ".part"))
        stray = tmp_path / "archive" / "mlog-20260101000000-20260101000000-0123456789abcdef.zip.part"
        stray.write_bytes(b"half an archive")  # a stop before the commit
        await archiver.recover()
        assert done.exists() and not stray.exists()
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_a_chain_moved_meanwhile_is_not_forked(tmp_path: Path) -> None:
    log, stamper, archiver, _clock = await _setup(tmp_path)
    try:
        await log.write(_entry("q0"))
        await stamper.run_once()
        await log.commit_archive("", None, "ab" * 64, "mlog-other.zip", [])  # another archiver was first
        with pytest.raises(ArchiveConflict):
            await archiver._write("", [(r, "x.asice", b"PK") for r in await log.records()], {})
        assert not any((tmp_path / "archive").iterdir()) and not (await log.records())[0].archived
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_retention_deletes_only_archived_old_records(tmp_path: Path) -> None:
    log, stamper, archiver, clock = await _setup(tmp_path, keep_seconds=100.0)
    try:
        from twisted.internet import reactor

        await log.write(_entry("old-archived", attachment=b"%PDF"))
        await stamper.run_once()
        await archiver.archive()
        await log.write(_entry("old-not-archived"))
        clock.advance(reactor.seconds() - clock.seconds() + 200)  # both are 200 s old now
        assert await log.clean(clock.seconds() - 100) == 1
        assert [r.query_id for r in await log.records()] == ["old-not-archived"]
        # a whole round (recover, archive, clean): the unarchived record is never deleted
        assert await archiver.run_once() == [] and archiver.health() == (True, "archiving ok")
        assert [r.query_id for r in await log.records()] == ["old-not-archived"]
    finally:
        await log.db.close()


@pytest_twisted.ensureDeferred
async def test_archives_encrypted_for_the_group_key(tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(home)]
    subprocess.run([*gpg, "--passphrase", "", "--quick-gen-key", "archive@vdxp.test", "default", "default", "never"],
                   check=True, capture_output=True, timeout=120)
    public = tmp_path / "archive-key.asc"
    public.write_bytes(subprocess.run([*gpg, "--armor", "--export", "archive@vdxp.test"], check=True,
                                      capture_output=True, timeout=60).stdout)
    log, stamper, archiver, _clock = await _setup(tmp_path, encryption_keys=lambda group: public)
    try:
        await log.write(_entry("secret"))
        await stamper.run_once()
        [written] = await archiver.archive()
        assert written.name.endswith(".zip.gpg") and not written.read_bytes().startswith(b"PK")
        clear = subprocess.run([*gpg, "--decrypt", str(written)], check=True, capture_output=True, timeout=60).stdout
        assert verify_archive(clear, None).entries == 1
    finally:
        await log.db.close()
