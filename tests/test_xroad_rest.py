"""X-Road Message Protocol for REST: parsing, filtering, the header part byte-exact against
X-Road's own message.xml files, the request hash, responses and errors."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import zipfile
from pathlib import Path

import pytest

from protocols.xroad import rest
from protocols.xroad.faults import XRoadFault
from protocols.xroad.ids import ClientId, RepresentedParty, SecurityServerId, ServiceId

VECTORS = Path(__file__).parent / "vectors" / "xroad"
REQUEST_XML = VECTORS / "signatures" / "non-batch-sig" / "message.xml"
REQUEST_BODY = VECTORS / "signatures" / "non-batch-sig" / "attachment1"
REQUEST_SIG = VECTORS / "signatures" / "non-batch-sig" / "signatures.xml"
RESPONSE_ASICE = VECTORS / "asic" / "verifier" / "valid-non-batch-rest.asice"

# The headers the information system sent, as recovered from the vector plus the ones X-Road
# filters out (Host, User-Agent, Content-Length, Connection), in an arbitrary position.
CLIENT_HEADERS = [
    ("Host", "localhost:8080"),
    ("X-Road-Force-Legacy-Transport", "true"),
    ("X-Road-Client", "DEV/COM/4321/TestClient"),
    ("X-Road-Force-Policy-Reevaluation", "true"),
    ("Content-Type", "application/json"),
    ("User-Agent", "PostmanRuntime/7.39.0"),
    ("Accept", "*/*"),
    ("Postman-Token", "81b4e8fa-6ec6-4a5f-9ee5-991567624ba1"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Connection", "keep-alive"),
    ("Content-Length", "14"),
]


def _response_xml() -> bytes:
    with zipfile.ZipFile(RESPONSE_ASICE) as z:
        return z.read("message.xml")


def _sha512(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()


def _signed_digest(signatures_xml: bytes, uri: str) -> bytes:
    m = re.search(rb'URI="' + re.escape(uri.encode()) + rb'">.*?<ds:DigestValue>([^<]+)</ds:DigestValue>',
                  signatures_xml, re.S)
    assert m is not None
    return base64.b64decode(m.group(1))


# --------------------------------------------------------------------------- requests


def test_client_request_serialises_byte_exact_as_xroad() -> None:
    req = rest.client_request("POST", "/r1/DEV/COM/1234/TestService/mock1", None, CLIENT_HEADERS,
                              x_request_id="9bb842bb-9256-429b-8e9d-278c7b94f8f1", instance="DEV",
                              id_factory=lambda: "7012d0aa-a51d-4200-94ed-1e68f43bccfc")
    assert req.serialize() == REQUEST_XML.read_bytes()
    assert req.client == ClientId("DEV", "COM", "4321", "TestClient")
    assert req.service == ServiceId("DEV", "COM", "1234", "TestService", "mock1")
    assert req.service_path == ""
    assert req.query_id == "DEV-7012d0aa-a51d-4200-94ed-1e68f43bccfc"
    assert req.x_request_id == "9bb842bb-9256-429b-8e9d-278c7b94f8f1"
    names = [n.lower() for n, _ in req.headers]
    assert not set(names) & rest.SKIPPED_HEADERS
    assert names[-2:] == ["x-road-request-id", "x-road-id"]


def test_header_part_digest_is_what_xroad_signed() -> None:
    raw = REQUEST_XML.read_bytes()
    parsed = rest.parse_rest_request(raw)
    assert parsed.serialize() == raw
    sig = REQUEST_SIG.read_bytes()
    assert parsed.digest() == _signed_digest(sig, "/message.xml")
    assert _sha512(REQUEST_BODY.read_bytes()) == _signed_digest(sig, "/attachment1")


def test_parse_request_fields_and_query() -> None:
    raw = (b"GET\r\n/r1/EE/GOV/70000310/DEV/getRandom/v1/x%2Fy?a=1&b=%20\r\n"
           b"X-Road-Client:EE/COM/1234/Sub\r\nX-Road-Client:EE/COM/5678\r\n"
           b"X-Road-UserId:EE12345678901\r\nX-Road-Issue:  MT-1\r\n"
           b"X-Road-Security-Server:EE/GOV/70000310/ss1\r\nX-Road-Represented-Party:COM/999\r\n"
           b"x-road-request-id:r1\r\nx-road-id:q1\r\n")
    req = rest.parse_rest_request(raw)
    assert req.verb == "GET"
    assert req.path == "/r1/EE/GOV/70000310/DEV/getRandom/v1/x%2Fy"
    assert req.query == "a=1&b=%20"
    assert req.service_path == "/v1/x%2Fy"
    assert req.client == ClientId("EE", "COM", "5678")  # the last X-Road-Client wins
    assert req.user_id == "EE12345678901"
    assert req.issue == "  MT-1"  # value kept exactly as after the colon
    assert req.security_server == SecurityServerId("EE", "GOV", "70000310", "ss1")
    assert req.represented_party == RepresentedParty("999", "COM")
    assert (req.query_id, req.x_request_id) == ("q1", "r1")
    assert req.serialize() == raw
    assert req.filtered() == (b"GET\r\n/r1/EE/GOV/70000310/DEV/getRandom\r\n"
                              + b"".join(line + b"\r\n" for line in raw.split(b"\r\n")[2:-1]))


def test_bare_lf_and_cr_lines_are_read_as_java_does() -> None:
    raw = b"GET\n/r1/EE/GOV/1/DEV/svc?x\rX-Road-Client:EE/COM/1\nAccept:*/*"
    req = rest.parse_rest_request(raw)
    assert req.query == "x"
    assert req.headers == (("X-Road-Client", "EE/COM/1"), ("Accept", "*/*"))
    assert req.serialize() == b"GET\r\n/r1/EE/GOV/1/DEV/svc?x\r\nX-Road-Client:EE/COM/1\r\nAccept:*/*\r\n"


def test_client_request_keeps_given_id_and_filters() -> None:
    headers = [("x-road-client", "EE/COM/1"), ("X-Road-Id", "first"), ("X-Road-Id", "mine"),
               ("X-Road-Request-Id", "forged"), ("X-Road-Request-Hash", "forged"), ("TE", "trailers"),
               ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"), ("Keep-Alive", "5"), ("Expect", "100-continue"),
               ("Proxy-Authorization", "x"), ("Proxy-Authenticate", "x"), ("Trailer", "x"), ("Server", "x"),
               ("X-Custom", "v")]
    req = rest.client_request("DELETE", "/r1/EE/GOV/1/DEV/svc/items/7", "force=1", headers, x_request_id="rid",
                              instance="EE")
    assert req.query_id == "mine"
    assert req.headers == (("x-road-client", "EE/COM/1"), ("X-Road-Id", "first"), ("X-Road-Id", "mine"),
                           ("X-Custom", "v"), ("x-road-request-id", "rid"))
    assert req.target == "/r1/EE/GOV/1/DEV/svc/items/7?force=1"


def test_generated_id_is_instance_and_uuid() -> None:
    req = rest.client_request("GET", "/r1/EE/GOV/1/DEV/svc", None, [("X-Road-Client", "EE/COM/1")],
                              x_request_id="rid", instance="EE")
    assert req.query_id is not None
    assert re.fullmatch(r"EE-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", req.query_id)
    assert req.headers[-1] == ("x-road-id", req.query_id)


def _fault(exc: pytest.ExceptionInfo[XRoadFault]) -> str:
    return exc.value.faultcode()


@pytest.mark.parametrize(("method", "path", "headers", "code"), [
    ("GET", "/r1/EE/GOV/1/DEV/svc", [], "InvalidClientIdentifier"),
    ("GET", "/r1/EE/GOV/1/DEV/svc", [("X-Road-Client", "EE/COM")], "InternalError"),
    ("GET", "/r1/EE/GOV/1/DEV/svc", [("X-Road-Client", "EE/COM/1/a/b")], "InternalError"),
    ("GET", "/r1/EE/GOV/1/DEV/svc", [("X-Road-Client", "EE/COM/%ZZ")], "InternalError"),
    ("GET", "/r1/EE/GOV/1/DEV/svc", [("X-Road-Client", "EE/COM/a%3Bb")], "InvalidClientIdentifier"),
    ("GET", "/r2/EE/GOV/1/DEV/svc", [("X-Road-Client", "EE/COM/1")], "InternalError"),
    ("GET", "/r1/EE/GOV/1/svc", [("X-Road-Client", "EE/COM/1")], "InternalError"),
    ("CONNECT", "/r1/EE/GOV/1/DEV/svc", [("X-Road-Client", "EE/COM/1")], "InternalError"),
    ("get", "/r1/EE/GOV/1/DEV/svc", [("X-Road-Client", "EE/COM/1")], "InternalError"),
    ("GET", "/r1/EE/GOV/1/DEV/svc", [("X-Road-Client", "EE/COM/1"), ("X-Evil", "a\r\nX-Road-Client:EE/COM/2")],
     "InternalError"),
    ("GET", "/r1/EE/GOV/1/DEV/svc x", [("X-Road-Client", "EE/COM/1")], "InternalError"),
    ("GET", "/r1/EE/GOV/1/DEV/svc", [("X-Road-Client", "EE/COM/1"), ("X-Road-Security-Server", "EE/GOV/1")],
     "InternalError"),
    ("GET", "/r1/EE/GOV/1/DEV/svc", [("X-Road-Client", "EE/COM/1"), ("X-Road-Represented-Party", "a/b/c")],
     "InternalError"),
])
def test_bad_client_requests(method: str, path: str, headers: list[tuple[str, str]], code: str) -> None:
    with pytest.raises(XRoadFault) as exc:
        rest.client_request(method, path, None, headers, x_request_id="rid", instance="EE")
    assert _fault(exc) == code


@pytest.mark.parametrize("raw", [
    b"", b"GET\r\n", b"FOO\r\n/r1/EE/GOV/1/DEV/svc\r\n", b"GET\r\nhttp://h/r1/EE/GOV/1/DEV/svc\r\n",
    b"GET\r\n/r1/EE/GOV/1/DEV/svc\r\nno-colon\r\n", b"GET\r\n/r1/EE/GOV/1/DEV/svc\r\nHost:x\r\n",
    b"GET\r\n/r1/EE/GOV/1/DEV/svc\r\nA:b\r\n\r\nB:c\r\n",
])
def test_bad_serialised_requests(raw: bytes) -> None:
    with pytest.raises(XRoadFault) as exc:
        rest.parse_rest_message(raw)
    assert _fault(exc) == "InternalError"


# --------------------------------------------------------------------------- request hash


def test_request_hash_with_and_without_body() -> None:
    raw = REQUEST_XML.read_bytes()
    req = rest.parse_rest_request(raw)
    body = REQUEST_BODY.read_bytes()
    # independent recomputation: SHA-512(SHA-512(header part) || SHA-512(body))
    expected = hashlib.new("sha512", hashlib.new("sha512", raw).digest() + hashlib.new("sha512", body).digest())
    assert rest.compute_request_hash(req, _sha512(body)) == expected.digest()
    assert rest.compute_request_hash(req, None) == hashlib.new("sha512", raw).digest()
    assert rest.compute_request_hash(req.digest(), None) == rest.compute_request_hash(req, None)


# --------------------------------------------------------------------------- responses


def test_response_vector_round_trips_byte_exact() -> None:
    raw = _response_xml()
    resp = rest.parse_rest_response(raw)
    assert resp.serialize() == raw
    assert (resp.status, resp.reason) == (200, "OK")
    assert resp.client == ClientId("DEV", "COM", "4422", "TestClient")
    assert resp.service == ServiceId("DEV", "COM", "1234", "TestService", "mock1")
    assert resp.query_id == "DEV-d75ea6fd-d24b-48ec-a320-53675c40fb86"
    assert resp.x_request_id == "78b890f3-b1eb-45b2-a512-beec5d7ead23"
    assert resp.request_hash_b64 == ("7zmQ9CwnVrEWzWnCyXbXkQYGR+A7/i6e61JgWMLaEI8Bj1QWdrUVGijBBdyDdhcgOpfY8Sid1Rh"
                                     "vRbs+aFbOhw==")
    assert not resp.is_error
    assert isinstance(rest.parse_rest_message(raw), rest.RestResponse)


def test_build_response_reproduces_xroad_layout() -> None:
    """Rebuild the vector's response from the request it implies and the service's headers."""
    raw = _response_xml()
    vec = rest.parse_rest_response(raw)
    request = rest.client_request("POST", "/r1/DEV/COM/1234/TestService/mock1", None,
                                  [("X-Road-Client", "DEV/COM/4422/TestClient"),
                                   ("X-Road-Id", "DEV-d75ea6fd-d24b-48ec-a320-53675c40fb86")],
                                  x_request_id="78b890f3-b1eb-45b2-a512-beec5d7ead23")
    service_headers = [("Content-Type", "application/json"), ("mock-response", "true"),
                       ("Matched-Stub-Id", "ef2dae0e-5673-46f1-80f9-f07177c7ce6a"), ("Content-Length", "17"),
                       ("Server", "Jetty"), ("Transfer-Encoding", "chunked"), ("X-Road-Request-Hash", "forged"),
                       ("x-road-id", "forged"), ("X-Road-Client", "forged"), ("X-Road-Request-Id", "forged")]
    built = rest.build_response(request, 200, "OK", service_headers, request_hash=vec.request_hash,
                                x_request_id="78b890f3-b1eb-45b2-a512-beec5d7ead23")
    assert built.serialize() == raw
    assert rest.parse_rest_response(built.serialize()) == built


def test_response_identifier_escaping_as_guava() -> None:
    assert rest.encode_identifier(["EE", "GOV", "a b/c(1)ä:@"]) == "EE/GOV/a%20b%2Fc(1)%C3%A4:@"


def test_check_response_consistency() -> None:
    req = rest.parse_rest_request(REQUEST_XML.read_bytes())
    body_digest = _sha512(REQUEST_BODY.read_bytes())
    good = rest.build_response(req, 201, "Created", [("Content-Type", "text/plain")],
                               request_hash=rest.compute_request_hash(req, body_digest),
                               x_request_id=req.x_request_id or "")
    rest.check_response(req, good, body_digest)
    with pytest.raises(XRoadFault) as exc:
        rest.check_response(req, good, None)  # hash over header part only: mismatch
    assert _fault(exc) == "InconsistentResponse"
    other = rest.build_response(req, 200, "OK", [], request_hash=good.request_hash, x_request_id="other")
    with pytest.raises(XRoadFault, match="request id"):
        rest.check_response(req, other, body_digest)


@pytest.mark.parametrize("raw", [
    b"200\r\nOK\r\nx-road-id:q\r\n",  # no request hash
    b"200\r\nOK\r\nx-road-request-hash:AAAA\r\n",  # no id
    b"abc\r\nOK\r\nx-road-id:q\r\nx-road-request-hash:AAAA\r\n",
    b"200\r\nOK\r\nx-road-id:q\r\nx-road-request-hash:!!\r\n",
    b"200\r\nOK\r\nx-road-id:q\r\nx-road-request-hash:AAAA\r\nx-road-service:EE/GOV/1/svc\r\n",
])
def test_bad_responses(raw: bytes) -> None:
    with pytest.raises(XRoadFault) as exc:
        rest.parse_rest_response(raw)
    assert _fault(exc) == "InternalError"


def test_errors_as_rest() -> None:
    fault = XRoadFault("InvalidClientIdentifier", "The client identifier is missing", prefix=("Server", "ClientProxy"))
    err = fault.to_rest(rest.accept_values([("Accept", "application/json")]))
    assert err.status == 500
    assert err.headers["X-Road-Error"] == "Server.ClientProxy.InvalidClientIdentifier"
    assert json.loads(err.body)["type"] == "Server.ClientProxy.InvalidClientIdentifier"
    xml_err = fault.to_rest(rest.accept_values([("accept", "text/*;q=0.5")]))
    assert xml_err.content_type.startswith("text/xml")


def test_is_rest_path() -> None:
    assert rest.is_rest_path("/r1/EE/GOV/1/DEV/svc")
    assert not rest.is_rest_path("/r2/EE") and not rest.is_rest_path("/")


def test_with_query_id_refuses_second() -> None:
    req = rest.parse_rest_request(REQUEST_XML.read_bytes())
    with pytest.raises(ValueError):
        req.with_query_id("x")
    assert req.serialize() == REQUEST_XML.read_bytes()
