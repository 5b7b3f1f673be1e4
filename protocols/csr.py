# test-case-name: tests.test_csr
"""PKCS#10 certificate signing requests for keys that live in an HSM.

``cryptography``'s CSR builder needs the private key, which never leaves the token.  So
the request is built in two halves around the HSM call::

    info = csr_info_der(subject, public_key_der)          # CertificationRequestInfo
    signature = token.sign(info_digest(info), "sha256")    # SHA-256 over the info DER
    csr = assemble_csr(info, "sha256-rsa", signature)      # DER CertificationRequest

RSA PKCS#1 v1.5 (``sha256-rsa``), RSA-PSS with MGF1-SHA-256 and a 32-byte salt
(``sha256-rsa-pss``) and ECDSA (``sha256-ecdsa``, signature DER-encoded) are supported.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Literal

from asn1crypto import algos, core
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils

from protocols.errors import CertificateError

__all__ = [
    "MAX_CSR_BYTES",
    "SignatureAlgorithm",
    "assemble_csr",
    "csr_info_der",
    "csr_pem",
    "info_digest",
    "load_csr",
]

SignatureAlgorithm = Literal["sha256-rsa", "sha256-rsa-pss", "sha256-ecdsa"]

MAX_CSR_BYTES = 64 * 1024

_EXTENSION_REQUEST_OID = "1.2.840.113549.1.9.14"


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        length = bytes((n,))
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes((0x80 | len(raw),)) + raw
    return bytes((tag,)) + length + body


def _seq(body: bytes) -> bytes:
    return _tlv(0x30, body)


def _extension_der(ext: x509.Extension[x509.ExtensionType]) -> bytes:
    body = core.ObjectIdentifier(ext.oid.dotted_string).dump()
    if ext.critical:
        body += core.Boolean(True).dump()
    body += core.OctetString(ext.value.public_bytes()).dump()
    return _seq(body)


def csr_info_der(
    subject: x509.Name,
    public_key_der: bytes,
    *,
    extensions: Iterable[x509.Extension[x509.ExtensionType]] = (),
) -> bytes:
    """The DER ``CertificationRequestInfo`` to be signed.

    ``public_key_der`` is the key's DER ``SubjectPublicKeyInfo``.  ``extensions`` (for
    example key usage) go into an ``extensionRequest`` attribute.  Raises
    ``CertificateError(code="cert.key_invalid")`` if the key does not parse or is
    neither RSA nor EC.
    """
    try:
        key = serialization.load_der_public_key(public_key_der)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"public key is not a DER SubjectPublicKeyInfo: {exc}",
                               code="cert.key_invalid") from exc
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise CertificateError(f"unsupported public key type {type(key).__name__}", code="cert.key_invalid")
    # Re-encode so the request always carries canonical DER.
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    ext_list = list(extensions)
    seen: set[str] = set()
    for ext in ext_list:
        if ext.oid.dotted_string in seen:
            raise ValueError(f"extension {ext.oid.dotted_string} requested twice")
        seen.add(ext.oid.dotted_string)
    attributes = b""
    if ext_list:
        extensions_der = _seq(b"".join(_extension_der(e) for e in ext_list))
        attribute = _seq(core.ObjectIdentifier(_EXTENSION_REQUEST_OID).dump() + _tlv(0x31, extensions_der))
        attributes = attribute
    version = b"\x02\x01\x00"
    return _seq(version + subject.public_bytes() + spki + _tlv(0xA0, attributes))


def info_digest(info_der: bytes) -> bytes:
    """SHA-256 of the ``CertificationRequestInfo``: what the HSM signs."""
    return hashlib.sha256(info_der).digest()


def _algorithm_identifier(signature_algorithm: str) -> bytes:
    if signature_algorithm == "sha256-rsa":
        value = algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa", "parameters": core.Null()})
    elif signature_algorithm == "sha256-ecdsa":
        value = algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"})
    elif signature_algorithm == "sha256-rsa-pss":
        sha256 = algos.DigestAlgorithm({"algorithm": "sha256"})
        params = algos.RSASSAPSSParams({
            "hash_algorithm": sha256,
            "mask_gen_algorithm": algos.MaskGenAlgorithm({"algorithm": "mgf1", "parameters": sha256}),
            "salt_length": 32,
        })
        value = algos.SignedDigestAlgorithm({"algorithm": "rsassa_pss", "parameters": params})
    else:
        raise ValueError(f"unsupported CSR signature algorithm {signature_algorithm!r}")
    der: bytes = value.dump()
    return der


def assemble_csr(info_der: bytes, signature_algorithm: SignatureAlgorithm, signature: bytes) -> bytes:
    """The DER ``CertificationRequest`` from the info, the algorithm and the HSM's signature.

    The signature is checked for form only (an ECDSA signature must be a DER
    ``ECDSA-Sig-Value``); :func:`load_csr` checks that it verifies.
    """
    algorithm = _algorithm_identifier(signature_algorithm)
    if not signature:
        raise ValueError("empty signature")
    if signature_algorithm == "sha256-ecdsa":
        try:
            r, s = utils.decode_dss_signature(signature)
        except ValueError as exc:
            raise ValueError("ECDSA signature must be a DER ECDSA-Sig-Value (not raw r||s)") from exc
        if utils.encode_dss_signature(r, s) != signature:
            raise ValueError("ECDSA signature is not DER-encoded")
    if not info_der or info_der[0] != 0x30:
        raise ValueError("info_der is not a CertificationRequestInfo")
    return _seq(info_der + algorithm + _tlv(0x03, b"\x00" + signature))


def csr_pem(csr_der: bytes) -> bytes:
    """PEM (``CERTIFICATE REQUEST``) form of a DER CSR."""
    csr = load_csr(csr_der)
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Load a PEM or DER CSR and check its self-signature.

    Raises ``CertificateError(code="cert.csr_invalid")`` on anything that is not a
    well-formed CSR with a valid signature.
    """
    if len(data) > MAX_CSR_BYTES:
        raise CertificateError(f"CSR of {len(data)} bytes exceeds {MAX_CSR_BYTES}", code="cert.csr_invalid")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
        valid = csr.is_signature_valid
        # touch the fields a CA reads, so lazily parsed garbage is refused here
        csr.subject.public_bytes()
        csr.public_key()
        csr.extensions  # noqa: B018
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateError(f"not a valid certificate signing request: {exc}", code="cert.csr_invalid") from exc
    if not valid:
        raise CertificateError("certificate signing request signature does not verify", code="cert.csr_invalid")
    return csr
