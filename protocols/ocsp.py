"""OCSP (RFC 6960) requests and responses, and their verification as X-Road does it.

Pure code: no I/O, no Twisted.  The network side is :mod:`hsm.ocsp`; the development
responder is :mod:`gateway.devocsp`.

Verification (:func:`verify_response`) follows X-Road's ``OcspVerifier``: the response
must be SUCCESSFUL, be about the certificate (CertID: issuer name hash, issuer key hash,
serial), be signed by an authorised responder (the issuer itself, a delegated responder
certificate issued by the issuer with EKU OCSPSigning, or one of the explicitly trusted
responder certificates, which in X-Road come from the approved CA's ``ocspInfo`` in
global configuration), and be fresh: ``thisUpdate`` no older than ``freshness_seconds``
(X-Road's ``ocspFreshnessSeconds``, default 3600) before ``at``, not in the future beyond
the allowed clock skew, and ``nextUpdate`` (when present) not in the past.  Each failure
raises :class:`~protocols.errors.OcspError` with its own code:

``ocsp.malformed``, ``ocsp.unsuccessful``, ``ocsp.cert_mismatch``,
``ocsp.unauthorized_responder``, ``ocsp.signature_invalid``, ``ocsp.nonce_mismatch``,
``ocsp.stale``, ``ocsp.future``, ``ocsp.expired``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID

from protocols.errors import OcspError

CertStatusName = Literal["good", "revoked", "unknown"]
HashName = Literal["sha1", "sha256", "sha384", "sha512"]

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

_STATUS_NAMES: dict[ocsp.OCSPCertStatus, CertStatusName] = {
    ocsp.OCSPCertStatus.GOOD: "good",
    ocsp.OCSPCertStatus.REVOKED: "revoked",
    ocsp.OCSPCertStatus.UNKNOWN: "unknown",
}
_STATUS_VALUES = {name: value for value, name in _STATUS_NAMES.items()}

UNSUCCESSFUL_STATUSES: dict[str, ocsp.OCSPResponseStatus] = {
    "malformedRequest": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
    "internalError": ocsp.OCSPResponseStatus.INTERNAL_ERROR,
    "tryLater": ocsp.OCSPResponseStatus.TRY_LATER,
    "sigRequired": ocsp.OCSPResponseStatus.SIG_REQUIRED,
    "unauthorized": ocsp.OCSPResponseStatus.UNAUTHORIZED,
}
_RESPONSE_STATUS_NAMES = {value: name for name, value in UNSUCCESSFUL_STATUSES.items()}

DEFAULT_FRESHNESS_SECONDS = 3600
DEFAULT_MAX_CLOCK_SKEW_SECONDS = 60

ResponderKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    """The ``cryptography`` hash for ``"sha1"``/``"sha256"``/``"sha384"``/``"sha512"``."""
    try:
        return _HASHES[name.lower().replace("-", "")]()
    except KeyError:
        raise OcspError(f"unsupported CertID hash algorithm {name!r}", code="ocsp.unsupported_hash") from None


def _hash_name(algorithm: hashes.HashAlgorithm) -> str:
    return algorithm.name.replace("-", "")


def public_key_bits(public_key_der: bytes) -> bytes:
    """The ``subjectPublicKey`` BIT STRING contents of a DER SubjectPublicKeyInfo."""
    info = asn1_keys.PublicKeyInfo.load(public_key_der)
    contents: bytes = info["public_key"].contents
    return contents[1:]  # the leading byte counts the unused bits (always 0 for keys)


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class CertId:
    """An OCSP CertID: which certificate a request or single response is about."""

    hash_name: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int


def issuer_hashes(issuer: x509.Certificate, hash_name: str) -> tuple[bytes, bytes]:
    """``(issuerNameHash, issuerKeyHash)`` of a CA certificate for the given hash."""
    name = hashlib.new(hash_name, issuer.subject.public_bytes()).digest()
    key = hashlib.new(hash_name, public_key_bits(_spki(issuer))).digest()
    return name, key


def cert_id(cert: x509.Certificate, issuer: x509.Certificate, hash_name: str = "sha256") -> CertId:
    hash_algorithm(hash_name)
    name_hash, key_hash = issuer_hashes(issuer, hash_name)
    return CertId(hash_name, name_hash, key_hash, cert.serial_number)


# ---------------------------------------------------------------------------------------
# requests


def build_request(
    cert: x509.Certificate, issuer: x509.Certificate, hash_name: str = "sha256", nonce: bytes | None = None
) -> bytes:
    """A DER OCSPRequest for one certificate (CertID hashed with ``hash_name``)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hash_algorithm(hash_name))
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class ParsedRequest:
    cert_id: CertId
    nonce: bytes | None


def parse_request(der: bytes) -> ParsedRequest:
    """Parse a DER OCSPRequest with a single CertID (``ocsp.malformed`` otherwise)."""
    try:
        request = ocsp.load_der_ocsp_request(der)
        algorithm = request.hash_algorithm
        cid = CertId(
            _hash_name(algorithm), request.issuer_name_hash, request.issuer_key_hash, request.serial_number
        )
        nonce: bytes | None = None
        for ext in request.extensions:
            if isinstance(ext.value, x509.OCSPNonce):
                nonce = ext.value.nonce
    except (ValueError, UnsupportedAlgorithm, TypeError) as exc:
        raise OcspError(f"not a usable OCSP request: {exc}", code="ocsp.malformed") from None
    return ParsedRequest(cid, nonce)


# ---------------------------------------------------------------------------------------
# responses (the building side, for the development responder and tests)


def build_response(
    cid: CertId,
    *,
    status: CertStatusName,
    responder_cert: x509.Certificate,
    responder_key: ResponderKey,
    this_update: datetime,
    next_update: datetime | None = None,
    revocation_time: datetime | None = None,
    revocation_reason: x509.ReasonFlags | None = None,
    nonce: bytes | None = None,
    responder_id: Literal["hash", "name"] = "hash",
    certificates: Sequence[x509.Certificate] | None = None,
) -> bytes:
    """A signed, SUCCESSFUL BasicOCSPResponse for one CertID, as DER.

    The responder is identified by key hash (or by name), its certificate is included
    unless ``certificates`` says otherwise, and ``nonce`` (from the request) is echoed.
    """
    if status not in _STATUS_VALUES:
        raise OcspError(f"unknown certificate status {status!r}", code="ocsp.invalid")
    if status == "revoked":
        if revocation_time is None:
            raise OcspError("a revoked status needs a revocation time", code="ocsp.invalid")
    else:
        revocation_time = None
        revocation_reason = None
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=cid.issuer_name_hash,
        issuer_key_hash=cid.issuer_key_hash,
        serial_number=cid.serial_number,
        algorithm=hash_algorithm(cid.hash_name),
        cert_status=_STATUS_VALUES[status],
        this_update=_utc(this_update),
        next_update=_utc(next_update) if next_update is not None else None,
        revocation_time=_utc(revocation_time) if revocation_time is not None else None,
        revocation_reason=revocation_reason,
    )
    encoding = ocsp.OCSPResponderEncoding.HASH if responder_id == "hash" else ocsp.OCSPResponderEncoding.NAME
    builder = builder.responder_id(encoding, responder_cert)
    included = [responder_cert] if certificates is None else list(certificates)
    if included:
        builder = builder.certificates(included)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    algorithm = None if isinstance(responder_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    response = builder.sign(responder_key, algorithm)
    return response.public_bytes(serialization.Encoding.DER)


def build_unsuccessful(status: str) -> bytes:
    """An unsuccessful OCSPResponse (``malformedRequest``, ``unauthorized``, ``internalError``, …)."""
    try:
        value = UNSUCCESSFUL_STATUSES[status]
    except KeyError:
        raise OcspError(f"unknown OCSP response status {status!r}", code="ocsp.invalid") from None
    return ocsp.OCSPResponseBuilder.build_unsuccessful(value).public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------------------------------
# verification


@dataclass(frozen=True)
class OcspStatus:
    """A verified OCSP answer about one certificate."""

    status: CertStatusName
    this_update: datetime
    next_update: datetime | None
    produced_at: datetime
    revocation_time: datetime | None
    revocation_reason: str | None  # RFC 5280 name, e.g. "keyCompromise"
    der: bytes = field(repr=False)

    @property
    def is_good(self) -> bool:
        return self.status == "good"


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def load_response(der: bytes) -> ocsp.OCSPResponse:
    """Parse a DER OCSPResponse (``ocsp.malformed`` otherwise)."""
    try:
        return ocsp.load_der_ocsp_response(der)
    except (ValueError, TypeError) as exc:
        raise OcspError(f"not an OCSP response: {exc}", code="ocsp.malformed") from None


def _matching_single(
    response: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse:
    seen: list[str] = []
    for single in response.responses:
        try:
            name = _hash_name(single.hash_algorithm)
        except UnsupportedAlgorithm:
            continue
        if name not in _HASHES:
            continue
        name_hash, key_hash = issuer_hashes(issuer, name)
        seen.append(format(single.serial_number, "X"))
        if (
            single.serial_number == cert.serial_number
            and single.issuer_name_hash == name_hash
            and single.issuer_key_hash == key_hash
        ):
            return single
    raise OcspError(
        f"the OCSP response is about serial(s) {', '.join(seen) or 'none'} of another issuer or certificate, "
        f"not serial {cert.serial_number:X} of {issuer.subject.rfc4514_string()}",
        code="ocsp.cert_mismatch",
    )


def _signature_ok(response: ocsp.OCSPResponse, signer: x509.Certificate) -> bool:
    public_key = signer.public_key()
    signature = response.signature
    data = response.tbs_response_bytes
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public_key.verify(signature, data)
            return True
        algorithm = response.signature_hash_algorithm
        if algorithm is None:
            return False
        if isinstance(public_key, rsa.RSAPublicKey):
            if response.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
                pad: padding.AsymmetricPadding = padding.PSS(
                    mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO
                )
            else:
                pad = padding.PKCS1v15()
            public_key.verify(signature, data, pad, algorithm)
            return True
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(algorithm))
            return True
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return False


def _valid_at(cert: x509.Certificate, at: datetime) -> bool:
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


def _authorisation_problem(
    signer: x509.Certificate,
    issuer: x509.Certificate,
    trusted: Sequence[x509.Certificate],
    at: datetime,
) -> str | None:
    """``None`` when ``signer`` may answer for certificates of ``issuer``, else why not."""
    if _spki(signer) == _spki(issuer):
        return None  # the CA signs its own responses
    signer_der = signer.public_bytes(serialization.Encoding.DER)
    for candidate in trusted:
        if candidate.public_bytes(serialization.Encoding.DER) == signer_der:
            if not _valid_at(signer, at):
                return f"trusted responder certificate {signer.subject.rfc4514_string()} is not valid at {at}"
            return None
    if signer.issuer != issuer.subject:
        return f"responder {signer.subject.rfc4514_string()} is neither the issuer nor issued by it"
    try:
        signer.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return f"responder certificate {signer.subject.rfc4514_string()} is not signed by the issuer"
    try:
        eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return (
            f"responder certificate {signer.subject.rfc4514_string()} has no extended key usage OCSPSigning"
        )
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        return f"responder certificate {signer.subject.rfc4514_string()} lacks extended key usage OCSPSigning"
    if not _valid_at(signer, at):
        return f"responder certificate {signer.subject.rfc4514_string()} is not valid at {at.isoformat()}"
    return None


def same_name(a: x509.Name, b: x509.Name) -> bool:
    """Names equal as sets of attributes, whatever the order of their RDNs (X-Road's Java
    library compares ``ResponderID`` names this way, and real responses rely on it)."""
    if a == b:
        return True
    return sorted(rdn.rfc4514_string() for rdn in a.rdns) == sorted(rdn.rfc4514_string() for rdn in b.rdns)


def _responder_candidates(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, trusted: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    pool = [issuer, *trusted, *response.certificates]
    key_hash = response.responder_key_hash
    name = response.responder_name
    found: list[x509.Certificate] = []
    for cert in pool:
        if key_hash is not None:
            matches = hashlib.sha1(public_key_bits(_spki(cert))).digest() == key_hash  # noqa: S324 - RFC 6960
        else:
            matches = name is not None and same_name(cert.subject, name)
        if matches and cert not in found:
            found.append(cert)
    return found


def verify_response(
    der: bytes,
    *,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    at: datetime,
    freshness_seconds: float = DEFAULT_FRESHNESS_SECONDS,
    trusted_responders: Sequence[x509.Certificate] = (),
    nonce: bytes | None = None,
    max_clock_skew_seconds: float = DEFAULT_MAX_CLOCK_SKEW_SECONDS,
) -> OcspStatus:
    """Verify an OCSP response about ``cert`` (issued by ``issuer``) at time ``at``.

    Returns the status (good, revoked or unknown are all *valid* answers); raises
    :class:`OcspError` with a specific code when the response cannot be relied on.
    """
    at = _utc(at)
    response = load_response(der)
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        name = _RESPONSE_STATUS_NAMES.get(response.response_status, response.response_status.name)
        raise OcspError(f"the OCSP responder answered {name}", code="ocsp.unsuccessful")
    try:
        single = _matching_single(response, cert, issuer)
        candidates = _responder_candidates(response, issuer, trusted_responders)
    except (ValueError, TypeError) as exc:
        raise OcspError(f"not a usable OCSP response: {exc}", code="ocsp.malformed") from None

    # Responder: find a certificate matching the ResponderID that signed the response and
    # is authorised for this issuer.
    problems: list[str] = []
    bad_signature = False
    signer: x509.Certificate | None = None
    for candidate in candidates:
        problem = _authorisation_problem(candidate, issuer, trusted_responders, at)
        if not _signature_ok(response, candidate):
            if problem is None:
                bad_signature = True
            problems.append(f"signature does not verify with {candidate.subject.rfc4514_string()}")
            continue
        if problem is not None:
            problems.append(problem)
            continue
        signer = candidate
        break
    if signer is None:
        if bad_signature:
            raise OcspError("the OCSP response signature does not verify", code="ocsp.signature_invalid")
        detail = "; ".join(problems) if problems else "no certificate matches the responder id"
        raise OcspError(f"the OCSP responder is not authorised: {detail}", code="ocsp.unauthorized_responder")

    if nonce is not None:
        got: bytes | None = None
        for ext in response.extensions:
            if isinstance(ext.value, x509.OCSPNonce):
                got = ext.value.nonce
        if got != nonce:
            what = "no nonce" if got is None else "a different nonce"
            raise OcspError(f"the OCSP response carries {what} than the request", code="ocsp.nonce_mismatch")

    this_update = single.this_update_utc
    next_update = single.next_update_utc
    if this_update < at - timedelta(seconds=freshness_seconds):
        raise OcspError(
            f"OCSP response is too old: thisUpdate {this_update.isoformat()} is more than "
            f"{freshness_seconds:g} s before {at.isoformat()}",
            code="ocsp.stale",
        )
    if this_update > at + timedelta(seconds=max_clock_skew_seconds):
        raise OcspError(
            f"OCSP response is from the future: thisUpdate {this_update.isoformat()} "
            f"is after {at.isoformat()}",
            code="ocsp.future",
        )
    if next_update is not None and next_update < at:
        raise OcspError(
            f"OCSP response has expired: nextUpdate {next_update.isoformat()} is before {at.isoformat()}",
            code="ocsp.expired",
        )

    status = _STATUS_NAMES[single.certificate_status]
    reason = single.revocation_reason.value if single.revocation_reason is not None else None
    return OcspStatus(
        status=status,
        this_update=this_update,
        next_update=next_update,
        produced_at=response.produced_at_utc,
        revocation_time=single.revocation_time_utc,
        revocation_reason=reason,
        der=bytes(der),
    )
