# test-case-name: tests.test_gconf_params
"""X-Road global configuration parameters: ``shared-params.xml`` and ``private-params.xml``.

The typed, immutable model of both documents for configuration versions 2 to 6, the
parsers (schema validation of the version's XSD first, then semantic checks) and the
writers (shared parameters in version 6, private parameters in the version 3 schema that
versions 3 to 6 use).

Version differences that matter to the model:

* V2 has no ``source`` elements and its ``authCertHash`` values are SHA-1; from V3 on they
  are SHA-256 (base64 in the document, raw bytes in the model).
* V3 adds ``acmeServer`` (directory URL, IP address) to approved CAs; V4 adds the ACME
  certificate profile ids.
* V5 adds ``subsystemName`` and ``inMaintenanceMode`` of security servers.
* V6 adds ``costType`` of OCSP responders and TSAs and ``defaultCsrFormat`` of CAs.

Certificates are base64 of DER; some real files (the DEV vector) hold base64 of PEM text,
which is accepted too.  The deprecated ``centralService`` elements are not modelled.

This module is pure: documents arrive and leave as bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, cached_property
from importlib import resources
from typing import NamedTuple, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree  # type: ignore[import-untyped,unused-ignore]

from protocols.errors import XmlError
from protocols.gconf.errors import GlobalConfError
from protocols.xmlsafe import parse_xml

__all__ = [
    "ID_NS",
    "MAX_PARAMS_BYTES",
    "SUPPORTED_VERSIONS",
    "WRITE_VERSION",
    "XROAD_NS",
    "AcmeServer",
    "AnchorSource",
    "ApprovedCa",
    "ApprovedTsa",
    "CaInfo",
    "ClientId",
    "ConfigurationSource",
    "FederatedAnchor",
    "GlobalGroup",
    "ManagementService",
    "Member",
    "OcspInfo",
    "PrivateParameters",
    "SecurityServer",
    "SharedParameters",
    "Subsystem",
    "auth_cert_hash",
    "build_private_params",
    "build_shared_params",
    "globalconf_schema",
    "parse_federated_anchor",
    "parse_private_params",
    "parse_shared_params",
    "private_schema_name",
    "shared_schema_name",
]

XROAD_NS = "http://x-road.eu/xsd/xroad.xsd"
ID_NS = "http://x-road.eu/xsd/identifiers"

SUPPORTED_VERSIONS = (2, 3, 4, 5, 6)
#: The version :func:`build_shared_params` writes.
WRITE_VERSION = 6
#: Bound on one parameters document (real ones are tens of kilobytes; large federations a few MB).
MAX_PARAMS_BYTES = 32 * 1024 * 1024

SHA1 = "SHA-1"
SHA256 = "SHA-256"
_HASHLIB = {SHA1: "sha1", SHA256: "sha256"}
_HASH_ALIASES = {
    "sha-1": SHA1, "sha1": SHA1, "http://www.w3.org/2000/09/xmldsig#sha1": SHA1,
    "sha-256": SHA256, "sha256": SHA256, "http://www.w3.org/2001/04/xmlenc#sha256": SHA256,
}

_COST_TYPES = ("FREE", "PAID", "UNDEFINED")
_CSR_FORMATS = ("PEM", "DER")


def _err(message: str, code: str) -> GlobalConfError:
    return GlobalConfError(message, code=code)


# --------------------------------------------------------------------------- identifiers

_BAD_ID_CHARS = re.compile(r"[/\x00-\x1f\x7f]")
_MAX_ID_PART = 255


def _check_id_part(what: str, value: str) -> None:
    if not isinstance(value, str) or not value or len(value) > _MAX_ID_PART or _BAD_ID_CHARS.search(value):
        raise _err(f"invalid X-Road {what} {value!r}: 1..{_MAX_ID_PART} characters, no '/' or control characters",
                   "gconf.invalid_identifier")


@dataclass(frozen=True, slots=True)
class ClientId:
    """An X-Road member (``I/C/CODE``) or subsystem (``I/C/CODE/SUB``)."""

    instance: str
    member_class: str
    member_code: str
    subsystem: str | None = None

    def __post_init__(self) -> None:
        _check_id_part("instance", self.instance)
        _check_id_part("member class", self.member_class)
        _check_id_part("member code", self.member_code)
        if self.subsystem is not None:
            _check_id_part("subsystem code", self.subsystem)

    @classmethod
    def parse(cls, text: str) -> ClientId:
        """Parse ``I/C/CODE`` or ``I/C/CODE/SUB``; raises ``GlobalConfError(gconf.invalid_identifier)``."""
        parts = text.split("/")
        if len(parts) not in (3, 4):
            raise _err(f"X-Road client id {text!r} is not INSTANCE/CLASS/CODE[/SUBSYSTEM]",
                       "gconf.invalid_identifier")
        return cls(parts[0], parts[1], parts[2], parts[3] if len(parts) == 4 else None)

    @property
    def object_type(self) -> str:
        """``MEMBER`` or ``SUBSYSTEM``, as in X-Road identifiers."""
        return "MEMBER" if self.subsystem is None else "SUBSYSTEM"

    def member_id(self) -> ClientId:
        """The member this client belongs to (itself for a member)."""
        return self if self.subsystem is None else ClientId(self.instance, self.member_class, self.member_code)

    def __str__(self) -> str:
        base = f"{self.instance}/{self.member_class}/{self.member_code}"
        return base if self.subsystem is None else f"{base}/{self.subsystem}"


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ConfigurationSource:
    """A central server that publishes this instance's configuration (V3+ ``source``)."""

    address: str
    internal_verification_certs: tuple[x509.Certificate, ...] = ()
    external_verification_certs: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class OcspInfo:
    """An OCSP responder of a CA; ``cost_type`` (V6) is FREE, PAID or UNDEFINED."""

    url: str
    cert: x509.Certificate | None = None
    cost_type: str | None = None


class CaInfo(NamedTuple):
    """An intermediate CA certificate and its OCSP responders."""

    cert: x509.Certificate
    ocsp: tuple[OcspInfo, ...]


@dataclass(frozen=True)
class AcmeServer:
    """ACME settings of an approved CA (V3+; the profile ids V4+)."""

    directory_url: str
    ip_address: str | None = None
    authentication_certificate_profile_id: str | None = None
    signing_certificate_profile_id: str | None = None


@dataclass(frozen=True)
class ApprovedCa:
    name: str
    authentication_only: bool
    top_ca: x509.Certificate
    top_ca_ocsp: tuple[OcspInfo, ...]
    intermediates: tuple[CaInfo, ...]
    certificate_profile_info: str
    default_csr_format: str | None = None
    acme_server: AcmeServer | None = None


@dataclass(frozen=True)
class ApprovedTsa:
    name: str
    url: str
    cert: x509.Certificate
    cost_type: str | None = None


@dataclass(frozen=True)
class Subsystem:
    code: str
    name: str | None = None  # V5+


@dataclass(frozen=True)
class Member:
    """A registered member.  ``class_description`` is the description written next to the
    member class inside the member element (not always the one of ``globalSettings``)."""

    id: ClientId
    name: str
    subsystems: tuple[Subsystem, ...] = ()
    class_description: str = ""

    def subsystem_ids(self) -> tuple[ClientId, ...]:
        return tuple(ClientId(self.id.instance, self.id.member_class, self.id.member_code, s.code)
                     for s in self.subsystems)


@dataclass(frozen=True)
class SecurityServer:
    """A registered security server.  ``address`` may be absent in the document (None).
    ``in_maintenance``/``maintenance_message`` come from V5+ ``inMaintenanceMode``."""

    owner: ClientId
    server_code: str
    address: str | None
    auth_cert_hashes: tuple[bytes, ...]
    auth_cert_hash_algorithm: str
    clients: tuple[ClientId, ...] = ()
    in_maintenance: bool = False
    maintenance_message: str | None = None

    def __post_init__(self) -> None:
        # Accept the usual spellings of the two algorithms (name, hashlib name, XML-DSig URI).
        algorithm = _HASH_ALIASES.get(self.auth_cert_hash_algorithm.strip().lower())
        if algorithm is None:
            raise _err(f"security server {self.server_id()}: unknown auth certificate hash algorithm "
                       f"{self.auth_cert_hash_algorithm!r} (SHA-1 or SHA-256)", "gconf.invalid")
        object.__setattr__(self, "auth_cert_hash_algorithm", algorithm)
        if self.maintenance_message is not None and not self.in_maintenance:
            object.__setattr__(self, "in_maintenance", True)  # a message implies maintenance mode

    def server_id(self) -> str:
        """``INSTANCE/CLASS/CODE/SERVERCODE``."""
        return f"{self.owner}/{self.server_code}"

    def hosts(self, client: ClientId) -> bool:
        """True when ``client`` is the owner or a registered client of this server."""
        return client == self.owner or client in self.clients

    def has_auth_cert(self, cert_der: bytes) -> bool:
        """True when the DER certificate's hash (with this server's algorithm) is registered."""
        return auth_cert_hash(cert_der, self.auth_cert_hash_algorithm) in self.auth_cert_hashes


@dataclass(frozen=True)
class GlobalGroup:
    code: str
    description: str
    members: tuple[ClientId, ...] = ()


def auth_cert_hash(cert: x509.Certificate | bytes, algorithm: str) -> bytes:
    """The ``authCertHash`` of a certificate (DER bytes or object): SHA-1 (V2) or SHA-256 (V3+)."""
    der = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
    try:
        return hashlib.new(_HASHLIB[algorithm], der).digest()
    except KeyError:
        raise _err(f"unknown auth certificate hash algorithm {algorithm!r}", "gconf.invalid") from None


@dataclass(frozen=True)
class SharedParameters:
    """``shared-params.xml`` of one X-Road instance."""

    version: int
    instance: str
    sources: tuple[ConfigurationSource, ...]
    cas: tuple[ApprovedCa, ...]
    tsas: tuple[ApprovedTsa, ...]
    members: tuple[Member, ...]
    servers: tuple[SecurityServer, ...]
    global_groups: tuple[GlobalGroup, ...]
    member_classes: tuple[tuple[str, str], ...]
    ocsp_freshness_seconds: int

    # -- lookups (indexes are built on first use; the object stays immutable) ------------

    @cached_property
    def _members_by_id(self) -> Mapping[ClientId, Member]:
        return {m.id: m for m in self.members}

    @cached_property
    def _registered(self) -> frozenset[ClientId]:
        out: set[ClientId] = set()
        for m in self.members:
            out.add(m.id)
            out.update(m.subsystem_ids())
        return frozenset(out)

    @cached_property
    def _hosting(self) -> Mapping[ClientId, tuple[SecurityServer, ...]]:
        acc: dict[ClientId, list[SecurityServer]] = {}
        for s in self.servers:
            for c in dict.fromkeys((s.owner, *s.clients)):
                acc.setdefault(c, []).append(s)
        return {k: tuple(v) for k, v in acc.items()}

    @cached_property
    def _servers_by_hash(self) -> Mapping[tuple[str, bytes], SecurityServer]:
        out: dict[tuple[str, bytes], SecurityServer] = {}
        for s in self.servers:
            for h in s.auth_cert_hashes:
                out.setdefault((s.auth_cert_hash_algorithm, h), s)
        return out

    @cached_property
    def _groups(self) -> Mapping[str, GlobalGroup]:
        return {g.code: g for g in self.global_groups}

    def member(self, member_id: ClientId) -> Member | None:
        """The member with this id (a subsystem id finds its member), or None."""
        return self._members_by_id.get(member_id.member_id())

    def is_registered(self, client: ClientId) -> bool:
        """True when ``client`` is a registered member or subsystem of this instance."""
        return client in self._registered

    def member_name(self, client: ClientId) -> str | None:
        m = self.member(client)
        return m.name if m is not None else None

    def servers_hosting(self, client: ClientId) -> tuple[SecurityServer, ...]:
        """Every security server that ``client`` owns or is a registered client of
        (servers in maintenance mode included)."""
        return self._hosting.get(client, ())

    def server(self, owner: ClientId, server_code: str) -> SecurityServer | None:
        for s in self.servers:
            if s.owner == owner and s.server_code == server_code:
                return s
        return None

    def server_by_id(self, server_id: str) -> SecurityServer | None:
        """Look up ``I/C/CODE/SERVERCODE``."""
        parts = server_id.split("/")
        if len(parts) != 4:
            return None
        try:
            owner = ClientId(parts[0], parts[1], parts[2])
        except GlobalConfError:
            return None
        return self.server(owner, parts[3])

    def server_by_auth_cert(self, cert: x509.Certificate | bytes) -> SecurityServer | None:
        """The security server whose registered ``authCertHash`` matches ``cert`` (object or
        DER), hashed with the algorithm of this configuration version."""
        der = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
        for algorithm in {s.auth_cert_hash_algorithm for s in self.servers}:
            found = self._servers_by_hash.get((algorithm, auth_cert_hash(der, algorithm)))
            if found is not None:
                return found
        return None

    def global_group(self, code: str) -> GlobalGroup | None:
        return self._groups.get(code)

    def is_member_of_group(self, client: ClientId, group_code: str) -> bool:
        """True when ``client`` is listed in global group ``group_code`` of this instance.
        Exact match: a member's subsystem is not a member of a group because its member is."""
        g = self._groups.get(group_code)
        return g is not None and client in g.members

    def ca_by_name(self, name: str) -> ApprovedCa | None:
        for ca in self.cas:
            if ca.name == name:
                return ca
        return None


@dataclass(frozen=True)
class ManagementService:
    auth_cert_reg_address: str
    auth_cert_reg_cert: x509.Certificate | None
    provider: ClientId


@dataclass(frozen=True)
class AnchorSource:
    """A source of a federated instance's configuration.  The verification certificates are
    kept as the decoded bytes (normally DER): they are only used when that source is used."""

    download_url: str
    verification_certs: tuple[bytes, ...]


@dataclass(frozen=True)
class FederatedAnchor:
    """A ``configurationAnchor`` of a federated instance inside private parameters."""

    instance: str
    sources: tuple[AnchorSource, ...]
    generated_at: datetime | None = None


@dataclass(frozen=True)
class PrivateParameters:
    """``private-params.xml`` of the own instance."""

    version: int
    instance: str
    anchors: tuple[FederatedAnchor, ...]
    management: ManagementService | None
    time_stamping_interval_seconds: int
    extra: tuple[bytes, ...] = field(default=())  # V3 ``any`` elements, serialised, kept verbatim


# --------------------------------------------------------------------------- schemas

_XSD_ROOT = ("xsd", "globalconf")
# Names the schemas may ask for (relative to protocols/xsd/globalconf) -> packaged file.
_XSD_FILES: Mapping[str, str] = {
    **{f"v{v}/shared-parameters.xsd": f"v{v}/shared-parameters.xsd" for v in (2, 3, 4, 5, 6)},
    "v2/private-parameters.xsd": "v2/private-parameters.xsd",
    "v3/private-parameters.xsd": "v3/private-parameters.xsd",
    "common/shared-parameters.xsd": "common/shared-parameters.xsd",
    "common/private-parameters.xsd": "common/private-parameters.xsd",
    # the common schemas import "../../identifiers.xsd"; it is packaged next to them
    "identifiers.xsd": "identifiers.xsd",
    "globalconf/identifiers.xsd": "identifiers.xsd",
}
_XSD_BASE = "vdxp-xsd:///globalconf/"
_SCHEMA_LOCK = threading.Lock()


def _read_xsd(name: str) -> bytes:
    node = resources.files("protocols")
    for part in (*_XSD_ROOT, *name.split("/")):
        node = node / part
    return node.read_bytes()


class _SchemaResolver(etree.Resolver):  # type: ignore[misc,unused-ignore]
    """Serves the packaged global configuration schemas; refuses every other URL."""

    def resolve(  # type: ignore[override,unused-ignore]
        self, system_url: str | None, public_id: str | None, context: object
    ) -> object:
        url = system_url or ""
        for prefix in ("vdxp-xsd:///globalconf/", "vdxp-xsd:///"):
            if url.startswith(prefix):
                name = _XSD_FILES.get(url[len(prefix):])
                if name is not None:
                    return self.resolve_string(_read_xsd(name), context, base_url=_XSD_BASE + name)
        raise GlobalConfError(f"schema loader refused to fetch {url!r}", code="gconf.schema_load")


def shared_schema_name(version: int) -> str:
    """The schema of ``shared-params.xml`` in ``version`` (``v4/shared-parameters.xsd``)."""
    _check_version(version)
    return f"v{version}/shared-parameters.xsd"


def private_schema_name(version: int) -> str:
    """The schema of ``private-params.xml``: v2 for version 2, v3 for versions 3 to 6."""
    _check_version(version)
    return "v2/private-parameters.xsd" if version == 2 else "v3/private-parameters.xsd"


@cache
def globalconf_schema(name: str) -> etree.XMLSchema:
    """The compiled packaged schema ``name`` (e.g. ``v2/private-parameters.xsd``, which also
    defines ``configurationAnchor``).  Loaded without network or file-system access outside
    the package."""
    if name not in _XSD_FILES or name.startswith(("common/", "identifiers")):
        raise GlobalConfError(f"no packaged global configuration schema {name!r}", code="gconf.schema_load")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    parser.resolvers.add(_SchemaResolver())
    doc = etree.fromstring(_read_xsd(name), parser, base_url=_XSD_BASE + name)
    return etree.XMLSchema(doc)


def _check_version(version: int) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise _err(f"global configuration version {version!r} is not supported (2..6)", "gconf.unsupported_version")


def _validated_root(data: bytes, schema_name: str, what: str) -> etree._Element:
    try:
        root = parse_xml(data, max_bytes=MAX_PARAMS_BYTES)
    except XmlError as exc:
        raise GlobalConfError(f"{what} is not acceptable XML ({exc.code}): {exc.message}",
                              code="gconf.malformed") from exc
    if root.tag != f"{{{XROAD_NS}}}conf":
        raise _err(f"{what}: root element is {root.tag}, expected {{{XROAD_NS}}}conf", "gconf.schema_invalid")
    _validate(root, schema_name, what)
    return root


def _validate(root: etree._Element, schema_name: str, what: str) -> None:
    schema = globalconf_schema(schema_name)
    with _SCHEMA_LOCK:
        ok = schema.validate(root)
        errors = list(cast("Iterable[etree._LogEntry]", schema.error_log)) if not ok else []
    if not ok:
        first = errors[0] if errors else None
        where = f"line {first.line}: {first.message}" if first is not None else "invalid"
        raise _err(f"{what} does not conform to {schema_name}, {where}", "gconf.schema_invalid")


# --------------------------------------------------------------------------- parsing helpers


def _text(el: etree._Element) -> str:
    # itertext() skips comments and processing instructions, as JAXB does
    return "".join(t if isinstance(t, str) else t.decode("utf-8") for t in el.itertext())


def _token(el: etree._Element) -> str:
    return " ".join(_text(el).split())


def _where(el: etree._Element, what: str) -> str:
    line = el.sourceline
    return f"{what} <{etree.QName(el).localname}>" + (f" (line {line})" if line else "")


def _b64(el: etree._Element, what: str) -> bytes:
    try:
        return base64.b64decode("".join(_text(el).split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _err(f"{_where(el, what)}: bad base64", "gconf.schema_invalid") from exc


def _cert(el: etree._Element, what: str) -> x509.Certificate:
    raw = _b64(el, what)
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(raw.strip())
        return x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise _err(f"{_where(el, what)}: not an X.509 certificate ({exc})", "gconf.cert_invalid") from exc


def _int(el: etree._Element, what: str) -> int:
    try:
        return int(_token(el))
    except ValueError as exc:  # schema-checked already; kept for defence in depth
        raise _err(f"{_where(el, what)}: not an integer", "gconf.schema_invalid") from exc


def _bool(el: etree._Element) -> bool:
    return _token(el) in ("true", "1")


def _children(el: etree._Element) -> Iterator[tuple[str, etree._Element]]:
    for child in el:
        if isinstance(child.tag, str):
            yield child.tag, child


def _client_id(el: etree._Element, what: str) -> ClientId:
    kind = el.get(f"{{{ID_NS}}}objectType")
    parts: dict[str, str] = {}
    for tag, child in _children(el):
        if tag.startswith(f"{{{ID_NS}}}"):
            parts[tag[len(ID_NS) + 2:]] = _text(child)
    sub = parts.get("subsystemCode")
    if kind not in ("MEMBER", "SUBSYSTEM") or (kind == "MEMBER") != (sub is None):
        raise _err(f"{_where(el, what)}: objectType {kind!r} is not a member or subsystem identifier",
                   "gconf.invalid_identifier")
    try:
        return ClientId(parts["xRoadInstance"], parts["memberClass"], parts["memberCode"], sub)
    except KeyError as exc:
        raise _err(f"{_where(el, what)}: missing {exc.args[0]}", "gconf.invalid_identifier") from None


def _optional(values: Iterable[str]) -> str | None:
    for v in values:
        return v
    return None


# --------------------------------------------------------------------------- shared parameters


def _ocsp(el: etree._Element) -> OcspInfo:
    url, cert, cost = "", None, None
    for tag, child in _children(el):
        if tag == "url":
            url = _text(child)
        elif tag == "cert":
            cert = _cert(child, "OCSP responder")
        elif tag == "costType":
            cost = _token(child)
    return OcspInfo(url, cert, cost)


def _ca_info(el: etree._Element, what: str) -> CaInfo:
    cert: x509.Certificate | None = None
    ocsp: list[OcspInfo] = []
    for tag, child in _children(el):
        if tag == "cert":
            cert = _cert(child, what)
        elif tag == "ocsp":
            ocsp.append(_ocsp(child))
    if cert is None:  # pragma: no cover - the schema requires it
        raise _err(f"{_where(el, what)}: no cert", "gconf.schema_invalid")
    return CaInfo(cert, tuple(ocsp))


def _acme(el: etree._Element) -> AcmeServer:
    values = {tag: _text(child) for tag, child in _children(el)}
    return AcmeServer(values.get("directoryURL", ""), values.get("ipAddress"),
                      values.get("authenticationCertificateProfileId"), values.get("signingCertificateProfileId"))


def _approved_ca(el: etree._Element) -> ApprovedCa:
    name, auth_only, profile = "", False, ""
    top: CaInfo | None = None
    inter: list[CaInfo] = []
    csr: str | None = None
    acme: AcmeServer | None = None
    for tag, child in _children(el):
        if tag == "name":
            name = _text(child)
        elif tag == "authenticationOnly":
            auth_only = _bool(child)
        elif tag == "topCA":
            top = _ca_info(child, "top CA")
        elif tag == "intermediateCA":
            inter.append(_ca_info(child, "intermediate CA"))
        elif tag == "certificateProfileInfo":
            profile = _text(child)
        elif tag == "defaultCsrFormat":
            csr = _token(child)
        elif tag == "acmeServer":
            acme = _acme(child)
    if top is None:  # pragma: no cover - the schema requires it
        raise _err(f"{_where(el, 'approved CA')}: no topCA", "gconf.schema_invalid")
    return ApprovedCa(name, auth_only, top.cert, top.ocsp, tuple(inter), profile, csr, acme)


def _approved_tsa(el: etree._Element) -> ApprovedTsa:
    name, url, cost = "", "", None
    cert: x509.Certificate | None = None
    for tag, child in _children(el):
        if tag == "name":
            name = _text(child)
        elif tag == "url":
            url = _text(child)
        elif tag == "cert":
            cert = _cert(child, "approved TSA")
        elif tag == "costType":
            cost = _token(child)
    if cert is None:  # pragma: no cover - the schema requires it
        raise _err(f"{_where(el, 'approved TSA')}: no cert", "gconf.schema_invalid")
    return ApprovedTsa(name, url, cert, cost)


def _source(el: etree._Element) -> ConfigurationSource:
    address = ""
    internal: list[x509.Certificate] = []
    external: list[x509.Certificate] = []
    for tag, child in _children(el):
        if tag == "address":
            address = _text(child)
        elif tag == "internalVerificationCert":
            internal.append(_cert(child, "configuration source"))
        elif tag == "externalVerificationCert":
            external.append(_cert(child, "configuration source"))
    return ConfigurationSource(address, tuple(internal), tuple(external))


class _Ids:
    """The ID/IDREF table of a shared parameters document."""

    def __init__(self) -> None:
        self.members: dict[str, ClientId] = {}
        self.subsystems: dict[str, ClientId] = {}

    def add(self, el: etree._Element, ident: ClientId, table: dict[str, ClientId]) -> None:
        key = el.get("id")
        if key is None:
            return
        key = key.strip()
        if key in self.members or key in self.subsystems:
            raise _err(f"{_where(el, 'member')}: duplicate id {key!r}", "gconf.duplicate_id")
        table[key] = ident

    def owner(self, el: etree._Element) -> ClientId:
        key = _token(el)
        if key in self.members:
            return self.members[key]
        if key in self.subsystems:
            raise _err(f"{_where(el, 'security server')}: owner {key!r} is a subsystem, not a member",
                       "gconf.invalid_reference")
        raise _err(f"{_where(el, 'security server')}: owner {key!r} names no member", "gconf.invalid_reference")

    def client(self, el: etree._Element) -> ClientId:
        key = _token(el)
        found = self.members.get(key) or self.subsystems.get(key)
        if found is None:
            raise _err(f"{_where(el, 'security server')}: client {key!r} names no member or subsystem",
                       "gconf.invalid_reference")
        return found


def _member(el: etree._Element, instance: str, ids: _Ids) -> Member:
    cls, cls_desc, code, name = "", "", "", ""
    subsystems: list[tuple[etree._Element, Subsystem]] = []
    for tag, child in _children(el):
        if tag == "memberClass":
            for t2, c2 in _children(child):
                if t2 == "code":
                    cls = _text(c2)
                elif t2 == "description":
                    cls_desc = _text(c2)
        elif tag == "memberCode":
            code = _text(child)
        elif tag == "name":
            name = _text(child)
        elif tag == "subsystem":
            values = {t: _text(c) for t, c in _children(child)}
            subsystems.append((child, Subsystem(values.get("subsystemCode", ""), values.get("subsystemName"))))
    try:
        member_id = ClientId(instance, cls, code)
    except GlobalConfError as exc:
        raise _err(f"{_where(el, 'member')}: {exc.message}", exc.code) from None
    ids.add(el, member_id, ids.members)
    seen: set[str] = set()
    for sub_el, sub in subsystems:
        if sub.code in seen:
            raise _err(f"{_where(sub_el, 'subsystem')}: duplicate subsystem {sub.code!r} of {member_id}",
                       "gconf.duplicate_member")
        seen.add(sub.code)
        try:
            sub_id = ClientId(instance, cls, code, sub.code)
        except GlobalConfError as exc:
            raise _err(f"{_where(sub_el, 'subsystem')}: {exc.message}", exc.code) from None
        ids.add(sub_el, sub_id, ids.subsystems)
    return Member(member_id, name, tuple(s for _, s in subsystems), cls_desc)


def _server(el: etree._Element, ids: _Ids, algorithm: str) -> SecurityServer:
    owner: ClientId | None = None
    code = ""
    address: str | None = None
    hashes: list[bytes] = []
    clients: list[ClientId] = []
    maintenance, message = False, None
    for tag, child in _children(el):
        if tag == "owner":
            owner = ids.owner(child)
        elif tag == "serverCode":
            code = _text(child)
        elif tag == "address":
            address = _text(child)
        elif tag == "authCertHash":
            hashes.append(_b64(child, "security server authCertHash"))
        elif tag == "client":
            clients.append(ids.client(child))
        elif tag == "inMaintenanceMode":
            maintenance = True
            message = _optional(_text(c) for t, c in _children(child) if t == "message")
    if owner is None:  # pragma: no cover - the schema requires it
        raise _err(f"{_where(el, 'security server')}: no owner", "gconf.schema_invalid")
    return SecurityServer(owner, code, address, tuple(hashes), algorithm, tuple(dict.fromkeys(clients)),
                          maintenance, message)


def _group(el: etree._Element) -> GlobalGroup:
    code, desc = "", ""
    members: list[ClientId] = []
    for tag, child in _children(el):
        if tag == "groupCode":
            code = _text(child)
        elif tag == "description":
            desc = _text(child)
        elif tag == "groupMember":
            # X-Road drops a group member whose objectType contradicts its fields (a MEMBER with a
            # subsystemCode, as in the "bar" vector) instead of rejecting the file; so do we: an
            # ambiguous entry grants nothing.
            try:
                members.append(_client_id(child, "global group member"))
            except GlobalConfError as exc:
                if exc.code != "gconf.invalid_identifier":
                    raise
    return GlobalGroup(code, desc, tuple(members))


def parse_shared_params(data: bytes, version: int) -> SharedParameters:
    """Parse ``shared-params.xml`` of configuration ``version`` (2..6).

    The document is validated against that version's schema first
    (``gconf.schema_invalid`` naming the line), then checked: identifiers well formed
    (``gconf.invalid_identifier``), IDs unique (``gconf.duplicate_id``), every ``owner``
    names a member and every ``client`` a member or subsystem (``gconf.invalid_reference``),
    certificates decode (``gconf.cert_invalid``), no member or server registered twice
    (``gconf.duplicate_member``, ``gconf.duplicate_server``).  Hostile or malformed XML gives
    ``gconf.malformed``; an unknown version ``gconf.unsupported_version``.
    """
    _check_version(version)
    what = f"shared-params.xml (version {version})"
    root = _validated_root(data, shared_schema_name(version), what)
    algorithm = SHA1 if version == 2 else SHA256
    ids = _Ids()
    instance = ""
    sources: list[ConfigurationSource] = []
    cas: list[ApprovedCa] = []
    tsas: list[ApprovedTsa] = []
    members: list[Member] = []
    server_els: list[etree._Element] = []
    groups: list[GlobalGroup] = []
    classes: list[tuple[str, str]] = []
    freshness = 0
    for tag, child in _children(root):
        if tag == "instanceIdentifier":
            instance = _text(child)
            _check_id_part("instance", instance)
        elif tag == "source":
            sources.append(_source(child))
        elif tag == "approvedCA":
            cas.append(_approved_ca(child))
        elif tag == "approvedTSA":
            tsas.append(_approved_tsa(child))
        elif tag == "member":
            members.append(_member(child, instance, ids))
        elif tag == "securityServer":
            server_els.append(child)  # after all members: IDREFs may point forward
        elif tag == "globalGroup":
            groups.append(_group(child))
        elif tag == "globalSettings":
            for t2, c2 in _children(child):
                if t2 == "memberClass":
                    values = {t: _text(c) for t, c in _children(c2)}
                    classes.append((values.get("code", ""), values.get("description", "")))
                elif t2 == "ocspFreshnessSeconds":
                    freshness = _int(c2, "globalSettings")
    seen_members: set[ClientId] = set()
    for m in members:
        if m.id in seen_members:
            raise _err(f"{what}: member {m.id} is listed twice", "gconf.duplicate_member")
        seen_members.add(m.id)
    servers = [_server(el, ids, algorithm) for el in server_els]
    seen_servers: set[str] = set()
    for s in servers:
        if s.server_id() in seen_servers:
            raise _err(f"{what}: security server {s.server_id()} is listed twice", "gconf.duplicate_server")
        seen_servers.add(s.server_id())
    return SharedParameters(version, instance, tuple(sources), tuple(cas), tuple(tsas), tuple(members),
                            tuple(servers), tuple(groups), tuple(classes), freshness)


# --------------------------------------------------------------------------- private parameters


def _anchor(el: etree._Element) -> FederatedAnchor:
    instance = ""
    generated: datetime | None = None
    sources: list[AnchorSource] = []
    for tag, child in _children(el):
        if tag == "generatedAt":
            generated = _datetime(child)
        elif tag == "instanceIdentifier":
            instance = _text(child)
        elif tag == "source":
            url = ""
            certs: list[bytes] = []
            for t2, c2 in _children(child):
                if t2 == "downloadURL":
                    url = _text(c2)
                elif t2 == "verificationCert":
                    certs.append(_b64(c2, "configuration anchor"))
            sources.append(AnchorSource(url, tuple(certs)))
    return FederatedAnchor(instance, tuple(sources), generated)


def parse_federated_anchor(data: bytes) -> FederatedAnchor:
    """Parse a standalone ``configurationAnchor`` document (validated with the v2 private
    parameters schema, which defines that root element) into the same model as the anchors
    inside private parameters.  Certificates stay bytes."""
    try:
        root = parse_xml(data, max_bytes=MAX_PARAMS_BYTES)
    except XmlError as exc:
        raise GlobalConfError(f"configuration anchor is not acceptable XML ({exc.code}): {exc.message}",
                              code="gconf.malformed") from exc
    if root.tag != f"{{{XROAD_NS}}}configurationAnchor":
        raise _err(f"configuration anchor: root element is {root.tag}", "gconf.schema_invalid")
    _validate(root, "v2/private-parameters.xsd", "configuration anchor")
    return _anchor(root)


def _datetime(el: etree._Element) -> datetime:
    text = _token(el)
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise _err(f"{_where(el, 'configuration anchor')}: unsupported dateTime {text!r}",
                   "gconf.schema_invalid") from exc


def _management(el: etree._Element) -> ManagementService:
    address = ""
    cert: x509.Certificate | None = None
    provider: ClientId | None = None
    for tag, child in _children(el):
        if tag == "authCertRegServiceAddress":
            address = _text(child)
        elif tag == "authCertRegServiceCert":
            cert = _cert(child, "management service")
        elif tag == "managementRequestServiceProviderId":
            provider = _client_id(child, "management service provider")
    if provider is None:  # pragma: no cover - the schema requires it
        raise _err(f"{_where(el, 'management service')}: no provider", "gconf.schema_invalid")
    return ManagementService(address, cert, provider)


_PRIVATE_TAGS = ("instanceIdentifier", "configurationAnchor", "managementService", "timeStampingIntervalSeconds")


def parse_private_params(data: bytes, version: int) -> PrivateParameters:
    """Parse ``private-params.xml`` of configuration ``version`` (v2 schema for 2, v3 for 3..6).

    Errors as :func:`parse_shared_params`.  The verification certificates of federated
    anchors are kept as bytes (they are not parsed here).
    """
    _check_version(version)
    what = f"private-params.xml (version {version})"
    root = _validated_root(data, private_schema_name(version), what)
    instance = ""
    anchors: list[FederatedAnchor] = []
    management: ManagementService | None = None
    interval = 0
    extra: list[bytes] = []
    for tag, child in _children(root):
        if tag == "instanceIdentifier":
            instance = _text(child)
            _check_id_part("instance", instance)
        elif tag == "configurationAnchor":
            anchors.append(_anchor(child))
        elif tag == "managementService":
            management = _management(child)
        elif tag == "timeStampingIntervalSeconds":
            interval = _int(child, "private parameters")
        else:
            # exclusive C14N: only the namespaces the element uses, so it survives a rewrite
            extra.append(etree.tostring(child, method="c14n", exclusive=True, with_comments=True))
    return PrivateParameters(version, instance, tuple(anchors), management, interval, tuple(extra))


# --------------------------------------------------------------------------- writing


def _der_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    el = etree.SubElement(parent, tag)
    if text is not None:
        el.text = text
    return el


def _write_client_id(parent: etree._Element, tag: str, cid: ClientId) -> None:
    el = _sub(parent, tag)
    el.set(f"{{{ID_NS}}}objectType", cid.object_type)
    _sub(el, f"{{{ID_NS}}}xRoadInstance", cid.instance)
    _sub(el, f"{{{ID_NS}}}memberClass", cid.member_class)
    _sub(el, f"{{{ID_NS}}}memberCode", cid.member_code)
    if cid.subsystem is not None:
        _sub(el, f"{{{ID_NS}}}subsystemCode", cid.subsystem)


def _write_ocsp(parent: etree._Element, info: OcspInfo) -> None:
    el = _sub(parent, "ocsp")
    _sub(el, "url", info.url)
    if info.cert is not None:
        _sub(el, "cert", _der_b64(info.cert))
    if info.cost_type is not None:
        if info.cost_type not in _COST_TYPES:
            raise _err(f"OCSP costType {info.cost_type!r} is not one of {_COST_TYPES}", "gconf.invalid")
        _sub(el, "costType", info.cost_type)


def _write_ca_info(parent: etree._Element, tag: str, cert: x509.Certificate, ocsp: Iterable[OcspInfo]) -> None:
    el = _sub(parent, tag)
    _sub(el, "cert", _der_b64(cert))
    for o in ocsp:
        _write_ocsp(el, o)


def _root() -> etree._Element:
    return etree.Element(f"{{{XROAD_NS}}}conf", nsmap={"xroad": XROAD_NS, "id": ID_NS})


def _serialise(root: etree._Element, *, indent: bool = True) -> bytes:
    if indent:
        etree.indent(root, space="    ")
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)) + b"\n"


def _id_for(cid: ClientId) -> str:
    # Deterministic, NCName-safe ids (X-Road writes id0, id1, ...).
    return "id" + str(cid).encode("utf-8").hex()


def build_shared_params(sp: SharedParameters) -> bytes:
    """Write ``sp`` as a version 6 ``shared-params.xml``.

    The result validates against the v6 schema and parses back (with version 6) to a model
    equal to ``sp`` apart from ``version``.  A V2 model with SHA-1 auth certificate hashes or
    without configuration sources cannot be expressed in V6 (``gconf.invalid``).
    """
    if not sp.sources:
        raise _err("version 6 shared parameters need at least one configuration source", "gconf.invalid")
    for s in sp.servers:
        if s.auth_cert_hashes and s.auth_cert_hash_algorithm != SHA256:
            raise _err(f"security server {s.server_id()} has {s.auth_cert_hash_algorithm} auth certificate "
                       "hashes; version 6 needs SHA-256", "gconf.invalid")
    ids: dict[ClientId, str] = {}
    for m in sp.members:
        if m.id.instance != sp.instance or m.id.subsystem is not None:
            raise _err(f"member {m.id} does not belong to instance {sp.instance}", "gconf.invalid")
        ids[m.id] = _id_for(m.id)
        for sid in m.subsystem_ids():
            ids[sid] = _id_for(sid)

    root = _root()
    _sub(root, "instanceIdentifier", sp.instance)
    for src in sp.sources:
        el = _sub(root, "source")
        _sub(el, "address", src.address)
        for c in src.internal_verification_certs:
            _sub(el, "internalVerificationCert", _der_b64(c))
        for c in src.external_verification_certs:
            _sub(el, "externalVerificationCert", _der_b64(c))
    for ca in sp.cas:
        el = _sub(root, "approvedCA")
        _sub(el, "name", ca.name)
        _sub(el, "authenticationOnly", "true" if ca.authentication_only else "false")
        _write_ca_info(el, "topCA", ca.top_ca, ca.top_ca_ocsp)
        for inter in ca.intermediates:
            _write_ca_info(el, "intermediateCA", inter[0], inter[1])
        _sub(el, "certificateProfileInfo", ca.certificate_profile_info)
        if ca.default_csr_format is not None:
            if ca.default_csr_format not in _CSR_FORMATS:
                raise _err(f"defaultCsrFormat {ca.default_csr_format!r} is not PEM or DER", "gconf.invalid")
            _sub(el, "defaultCsrFormat", ca.default_csr_format)
        if ca.acme_server is not None:
            acme = _sub(el, "acmeServer")
            _sub(acme, "directoryURL", ca.acme_server.directory_url)
            for tag, value in (("ipAddress", ca.acme_server.ip_address),
                               ("authenticationCertificateProfileId",
                                ca.acme_server.authentication_certificate_profile_id),
                               ("signingCertificateProfileId", ca.acme_server.signing_certificate_profile_id)):
                if value is not None:
                    _sub(acme, tag, value)
    for tsa in sp.tsas:
        el = _sub(root, "approvedTSA")
        _sub(el, "name", tsa.name)
        _sub(el, "url", tsa.url)
        _sub(el, "cert", _der_b64(tsa.cert))
        if tsa.cost_type is not None:
            if tsa.cost_type not in _COST_TYPES:
                raise _err(f"TSA costType {tsa.cost_type!r} is not one of {_COST_TYPES}", "gconf.invalid")
            _sub(el, "costType", tsa.cost_type)
    for m in sp.members:
        el = _sub(root, "member")
        el.set("id", ids[m.id])
        mc = _sub(el, "memberClass")
        _sub(mc, "code", m.id.member_class)
        _sub(mc, "description", m.class_description)
        _sub(el, "memberCode", m.id.member_code)
        _sub(el, "name", m.name)
        for sub, sid in zip(m.subsystems, m.subsystem_ids(), strict=True):
            sel = _sub(el, "subsystem")
            sel.set("id", ids[sid])
            _sub(sel, "subsystemCode", sub.code)
            if sub.name is not None:
                _sub(sel, "subsystemName", sub.name)
    for s in sp.servers:
        el = _sub(root, "securityServer")
        if s.owner not in ids or s.owner.subsystem is not None:
            raise _err(f"security server {s.server_id()}: owner {s.owner} is not a member", "gconf.invalid_reference")
        _sub(el, "owner", ids[s.owner])
        _sub(el, "serverCode", s.server_code)
        if s.address is not None:
            _sub(el, "address", s.address)
        for h in s.auth_cert_hashes:
            _sub(el, "authCertHash", base64.b64encode(h).decode("ascii"))
        for client in s.clients:
            if client not in ids:
                raise _err(f"security server {s.server_id()}: client {client} is not registered",
                           "gconf.invalid_reference")
            _sub(el, "client", ids[client])
        if s.in_maintenance or s.maintenance_message is not None:
            mm = _sub(el, "inMaintenanceMode")
            if s.maintenance_message is not None:
                _sub(mm, "message", s.maintenance_message)
    for g in sp.global_groups:
        el = _sub(root, "globalGroup")
        _sub(el, "groupCode", g.code)
        _sub(el, "description", g.description)
        for cid in g.members:
            _write_client_id(el, "groupMember", cid)
    settings = _sub(root, "globalSettings")
    for code, desc in sp.member_classes:
        mc = _sub(settings, "memberClass")
        _sub(mc, "code", code)
        _sub(mc, "description", desc)
    _sub(settings, "ocspFreshnessSeconds", str(sp.ocsp_freshness_seconds))
    out = _serialise(root)
    _validated_root(out, shared_schema_name(WRITE_VERSION), "built shared-params.xml")
    return out


def build_private_params(pp: PrivateParameters) -> bytes:
    """Write ``pp`` in the v3 private parameters schema (used by versions 3 to 6)."""
    if pp.management is None:
        raise _err("private parameters need a management service", "gconf.invalid")
    root = _root()
    _sub(root, "instanceIdentifier", pp.instance)
    for anchor in pp.anchors:
        el = _sub(root, "configurationAnchor")
        if anchor.generated_at is not None:
            _sub(el, "generatedAt", anchor.generated_at.isoformat())
        _sub(el, "instanceIdentifier", anchor.instance)
        if not anchor.sources:
            raise _err(f"configuration anchor of {anchor.instance} has no source", "gconf.invalid")
        for src in anchor.sources:
            sel = _sub(el, "source")
            _sub(sel, "downloadURL", src.download_url)
            if not src.verification_certs:
                raise _err(f"configuration anchor source {src.download_url} has no verification certificate",
                           "gconf.invalid")
            for c in src.verification_certs:
                _sub(sel, "verificationCert", base64.b64encode(c).decode("ascii"))
    ms = _sub(root, "managementService")
    _sub(ms, "authCertRegServiceAddress", pp.management.auth_cert_reg_address)
    if pp.management.auth_cert_reg_cert is not None:
        _sub(ms, "authCertRegServiceCert", _der_b64(pp.management.auth_cert_reg_cert))
    _write_client_id(ms, "managementRequestServiceProviderId", pp.management.provider)
    _sub(root, "timeStampingIntervalSeconds", str(pp.time_stamping_interval_seconds))
    etree.indent(root, space="    ")
    for raw in pp.extra:  # appended after indenting, so their content stays verbatim
        try:
            extra = parse_xml(raw, max_bytes=MAX_PARAMS_BYTES)
        except XmlError as exc:
            raise _err(f"extra private parameter element is not XML: {exc.message}", "gconf.invalid") from exc
        root[-1].tail = "\n    "
        extra.tail = "\n"
        root.append(extra)
    out = _serialise(root, indent=False)
    _validated_root(out, private_schema_name(3), "built private-params.xml")
    return out
