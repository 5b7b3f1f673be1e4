"""Shared and private parameters (protocols.gconf.params) on X-Road's vectors, versions 2 to 6."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from protocols.gconf.errors import GlobalConfError
from protocols.gconf.params import (
    SHA1,
    SHA256,
    ApprovedCa,
    ClientId,
    OcspInfo,
    SecurityServer,
    SharedParameters,
    Subsystem,
    auth_cert_hash,
    build_private_params,
    build_shared_params,
    globalconf_schema,
    parse_federated_anchor,
    parse_private_params,
    parse_shared_params,
)
from protocols.xmlsafe import parse_xml

GC = "xroad/globalconf"
V6_DIR = "xroad/gconf-download/public/V6/20251110170000548026000"

# (directory under tests/vectors, version, has private params)
VECTOR_DIRS = [
    (f"{GC}/globalconf_good_v4/EE", 4, True),
    (f"{GC}/globalconf_good_v4/bar", 3, False),
    (f"{GC}/globalconf_good_v4/baz_v3", 3, True),
    (f"{GC}/globalconf_good_v4/foo_v2", 2, True),
    (f"{GC}/globalconf_good2_v3/DEV", 3, False),
    (V6_DIR, 6, True),
    ("xroad/gconf-download/confclient-tests/test-conf-simple/EE", 2, True),
    ("xroad/gconf-download/confclient-tests/test-conf-detached/EE", 2, True),
]


def _expectations(vectors: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((vectors / GC / "expectations.json").read_text())
    return doc


def _shared(vectors: Path, rel: str, version: int) -> SharedParameters:
    return parse_shared_params((vectors / rel / "shared-params.xml").read_bytes(), version)


def _version_from_metadata(file: Path) -> int:
    meta = json.loads(file.with_name(file.name + ".metadata").read_text())
    return int(meta.get("configurationVersion", 2))


def _same_but_version(a: Any, b: Any) -> bool:
    return bool(dataclasses.replace(a, version=b.version) == b)


def _pem_cert(vectors: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((vectors / "xroad/test-pki" / name).read_bytes())


# --------------------------------------------------------------------------- expectations.json

def _anchor_read(vectors: Path, case: dict[str, Any]) -> None:
    anchor = parse_federated_anchor((vectors / GC / case["input"]).read_bytes())
    exp = case["expect"]
    assert anchor.instance == exp["instance_identifier"]
    assert len(anchor.sources) == exp["source_count"]
    first = anchor.sources[0]
    assert first.download_url == exp["first_source_download_url"]
    sha1s = {base64.b64encode(hashlib.sha1(c).digest()).decode() for c in first.verification_certs}
    for wanted in exp["first_source_cert_lookup"]["found"]:
        assert wanted in sha1s


def _anchor_equals(vectors: Path, case: dict[str, Any]) -> None:
    a1 = parse_federated_anchor((vectors / GC / case["input"][0]).read_bytes())
    a1_again = parse_federated_anchor((vectors / GC / case["input"][0]).read_bytes())
    a2 = parse_federated_anchor((vectors / GC / case["input"][1]).read_bytes())
    assert (a1 == a1_again) is case["expect"]["equal"]["anchor1 vs anchor1 (read twice)"]
    assert (a1 == a2) is case["expect"]["equal"]["anchor1 vs anchor2"]
    assert [s.download_url for s in a2.sources] == ["http://www.bar.com/conf2"]
    assert set(a2.sources[0].verification_certs) <= {c for s in a1.sources for c in s.verification_certs}


def _round_trip(vectors: Path, case: dict[str, Any]) -> None:
    file = vectors / GC / case["input"]
    version = _version_from_metadata(file)
    assert f"v{version}/" in case["schema"]
    sp = parse_shared_params(file.read_bytes(), version)
    again = parse_shared_params(build_shared_params(sp), 6)
    assert again.version == 6
    assert _same_but_version(again, sp)


def _group_membership(vectors: Path, case: dict[str, Any]) -> None:
    sp = _shared(vectors, f"{GC}/globalconf_good_v4/EE", 4)
    instance, code = (x.strip().strip('"') for x in case["expect"]["group"].split(" / "))
    assert instance == sp.instance
    for subject, expected in case["expect"]["members"].items():
        _kind, ident = subject.split(" ")
        assert sp.is_member_of_group(ClientId.parse(ident), code) is expected, subject
    # the other group lives in no instance here: see tests/test_gconf_disk.py for the directory-level lookup
    assert sp.is_member_of_group(ClientId.parse("EE/BUSINESS/member2"), "non-existent-group") is False


def _approved_cas(vectors: Path, case: dict[str, Any]) -> None:
    for key, exp in case["expect"].items():
        if key == "result":
            continue
        instance, ca_name = key.rsplit("_", 1)
        rel = f"{GC}/globalconf_good_v4/{instance}"
        sp = _shared(vectors, rel, _version_from_metadata(vectors / rel / "shared-params.xml"))
        ca = sp.ca_by_name(ca_name)
        assert ca is not None and ca.acme_server is not None
        assert ca.acme_server.directory_url == exp["acme_server_directory_url"]
        assert ca.acme_server.authentication_certificate_profile_id == exp["authentication_certificate_profile_id"]
        assert ca.acme_server.signing_certificate_profile_id == exp["signing_certificate_profile_id"]


def _directory_level(vectors: Path, case: dict[str, Any]) -> None:
    # Directory cases: the parameters each directory holds must parse with their metadata version
    # (the directory behaviour itself is tested in tests/test_gconf_disk.py).
    base = vectors / GC / case["input"].split(" ")[0].split("/")[0]
    for file in sorted(base.glob("*/*-params.xml")):
        version = _version_from_metadata(file)
        parse = parse_shared_params if file.name == "shared-params.xml" else parse_private_params
        assert parse(file.read_bytes(), version).instance == file.read_text().split("<instanceIdentifier>")[1] \
            .split("<")[0]


HANDLERS: dict[str, Callable[[Path, dict[str, Any]], None]] = {
    "ConfigurationAnchorTest.readAnchorV2": _anchor_read,
    "ConfigurationAnchorTest.equalsAnchorV2": _anchor_equals,
    "FSGlobalConfValidatorTest[globalconf_good_v4]": _directory_level,
    "FSGlobalConfValidatorTest[instance-identifier file]": _directory_level,
    "VersionedConfigurationDirectoryTest.readDirectoryContainingV4V3AndV2Configurations": _directory_level,
    "VersionedConfigurationDirectoryTest.readConfigurationFilesContainingV4V3AndV2": _directory_level,
    "SharedParametersMarshallRoundTripTest[v4]": _round_trip,
    "GlobalConfVer4Test.isSubjectInGlobalGroup": _group_membership,
    "GlobalConfVer4Test.getApprovedCAs": _approved_cas,
}


def test_every_expectation_case_has_a_handler(vectors: Path) -> None:
    assert {c["id"] for c in _expectations(vectors)["cases"]} == set(HANDLERS)


@pytest.mark.parametrize("case_id", sorted(HANDLERS))
def test_expectation_case(vectors: Path, case_id: str) -> None:
    case = next(c for c in _expectations(vectors)["cases"] if c["id"] == case_id)
    HANDLERS[case_id](vectors, case)


# --------------------------------------------------------------------------- every vector, every version

@pytest.mark.parametrize(("rel", "version", "has_private"), VECTOR_DIRS, ids=[d[0] for d in VECTOR_DIRS])
def test_vector_parses_and_round_trips(vectors: Path, rel: str, version: int, has_private: bool) -> None:
    sp = _shared(vectors, rel, version)
    assert sp.version == version
    assert sp.members and sp.servers and sp.cas and sp.tsas
    assert all(s.auth_cert_hash_algorithm == (SHA1 if version == 2 else SHA256) for s in sp.servers)
    assert bool(sp.sources) is (version >= 3)
    for s in sp.servers:
        assert sp.member(s.owner) is not None
        assert all(sp.is_registered(c) for c in s.clients)
    if version >= 3:
        again = parse_shared_params(build_shared_params(sp), 6)
        assert _same_but_version(again, sp)
    else:
        with pytest.raises(GlobalConfError) as info:
            build_shared_params(sp)
        assert info.value.code == "gconf.invalid"
    if has_private:
        pp = parse_private_params((vectors / rel / "private-params.xml").read_bytes(), version)
        assert pp.version == version
        assert pp.management is not None
        assert pp.instance == sp.instance
        again_pp = parse_private_params(build_private_params(pp), 6)
        assert _same_but_version(again_pp, pp)


def test_ee_v4_content(vectors: Path) -> None:
    sp = _shared(vectors, f"{GC}/globalconf_good_v4/EE", 4)
    assert sp.instance == "EE" and sp.ocsp_freshness_seconds == 42
    assert sp.member_classes == (("BUSINESS", "Business clients"),)
    assert [c.name for c in sp.cas] == ["pki1", "pki2", "pki3", "pki4", "pki5 with intermediate certs"]
    assert [c.authentication_only for c in sp.cas] == [False, True, False, True, True]
    assert len(sp.cas[4].intermediates) == 3 and sp.cas[4].intermediates[0].ocsp == ()
    assert sp.cas[0].top_ca_ocsp[0].url == "http://127.0.0.1:8082/ocsp"
    assert sp.cas[0].top_ca.subject.rfc4514_string().startswith("1.2.840.113549.1.9.1=aaa@bbb.ccc,CN=Cyber")
    foo = sp.member(ClientId.parse("EE/BUSINESS/foo"))
    assert foo is not None and foo.name == "Org with no address" and foo.subsystems == (Subsystem("foosubsystem"),)
    assert foo.class_description == "1"
    no_address = sp.server_by_id("EE/BUSINESS/foo/fooServerCode")
    assert no_address is not None and no_address.address is None
    producer = sp.server_by_id("EE/BUSINESS/producer/producerServerCode")
    assert producer is not None and producer.address == "127.0.0.1"
    assert producer.clients == (ClientId.parse("EE/BUSINESS/consumer"), ClientId.parse("EE/BUSINESS/foo"),
                                ClientId.parse("EE/BUSINESS/foo/foosubsystem"))
    assert producer.server_id() == "EE/BUSINESS/producer/producerServerCode"
    assert sp.global_groups[0].code == "Test group" and len(sp.global_groups[0].members) == 4
    pp = parse_private_params((vectors / GC / "globalconf_good_v4/EE/private-params.xml").read_bytes(), 4)
    assert pp.time_stamping_interval_seconds == 123
    assert pp.management is not None and pp.management.auth_cert_reg_cert is None
    assert pp.management.provider == ClientId.parse("EE/BUSINESS/servicemember2")
    assert [(a.instance, a.sources[0].download_url, a.sources[0].verification_certs) for a in pp.anchors] == \
        [("bar", "http://www.bar.com/conf", (b"bar\n",))]


def test_bar_group_member_with_contradicting_object_type_is_dropped(vectors: Path) -> None:
    # bar/shared-params.xml lists objectType="MEMBER" with a subsystemCode; X-Road's identifier
    # parser refuses that entry, the file is still read.
    sp = _shared(vectors, f"{GC}/globalconf_good_v4/bar", 3)
    members = sp.global_groups[0].members
    assert [str(m) for m in members] == ["EE/BUSINESS/member2", "EE/BUSINESS/member3", "EE/BUSINESS/member4"]
    assert not sp.is_member_of_group(ClientId.parse("EE/BUSINESS/member1/subsys"), "Test group")
    assert not sp.is_member_of_group(ClientId.parse("EE/BUSINESS/member1"), "Test group")


def test_dev_pem_in_base64_certificates(vectors: Path) -> None:
    raw = (vectors / GC / "globalconf_good2_v3/DEV/shared-params.xml").read_bytes()
    assert b"LS0tLS1CRUdJTi" in raw  # base64 of "-----BEGIN"
    sp = parse_shared_params(raw, 3)
    ca, tsa = sp.cas[0], sp.tsas[0]
    assert ca.name == "Test CA" and "Test CA" in ca.top_ca.subject.rfc4514_string()
    assert ca.top_ca_ocsp[0].cert is not None and tsa.name == "Test TSA"
    assert sp.sources[0].internal_verification_certs
    # written back as base64 of DER
    built = build_shared_params(sp)
    assert b"LS0tLS1CRUdJTi" not in built
    assert parse_shared_params(built, 6).cas[0].top_ca == ca.top_ca


def test_v6_content(vectors: Path) -> None:
    sp = _shared(vectors, V6_DIR, 6)
    assert [o.cost_type for o in sp.cas[0].top_ca_ocsp] == ["FREE"]
    assert sp.tsas[0].cost_type == "FREE"
    assert [c.default_csr_format for c in sp.cas] == [None, "PEM"]
    assert sp.cas[0].acme_server is not None and sp.cas[0].acme_server.directory_url == "http://testca:8887"
    m = sp.member(ClientId.parse("DEV/COM/1234"))
    assert m is not None and m.subsystems[0] == Subsystem("MANAGEMENT", "Management services")
    assert [c[0] for c in sp.member_classes] == ["COM", "GOV", "ORG"]
    pp = parse_private_params((vectors / V6_DIR / "private-params.xml").read_bytes(), 6)
    assert pp.management is not None and pp.management.auth_cert_reg_cert is not None
    assert pp.management.auth_cert_reg_address == "https://cs:4001/managementservice/"
    assert pp.management.provider == ClientId("DEV", "COM", "1234", "MANAGEMENT")
    assert pp.time_stamping_interval_seconds == 60 and pp.anchors == ()


# --------------------------------------------------------------------------- lookups

def test_servers_hosting(vectors: Path) -> None:
    sp = _shared(vectors, f"{GC}/globalconf_good_v4/EE", 4)

    def codes(client: str) -> list[str]:
        return [s.server_code for s in sp.servers_hosting(ClientId.parse(client))]

    assert codes("EE/BUSINESS/producer") == ["producerServerCode", "fooServerCode"]
    assert codes("EE/BUSINESS/consumer") == ["producerServerCode", "consumerServerCode"]
    assert codes("EE/BUSINESS/foo") == ["producerServerCode", "fooServerCode", "FooBarServerCode"]
    assert codes("EE/BUSINESS/foo/foosubsystem") == ["producerServerCode"]
    assert codes("EE/BUSINESS/nobody") == []
    v6 = _shared(vectors, V6_DIR, 6)
    assert [s.server_code for s in v6.servers_hosting(ClientId.parse("DEV/COM/4321/TestClient"))] == ["SS0", "SS1"]
    assert [s.server_code for s in v6.servers_hosting(ClientId.parse("DEV/COM/1234/test-consumer"))] == ["SS1"]


def test_server_by_auth_cert_sha256(vectors: Path) -> None:
    sp = _shared(vectors, f"{GC}/globalconf_good_v4/EE", 4)
    producer_cert = _pem_cert(vectors, "producer.pem")
    # The EE vector's hashes are SHA-256 of the PEM *file* ('openssl sha256 producer.pem'), not of the
    # certificate: X-Road (and we) hash the DER, so they match nothing.
    assert sp.server_by_auth_cert(producer_cert) is None
    server = sp.servers[0]
    good = dataclasses.replace(server, auth_cert_hashes=(auth_cert_hash(producer_cert, SHA256),))
    sp2 = parse_shared_params(build_shared_params(dataclasses.replace(sp, servers=(good, *sp.servers[1:]))), 6)
    found = sp2.server_by_auth_cert(producer_cert)
    assert found is not None and found.server_id() == "EE/BUSINESS/producer/producerServerCode"
    assert base64.b64encode(found.auth_cert_hashes[0]).decode() == "FDNMozu+c7VjfGuCkiUUPmuSxchIIWBh7Q7qOkpGE3Q="
    assert sp2.server_by_auth_cert(_pem_cert(vectors, "consumer.pem")) is None
    assert found.has_auth_cert(producer_cert.public_bytes(serialization.Encoding.DER))


def test_server_by_auth_cert_sha1_in_v2(vectors: Path) -> None:
    raw = (vectors / GC / "globalconf_good_v4/foo_v2/shared-params.xml").read_text()
    first = raw.split("<authCertHash>")[1].split("</authCertHash>")[0]
    cert = _pem_cert(vectors, "consumer.pem")
    sha1 = base64.b64encode(auth_cert_hash(cert, SHA1)).decode()
    sp = parse_shared_params(raw.replace(first, sha1, 1).encode(), 2)
    found = sp.server_by_auth_cert(cert)
    assert found is not None and found is sp.servers[0]
    assert found.auth_cert_hash_algorithm == SHA1 and len(found.auth_cert_hashes[0]) == 20


def test_maintenance_mode_and_subsystem_names_v5(vectors: Path) -> None:
    sp = _shared(vectors, f"{GC}/globalconf_good2_v3/DEV", 3)
    ss0, ss1 = sp.servers
    m0 = sp.members[0]
    sp_mod = dataclasses.replace(
        sp,
        servers=(dataclasses.replace(ss0, in_maintenance=True, maintenance_message="Back at 14:00"),
                 dataclasses.replace(ss1, in_maintenance=True)),
        members=(dataclasses.replace(m0, subsystems=(Subsystem("MANAGEMENT", "Management"), *m0.subsystems[1:])),
                 *sp.members[1:]))
    built = build_shared_params(sp_mod)
    assert b"costType" not in built and b"defaultCsrFormat" not in built
    for version in (5, 6):  # nothing V6-only in it: valid V5 too
        again = parse_shared_params(built, version)
        assert _same_but_version(again, sp_mod)
        a0, a1 = again.servers
        assert (a0.in_maintenance, a0.maintenance_message) == (True, "Back at 14:00")
        assert (a1.in_maintenance, a1.maintenance_message) == (True, None)
        assert again.members[0].subsystems[0].name == "Management"
    with pytest.raises(GlobalConfError) as info:  # inMaintenanceMode does not exist before V5
        parse_shared_params(built, 4)
    assert info.value.code == "gconf.schema_invalid"
    assert sp.servers_hosting(ClientId.parse("DEV/COM/1234"))[0].in_maintenance is False


def test_client_id() -> None:
    assert str(ClientId.parse("EE/BUSINESS/Test Org")) == "EE/BUSINESS/Test Org"
    sub = ClientId.parse("DEV/COM/1234/MANAGEMENT")
    assert sub.subsystem == "MANAGEMENT" and sub.object_type == "SUBSYSTEM"
    assert sub.member_id() == ClientId("DEV", "COM", "1234")
    for bad in ("EE/BUSINESS", "a/b/c/d/e", "EE//x", "EE/C/x\n", "EE/C/x/"):
        with pytest.raises(GlobalConfError) as info:
            ClientId.parse(bad)
        assert info.value.code == "gconf.invalid_identifier"


# --------------------------------------------------------------------------- failures

def _ee_text(vectors: Path) -> str:
    return (vectors / GC / "globalconf_good_v4/EE/shared-params.xml").read_text()


def _with_tsa_cost(text: str) -> str:
    return re.sub(r"</cert>(\s*)</approvedTSA>", r"</cert><costType>FREE</costType>\1</approvedTSA>", text)


def test_cost_type_is_v6(vectors: Path) -> None:
    assert parse_shared_params(_with_tsa_cost(_ee_text(vectors)).encode(), 6).tsas[0].cost_type == "FREE"


SCHEMA_FAILURES: list[tuple[str, Callable[[str], str], int]] = [
    ("no instanceIdentifier", lambda t: t.replace("<instanceIdentifier>EE</instanceIdentifier>", "", 1), 4),
    ("unknown element inside member", lambda t: t.replace("<memberCode>producer</memberCode>",
                                                          "<memberCode>producer</memberCode><x>1</x>", 1), 4),
    ("freshness not an integer", lambda t: t.replace("<ocspFreshnessSeconds>42<", "<ocspFreshnessSeconds>soon<"), 4),
    ("costType before V6", lambda t: _with_tsa_cost(t), 5),
    ("V3+ document read as V2 (source)", lambda t: t, 2),
    ("authCertHash not base64", lambda t: t.replace("xcuWTrx4uFeP5mNBXIhYITy+gUM72CJfL63MsWXffXM=", "***", 1), 4),
    ("bad objectType", lambda t: t.replace('objectType="MEMBER"', 'objectType="ROBOT"', 1), 4),
]


@pytest.mark.parametrize(("name", "edit", "version"), SCHEMA_FAILURES, ids=[f[0] for f in SCHEMA_FAILURES])
def test_schema_failures(vectors: Path, name: str, edit: Callable[[str], str], version: int) -> None:
    with pytest.raises(GlobalConfError) as info:
        parse_shared_params(edit(_ee_text(vectors)).encode(), version)
    assert info.value.code == "gconf.schema_invalid", info.value
    assert "line " in info.value.message


def test_schema_failure_names_the_line(vectors: Path) -> None:
    text = _ee_text(vectors).replace("<ocspFreshnessSeconds>42<", "<ocspFreshnessSeconds>soon<")
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "ocspFreshnessSeconds" in ln)
    with pytest.raises(GlobalConfError) as info:
        parse_shared_params(text.encode(), 4)
    assert f"line {line}:" in info.value.message


def test_private_schema_failure(vectors: Path) -> None:
    text = (vectors / V6_DIR / "private-params.xml").read_text()
    with pytest.raises(GlobalConfError) as info:
        parse_private_params(text.replace("<timeStampingIntervalSeconds>60</timeStampingIntervalSeconds>", ""
                                          ).encode(), 6)
    assert info.value.code == "gconf.schema_invalid"
    # a bare configurationAnchor is valid against the v2 private schema but is not private parameters
    with pytest.raises(GlobalConfError) as info:
        parse_private_params((vectors / GC / "configuration-anchor1.xml").read_bytes(), 2)
    assert info.value.code == "gconf.schema_invalid"


SEMANTIC_FAILURES: list[tuple[str, Callable[[str], str], str]] = [
    ("owner names no member", lambda t: t.replace("<owner>producerId</owner>", "<owner>ghostId</owner>", 1),
     "gconf.invalid_reference"),
    ("owner is a subsystem", lambda t: t.replace("<owner>producerId</owner>", "<owner>foosubsystemId</owner>", 1),
     "gconf.invalid_reference"),
    ("client names nothing", lambda t: t.replace("<client>consumerId</client>", "<client>ghostId</client>", 1),
     "gconf.invalid_reference"),
    # libxml2's schema validation already refuses a duplicate xs:ID (our own check is a second line)
    ("duplicate id", lambda t: t.replace('<member id="consumerId">', '<member id="producerId">', 1),
     "gconf.schema_invalid"),
    ("duplicate member", lambda t: t.replace("<memberCode>consumer</memberCode>",
                                             "<memberCode>producer</memberCode>", 1), "gconf.duplicate_member"),
    ("duplicate server", lambda t: t.replace("<serverCode>fooServerCode</serverCode>",
                                             "<serverCode>FooBarServerCode</serverCode>", 1),
     "gconf.duplicate_server"),
    ("certificate is not a certificate", lambda t: t.replace(
        t.split("<approvedTSA>")[1].split("<cert>")[1].split("</cert>")[0], "bm90IGEgY2VydGlmaWNhdGU=", 1),
     "gconf.cert_invalid"),
    ("member code with a slash", lambda t: t.replace("<memberCode>consumer<", "<memberCode>con/sumer<", 1),
     "gconf.invalid_identifier"),
]


@pytest.mark.parametrize(("name", "edit", "code"), SEMANTIC_FAILURES, ids=[f[0] for f in SEMANTIC_FAILURES])
def test_semantic_failures(vectors: Path, name: str, edit: Callable[[str], str], code: str) -> None:
    with pytest.raises(GlobalConfError) as info:
        parse_shared_params(edit(_ee_text(vectors)).encode(), 4)
    assert info.value.code == code, info.value


HOSTILE = [
    b'<?xml version="1.0"?><!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<c:conf xmlns:c="http://x-road.eu/xsd/xroad.xsd"><instanceIdentifier>&x;</instanceIdentifier></c:conf>',
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
    b"<conf>&lol2;</conf>",
    b"<c:conf xmlns:c='http://x-road.eu/xsd/xroad.xsd'><instanceIdentifier>EE</instanceIdentifier>",
    b"not xml at all",
    b"<a>" * 300 + b"</a>" * 300,
]


@pytest.mark.parametrize("data", HOSTILE, ids=["xxe", "billion-laughs", "truncated", "garbage", "too-deep"])
def test_hostile_xml_refused(data: bytes) -> None:
    for parse in (parse_shared_params, parse_private_params):
        with pytest.raises(GlobalConfError) as info:
            parse(data, 6)
        assert info.value.code == "gconf.malformed"


def test_dtd_cannot_sneak_past_the_schema(vectors: Path) -> None:
    # A DOCTYPE with default attributes could otherwise supply content the schema would see.
    text = _ee_text(vectors).replace('<?xml version="1.0" encoding="UTF-8"?>',
                                     '<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE tns:conf []>', 1)
    with pytest.raises(GlobalConfError) as info:
        parse_shared_params(text.encode(), 4)
    assert info.value.code == "gconf.malformed"


def test_wrong_root_and_version(vectors: Path) -> None:
    with pytest.raises(GlobalConfError) as info:
        parse_shared_params(b"<conf/>", 4)
    assert info.value.code == "gconf.schema_invalid"
    for version in (1, 7):
        with pytest.raises(GlobalConfError) as info:
            parse_shared_params(_ee_text(vectors).encode(), version)
        assert info.value.code == "gconf.unsupported_version"


def test_no_network_during_validation(vectors: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # xsi:schemaLocation pointing to the web is ignored; schemas come from the package only.
    text = _ee_text(vectors).replace('xsi:schemaLocation="http://x-road.eu/xsd/xroad.xsd"',
                                     'xsi:schemaLocation="http://x-road.eu/xsd/xroad.xsd '
                                     'http://203.0.113.1/evil.xsd"')
    globalconf_schema.cache_clear()

    def no_socket(*_a: object, **_k: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", no_socket)
    monkeypatch.setattr(socket, "create_connection", no_socket)
    assert parse_shared_params(text.encode(), 4).instance == "EE"


def test_schema_loader_refuses_unknown_names() -> None:
    for name in ("v7/shared-parameters.xsd", "common/shared-parameters.xsd", "../hashchain.xsd"):
        with pytest.raises(GlobalConfError) as info:
            globalconf_schema(name)
        assert info.value.code == "gconf.schema_load"


def test_build_output_is_v6_valid_and_deterministic(vectors: Path) -> None:
    sp = _shared(vectors, V6_DIR, 6)
    built = build_shared_params(sp)
    assert built == build_shared_params(sp)
    root = parse_xml(built)
    assert globalconf_schema("v6/shared-parameters.xsd").validate(root)
    assert parse_shared_params(built, 6) == sp


def test_build_refuses_inconsistent_models(vectors: Path) -> None:
    sp = _shared(vectors, V6_DIR, 6)
    stranger = ClientId("DEV", "COM", "9999")
    bad_owner = dataclasses.replace(sp, servers=(dataclasses.replace(sp.servers[0], owner=stranger),))
    bad_client = dataclasses.replace(sp, servers=(dataclasses.replace(sp.servers[0], clients=(stranger,)),))
    sha1 = dataclasses.replace(sp, servers=(dataclasses.replace(sp.servers[0], auth_cert_hash_algorithm=SHA1),))
    bad_cost = dataclasses.replace(sp, tsas=(dataclasses.replace(sp.tsas[0], cost_type="CHEAP"),))
    ca: ApprovedCa = sp.cas[0]
    bad_ocsp = dataclasses.replace(sp, cas=(dataclasses.replace(
        ca, top_ca_ocsp=(OcspInfo("http://x", None, "MAYBE"),)),))
    for model, code in ((bad_owner, "gconf.invalid_reference"), (bad_client, "gconf.invalid_reference"),
                        (sha1, "gconf.invalid"), (bad_cost, "gconf.invalid"), (bad_ocsp, "gconf.invalid"),
                        (dataclasses.replace(sp, sources=()), "gconf.invalid")):
        with pytest.raises(GlobalConfError) as info:
            build_shared_params(model)
        assert info.value.code == code


def test_private_params_extra_elements_survive(vectors: Path) -> None:
    text = (vectors / V6_DIR / "private-params.xml").read_text()
    text = text.replace("</ns3:conf>", '<future xmlns="urn:x"><a>1</a>\n  <b/></future>\n</ns3:conf>')
    pp = parse_private_params(text.encode(), 6)
    assert len(pp.extra) == 1 and b"<a>1</a>" in pp.extra[0]
    again = parse_private_params(build_private_params(pp), 6)
    assert again == pp


def test_server_model_helpers() -> None:
    s = SecurityServer(ClientId("I", "C", "M"), "S1", "ss1", (), SHA256, (ClientId("I", "C", "M", "sub"),))
    assert s.server_id() == "I/C/M/S1"
    assert s.hosts(ClientId("I", "C", "M")) and s.hosts(ClientId("I", "C", "M", "sub"))
    assert not s.hosts(ClientId("I", "C", "X"))


def test_server_model_normalises() -> None:
    owner = ClientId("I", "C", "M")
    for alias, name in (("http://www.w3.org/2001/04/xmlenc#sha256", SHA256), ("sha256", SHA256),
                        ("SHA-1", SHA1), ("http://www.w3.org/2000/09/xmldsig#sha1", SHA1)):
        assert SecurityServer(owner, "S", None, (), alias).auth_cert_hash_algorithm == name
    with pytest.raises(GlobalConfError) as info:
        SecurityServer(owner, "S", None, (), "MD5")
    assert info.value.code == "gconf.invalid"
    s = SecurityServer(owner, "S", None, (), SHA256, maintenance_message="later")
    assert s.in_maintenance is True
