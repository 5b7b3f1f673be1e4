"""Configuration anchors (``configurationAnchor``) and certificate hashes.

An anchor names an X-Road instance and the sources its signed configuration directory
can be downloaded from, each with the certificates that may verify it::

    <ns3:configurationAnchor xmlns:ns3="http://x-road.eu/xsd/xroad.xsd">
        <generatedAt>2025-11-05T22:10:45.770Z</generatedAt>      (optional)
        <instanceIdentifier>DEV</instanceIdentifier>
        <source>
            <downloadURL>http://cs/internalconf</downloadURL>
            <verificationCert>MIIC2D...</verificationCert>        (one or more, base64 DER)
        </source>
        ...
    </ns3:configurationAnchor>

Documents are parsed with :func:`protocols.xmlsafe.parse_xml` and validated against
``globalconf/v2/private-parameters.xsd`` (as X-Road does).  Two anchors are equal when
their instance and their sources (URL and certificates, in order) are equal;
``generatedAt`` is ignored, as in X-Road's ``ConfigurationAnchor.equals``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree  # type: ignore[import-untyped,unused-ignore]

from protocols.errors import XmlError
from protocols.gconf.errors import gconf_error
from protocols.xmlsafe import parse_xml

__all__ = [
    "DIGEST_URIS",
    "MAX_ANCHOR_BYTES",
    "SHA1_URI",
    "SHA224_URI",
    "SHA256_URI",
    "SHA384_URI",
    "SHA512_URI",
    "XROAD_NS",
    "Anchor",
    "AnchorSource",
    "build_anchor",
    "cert_hash",
    "digest",
    "parse_anchor",
]

XROAD_NS = "http://x-road.eu/xsd/xroad.xsd"
IDENTIFIERS_NS = "http://x-road.eu/xsd/identifiers"

SHA1_URI = "http://www.w3.org/2000/09/xmldsig#sha1"
SHA224_URI = "http://www.w3.org/2001/04/xmldsig-more#sha224"
SHA256_URI = "http://www.w3.org/2001/04/xmlenc#sha256"
SHA384_URI = "http://www.w3.org/2001/04/xmldsig-more#sha384"
SHA512_URI = "http://www.w3.org/2001/04/xmlenc#sha512"

#: digest algorithm URI -> hashlib name (the digests X-Road's DigestAlgorithm knows, less MD5)
DIGEST_URIS: Mapping[str, str] = {
    SHA1_URI: "sha1",
    SHA224_URI: "sha224",
    SHA256_URI: "sha256",
    SHA384_URI: "sha384",
    SHA512_URI: "sha512",
}

MAX_ANCHOR_BYTES = 1024 * 1024
MAX_ANCHOR_SOURCES = 64
MAX_SOURCE_CERTS = 64


def digest(hash_uri: str, data: bytes) -> bytes:
    """``data`` hashed with the algorithm named by ``hash_uri``; ``gconf.unsupported_algorithm``."""
    name = DIGEST_URIS.get(hash_uri)
    if name is None:
        raise gconf_error("gconf.unsupported_algorithm", f"unsupported hash algorithm {hash_uri!r}")
    return hashlib.new(name, data).digest()


def cert_hash(cert: x509.Certificate, hash_uri: str) -> bytes:
    """Hash of the DER encoding of ``cert`` (as in ``Verification-certificate-hash``)."""
    return digest(hash_uri, cert.public_bytes(Encoding.DER))


@dataclass(frozen=True)
class AnchorSource:
    """One configuration source: download URL and the certificates that verify it."""

    download_url: str
    verification_certs: tuple[x509.Certificate, ...]

    def find_cert(self, hash_value: bytes, hash_uri: str) -> x509.Certificate | None:
        """The certificate whose ``hash_uri`` hash of the DER is ``hash_value``, or None."""
        for cert in self.verification_certs:
            if cert_hash(cert, hash_uri) == hash_value:
                return cert
        return None


@dataclass(frozen=True)
class Anchor:
    """A parsed configuration anchor.  ``generated_at`` is optional and not compared."""

    instance: str
    generated_at: datetime | None = field(compare=False)
    sources: tuple[AnchorSource, ...]

    @property
    def verification_certs(self) -> tuple[x509.Certificate, ...]:
        """Every certificate of every source, without duplicates, in document order."""
        seen: list[x509.Certificate] = []
        for source in self.sources:
            seen.extend(c for c in source.verification_certs if c not in seen)
        return tuple(seen)


# --------------------------------------------------------------------------- schema

_XSD_FILES = {
    "globalconf/v2/private-parameters.xsd": "globalconf/v2/private-parameters.xsd",
    "globalconf/common/private-parameters.xsd": "globalconf/common/private-parameters.xsd",
    # common/private-parameters.xsd imports ../../identifiers.xsd; it is shipped in globalconf/
    "identifiers.xsd": "globalconf/identifiers.xsd",
}
_XSD_BASE = "vdxp-xsd:///"


def _xsd_bytes(relative: str) -> bytes:
    return (resources.files("protocols") / "xsd").joinpath(*_XSD_FILES[relative].split("/")).read_bytes()


class _SchemaResolver(etree.Resolver):  # type: ignore[misc,unused-ignore]
    """Serves the packaged anchor schemas; refuses every other URL (never the network)."""

    def resolve(  # type: ignore[override,unused-ignore]
        self, system_url: str | None, public_id: str | None, context: object
    ) -> object:
        url = system_url or ""
        if url.startswith(_XSD_BASE):
            relative = posixpath.normpath(url[len(_XSD_BASE):]).lstrip("/")
            if relative in _XSD_FILES:
                return self.resolve_string(_xsd_bytes(relative), context, base_url=url)
        raise gconf_error("gconf.anchor_invalid", f"schema loader refused to fetch {system_url!r}")


@cache
def _anchor_schema() -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    parser.resolvers.add(_SchemaResolver())
    root = "globalconf/v2/private-parameters.xsd"
    doc = etree.fromstring(_xsd_bytes(root), parser, base_url=_XSD_BASE + root)
    return etree.XMLSchema(doc)


# --------------------------------------------------------------------------- parsing

_TAG_ANCHOR = "{" + XROAD_NS + "}configurationAnchor"


def _load_cert(text: str, where: str) -> x509.Certificate:
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise gconf_error("gconf.anchor_invalid", f"{where}: verificationCert is not base64") from exc
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            # some X-Road files carry base64 of PEM text instead of base64 of DER
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise gconf_error("gconf.anchor_invalid", f"{where}: verificationCert is not an X.509 certificate") from exc


def _parse_datetime(text: str) -> datetime:
    """xs:dateTime; a value without a time zone is taken as UTC."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise gconf_error("gconf.anchor_invalid", f"generatedAt {value!r} is not a date-time") from exc
    if "T" not in value:
        raise gconf_error("gconf.anchor_invalid", f"generatedAt {value!r} is not a date-time")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_anchor(data: bytes) -> Anchor:
    """Parse and validate a configuration anchor document; errors are ``gconf.anchor_invalid``."""
    try:
        root = parse_xml(data, max_bytes=MAX_ANCHOR_BYTES)
    except XmlError as exc:
        raise gconf_error("gconf.anchor_invalid", f"anchor is not acceptable XML: {exc}") from exc
    if root.tag != _TAG_ANCHOR:
        raise gconf_error("gconf.anchor_invalid", f"anchor has root element {root.tag}, expected {_TAG_ANCHOR}")
    try:
        _anchor_schema().assertValid(root)
    except etree.DocumentInvalid as exc:
        raise gconf_error("gconf.anchor_invalid", f"anchor does not conform to its schema: {exc}") from exc

    generated_at: datetime | None = None
    instance = ""
    sources: list[AnchorSource] = []
    for child in root:
        if not isinstance(child.tag, str):
            continue  # comments, processing instructions
        if child.tag == "generatedAt":
            generated_at = _parse_datetime(child.text or "")
        elif child.tag == "instanceIdentifier":
            instance = (child.text or "").strip()
        elif child.tag == "source":
            sources.append(_parse_source(child, len(sources)))
    if not instance:
        raise gconf_error("gconf.anchor_invalid", "anchor has an empty instanceIdentifier")
    if len(sources) > MAX_ANCHOR_SOURCES:
        raise gconf_error("gconf.anchor_invalid", f"anchor lists more than {MAX_ANCHOR_SOURCES} sources")
    return Anchor(instance=instance, generated_at=generated_at, sources=tuple(sources))


def _parse_source(el: etree._Element, index: int) -> AnchorSource:
    url = ""
    certs: list[x509.Certificate] = []
    for child in el:
        if child.tag == "downloadURL":
            url = (child.text or "").strip()
        elif child.tag == "verificationCert":
            if len(certs) >= MAX_SOURCE_CERTS:
                raise gconf_error("gconf.anchor_invalid", f"source {index} lists too many certificates")
            certs.append(_load_cert(child.text or "", f"source {index}"))
    if not url:
        raise gconf_error("gconf.anchor_invalid", f"source {index} has an empty downloadURL")
    return AnchorSource(download_url=url, verification_certs=tuple(certs))


# --------------------------------------------------------------------------- building


def _format_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        raise gconf_error("gconf.build_invalid", "generated_at must carry a time zone")
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def build_anchor(instance: str, sources: Sequence[AnchorSource], generated_at: datetime) -> bytes:
    """An anchor document in the shape the central server writes (UTF-8, standalone)."""
    if not instance or not sources or any(not s.download_url or not s.verification_certs for s in sources):
        raise gconf_error("gconf.build_invalid",
                          "an anchor needs an instance and sources with a URL and at least one certificate")
    nsmap = {"ns2": IDENTIFIERS_NS, "ns3": XROAD_NS}
    root = etree.Element(_TAG_ANCHOR, nsmap=nsmap)
    try:
        etree.SubElement(root, "generatedAt").text = _format_datetime(generated_at)
        etree.SubElement(root, "instanceIdentifier").text = instance
        for source in sources:
            el = etree.SubElement(root, "source")
            etree.SubElement(el, "downloadURL").text = source.download_url
            for cert in source.verification_certs:
                der = cert.public_bytes(Encoding.DER)
                etree.SubElement(el, "verificationCert").text = base64.b64encode(der).decode("ascii")
    except ValueError as exc:  # text lxml cannot store (control characters, NUL)
        raise gconf_error("gconf.build_invalid", f"anchor value not representable in XML: {exc}") from exc
    etree.indent(root, space="    ")
    data: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)
    parse_anchor(data + b"\n")  # what we write must be what we accept
    return data + b"\n"

