"""ASiC-E containers: every case of asic/structure and asic/verifier expectations, hostile ZIPs, the
builder against X-Road's own containers, and round trips with signatures and time-stamps made here."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import struct
import tracemalloc
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import tsp as asn1_tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lxml import etree

from gateway.globalconf.disk import InstalledConf, read_conf_dir
from protocols.asic import (
    CONTAINER_LIMITS,
    MIMETYPE,
    AsicContainer,
    AsicError,
    ContainerVerification,
    ZipLimits,
    build_container,
    embed_timestamp,
    fault_code,
    read_container,
    verify_container,
)
from protocols.errors import CertificateError, SignatureError, VdxpError
from protocols.gconf.params import ApprovedTsa, SharedParameters
from protocols.gconf.params import ClientId as GconfClientId
from protocols.hashchain import build_batch
from protocols.sigverify import VerificationCache
from protocols.tsp import TsaProfile, build_request, verify_response
from protocols.xades import MIME_HASH_CHAIN_RESULT
from protocols.xroad.faults import Dialect
from protocols.xroad.ids import ClientId, ServiceId
from protocols.xroad.soap import SoapHeader, build_message
from tests.test_sigverify import NOW, Pki, _conf, _make_pki, _sign

XROAD = Path(__file__).resolve().parent / "vectors" / "xroad"
STRUCTURE = XROAD / "asic" / "structure"
VERIFIER = XROAD / "asic" / "verifier"
STRUCTURE_EXPECT: dict[str, Any] = json.loads((STRUCTURE / "expectations.json").read_text())
VERIFIER_EXPECT: dict[str, Any] = json.loads((VERIFIER / "expectations.json").read_text())
STRUCTURE_CASES: list[dict[str, Any]] = STRUCTURE_EXPECT["cases"]
VERIFIER_CASES: list[dict[str, Any]] = VERIFIER_EXPECT["cases"]


def _expect_error(call: Callable[[], object], code_7_7: str, code_7_8: str, code: str | None = None) -> VdxpError:
    with pytest.raises(VdxpError) as info:
        call()
    err = info.value
    assert (err.xroad_code, fault_code(err, Dialect.CAMEL), fault_code(err, Dialect.SNAKE)) == \
        (code_7_7, code_7_7, code_7_8), str(err)
    if code is not None:
        assert err.code == code, str(err)
    return err


# --------------------------------------------------------------------------- structure vectors


def test_structure_expectations_cover_every_file() -> None:
    files = {p.name for p in STRUCTURE.glob("*.asice")}
    assert {c["container"] for c in STRUCTURE_CASES} == files and len(files) == 6
    assert STRUCTURE_EXPECT["error_matching"] == "exact"


def _listed_entries(text: str) -> set[str]:
    return {name.strip() for name in re.sub(r"\s*\(.*\)", "", text).split(",")}


@pytest.mark.parametrize("case", STRUCTURE_CASES, ids=[c["id"] for c in STRUCTURE_CASES])
def test_structure_vector(case: dict[str, Any]) -> None:
    data = (STRUCTURE / case["container"]).read_bytes()
    expect = case["expect"]
    if expect["result"] == "ok":
        asic = read_container(data)
        assert set(asic.entries) | set(asic.attachment_digests) == _listed_entries(expect["entries"])
        assert asic.entry("/mimetype") == MIMETYPE.encode()
        for name, digest in asic.attachment_digests.items():
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                assert digest == hashlib.sha512(zf.read(name)).digest()
        return
    assert expect["match"] == "exact"
    _expect_error(lambda: read_container(data), expect["code_7_7"], expect["code_7_8"])


# --------------------------------------------------------------------------- verifier vectors


@pytest.fixture(scope="module")
def dev_conf() -> InstalledConf:
    spec = VERIFIER_EXPECT["configuration"]["globalconf_dir"]
    path = (VERIFIER / spec.split(" (")[0]).resolve()
    conf = read_conf_dir(path)
    assert conf.own_instance == "DEV" and [t.name for t in conf.own_shared.tsas] == ["Test TSA"]
    return conf


def test_verifier_expectations_cover_every_container() -> None:
    files = {p.name for p in VERIFIER.glob("*.asice")}
    assert {c["container"] for c in VERIFIER_CASES} | set(VERIFIER_EXPECT["not_exercised"]) - \
        {"configuration-anchor1.xml"} == files
    assert len(VERIFIER_CASES) == 12 and VERIFIER_EXPECT["error_matching"].startswith("exact")


def _validation_time(case: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(case["validation_time"].split(" ")[0].replace("Z", "+00:00"))


@pytest.mark.parametrize("case", VERIFIER_CASES, ids=[c["id"] for c in VERIFIER_CASES])
def test_verifier_vector(case: dict[str, Any], dev_conf: InstalledConf) -> None:
    data = (VERIFIER / case["container"]).read_bytes()
    expect = case["expect"]
    if expect["result"] == "error":
        assert expect["match"] == "exact"
        _expect_error(lambda: verify_container(data, dev_conf), expect["code_7_7"], expect["code_7_8"])
        return
    result = verify_container(data, dev_conf)
    assert str(result.signature.member) == case["signer"].split(" ")[0]
    assert result.validation_time == _validation_time(case) == result.timestamp.gen_time
    assert result.tsa_name == "Test TSA"
    assert result.batch_timestamp == case["timestamp_kind"].startswith("batch")
    assert result.batch_signature == case["signature_kind"].startswith("batch signature")
    # the OCSP response embedded in the signature is the one the expectations name
    produced = result.signature.ocsp[0].produced_at
    assert produced == datetime.fromisoformat(case["ocsp_produced_at"].replace("Z", "+00:00"))
    kind = "response" if "response" in case["message"].split(",")[0].lower() else "request"
    assert result.message_kind.endswith(kind)


def test_verifier_vector_details(dev_conf: InstalledConf) -> None:
    rest = verify_container((VERIFIER / "valid-non-batch-rest.asice").read_bytes(), dev_conf)
    assert (rest.message_kind, str(rest.signer)) == ("REST response", "DEV/COM/1234/TestService")
    assert rest.attachments == ("attachment1",) and rest.signature.references[:2] == ("/message.xml", "/attachment1")
    soap = verify_container((VERIFIER / "valid-non-batch-soap-attachments.asice").read_bytes(), dev_conf)
    assert (soap.message_kind, str(soap.signer)) == ("SOAP response", "DEV/COM/4321/TestClient")
    assert soap.attachments == ("attachment1", "attachment2")
    # the batch signature's chain names /attachment1, which the container does not hold: trusted, reported
    batch = verify_container((VERIFIER / "valid-signed-hashchain.asice").read_bytes(), dev_conf)
    assert batch.batch_signature and [uri for uri, _ in batch.unverified_digests] == ["/attachment1"]
    assert batch.query_id is not None and batch.unverified_digests[0][1] == base64.b64decode(
        "YoZ26aBCLuGV0W9J7CH6YtOXhkEsleUwu1GwIrQ+ZJw7GBAnTwRZF2s2n/z8h1iOkzLiFmO8p4f2VVz+F1DqYg==")


def test_verifier_not_exercised_attachments_container(dev_conf: InstalledConf) -> None:
    """attachments.asice (2012 layout): its message entry is not named message.xml."""
    data = (VERIFIER / "attachments.asice").read_bytes()
    assert "AsicMessageNotFound" in VERIFIER_EXPECT["not_exercised"]["attachments.asice"]
    _expect_error(lambda: verify_container(data, dev_conf), "AsicMessageNotFound", "asic_message_not_found",
                  "asic.message_not_found")


def test_verifier_needs_an_approved_tsa(dev_conf: InstalledConf) -> None:
    data = (VERIFIER / "valid-signed-message.asice").read_bytes()
    no_tsa = _Conf("DEV", {"DEV": replace(dev_conf.own_shared, tsas=())})
    _expect_error(lambda: verify_container(data, no_tsa), "InternalError", "internal_error", "asic.tsa_not_approved")
    # another instance's TSA does not count: only the own instance's are trusted
    other = _Conf("XX", {"DEV": replace(dev_conf.own_shared, tsas=()), "XX": dev_conf.own_shared})
    assert verify_container(data, other).tsa_name == "Test TSA"
    swapped = _Conf("DEV", {"DEV": replace(dev_conf.own_shared, tsas=()), "XX": dev_conf.own_shared})
    _expect_error(lambda: verify_container(data, swapped), "InternalError", "internal_error", "asic.tsa_not_approved")


def test_verifier_signer_instance_unknown(dev_conf: InstalledConf) -> None:
    data = (VERIFIER / "valid-signed-message.asice").read_bytes()
    conf = _Conf("XX", {"XX": dev_conf.own_shared})
    err = _expect_error(lambda: verify_container(data, conf), "InternalError", "internal_error",
                        "asic.signer_instance_unknown")
    assert "DEV" in err.message


def test_verifier_uses_a_cache(dev_conf: InstalledConf) -> None:
    cache = VerificationCache()
    for name in ("valid-signed-message.asice", "invalid-not-signed-hashchain.asice"):
        verify_container((VERIFIER / name).read_bytes(), dev_conf, cache=cache)
    assert cache.hits >= 2  # same signer and certificate path: the second container hits the cache


def test_fault_code_without_xroad_code() -> None:
    assert fault_code(VdxpError("x", code="a.b")) is None
    assert fault_code(SignatureError("x", xroad_code="MalformedSignature.HashChainUnusedInputs"),
                      Dialect.SNAKE) == "malformed_signature.hashchain_unused_inputs"


# --------------------------------------------------------------------------- structure rules


def _zip(entries: Sequence[tuple[str, bytes]] | Mapping[str, bytes], *, method: int = zipfile.ZIP_DEFLATED,
         comment: bytes = b"") -> bytes:
    out = io.BytesIO()
    items = entries.items() if isinstance(entries, Mapping) else entries
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names on purpose
        with zipfile.ZipFile(out, "w", compression=method) as zf:
            zf.comment = comment
            for name, data in items:
                zf.writestr(name, data)
    return out.getvalue()


BASE: dict[str, bytes] = {"mimetype": MIMETYPE.encode(), "message.xml": b"<m/>", "META-INF/signatures.xml": b"<s/>"}


@pytest.mark.parametrize(("entries", "code_7_7", "code_7_8"), [
    ({k: v for k, v in BASE.items() if k != "mimetype"}, "AsicMimeTypeNotFound", "asic_mime_type_not_found"),
    ({**BASE, "mimetype": b" \n\t"}, "AsicMimeTypeNotFound", "asic_mime_type_not_found"),
    ({**BASE, "mimetype": b"application/zip"}, "AsicInvalidMimeType", "asic_invalid_mime_type"),
    ({**BASE, "mimetype": MIMETYPE.encode() + b"\n"}, "AsicInvalidMimeType", "asic_invalid_mime_type"),
    ({**BASE, "message.xml": b"\r\n  "}, "AsicMessageNotFound", "asic_message_not_found"),
    ({k: v for k, v in BASE.items() if k != "message.xml"} | {"MESSAGE.XML": b"<m/>"}, "AsicMessageNotFound",
     "asic_message_not_found"),
    ({**BASE, "META-INF/signatures.xml": b""}, "AsicSignatureNotFound", "asic_signature_not_found"),
    ({k: v for k, v in BASE.items() if k != "META-INF/signatures.xml"} | {"META-INF/my-signatures-1.xml": b"<s/>"},
     "AsicSignatureNotFound", "asic_signature_not_found"),
    ({**BASE, "sig-hashchainresult.xml": b"<r/>"}, "AsicHashChainNotFound", "asic_hash_chain_not_found"),
    ({**BASE, "sig-hashchain.xml": b"<c/>"}, "AsicHashChainResultNotFound", "asic_hash_chain_result_not_found"),
    ({**BASE, "sig-hashchain.xml": b"<c/>", "sig-hashchainresult.xml": b" "}, "AsicHashChainResultNotFound",
     "asic_hash_chain_result_not_found"),
    ({**BASE, "META-INF/timestamp.tst": b""}, "AsicTimestampNotFound", "asic_timestamp_not_found"),
    ({**BASE, "ts-hashchainresult.xml": b"<r/>"}, "AsicHashChainNotFound", "asic_hash_chain_not_found"),
    ({**BASE, "ts-hashchain.xml": b"<c/>"}, "AsicHashChainResultNotFound", "asic_hash_chain_result_not_found"),
    ({**BASE, "META-INF/manifest.xml": b"  "}, "AsicManifestNotFound", "asic_manifest_not_found"),
    ({**BASE, "META-INF/ASiCManifest.xml": b""}, "AsicManifestNotFound", "asic_manifest_not_found"),
    ({"META-INF/signatures.xml": b"<s/>"}, "AsicMimeTypeNotFound", "asic_mime_type_not_found"),
], ids=["no-mimetype", "blank-mimetype", "other-mimetype", "mimetype-newline", "blank-message",
        "message-other-case", "empty-signature", "signature-other-name", "sig-result-without-chain",
        "sig-chain-without-result", "sig-result-blank", "empty-timestamp", "ts-result-without-chain",
        "ts-chain-without-result", "blank-manifest", "empty-asic-manifest", "checked-in-order"])
def test_structure_rules(entries: dict[str, bytes], code_7_7: str, code_7_8: str) -> None:
    _expect_error(lambda: read_container(_zip(entries)), code_7_7, code_7_8)


def test_structure_accepts_and_keeps() -> None:
    data = _zip({**BASE, "mimetype": MIMETYPE.upper().encode(), "attachment1": b"one", "attachment-x": b"two",
                 "other.bin": b"ignored", "META-INF/signatures-old.xml": b"ignored", "MIMETYPE.bak": b"x",
                 "META-INF/": b""})
    asic = read_container(data)
    assert set(asic.entries) == set(BASE)
    assert asic.attachment_digests == {"attachment1": hashlib.sha512(b"one").digest(),
                                       "attachment-x": hashlib.sha512(b"two").digest()}
    assert asic.attachments == ("attachment1", "attachment-x")
    assert "other.bin" in asic.names and "META-INF/" not in asic.names
    assert asic.entry("/message.xml") == b"<m/>" and asic.timestamp is None and asic.sig_hash_chain is None
    # a stored mimetype (ASiC) and a deflated one (X-Road 7.x) read the same
    assert read_container(_zip(BASE, method=zipfile.ZIP_STORED)).entries == read_container(_zip(BASE)).entries


# --------------------------------------------------------------------------- hostile ZIPs


def _patch(data: bytes, old: bytes, new: bytes, count: int = -1) -> bytes:
    assert len(old) == len(new) and old in data
    return data.replace(old, new, count)


def _cd_offset(data: bytes) -> int:
    """Where the central directory starts, as the end record says."""
    offset: int = struct.unpack_from("<L", data, data.rindex(b"PK\x05\x06") + 16)[0]
    assert data[offset:offset + 4] == b"PK\x01\x02"
    return offset


@pytest.mark.parametrize("name", ["../message.xml", "/message.xml", "META-INF/../message.xml", "a\\b",
                                  "C:/x", "./message.xml", "x\tname"])
def test_hostile_entry_names(name: str) -> None:
    err = _expect_error(lambda: read_container(_zip({**BASE, name: b"x"})), "AsicInvalidContainer",
                        "asic_invalid_container", "asic.zip_unsafe_name")
    assert name.replace("\\", "\\\\").replace("\t", "\\t") in err.message


def test_hostile_nul_in_name() -> None:
    """zipfile cuts names at NUL ("message.xml\\0.exe" would read as message.xml): refused."""
    data = _patch(_zip({**BASE, "messageZxml.exe": b"x"}), b"messageZxml.exe", b"message.xml\x00exe")
    _expect_error(lambda: read_container(data), "AsicInvalidContainer", "asic_invalid_container",
                  "asic.zip_unsafe_name")


@pytest.mark.parametrize("second", ["message.xml", "MESSAGE.xml"])
def test_hostile_duplicate_entries(second: str) -> None:
    data = _zip([*BASE.items(), (second, b"<other/>")])
    _expect_error(lambda: read_container(data), "AsicInvalidContainer", "asic_invalid_container",
                  "asic.zip_duplicate_entry")


def test_hostile_too_many_entries() -> None:
    data = _zip({**BASE, **{f"x{i}": b"" for i in range(CONTAINER_LIMITS.max_entries)}})
    _expect_error(lambda: read_container(data), "AsicInvalidContainer", "asic_invalid_container",
                  "asic.zip_too_many_entries")
    # a forged entry count in the end record
    small = _zip(BASE)
    eocd = small.rindex(b"PK\x05\x06")
    forged = small[:eocd + 10] + struct.pack("<H", 60000) + small[eocd + 12:]
    _expect_error(lambda: read_container(forged), "AsicInvalidContainer", "asic_invalid_container",
                  "asic.zip_too_many_entries")


def test_hostile_sizes() -> None:
    big = _zip({**BASE, "message.xml": b"<m>" + b" " * (2 * 1024 * 1024) + b"</m>"})
    limits = ZipLimits(max_entry_bytes=1024 * 1024, max_total_bytes=8 * 1024 * 1024)
    _expect_error(lambda: read_container(big, limits=limits), "AsicInvalidContainer", "asic_invalid_container",
                  "asic.zip_entry_too_large")
    _expect_error(lambda: read_container(big, limits=replace(limits, max_zip_bytes=len(big) - 1)),
                  "AsicInvalidContainer", "asic_invalid_container", "asic.zip_too_large")
    # attachments are only hashed, but count against the total
    many = _zip({**BASE, **{f"attachment{i}": bytes(512 * 1024) for i in range(1, 6)}})
    _expect_error(lambda: read_container(many, limits=replace(limits, max_total_bytes=2 * 1024 * 1024)),
                  "AsicInvalidContainer", "asic_invalid_container", "asic.zip_too_large")
    assert len(read_container(many, limits=limits).attachment_digests) == 5


def _lying_bomb(entry: str, actual: int, declared: int) -> bytes:
    """A container whose ``entry`` declares ``declared`` bytes but inflates to ``actual``."""
    filler = b"Q" * declared
    data = _zip({**BASE, entry: filler})
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = comp.compress(bytes(actual)) + comp.flush()
    # rebuild the entry by hand: the local header and the directory keep the declared sizes
    zf = zipfile.ZipFile(io.BytesIO(data))
    info = zf.getinfo(entry)
    head = data[:info.header_offset]
    local = data[info.header_offset:info.header_offset + 30 + len(entry)]
    old_size = info.compress_size
    after = data[info.header_offset + 30 + len(entry) + old_size:]
    local = local[:18] + struct.pack("<L", len(stream)) + local[22:]
    shift = len(stream) - old_size
    cd_at = after.index(b"PK\x01\x02")
    cd = bytearray(after[cd_at:])
    pos = 0
    while cd[pos:pos + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack_from("<3H", cd, pos + 28)
        name = bytes(cd[pos + 46:pos + 46 + n])
        offset = struct.unpack_from("<L", cd, pos + 42)[0]
        if name == entry.encode():
            struct.pack_into("<L", cd, pos + 20, len(stream))
        elif offset > info.header_offset:
            struct.pack_into("<L", cd, pos + 42, offset + shift)
        pos += 46 + n + m + k
    eocd = pos
    struct.pack_into("<L", cd, eocd + 16, struct.unpack_from("<L", cd, eocd + 16)[0] + shift)
    return head + local + stream + after[:cd_at] + bytes(cd)


@pytest.mark.parametrize("entry", ["message.xml", "attachment1"])
def test_hostile_lying_sizes_stay_bounded(entry: str) -> None:
    """An entry that declares 1000 bytes but inflates to 64 MiB: reading stops at the declared size
    (then the CRC fails), whether the entry is kept in memory (message.xml) or only hashed."""
    bomb = _lying_bomb(entry, actual=64 * 1024 * 1024, declared=1000)
    assert len(bomb) < 200 * 1024
    tracemalloc.start()
    try:
        err = _expect_error(lambda: read_container(bomb), "AsicInvalidContainer", "asic_invalid_container",
                            "asic.zip_invalid")
        _size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "CRC" in err.message and entry in err.message
    assert peak < 8 * 1024 * 1024, peak  # never the 64 MiB it would inflate to


def test_hostile_overlapping_entries() -> None:
    data = _zip(BASE)
    zf = zipfile.ZipFile(io.BytesIO(data))
    second = zf.getinfo("message.xml").header_offset
    cd = bytearray(data)
    pos = _cd_offset(data)
    while cd[pos:pos + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack_from("<3H", cd, pos + 28)
        if bytes(cd[pos + 46:pos + 46 + n]) == b"META-INF/signatures.xml":
            struct.pack_into("<L", cd, pos + 42, second)  # points into message.xml's data
        pos += 46 + n + m + k
    _expect_error(lambda: read_container(bytes(cd)), "AsicInvalidContainer", "asic_invalid_container",
                  "asic.zip_overlap")


def test_hostile_encrypted_and_unsupported_method() -> None:
    data = bytearray(_zip(BASE))
    pos = _cd_offset(bytes(data))
    struct.pack_into("<H", data, pos + 8, struct.unpack_from("<H", data, pos + 8)[0] | 1)
    _expect_error(lambda: read_container(bytes(data)), "AsicInvalidContainer", "asic_invalid_container",
                  "asic.zip_encrypted")
    _expect_error(lambda: read_container(_zip(BASE, method=zipfile.ZIP_BZIP2)), "AsicInvalidContainer",
                  "asic_invalid_container", "asic.zip_unsupported")


def test_hostile_damaged_zips() -> None:
    good = _zip(BASE, method=zipfile.ZIP_STORED)
    # a flipped byte of stored data: CRC mismatch
    _expect_error(lambda: read_container(_patch(good, b"<m/>", b"<n/>")), "AsicInvalidContainer",
                  "asic_invalid_container", "asic.zip_invalid")
    # truncated: starts as a ZIP, no directory
    _expect_error(lambda: read_container(good[: len(good) // 2]), "AsicInvalidContainer", "asic_invalid_container",
                  "asic.zip_invalid")
    # data inserted between the entries and the directory
    cd = _cd_offset(good)
    _expect_error(lambda: read_container(good[:cd] + b"junk" + good[cd:]), "AsicInvalidContainer",
                  "asic_invalid_container", "asic.zip_invalid")
    # a local header that names another entry than the directory
    _expect_error(lambda: read_container(_patch(good, b"message.xml", b"massage.xml", 1)), "AsicInvalidContainer",
                  "asic_invalid_container", "asic.zip_invalid")


def _to_zip64(data: bytes, entries: int | None = None) -> bytes:
    """The same ZIP ended by a ZIP64 end record (the classic one saying "see ZIP64")."""
    at = data.rindex(b"PK\x05\x06")
    _sig, _d, _cd, _n_disk, n_total, cd_size, cd_offset, comment_len = struct.unpack_from("<4s4H2LH", data, at)
    count = n_total if entries is None else entries
    z64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, at, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, comment_len)
    return data[:at] + z64 + locator + end + data[at + 22:]


def test_zip64_end_records() -> None:
    plain = _zip({**BASE, "attachment1": b"a"})
    assert read_container(_to_zip64(plain)) == read_container(plain)
    _expect_error(lambda: read_container(_to_zip64(plain, entries=70000)), "AsicInvalidContainer",
                  "asic_invalid_container", "asic.zip_too_many_entries")
    _expect_error(lambda: read_container(_to_zip64(plain, entries=3)), "AsicInvalidContainer",
                  "asic_invalid_container", "asic.zip_invalid")  # the directory holds 4


def test_not_a_zip_has_no_entries() -> None:
    """As X-Road's streaming reader: anything not starting with a ZIP header reads as empty."""
    for data in (b"", b"Hello world!\n", b"junk" + _zip(BASE), bytes(100)):
        _expect_error(lambda d=data: read_container(d), "AsicMimeTypeNotFound", "asic_mime_type_not_found",
                      "asic.mimetype_not_found")
    empty = _zip({})
    assert empty.startswith(b"PK\x05\x06")
    _expect_error(lambda: read_container(empty), "AsicMimeTypeNotFound", "asic_mime_type_not_found")


# --------------------------------------------------------------------------- the builder against X-Road's containers


def _parts_of(path: Path) -> tuple[dict[str, bytes], list[zipfile.ZipInfo], bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}, zf.infolist(), zf.comment


@pytest.mark.parametrize("name", ["valid-batch-ts.asice", "valid-non-batch-rest.asice",
                                  "valid-non-batch-soap-attachments.asice"])
def test_builder_matches_xroad_containers(name: str, dev_conf: InstalledConf) -> None:
    """Rebuilt from their parts, X-Road's own 7.x containers come out with the same entries in the same
    order, the same manifests byte for byte and the same comment; they verify the same."""
    entries, infos, comment = _parts_of(VERIFIER / name)
    attachments = [entries[n] for n in sorted(n for n in entries if n.startswith("attachment"))]
    built = build_container(message=entries["message.xml"], signature=entries["META-INF/signatures.xml"],
                            timestamp=entries["META-INF/timestamp.tst"],
                            ts_hash_chain_result=entries["ts-hashchainresult.xml"],
                            ts_hash_chain=entries["ts-hashchain.xml"], attachments=attachments,
                            created=datetime(2024, 12, 5, 7, 34, 12, tzinfo=UTC))
    rebuilt, rebuilt_infos, rebuilt_comment = _parts_of_bytes(built)
    assert [i.filename for i in rebuilt_infos] == [i.filename for i in infos]
    assert rebuilt == entries  # every entry, manifest.xml and ASiCManifest.xml included, byte for byte
    assert rebuilt_comment == comment == b"mimetype=application/vnd.etsi.asic-e+zip"
    first = rebuilt_infos[0]
    assert (first.filename, first.compress_type, first.extra) == ("mimetype", zipfile.ZIP_STORED, b"")
    assert built[30:38] == b"mimetype" and built[38:38 + len(MIMETYPE)] == MIMETYPE.encode()
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in rebuilt_infos[1:])
    ours, theirs = verify_container(built, dev_conf), verify_container((VERIFIER / name).read_bytes(), dev_conf)
    assert (ours.signer, ours.validation_time, ours.signature.references) == \
        (theirs.signer, theirs.validation_time, theirs.signature.references)


def _parts_of_bytes(data: bytes) -> tuple[dict[str, bytes], list[zipfile.ZipInfo], bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}, zf.infolist(), zf.comment


def test_builder_with_an_embedded_timestamp(dev_conf: InstalledConf) -> None:
    """valid-signed-hashchain.asice: a batch signature whose token is in the signature."""
    entries, _infos, _comment = _parts_of(VERIFIER / "valid-signed-hashchain.asice")
    built = build_container(message=entries["message.xml"], signature=entries["META-INF/signatures.xml"],
                            sig_hash_chain_result=entries["sig-hashchainresult.xml"],
                            sig_hash_chain=entries["sig-hashchain.xml"], created=NOW)
    rebuilt, infos, _ = _parts_of_bytes(built)
    assert [i.filename for i in infos] == ["mimetype", "message.xml", "META-INF/signatures.xml",
                                           "sig-hashchainresult.xml", "sig-hashchain.xml", "META-INF/manifest.xml"]
    assert rebuilt["META-INF/manifest.xml"].splitlines()[3:6] == [
        b'    <manifest:file-entry manifest:media-type="text/xml" manifest:full-path="message.xml"/>',
        b'    <manifest:file-entry manifest:media-type="text/xml" manifest:full-path="sig-hashchainresult.xml"/>',
        b'    <manifest:file-entry manifest:media-type="text/xml" manifest:full-path="sig-hashchain.xml"/>']
    assert {k: v for k, v in rebuilt.items() if k != "META-INF/manifest.xml"} == \
        {k: v for k, v in entries.items() if k not in ("META-INF/manifest.xml", "META-INF/")}
    assert verify_container(built, dev_conf).batch_signature
    assert build_container(message=entries["message.xml"], signature=entries["META-INF/signatures.xml"],
                           sig_hash_chain_result=entries["sig-hashchainresult.xml"],
                           sig_hash_chain=entries["sig-hashchain.xml"], created=NOW) == built  # deterministic


# --------------------------------------------------------------------------- round trips with our own PKI and TSA

CLIENT = ClientId("VN", "GOV", "000.00.00.H41", "dms")
SERVICE = ServiceId("VN", "GOV", "000.00.00.G22", "vdxp", "sendEdoc", "v1")
PROVIDER_MEMBER = ClientId("VN", "GOV", "000.00.00.G22")


@dataclass(frozen=True)
class _Conf:
    own_instance: str
    shared: Mapping[str, SharedParameters]


@dataclass
class Tsa:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    profile: TsaProfile
    serial: int = 0

    def stamp(self, data: bytes, at: datetime = NOW) -> bytes:
        """A token over SHA-512 of ``data``, made at ``at``."""
        digest = hashlib.sha512(data).digest()
        self.serial += 1
        prepared = self.profile.prepare(build_request(digest, "sha512", nonce=None), serial=self.serial, gen_time=at)
        signature = self.key.sign(prepared.signed_attrs_digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        response = prepared.finish(signature)
        if self.cert.not_valid_before_utc <= at <= self.cert.not_valid_after_utc:
            assert verify_response(response, digest=digest, hash_name="sha512", nonce=None,
                                   tsa_certs=[self.cert]).gen_time == at
        return bytes(asn1_tsp.TimeStampResp.load(response)["time_stamp_token"].dump())


def _make_tsa(pki: Pki) -> Tsa:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "VDXP Test TSA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(pki.ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(days=400))
            .not_valid_after(NOW + timedelta(days=365))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .sign(pki.ca_key, hashes.SHA256()))
    return Tsa(key, cert, TsaProfile(cert, policy_oid="1.3.6.1.4.1.99999.1.1"))


@dataclass
class World:
    pki: Pki
    tsa: Tsa
    conf: _Conf


@pytest.fixture(scope="module")
def world() -> World:
    pki = _make_pki()
    tsa = _make_tsa(pki)
    shared = replace(_conf(pki), tsas=(ApprovedTsa("vdxp-tsa", "http://tsa.test", tsa.cert),))
    return World(pki, tsa, _Conf("VN", {"VN": shared}))


def _request(query_id: str = "q-1", body: str = "hello") -> bytes:
    el = etree.Element("{urn:vdxp}sendEdoc")
    el.text = body
    return build_message(SoapHeader(client=CLIENT, service=SERVICE, query_id=query_id), el)


def _signature_value(signature: bytes) -> bytes:
    root = etree.fromstring(signature)
    return base64.b64decode(root.findtext(".//{http://www.w3.org/2000/09/xmldsig#}SignatureValue") or "")


def _single(world: World, message: bytes | None = None, at: datetime = NOW) -> tuple[bytes, bytes, bytes]:
    """(message, signature, embedded-time-stamp container) of a message signed on its own."""
    message = message if message is not None else _request()
    signature = _sign(world.pki, reference_data=message)
    token = world.tsa.stamp(_signature_value(signature), at)
    return message, signature, build_container(message=message, signature=signature, timestamp=token, created=at)


@dataclass
class Batch:
    message: bytes
    attachment: bytes
    signature: bytes
    sig_chain: Any
    ts_chain: Any
    token: bytes
    container: bytes


def _batch(world: World, attachment: bytes = b'{"edoc":"..."}') -> Batch:
    """A message with an attachment signed in a batch with another message, time-stamped in a batch
    with another signature."""
    message, other = _request("q-2"), _request("q-3", "other")
    sig_chain = build_batch([[("/message.xml", hashlib.sha512(message).digest()),
                              ("/attachment1", hashlib.sha512(attachment).digest())],
                             [("/message.xml", hashlib.sha512(other).digest())]])
    signature = _sign(world.pki, reference_uri="/sig-hashchainresult.xml", reference_data=sig_chain.result_xml,
                      mime=MIME_HASH_CHAIN_RESULT)
    ts_chain = build_batch([[("/META-INF/signatures.xml", hashlib.sha512(signature).digest())],
                            [("/META-INF/signatures.xml", hashlib.sha512(b"<another signature/>").digest())]],
                           chain_uri="/ts-hashchain.xml")
    token = world.tsa.stamp(ts_chain.result_xml)
    container = build_container(message=message, signature=signature, attachments=[attachment],
                                sig_hash_chain_result=sig_chain.result_xml, sig_hash_chain=sig_chain.chains[0],
                                timestamp=token, ts_hash_chain_result=ts_chain.result_xml,
                                ts_hash_chain=ts_chain.chains[0], created=NOW)
    return Batch(message, attachment, signature, sig_chain, ts_chain, token, container)


def _replace_entry(container: bytes, name: str, data: bytes) -> bytes:
    entries, infos, _ = _parts_of_bytes(container)
    return _zip([(i.filename, data if i.filename == name else entries[i.filename]) for i in infos])


def _drop_entry(container: bytes, name: str) -> bytes:
    entries, infos, _ = _parts_of_bytes(container)
    return _zip([(i.filename, entries[i.filename]) for i in infos if i.filename != name])


def test_round_trip_single_signature(world: World) -> None:
    message, signature, container = _single(world)
    result = verify_container(container, world.conf)
    assert isinstance(result, ContainerVerification)
    assert (result.signer, result.message_kind, result.query_id) == (CLIENT, "SOAP request", "q-1")
    assert (result.validation_time, result.tsa_name) == (NOW, "vdxp-tsa")
    assert not result.batch_signature and not result.batch_timestamp and result.unverified_digests == ()
    assert result.signature.chain == (world.pki.sign_cert, world.pki.ca)
    asic = read_container(container)
    assert asic.timestamp is None and asic.message == message
    assert b"EncapsulatedTimeStamp" in asic.signature and b"EncapsulatedTimeStamp" not in signature


def test_round_trip_batch_signature_and_time_stamp(world: World) -> None:
    b = _batch(world)
    result = verify_container(b.container, world.conf)
    assert result.batch_signature and result.batch_timestamp and result.attachments == ("attachment1",)
    assert result.unverified_digests == ()  # the attachment is in the container: its digest was checked
    asic = read_container(b.container)
    assert asic.timestamp == b.token and asic.ts_hash_chain == b.ts_chain.chains[0]
    assert asic.entry("META-INF/ASiCManifest.xml") is not None


def test_round_trip_response_signed_by_the_provider(world: World) -> None:
    el = etree.Element("{urn:vdxp}sendEdocResponse")
    response = build_message(SoapHeader(client=CLIENT, service=SERVICE, query_id="q-1"), el)
    # the client's certificate (VN/GOV/000.00.00.H41) is the wrong signer of a response
    _m, _s, container = _single(world, response)
    err = _expect_error(lambda: verify_container(container, world.conf), "IncorrectCertificate",
                        "incorrect_certificate", "signature.signer_mismatch")
    assert str(PROVIDER_MEMBER) in err.message
    # the provider's certificate is the right one
    provider = _make_pki(subject_member=GconfClientId.parse(str(PROVIDER_MEMBER)))
    conf = _Conf("VN", {"VN": replace(_conf(provider), tsas=world.conf.shared["VN"].tsas)})
    signature = _sign(provider, reference_data=response)
    token = world.tsa.stamp(_signature_value(signature))
    result = verify_container(build_container(message=response, signature=signature, timestamp=token, created=NOW),
                              conf)
    assert (result.message_kind, result.signer, str(result.signature.member)) == \
        ("SOAP response", SERVICE.provider, str(PROVIDER_MEMBER))


def test_round_trip_tampered_single(world: World) -> None:
    message, signature, container = _single(world)
    forged = message.replace(b"hello", b"hullo")
    _expect_error(lambda: verify_container(_replace_entry(container, "message.xml", forged), world.conf),
                  "InvalidSignatureValue", "invalid_signature_value", "signature.value_invalid")
    _expect_error(lambda: verify_container(_drop_entry(container, "mimetype"), world.conf),
                  "AsicMimeTypeNotFound", "asic_mime_type_not_found", "asic.mimetype_not_found")
    _expect_error(lambda: verify_container(_drop_entry(container, "META-INF/signatures.xml"), world.conf),
                  "AsicSignatureNotFound", "asic_signature_not_found", "asic.signature_not_found")
    # a token over another signature value: its imprint does not match
    other = world.tsa.stamp(b"something else")
    swapped = build_container(message=message, signature=signature, timestamp=other, created=NOW)
    _expect_error(lambda: verify_container(swapped, world.conf), "MalformedSignature", "malformed_signature",
                  "asic.timestamp_imprint_mismatch")
    # no time-stamp at all
    bare = _replace_entry(container, "META-INF/signatures.xml", signature)
    _expect_error(lambda: verify_container(bare, world.conf), "AsicTimestampNotFound", "asic_timestamp_not_found",
                  "asic.timestamp_not_found")
    with pytest.raises(ValueError, match="no time-stamp"):
        build_container(message=message, signature=signature, created=NOW)


def test_round_trip_tampered_batch(world: World) -> None:
    b = _batch(world)
    _expect_error(lambda: verify_container(_replace_entry(b.container, "message.xml", b.message + b" "), world.conf),
                  "MalformedSignature.InvalidHashChainRef", "malformed_signature.invalid_hash_chain_ref",
                  "signature.hash_chain_invalid")
    err = _expect_error(lambda: verify_container(_replace_entry(b.container, "attachment1", b"{}"), world.conf),
                        "MalformedSignature.InvalidHashChainRef", "malformed_signature.invalid_hash_chain_ref",
                        "signature.hash_chain_invalid")
    assert "attachment1" in err.message
    # the attachment left out of the container: its digest in the chain is trusted, and reported
    result = verify_container(_drop_entry(b.container, "attachment1"), world.conf)
    assert result.unverified_digests == (("/attachment1", hashlib.sha512(b.attachment).digest()),)
    # the signature document changed: the time-stamp hash chain no longer covers it (checked first)
    changed = b.signature.replace(b"<ds:KeyInfo>", b"<ds:KeyInfo> ")
    assert changed != b.signature
    _expect_error(lambda: verify_container(_replace_entry(b.container, "META-INF/signatures.xml", changed), world.conf),
                  "MalformedSignature", "malformed_signature", "asic.timestamp_hash_chain_invalid")
    # the time-stamp hash chain of the other signature of the batch
    wrong_chain = _replace_entry(b.container, "ts-hashchain.xml", b.ts_chain.chains[1])
    _expect_error(lambda: verify_container(wrong_chain, world.conf), "MalformedSignature", "malformed_signature",
                  "asic.timestamp_hash_chain_invalid")
    # a forged token signature
    token = bytearray(b.token)
    token[-1] ^= 0x01
    _expect_error(lambda: verify_container(_replace_entry(b.container, "META-INF/timestamp.tst", bytes(token)),
                                           world.conf),
                  "TimestampValidation", "timestamp_validation", "asic.timestamp_signature_invalid")
    _expect_error(lambda: verify_container(_replace_entry(b.container, "META-INF/timestamp.tst", b"\x30\x03junk"),
                                           world.conf),
                  "TimestampValidation", "timestamp_validation", "asic.timestamp_malformed")


def test_round_trip_validation_time_is_the_time_stamp(world: World) -> None:
    """The certificate path and OCSP are checked at genTime: a token made two hours after the OCSP
    response (freshness 3600 s) makes it too old."""
    late = NOW + timedelta(hours=2)
    _m, _s, container = _single(world, at=late)
    _expect_error(lambda: verify_container(container, world.conf), "InvalidCertPath.IncorrectValidationInfo",
                  "invalid_cert_path.incorrect_validation_info", "cert.ocsp_invalid")
    _m, _s, early = _single(world, at=NOW - timedelta(days=60))  # before the signing certificate's validity
    err = _expect_error(lambda: verify_container(early, world.conf), "CannotCreateCertPath",
                        "cannot_create_cert_path", "cert.expired")
    assert isinstance(err, CertificateError)
    # a token made outside the TSA certificate's validity
    _m, _s, ancient = _single(world, at=NOW - timedelta(days=500))
    err = _expect_error(lambda: verify_container(ancient, world.conf), "TimestampValidation", "timestamp_validation",
                        "asic.tsa_certificate_invalid")
    assert isinstance(err, AsicError)


def test_round_trip_trust(world: World) -> None:
    _m, _s, container = _single(world)
    untrusted = _Conf("VN", {"VN": replace(world.conf.shared["VN"], tsas=())})
    _expect_error(lambda: verify_container(container, untrusted), "InternalError", "internal_error",
                  "asic.tsa_not_approved")
    other_pki = _make_pki()
    strangers = _Conf("VN", {"VN": replace(_conf(other_pki), tsas=world.conf.shared["VN"].tsas)})
    _expect_error(lambda: verify_container(container, strangers), "CannotCreateCertPath", "cannot_create_cert_path")


def test_round_trip_messages_without_a_signer(world: World) -> None:
    _m, _s, garbage = _single(world, b"garbage that is neither SOAP nor REST")
    _expect_error(lambda: verify_container(garbage, world.conf), "InternalError", "internal_error",
                  "asic.message_invalid")
    fault = (b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>'
             b"<SOAP-ENV:Fault><faultcode>Server.X</faultcode><faultstring>x</faultstring></SOAP-ENV:Fault>"
             b"</SOAP-ENV:Body></SOAP-ENV:Envelope>")
    _m, _s, container = _single(world, fault)
    _expect_error(lambda: verify_container(container, world.conf), "InternalError", "internal_error",
                  "asic.signer_unknown")


def test_build_container_input_errors(world: World) -> None:
    message, signature, container = _single(world)
    token = world.tsa.stamp(_signature_value(signature))
    for kwargs, text in [
        ({"message": b" "}, "message and a signature"),
        ({"sig_hash_chain_result": b"<r/>"}, "signature hash chain"),
        ({"ts_hash_chain": b"<c/>"}, "time-stamp hash chain"),
        ({"timestamp": None, "ts_hash_chain_result": b"<r/>", "ts_hash_chain": b"<c/>"}, "needs its time-stamp"),
        ({"timestamp": b""}, "token is empty"),
    ]:
        args: dict[str, Any] = {"message": message, "signature": signature, "timestamp": token, "created": NOW,
                                **kwargs}
        with pytest.raises(ValueError, match=text):
            build_container(**args)
    embedded = read_container(container).signature
    with pytest.raises(ValueError, match="already holds a time-stamp"):
        embed_timestamp(embedded, token)
    with pytest.raises(ValueError, match="not acceptable XML"):
        embed_timestamp(b"<x", token)
    # a signature that already embeds its token needs none
    assert read_container(build_container(message=message, signature=embedded, created=NOW)).signature == embedded


def test_read_container_result_is_read_only(world: World) -> None:
    asic = read_container(_single(world)[2])
    assert isinstance(asic, AsicContainer)
    with pytest.raises(TypeError):
        asic.entries["message.xml"] = b"x"  # type: ignore[index]
