"""The development PKI: layout, modes, profiles, the openssl CA database, the CLI."""

from __future__ import annotations

import ipaddress
import json
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from gateway import devpki
from gateway.devpki import IndexEntry, Pki, init_pki
from protocols.errors import CertificateError

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "vdxp-gateway"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def make_csr(
    common_name: str,
    *,
    member_code: str | None = "000.00.00.H41",
    member_class: str | None = "GOV",
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
) -> tuple[x509.CertificateSigningRequest, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ha Noi")]
    if member_class:
        attrs.append(x509.NameAttribute(NameOID.BUSINESS_CATEGORY, member_class))
    if member_code:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, member_code))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs)).sign(key, hashes.SHA256())
    return csr, key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return init_pki(tmp_path / "pki", now=NOW)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------------------
# init


def test_init_writes_the_layout_with_private_modes(pki: Pki) -> None:
    d = pki.directory
    for name in ("root.pem", "root.key", "intermediate.pem", "intermediate.key", "ocsp.pem", "ocsp.key"):
        assert (d / name).is_file(), name
    assert _mode(d) == 0o700
    assert _mode(d / "issued") == 0o700
    for name in ("root.key", "intermediate.key", "ocsp.key"):
        assert _mode(d / name) == 0o600, name
    assert (d / "index.txt").read_text() == ""
    assert "unique_subject = no" in (d / "index.txt.attr").read_text()
    meta = json.loads((d / "pki.json").read_text())
    assert meta["version"] == 1
    assert meta["instance"] == "VN-TEST"
    assert meta["key_type"] == "ec"
    assert meta["ocsp_url"] == devpki.DEFAULT_OCSP_URL
    assert meta["files"]["root"] == "root.pem"
    assert meta["files"]["index"] == "index.txt"


def test_keys_are_created_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0)
    try:
        p = init_pki(tmp_path / "p", now=NOW)
    finally:
        os.umask(old)
    for name in ("root.key", "intermediate.key", "ocsp.key"):
        assert _mode(p.directory / name) == 0o600


def test_ca_hierarchy_and_responder_profile(pki: Pki) -> None:
    root, inter, resp = pki.root, pki.intermediate, pki.ocsp_cert
    root.verify_directly_issued_by(root)
    inter.verify_directly_issued_by(root)
    resp.verify_directly_issued_by(inter)
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = resp.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    resp.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert not resp.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert "VN-TEST" in root.subject.rfc4514_string()
    assert root.not_valid_before_utc <= NOW <= root.not_valid_after_utc


def test_refuses_to_overwrite(pki: Pki) -> None:
    with pytest.raises(CertificateError) as info:
        init_pki(pki.directory)
    assert info.value.code == "cert.pki_exists"


def test_rsa_pki_and_custom_instance(tmp_path: Path) -> None:
    p = init_pki(tmp_path / "r", key_type="rsa", instance="VN-DEV", ocsp_url="http://127.0.0.9:5577/", now=NOW)
    assert isinstance(p.intermediate.public_key(), rsa.RSAPublicKey)
    loaded = Pki.load(p.directory)
    assert loaded.key_type == "rsa"
    assert loaded.instance == "VN-DEV"
    assert loaded.ocsp_url == "http://127.0.0.9:5577/"
    assert loaded.intermediate == p.intermediate
    csr, _ = make_csr("gw.example.vn", key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    cert = loaded.issue(csr, "auth", now=NOW)
    cert.verify_directly_issued_by(p.intermediate)


def test_load_of_a_missing_pki(tmp_path: Path) -> None:
    with pytest.raises(CertificateError) as info:
        Pki.load(tmp_path)
    assert info.value.code == "cert.pki_missing"


def test_unknown_key_type(tmp_path: Path) -> None:
    with pytest.raises(CertificateError) as info:
        init_pki(tmp_path / "x", key_type="dsa")  # type: ignore[arg-type]
    assert info.value.code == "cert.key_type_invalid"


# ---------------------------------------------------------------------------------------
# issue


def _aia(cert: x509.Certificate) -> list[str]:
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    return [str(d.access_location.value) for d in aia if d.access_method == AuthorityInformationAccessOID.OCSP]


def test_issue_auth_profile(pki: Pki) -> None:
    csr, key = make_csr("gw-provider.vdxp.test")
    cert = pki.issue(csr, "auth", days=30, now=NOW)
    cert.verify_directly_issued_by(pki.intermediate)
    assert cert.subject == csr.subject
    assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "000.00.00.H41"
    assert cert.subject.get_attributes_for_oid(NameOID.BUSINESS_CATEGORY)[0].value == "GOV"
    assert cert.public_key() == key.public_key()
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment
    assert not ku.value.content_commitment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw-provider.vdxp.test"]
    assert _aia(cert) == [devpki.DEFAULT_OCSP_URL]
    assert cert.not_valid_after_utc == NOW + timedelta(days=30)
    assert cert.not_valid_before_utc <= NOW
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_auth_san_from_ip_and_none_for_non_host_names(pki: Pki) -> None:
    cert = pki.issue(make_csr("127.0.0.3")[0], "auth", now=NOW)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.3")]
    cert = pki.issue(make_csr("Security server of H41")[0], "auth", now=NOW)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_issue_sign_tsa_ocsp_profiles(pki: Pki) -> None:
    sign = pki.issue(make_csr("UBND Ha Noi")[0], "sign", now=NOW)
    ku = sign.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.content_commitment and ku.value.digital_signature
    assert not ku.value.key_encipherment
    with pytest.raises(x509.ExtensionNotFound):
        sign.extensions.get_extension_for_class(x509.ExtendedKeyUsage)

    tsa = pki.issue(make_csr("TSA 1", member_code=None, member_class=None)[0], "tsa", now=NOW)
    eku = tsa.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]

    resp = pki.issue(make_csr("OCSP 2", member_code=None, member_class=None)[0], "ocsp", now=NOW)
    eku = resp.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    resp.extensions.get_extension_for_class(x509.OCSPNoCheck)


def test_issue_records_index_and_issued_file(pki: Pki) -> None:
    csr, _ = make_csr("gw1.vdxp.test")
    cert = pki.issue(csr, "auth", now=NOW, ocsp_url="http://127.0.0.5:5577/")
    assert _aia(cert) == ["http://127.0.0.5:5577/"]
    hex_serial = devpki.serial_hex(cert.serial_number)
    assert len(hex_serial) % 2 == 0 and hex_serial == hex_serial.upper()
    issued = pki.directory / "issued" / f"{hex_serial}.pem"
    assert x509.load_pem_x509_certificate(issued.read_bytes()) == cert
    lines = (pki.directory / "index.txt").read_text().splitlines()
    assert len(lines) == 1
    fields = lines[0].split("\t")
    assert fields[0] == "V"
    assert fields[1] == cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    assert fields[2] == ""
    assert fields[3] == hex_serial
    assert fields[4] == "unknown"
    assert fields[5] == "/C=VN/O=Ha Noi/businessCategory=GOV/serialNumber=000.00.00.H41/CN=gw1.vdxp.test"
    assert pki.status(cert.serial_number) == ("good", None, None)
    assert pki.status(hex_serial).status == "good"
    assert pki.certificate(hex_serial) == cert


def test_issue_accepts_pem_and_der(pki: Pki) -> None:
    csr, _ = make_csr("gw2.vdxp.test")
    a = pki.issue(csr.public_bytes(serialization.Encoding.PEM), "sign", now=NOW)
    b = pki.issue(csr.public_bytes(serialization.Encoding.DER), "sign", now=NOW)
    assert a.subject == b.subject and a.serial_number != b.serial_number
    assert len(pki.entries()) == 2


@pytest.mark.parametrize("data", [b"", b"garbage", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END"])
def test_issue_refuses_garbage(pki: Pki, data: bytes) -> None:
    with pytest.raises(CertificateError) as info:
        pki.issue(data, "auth", now=NOW)
    assert info.value.code == "cert.csr_invalid"


def test_issue_refuses_a_csr_with_a_broken_self_signature(pki: Pki) -> None:
    csr, _ = make_csr("gw3.vdxp.test")
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    # The ECDSA signature is the tail of the DER; flipping its last byte keeps the DER valid.
    der[-1] ^= 0x01
    with pytest.raises(CertificateError) as info:
        pki.issue(bytes(der), "auth", now=NOW)
    assert info.value.code == "cert.csr_invalid"
    assert pki.entries() == {}


def test_issue_rejects_unknown_profile(pki: Pki) -> None:
    with pytest.raises(CertificateError) as info:
        pki.issue(make_csr("x.test")[0], "email", now=NOW)  # type: ignore[arg-type]
    assert info.value.code == "cert.profile_invalid"


def test_validity_is_capped_by_the_intermediate(pki: Pki) -> None:
    cert = pki.issue(make_csr("long.test")[0], "sign", days=100 * 365, now=NOW)
    assert cert.not_valid_after_utc == pki.intermediate.not_valid_after_utc


# ---------------------------------------------------------------------------------------
# revoke and status


def test_revoke_and_status(pki: Pki) -> None:
    cert = pki.issue(make_csr("gw4.vdxp.test")[0], "auth", now=NOW)
    when = NOW + timedelta(days=1)
    pki.revoke(devpki.serial_hex(cert.serial_number), "keyCompromise", when)
    status = pki.status(cert.serial_number)
    assert status.status == "revoked"
    assert status.revocation_time == when
    assert status.reason == x509.ReasonFlags.key_compromise
    line = (pki.directory / "index.txt").read_text().splitlines()[0].split("\t")
    assert line[0] == "R"
    assert line[2] == "260302120000Z,keyCompromise"
    with pytest.raises(CertificateError) as info:
        pki.revoke(cert.serial_number, "keyCompromise", when)
    assert info.value.code == "cert.already_revoked"


def test_revoke_errors(pki: Pki) -> None:
    with pytest.raises(CertificateError) as info:
        pki.revoke("0BADC0DE", "keyCompromise", NOW)
    assert info.value.code == "cert.unknown_serial"
    with pytest.raises(CertificateError) as info:
        pki.revoke("not-hex", "keyCompromise", NOW)
    assert info.value.code == "cert.serial_invalid"
    cert = pki.issue(make_csr("gw5.vdxp.test")[0], "auth", now=NOW)
    with pytest.raises(CertificateError) as info:
        pki.revoke(cert.serial_number, "becauseISaidSo", NOW)
    assert info.value.code == "cert.reason_invalid"
    assert pki.status(0x0BADC0DE) == ("unknown", None, None)


def test_index_round_trip_and_time_formats() -> None:
    entries = [
        IndexEntry("V", datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), 0x0A, "/CN=a"),
        IndexEntry("V", datetime(2051, 1, 1, tzinfo=UTC), 0x1234, "/CN=b"),
        IndexEntry(
            "R",
            datetime(2030, 1, 1, tzinfo=UTC),
            0xABCDEF,
            "/CN=c",
            datetime(2026, 5, 1, 8, 0, 0, tzinfo=UTC),
            x509.ReasonFlags.superseded,
        ),
        IndexEntry("R", datetime(2030, 1, 1, tzinfo=UTC), 0x1, "/CN=d", datetime(2026, 5, 1, tzinfo=UTC), None),
    ]
    text = "".join(e.to_line() + "\n" for e in entries)
    assert text.splitlines()[0] == "V\t491231235959Z\t\t0A\tunknown\t/CN=a"
    assert text.splitlines()[1].split("\t")[1] == "20510101000000Z"
    assert text.splitlines()[2].split("\t")[2] == "260501080000Z,superseded"
    assert text.splitlines()[3].split("\t")[2] == "260501000000Z"
    parsed = devpki.parse_index(text)
    assert list(parsed.values()) == entries


def test_index_rejects_garbage() -> None:
    with pytest.raises(CertificateError) as info:
        devpki.parse_index("X\tnot\ta\tdatabase\n")
    assert info.value.code == "cert.index_invalid"
    with pytest.raises(CertificateError):
        devpki.parse_index("R\t300101000000Z\tyesterday\t0A\tunknown\t/CN=a\n")


# ---------------------------------------------------------------------------------------
# the CLI and openssl


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=60)


@pytest.mark.e2e
def test_cli_init_issue_revoke_and_openssl_verify(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    r = _run("pki", "init", d, "--key-type", "ec", "--instance", "VN-TEST")
    assert r.returncode == 0, r.stderr
    assert _mode(d) == 0o700 and _mode(d / "root.key") == 0o600

    again = _run("pki", "init", d)
    assert again.returncode == 1
    assert again.stderr.startswith("error: cert.pki_exists:")

    csr, _ = make_csr("gw-consumer.vdxp.test")
    (tmp_path / "req.der").write_bytes(csr.public_bytes(serialization.Encoding.DER))
    r = _run("pki", "issue", d, "--csr", tmp_path / "req.der", "--profile", "auth")
    assert r.returncode == 0, r.stderr
    (tmp_path / "auth.pem").write_text(r.stdout)
    cert = x509.load_pem_x509_certificate(r.stdout.encode())

    (tmp_path / "req.pem").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    r = _run(
        "pki",
        "issue",
        d,
        "--csr",
        tmp_path / "req.pem",
        "--profile",
        "sign",
        "--days",
        "10",
        "--out",
        tmp_path / "s.pem",
    )
    assert r.returncode == 0, r.stderr
    assert "serial" in r.stdout

    for name in ("auth.pem", "s.pem"):
        v = subprocess.run(
            ["openssl", "verify", "-CAfile", d / "root.pem", "-untrusted", d / "intermediate.pem", tmp_path / name],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert v.returncode == 0 and ": OK" in v.stdout, v.stdout + v.stderr

    (tmp_path / "junk.csr").write_bytes(b"this is no CSR")
    r = _run("pki", "issue", d, "--csr", tmp_path / "junk.csr", "--profile", "auth")
    assert r.returncode == 1
    assert r.stderr.startswith("error: cert.csr_invalid:")

    r = _run("pki", "issue", d, "--csr", tmp_path / "req.pem", "--profile", "nonsense")
    assert r.returncode == 2

    hex_serial = devpki.serial_hex(cert.serial_number)
    r = _run("pki", "status", d, "--serial", hex_serial)
    assert r.returncode == 0 and r.stdout.strip() == "good"
    r = _run("pki", "revoke", d, "--serial", hex_serial, "--reason", "keyCompromise")
    assert r.returncode == 0, r.stderr
    r = _run("pki", "status", d, "--serial", hex_serial)
    assert r.returncode == 1 and r.stdout.startswith("revoked") and "keyCompromise" in r.stdout
    assert Pki.load(d).status(hex_serial).status == "revoked"
