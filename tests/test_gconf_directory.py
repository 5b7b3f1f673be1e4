"""Signed global configuration directories and anchors: X-Road vectors, tampering, hostile
input, build/finish round trips."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from protocols.gconf import directory as gdir
from protocols.gconf.anchor import (
    SHA1_URI,
    SHA256_URI,
    SHA512_URI,
    Anchor,
    AnchorSource,
    build_anchor,
    cert_hash,
    parse_anchor,
)
from protocols.gconf.directory import (
    ECDSA_SHA256_URI,
    ECDSA_SHA384_URI,
    ECDSA_SHA512_URI,
    RSA_SHA256_URI,
    RSA_SHA512_URI,
    SHA256_RSA_MGF1_URI,
    SHA512_MGF1_URI,
    SignedDirectory,
    build_directory,
    check_entry,
    parse_directory,
    read_directory,
    verify_directory,
)
from protocols.gconf.errors import REASONS, GlobalConfError
from protocols.xmlsafe import parse_xml

GD = "xroad/gconf-download"
EXPECTATIONS = Path(__file__).parent / "vectors" / GD / "expectations.json"
# Before every Expire-date of the vectors (test-conf-simple/detached expire 2026-05-20T17:42:55Z).
PINNED = datetime(2025, 6, 1, tzinfo=UTC)
LATE = datetime(2030, 1, 1, tzinfo=UTC)
_DER = Encoding.DER
_PEM = Encoding.PEM


def _cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(EXPECTATIONS.read_text())["cases"]
    return cases


def _case(case_id: str) -> dict[str, Any]:
    return next(c for c in _cases() if c["id"] == case_id)


def _expect(code: str, fn: Callable[[], object]) -> GlobalConfError:
    """``fn`` raises GlobalConfError ``code`` with the X-Road codes of REASONS."""
    with pytest.raises(GlobalConfError) as info:
        fn()
    err = info.value
    assert err.code == code, err
    assert (err.xroad_code, err.xroad_code_7_8) == REASONS[code]
    return err


def _load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def gd(vectors: Path) -> Path:
    return vectors / GD


@pytest.fixture(scope="module")
def internal_anchor(gd: Path) -> Anchor:
    return parse_anchor((gd / "configuration_anchor_CS_internal.xml").read_bytes())


@pytest.fixture(scope="module")
def internalconf(gd: Path) -> bytes:
    return (gd / "public/V6/internalconf").read_bytes()


# --------------------------------------------------------------------------- expectations


def _location_certs(gd: Path, case: dict[str, Any]) -> list[x509.Certificate]:
    return [_load_cert(gd / "confclient-tests" / rel) for rel in case["location"]["verification_certs"]]


def _clock(case: dict[str, Any]) -> list[datetime]:
    """The clocks a case must hold at: pinned before the Expire-date; 'any' also late."""
    return [PINNED, LATE] if case.get("clock") == "any" else [PINNED]


@pytest.mark.parametrize("case_id", [c["id"] for c in _cases() if "location" in c])
def test_confclient_expectations(gd: Path, case_id: str) -> None:
    case = _case(case_id)
    body = (gd / "confclient-tests" / Path(case["directory"]).name).read_bytes()
    certs = _location_certs(gd, case)
    expect = case["expect"]
    for now in _clock(case):
        if expect["result"] == "error":
            with pytest.raises(GlobalConfError) as info:
                read_directory(body, None, certs, now)
            assert info.value.xroad_code == expect["code_7_7"]
            assert info.value.xroad_code_7_8 == expect["code_7_8"]
            continue
        assert expect["result"] == "ok"
        d, cert = read_directory(body, None, certs, now)
        assert cert == certs[0]
        assert d.version == 2  # no Version field in these directories
        assert d.expire_date == datetime(2026, 5, 20, 17, 42, 55, tzinfo=UTC)
        locations = [e.content_location for e in d.entries]
        for loc in expect.get("files_include", []):
            assert loc in locations
        if "received_content_identifiers" in expect:
            received = _download_client(gd, case, d, certs, now)
            assert received == expect["received_content_identifiers"]


def _download_client(gd: Path, case: dict[str, Any], d: SignedDirectory, certs: Sequence[x509.Certificate],
                     now: datetime) -> list[str]:
    """ConfigurationClientTest: fetch every part from content_source, check its hash; follow the
    additional own-instance source listed in a downloaded private-params.xml (SHARED-PARAMETERS only)."""
    content_dir = gd / "confclient-tests" / Path(case["directory"]).stem / "EE"
    received: list[str] = []
    for entry in d.entries:
        data = (content_dir / entry.content_location.lstrip("/")).read_bytes()
        check_entry(entry, data)
        received.append(entry.content_identifier)
        if entry.content_identifier == gdir.CONTENT_ID_PRIVATE_PARAMETERS:
            root = parse_xml(data)
            for url in root.iterfind("configurationAnchor/source/downloadURL"):
                extra = (gd / "confclient-tests" / Path(url.text or "").name).read_bytes()
                # X-Road verifies it with the certificate cached under the same hash (consumer.pem)
                extra_dir, _ = read_directory(extra, None, certs, now)
                for extra_entry in extra_dir.entries:
                    if extra_entry.content_identifier == gdir.CONTENT_ID_SHARED_PARAMETERS:
                        check_entry(extra_entry, (content_dir / extra_entry.file_name).read_bytes())
                        received.append(extra_entry.content_identifier)
    return received


def test_confclient_simple_expires_at_its_expire_date(gd: Path) -> None:
    case = _case("ConfigurationParserTest.parseConf")
    body = (gd / "confclient-tests/test-conf-simple.txt").read_bytes()
    certs = _location_certs(gd, case)
    expire = datetime(2026, 5, 20, 17, 42, 55, tzinfo=UTC)
    read_directory(body, None, certs, expire - timedelta(microseconds=1))
    err = _expect("gconf.expired", lambda: read_directory(body, None, certs, expire))
    assert err.xroad_code == "OutdatedGlobalConf"
    # the signature is checked before the date: a wrong certificate still says so after expiry
    producer = _load_cert(gd.parent / "test-pki/producer.pem")
    _expect("gconf.missing_verification_cert", lambda: read_directory(body, None, [producer], LATE))


def test_v6_internalconf(gd: Path, internal_anchor: Anchor, internalconf: bytes) -> None:
    expect = _case("V6/internalconf")["expect"]
    assert internal_anchor.instance == expect["instance"]
    d, cert = read_directory(internalconf, None, internal_anchor.verification_certs, PINNED, expected_version=6)
    assert d.version == int(expect["version"])
    assert d.expire_date == datetime(2035, 11, 11, 3, 7, 40, tzinfo=UTC)
    assert d.signature_algorithm == RSA_SHA512_URI
    assert d.verification_cert_hash_algorithm == SHA512_URI
    assert d.verification_cert_hash == hashlib.sha512(cert.public_bytes(_DER)).digest()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "internalSigningKey"
    # the signed bytes: CRLF, from the inner delimiter to "--inner--\r\n"
    assert d.signed_data.startswith(b"--CNo5S3hBEIHbDGmANPgi\r\nExpire-date: ")
    assert d.signed_data.endswith(b"--CNo5S3hBEIHbDGmANPgi--\r\n")
    assert len(d.entries) == len(expect["files"])
    for entry, file in zip(d.entries, expect["files"], strict=True):
        ident, _, instance = file["content_identifier"].partition("; instance=")
        assert (entry.content_identifier, entry.instance) == (ident, instance.strip("'"))
        assert entry.content_location == file["content_location"]
        assert entry.hash_algorithm == SHA512_URI
        data = (gd / file["local_file"]).read_bytes()
        check_entry(entry, data)
        _expect("gconf.hash_mismatch", lambda e=entry, b=data: check_entry(e, b + b" "))
    # the split form gives the same
    parsed = parse_directory(internalconf)
    assert parsed == d
    assert verify_directory(parsed, internal_anchor.sources[1].verification_certs, PINNED) == cert


def test_v6_externalconf_is_incomplete(gd: Path, internal_anchor: Anchor) -> None:
    expect = _case("V6/externalconf")["expect"]
    assert expect["result"] == "incomplete"
    d = parse_directory((gd / "public/V6/externalconf").read_bytes())
    assert (d.version, d.expire_date) == (6, datetime(2035, 11, 11, 3, 7, 40, tzinfo=UTC))
    assert [(e.content_identifier, e.instance) for e in d.entries] == [("SHARED-PARAMETERS", "DEV")]
    assert base64.b64encode(d.verification_cert_hash).startswith(b"saNm+c4j")
    _expect("gconf.missing_verification_cert", lambda: verify_directory(d, internal_anchor.verification_certs, PINNED))
    shared = (gd / "public/V6/20251110170000548026000/shared-params.xml").read_bytes()
    _expect("gconf.hash_mismatch", lambda: check_entry(d.entries[0], shared))


def test_every_expectation_case_is_covered() -> None:
    ids = {c["id"] for c in _cases()}
    covered = {c["id"] for c in _cases() if "location" in c} | {"V6/internalconf", "V6/externalconf"}
    assert ids == covered


def test_headless_body_with_http_content_type(internal_anchor: Anchor, internalconf: bytes) -> None:
    head, _, rest = internalconf.partition(b"\r\n\r\n")
    content_type = head.decode().partition(": ")[2]
    d, _ = read_directory(rest, content_type, internal_anchor.verification_certs, PINNED)
    assert d.version == 6
    # the HTTP type is ignored when the body carries its own header (nginx's text/plain, or the same type)
    assert read_directory(internalconf, "text/plain", internal_anchor.verification_certs, PINNED)[0] == d
    assert read_directory(internalconf, content_type, internal_anchor.verification_certs, PINNED)[0] == d
    _expect("gconf.malformed", lambda: parse_directory(rest, "text/plain"))


# --------------------------------------------------------------------------- tampering


def _signed_span(body: bytes) -> tuple[int, int]:
    d = parse_directory(body)
    start = body.index(d.signed_data)
    return start, start + len(d.signed_data)


def test_every_byte_of_the_signed_part_is_protected(internal_anchor: Anchor, internalconf: bytes) -> None:
    start, end = _signed_span(internalconf)
    certs = internal_anchor.verification_certs
    for i in range(start, end):
        tampered = bytearray(internalconf)
        tampered[i] ^= 0x01
        with pytest.raises(GlobalConfError):
            read_directory(bytes(tampered), None, certs, PINNED)


def test_tampered_hash_line_is_a_signature_failure(internal_anchor: Anchor, internalconf: bytes) -> None:
    tampered = internalconf.replace(b"3EFho9gV", b"3EFho9gW", 1)
    assert tampered != internalconf
    _expect("gconf.signature_invalid",
            lambda: read_directory(tampered, None, internal_anchor.verification_certs, PINNED))


def test_tampered_signature(internal_anchor: Anchor, internalconf: bytes) -> None:
    d = parse_directory(internalconf)
    sig_b64 = base64.b64encode(d.signature)
    for i in (0, 10, len(sig_b64) // 2, len(sig_b64) - 4):
        other = b"A" if sig_b64[i:i + 1] != b"A" else b"B"
        tampered = internalconf.replace(sig_b64, sig_b64[:i] + other + sig_b64[i + 1:])
        _expect("gconf.signature_invalid",
                lambda t=tampered: read_directory(t, None, internal_anchor.verification_certs, PINNED))
    bad_b64 = internalconf.replace(sig_b64, sig_b64[:10] + b"*" + sig_b64[11:])
    _expect("gconf.signature_decode",
            lambda: read_directory(bad_b64, None, internal_anchor.verification_certs, PINNED))


def test_wrong_certificate(gd: Path, internalconf: bytes) -> None:
    consumer = _load_cert(gd.parent / "test-pki/consumer.pem")
    _expect("gconf.missing_verification_cert", lambda: read_directory(internalconf, None, [consumer], PINNED))
    _expect("gconf.missing_verification_cert", lambda: read_directory(internalconf, None, [], PINNED))


def test_expired(internal_anchor: Anchor, internalconf: bytes) -> None:
    certs = internal_anchor.verification_certs
    expire = datetime(2035, 11, 11, 3, 7, 40, tzinfo=UTC)
    for now in (expire, expire + timedelta(days=1), expire.astimezone(_tz(+7))):
        _expect("gconf.expired", lambda n=now: read_directory(internalconf, None, certs, n))
        _expect("gconf.expired", lambda n=now: verify_directory(parse_directory(internalconf), certs, n))
    read_directory(internalconf, None, certs, expire - timedelta(seconds=1))
    with pytest.raises(ValueError, match="aware"):
        read_directory(internalconf, None, certs, datetime(2025, 1, 1))


def _tz(hours: int) -> Any:
    from datetime import timezone
    return timezone(timedelta(hours=hours))


# --------------------------------------------------------------------------- truncation and hostile input


def _truncations(body: bytes) -> Iterator[bytes]:
    for cut in range(len(body)):
        yield body[:cut]


@pytest.mark.parametrize("name", ["public/V6/internalconf", "confclient-tests/test-conf-simple.txt"])
def test_truncated_at_every_offset(gd: Path, name: str) -> None:
    body = (gd / name).read_bytes()
    certs = [*parse_anchor((gd / "configuration_anchor_CS_internal.xml").read_bytes()).verification_certs,
             _load_cert(gd.parent / "test-pki/consumer.pem")]
    full = read_directory(body, None, certs, PINNED)[0]
    closing = body.rstrip(b"\r\n")  # "...--OUTER--": the final line break is optional
    accepted = 0
    for prefix in _truncations(body):
        try:
            d, _ = read_directory(prefix, None, certs, PINNED)
        except GlobalConfError:
            continue
        assert prefix == closing, len(prefix)
        assert d == full
        accepted += 1
    assert accepted == (1 if closing != body else 0)


def test_no_signature_part_and_no_signed_data(internalconf: bytes) -> None:
    head = internalconf.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
    _expect("gconf.missing_signed_data", lambda: parse_directory(head))
    _expect("gconf.missing_signed_data", lambda: parse_directory(head + b"no delimiter here\r\n"))
    _expect("gconf.missing_signed_data", lambda: parse_directory(head + b"--lmyAPTb9i7P4fQ7MmpnZ--\r\n"))
    first = internalconf[: internalconf.index(b"\r\n--lmyAPTb9i7P4fQ7MmpnZ\r\nContent-Type: application")]
    _expect("gconf.missing_signature", lambda: parse_directory(first))
    _expect("gconf.missing_signature", lambda: parse_directory(first + b"\r\n--lmyAPTb9i7P4fQ7MmpnZ--\r\n"))


def test_outer_structure_errors(internalconf: bytes) -> None:
    unclosed = internalconf.replace(b"--lmyAPTb9i7P4fQ7MmpnZ--\r\n", b"")
    _expect("gconf.malformed", lambda: parse_directory(unclosed))
    third = internalconf.replace(b"--lmyAPTb9i7P4fQ7MmpnZ--\r\n",
                                 b"--lmyAPTb9i7P4fQ7MmpnZ\r\nX: y\r\n\r\nextra\r\n--lmyAPTb9i7P4fQ7MmpnZ--\r\n")
    _expect("gconf.malformed", lambda: parse_directory(third))
    for garbage in (b"", b"hello", b"\r\n\r\n", b"Content-Type: text/plain\r\n\r\nhi",
                    b"Content-Type: multipart/related\r\n\r\n--x\r\n",
                    b"Content-Type: multipart/related; boundary=\"unterminated\r\n\r\n",
                    b"\xff\xfe: x\r\n\r\n", b"Content-Type: multipart/related; boundary=a\r\n\tfolded\r\n\r\n"):
        with pytest.raises(GlobalConfError) as info:
            parse_directory(garbage)
        assert info.value.code in ("gconf.malformed", "gconf.missing_signed_data"), garbage


def test_size_limits(internalconf: bytes) -> None:
    _expect("gconf.too_large", lambda: parse_directory(internalconf + b" " * gdir.MAX_DIRECTORY_BYTES))
    huge_header = b"Content-Type: multipart/related; boundary=b\r\nX-Pad: " + b"a" * gdir.MAX_HEADER_BYTES + b"\r\n\r\n"
    _expect("gconf.malformed", lambda: parse_directory(huge_header + b"--b\r\n"))
    no_blank = b"Content-Type: multipart/related; boundary=b\r\n" + b"X: y\r\n" * 10_000
    _expect("gconf.malformed", lambda: parse_directory(no_blank))
    many_fields = b"Content-Type: multipart/related; boundary=b\r\n" + b"".join(
        b"X-%d: y\r\n" % i for i in range(gdir.MAX_HEADER_FIELDS + 1)) + b"\r\n--b\r\n"
    _expect("gconf.malformed", lambda: parse_directory(many_fields))


def test_absurd_numbers_of_parts_are_bounded() -> None:
    head = b"Content-Type: multipart/related; boundary=b\r\n\r\n"
    endless = head + b"--b\r\n" * 2_000_000  # ~10 MiB before the limit check
    _expect("gconf.too_large", lambda: parse_directory(endless))
    many = head + b"--b\r\n" * 1_000_000
    started = time.monotonic()
    _expect("gconf.malformed", lambda: parse_directory(many))
    # inner parts beyond MAX_ENTRIES, signature part present
    inner = b"--i\r\nExpire-date: 2035-01-01T00:00:00Z\r\n\r\n" + b"--i\r\n" * (gdir.MAX_ENTRIES + 5)
    body = (head + b"--b\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n" + inner
            + b"\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            + b"Signature-Algorithm-Id: " + RSA_SHA512_URI.encode()
            + b"\r\nVerification-certificate-hash: AAAA; hash-algorithm-id=\"" + SHA512_URI.encode()
            + b"\"\r\n\r\nAAAA\r\n--b--\r\n")
    _expect("gconf.malformed", lambda: parse_directory(body))
    # almost-delimiters everywhere: linear time
    noisy = head + (b"\n--b-x --bb \n--b\t!" * 400_000)[: gdir.MAX_DIRECTORY_BYTES - 200]
    with pytest.raises(GlobalConfError):
        parse_directory(noisy)
    assert time.monotonic() - started < 20


# --------------------------------------------------------------------------- keys, and a helper to sign any bytes


def _self_signed(key: Any, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime(2025, 1, 1, tzinfo=UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now)
               .not_valid_after(now + timedelta(days=3650)))
    return builder.sign(key, hashes.SHA256())


@pytest.fixture(scope="module")
def rsa_key() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, _self_signed(key, "signer-rsa")


@pytest.fixture(scope="module")
def ec_keys() -> dict[str, tuple[ec.EllipticCurvePrivateKey, x509.Certificate]]:
    out = {}
    for curve in (ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()):
        key = ec.generate_private_key(curve)
        out[curve.name] = (key, _self_signed(key, f"signer-{curve.name}"))
    return out


_HASHES = {RSA_SHA256_URI: hashes.SHA256, RSA_SHA512_URI: hashes.SHA512, SHA256_RSA_MGF1_URI: hashes.SHA256,
           SHA512_MGF1_URI: hashes.SHA512, ECDSA_SHA256_URI: hashes.SHA256, ECDSA_SHA384_URI: hashes.SHA384,
           ECDSA_SHA512_URI: hashes.SHA512}


def _sign(key: Any, algorithm: str, data: bytes) -> bytes:
    h = _HASHES[algorithm]()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(h))
    if "MGF1" in algorithm:
        return key.sign(data, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    return key.sign(data, padding.PKCS1v15(), h)


def _envelope(signed: bytes, key: Any, cert: x509.Certificate, *, inner: str = "i", algorithm: str = RSA_SHA512_URI,
              sig_headers: Sequence[bytes] | None = None, signature_b64: bytes | None = None) -> bytes:
    """A directory around arbitrary signed bytes, signed for real (LF line endings)."""
    if signature_b64 is None:
        signature_b64 = base64.b64encode(_sign(key, algorithm, signed))
    if sig_headers is None:
        sig_headers = [b"Content-Type: application/octet-stream", b"Content-Transfer-Encoding: base64",
                       b"Signature-Algorithm-Id: " + algorithm.encode(),
                       b"Verification-certificate-hash: " + base64.b64encode(cert_hash(cert, SHA512_URI))
                       + b'; hash-algorithm-id="' + SHA512_URI.encode() + b'"']
    return (b"Content-Type: multipart/related; boundary=o\n\n--o\nContent-Type: multipart/mixed; boundary="
            + inner.encode() + b"\n\n" + signed + b"\n--o\n" + b"\n".join(sig_headers) + b"\n\n" + signature_b64
            + b"\n--o--\n")


_ENTRY = (b"--i\nContent-type: application/octet-stream\nContent-transfer-encoding: base64\n"
          b"Content-identifier: SHARED-PARAMETERS; instance=\"EE\"\nContent-location: /shared-params.xml\n"
          b"Hash-algorithm-id: " + SHA512_URI.encode() + b"\n\n"
          + base64.b64encode(hashlib.sha512(b"<conf/>").digest()) + b"\n")


def _signed(header: bytes, entry: bytes = _ENTRY) -> bytes:
    return b"--i\n" + header + b"\n\n" + entry + b"--i--\n"


def test_helper_envelope_is_accepted(rsa_key: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> None:
    key, cert = rsa_key
    body = _envelope(_signed(b"Expire-date: 2035-01-01T00:00:00Z\nVersion: 3"), key, cert)
    d, used = read_directory(body, None, [cert], PINNED, expected_version=3)
    assert used == cert
    assert (d.version, d.entries[0].content_identifier, d.entries[0].instance) == (3, "SHARED-PARAMETERS", "EE")
    check_entry(d.entries[0], b"<conf/>")


HEADER_CASES = [
    # (header part, entry, expected_version, code or None)
    (b"Version: 6", _ENTRY, None, "gconf.header_missing"),
    (b"Expire-date: ", _ENTRY, None, "gconf.header_missing"),
    (b"Expire-date: tomorrow", _ENTRY, None, "gconf.header_wrong_value"),
    (b"Expire-date: 2035-01-01T00:00:00", _ENTRY, None, "gconf.header_wrong_value"),
    (b"Expire-date: 2035-01-01", _ENTRY, None, "gconf.header_wrong_value"),
    (b"Expire-date: 2020-01-01T00:00:00Z\nVersion: x", _ENTRY, None, "gconf.expired"),  # date before Version
    (b"Expire-date: 2035-01-01T00:00:00Z\nVersion: x", _ENTRY, None, "gconf.header_wrong_value"),
    (b"Expire-date: 2035-01-01T00:00:00Z\nVersion: 1", _ENTRY, None, "gconf.header_wrong_value"),
    (b"Expire-date: 2035-01-01T00:00:00Z", _ENTRY, 6, "gconf.version_missing"),
    (b"Expire-date: 2035-01-01T00:00:00Z\nVersion: 5", _ENTRY, 6, "gconf.version_mismatch"),
    (b"Expire-date: 2035-01-01T00:00:00Z", _ENTRY, 2, None),
    (b"Expire-date: 2035-01-01T00:00:00+02:00\nVersion: 6", _ENTRY, 6, None),
    (b"Expire-date: 2035-01-01T00:00:00Z", _ENTRY.replace(b"Content-location: /shared-params.xml\n", b""), None,
     "gconf.header_missing"),
    (b"Expire-date: 2035-01-01T00:00:00Z", _ENTRY.replace(b"Hash-algorithm-id", b"X-Hash"), None,
     "gconf.header_missing"),
    (b"Expire-date: 2035-01-01T00:00:00Z", _ENTRY.replace(b"application/octet-stream", b"text/plain"), None,
     "gconf.header_wrong_value"),
    (b"Expire-date: 2035-01-01T00:00:00Z", _ENTRY.replace(b"Content-transfer-encoding: base64", b"X: y"), None,
     "gconf.header_missing"),
    (b"Expire-date: 2035-01-01T00:00:00Z", _ENTRY.replace(b'; instance="EE"', b""), None,
     "gconf.header_parameter_missing"),
    (b"Expire-date: 2035-01-01T00:00:00Z", _ENTRY.replace(b"SHARED-PARAMETERS", b"FOO").replace(b'; instance="EE"',
                                                                                                  b""), None, None),
    (b"Expire-date: 2035-01-01T00:00:00Z", _ENTRY.replace(b"\n\n", b"\n\n!!notbase64"), None, "gconf.malformed"),
    (b"Expire-date: 2035-01-01T00:00:00Z", _ENTRY.replace(b"Content-location", b"Content location"), None,
     "gconf.malformed"),
    (b"Expire-date: 2035-01-01T00:00:00Z\nExpire-date: 2036-01-01T00:00:00Z", _ENTRY, None, "gconf.malformed"),
]


@pytest.mark.parametrize(("header", "entry", "expected_version", "code"), HEADER_CASES)
def test_header_and_entry_fields(rsa_key: tuple[rsa.RSAPrivateKey, x509.Certificate], header: bytes, entry: bytes,
                                 expected_version: int | None, code: str | None) -> None:
    key, cert = rsa_key
    body = _envelope(_signed(header, entry), key, cert)
    if code is None:
        read_directory(body, None, [cert], PINNED, expected_version=expected_version)
    else:
        _expect(code, lambda: read_directory(body, None, [cert], PINNED, expected_version=expected_version))
        # the signature is checked first: with another certificate the answer is the certificate
        other = _self_signed(ec.generate_private_key(ec.SECP256R1()), "other")
        _expect("gconf.missing_verification_cert", lambda: read_directory(body, None, [other], PINNED))


SIG_HEADER_CASES = [
    ([b"Content-Transfer-Encoding: base64", b"Signature-Algorithm-Id: " + RSA_SHA512_URI.encode(), b"@HASH"],
     "gconf.header_missing"),
    ([b"Content-Type: text/plain", b"Content-Transfer-Encoding: base64",
      b"Signature-Algorithm-Id: " + RSA_SHA512_URI.encode(), b"@HASH"], "gconf.header_wrong_value"),
    ([b"Content-Type: application/octet-stream", b"Content-Transfer-Encoding: base64", b"@HASH"],
     "gconf.header_missing"),
    ([b"Content-Type: application/octet-stream", b"Content-Transfer-Encoding: base64",
      b"Signature-Algorithm-Id: " + RSA_SHA512_URI.encode()], "gconf.header_missing"),
    ([b"Content-Type: application/octet-stream", b"Content-Transfer-Encoding: base64",
      b"Signature-Algorithm-Id: " + RSA_SHA512_URI.encode(), b"Verification-certificate-hash: AAAA"],
     "gconf.header_parameter_missing"),
    ([b"Content-Type: application/octet-stream", b"Content-Transfer-Encoding: base64",
      b"Signature-Algorithm-Id: " + RSA_SHA512_URI.encode(),
      b"Verification-certificate-hash: %%%; hash-algorithm-id=\"" + SHA512_URI.encode() + b'"'],
     "gconf.header_wrong_value"),
    ([b"Content-Type: application/octet-stream", b"Content-Transfer-Encoding: base64",
      b"Signature-Algorithm-Id: urn:unknown", b"@HASH"], "gconf.unsupported_algorithm"),
    ([b"Content-Type: application/octet-stream", b"Content-Transfer-Encoding: base64",
      b"Signature-Algorithm-Id: " + RSA_SHA512_URI.encode(),
      b"Verification-certificate-hash: AAAA; hash-algorithm-id=\"urn:md4\""], "gconf.unsupported_algorithm"),
    ([b"Content-Type: application/octet-stream", b"Content-Transfer-Encoding: base64",
      b"Signature-Algorithm-Id: " + ECDSA_SHA256_URI.encode(), b"@HASH"], "gconf.signature_invalid"),
    ([b"content-type:application/octet-stream", b"CONTENT-TRANSFER-ENCODING: base64",
      b"signature-algorithm-id: " + RSA_SHA512_URI.encode(), b"@HASH"], None),
]


@pytest.mark.parametrize(("sig_headers", "code"), SIG_HEADER_CASES)
def test_signature_part_fields(rsa_key: tuple[rsa.RSAPrivateKey, x509.Certificate], sig_headers: list[bytes],
                               code: str | None) -> None:
    key, cert = rsa_key
    cert_hash_field = (b"Verification-certificate-hash: " + base64.b64encode(cert_hash(cert, SHA512_URI))
                       + b'; hash-algorithm-id="' + SHA512_URI.encode() + b'"')
    headers = [cert_hash_field if h == b"@HASH" else h for h in sig_headers]
    body = _envelope(_signed(b"Expire-date: 2035-01-01T00:00:00Z"), key, cert, sig_headers=headers)
    if code is None:
        read_directory(body, None, [cert], PINNED)
    else:
        _expect(code, lambda: read_directory(body, None, [cert], PINNED))


def test_empty_signature_body_is_a_verification_failure(rsa_key: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> None:
    key, cert = rsa_key
    body = _envelope(_signed(b"Expire-date: 2035-01-01T00:00:00Z"), key, cert, signature_b64=b"")
    _expect("gconf.signature_invalid", lambda: read_directory(body, None, [cert], PINNED))


def test_signed_data_must_start_with_its_boundary(rsa_key: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> None:
    key, cert = rsa_key
    body = _envelope(_signed(b"Expire-date: 2035-01-01T00:00:00Z"), key, cert, inner="other")
    _expect("gconf.malformed", lambda: read_directory(body, None, [cert], PINNED))


def test_signature_by_another_key(rsa_key: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> None:
    key, cert = rsa_key
    signed = _signed(b"Expire-date: 2035-01-01T00:00:00Z")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = _envelope(signed, key, cert, signature_b64=base64.b64encode(_sign(other, RSA_SHA512_URI, signed)))
    _expect("gconf.signature_invalid", lambda: read_directory(body, None, [cert], PINNED))


# --------------------------------------------------------------------------- building


def _boundaries(*values: str) -> Callable[[], str]:
    it = iter(values)
    return lambda: next(it)


def test_build_reproduces_internalconf_byte_for_byte(gd: Path, internal_anchor: Anchor, internalconf: bytes) -> None:
    folder = gd / "public/V6/20251110170000548026000"
    prepared = build_directory(
        expire_date=datetime(2035, 11, 11, 3, 7, 40, tzinfo=UTC), version=6,
        files=[("SHARED-PARAMETERS", "DEV", "/V6/20251110170000548026000/shared-params.xml",
                (folder / "shared-params.xml").read_bytes()),
               ("PRIVATE-PARAMETERS", "DEV", "/V6/20251110170000548026000/private-params.xml",
                (folder / "private-params.xml").read_bytes())],
        boundary_source=_boundaries("CNo5S3hBEIHbDGmANPgi", "lmyAPTb9i7P4fQ7MmpnZ"))
    original = parse_directory(internalconf)
    assert prepared.data_to_sign == original.signed_data
    body, content_type = prepared.finish(signature_algorithm=RSA_SHA512_URI, signature=original.signature,
                                         verification_cert=internal_anchor.verification_certs[0])
    assert body == internalconf
    assert content_type == "multipart/related; charset=UTF-8; boundary=lmyAPTb9i7P4fQ7MmpnZ"


def _files() -> list[tuple[str, str | None, str, bytes]]:
    return [("SHARED-PARAMETERS", "EE", "/V6/20260101000000000000000/shared-params.xml", b"<shared/>\n"),
            ("PRIVATE-PARAMETERS", "EE", "/V6/20260101000000000000000/private-params.xml", b"<private/>"),
            ("MONITORING", None, "/V6/20260101000000000000000/monitoring-params.xml", b"")]


@pytest.mark.parametrize("algorithm", [RSA_SHA256_URI, RSA_SHA512_URI, SHA256_RSA_MGF1_URI, SHA512_MGF1_URI])
def test_round_trip_rsa(rsa_key: tuple[rsa.RSAPrivateKey, x509.Certificate], algorithm: str) -> None:
    key, cert = rsa_key
    _round_trip(key, cert, algorithm)


@pytest.mark.parametrize(("curve", "algorithm"), [("secp256r1", ECDSA_SHA256_URI), ("secp384r1", ECDSA_SHA384_URI),
                                                  ("secp521r1", ECDSA_SHA512_URI)])
@pytest.mark.parametrize("raw", [False, True])
def test_round_trip_ec(ec_keys: dict[str, tuple[ec.EllipticCurvePrivateKey, x509.Certificate]], curve: str,
                       algorithm: str, raw: bool) -> None:
    key, cert = ec_keys[curve]
    d = _round_trip(key, cert, algorithm, raw_ecdsa=raw)
    r, s = decode_dss_signature(d.signature)  # published in DER whatever the signer returned
    assert r > 0 and s > 0


def _round_trip(key: Any, cert: x509.Certificate, algorithm: str, *, raw_ecdsa: bool = False) -> SignedDirectory:
    expire = datetime(2030, 6, 1, 12, 0, 0, 999_000, tzinfo=UTC)
    prepared = build_directory(expire_date=expire, version=6, files=_files())
    signature = _sign(key, algorithm, prepared.data_to_sign)
    if raw_ecdsa:
        r, s = decode_dss_signature(signature)
        size = (key.curve.key_size + 7) // 8
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    body, content_type = prepared.finish(signature_algorithm=algorithm, signature=signature, verification_cert=cert,
                                         cert_hash_algorithm=SHA256_URI)
    _assert_internalconf_shape(body, content_type)
    d, used = read_directory(body, content_type, [cert], PINNED, expected_version=6)
    assert used == cert
    assert d.version == 6
    assert d.expire_date == expire.replace(microsecond=0)
    assert d.signed_data == prepared.data_to_sign
    assert d.verification_cert_hash_algorithm == SHA256_URI
    assert [(e.content_identifier, e.instance, e.content_location) for e in d.entries] == [
        (i, inst, loc) for i, inst, loc, _ in _files()]
    for entry, (_, _, _, data) in zip(d.entries, _files(), strict=True):
        check_entry(entry, data)
    assert verify_directory(parse_directory(body), [cert], PINNED) == cert
    return d


def _assert_internalconf_shape(body: bytes, content_type: str) -> None:
    assert b"\n" not in body.replace(b"\r\n", b"")  # CRLF only
    m = re.fullmatch(
        rb"Content-Type: multipart/related; charset=UTF-8; boundary=(\w{20})\r\n\r\n"
        rb"--\1\r\nContent-Type: multipart/mixed; charset=UTF-8; boundary=(\w{20})\r\n\r\n"
        rb"--\2\r\nExpire-date: [0-9T:-]+Z\r\nVersion: 6\r\n\r\n"
        rb"(?:--\2\r\nContent-type: application/octet-stream\r\nContent-transfer-encoding: base64\r\n"
        rb"Content-identifier: [A-Z-]+(?:; instance='\w+')?\r\nContent-location: /V6/\d+/[\w.-]+\r\n"
        rb"Hash-algorithm-id: http://www\.w3\.org/2001/04/xmlenc#sha512\r\n\r\n[A-Za-z0-9+/=]+\r\n)+"
        rb"--\2--\r\n\r\n"
        rb"--\1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        rb"Signature-Algorithm-Id: \S+\r\nVerification-certificate-hash: [A-Za-z0-9+/=]+; hash-algorithm-id=\"\S+\"\r\n"
        rb"\r\n[A-Za-z0-9+/=]+\r\n--\1--\r\n", body)
    assert m is not None, body[:400]
    assert content_type == "multipart/related; charset=UTF-8; boundary=" + m.group(1).decode()


def test_build_version_2_has_no_version_field(rsa_key: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> None:
    key, cert = rsa_key
    prepared = build_directory(expire_date=datetime(2030, 1, 1, tzinfo=UTC), version=2, files=_files()[:1])
    assert b"Version" not in prepared.data_to_sign
    body, ct = prepared.finish(signature_algorithm=RSA_SHA512_URI, verification_cert=cert,
                               signature=_sign(key, RSA_SHA512_URI, prepared.data_to_sign))
    d, _ = read_directory(body, ct, [cert], PINNED, expected_version=2)
    assert d.version == 2
    _expect("gconf.version_missing", lambda: read_directory(body, ct, [cert], PINNED, expected_version=3))


def test_finish_refuses_a_bad_signature(rsa_key: tuple[rsa.RSAPrivateKey, x509.Certificate],
                                        ec_keys: dict[str, tuple[Any, x509.Certificate]]) -> None:
    key, cert = rsa_key
    prepared = build_directory(expire_date=datetime(2030, 1, 1, tzinfo=UTC), version=6, files=_files())
    good = _sign(key, RSA_SHA512_URI, prepared.data_to_sign)
    _expect("gconf.signature_invalid", lambda: prepared.finish(
        signature_algorithm=RSA_SHA512_URI, signature=good[:-1] + bytes([good[-1] ^ 1]), verification_cert=cert))
    _expect("gconf.signature_invalid", lambda: prepared.finish(
        signature_algorithm=RSA_SHA256_URI, signature=good, verification_cert=cert))
    _expect("gconf.signature_invalid", lambda: prepared.finish(
        signature_algorithm=RSA_SHA512_URI, signature=good, verification_cert=ec_keys["secp256r1"][1]))
    _expect("gconf.unsupported_algorithm", lambda: prepared.finish(
        signature_algorithm="urn:x", signature=good, verification_cert=cert))


@pytest.mark.parametrize("kwargs", [
    {"version": 1}, {"version": True}, {"expire_date": datetime(2030, 1, 1)},
    {"hash_algorithm": "urn:md5"},
    {"files": [("BAD ID", None, "/x", b"")]}, {"files": [("X", "E'E", "/x", b"")]},
    {"files": [("X", None, "/a b", b"")]}, {"files": [("X", None, "/x\r\nVersion: 9", b"")]},
    {"files": [("X", None, "/x", b"")] * (gdir.MAX_ENTRIES + 1)},
    {"boundary_source": lambda: "x"},  # a constant cannot be both the inner and the outer boundary
])
def test_build_rejects_bad_input(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"expire_date": datetime(2030, 1, 1, tzinfo=UTC), "version": 6, "files": _files()}
    args.update(kwargs)
    _expect("gconf.build_invalid", lambda: build_directory(**args))


def test_build_avoids_colliding_boundaries() -> None:
    files = [("X", None, "/--abc", b"")]
    prepared = build_directory(expire_date=datetime(2030, 1, 1, tzinfo=UTC), version=6, files=files,
                               boundary_source=_boundaries("abc", "not valid!", "inner1", "inner1", "outer1"))
    assert (prepared.inner_boundary, prepared.outer_boundary) == ("inner1", "outer1")


# --------------------------------------------------------------------------- anchors


def _globalconf_case(vectors: Path, case_id: str) -> dict[str, Any]:
    data = json.loads((vectors / "xroad/globalconf/expectations.json").read_text())
    case: dict[str, Any] = next(c for c in data["cases"] if c["id"] == case_id)
    return case


def test_read_anchor_v2(vectors: Path) -> None:
    case = _globalconf_case(vectors, "ConfigurationAnchorTest.readAnchorV2")
    anchor = parse_anchor((vectors / "xroad/globalconf" / case["input"]).read_bytes())
    expect = case["expect"]
    assert anchor.instance == expect["instance_identifier"]
    assert len(anchor.sources) == expect["source_count"]
    first = anchor.sources[0]
    assert first.download_url == expect["first_source_download_url"]
    assert anchor.generated_at is None
    for b64 in expect["first_source_cert_lookup"]["found"]:
        cert = first.find_cert(base64.b64decode(b64), SHA1_URI)
        assert cert is not None
        assert hashlib.sha1(cert.public_bytes(_DER)).digest() == base64.b64decode(b64)
    assert first.find_cert(b"\0" * 20, SHA1_URI) is None


def test_equals_anchor_v2(vectors: Path) -> None:
    case = _globalconf_case(vectors, "ConfigurationAnchorTest.equalsAnchorV2")
    first, second = (vectors / "xroad/globalconf" / name for name in case["input"])
    a1, a1_again, a2 = parse_anchor(first.read_bytes()), parse_anchor(first.read_bytes()), parse_anchor(
        second.read_bytes())
    assert (a1 == a1_again) is case["expect"]["equal"]["anchor1 vs anchor1 (read twice)"]
    assert (a1 == a2) is case["expect"]["equal"]["anchor1 vs anchor2"]
    assert hash(a1) == hash(a1_again)
    assert a2.sources[0].verification_certs == a1.sources[0].verification_certs


def test_anchor_equality_ignores_generated_at(internal_anchor: Anchor, rsa_key: tuple[Any, x509.Certificate]) -> None:
    later = Anchor(instance="DEV", generated_at=datetime(2030, 1, 1, tzinfo=UTC), sources=internal_anchor.sources)
    assert later == internal_anchor
    assert Anchor(instance="EE", generated_at=None, sources=internal_anchor.sources) != internal_anchor
    swapped = Anchor(instance="DEV", generated_at=None, sources=internal_anchor.sources[::-1])
    assert swapped != internal_anchor  # order of sources matters, as in X-Road
    other_cert = (AnchorSource(internal_anchor.sources[0].download_url, (rsa_key[1],)), internal_anchor.sources[1])
    assert Anchor(instance="DEV", generated_at=None, sources=other_cert) != internal_anchor


def test_internal_anchor(internal_anchor: Anchor) -> None:
    assert internal_anchor.generated_at == datetime(2025, 11, 5, 22, 10, 45, 770_000, tzinfo=UTC)
    assert [s.download_url for s in internal_anchor.sources] == ["http://cs/internalconf", "https://cs/internalconf"]
    assert len(internal_anchor.verification_certs) == 1  # the same certificate in both sources


def test_anchor_build_parse_round_trip(rsa_key: tuple[Any, x509.Certificate],
                                       ec_keys: dict[str, tuple[Any, x509.Certificate]],
                                       internal_anchor: Anchor) -> None:
    sources = [AnchorSource("http://cs/internalconf", (rsa_key[1], ec_keys["secp256r1"][1])),
               AnchorSource("https://cs/internalconf", (rsa_key[1],))]
    generated = datetime(2026, 3, 4, 5, 6, 7, 891_234, tzinfo=UTC)
    data = build_anchor("DEV", sources, generated)
    assert data.startswith(b'<?xml version=\'1.0\' encoding=\'UTF-8\' standalone=\'yes\'?>\n<ns3:configurationAnchor')
    anchor = parse_anchor(data)
    assert anchor == Anchor(instance="DEV", generated_at=None, sources=tuple(sources))
    assert anchor.generated_at == generated.replace(microsecond=891_000)
    again = build_anchor(internal_anchor.instance, internal_anchor.sources, datetime(2025, 1, 1, tzinfo=UTC))
    assert parse_anchor(again) == internal_anchor
    for bad in (("", sources), ("DEV", []), ("DEV", [AnchorSource("http://x", ())]), ("DEV\x00", sources)):
        _expect("gconf.build_invalid", lambda b=bad: build_anchor(b[0], b[1], generated))
    _expect("gconf.build_invalid", lambda: build_anchor("DEV", sources, datetime(2026, 1, 1)))


_ANCHOR_OK = (b'<tns:configurationAnchor xmlns:tns="http://x-road.eu/xsd/xroad.xsd"><instanceIdentifier>EE'
              b"</instanceIdentifier><source><downloadURL>http://x</downloadURL><verificationCert>@CERT"
              b"</verificationCert></source></tns:configurationAnchor>")


@pytest.mark.parametrize("document", [
    b"",
    b"not xml",
    b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]><a>&y;</a>',
    b'<!DOCTYPE a SYSTEM "http://example.invalid/evil.dtd"><a/>',
    b"<a>" * 1000 + b"</a>" * 1000,
    b'<conf xmlns="http://x-road.eu/xsd/xroad.xsd"/>',
    _ANCHOR_OK.replace(b"<tns:configurationAnchor", b"<tns:other").replace(b"</tns:configurationAnchor",
                                                                          b"</tns:other"),
    _ANCHOR_OK.replace(b"<source>", b"<sauce>").replace(b"</source>", b"</sauce>"),
    _ANCHOR_OK.replace(b"@CERT", b"YmFyCg=="),  # base64 of "bar\n", not a certificate (test-conf-detached)
    _ANCHOR_OK.replace(b"@CERT", b"!!!"),
    _ANCHOR_OK.replace(b"http://x", b""),
    _ANCHOR_OK.replace(b"EE", b" "),
    _ANCHOR_OK.replace(b"<instanceIdentifier>", b"<generatedAt>yesterday</generatedAt><instanceIdentifier>"),
    b"<a>" + b"x" * (1024 * 1024) + b"</a>",
])
def test_hostile_or_invalid_anchors(document: bytes) -> None:
    _expect("gconf.anchor_invalid", lambda: parse_anchor(document))


def test_anchor_template_is_valid(rsa_key: tuple[Any, x509.Certificate]) -> None:
    der = rsa_key[1].public_bytes(_DER)
    anchor = parse_anchor(_ANCHOR_OK.replace(b"@CERT", base64.b64encode(der)))
    assert anchor.sources[0].verification_certs == (rsa_key[1],)
    pem_b64 = base64.encodebytes(rsa_key[1].public_bytes(_PEM))  # base64 of PEM text, folded lines
    assert parse_anchor(_ANCHOR_OK.replace(b"@CERT", pem_b64)) == anchor


def test_cert_hash(rsa_key: tuple[Any, x509.Certificate]) -> None:
    cert = rsa_key[1]
    der = cert.public_bytes(_DER)
    assert cert_hash(cert, SHA1_URI) == hashlib.sha1(der).digest()
    assert cert_hash(cert, SHA256_URI) == hashlib.sha256(der).digest()
    assert cert_hash(cert, SHA512_URI) == hashlib.sha512(der).digest()
    _expect("gconf.unsupported_algorithm", lambda: cert_hash(cert, "http://www.w3.org/2001/04/xmldsig-more#md5"))


def test_reason_table_is_complete() -> None:
    for code in REASONS:
        assert code.startswith("gconf.")

