"""X-Road signature verification: every case of signatures/expectations.json, then signatures we make."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lxml import etree

from gateway.globalconf.disk import read_conf_dir
from protocols import ocsp
from protocols.certprofile import (
    BASIC_PROFILE_CLASS,
    BASIC_VN,
    FIVRK_PROFILE_CLASS,
    TEST_PROFILE_CLASS,
    FiVRKProfile,
    MemberId,
    SignCertProfile,
    TestProfile,
    sign_profile_for_class,
)
from protocols.errors import CertificateError, SignatureError, VdxpError
from protocols.gconf.params import (
    ApprovedCa,
    ClientId,
    Member,
    OcspInfo,
    SharedParameters,
)
from protocols.hashchain import SHA512_URI, build_batch
from protocols.sigverify import (
    SignedPart,
    VerificationCache,
    VerifiedSignature,
    parse_signature_document,
    verify_signature,
)
from protocols.xades import MIME_HASH_CHAIN_RESULT, MIME_TEXT_XML, prepare_signature
from protocols.xroad.ids import ClientId as WireClientId

# --------------------------------------------------------------------------- the X-Road vectors

XROAD = Path(__file__).resolve().parent / "vectors" / "xroad"
SIGS = XROAD / "signatures"
EXPECTATIONS: dict[str, Any] = json.loads((SIGS / "expectations.json").read_text())
CASES: list[dict[str, Any]] = EXPECTATIONS["cases"]


def _trusted_pem(path: Path) -> x509.Certificate:
    """A certificate from OpenSSL's ``TRUSTED CERTIFICATE`` PEM (DER certificate + trust info)."""
    body = b"".join(line for line in path.read_bytes().splitlines() if not line.startswith(b"-----"))
    der = base64.b64decode(body)
    assert der[:2] == b"\x30\x82"
    return x509.load_der_x509_certificate(der[: int.from_bytes(der[2:4], "big") + 4])


@pytest.fixture(scope="module")
def confs() -> dict[str, SharedParameters]:
    out = {}
    for name, spec in EXPECTATIONS["configurations"].items():
        installed = read_conf_dir((SIGS / spec["globalconf_dir"]).resolve())
        out[name] = installed.shared[name]
    return out


ROOT_CA = _trusted_pem(XROAD / "test-pki" / "root-ca.pem")


def _test_profiles(class_name: str) -> SignCertProfile:
    return sign_profile_for_class(class_name, allow_test=True)


def _at(text: str | None) -> datetime | None:
    """The expectations' validation time (local midnight of the JVM; this machine's clock zone is
    irrelevant to the windows, which are days wide: taken as UTC)."""
    if text is None or text == "null":
        return None
    return datetime.fromisoformat(text.split(" ")[0]).replace(tzinfo=UTC)


def _digest_of(spec: dict[str, Any]) -> bytes:
    if "digest_bytes_utf8" in spec:
        return str(spec["digest_bytes_utf8"]).encode()
    text = str(spec["digest"])
    if text == "SHA-512 of the single byte 0x01":
        return hashlib.sha512(b"\x01").digest()
    assert text.startswith("SHA-512 of "), text
    return hashlib.sha512((SIGS / text.removeprefix("SHA-512 of ")).read_bytes()).digest()


def _parts(case: dict[str, Any]) -> list[SignedPart]:
    out = []
    for spec in case.get("parts", []):
        if "data_utf8" in spec:
            data: bytes | None = str(spec["data_utf8"]).encode()
        elif spec.get("data"):
            data = (SIGS / spec["data"]).read_bytes()
        else:
            data = None
        out.append(SignedPart(spec["name"], digest=_digest_of(spec), data=data, digest_method=spec["digest_method"]))
    return out


def _resolver(case: dict[str, Any]) -> Callable[[str], bytes | None] | None:
    mapping = case.get("hash_chain_resolver")
    if mapping is None:
        return None

    def resolve(uri: str) -> bytes | None:
        value: Any = mapping.get(uri)
        if uri == "*" or value is None:
            return None  # "*": unresolvable
        if isinstance(value, dict):
            return str(value["bytes_utf8"]).encode()
        return (SIGS / str(value)).read_bytes()

    return resolve


def _signer(case: dict[str, Any]) -> ClientId:
    text = str(case.get("signer", "null")).split(" (")[0]
    assert case.get("signer", "null") == "null" or case["signer"].endswith("(MEMBER)")
    # upstream passes null only to cases that fail before the signer is used
    return ClientId.parse(text) if text != "null" else ClientId("EE", "NULL", "NULL")


def _run_case(case: dict[str, Any], confs: dict[str, SharedParameters]) -> VerifiedSignature:
    data = (SIGS / case["signature"]).read_bytes()
    if case.get("phase") == "parsing the signature document":
        parse_signature_document(data)  # must raise: upstream fails while constructing the verifier
        raise AssertionError("parsing should have failed")
    conf_name = case["configuration"]
    # EE: upstream's getCaCert answers root-ca.pem for every certificate (ca_override)
    ca_lookup = (lambda cert: ROOT_CA) if conf_name == "EE" else None
    hcr = (SIGS / case["hash_chain_result"]).read_bytes() if case.get("hash_chain_result") else None
    return verify_signature(data, signer=_signer(case), conf=confs[conf_name], at=_at(case.get("validation_time")),
                            parts=_parts(case), hash_chain_result=hcr, hash_chain_resolver=_resolver(case),
                            ca_lookup=ca_lookup, profile_resolver=_test_profiles)


def _code_matches(code: str | None, expected: str, match: str) -> bool:
    assert code is not None
    if match == "exact":
        return code == expected
    if match == "suffix":
        return code.endswith(expected)
    if match == "prefix":
        return code.startswith(expected)
    assert match == "message_contains"
    return expected in code


def test_expectations_cover_every_signature_case() -> None:
    assert len(CASES) == 18
    assert {c["expect"]["result"] for c in CASES} == {"ok", "error"}


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_vector_case(case: dict[str, Any], confs: dict[str, SharedParameters]) -> None:
    expect = case["expect"]
    if expect["result"] == "ok":
        result = _run_case(case, confs)
        assert str(result.member) == case["signer"].split(" (")[0]
        assert len(result.ocsp) == 1 and result.ocsp[0].is_good
        return
    with pytest.raises(VdxpError) as info:
        _run_case(case, confs)
    err = info.value
    assert isinstance(err, SignatureError | CertificateError)
    assert _code_matches(err.xroad_code, expect["code_7_7"], expect["match"]), (err.xroad_code, str(err))
    if case.get("phase") != "parsing the signature document":
        # the document itself is readable; the failure belongs to verify()
        parse_signature_document((SIGS / case["signature"]).read_bytes())


def _vector(case_id: str) -> dict[str, Any]:
    return next(c for c in CASES if c["id"] == case_id)


def test_vector_details(confs: dict[str, SharedParameters]) -> None:
    batch = _run_case(_vector("verifyValidSignatureHashChain"), confs)
    assert batch.batch and batch.references == ("/sig-hashchainresult.xml", "#signed-properties")
    old = _run_case(_vector("verifyValidBackwardCompatibleSignature"), confs)
    assert old.chain[-1] == ROOT_CA and not old.batch
    rest = _run_case(_vector("NonBatchSignature.verifyValid"), confs)
    assert rest.references[:2] == ("/message.xml", "/attachment1")
    assert rest.ca.name == "Test CA" and str(rest.member) == "DEV/COM/4321"


def _parse_window(text: str) -> tuple[datetime, datetime]:
    start, end = text.split(" (")[0].split(" .. ")
    return (datetime.fromisoformat(start.replace("Z", "+00:00")), datetime.fromisoformat(end.replace("Z", "+00:00")))


WINDOWS = EXPECTATIONS["clock"]["valid_windows_derived"]


@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_valid_window_edges(name: str, confs: dict[str, SharedParameters]) -> None:
    """Valid exactly inside the derived window; before it the signing certificate is not yet
    valid, after it the OCSP response is too old (ocspFreshnessSeconds)."""
    case = next(c for c in CASES if c["signature"] == name and c["expect"]["result"] == "ok")
    start, end = _parse_window(WINDOWS[name])
    for at in (start, end):
        _run_case({**case, "validation_time": at.isoformat()}, confs)
    with pytest.raises(CertificateError) as before:
        _run_case({**case, "validation_time": (start - timedelta(seconds=1)).isoformat()}, confs)
    assert before.value.code == "cert.expired" and before.value.xroad_code == "CannotCreateCertPath"
    with pytest.raises(CertificateError) as after:
        _run_case({**case, "validation_time": (end + timedelta(seconds=1)).isoformat()}, confs)
    assert after.value.code == "cert.ocsp_invalid"
    assert after.value.xroad_code == "InvalidCertPath.IncorrectValidationInfo"


def test_vectors_fail_against_today(confs: dict[str, SharedParameters]) -> None:
    """The test PKI expired in 2024: the date must be pinned (clock.expired_material)."""
    with pytest.raises(CertificateError) as info:
        _run_case({**_vector("verifyValidSignature"), "validation_time": "2025-06-01T00:00:00"}, confs)
    assert info.value.code == "cert.expired"


def test_vector_without_ca_override(confs: dict[str, SharedParameters]) -> None:
    """sign-0.xml's certificate is issued by pki1's top CA: the lookup through global
    configuration finds the same CA as upstream's override."""
    case = _vector("verifyValidSignature")
    result = verify_signature((SIGS / "sign-0.xml").read_bytes(), signer=_signer(case), conf=confs["EE"],
                              at=_at(case["validation_time"]), parts=_parts(case), profile_resolver=_test_profiles)
    assert result.ca.name == "pki1" and result.chain == (result.signing_cert, ROOT_CA)


def test_test_profile_only_on_request(confs: dict[str, SharedParameters]) -> None:
    case = _vector("verifyValidSignature")
    with pytest.raises(CertificateError) as info:
        verify_signature((SIGS / "sign-0.xml").read_bytes(), signer=_signer(case), conf=confs["EE"],
                         at=_at(case["validation_time"]), parts=_parts(case))
    assert info.value.code == "cert.profile_unknown"


def test_vector_with_wire_client_id_and_subsystem(confs: dict[str, SharedParameters]) -> None:
    """The signer may be a subsystem (request client) in either identifier type: the member part counts."""
    case = _vector("NonBatchSignature.verifyValid")
    for signer in (WireClientId("DEV", "COM", "4321", "TestClient"), ClientId("DEV", "COM", "4321", "TestClient")):
        verify_signature((SIGS / case["signature"]).read_bytes(), signer=signer, conf=confs["DEV"],
                         at=_at(case["validation_time"]), parts=_parts(case))


def test_vector_hash_chain_tampered(confs: dict[str, SharedParameters]) -> None:
    case = _vector("verifyValidSignatureHashChain")
    resolver = _resolver(case)
    assert resolver is not None

    def other_attachment(uri: str) -> bytes | None:
        return b"blaaH" if uri == "/attachment1" else resolver(uri)

    with pytest.raises(SignatureError) as info:
        verify_signature((SIGS / "batch-sig.xml").read_bytes(), signer=_signer(case), conf=confs["EE"],
                         at=_at(case["validation_time"]),
                         hash_chain_result=(SIGS / "hash-chain-result.xml").read_bytes(),
                         hash_chain_resolver=other_attachment, ca_lookup=lambda c: ROOT_CA,
                         profile_resolver=_test_profiles)
    assert info.value.xroad_code == "MalformedSignature.InvalidHashChainRef"


# --------------------------------------------------------------------------- certificate profiles


def _cert_with(subject: x509.Name) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))


def _n(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])


def test_fivrk_profile() -> None:
    p = FiVRKProfile()
    cert = _cert_with(_n((NameOID.COUNTRY_NAME, "FI"), (NameOID.ORGANIZATION_NAME, "Org"),
                         (NameOID.SERIAL_NUMBER, "FI/SS1/GOV"), (NameOID.COMMON_NAME, "0245437-2")))
    assert p.member_from_sign_cert(cert, "ignored") == MemberId("FI", "GOV", "0245437-2")
    legacy = _cert_with(_n((NameOID.COUNTRY_NAME, "FI"), (NameOID.ORGANIZATION_NAME, "FI-TEST"),
                           (NameOID.ORGANIZATIONAL_UNIT_NAME, "COM"), (NameOID.COMMON_NAME, "123")))
    assert p.member_from_sign_cert(legacy, "x") == MemberId("FI-TEST", "COM", "123")
    generic = _cert_with(_n((NameOID.COUNTRY_NAME, "EE"), (NameOID.ORGANIZATION_NAME, "BUSINESS"),
                            (NameOID.COMMON_NAME, "consumer")))
    assert p.member_from_sign_cert(generic, "x") == MemberId("EE", "BUSINESS", "consumer")
    for bad in (
        _n((NameOID.COUNTRY_NAME, "SE"), (NameOID.ORGANIZATION_NAME, "O"), (NameOID.SERIAL_NUMBER, "FI/S/C"),
           (NameOID.COMMON_NAME, "1")),
        _n((NameOID.COUNTRY_NAME, "FI"), (NameOID.ORGANIZATION_NAME, "O"), (NameOID.SERIAL_NUMBER, "FI/C"),
           (NameOID.COMMON_NAME, "1")),
        _n((NameOID.COUNTRY_NAME, "FI"), (NameOID.SERIAL_NUMBER, "FI/S/C"), (NameOID.COMMON_NAME, "1")),
        _n((NameOID.COUNTRY_NAME, "FI"), (NameOID.ORGANIZATION_NAME, "O"), (NameOID.SERIAL_NUMBER, "FI/S/C")),
        _n((NameOID.ORGANIZATION_NAME, "O"), (NameOID.COMMON_NAME, "1")),
    ):
        with pytest.raises(CertificateError) as info:
            p.member_from_sign_cert(_cert_with(bad), "x")
        assert info.value.xroad_code == "IncorrectCertificate"


def test_test_profile_and_lookup() -> None:
    cert = _cert_with(_n((NameOID.COMMON_NAME, "Test Org")))
    assert TestProfile().member_from_sign_cert(cert, "EE") == MemberId("EE", "BUSINESS", "Test Org")
    with pytest.raises(CertificateError):
        TestProfile().member_from_sign_cert(_cert_with(_n((NameOID.COUNTRY_NAME, "EE"))), "EE")
    assert sign_profile_for_class(BASIC_PROFILE_CLASS) is BASIC_VN
    assert isinstance(sign_profile_for_class(FIVRK_PROFILE_CLASS), FiVRKProfile)
    assert isinstance(sign_profile_for_class(TEST_PROFILE_CLASS, allow_test=True), TestProfile)
    for name in (TEST_PROFILE_CLASS, "com.example.Unknown"):
        with pytest.raises(CertificateError) as info:
            sign_profile_for_class(name)
        assert info.value.code == "cert.profile_unknown"


# --------------------------------------------------------------------------- our own signatures

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SIGNER = ClientId("VN", "GOV", "000.00.00.H41")
MESSAGE = b"<Envelope>hello</Envelope>"

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _ku(*, sign: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=sign, content_commitment=sign, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def _issue(subject: x509.Name, key: Key, issuer: x509.Name, issuer_key: Key, *, ca: bool = False,
           sign: bool = False, eku: Sequence[x509.ObjectIdentifier] = (), days: int = 365,
           not_before: datetime | None = None) -> x509.Certificate:
    start = not_before or NOW - timedelta(days=30)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start)
               .not_valid_after(start + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(_ku(sign=sign or bool(eku), ca=ca), critical=True))
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    ca_key: rsa.RSAPrivateKey
    ca: x509.Certificate
    sign_key: Key
    sign_cert: x509.Certificate
    extra: list[x509.Certificate] = field(default_factory=list)
    issuer_of: dict[int, tuple[x509.Certificate, Key]] = field(default_factory=dict)
    conf_responders: list[x509.Certificate] = field(default_factory=list)


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _make_pki(sign_key: Key | None = None, *, subject_member: ClientId = SIGNER) -> Pki:
    ca_key = _rsa()
    ca_name = _n((NameOID.COMMON_NAME, "VDXP Test CA"), (NameOID.COUNTRY_NAME, "VN"))
    ca = _issue(ca_name, ca_key, ca_name, ca_key, ca=True, days=3650)
    key = sign_key or _rsa()
    subject = BASIC_VN.sign_subject(MemberId(subject_member.instance, subject_member.member_class,
                                             subject_member.member_code), "Test Ministry")
    cert = _issue(subject, key, ca_name, ca_key, sign=True)
    pki = Pki(ca_key, ca, key, cert)
    pki.issuer_of[cert.serial_number] = (ca, ca_key)
    return pki


def _conf(pki: Pki, *, freshness: int = 3600, profile: str = BASIC_PROFILE_CLASS) -> SharedParameters:
    cas = [ApprovedCa(name="vdxp-ca", authentication_only=False, top_ca=pki.ca,
                      top_ca_ocsp=tuple(OcspInfo("http://ocsp.test", c) for c in pki.conf_responders)
                      or (OcspInfo("http://ocsp.test"),),
                      intermediates=(), certificate_profile_info=profile)]
    return SharedParameters(version=3, instance="VN", sources=(), cas=tuple(cas), tsas=(),
                            members=(Member(ClientId("VN", "GOV", "000.00.00.H41"), "Test Ministry"),),
                            servers=(), global_groups=(), member_classes=(("GOV", "Government"),),
                            ocsp_freshness_seconds=freshness)


def _ocsp_for(cert: x509.Certificate, issuer: x509.Certificate, issuer_key: Key, *,
              status: ocsp.CertStatusName = "good", this_update: datetime | None = None,
              next_update: datetime | None = None, responder: tuple[x509.Certificate, Key] | None = None) -> bytes:
    r_cert, r_key = responder or (issuer, issuer_key)
    return ocsp.build_response(ocsp.cert_id(cert, issuer, "sha1"), status=status, responder_cert=r_cert,
                               responder_key=r_key, this_update=this_update or NOW - timedelta(minutes=5),
                               next_update=next_update,
                               revocation_time=NOW - timedelta(days=1) if status == "revoked" else None)


def _sign_value(key: Key, data: bytes, mechanism: str) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA512())))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    pad: padding.AsymmetricPadding = (padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64)
                                      if mechanism == "rsa-pss" else padding.PKCS1v15())
    return key.sign(data, pad, hashes.SHA512())


def _sign(pki: Pki, *, reference_uri: str = "/message.xml", reference_data: bytes = MESSAGE,
          mime: str = MIME_TEXT_XML, ocsp_responses: Sequence[bytes] | None = None,
          mechanism: str | None = None) -> bytes:
    if mechanism is None:
        mechanism = "ecdsa" if isinstance(pki.sign_key, ec.EllipticCurvePrivateKey) else "rsa-pkcs1"
    if ocsp_responses is None:
        ocsp_responses = [_ocsp_for(pki.sign_cert, pki.ca, pki.ca_key)]
    prepared = prepare_signature(reference_uri=reference_uri, reference_digest=hashlib.sha512(reference_data).digest(),
                                 mime_type=mime, signing_cert=pki.sign_cert, mechanism=mechanism,
                                 extra_certs=pki.extra, ocsp_responses=ocsp_responses, signing_time=NOW)
    return prepared.finish(_sign_value(pki.sign_key, prepared.data_to_sign, mechanism))


def _verify(pki: Pki, signature: bytes, *, conf: SharedParameters | None = None, signer: Any = SIGNER,
            parts: Sequence[SignedPart] | None = None, at: datetime = NOW, **kw: Any) -> VerifiedSignature:
    if parts is None:
        parts = [SignedPart("/message.xml", digest=hashlib.sha512(MESSAGE).digest(), data=MESSAGE)]
    return verify_signature(signature, signer=signer, conf=conf or _conf(pki), at=at, parts=parts, **kw)


def _fails(code: str, xroad_code: str, call: Callable[[], object]) -> VdxpError:
    with pytest.raises(VdxpError) as info:
        call()
    assert (info.value.code, info.value.xroad_code) == (code, xroad_code), str(info.value)
    return info.value


@pytest.fixture(scope="module")
def pki() -> Pki:
    return _make_pki()


@pytest.mark.parametrize("kind", ["rsa-pkcs1", "rsa-pss", "ec-p256", "ec-p384"])
def test_own_signature_verifies(kind: str) -> None:
    key: Key = (ec.generate_private_key(ec.SECP256R1() if kind == "ec-p256" else ec.SECP384R1())
                if kind.startswith("ec") else _rsa())
    pki = _make_pki(key)
    sig = _sign(pki, mechanism=None if kind.startswith("ec") else kind)
    result = _verify(pki, sig)
    assert result.member == MemberId("VN", "GOV", "000.00.00.H41")
    assert result.chain == (pki.sign_cert, pki.ca) and result.ca.name == "vdxp-ca"
    assert result.ocsp[0].status == "good" and result.signing_time == "2026-03-01T12:00:00.000Z"
    assert result.references == ("/message.xml", "#signed-properties") and not result.batch


def test_own_signature_streamed_message_digest(pki: Pki) -> None:
    """The gateway may pass only the digest of a streamed message."""
    _verify(pki, _sign(pki), parts=[SignedPart("/message.xml", digest=hashlib.sha512(MESSAGE).digest())])


def test_revoked(pki: Pki) -> None:
    sig = _sign(pki, ocsp_responses=[_ocsp_for(pki.sign_cert, pki.ca, pki.ca_key, status="revoked")])
    _fails("cert.revoked", "InvalidCertPath.CertValidation", lambda: _verify(pki, sig))
    sig = _sign(pki, ocsp_responses=[_ocsp_for(pki.sign_cert, pki.ca, pki.ca_key, status="unknown")])
    _fails("cert.unknown", "InvalidCertPath.CertValidation", lambda: _verify(pki, sig))


def test_ocsp_stale_and_expired(pki: Pki) -> None:
    stale = _sign(pki, ocsp_responses=[_ocsp_for(pki.sign_cert, pki.ca, pki.ca_key,
                                                 this_update=NOW - timedelta(seconds=3601))])
    _fails("cert.ocsp_invalid", "InvalidCertPath.IncorrectValidationInfo", lambda: _verify(pki, stale))
    # fresh enough under a longer ocspFreshnessSeconds
    _verify(pki, stale, conf=_conf(pki, freshness=7200))
    expired = _sign(pki, ocsp_responses=[_ocsp_for(pki.sign_cert, pki.ca, pki.ca_key,
                                                   next_update=NOW - timedelta(seconds=1))])
    _fails("cert.ocsp_invalid", "InvalidCertPath.IncorrectValidationInfo", lambda: _verify(pki, expired))
    future = _sign(pki, ocsp_responses=[_ocsp_for(pki.sign_cert, pki.ca, pki.ca_key,
                                                  this_update=NOW + timedelta(hours=1))])
    _verify(pki, future)  # X-Road does not bound thisUpdate from above
    _fails("cert.ocsp_invalid", "InvalidCertPath.IncorrectValidationInfo",
           lambda: _verify(pki, future, ocsp_max_future_seconds=60))


def test_ocsp_responders(pki: Pki) -> None:
    ca_name = pki.ca.subject
    delegated_key = _rsa()
    delegated = _issue(_n((NameOID.COMMON_NAME, "Delegated OCSP")), delegated_key, ca_name, pki.ca_key,
                       eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
    sig = _sign(pki, ocsp_responses=[_ocsp_for(pki.sign_cert, pki.ca, pki.ca_key,
                                               responder=(delegated, delegated_key))])
    _verify(pki, sig)
    # a certificate of the CA without OCSPSigning is not authorised ...
    plain_key = _rsa()
    plain = _issue(_n((NameOID.COMMON_NAME, "Not a responder")), plain_key, ca_name, pki.ca_key, sign=True)
    sig = _sign(pki, ocsp_responses=[_ocsp_for(pki.sign_cert, pki.ca, pki.ca_key, responder=(plain, plain_key))])
    _fails("cert.ocsp_invalid", "InvalidCertPath.IncorrectValidationInfo", lambda: _verify(pki, sig))
    # ... neither is a foreign self-signed responder, unless global configuration lists it for the CA
    other_key = _rsa()
    other_name = _n((NameOID.COMMON_NAME, "Listed OCSP"))
    other = _issue(other_name, other_key, other_name, other_key)
    sig = _sign(pki, ocsp_responses=[_ocsp_for(pki.sign_cert, pki.ca, pki.ca_key, responder=(other, other_key))])
    _fails("cert.ocsp_invalid", "InvalidCertPath.IncorrectValidationInfo", lambda: _verify(pki, sig))
    listed = replace(pki, conf_responders=[other])
    _verify(listed, sig)
    # a response signed by someone else than its responder id says
    good = ocsp.build_response(ocsp.cert_id(pki.sign_cert, pki.ca, "sha1"), status="good", responder_cert=pki.ca,
                               responder_key=pki.ca_key, this_update=NOW, certificates=[])
    forged = good[:-1] + bytes([good[-1] ^ 1])  # the signature is the last field
    _fails("cert.ocsp_invalid", "InvalidCertPath.IncorrectValidationInfo",
           lambda: _verify(pki, _sign(pki, ocsp_responses=[forged])))


def test_ocsp_missing_or_for_another_certificate(pki: Pki) -> None:
    other = _make_pki()
    sig = _sign(pki, ocsp_responses=[_ocsp_for(other.sign_cert, other.ca, other.ca_key)])
    _fails("cert.ocsp_missing", "InvalidCertPath.CertValidation", lambda: _verify(pki, sig))


def test_wrong_chain(pki: Pki) -> None:
    # same CA name, different key: the certificate does not chain to the approved CA
    impostor = _make_pki(pki.sign_key)
    impostor_ca = _issue(pki.ca.subject, impostor.ca_key, pki.ca.subject, impostor.ca_key, ca=True)
    forged = replace(impostor, ca=impostor_ca)
    sig = _sign(forged, ocsp_responses=[_ocsp_for(forged.sign_cert, impostor_ca, impostor.ca_key)])
    _fails("cert.path_unbuildable", "CannotCreateCertPath", lambda: _verify(pki, sig, conf=_conf(pki)))
    # a CA global configuration does not approve
    stranger_key = _rsa()
    stranger_name = _n((NameOID.COMMON_NAME, "Stranger CA"))
    stranger = _issue(stranger_name, stranger_key, stranger_name, stranger_key, ca=True)
    cert = _issue(pki.sign_cert.subject, pki.sign_key, stranger_name, stranger_key, sign=True)
    lone = replace(pki, ca=stranger, ca_key=stranger_key, sign_cert=cert)
    sig = _sign(lone)
    _fails("cert.ca_not_approved", "CannotCreateCertPath", lambda: _verify(pki, sig, conf=_conf(pki)))


def test_signing_certificate_validity_and_usage() -> None:
    pki = _make_pki()
    old = _issue(pki.sign_cert.subject, pki.sign_key, pki.ca.subject, pki.ca_key, sign=True, days=10)
    expired = replace(pki, sign_cert=old)
    sig = _sign(expired, ocsp_responses=[_ocsp_for(old, pki.ca, pki.ca_key)])
    _fails("cert.expired", "CannotCreateCertPath", lambda: _verify(pki, sig))
    not_for_signing = _issue(pki.sign_cert.subject, pki.sign_key, pki.ca.subject, pki.ca_key)
    sig = _sign(replace(pki, sign_cert=not_for_signing))
    _fails("signature.not_signing_cert", "MalformedSignature", lambda: _verify(pki, sig))


def test_intermediate_ca_from_extra_certificates() -> None:
    root = _make_pki()
    inter_key = _rsa()
    inter_name = _n((NameOID.COMMON_NAME, "VDXP Issuing CA"))
    inter = _issue(inter_name, inter_key, root.ca.subject, root.ca_key, ca=True)
    key = _rsa()
    cert = _issue(root.sign_cert.subject, key, inter_name, inter_key, sign=True)
    pki = Pki(root.ca_key, root.ca, key, cert, extra=[inter])
    responses = [_ocsp_for(cert, inter, inter_key), _ocsp_for(inter, root.ca, root.ca_key)]
    result = _verify(pki, _sign(pki, ocsp_responses=responses))
    assert result.chain == (cert, inter, root.ca) and len(result.ocsp) == 2
    # each certificate of the path needs its OCSP response
    _fails("cert.ocsp_missing", "InvalidCertPath.CertValidation",
           lambda: _verify(pki, _sign(pki, ocsp_responses=responses[:1])))
    # an intermediate that is not a CA breaks the path
    not_ca = _issue(inter_name, inter_key, root.ca.subject, root.ca_key)
    bad = replace(pki, extra=[not_ca])
    responses = [_ocsp_for(cert, not_ca, inter_key), _ocsp_for(not_ca, root.ca, root.ca_key)]
    _fails("cert.path_invalid", "CannotCreateCertPath", lambda: _verify(bad, _sign(bad, ocsp_responses=responses)))
    # without the intermediate, no path
    _fails("cert.ca_not_approved", "CannotCreateCertPath",
           lambda: _verify(pki, _sign(replace(pki, extra=[]), ocsp_responses=responses)))


def test_signer_name_differs(pki: Pki) -> None:
    sig = _sign(pki)
    err = _fails("signature.signer_mismatch", "IncorrectCertificate",
                 lambda: _verify(pki, sig, signer=ClientId("VN", "GOV", "000.00.00.H42")))
    assert "000.00.00.H41" in str(err)
    # the Basic profile takes the instance from the claimed signer (whose configuration is used)
    _verify(pki, sig, signer=WireClientId("VN", "GOV", "000.00.00.H41", "sub"))


def test_reference_digest_wrong(pki: Pki) -> None:
    sig = _sign(pki)
    other = b"<Envelope>hullo</Envelope>"
    _fails("signature.value_invalid", "InvalidSignatureValue",
           lambda: _verify(pki, sig, parts=[SignedPart("/message.xml", data=other)]))
    _fails("signature.reference_unresolved", "InvalidReference", lambda: _verify(pki, sig, parts=[]))


def test_tampering(pki: Pki) -> None:
    sig = _sign(pki)
    root = etree.fromstring(sig)
    ns = {"ds": "http://www.w3.org/2000/09/xmldsig#", "xades": "http://uri.etsi.org/01903/v1.3.2#"}
    st = root.find(".//xades:SigningTime", ns)
    assert st is not None
    st.text = "2020-01-01T00:00:00.000Z"
    _fails("signature.value_invalid", "InvalidSignatureValue", lambda: _verify(pki, etree.tostring(root)))
    root = etree.fromstring(sig)
    sv = root.find(".//ds:SignatureValue", ns)
    assert sv is not None and sv.text
    raw = bytearray(base64.b64decode(sv.text))
    raw[10] ^= 1
    sv.text = base64.b64encode(bytes(raw)).decode()
    _fails("signature.value_invalid", "InvalidSignatureValue", lambda: _verify(pki, etree.tostring(root)))
    root = etree.fromstring(sig)
    obj = root.find(".//ds:Object", ns)
    assert obj is not None
    etree.SubElement(obj, "{urn:x}Unexpected")
    _verify(pki, etree.tostring(root))  # lax content of ds:Object is not signed here, as in X-Road
    root = etree.fromstring(sig)
    ocsp_values = root.find(".//xades:OCSPValues", ns)
    assert ocsp_values is not None
    for child in list(ocsp_values):
        ocsp_values.remove(child)
    _fails("signature.schema_invalid", "MalformedSignature", lambda: _verify(pki, etree.tostring(root)))
    _fails("signature.no_ocsp", "MalformedSignature",
           lambda: _verify(pki, etree.tostring(root), verify_schema=False))


def _batch(pki: Pki, messages: Sequence[bytes]) -> tuple[bytes, Any]:
    batch = build_batch([[("/message.xml", hashlib.sha512(m).digest())] for m in messages])
    sig = _sign(pki, reference_uri="/sig-hashchainresult.xml", reference_data=batch.result_xml,
                mime=MIME_HASH_CHAIN_RESULT)
    return sig, batch


def test_batch_signature(pki: Pki) -> None:
    messages = [b"<m>one</m>", b"<m>two</m>", b"<m>three</m>"]
    sig, batch = _batch(pki, messages)
    for i, m in enumerate(messages):
        parts = [SignedPart("/message.xml", digest=hashlib.sha512(m).digest(), data=m)]
        result = _verify(pki, sig, parts=parts, hash_chain_result=batch.result_xml, hash_chain=batch.chains[i])
        assert result.batch and result.references[0] == "/sig-hashchainresult.xml"
    # the hash chain of another message of the batch
    parts = [SignedPart("/message.xml", digest=hashlib.sha512(messages[0]).digest(), data=messages[0])]
    err = _fails("signature.hash_chain_invalid", "MalformedSignature.InvalidHashChain",
                 lambda: _verify(pki, sig, parts=parts, hash_chain_result=batch.result_xml,
                                 hash_chain=batch.chains[1]))
    assert "hash chain" in str(err)
    # a hash chain result of another batch
    _, other = _batch(pki, [b"<m>x</m>", b"<m>y</m>"])
    _fails("signature.hash_chain_invalid", "MalformedSignature.InvalidHashChain",
           lambda: _verify(pki, sig, parts=parts, hash_chain_result=other.result_xml, hash_chain=other.chains[0]))
    # no hash chain result: the reference cannot be resolved
    _fails("signature.reference_unresolved", "InvalidReference", lambda: _verify(pki, sig, parts=parts))


def test_batch_with_attachments(pki: Pki) -> None:
    att = b'{"test":true}'
    batch = build_batch([[("/message.xml", hashlib.sha512(MESSAGE).digest()),
                          ("/attachment1", hashlib.sha512(att).digest())]])
    sig = _sign(pki, reference_uri="/sig-hashchainresult.xml", reference_data=batch.result_xml,
                mime=MIME_HASH_CHAIN_RESULT)
    parts = [SignedPart("/message.xml", digest=hashlib.sha512(MESSAGE).digest()),
             SignedPart("/attachment1", digest=hashlib.sha512(att).digest())]
    _verify(pki, sig, parts=parts, hash_chain_result=batch.result_xml, hash_chain=batch.chains[0])
    parts[1] = SignedPart("/attachment1", data=b"{}")
    _fails("signature.hash_chain_invalid", "MalformedSignature.InvalidHashChainRef",
           lambda: _verify(pki, sig, parts=parts, hash_chain_result=batch.result_xml, hash_chain=batch.chains[0]))


def _resign(pki: Pki, document: bytes) -> bytes:
    """Recompute the SignedProperties digest and the signature value of an edited document."""
    root = etree.fromstring(document)
    ds = "{http://www.w3.org/2000/09/xmldsig#}"
    sp = root.find(".//{http://uri.etsi.org/01903/v1.3.2#}SignedProperties")
    si = root.find(f".//{ds}SignedInfo")
    sv = root.find(f".//{ds}SignatureValue")
    assert sp is not None and si is not None and sv is not None
    sp_ref = si.findall(f"{ds}Reference")[-1]
    dv = sp_ref.find(f"{ds}DigestValue")
    assert dv is not None
    dv.text = base64.b64encode(hashlib.sha512(etree.tostring(sp, method="c14n")).digest()).decode()
    sv.text = base64.b64encode(_sign_value(pki.sign_key, etree.tostring(si, method="c14n"), "rsa-pkcs1")).decode()
    out: bytes = etree.tostring(root)
    return out


def test_old_namespace_and_other_roots(pki: Pki) -> None:
    sig = _sign(pki)
    old = sig.replace(b"http://uri.etsi.org/02918/v1.2.1#", b"http://uri.etsi.org/02918/v1.1.1#")
    _fails("signature.value_invalid", "InvalidSignatureValue", lambda: _verify(pki, old))  # c14n sees the namespace
    _verify(pki, _resign(pki, old))
    other = _resign(pki, sig.replace(b"http://uri.etsi.org/02918/v1.2.1#", b"urn:other"))
    _fails("signature.malformed", "MalformedSignature", lambda: _verify(pki, other))
    # a bare ds:Signature (as in non-batch-sig/signatures.xml)
    root = etree.fromstring(sig)
    bare = _resign(pki, etree.tostring(root[0]))
    result = _verify(pki, bare)
    assert result.references == ("/message.xml", "#signed-properties")


@pytest.mark.parametrize("doc", [
    b"",
    b"<a><b></a>",
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "e">]><x>&e;</x>',
    b"<x>" * 300 + b"</x>" * 300,
])
def test_hostile_documents(doc: bytes, pki: Pki) -> None:
    _fails("signature.invalid_xml", "InvalidXml", lambda: _verify(pki, doc))


def test_timestamp_manifests(pki: Pki) -> None:
    """ts-root-manifest and the manifests it names are checked (X-Road's time-stamp manifests)."""
    sig = _sign(pki)
    root = etree.fromstring(sig)
    ds = "http://www.w3.org/2000/09/xmldsig#"
    obj = root.find(f".//{{{ds}}}Object")
    sv = root.find(f".//{{{ds}}}SignatureValue")
    assert obj is not None and sv is not None
    digest = base64.b64encode(hashlib.sha512(etree.tostring(sv, method="c14n")).digest()).decode()

    def manifest(ident: str, uri: str, value: str) -> etree._Element:
        m = etree.SubElement(obj, f"{{{ds}}}Manifest", Id=ident)
        r = etree.SubElement(m, f"{{{ds}}}Reference", URI=uri)
        etree.SubElement(r, f"{{{ds}}}DigestMethod", Algorithm=SHA512_URI)
        etree.SubElement(r, f"{{{ds}}}DigestValue").text = value
        return m

    manifest("ts-manifest-1", "#signature-value", digest)
    manifest("ts-root-manifest", "#ts-manifest-1", "AAAA")
    good = etree.tostring(root)
    _verify(pki, good)
    bad = good.replace(digest.encode(), base64.b64encode(b"\0" * 64))
    _fails("signature.manifest_invalid", "InvalidReference", lambda: _verify(pki, bad))


# --------------------------------------------------------------------------- the verification cache


def test_cache_gives_the_same_result_and_skips_the_certificate_steps(pki: Pki) -> None:
    conf = _conf(pki)
    cache = VerificationCache()
    first = _verify(pki, _sign(pki), conf=conf, cache=cache)
    assert (cache.hits, cache.misses) == (0, 2)  # the signer's member, then the path and OCSP
    again = _verify(pki, _sign(pki), conf=conf, cache=cache, at=NOW + timedelta(seconds=30))
    assert (cache.hits, cache.misses) == (3, 2)  # the same document (same bytes), member, path and OCSP
    assert (again.member, again.chain, again.ca, again.ocsp) == (first.member, first.chain, first.ca, first.ocsp)


def test_cache_never_spares_the_signature_value_or_references(pki: Pki) -> None:
    conf = _conf(pki)
    cache = VerificationCache()
    _verify(pki, _sign(pki), conf=conf, cache=cache)
    root = etree.fromstring(_sign(pki))
    sv = root.find(".//{http://www.w3.org/2000/09/xmldsig#}SignatureValue")
    assert sv is not None and sv.text
    raw = bytearray(base64.b64decode(sv.text))
    raw[10] ^= 1
    sv.text = base64.b64encode(bytes(raw)).decode()
    _fails("signature.value_invalid", "InvalidSignatureValue",
           lambda: _verify(pki, etree.tostring(root), conf=conf, cache=cache))
    other = [SignedPart("/message.xml", digest=hashlib.sha512(b"<Envelope>other</Envelope>").digest())]
    _fails("signature.value_invalid", "InvalidSignatureValue",
           lambda: _verify(pki, _sign(pki), conf=conf, cache=cache, parts=other))


def test_cache_expires_with_ocsp_freshness_and_next_update(pki: Pki) -> None:
    conf = _conf(pki, freshness=600)
    cache = VerificationCache()
    responses = [_ocsp_for(pki.sign_cert, pki.ca, pki.ca_key, this_update=NOW - timedelta(seconds=60),
                           next_update=NOW + timedelta(seconds=300))]
    sig = _sign(pki, ocsp_responses=responses)
    _verify(pki, sig, conf=conf, cache=cache)
    _verify(pki, sig, conf=conf, cache=cache, at=NOW + timedelta(seconds=299))  # still within nextUpdate
    _fails("cert.ocsp_invalid", "InvalidCertPath.IncorrectValidationInfo",
           lambda: _verify(pki, sig, conf=conf, cache=cache, at=NOW + timedelta(seconds=301)))
    fresh = [_ocsp_for(pki.sign_cert, pki.ca, pki.ca_key, this_update=NOW - timedelta(seconds=60))]
    sig = _sign(pki, ocsp_responses=fresh)
    _verify(pki, sig, conf=conf, cache=cache)
    _fails("cert.ocsp_invalid", "InvalidCertPath.IncorrectValidationInfo",
           lambda: _verify(pki, sig, conf=conf, cache=cache, at=NOW + timedelta(seconds=541)))
    # a validation time before the first success is verified afresh, never taken from the cache
    misses = cache.misses
    _verify(pki, sig, conf=conf, cache=cache, at=NOW - timedelta(seconds=10))
    assert cache.misses == misses + 1


def test_cache_keys_on_the_parameters_and_the_signer(pki: Pki) -> None:
    cache = VerificationCache()
    sig = _sign(pki)
    _verify(pki, sig, conf=_conf(pki), cache=cache)
    other_ca = _make_pki()
    # new parameters (a new global configuration) whose CA of the same name did not issue the certificate
    _fails("cert.path_unbuildable", "CannotCreateCertPath",
           lambda: _verify(pki, sig, conf=_conf(other_ca), cache=cache))
    conf = _conf(pki)
    _verify(pki, sig, conf=conf, cache=cache)
    _fails("signature.signer_mismatch", "IncorrectCertificate",
           lambda: _verify(pki, sig, conf=conf, cache=cache, signer=ClientId("VN", "GOV", "000.00.00.G22")))


def test_cache_revoked_is_not_remembered_as_good(pki: Pki) -> None:
    conf = _conf(pki)
    cache = VerificationCache()
    revoked = _sign(pki, ocsp_responses=[_ocsp_for(pki.sign_cert, pki.ca, pki.ca_key, status="revoked")])
    for _ in range(2):
        _fails("cert.revoked", "InvalidCertPath.CertValidation", lambda: _verify(pki, revoked, conf=conf, cache=cache))
    assert cache.hits == 2  # the document and the signer's member: the OCSP outcome is verified again


def test_cache_is_bounded(pki: Pki) -> None:
    conf = _conf(pki)
    cache = VerificationCache(max_entries=3)
    for minutes in range(1, 6):
        responses = [_ocsp_for(pki.sign_cert, pki.ca, pki.ca_key, this_update=NOW - timedelta(minutes=minutes))]
        _verify(pki, _sign(pki, ocsp_responses=responses), conf=conf, cache=cache)
    assert len(cache) == 3


def test_cache_verifies_each_message_of_a_batch(pki: Pki) -> None:
    messages = [f"<m>{i}</m>".encode() for i in range(3)]
    sig, batch = _batch(pki, messages)
    conf = _conf(pki)
    cache = VerificationCache()
    for i, m in enumerate(messages):
        parts = [SignedPart("/message.xml", digest=hashlib.sha512(m).digest())]
        _verify(pki, sig, conf=conf, cache=cache, parts=parts, hash_chain_result=batch.result_xml,
                hash_chain=batch.chains[i])
    assert cache.hits == 3 * 2  # documents, members and chains of the 2nd and 3rd message
    # the document is remembered, yet a message outside the batch or another chain still fails
    parts = [SignedPart("/message.xml", digest=hashlib.sha512(b"<m>other</m>").digest())]
    _fails("signature.hash_chain_invalid", "MalformedSignature.InvalidHashChain",
           lambda: _verify(pki, sig, conf=conf, cache=cache, parts=parts, hash_chain_result=batch.result_xml,
                           hash_chain=batch.chains[0]))
    # a batch of other messages whose chain holds up: the signature does not cover its result
    _, other = _batch(pki, [b"<m>x</m>", b"<m>y</m>"])
    parts = [SignedPart("/message.xml", digest=hashlib.sha512(b"<m>x</m>").digest())]
    _fails("signature.value_invalid", "InvalidSignatureValue",
           lambda: _verify(pki, sig, conf=conf, cache=cache, parts=parts, hash_chain_result=other.result_xml,
                           hash_chain=other.chains[0]))
    # a tampered copy of the document is a different document: verified in full, and it fails
    root = etree.fromstring(sig)
    value = root.find(".//{http://www.w3.org/2000/09/xmldsig#}SignatureValue")
    assert value is not None and value.text
    value.text = "AAAA" + value.text[4:]
    tampered = etree.tostring(root)
    assert tampered != sig
    parts = [SignedPart("/message.xml", digest=hashlib.sha512(messages[0]).digest())]
    with pytest.raises(VdxpError):
        _verify(pki, tampered, conf=conf, cache=cache, parts=parts, hash_chain_result=batch.result_xml,
                hash_chain=batch.chains[0])
