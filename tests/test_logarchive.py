"""Message-log archives: every case of logarchive/expectations.json, the linkinginfo rules, streaming,
and archives built here (round trips, chained archives, tampering)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tracemalloc
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from protocols.asic import AsicError, ZipLimits
from protocols.errors import VdxpError
from protocols.logarchive import (
    ARCHIVE_LIMITS,
    ArchiveContainer,
    ArchiveError,
    LinkingChain,
    archive_name,
    build_archive,
    chain_digest,
    parse_linking_info,
    verify_archive,
)

XROAD = Path(__file__).resolve().parent / "vectors" / "xroad"
ARCHIVES = XROAD / "logarchive"
CONTAINERS = XROAD / "asic" / "verifier"
EXPECT: dict[str, Any] = json.loads((ARCHIVES / "expectations.json").read_text())
CASES: list[dict[str, Any]] = EXPECT["cases"]

#: our code for each invalid case, checked with the reason the expectations give
INVALID_CODES = {
    "shouldFailOnInvalidPreviousHash": "logarchive.previous_digest_mismatch",
    "mlog-WITH_INVALID_LINKINGINFO": "logarchive.digest_mismatch",
    "mlog-NO_LINKINGINFO": "logarchive.no_linkinginfo",
    "mlog-EXCESSIVE_FILES_IN_LINKINGINFO": "logarchive.names_differ",
    "mlog-NO_ASIC_CONTAINERS": "logarchive.no_containers",
}
#: what the failure message must name, from each case's reason
INVALID_MENTIONS = {
    "shouldFailOnInvalidPreviousHash": "4145ab557706b505",
    "mlog-WITH_INVALID_LINKINGINFO": "INVALID_DIGEST",
    "mlog-NO_LINKINGINFO": "no linkinginfo entry",
    "mlog-EXCESSIVE_FILES_IN_LINKINGINFO": "8888888888-request-OUxhMqY0Kx.asice",
    "mlog-NO_ASIC_CONTAINERS": "at least one",
}


def _previous(case: dict[str, Any]) -> str | None:
    text = str(case["previous_digest"])
    return None if text.startswith("none") else text


def test_expectations_cover_every_archive() -> None:
    files = {p.name for p in ARCHIVES.glob("*.zip")}
    assert {c["archive"] for c in CASES if c["archive"]} == files and len(files) == 7
    assert {c["expect"]["result"] for c in CASES} == {"ok", "invalid", "usage_error"}
    assert {c["id"] for c in CASES if c["expect"]["result"] == "invalid"} == set(INVALID_CODES)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_vector_case(case: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    expect = case["expect"]
    if expect["result"] == "usage_error":
        # the verifier's command line: the archive and the previous digest (or --first) are both required
        argv = ["log", "verify"] + ([str(ARCHIVES / case["archive"])] if case["archive"] else [])
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
        assert code == 2
        err = capsys.readouterr().err
        assert err.count("error: usage.") == 1
        assert ("--previous" in err) if case["archive"] else ("FILE" in err)
        return
    with open(ARCHIVES / case["archive"], "rb") as fp:
        if expect["result"] == "ok":
            result = verify_archive(fp, _previous(case))
            assert (result.last_digest, result.entries, result.algorithm) == \
                (expect["last_digest"], expect["entries"], expect["algorithm"])
            return
        with pytest.raises(ArchiveError) as info:
            verify_archive(fp, _previous(case))
    assert info.value.code == INVALID_CODES[case["id"]]
    assert INVALID_MENTIONS[case["id"]] in info.value.message


def test_worked_example() -> None:
    """h_1 and D_1 of mlog-WITH_LINKINGINFO.zip as the expectations spell them out."""
    with zipfile.ZipFile(ARCHIVES / "mlog-WITH_LINKINGINFO.zip") as zf:
        data = zf.read("1234567890-request-OUxhMqY0Kx.asice")
        linking = zf.read("linkinginfo")
    h1 = hashlib.sha256(data).digest()
    assert h1.hex() == "3f2490c55a898afb53f8f90150feaed12a996ee558affda60c0646a00c8fc3fb"
    assert chain_digest("sha256", "", h1) == "624334053a96e0e1209d342514b5d890aeaeee8f0659da69688a3eeac0304856"
    # our builder writes the same linkinginfo, byte for byte
    chain = LinkingChain(algorithm="SHA-256")
    assert chain.add("1234567890-request-OUxhMqY0Kx.asice", data) == chain.last_digest
    assert chain.linking_info() == linking


def test_the_two_archives_chain_and_rebuild() -> None:
    first = verify_archive((ARCHIVES / "message-archive-0.zip").read_bytes(), None)
    second = verify_archive((ARCHIVES / "message-archive-1.zip").read_bytes(), first.last_digest.upper())
    assert (first.previous_digest, first.previous_archive) == ("", "")
    assert second.previous_digest == first.last_digest
    # the header names the previous archive as X-Road named it
    when = datetime(2023, 10, 23, 12, 12, 55, tzinfo=UTC)
    assert second.previous_archive == archive_name(when, when, first.last_digest, encrypted=True)
    # rebuilding the second archive's linkinginfo from its containers gives X-Road's bytes
    with zipfile.ZipFile(ARCHIVES / "message-archive-1.zip") as zf:
        chain = LinkingChain(first.last_digest, second.previous_archive)
        for name in second.names:
            chain.add(name, digest=hashlib.sha512(zf.read(name)).digest())
        assert chain.linking_info() == zf.read("linkinginfo")
    assert chain.last_digest == second.last_digest and len(chain) == 20
    assert second.names[0] == "ID1234-request-3.asice"


def test_on_container_sees_every_container_in_order() -> None:
    seen: list[ArchiveContainer] = []
    with open(ARCHIVES / "message-archive-1.zip", "rb") as fp:
        result = verify_archive(fp, "9011ab557706b5050584d6888af7b390e5350f4edad296bd7a582aa51732aac7f49a4ec44dd3610"
                                    "27945ade0de8b8cf607fb7b7d11f17b0560d44b965c358eaa", on_container=seen.append)
    assert [c.name for c in seen] == list(result.names)
    assert [(c.index, c.total) for c in seen] == [(i, 20) for i in range(1, 21)]
    digest = "9011ab557706b5050584d6888af7b390e5350f4edad296bd7a582aa51732aac7f49a4ec44dd361027945ade0de8b8cf607fb7b" \
             "7d11f17b0560d44b965c358eaa"
    for c in seen:
        digest = chain_digest("sha512", digest, hashlib.sha512(c.data).digest())
    assert digest == result.last_digest


# --------------------------------------------------------------------------- linkinginfo rules


def test_linkinginfo_parsing() -> None:
    info = parse_linking_info(b"-\t-   sha-384\r\nabc  one.asice\r\n\r\n\n")
    assert (info.previous_digest, info.previous_archive, info.algorithm, info.hash_name) == ("", "", "SHA-384",
                                                                                               "sha384")
    assert info.digests == {"one.asice": "abc"} and info.names == ("one.asice",)
    for bad, code, text in [
        (b"", "logarchive.linkinginfo_malformed", "empty"),
        (b"- -\n", "logarchive.linkinginfo_malformed", "three fields"),
        (b"- - SHA-512 extra\n", "logarchive.linkinginfo_malformed", "three fields"),
        (b"- - MD5\n", "logarchive.unsupported_algorithm", "MD5"),
        (b"- - SHA-512\nabc\n", "logarchive.linkinginfo_malformed", "line 2"),
        (b"- - SHA-512\nabc a.asice\n\nabd b.asice\n", "logarchive.linkinginfo_malformed", "line 3"),
        (b"- - SHA-512\nabc a.asice\nabd a.asice\n", "logarchive.linkinginfo_malformed", "twice"),
        (b"- - SHA-512\n\xff\xfe a.asice\n", "logarchive.linkinginfo_malformed", "UTF-8"),
    ]:
        with pytest.raises(ArchiveError) as exc:
            parse_linking_info(bad)
        assert exc.value.code == code and text in exc.value.message, (bad, exc.value)


def _archive(containers: list[tuple[str, bytes]], **kwargs: Any) -> tuple[bytes, Any]:
    out = io.BytesIO()
    built = build_archive(out, containers, created=datetime(2026, 3, 1, 12, 0, tzinfo=UTC), **kwargs)
    return out.getvalue(), built


def _vector_containers() -> list[tuple[str, bytes]]:
    names = ["valid-signed-message.asice", "valid-batch-ts.asice", "valid-non-batch-rest.asice"]
    return [(f"q{i}-request-{name}", (CONTAINERS / name).read_bytes()) for i, name in enumerate(names)]


def _rewrite(archive: bytes, *, drop: str | None = None, replace: tuple[str, bytes] | None = None,
             add: tuple[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename == drop:
                continue
            data = replace[1] if replace is not None and replace[0] == info.filename else src.read(info)
            dst.writestr(info.filename, data)
        if add is not None:
            dst.writestr(*add)
    return out.getvalue()


def test_round_trip_and_tampering() -> None:
    containers = _vector_containers()
    data, built = _archive(containers)
    result = verify_archive(data, None)
    assert (result.last_digest, result.entries, result.algorithm, result.names) == \
        (built.last_digest, 3, "SHA-512", tuple(n for n, _ in containers))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert [i.filename for i in zf.infolist()] == [n for n, _ in containers] + ["linkinginfo"]
        assert zf.read("linkinginfo") == built.linking_info
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist()[:-1])
    # the next archive of the group chains to it
    name = archive_name(datetime(2026, 3, 1, 6, tzinfo=UTC), datetime(2026, 3, 1, 12, tzinfo=UTC), built.last_digest)
    nxt, nxt_built = _archive(containers[:1], previous_digest=built.last_digest, previous_archive=name)
    assert verify_archive(nxt, built.last_digest).previous_archive == name
    for previous in (None, "00" * 64):
        with pytest.raises(ArchiveError) as exc:
            verify_archive(nxt, previous)
        assert exc.value.code == "logarchive.previous_digest_mismatch"
    # tampered copies, each with its precise reason
    name0, bytes0 = containers[1]
    cases = [
        (_rewrite(data, replace=(name0, bytes0 + b"\0")), "logarchive.digest_mismatch", name0),
        (_rewrite(data, drop=containers[2][0]), "logarchive.names_differ", containers[2][0]),
        (_rewrite(data, add=("extra.asice", b"x")), "logarchive.names_differ", "extra.asice"),
        (_rewrite(data, drop="linkinginfo"), "logarchive.no_linkinginfo", "linkinginfo"),
        (_rewrite(data, replace=("linkinginfo", built.linking_info.replace(b"SHA-512", b"SHA-256"))),
         "logarchive.digest_mismatch", containers[0][0]),
    ]
    for tampered, code, mention in cases:
        with pytest.raises(ArchiveError) as exc:
            verify_archive(tampered, None)
        assert exc.value.code == code and mention in exc.value.message, exc.value
    # swapping two containers breaks the chain at the first of them
    swapped = _rewrite(data, replace=(containers[0][0], containers[1][1]))
    swapped = _rewrite(swapped, replace=(containers[1][0], containers[0][1]))
    seen: list[str] = []
    with pytest.raises(ArchiveError) as exc:
        verify_archive(swapped, None, on_container=lambda c: seen.append(c.name))
    assert exc.value.code == "logarchive.digest_mismatch" and containers[0][0] in exc.value.message
    assert seen == [n for n, _ in containers]  # every container was still handed over
    assert nxt_built.names == (containers[0][0],)


def test_sha256_archive_and_first_archive_checks() -> None:
    data, built = _archive(_vector_containers()[:1], algorithm="sha-256")
    assert built.algorithm == "SHA-256" and len(built.last_digest) == 64
    assert verify_archive(data, None).last_digest == built.last_digest
    assert built.linking_info.startswith(b"- - SHA-256\n")


def test_builder_errors() -> None:
    with pytest.raises(ValueError, match="at least one container"):
        _archive([])
    chain = LinkingChain()
    for args, kwargs, text in [
        (("x.zip", b""), {}, "must end with .asice"),
        (("a b.asice", b""), {}, "whitespace"),
        (("d/x.asice", b""), {}, "'/'"),
        (("x.asice",), {}, "bytes or its digest"),
        (("x.asice", b""), {"digest": b"\0" * 64}, "bytes or its digest"),
        (("x.asice",), {"digest": b"\0" * 32}, "not a SHA-512 digest"),
    ]:
        with pytest.raises(ValueError, match=text):
            chain.add(*args, **kwargs)
    chain.add("x.asice", b"")
    with pytest.raises(ValueError, match="twice"):
        chain.add("X.asice", b"")
    for kwargs, text in [({"algorithm": "MD5"}, "MD5"), ({"previous_digest": "abc"}, "not a SHA-512 hex digest"),
                         ({"previous_digest": "zz" * 64}, "hex digest"),
                         ({"previous_digest": "00" * 64, "previous_archive": "a b.zip"}, "whitespace")]:
        with pytest.raises((ValueError, ArchiveError), match=text):
            LinkingChain(**kwargs)


def test_archive_names() -> None:
    first = datetime(2023, 10, 23, 14, 12, 55, tzinfo=UTC)
    last = datetime(2023, 10, 23, 19, 16, 44, tzinfo=UTC)
    digest = "1BDF9EFBF998D9C15A2137D898C9A742059AB2072A4E2EF0C7C8E0D61F7574C5"
    assert archive_name(first, last, digest) == "mlog-20231023141255-20231023191644-1bdf9efbf998d9c1.zip"
    assert archive_name(first, last, digest, "VN/GOV/000.00.00.H41", encrypted=True) == \
        "mlog-VN%2FGOV%2F000.00.00.H41-20231023141255-20231023191644-1bdf9efbf998d9c1.zip.gpg"
    naive_local = datetime(2023, 10, 23, 14, 12, 55)
    assert archive_name(naive_local, last, digest).startswith("mlog-20231023141255-")  # naive = UTC
    for bad_digest, group in (("xyz", None), ("abc", None), (digest, "")):
        with pytest.raises(ValueError):
            archive_name(first, last, bad_digest, group)


# --------------------------------------------------------------------------- bounds


def test_streams_entries_when_hashing(tmp_path: Path) -> None:
    """A 48 MiB container is hashed in chunks: the verification never holds it."""
    path = tmp_path / "big.zip"
    chain = LinkingChain()
    h = hashlib.sha512()
    block = os.urandom(1024 * 1024)
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open(zipfile.ZipInfo("big-request-x.asice"), "w", force_zip64=True) as entry:
            for _ in range(48):
                entry.write(block)
                h.update(block)
        chain.add("big-request-x.asice", digest=h.digest())
        zf.writestr("linkinginfo", chain.linking_info())
    tracemalloc.start()
    try:
        with open(path, "rb") as fp:
            result = verify_archive(fp, None)
        _size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.last_digest == chain.last_digest
    assert peak < 4 * 1024 * 1024, peak
    # handed to on_container, an entry must fit the per-entry bound
    with open(path, "rb") as fp, pytest.raises(AsicError) as exc:
        verify_archive(fp, None, on_container=lambda c: None, limits=ZipLimits(
            max_zip_bytes=ARCHIVE_LIMITS.max_zip_bytes, max_entries=10, max_entry_bytes=16 * 1024 * 1024,
            max_total_bytes=ARCHIVE_LIMITS.max_total_bytes))
    assert exc.value.code == "asic.zip_entry_too_large" and "big-request-x.asice" in exc.value.message
    # and all entries together the total bound
    with open(path, "rb") as fp, pytest.raises(AsicError) as exc:
        verify_archive(fp, None, limits=ZipLimits(max_total_bytes=32 * 1024 * 1024))
    assert exc.value.code == "asic.zip_entry_too_large"


def test_hostile_archives() -> None:
    for data, code in [(b"not a zip at all", "asic.zip_invalid"), (b"", "asic.zip_invalid"),
                       (b"PK\x03\x04" + bytes(40), "asic.zip_invalid")]:
        with pytest.raises(AsicError) as exc:
            verify_archive(data, None)
        assert exc.value.code == code and exc.value.xroad_code == "AsicInvalidContainer"
    many = io.BytesIO()
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(20):
            zf.writestr(f"c{i}.asice", b"x")
    with pytest.raises(AsicError) as exc:
        verify_archive(many.getvalue(), None, limits=ZipLimits(max_entries=10))
    assert exc.value.code == "asic.zip_too_many_entries"
    traversal = _rewrite(_archive(_vector_containers()[:1])[0], add=("../evil.asice", b"x"))
    with pytest.raises(VdxpError) as err:
        verify_archive(traversal, None)
    assert err.value.code == "asic.zip_unsafe_name"
