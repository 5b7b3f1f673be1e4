# test-case-name: tests.test_xroad_ids
"""X-Road identifiers: clients, services, security servers, global and local groups.

Forms (PR-MESS Annex A, X-Road's ``XRoadId``):

* **string** ``INSTANCE/CLASS/CODE[/SUBSYSTEM]`` (client), ``…/SERVICECODE[/VERSION]`` (service),
  ``INSTANCE/CLASS/CODE/SERVERCODE`` (security server), ``INSTANCE/GROUPCODE`` (global group),
  ``GROUPCODE`` (local group); ``str(identifier)`` gives it.
* **encoded** as X-Road's ``asEncodedId``: the same parts joined with ``:``, optionally led by
  the object type (``SUBSYSTEM:EE:BUSINESS:consumer:sub``).
* **XML** in namespace ``http://x-road.eu/xsd/identifiers`` (``id``): an element with attribute
  ``id:objectType`` and the children ``xRoadInstance, memberClass, memberCode, subsystemCode,
  groupCode, serviceCode, serviceVersion, serverCode`` in that order, as the schema demands.
* **REST** (PR-REST): the path ``/r1/INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICECODE[/path]`` and the
  headers ``X-Road-Client``, ``X-Road-Service``, ``X-Road-Security-Server`` and
  ``X-Road-Represented-Party``, each part percent-encoded on its own.

Characters.  X-Road documents ``A-Z a-z 0-9 ' ( ) + , - . = ?`` (PR-MESS §2.7); the central
server's UI enforces it only with ``strict-identifier-checks``.  The Java proxy itself accepts
anything and merely *logs* identifiers holding ISO control characters or one of
``% : ; / \\`` U+200B U+FEFF (``MessageProcessorBase.checkIdentifier``).  We use two levels:

* **wire** (every identifier object, whatever its source): each part is 1..255 characters, not
  blank, and free of the characters the Java proxy flags.  Unlike Java we *refuse* those, since
  they would break the string, encoded and REST forms (``/`` and ``:`` are the separators, ``%``
  the escape) and open path-injection holes; such an identifier could not be registered anyway.
  Spaces and non-ASCII letters pass, as they do in X-Road (its own test vectors use the member
  code ``Test Org``).
* **strict** (:func:`check_strict`, for identifiers we register or configure ourselves): the
  documented set, plus single inner spaces, exactly as :class:`protocols.certprofile.MemberId`
  accepts, so every member code fits a PrintableString certificate attribute.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeAlias

from lxml import etree

from protocols.errors import VdxpError

__all__ = [
    "ID_NS",
    "MAX_PART_LENGTH",
    "REST_PROTOCOL_VERSION",
    "ClientId",
    "GlobalGroupId",
    "IdentifierError",
    "LocalGroupId",
    "ObjectType",
    "RepresentedParty",
    "RestTarget",
    "SecurityServerId",
    "ServiceId",
    "XRoadId",
    "append_identifier",
    "check_strict",
    "check_wire_part",
    "element_value",
    "identifier_from_xml",
    "identifier_to_xml",
    "parse_encoded",
    "parse_rest_path",
    "percent_decode_segment",
    "percent_encode_segment",
]

ID_NS = "http://x-road.eu/xsd/identifiers"
MAX_PART_LENGTH = 255
REST_PROTOCOL_VERSION = 1

_FORBIDDEN = frozenset("%:;/\\\u200b\ufeff")
_STRICT = re.compile(r"[A-Za-z0-9'()+,\-.=?]+( [A-Za-z0-9'()+,\-.=?]+)*")

Reason = Literal["invalid_characters", "missing_part", "object_type", "duplicate_part", "subsystem_mismatch",
                 "malformed"]


class IdentifierError(VdxpError):
    """An X-Road identifier is malformed.  ``reason`` says how (for mapping onto X-Road faults):
    ``invalid_characters``, ``missing_part``, ``object_type``, ``duplicate_part``,
    ``subsystem_mismatch`` or ``malformed`` (wrong number of parts, bad percent-encoding)."""

    code = "xroad.identifier_invalid"
    xroad_code = "InvalidClientIdentifier"

    def __init__(self, message: str, *, reason: Reason, part: str | None = None) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.part = part


class ObjectType(enum.Enum):
    """Values of ``id:objectType``."""

    MEMBER = "MEMBER"
    SUBSYSTEM = "SUBSYSTEM"
    SERVER = "SERVER"
    GLOBALGROUP = "GLOBALGROUP"
    LOCALGROUP = "LOCALGROUP"
    SERVICE = "SERVICE"


def check_wire_part(what: str, value: str) -> None:
    """Refuse a part that is blank, longer than 255 characters or holds a character the Java proxy
    flags (ISO control characters, ``% : ; / \\``, U+200B, U+FEFF)."""
    if not isinstance(value, str) or not value.strip():
        raise IdentifierError(f"X-Road identifier part {what} must not be blank", reason="missing_part", part=what)
    if len(value) > MAX_PART_LENGTH:
        raise IdentifierError(f"X-Road identifier part {what} is longer than {MAX_PART_LENGTH} characters",
                              reason="invalid_characters", part=what)
    for ch in value:
        code = ord(ch)
        if code <= 0x1F or 0x7F <= code <= 0x9F or ch in _FORBIDDEN:
            raise IdentifierError(f"X-Road identifier part {what} {value!r} contains the forbidden character "
                                  f"U+{code:04X}", reason="invalid_characters", part=what)


def _opt(what: str, value: str | None) -> None:
    if value is not None:
        check_wire_part(what, value)


@dataclass(frozen=True, slots=True)
class ClientId:
    """A member (``subsystem_code`` None) or a subsystem."""

    instance: str
    member_class: str
    member_code: str
    subsystem_code: str | None = None

    def __post_init__(self) -> None:
        check_wire_part("xRoadInstance", self.instance)
        check_wire_part("memberClass", self.member_class)
        check_wire_part("memberCode", self.member_code)
        _opt("subsystemCode", self.subsystem_code)

    @property
    def object_type(self) -> ObjectType:
        return ObjectType.MEMBER if self.subsystem_code is None else ObjectType.SUBSYSTEM

    @property
    def member(self) -> ClientId:
        """The member itself (drops the subsystem)."""
        return ClientId(self.instance, self.member_class, self.member_code)

    def parts(self) -> tuple[str, ...]:
        return _parts(self.instance, self.member_class, self.member_code, self.subsystem_code)

    def __str__(self) -> str:
        return "/".join(self.parts())

    @classmethod
    def parse(cls, text: str) -> ClientId:
        """``INSTANCE/CLASS/CODE[/SUBSYSTEM]``."""
        parts = _split(text, "/", (3, 4), "client")
        return cls(*parts)

    def encoded(self, include_type: bool = False) -> str:
        return _encoded(self.object_type, self.parts(), include_type)

    def rest_header(self) -> str:
        """The ``X-Road-Client`` header value (each part percent-encoded)."""
        return _rest_join(self.parts())

    @classmethod
    def from_rest_header(cls, value: str) -> ClientId:
        """Parse ``X-Road-Client`` (3 or 4 percent-encoded parts)."""
        return cls(*_rest_split(value, (3, 4), "X-Road-Client"))


@dataclass(frozen=True, slots=True)
class ServiceId:
    """A service of a member or subsystem, optionally versioned."""

    instance: str
    member_class: str
    member_code: str
    subsystem_code: str | None
    service_code: str
    service_version: str | None = None

    object_type: ClassVar[ObjectType] = ObjectType.SERVICE

    def __post_init__(self) -> None:
        check_wire_part("xRoadInstance", self.instance)
        check_wire_part("memberClass", self.member_class)
        check_wire_part("memberCode", self.member_code)
        _opt("subsystemCode", self.subsystem_code)
        check_wire_part("serviceCode", self.service_code)
        _opt("serviceVersion", self.service_version)

    @classmethod
    def of(cls, provider: ClientId, service_code: str, service_version: str | None = None) -> ServiceId:
        return cls(provider.instance, provider.member_class, provider.member_code, provider.subsystem_code,
                   service_code, service_version)

    @property
    def provider(self) -> ClientId:
        return ClientId(self.instance, self.member_class, self.member_code, self.subsystem_code)

    @property
    def without_version(self) -> ServiceId:
        """Access rights are kept per service code without version (UG-SS §7)."""
        return ServiceId.of(self.provider, self.service_code)

    def parts(self) -> tuple[str, ...]:
        return _parts(self.instance, self.member_class, self.member_code, self.subsystem_code, self.service_code,
                      self.service_version)

    def __str__(self) -> str:
        return "/".join(self.parts())

    @classmethod
    def parse(cls, text: str, *, with_version: bool = False) -> ServiceId:
        """Parse the string form.  Four parts are a member's service, six a subsystem's versioned
        service; five are ambiguous: a subsystem's service unless ``with_version``, then a member's
        versioned service."""
        parts = _split(text, "/", (4, 5, 6), "service")
        if len(parts) == 4:
            return cls(parts[0], parts[1], parts[2], None, parts[3])
        if len(parts) == 6:
            return cls(*parts)
        if with_version:
            return cls(parts[0], parts[1], parts[2], None, parts[3], parts[4])
        return cls(parts[0], parts[1], parts[2], parts[3], parts[4])

    def encoded(self, include_type: bool = False) -> str:
        return _encoded(self.object_type, self.parts(), include_type)

    def rest_header(self) -> str:
        """The ``X-Road-Service`` header value: ``INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICECODE``."""
        if self.subsystem_code is None:
            raise IdentifierError("a REST service belongs to a subsystem", reason="malformed")
        return _rest_join(self.parts()[:5])

    @classmethod
    def from_rest_header(cls, value: str) -> ServiceId:
        p = _rest_split(value, (5,), "X-Road-Service")
        return cls(p[0], p[1], p[2], p[3], p[4])


@dataclass(frozen=True, slots=True)
class SecurityServerId:
    """A security server: its owner member and server code."""

    instance: str
    member_class: str
    member_code: str
    server_code: str

    object_type: ClassVar[ObjectType] = ObjectType.SERVER

    def __post_init__(self) -> None:
        check_wire_part("xRoadInstance", self.instance)
        check_wire_part("memberClass", self.member_class)
        check_wire_part("memberCode", self.member_code)
        check_wire_part("serverCode", self.server_code)

    @property
    def owner(self) -> ClientId:
        return ClientId(self.instance, self.member_class, self.member_code)

    def parts(self) -> tuple[str, ...]:
        return (self.instance, self.member_class, self.member_code, self.server_code)

    def __str__(self) -> str:
        return "/".join(self.parts())

    @classmethod
    def parse(cls, text: str) -> SecurityServerId:
        return cls(*_split(text, "/", (4,), "security server"))

    def encoded(self, include_type: bool = False) -> str:
        return _encoded(self.object_type, self.parts(), include_type)

    def rest_header(self) -> str:
        """The ``X-Road-Security-Server`` header value."""
        return _rest_join(self.parts())

    @classmethod
    def from_rest_header(cls, value: str) -> SecurityServerId:
        return cls(*_rest_split(value, (4,), "X-Road-Security-Server"))


@dataclass(frozen=True, slots=True)
class GlobalGroupId:
    """A global group of an instance (``INSTANCE/GROUPCODE``)."""

    instance: str
    group_code: str

    object_type: ClassVar[ObjectType] = ObjectType.GLOBALGROUP

    def __post_init__(self) -> None:
        check_wire_part("xRoadInstance", self.instance)
        check_wire_part("groupCode", self.group_code)

    def parts(self) -> tuple[str, ...]:
        return (self.instance, self.group_code)

    def __str__(self) -> str:
        return "/".join(self.parts())

    @classmethod
    def parse(cls, text: str) -> GlobalGroupId:
        return cls(*_split(text, "/", (2,), "global group"))

    def encoded(self, include_type: bool = False) -> str:
        return _encoded(self.object_type, self.parts(), include_type)


@dataclass(frozen=True, slots=True)
class LocalGroupId:
    """A local group of one client of this security server (``GROUPCODE``)."""

    group_code: str

    object_type: ClassVar[ObjectType] = ObjectType.LOCALGROUP

    def __post_init__(self) -> None:
        check_wire_part("groupCode", self.group_code)

    def parts(self) -> tuple[str, ...]:
        return (self.group_code,)

    def __str__(self) -> str:
        return self.group_code

    @classmethod
    def parse(cls, text: str) -> LocalGroupId:
        return cls(*_split(text, "/", (1,), "local group"))

    def encoded(self, include_type: bool = False) -> str:
        return _encoded(self.object_type, self.parts(), include_type)


@dataclass(frozen=True, slots=True)
class RepresentedParty:
    """The third-party representation extension: ``partyCode`` with an optional ``partyClass``."""

    party_code: str
    party_class: str | None = None

    def __post_init__(self) -> None:
        check_wire_part("partyCode", self.party_code)
        _opt("partyClass", self.party_class)

    def __str__(self) -> str:
        return self.party_code if self.party_class is None else f"{self.party_class}/{self.party_code}"

    def rest_header(self) -> str:
        """The ``X-Road-Represented-Party`` header value ``[CLASS/]CODE``."""
        parts = (self.party_code,) if self.party_class is None else (self.party_class, self.party_code)
        return _rest_join(parts)

    @classmethod
    def from_rest_header(cls, value: str) -> RepresentedParty:
        parts = _rest_split(value, (1, 2), "X-Road-Represented-Party")
        return cls(parts[0]) if len(parts) == 1 else cls(parts[1], parts[0])


XRoadId: TypeAlias = ClientId | ServiceId | SecurityServerId | GlobalGroupId | LocalGroupId


def check_strict(identifier: XRoadId | RepresentedParty) -> None:
    """Refuse any part outside ``A-Z a-z 0-9 ' ( ) + , - . = ?`` (single inner spaces allowed),
    the rule for identifiers we register or configure ourselves."""
    parts = ((identifier.party_class, identifier.party_code) if isinstance(identifier, RepresentedParty)
             else identifier.parts())
    for part in parts:
        if part is not None and not _STRICT.fullmatch(part):
            raise IdentifierError(f"X-Road identifier part {part!r} of {identifier} uses characters outside "
                                  "A-Z a-z 0-9 ' ( ) + , - . = ? (spaces only inside)",
                                  reason="invalid_characters", part=part)


# --------------------------------------------------------------------------- string forms


def _parts(*values: str | None) -> tuple[str, ...]:
    return tuple(v for v in values if v is not None)


def _split(text: str, sep: str, counts: tuple[int, ...], what: str) -> list[str]:
    if not isinstance(text, str):
        raise IdentifierError(f"X-Road {what} identifier must be a string", reason="malformed")
    parts = text.split(sep)
    if len(parts) not in counts:
        raise IdentifierError(f"X-Road {what} identifier {text!r} must have "
                              f"{' or '.join(map(str, counts))} parts separated by {sep!r}", reason="malformed")
    return parts


def _encoded(object_type: ObjectType, parts: tuple[str, ...], include_type: bool) -> str:
    body = ":".join(parts)
    return f"{object_type.value}:{body}" if include_type else body


def parse_encoded(text: str) -> XRoadId:
    """Parse the type-led encoded form (``SUBSYSTEM:EE:BUSINESS:consumer:sub``)."""
    head, sep, rest = text.partition(":")
    try:
        object_type = ObjectType(head)
    except ValueError:
        raise IdentifierError(f"unknown X-Road object type in {text!r}", reason="object_type") from None
    if not sep:
        raise IdentifierError(f"encoded X-Road identifier {text!r} has no parts", reason="malformed")
    parts = rest.split(":")
    if object_type is ObjectType.MEMBER and len(parts) == 3:
        return ClientId(*parts)
    if object_type is ObjectType.SUBSYSTEM and len(parts) == 4:
        return ClientId(*parts)
    if object_type is ObjectType.SERVICE and len(parts) in (5, 6):
        # X-Road's encoded service ids always carry the subsystem position when they have five parts.
        return ServiceId(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5] if len(parts) == 6 else None)
    if object_type is ObjectType.SERVICE and len(parts) == 4:
        return ServiceId(parts[0], parts[1], parts[2], None, parts[3])
    if object_type is ObjectType.SERVER and len(parts) == 4:
        return SecurityServerId(*parts)
    if object_type is ObjectType.GLOBALGROUP and len(parts) == 2:
        return GlobalGroupId(*parts)
    if object_type is ObjectType.LOCALGROUP and len(parts) == 1:
        return LocalGroupId(parts[0])
    raise IdentifierError(f"encoded {object_type.value} identifier {text!r} has a wrong number of parts",
                          reason="malformed")


# --------------------------------------------------------------------------- REST forms

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 pchar less '%': what X-Road's UriUtils.uriSegmentPercentDecode accepts unencoded.
_SEGMENT_SAFE = _UNRESERVED | frozenset("!$&'()*+,;=:@")
_HEX = "0123456789ABCDEFabcdef"


def percent_encode_segment(value: str) -> str:
    """Percent-encode one path segment or header part (UTF-8; everything but unreserved characters)."""
    out: list[str] = []
    for byte in value.encode("utf-8"):
        ch = chr(byte)
        out.append(ch if ch in _UNRESERVED else f"%{byte:02X}")
    return "".join(out)


def percent_decode_segment(value: str) -> str:
    """Decode one segment as X-Road does: pchar characters literally, ``%XX`` escapes as UTF-8
    bytes, anything else (including a literal ``/``) refused."""
    out = bytearray()
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == "%":
            if i + 2 >= n:
                raise IdentifierError(f"incomplete percent-encoding in {value!r}", reason="malformed")
            h1, h2 = value[i + 1], value[i + 2]
            if h1 not in _HEX or h2 not in _HEX:
                raise IdentifierError(f"invalid percent-encoding in {value!r}", reason="malformed")
            out.append(int(h1 + h2, 16))
            i += 3
        elif ch in _SEGMENT_SAFE:
            out.append(ord(ch))
            i += 1
        else:
            raise IdentifierError(f"invalid character {ch!r} in path segment {value!r}", reason="malformed")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise IdentifierError(f"percent-encoded {value!r} is not UTF-8", reason="malformed") from None


def _rest_join(parts: tuple[str, ...]) -> str:
    return "/".join(percent_encode_segment(p) for p in parts)


def _rest_split(value: str, counts: tuple[int, ...], what: str) -> list[str]:
    parts = value.strip().split("/")
    if len(parts) not in counts:
        raise IdentifierError(f"{what} value {value!r} must have {' or '.join(map(str, counts))} parts",
                              reason="malformed")
    return [percent_decode_segment(p) for p in parts]


@dataclass(frozen=True, slots=True)
class RestTarget:
    """What a REST request path names: the service and the rest of the path (``""`` or ``/…``)."""

    service: ServiceId
    service_path: str
    version: int = REST_PROTOCOL_VERSION

    def path(self) -> str:
        """The request path again (identifiers percent-encoded, ``service_path`` as received)."""
        return f"/r{self.version}/{_rest_join(self.service.parts()[:5])}{self.service_path}"


def parse_rest_path(raw_path: str) -> RestTarget:
    """Parse ``/r1/INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICECODE[/path]`` (the raw, still encoded path,
    without the query).  As in X-Road, a REST service always belongs to a subsystem; the service
    path after the service code is kept encoded, as received."""
    parts = raw_path.split("/", 7)
    if len(parts) < 7 or parts[0] != "":
        raise IdentifierError(f"REST path {raw_path!r} is not /r1/INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE[/path]",
                              reason="malformed")
    marker = parts[1]
    if len(marker) != 2 or marker[0] != "r" or not marker[1].isdigit():
        raise IdentifierError(f"invalid REST protocol version {marker!r}", reason="malformed")
    if int(marker[1]) != REST_PROTOCOL_VERSION:
        raise IdentifierError(f"unsupported REST protocol version {marker!r}", reason="malformed")
    decoded = [percent_decode_segment(p) for p in parts[2:7]]
    service = ServiceId(decoded[0], decoded[1], decoded[2], decoded[3], decoded[4])
    return RestTarget(service, "/" + parts[7] if len(parts) == 8 else "")


# --------------------------------------------------------------------------- XML forms

_ORDER = ("xRoadInstance", "memberClass", "memberCode", "subsystemCode", "groupCode", "serviceCode",
          "serviceVersion", "serverCode")
_ALLOWED: dict[ObjectType, tuple[str, ...]] = {
    ObjectType.MEMBER: ("xRoadInstance", "memberClass", "memberCode", "subsystemCode"),
    ObjectType.SUBSYSTEM: ("xRoadInstance", "memberClass", "memberCode", "subsystemCode"),
    ObjectType.SERVICE: ("xRoadInstance", "memberClass", "memberCode", "subsystemCode", "serviceCode",
                         "serviceVersion"),
    ObjectType.SERVER: ("xRoadInstance", "memberClass", "memberCode", "serverCode"),
    ObjectType.GLOBALGROUP: ("xRoadInstance", "groupCode"),
    ObjectType.LOCALGROUP: ("xRoadInstance", "groupCode"),
}
_OBJECT_TYPE_ATTR = f"{{{ID_NS}}}objectType"


def _xml_fields(identifier: XRoadId) -> dict[str, str | None]:
    if isinstance(identifier, ClientId):
        return {"xRoadInstance": identifier.instance, "memberClass": identifier.member_class,
                "memberCode": identifier.member_code, "subsystemCode": identifier.subsystem_code}
    if isinstance(identifier, ServiceId):
        return {"xRoadInstance": identifier.instance, "memberClass": identifier.member_class,
                "memberCode": identifier.member_code, "subsystemCode": identifier.subsystem_code,
                "serviceCode": identifier.service_code, "serviceVersion": identifier.service_version}
    if isinstance(identifier, SecurityServerId):
        return {"xRoadInstance": identifier.instance, "memberClass": identifier.member_class,
                "memberCode": identifier.member_code, "serverCode": identifier.server_code}
    if isinstance(identifier, GlobalGroupId):
        return {"xRoadInstance": identifier.instance, "groupCode": identifier.group_code}
    return {"groupCode": identifier.group_code}


def identifier_to_xml(tag: str, identifier: XRoadId, nsmap: dict[str, str] | None = None) -> etree._Element:
    """Build ``<tag id:objectType="…">`` with the identifier's parts (``tag`` in Clark notation,
    e.g. ``{http://x-road.eu/xsd/xroad.xsd}client``)."""
    el = etree.Element(tag, nsmap=nsmap if nsmap is not None else {"id": ID_NS})
    append_identifier(el, identifier)
    return el


def append_identifier(el: etree._Element, identifier: XRoadId) -> None:
    """Set ``id:objectType`` on ``el`` and append the identifier's part elements."""
    el.set(_OBJECT_TYPE_ATTR, identifier.object_type.value)
    fields = _xml_fields(identifier)
    for name in _ORDER:
        value = fields.get(name)
        if value is not None:
            etree.SubElement(el, f"{{{ID_NS}}}{name}").text = value


def element_value(el: etree._Element) -> str:
    """The character content directly inside ``el`` (its text and its children's tails), untrimmed,
    as X-Road's SAX handlers collect it."""
    pieces = [el.text or ""]
    pieces.extend(child.tail or "" for child in el)
    return "".join(pieces)


def identifier_from_xml(el: etree._Element, expected: tuple[ObjectType, ...]) -> XRoadId:
    """Read an identifier element as X-Road's SOAP parser does.

    ``id:objectType`` must be present and one of ``expected`` (``reason="object_type"``).  Children
    in the identifiers namespace that the type allows are read (duplicates:
    ``reason="duplicate_part"``); anything else is ignored.  A client whose type and subsystem code
    disagree is refused (``reason="subsystem_mismatch"``), as X-Road's JAXB converter does.
    """
    raw_type = el.get(_OBJECT_TYPE_ATTR)
    if raw_type is None:
        raise IdentifierError("missing objectType attribute", reason="object_type")
    try:
        object_type = ObjectType(raw_type)
    except ValueError:
        raise IdentifierError(f"unknown objectType: {raw_type}", reason="object_type") from None
    if object_type not in expected:
        raise IdentifierError(f"unexpected objectType: {raw_type}", reason="object_type")
    allowed = _ALLOWED[object_type]
    values: dict[str, str] = {}
    for child in el:
        if not isinstance(child.tag, str):
            continue
        qname = etree.QName(child)
        if qname.namespace != ID_NS or qname.localname not in allowed:
            continue
        if qname.localname in values:
            raise IdentifierError(f"identifier contains duplicate field '{{{ID_NS}}}{qname.localname}'",
                                  reason="duplicate_part", part=qname.localname)
        values[qname.localname] = element_value(child)

    def need(name: str) -> str:
        value = values.get(name)
        if value is None:
            raise IdentifierError(f"{object_type.value} identifier lacks {name}", reason="missing_part", part=name)
        return value

    if object_type in (ObjectType.MEMBER, ObjectType.SUBSYSTEM):
        sub = values.get("subsystemCode")
        if object_type is ObjectType.SUBSYSTEM and sub is None:
            raise IdentifierError("missing required subsystem code", reason="subsystem_mismatch")
        if object_type is ObjectType.MEMBER and sub is not None:
            raise IdentifierError("redundant subsystem code", reason="subsystem_mismatch")
        return ClientId(need("xRoadInstance"), need("memberClass"), need("memberCode"), sub)
    if object_type is ObjectType.SERVICE:
        return ServiceId(need("xRoadInstance"), need("memberClass"), need("memberCode"),
                         values.get("subsystemCode"), need("serviceCode"), values.get("serviceVersion"))
    if object_type is ObjectType.SERVER:
        return SecurityServerId(need("xRoadInstance"), need("memberClass"), need("memberCode"), need("serverCode"))
    if object_type is ObjectType.GLOBALGROUP:
        return GlobalGroupId(need("xRoadInstance"), need("groupCode"))
    return LocalGroupId(need("groupCode"))
