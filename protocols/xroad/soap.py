# test-case-name: tests.test_xroad_soap
"""X-Road Message Protocol 4.0 (SOAP 1.1): parsing and validation as the Java client proxy does it.

:class:`SoapPartParser` reads one SOAP envelope incrementally (lxml's pull parser, configured as
:mod:`protocols.xmlsafe`: no DTD, no entities, no network, bounded depth and size) and applies
X-Road's rules in document order, as ``SaxSoapParserImpl`` does:

* the root must be a SOAP 1.1 ``Envelope`` (``InvalidSoap``); malformed XML, a DOCTYPE, too deep
  nesting or an empty body are ``InvalidSoap`` too (X-Road wraps its SAX errors that way);
* header fields in ``http://x-road.eu/xsd/xroad.xsd``: ``client``, ``service``, ``securityServer``,
  ``id``, ``userId``, ``issue``, ``protocolVersion``, ``requestHash`` (``algorithmId``), and
  ``repr:representedParty``; a second occurrence of any of them, or of a part inside an
  identifier, is ``DuplicateHeaderField``; ``id:objectType`` missing, unknown or unexpected is
  ``InvalidXml``; ``protocolVersion`` must start with ``4.`` (``InvalidProtocolVersion``;
  X-Road accepts any 4.x); other header elements are kept but ignored;
* at the end of the envelope: no ``Header`` → ``MissingHeader``; no ``protocolVersion``,
  ``client``, ``id`` or ``service`` → ``MissingHeaderField``; no ``Body`` → ``MissingBody``;
  a body without exactly one element → ``InvalidBody``; a body element whose local name does not
  start with the service code → ``InconsistentHeaders``;
* a body holding ``SOAP-ENV:Fault`` yields a :class:`SoapFaultMessage` without header checks.

Deviations, each stricter than Java and documented here: identifier parts must pass
:func:`protocols.xroad.ids.check_wire_part` (no control characters, ``% : ; / \\``, ZWSP, BOM;
Java only logs them) — ``InvalidClientIdentifier``; a client whose ``objectType`` disagrees with
its subsystem code is ``InvalidClientIdentifier`` (X-Road's JAXB path checks this, its SAX path
silently changes the type); an identifier lacking a required part is ``InvalidClientIdentifier``
for the client and ``InvalidXml`` otherwise (Java: ``InternalError``); a second ``Body`` is
``InvalidBody``; an unknown charset in ``Content-Type`` is ``InvalidContentType``.

Values are kept exactly as written (not trimmed; ``<xroad:issue/>`` is the empty string).  The
raw bytes are kept as received, a UTF-8 BOM included: ``requestHash`` is computed over them.  The
charset of ``Content-Type`` (default UTF-8) is recorded; the XML itself is decoded by its BOM and
declaration, as X-Road's SAX parser reads it from the byte stream.

:class:`SoapDecoder` decodes a whole HTTP body: ``text/xml`` or ``application/xop+xml`` (the
envelope alone), or ``multipart/related`` (SwA and MTOM: the first part is the envelope, the rest
are attachments streamed as events).  Faults are raised without an origin prefix unless
``fault_prefix`` is given (``faults.CLIENT`` on the client side, so ``Client.MissingHeader``).

Errors are :class:`~protocols.xroad.faults.XRoadFault`.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import copy
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

from lxml import etree

from protocols.hashchain import DIGEST_URIS, SHA512_URI
from protocols.xroad import faults
from protocols.xroad.faults import XRoadFault
from protocols.xroad.ids import (
    ID_NS,
    ClientId,
    IdentifierError,
    ObjectType,
    RepresentedParty,
    SecurityServerId,
    ServiceId,
    XRoadId,
    append_identifier,
    element_value,
    identifier_from_xml,
)
from protocols.xroad.mime import (
    ContentType,
    Headers,
    MimeError,
    MultipartEnd,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    parse_content_type,
)

__all__ = [
    "MAX_SOAP_BYTES",
    "PROTOCOL_VERSION",
    "REPR_NS",
    "SOAP_ENCODING_NS",
    "SOAP_ENV_NS",
    "XROAD_NS",
    "AttachmentData",
    "AttachmentEnd",
    "AttachmentStart",
    "DecoderEvent",
    "RequestHash",
    "SoapDecoder",
    "SoapDone",
    "SoapFaultMessage",
    "SoapHeader",
    "SoapMessage",
    "SoapPartParser",
    "SoapReceived",
    "build_message",
    "build_response",
    "check_consistency",
    "check_http_method",
    "check_response",
    "compute_request_hash",
    "parse_soap",
    "set_request_hash",
    "validate_soap_action",
    "without_body",
]

SOAP_ENV_NS = faults.SOAP_ENV_NS
SOAP_ENCODING_NS = "http://schemas.xmlsoap.org/soap/encoding/"
XROAD_NS = "http://x-road.eu/xsd/xroad.xsd"
REPR_NS = "http://x-road.eu/xsd/representation.xsd"
PROTOCOL_VERSION = "4.0"
_VERSION_PREFIX = "4."
MAX_SOAP_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 256
SOAP_MEDIA_TYPES = ("text/xml", "application/xop+xml")

_ENVELOPE = f"{{{SOAP_ENV_NS}}}Envelope"
_HEADER = f"{{{SOAP_ENV_NS}}}Header"
_BODY = f"{{{SOAP_ENV_NS}}}Body"
_FAULT = f"{{{SOAP_ENV_NS}}}Fault"
_ENCODING_STYLE = f"{{{SOAP_ENV_NS}}}encodingStyle"


def _x(name: str) -> str:
    return f"{{{XROAD_NS}}}{name}"


_CLIENT, _SERVICE, _SERVER = _x("client"), _x("service"), _x("securityServer")
_QUERY_ID, _USER_ID, _ISSUE = _x("id"), _x("userId"), _x("issue")
_PROTOCOL_VERSION, _REQUEST_HASH = _x("protocolVersion"), _x("requestHash")
_REPRESENTED_PARTY = f"{{{REPR_NS}}}representedParty"
_PARTY_CLASS, _PARTY_CODE = f"{{{REPR_NS}}}partyClass", f"{{{REPR_NS}}}partyCode"
_HEADER_FIELDS = frozenset({_CLIENT, _SERVICE, _SERVER, _QUERY_ID, _USER_ID, _ISSUE, _PROTOCOL_VERSION,
                            _REQUEST_HASH, _REPRESENTED_PARTY})


# --------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class RequestHash:
    """``xroad:requestHash``: base64 digest of the request and the digest algorithm URI."""

    value: str
    algorithm_id: str | None = None


@dataclass(frozen=True, slots=True)
class SoapHeader:
    """The X-Road header fields of a message."""

    client: ClientId
    service: ServiceId
    query_id: str
    protocol_version: str = PROTOCOL_VERSION
    user_id: str | None = None
    issue: str | None = None
    represented_party: RepresentedParty | None = None
    security_server: SecurityServerId | None = None
    request_hash: RequestHash | None = None


@dataclass(frozen=True, slots=True)
class SoapMessage:
    """A valid X-Road SOAP message: its header, the body element's name and the raw bytes."""

    header: SoapHeader
    body_namespace: str | None
    service_name: str
    raw: bytes
    charset: str = "UTF-8"
    content_type: str = "text/xml; charset=UTF-8"
    is_rpc: bool = False

    @property
    def client(self) -> ClientId:
        return self.header.client

    @property
    def service(self) -> ServiceId:
        return self.header.service

    @property
    def query_id(self) -> str:
        return self.header.query_id

    @property
    def is_response(self) -> bool:
        """Whether the body element's name ends with ``Response`` (X-Road's rule)."""
        return self.service_name.endswith("Response")

    @property
    def has_bom(self) -> bool:
        return self.raw.startswith(codecs.BOM_UTF8)

    def request_hash(self, algorithm_id: str = SHA512_URI) -> str:
        """The base64 digest a provider puts into ``requestHash`` for this (request) message."""
        return compute_request_hash(self.raw, algorithm_id)


@dataclass(frozen=True, slots=True)
class SoapFaultMessage:
    """A SOAP 1.1 fault received in place of a message."""

    fault: XRoadFault
    raw: bytes
    charset: str = "UTF-8"

    @property
    def faultcode(self) -> str:
        return self.fault.faultcode()


def compute_request_hash(raw: bytes, algorithm_id: str = SHA512_URI) -> str:
    """Base64 digest of the raw request bytes (the whole ``text/xml`` body, or the content of the
    first MIME part), with the algorithm named by its URI."""
    try:
        name = DIGEST_URIS[algorithm_id]
    except KeyError:
        raise XRoadFault("InvalidMessage", f"unsupported requestHash algorithm {algorithm_id!r}") from None
    return base64.b64encode(hashlib.new(name, raw).digest()).decode("ascii")


# --------------------------------------------------------------------------- HTTP-level checks


def check_http_method(method: str, *, prefix: Sequence[str] = faults.CLIENT) -> None:
    """SOAP requests must be POSTed (``Client.InvalidHttpMethod``)."""
    if method.upper() != "POST":
        raise XRoadFault("InvalidHttpMethod", f"Must use POST request method instead of {method}", prefix=prefix)


def validate_soap_action(value: str | None, *, prefix: Sequence[str] = faults.CLIENT) -> str | None:
    """Accept a missing, empty or ``""`` SOAPAction, or a double-quoted URI reference; else
    ``InvalidSoapAction``.  Returns the value unchanged (it travels end to end)."""
    if value is None or value == "" or value == '""':
        return value
    if len(value) > 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        if not any(ch in inner for ch in ' "<>\\^`{|}') and all(0x20 < ord(ch) < 0x7F for ch in inner):
            try:
                urlsplit(inner)
                return value
            except ValueError:
                pass
    raise XRoadFault("InvalidSoapAction", "Malformed SOAPAction header", prefix=prefix)


# --------------------------------------------------------------------------- envelope parser


def _fault(code: str, message: str) -> XRoadFault:
    return XRoadFault(code, message)


def _identifier_fault(exc: IdentifierError, header_field: str) -> XRoadFault:
    if exc.reason == "object_type":
        return _fault("InvalidXml", exc.message[:1].upper() + exc.message[1:])
    if exc.reason == "duplicate_part":
        return _fault("DuplicateHeaderField", f"SOAP header contains duplicate field '{{{ID_NS}}}{exc.part}'")
    if header_field == "client" or exc.reason == "invalid_characters":
        return _fault("InvalidClientIdentifier", f"Invalid {header_field} identifier: {exc.message}")
    return _fault("InvalidXml", f"Invalid {header_field} identifier: {exc.message}")


def _xml_parser() -> etree.XMLPullParser:
    return etree.XMLPullParser(events=("start", "end"), resolve_entities=False, no_network=True, load_dtd=False,
                               dtd_validation=False, huge_tree=False, remove_comments=False, remove_pis=False)


@dataclass
class SoapPartParser:
    """Incremental parser of one SOAP envelope (one ``text/xml`` body or MIME part).

    ``feed`` raises :class:`XRoadFault` as soon as a rule is broken; ``close`` returns the
    :class:`SoapMessage` or :class:`SoapFaultMessage`.
    """

    content_type: str | None = "text/xml; charset=UTF-8"
    max_bytes: int = MAX_SOAP_BYTES
    max_depth: int = MAX_DEPTH

    _raw: bytearray = field(default_factory=bytearray, init=False, repr=False)
    _parser: etree.XMLPullParser = field(default_factory=_xml_parser, init=False, repr=False)
    _depth: int = field(default=0, init=False)
    _in_header: bool = field(default=False, init=False)
    _in_body: bool = field(default=False, init=False)
    _header_done: bool = field(default=False, init=False)
    _body_seen: bool = field(default=False, init=False)
    _rpc: bool = field(default=False, init=False)
    _values: dict[str, object] = field(default_factory=dict, init=False)
    _service_ns: str | None = field(default=None, init=False)
    _service_name: str | None = field(default=None, init=False)
    _fault_el: etree._Element | None = field(default=None, init=False)
    _fault: XRoadFault | None = field(default=None, init=False)
    _done: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        ct = parse_content_type(self.content_type)
        self.charset = (ct.charset if ct is not None else None) or "UTF-8"
        try:
            codecs.lookup(self.charset)
        except LookupError:
            raise _fault("InvalidContentType", f"Unsupported charset {self.charset!r}") from None
        if ct is not None:
            _check_soap_media(ct)

    def feed(self, data: bytes) -> None:
        if len(self._raw) + len(data) > self.max_bytes:
            raise _fault("InvalidSoap", f"SOAP message exceeds {self.max_bytes} bytes")
        self._raw += data
        try:
            self._parser.feed(data)
        except etree.XMLSyntaxError as exc:
            raise _fault("InvalidSoap", f"Malformed SOAP message: {exc}") from exc
        self._drain()

    def close(self) -> SoapMessage | SoapFaultMessage:
        try:
            self._parser.close()
        except etree.XMLSyntaxError as exc:
            raise _fault("InvalidSoap", f"Malformed SOAP message: {exc}") from exc
        self._drain()
        raw = bytes(self._raw)
        content_type = self.content_type or "text/xml; charset=UTF-8"
        if self._fault is not None:
            return SoapFaultMessage(self._fault, raw, self.charset)
        if not self._done:  # pragma: no cover - lxml raises on an unclosed root
            raise _fault("InvalidSoap", "Malformed SOAP message: envelope not closed")
        v = self._values
        header = SoapHeader(
            client=v[_CLIENT],  # type: ignore[arg-type]
            service=v[_SERVICE],  # type: ignore[arg-type]
            query_id=v[_QUERY_ID],  # type: ignore[arg-type]
            protocol_version=v[_PROTOCOL_VERSION],  # type: ignore[arg-type]
            user_id=v.get(_USER_ID),  # type: ignore[arg-type]
            issue=v.get(_ISSUE),  # type: ignore[arg-type]
            represented_party=v.get(_REPRESENTED_PARTY),  # type: ignore[arg-type]
            security_server=v.get(_SERVER),  # type: ignore[arg-type]
            request_hash=v.get(_REQUEST_HASH),  # type: ignore[arg-type]
        )
        assert self._service_name is not None
        return SoapMessage(header, self._service_ns, self._service_name, raw, self.charset, content_type, self._rpc)

    # -- events

    def _drain(self) -> None:
        for event, el in self._parser.read_events():
            if event == "start":
                self._start(cast(etree._Element, el))
            else:
                self._end(cast(etree._Element, el))

    def _start(self, el: etree._Element) -> None:
        self._depth += 1
        if self._depth > self.max_depth:
            raise _fault("InvalidSoap", f"Malformed SOAP message: nesting deeper than {self.max_depth} levels")
        depth = self._depth
        if depth == 1:
            docinfo = el.getroottree().docinfo
            if getattr(docinfo, "doctype", "") or docinfo.internalDTD is not None:
                raise _fault("InvalidSoap", "Malformed SOAP message: DOCTYPE is not allowed")
            if el.tag != _ENVELOPE:
                raise _fault("InvalidSoap", "Malformed SOAP message: envelope missing")
            self._rpc = el.get(_ENCODING_STYLE) == SOAP_ENCODING_NS
        elif depth == 2:
            if el.tag == _HEADER:
                self._in_header = True
            elif el.tag == _BODY:
                if self._body_seen:
                    raise _fault("InvalidBody", "Malformed SOAP message: more than one body")
                self._body_seen = True
                self._in_body = True
        elif depth == 3 and self._in_header:
            if el.tag in _HEADER_FIELDS:
                if el.tag in self._values:
                    raise _fault("DuplicateHeaderField", f"SOAP header contains duplicate field '{el.tag}'")
                if el.tag in (_CLIENT, _SERVICE, _SERVER):
                    _check_object_type(el, el.tag)
        elif depth == 3 and self._in_body:
            if el.tag == _FAULT:
                self._fault_el = el
            elif self._service_name is None and isinstance(el.tag, str):
                q = etree.QName(el)
                self._service_ns, self._service_name = q.namespace, q.localname
            elif isinstance(el.tag, str):
                raise _fault("InvalidBody", "Malformed SOAP message: body must have exactly one child element")

    def _end(self, el: etree._Element) -> None:
        depth = self._depth
        self._depth -= 1
        if depth == 1:
            self._end_envelope()
        elif depth == 2:
            if el.tag == _HEADER and self._in_header:
                self._in_header = False
                self._header_done = True
            elif el.tag == _BODY and self._in_body:
                self._in_body = False
                if self._fault_el is not None:
                    self._fault = faults.fault_from_element(self._fault_el)
        elif depth == 3 and self._in_header and el.tag in _HEADER_FIELDS:
            self._values[el.tag] = self._header_value(el)
        elif depth >= 4 and self._in_body and self._fault_el is None:
            el.clear()  # the body's content is not needed; keep memory flat

    def _header_value(self, el: etree._Element) -> object:
        tag = el.tag
        try:
            if tag == _CLIENT:
                return identifier_from_xml(el, (ObjectType.MEMBER, ObjectType.SUBSYSTEM))
            if tag == _SERVICE:
                return identifier_from_xml(el, (ObjectType.SERVICE,))
            if tag == _SERVER:
                return identifier_from_xml(el, (ObjectType.SERVER,))
            if tag == _REPRESENTED_PARTY:
                parts: dict[str, str] = {}
                for c in el:
                    if c.tag in (_PARTY_CLASS, _PARTY_CODE):
                        if c.tag in parts:
                            raise _fault("DuplicateHeaderField", f"SOAP header contains duplicate field '{c.tag}'")
                        parts[str(c.tag)] = element_value(c)
                code = parts.get(_PARTY_CODE)
                if code is None:
                    raise _fault("InvalidXml", "representedParty lacks partyCode")
                return RepresentedParty(code, parts.get(_PARTY_CLASS))
        except IdentifierError as exc:
            raise _identifier_fault(exc, etree.QName(el).localname) from None
        value = element_value(el)
        if tag == _PROTOCOL_VERSION and not value.startswith(_VERSION_PREFIX):
            raise _fault("InvalidProtocolVersion",
                         f"Invalid protocol version (supported: {_VERSION_PREFIX}x, provided: {value})")
        if tag == _REQUEST_HASH:
            return RequestHash(value, el.get("algorithmId"))
        return value

    def _end_envelope(self) -> None:
        self._done = True
        if self._fault is not None:
            return
        if not self._header_done:
            raise _fault("MissingHeader", "Malformed SOAP message: header missing")
        for tag, name in ((_PROTOCOL_VERSION, "protocolVersion"), (_CLIENT, "client"), (_QUERY_ID, "id")):
            if tag not in self._values:
                raise _fault("MissingHeaderField", f"Required field '{name}' is missing")
        if _SERVICE not in self._values:
            raise _fault("MissingHeaderField", "Message header must contain service id")
        if not self._body_seen:
            raise _fault("MissingBody", "Malformed SOAP message: body missing")
        if self._service_name is None:
            raise _fault("InvalidBody", "Malformed SOAP message: body must have exactly one child element")
        service = self._values[_SERVICE]
        assert isinstance(service, ServiceId)
        if not self._service_name.startswith(service.service_code):
            raise _fault("InconsistentHeaders",
                         "Malformed SOAP message: service code does not match in header and body")


def _check_object_type(el: etree._Element, tag: str) -> None:
    expected = {_CLIENT: (ObjectType.MEMBER, ObjectType.SUBSYSTEM), _SERVICE: (ObjectType.SERVICE,),
                _SERVER: (ObjectType.SERVER,)}[tag]
    raw = el.get(f"{{{ID_NS}}}objectType")
    if raw is None:
        raise _fault("InvalidXml", "Missing objectType attribute")
    if raw not in {t.value for t in ObjectType}:
        raise _fault("InvalidXml", f"Unknown objectType: {raw}")
    if ObjectType(raw) not in expected:
        raise _fault("InvalidXml", f"Unexpected objectType: {raw}")


def _check_soap_media(ct: ContentType) -> None:
    if ct.media_type not in SOAP_MEDIA_TYPES:
        raise _fault("InvalidContentType", f"Invalid content type: {ct.media_type}")


def parse_soap(data: bytes, content_type: str | None = "text/xml; charset=UTF-8", *,
               max_bytes: int = MAX_SOAP_BYTES) -> SoapMessage | SoapFaultMessage:
    """Parse and validate one SOAP envelope held in memory (see :class:`SoapPartParser`)."""
    parser = SoapPartParser(content_type, max_bytes=max_bytes)
    parser.feed(data)
    return parser.close()


# --------------------------------------------------------------------------- request decoder


@dataclass(frozen=True, slots=True)
class SoapReceived:
    """The SOAP envelope (first part) is complete.  ``part_headers`` are its MIME headers (empty
    for a plain ``text/xml`` body)."""

    message: SoapMessage | SoapFaultMessage
    part_headers: Headers


@dataclass(frozen=True, slots=True)
class AttachmentStart:
    index: int
    headers: Headers
    content_type: str


@dataclass(frozen=True, slots=True)
class AttachmentData:
    index: int
    data: bytes


@dataclass(frozen=True, slots=True)
class AttachmentEnd:
    index: int
    size: int


@dataclass(frozen=True, slots=True)
class SoapDone:
    attachments: int


DecoderEvent = SoapReceived | AttachmentStart | AttachmentData | AttachmentEnd | SoapDone


class SoapDecoder:
    """Streaming decoder of an X-Road SOAP request or response body, as X-Road's
    ``SoapMessageDecoder`` handles it.

    ``content_type`` is the HTTP ``Content-Type``: ``text/xml``/``application/xop+xml`` (the
    envelope alone) or ``multipart/related`` (SwA/MTOM; the first part is the envelope, which must
    be ``text/xml`` or ``application/xop+xml``; every part needs a ``Content-Type``).  Missing
    ``Content-Type`` is ``InvalidRequest``, any other type ``InvalidContentType``, a multipart
    without parts ``MissingSoap``, broken MIME ``MimeParsingFailed``.

    For a ``response`` (a service's answer read by the provider side) a missing ``Content-Type`` is
    ``InvalidContentType`` and a multipart without parts ``InvalidMessage``, as X-Road reports them.

    ``fault_prefix`` is put in front of every fault raised.  With ``fault_is_error`` a SOAP fault
    received as the envelope is raised as that fault (``Client.<faultcode>`` when a client sends
    a fault as its request); otherwise it is reported as a :class:`SoapFaultMessage`.
    """

    def __init__(self, content_type: str | None, *, fault_prefix: Sequence[str] = (), fault_is_error: bool = False,
                 response: bool = False,
                 max_soap_bytes: int = MAX_SOAP_BYTES, max_header_bytes: int = 16 * 1024, max_headers: int = 64,
                 max_parts: int = 10_000, max_attachment_bytes: int | None = None) -> None:
        self._prefix = tuple(fault_prefix)
        self._response = response
        self._fault_is_error = fault_is_error
        self._max_soap_bytes = max_soap_bytes
        self._soap: SoapPartParser | None = None
        self._soap_headers = Headers()
        self._soap_done = False
        self._attachments = 0
        self._mime: MultipartParser | None = None
        self.content_type = content_type
        with self._faults():
            ct = parse_content_type(content_type)
            if ct is None:
                if response:
                    raise _fault("InvalidContentType", "Could not get content type from response")
                raise _fault("InvalidRequest", "Could not get content type from request")
            if ct.media_type in SOAP_MEDIA_TYPES:
                self._soap = SoapPartParser(content_type, max_bytes=max_soap_bytes)
            elif ct.media_type == "multipart/related":
                if not ct.boundary:
                    raise _fault("InvalidContentType", "Multipart content type has no boundary")
                try:
                    self._mime = MultipartParser(ct.boundary, max_header_bytes=max_header_bytes,
                                                 max_headers=max_headers, max_parts=max_parts,
                                                 max_part_bytes=max_attachment_bytes)
                except MimeError as exc:
                    raise _fault("InvalidContentType", exc.message) from exc
            else:
                raise _fault("InvalidContentType", f"Invalid content type: {ct.media_type}")

    def _faults(self) -> _FaultPrefixer:
        return _FaultPrefixer(self._prefix)

    def feed(self, data: bytes) -> list[DecoderEvent]:
        events: list[DecoderEvent] = []
        with self._faults():
            if self._mime is None:
                assert self._soap is not None
                self._soap.feed(data)
            else:
                for ev in self._mime_events(self._mime, data):
                    self._on_mime(ev, events)
        return events

    def close(self) -> list[DecoderEvent]:
        events: list[DecoderEvent] = []
        with self._faults():
            if self._mime is None:
                assert self._soap is not None
                self._finish_soap(events)
            else:
                for ev in self._mime_events(self._mime, None):
                    self._on_mime(ev, events)
                if not self._soap_done:
                    raise self._no_soap()
            events.append(SoapDone(self._attachments))
        return events

    def _no_soap(self) -> XRoadFault:
        if self._response:
            return _fault("InvalidMessage", "No response message received from service")
        return _fault("MissingSoap", "Request does not contain SOAP message")

    def _mime_events(self, parser: MultipartParser,
                     data: bytes | None) -> list[PartStart | PartData | PartEnd | MultipartEnd]:
        try:
            return parser.feed(data) if data is not None else parser.close()
        except MimeError as exc:
            if exc.code == "mime.no_parts":
                raise self._no_soap() from exc
            raise _fault("MimeParsingFailed", exc.message) from exc

    def _finish_soap(self, events: list[DecoderEvent]) -> None:
        assert self._soap is not None
        message = self._soap.close()
        self._soap_done = True
        if isinstance(message, SoapFaultMessage) and self._fault_is_error:
            raise message.fault
        events.append(SoapReceived(message, self._soap_headers))

    def _on_mime(self, ev: PartStart | PartData | PartEnd | MultipartEnd, events: list[DecoderEvent]) -> None:
        if isinstance(ev, PartStart):
            ct = ev.headers.get("Content-Type")
            if ct is None:
                raise _fault("InvalidContentType", "Could not get content type for part")
            if ev.index == 0:
                parsed = parse_content_type(ct)
                assert parsed is not None
                _check_soap_media(parsed)
                self._soap = SoapPartParser(ct, max_bytes=self._max_soap_bytes)
                self._soap_headers = ev.headers
            else:
                self._attachments += 1
                events.append(AttachmentStart(ev.index, ev.headers, ct))
        elif isinstance(ev, PartData):
            if ev.index == 0:
                assert self._soap is not None
                self._soap.feed(ev.data)
            else:
                events.append(AttachmentData(ev.index, ev.data))
        elif isinstance(ev, PartEnd):
            if ev.index == 0:
                self._finish_soap(events)
            else:
                events.append(AttachmentEnd(ev.index, ev.size))


class _FaultPrefixer:
    """Context manager that adds the decoder's prefix to faults leaving it."""

    def __init__(self, prefix: tuple[str, ...]) -> None:
        self._prefix = prefix

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, XRoadFault) and self._prefix:
            raise exc.with_prefix(*self._prefix) from exc.__cause__


# --------------------------------------------------------------------------- consistency


_CONSISTENT_FIELDS = ("client", "service", "user_id", "represented_party", "issue", "query_id")
_FIELD_NAMES = {"client": "client", "service": "service", "user_id": "userId",
                "represented_party": "representedParty", "issue": "issue", "query_id": "id"}


def check_consistency(first: SoapMessage | SoapHeader, second: SoapMessage | SoapHeader) -> None:
    """The header fields X-Road compares (client, service, userId, representedParty, issue, id)
    must be equal (``InconsistentHeaders``)."""
    h1 = first.header if isinstance(first, SoapMessage) else first
    h2 = second.header if isinstance(second, SoapMessage) else second
    for name in _CONSISTENT_FIELDS:
        if getattr(h1, name) != getattr(h2, name):
            raise _fault("InconsistentHeaders", f"Field '{_FIELD_NAMES[name]}' does not match in request and response")


def check_response(request: SoapMessage, response: SoapMessage) -> None:
    """The consumer side's check of a provider's response (``ClientMessageProcessor``): echoed
    header fields (``ServiceFailed.InconsistentResponse``) and ``requestHash`` over the raw
    request (``InconsistentResponse``; the algorithm is the one ``algorithmId`` names, SHA-512 when
    absent).  Faults carry no origin prefix; the client side adds ``Server.ClientProxy``."""
    try:
        check_consistency(request, response)
    except XRoadFault as exc:
        raise XRoadFault(("ServiceFailed", "InconsistentResponse"),
                         "Response from server proxy is not consistent with request") from exc
    given = response.header.request_hash
    if given is None:
        raise _fault("InconsistentResponse", "Response from server proxy is missing request message hash")
    algorithm = given.algorithm_id or SHA512_URI
    if algorithm not in DIGEST_URIS:
        raise _fault("InconsistentResponse", f"Unsupported request hash algorithm {algorithm!r}")
    try:
        expected = base64.b64decode(request.request_hash(algorithm))
        actual = base64.b64decode(given.value.strip(), validate=False)
    except (binascii.Error, ValueError):
        raise _fault("InconsistentResponse", "Request message hash is not base64") from None
    if not hmac.compare_digest(expected, actual):
        raise _fault("InconsistentResponse", "Request message hash does not match request message")


# --------------------------------------------------------------------------- building


def _header_element(header: SoapHeader, nsmap: dict[str, str]) -> etree._Element:
    h = etree.Element(_HEADER, nsmap=nsmap)

    def ident(tag: str, value: XRoadId) -> None:
        append_identifier(etree.SubElement(h, tag), value)

    def text(tag: str, value: str) -> None:
        etree.SubElement(h, tag).text = value

    ident(_CLIENT, header.client)
    ident(_SERVICE, header.service)
    if header.security_server is not None:
        ident(_SERVER, header.security_server)
    if header.represented_party is not None:
        rp = etree.SubElement(h, _REPRESENTED_PARTY, nsmap={"repr": REPR_NS})
        if header.represented_party.party_class is not None:
            etree.SubElement(rp, _PARTY_CLASS).text = header.represented_party.party_class
        etree.SubElement(rp, _PARTY_CODE).text = header.represented_party.party_code
    if header.user_id is not None:
        text(_USER_ID, header.user_id)
    text(_QUERY_ID, header.query_id)
    if header.issue is not None:
        text(_ISSUE, header.issue)
    text(_PROTOCOL_VERSION, header.protocol_version)
    if header.request_hash is not None:
        rh = etree.SubElement(h, _REQUEST_HASH)
        if header.request_hash.algorithm_id is not None:
            rh.set("algorithmId", header.request_hash.algorithm_id)
        rh.text = header.request_hash.value
    return h


def build_message(header: SoapHeader, body: etree._Element | Iterable[etree._Element]) -> bytes:
    """A SOAP 1.1 X-Road message with ``header`` and the given body element(s), UTF-8 with an XML
    declaration, prefixes ``SOAP-ENV``, ``xroad``, ``id``."""
    nsmap = {"SOAP-ENV": SOAP_ENV_NS, "xroad": XROAD_NS, "id": ID_NS}
    env = etree.Element(_ENVELOPE, nsmap=nsmap)
    env.append(_header_element(header, nsmap))
    body_el = etree.SubElement(env, _BODY)
    for child in ([body] if isinstance(body, etree._Element) else body):
        body_el.append(copy.deepcopy(child))
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))


def _reparse(raw: bytes) -> etree._Element:
    from protocols.xmlsafe import parse_xml  # local: keeps the import graph flat

    return parse_xml(raw)


def without_body(raw: bytes) -> bytes:
    """The envelope with an empty ``Body``: what the message log keeps when body logging is off
    (X-Road keeps the X-Road headers only).  Anything not a SOAP envelope gives ``b""``."""
    try:
        root = _reparse(raw)
    except Exception:  # the message was checked before; a log of headers only never blocks it
        return b""
    body = root.find(_BODY)
    if root.tag != _ENVELOPE or body is None:
        return b""
    for old in list(body):
        body.remove(old)
    body.text = None
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def build_response(request: SoapMessage, children: Iterable[etree._Element] = (), *,
                   request_hash_algorithm: str | None = SHA512_URI) -> bytes:
    """A response to ``request``: its header echoed (plus ``requestHash`` over the raw request
    unless ``request_hash_algorithm`` is None) and a body element ``<serviceName>Response`` in the
    request body element's namespace holding ``children``."""
    root = _reparse(request.raw)
    body = root.find(_BODY)
    assert body is not None
    for old in list(body):
        body.remove(old)
    ns = request.body_namespace
    tag = f"{{{ns}}}{request.service_name}Response" if ns else f"{request.service_name}Response"
    response_el = etree.SubElement(body, tag)
    for child in children:
        response_el.append(copy.deepcopy(child))
    if request_hash_algorithm is not None:
        _replace_request_hash(root, RequestHash(request.request_hash(request_hash_algorithm), request_hash_algorithm))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _replace_request_hash(root: etree._Element, value: RequestHash) -> None:
    header = root.find(_HEADER)
    if header is None:
        header = etree.Element(_HEADER)
        root.insert(0, header)
    for old in header.findall(_REQUEST_HASH):
        header.remove(old)
    rh = etree.SubElement(header, _REQUEST_HASH)
    if value.algorithm_id is not None:
        rh.set("algorithmId", value.algorithm_id)
    rh.text = value.value


def set_request_hash(response_raw: bytes, request: SoapMessage, algorithm_id: str = SHA512_URI) -> bytes:
    """The provider side's rewrite of a service response: any ``requestHash`` replaced by the
    digest of the raw request."""
    root = _reparse(response_raw)
    _replace_request_hash(root, RequestHash(request.request_hash(algorithm_id), algorithm_id))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
