"""X-Road metaservices: listClients (XML/JSON, resource), SOAP and REST listMethods/allowedMethods."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from treq.testing import StubTreq
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from gateway.config import AccessRule, ClientConfig, EndpointRule, ServiceConfig
from gateway.globalconf.client import GlobalConfOutdated
from gateway.globalconf.disk import InstalledConf, read_conf_dir
from gateway.relay import metaservices as ms
from protocols.gconf import params as p
from protocols.hashchain import SHA512_URI
from protocols.xroad import faults, meta, soap
from protocols.xroad.faults import Dialect, XRoadFault
from protocols.xroad.ids import ClientId, ServiceId

XSD_DIR = Path(__file__).parent / "vectors" / "xroad" / "xsd"
META_QUERIES = Path(__file__).parent / "vectors" / "xroad" / "soap-messages" / "metaservice"
GLOBALCONF = Path(__file__).parent / "vectors" / "xroad" / "globalconf"
NOW = datetime(2025, 6, 1, tzinfo=UTC)
XRD = "{http://x-road.eu/xsd/xroad.xsd}"
ID = "{http://x-road.eu/xsd/identifiers}"


@pytest.fixture(scope="module")
def metainfo_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD_DIR / "service-metainfo.xsd")))


def _assert_valid(schema: etree.XMLSchema, el: etree._Element) -> None:
    doc = etree.fromstring(etree.tostring(el))  # standalone copy: the element alone is validated
    assert schema.validate(doc), schema.error_log


def _never(_caller: str, _instance: str, _code: str) -> bool:
    return False


# --------------------------------------------------------------------------- reserved codes and faults


def test_reserved_codes() -> None:
    for code in ("listClients", "listMethods", "allowedMethods", "getWsdl", "getOpenAPI",
                 "getSecurityServerMetrics", "getSecurityServerOperationalData", "getSecurityServerHealthData"):
        assert meta.is_metaservice(code) and ms.is_metaservice(code)
    for code in ("getRandom", "listmethods", "ListMethods", "listMethods ", ""):
        assert not meta.is_metaservice(code)
    assert meta.METHOD_LIST_CODES == {"listMethods", "allowedMethods"}


def test_unavailable_metaservice_fault() -> None:
    service = ServiceId("EE", "BUSINESS", "producer", "SUB", "getWsdl", "v1")
    fault = meta.unavailable_metaservice_fault(service)
    assert fault.faultcode() == "Server.ServerProxy.UnknownService"
    assert fault.faultcode(Dialect.SNAKE) == "server.serverproxy.unknown_service"
    assert fault.faultstring == "Unknown service: SERVICE:EE/BUSINESS/producer/SUB/getWsdl/v1"
    back = faults.parse_soap_fault(fault.to_soap())
    assert back is not None and back.matches("Server.ServerProxy.UnknownService")


# --------------------------------------------------------------------------- listClients documents


def _doc_example_shared() -> p.SharedParameters:
    """The instance of PR-META Annex C.1 (AA with two owners, a client and its subsystem)."""
    members = (
        p.Member(p.ClientId("AA", "GOV", "TS1OWNER"), "TS1 Owner"),
        p.Member(p.ClientId("AA", "GOV", "TS2OWNER"), "TS2 Owner"),
        p.Member(p.ClientId("AA", "ENT", "CLIENT1"), "Client One", (p.Subsystem("sub", "Client One Sub"),)),
    )
    return p.SharedParameters(version=6, instance="AA", sources=(), cas=(), tsas=(), members=members, servers=(),
                              global_groups=(), member_classes=(("GOV", "Government"), ("ENT", "Enterprise")),
                              ocsp_freshness_seconds=3600)


# PR-META 2.16, Annex C.1 "JSON Response" (the expected document, as data).
DOC_JSON = {"member": [
    {"id": {"member_class": "GOV", "member_code": "TS1OWNER", "object_type": "MEMBER", "xroad_instance": "AA"},
     "name": "TS1 Owner"},
    {"id": {"member_class": "GOV", "member_code": "TS2OWNER", "object_type": "MEMBER", "xroad_instance": "AA"},
     "name": "TS2 Owner"},
    {"id": {"member_class": "ENT", "member_code": "CLIENT1", "object_type": "MEMBER", "xroad_instance": "AA"},
     "name": "Client One"},
    {"id": {"member_class": "ENT", "member_code": "CLIENT1", "subsystem_code": "sub", "object_type": "SUBSYSTEM",
            "xroad_instance": "AA"}, "name": "Client One", "subsystem_name": "Client One Sub"},
]}


def test_clients_of_lists_members_then_their_subsystems() -> None:
    clients = meta.clients_of(_doc_example_shared())
    assert [str(c) for c in clients] == ["AA/GOV/TS1OWNER", "AA/GOV/TS2OWNER", "AA/ENT/CLIENT1", "AA/ENT/CLIENT1/sub"]
    assert [c.object_type.value for c in clients] == ["MEMBER", "MEMBER", "MEMBER", "SUBSYSTEM"]
    assert clients[3].name == "Client One" and clients[3].subsystem_name == "Client One Sub"
    assert clients[2].subsystem_name is None


def test_client_list_json_is_the_documented_shape() -> None:
    body = meta.build_client_list_json(meta.clients_of(_doc_example_shared()))
    assert json.loads(body) == DOC_JSON
    # Key order as X-Road's example, nulls left out.
    first = json.loads(body)["member"][3]
    assert list(first) == ["id", "name", "subsystem_name"]
    assert list(first["id"]) == ["member_class", "member_code", "subsystem_code", "object_type", "xroad_instance"]
    assert "subsystem_name" not in json.loads(body)["member"][0]
    assert meta.parse_client_list_json(body) == meta.clients_of(_doc_example_shared())


def test_client_list_xml_validates_and_matches_the_example(metainfo_schema: etree.XMLSchema) -> None:
    body = meta.build_client_list_xml(meta.clients_of(_doc_example_shared()))
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>')
    root = etree.fromstring(body)
    assert root.tag == f"{XRD}clientList"
    assert metainfo_schema.validate(root), metainfo_schema.error_log
    members = root.findall(f"{XRD}member")
    assert len(members) == 4
    sub = members[3]
    cid = sub.find(f"{XRD}id")
    assert cid is not None and cid.get(f"{ID}objectType") == "SUBSYSTEM"
    assert [etree.QName(c).localname for c in cid] == ["xRoadInstance", "memberClass", "memberCode", "subsystemCode"]
    assert [c.text for c in cid] == ["AA", "ENT", "CLIENT1", "sub"]
    assert sub.findtext(f"{XRD}name") == "Client One"
    assert sub.findtext(f"{XRD}subsystemName") == "Client One Sub"
    assert members[0].find(f"{XRD}subsystemName") is None
    assert meta.parse_client_list_xml(body) == meta.clients_of(_doc_example_shared())


def test_empty_client_list(metainfo_schema: etree.XMLSchema) -> None:
    assert json.loads(meta.build_client_list_json([])) == {"member": []}
    root = etree.fromstring(meta.build_client_list_xml([]))
    assert metainfo_schema.validate(root) and len(root) == 0


def test_special_characters_survive() -> None:
    clients = [meta.ListedClient("EE", "BUSINESS", "Test Org", None, "Ärinimi & <Co> \"ÕÜ\"")]
    assert meta.parse_client_list_xml(meta.build_client_list_xml(clients)) == clients
    assert meta.parse_client_list_json(meta.build_client_list_json(clients)) == clients


@pytest.mark.parametrize(("accept", "expected"), [
    ([], False),
    (["application/json"], True),
    (["APPLICATION/JSON; charset=utf-8"], True),
    (["text/xml, application/json;q=0.1"], True),  # q is ignored, as in X-Road
    (["text/html", "application/json"], True),
    (["application/jsonx"], False),
    (["*/*"], False),
    (["text/xml"], False),
])
def test_accepts_json(accept: list[str], expected: bool) -> None:
    assert meta.accepts_json(accept) is expected
    content_type, _ = meta.client_list_body([], accept)
    assert content_type == ("application/json; charset=utf-8" if expected else "text/xml; charset=UTF-8")


# --------------------------------------------------------------------------- listClients from installed configuration


@pytest.fixture(scope="module")
def good_v4() -> InstalledConf:
    return read_conf_dir(GLOBALCONF / "globalconf_good_v4")


def test_list_clients_own_instance_from_disk(good_v4: InstalledConf) -> None:
    content_type, body = ms.list_clients_answer(good_v4, None, [], NOW)
    assert content_type == "text/xml; charset=UTF-8"
    assert [str(c) for c in meta.parse_client_list_xml(body)] == [
        "EE/BUSINESS/producer", "EE/BUSINESS/consumer", "EE/BUSINESS/foo", "EE/BUSINESS/foo/foosubsystem"]
    assert meta.parse_client_list_xml(body)[3].name == "Org with no address"
    # a blank parameter is the own instance too (StringUtils.isBlank)
    assert ms.list_clients_answer(good_v4, "  ", [], NOW) == (content_type, body)


def test_list_clients_federated_instance_from_disk(good_v4: InstalledConf) -> None:
    content_type, body = ms.list_clients_answer(good_v4, "bar", ["application/json"], NOW)
    assert content_type == "application/json; charset=utf-8"
    listed = meta.parse_client_list_json(body)
    assert {c.instance for c in listed} == {"bar"}
    assert len(listed) == 4


def test_list_clients_unknown_or_expired_instance(good_v4: InstalledConf) -> None:
    with pytest.raises(XRoadFault) as err:
        ms.list_clients_answer(good_v4, "XX", [], NOW)
    assert err.value.faultcode() == "Server.ClientProxy.InternalError"
    assert err.value.faultstring == "Shared params for instance identifier XX not found"
    # Past the federated instance's expiry it is gone (findShared); the own one stays.
    late = datetime(2125, 1, 1, tzinfo=UTC)
    with pytest.raises(XRoadFault):
        ms.list_clients_answer(good_v4, "bar", [], late)
    ms.list_clients_answer(good_v4, "EE", [], late)


def test_list_clients_dev_vector(metainfo_schema: etree.XMLSchema) -> None:
    conf = read_conf_dir(GLOBALCONF / "globalconf_good2_v3")
    _, body = ms.list_clients_answer(conf, None, [], NOW)
    assert metainfo_schema.validate(etree.fromstring(body))
    assert [str(c) for c in meta.parse_client_list_xml(body)] == [
        "DEV/COM/1234", "DEV/COM/1234/MANAGEMENT", "DEV/COM/1234/TestService", "DEV/COM/4321",
        "DEV/COM/4321/TestClient"]


def test_is_list_clients_request() -> None:
    assert ms.is_list_clients_request(b"GET", b"/listClients")
    assert ms.is_list_clients_request("GET", "/listClients?xRoadInstance=EE")
    assert not ms.is_list_clients_request(b"HEAD", b"/listClients")
    assert not ms.is_list_clients_request(b"POST", b"/listClients")
    assert not ms.is_list_clients_request(b"GET", b"/listClients/")
    assert not ms.is_list_clients_request(b"GET", b"/listclients")
    assert not ms.is_list_clients_request(b"GET", b"/")


# --------------------------------------------------------------------------- the resource


def _resource(conf: Callable[[], Any], dialect: Dialect = Dialect.CAMEL) -> ms.ListClientsResource:
    return ms.ListClientsResource(conf, lambda: NOW, dialect=dialect)


def _get(resource: Resource, args: dict[bytes, list[bytes]] | None = None,
         accept: str | None = None) -> tuple[DummyRequest, bytes]:
    request = DummyRequest([b"listClients"])
    request.method = b"GET"
    request.uri = b"/listClients"
    request.args = args or {}
    if accept is not None:
        request.requestHeaders.setRawHeaders(b"accept", [accept.encode()])
    body = resource.render(request)
    assert isinstance(body, bytes)
    return request, body


def _header(request: DummyRequest, name: bytes) -> str | None:
    values = request.responseHeaders.getRawHeaders(name)
    return values[0].decode() if values else None


def test_resource_xml(good_v4: InstalledConf, metainfo_schema: etree.XMLSchema) -> None:
    request, body = _get(_resource(lambda: good_v4))
    assert request.responseCode == 200
    assert _header(request, b"content-type") == "text/xml; charset=UTF-8"
    assert _header(request, b"content-length") == str(len(body))
    assert metainfo_schema.validate(etree.fromstring(body))
    assert len(meta.parse_client_list_xml(body)) == 4


def test_resource_json_and_instance(good_v4: InstalledConf) -> None:
    request, body = _get(_resource(lambda: good_v4), {b"xRoadInstance": [b"baz_v3"]}, accept="application/json")
    assert request.responseCode == 200
    assert _header(request, b"content-type") == "application/json; charset=utf-8"
    assert {c.instance for c in meta.parse_client_list_json(body)} == {"baz_v3"}


def test_resource_unknown_instance_is_a_soap_fault(good_v4: InstalledConf) -> None:
    request, body = _get(_resource(lambda: good_v4), {b"xRoadInstance": [b"XX"]}, accept="application/json")
    assert request.responseCode == 200  # X-Road sends SOAP faults with HTTP 200
    assert _header(request, b"content-type") == "text/xml; charset=UTF-8"
    assert _header(request, b"soapaction") == ""
    fault = faults.parse_soap_fault(body)
    assert fault is not None and fault.faultcode() == "Server.ClientProxy.InternalError"
    assert "XX" in fault.faultstring and fault.detail


def test_resource_without_valid_configuration() -> None:
    def outdated() -> InstalledConf:
        raise GlobalConfOutdated("no global configuration installed")

    _request, body = _get(_resource(outdated, Dialect.SNAKE))
    fault = faults.parse_soap_fault(body)
    assert fault is not None
    assert b"<faultcode>server.clientproxy.global_conf_outdated</faultcode>" in body
    assert fault.matches("Server.ClientProxy.OutdatedGlobalConf")


def test_resource_unexpected_error_is_internal_error() -> None:
    def broken() -> InstalledConf:
        raise RuntimeError("disk on fire")

    _request, body = _get(_resource(broken))
    fault = faults.parse_soap_fault(body)
    assert fault is not None and fault.faultcode() == "Server.ClientProxy.InternalError"


def test_resource_through_a_real_site(good_v4: InstalledConf) -> None:
    root = Resource()
    root.putChild(b"listClients", _resource(lambda: good_v4))  # type: ignore[arg-type]
    stub: Any = StubTreq(root)
    d = stub.get("http://gateway.test/listClients?xRoadInstance=foo_v2", headers={"Accept": "application/json"})
    stub.flush()
    response = d.result
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["application/json; charset=utf-8"]
    d2 = stub.content(response)
    stub.flush()
    listed = meta.parse_client_list_json(d2.result)
    assert [str(c) for c in listed] == ["foo_v2/BUSINESS/producer", "foo_v2/BUSINESS/consumer", "foo_v2/BUSINESS/foo",
                                        "foo_v2/BUSINESS/foo/foosubsystem"]


# --------------------------------------------------------------------------- SOAP listMethods / allowedMethods

PRODUCER_SUB = "EE/BUSINESS/producer/SUB"
PRODUCER = "EE/BUSINESS/producer"


def _services() -> tuple[ServiceConfig, ...]:
    return (
        ServiceConfig("getRandom", "http://is.test/r", version="v1"),
        ServiceConfig("helloService", "http://is.test/h"),
        ServiceConfig("getRandom", "http://is.test/r2", version="v2"),
        ServiceConfig("retired", "http://is.test/x", version="v1", disabled=True, notice="gone"),
        ServiceConfig("groupOnly", "http://is.test/g"),
        ServiceConfig("localOnly", "http://is.test/l"),
        ServiceConfig("pets", "http://is.test/pets", type="rest", endpoints=(
            EndpointRule("GET", "/pet/*"), EndpointRule("POST", "/pet"), EndpointRule("*", "**"),
            EndpointRule("GET", "/store/inventory"))),
        ServiceConfig("school", "http://is.test/school", type="rest"),
        ServiceConfig("getWsdl", "http://is.test/w"),  # a reserved code is never listed
    )


def _client(client_id: str, access: tuple[AccessRule, ...]) -> ClientConfig:
    return ClientConfig(id=client_id, services=_services(), access=access,
                        local_groups=(("friends", ("EE/BUSINESS/consumer",)),))


CONSUMER_RULES = (
    AccessRule("EE/BUSINESS/consumer", ("getRandom", "retired", "pets")),
    AccessRule("GLOBALGROUP:EE/partners", ("groupOnly",)),
    AccessRule("LOCALGROUP:friends", ("localOnly",)),
    AccessRule("EE/BUSINESS/other", ("helloService", "school")),
)


def _in_group(caller: str, instance: str, code: str) -> bool:
    return caller == "EE/BUSINESS/consumer" and (instance, code) == ("EE", "partners")


def _query(name: str) -> soap.SoapMessage:
    msg = soap.parse_soap((META_QUERIES / name).read_bytes())
    assert isinstance(msg, soap.SoapMessage)
    return msg


def _body_element(response: bytes) -> etree._Element:
    root = etree.fromstring(response)
    body = root.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
    assert body is not None and len(body) == 1
    return body[0]


def test_list_methods_vector(metainfo_schema: etree.XMLSchema) -> None:
    request = _query("listMethods.query")
    local = _client(PRODUCER_SUB, CONSUMER_RULES)
    response = ms.soap_metaservice_response(local, request, _in_group)

    parsed = soap.parse_soap(response)
    assert isinstance(parsed, soap.SoapMessage)
    soap.check_response(request, parsed)  # echoed header and requestHash, as the consumer checks them
    assert parsed.header.request_hash is not None
    assert parsed.header.request_hash.algorithm_id == SHA512_URI
    assert parsed.header.user_id == "EE:PIN:abc4567" and parsed.header.issue == ""
    assert parsed.service_name == "listMethodsResponse"
    assert parsed.body_namespace == "http://x-road.eu/xsd/xroad.xsd"

    el = _body_element(response)
    _assert_valid(metainfo_schema, el)
    code, services = meta.parse_method_list(response)
    assert code == "listMethods"
    provider = ClientId.parse(PRODUCER_SUB)
    assert services == [
        ServiceId.of(provider, "getRandom", "v1"), ServiceId.of(provider, "helloService"),
        ServiceId.of(provider, "getRandom", "v2"), ServiceId.of(provider, "retired", "v1"),
        ServiceId.of(provider, "groupOnly"), ServiceId.of(provider, "localOnly")]


def test_request_hash_follows_the_query_id() -> None:
    request = _query("listMethods.query")
    response = ms.soap_metaservice_response(_client(PRODUCER_SUB, ()), request, _never)
    header = etree.fromstring(response).find("{http://schemas.xmlsoap.org/soap/envelope/}Header")
    assert header is not None
    names = [etree.QName(c).localname for c in header]
    assert names == ["client", "service", "userId", "id", "requestHash", "issue", "protocolVersion"]
    # Header parts other than requestHash are the request's, byte for byte.
    original = etree.fromstring(request.raw).find("{http://schemas.xmlsoap.org/soap/envelope/}Header")
    assert original is not None
    assert [etree.tostring(c) for c in original] == [etree.tostring(c) for c in header if
                                                     etree.QName(c).localname != "requestHash"]


def test_allowed_methods_vector_filters_by_access_rules(metainfo_schema: etree.XMLSchema) -> None:
    request = _query("allowedMethods.query")  # client EE/BUSINESS/consumer, provider EE/BUSINESS/producer
    local = _client(PRODUCER, CONSUMER_RULES)
    response = ms.soap_metaservice_response(local, request, _in_group)
    parsed = soap.parse_soap(response)
    assert isinstance(parsed, soap.SoapMessage)
    soap.check_response(request, parsed)
    _assert_valid(metainfo_schema, _body_element(response))
    code, services = meta.parse_method_list(response)
    assert code == "allowedMethods"
    provider = ClientId.parse(PRODUCER)
    # own id: getRandom (both versions; rights are per code); global group; local group.  Not: the
    # disabled service, the other subject's helloService, REST services, the reserved getWsdl.
    assert services == [ServiceId.of(provider, "getRandom", "v1"), ServiceId.of(provider, "getRandom", "v2"),
                        ServiceId.of(provider, "groupOnly"), ServiceId.of(provider, "localOnly")]
    assert all(s.subsystem_code is None for s in services)


def test_allowed_methods_wildcard_and_nothing(metainfo_schema: etree.XMLSchema) -> None:
    request = _query("allowedMethods.query")
    everything = ms.soap_metaservice_response(
        _client(PRODUCER, (AccessRule("EE/BUSINESS/consumer", ("*",)),)), request, _never)
    assert [s.service_code for s in meta.parse_method_list(everything)[1]] == [
        "getRandom", "helloService", "getRandom", "groupOnly", "localOnly"]
    nothing = ms.soap_metaservice_response(_client(PRODUCER, ()), request, _never)
    el = _body_element(nothing)
    assert el.tag == f"{XRD}allowedMethodsResponse" and len(el) == 0
    _assert_valid(metainfo_schema, el)


def _rewrite(name: str, old: bytes, new: bytes) -> soap.SoapMessage:
    msg = soap.parse_soap((META_QUERIES / name).read_bytes().replace(old, new))
    assert isinstance(msg, soap.SoapMessage)
    return msg


def test_unserved_soap_metaservices_are_unknown_services() -> None:
    local = _client(PRODUCER_SUB, CONSUMER_RULES)
    for code in ("getWsdl", "getSecurityServerMetrics", "getSecurityServerHealthData"):
        request = _rewrite("listMethods.query", b"listMethods", code.encode())
        with pytest.raises(XRoadFault) as err:
            ms.soap_metaservice_response(local, request, _in_group)
        assert err.value.faultcode() == "Server.ServerProxy.UnknownService"
        assert err.value.faultstring == f"Unknown service: SERVICE:{PRODUCER_SUB}/{code}/v1"


def test_response_declares_namespaces_the_request_lacks(metainfo_schema: etree.XMLSchema) -> None:
    raw = b"""<?xml version="1.0" encoding="UTF-8"?>
<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Header>
<x:client xmlns:x="http://x-road.eu/xsd/xroad.xsd" xmlns:i="http://x-road.eu/xsd/identifiers" i:objectType="SUBSYSTEM">
<i:xRoadInstance>EE</i:xRoadInstance><i:memberClass>GOV</i:memberClass><i:memberCode>c</i:memberCode>
<i:subsystemCode>s</i:subsystemCode></x:client>
<x:service xmlns:x="http://x-road.eu/xsd/xroad.xsd" xmlns:i="http://x-road.eu/xsd/identifiers" i:objectType="SERVICE">
<i:xRoadInstance>EE</i:xRoadInstance><i:memberClass>BUSINESS</i:memberClass><i:memberCode>producer</i:memberCode>
<i:subsystemCode>SUB</i:subsystemCode><i:serviceCode>listMethods</i:serviceCode></x:service>
<x:id xmlns:x="http://x-road.eu/xsd/xroad.xsd">q-1</x:id>
<x:protocolVersion xmlns:x="http://x-road.eu/xsd/xroad.xsd">4.0</x:protocolVersion>
</e:Header><e:Body><listMethods xmlns="http://x-road.eu/xsd/xroad.xsd"/></e:Body></e:Envelope>"""
    request = soap.parse_soap(raw)
    assert isinstance(request, soap.SoapMessage)
    response = ms.soap_metaservice_response(_client(PRODUCER_SUB, ()), request, _never)
    parsed = soap.parse_soap(response)
    assert isinstance(parsed, soap.SoapMessage)
    soap.check_response(request, parsed)
    el = _body_element(response)
    assert el.nsmap.get("xrd") == "http://x-road.eu/xsd/xroad.xsd"
    assert el.nsmap.get("id") == "http://x-road.eu/xsd/identifiers"
    _assert_valid(metainfo_schema, el)
    assert len(meta.parse_method_list(el)[1]) == 6


def test_build_method_list_response_without_request_hash() -> None:
    request = _query("listMethods.query")
    out = meta.build_method_list_response(request, [], request_hash_algorithm=None)
    parsed = soap.parse_soap(out)
    assert isinstance(parsed, soap.SoapMessage) and parsed.header.request_hash is None


def test_method_list_guards() -> None:
    with pytest.raises(ValueError, match="not listMethods"):
        meta.method_list_element("getWsdl", [])
    from protocols.errors import XmlError

    with pytest.raises(XmlError):
        meta.parse_method_list(b"<a:getWsdlResponse xmlns:a='http://x-road.eu/xsd/xroad.xsd'/>")
    with pytest.raises(XmlError):
        meta.parse_method_list(b"<listMethodsResponse/>")


# --------------------------------------------------------------------------- REST listMethods / allowedMethods


def test_rest_list_methods_json_shape() -> None:
    local = _client(PRODUCER_SUB, CONSUMER_RULES)
    content_type, body = ms.rest_metaservice_body(local, ServiceId.parse(f"{PRODUCER_SUB}/listMethods"),
                                                  "EE/BUSINESS/consumer", "GET", _in_group)
    assert content_type == "application/json"
    doc = json.loads(body)
    assert doc == {"service": [
        {"member_class": "BUSINESS", "member_code": "producer", "object_type": "SERVICE", "service_code": "pets",
         "service_type": "REST", "subsystem_code": "SUB", "xroad_instance": "EE",
         "endpoint_list": [{"method": "GET", "path": "/pet/*"}, {"method": "POST", "path": "/pet"},
                           {"method": "GET", "path": "/store/inventory"}]},
        {"member_class": "BUSINESS", "member_code": "producer", "object_type": "SERVICE", "service_code": "school",
         "service_type": "REST", "subsystem_code": "SUB", "xroad_instance": "EE", "endpoint_list": []},
    ]}
    assert list(doc["service"][0]) == ["member_class", "member_code", "object_type", "service_code", "service_type",
                                       "subsystem_code", "xroad_instance", "endpoint_list"]
    assert "service_version" not in doc["service"][0]
    back = meta.parse_rest_method_list(body)
    assert [(s.service_code, s.service_type, str(s.provider)) for s in back] == [
        ("pets", "REST", PRODUCER_SUB), ("school", "REST", PRODUCER_SUB)]


def test_rest_allowed_methods_narrow_endpoints() -> None:
    rules = (
        AccessRule("EE/BUSINESS/consumer", ("pets",), endpoints=(EndpointRule("GET", "/pet/**"),)),
        AccessRule("EE/BUSINESS/other", ("school",)),
    )
    local = _client(PRODUCER_SUB, rules)
    service = ServiceId.parse(f"{PRODUCER_SUB}/allowedMethods")
    _, body = ms.rest_metaservice_body(local, service, "EE/BUSINESS/consumer", "GET", _never)
    doc = json.loads(body)
    assert [s["service_code"] for s in doc["service"]] == ["pets"]
    assert doc["service"][0]["endpoint_list"] == [{"method": "GET", "path": "/pet/*"}]

    # A service-level right covers every endpoint; a group right counts as well.
    rules = (AccessRule("EE/BUSINESS/consumer", ("pets",)), AccessRule("GLOBALGROUP:EE/partners", ("school",)))
    _, body = ms.rest_metaservice_body(_client(PRODUCER_SUB, rules), service, "EE/BUSINESS/consumer", "GET",
                                       _in_group)
    doc = json.loads(body)
    assert [s["service_code"] for s in doc["service"]] == ["pets", "school"]
    assert len(doc["service"][0]["endpoint_list"]) == 3

    # Nobody else gets anything.
    _, body = ms.rest_metaservice_body(_client(PRODUCER_SUB, rules), service, "EE/BUSINESS/stranger", "GET",
                                       _in_group)
    assert json.loads(body) == {"service": []}


def test_rest_unserved_metaservices_and_methods() -> None:
    local = _client(PRODUCER_SUB, CONSUMER_RULES)
    for code, verb in (("getOpenAPI", "GET"), ("listMethods", "POST"), ("allowedMethods", "DELETE"),
                       ("getSecurityServerOperationalData", "GET")):
        with pytest.raises(XRoadFault) as err:
            ms.rest_metaservice_body(local, ServiceId.parse(f"{PRODUCER_SUB}/{code}"), "EE/BUSINESS/consumer", verb,
                                     _in_group)
        assert err.value.faultcode() == "Server.ServerProxy.UnknownService"
        assert err.value.rest_status == 500


def test_rest_method_list_builder_drops_base_endpoint_and_reserved_codes() -> None:
    provider = ClientId.parse(PRODUCER_SUB)
    body = meta.build_rest_method_list([
        meta.RestServiceDetails(provider, "kore", "OPENAPI", (("*", "**"), ("GET", "/school"))),
        meta.RestServiceDetails(provider, "getOpenAPI"),
    ])
    assert json.loads(body)["service"] == [
        {"member_class": "BUSINESS", "member_code": "producer", "object_type": "SERVICE", "service_code": "kore",
         "service_type": "OPENAPI", "subsystem_code": "SUB", "xroad_instance": "EE",
         "endpoint_list": [{"method": "GET", "path": "/school"}]}]
