# test-case-name: tests.test_metaservices
"""X-Road metaservices (PR-META 2.16, PR-MREST): the documents they answer with, built and parsed.

* ``listClients`` — ``GET /listClients[?xRoadInstance=XX]`` on the client port: the members and
  subsystems of an instance's global configuration, as ``xrd:clientList`` (``text/xml``), or as
  JSON ``{"member": [{"id": {...}, "name", "subsystem_name"}]}`` when an ``Accept`` value is
  ``application/json`` (X-Road's ``MetadataClientRequestProcessor``: every comma-separated media
  type is compared without its parameters; ``q`` is ignored).  Each member is followed by its
  subsystems; a subsystem carries its member's ``name`` and its own ``subsystemName`` (global
  configuration V5+), as ``GlobalConfImpl.getMembers`` lists them.  An instance this server has
  no (valid) shared parameters of is ``Server.ClientProxy.InternalError`` "Shared params for
  instance identifier XX not found" (7.x; 6.x wrote "Invalid instance identifier: XX").
* SOAP ``listMethods`` / ``allowedMethods`` — ordinary X-Road requests for service code
  ``listMethods``/``allowedMethods`` of the provider.  The answer is the request envelope with
  its header echoed and the body replaced by ``xrd:listMethodsResponse`` /
  ``xrd:allowedMethodsResponse`` (namespace ``http://x-road.eu/xsd/xroad.xsd`` whatever the
  request body's namespace: X-Road marshals its own JAXB element), holding one ``xrd:service``
  (``id:objectType="SERVICE"``, with ``serviceVersion`` when the service has one) per SOAP
  service; ``requestHash`` is placed after ``xrd:id``, as the server proxy's response parser
  writes it.  Metaservice names themselves are never listed.
* REST ``GET /r1/{provider}/listMethods|allowedMethods`` — JSON ``{"service": [...]}`` of
  ``XRoadRestServiceDetailsType`` written by Jackson in snake case, without nulls:
  ``member_class, member_code, object_type ("SERVICE"), service_code, service_type ("REST" or
  "OPENAPI"), subsystem_code, xroad_instance, endpoint_list [{"method", "path"}]``; no
  ``service_version`` (X-Road never sets it for REST) and the base endpoint ``* **`` is left out
  of ``endpoint_list`` (``ServerConfImpl.getServiceEndpoints``).
* The reserved service codes (:data:`METASERVICE_CODES`).  One that this gateway does not
  implement is answered as X-Road answers when the add-on serving it is not installed: no
  handler takes it, so the server proxy's access check finds no such service:
  ``Server.ServerProxy.UnknownService`` "Unknown service: SERVICE:…" (:func:`unavailable_metaservice_fault`).

Pure: documents arrive and leave as bytes or lxml elements.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from lxml import etree

from protocols.errors import XmlError
from protocols.gconf.params import SharedParameters
from protocols.hashchain import SHA512_URI
from protocols.xmlsafe import parse_xml
from protocols.xroad.faults import SERVER_CLIENTPROXY, SERVER_SERVERPROXY, SOAP_ENV_NS, XRoadFault
from protocols.xroad.ids import ID_NS, ClientId, IdentifierError, ObjectType, ServiceId, append_identifier
from protocols.xroad.soap import XROAD_NS, RequestHash, SoapMessage

__all__ = [
    "ALLOWED_METHODS",
    "GET_OPENAPI",
    "GET_SECURITY_SERVER_HEALTH_DATA",
    "GET_SECURITY_SERVER_METRICS",
    "GET_SECURITY_SERVER_OPERATIONAL_DATA",
    "GET_WSDL",
    "LIST_CLIENTS",
    "LIST_CLIENTS_CONTENT_TYPE_JSON",
    "LIST_CLIENTS_CONTENT_TYPE_XML",
    "LIST_CLIENTS_INSTANCE_PARAM",
    "LIST_CLIENTS_PATH",
    "LIST_METHODS",
    "METASERVICE_CODES",
    "METHOD_LIST_CODES",
    "REST_CONTENT_TYPE",
    "SOAP_CONTENT_TYPE",
    "ListedClient",
    "RestServiceDetails",
    "accepts_json",
    "build_client_list_json",
    "build_client_list_xml",
    "build_method_list_response",
    "build_rest_method_list",
    "client_list_body",
    "clients_of",
    "is_metaservice",
    "method_list_element",
    "parse_client_list_json",
    "parse_client_list_xml",
    "parse_method_list",
    "parse_rest_method_list",
    "unavailable_metaservice_fault",
    "unknown_instance_fault",
]

LIST_CLIENTS = "listClients"
LIST_METHODS = "listMethods"
ALLOWED_METHODS = "allowedMethods"
GET_WSDL = "getWsdl"
GET_OPENAPI = "getOpenAPI"
GET_SECURITY_SERVER_METRICS = "getSecurityServerMetrics"
GET_SECURITY_SERVER_OPERATIONAL_DATA = "getSecurityServerOperationalData"
GET_SECURITY_SERVER_HEALTH_DATA = "getSecurityServerHealthData"

#: Service codes X-Road reserves for its metaservices (7.7).
METASERVICE_CODES: frozenset[str] = frozenset({
    LIST_CLIENTS, LIST_METHODS, ALLOWED_METHODS, GET_WSDL, GET_OPENAPI, GET_SECURITY_SERVER_METRICS,
    GET_SECURITY_SERVER_OPERATIONAL_DATA, GET_SECURITY_SERVER_HEALTH_DATA,
})
#: The provider-side metaservices answered here (SOAP and REST).
METHOD_LIST_CODES: frozenset[str] = frozenset({LIST_METHODS, ALLOWED_METHODS})

LIST_CLIENTS_PATH = "/listClients"
LIST_CLIENTS_INSTANCE_PARAM = "xRoadInstance"
LIST_CLIENTS_CONTENT_TYPE_XML = "text/xml; charset=UTF-8"  # MimeTypes.TEXT_XML_UTF8
LIST_CLIENTS_CONTENT_TYPE_JSON = "application/json; charset=utf-8"  # contentTypeWithCharset(JSON, "utf-8")
SOAP_CONTENT_TYPE = "text/xml; charset=UTF-8"
REST_CONTENT_TYPE = "application/json"  # RestMetadataServiceHandlerImpl: MimeTypes.JSON

_XRD = f"{{{XROAD_NS}}}"
_ID = f"{{{ID_NS}}}"
_OBJECT_TYPE = f"{_ID}objectType"
_SOAP_HEADER = f"{{{SOAP_ENV_NS}}}Header"
_SOAP_BODY = f"{{{SOAP_ENV_NS}}}Body"


def is_metaservice(service_code: str) -> bool:
    """Whether ``service_code`` is one X-Road reserves for a metaservice (exact, case-sensitive,
    as X-Road compares service codes)."""
    return service_code in METASERVICE_CODES


# --------------------------------------------------------------------------- listClients


@dataclass(frozen=True, slots=True)
class ListedClient:
    """One ``member`` entry of ``clientList``: a member or subsystem with the member's name and,
    for a subsystem, its own name (either may be absent)."""

    instance: str
    member_class: str
    member_code: str
    subsystem_code: str | None = None
    name: str | None = None
    subsystem_name: str | None = None

    @property
    def object_type(self) -> ObjectType:
        return ObjectType.MEMBER if self.subsystem_code is None else ObjectType.SUBSYSTEM

    def __str__(self) -> str:
        base = f"{self.instance}/{self.member_class}/{self.member_code}"
        return base if self.subsystem_code is None else f"{base}/{self.subsystem_code}"


def clients_of(shared: SharedParameters) -> list[ListedClient]:
    """The members and subsystems of ``shared`` in document order, each member followed by its
    subsystems (``GlobalConfImpl.getMembers``)."""
    out: list[ListedClient] = []
    for member in shared.members:
        mid = member.id
        out.append(ListedClient(shared.instance, mid.member_class, mid.member_code, None, member.name))
        for sub in member.subsystems:
            out.append(ListedClient(shared.instance, mid.member_class, mid.member_code, sub.code, member.name,
                                    sub.name))
    return out


def accepts_json(accept: Iterable[str]) -> bool:
    """X-Road's ``acceptsJson``: some comma-separated media type of the ``Accept`` values is
    ``application/json`` (parameters and ``q`` ignored, case-insensitive)."""
    for value in accept:
        for item in value.split(","):
            if item.split(";", 1)[0].strip().lower() == "application/json":
                return True
    return False


def unknown_instance_fault(instance: str) -> XRoadFault:
    """What X-Road's client proxy answers to ``listClients?xRoadInstance=XX`` for an instance it
    has no shared parameters of."""
    return XRoadFault("InternalError", f"Shared params for instance identifier {instance} not found",
                      prefix=SERVER_CLIENTPROXY)


def _append_client_id(parent: etree._Element, client: ListedClient) -> None:
    el = etree.SubElement(parent, f"{_XRD}id")
    el.set(_OBJECT_TYPE, client.object_type.value)
    etree.SubElement(el, f"{_ID}xRoadInstance").text = client.instance
    etree.SubElement(el, f"{_ID}memberClass").text = client.member_class
    etree.SubElement(el, f"{_ID}memberCode").text = client.member_code
    if client.subsystem_code is not None:
        etree.SubElement(el, f"{_ID}subsystemCode").text = client.subsystem_code


def build_client_list_xml(clients: Iterable[ListedClient]) -> bytes:
    """``<xrd:clientList>`` (UTF-8, XML declaration, indented as JAXB's formatted output)."""
    root = etree.Element(f"{_XRD}clientList", nsmap={"id": ID_NS, "xrd": XROAD_NS})
    for client in clients:
        member = etree.SubElement(root, f"{_XRD}member")
        _append_client_id(member, client)
        if client.name is not None:
            etree.SubElement(member, f"{_XRD}name").text = client.name
        if client.subsystem_name is not None:
            etree.SubElement(member, f"{_XRD}subsystemName").text = client.subsystem_name
    body = etree.tostring(root, encoding="UTF-8", pretty_print=True)
    return b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + bytes(body)


def build_client_list_json(clients: Iterable[ListedClient]) -> bytes:
    """``{"member": [...]}`` as X-Road's Jackson mapper writes it (snake case, nulls left out)."""
    members: list[dict[str, object]] = []
    for client in clients:
        cid: dict[str, object] = {"member_class": client.member_class, "member_code": client.member_code}
        if client.subsystem_code is not None:
            cid["subsystem_code"] = client.subsystem_code
        cid["object_type"] = client.object_type.value
        cid["xroad_instance"] = client.instance
        entry: dict[str, object] = {"id": cid}
        if client.name is not None:
            entry["name"] = client.name
        if client.subsystem_name is not None:
            entry["subsystem_name"] = client.subsystem_name
        members.append(entry)
    return json.dumps({"member": members}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def client_list_body(clients: Sequence[ListedClient], accept: Iterable[str]) -> tuple[str, bytes]:
    """``(content type, body)`` of a ``listClients`` answer for these ``Accept`` header values."""
    if accepts_json(accept):
        return LIST_CLIENTS_CONTENT_TYPE_JSON, build_client_list_json(clients)
    return LIST_CLIENTS_CONTENT_TYPE_XML, build_client_list_xml(clients)


def _child_text(el: etree._Element, tag: str) -> str | None:
    child = el.find(tag)
    return None if child is None else (child.text or "")


def parse_client_list_xml(data: bytes) -> list[ListedClient]:
    """Read a ``clientList`` document (raises :class:`~protocols.errors.XmlError`)."""
    root = parse_xml(data)
    if root.tag != f"{_XRD}clientList":
        raise XmlError(f"expected xrd:clientList, got {root.tag}", code="xml.unexpected_root")
    out: list[ListedClient] = []
    for member in root.findall(f"{_XRD}member"):
        cid = member.find(f"{_XRD}id")
        if cid is None:
            raise XmlError("clientList member without id", code="xml.malformed")
        instance = _child_text(cid, f"{_ID}xRoadInstance")
        member_class = _child_text(cid, f"{_ID}memberClass")
        member_code = _child_text(cid, f"{_ID}memberCode")
        if instance is None or member_class is None or member_code is None:
            raise XmlError("clientList member id lacks a part", code="xml.malformed")
        out.append(ListedClient(instance, member_class, member_code, _child_text(cid, f"{_ID}subsystemCode"),
                                _child_text(member, f"{_XRD}name"), _child_text(member, f"{_XRD}subsystemName")))
    return out


def parse_client_list_json(data: bytes) -> list[ListedClient]:
    """Read the JSON form of ``clientList`` (raises ``ValueError`` / ``KeyError`` on a bad shape)."""
    doc = json.loads(data)
    out: list[ListedClient] = []
    for entry in doc["member"]:
        cid = entry["id"]
        out.append(ListedClient(cid["xroad_instance"], cid["member_class"], cid["member_code"],
                                cid.get("subsystem_code"), entry.get("name"), entry.get("subsystem_name")))
    return out


# --------------------------------------------------------------------------- SOAP listMethods / allowedMethods


def method_list_element(service_code: str, services: Iterable[ServiceId],
                        nsmap: dict[str, str] | None = None) -> etree._Element:
    """``<xrd:listMethodsResponse>`` or ``<xrd:allowedMethodsResponse>`` with one ``xrd:service``
    per service (metaservice codes skipped)."""
    if service_code not in METHOD_LIST_CODES:
        raise ValueError(f"{service_code!r} is not listMethods or allowedMethods")
    el = etree.Element(f"{_XRD}{service_code}Response",
                       nsmap=nsmap if nsmap is not None else {"xrd": XROAD_NS, "id": ID_NS})
    for service in services:
        if is_metaservice(service.service_code):
            continue
        append_identifier(etree.SubElement(el, f"{_XRD}service"), service)
    return el


def _free_prefix(wanted: str, in_use: dict[str | None, str]) -> str:
    prefix, n = wanted, 0
    while prefix in in_use:
        n += 1
        prefix = f"{wanted}{n}"
    return prefix


def build_method_list_response(request: SoapMessage, services: Iterable[ServiceId], *,
                               request_hash_algorithm: str | None = SHA512_URI) -> bytes:
    """The answer to a SOAP ``listMethods``/``allowedMethods`` request: the request envelope with
    its header kept as it is (``SoapUtils.toResponse``), the body replaced by the method list and,
    unless ``request_hash_algorithm`` is None, ``xrd:requestHash`` over the raw request placed
    right after ``xrd:id`` (any ``requestHash`` the request held is dropped)."""
    code = request.service.service_code
    if code not in METHOD_LIST_CODES:
        raise ValueError(f"{code!r} is not listMethods or allowedMethods")
    root = parse_xml(request.raw)
    header, body = root.find(_SOAP_HEADER), root.find(_SOAP_BODY)
    if header is None or body is None:  # a parsed SoapMessage always has both
        raise ValueError("request envelope lacks Header or Body")
    for child in list(body):
        body.remove(child)
    in_scope: dict[str | None, str] = dict(body.nsmap)
    extra: dict[str, str] = {}
    for wanted, ns in (("xrd", XROAD_NS), ("id", ID_NS)):
        if ns not in in_scope.values():
            extra[_free_prefix(wanted, in_scope)] = ns
    body.append(method_list_element(code, services, nsmap=extra))
    if request_hash_algorithm is not None:
        _put_request_hash(header, RequestHash(request.request_hash(request_hash_algorithm), request_hash_algorithm))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _put_request_hash(header: etree._Element, value: RequestHash) -> None:
    for old in header.findall(f"{_XRD}requestHash"):
        header.remove(old)
    rh = etree.Element(f"{_XRD}requestHash")
    if value.algorithm_id is not None:
        rh.set("algorithmId", value.algorithm_id)
    rh.text = value.value
    query_id = header.find(f"{_XRD}id")
    if query_id is None:
        header.append(rh)
        return
    rh.tail = query_id.tail
    query_id.addnext(rh)


def parse_method_list(data: bytes | etree._Element) -> tuple[str, list[ServiceId]]:
    """``(service code, services)`` of a method list: a whole SOAP response (bytes) or the
    ``xrd:listMethodsResponse``/``xrd:allowedMethodsResponse`` element itself."""
    el = parse_xml(data) if isinstance(data, bytes) else data
    if el.tag == f"{{{SOAP_ENV_NS}}}Envelope":
        body = el.find(_SOAP_BODY)
        found = None if body is None else next((c for c in body if isinstance(c.tag, str)), None)
        if found is None:
            raise XmlError("SOAP message without a body element", code="xml.malformed")
        el = found
    qname = etree.QName(el)
    code = qname.localname.removesuffix("Response")
    if qname.namespace != XROAD_NS or code not in METHOD_LIST_CODES or not qname.localname.endswith("Response"):
        raise XmlError(f"expected xrd:listMethodsResponse or xrd:allowedMethodsResponse, got {el.tag}",
                       code="xml.unexpected_root")
    services: list[ServiceId] = []
    for s in el.findall(f"{_XRD}service"):
        if s.get(_OBJECT_TYPE) != ObjectType.SERVICE.value:
            raise XmlError("method list entry is not a SERVICE", code="xml.malformed")
        parts = {etree.QName(c).localname: (c.text or "") for c in s if isinstance(c.tag, str)}
        try:
            services.append(ServiceId(parts["xRoadInstance"], parts["memberClass"], parts["memberCode"],
                                      parts.get("subsystemCode"), parts["serviceCode"], parts.get("serviceVersion")))
        except (KeyError, IdentifierError) as exc:
            raise XmlError(f"malformed service identifier in method list: {exc}", code="xml.malformed") from None
    return code, services


# --------------------------------------------------------------------------- REST listMethods / allowedMethods

RestServiceType = Literal["REST", "OPENAPI"]


@dataclass(frozen=True, slots=True)
class RestServiceDetails:
    """One REST service of a provider with its endpoints (``(METHOD, path)``)."""

    provider: ClientId
    service_code: str
    service_type: RestServiceType = "REST"
    endpoints: tuple[tuple[str, str], ...] = ()


def _is_base_endpoint(method: str, path: str) -> bool:
    return method == "*" and path == "**"


def build_rest_method_list(services: Iterable[RestServiceDetails]) -> bytes:
    """``{"service": [...]}`` (compact JSON, UTF-8) as the REST ``listMethods``/``allowedMethods``
    answer; base endpoints (``*`` ``**``) and metaservice codes are left out."""
    out: list[dict[str, object]] = []
    for s in services:
        if is_metaservice(s.service_code):
            continue
        p = s.provider
        entry: dict[str, object] = {"member_class": p.member_class, "member_code": p.member_code,
                                    "object_type": ObjectType.SERVICE.value, "service_code": s.service_code,
                                    "service_type": s.service_type}
        if p.subsystem_code is not None:
            entry["subsystem_code"] = p.subsystem_code
        entry["xroad_instance"] = p.instance
        entry["endpoint_list"] = [{"method": m, "path": path} for m, path in s.endpoints
                                  if not _is_base_endpoint(m, path)]
        out.append(entry)
    return json.dumps({"service": out}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_rest_method_list(data: bytes) -> list[RestServiceDetails]:
    """Read a REST method list (raises ``ValueError``/``KeyError``/``IdentifierError`` on a bad shape)."""
    doc = json.loads(data)
    out: list[RestServiceDetails] = []
    for e in doc["service"]:
        if e.get("object_type") != ObjectType.SERVICE.value:
            raise ValueError(f"REST method list entry is not a SERVICE: {e!r}")
        service_type = e["service_type"]
        if service_type not in ("REST", "OPENAPI"):
            raise ValueError(f"unknown service_type {service_type!r}")
        provider = ClientId(e["xroad_instance"], e["member_class"], e["member_code"], e.get("subsystem_code"))
        endpoints = tuple((ep["method"], ep["path"]) for ep in e.get("endpoint_list", []))
        out.append(RestServiceDetails(provider, e["service_code"], service_type, endpoints))
    return out


# --------------------------------------------------------------------------- faults


def unavailable_metaservice_fault(service: ServiceId) -> XRoadFault:
    """The answer to a reserved service code this gateway does not serve: X-Road without the
    add-on finds no handler, then no such service (``Server.ServerProxy.UnknownService``)."""
    return XRoadFault("UnknownService", f"Unknown service: SERVICE:{service}", prefix=SERVER_SERVERPROXY)

