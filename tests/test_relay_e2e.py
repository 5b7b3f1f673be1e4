"""The relay end to end through the sandbox: an information system calls the example service of
another member through two gateways (mutual TLS, signed and verified both ways)."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import random
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from lxml import etree

GW = [sys.executable, "-m", "gateway"]
NS = {"s": "http://schemas.xmlsoap.org/soap/envelope/", "x": "http://x-road.eu/xsd/xroad.xsd"}


def envelope(*, client_code: str = "000.00.00.H41", client_sub: str = "edoc", service: str = "echo",
             version: str = "4.0", text: str = "Xin chao", qid: str = "q-1") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:x="http://x-road.eu/xsd/xroad.xsd"
 xmlns:id="http://x-road.eu/xsd/identifiers"><s:Header>
<x:client id:objectType="SUBSYSTEM"><id:xRoadInstance>VN-TEST</id:xRoadInstance><id:memberClass>GOV</id:memberClass>
<id:memberCode>{client_code}</id:memberCode><id:subsystemCode>{client_sub}</id:subsystemCode></x:client>
<x:service id:objectType="SERVICE"><id:xRoadInstance>VN-TEST</id:xRoadInstance><id:memberClass>GOV</id:memberClass>
<id:memberCode>000.00.00.G22</id:memberCode><id:subsystemCode>example</id:subsystemCode>
<id:serviceCode>{service}</id:serviceCode></x:service>
<x:id>{qid}</x:id><x:protocolVersion>{version}</x:protocolVersion></s:Header>
<s:Body><m:{service} xmlns:m="http://example.org/"><text>{text}</text></m:{service}></s:Body></s:Envelope>""".encode()


def sandbox_up(directory: Path) -> tuple[dict, ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """`vdxp-gateway sandbox up` into ``directory`` on a random 127.x.y.z/28: its sandbox.json and the range."""
    net = ipaddress.ip_network(f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.{16 * random.randint(0, 15)}"
                               "/28")
    out = subprocess.run([*GW, "sandbox", "up", str(directory), "--addresses", str(net), "--quiet"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    return json.loads((directory / "sandbox.json").read_text()), net


def sandbox_down(directory: Path) -> None:
    subprocess.run([*GW, "sandbox", "down", str(directory)], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    d = tmp_path_factory.mktemp("relay-sandbox") / "sb"
    data, _net = sandbox_up(d)
    try:
        yield data
    finally:
        sandbox_down(d)


def call(url: str, body: bytes, content_type: str = "text/xml; charset=utf-8", method: str = "POST",
         headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, data=body if method == "POST" else None, method=method,
                                 headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def consumer(sb: dict) -> str:
    return next(g["client_http"] for g in sb["gateways"] if g["name"] == "gw-consumer")


def _log_rows(sb: dict, gateway: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of a gateway's message log (its SQLite database, read while the gateway runs)."""
    import sqlite3

    path = Path(sb["dir"]) / gateway / "state" / "gateway.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        return [tuple(r) for r in db.execute(sql, params).fetchall()]


def faultcode(body: bytes) -> str:
    root = etree.fromstring(body)
    code = root.find(".//faultcode")
    assert code is not None, body
    return str(code.text)


def http_get(url: str) -> tuple[int, bytes]:
    """Status and body of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


def echo_or_fault(sb: dict, qid: str = "q-1") -> str:
    """``ok`` when an echo through the gateways is answered, else the fault code."""
    _s, _c, body = call(consumer(sb), envelope(qid=qid))
    return "ok" if b"echoResponse" in body else faultcode(body)


def test_soap_call_is_relayed_signed_and_verified(sandbox: dict) -> None:
    status, ctype, body = call(consumer(sandbox), envelope(text="Chào thế giới"))
    assert status == 200 and ctype.startswith("text/xml"), body
    root = etree.fromstring(body)
    assert root.find(".//{http://example.org/}echoResponse/text").text == "Chào thế giới"
    assert root.find(".//x:id", NS).text == "q-1"
    assert root.find(".//x:requestHash", NS) is not None  # set by the provider gateway, checked by the consumer


def test_every_message_is_logged_on_both_sides(sandbox: dict) -> None:
    """Both gateways log the request and the response, signed, before passing them on."""
    import base64
    import hashlib

    status, _ctype, body = call(consumer(sandbox), envelope(text="ghi nhật ký", qid="log-soap-1"))
    assert status == 200, body
    for name, side, signers in (("gw-consumer", "client", ("VN-TEST/GOV/000.00.00.H41", "VN-TEST/GOV/000.00.00.G22")),
                                ("gw-provider", "server", ("VN-TEST/GOV/000.00.00.H41", "VN-TEST/GOV/000.00.00.G22"))):
        rows = _log_rows(sandbox, name, "SELECT side, direction, protocol, client, service, signer, message, "
                                        "signature, signature_hash, body_logged, x_request_id FROM logrecord "
                                        "WHERE query_id = ? ORDER BY id", ("log-soap-1",))
        assert [(r[0], r[1], r[2], r[5]) for r in rows] == [(side, "request", "soap", signers[0]),
                                                          (side, "response", "soap", signers[1])], name
        request, response = rows
        assert request[3] == "VN-TEST/GOV/000.00.00.H41/edoc" and request[4] == "VN-TEST/GOV/000.00.00.G22/example/echo"
        assert "ghi nhật ký".encode() in request[6] and b"echoResponse" in response[6]
        for r in rows:
            assert r[7].startswith(b"<") and b"SignatureValue" in r[7] and r[9] == 1
            assert r[8] == base64.b64encode(hashlib.sha512(r[7]).digest()).decode()
        assert request[10] and request[10] == response[10]  # one X-Road-Request-Id for the exchange
    # REST: the body goes to the log as the first attachment
    payload = json.dumps({"nhật ký": True}).encode()
    status, _headers, _body = rest(sandbox, "items", method="POST", body=payload,
                                  headers={"Content-Type": "application/json", "X-Road-Id": "log-rest-1"})
    assert status in (200, 201)
    for name in ("gw-consumer", "gw-provider"):
        rows = _log_rows(sandbox, name, "SELECT r.direction, r.protocol, a.content_type, a.data FROM logrecord r "
                                        "JOIN logattachment a ON a.record_id = r.id WHERE r.protocol = 'rest' "
                                        "AND a.data = ? ORDER BY r.id", (payload,))
        assert [(r[0], r[1], r[2]) for r in rows][-2:] == [("request", "rest", "application/json"),
                                                           ("response", "rest", "application/json")], name


def test_logged_messages_are_time_stamped_and_verify_offline(sandbox: dict, tmp_path: Path) -> None:
    """A relayed message's log records get a time-stamp from the sandbox's TSA within a few
    intervals; the record, its signature and time-stamp make an ASiC-E container that our offline
    verifier accepts, and whose token openssl verifies against the TSA's chain."""
    import hashlib
    import time

    from gateway.globalconf.disk import read_conf_dir
    from protocols.asic import build_container, verify_container

    status, _ctype, body = call(consumer(sandbox), envelope(text="đóng dấu thời gian", qid="ts-1"))
    assert status == 200, body
    deadline = time.monotonic() + 30
    rows: list[tuple] = []
    while time.monotonic() < deadline:
        rows = _log_rows(sandbox, "gw-consumer",
                         "SELECT r.message, r.signature, r.hash_chain, r.hash_chain_result, r.ts_hash_chain, "
                         "t.hash_chain_result, t.token, r.direction FROM logrecord r JOIN tsrecord t "
                         "ON t.id = r.timestamp_id WHERE r.query_id = ? ORDER BY r.id", ("ts-1",))
        if len(rows) == 2:
            break
        time.sleep(0.5)
    assert [r[7] for r in rows] == ["request", "response"], "not time-stamped within 30 s"
    gw = next(g for g in sandbox["gateways"] if g["name"] == "gw-consumer")
    conf = read_conf_dir(Path(gw["globalconf"]))
    from datetime import UTC, datetime

    for message, signature, chain, chain_result, ts_chain, ts_result, token, direction in rows:
        container = build_container(message=message, signature=signature, created=datetime.now(UTC),
                                    timestamp=token, ts_hash_chain_result=ts_result or None,
                                    ts_hash_chain=ts_chain, sig_hash_chain_result=chain_result,
                                    sig_hash_chain=chain)
        verified = verify_container(container, conf)
        assert str(verified.signer) == ("VN-TEST/GOV/000.00.00.H41/edoc" if direction == "request"
                                        else "VN-TEST/GOV/000.00.00.G22/example"), verified
        assert verified.tsa_name == "tsa-1" and verified.batch_timestamp == (ts_result != b"")
        # the token, checked by openssl against the TSA's certificate chain
        tst = tmp_path / f"{direction}.tst"
        tst.write_bytes(token)
        chain_pem = tmp_path / "chain.pem"
        chain_pem.write_bytes(Path(sandbox["ca"]["root"]).read_bytes()
                              + Path(sandbox["ca"]["intermediate"]).read_bytes())
        stamped = ts_result if ts_result else None
        if stamped is None:
            from gateway.messagelog.timestamper import signature_value

            stamped = signature_value(signature)
        out = subprocess.run(["openssl", "ts", "-verify", "-digest", hashlib.sha512(stamped).hexdigest(), "-in",
                              str(tst), "-token_in", "-CAfile", str(chain_pem), "-untrusted",
                              sandbox["tsas"][0]["cert"]], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "Verification: OK" in out.stdout, out.stdout + out.stderr
    # tampering with the logged message breaks the container's verification
    message, signature, chain, chain_result, ts_chain, ts_result, token, _d = rows[0]
    bad = build_container(message=message.replace("đóng".encode(), b"dong"), signature=signature,
                          created=datetime.now(UTC), timestamp=token, ts_hash_chain_result=ts_result or None,
                          ts_hash_chain=ts_chain, sig_hash_chain_result=chain_result, sig_hash_chain=chain)
    from protocols.errors import VdxpError

    with pytest.raises(VdxpError) as info:
        verify_container(bad, conf)
    assert info.value.xroad_code in ("InvalidSignatureValue", "MalformedSignature.InvalidHashChain",
                                     "MalformedSignature"), info.value


def test_asic_download_and_verificationconf_verify_offline_with_log_verify(sandbox: dict, tmp_path: Path) -> None:
    """X-Road's signed-document download: GET /asic gives the containers of a query (503 until they
    are time-stamped), GET /verificationconf the configuration; `log verify` checks them offline."""
    import io
    import time
    import zipfile

    status, _ctype, body = call(consumer(sandbox), envelope(text="tải về", qid="asic-1"))
    assert status == 200, body
    base = consumer(sandbox) + "asic?queryId=asic-1&xRoadInstance=VN-TEST&memberClass=GOV&memberCode=000.00.00.H41"

    deadline = time.monotonic() + 30
    code, data = http_get(base + "&subsystemCode=edoc")
    while code == 503 and time.monotonic() < deadline:
        time.sleep(0.5)
        code, data = http_get(base + "&subsystemCode=edoc")
    assert code == 200, data
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = sorted(z.namelist())
        assert [n.split("-")[2] for n in names] == ["request", "response"] and all(n.endswith(".asice") for n in names)
        z.extractall(tmp_path / "asic")
    code, conf_zip = http_get(consumer(sandbox) + "verificationconf")
    assert code == 200
    with zipfile.ZipFile(io.BytesIO(conf_zip)) as z:
        z.extractall(tmp_path / "conf")
    for name in names:
        out = subprocess.run([*GW, "log", "verify", str(tmp_path / "asic" / name), "--conf", str(tmp_path / "conf")],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
    assert http_get(base + "&subsystemCode=edoc&requestOnly")[0] == 200
    with zipfile.ZipFile(io.BytesIO(http_get(base + "&subsystemCode=edoc&responseOnly")[1])) as z:
        assert [n.split("-")[2] for n in z.namelist()] == ["response"]
    assert http_get(base + "&subsystemCode=edoc&unique")[0] == 200  # one request and its response
    call(consumer(sandbox), envelope(text="lần hai", qid="asic-1"))  # the same query id again
    assert http_get(base + "&subsystemCode=edoc&unique")[0] == 409
    assert http_get(base.replace("asic-1", "no-such-query") + "&subsystemCode=edoc")[0] == 404
    assert http_get(base + "&subsystemCode=other")[0] == 401  # not a client of this server
    assert http_get(consumer(sandbox) + "asic?queryId=asic-1")[0] == 400
    assert http_get(base + "&subsystemCode=edoc&requestOnly&responseOnly")[0] == 400


def test_log_export_writes_linked_archives_that_log_verify_accepts(sandbox: dict, tmp_path: Path) -> None:
    """`log export` archives the time-stamped records now (the daemon's archiver would at its
    interval); `log verify ARCHIVE --first --conf DIR` checks the chain and every container; a query's
    containers are exported on their own too."""
    import time

    status, _ctype, body = call(consumer(sandbox), envelope(text="lưu trữ", qid="archive-1"))
    assert status == 200, body
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _log_rows(sandbox, "gw-consumer", "SELECT COUNT(*) FROM logrecord "
                                                    "WHERE timestamp_id IS NULL")[0][0]:
        time.sleep(0.5)
    gw = next(g for g in sandbox["gateways"] if g["name"] == "gw-consumer")
    conf_dir = Path(gw["globalconf"])
    out = subprocess.run([*GW, "log", "export", "-c", gw["config"], "--query-id", "archive-1", "--out",
                          str(tmp_path / "query")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    containers = out.stdout.split()
    assert len(containers) == 2 and all("archive-1-" in c for c in containers)
    for path in containers:
        verified = subprocess.run([*GW, "log", "verify", path, "--conf", str(conf_dir)], capture_output=True,
                                  text=True, timeout=120)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    out = subprocess.run([*GW, "log", "export", "-c", gw["config"], "--out", str(tmp_path / "archives")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    archives = [line for line in out.stdout.splitlines() if line.endswith(".zip")]
    assert archives, out.stdout  # more than one when earlier tests logged big attachments (32 MiB each at most)
    chain_arg = ["--first"]
    listed = ""
    for archive in archives:  # each one links to the one before
        verified = subprocess.run([*GW, "log", "verify", archive, *chain_arg, "--conf", str(conf_dir)],
                                  capture_output=True, text=True, timeout=300)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        listed += verified.stdout
        last = next(line for line in verified.stdout.splitlines() if line.startswith("last digest: "))
        chain_arg = ["--previous", last.split(": ", 1)[1]]
    assert "archive-1" in listed
    assert _log_rows(sandbox, "gw-consumer", "SELECT COUNT(*) FROM logrecord WHERE query_id = 'archive-1' "
                                             "AND archived = 1") == [(2,)]
    # nothing new: a second export writes nothing
    again = subprocess.run([*GW, "log", "export", "-c", gw["config"], "--out", str(tmp_path / "archives")],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 archive(s) written" in again.stdout, again.stdout + again.stderr


def test_attachments_travel_both_ways(sandbox: dict) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB of binary
    boundary = "MIMEBoundary42"
    body = (f"--{boundary}\r\nContent-Type: text/xml; charset=utf-8\r\n\r\n").encode() + envelope() + \
        f"\r\n--{boundary}\r\nContent-Type: application/pdf\r\nContent-ID: <doc1>\r\n\r\n".encode() + payload + \
        f"\r\n--{boundary}--\r\n".encode()
    status, ctype, answer = call(consumer(sandbox), body,
                                 f'multipart/related; type="text/xml"; boundary="{boundary}"')
    assert status == 200 and ctype.startswith("multipart/related"), answer[:500]
    assert payload in answer and b"Content-ID: <doc1>" in answer


@pytest.mark.parametrize(("request_kwargs", "expected"), [
    ({"service": "nosuch"}, "Server.ServerProxy.UnknownService"),
    ({"client_code": "000.00.00.Z99"}, "Server.ClientProxy.UnknownMember"),
    ({"version": "3.1"}, "Client.InvalidProtocolVersion"),
])
def test_faults_are_xroad_faults(sandbox: dict, request_kwargs: dict, expected: str) -> None:
    status, _ctype, body = call(consumer(sandbox), envelope(**request_kwargs))
    assert status == 200
    assert faultcode(body) == expected


def test_protocol_errors_at_the_client_port(sandbox: dict) -> None:
    _s, _c, body = call(consumer(sandbox), b"", method="GET")
    assert faultcode(body) == "Client.InvalidHttpMethod"
    _s, _c, body = call(consumer(sandbox), envelope(), content_type="application/json")
    assert faultcode(body) == "Client.InvalidContentType"
    _s, _c, body = call(consumer(sandbox), b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>")
    assert faultcode(body).startswith("Client.")


def test_concurrent_calls(sandbox: dict) -> None:
    url = consumer(sandbox)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: call(url, envelope(text=f"m{i}", qid=f"q{i}")), range(48)))
    for i, (status, _ctype, body) in enumerate(results):
        assert status == 200
        assert etree.fromstring(body).find(".//x:id", NS).text == f"q{i}"


def test_metrics_count_relayed_messages(sandbox: dict) -> None:
    call(consumer(sandbox), envelope())
    for name in ("gw-consumer", "gw-provider"):
        metrics = next(g["metrics"] for g in sandbox["gateways"] if g["name"] == name)
        text = urllib.request.urlopen(metrics, timeout=10).read().decode()
        side = "client" if name == "gw-consumer" else "server"
        assert f'vdxp_relay_requests_total{{result="ok",side="{side}"}}' in text


def test_sandbox_files(sandbox: dict) -> None:
    assert Path(sandbox["central"]["anchor"]).is_file()


def rest(sb: dict, path: str, *, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    base = consumer(sb) + "r1/VN-TEST/GOV/000.00.00.G22/example/" + path
    h = {"X-Road-Client": "VN-TEST/GOV/000.00.00.H41/edoc", **(headers or {})}
    req = urllib.request.Request(base, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_rest_get_and_post_are_relayed(sandbox: dict) -> None:
    status, headers, body = rest(sandbox, "items/7?x=1")
    assert status == 200, body
    assert json.loads(body)["id"] == 7
    assert headers["X-Road-Client"] == "VN-TEST/GOV/000.00.00.H41/edoc"
    assert headers["X-Road-Service"] == "VN-TEST/GOV/000.00.00.G22/example/items"
    assert headers["X-Road-Id"].startswith("VN-TEST-") and headers["X-Road-Request-Hash"]
    payload = json.dumps({"tên": "văn bản", "n": list(range(1000))}).encode()
    status, headers, body = rest(sandbox, "items", method="POST", body=payload,
                                 headers={"Content-Type": "application/json"})
    assert status in (200, 201) and payload in body


def test_rest_errors_are_xroad_error_bodies(sandbox: dict) -> None:
    status, headers, body = rest(sandbox, "../nosuch")
    assert status in (400, 500) and headers.get("X-Road-Error")
    status, headers, body = rest(sandbox.copy(), "items", headers={"X-Road-Client": ""})
    assert status == 400 and json.loads(body)["type"].startswith("Client.")
    base = consumer(sandbox) + "r1/VN-TEST/GOV/000.00.00.G22/example/nosuchservice"
    req = urllib.request.Request(base, headers={"X-Road-Client": "VN-TEST/GOV/000.00.00.H41/edoc",
                                                "Accept": "application/xml"})
    try:
        urllib.request.urlopen(req, timeout=60)
        raise AssertionError("expected an error")
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        assert e.code == 500 and "<type>Server.ServerProxy.UnknownService</type>" in text
        assert e.headers["X-Road-Error"] == "Server.ServerProxy.UnknownService"


def test_metaservices(sandbox: dict) -> None:
    base = consumer(sandbox)
    with urllib.request.urlopen(urllib.request.Request(base + "listClients",
                                                       headers={"Accept": "application/json"}), timeout=30) as r:
        listed = json.loads(r.read())
    codes = {(m["id"]["member_code"], m["id"].get("subsystem_code")) for m in listed["member"]}
    assert ("000.00.00.G22", "example") in codes and ("000.00.00.H41", "edoc") in codes
    with urllib.request.urlopen(base + "listClients", timeout=30) as r:
        assert b"clientList" in r.read()
    status, _ct, body = call(base, envelope(service="listMethods"))
    assert status == 200, body
    listed_soap = {e.text for e in etree.fromstring(body).iter("{http://x-road.eu/xsd/identifiers}serviceCode")}
    assert "echo" in listed_soap and "items" not in listed_soap  # REST services are not SOAP methods
    status, _ct, body = call(base, envelope(service="allowedMethods"))
    assert "echo" in {e.text for e in etree.fromstring(body).iter("{http://x-road.eu/xsd/identifiers}serviceCode")}
    status, _h, body = rest(sandbox, "listMethods")
    assert status == 200 and [s["service_code"] for s in json.loads(body)["service"]] == ["items"]
    status, _ct, body = call(base, envelope(service="getWsdl"))
    assert faultcode(body) == "Server.ServerProxy.UnknownService"


def test_a_real_soap_client_zeep(sandbox: dict) -> None:
    """zeep, a SOAP toolkit an information system might use, calls through the gateways."""
    import zeep
    from lxml.builder import ElementMaker

    xrd = ElementMaker(namespace="http://x-road.eu/xsd/xroad.xsd", nsmap={"xrd": "http://x-road.eu/xsd/xroad.xsd",
                                                                          "id": "http://x-road.eu/xsd/identifiers"})
    ids = ElementMaker(namespace="http://x-road.eu/xsd/identifiers")
    object_type = "{http://x-road.eu/xsd/identifiers}objectType"
    headers = [
        xrd.client(ids.xRoadInstance("VN-TEST"), ids.memberClass("GOV"), ids.memberCode("000.00.00.H41"),
                   ids.subsystemCode("edoc"), **{object_type: "SUBSYSTEM"}),
        xrd.service(ids.xRoadInstance("VN-TEST"), ids.memberClass("GOV"), ids.memberCode("000.00.00.G22"),
                    ids.subsystemCode("example"), ids.serviceCode("echo"), **{object_type: "SERVICE"}),
        xrd.id("zeep-1"), xrd.protocolVersion("4.0"),
    ]
    client = zeep.Client(str(Path(__file__).parent / "fixtures" / "echo.wsdl"))
    service = client.create_service("{http://example.org/}EchoBinding", consumer(sandbox))
    assert service.echo(text="Xin chào từ zeep", _soapheaders=headers) == "Xin chào từ zeep"


def test_busy_relay_port_fails_start_up_with_one_coded_line(sandbox: dict, tmp_path: Path) -> None:
    """A second gateway with the consumer's configuration cannot bind its ports: exit 1, one coded line."""
    import os
    import shutil

    gw = next(g for g in sandbox["gateways"] if g["name"] == "gw-consumer")
    env = {**os.environ, "SOFTHSM2_CONF": gw["token"]["softhsm2_conf"]}
    config = Path(gw["config"])
    copy = tmp_path / "gateway.yaml"
    shutil.copy(config, copy)
    data = yaml.safe_load(copy.read_text())
    # Health and metrics move to free ports: only the relay's listeners collide with the running gateway.
    data["listeners"] = {"health": "tcp:0:interface=127.0.0.1", "metrics": "tcp:0:interface=127.0.0.1"}
    copy.write_text(yaml.safe_dump(data))
    out = subprocess.run([*GW, "run", "-c", str(copy)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "listen" in errors[0], out.stderr[-2000:]


def test_100_mb_attachment_streams_in_bounded_memory(sandbox: dict) -> None:
    """A 100 MB attachment goes through both gateways and back; neither gateway's peak memory grows
    with it (bodies are spooled to disk and streamed with back-pressure, never held whole)."""
    import hashlib
    import http.client
    import os
    from urllib.parse import urlsplit

    def peak_kib(pid: int) -> int:
        line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmHWM"))
        return int(line.split()[1])

    pids = [g["pid"] for g in sandbox["gateways"]]
    before = [peak_kib(p) for p in pids]
    url = urlsplit(consumer(sandbox))
    boundary = "BigBoundary7"
    head = (f"--{boundary}\r\nContent-Type: text/xml; charset=utf-8\r\n\r\n").encode() + envelope() + \
        f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    block = os.urandom(1 << 20)
    size = 100 * len(block)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
    conn.putrequest("POST", "/")
    conn.putheader("Content-Type", f'multipart/related; type="text/xml"; boundary="{boundary}"')
    conn.putheader("Content-Length", str(len(head) + size + len(tail)))
    conn.endheaders()
    conn.send(head)
    sent = hashlib.sha256()
    for _ in range(100):
        conn.send(block)
        sent.update(block)
    conn.send(tail)
    response = conn.getresponse()
    assert response.status == 200
    received = hashlib.sha256()
    total = 0
    while chunk := response.read(1 << 20):
        total += len(chunk)
        received.update(chunk)
    assert total > size
    after = [peak_kib(p) for p in pids]
    for b, a in zip(before, after, strict=True):
        assert a - b < 40 * 1024, (before, after)  # far less than the 100 MB that went through
    # logged on both sides under the sandbox's policy: cut to 10 MiB, the full size recorded
    for name in ("gw-consumer", "gw-provider"):
        rows = _log_rows(sandbox, name, "SELECT direction, attachments_size, truncated FROM logrecord "
                                        "WHERE attachments_size >= ?", (size,))
        assert sorted(rows) == [("request", size, 1), ("response", size, 1)], (name, rows)


def _reload_until(pid: int, probe: Callable[[], str], wanted: str, timeout: float = 30.0) -> str:
    """SIGHUP the gateway ``pid``, then poll ``probe()`` until it returns ``wanted``.

    A reloading gateway may refuse a call or two, so a failed probe counts as "not yet".
    Returns the last answer, for the caller to assert on.
    """
    import os
    import signal
    import time

    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        try:
            seen = probe()
        except (AssertionError, OSError):
            seen = ""
        if seen == wanted:
            break
        time.sleep(0.5)
    return seen


def test_access_rights_change_on_reload(sandbox: dict, tmp_path: Path) -> None:
    """SIGHUP applies a changed clients: section (access rights) without a restart."""
    provider = next(g for g in sandbox["gateways"] if g["name"] == "gw-provider")
    config = Path(provider["config"])
    original = config.read_text()
    data = yaml.safe_load(original)
    example = next(c for c in data["clients"] if c["id"].endswith("/example"))
    example["access"] = [a for a in example["access"] if "echo" not in a.get("services", [])] + [
        {"subject": "VN-TEST/GOV/000.00.00.H41/edoc", "services": ["items"]}]

    def echo_fault() -> str:
        return faultcode(call(consumer(sandbox), envelope())[2])

    def echo_answer() -> str:
        return "echoResponse" if b"echoResponse" in call(consumer(sandbox), envelope())[2] else "other"

    try:
        config.write_text(yaml.safe_dump(data))
        code = _reload_until(provider["pid"], echo_fault, "Server.ServerProxy.AccessDenied")
        assert code == "Server.ServerProxy.AccessDenied"
    finally:
        config.write_text(original)
        answer = _reload_until(provider["pid"], echo_answer, "echoResponse")
    assert answer == "echoResponse"


def test_a_message_that_cannot_be_logged_is_refused_and_logging_recovers(sandbox: dict) -> None:
    """The provider's message log moved to PostgreSQL (a reload), with the database down: every
    request is refused with LoggingFailed and never reaches the service; once PostgreSQL is up the
    next request goes through, logged there, with no restart."""
    from pgcluster import pg_cluster

    provider = next(g for g in sandbox["gateways"] if g["name"] == "gw-provider")
    config = Path(provider["config"])
    original = config.read_text()
    service_log = Path(sandbox["dir"]) / "logs" / "example.log"

    def served() -> int:
        return service_log.read_text(errors="replace").count("POST /soap")

    def echo_fault() -> str:
        return faultcode(call(consumer(sandbox), envelope(qid="db-down"))[2])

    with pg_cluster() as cluster:
        data = yaml.safe_load(original)
        data["database"] = {"url": str(cluster)}
        cluster.stop()
        try:
            config.write_text(yaml.safe_dump(data))
            code = _reload_until(provider["pid"], echo_fault, "Server.ServerProxy.LoggingFailed.DatabaseError")
            assert code == "Server.ServerProxy.LoggingFailed.DatabaseError"
            before = served()
            status, _ctype, body = call(consumer(sandbox), envelope(qid="db-down-2"))
            assert faultcode(body) == "Server.ServerProxy.LoggingFailed.DatabaseError", body
            assert served() == before  # refused before the service was called
            cluster.start()
            status, _ctype, body = call(consumer(sandbox), envelope(qid="db-up", text="sau sự cố"))
            assert status == 200 and b"echoResponse" in body, body
            import psycopg

            with psycopg.connect(str(cluster)) as db:
                rows = db.execute("SELECT side, direction FROM logrecord WHERE query_id = 'db-up' ORDER BY id"
                                  ).fetchall()
            assert rows == [("server", "request"), ("server", "response")]
        finally:
            config.write_text(original)
            answer = _reload_until(provider["pid"], lambda: faultcode(call(consumer(sandbox), envelope())[2])
                                   if b"Fault" in call(consumer(sandbox), envelope())[2] else "ok", "ok")
    assert answer == "ok"


def test_tsa_down_beyond_the_failure_period_refuses_messages_until_it_is_back(sandbox: dict) -> None:
    """The TSA process stopped (SIGSTOP: its requests time out): after the acceptable failure period
    the consumer refuses messages with LoggingFailed.TimestamperFailed and its health check fails;
    once the TSA runs again, stamping and messaging recover by themselves."""
    import os
    import signal
    import time

    consumer_gw = next(g for g in sandbox["gateways"] if g["name"] == "gw-consumer")
    config = Path(consumer_gw["config"])
    original = config.read_text()
    data = yaml.safe_load(original)
    data["message_log"] = {**data.get("message_log", {}), "timestamp_interval": "1s",
                           "timestamp_failure_period": "3s", "tsa_timeout": "1s"}
    tsa_pid = int(sandbox["tsas"][0]["pid"])

    def answer() -> str:
        return echo_or_fault(sandbox, "tsa-outage")

    def health() -> int:
        return http_get(consumer_gw["health"])[0]

    try:
        config.write_text(yaml.safe_dump(data))
        assert _reload_until(consumer_gw["pid"], answer, "ok") == "ok"
        os.kill(tsa_pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 40
            seen = answer()
            while seen != "Server.ClientProxy.LoggingFailed.TimestamperFailed" and time.monotonic() < deadline:
                time.sleep(0.5)
                seen = answer()
            assert seen == "Server.ClientProxy.LoggingFailed.TimestamperFailed"
            _s, _c, body = call(consumer(sandbox), envelope(qid="tsa-outage"))
            assert b"Cannot time-stamp messages" in body
            assert health() == 500
        finally:
            os.kill(tsa_pid, signal.SIGCONT)
        deadline = time.monotonic() + 40
        seen = answer()
        while seen != "ok" and time.monotonic() < deadline:
            time.sleep(0.5)
            seen = answer()
        assert seen == "ok"
        unstamped = _log_rows(sandbox, "gw-consumer", "SELECT COUNT(*) FROM logrecord WHERE timestamp_id IS NULL "
                                                      "AND created_at < ?", (time.time() - 5,))
        deadline = time.monotonic() + 20
        while unstamped[0][0] and time.monotonic() < deadline:
            time.sleep(0.5)
            unstamped = _log_rows(sandbox, "gw-consumer", "SELECT COUNT(*) FROM logrecord "
                                                          "WHERE timestamp_id IS NULL AND created_at < ?",
                                  (time.time() - 5,))
        assert unstamped == [(0,)]  # what was logged during the outage got stamped afterwards
    finally:
        config.write_text(original)
        assert _reload_until(consumer_gw["pid"], answer, "ok") == "ok"


def test_a_full_disk_under_the_log_fails_closed_and_recovers_when_space_returns(sandbox: dict,
                                                                              tmp_path: Path) -> None:
    """The provider's log on a small tmpfs: filled up, requests are refused at once (LoggingFailed,
    the service not called); space freed, the next request is logged and served, no restart.  Then
    a log on a read-only file system: refused; the file system made writable: served."""
    import os
    import time

    provider = next(g for g in sandbox["gateways"] if g["name"] == "gw-provider")
    config = Path(provider["config"])
    original = config.read_text()
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True, timeout=30)
    mounted = [disk]
    data = yaml.safe_load(original)
    data["database"] = {"url": f"sqlite://{disk}/gateway.db"}

    def echo() -> str:
        return echo_or_fault(sandbox, "disk")

    def health() -> int:
        return http_get(provider["health"])[0]

    try:
        config.write_text(yaml.safe_dump(data))
        assert _reload_until(provider["pid"], echo, "ok") == "ok"
        assert (disk / "gateway.db").exists()
        filler = disk / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        service_log = Path(sandbox["dir"]) / "logs" / "example.log"
        served = service_log.read_text(errors="replace").count("POST /soap")
        started = time.monotonic()
        _status, _ctype, body = call(consumer(sandbox), envelope(qid="disk-full", text="x" * 200_000))
        elapsed = time.monotonic() - started
        assert faultcode(body) == "Server.ServerProxy.LoggingFailed.DatabaseError", body[:500]
        assert b"full" in body and elapsed < 5.0  # no waiting for space: refused at once
        assert service_log.read_text(errors="replace").count("POST /soap") == served  # never passed on
        assert health() == 500  # the health check probes with a write: still full
        os.unlink(filler)
        deadline = time.monotonic() + 10
        while health() != 200 and time.monotonic() < deadline:  # healthy again before any message
            time.sleep(0.3)
        assert health() == 200
        assert echo() == "ok"  # space is back: logged and served
        # a log on a file system mounted read-only: refused; made writable: served, no restart
        ro = tmp_path / "ro"
        ro.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,ro", "tmpfs", str(ro)], check=True, timeout=30)
        mounted.append(ro)
        data["database"] = {"url": f"sqlite://{ro}/gateway.db"}
        config.write_text(yaml.safe_dump(data))
        code = _reload_until(provider["pid"], echo, "Server.ServerProxy.LoggingFailed.DatabaseError")
        assert code == "Server.ServerProxy.LoggingFailed.DatabaseError"
        subprocess.run(["mount", "-o", "remount,rw", str(ro)], check=True, timeout=30)
        assert echo() == "ok" and (ro / "gateway.db").exists()
    finally:
        config.write_text(original)
        _reload_until(provider["pid"], echo, "ok")
        for path in mounted:
            subprocess.run(["umount", "-l", str(path)], timeout=30)


def test_synchronous_time_stamping_stamps_before_answering(sandbox: dict) -> None:
    """message_log.timestamp_immediately: when the answer arrives, the consumer's records of the
    exchange already carry their time-stamps (over their signature values)."""
    consumer_gw = next(g for g in sandbox["gateways"] if g["name"] == "gw-consumer")
    config = Path(consumer_gw["config"])
    original = config.read_text()
    data = yaml.safe_load(original)
    data["message_log"] = {**data.get("message_log", {}), "timestamp_immediately": True,
                           "timestamp_interval": "1h"}

    def stamped_at_once() -> str:
        qid = "sync-" + str(random.randint(0, 1 << 30))
        _s, _c, body = call(consumer(sandbox), envelope(qid=qid))
        if b"echoResponse" not in body:
            return "fault"
        rows = _log_rows(sandbox, "gw-consumer", "SELECT r.direction, r.ts_hash_chain IS NULL, "
                                                 "t.hash_chain_result FROM logrecord r JOIN tsrecord t "
                                                 "ON t.id = r.timestamp_id WHERE r.query_id = ?", (qid,))
        return "stamped" if sorted(rows) == [("request", 1, b""), ("response", 1, b"")] else f"not yet {rows}"

    try:
        config.write_text(yaml.safe_dump(data))
        assert _reload_until(consumer_gw["pid"], stamped_at_once, "stamped") == "stamped"
    finally:
        config.write_text(original)
        _reload_until(consumer_gw["pid"], lambda: echo_or_fault(sandbox), "ok")


def test_asic_force_time_stamps_at_once(sandbox: dict, tmp_path: Path) -> None:
    """With stamping far away (interval 1 h), /asic answers 503 for a new query; with &force the
    gateway time-stamps its records at once and the containers verify offline."""
    import io
    import zipfile

    from gateway.globalconf.disk import read_conf_dir
    from protocols.asic import verify_container

    consumer_gw = next(g for g in sandbox["gateways"] if g["name"] == "gw-consumer")
    config = Path(consumer_gw["config"])
    original = config.read_text()
    data = yaml.safe_load(original)
    data["message_log"] = {**data.get("message_log", {}), "timestamp_interval": "1h"}
    base = (consumer(sandbox) + "asic?queryId={qid}&xRoadInstance=VN-TEST&memberClass=GOV"
            "&memberCode=000.00.00.H41&subsystemCode=edoc")

    def unstamped_answer() -> str:
        qid = "force-" + str(random.randint(0, 1 << 30))
        _s, _c, body = call(consumer(sandbox), envelope(qid=qid))
        if b"echoResponse" not in body:
            return "fault"
        return qid if http_get(base.format(qid=qid))[0] == 503 else "stamped already"

    try:
        config.write_text(yaml.safe_dump(data))
        qid = ""
        for _ in range(3):  # the reload takes effect within a call or two
            qid = _reload_until(consumer_gw["pid"], unstamped_answer, "never", timeout=5) or unstamped_answer()
            if qid.startswith("force-"):
                break
        assert qid.startswith("force-"), qid
        code, body = http_get(base.format(qid=qid) + "&force")
        assert code == 200, body
        conf = read_conf_dir(Path(consumer_gw["globalconf"]))
        with zipfile.ZipFile(io.BytesIO(body)) as z:
            assert len(z.namelist()) == 2
            for name in z.namelist():
                assert verify_container(z.read(name), conf).tsa_name == "tsa-1"
    finally:
        config.write_text(original)
        _reload_until(consumer_gw["pid"], lambda: echo_or_fault(sandbox), "ok")


def test_fault_dialect_follows_the_configuration(sandbox: dict) -> None:
    """faults.dialect: snake gives X-Road 7.8's lower snake_case codes (applied on SIGHUP)."""
    gw = next(g for g in sandbox["gateways"] if g["name"] == "gw-consumer")
    config = Path(gw["config"])
    original = config.read_text()
    data = yaml.safe_load(original)
    data["faults"] = {"dialect": "snake"}

    def version_fault() -> str:
        return faultcode(call(consumer(sandbox), envelope(version="3.1"))[2])

    try:
        config.write_text(yaml.safe_dump(data))
        code = _reload_until(gw["pid"], version_fault, "client.invalid_protocol_version")
        assert code == "client.invalid_protocol_version"
    finally:
        config.write_text(original)
        _reload_until(gw["pid"], version_fault, "Client.InvalidProtocolVersion")
    assert version_fault() == "Client.InvalidProtocolVersion"
