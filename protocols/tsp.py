"""RFC 3161 time-stamp protocol: requests, response verification and a token builder.

Pure code (asn1crypto + cryptography, no I/O).  Three parts:

* **client side**: :func:`build_request` makes a ``TimeStampReq``;
  :func:`verify_response` checks a ``TimeStampResp`` against the query and the
  configured TSA certificates (X-Road's ``approvedTSA`` list) and returns a
  :class:`TimestampToken`; :func:`verify_token` does the same for a stored token
  (a CMS ``ContentInfo``), e.g. one read back from a message-log archive.
* **TSA side** (our development TSA): :class:`TsaProfile` pre-encodes everything that
  does not change between tokens (certificates, ESSCertIDv2 attribute, algorithm
  identifiers); :meth:`TsaProfile.prepare` parses a query and returns a
  :class:`PreparedResponse` whose ``signed_attrs_digest`` the private key signs
  (through a :class:`hsm.interfaces.DigestSigner`) and whose ``finish(signature)``
  yields the ``TimeStampResp`` DER.  The CMS structure is assembled from pre-encoded
  DER, not re-encoded through asn1crypto (PLATFORM-NOTES §4).
* :func:`rejection` encodes an unsuccessful ``TimeStampResp``.

Every failure is a :class:`~protocols.errors.TimestampError` with a ``tsa.*`` code:
``tsa.malformed``, ``tsa.rejected``, ``tsa.imprint_mismatch``, ``tsa.nonce_mismatch``,
``tsa.signature_invalid``, ``tsa.unknown_signer``, ``tsa.certificate_invalid``;
queries a TSA refuses raise :class:`TimestampQueryRejected` (``tsa.query_rejected``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from protocols.errors import TimestampError

__all__ = [
    "DEFAULT_ACCEPTED_HASHES",
    "PreparedResponse",
    "TimestampQueryRejected",
    "TimestampToken",
    "TsaProfile",
    "build_request",
    "build_tst_info",
    "check_tsa_certificate",
    "prepare_response",
    "rejection",
    "verify_response",
    "verify_token",
]

# ---------------------------------------------------------------------------------------------
# Algorithms
# ---------------------------------------------------------------------------------------------

_HASH_OIDS: Final[dict[str, str]] = {
    "sha1": "1.3.14.3.2.26",
    "sha224": "2.16.840.1.101.3.4.2.4",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}
_HASH_BY_OID: Final[dict[str, str]] = {oid: name for name, oid in _HASH_OIDS.items()}
_HASH_CLASSES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_ECDSA_OIDS: Final[dict[str, str]] = {
    "sha1": "1.2.840.10045.4.1",
    "sha224": "1.2.840.10045.4.3.1",
    "sha256": "1.2.840.10045.4.3.2",
    "sha384": "1.2.840.10045.4.3.3",
    "sha512": "1.2.840.10045.4.3.4",
}

#: Hash algorithms our TSA accepts in a query's message imprint (others: ``badAlg``).
DEFAULT_ACCEPTED_HASHES: Final[tuple[str, ...]] = ("sha256", "sha384", "sha512")

_OID_TST_INFO: Final = "1.2.840.113549.1.9.16.1.4"
_OID_SIGNED_DATA: Final = "1.2.840.113549.1.7.2"
_OID_CONTENT_TYPE: Final = "1.2.840.113549.1.9.3"
_OID_MESSAGE_DIGEST: Final = "1.2.840.113549.1.9.4"
_OID_RSA_ENCRYPTION: Final = "1.2.840.113549.1.1.1"
_OID_EC_PUBLIC_KEY: Final = "1.2.840.10045.2.1"

_MALFORMED_ERRORS: Final = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError)


def _norm_hash(hash_name: str) -> str:
    name = hash_name.lower().replace("-", "").replace("_", "")
    if name not in _HASH_OIDS:
        raise ValueError(f"unsupported hash algorithm {hash_name!r}")
    return name


def _hash(name: str, data: bytes) -> bytes:
    return hashlib.new(name, data).digest()


def _hash_size(name: str) -> int:
    return hashlib.new(name).digest_size


# ---------------------------------------------------------------------------------------------
# Minimal DER writer (for the hot path of the TSA)
# ---------------------------------------------------------------------------------------------


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _der_len(len(content)) + content


def _der_int(n: int) -> bytes:
    if n < 0:
        raise ValueError("negative INTEGER not used here")
    return _tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def _der_oid(dotted: str) -> bytes:
    return bytes(core.ObjectIdentifier(dotted).dump())


def _der_gentime(t: datetime) -> bytes:
    if t.tzinfo is None:
        raise ValueError("gen_time must be timezone-aware")
    t = t.astimezone(UTC)
    text = t.strftime("%Y%m%d%H%M%S")
    if t.microsecond:
        text += "." + f"{t.microsecond:06d}".rstrip("0")
    return _tlv(0x18, (text + "Z").encode("ascii"))


def _alg_id(oid: str, null_params: bool = False) -> bytes:
    return _tlv(0x30, _der_oid(oid) + (b"\x05\x00" if null_params else b""))


def _set_of(items: Sequence[bytes]) -> bytes:
    return _tlv(0x31, b"".join(sorted(items)))


_DER_TST_INFO_OID: Final = _der_oid(_OID_TST_INFO)
_DER_SIGNED_DATA_OID: Final = _der_oid(_OID_SIGNED_DATA)
_DER_CONTENT_TYPE_ATTR: Final = _tlv(0x30, _der_oid(_OID_CONTENT_TYPE) + _tlv(0x31, _DER_TST_INFO_OID))
_DER_MESSAGE_DIGEST_OID: Final = _der_oid(_OID_MESSAGE_DIGEST)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def _fail(reason: str, message: str) -> TimestampError:
    return TimestampError(message, code=f"tsa.{reason}")


class TimestampQueryRejected(TimestampError):
    """Our TSA refuses a query.  ``fail_info`` is an asn1crypto PKIFailureInfo bit name
    (``bad_alg``, ``bad_request``, ``bad_data_format``, ``unaccepted_policy``,
    ``unaccepted_extensions``, ``system_failure``)."""

    code = "tsa.query_rejected"

    def __init__(self, fail_info: str, message: str) -> None:
        super().__init__(message)
        self.fail_info = fail_info


# ---------------------------------------------------------------------------------------------
# Client side: request and verification
# ---------------------------------------------------------------------------------------------


def build_request(
    digest: bytes,
    hash_name: str,
    *,
    nonce: int | None,
    cert_req: bool = True,
    policy: str | None = None,
) -> bytes:
    """A DER ``TimeStampReq`` for ``digest`` (already hashed with ``hash_name``).

    The imprint's AlgorithmIdentifier carries NULL parameters, as OpenSSL and
    BouncyCastle (X-Road) write it.  ``ValueError`` on an unknown hash or a digest of
    the wrong length (programming errors).
    """
    name = _norm_hash(hash_name)
    if len(digest) != _hash_size(name):
        raise ValueError(f"{name} digest must be {_hash_size(name)} bytes, got {len(digest)}")
    if nonce is not None and nonce < 0:
        raise ValueError("nonce must be non-negative")
    imprint = _tlv(0x30, _alg_id(_HASH_OIDS[name], null_params=True) + _tlv(0x04, digest))
    body = _der_int(1) + imprint
    if policy is not None:
        body += _der_oid(policy)
    if nonce is not None:
        body += _der_int(nonce)
    if cert_req:
        body += b"\x01\x01\xff"
    return _tlv(0x30, body)


@dataclass(frozen=True)
class TimestampToken:
    """A verified time-stamp token.

    ``token_der`` is the CMS ``ContentInfo`` exactly as the TSA sent it (what X-Road
    stores as ``timestamp.tst``); ``signer_cert`` is the configured TSA certificate
    that signed it.
    """

    gen_time: datetime
    serial: int
    policy: str
    hash_name: str
    imprint: bytes
    nonce: int | None
    token_der: bytes
    signer_cert: x509.Certificate = field(repr=False)


class _TimeStampResp(core.Sequence):  # type: ignore[misc]
    """``TimeStampResp`` with the token OPTIONAL, as RFC 3161 has it."""

    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


def _status_text(status_info: Any) -> str:
    status = status_info["status"].native
    fail = status_info["fail_info"]
    fail_text = ",".join(sorted(fail.native)) if fail.native else "none"
    strings = status_info["status_string"].native or []
    text = "; ".join(str(s) for s in strings)
    return f"status {status}, failInfo {fail_text}" + (f", statusString {text!r}" if text else "")


def verify_response(
    response_der: bytes,
    *,
    digest: bytes,
    hash_name: str,
    nonce: int | None,
    tsa_certs: Sequence[x509.Certificate],
    at: datetime | None = None,
) -> TimestampToken:
    """Verify a ``TimeStampResp`` against the query it answers.

    Checks, in order: the PKI status (granted / grantedWithMods, else ``tsa.rejected``),
    then everything :func:`verify_token` checks, with the nonce required to be echoed
    when one was sent.  ``at`` (usually the caller's clock) additionally requires the
    TSA certificate to be valid at that instant.
    """
    try:
        resp = _TimeStampResp.load(response_der, strict=True)
        status_info = resp["status"]
        status = status_info["status"].native
        text = _status_text(status_info)
        token = resp["time_stamp_token"]
        token_der = None if isinstance(token, core.Void) else bytes(token.dump())
    except _MALFORMED_ERRORS as exc:
        raise _fail("malformed", f"response is not a DER TimeStampResp: {exc}") from None
    if status not in ("granted", "granted_with_mods"):
        raise _fail("rejected", f"TSA rejected the request: {text}")
    if token_der is None:
        raise _fail("malformed", f"response has {text} but no timeStampToken")
    return _verify(
        token_der, digest=digest, hash_name=hash_name, nonce=nonce, nonce_required=True,
        tsa_certs=tsa_certs, at=at,
    )


def verify_token(
    token_der: bytes,
    *,
    digest: bytes,
    hash_name: str,
    tsa_certs: Sequence[x509.Certificate],
    nonce: int | None = None,
    at: datetime | None = None,
) -> TimestampToken:
    """Verify a stored time-stamp token (CMS ``ContentInfo``), e.g. ``timestamp.tst``.

    Checks the content type (id-ct-TSTInfo), the message imprint (``digest`` made
    with ``hash_name``), the nonce when given, the content-type and message-digest
    signed attributes, that the signer is one of ``tsa_certs`` (SignerIdentifier and
    ESSCertID / ESSCertIDv2), the signature (RSA PKCS#1 v1.5, RSA-PSS or ECDSA), the
    signer certificate's critical timeStamping-only EKU, and that genTime lies in its
    validity (and ``at`` too when given).
    """
    return _verify(
        token_der, digest=digest, hash_name=hash_name, nonce=nonce, nonce_required=nonce is not None,
        tsa_certs=tsa_certs, at=at,
    )


@dataclass
class _Parsed:
    token_der: bytes
    tst_der: bytes
    version: int
    policy: str
    imprint_hash_oid: str
    imprint: bytes
    serial: int
    gen_time: datetime
    nonce: int | None
    digest_hash: str
    signed_attrs_der: bytes
    attr_content_types: list[str]
    attr_message_digests: list[bytes]
    ess_v1_hashes: list[bytes]
    ess_v2: list[tuple[str, bytes]]
    sid_issuer: str | None
    sid_serial: int | None
    sid_ski: bytes | None
    sig_algo: str
    sig_hash: str
    pss_salt: int
    pss_mgf_hash: str
    signature: bytes


def _parse_token(token_der: bytes) -> _Parsed:
    try:
        ci = cms.ContentInfo.load(token_der, strict=True)
        if ci["content_type"].dotted != _OID_SIGNED_DATA:
            raise _fail("malformed", f"token content type is {ci['content_type'].dotted}, not signedData")
        sd = ci["content"]
        eci = sd["encap_content_info"]
        if eci["content_type"].dotted != _OID_TST_INFO:
            raise _fail(
                "malformed", f"encapsulated content type is {eci['content_type'].dotted}, not id-ct-TSTInfo"
            )
        content = eci["content"]
        if isinstance(content, core.Void):
            raise _fail("malformed", "token has no encapsulated TSTInfo")
        tst_der = bytes(content.__bytes__())
        tst = tsp.TSTInfo.load(tst_der, strict=True)
        imprint = tst["message_imprint"]
        tst_nonce = tst["nonce"].native
        signer_infos = sd["signer_infos"]
        if len(signer_infos) != 1:
            raise _fail("malformed", f"token has {len(signer_infos)} SignerInfos, expected 1")
        si = signer_infos[0]
        signed_attrs = si["signed_attrs"]
        if isinstance(signed_attrs, core.Void) or len(signed_attrs) == 0:
            raise _fail("malformed", "SignerInfo has no signed attributes")
        raw_attrs = bytes(signed_attrs.dump())
        signed_attrs_der = b"\x31" + raw_attrs[1:]
        content_types: list[str] = []
        digests: list[bytes] = []
        ess1: list[bytes] = []
        ess2: list[tuple[str, bytes]] = []
        for attr in signed_attrs:
            kind = attr["type"].native
            values = attr["values"]
            if kind == "content_type":
                content_types.extend(v.dotted for v in values)
            elif kind == "message_digest":
                digests.extend(bytes(v.native) for v in values)
            elif kind == "signing_certificate":
                for sc in values:
                    ess1.extend(bytes(c["cert_hash"].native) for c in sc["certs"])
            elif kind == "signing_certificate_v2":
                for sc in values:
                    for c in sc["certs"]:
                        ess2.append((c["hash_algorithm"]["algorithm"].dotted, bytes(c["cert_hash"].native)))
        sid = si["sid"]
        sid_issuer: str | None = None
        sid_serial: int | None = None
        sid_ski: bytes | None = None
        if sid.name == "issuer_and_serial_number":
            sid_issuer = sid.chosen["issuer"].hashable  # normalised form; forces the parse here
            sid_serial = int(sid.chosen["serial_number"].native)
        else:
            sid_ski = bytes(sid.chosen.native)
        sig_alg = si["signature_algorithm"]
        sig_oid = sig_alg["algorithm"].dotted
        digest_oid = si["digest_algorithm"]["algorithm"].dotted
        if digest_oid not in _HASH_BY_OID:
            raise _fail("signature_invalid", f"unsupported SignerInfo digest algorithm {digest_oid}")
        digest_hash = _HASH_BY_OID[digest_oid]
        pss_salt = 0
        pss_mgf = ""
        if sig_oid in (_OID_RSA_ENCRYPTION, _OID_EC_PUBLIC_KEY):
            # plain rsaEncryption / id-ecPublicKey: the hash is the SignerInfo's digest algorithm
            sig_algo = "rsassa_pkcs1v15" if sig_oid == _OID_RSA_ENCRYPTION else "ecdsa"
            sig_hash = digest_hash
        else:
            sig_algo = sig_alg.signature_algo
            if sig_algo == "rsassa_pss":
                params = sig_alg["parameters"]
                sig_hash = _norm_hash(params["hash_algorithm"]["algorithm"].native)
                pss_salt = int(params["salt_length"].native)
                mgf = params["mask_gen_algorithm"]
                if mgf["algorithm"].native != "mgf1":
                    raise _fail("signature_invalid", f"unsupported PSS mask {mgf['algorithm'].dotted}")
                pss_mgf = _norm_hash(mgf["parameters"]["algorithm"].native)
            else:
                sig_hash = _norm_hash(sig_alg.hash_algo)
        gen_time = tst["gen_time"].native
        if not isinstance(gen_time, datetime):
            raise _fail("malformed", "genTime is out of range")
        return _Parsed(
            token_der=token_der,
            tst_der=tst_der,
            version=1 if tst["version"].native == "v1" else 0,
            policy=tst["policy"].dotted,
            imprint_hash_oid=imprint["hash_algorithm"]["algorithm"].dotted,
            imprint=bytes(imprint["hashed_message"].native),
            serial=int(tst["serial_number"].native),
            gen_time=gen_time,
            nonce=None if tst_nonce is None else int(tst_nonce),
            digest_hash=digest_hash,
            signed_attrs_der=signed_attrs_der,
            attr_content_types=content_types,
            attr_message_digests=digests,
            ess_v1_hashes=ess1,
            ess_v2=ess2,
            sid_issuer=sid_issuer,
            sid_serial=sid_serial,
            sid_ski=sid_ski,
            sig_algo=sig_algo,
            sig_hash=sig_hash,
            pss_salt=pss_salt,
            pss_mgf_hash=pss_mgf,
            signature=bytes(si["signature"].native),
        )
    except TimestampError:
        raise
    except _MALFORMED_ERRORS as exc:
        raise _fail("malformed", f"time-stamp token does not parse: {exc}") from None


@dataclass(frozen=True)
class _Candidate:
    cert: x509.Certificate
    der: bytes
    issuer: str
    serial: int
    ski: bytes | None


def _candidate(cert: x509.Certificate) -> _Candidate:
    der = cert.public_bytes(Encoding.DER)
    ac = asn1_x509.Certificate.load(der)
    ski = ac.key_identifier
    return _Candidate(cert=cert, der=der, issuer=ac.issuer.hashable, serial=cert.serial_number,
                      ski=None if ski is None else bytes(ski))


def _find_signer(p: _Parsed, tsa_certs: Sequence[x509.Certificate]) -> x509.Certificate:
    if not tsa_certs:
        raise _fail("unknown_signer", "no TSA certificates configured")
    has_ess = bool(p.ess_v1_hashes or p.ess_v2)
    for cert in tsa_certs:
        c = _candidate(cert)
        if p.sid_ski is not None:
            sid_match = c.ski is not None and c.ski == p.sid_ski
        else:
            sid_match = c.serial == p.sid_serial and c.issuer == p.sid_issuer
        ess_match = _hash("sha1", c.der) in p.ess_v1_hashes or any(
            oid in _HASH_BY_OID and _hash(_HASH_BY_OID[oid], c.der) == h for oid, h in p.ess_v2
        )
        if sid_match and (ess_match or not has_ess):
            return cert
    names = ", ".join(c.subject.rfc4514_string() for c in tsa_certs)
    raise _fail("unknown_signer", f"token is not signed by a configured TSA certificate ({names})")


def check_tsa_certificate(cert: x509.Certificate, at: datetime | None = None) -> None:
    """Raise ``tsa.certificate_invalid`` unless ``cert`` has a critical extended key
    usage of exactly id-kp-timeStamping (RFC 3161 §2.3) and, when ``at`` is given,
    is valid at that instant."""
    subject = cert.subject.rfc4514_string()
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        raise _fail("certificate_invalid", f"TSA certificate {subject} has no extended key usage") from None
    if not eku.critical:
        raise _fail("certificate_invalid", f"TSA certificate {subject}: extended key usage is not critical")
    if list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise _fail(
            "certificate_invalid",
            f"TSA certificate {subject}: extended key usage must be timeStamping only",
        )
    if at is not None and not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise _fail(
            "certificate_invalid",
            f"TSA certificate {subject} is not valid at {at.isoformat()} "
            f"(valid {cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()})",
        )


def _verify_signature(p: _Parsed, cert: x509.Certificate) -> None:
    key = cert.public_key()
    data = p.signed_attrs_der
    try:
        algo = _HASH_CLASSES[p.sig_hash]()
        if p.sig_algo == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(p.signature, data, padding.PKCS1v15(), algo)
        elif p.sig_algo == "rsassa_pss" and isinstance(key, rsa.RSAPublicKey):
            mgf = padding.MGF1(_HASH_CLASSES[p.pss_mgf_hash]())
            key.verify(p.signature, data, padding.PSS(mgf=mgf, salt_length=p.pss_salt), algo)
        elif p.sig_algo == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(p.signature, data, ec.ECDSA(algo))
        else:
            raise _fail(
                "signature_invalid",
                f"signature algorithm {p.sig_algo} does not fit the TSA key ({type(key).__name__})",
            )
    except InvalidSignature:
        raise _fail("signature_invalid", "signature over the signed attributes does not verify") from None
    except (ValueError, UnsupportedAlgorithm) as exc:  # e.g. a negative PSS salt length
        raise _fail("signature_invalid", f"signature parameters unusable: {exc}") from None


def _verify(
    token_der: bytes,
    *,
    digest: bytes,
    hash_name: str,
    nonce: int | None,
    nonce_required: bool,
    tsa_certs: Sequence[x509.Certificate],
    at: datetime | None,
) -> TimestampToken:
    name = _norm_hash(hash_name)
    p = _parse_token(token_der)
    if p.version != 1:
        raise _fail("malformed", "TSTInfo version is not v1")
    if p.imprint_hash_oid != _HASH_OIDS[name]:
        raise _fail(
            "imprint_mismatch",
            f"token imprint uses {_HASH_BY_OID.get(p.imprint_hash_oid, p.imprint_hash_oid)}, expected {name}",
        )
    if p.imprint != digest:
        raise _fail("imprint_mismatch", "token message imprint differs from the data's digest")
    if nonce_required and p.nonce != nonce:
        raise _fail("nonce_mismatch", f"token nonce {p.nonce} differs from the request nonce {nonce}")
    if p.attr_content_types != [_OID_TST_INFO]:
        raise _fail("malformed", "content-type signed attribute missing or not id-ct-TSTInfo")
    if len(p.attr_message_digests) != 1:
        raise _fail("malformed", "message-digest signed attribute missing or repeated")
    if p.attr_message_digests[0] != _hash(p.digest_hash, p.tst_der):
        raise _fail("signature_invalid", "message-digest attribute does not match the TSTInfo")
    cert = _find_signer(p, tsa_certs)
    _verify_signature(p, cert)
    check_tsa_certificate(cert)
    if not cert.not_valid_before_utc <= p.gen_time <= cert.not_valid_after_utc:
        raise _fail(
            "certificate_invalid",
            f"genTime {p.gen_time.isoformat()} is outside the TSA certificate's validity",
        )
    if at is not None:
        check_tsa_certificate(cert, at)
    return TimestampToken(
        gen_time=p.gen_time,
        serial=p.serial,
        policy=p.policy,
        hash_name=name,
        imprint=p.imprint,
        nonce=p.nonce,
        token_der=p.token_der,
        signer_cert=cert,
    )


# ---------------------------------------------------------------------------------------------
# TSA side
# ---------------------------------------------------------------------------------------------


def build_tst_info(
    *,
    policy_oid: str,
    imprint_der: bytes,
    serial: int,
    gen_time: datetime,
    nonce: int | None = None,
    accuracy_seconds: int | None = None,
    tsa_name_der: bytes | None = None,
) -> bytes:
    """DER ``TSTInfo``.  ``imprint_der`` is the encoded ``MessageImprint`` (copied
    from the query, RFC 3161 §2.4.2); ``tsa_name_der`` an encoded Name."""
    body = b"\x02\x01\x01" + _der_oid(policy_oid) + imprint_der + _der_int(serial) + _der_gentime(gen_time)
    if accuracy_seconds is not None:
        body += _tlv(0x30, _der_int(accuracy_seconds))
    if nonce is not None:
        body += _der_int(nonce)
    if tsa_name_der is not None:
        body += _tlv(0xA0, _tlv(0xA4, tsa_name_der))
    return _tlv(0x30, body)


def _message_imprint_der(hash_name: str, digest: bytes) -> bytes:
    return _tlv(0x30, _alg_id(_HASH_OIDS[hash_name], null_params=True) + _tlv(0x04, digest))


class TsaProfile:
    """Everything about our TSA that does not change from token to token, pre-encoded.

    ``mechanism`` is the :class:`~hsm.interfaces.DigestSigner` mechanism
    (``rsa-pkcs1``, ``rsa-pss``; EC keys always use ``ecdsa``); ``hash_name`` the
    hash of the signed attributes.  The certificate must carry the critical
    timeStamping-only EKU (``tsa.certificate_invalid`` otherwise).
    """

    def __init__(
        self,
        tsa_cert: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
        *,
        policy_oid: str,
        hash_name: str = "sha256",
        mechanism: str | None = None,
        accuracy_seconds: int | None = 1,
        include_tsa_name: bool = True,
        accepted_hashes: Sequence[str] = DEFAULT_ACCEPTED_HASHES,
    ) -> None:
        check_tsa_certificate(tsa_cert)
        self.tsa_cert = tsa_cert
        self.policy_oid = policy_oid
        self.hash_name = _norm_hash(hash_name)
        self.accuracy_seconds = accuracy_seconds
        self.accepted_hashes = frozenset(_norm_hash(h) for h in accepted_hashes)
        key = tsa_cert.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            self.mechanism = "ecdsa"
            sig_alg = _alg_id(_ECDSA_OIDS[self.hash_name])
        elif isinstance(key, rsa.RSAPublicKey):
            self.mechanism = mechanism or "rsa-pkcs1"
            if self.mechanism == "rsa-pkcs1":
                sig_alg = _alg_id(_OID_RSA_ENCRYPTION, null_params=True)
            elif self.mechanism == "rsa-pss":
                sig_alg = bytes(
                    algos.SignedDigestAlgorithm(
                        {
                            "algorithm": "rsassa_pss",
                            "parameters": {
                                "hash_algorithm": {"algorithm": self.hash_name},
                                "mask_gen_algorithm": {
                                    "algorithm": "mgf1",
                                    "parameters": {"algorithm": self.hash_name},
                                },
                                "salt_length": _hash_size(self.hash_name),
                            },
                        }
                    ).dump()
                )
            else:
                raise ValueError(f"unsupported RSA mechanism {self.mechanism!r}")
        else:
            raise _fail("certificate_invalid", "TSA key must be RSA or EC")
        if mechanism is not None and mechanism != self.mechanism:
            raise ValueError(f"mechanism {mechanism!r} does not fit the TSA key")
        cert_der = tsa_cert.public_bytes(Encoding.DER)
        ac = asn1_x509.Certificate.load(cert_der)
        self._sig_alg = sig_alg
        self._digest_alg = _alg_id(_HASH_OIDS[self.hash_name])
        self._sid = _tlv(0x30, bytes(ac.issuer.dump()) + _der_int(tsa_cert.serial_number))
        self._tsa_name = bytes(ac.subject.dump()) if include_tsa_name else None
        ess = tsp.SigningCertificateV2(
            {
                "certs": [
                    {
                        "cert_hash": _hash("sha256", cert_der),
                        "issuer_serial": {
                            "issuer": [asn1_x509.GeneralName({"directory_name": ac.issuer})],
                            "serial_number": tsa_cert.serial_number,
                        },
                    }
                ]
            }
        )
        self._ess_attr = bytes(
            cms.CMSAttribute({"type": "signing_certificate_v2", "values": [ess]}).dump()
        )
        certs = [cert_der] + [c.public_bytes(Encoding.DER) for c in chain]
        self._certificates = _tlv(0xA0, b"".join(sorted(certs)))

    def prepare(self, request_der: bytes, *, serial: int, gen_time: datetime) -> PreparedResponse:
        """Parse and check a ``TimeStampReq``; raise :class:`TimestampQueryRejected`
        (``bad_data_format``, ``bad_alg``, ``unaccepted_policy``, ``unaccepted_extensions``)
        or return the response waiting for its signature."""
        try:
            req = tsp.TimeStampReq.load(request_der, strict=True)
            version = req["version"].native
            mi = req["message_imprint"]
            hash_oid = mi["hash_algorithm"]["algorithm"].dotted
            imprint = bytes(mi["hashed_message"].native)
            imprint_der = bytes(mi.dump())
            req_policy = req["req_policy"]
            policy = None if isinstance(req_policy, core.Void) else req_policy.dotted
            nonce_v = req["nonce"].native
            nonce = None if nonce_v is None else int(nonce_v)
            cert_req = bool(req["cert_req"].native)
            has_extensions = not isinstance(req["extensions"], core.Void) and len(req["extensions"]) > 0
        except _MALFORMED_ERRORS as exc:
            raise TimestampQueryRejected(
                "bad_data_format", f"query is not a DER TimeStampReq: {exc}"
            ) from None
        if version != "v1":
            raise TimestampQueryRejected("bad_data_format", f"unsupported TimeStampReq version {version}")
        hash_name = _HASH_BY_OID.get(hash_oid)
        if hash_name is None or hash_name not in self.accepted_hashes:
            raise TimestampQueryRejected("bad_alg", f"unsupported hash algorithm {hash_oid}")
        if len(imprint) != _hash_size(hash_name):
            raise TimestampQueryRejected("bad_data_format", f"{hash_name} imprint has {len(imprint)} bytes")
        if policy is not None and policy != self.policy_oid:
            raise TimestampQueryRejected("unaccepted_policy", f"policy {policy} is not offered")
        if has_extensions:
            raise TimestampQueryRejected("unaccepted_extensions", "request extensions are not supported")
        if nonce is not None and nonce < 0:
            raise TimestampQueryRejected("bad_data_format", "negative nonce")
        tst = build_tst_info(
            policy_oid=self.policy_oid,
            imprint_der=imprint_der,
            serial=serial,
            gen_time=gen_time,
            nonce=nonce,
            accuracy_seconds=self.accuracy_seconds,
            tsa_name_der=self._tsa_name,
        )
        return self.prepare_tst_info(tst, cert_req=cert_req)

    def prepare_tst_info(self, tst_info_der: bytes, *, cert_req: bool = True) -> PreparedResponse:
        """Wrap an encoded ``TSTInfo`` (from :func:`build_tst_info`) for signing."""
        md = _hash(self.hash_name, tst_info_der)
        md_attr = _tlv(0x30, _DER_MESSAGE_DIGEST_OID + _tlv(0x31, _tlv(0x04, md)))
        signed_attrs = _set_of([_DER_CONTENT_TYPE_ATTR, md_attr, self._ess_attr])
        return PreparedResponse(
            profile=self,
            tst_info_der=tst_info_der,
            signed_attrs_der=signed_attrs,
            cert_req=cert_req,
            signed_attrs_digest=_hash(self.hash_name, signed_attrs),
        )

    def _assemble(self, p: PreparedResponse, signature: bytes) -> bytes:
        signer_info = _tlv(
            0x30,
            b"\x02\x01\x01"
            + self._sid
            + self._digest_alg
            + b"\xa0"
            + p.signed_attrs_der[1:]
            + self._sig_alg
            + _tlv(0x04, signature),
        )
        encap = _tlv(0x30, _DER_TST_INFO_OID + _tlv(0xA0, _tlv(0x04, p.tst_info_der)))
        signed_data = _tlv(
            0x30,
            b"\x02\x01\x03"
            + _tlv(0x31, self._digest_alg)
            + encap
            + (self._certificates if p.cert_req else b"")
            + _tlv(0x31, signer_info),
        )
        content_info = _tlv(0x30, _DER_SIGNED_DATA_OID + _tlv(0xA0, signed_data))
        return _tlv(0x30, b"\x30\x03\x02\x01\x00" + content_info)


@dataclass(frozen=True)
class PreparedResponse:
    """A granted response waiting for its signature.

    Sign ``signed_attrs_digest`` (a ``hash_name`` digest) with the TSA key, e.g.
    ``await signer.sign_digest(p.signed_attrs_digest, p.hash_name)``, then call
    :meth:`finish`.  ECDSA signatures are DER, as ``DigestSigner`` returns them.
    """

    profile: TsaProfile = field(repr=False)
    tst_info_der: bytes
    signed_attrs_der: bytes
    cert_req: bool
    signed_attrs_digest: bytes

    @property
    def hash_name(self) -> str:
        return self.profile.hash_name

    @property
    def mechanism(self) -> str:
        return self.profile.mechanism

    def finish(self, signature: bytes) -> bytes:
        """The DER ``TimeStampResp`` (status granted) carrying the signed token."""
        return self.profile._assemble(self, signature)


def prepare_response(
    request_der: bytes,
    *,
    tsa_cert: x509.Certificate,
    chain: Sequence[x509.Certificate] = (),
    serial: int,
    gen_time: datetime,
    policy_oid: str,
    hash_name: str = "sha256",
    mechanism: str | None = None,
) -> PreparedResponse:
    """One-shot form of :meth:`TsaProfile.prepare` (builds the profile each call;
    a server should keep a :class:`TsaProfile`)."""
    profile = TsaProfile(tsa_cert, chain, policy_oid=policy_oid, hash_name=hash_name, mechanism=mechanism)
    return profile.prepare(request_der, serial=serial, gen_time=gen_time)


_STATUS_CODES: Final[dict[str, int]] = {v: k for k, v in tsp.PKIStatus._map.items()}


def rejection(
    status: str | int = "rejection", fail_info: str | None = None, text: str | None = None
) -> bytes:
    """A DER ``TimeStampResp`` without token.  ``status`` is a PKIStatus name
    (``rejection``, ``waiting``, ...) or number; ``fail_info`` a PKIFailureInfo bit name
    (``bad_alg``, ``bad_data_format``, ``system_failure``, ...)."""
    code = status if isinstance(status, int) else _STATUS_CODES[status]
    info: dict[str, Any] = {"status": code}
    if text is not None:
        info["status_string"] = [text]
    if fail_info is not None:
        info["fail_info"] = {fail_info}
    return _tlv(0x30, bytes(tsp.PKIStatusInfo(info).dump()))
