"""X-Road's SOAP conformance cases (``tests/vectors/xroad/soap-messages/expectations.json``) through
our two gateways in the sandbox: an information system POSTs to the consumer's client port, the
consumer signs and sends over mutual TLS, the provider verifies, checks access, calls the service
and signs the answer.  Each case must give exactly the outcome the file states (faults in X-Road
7.7's dialect, the gateways' default).

How the upstream suite maps onto the sandbox:

* identifiers: ``EE/BUSINESS/consumer`` → the consumer's client ``VN-TEST/GOV/000.00.00.H41/edoc``,
  ``EE/BUSINESS/producer[/SUB]`` → the provider's client ``VN-TEST/GOV/000.00.00.G22/example``
  (a member client becomes the subsystem, as the sandbox registers only subsystems); every
  ``<xroad:id>`` of the request and of the service's answer becomes the same fresh 32-hex id;
* the service: ``tests/conformance_backend.py`` behind the provider answers what the case says
  (file, content type, status, or a broken connection) and reports what it received;
* the provider's configuration (its ``gateway.yaml`` from ``sandbox.json``) gets the cases'
  services (``getState``, ``test``, ``testQuery``, ``generateMtom``) on that backend, allowed to the
  consumer's client; the preconditions of NotAllowed, UnknownService, ServiceDisabled and
  InvalidServiceAddress[2] are set on a service of their own (the case's service code with a
  suffix, in the header and as the body element); the provider is restarted with it;
* "dummy server proxy" cases: the provider is stopped and the backend answers on its address and
  port 5500 (TLS with the provider's authentication key), unsigned;
* ``server_proxy`` targets: POSTed over mutual TLS (the consumer's authentication key) to the
  provider's port 5500;
* global configuration preconditions (maintenance mode, a provider on several security servers, the
  provider's server registered with another server's or an unknown authentication certificate):
  the central's ``federation.yaml`` is edited, a generation is published at once (``central
  generate``) and the case runs when the consumer has installed it (the consumer's download
  interval is 1 s here); the original federation is restored after the group;
* information-system authentication (``SslClientAuth*``): the consumer's client gets ``connection:
  https-auth`` and the case's ``is_certs`` (certificates made here), the consumer is restarted and
  the case is sent to its HTTPS client port with the case's client certificate; the consumer's
  original configuration is restored after the group.

* signing that fails (``SigningFails*``): the member's signing key is destroyed on the gateway's
  token while it runs (the provider's before the groups that stop it, the consumer's last);

* HTTPS services (``SslToService*``): the case's service on the backend's HTTPS port, its
  certificate pinned through the provider client's ``is_certs`` (or CA-verified, see
  ``TestHttpsServices``); the provider is restarted with it and restored after the group.

``NEEDS_CONFIGURATION`` would list the cases the sandbox cannot set up (and why): none.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import ipaddress
import json
import re
import secrets
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from lxml import etree

from gateway import sandbox as sb
from tests.test_relay_e2e import sandbox_down, sandbox_up

HERE = Path(__file__).resolve().parent
SOAP_DIR = HERE / "vectors" / "xroad" / "soap-messages"
EXPECT = json.loads((SOAP_DIR / "expectations.json").read_text())
CASES: dict[str, dict[str, Any]] = {c["id"]: c for c in EXPECT["cases"]}
GW = [sys.executable, "-m", "gateway"]
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
XROAD_NS = "http://x-road.eu/xsd/xroad.xsd"
ID_NS = "http://x-road.eu/xsd/identifiers"
CONSUMER_CLIENT = "VN-TEST/GOV/000.00.00.H41/edoc"
PROVIDER_CLIENT = "VN-TEST/GOV/000.00.00.G22/example"
DIGESTS = {"http://www.w3.org/2001/04/xmlenc#sha512": "sha512", "http://www.w3.org/2001/04/xmlenc#sha256": "sha256"}
BIG_ATTACHMENT = 32 * 1024 * 1024  # AttachmentBig: 650 MB upstream; 32 MiB keeps the module near a minute
CLIENT_TIMEOUT = 20.0  # seconds an information system waits for an answer here
#: faults whose code and detail come from a fault the information system or the service sent
RELAYED = {"SoapFaultToClientProxy", "ServiceReturnsFault", "ServiceFaultyFault"}

#: case → (service code in the request, the service's code here): a precondition on a service of its own
RENAMED = {
    "NotAllowed": ("test", "testNotAllowed"),
    "UnknownService": ("getState", "getStateUnknown"),
    "ServiceDisabled": ("getState", "getStateDisabled"),
    "InvalidServiceAddress": ("getState", "getStateBadHost"),
    "InvalidServiceAddress2": ("test", "testBadHost"),
}
#: case → the provider's subsystem in the request, when it is not the sandbox's
PROVIDER_SUBSYSTEM = {"InvalidProviderAddress3": b"noaddress"}  # a provider no security server hosts
BAD_HOST_URL = "http://non.existing.site.com.pom/service"

#: cases whose preconditions the sandbox cannot set up: what they would need
NEEDS_CONFIGURATION: dict[str, str] = {}  # every case runs

SERVER_PROXY_TARGET = sorted(k for k, c in CASES.items() if c["request"].get("target") == "server_proxy")
DUMMY_SERVER_PROXY = sorted(k for k, c in CASES.items() if ("server_proxy" in c and k.startswith("ServerProxy"))
                            or k in ("InvalidContentTypeFromServerProxy", "UnsignedMessageFromServerProxy"))
NO_SERVER_PROXY = ["ProxyTests.serverProxyConnectionRefused"]
HTTPS_CLIENT = ["SslNormalMessage"]
#: cases whose precondition is an edit of the federation (global configuration)
FEDERATION = ["ServerProxyMaintenanceMode", "SslSelectFastestProxy", "SslSelectFastestProxyNoConnections",
              "SslAuthCertNotMatchesOrg", "SslClientCertVerificationError", "SslAuthTrustManagerError"]
#: cases of information-system authentication (the consumer's client with connection https-auth)
IS_AUTHENTICATION = ["SslClientAuth", "SslClientAuthWrongISCert", "SslClientAuthExpiredISCert",
                     "SslClientAuthNoISCert", "SslClientCipherSuiteSetupError"]
#: cases of HTTPS services behind the provider (the service's TLS certificate pinned or CA-verified)
HTTPS_SERVICE = ["SslToServiceAuth", "SslToServiceNoAuth", "SslToServiceNoISCerts", "SslToServiceWrongISCert"]
#: cases whose gateway's signing key is destroyed on its token (run last for each gateway)
SIGNING_FAILS = ["SigningFailsInServerProxy", "SigningFailsInClientProxy"]
CLIENT_PORT = sorted(set(CASES) - set(NEEDS_CONFIGURATION) - set(SERVER_PROXY_TARGET) - set(DUMMY_SERVER_PROXY)
                     - set(NO_SERVER_PROXY) - set(HTTPS_CLIENT) - set(FEDERATION) - set(IS_AUTHENTICATION)
                     - set(SIGNING_FAILS) - set(HTTPS_SERVICE))
MAINTENANCE_MESSAGE = "Maintenance mode is on"


def test_every_case_is_run_or_named() -> None:
    groups = [CLIENT_PORT, SERVER_PROXY_TARGET, DUMMY_SERVER_PROXY, NO_SERVER_PROXY, HTTPS_CLIENT, FEDERATION,
              IS_AUTHENTICATION, SIGNING_FAILS, HTTPS_SERVICE, sorted(NEEDS_CONFIGURATION)]
    assert sum(len(g) for g in groups) == len(CASES) == 101
    assert set().union(*map(set, groups)) == set(CASES)
    assert len(DUMMY_SERVER_PROXY) == 11
    assert len(NEEDS_CONFIGURATION) == 0


# --------------------------------------------------------------------------- the case's messages


def _rewrite_id_block(block: bytes, *, client: bool, rename: tuple[str, str] | None,
                      subsystem: bytes = b"example") -> bytes:
    block = re.sub(rb"(<(?:[\w.-]+:)?xRoadInstance>)EE(</)", rb"\1VN-TEST\2", block)
    block = re.sub(rb"(<(?:[\w.-]+:)?memberClass>)BUSINESS(</)", rb"\1GOV\2", block)
    ours = b"000.00.00.H41" if client else b"000.00.00.G22"
    sub = b"edoc" if client else subsystem
    theirs = b"consumer" if client else b"producer"
    m = re.search(rb"<((?:[\w.-]+:)?)memberCode>" + theirs + rb"</\1memberCode>", block)
    if m is None:
        return block
    prefix = m.group(1)
    block = block[:m.start()] + b"<" + prefix + b"memberCode>" + ours + b"</" + prefix + b"memberCode>" + \
        block[m.end():]
    if re.search(rb"<(?:[\w.-]+:)?subsystemCode>", block):
        block = re.sub(rb"(<(?:[\w.-]+:)?subsystemCode>)[^<]*(</)", rb"\1" + sub + rb"\2", block)
    else:
        end = block.index(b"memberCode>", block.index(b"</" + prefix + b"memberCode>")) + len(b"memberCode>")
        block = block[:end] + b"<" + prefix + b"subsystemCode>" + sub + b"</" + prefix + b"subsystemCode>" + \
            block[end:]
        if client:
            block = block.replace(b'objectType="MEMBER"', b'objectType="SUBSYSTEM"', 1)
    if rename is not None and not client:
        block = re.sub(rb"(serviceCode>)" + re.escape(rename[0].encode()) + rb"(</)",
                       rb"\1" + rename[1].encode() + rb"\2", block)
    return block


def adapt(data: bytes, qid: str, rename: tuple[str, str] | None = None, subsystem: bytes = b"example") -> bytes:
    """The vector's message with the sandbox's identifiers and the case's fresh id."""
    def blocks(match: re.Match[bytes]) -> bytes:
        return _rewrite_id_block(match.group(0), client=match.group(2) == b"client", rename=rename,
                                 subsystem=subsystem)

    out = re.sub(rb"<((?:[\w.-]+:)?)(client|service)[\s>].*?</\1\2>", blocks, data, flags=re.S)
    out = re.sub(rb"(<((?:[\w.-]+:)?)id>)[^<]*(</\2id>)", lambda m: m.group(1) + qid.encode() + m.group(3), out)
    if rename is not None and rename[0] != rename[1]:
        body = out.find(b"Body>")
        old, new = rename[0].encode(), rename[1].encode()
        out = out[:body] + re.sub(rb"(</?(?:[\w.-]+:)?)" + old + rb"([\s/>])", rb"\1" + new + rb"\2",
                                  out[body:], count=2)
    return out


@dataclass
class Case:
    id: str
    qid: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def spec(self) -> dict[str, Any]:
        return CASES[self.id]

    def request(self) -> tuple[bytes, str | None]:
        req = self.spec["request"]
        if self.id == "AttachmentBig":
            soap = adapt((SOAP_DIR / "getstate.query").read_bytes(), self.qid)
            return soap, "multipart/related; charset=UTF-8; boundary=bigboundary"
        if req["file"] is None:
            return b"", req["content_type"]
        data = adapt((SOAP_DIR / req["file"]).read_bytes(), self.qid, RENAMED.get(self.id),
                     PROVIDER_SUBSYSTEM.get(self.id, b"example"))
        return (b"\xef\xbb\xbf" + data if req.get("utf8_bom") else data), req["content_type"]

    def service_answer(self) -> dict[str, Any]:
        """What the backend is told to answer."""
        svc = self.spec.get("service", {})
        behaviour = svc.get("behaviour", "")
        if behaviour.startswith("HTTP 502"):
            return {"status": 502, "content_type": "text/html", "action": "reply",
                    "body": base64.b64encode(b"<html><body><h1>502 Bad Gateway</h1></body></html>").decode()}
        if behaviour.startswith("sets Content-Length 1000"):
            return {"status": 200, "content_type": None, "action": "truncated", "body": ""}
        if "response_file" not in svc:
            return {"status": 200, "content_type": "text/xml; charset=UTF-8", "action": "reply", "body": ""}
        data = adapt((SOAP_DIR / svc["response_file"]).read_bytes(), self.qid)
        if svc.get("utf8_bom"):
            data = b"\xef\xbb\xbf" + data
        return {"status": svc.get("http_status", 200), "content_type": svc["content_type"], "action": "reply",
                "body": base64.b64encode(data).decode()}

    def dummy_server_proxy_answer(self) -> dict[str, Any]:
        """The dummy server proxy's behaviour, from the case's description."""
        if self.id == "ServerProxyConnectionAborted":
            return {"action": "reset"}
        text = self.spec["server_proxy"].split(": ", 1)[1]
        if text == "HTTP 502":
            return {"status": 502, "content_type": "text/html", "action": "reply",
                    "body": base64.b64encode(b"<html>502</html>").decode()}
        if "Content-Length 1000" in text:
            ctype = text.split("Content-Type ", 1)[1].split(", Content-Length")[0]
            return {"status": 200, "content_type": ctype, "action": "truncated"}
        if text.startswith("Content-Type multipart/mixed without boundary"):
            return {"status": 200, "content_type": "multipart/mixed", "action": "reply", "body": ""}
        m = re.match(r"(\S+) with (?:Content-Type )?(.+)$", text)
        assert m is not None, text
        name, ctype = m.group(1), m.group(2).strip('"') if m.group(2) == '"oih"' else m.group(2)
        data = adapt((SOAP_DIR / name).read_bytes(), self.qid)
        return {"status": 200, "content_type": ctype, "action": "reply", "body": base64.b64encode(data).decode()}


# --------------------------------------------------------------------------- the sandbox and the backend


@dataclass
class World:
    data: dict[str, Any]
    dir: Path
    backend: str  # http://host:port/
    provider: subprocess.Popen[bytes] | None
    procs: list[subprocess.Popen[bytes]]
    services: list[dict[str, Any]]
    access: list[str]
    consumer: subprocess.Popen[bytes] | None = None
    consumer_config: str = ""  # the consumer's gateway.yaml as the cases other than IS_AUTHENTICATION want it
    backend_https: str = ""  # the same backend over HTTPS (https://host:port/)
    service_cert: Path | None = None  # its certificate (self-signed, the host's IP address in its SAN)
    provider_config: str = ""  # the provider's gateway.yaml as the cases other than HTTPS_SERVICE want it

    def gateway(self, name: str) -> dict[str, Any]:
        return next(g for g in self.data["gateways"] if g["name"] == name)

    @property
    def consumer_url(self) -> str:
        return str(self.gateway(sb.CONSUMER)["client_http"])


def _wait(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready within {timeout:.0f} s")
        time.sleep(0.05)


def _control(url: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(spec).encode() if spec is not None else None,
                                 method="POST" if spec is not None else "GET")
    with urllib.request.urlopen(req, timeout=10) as r:
        out: dict[str, Any] = json.loads(r.read())
        return out


def _provider_services(backend: str) -> tuple[list[dict[str, Any]], list[str]]:
    svc = f"{backend}svc"
    services: list[dict[str, Any]] = [
        {"code": code, "type": "soap", "url": svc} for code in ("getState", "test", "testQuery", "generateMtom")
    ] + [
        {"code": "testNotAllowed", "type": "soap", "url": svc},
        {"code": "getStateDisabled", "type": "soap", "url": svc, "disabled": True, "notice": "Service is disabled"},
        {"code": "getStateBadHost", "type": "soap", "url": BAD_HOST_URL},
        {"code": "testBadHost", "type": "soap", "url": BAD_HOST_URL},
    ]
    allowed = ["getState", "test", "testQuery", "generateMtom", "getStateDisabled", "getStateBadHost", "testBadHost"]
    return services, allowed


def _start_gateway(world: World, name: str) -> subprocess.Popen[bytes]:
    """``run -c`` the gateway's ``gateway.yaml``; returns when it is healthy and its relay listens."""
    gw = world.gateway(name)
    log = open(world.dir / "logs" / f"{name}-conformance.log", "ab")
    env = {**sb._child_env(Path(gw["token"]["softhsm2_conf"]))}
    proc = subprocess.Popen([*GW, "run", "-c", gw["config"]], env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=world.dir, start_new_session=True)
    log.close()
    world.procs.append(proc)
    ports = [sb.SERVER_PORT, *(int(urllib.parse.urlsplit(gw[k]).port or 0) for k in ("client_http", "client_https"))]
    _wait(lambda: proc.poll() is None and sb.http_status(gw["health"]) == 200
          and all(sb.tcp_open(gw["address"], port) for port in ports), f"the {name} gateway")
    return proc


def _start_provider(world: World) -> None:
    world.provider = _start_gateway(world, sb.PROVIDER)


def _restart_consumer(world: World, config: str) -> None:
    """The consumer with ``config`` as its ``gateway.yaml``."""
    _stop(world.consumer)
    gw = world.gateway(sb.CONSUMER)
    _wait(lambda: not sb.tcp_open(gw["address"], sb.SERVER_PORT), "the consumer's port closing")
    Path(gw["config"]).write_text(config)
    world.consumer = _start_gateway(world, sb.CONSUMER)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    d = tmp_path_factory.mktemp("conformance") / "sb"
    data, net = sandbox_up(d)
    host = str(next(net.hosts()))
    port = sb.free_port(host, set())
    tls_port = sb.free_port(host, {port})
    service_key, service_cert = _service_cert(d, host)
    backend = subprocess.Popen([sys.executable, str(HERE / "conformance_backend.py"), "service", host, str(port),
                                str(tls_port), str(service_key), str(service_cert)],
                               stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
    w = World(data=data, dir=d, backend=f"http://{host}:{port}/", provider=None, procs=[backend], services=[],
              access=[], backend_https=f"https://{host}:{tls_port}/", service_cert=service_cert)
    try:
        _wait(lambda: sb.tcp_open(host, port) and sb.tcp_open(host, tls_port), "the conformance backend")
        gw = w.gateway(sb.PROVIDER)
        records = [p for p in data["processes"] if p["name"] in (sb.PROVIDER, sb.CONSUMER)]
        sb.stop_processes([(int(record["pid"]), record["started"]) for record in records])
        # The consumer downloads global configuration every second (10 s in the sandbox), so an edit of
        # the federation (FEDERATION) takes effect within a second or two of its publication.
        consumer = yaml.safe_load(Path(w.gateway(sb.CONSUMER)["config"]).read_text())
        consumer["globalconf"]["interval"] = "1s"
        w.consumer_config = yaml.safe_dump(consumer, allow_unicode=True, sort_keys=False)
        _restart_consumer(w, w.consumer_config)
        config = yaml.safe_load(Path(gw["config"]).read_text())
        config["globalconf"]["interval"] = "1s"  # as the consumer's
        client = next(c for c in config["clients"] if c["id"] == PROVIDER_CLIENT)
        w.services, w.access = _provider_services(w.backend)
        client["services"] = [*client["services"], *w.services]
        client["access"] = [{"subject": CONSUMER_CLIENT, "services": [*client["access"][0]["services"], *w.access]}]
        w.provider_config = yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
        Path(gw["config"]).write_text(w.provider_config)
        _start_provider(w)
        yield w
    finally:
        for proc in reversed(w.procs):
            _stop(proc)
        sandbox_down(d)


# --------------------------------------------------------------------------- calling and judging


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes

    def soap_part(self) -> bytes:
        m = re.search(r'boundary="?([^";]+)"?', self.content_type)
        if not self.content_type.lower().startswith("multipart/") or m is None:
            return self.body
        return _parts(self.body, m.group(1))[0][1]

    def envelope(self) -> etree._Element | None:
        try:
            return etree.fromstring(self.soap_part(), etree.XMLParser(resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError:
            return None

    def faultcode(self) -> str | None:
        root = self.envelope()
        if root is None:
            return None
        fault = root.find(f"{{{SOAP_NS}}}Body/{{{SOAP_NS}}}Fault")
        return None if fault is None else (fault.findtext("faultcode") or "").strip()

    def describe(self) -> str:
        code = self.faultcode()
        if code is not None:
            return f"fault {code}"
        root = self.envelope()
        if root is not None and root.tag == f"{{{SOAP_NS}}}Envelope":
            return "ok"
        return f"HTTP {self.status} {self.content_type!r} {self.body[:120]!r}"


def _parts(body: bytes, boundary: str) -> list[tuple[bytes, bytes]]:
    """(headers, content) of each part of a multipart body (CRLF or LF line ends)."""
    delimiter = b"--" + boundary.encode()
    out = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk[1:]
        sep = re.search(rb"\r?\n\r?\n", chunk)
        assert sep is not None
        content = chunk[sep.end():]
        content = content[:-2] if content.endswith(b"\r\n") else content[:-1] if content.endswith(b"\n") else content
        out.append((chunk[:sep.start()], content))
    return out


def send(url: str, body: bytes | Any, content_type: str | None, *, method: str = "POST",
         soap_action: str | None = None, context: ssl.SSLContext | None = None, length: int | None = None) -> Answer:
    u = urllib.parse.urlsplit(url)
    conn: http.client.HTTPConnection
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname or "", u.port, context=context, timeout=CLIENT_TIMEOUT)
    else:
        conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=CLIENT_TIMEOUT)
    headers = {"x-hash-algorithm": "SHA-512"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if soap_action is not None:
        headers["SOAPAction"] = soap_action
    if method == "POST":
        headers["Content-Length"] = str(length if length is not None else len(body))
    try:
        conn.request(method, u.path or "/", body=body if method == "POST" else None, headers=headers)
        r = conn.getresponse()
        return Answer(r.status, r.getheader("Content-Type", ""), r.read())
    except TimeoutError:
        return Answer(0, "", f"(no answer within {CLIENT_TIMEOUT:g} s)".encode())
    finally:
        conn.close()


def received(world: World) -> dict[str, Any]:
    return _control(f"{world.backend}_control/last")


def _header(root: etree._Element, name: str) -> etree._Element | None:
    return root.find(f"{{{SOAP_NS}}}Header/{{{XROAD_NS}}}{name}")


def _ids(root: etree._Element) -> tuple[str, str]:
    def flat(el: etree._Element | None) -> str:
        assert el is not None
        return "/".join((c.text or "").strip() for c in el if isinstance(c.tag, str))
    return flat(_header(root, "client")), flat(_header(root, "service"))


def assert_outcome(case: Case, answer: Answer) -> None:
    expect = case.spec["expect"]
    result = expect["result"]
    if result == "error":
        code = answer.faultcode()
        want = expect["code_7_7"]
        ok = code is not None and (code.startswith(want) if expect["match"] == "prefix" else code == want)
        assert ok, f"{case.id}: expected fault {want} ({expect['match']}), got {answer.describe()}"
        root = answer.envelope()
        assert root is not None
        if case.id not in RELAYED:  # an X-Road fault of ours (not the service's, relayed): a UUID in its detail
            detail = root.findtext(f".//{{{SOAP_NS}}}Fault/detail/faultDetail")
            assert detail and re.fullmatch(r"[0-9a-f-]{36}", detail.strip()), f"{case.id}: fault detail {detail!r}"
        return
    if result == "fault":
        assert answer.faultcode() is not None, f"{case.id}: expected a SOAP fault, got {answer.describe()}"
        assert b"<error>Unable to create payload, try increasing the size</error>" in answer.soap_part(), \
            f"{case.id}: the service's fault is not passed through: got {answer.describe()} {answer.body[:600]!r}"
        return
    assert answer.status == 200 and answer.describe() == "ok", \
        f"{case.id}: expected a SOAP response, got {answer.describe()}"


def assert_consistent(case: Case, request: bytes, answer: Answer, world: World) -> None:
    """The ``ok`` outcome in full: the response is the service's, for this request."""
    root = answer.envelope()
    assert root is not None
    assert (_header(root, "id").text or "").strip() == case.qid  # type: ignore[union-attr]
    req_root = etree.fromstring(Answer(200, case.request()[1] or "", request).soap_part())
    assert _ids(root) == _ids(req_root)
    rh = _header(root, "requestHash")
    assert rh is not None, f"{case.id}: no requestHash in the response"
    svc = case.spec.get("service", {})
    if "response_file" in svc:
        sent = Answer(200, svc["content_type"], base64.b64decode(case.service_answer()["body"]))
        sent_root = sent.envelope()
        assert sent_root is not None
        got_body = root.find(f"{{{SOAP_NS}}}Body")
        sent_body = sent_root.find(f"{{{SOAP_NS}}}Body")
        assert got_body is not None and sent_body is not None
        assert etree.tostring(got_body, method="c14n") == etree.tostring(sent_body, method="c14n")
        seen = received(world)
        if case.id != "NoWhitespaceMessage":  # upstream skips the service's check for this one
            seen_ct = dict((k.lower(), v) for k, v in seen["headers"]).get("content-type", "")
            seen_root = Answer(200, seen_ct, base64.b64decode(seen["body"])).envelope()
            assert seen_root is not None and _ids(seen_root) == _ids(req_root)
            assert (_header(seen_root, "id").text or "").strip() == case.qid  # type: ignore[union-attr]


def _digest_b64(rh: etree._Element, data: bytes) -> str:
    algorithm = DIGESTS[rh.get("algorithmId", "")]
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode()


def case_checks(case: Case, request: bytes, answer: Answer, world: World) -> None:
    """The ``checks`` of the case."""
    root = answer.envelope()
    assert root is not None
    seen = received(world) if "service" in case.spec else {}
    seen_headers = {k.lower(): v for k, v in seen.get("headers", [])}
    seen_body = base64.b64decode(seen.get("body", ""))
    seen_root = Answer(200, seen_headers.get("content-type", ""), seen_body).envelope() if seen else None
    if case.id == "Utf8BomNormalSubsystem":
        rh = _header(root, "requestHash")
        assert rh is not None and (rh.text or "").strip() == _digest_b64(rh, request)
    elif case.id == "Utf8BomAttachment2":
        rh = _header(root, "requestHash")
        start = request.index(b"\xef\xbb\xbf")
        end = request.index(b"\n--jetty771207119h3h10dty", start)
        assert rh is not None and (rh.text or "").strip() == _digest_b64(rh, request[start:end])
    elif case.id == "SoapActionEmptyHeader":
        assert seen_headers.get("soapaction") == ""
    elif case.id == "SoapActionHeader":
        assert seen_headers.get("soapaction") == '""'
    elif case.id == "CDATAMessage":
        for r in (seen_root, root):
            assert r is not None and r.findtext(f".//{{{XROAD_NS}}}xml") == "<a><b><c>12345678</c></b></a>"
    elif case.id == "XmlEncodedMessage":
        for r in (seen_root, root):
            assert r is not None and _header(r, "userId").text == "<\"EE37702211234\" & 'xml encoded'>"  # type: ignore[union-attr]
    elif case.id == "SplitHeaderMessage":
        for r in (seen_root, root):
            assert r is not None and _header(r, "issue").text == "w\naa\nww\n"  # type: ignore[union-attr]
    elif case.id == "CommentMessage":
        header = root.find(f"{{{SOAP_NS}}}Header")
        assert header is not None and len(header) and isinstance(header[0], etree._Comment)
        assert header[0].text == " multiline\n        comment "
    elif case.id in ("Attachment", "SeveralAttachments", "AttachmentMTOM", "AttachmentBig"):
        boundary = re.search(r'boundary="?([^";]+)"?', seen_headers.get("content-type", ""))
        assert boundary is not None, f"{case.id}: the service received {seen_headers.get('content-type')!r}"
        got = _parts(seen_body, boundary.group(1))
        sent_ct = case.request()[1] or ""
        sent_boundary = re.search(r'boundary="?([^";]+)"?', sent_ct)
        assert sent_boundary is not None
        if case.id == "AttachmentBig":
            assert len(got) == 2 and len(got[1][1]) == BIG_ATTACHMENT
            return
        sent = _parts(request, sent_boundary.group(1))
        assert len(got) == len(sent), f"{case.id}: {len(sent) - 1} attachments sent, {len(got) - 1} received"
        if case.id == "Attachment":
            assert b"Client-Header: FooBar" in got[1][1]
        if case.id == "AttachmentMTOM":
            assert seen_headers.get("content-type") == sent_ct
            soap_headers = got[0][0].decode().lower()
            assert "content-id:" in soap_headers
            assert 'content-type: application/xop+xml; type="application/soap+xml"; charset=utf-8' in soap_headers
            att_headers = got[1][0].decode()
            assert "Content-ID:" in att_headers or "content-id:" in att_headers.lower()
            assert "text/plain; charset=UTF-8; name=attachment.txt" in att_headers
            assert answer.content_type == CASES[case.id]["service"]["content_type"]
    elif case.id == "SeveralAttachmentsResponse":
        svc_ct = CASES[case.id]["service"]["content_type"]
        sent_boundary = re.search(r'boundary="?([^";]+)"?', svc_ct)
        got_boundary = re.search(r'boundary="?([^";]+)"?', answer.content_type)
        assert sent_boundary is not None and got_boundary is not None, answer.content_type
        sent = _parts(base64.b64decode(case.service_answer()["body"]), sent_boundary.group(1))
        assert len(_parts(answer.body, got_boundary.group(1))) == len(sent)
    elif case.id.startswith("MetaserviceTest/"):
        name = "allowedMethodsResponse" if "Allowed" in case.id else "listMethodsResponse"
        assert answer.content_type.replace(" ", "").lower() == "text/xml;charset=utf-8"
        found = root.findall(f"{{{SOAP_NS}}}Body/{{{XROAD_NS}}}{name}")
        assert len(found) == 1
        listed = {"/".join(c.text or "" for c in s if isinstance(c.tag, str) and c.tag != f"{{{ID_NS}}}serviceVersion")
                  for s in found[0].findall(f"{{{XROAD_NS}}}service")}
        soap_codes = {s["code"] for s in world.services} | {"echo"}
        if name == "allowedMethodsResponse":
            soap_codes = {c for c in soap_codes if c in (*world.access, "echo") and c != "getStateDisabled"}
        assert listed == {f"{PROVIDER_CLIENT}/{c}" for c in soap_codes}


def run_case(case: Case, world: World, url: str, context: ssl.SSLContext | None = None) -> tuple[bytes, Answer]:
    if "service" in case.spec:
        _control(f"{world.backend}_control/next", case.service_answer())
    body, content_type = case.request()
    req = case.spec["request"]
    if case.id == "AttachmentBig":
        head = (b"--bigboundary\r\nContent-Type: text/xml; charset=UTF-8\r\n\r\n" + body +
                b"\r\n--bigboundary\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Transfer-Encoding: binary\r\n\r\n")
        tail = b"\r\n--bigboundary--\r\n"
        chunk = bytes(range(256)) * 4096

        def stream() -> Iterator[bytes]:
            yield head
            for _ in range(BIG_ATTACHMENT // len(chunk)):
                yield chunk
            yield tail

        answer = send(url, stream(), content_type, length=len(head) + BIG_ATTACHMENT + len(tail))
        return head + tail, answer
    answer = send(url, body, content_type, method=req["http_method"], soap_action=req.get("soap_action"),
                  context=context)
    return body, answer


# --------------------------------------------------------------------------- the cases


@pytest.mark.parametrize("case_id", CLIENT_PORT)
def test_case_through_the_gateways(world: World, case_id: str) -> None:
    case = Case(case_id)
    request, answer = run_case(case, world, world.consumer_url)
    assert_outcome(case, answer)
    if case.spec["expect"]["result"] == "ok":
        if "service" in case.spec:
            assert_consistent(case, request, answer, world)
        case_checks(case, request, answer, world)


def _client_cert(directory: Path, name: str = "is", *, expired: bool = False) -> tuple[Path, Path]:
    """A self-signed certificate of an information system (``expired``: its validity ended yesterday)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"information system {name}")])
    now = datetime.datetime.now(datetime.UTC)
    start, end = ((now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)) if expired
                  else (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)))
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = directory / f"{name}-key.pem", directory / f"{name}-cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _tls_client(cert: Path | str, key: Path | str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


@pytest.mark.parametrize("case_id", HTTPS_CLIENT)
def test_case_over_https_to_the_client_port(world: World, case_id: str, tmp_path: Path) -> None:
    """The client is configured ``connection: http``: HTTPS with a client certificate is accepted too."""
    case = Case(case_id)
    key, cert = _client_cert(tmp_path)
    request, answer = run_case(case, world, world.gateway(sb.CONSUMER)["client_https"], _tls_client(cert, key))
    assert_outcome(case, answer)
    assert_consistent(case, request, answer, world)


@pytest.mark.parametrize("case_id", SERVER_PROXY_TARGET)
def test_case_straight_to_the_server_proxy(world: World, case_id: str) -> None:
    """A peer with a registered authentication certificate (the consumer's) sends what the case says."""
    case = Case(case_id)
    tls = world.gateway(sb.CONSUMER)["tls"]
    _request, answer = run_case(case, world, world.gateway(sb.PROVIDER)["server"], _tls_client(tls["cert"],
                                                                                                tls["key"]))
    assert_outcome(case, answer)


# --------------------------------------------------------------------------- global configuration edits


def _consumer_shared_params(world: World, name: str = sb.CONSUMER) -> bytes:
    path = Path(world.gateway(name)["globalconf"]) / sb.INSTANCE / "shared-params.xml"
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _publish(world: World, federation: dict[str, Any]) -> None:
    """``federation`` as the central's ``federation.yaml``, published at once (``central generate``; the
    running central re-reads the file at its next generation too); returns when the consumer has
    installed that configuration, and the provider too."""
    path = Path(world.data["central"]["federation"])
    path.write_text(yaml.safe_dump(federation, allow_unicode=True, sort_keys=False))
    env = sb._child_env(world.dir / "trust" / "hsm" / "softhsm2.conf")
    out = subprocess.run([*GW, "central", "generate", "-c", str(path)], env=env, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=60)
    assert out.returncode == 0, out.stderr
    m = re.match(r"generated (\d+);", out.stdout)
    assert m is not None, out.stdout
    published = (Path(federation["output"]) / "V6" / m.group(1) / "shared-params.xml").read_bytes()
    for name in (sb.CONSUMER, sb.PROVIDER):
        _wait(lambda name=name: _consumer_shared_params(world, name) == published,
              f"the {name}'s copy of the edited global configuration", timeout=20)


def _dead_addresses(world: World, count: int) -> list[str]:
    """Addresses of the sandbox's range that nothing uses: no security server answers there."""
    net = ipaddress.ip_network(world.data["addresses"])
    used = {g["address"] for g in world.data["gateways"]} | {urllib.parse.urlsplit(world.backend).hostname}
    out = [str(h) for h in list(net.hosts())[7:] if str(h) not in used][:count]
    assert len(out) == count
    for address in out:
        assert not sb.tcp_open(address, sb.SERVER_PORT, timeout=0.5), f"{address}:{sb.SERVER_PORT} answers"
    return out


def _federation_for(case_id: str, original: dict[str, Any], world: World) -> dict[str, Any]:
    """The federation with the case's precondition."""
    fed: dict[str, Any] = json.loads(json.dumps(original))
    provider = next(s for s in fed["security_servers"] if s["code"] == sb.PROVIDER)
    if case_id == "ServerProxyMaintenanceMode":
        provider["maintenance"] = MAINTENANCE_MESSAGE
        return fed
    if case_id in ("SslAuthCertNotMatchesOrg", "SslClientCertVerificationError"):
        # the provider's server registered with the consumer server's certificate, not its own
        consumer = next(s for s in fed["security_servers"] if s["code"] == sb.CONSUMER)
        provider["auth_certs"] = list(consumer["auth_certs"])
        return fed
    if case_id == "SslAuthTrustManagerError":
        # the provider's server registered with a certificate no server presents
        directory = world.dir / "unused-auth"
        directory.mkdir(exist_ok=True)
        provider["auth_certs"] = [str(_client_cert(directory, "auth")[1])]
        return fed
    dead = _dead_addresses(world, 2)
    owner = provider["owner"]
    if case_id == "SslSelectFastestProxy":  # also on a server nothing answers for: the live one is faster
        fed["security_servers"].append({"owner": owner, "code": "gw-dead-1", "address": dead[0],
                                        "clients": [PROVIDER_CLIENT]})
    else:  # SslSelectFastestProxyNoConnections: only on servers nothing answers for
        provider["clients"] = [c for c in provider["clients"] if c != PROVIDER_CLIENT]
        fed["security_servers"] += [{"owner": owner, "code": f"gw-dead-{i + 1}", "address": address,
                                     "clients": [PROVIDER_CLIENT]} for i, address in enumerate(dead)]
    return fed


@pytest.fixture(scope="class")
def federation(world: World) -> Iterator[dict[str, Any]]:
    """The sandbox's federation description; published again, as it was, after the class's cases."""
    path = Path(world.data["central"]["federation"])
    text = path.read_text()
    original: dict[str, Any] = yaml.safe_load(text)
    try:
        yield original
    finally:
        _publish(world, original)
        path.write_text(text)


class TestGlobalConfiguration:
    @pytest.mark.parametrize("case_id", FEDERATION)
    def test_case_with_edited_federation(self, world: World, federation: dict[str, Any], case_id: str,
                                         tmp_path: Path) -> None:
        case = Case(case_id)
        _publish(world, _federation_for(case_id, federation, world))
        if case.spec["request"].get("target") == "client_proxy_https":
            key, cert = _client_cert(tmp_path)
            request, answer = run_case(case, world, world.gateway(sb.CONSUMER)["client_https"],
                                       _tls_client(cert, key))
        else:
            request, answer = run_case(case, world, world.consumer_url)
        assert_outcome(case, answer)
        if case.spec["expect"]["result"] == "ok":
            assert_consistent(case, request, answer, world)
        elif case_id == "ServerProxyMaintenanceMode":
            fault = answer.envelope()
            assert fault is not None
            assert MAINTENANCE_MESSAGE in (fault.findtext(f".//{{{SOAP_NS}}}Fault/faultstring") or ""), \
                answer.body[:600]


# --------------------------------------------------------------------------- information-system authentication


@pytest.fixture(scope="class")
def consumer_restored(world: World) -> Iterator[None]:
    """The consumer's configuration as the other cases want it, again after the class's cases."""
    try:
        yield
    finally:
        _restart_consumer(world, world.consumer_config)


class TestInformationSystemAuthentication:
    @pytest.mark.parametrize("case_id", IS_AUTHENTICATION)
    def test_case_with_is_authentication(self, world: World, consumer_restored: None, case_id: str,
                                         tmp_path: Path) -> None:
        case = Case(case_id)
        if case_id == "SslClientCipherSuiteSetupError":
            # the consumer's proxy-to-proxy TLS restricted to suites the provider does not accept
            config = yaml.safe_load(world.consumer_config)
            config["relay"]["tls"]["ciphers"] = "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
            config["relay"]["tls"]["tls13"] = False
            _restart_consumer(world, yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
            key, cert = _client_cert(tmp_path)
            _request, answer = run_case(case, world, world.gateway(sb.CONSUMER)["client_https"],
                                        _tls_client(cert, key))
            assert case.spec["expect"] == {"result": "fault", "code": "any", "match": "any fault"}
            fault = answer.envelope()
            assert fault is not None, answer.body[:600]
            assert fault.findtext(".//faultcode") == "Server.ClientProxy.NetworkError", answer.body[:600]
            assert "TLS handshake failed: tls alert handshake failure" in (fault.findtext(".//faultstring") or "")
            return
        presented = _client_cert(tmp_path, "client", expired=case_id == "SslClientAuthExpiredISCert")
        registered = _client_cert(tmp_path, "producer")[1] if case_id == "SslClientAuthWrongISCert" else presented[1]
        config = yaml.safe_load(world.consumer_config)
        client = next(c for c in config["clients"] if c["id"] == CONSUMER_CLIENT)
        client["connection"] = "https-auth"
        client["is_certs"] = [] if case_id == "SslClientAuthNoISCert" else [str(registered)]
        _restart_consumer(world, yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
        key, cert = presented
        request, answer = run_case(case, world, world.gateway(sb.CONSUMER)["client_https"], _tls_client(cert, key))
        assert_outcome(case, answer)
        if case.spec["expect"]["result"] == "ok":
            assert_consistent(case, request, answer, world)


# --------------------------------------------------------------------------- HTTPS services


def _service_cert(directory: Path, host: str) -> tuple[Path, Path]:
    """A self-signed certificate for the backend's HTTPS port, naming ``host`` (an IP address)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conformance service")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = directory / "service-key.pem", directory / "service-cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _restart_provider(world: World, config: str) -> None:
    _stop(world.provider)
    gw = world.gateway(sb.PROVIDER)
    _wait(lambda: not sb.tcp_open(gw["address"], sb.SERVER_PORT), "the provider's port closing")
    Path(gw["config"]).write_text(config)
    _start_provider(world)


@pytest.fixture(scope="class")
def provider_restored(world: World) -> Iterator[None]:
    """The provider's configuration as the other cases want it, again after the class's cases."""
    try:
        yield
    finally:
        _restart_provider(world, world.provider_config)


class TestHttpsServices:
    """The case's service (getState) on the backend's HTTPS port.  ``verify_tls: true`` (X-Road's TLS
    authentication): the service's certificate must be one of the provider client's ``is_certs``.
    SslToServiceNoAuth ("not checking the certificate"): the gateway never accepts a certificate
    unverified, so there the service runs with ``verify_tls: false`` and a ``ca_bundle`` that trusts
    it — the service's certificate is judged by the CA, not by the registered certificates."""

    @pytest.mark.parametrize("case_id", HTTPS_SERVICE)
    def test_case_with_an_https_service(self, world: World, provider_restored: None, case_id: str,
                                        tmp_path: Path) -> None:
        assert world.service_cert is not None
        case = Case(case_id)
        config = yaml.safe_load(world.provider_config)
        client = next(c for c in config["clients"] if c["id"] == PROVIDER_CLIENT)
        service = next(s for s in client["services"] if s["code"] == "getState")
        service["url"] = f"{world.backend_https}svc"
        if case_id == "SslToServiceNoAuth":
            service["verify_tls"] = False
            service["ca_bundle"] = str(world.service_cert)
        else:
            other = _client_cert(tmp_path, "producer")[1]
            client["is_certs"] = {"SslToServiceAuth": [str(world.service_cert)], "SslToServiceNoISCerts": [],
                                  "SslToServiceWrongISCert": [str(other)]}[case_id]
        _restart_provider(world, yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
        key, cert = _client_cert(tmp_path)
        request, answer = run_case(case, world, world.gateway(sb.CONSUMER)["client_https"], _tls_client(cert, key))
        assert_outcome(case, answer)
        if case.spec["expect"]["result"] == "ok":
            assert_consistent(case, request, answer, world)


# --------------------------------------------------------------------------- signing keys that fail


_DESTROY_KEY = """
import sys
from pathlib import Path
import pkcs11
from pkcs11 import Attribute, ObjectClass
from hsm.config import SOFTHSM2_CANDIDATES
module = next(p for p in SOFTHSM2_CANDIDATES if Path(p).exists())
label, pin_file, key_label = sys.argv[1:4]
token = pkcs11.lib(module).get_token(token_label=label)
with token.open(user_pin=Path(pin_file).read_text().strip(), rw=True) as session:
    keys = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: key_label}))
    assert keys, "no such key"
    for key in keys:
        key.destroy()
print(len(keys))
"""


def _destroy_sign_key(world: World, name: str) -> None:
    """Destroy the member signing key on the gateway's token while the gateway runs: its next
    signature fails in the HSM.  The PIN travels in the sandbox's PIN file, not in argv."""
    token = world.gateway(name)["token"]
    out = subprocess.run([sys.executable, "-c", _DESTROY_KEY, token["label"], token["pin_file"], "sign"],
                         env=sb._child_env(Path(token["softhsm2_conf"])), capture_output=True, text=True,
                         cwd=HERE.parent, timeout=60)
    assert out.returncode == 0 and int(out.stdout) >= 1, out.stderr


def test_case_signing_fails_in_server_proxy(world: World) -> None:
    """The provider cannot sign its answer (its key is gone from the token).  Runs after every case
    that needs the provider's key: the later groups stop the provider."""
    case = Case("SigningFailsInServerProxy")
    _destroy_sign_key(world, sb.PROVIDER)
    _request, answer = run_case(case, world, world.consumer_url)
    assert_outcome(case, answer)


@pytest.fixture(scope="module")
def provider_stopped(world: World) -> World:
    """From here on the provider gateway is down (the cases of a dead or dummy server proxy)."""
    _stop(world.provider)
    gw = world.gateway(sb.PROVIDER)
    _wait(lambda: not sb.tcp_open(gw["address"], sb.SERVER_PORT), "the provider's port closing")
    return world


@pytest.mark.parametrize("case_id", NO_SERVER_PROXY)
def test_case_no_server_proxy(provider_stopped: World, case_id: str) -> None:
    case = Case(case_id)
    _request, answer = run_case(case, provider_stopped, provider_stopped.consumer_url)
    assert_outcome(case, answer)


@pytest.fixture(scope="module")
def dummy_server_proxy(provider_stopped: World) -> Iterator[str]:
    world = provider_stopped
    gw = world.gateway(sb.PROVIDER)
    control = sb.free_port(gw["address"], set())
    proc = subprocess.Popen([sys.executable, str(HERE / "conformance_backend.py"), "server-proxy", gw["address"],
                             str(sb.SERVER_PORT), str(control), gw["tls"]["key"], gw["tls"]["cert"],
                             world.data["ca"]["intermediate"]], stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    world.procs.append(proc)
    _wait(lambda: sb.tcp_open(gw["address"], control) and sb.tcp_open(gw["address"], sb.SERVER_PORT),
          "the dummy server proxy")
    yield f"http://{gw['address']}:{control}/"
    _stop(proc)


@pytest.mark.parametrize("case_id", DUMMY_SERVER_PROXY)
def test_case_with_a_dummy_server_proxy(provider_stopped: World, dummy_server_proxy: str, case_id: str) -> None:
    case = Case(case_id)
    _control(dummy_server_proxy, case.dummy_server_proxy_answer())
    _request, answer = run_case(case, provider_stopped, provider_stopped.consumer_url)
    assert_outcome(case, answer)


def test_multipart_helper() -> None:
    """``_parts`` splits CRLF and LF multiparts alike (the vectors use LF)."""
    body = b"--b\nA: 1\n\nx\n--b\r\nB: 2\r\n\r\ny\r\n--b--\r\n"
    assert _parts(body, "b") == [(b"A: 1", b"x"), (b"B: 2", b"y")]


def test_adapted_messages() -> None:
    """The identifiers become the sandbox's; the id the case's; a renamed service renames its body element."""
    case = Case("ServiceDisabled")
    body, _ctype = case.request()
    root = etree.fromstring(body)
    assert _ids(root) == ("VN-TEST/GOV/000.00.00.H41/edoc", "VN-TEST/GOV/000.00.00.G22/example/getStateDisabled")
    assert _header(root, "client").get(f"{{{ID_NS}}}objectType") == "SUBSYSTEM"  # type: ignore[union-attr]
    assert root.find(f"{{{SOAP_NS}}}Body/{{{XROAD_NS}}}getStateDisabled") is not None
    assert (_header(root, "id").text or "") == case.qid  # type: ignore[union-attr]
    sub = etree.fromstring(Case("NormalSubsystem").request()[0])
    assert _ids(sub) == ("VN-TEST/GOV/000.00.00.H41/edoc", "VN-TEST/GOV/000.00.00.G22/example/getState")
    default_ns = etree.fromstring(Case("DefaultNamespaceMessage").request()[0])
    assert _ids(default_ns) == ("VN-TEST/GOV/000.00.00.H41/edoc", "VN-TEST/GOV/000.00.00.G22/example/getState")


def test_case_signing_fails_in_client_proxy(world: World) -> None:
    """The consumer cannot sign the request (its key is gone from the token): the last case of the
    module, as the consumer cannot sign any more."""
    case = Case("SigningFailsInClientProxy")
    _destroy_sign_key(world, sb.CONSUMER)
    _request, answer = run_case(case, world, world.consumer_url)
    assert_outcome(case, answer)
