# test-case-name: tests.test_csr
"""X-Road member identifiers and certificate profiles (subject names of auth and sign certificates).

A *certificate profile* says which subject a CA puts into the certificates it issues and how
a verifier maps a signing certificate back to the X-Road member that owns it.  The Basic
profile (X-Road's ``BasicCertificateProfileInfoProvider``), with ``C=VN``:

* authentication certificate: ``CN=<server code or DNS name>, serialNumber=<member code>,
  O=<member name>, C=VN``
* signing certificate: ``CN=<member name>, O=<member name>, businessCategory=<member class>,
  serialNumber=<member code>, C=VN``

The attributes are encoded in the order listed (first RDN first), as X-Road builds them.

For *verifying* signatures only the mapping certificate -> member matters; besides Basic the
profiles X-Road instances use for that are available through :func:`sign_profile_for_class`:

* FiVRK (``FiVRKCertificateProfileInfoProvider``, Finland): subject ``C=FI, O=<name>,
  serialNumber=<instance>/<server code>/<member class>, CN=<member code>``; the legacy form
  ``C=FI, O=<instance>, OU=<member class>, CN=<member code>``; and, without either, the
  generic ``C=<instance>, O=<member class>, CN=<member code>``.
* X-Road's test profile (``TestCertificateProfileInfoProvider``, used by the EE test
  configuration): member ``<claimed instance>/BUSINESS/<CN>``.  It proves nothing about the
  owner and is only returned when asked for explicitly (``allow_test=True``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID

from protocols.errors import CertificateError

__all__ = [
    "BASIC_PROFILE_CLASS",
    "BASIC_VN",
    "FIVRK_PROFILE_CLASS",
    "PROFILES",
    "SIGN_PROFILES",
    "TEST_PROFILE_CLASS",
    "BasicProfile",
    "FiVRKProfile",
    "MemberId",
    "SignCertProfile",
    "TestProfile",
    "auth_subject",
    "member_from_sign_cert",
    "profile_for_class",
    "sign_profile_for_class",
    "sign_subject",
]

# X-Road identifier characters we accept: the PrintableString repertoire less '/' and ':'
# (the separators of encoded ids), so every part fits a PrintableString subject attribute.
# A space is accepted inside a part (existing X-Road members such as EE/BUSINESS/Test Org).
_PART = re.compile(r"[A-Za-z0-9'()+,\-.=?]([A-Za-z0-9'()+,\-.=? ]*[A-Za-z0-9'()+,\-.=?])?")
MAX_PART_LENGTH = 64  # ub of serialNumber/CN in X.520; X-Road allows 255 but a CA cannot issue more


def _check_part(what: str, value: str) -> None:
    if not isinstance(value, str) or not _PART.fullmatch(value):
        raise CertificateError(
            f"invalid X-Road {what} {value!r}: use A-Z a-z 0-9 ' ( ) + , - . = ? (spaces only inside)",
            code="cert.member_id_invalid",
        )
    if len(value) > MAX_PART_LENGTH:
        raise CertificateError(f"X-Road {what} {value!r} is longer than {MAX_PART_LENGTH} characters",
                               code="cert.member_id_invalid")


@dataclass(frozen=True, slots=True)
class MemberId:
    """An X-Road member: ``INSTANCE/CLASS/CODE`` (e.g. ``VN/GOV/000.00.00.H41``)."""

    instance: str
    member_class: str
    member_code: str

    def __post_init__(self) -> None:
        _check_part("instance", self.instance)
        _check_part("member class", self.member_class)
        _check_part("member code", self.member_code)

    @classmethod
    def parse(cls, text: str) -> MemberId:
        """Parse ``INSTANCE/CLASS/CODE``; raises ``CertificateError(code="cert.member_id_invalid")``."""
        parts = text.split("/")
        if len(parts) != 3:
            raise CertificateError(f"X-Road member id {text!r} is not INSTANCE/CLASS/CODE",
                                   code="cert.member_id_invalid")
        return cls(parts[0], parts[1], parts[2])

    def __str__(self) -> str:
        return f"{self.instance}/{self.member_class}/{self.member_code}"


_CN_MAX = 64
_O_MAX = 64
_BC_MAX = 128


def _text(what: str, value: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise CertificateError(f"{what} {value!r} must be 1..{limit} characters", code="cert.profile_invalid")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in value):
        raise CertificateError(f"{what} {value!r} contains control characters", code="cert.profile_invalid")
    return value


def _attr(oid: x509.ObjectIdentifier, value: str) -> x509.RelativeDistinguishedName:
    return x509.RelativeDistinguishedName([x509.NameAttribute(oid, value)])


def _single(name: x509.Name, oid: x509.ObjectIdentifier, what: str) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if not values:
        return None
    if len(values) > 1:
        raise CertificateError(f"certificate subject has {len(values)} {what} attributes",
                               code="cert.subject_mismatch", xroad_code="IncorrectCertificate")
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class BasicProfile:
    """X-Road's Basic certificate profile with a fixed country code."""

    country: str = "VN"

    def auth_subject(self, member: MemberId, member_name: str, server: str) -> x509.Name:
        """Subject of an authentication certificate; ``server`` is the server code or DNS name."""
        return x509.Name([
            _attr(NameOID.COMMON_NAME, _text("server code or DNS name", server, _CN_MAX)),
            _attr(NameOID.SERIAL_NUMBER, member.member_code),
            _attr(NameOID.ORGANIZATION_NAME, _text("member name", member_name, _O_MAX)),
            _attr(NameOID.COUNTRY_NAME, self.country),
        ])

    def sign_subject(self, member: MemberId, member_name: str) -> x509.Name:
        """Subject of a signing certificate of ``member``."""
        name = _text("member name", member_name, min(_CN_MAX, _O_MAX))
        return x509.Name([
            _attr(NameOID.COMMON_NAME, name),
            _attr(NameOID.ORGANIZATION_NAME, name),
            _attr(NameOID.BUSINESS_CATEGORY, _text("member class", member.member_class, _BC_MAX)),
            _attr(NameOID.SERIAL_NUMBER, member.member_code),
            _attr(NameOID.COUNTRY_NAME, self.country),
        ])

    def member_from_sign_cert(self, cert: x509.Certificate, instance: str) -> MemberId:
        """The member owning a signing certificate: class = businessCategory, code = serialNumber.

        Raises ``CertificateError(code="cert.subject_mismatch", xroad_code="IncorrectCertificate")``
        when the subject lacks either attribute (or they are not valid identifier parts).
        """
        subject = cert.subject
        member_class = _single(subject, NameOID.BUSINESS_CATEGORY, "businessCategory")
        if member_class is None:
            raise CertificateError("certificate subject name does not contain business category",
                                   code="cert.subject_mismatch", xroad_code="IncorrectCertificate")
        member_code = _single(subject, NameOID.SERIAL_NUMBER, "serialNumber")
        if member_code is None:
            raise CertificateError("certificate subject name does not contain serial number",
                                   code="cert.subject_mismatch", xroad_code="IncorrectCertificate")
        try:
            return MemberId(instance, member_class, member_code)
        except CertificateError as exc:
            raise CertificateError(f"certificate subject does not name a valid member: {exc.message}",
                                   code="cert.subject_mismatch", xroad_code="IncorrectCertificate") from exc

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Z]{2}", self.country):
            raise CertificateError(f"country code {self.country!r} is not two capital letters",
                                   code="cert.profile_invalid")


BASIC_VN = BasicProfile("VN")

#: The class name global configuration (``certificateProfileInfo``) names for the Basic profile.
BASIC_PROFILE_CLASS = "ee.ria.xroad.common.certificateprofile.impl.BasicCertificateProfileInfoProvider"

PROFILES: dict[str, BasicProfile] = {BASIC_PROFILE_CLASS: BASIC_VN}


class SignCertProfile(Protocol):
    """What a signature verifier needs of a certificate profile: the member owning a signing
    certificate (``instance`` is the X-Road instance of the member the message names)."""

    def member_from_sign_cert(self, cert: x509.Certificate, instance: str) -> MemberId: ...


def _incorrect(message: str) -> CertificateError:
    return CertificateError(message, code="cert.subject_mismatch", xroad_code="IncorrectCertificate")


def _member(instance: str, member_class: str, member_code: str) -> MemberId:
    try:
        return MemberId(instance, member_class, member_code)
    except CertificateError as exc:
        raise _incorrect(f"certificate subject does not name a valid member: {exc.message}") from exc


@dataclass(frozen=True, slots=True)
class FiVRKProfile:
    """X-Road's FiVRK profile (``FISubjectClientIdDecoder``); the instance comes from the certificate."""

    def member_from_sign_cert(self, cert: x509.Certificate, instance: str) -> MemberId:
        subject = cert.subject
        serial = _single(subject, NameOID.SERIAL_NUMBER, "serialNumber")
        unit = _single(subject, NameOID.ORGANIZATIONAL_UNIT_NAME, "organizationalUnitName")
        country = _single(subject, NameOID.COUNTRY_NAME, "countryName")
        org = _single(subject, NameOID.ORGANIZATION_NAME, "organizationName")
        cn = _single(subject, NameOID.COMMON_NAME, "commonName")
        if serial is None and unit is None:
            # generic form (X-Road's CertSubjectUtils): C = instance, O = class, CN = code
            if country is None:
                raise _incorrect("certificate subject name does not contain country code")
            if org is None:
                raise _incorrect("certificate subject name does not contain organization")
            if cn is None:
                raise _incorrect("certificate subject name does not contain common name")
            return _member(country, org, cn)
        if country != "FI":
            raise _incorrect("certificate subject name does not contain valid country code")
        if org is None:
            raise _incorrect("certificate subject name does not contain organization")
        if serial is None:
            assert unit is not None
            # legacy form: O = instance, OU = class, CN = code
            if cn is None:
                raise _incorrect("certificate subject name does not contain common name")
            return _member(org, unit, cn)
        if cn is None:
            raise _incorrect("certificate subject name does not contain common name")
        parts = serial.split("/")
        if len(parts) != 3:
            raise _incorrect("certificate subject name's attribute serialNumber has invalid value")
        return _member(parts[0], parts[2], cn)  # parts[1] is the server code


@dataclass(frozen=True, slots=True)
class TestProfile:
    """X-Road's test profile: member ``<instance>/BUSINESS/<CN>``.  For tests only."""

    __test__ = False
    member_class: str = "BUSINESS"

    def member_from_sign_cert(self, cert: x509.Certificate, instance: str) -> MemberId:
        cn = _single(cert.subject, NameOID.COMMON_NAME, "commonName")
        if cn is None:
            raise _incorrect("certificate subject name does not contain common name")
        return _member(instance, self.member_class, cn)


FIVRK_PROFILE_CLASS = "ee.ria.xroad.common.certificateprofile.impl.FiVRKCertificateProfileInfoProvider"
TEST_PROFILE_CLASS = "ee.ria.xroad.common.certificateprofile.impl.TestCertificateProfileInfoProvider"

#: ``certificateProfileInfo`` class name -> the profile used to identify signers.
SIGN_PROFILES: dict[str, SignCertProfile] = {
    BASIC_PROFILE_CLASS: BASIC_VN,
    FIVRK_PROFILE_CLASS: FiVRKProfile(),
}
_TEST_PROFILE = TestProfile()


def sign_profile_for_class(class_name: str, *, allow_test: bool = False) -> SignCertProfile:
    """The signer-identifying profile for a ``certificateProfileInfo`` class name.

    X-Road's test profile is returned only with ``allow_test``.  Raises
    ``CertificateError(code="cert.profile_unknown")`` for any other unknown class.
    """
    profile = SIGN_PROFILES.get(class_name.strip())
    if profile is not None:
        return profile
    if allow_test and class_name.strip() == TEST_PROFILE_CLASS:
        return _TEST_PROFILE
    raise CertificateError(f"unsupported certificate profile {class_name!r}", code="cert.profile_unknown",
                           xroad_code="InternalError")


def profile_for_class(class_name: str) -> BasicProfile:
    """The profile for a ``certificateProfileInfo`` class name of global configuration."""
    try:
        return PROFILES[class_name]
    except KeyError:
        raise CertificateError(f"unsupported certificate profile {class_name!r}",
                               code="cert.profile_unknown") from None


def auth_subject(member: MemberId, member_name: str, server: str) -> x509.Name:
    """Basic-profile (``C=VN``) authentication certificate subject."""
    return BASIC_VN.auth_subject(member, member_name, server)


def sign_subject(member: MemberId, member_name: str) -> x509.Name:
    """Basic-profile (``C=VN``) signing certificate subject."""
    return BASIC_VN.sign_subject(member, member_name)


def member_from_sign_cert(cert: x509.Certificate, instance: str) -> MemberId:
    """The member owning a Basic-profile signing certificate, in X-Road instance ``instance``."""
    return BASIC_VN.member_from_sign_cert(cert, instance)
