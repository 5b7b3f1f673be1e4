"""A development PKI: root CA, intermediate CA, OCSP responder and an openssl CA database.

Used by the sandbox, the demo and the tests; never by a production gateway.  The
directory layout is a contract other code relies on::

    DIR/                  mode 0700
      root.pem            self-signed root CA
      root.key            its key (0600)
      intermediate.pem    issuing CA (signed by the root, pathlen 0)
      intermediate.key    its key (0600)
      ocsp.pem            delegated OCSP responder (EKU OCSPSigning critical, ocsp-nocheck)
      ocsp.key            its key (0600)
      index.txt           openssl ``ca``-compatible database of issued certificates
      index.txt.attr      ``unique_subject = no``
      issued/<HEX>.pem    every issued certificate, by serial (uppercase hex, even length)
      pki.json            what is where, the instance and the default OCSP URL

``index.txt`` lines are ``V|R|E <TAB> expiry <TAB> revtime[,reason] <TAB> SERIALHEX <TAB>
unknown <TAB> /subject`` with times as ``YYMMDDHHMMSSZ`` (``YYYYMMDDHHMMSSZ`` from 2050), so
``openssl ocsp -index index.txt`` can answer from the same directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from protocols.errors import CertificateError

KeyType = Literal["ec", "rsa"]
Profile = Literal["auth", "sign", "tsa", "ocsp"]
PROFILES: tuple[Profile, ...] = ("auth", "sign", "tsa", "ocsp")
KEY_TYPES: tuple[KeyType, ...] = ("ec", "rsa")
DEFAULT_OCSP_URL = "http://127.0.0.1:8888/"
DEFAULT_INSTANCE = "VN-TEST"
PKI_JSON_VERSION = 1

ROOT_DAYS = 20 * 365
INTERMEDIATE_DAYS = 10 * 365
OCSP_DAYS = 5 * 365
DEFAULT_ISSUE_DAYS = 365
BACKDATE = timedelta(minutes=5)

LAYOUT = {
    "root": "root.pem",
    "root_key": "root.key",
    "intermediate": "intermediate.pem",
    "intermediate_key": "intermediate.key",
    "ocsp": "ocsp.pem",
    "ocsp_key": "ocsp.key",
    "index": "index.txt",
    "index_attr": "index.txt.attr",
    "issued": "issued",
    "pki_json": "pki.json",
}

# RFC 5280 reason names as openssl writes them in index.txt.
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "CACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "removeFromCRL": x509.ReasonFlags.remove_from_crl,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "AACompromise": x509.ReasonFlags.aa_compromise,
}
_REASON_NAMES = {flag: name for name, flag in REASONS.items()}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_RE = re.compile(rf"^{_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?$")


# ---------------------------------------------------------------------------------------
# index.txt


def serial_hex(serial: int) -> str:
    """The serial as openssl spells it in index.txt: uppercase hex, an even number of digits."""
    if serial < 0:
        raise ValueError("negative serial numbers are not supported")
    text = format(serial, "X")
    return text if len(text) % 2 == 0 else "0" + text


def parse_serial(text: str) -> int:
    """Parse a hex serial (``0A1B``, ``0x0a1b``, ``0a:1b``)."""
    cleaned = text.strip().replace(":", "")
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise CertificateError(
            f"not a hexadecimal serial number: {text!r}", code="cert.serial_invalid"
        ) from None
    if value < 0:
        raise CertificateError(f"negative serial number: {text!r}", code="cert.serial_invalid")
    return value


def format_index_time(when: datetime) -> str:
    """``YYMMDDHHMMSSZ`` (UTCTime) before 2050, ``YYYYMMDDHHMMSSZ`` from 2050 (as openssl)."""
    when = _utc(when)
    if 1950 <= when.year < 2050:
        return when.strftime("%y%m%d%H%M%SZ")
    return when.strftime("%Y%m%d%H%M%SZ")


def parse_index_time(text: str) -> datetime:
    text = text.strip()
    if len(text) == 13 and text.endswith("Z"):
        parsed = datetime.strptime(text, "%y%m%d%H%M%SZ")
        year = parsed.year if parsed.year < 2050 else parsed.year - 100
        return parsed.replace(year=year, tzinfo=UTC)
    if len(text) == 15 and text.endswith("Z"):
        return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)
    raise ValueError(f"bad time {text!r}")


@dataclass(frozen=True)
class IndexEntry:
    """One line of index.txt."""

    state: str  # "V", "R" or "E"
    expiry: datetime
    serial: int
    subject: str
    revocation_time: datetime | None = None
    revocation_reason: x509.ReasonFlags | None = None
    filename: str = "unknown"

    def to_line(self) -> str:
        rev = ""
        if self.state == "R" and self.revocation_time is not None:
            rev = format_index_time(self.revocation_time)
            if self.revocation_reason is not None:
                rev += "," + _REASON_NAMES[self.revocation_reason]
        return "\t".join(
            (
                self.state,
                format_index_time(self.expiry),
                rev,
                serial_hex(self.serial),
                self.filename,
                self.subject,
            )
        )


def parse_index(text: str) -> dict[int, IndexEntry]:
    """Parse an openssl CA database; raises :class:`CertificateError` (``cert.index_invalid``)."""
    entries: dict[int, IndexEntry] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 6 or fields[0] not in ("V", "R", "E"):
            raise CertificateError(
                f"index.txt line {number} is not a CA database line", code="cert.index_invalid"
            )
        state, expiry_text, rev_text, serial_text, filename = fields[:5]
        subject = "\t".join(fields[5:])
        try:
            expiry = parse_index_time(expiry_text)
            serial = int(serial_text, 16)
            revocation_time: datetime | None = None
            reason: x509.ReasonFlags | None = None
            if state == "R":
                time_text, _, reason_text = rev_text.partition(",")
                revocation_time = parse_index_time(time_text)
                if reason_text:
                    reason = REASONS[reason_text]
        except (ValueError, KeyError) as exc:
            raise CertificateError(f"index.txt line {number}: {exc}", code="cert.index_invalid") from None
        entries[serial] = IndexEntry(state, expiry, serial, subject, revocation_time, reason, filename)
    return entries


def openssl_subject(name: x509.Name) -> str:
    """``/C=VN/O=.../CN=...``: the one-line form openssl writes in index.txt."""
    parts: list[str] = []
    for rdn in name.rdns:
        parts.append("+".join(f"{_attr_short_name(a)}={a.value!s}" for a in rdn))
    return "/" + "/".join(parts) if parts else "/"


_SHORT_NAMES = {
    NameOID.COMMON_NAME: "CN",
    NameOID.COUNTRY_NAME: "C",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.BUSINESS_CATEGORY: "businessCategory",
    NameOID.EMAIL_ADDRESS: "emailAddress",
}


def _attr_short_name(attr: x509.NameAttribute[str | bytes]) -> str:
    return _SHORT_NAMES.get(attr.oid, attr.oid.dotted_string)


class CertStatus(NamedTuple):
    """What the CA database says about a serial."""

    status: Literal["good", "revoked", "unknown"]
    revocation_time: datetime | None
    reason: x509.ReasonFlags | None


def entry_status(entry: IndexEntry | None) -> CertStatus:
    if entry is None:
        return CertStatus("unknown", None, None)
    if entry.state == "R":
        return CertStatus("revoked", entry.revocation_time, entry.revocation_reason)
    return CertStatus("good", None, None)


# ---------------------------------------------------------------------------------------
# helpers


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _now(now: datetime | None) -> datetime:
    return _utc(now) if now is not None else datetime.now(UTC)


def generate_key(key_type: KeyType) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise CertificateError(f"unknown key type {key_type!r} (ec or rsa)", code="cert.key_type_invalid")


def _sign_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write an unencrypted PKCS#8 PEM key, created 0600 (never widened first)."""
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_private_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CertificateError(f"cannot load private key {path}: {exc}", code="cert.key_invalid") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise CertificateError(f"unsupported key type in {path}", code="cert.key_invalid")
    return key


def load_certificate(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read certificate {path}: {exc}", code="cert.unreadable") from None
    return parse_certificate(data, str(path))


def parse_certificate(data: bytes, what: str = "certificate") -> x509.Certificate:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"{what} is not an X.509 certificate: {exc}", code="cert.malformed") from None


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM or DER CSR and check its self-signature (``cert.csr_invalid`` otherwise)."""
    try:
        if b"-----BEGIN" in data:
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise CertificateError(f"not a PKCS#10 certificate request: {exc}", code="cert.csr_invalid") from None
    try:
        valid = csr.is_signature_valid
        public_key = csr.public_key()
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateError(f"unusable certificate request: {exc}", code="cert.csr_invalid") from None
    if not valid:
        raise CertificateError(
            "the certificate request's self-signature does not verify", code="cert.csr_invalid"
        )
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise CertificateError("unsupported public key type in the request", code="cert.csr_invalid")
    if len(csr.subject) == 0:
        raise CertificateError("the certificate request has an empty subject", code="cert.csr_invalid")
    return csr


def _name(instance: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{instance} development PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san_for(common_name: str) -> x509.GeneralName | None:
    try:
        return x509.IPAddress(ipaddress.ip_address(common_name))
    except ValueError:
        pass
    if _DNS_RE.match(common_name) and not common_name.rstrip(".").rsplit(".", 1)[-1].isdigit():
        return x509.DNSName(common_name.rstrip("."))
    return None


# ---------------------------------------------------------------------------------------
# the PKI


class _Paths:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.root = directory / LAYOUT["root"]
        self.root_key = directory / LAYOUT["root_key"]
        self.intermediate = directory / LAYOUT["intermediate"]
        self.intermediate_key = directory / LAYOUT["intermediate_key"]
        self.ocsp = directory / LAYOUT["ocsp"]
        self.ocsp_key = directory / LAYOUT["ocsp_key"]
        self.index = directory / LAYOUT["index"]
        self.index_attr = directory / LAYOUT["index_attr"]
        self.issued = directory / LAYOUT["issued"]
        self.pki_json = directory / LAYOUT["pki_json"]
        self.lock = directory / ".lock"


@dataclass
class Pki:
    """A development PKI on disk.  Create with :func:`init_pki`, open with :meth:`load`."""

    directory: Path
    instance: str
    key_type: KeyType
    ocsp_url: str
    root: x509.Certificate
    intermediate: x509.Certificate
    intermediate_key: PrivateKey = field(repr=False)
    ocsp_cert: x509.Certificate
    ocsp_key: PrivateKey = field(repr=False)

    @property
    def paths(self) -> _Paths:
        return _Paths(self.directory)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Pki:
        paths = _Paths(Path(directory))
        try:
            meta = json.loads(paths.pki_json.read_text("utf-8"))
        except FileNotFoundError:
            raise CertificateError(
                f"{paths.dir} is not a development PKI (no pki.json)", code="cert.pki_missing"
            ) from None
        except (OSError, ValueError) as exc:
            raise CertificateError(f"cannot read {paths.pki_json}: {exc}", code="cert.pki_invalid") from None
        if not isinstance(meta, dict) or meta.get("version") != PKI_JSON_VERSION:
            raise CertificateError(f"{paths.pki_json}: unsupported version", code="cert.pki_invalid")
        return cls(
            directory=paths.dir,
            instance=str(meta.get("instance", DEFAULT_INSTANCE)),
            key_type="rsa" if meta.get("key_type") == "rsa" else "ec",
            ocsp_url=str(meta.get("ocsp_url", DEFAULT_OCSP_URL)),
            root=load_certificate(paths.root),
            intermediate=load_certificate(paths.intermediate),
            intermediate_key=load_private_key(paths.intermediate_key),
            ocsp_cert=load_certificate(paths.ocsp),
            ocsp_key=load_private_key(paths.ocsp_key),
        )

    # -- database -------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def entries(self) -> dict[int, IndexEntry]:
        try:
            text = self.paths.index.read_text("utf-8")
        except OSError as exc:
            raise CertificateError(
                f"cannot read {self.paths.index}: {exc}", code="cert.index_invalid"
            ) from None
        return parse_index(text)

    def _write_entries(self, entries: dict[int, IndexEntry]) -> None:
        text = "".join(e.to_line() + "\n" for e in entries.values())
        _write_atomic(self.paths.index, text.encode("utf-8"))

    def status(self, serial: int | str) -> CertStatus:
        """``("good"|"revoked"|"unknown", revocation_time, reason)`` from index.txt."""
        number = parse_serial(serial) if isinstance(serial, str) else serial
        return entry_status(self.entries().get(number))

    def certificate(self, serial: int | str) -> x509.Certificate:
        number = parse_serial(serial) if isinstance(serial, str) else serial
        path = self.paths.issued / f"{serial_hex(number)}.pem"
        if not path.exists():
            raise CertificateError(
                f"no certificate with serial {serial_hex(number)}", code="cert.unknown_serial"
            )
        return load_certificate(path)

    # -- issuing --------------------------------------------------------------------

    def issue(
        self,
        csr: x509.CertificateSigningRequest | bytes,
        profile: Profile,
        *,
        days: int = DEFAULT_ISSUE_DAYS,
        now: datetime | None = None,
        ocsp_url: str | None = None,
    ) -> x509.Certificate:
        """Issue a certificate for ``csr`` (object, PEM or DER) with the profile's extensions."""
        if isinstance(csr, bytes | bytearray):
            csr = load_csr(bytes(csr))
        elif not csr.is_signature_valid:
            raise CertificateError(
                "the certificate request's self-signature does not verify", code="cert.csr_invalid"
            )
        if profile not in PROFILES:
            raise CertificateError(
                f"unknown profile {profile!r} ({', '.join(PROFILES)})", code="cert.profile_invalid"
            )
        if days < 1:
            raise CertificateError("validity must be at least one day", code="cert.validity_invalid")
        when = _now(now)
        not_before = when - BACKDATE
        not_after = min(when + timedelta(days=days), self.intermediate.not_valid_after_utc)
        if not_after <= when:
            raise CertificateError("the intermediate CA has expired", code="cert.ca_expired")
        public_key = csr.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.intermediate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.intermediate.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        for ext, critical in _profile_extensions(profile, csr):
            builder = builder.add_extension(ext, critical=critical)
        if profile != "ocsp":
            url = ocsp_url or self.ocsp_url
            builder = builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url)
                        )
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(self.intermediate_key, _sign_hash(self.intermediate_key))  # type: ignore[arg-type]
        with self._locked():
            entries = self.entries()
            if cert.serial_number in entries:  # pragma: no cover - 159 random bits
                raise CertificateError("serial number collision, try again", code="cert.serial_collision")
            _write_new(self.paths.issued / f"{serial_hex(cert.serial_number)}.pem", _pem(cert))
            entries[cert.serial_number] = IndexEntry(
                "V", cert.not_valid_after_utc, cert.serial_number, openssl_subject(cert.subject)
            )
            self._write_entries(entries)
        return cert

    def revoke(
        self,
        serial: int | str,
        reason: str | x509.ReasonFlags = "unspecified",
        now: datetime | None = None,
    ) -> IndexEntry:
        """Mark a certificate revoked in index.txt (``cert.unknown_serial``, ``cert.already_revoked``)."""
        number = parse_serial(serial) if isinstance(serial, str) else serial
        if isinstance(reason, x509.ReasonFlags):
            flag = reason
        else:
            try:
                flag = REASONS[reason]
            except KeyError:
                raise CertificateError(
                    f"unknown revocation reason {reason!r} ({', '.join(REASONS)})", code="cert.reason_invalid"
                ) from None
        when = _now(now).replace(microsecond=0)
        with self._locked():
            entries = self.entries()
            entry = entries.get(number)
            if entry is None:
                raise CertificateError(
                    f"no certificate with serial {serial_hex(number)} in {self.paths.index}",
                    code="cert.unknown_serial",
                )
            if entry.state == "R":
                raise CertificateError(
                    f"certificate {serial_hex(number)} is already revoked", code="cert.already_revoked"
                )
            revoked = IndexEntry("R", entry.expiry, entry.serial, entry.subject, when, flag, entry.filename)
            entries[number] = revoked
            self._write_entries(entries)
        return revoked


def _key_usage(
    *,
    digital_signature: bool = False,
    content_commitment: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    """A KeyUsage extension with the named bits set and every other bit clear."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _profile_extensions(
    profile: Profile, csr: x509.CertificateSigningRequest
) -> list[tuple[x509.ExtensionType, bool]]:
    if profile == "auth":
        exts: list[tuple[x509.ExtensionType, bool]] = [
            (_key_usage(digital_signature=True, key_encipherment=True), True),
            (
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                False,
            ),
        ]
        names: list[x509.GeneralName] = []
        for attr in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            san = _san_for(str(attr.value))
            if san is not None:
                names.append(san)
        with contextlib.suppress(x509.ExtensionNotFound):
            requested = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            for name in requested:
                if isinstance(name, x509.DNSName | x509.IPAddress) and name not in names:
                    names.append(name)
        if names:
            exts.append((x509.SubjectAlternativeName(names), False))
        return exts
    if profile == "sign":
        return [(_key_usage(digital_signature=True, content_commitment=True), True)]
    if profile == "tsa":
        return [
            (_key_usage(digital_signature=True), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), True),
        ]
    return [
        (_key_usage(digital_signature=True), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), True),
        (x509.OCSPNoCheck(), False),
    ]


def _ca_cert(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    issuer_key: PrivateKey,
    issuer_public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    path_length: int | None,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            _key_usage(key_cert_sign=True, crl_sign=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)
        .sign(issuer_key, _sign_hash(issuer_key))  # type: ignore[arg-type]
    )


def init_pki(
    directory: str | os.PathLike[str],
    *,
    key_type: KeyType = "ec",
    instance: str = DEFAULT_INSTANCE,
    ocsp_url: str = DEFAULT_OCSP_URL,
    now: datetime | None = None,
) -> Pki:
    """Create a new development PKI in ``directory`` (refuses to overwrite: ``cert.pki_exists``)."""
    if key_type not in KEY_TYPES:
        raise CertificateError(f"unknown key type {key_type!r} (ec or rsa)", code="cert.key_type_invalid")
    paths = _Paths(Path(directory))
    existing = [
        p for p in (paths.pki_json, paths.root, paths.root_key, paths.index, paths.intermediate) if p.exists()
    ]
    if existing:
        raise CertificateError(
            f"{paths.dir} already holds a PKI ({existing[0].name}); refusing to overwrite",
            code="cert.pki_exists",
        )
    if paths.dir.exists() and not paths.dir.is_dir():
        raise CertificateError(f"{paths.dir} exists and is not a directory", code="cert.pki_exists")
    when = _now(now)
    not_before = when - BACKDATE

    root_key = generate_key(key_type)
    root_name = _name(instance, f"{instance} Dev Root CA")
    root = _ca_cert(
        subject=root_name,
        issuer=root_name,
        public_key=root_key.public_key(),
        issuer_key=root_key,
        issuer_public=root_key.public_key(),
        path_length=1,
        not_before=not_before,
        not_after=when + timedelta(days=ROOT_DAYS),
    )
    int_key = generate_key(key_type)
    intermediate = _ca_cert(
        subject=_name(instance, f"{instance} Dev Intermediate CA"),
        issuer=root.subject,
        public_key=int_key.public_key(),
        issuer_key=root_key,
        issuer_public=root_key.public_key(),
        path_length=0,
        not_before=not_before,
        not_after=when + timedelta(days=INTERMEDIATE_DAYS),
    )
    ocsp_key = generate_key(key_type)
    ocsp_public = ocsp_key.public_key()
    ocsp_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(instance, f"{instance} Dev OCSP Responder"))
        .issuer_name(intermediate.subject)
        .public_key(ocsp_public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(when + timedelta(days=OCSP_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(digital_signature=True),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=True)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ocsp_public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(int_key.public_key()), critical=False
        )
        .sign(int_key, hashes.SHA256())
    )

    paths.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(paths.dir, 0o700)
    paths.issued.mkdir(mode=0o700, exist_ok=True)
    write_private_key(paths.root_key, root_key)
    write_private_key(paths.intermediate_key, int_key)
    write_private_key(paths.ocsp_key, ocsp_key)
    _write_new(paths.root, _pem(root))
    _write_new(paths.intermediate, _pem(intermediate))
    _write_new(paths.ocsp, _pem(ocsp_cert))
    _write_new(paths.index, b"")
    _write_new(paths.index_attr, b"unique_subject = no\n")
    meta = {
        "version": PKI_JSON_VERSION,
        "instance": instance,
        "key_type": key_type,
        "ocsp_url": ocsp_url,
        "created": when.isoformat(),
        "files": {name: LAYOUT[name] for name in LAYOUT if name != "pki_json"},
        "subjects": {
            "root": root.subject.rfc4514_string(),
            "intermediate": intermediate.subject.rfc4514_string(),
            "ocsp": ocsp_cert.subject.rfc4514_string(),
        },
        "profiles": list(PROFILES),
    }
    _write_new(paths.pki_json, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return Pki(
        directory=paths.dir,
        instance=instance,
        key_type=key_type,
        ocsp_url=ocsp_url,
        root=root,
        intermediate=intermediate,
        intermediate_key=int_key,
        ocsp_cert=ocsp_cert,
        ocsp_key=ocsp_key,
    )
