# test-case-name: tests.test_sigverify
"""Verification of X-Road message signatures (XAdES in X-Road's profile), as a security server does it.

:func:`verify_signature` follows X-Road's ``SignatureVerifier.verify`` step by step:

1. XAdES schema validation of the first child element of the document element
   (``ds:Signature`` under ``asic:XAdESSignatures``, or ``ds:SignedInfo`` when the document
   is a bare ``ds:Signature``), against the packaged ``xades-schema.xsd``;
2. the hash chain, for batch signatures (the signature references ``/sig-hashchainresult.xml``
   and a hash chain result is given);
3. the signing certificate from ``ds:KeyInfo`` (it must have key usage nonRepudiation);
4. the signer name: the approved CA that issued the certificate names a certificate profile,
   which maps the certificate to a member; that member must be the claimed signer;
5. the signature value over the canonical ``ds:SignedInfo``, then every reference
   (``/message.xml`` digested over the message bytes, ``/attachmentN`` compared with the
   supplied digest, ``/sig-hashchainresult.xml`` over the hash chain result, ``#id`` over the
   canonical element);
6. time-stamp manifests (``ts-root-manifest`` and the manifests it names), when present;
7. the certificate chain: extra certificates from ``CertificateValues`` (each referenced from
   ``CompleteCertificateRefs`` with a matching digest), a path from the signing certificate to a
   certificate of an approved CA of the signer's instance (signatures, validity at the
   validation time, CA basic constraints and key usage of intermediate certificates), and for
   each certificate of the path but the trust anchor an OCSP response from ``RevocationValues``
   that is authorised (the CA, a delegated responder, or a responder certificate listed for the
   CA in global configuration), fresh at the validation time (``ocspFreshnessSeconds``,
   ``nextUpdate``) and *good*.

Errors are :class:`~protocols.errors.SignatureError` (``signature.<reason>``) or
:class:`~protocols.errors.CertificateError` (``cert.<reason>``) with the X-Road fault code
(7.7 dialect) in ``xroad_code``: ``InvalidXml``, ``MalformedSignature``,
``MalformedSignature.<hash chain code>``, ``IncorrectCertificate``, ``InvalidSignatureValue``,
``InvalidReference``, ``CannotCreateCertPath``, ``InvalidCertPath.IncorrectValidationInfo``,
``InvalidCertPath.CertValidation``, ``InternalError``.

Pure: no I/O; everything arrives through arguments.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp as x509_ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID
from lxml import etree  # type: ignore[import-untyped,unused-ignore]

from protocols import ocsp
from protocols.certprofile import MemberId, SignCertProfile, sign_profile_for_class
from protocols.errors import CertificateError, HashChainError, OcspError, SignatureError, XmlError
from protocols.gconf.params import ApprovedCa, SharedParameters
from protocols.hashchain import DigestInput, verify_hash_chain
from protocols.xades import (
    C14N_10,
    C14N_10_COMMENTS,
    DIGEST_NAMES,
    EXC_C14N,
    NS_ASIC,
    NS_ASIC_OLD,
    NS_DS,
    NS_XADES,
    SIGNATURE_ALGORITHMS,
    ParsedSignature,
    verify_signature_value,
)
from protocols.xmlsafe import parse_xml

__all__ = [
    "HASH_CHAIN_RESULT_URI",
    "HASH_CHAIN_URI",
    "MESSAGE_URI",
    "SHA512_URI",
    "CaLookup",
    "ProfileResolver",
    "SignatureDocument",
    "SignedPart",
    "SignerId",
    "VerificationCache",
    "VerifiedSignature",
    "parse_signature_document",
    "verify_signature",
]

MESSAGE_URI = "/message.xml"
HASH_CHAIN_RESULT_URI = "/sig-hashchainresult.xml"
HASH_CHAIN_URI = "/sig-hashchain.xml"
SHA512_URI = "http://www.w3.org/2001/04/xmlenc#sha512"
EXC_C14N_COMMENTS = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments"
_C14N_METHODS = (C14N_10, C14N_10_COMMENTS, EXC_C14N, EXC_C14N_COMMENTS)
_TS_ROOT_MANIFEST = "ts-root-manifest"

#: Hostile-input bounds.
MAX_SIGNATURE_BYTES = 8 * 1024 * 1024
MAX_REFERENCES = 1024
MAX_EXTRA_CERTS = 16
MAX_OCSP_RESPONSES = 16
MAX_PATH_LENGTH = 8
MAX_MANIFESTS = 64
#: X-Road does not check that an OCSP response's thisUpdate is not in the future; we allow
#: (by default) any time up to this far after the validation time.
_NO_FUTURE_CHECK_SECONDS = 100 * 365 * 86400.0

_DS = "{" + NS_DS + "}"
_XA = "{" + NS_XADES + "}"
_NSMAP = {"ds": NS_DS, "xades": NS_XADES}


# --------------------------------------------------------------------------- inputs and outputs


class SignerId(Protocol):
    """A client identifier (member or subsystem); only the member part is compared."""

    @property
    def instance(self) -> str: ...

    @property
    def member_class(self) -> str: ...

    @property
    def member_code(self) -> str: ...


@dataclass(frozen=True)
class SignedPart:
    """A message part the signature (or its hash chain) covers.

    ``name`` is the reference URI (``/message.xml``, ``/attachment1``, …).  ``digest`` is the
    precomputed digest with ``digest_method`` (an algorithm URI); ``data`` the bytes.  A
    ``/message.xml`` reference is digested over ``data`` (or, with no data, compared with
    ``digest``); an ``/attachmentN`` reference is compared with ``digest`` (or digested over
    ``data`` when no digest is given).  In a hash chain a part's ``digest`` is used when set,
    otherwise the data is fetched and digested.
    """

    name: str
    digest: bytes | None = None
    data: bytes | None = None
    digest_method: str = SHA512_URI


#: ``cert -> the approved CA certificate that issued it`` (X-Road's ``getCaCert``), or None.
CaLookup = Callable[[x509.Certificate], x509.Certificate | None]
#: ``certificateProfileInfo class name -> profile``.
ProfileResolver = Callable[[str], SignCertProfile]


@dataclass(frozen=True)
class VerifiedSignature:
    """The result of a successful verification."""

    member: MemberId  # the signer as the certificate profile identifies it
    signing_cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # signing certificate first, trust anchor last
    ca: ApprovedCa
    ocsp: tuple[ocsp.OcspStatus, ...]  # one per certificate of the chain but the anchor
    signing_time: str | None
    references: tuple[str, ...]
    batch: bool


@dataclass(frozen=True)
class SignatureDocument:
    """A parsed signature document (the structure X-Road's ``Signature`` class reads)."""

    root: etree._Element
    signature: etree._Element
    signed_info: etree._Element
    object_container: etree._Element
    c14n_method: str
    signature_method: str
    references: tuple[etree._Element, ...]

    def references_uri(self, uri: str) -> bool:
        return any(r.get("URI") == uri for r in self.references)


# --------------------------------------------------------------------------- helpers


def _malformed(message: str, code: str = "signature.malformed") -> SignatureError:
    return SignatureError(message, code=code, xroad_code="MalformedSignature")


def _b64(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _malformed(f"{what} is not valid base64") from exc


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _by_id(root: etree._Element, ident: str) -> etree._Element | None:
    """The first element whose ``Id`` attribute is ``ident`` (a leading ``#`` is ignored)."""
    if ident.startswith("#"):
        ident = ident[1:]
    found = root.xpath("//*[@Id=$id]", id=ident)
    if isinstance(found, list) and found and isinstance(found[0], etree._Element):
        return found[0]
    return None


def _hash_name(uri: str | None) -> str:
    name = DIGEST_NAMES.get(uri or "")
    if name is None:
        raise _malformed(f"unsupported digest algorithm {uri!r}")
    return name


def _canonical(element: etree._Element, method: str, prefixes: Sequence[str] = ()) -> bytes:
    exclusive = method in (EXC_C14N, EXC_C14N_COMMENTS)
    comments = method in (C14N_10_COMMENTS, EXC_C14N_COMMENTS)
    out: bytes = etree.tostring(element, method="c14n", exclusive=exclusive, with_comments=comments,
                                inclusive_ns_prefixes=list(prefixes) if exclusive and prefixes else None)
    return out


# --------------------------------------------------------------------------- schema


class _SchemaResolver(etree.Resolver):  # type: ignore[misc,unused-ignore]
    """Serves the packaged schemas; refuses every other URL (never the network)."""

    def resolve(  # type: ignore[override,unused-ignore]
        self, system_url: str | None, public_id: str | None, context: object
    ) -> object:
        name = (system_url or "").rsplit("/", 1)[-1]
        if name in ("xades-schema.xsd", "xmldsig-core-schema.xsd"):
            data = (resources.files("protocols") / "xsd" / name).read_bytes()
            return self.resolve_string(data, context, base_url=system_url)
        raise SignatureError(f"schema loader refused to fetch {system_url!r}", code="signature.schema_load")


@cache
def _xades_schema() -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    parser.resolvers.add(_SchemaResolver())
    data = (resources.files("protocols") / "xsd" / "xades-schema.xsd").read_bytes()
    return etree.XMLSchema(etree.fromstring(data, parser, base_url="vdxp-xsd:///xades-schema.xsd"))


def _validate_schema(doc: SignatureDocument) -> None:
    first = next(iter(doc.root.iterchildren(etree.Element)), None)
    if first is None:
        raise _malformed("the signature document element has no child element", "signature.schema_invalid")
    schema = _xades_schema()
    if not schema.validate(first):
        lines = str(schema.error_log).splitlines()
        raise _malformed(f"signature does not conform to the XAdES schema: {lines[0] if lines else '?'}",
                         "signature.schema_invalid")


# --------------------------------------------------------------------------- parsing


def parse_signature_document(signature_xml: bytes) -> SignatureDocument:
    """Read a signature document the way X-Road constructs its ``Signature`` object.

    Accepts ``asic:XAdESSignatures`` (``…/02918/v1.2.1#`` and the older ``…/v1.1.1#``) or a
    bare ``ds:Signature``.  Raises ``SignatureError``: ``signature.invalid_xml`` (InvalidXml)
    for XML that is not well-formed or is hostile, ``signature.malformed``
    (MalformedSignature) when ``ds:Signature``, its ``ds:SignedInfo`` structure or ``ds:Object``
    is missing.
    """
    try:
        root = parse_xml(signature_xml, max_bytes=MAX_SIGNATURE_BYTES)
    except XmlError as exc:
        raise SignatureError(f"signature document is not acceptable XML: {exc.message}",
                             code="signature.invalid_xml", xroad_code="InvalidXml") from exc
    if root.tag == _DS + "Signature":
        sig = root
    elif root.tag in (f"{{{NS_ASIC}}}XAdESSignatures", f"{{{NS_ASIC_OLD}}}XAdESSignatures"):
        found = next(root.iter(_DS + "Signature"), None)
        if found is None:
            raise _malformed('could not find element "ds:Signature"')
        sig = found
    else:
        raise _malformed(f"unexpected document element {root.tag}")
    children = list(sig.iterchildren(etree.Element))
    if not children or children[0].tag != _DS + "SignedInfo":
        raise _malformed("ds:Signature does not start with ds:SignedInfo")
    si = children[0]
    si_children = list(si.iterchildren(etree.Element))
    if len(si_children) < 3 or si_children[0].tag != _DS + "CanonicalizationMethod" \
            or si_children[1].tag != _DS + "SignatureMethod":
        raise _malformed("ds:SignedInfo lacks CanonicalizationMethod, SignatureMethod or a Reference")
    refs = tuple(si_children[2:])
    if any(r.tag != _DS + "Reference" for r in refs):
        raise _malformed("ds:SignedInfo holds an element other than ds:Reference")
    if len(refs) > MAX_REFERENCES:
        raise _malformed(f"more than {MAX_REFERENCES} references")
    c14n_method = si_children[0].get("Algorithm") or ""
    if c14n_method not in _C14N_METHODS:
        raise _malformed(f"unsupported canonicalization method {c14n_method!r}")
    sig_method = si_children[1].get("Algorithm") or ""
    if sig_method not in SIGNATURE_ALGORITHMS:
        raise _malformed(f"unsupported signature method {sig_method!r}")
    if len(children) < 2 or children[1].tag != _DS + "SignatureValue":
        raise _malformed("ds:Signature has no ds:SignatureValue after ds:SignedInfo")
    obj = next(root.iter(_DS + "Object"), None)
    if obj is None:
        raise _malformed('could not find element "ds:Object"')
    return SignatureDocument(root=root, signature=sig, signed_info=si, object_container=obj,
                             c14n_method=c14n_method, signature_method=sig_method, references=refs)


def _signing_cert(doc: SignatureDocument) -> x509.Certificate:
    el = doc.signature.find(f"{_DS}KeyInfo/{_DS}X509Data/{_DS}X509Certificate")
    if el is None:
        raise _malformed("signature does not contain signing certificate", "signature.no_signing_cert")
    try:
        cert = x509.load_der_x509_certificate(_b64(el.text, "ds:X509Certificate"))
    except ValueError as exc:
        raise _malformed(f"signing certificate cannot be read: {exc}", "signature.no_signing_cert") from exc
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise _malformed(f"certificate {_name(cert)} has no key usage; it is not a signing certificate",
                         "signature.not_signing_cert") from None
    except ValueError as exc:
        raise _malformed(f"certificate {_name(cert)} has malformed extensions: {exc}",
                         "signature.not_signing_cert") from exc
    if not ku.content_commitment:
        raise _malformed(f"certificate {_name(cert)} is not a signing certificate (no nonRepudiation)",
                         "signature.not_signing_cert")
    return cert


def _unsigned_props(doc: SignatureDocument, *path: str) -> list[etree._Element]:
    xpath = "xades:QualifyingProperties/xades:UnsignedProperties/xades:UnsignedSignatureProperties/" \
            + "/".join(path)
    found = doc.object_container.xpath(xpath, namespaces=_NSMAP)
    return [e for e in found if isinstance(e, etree._Element)] if isinstance(found, list) else []


def _extra_certs(doc: SignatureDocument) -> list[x509.Certificate]:
    """Certificates referenced from CompleteCertificateRefs (X-Road's ``getExtraCertificates``)."""
    out: list[x509.Certificate] = []
    refs = _unsigned_props(doc, "xades:CompleteCertificateRefs", "xades:CertRefs", "xades:Cert")
    if len(refs) > MAX_EXTRA_CERTS:
        raise _malformed(f"more than {MAX_EXTRA_CERTS} extra certificates", "signature.extra_cert_invalid")
    for ref in refs:
        uri = ref.get("URI") or ""
        if not uri:
            raise _malformed("missing certificate id attribute", "signature.extra_cert_invalid")
        el = _by_id(doc.root, uri)
        if el is None:
            raise _malformed(f"could not find certificate with id {uri}", "signature.extra_cert_invalid")
        try:
            der = _b64(el.text, f"certificate {uri}")
            cert = x509.load_der_x509_certificate(der)
        except (SignatureError, ValueError) as exc:
            raise _malformed(f"certificate {uri} cannot be read: {exc}", "signature.extra_cert_invalid") from exc
        cert_digest = ref.find(_XA + "CertDigest")
        if cert_digest is None:
            raise _malformed(f"certificate reference {uri} has no CertDigest", "signature.extra_cert_invalid")
        method = cert_digest.find(_DS + "DigestMethod")
        algorithm = _hash_name(method.get("Algorithm") if method is not None else None)
        expected = _b64(cert_digest.findtext(_DS + "DigestValue"), f"digest of certificate {uri}")
        if hashlib.new(algorithm, der).digest() != expected:
            raise _malformed(f"certificate ({cert.serial_number}) digest does not match",
                             "signature.extra_cert_invalid")
        out.append(cert)
    return out


def _ocsp_responses(doc: SignatureDocument) -> list[bytes]:
    els = _unsigned_props(doc, "xades:RevocationValues", "xades:OCSPValues", "xades:EncapsulatedOCSPValue")
    if not els:
        raise _malformed("could not get any OCSP elements from signature", "signature.no_ocsp")
    if len(els) > MAX_OCSP_RESPONSES:
        raise _malformed(f"more than {MAX_OCSP_RESPONSES} OCSP responses", "signature.ocsp_invalid")
    out: list[bytes] = []
    for el in els:
        der = _b64(el.text, "EncapsulatedOCSPValue")
        try:
            ocsp.load_response(der)
        except OcspError as exc:
            raise _malformed(f"OCSP response in the signature cannot be read: {exc.message}",
                             "signature.ocsp_invalid") from exc
        out.append(der)
    return out


def _signing_time(doc: SignatureDocument) -> str | None:
    found = doc.object_container.xpath(
        "xades:QualifyingProperties/xades:SignedProperties/xades:SignedSignatureProperties/xades:SigningTime/text()",
        namespaces=_NSMAP)
    return str(found[0]).strip() if isinstance(found, list) and found else None


# --------------------------------------------------------------------------- CAs and profiles


def _ca_certs(ca: ApprovedCa) -> list[tuple[x509.Certificate, Sequence[x509.Certificate]]]:
    """(CA certificate, OCSP responder certificates listed for it) for the top and intermediate CAs."""
    out: list[tuple[x509.Certificate, Sequence[x509.Certificate]]] = [
        (ca.top_ca, [o.cert for o in ca.top_ca_ocsp if o.cert is not None])]
    for inter in ca.intermediates:
        out.append((inter.cert, [o.cert for o in inter.ocsp if o.cert is not None]))
    return out


class _Trust:
    """The approved CAs of the signer's instance (X-Road's per-instance shared parameters cache)."""

    def __init__(self, conf: SharedParameters, ca_lookup: CaLookup | None) -> None:
        self.conf = conf
        self.ca_lookup = ca_lookup
        self.by_der: dict[bytes, tuple[ApprovedCa, Sequence[x509.Certificate]]] = {}
        self.by_subject: dict[x509.Name, list[x509.Certificate]] = {}
        for ca in conf.cas:
            for cert, responders in _ca_certs(ca):
                self.by_der.setdefault(_der(cert), (ca, responders))
                self.by_subject.setdefault(cert.subject, []).append(cert)

    def issuers(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """Approved CA certificates that may have issued ``cert``."""
        if self.ca_lookup is not None:
            found = self.ca_lookup(cert)
            return [found] if found is not None else []
        return list(self.by_subject.get(cert.issuer, ()))

    def approved(self, ca_cert: x509.Certificate) -> ApprovedCa | None:
        entry = self.by_der.get(_der(ca_cert))
        return entry[0] if entry is not None else None

    def responders(self, ca_cert: x509.Certificate) -> Sequence[x509.Certificate]:
        entry = self.by_der.get(_der(ca_cert))
        return entry[1] if entry is not None else ()

    def all_responders(self) -> list[x509.Certificate]:
        return [c for _ca, responders in self.by_der.values() for c in responders]

    def all_ca_certs(self) -> list[x509.Certificate]:
        return [c for certs in self.by_subject.values() for c in certs]


def _not_approved(cert: x509.Certificate) -> CertificateError:
    return CertificateError(
        f"certificate {_name(cert)} is not issued by an approved certification service provider",
        code="cert.ca_not_approved", xroad_code="CannotCreateCertPath")


def _find_ca(trust: _Trust, cert: x509.Certificate, extra: Sequence[x509.Certificate]) -> ApprovedCa:
    """The approved CA the signing certificate chains to (through ``extra`` if needed); no checks."""
    current = cert
    for _ in range(MAX_PATH_LENGTH):
        for issuer in trust.issuers(current):
            ca = trust.approved(issuer)
            if ca is not None:
                return ca
        nxt = next((c for c in extra if c.subject == current.issuer and c.subject != current.subject), None)
        if nxt is None:
            break
        current = nxt
    raise _not_approved(cert)


def _lenient_extra_certs(doc: SignatureDocument) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for el in _unsigned_props(doc, "xades:CertificateValues", "xades:EncapsulatedX509Certificate")[
            :MAX_EXTRA_CERTS]:
        try:
            out.append(x509.load_der_x509_certificate(_b64(el.text, "certificate")))
        except (SignatureError, ValueError):
            continue
    return out


def _verify_signer_name(signer: SignerId, cert: x509.Certificate, ca: ApprovedCa,
                        profile_resolver: ProfileResolver) -> MemberId:
    if not ca.certificate_profile_info.strip():
        raise CertificateError(f"could not find certificate profile info for certificate {_name(cert)}",
                               code="cert.profile_unknown", xroad_code="InternalError")
    profile = profile_resolver(ca.certificate_profile_info)
    member = profile.member_from_sign_cert(cert, signer.instance)
    if (member.instance, member.member_class, member.member_code) != \
            (signer.instance, signer.member_class, signer.member_code):
        claimed = f"{signer.instance}/{signer.member_class}/{signer.member_code}"
        raise SignatureError(f"name in certificate ({member}) does not match name in message ({claimed})",
                             code="signature.signer_mismatch", xroad_code="IncorrectCertificate")
    return member


# --------------------------------------------------------------------------- references


def _invalid_value(message: str) -> SignatureError:
    return SignatureError(message, code="signature.value_invalid", xroad_code="InvalidSignatureValue")


def _unresolved(uri: str) -> SignatureError:
    return SignatureError(f"could not resolve reference {uri}", code="signature.reference_unresolved",
                          xroad_code="InvalidReference")


def _same_document_digest(root: etree._Element, ref: etree._Element, uri: str, hash_name: str) -> bytes:
    target = _by_id(root, uri)
    if target is None:
        raise _unresolved(uri)
    method = C14N_10
    prefixes: list[str] = []
    transforms = ref.find(_DS + "Transforms")
    if transforms is not None:
        for t in transforms.iterchildren(etree.Element):
            algorithm = t.get("Algorithm") or ""
            if algorithm not in _C14N_METHODS:
                raise _malformed(f"unsupported transform {algorithm!r} on reference {uri}")
            method = algorithm
            inc = t.find("{http://www.w3.org/2001/10/xml-exc-c14n#}InclusiveNamespaces")
            prefixes = (inc.get("PrefixList") or "").split() if inc is not None else []
    return hashlib.new(hash_name, _canonical(target, method, prefixes)).digest()


def _check_references(doc: SignatureDocument, parts: Mapping[str, SignedPart],
                      hash_chain_result: bytes | None) -> tuple[str, ...]:
    uris: list[str] = []
    for ref in doc.references:
        uri = ref.get("URI")
        if uri is None:
            raise _malformed("ds:Reference without URI")
        dm = ref.find(_DS + "DigestMethod")
        method_uri = dm.get("Algorithm") if dm is not None else None
        hash_name = _hash_name(method_uri)
        expected = _b64(ref.findtext(_DS + "DigestValue"), f"DigestValue of reference {uri}")
        if uri.startswith("#"):
            actual = _same_document_digest(doc.root, ref, uri, hash_name)
        else:
            if ref.find(_DS + "Transforms") is not None:
                raise _malformed(f"transforms on the external reference {uri} are not supported")
            part = parts.get(uri)
            if uri == HASH_CHAIN_RESULT_URI:
                if hash_chain_result is None:
                    raise _unresolved(uri)
                actual = hashlib.new(hash_name, hash_chain_result).digest()
            elif part is None:
                raise _unresolved(uri)
            elif uri == MESSAGE_URI and part.data is not None:
                actual = hashlib.new(hash_name, part.data).digest()
            elif part.digest is not None and (uri != MESSAGE_URI or part.digest_method == method_uri):
                actual = part.digest
            elif part.data is not None:
                actual = hashlib.new(hash_name, part.data).digest()
            else:
                raise _unresolved(uri)
        if actual != expected:
            raise _invalid_value(f"digest of reference {uri} does not match; signature is not valid")
        uris.append(uri)
    return tuple(uris)


def _verify_timestamp_manifests(doc: SignatureDocument) -> None:
    root_manifest = _by_id(doc.root, _TS_ROOT_MANIFEST)
    if root_manifest is None:
        return
    refs = root_manifest.findall(_DS + "Reference")[:MAX_MANIFESTS]
    for ref in refs:
        manifest = _by_id(doc.root, ref.get("URI") or "")
        if manifest is None:
            continue
        for inner in manifest.findall(_DS + "Reference")[:MAX_REFERENCES]:
            uri = inner.get("URI") or ""
            if not uri.startswith("#"):
                raise SignatureError(f"could not find {uri}", code="signature.reference_unresolved",
                                     xroad_code="InvalidReference")
            dm = inner.find(_DS + "DigestMethod")
            hash_name = _hash_name(dm.get("Algorithm") if dm is not None else None)
            expected = _b64(inner.findtext(_DS + "DigestValue"), f"DigestValue of {uri}")
            if _same_document_digest(doc.root, inner, uri, hash_name) != expected:
                raise SignatureError(f"timestamp manifest verification failed for {manifest.get('Id')}",
                                     code="signature.manifest_invalid", xroad_code="InvalidReference")


# --------------------------------------------------------------------------- certificate chain


def _path_error(message: str, code: str = "cert.path_unbuildable") -> CertificateError:
    return CertificateError(message, code=code, xroad_code="CannotCreateCertPath")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Name chaining and the issuer's signature on ``cert`` (SHA-1 signatures of old CAs included)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        key = issuer.public_key()
        params = cert.signature_algorithm_parameters
        algorithm = cert.signature_hash_algorithm
        if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        elif isinstance(key, rsa.RSAPublicKey) and isinstance(params, padding.PKCS1v15 | padding.PSS) \
                and algorithm is not None:
            key.verify(cert.signature, cert.tbs_certificate_bytes, params, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(params, ec.ECDSA):
            key.verify(cert.signature, cert.tbs_certificate_bytes, params)
        else:
            return False
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _build_path(trust: _Trust, leaf: x509.Certificate,
                extra: Sequence[x509.Certificate]) -> tuple[list[x509.Certificate], ApprovedCa]:
    """Signing certificate first, the approved CA certificate (trust anchor) last."""
    path = [leaf]
    current = leaf
    for _ in range(MAX_PATH_LENGTH):
        anchors = trust.issuers(current)
        for anchor in anchors:
            ca = trust.approved(anchor)
            if ca is not None and _issued_by(current, anchor):
                path.append(anchor)
                return path, ca
        candidates = [c for c in extra if c.subject == current.issuer and c not in path
                      and _issued_by(current, c)]
        if not candidates:
            if anchors:
                raise _path_error(f"certificate {_name(current)} is not signed by the approved CA "
                                  f"{_name(anchors[0])}")
            raise _not_approved(current)
        current = candidates[0]
        path.append(current)
    raise _path_error(f"no path to an approved CA within {MAX_PATH_LENGTH} certificates")


def _check_path(path: Sequence[x509.Certificate], at: datetime) -> None:
    """Validity at ``at`` and CA constraints (the trust anchor, last, is trusted as configured)."""
    for index, cert in enumerate(path[:-1]):
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise _path_error(
                f"certificate {_name(cert)} is not valid at {at.isoformat()} "
                f"(valid {cert.not_valid_before_utc.isoformat()} .. {cert.not_valid_after_utc.isoformat()})",
                "cert.expired")
        try:
            extensions = cert.extensions
        except ValueError as exc:
            raise _path_error(f"certificate {_name(cert)} has malformed extensions: {exc}", "cert.path_invalid") \
                from exc
        for ext in extensions:
            if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
                raise _path_error(f"certificate {_name(cert)} has an unsupported critical extension {ext.oid}",
                                  "cert.path_invalid")
        if index == 0:
            continue
        # an intermediate CA (from the signature's extra certificates)
        try:
            bc = extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            bc = None
        if bc is None or not bc.ca:
            raise _path_error(f"certificate {_name(cert)} is not a CA certificate", "cert.path_invalid")
        if bc.path_length is not None and index - 1 > bc.path_length:
            raise _path_error(f"path length constraint of {_name(cert)} exceeded", "cert.path_invalid")
        try:
            ku = extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            ku = None
        if ku is not None and not ku.key_cert_sign:
            raise _path_error(f"CA certificate {_name(cert)} lacks key usage keyCertSign", "cert.path_invalid")


def _norm_value(value: str | bytes) -> str:
    text = value if isinstance(value, str) else value.hex()
    return " ".join(text.split()).lower()


def _same_name(a: x509.Name, b: x509.Name) -> bool:
    """Distinguished names equal regardless of RDN order and case (as BouncyCastle compares them)."""
    def key(name: x509.Name) -> list[tuple[tuple[str, str], ...]]:
        return sorted(tuple(sorted((attr.oid.dotted_string, _norm_value(attr.value)) for attr in rdn))
                      for rdn in name.rdns)
    return a == b or key(a) == key(b)


def _single_for(response: x509_ocsp.OCSPResponse, cert: x509.Certificate,
                issuer: x509.Certificate) -> x509_ocsp.OCSPSingleResponse | None:
    for single in response.responses:
        try:
            name_hash, key_hash = ocsp.issuer_hashes(issuer, single.hash_algorithm.name)
        except (ValueError, KeyError, UnsupportedAlgorithm, TypeError):
            continue
        if (single.serial_number, single.issuer_name_hash, single.issuer_key_hash) == \
                (cert.serial_number, name_hash, key_hash):
            return single
    return None


def _response_signed_by(response: x509_ocsp.OCSPResponse, signer: x509.Certificate) -> bool:
    key = signer.public_key()
    data = response.tbs_response_bytes
    algorithm = response.signature_hash_algorithm
    try:
        if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(response.signature, data)
        elif isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            pad: padding.AsymmetricPadding = padding.PKCS1v15()
            if response.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
                pad = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
            key.verify(response.signature, data, pad, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(response.signature, data, ec.ECDSA(algorithm))
        else:
            return False
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _validation_info(message: str) -> CertificateError:
    return CertificateError(message, code="cert.ocsp_invalid", xroad_code="InvalidCertPath.IncorrectValidationInfo")


def _responder_cert(response: x509_ocsp.OCSPResponse, trust: _Trust) -> x509.Certificate | None:
    """The certificate the ResponderID names: responder certificates and CA certificates of global
    configuration first, then those in the response (X-Road's ``OcspVerifier.getOcspCert``)."""
    pool = [*trust.all_responders(), *trust.all_ca_certs(), *response.certificates]
    key_hash = response.responder_key_hash
    name = response.responder_name
    for cert in pool:
        if key_hash is not None:
            spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
            if hashlib.sha1(ocsp.public_key_bits(spki)).digest() == key_hash:  # noqa: S324 - RFC 6960
                return cert
        elif name is not None and _same_name(cert.subject, name):
            return cert
    return None


def _authorised(responder: x509.Certificate, issuer: x509.Certificate, trust: _Trust, at: datetime) -> str | None:
    """None when ``responder`` may answer for certificates of ``issuer``, else why not."""
    if _der(responder) == _der(issuer):
        return None
    listed = any(_der(c) == _der(responder) for c in trust.responders(issuer))
    if not listed:
        if not _issued_by(responder, issuer):
            return "OCSP responder is not authorized for given CA"
        try:
            eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (x509.ExtensionNotFound, ValueError):
            return "OCSP responder is not authorized for given CA (no extended key usage OCSPSigning)"
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            return "OCSP responder is not authorized for given CA (no extended key usage OCSPSigning)"
    if not responder.not_valid_before_utc <= at <= responder.not_valid_after_utc:
        return f"OCSP responder certificate {_name(responder)} is not valid at {at.isoformat()}"
    return None


def _verify_one_ocsp(der: bytes, cert: x509.Certificate, issuer: x509.Certificate, trust: _Trust, at: datetime,
                     freshness: float, max_future: float, bounds: list[datetime] | None = None) -> ocsp.OcspStatus:
    response = x509_ocsp.load_der_ocsp_response(der)
    single = _single_for(response, cert, issuer)
    if single is None:  # pragma: no cover - the caller selected a matching response
        raise _validation_info(f"OCSP response does not apply to certificate (sn = {cert.serial_number})")
    responder = _responder_cert(response, trust)
    if responder is None:
        raise _validation_info("could not find OCSP certificate for responder ID")
    if not _response_signed_by(response, responder):
        raise _validation_info("signature on OCSP response is not valid")
    problem = _authorised(responder, issuer, trust, at)
    if problem is not None:
        raise _validation_info(problem)
    this_update = single.this_update_utc
    next_update = single.next_update_utc
    if this_update < at - timedelta(seconds=freshness):
        raise _validation_info(f"OCSP response is too old (thisUpdate: {this_update.isoformat()})")
    if this_update > at + timedelta(seconds=max_future):
        raise _validation_info(f"OCSP response is from the future (thisUpdate: {this_update.isoformat()})")
    if next_update is not None and next_update < at:
        raise _validation_info(f"OCSP nextUpdate is too old, atDate: {at.isoformat()} "
                               f"nextUpdate: {next_update.isoformat()}")
    if bounds is not None:  # until when the same answer holds (see VerificationCache)
        bounds.extend([responder.not_valid_after_utc, this_update + timedelta(seconds=freshness)])
        if next_update is not None:
            bounds.append(next_update)
    names = {x509_ocsp.OCSPCertStatus.GOOD: "good", x509_ocsp.OCSPCertStatus.REVOKED: "revoked"}
    status = names.get(single.certificate_status, "unknown")
    reason = single.revocation_reason.value if single.revocation_reason is not None else None
    return ocsp.OcspStatus(status=status,  # type: ignore[arg-type]
                           this_update=this_update, next_update=next_update,
                           produced_at=response.produced_at_utc, revocation_time=single.revocation_time_utc,
                           revocation_reason=reason, der=der)


def _verify_ocsp(path: Sequence[x509.Certificate], trust: _Trust, responses: Sequence[bytes], at: datetime,
                 freshness: float, max_future: float,
                 bounds: list[datetime] | None = None) -> tuple[ocsp.OcspStatus, ...]:
    """X-Road's ``CertChainVerifier.verifyOcspResponses`` + ``OcspVerifier.verifyValidityAndStatus``."""
    loaded = [(der, x509_ocsp.load_der_ocsp_response(der)) for der in responses]
    out: list[ocsp.OcspStatus] = []
    for cert, issuer in itertools.pairwise(path):
        der = next((d for d, r in loaded if r.response_status == x509_ocsp.OCSPResponseStatus.SUCCESSFUL
                    and _single_for(r, cert, issuer) is not None), None)
        if der is None:
            raise CertificateError(f"unable to find OCSP response for certificate {_name(cert)}",
                                   code="cert.ocsp_missing", xroad_code="InvalidCertPath.CertValidation")
        try:
            status = _verify_one_ocsp(der, cert, issuer, trust, at, freshness, max_future, bounds)
        except (ValueError, TypeError) as exc:
            raise _validation_info(f"OCSP response for {_name(cert)} cannot be used: {exc}") from exc
        if not status.is_good:
            raise CertificateError(f"OCSP response indicates certificate status of {_name(cert)} is "
                                   f"{status.status.upper()}", code=f"cert.{status.status}",
                                   xroad_code="InvalidCertPath.CertValidation")
        out.append(status)
    return tuple(out)


# --------------------------------------------------------------------------- the verification cache


class VerificationCache:
    """What a gateway need not verify again in message after message from the same peer.

    Every message of a member carries the same signing certificate, extra certificates and OCSP
    responses until the OCSP responses are refreshed, and the shared parameters change only with a
    new global configuration.  Cached, each under a key of exactly its inputs:

    * a signature document whose schema, signing certificate, signature value and time-stamp
      manifests verified (a batch signature comes with every message of its batch; the hash chain
      and the references are verified for each message);
    * the approved-CA index of a shared-parameters object;
    * the member a signing certificate names through its CA's profile, for a signer;
    * the certificate path and OCSP outcome for (parameters, signing certificate, extra
      certificates, OCSP responses, freshness), reused for validation times from the first success
      until the earliest of: a certificate of the path or an OCSP responder's certificate expiring,
      an OCSP response's thisUpdate + freshness or its nextUpdate, and ``max_age_seconds`` after the
      first success.

    Failures are never cached (a bad signature costs the full verification every time); parameters
    are held by reference, so a key of a replaced parameters object never matches a new one.
    Bounded (least recently used out first).  Not thread-safe: one per reactor.
    """

    def __init__(self, max_entries: int = 1024, max_age_seconds: float = 300.0, max_documents: int = 64) -> None:
        self.max_entries = max_entries
        self.max_age = timedelta(seconds=max_age_seconds)
        self._entries: OrderedDict[tuple[object, ...], tuple[SharedParameters, object]] = OrderedDict()
        self._documents: OrderedDict[bytes, _DocumentOutcome] = OrderedDict()
        self.max_documents = max_documents
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _get(self, key: tuple[object, ...], conf: SharedParameters) -> object | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] is not conf:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def _put(self, key: tuple[object, ...], conf: SharedParameters, value: object) -> None:
        self._entries[key] = (conf, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def document(self, signature_xml: bytes) -> _DocumentOutcome | None:
        found = self._documents.get(signature_xml)
        if found is not None:
            self.hits += 1
            self._documents.move_to_end(signature_xml)
        return found

    def keep_document(self, signature_xml: bytes, outcome: _DocumentOutcome) -> None:
        self._documents[signature_xml] = outcome
        while len(self._documents) > self.max_documents:
            self._documents.popitem(last=False)

    def trust(self, conf: SharedParameters) -> _Trust:
        key = ("trust", id(conf))
        found = self._get(key, conf)
        if isinstance(found, _Trust):
            return found
        trust = _Trust(conf, None)
        self._put(key, conf, trust)
        return trust

    def member(self, conf: SharedParameters, signer: SignerId, cert: x509.Certificate,
               extra: Sequence[x509.Certificate], profile_resolver: ProfileResolver) -> MemberId:
        key = ("member", id(conf), signer.instance, signer.member_class, signer.member_code, _der(cert),
               *(_der(c) for c in extra))
        found = self._get(key, conf)
        if isinstance(found, MemberId):
            self.hits += 1
            return found
        self.misses += 1
        ca = _find_ca(self.trust(conf), cert, extra)
        member = _verify_signer_name(signer, cert, ca, profile_resolver)
        self._put(key, conf, member)
        return member

    def chain(self, conf: SharedParameters, cert: x509.Certificate, extra: Sequence[x509.Certificate],
              responses: Sequence[bytes], when: datetime, freshness: float, max_future: float,
              ) -> tuple[list[x509.Certificate], ApprovedCa, tuple[ocsp.OcspStatus, ...]]:
        key = ("chain", id(conf), _der(cert), tuple(_der(c) for c in extra), tuple(responses), freshness, max_future)
        found = self._get(key, conf)
        if isinstance(found, _ChainOutcome) and found.since <= when <= found.until:
            self.hits += 1
            return found.path, found.ca, found.statuses
        self.misses += 1
        trust = self.trust(conf)
        path, ca = _build_path(trust, cert, extra)
        _check_path(path, when)
        bounds: list[datetime] = [c.not_valid_after_utc for c in path[:-1]]
        statuses = _verify_ocsp(path, trust, responses, when, freshness, max_future, bounds)
        until = min([*bounds, when + self.max_age])
        self._put(key, conf, _ChainOutcome(path, ca, statuses, when, until))
        return path, ca, statuses


@dataclass(frozen=True)
class _DocumentOutcome:
    """A signature document whose schema, signing certificate, signature value and time-stamp
    manifests verified (all it needs besides the message parts, the signer and the time)."""

    doc: SignatureDocument
    cert: x509.Certificate
    lenient: list[x509.Certificate]
    extra: list[x509.Certificate]
    responses: list[bytes]


@dataclass(frozen=True)
class _ChainOutcome:
    path: list[x509.Certificate]
    ca: ApprovedCa
    statuses: tuple[ocsp.OcspStatus, ...]
    since: datetime
    until: datetime


# --------------------------------------------------------------------------- the verifier


def _default_profiles(class_name: str) -> SignCertProfile:
    return sign_profile_for_class(class_name)


def verify_signature(
    signature_xml: bytes,
    *,
    signer: SignerId,
    conf: SharedParameters,
    at: datetime | None,
    parts: Sequence[SignedPart] = (),
    hash_chain_result: bytes | None = None,
    hash_chain: bytes | None = None,
    hash_chain_resolver: Callable[[str], bytes | None] | None = None,
    ca_lookup: CaLookup | None = None,
    profile_resolver: ProfileResolver = _default_profiles,
    verify_schema: bool = True,
    ocsp_max_future_seconds: float | None = None,
    cache: VerificationCache | None = None,
) -> VerifiedSignature:
    """Verify an X-Road signature document made by ``signer`` (its member part) at time ``at``.

    ``conf`` is the shared parameters of the signer's instance (approved CAs, their OCSP
    responders and certificate profiles, ``ocspFreshnessSeconds``).  ``parts`` are the signed
    message parts; ``hash_chain_result``/``hash_chain`` the ``application/hash-chain-result`` and
    ``application/hash-chain`` parts of a batch signature.  ``hash_chain_resolver`` replaces the
    default resolver of hash chain URIs (``/sig-hashchain.xml`` -> ``hash_chain``, a part's name
    -> its data).  ``ca_lookup`` replaces the lookup of the approved CA certificate that issued a
    certificate (default: a CA certificate of ``conf`` whose subject is the certificate's issuer).
    ``profile_resolver`` maps a ``certificateProfileInfo`` class name to a profile (default:
    Basic and FiVRK).  ``at`` may be None only when the verification fails before the
    certificate chain step (as X-Road's tests do).  ``ocsp_max_future_seconds`` bounds how far
    after ``at`` an OCSP thisUpdate may lie (None: unbounded, as X-Road).  ``cache`` remembers
    the certificate steps between calls (see :class:`VerificationCache`; not used with a custom
    ``ca_lookup`` or ``profile_resolver``).

    Returns :class:`VerifiedSignature`; raises ``SignatureError`` or ``CertificateError``.
    """
    if ca_lookup is not None or profile_resolver is not _default_profiles:
        cache = None
    # A batch signature arrives with every message of its batch: what depends on the document alone
    # was checked with the first of them.
    seen = cache.document(signature_xml) if cache is not None and verify_schema else None
    if seen is None:
        doc = parse_signature_document(signature_xml)
        # 1. schema
        if verify_schema:
            _validate_schema(doc)
    else:
        doc = seen.doc
    by_name: dict[str, SignedPart] = {}
    for part in parts:
        by_name.setdefault(part.name, part)
    # 2. hash chain (batch signatures)
    batch = hash_chain_result is not None and doc.references_uri(HASH_CHAIN_RESULT_URI)
    if batch:
        assert hash_chain_result is not None
        _verify_hash_chain(hash_chain_result, hash_chain, by_name, hash_chain_resolver)
    # 3. signing certificate
    cert = _signing_cert(doc) if seen is None else seen.cert
    # 4. signer name through the approved CA's certificate profile
    trust = cache.trust(conf) if cache is not None else _Trust(conf, ca_lookup)
    if cache is not None:
        lenient = _lenient_extra_certs(doc) if seen is None else seen.lenient
        member = cache.member(conf, signer, cert, lenient, profile_resolver)
    else:
        ca = _find_ca(trust, cert, _lenient_extra_certs(doc))
        member = _verify_signer_name(signer, cert, ca, profile_resolver)
    # 5. signature value, then the references
    parsed = ParsedSignature(root=doc.root, signature=doc.signature, signed_info=doc.signed_info,
                             c14n_method=doc.c14n_method, mechanism=SIGNATURE_ALGORITHMS[doc.signature_method][0],
                             hash_name=SIGNATURE_ALGORITHMS[doc.signature_method][1],
                             signature_value=_b64(doc.signature.findtext(_DS + "SignatureValue"),
                                                  "ds:SignatureValue"),
                             signing_cert=cert, references=())
    if seen is None:
        try:
            verify_signature_value(parsed)
        except SignatureError as exc:
            if exc.xroad_code == "InvalidSignatureValue":
                raise _invalid_value("signature is not valid") from exc
            raise
        except (ValueError, TypeError) as exc:  # e.g. a key size the signature value does not fit
            raise _invalid_value(f"signature is not valid: {exc}") from exc
    uris = _check_references(doc, by_name, hash_chain_result)
    if seen is None:
        # 6. time-stamp manifests
        _verify_timestamp_manifests(doc)
        # 7. certificate chain and OCSP
        extra = _extra_certs(doc)
        responses = _ocsp_responses(doc)
        if cache is not None and verify_schema:
            cache.keep_document(signature_xml, _DocumentOutcome(doc, cert, _lenient_extra_certs(doc), extra,
                                                                responses))
    else:
        extra, responses = seen.extra, seen.responses
    if at is None:
        raise SignatureError("no validation time given for the certificate chain",
                             code="signature.no_validation_time", xroad_code="InternalError")
    when = _utc(at)
    max_future = _NO_FUTURE_CHECK_SECONDS if ocsp_max_future_seconds is None else ocsp_max_future_seconds
    if cache is not None:
        path, ca, statuses = cache.chain(conf, cert, extra, responses, when, float(conf.ocsp_freshness_seconds),
                                         max_future)
    else:
        path, ca = _build_path(trust, cert, extra)
        _check_path(path, when)
        statuses = _verify_ocsp(path, trust, responses, when, float(conf.ocsp_freshness_seconds), max_future)
    return VerifiedSignature(member=member, signing_cert=cert, chain=tuple(path), ca=ca, ocsp=statuses,
                             signing_time=_signing_time(doc), references=uris, batch=batch)


def _verify_hash_chain(result: bytes, chain: bytes | None, parts: Mapping[str, SignedPart],
                       resolver: Callable[[str], bytes | None] | None) -> None:
    def default(uri: str) -> bytes | None:
        if uri == HASH_CHAIN_URI:
            return chain
        part = parts.get(uri)
        return part.data if part is not None else None

    inputs = {name: (DigestInput(p.digest_method, p.digest) if p.digest is not None else None)
              for name, p in parts.items()}
    try:
        verify_hash_chain(result, resolver or default, inputs)
    except HashChainError as exc:
        raise SignatureError(f"hash chain does not verify: {exc.message}", code="signature.hash_chain_invalid",
                             xroad_code=f"MalformedSignature.{exc.xroad_code or 'MalformedHashChain'}") from exc

