"""Unit tests of RFC 3161: protocols.tsp, hsm.tsa.TsaClient and gateway.devtsa (in memory)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import pytest_twisted
from asn1crypto import cms
from asn1crypto import tsp as asn1_tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from gateway.devtsa import DEV_POLICY_OID, TsaResource
from hsm.softkey import SoftwareDigestSigner
from hsm.tsa import TsaClient
from protocols import tsp
from protocols.errors import TimestampError

# ---------------------------------------------------------------------------------------------
# A small test PKI (also used by test_tsa_e2e.py)
# ---------------------------------------------------------------------------------------------

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
NOW = datetime.now(UTC).replace(microsecond=0)


def new_key(kind: str) -> PrivateKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_ca(name: str = "VDXP Test CA", key: PrivateKey | None = None) -> tuple[PrivateKey, x509.Certificate]:
    key = key or new_key("ec")
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"), x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_tsa_cert(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    key: PrivateKey,
    *,
    name: str = "VDXP Test TSA",
    eku: list[x509.ObjectIdentifier] | None = None,
    eku_critical: bool = True,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before or NOW - timedelta(days=1))
        .not_valid_after(not_after or NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False  # type: ignore[arg-type]
        )
    )
    if eku != []:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(eku or [ExtendedKeyUsageOID.TIME_STAMPING]), critical=eku_critical
        )
    return builder.sign(ca_key, hashes.SHA256())


@dataclass
class Tsa:
    ca_key: PrivateKey
    ca_cert: x509.Certificate
    key: PrivateKey
    cert: x509.Certificate
    signer: SoftwareDigestSigner
    mechanism: str


_KEYS: dict[str, PrivateKey] = {}


def cached_key(kind: str) -> PrivateKey:
    """RSA key generation is slow; share keys between tests (certificates stay per test)."""
    if kind not in _KEYS:
        _KEYS[kind] = new_key("ec" if kind.startswith("ec") else "rsa")
    return _KEYS[kind]


def make_tsa(mechanism: str = "rsa-pkcs1", key_slot: str | None = None, **cert_kw: object) -> Tsa:
    ca_key, ca_cert = make_ca(key=cached_key("ec-ca"))
    key = cached_key(key_slot or ("ec" if mechanism == "ecdsa" else "rsa"))
    cert = make_tsa_cert(ca_key, ca_cert, key, **cert_kw)  # type: ignore[arg-type]
    signer = SoftwareDigestSigner(key, mechanism if mechanism != "ecdsa" else None)
    return Tsa(ca_key, ca_cert, key, cert, signer, mechanism)


def issue(
    tsa: Tsa,
    request: bytes,
    *,
    serial: int = 42,
    gen_time: datetime | None = None,
    chain: tuple[x509.Certificate, ...] = (),
    hash_name: str = "sha256",
) -> bytes:
    """A TimeStampResp from our builder, signed synchronously."""
    profile = tsp.TsaProfile(tsa.cert, chain, policy_oid=DEV_POLICY_OID, hash_name=hash_name,
                             mechanism=tsa.signer.mechanism)
    prepared = profile.prepare(request, serial=serial, gen_time=gen_time or NOW)
    return prepared.finish(tsa.signer.sign_digest_sync(prepared.signed_attrs_digest, prepared.hash_name))


DATA = b"<ts-hashchainresult>...</ts-hashchainresult>"


def digest_of(data: bytes = DATA, hash_name: str = "sha512") -> bytes:
    return hashlib.new(hash_name, data).digest()


def expect_code(code: str, fn: Callable[[], object]) -> TimestampError:
    with pytest.raises(TimestampError) as info:
        fn()
    assert info.value.code == code, str(info.value)
    return info.value


@pytest.fixture(params=["rsa-pkcs1", "rsa-pss", "ecdsa"])
def any_tsa(request: pytest.FixtureRequest) -> Tsa:
    return make_tsa(request.param)


@pytest.fixture
def rsa_tsa() -> Tsa:
    return make_tsa("rsa-pkcs1")


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


def test_build_request_fields() -> None:
    der = tsp.build_request(digest_of(), "sha512", nonce=2**63 + 5, cert_req=True, policy="1.2.3.4")
    req = asn1_tsp.TimeStampReq.load(der, strict=True)
    assert req["version"].native == "v1"
    assert req["message_imprint"]["hash_algorithm"]["algorithm"].native == "sha512"
    assert req["message_imprint"]["hashed_message"].native == digest_of()
    assert req["nonce"].native == 2**63 + 5
    assert req["cert_req"].native is True
    assert req["req_policy"].dotted == "1.2.3.4"
    # asn1crypto re-encodes to the same bytes: our hand-written DER is canonical
    assert req.dump(force=True) == der


def test_build_request_minimal_and_errors() -> None:
    der = tsp.build_request(digest_of(hash_name="sha256"), "SHA-256", nonce=None, cert_req=False)
    req = asn1_tsp.TimeStampReq.load(der, strict=True)
    assert req["nonce"].native is None and req["cert_req"].native is False
    with pytest.raises(ValueError):
        tsp.build_request(b"short", "sha256", nonce=1)
    with pytest.raises(ValueError):
        tsp.build_request(digest_of(hash_name="md5"), "md5", nonce=1)


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_round_trip(any_tsa: Tsa, hash_name: str) -> None:
    digest = digest_of(hash_name=hash_name)
    resp = issue(any_tsa, tsp.build_request(digest, hash_name, nonce=7), serial=2**127 + 3)
    token = tsp.verify_response(resp, digest=digest, hash_name=hash_name, nonce=7, tsa_certs=[any_tsa.cert],
                                at=NOW)
    assert token.gen_time == NOW
    assert token.serial == 2**127 + 3
    assert token.policy == DEV_POLICY_OID
    assert token.hash_name == hash_name
    assert token.imprint == digest
    assert token.nonce == 7
    assert token.signer_cert == any_tsa.cert
    # the stored token verifies offline on its own
    again = tsp.verify_token(token.token_der, digest=digest, hash_name=hash_name, tsa_certs=[any_tsa.cert])
    assert again.serial == token.serial
    # and our DER is what asn1crypto would write
    parsed = cms.ContentInfo.load(token.token_der)
    assert parsed.dump(force=True) == token.token_der
    signer_info = parsed["content"]["signer_infos"][0]
    attr_types = [a["type"].native for a in signer_info["signed_attrs"]]
    assert sorted(attr_types) == ["content_type", "message_digest", "signing_certificate_v2"]
    expected_alg = {"rsa-pkcs1": "rsassa_pkcs1v15", "rsa-pss": "rsassa_pss", "ecdsa": "sha256_ecdsa"}
    assert signer_info["signature_algorithm"]["algorithm"].native == expected_alg[any_tsa.mechanism]


def test_fractional_gen_time_and_chain(rsa_tsa: Tsa) -> None:
    gen = NOW + timedelta(microseconds=250000)
    digest = digest_of()
    resp = issue(rsa_tsa, tsp.build_request(digest, "sha512", nonce=1), gen_time=gen, chain=(rsa_tsa.ca_cert,))
    token = tsp.verify_response(resp, digest=digest, hash_name="sha512", nonce=1, tsa_certs=[rsa_tsa.cert])
    assert token.gen_time == gen
    certs = cms.ContentInfo.load(token.token_der)["content"]["certificates"]
    assert len(certs) == 2


def test_without_cert_req_and_nonce(rsa_tsa: Tsa) -> None:
    digest = digest_of()
    resp = issue(rsa_tsa, tsp.build_request(digest, "sha512", nonce=None, cert_req=False))
    token = tsp.verify_response(resp, digest=digest, hash_name="sha512", nonce=None, tsa_certs=[rsa_tsa.cert])
    assert token.nonce is None
    assert isinstance(cms.ContentInfo.load(token.token_der)["content"]["certificates"].native, type(None))


def test_signer_found_among_several(rsa_tsa: Tsa) -> None:
    other = make_tsa("ecdsa", name="Other TSA")
    digest = digest_of()
    resp = issue(rsa_tsa, tsp.build_request(digest, "sha512", nonce=3))
    token = tsp.verify_response(resp, digest=digest, hash_name="sha512", nonce=3,
                                tsa_certs=[other.cert, rsa_tsa.cert])
    assert token.signer_cert == rsa_tsa.cert


def test_build_is_fast(rsa_tsa: Tsa) -> None:
    """PLATFORM-NOTES §4: asn1crypto re-encoding cost ~20 ms per token; we aim < 2 ms."""
    profile = tsp.TsaProfile(rsa_tsa.cert, (rsa_tsa.ca_cert,), policy_oid=DEV_POLICY_OID)
    request = tsp.build_request(digest_of(), "sha512", nonce=99)
    signature = b"\x01" * 256
    rounds = 200
    started = time.perf_counter()
    for i in range(rounds):
        profile.prepare(request, serial=i + 1, gen_time=NOW).finish(signature)
    per_token_ms = (time.perf_counter() - started) * 1000 / rounds
    print(f"prepare+finish: {per_token_ms:.3f} ms per token")
    assert per_token_ms < 10  # wide margin for noisy CI machines; typically well under 1 ms


# ---------------------------------------------------------------------------------------------
# Failure paths
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def good(rsa_tsa: Tsa) -> tuple[Tsa, bytes, bytes]:
    digest = digest_of()
    return rsa_tsa, digest, issue(rsa_tsa, tsp.build_request(digest, "sha512", nonce=11))


def _verify(tsa: Tsa, resp: bytes, digest: bytes, **kw: object) -> Callable[[], object]:
    args: dict[str, object] = {"digest": digest, "hash_name": "sha512", "nonce": 11, "tsa_certs": [tsa.cert]}
    args.update(kw)
    return lambda: tsp.verify_response(resp, **args)  # type: ignore[arg-type]


def test_tampered_tst_info(good: tuple[Tsa, bytes, bytes]) -> None:
    tsa, digest, resp = good
    gen = NOW.strftime("%Y%m%d%H%M%SZ").encode()
    assert resp.count(gen) == 1
    later = (NOW + timedelta(hours=1)).strftime("%Y%m%d%H%M%SZ").encode()
    err = expect_code("tsa.signature_invalid", _verify(tsa, resp.replace(gen, later), digest))
    assert "message-digest" in err.message


def test_tampered_signature(good: tuple[Tsa, bytes, bytes]) -> None:
    tsa, digest, resp = good
    flipped = resp[:-5] + bytes([resp[-5] ^ 0x01]) + resp[-4:]
    expect_code("tsa.signature_invalid", _verify(tsa, flipped, digest))


def test_wrong_nonce(good: tuple[Tsa, bytes, bytes]) -> None:
    tsa, digest, resp = good
    expect_code("tsa.nonce_mismatch", _verify(tsa, resp, digest, nonce=12))
    expect_code("tsa.nonce_mismatch", _verify(tsa, resp, digest, nonce=None))


def test_missing_nonce_in_response(rsa_tsa: Tsa) -> None:
    digest = digest_of()
    resp = issue(rsa_tsa, tsp.build_request(digest, "sha512", nonce=None))
    expect_code("tsa.nonce_mismatch", _verify(rsa_tsa, resp, digest, nonce=11))


def test_wrong_imprint(good: tuple[Tsa, bytes, bytes]) -> None:
    tsa, digest, resp = good
    expect_code("tsa.imprint_mismatch", _verify(tsa, resp, digest_of(b"other data")))
    expect_code("tsa.imprint_mismatch", _verify(tsa, resp, digest[:32], hash_name="sha256"))


def test_wrong_tsa_cert(good: tuple[Tsa, bytes, bytes]) -> None:
    tsa, digest, resp = good
    other = make_tsa("ecdsa", name="Other TSA")
    expect_code("tsa.unknown_signer", _verify(tsa, resp, digest, tsa_certs=[other.cert]))
    expect_code("tsa.unknown_signer", _verify(tsa, resp, digest, tsa_certs=[]))


def test_same_key_other_certificate(good: tuple[Tsa, bytes, bytes]) -> None:
    """A certificate with the same key, issuer and name but another serial is not the signer."""
    tsa, digest, resp = good
    twin = make_tsa_cert(tsa.ca_key, tsa.ca_cert, tsa.key)
    expect_code("tsa.unknown_signer", _verify(tsa, resp, digest, tsa_certs=[twin]))


def test_ess_cert_id_must_match(good: tuple[Tsa, bytes, bytes]) -> None:
    """Same issuer and serial (the SignerIdentifier matches) but another certificate: the
    ESSCertIDv2 hash tells them apart."""
    tsa, digest, resp = good
    lookalike = make_tsa_cert(tsa.ca_key, tsa.ca_cert, tsa.key, serial=tsa.cert.serial_number,
                              not_after=NOW + timedelta(days=31))
    expect_code("tsa.unknown_signer", _verify(tsa, resp, digest, tsa_certs=[lookalike]))


def test_signer_by_subject_key_identifier(good: tuple[Tsa, bytes, bytes]) -> None:
    tsa, digest, resp = good
    ci = cms.ContentInfo.load(tsp.verify_response(resp, digest=digest, hash_name="sha512", nonce=11,
                                                  tsa_certs=[tsa.cert]).token_der)
    signer_info = ci["content"]["signer_infos"][0]
    ski = tsa.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    signer_info["sid"] = cms.SignerIdentifier({"subject_key_identifier": ski})
    signer_info["version"] = "v3"
    token_der = ci.dump(force=True)
    token = tsp.verify_token(token_der, digest=digest, hash_name="sha512", tsa_certs=[tsa.cert])
    assert token.signer_cert == tsa.cert
    other = make_tsa("ecdsa", name="Other TSA")
    expect_code("tsa.unknown_signer", lambda: tsp.verify_token(
        token_der, digest=digest, hash_name="sha512", tsa_certs=[other.cert]))


def test_mutations_only_raise_timestamp_errors(good: tuple[Tsa, bytes, bytes]) -> None:
    """Flip random bytes of a good response: the verifier either accepts (a byte of an
    unsigned part such as an embedded certificate) or raises a TimestampError, never
    anything else."""
    import random

    tsa, digest, resp = good
    rnd = random.Random(3161)
    codes: set[str] = set()
    for _ in range(400):
        mutated = bytearray(resp)
        for _ in range(rnd.choice((1, 1, 2, 5))):
            mutated[rnd.randrange(len(mutated))] = rnd.randrange(256)
        try:
            tsp.verify_response(bytes(mutated), digest=digest, hash_name="sha512", nonce=11, tsa_certs=[tsa.cert])
        except TimestampError as exc:
            codes.add(exc.code)
    assert {"tsa.malformed", "tsa.signature_invalid"} <= codes


def test_query_mutations_only_raise_rejections(rsa_tsa: Tsa) -> None:
    import random

    profile = tsp.TsaProfile(rsa_tsa.cert, policy_oid=DEV_POLICY_OID)
    query = tsp.build_request(digest_of(), "sha512", nonce=2**60, policy=DEV_POLICY_OID)
    rnd = random.Random(3161)
    for _ in range(400):
        mutated = bytearray(query)
        mutated[rnd.randrange(len(mutated))] = rnd.randrange(256)
        try:
            profile.prepare(bytes(mutated), serial=1, gen_time=NOW)
        except tsp.TimestampQueryRejected:
            pass


@pytest.mark.parametrize(
    ("eku", "critical", "words"),
    [
        ([], True, "no extended key usage"),
        (None, False, "not critical"),
        ([ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.CLIENT_AUTH], True, "timeStamping only"),
    ],
)
def test_bad_eku(
    monkeypatch: pytest.MonkeyPatch, eku: list[x509.ObjectIdentifier] | None, critical: bool, words: str
) -> None:
    tsa = make_tsa("rsa-pkcs1", eku=eku, eku_critical=critical)
    # our own TSA refuses such a certificate ...
    expect_code("tsa.certificate_invalid", lambda: tsp.TsaProfile(tsa.cert, policy_oid=DEV_POLICY_OID))
    # ... so make a token with the check switched off, to exercise the verifier
    with monkeypatch.context() as m:
        m.setattr(tsp, "check_tsa_certificate", lambda *a, **k: None)
        digest = digest_of()
        resp = issue(tsa, tsp.build_request(digest, "sha512", nonce=11))
    err = expect_code("tsa.certificate_invalid", _verify(tsa, resp, digest))
    assert words in err.message


def test_gen_time_outside_validity(rsa_tsa: Tsa) -> None:
    digest = digest_of()
    resp = issue(rsa_tsa, tsp.build_request(digest, "sha512", nonce=11), gen_time=NOW - timedelta(days=10))
    err = expect_code("tsa.certificate_invalid", _verify(rsa_tsa, resp, digest))
    assert "genTime" in err.message


def test_certificate_expired_at_check_time(good: tuple[Tsa, bytes, bytes]) -> None:
    tsa, digest, resp = good
    expect_code("tsa.certificate_invalid", _verify(tsa, resp, digest, at=NOW + timedelta(days=400)))
    tsp.verify_response(resp, digest=digest, hash_name="sha512", nonce=11, tsa_certs=[tsa.cert], at=NOW)


def test_rejected_status() -> None:
    resp = tsp.rejection("rejection", "bad_alg", "hash not supported")
    err = expect_code("tsa.rejected", lambda: tsp.verify_response(
        resp, digest=digest_of(), hash_name="sha512", nonce=1, tsa_certs=[]))
    assert "rejection" in err.message and "bad_alg" in err.message and "hash not supported" in err.message
    waiting = tsp.rejection("waiting")
    err = expect_code("tsa.rejected", lambda: tsp.verify_response(
        waiting, digest=digest_of(), hash_name="sha512", nonce=1, tsa_certs=[]))
    assert "waiting" in err.message


def test_granted_without_token() -> None:
    resp = tsp.rejection("granted")
    expect_code("tsa.malformed", lambda: tsp.verify_response(
        resp, digest=digest_of(), hash_name="sha512", nonce=1, tsa_certs=[]))


@pytest.mark.parametrize("cut", [1, 10, 100, 500, -1])
def test_truncated(good: tuple[Tsa, bytes, bytes], cut: int) -> None:
    tsa, digest, resp = good
    expect_code("tsa.malformed", _verify(tsa, resp[:cut], digest))


@pytest.mark.parametrize("blob", [b"", b"\x30", os.urandom(64), os.urandom(2000), b"\x30\x03\x02\x01\x00extra"])
def test_garbage(rsa_tsa: Tsa, blob: bytes) -> None:
    expect_code("tsa.malformed", _verify(rsa_tsa, blob, digest_of()))
    expect_code("tsa.malformed", lambda: tsp.verify_token(blob, digest=digest_of(), hash_name="sha512",
                                                          tsa_certs=[rsa_tsa.cert]))


def test_token_that_is_not_a_timestamp(rsa_tsa: Tsa) -> None:
    data = cms.ContentInfo({"content_type": "data", "content": b"hello"}).dump()
    err = expect_code("tsa.malformed", lambda: tsp.verify_token(
        data, digest=digest_of(), hash_name="sha512", tsa_certs=[rsa_tsa.cert]))
    assert "signedData" in err.message


# ---------------------------------------------------------------------------------------------
# The TSA side: query checks
# ---------------------------------------------------------------------------------------------


def _rejected(tsa: Tsa, query: bytes) -> tsp.TimestampQueryRejected:
    profile = tsp.TsaProfile(tsa.cert, policy_oid=DEV_POLICY_OID)
    with pytest.raises(tsp.TimestampQueryRejected) as info:
        profile.prepare(query, serial=1, gen_time=NOW)
    return info.value


def test_prepare_rejections(rsa_tsa: Tsa) -> None:
    assert _rejected(rsa_tsa, b"garbage").fail_info == "bad_data_format"
    assert _rejected(rsa_tsa, tsp.build_request(digest_of(hash_name="sha1"), "sha1", nonce=1)).fail_info == "bad_alg"
    assert _rejected(rsa_tsa, tsp.build_request(digest_of(), "sha512", nonce=1, policy="1.2.3")).fail_info == (
        "unaccepted_policy"
    )
    req = asn1_tsp.TimeStampReq({
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": b"\x00" * 31},
    }).dump()
    assert _rejected(rsa_tsa, req).fail_info == "bad_data_format"
    md5 = asn1_tsp.TimeStampReq({
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "md5"}, "hashed_message": b"\x00" * 16},
    }).dump()
    assert _rejected(rsa_tsa, md5).fail_info == "bad_alg"
    ext = asn1_tsp.TimeStampReq({
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": b"\x00" * 32},
        "extensions": [{"extn_id": "1.2.3.4", "extn_value": b"x"}],
    }).dump()
    assert _rejected(rsa_tsa, ext).fail_info == "unaccepted_extensions"


def test_own_policy_accepted(rsa_tsa: Tsa) -> None:
    digest = digest_of()
    resp = issue(rsa_tsa, tsp.build_request(digest, "sha512", nonce=5, policy=DEV_POLICY_OID))
    assert tsp.verify_response(resp, digest=digest, hash_name="sha512", nonce=5, tsa_certs=[rsa_tsa.cert])


def test_prepare_response_one_shot(any_tsa: Tsa) -> None:
    digest = digest_of()
    prepared = tsp.prepare_response(
        tsp.build_request(digest, "sha512", nonce=8), tsa_cert=any_tsa.cert, chain=(), serial=9, gen_time=NOW,
        policy_oid="1.2.3.4.5", hash_name="sha384", mechanism=any_tsa.signer.mechanism,
    )
    assert prepared.hash_name == "sha384" and len(prepared.signed_attrs_digest) == 48
    resp = prepared.finish(any_tsa.signer.sign_digest_sync(prepared.signed_attrs_digest, "sha384"))
    token = tsp.verify_response(resp, digest=digest, hash_name="sha512", nonce=8, tsa_certs=[any_tsa.cert])
    assert token.policy == "1.2.3.4.5"


# ---------------------------------------------------------------------------------------------
# The development TSA resource and the client, in memory
# ---------------------------------------------------------------------------------------------


class _Serials:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n


def _resource(tsa: Tsa, clock: Clock, signer: object | None = None) -> TsaResource:
    return TsaResource(signer or tsa.signer, tsa.cert, (tsa.ca_cert,), clock,  # type: ignore[arg-type]
                       serial_source=_Serials())


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(time.time())
    return c


def _result(d: Deferred[object]) -> object:
    results: list[object] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    return results[0]


def _post(stub: StubTreq, body: bytes, content_type: str = "application/timestamp-query",
          method: str = "POST") -> tuple[int, bytes, str]:
    d = stub.request(method, "http://tsa.test/", data=body, headers={"Content-Type": [content_type]})
    stub.flush()
    response = _result(d)
    assert not isinstance(response, BaseException)
    content_d = response.content()  # type: ignore[attr-defined]
    stub.flush()
    content = _result(content_d)
    ctype = response.headers.getRawHeaders(b"content-type", [b""])[0].decode()  # type: ignore[attr-defined]
    return response.code, content, ctype  # type: ignore[attr-defined,return-value]


@pytest.mark.parametrize("mechanism", ["rsa-pkcs1", "rsa-pss", "ecdsa"])
def test_resource_issues_tokens(clock: Clock, mechanism: str) -> None:
    tsa = make_tsa(mechanism)
    stub = StubTreq(_resource(tsa, clock))
    digest = digest_of()
    code, body, ctype = _post(stub, tsp.build_request(digest, "sha512", nonce=77))
    assert code == 200 and ctype == "application/timestamp-reply"
    token = tsp.verify_response(body, digest=digest, hash_name="sha512", nonce=77, tsa_certs=[tsa.cert])
    assert token.serial == 1
    assert abs((token.gen_time - datetime.fromtimestamp(clock.seconds(), UTC)).total_seconds()) < 1
    code, body, _ = _post(stub, tsp.build_request(digest, "sha512", nonce=78))
    assert tsp.verify_response(body, digest=digest, hash_name="sha512", nonce=78, tsa_certs=[tsa.cert]).serial == 2


def _reject_info(body: bytes) -> tuple[str, set[str]]:
    status = asn1_tsp.PKIStatusInfo.load(body[2:] if body[1] < 0x80 else body[3:])
    return status["status"].native, set(status["fail_info"].native or ())


def test_resource_rejections(clock: Clock, rsa_tsa: Tsa) -> None:
    stub = StubTreq(_resource(rsa_tsa, clock))
    code, body, ctype = _post(stub, b"not a query")
    assert code == 200 and ctype == "application/timestamp-reply"
    assert _reject_info(body) == ("rejection", {"bad_data_format"})
    expect_code("tsa.rejected", lambda: tsp.verify_response(body, digest=digest_of(), hash_name="sha512", nonce=1,
                                                            tsa_certs=[rsa_tsa.cert]))
    code, body, _ = _post(stub, tsp.build_request(digest_of(hash_name="sha1"), "sha1", nonce=1))
    assert _reject_info(body) == ("rejection", {"bad_alg"})


def test_resource_http_errors(clock: Clock, rsa_tsa: Tsa) -> None:
    stub = StubTreq(_resource(rsa_tsa, clock))
    query = tsp.build_request(digest_of(), "sha512", nonce=1)
    assert _post(stub, query, method="GET")[0] == 405
    assert _post(stub, query, method="PUT")[0] == 405
    assert _post(stub, query, content_type="application/octet-stream")[0] == 415
    assert _post(stub, b"\x30" * (64 * 1024 + 1))[0] == 413


class _FailingSigner:
    key_type = "rsa"
    mechanism = "rsa-pkcs1"

    async def sign_digest(self, digest: bytes, hash_name: str) -> bytes:
        raise RuntimeError("token removed")


def test_resource_signer_failure(clock: Clock, rsa_tsa: Tsa) -> None:
    stub = StubTreq(_resource(rsa_tsa, clock, _FailingSigner()))
    code, body, _ = _post(stub, tsp.build_request(digest_of(), "sha512", nonce=1))
    assert code == 200
    assert _reject_info(body) == ("rejection", {"system_failure"})


class _SlowSigner:
    """Never answers until told to: exercises the resource's signing timeout."""

    key_type = "rsa"
    mechanism = "rsa-pkcs1"

    def __init__(self) -> None:
        self.pending: list[Deferred[bytes]] = []

    async def sign_digest(self, digest: bytes, hash_name: str) -> bytes:
        d: Deferred[bytes] = Deferred()
        self.pending.append(d)
        return await d


def test_resource_signer_timeout(clock: Clock, rsa_tsa: Tsa) -> None:
    signer = _SlowSigner()
    stub = StubTreq(_resource(rsa_tsa, clock, signer))
    d = stub.post("http://tsa.test/", data=tsp.build_request(digest_of(), "sha512", nonce=1),
                  headers={"Content-Type": ["application/timestamp-query"]})
    stub.flush()
    early: list[object] = []
    d.addBoth(early.append)
    assert signer.pending and not early
    clock.advance(11)
    stub.flush()
    response = early[0]
    content_d = response.content()  # type: ignore[attr-defined]
    stub.flush()
    assert _reject_info(_result(content_d)) == ("rejection", {"system_failure"})  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_client_against_resource(clock: Clock) -> None:
    tsa = make_tsa("ecdsa")
    client = TsaClient(StubTreq(_resource(tsa, clock)), clock, "http://tsa.test/", [tsa.cert])
    digest = digest_of()
    token = await client.timestamp(digest, "sha512")
    assert token.imprint == digest and token.hash_name == "sha512"
    with pytest.raises(TimestampError) as info:
        await client.timestamp(digest_of(hash_name="sha1"), "sha1")
    assert info.value.code == "tsa.rejected" and "bad_alg" in info.value.message


class _Static(Resource):
    isLeaf = True

    def __init__(self, code: int, body: bytes, content_type: bytes = b"application/timestamp-reply") -> None:
        super().__init__()
        self.code, self.body, self.content_type = code, body, content_type

    def render_POST(self, request: object) -> bytes:
        request.setResponseCode(self.code)  # type: ignore[attr-defined]
        request.setHeader(b"content-type", self.content_type)  # type: ignore[attr-defined]
        return self.body


@pytest.mark.parametrize(
    ("resource", "code"),
    [
        (_Static(200, b"garbage"), "tsa.malformed"),
        (_Static(500, b"boom"), "tsa.http_error"),
        (_Static(200, tsp.rejection("rejection", "system_failure", "down")), "tsa.rejected"),
        (_Static(200, b"<html>", b"text/html"), "tsa.http_error"),
        (_Static(200, b"\x30" * ((1 << 20) + 1)), "tsa.response_too_large"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_client_error_codes(clock: Clock, rsa_tsa: Tsa, resource: Resource, code: str) -> None:
    client = TsaClient(StubTreq(resource), clock, "http://tsa.test/", [rsa_tsa.cert])
    with pytest.raises(TimestampError) as info:
        await client.timestamp(digest_of(), "sha512")
    assert info.value.code == code, str(info.value)


def test_client_timeout_on_fake_clock(rsa_tsa: Tsa) -> None:
    clock = Clock()
    signer = _SlowSigner()
    stub = StubTreq(_resource(rsa_tsa, clock, signer))
    client = TsaClient(stub, clock, "http://tsa.test/", [rsa_tsa.cert], timeout_seconds=2)
    d = Deferred.fromCoroutine(client.timestamp(digest_of(), "sha512"))
    stub.flush()
    early: list[object] = []
    d.addBoth(early.append)
    assert not early
    clock.advance(2)
    failure = early[0]
    assert isinstance(failure.value, TimestampError)  # type: ignore[attr-defined]
    assert failure.value.code == "tsa.timeout"  # type: ignore[attr-defined]
