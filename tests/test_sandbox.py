"""``vdxp-gateway sandbox up/status/down`` (SANDBOX.md, version 1 without axis and tenants), end to end
through the real CLI and processes, plus the example service and the address layout in memory."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from gateway.exampleservice import ExampleService, echo_response
from gateway.sandbox import layout_for, pid_alive
from protocols.errors import UsageError
from protocols.xroad.soap import SoapMessage, parse_soap

GW = [sys.executable, "-m", "gateway"]
G22 = "VN-TEST/GOV/000.00.00.G22"
H41 = "VN-TEST/GOV/000.00.00.H41"

# Two ranges of their own for this run (other test runs may use other parts of 127/8).
_BASE = f"127.{random.randint(100, 199)}.{random.randint(0, 250)}"
RANGE_A = f"{_BASE}.0/28"
RANGE_B = f"{_BASE}.16/28"


def gw(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GW, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("content-type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), exc.read()


def processes_in(directory: Path) -> list[int]:
    """PIDs of running (non-zombie) processes whose working directory is ``directory`` (``up`` starts
    every process there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") == str(directory) and pid_alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class Sandbox:
    def __init__(self, directory: Path, addresses: str) -> None:
        self.dir = directory
        self.addresses = addresses
        started = time.monotonic()
        self.out = gw("sandbox", "up", str(directory), "--addresses", addresses, "--quiet")
        self.seconds = time.monotonic() - started
        assert self.out.returncode == 0, self.out.stderr
        self.data: dict[str, Any] = json.loads(self.out.stdout)

    def pids(self) -> list[int]:
        return [p["pid"] for p in self.data["processes"]]

    def gateway(self, name: str) -> dict[str, Any]:
        return next(g for g in self.data["gateways"] if g["name"] == name)

    def down(self) -> None:
        gw("sandbox", "down", str(self.dir))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("sandbox-a") / "sb", RANGE_A)
    try:
        yield sb
    finally:
        sb.down()


# -- sandbox.json --------------------------------------------------------------------------------


def _absolute_url(value: object, network: str, scheme: str = "http") -> None:
    assert isinstance(value, str), value
    parts = urlsplit(value)
    assert parts.scheme == scheme and parts.hostname and parts.port, value
    assert ip_address(parts.hostname) in ip_network(network), value


def _absolute_file(value: object) -> None:
    assert isinstance(value, str) and Path(value).is_absolute() and Path(value).is_file(), value


def test_up_writes_sandbox_json_version_1(sandbox: Sandbox) -> None:
    data = sandbox.data
    assert json.loads((sandbox.dir / "sandbox.json").read_text()) == data
    assert data["version"] == 1 and data["instance"] == "VN-TEST"
    assert "axis" not in data and "tenants" not in data  # they arrive with the document issue
    net = RANGE_A

    assert set(data["central"]) >= {"url", "anchor"}
    _absolute_url(data["central"]["url"], net)
    _absolute_file(data["central"]["anchor"])
    assert set(data["ca"]) >= {"root", "intermediate", "ocsp"}
    _absolute_file(data["ca"]["root"])
    _absolute_file(data["ca"]["intermediate"])
    _absolute_url(data["ca"]["ocsp"], net)
    assert [t["name"] for t in data["tsas"]] == ["tsa-1"]
    _absolute_url(data["tsas"][0]["url"], net)
    _absolute_file(data["tsas"][0]["cert"])

    gateways = {g["name"]: g for g in data["gateways"]}
    assert set(gateways) == {"gw-provider", "gw-consumer"}
    assert gateways["gw-provider"]["owner"] == G22 and gateways["gw-consumer"]["owner"] == H41
    addresses = set()
    for g in gateways.values():
        assert g["mode"] == "dedicated"
        assert isinstance(g["pid"], int) and g["pid"] > 0
        _absolute_file(g["config"])
        a = g["address"]
        addresses.add(a)
        for key, scheme in (("client_http", "http"), ("client_https", "https"), ("server", "https"),
                            ("ocsp", "http"), ("health", "http"), ("metrics", "http")):
            _absolute_url(g[key], net, scheme)
            assert urlsplit(g[key]).hostname == a, (key, g[key])
        # The federation's ports between gateways, as X-Road peers use them.
        assert urlsplit(g["server"]).port == 5500 and urlsplit(g["ocsp"]).port == 5577
        assert urlsplit(g["metrics"]).path == "/metrics"
        assert isinstance(g["listening"], dict) and g["listening"]["health"] is True
    # Every process on an address of its own.
    others = {urlsplit(u).hostname for u in (data["central"]["url"], data["ca"]["ocsp"], data["tsas"][0]["url"],
                                             data["example"]["url"])}
    assert len(addresses | others) == 6

    services = {s["id"]: s for s in data["services"]}
    assert set(services) == {f"{G22}/example/echo", f"{G22}/example/items"}
    for s in services.values():
        assert s["provider_gateway"] == "gw-provider" and s["allowed_clients"] == [f"{H41}/edoc"]
        _absolute_url(s["url"], net)
    assert data["clients"] == [{"id": f"{H41}/edoc", "gateway": "gw-consumer"}]


def test_gateway_configuration_is_complete_and_valid(sandbox: Sandbox) -> None:
    """The relay's and clients' sections as gateway/config.py validates them (check-config)."""
    from gateway.config import load_config

    for name, owner, client in (("gw-provider", G22, f"{G22}/example"), ("gw-consumer", H41, f"{H41}/edoc")):
        g = sandbox.gateway(name)
        out = gw("check-config", "-c", g["config"])
        assert out.returncode == 0, out.stderr
        cfg = load_config(g["config"])
        a = g["address"]
        assert cfg.server.owner == owner and cfg.members[0].sign_key.label == "sign"
        assert cfg.relay.enabled and cfg.relay.server == f"tcp:5500:interface={a}"
        assert cfg.relay.ocsp == f"tcp:5577:interface={a}"
        assert cfg.relay.client_http == f"tcp:{urlsplit(g['client_http']).port}:interface={a}"
        assert cfg.relay.tls.key is not None and cfg.relay.tls.cert is not None
        assert stat.S_IMODE(cfg.relay.tls.key.stat().st_mode) == 0o600
        assert [c.id for c in cfg.clients] == [client]
    provider = load_config(sandbox.gateway("gw-provider")["config"]).clients[0]
    assert {(s.code, s.type) for s in provider.services} == {("echo", "soap"), ("items", "rest")}
    assert [(r.subject, r.services) for r in provider.access] == [(f"{H41}/edoc", ("echo", "items"))]


def test_auth_certificates_name_the_gateway_address(sandbox: Sandbox) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    for g in sandbox.data["gateways"]:
        d = Path(g["config"]).parent
        cert = x509.load_pem_x509_certificate((d / "tls-cert.pem").read_bytes())
        key = serialization.load_pem_private_key((d / "tls-key.pem").read_bytes(), None)
        assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.IPAddress) == [ip_address(g["address"])]


def test_secrets_are_private_and_never_in_argv(sandbox: Sandbox) -> None:
    pins = [Path(g["token"]["pin_file"]) for g in sandbox.data["gateways"]] + [sandbox.dir / "trust" / "hsm" / "pin"]
    for pin in pins:
        assert stat.S_IMODE(pin.stat().st_mode) == 0o600
        assert stat.S_IMODE(pin.with_name("pin.so").stat().st_mode) == 0o600
    secrets = [p.read_text().strip() for p in pins]
    for pid in sandbox.pids():
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert not any(s in argv for s in secrets)
    logs = "".join(Path(p["log"]).read_text() for p in sandbox.data["processes"])
    assert not any(s in logs for s in secrets)


# -- the processes -------------------------------------------------------------------------------


def test_processes_alive_and_gateways_healthy_with_the_central_anchor(sandbox: Sandbox) -> None:
    for proc in sandbox.data["processes"]:
        assert pid_alive(proc["pid"], proc["started"]), proc
    anchor = Path(sandbox.data["central"]["anchor"]).read_bytes()
    for g in sandbox.data["gateways"]:
        code, _, body = http(g["health"])
        assert code == 200, body
        assert b"vdxp_globalconf_valid 1.0" in http(g["metrics"])[2]
        state = Path(g["config"]).parent / "state"
        assert (state / "configuration-anchor.xml").read_bytes() == anchor
        assert (state / "globalconf" / "instance-identifier").read_text().strip() == "VN-TEST"
    out = gw("conf", "status", "-c", sandbox.gateway("gw-consumer")["config"], "--json")
    st = json.loads(out.stdout)
    assert (st["valid"], st["members"], st["security_servers"], st["approved_tsas"]) == (True, 2, 2, 1)


def test_trust_services_answer(sandbox: Sandbox) -> None:
    code, ctype, _ = http(sandbox.data["central"]["url"] + "internalconf?version=6")
    assert code == 200 and ctype.startswith("multipart/related"), (code, ctype)
    from cryptography import x509

    ocsp_cert = x509.load_pem_x509_certificate(Path(sandbox.data["ca"]["ocsp_cert"]).read_bytes())
    assert ocsp_cert is not None
    sign_cert = Path(sandbox.gateway("gw-provider")["config"]).parent / "sign.pem"
    out = gw("ocsp", "check", "--cert", str(sign_cert), "--issuer", sandbox.data["ca"]["intermediate"],
             "--url", sandbox.data["ca"]["ocsp"], "--trusted-responder", sandbox.data["ca"]["ocsp_cert"])
    assert out.returncode == 0 and out.stdout.startswith("good"), out.stderr
    data = sandbox.dir / "stamp-me.txt"
    data.write_text("time-stamp me")
    out = gw("tsa", "query", "--url", sandbox.data["tsas"][0]["url"], "--cert", sandbox.data["tsas"][0]["cert"],
             "--data", str(data))
    assert out.returncode == 0 and "genTime" in out.stdout, out.stderr


ECHO_REQUEST = """<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:xroad="http://x-road.eu/xsd/xroad.xsd" xmlns:id="http://x-road.eu/xsd/identifiers"
    xmlns:ex="http://example.vdxp.test/">
<SOAP-ENV:Header>
<xroad:client id:objectType="SUBSYSTEM"><id:xRoadInstance>VN-TEST</id:xRoadInstance><id:memberClass>GOV</id:memberClass>
<id:memberCode>000.00.00.H41</id:memberCode><id:subsystemCode>edoc</id:subsystemCode></xroad:client>
<xroad:service id:objectType="SERVICE"><id:xRoadInstance>VN-TEST</id:xRoadInstance><id:memberClass>GOV</id:memberClass>
<id:memberCode>000.00.00.G22</id:memberCode><id:subsystemCode>example</id:subsystemCode>
<id:serviceCode>echo</id:serviceCode></xroad:service>
<xroad:userId>alice</xroad:userId><xroad:id>query-42</xroad:id><xroad:issue>ISSUE-7</xroad:issue>
<xroad:protocolVersion>4.0</xroad:protocolVersion>
</SOAP-ENV:Header>
<SOAP-ENV:Body><ex:echo><ex:text>xin chào</ex:text><ex:n>1</ex:n></ex:echo></SOAP-ENV:Body>
</SOAP-ENV:Envelope>""".encode()


def _check_echo(raw: bytes) -> None:
    request = parse_soap(ECHO_REQUEST)
    response = parse_soap(raw)
    assert isinstance(request, SoapMessage) and isinstance(response, SoapMessage)
    assert response.header == request.header  # client, service, id, userId, issue, protocolVersion
    assert response.service_name == "echoResponse" and response.body_namespace == "http://example.vdxp.test/"
    assert "<ex:text>xin chào</ex:text><ex:n>1</ex:n>" in raw.decode()


def test_example_service_answers_directly(sandbox: Sandbox) -> None:
    example = sandbox.data["example"]
    soap_url = next(s["url"] for s in sandbox.data["services"] if s["id"].endswith("/echo"))
    rest_url = next(s["url"] for s in sandbox.data["services"] if s["id"].endswith("/items"))
    code, ctype, body = http(soap_url, ECHO_REQUEST, {"Content-Type": "text/xml; charset=UTF-8"})
    assert code == 200 and ctype.startswith("text/xml"), body
    _check_echo(body)
    code, ctype, body = http(rest_url)
    assert code == 200 and ctype == "application/json" and len(json.loads(body)["items"]) == 3
    code, _, body = http(rest_url + "/7", headers={"X-Road-Client": f"{H41}/edoc"})
    assert json.loads(body) == {"id": 7, "name": "item 7", "x_road_client": f"{H41}/edoc"}
    code, ctype, body = http(rest_url, b'{"title": "c\xc3\xb4ng v\xc4\x83n"}', {"Content-Type": "application/json"})
    assert (code, ctype, body) == (200, "application/json", b'{"title": "c\xc3\xb4ng v\xc4\x83n"}')
    assert http(example["url"] + "nothing")[0] == 404


def test_status_reports_every_process_alive(sandbox: Sandbox) -> None:
    out = gw("sandbox", "status", str(sandbox.dir))
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(out.stdout)
    assert all(p["alive"] is True for p in data["processes"])
    assert data["central"]["alive"] and data["ca"]["alive"] and data["tsas"][0]["alive"] and data["example"]["alive"]
    for g in data["gateways"]:
        assert g["alive"] is True and g["healthy"] is True
        assert isinstance(g["relay_ready"], bool)
    # status adds keys, it changes none of the contract's.
    for key in ("version", "instance", "services", "clients"):
        assert data[key] == sandbox.data[key]


def test_second_up_into_the_same_directory_refuses(sandbox: Sandbox) -> None:
    before = sandbox.dir.joinpath("sandbox.json").read_bytes()
    out = gw("sandbox", "up", str(sandbox.dir), "--addresses", RANGE_B)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert out.stderr.startswith("error: sandbox.exists: ")
    assert sandbox.dir.joinpath("sandbox.json").read_bytes() == before


def test_up_on_a_busy_range_refuses_and_starts_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    out = gw("sandbox", "up", str(tmp_path / "other"), "--addresses", RANGE_A)
    assert out.returncode == 1 and out.stderr.startswith("error: sandbox.address_busy: "), out.stderr
    assert processes_in(tmp_path / "other") == []


def test_two_sandboxes_side_by_side_then_down(sandbox: Sandbox, tmp_path: Path) -> None:
    other = Sandbox(tmp_path / "sb-b", RANGE_B)
    try:
        assert {g["address"] for g in other.data["gateways"]}.isdisjoint(
            {g["address"] for g in sandbox.data["gateways"]})
        for sb in (sandbox, other):
            for g in sb.data["gateways"]:
                assert http(g["health"])[0] == 200
        assert len(processes_in(other.dir)) == len(other.pids())
    finally:
        out = gw("sandbox", "down", str(other.dir))
    assert out.returncode == 0, out.stderr
    assert not any(pid_alive(pid) for pid in other.pids())
    assert processes_in(other.dir) == []
    # The first sandbox is untouched.
    assert all(pid_alive(p["pid"], p["started"]) for p in sandbox.data["processes"])
    # Down keeps the files and is idempotent.
    assert (other.dir / "sandbox.json").is_file() and (other.dir / "gw-provider" / "gateway.yaml").is_file()
    again = gw("sandbox", "down", str(other.dir))
    assert again.returncode == 0 and "not running" in again.stdout
    st = gw("sandbox", "status", str(other.dir))
    assert st.returncode == 1
    assert all(p["alive"] is False for p in json.loads(st.stdout)["processes"])


def test_failed_up_stops_what_it_started(tmp_path: Path) -> None:
    """A gateway that cannot come up in time: `up` stops every process it started, one coded line."""
    out = gw("sandbox", "up", str(tmp_path / "sb"), "--addresses", f"{_BASE}.32/28", "--timeout", "0.3")
    assert out.returncode == 1, out.stdout
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error: sandbox."), out.stderr
    assert [ln for ln in lines if ln.startswith("error:")] == [lines[-1]]
    assert not (tmp_path / "sb" / "sandbox.json").exists()
    assert (tmp_path / "sb" / "logs" / "ocsp.log").exists()  # something had been started
    assert processes_in(tmp_path / "sb") == []


def test_down_stops_every_process(tmp_path_factory: pytest.TempPathFactory, sandbox: Sandbox) -> None:
    # Last in this module: the module's sandbox goes down (the fixture's down is then a no-op).
    out = gw("sandbox", "down", str(sandbox.dir))
    assert out.returncode == 0, out.stderr
    assert sorted(ln.split(" (pid ")[0] for ln in out.stdout.splitlines()) == sorted(
        p["name"] for p in sandbox.data["processes"])
    assert not any(pid_alive(pid) for pid in sandbox.pids())
    assert processes_in(sandbox.dir) == []
    for g in sandbox.data["gateways"]:
        with pytest.raises(OSError):
            urllib.request.urlopen(g["health"], timeout=2)


# -- in memory -----------------------------------------------------------------------------------


def test_layout_needs_a_loopback_range_of_seven_hosts() -> None:
    lay = layout_for("127.0.0.0/24")
    assert (lay.provider, lay.consumer, lay.central, lay.ca, lay.tsa, lay.example) == (
        "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7")
    assert layout_for("127.5.5.16/28").provider == "127.5.5.18"
    for bad in ("10.0.0.0/24", "127.0.0.0/29", "::1/128", "nonsense"):
        with pytest.raises(UsageError):
            layout_for(bad)
    out = gw("sandbox", "up", "/nonexistent-sandbox", "--addresses", "10.0.0.0/24")
    assert out.returncode == 2 and out.stderr.startswith("error: usage.addresses_invalid: ")


def _render(resource: ExampleService, method: bytes, path: bytes, body: bytes = b"",
            headers: dict[bytes, bytes] | None = None) -> tuple[int, bytes, DummyRequest]:
    import io

    request: Any = DummyRequest(path.strip(b"/").split(b"/"))
    request.method = method
    request.path = path
    request.content = io.BytesIO(body)
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    result = resource.render(request)
    if result == NOT_DONE_YET:
        assert request.finished
        data = b"".join(request.written)
    else:
        assert isinstance(result, bytes)
        data = result
    return request.responseCode or 200, data, request


def test_example_service_in_memory() -> None:
    resource = ExampleService()
    _check_echo(echo_response(ECHO_REQUEST, "text/xml; charset=UTF-8"))
    code, body, _ = _render(resource, b"POST", b"/soap", ECHO_REQUEST, {b"content-type": b"text/xml"})
    assert code == 200
    _check_echo(body)
    code, body, _ = _render(resource, b"POST", b"/soap", b"<a/>", {b"content-type": b"text/xml"})
    assert code == 500 and b"<faultcode>Client.InvalidSoap</faultcode>" in body
    code, body, _ = _render(resource, b"POST", b"/soap", b"<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>",
                            {b"content-type": b"text/xml"})
    assert code == 500 and b"faultcode" in body
    assert _render(resource, b"GET", b"/soap")[0] == 405
    big = os.urandom(300_000)
    code, body, request = _render(resource, b"POST", b"/items/9", big, {b"content-type": b"application/pdf"})
    assert (code, body) == (200, big)
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"application/pdf"]
    assert _render(resource, b"DELETE", b"/items/9")[0] == 405
    assert json.loads(_render(resource, b"GET", b"/items/x")[1]) == {"id": "x", "name": "item x"}


def test_example_service_echoes_soap_with_attachments() -> None:
    resource = ExampleService()
    attachment = os.urandom(200_000)
    body = (b"preamble\r\n--MIME_b\r\nContent-Type: text/xml; charset=UTF-8\r\nContent-ID: <soap>\r\n\r\n"
            + ECHO_REQUEST + b"\r\n--MIME_b\r\nContent-Type: application/octet-stream\r\nContent-ID: <a1>\r\n\r\n"
            + attachment + b"\r\n--MIME_b--\r\n")
    ctype = b'multipart/related; type="text/xml"; start="<soap>"; boundary=MIME_b'
    code, raw, request = _render(resource, b"POST", b"/soap", body, {b"content-type": ctype})
    assert code == 200
    assert request.responseHeaders.getRawHeaders(b"content-type") == [ctype]
    assert request.responseHeaders.getRawHeaders(b"content-length") == [str(len(raw)).encode()]
    parts = raw.split(b"\r\n--MIME_b")
    soap_headers, _, soap = parts[0].removeprefix(b"--MIME_b\r\n").partition(b"\r\n\r\n")
    assert b"Content-ID: <soap>" in soap_headers
    _check_echo(soap)
    assert parts[1].endswith(b"\r\n\r\n" + attachment) and parts[2] == b"--\r\n"
    # No SOAP part: a fault.
    code, raw, _ = _render(resource, b"POST", b"/soap", b"--MIME_b--\r\n", {b"content-type": ctype})
    assert code == 500 and b"faultcode" in raw


def test_status_and_down_without_a_sandbox(tmp_path: Path) -> None:
    for action in ("status", "down"):
        out = gw("sandbox", action, str(tmp_path))
        assert out.returncode == 1 and out.stderr.startswith("error: sandbox.not_found: "), out.stderr


def test_pid_alive_checks_the_start_time() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        from gateway.sandbox import _proc_start_time

        started = _proc_start_time(proc.pid)
        assert started is not None and pid_alive(proc.pid, started)
        assert not pid_alive(proc.pid, str(int(started) + 1))  # a reused PID is not ours
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not pid_alive(proc.pid)
