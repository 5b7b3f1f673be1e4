"""Certificate profiles, X-Road member ids and HSM-style CSR assembly."""

from __future__ import annotations

import dataclasses
import datetime
import subprocess
from pathlib import Path

import pytest
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from hsm.softkey import SoftwareDigestSigner, ecdsa_der_to_raw
from protocols.certprofile import (
    BASIC_PROFILE_CLASS,
    BASIC_VN,
    BasicProfile,
    MemberId,
    auth_subject,
    member_from_sign_cert,
    profile_for_class,
    sign_subject,
)
from protocols.csr import assemble_csr, csr_info_der, csr_pem, info_digest, load_csr
from protocols.errors import CertificateError

AGENCY = MemberId("VN", "GOV", "000.00.00.H41")
AGENCY_NAME = "Văn phòng Chính phủ"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# --------------------------------------------------------------------------- member ids


@pytest.mark.parametrize(
    "text",
    ["VN/GOV/000.00.00.H41", "VN-TEST/COM/0101234567", "EE/BUSINESS/Test Org", "A/B/c'(+,-.=?)"],
)
def test_member_id_round_trip(text: str) -> None:
    member = MemberId.parse(text)
    assert str(member) == text
    assert MemberId.parse(str(member)) == member


def test_member_id_fields_and_frozen() -> None:
    member = MemberId.parse("VN/GOV/000.00.00.H41")
    assert (member.instance, member.member_class, member.member_code) == ("VN", "GOV", "000.00.00.H41")
    assert member == AGENCY
    assert hash(member) == hash(AGENCY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        member.member_code = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "text",
    [
        "VN/GOV",
        "VN/GOV/A/B",
        "VN//CODE",
        "VN/GOV/",
        "VN/GOV/a:b",
        "VN/GOV/a;b",
        "VN/GOV/a%b",
        "VN/GOV/a\\b",
        "VN/GOV/ lead",
        "VN/GOV/trail ",
        "VN/GOV/Sở",
        "VN/GOV/a\nb",
        "VN/GOV/a_b",
        "VN/GOV/" + "9" * 65,
    ],
)
def test_member_id_invalid(text: str) -> None:
    with pytest.raises(CertificateError) as info:
        MemberId.parse(text)
    assert info.value.code == "cert.member_id_invalid"


def test_member_id_constructor_validates() -> None:
    with pytest.raises(CertificateError) as info:
        MemberId("VN", "G/OV", "1")
    assert info.value.code == "cert.member_id_invalid"


# --------------------------------------------------------------------------- profiles


def _attrs(name: x509.Name) -> list[tuple[x509.ObjectIdentifier, str | bytes]]:
    return [(a.oid, a.value) for a in name]


def test_sign_subject_is_basic_profile() -> None:
    name = sign_subject(AGENCY, AGENCY_NAME)
    assert _attrs(name) == [
        (NameOID.COMMON_NAME, AGENCY_NAME),
        (NameOID.ORGANIZATION_NAME, AGENCY_NAME),
        (NameOID.BUSINESS_CATEGORY, "GOV"),
        (NameOID.SERIAL_NUMBER, "000.00.00.H41"),
        (NameOID.COUNTRY_NAME, "VN"),
    ]
    assert all(len(rdn) == 1 for rdn in name.rdns)
    types = {a.oid: a._type for a in name}
    assert types[NameOID.COUNTRY_NAME] == _ASN1Type.PrintableString
    assert types[NameOID.SERIAL_NUMBER] == _ASN1Type.PrintableString
    assert types[NameOID.COMMON_NAME] == _ASN1Type.UTF8String


def test_auth_subject_is_basic_profile() -> None:
    name = auth_subject(AGENCY, AGENCY_NAME, "ss1.vpcp.gov.vn")
    assert _attrs(name) == [
        (NameOID.COMMON_NAME, "ss1.vpcp.gov.vn"),
        (NameOID.SERIAL_NUMBER, "000.00.00.H41"),
        (NameOID.ORGANIZATION_NAME, AGENCY_NAME),
        (NameOID.COUNTRY_NAME, "VN"),
    ]


def test_other_country_and_bad_profile_arguments() -> None:
    assert BasicProfile("FI").sign_subject(AGENCY, "X").get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "FI"
    for country in ("vn", "VNM", ""):
        with pytest.raises(CertificateError) as info:
            BasicProfile(country)
        assert info.value.code == "cert.profile_invalid"
    for bad_name in ("", "   ", "x" * 65, "a\x00b", "a\nb"):
        with pytest.raises(CertificateError) as info:
            sign_subject(AGENCY, bad_name)
        assert info.value.code == "cert.profile_invalid"
    with pytest.raises(CertificateError) as info:
        auth_subject(AGENCY, AGENCY_NAME, "h" * 65)
    assert info.value.code == "cert.profile_invalid"


def test_profile_for_class() -> None:
    assert profile_for_class(BASIC_PROFILE_CLASS) is BASIC_VN
    with pytest.raises(CertificateError) as info:
        profile_for_class("ee.ria.xroad.common.certificateprofile.impl.SkKlass3CertificateProfileInfoProvider")
    assert info.value.code == "cert.profile_unknown"


def _self_signed(subject: x509.Name, key: PrivateKey) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_member_from_sign_cert(ec_key: ec.EllipticCurvePrivateKey) -> None:
    cert = _self_signed(sign_subject(AGENCY, AGENCY_NAME), ec_key)
    assert member_from_sign_cert(cert, "VN") == AGENCY
    other = MemberId("VN-TEST", "COM", "0101234567")
    cert2 = _self_signed(BASIC_VN.sign_subject(other, "Công ty TNHH Một Thành Viên"), ec_key)
    assert BASIC_VN.member_from_sign_cert(cert2, "VN-TEST") == other
    assert member_from_sign_cert(cert2, "VN") != other  # the instance comes from the caller


def _without(name: x509.Name, oid: x509.ObjectIdentifier) -> x509.Name:
    return x509.Name([a for a in name if a.oid != oid])


@pytest.mark.parametrize("missing", [NameOID.BUSINESS_CATEGORY, NameOID.SERIAL_NUMBER])
def test_member_from_sign_cert_missing_attribute(
    ec_key: ec.EllipticCurvePrivateKey, missing: x509.ObjectIdentifier
) -> None:
    cert = _self_signed(_without(sign_subject(AGENCY, AGENCY_NAME), missing), ec_key)
    with pytest.raises(CertificateError) as info:
        member_from_sign_cert(cert, "VN")
    assert info.value.code == "cert.subject_mismatch"
    assert info.value.xroad_code == "IncorrectCertificate"


def test_member_from_sign_cert_bad_values(ec_key: ec.EllipticCurvePrivateKey) -> None:
    twice = x509.Name([*sign_subject(AGENCY, AGENCY_NAME), x509.NameAttribute(NameOID.SERIAL_NUMBER, "2")])
    invalid = x509.Name(
        [
            x509.NameAttribute(NameOID.BUSINESS_CATEGORY, "GOV"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "a/b", _type=_ASN1Type.UTF8String),
        ]
    )
    for subject in (twice, invalid):
        with pytest.raises(CertificateError) as info:
            member_from_sign_cert(_self_signed(subject, ec_key), "VN")
        assert info.value.code == "cert.subject_mismatch"


def test_member_from_xroad_test_cert_without_profile_fields(vectors: Path) -> None:
    cert = x509.load_pem_x509_certificate((vectors / "xroad/test-pki/consumer.pem").read_bytes())
    with pytest.raises(CertificateError) as info:
        member_from_sign_cert(cert, "EE")
    assert info.value.xroad_code == "IncorrectCertificate"


# --------------------------------------------------------------------------- CSRs

ALGORITHMS = {
    "sha256-rsa": ("rsa", "rsa-pkcs1"),
    "sha256-rsa-pss": ("rsa", "rsa-pss"),
    "sha256-ecdsa": ("ec", "ecdsa"),
}


@pytest.fixture(scope="module")
def keys() -> dict[str, PrivateKey]:
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
    }


def _spki(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _make_csr(
    key: PrivateKey,
    mechanism: str,
    algorithm: str,
    subject: x509.Name,
    extensions: list[x509.Extension[x509.ExtensionType]] | None = None,
) -> bytes:
    info = csr_info_der(subject, _spki(key), extensions=extensions or [])
    signature = SoftwareDigestSigner(key, mechanism).sign_digest_sync(info_digest(info), "sha256")
    return assemble_csr(info, algorithm, signature)  # type: ignore[arg-type]


def _openssl_verify(tmp_path: Path, der: bytes) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "req.der"
    path.write_bytes(der)
    return subprocess.run(
        ["openssl", "req", "-inform", "DER", "-verify", "-noout", "-in", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=True,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


@pytest.mark.parametrize("kind", ["sign", "auth"])
@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_csr_round_trip(keys: dict[str, PrivateKey], tmp_path: Path, algorithm: str, kind: str) -> None:
    key_type, mechanism = ALGORITHMS[algorithm]
    key = keys[key_type]
    subject = sign_subject(AGENCY, AGENCY_NAME) if kind == "sign" else auth_subject(AGENCY, AGENCY_NAME, "ss1")
    der = _make_csr(key, mechanism, algorithm, subject)
    csr = load_csr(der)
    assert csr.is_signature_valid
    assert csr.subject == subject
    assert csr.subject.public_bytes() == subject.public_bytes()
    assert _spki_of(csr) == _spki(key)
    assert len(csr.extensions) == 0
    assert csr.public_bytes(serialization.Encoding.DER) == der
    # PEM form loads too and is the same request
    pem = csr_pem(der)
    assert pem.startswith(b"-----BEGIN CERTIFICATE REQUEST-----")
    assert load_csr(pem).public_bytes(serialization.Encoding.DER) == der
    result = _openssl_verify(tmp_path, der)
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stdout + result.stderr


def _spki_of(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_pss_parameters(keys: dict[str, PrivateKey], tmp_path: Path) -> None:
    der = _make_csr(keys["rsa"], "rsa-pss", "sha256-rsa-pss", sign_subject(AGENCY, AGENCY_NAME))
    csr = load_csr(der)
    params = csr.signature_algorithm_parameters
    assert params is not None
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)
    path = tmp_path / "pss.der"
    path.write_bytes(der)
    text = subprocess.run(
        ["openssl", "req", "-inform", "DER", "-in", str(path), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "rsassaPss" in text
    assert "Salt Length: 0x20" in text
    assert "Mask Algorithm: mgf1 with sha256" in text


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_csr_with_extensions(keys: dict[str, PrivateKey], tmp_path: Path, algorithm: str) -> None:
    key_type, mechanism = ALGORITHMS[algorithm]
    extensions: list[x509.Extension[x509.ExtensionType]] = [
        x509.Extension(KEY_USAGE.oid, True, KEY_USAGE),
        x509.Extension(
            x509.SubjectAlternativeName.oid,
            False,
            x509.SubjectAlternativeName([x509.DNSName("ss1.vpcp.gov.vn")]),
        ),
    ]
    der = _make_csr(keys[key_type], mechanism, algorithm, sign_subject(AGENCY, AGENCY_NAME), extensions)
    csr = load_csr(der)
    assert csr.extensions.get_extension_for_class(x509.KeyUsage).value == KEY_USAGE
    assert csr.extensions.get_extension_for_class(x509.KeyUsage).critical is True
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["ss1.vpcp.gov.vn"]
    assert san.critical is False
    result = _openssl_verify(tmp_path, der)
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stdout + result.stderr


def test_info_der_structure(keys: dict[str, PrivateKey]) -> None:
    subject = sign_subject(AGENCY, AGENCY_NAME)
    info = csr_info_der(subject, _spki(keys["ec"]))
    parsed = asn1_csr.CertificationRequestInfo.load(info, strict=True)
    assert parsed["version"].native == "v1"
    assert parsed["subject"].dump() == subject.public_bytes()
    assert parsed["subject_pk_info"].dump() == _spki(keys["ec"])
    assert len(parsed["attributes"]) == 0
    assert parsed.dump(force=True) == info  # canonical DER


def test_info_der_refuses_bad_keys() -> None:
    for bad in (b"", b"\x30\x03\x02\x01\x00", b"not a key"):
        with pytest.raises(CertificateError) as info:
            csr_info_der(sign_subject(AGENCY, AGENCY_NAME), bad)
        assert info.value.code == "cert.key_invalid"
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    ed_der = ed.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(CertificateError) as info:
        csr_info_der(sign_subject(AGENCY, AGENCY_NAME), ed_der)
    assert info.value.code == "cert.key_invalid"


def test_assemble_refuses_bad_input(keys: dict[str, PrivateKey]) -> None:
    info = csr_info_der(sign_subject(AGENCY, AGENCY_NAME), _spki(keys["ec"]))
    der_signature = SoftwareDigestSigner(keys["ec"]).sign_digest_sync(info_digest(info), "sha256")
    raw = ecdsa_der_to_raw(der_signature, 256)
    with pytest.raises(ValueError):
        assemble_csr(info, "sha256-ecdsa", raw)
    with pytest.raises(ValueError):
        assemble_csr(info, "sha1-rsa", der_signature)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        assemble_csr(info, "sha256-rsa", b"")
    with pytest.raises(ValueError):
        assemble_csr(b"", "sha256-ecdsa", der_signature)
    assert load_csr(assemble_csr(info, "sha256-ecdsa", der_signature)).is_signature_valid


def _expect_csr_invalid(data: bytes) -> None:
    with pytest.raises(CertificateError) as info:
        load_csr(data)
    assert info.value.code == "cert.csr_invalid"


def test_load_csr_refuses_garbage() -> None:
    for data in (
        b"",
        b"garbage",
        b"\x30\x82\xff\xff",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        b"-----BEGIN CERTIFICATE REQUEST-----\n",
        b"\x30" * 70000,
    ):
        _expect_csr_invalid(data)


def test_load_csr_refuses_truncated(keys: dict[str, PrivateKey]) -> None:
    der = _make_csr(keys["ec"], "ecdsa", "sha256-ecdsa", sign_subject(AGENCY, AGENCY_NAME))
    for cut in (1, 10, len(der) // 2, len(der) - 1):
        _expect_csr_invalid(der[:cut])


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_load_csr_refuses_bad_signature(keys: dict[str, PrivateKey], tmp_path: Path, algorithm: str) -> None:
    key_type, mechanism = ALGORITHMS[algorithm]
    key = keys[key_type]
    subject = sign_subject(AGENCY, AGENCY_NAME)
    der = _make_csr(key, mechanism, algorithm, subject)
    # a subject byte changed after signing ("GOV" -> "GOW")
    index = der.index(b"GOV")
    altered = der[:index] + b"GOW" + der[index + 3 :]
    _expect_csr_invalid(altered)
    # (openssl 3.0 exits 0 on a failed self-signature check; its message tells)
    result = _openssl_verify(tmp_path, altered)
    assert "verify OK" not in result.stdout + result.stderr
    assert "verify failure" in result.stdout + result.stderr
    # a signature over the wrong digest
    info = csr_info_der(subject, _spki(key))
    wrong = SoftwareDigestSigner(key, mechanism).sign_digest_sync(info_digest(info + b"x"), "sha256")
    _expect_csr_invalid(assemble_csr(info, algorithm, wrong))  # type: ignore[arg-type]
    # the right digest signed by another key
    other: PrivateKey = (
        ec.generate_private_key(ec.SECP256R1()) if key_type == "ec" else rsa.generate_private_key(65537, 2048)
    )
    foreign = SoftwareDigestSigner(other, mechanism).sign_digest_sync(info_digest(info), "sha256")
    _expect_csr_invalid(assemble_csr(info, algorithm, foreign))  # type: ignore[arg-type]


def test_pkcs1_signature_labelled_pss_refused(keys: dict[str, PrivateKey]) -> None:
    info = csr_info_der(sign_subject(AGENCY, AGENCY_NAME), _spki(keys["rsa"]))
    pkcs1 = SoftwareDigestSigner(keys["rsa"], "rsa-pkcs1").sign_digest_sync(info_digest(info), "sha256")
    assert load_csr(assemble_csr(info, "sha256-rsa", pkcs1)).is_signature_valid
    _expect_csr_invalid(assemble_csr(info, "sha256-rsa-pss", pkcs1))


def test_load_csr_refuses_unknown_signature_algorithm(keys: dict[str, PrivateKey]) -> None:
    der = _make_csr(keys["ec"], "ecdsa", "sha256-ecdsa", sign_subject(AGENCY, AGENCY_NAME))
    ecdsa_sha256 = bytes.fromhex("300a06082a8648ce3d040302")
    assert der.count(ecdsa_sha256) == 1
    unknown = der.replace(ecdsa_sha256, ecdsa_sha256[:-1] + b"\x7f")
    _expect_csr_invalid(unknown)
