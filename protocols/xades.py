"""XAdES signatures in X-Road's profile ("Profile for High Performance Digital Signatures").

The builder lays out a document exactly as an X-Road security server does (root
``asic:XAdESSignatures``, ``ds:Signature Id="signature"``, inclusive Canonical XML 1.0,
one reference to the signed data – ``/message.xml`` or ``/sig-hashchainresult.xml`` –
and one to ``#signed-properties``; SigningTime, SigningCertificate, the signature
policy, DataObjectFormat; certificates of the chain and OCSP responses in the
unsigned properties).  The private-key operation happens elsewhere: the builder
returns the digest of the canonical SignedInfo, and :meth:`PreparedSignature.finish`
inserts the signature value.

Only the checks the signer itself needs live here (signature value and references);
the full verifier of X-Road signatures is built on top of them.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from lxml import etree

from protocols.errors import SignatureError
from protocols.xmlsafe import parse_xml

NS_ASIC = "http://uri.etsi.org/02918/v1.2.1#"
NS_ASIC_OLD = "http://uri.etsi.org/02918/v1.1.1#"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"
NS_XADES = "http://uri.etsi.org/01903/v1.3.2#"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"
SIGNED_PROPERTIES_TYPE = "http://uri.etsi.org/01903#SignedProperties"
C14N_10 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
C14N_10_COMMENTS = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"

DIGEST_URIS = {
    "sha256": "http://www.w3.org/2001/04/xmlenc#sha256",
    "sha384": "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "sha512": "http://www.w3.org/2001/04/xmlenc#sha512",
}
DIGEST_NAMES = {uri: name for name, uri in DIGEST_URIS.items()}
DIGEST_NAMES["http://www.w3.org/2000/09/xmldsig#sha1"] = "sha1"

SIGNATURE_URIS = {
    ("rsa-pkcs1", "sha256"): "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    ("rsa-pkcs1", "sha384"): "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    ("rsa-pkcs1", "sha512"): "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    ("rsa-pss", "sha256"): "http://www.w3.org/2007/05/xmldsig-more#sha256-rsa-MGF1",
    ("rsa-pss", "sha384"): "http://www.w3.org/2007/05/xmldsig-more#sha384-rsa-MGF1",
    ("rsa-pss", "sha512"): "http://www.w3.org/2007/05/xmldsig-more#sha512-rsa-MGF1",
    ("ecdsa", "sha256"): "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    ("ecdsa", "sha384"): "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    ("ecdsa", "sha512"): "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
}
SIGNATURE_ALGORITHMS = {uri: key for key, uri in SIGNATURE_URIS.items()}
SIGNATURE_ALGORITHMS["http://www.w3.org/2000/09/xmldsig#rsa-sha1"] = ("rsa-pkcs1", "sha1")

POLICY_ID = "urn:oid:1.3.6.1.4.1.3516.16.2"
POLICY_DESCRIPTION = "Profile for High Performance Digital Signatures (version 1.2)"
POLICY_SHA512 = "BuO0EDNfkxSVlUbxCzmQPzX1AUF1/xx9ytWHk3/6SAOePxQiniEfDYk+90QeYb3lWpV3Izhuz9fKaYyE+lTcXw=="
POLICY_SPURI = "https://repo.cyber.ee/dsig-profile-1.2.pdf"

MIME_TEXT_XML = "text/xml"
MIME_HASH_CHAIN_RESULT = "application/hash-chain-result"

_NSMAP = {"asic": NS_ASIC, "ds": NS_DS, "xsi": NS_XSI, "xades": NS_XADES}


def _ds(tag: str) -> str:
    return f"{{{NS_DS}}}{tag}"


def _xa(tag: str) -> str:
    return f"{{{NS_XADES}}}{tag}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def digest(hash_name: str, data: bytes) -> bytes:
    return hashlib.new(hash_name, data).digest()


def c14n(element: etree._Element, method: str = C14N_10) -> bytes:
    """Canonicalise ``element`` (with the namespaces in scope) by the algorithm URI ``method``."""
    options = {C14N_10: (False, False), C14N_10_COMMENTS: (False, True), EXC_C14N: (True, False)}
    if method in options:
        exclusive, with_comments = options[method]
        out: bytes = etree.tostring(element, method="c14n", exclusive=exclusive, with_comments=with_comments)
        return out
    raise SignatureError(f"unsupported canonicalisation {method}", code="signature.c14n_unsupported")


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _digest_alg_and_value(parent: etree._Element, hash_name: str, value: str) -> None:
    _sub(parent, _ds("DigestMethod"), Algorithm=DIGEST_URIS[hash_name])
    _sub(parent, _ds("DigestValue"), value)


def _cert_digest_and_issuer_serial(parent: etree._Element, cert: x509.Certificate, hash_name: str) -> None:
    cd = _sub(parent, _xa("CertDigest"))
    _digest_alg_and_value(cd, hash_name, b64(digest(hash_name, cert.public_bytes(serialization.Encoding.DER))))
    iss = _sub(parent, _xa("IssuerSerial"))
    _sub(iss, _ds("X509IssuerName"), cert.issuer.rfc4514_string())
    _sub(iss, _ds("X509SerialNumber"), str(cert.serial_number))


@dataclass(frozen=True)
class PreparedSignature:
    """A signature document waiting for its signature value."""

    document: etree._Element
    hash_name: str
    data_to_sign: bytes

    @property
    def digest_to_sign(self) -> bytes:
        """The digest the private key signs (over the canonical SignedInfo)."""
        return digest(self.hash_name, self.data_to_sign)

    def finish(self, signature_value: bytes) -> bytes:
        """The complete signature document with ``signature_value`` (ECDSA: raw ``r || s``)."""
        doc = etree.fromstring(etree.tostring(self.document))
        sv = doc.find(f"{_ds('Signature')}/{_ds('SignatureValue')}")
        assert sv is not None
        sv.text = b64(signature_value)
        out: bytes = etree.tostring(doc, xml_declaration=True, encoding="UTF-8", standalone=False)
        return out


def prepare_signature(
    *,
    reference_uri: str,
    reference_digest: bytes,
    mime_type: str,
    signing_cert: x509.Certificate,
    mechanism: str,
    hash_name: str = "sha512",
    extra_certs: Sequence[x509.Certificate] = (),
    ocsp_responses: Sequence[bytes] = (),
    signing_time: datetime | None = None,
) -> PreparedSignature:
    """Lay out a signature over one document (``/message.xml`` or ``/sig-hashchainresult.xml``).

    ``reference_digest`` is the ``hash_name`` digest of that document's bytes.
    """
    try:
        sig_uri = SIGNATURE_URIS[(mechanism, hash_name)]
    except KeyError:
        raise SignatureError(f"no signature algorithm for {mechanism} with {hash_name}",
                             code="signature.algorithm_unsupported") from None
    when = (signing_time or datetime.now(UTC)).astimezone(UTC)
    root = etree.Element(f"{{{NS_ASIC}}}XAdESSignatures", nsmap=_NSMAP)
    sig = _sub(root, _ds("Signature"), Id="signature")
    si = _sub(sig, _ds("SignedInfo"))
    _sub(si, _ds("CanonicalizationMethod"), Algorithm=C14N_10)
    _sub(si, _ds("SignatureMethod"), Algorithm=sig_uri)
    ref = _sub(si, _ds("Reference"), Id="signature-reference-0", URI=reference_uri)
    _digest_alg_and_value(ref, hash_name, b64(reference_digest))
    sp_ref = _sub(si, _ds("Reference"), Id="signature-reference-1", Type=SIGNED_PROPERTIES_TYPE,
                  URI="#signed-properties")
    _sub(sig, _ds("SignatureValue"), "", Id="signature-value")
    ki = _sub(sig, _ds("KeyInfo"))
    x5 = _sub(ki, _ds("X509Data"))
    _sub(x5, _ds("X509Certificate"), b64(signing_cert.public_bytes(serialization.Encoding.DER)))
    obj = _sub(sig, _ds("Object"))
    qp = _sub(obj, _xa("QualifyingProperties"), Target="#signature")
    sp = _sub(qp, _xa("SignedProperties"), Id="signed-properties")
    ssp = _sub(sp, _xa("SignedSignatureProperties"))
    _sub(ssp, _xa("SigningTime"), when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z")
    sc = _sub(ssp, _xa("SigningCertificate"))
    _cert_digest_and_issuer_serial(_sub(sc, _xa("Cert")), signing_cert, hash_name)
    spi = _sub(_sub(ssp, _xa("SignaturePolicyIdentifier")), _xa("SignaturePolicyId"))
    spid = _sub(spi, _xa("SigPolicyId"))
    _sub(spid, _xa("Identifier"), POLICY_ID, Qualifier="OIDAsURN")
    _sub(spid, _xa("Description"), POLICY_DESCRIPTION)
    _digest_alg_and_value(_sub(spi, _xa("SigPolicyHash")), "sha512", POLICY_SHA512)
    _sub(_sub(_sub(spi, _xa("SigPolicyQualifiers")), _xa("SigPolicyQualifier")), _xa("SPURI"), POLICY_SPURI)
    sdop = _sub(sp, _xa("SignedDataObjectProperties"))
    dof = _sub(sdop, _xa("DataObjectFormat"), ObjectReference="#signature-reference-0")
    _sub(dof, _xa("MimeType"), mime_type)
    usp = _sub(_sub(qp, _xa("UnsignedProperties")), _xa("UnsignedSignatureProperties"))
    if extra_certs:
        ccr = _sub(usp, _xa("CompleteCertificateRefs"), Id="complete-certificate-refs")
        refs = _sub(ccr, _xa("CertRefs"))
        for i, cert in enumerate(extra_certs, 1):
            _cert_digest_and_issuer_serial(_sub(refs, _xa("Cert"), URI=f"#encapsulated-cert-{i}"), cert, hash_name)
        cv = _sub(usp, _xa("CertificateValues"))
        for i, cert in enumerate(extra_certs, 1):
            _sub(cv, _xa("EncapsulatedX509Certificate"), b64(cert.public_bytes(serialization.Encoding.DER)),
                 Id=f"encapsulated-cert-{i}")
    ocsp_values = _sub(_sub(usp, _xa("RevocationValues")), _xa("OCSPValues"))
    for i, resp in enumerate(ocsp_responses, 1):
        _sub(ocsp_values, _xa("EncapsulatedOCSPValue"), b64(resp), Id=f"ocsp-response-{i}")
    # The SignedProperties digest is over its canonical form in the final document.
    _digest_alg_and_value(sp_ref, hash_name, b64(digest(hash_name, c14n(sp))))
    return PreparedSignature(document=root, hash_name=hash_name, data_to_sign=c14n(si))


# -- checks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedSignature:
    """The parts of an X-Road signature document the checks need."""

    root: etree._Element
    signature: etree._Element
    signed_info: etree._Element
    c14n_method: str
    mechanism: str
    hash_name: str
    signature_value: bytes
    signing_cert: x509.Certificate
    references: tuple[tuple[str, str | None, str, bytes], ...]  # (URI, Type, digest name, digest)


def parse_signature(data: bytes) -> ParsedSignature:
    """Parse a signature document (``asic:XAdESSignatures``, v1.2.1 or v1.1.1, or a bare ``ds:Signature``)."""
    root = parse_xml(data)
    if root.tag == _ds("Signature"):
        sig = root
    elif root.tag in (f"{{{NS_ASIC}}}XAdESSignatures", f"{{{NS_ASIC_OLD}}}XAdESSignatures"):
        found = root.find(_ds("Signature"))
        if found is None:
            raise SignatureError("no ds:Signature in the signature document", code="signature.malformed",
                                 xroad_code="MalformedSignature")
        sig = found
    else:
        raise SignatureError(f"unexpected root element {root.tag}", code="signature.malformed",
                             xroad_code="MalformedSignature")
    si = sig.find(_ds("SignedInfo"))
    sv = sig.find(_ds("SignatureValue"))
    cert_el = sig.find(f"{_ds('KeyInfo')}/{_ds('X509Data')}/{_ds('X509Certificate')}")
    if si is None or sv is None or cert_el is None:
        raise SignatureError("signature lacks SignedInfo, SignatureValue or the signing certificate",
                             code="signature.malformed", xroad_code="MalformedSignature")
    cm = si.find(_ds("CanonicalizationMethod"))
    sm = si.find(_ds("SignatureMethod"))
    try:
        mechanism, hash_name = SIGNATURE_ALGORITHMS[sm.get("Algorithm", "") if sm is not None else ""]
        cert = x509.load_der_x509_certificate(base64.b64decode("".join((cert_el.text or "").split())))
        value = base64.b64decode("".join((sv.text or "").split()))
        refs = []
        for r in si.findall(_ds("Reference")):
            dm = r.find(_ds("DigestMethod"))
            dv = r.find(_ds("DigestValue"))
            refs.append((r.get("URI", ""), r.get("Type"), DIGEST_NAMES[dm.get("Algorithm", "") if dm is not None
                                                                    else ""],
                         base64.b64decode("".join(((dv.text if dv is not None else "") or "").split()))))
    except (KeyError, ValueError) as exc:
        raise SignatureError(f"malformed signature: {exc}", code="signature.malformed",
                             xroad_code="MalformedSignature") from exc
    return ParsedSignature(root=root, signature=sig, signed_info=si,
                           c14n_method=cm.get("Algorithm", C14N_10) if cm is not None else C14N_10,
                           mechanism=mechanism, hash_name=hash_name, signature_value=value,
                           signing_cert=cert, references=tuple(refs))


def verify_signature_value(parsed: ParsedSignature, public_key: object | None = None) -> None:
    """Check the signature value over the canonical SignedInfo with the signing certificate's key."""
    key = public_key or parsed.signing_cert.public_key()
    data = c14n(parsed.signed_info, parsed.c14n_method)
    hash_classes: dict[str, type[hashes.HashAlgorithm]] = {
        "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
    algo = hash_classes[parsed.hash_name]()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            pad: padding.AsymmetricPadding = (
                padding.PSS(mgf=padding.MGF1(algo), salt_length=algo.digest_size)
                if parsed.mechanism == "rsa-pss" else padding.PKCS1v15())
            key.verify(parsed.signature_value, data, pad, algo)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            half = len(parsed.signature_value) // 2
            der = utils.encode_dss_signature(int.from_bytes(parsed.signature_value[:half], "big"),
                                             int.from_bytes(parsed.signature_value[half:], "big"))
            key.verify(der, data, ec.ECDSA(algo))
        else:
            raise SignatureError("unsupported signing key type", code="signature.key_unsupported")
    except InvalidSignature:
        raise SignatureError("signature value does not verify", code="signature.value_invalid",
                             xroad_code="InvalidSignatureValue") from None


def verify_references(parsed: ParsedSignature, resolve: Callable[[str], bytes | None]) -> None:
    """Check every reference digest: same-document ones by Id, others through ``resolve``."""
    for uri, _type, hash_name, expected in parsed.references:
        if uri.startswith("#"):
            targets = parsed.root.xpath("//*[@Id=$id]", id=uri[1:])
            if not isinstance(targets, list) or len(targets) != 1:
                raise SignatureError(f"reference {uri} does not identify one element",
                                     code="signature.reference_invalid", xroad_code="InvalidReference")
            target = targets[0]
            assert isinstance(target, etree._Element)
            actual = digest(hash_name, c14n(target))
        else:
            data = resolve(uri)
            if data is None:
                raise SignatureError(f"reference {uri} cannot be resolved", code="signature.reference_invalid",
                                     xroad_code="InvalidReference")
            actual = digest(hash_name, data)
        if actual != expected:
            raise SignatureError(f"digest of reference {uri} does not match", code="signature.digest_invalid",
                                 xroad_code="InvalidSignatureValue")
