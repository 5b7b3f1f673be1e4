"""X-Road identifiers: string, encoded, XML and REST forms; character rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from protocols.certprofile import MemberId
from protocols.xroad.ids import (
    ID_NS,
    ClientId,
    GlobalGroupId,
    IdentifierError,
    LocalGroupId,
    ObjectType,
    RepresentedParty,
    SecurityServerId,
    ServiceId,
    XRoadId,
    check_strict,
    identifier_from_xml,
    identifier_to_xml,
    parse_encoded,
    parse_rest_path,
    percent_decode_segment,
    percent_encode_segment,
)

XSD = Path(__file__).resolve().parent / "vectors" / "xroad" / "xsd" / "identifiers.xsd"

IDS: list[tuple[XRoadId, str, str]] = [
    (ClientId("EE", "BUSINESS", "consumer"), "EE/BUSINESS/consumer", "MEMBER:EE:BUSINESS:consumer"),
    (ClientId("VN", "GOV", "000.00.00.H41", "vdxp"), "VN/GOV/000.00.00.H41/vdxp",
     "SUBSYSTEM:VN:GOV:000.00.00.H41:vdxp"),
    (ServiceId("EE", "BUSINESS", "producer", None, "getState"), "EE/BUSINESS/producer/getState",
     "SERVICE:EE:BUSINESS:producer:getState"),
    (ServiceId("EE", "BUSINESS", "producer", "sub", "getState", "v1"), "EE/BUSINESS/producer/sub/getState/v1",
     "SERVICE:EE:BUSINESS:producer:sub:getState:v1"),
    (SecurityServerId("EE", "BUSINESS", "consumer", "proxytest"), "EE/BUSINESS/consumer/proxytest",
     "SERVER:EE:BUSINESS:consumer:proxytest"),
    (GlobalGroupId("EE", "security-server-owners"), "EE/security-server-owners",
     "GLOBALGROUP:EE:security-server-owners"),
    (LocalGroupId("group1"), "group1", "LOCALGROUP:group1"),
    (ClientId("EE", "BUSINESS", "Test Org"), "EE/BUSINESS/Test Org", "MEMBER:EE:BUSINESS:Test Org"),
]


@pytest.mark.parametrize(("ident", "text", "encoded"), IDS)
def test_string_and_encoded_round_trip(ident: XRoadId, text: str, encoded: str) -> None:
    assert str(ident) == text
    assert ident.encoded(include_type=True) == encoded
    assert parse_encoded(encoded) == ident
    if isinstance(ident, ServiceId):
        assert ServiceId.parse(text, with_version=ident.service_version is not None
                               and ident.subsystem_code is None) == ident
    else:
        assert type(ident).parse(text) == ident


@pytest.mark.parametrize(("ident", "text", "encoded"), IDS)
def test_xml_round_trip_and_schema(ident: XRoadId, text: str, encoded: str) -> None:
    el = identifier_to_xml(f"{{{ID_NS}}}wrapped", ident)
    assert el.get(f"{{{ID_NS}}}objectType") == ident.object_type.value
    assert identifier_from_xml(el, (ident.object_type,)) == ident
    # the children follow the schema's sequence
    schema = etree.XMLSchema(etree.XML(
        f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:id="{ID_NS}" targetNamespace="{ID_NS}" '
        f'elementFormDefault="qualified"><xs:include schemaLocation="{XSD.as_uri()}"/>'
        '<xs:element name="wrapped" type="id:XRoadIdentifierType"/></xs:schema>'))
    assert schema.validate(el), schema.error_log


def test_parse_ambiguous_service() -> None:
    assert ServiceId.parse("EE/C/M/sub/svc").subsystem_code == "sub"
    assert ServiceId.parse("EE/C/M/svc/v1", with_version=True).service_version == "v1"


@pytest.mark.parametrize("bad", ["a/b", "a:b", "a;b", "a%b", "a\\b", "a\nb", "a\x00", "\x85x", "a\u200bb", "\ufeffa",
                                 "", "   ", "x" * 256])
def test_wire_rule_rejects(bad: str) -> None:
    with pytest.raises(IdentifierError):
        ClientId("EE", "BUSINESS", bad)
    with pytest.raises(IdentifierError):
        ServiceId("EE", "BUSINESS", "m", None, bad)


@pytest.mark.parametrize("good", ["consumer", "Test Org", "000.00.00.H41", "a'()+,-.=?", "Tổng cục", "under_score"])
def test_wire_rule_accepts(good: str) -> None:
    assert ClientId("EE", "BUSINESS", good).member_code == good


@pytest.mark.parametrize(("code", "strict"), [("consumer", True), ("Test Org", True), ("000.00.00.H41", True),
                                              ("a'()+,-.=?", True), ("under_score", False), ("Tổng", False),
                                              (" lead", False), ("two  spaces", False), ("tab\tx", False)])
def test_strict_rule(code: str, strict: bool) -> None:
    try:
        ident = ClientId("EE", "BUSINESS", code)
    except IdentifierError:
        assert not strict
        return
    if strict:
        check_strict(ident)
        assert str(MemberId("EE", "BUSINESS", code)) == str(ident)  # consistent with certprofile
    else:
        with pytest.raises(IdentifierError):
            check_strict(ident)


def test_xml_reading_rules() -> None:
    def el(xml: str) -> etree._Element:
        return etree.fromstring(f'<c xmlns:id="{ID_NS}" {xml}</c>')

    member = ("id:objectType=\"MEMBER\"><id:xRoadInstance>EE</id:xRoadInstance><id:memberClass>B</id:memberClass>"
              "<id:memberCode>m</id:memberCode>")
    assert identifier_from_xml(el(member + "<id:other>ignored</id:other>"), (ObjectType.MEMBER,)) \
        == ClientId("EE", "B", "m")
    for xml, reason in [(member.replace('id:objectType="MEMBER"', ""), "object_type"),
                        (member.replace("MEMBER", "SUBSYSTEM"), "subsystem_mismatch"),
                        (member + "<id:subsystemCode>s</id:subsystemCode>", "subsystem_mismatch"),
                        (member + "<id:memberCode>x</id:memberCode>", "duplicate_part"),
                        (member.replace("<id:memberCode>m</id:memberCode>", ""), "missing_part")]:
        with pytest.raises(IdentifierError) as info:
            identifier_from_xml(el(xml), (ObjectType.MEMBER, ObjectType.SUBSYSTEM))
        assert info.value.reason == reason
    with pytest.raises(IdentifierError) as info:
        identifier_from_xml(el(member), (ObjectType.SERVICE,))
    assert info.value.reason == "object_type"


def test_rest_forms() -> None:
    client = ClientId("VN", "GOV", "000.00.00.H41", "văn thư 1")
    header = client.rest_header()
    assert header == "VN/GOV/000.00.00.H41/v%C4%83n%20th%C6%B0%201"
    assert ClientId.from_rest_header(header) == client
    server = SecurityServerId("VN", "GOV", "000.00.00.G22", "ss 1")
    assert SecurityServerId.from_rest_header(server.rest_header()) == server
    for party in (RepresentedParty("X1"), RepresentedParty("X1", "COM")):
        assert RepresentedParty.from_rest_header(party.rest_header()) == party
    target = parse_rest_path("/r1/VN/GOV/000.00.00.G22/axis/vdxp/edocs/123%2F4?x")
    assert target.service == ServiceId("VN", "GOV", "000.00.00.G22", "axis", "vdxp")
    assert target.service_path == "/edocs/123%2F4?x"
    assert parse_rest_path("/r1/EE/C/M%20x/S/svc").service.member_code == "M x"
    assert parse_rest_path("/r1/EE/C/M/S/svc").path() == "/r1/EE/C/M/S/svc"
    service = ServiceId("EE", "C", "M", "S", "svc")
    assert ServiceId.from_rest_header(service.rest_header()) == service


@pytest.mark.parametrize("path", ["/r1/EE/C/M/svc", "/r2/EE/C/M/S/svc", "/rx/EE/C/M/S/svc", "r1/EE/C/M/S/svc",
                                  "/r1/EE/C/M%2/S/svc", "/r1/EE/C/M%ZZ/S/svc", "/r1/EE/C/M%2FX/S/svc",
                                  "/r1/EE/C/M x/S/svc", "/r1/EE/C/%00/S/svc", "/r1/EE/C/%FF/S/svc"])
def test_rest_path_rejects(path: str) -> None:
    with pytest.raises(IdentifierError):
        parse_rest_path(path)


def test_percent_encoding() -> None:
    for s in ["abc", "a b", "ä/ö:%", "'()+,-.=?"]:
        assert percent_decode_segment(percent_encode_segment(s)) == s
    assert percent_decode_segment("a+b:c@d") == "a+b:c@d"
    with pytest.raises(IdentifierError):
        percent_decode_segment("a/b")
