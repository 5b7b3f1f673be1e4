"""End-to-end RFC 3161: real sockets on 127.0.0.1, the real ``openssl ts`` and ``vdxp-gateway tsa``.

(a) our TsaResource on a socket, queried by our TsaClient;
(b) our tokens verify with ``openssl ts -verify``, and ``openssl ts -query`` queries are served;
(c) tokens made by ``openssl ts -reply`` verify with our verifier;
(d) our client against broken servers: garbage, HTTP 500, rejection, silence, refused.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding
from treq.client import HTTPClient
from twisted.internet import protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from gateway.devtsa import DEV_POLICY_OID, TsaResource
from hsm.tsa import TsaClient
from protocols import tsp
from protocols.errors import TimestampError
from tests.test_tsp import Tsa, make_tsa

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "gateway"]


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


@dataclass
class Files:
    dir: Path
    tsa: Tsa
    ca_pem: Path
    tsa_pem: Path
    key_pem: Path
    data: Path


def write_pki(tmp_path: Path, mechanism: str) -> Files:
    tsa = make_tsa(mechanism)
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(tsa.ca_cert.public_bytes(Encoding.PEM))
    tsa_pem = tmp_path / "tsa.pem"
    tsa_pem.write_bytes(tsa.cert.public_bytes(Encoding.PEM))
    key_pem = tmp_path / "tsa.key"
    key_pem.write_bytes(
        tsa.key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(1000))
    return Files(tmp_path, tsa, ca_pem, tsa_pem, key_pem, data)


def openssl(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60)


def openssl_verify_token(f: Files, token: Path) -> None:
    """``openssl ts -verify`` of a bare token over ``f.data``.  OpenSSL's TS code verifies
    through its PKCS#7 layer, which knows only PKCS#1 v1.5 RSA signatures; RSA-PSS tokens
    are checked with ``openssl cms -verify`` (signature, chain, timeStamping purpose)."""
    if f.tsa.mechanism == "rsa-pss":
        out = f.dir / "tst-info.der"
        checked = openssl("cms", "-verify", "-binary", "-inform", "DER", "-in", token, "-CAfile", f.ca_pem,
                          "-certfile", f.tsa_pem, "-purpose", "timestampsign", "-out", out, cwd=f.dir)
        assert checked.returncode == 0 and "Verification successful" in checked.stderr, checked.stderr
        assert hashlib.sha512(f.data.read_bytes()).digest() in out.read_bytes() or hashlib.sha256(
            f.data.read_bytes()
        ).digest() in out.read_bytes()
        return
    checked = openssl("ts", "-verify", "-data", f.data, "-in", token, "-token_in", "-CAfile", f.ca_pem,
                      "-untrusted", f.tsa_pem, cwd=f.dir)
    assert checked.returncode == 0 and "Verification: OK" in checked.stdout, checked.stdout + checked.stderr


@pytest.fixture(params=["rsa-pkcs1", "rsa-pss", "ecdsa"])
def files(request: pytest.FixtureRequest, tmp_path: Path) -> Files:
    return write_pki(tmp_path, request.param)


@pytest.fixture
def pool() -> Iterator[Any]:
    p = HTTPConnectionPool(reactor(), persistent=False)
    yield p


@dataclass
class Server:
    url: str
    port: Any


@pytest_twisted.async_yield_fixture
async def serve() -> AsyncIterator[Any]:
    ports: list[Any] = []

    def start(resource: Resource | protocol.Factory) -> Server:
        factory = resource if isinstance(resource, protocol.Factory) else Site(resource)
        port = reactor().listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return Server(f"http://127.0.0.1:{port.getHost().port}/tsa", port)

    yield start
    for port in ports:
        stopped = port.stopListening()  # None when already stopped
        if stopped is not None:
            await stopped


def client(pool: Any, url: str, certs: list[Any], timeout: float = 10.0) -> TsaClient:
    return TsaClient(Agent(reactor(), pool=pool), reactor(), url, certs, timeout_seconds=timeout)


# ---------------------------------------------------------------------------------------------
# (a) our server, our client
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["rsa-pkcs1", "rsa-pss", "ecdsa"])
@pytest_twisted.ensureDeferred
async def test_our_client_our_server(tmp_path: Path, serve: Any, pool: Any, mechanism: str) -> None:
    f = write_pki(tmp_path, mechanism)
    server = serve(TsaResource(f.tsa.signer, f.tsa.cert, [f.tsa.ca_cert], reactor()))
    tsa = client(pool, server.url, [f.tsa.cert])
    data = f.data.read_bytes()
    serials = set()
    for hash_name in ("sha256", "sha512"):
        digest = hashlib.new(hash_name, data).digest()
        token = await tsa.timestamp(digest, hash_name)
        assert token.imprint == digest and token.policy == DEV_POLICY_OID
        serials.add(token.serial)
    assert len(serials) == 2
    await pool.closeCachedConnections()


# ---------------------------------------------------------------------------------------------
# (b) our tokens, openssl's verifier; openssl's queries, our server
# ---------------------------------------------------------------------------------------------


async def _post(pool: Any, url: str, body: bytes) -> tuple[int, bytes]:
    http = HTTPClient(Agent(reactor(), pool=pool))
    response = await http.post(url, data=body, headers={"Content-Type": ["application/timestamp-query"]})
    return response.code, await response.content()


@pytest_twisted.ensureDeferred
async def test_openssl_verifies_our_tokens(files: Files, serve: Any, pool: Any) -> None:
    f = files
    server = serve(TsaResource(f.tsa.signer, f.tsa.cert, [], reactor()))
    for hash_name in ("sha256", "sha512"):
        # a query made by openssl, answered by our server
        query = f.dir / f"req-{hash_name}.tsq"
        made = openssl("ts", "-query", "-data", f.data, f"-{hash_name}", "-cert", "-out", query, cwd=f.dir)
        assert made.returncode == 0, made.stderr
        code, body = await _post(pool, server.url, query.read_bytes())
        assert code == 200
        reply = f.dir / f"resp-{hash_name}.tsr"
        reply.write_bytes(body)
        # openssl prints what we put in
        text = openssl("ts", "-reply", "-in", reply, "-text", cwd=f.dir).stdout
        assert "Status: Granted." in text and DEV_POLICY_OID in text
        token_file = f.dir / f"token-{hash_name}.tst"
        assert openssl("ts", "-reply", "-in", reply, "-token_out", "-out", token_file, cwd=f.dir).returncode == 0
        openssl_verify_token(f, token_file)
        if f.tsa.mechanism == "rsa-pss":
            continue  # the remaining checks go through openssl's PKCS#7 verifier (no PSS)
        checked = openssl("ts", "-verify", "-data", f.data, "-in", reply, "-CAfile", f.ca_pem,
                          "-untrusted", f.tsa_pem, cwd=f.dir)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "Verification: OK" in checked.stdout
        # openssl also checks the query against the reply (nonce, imprint)
        checked = openssl("ts", "-verify", "-queryfile", query, "-in", reply, "-CAfile", f.ca_pem,
                          "-untrusted", f.tsa_pem, cwd=f.dir)
        assert "Verification: OK" in checked.stdout, checked.stdout + checked.stderr

    # a token obtained by our client, stored, verified by openssl as a bare token
    digest = hashlib.sha512(f.data.read_bytes()).digest()
    token = await client(pool, server.url, [f.tsa.cert]).timestamp(digest, "sha512")
    tst = f.dir / "timestamp.tst"
    tst.write_bytes(token.token_der)
    openssl_verify_token(f, tst)
    # a tampered token is refused by openssl too
    tampered = bytearray(token.token_der)
    tampered[-3] ^= 0x40
    tst.write_bytes(bytes(tampered))
    checked = openssl("ts", "-verify", "-data", f.data, "-in", tst, "-token_in", "-CAfile", f.ca_pem,
                      "-untrusted", f.tsa_pem, cwd=f.dir)
    assert checked.returncode != 0
    if f.tsa.mechanism != "rsa-pss":
        # and a different datum
        tst.write_bytes(token.token_der)
        f.data.write_bytes(b"other")
        checked = openssl("ts", "-verify", "-data", f.data, "-in", tst, "-token_in", "-CAfile", f.ca_pem,
                          "-untrusted", f.tsa_pem, cwd=f.dir)
        assert checked.returncode != 0
    await pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_openssl_bad_query_is_rejected(files: Files, serve: Any, pool: Any) -> None:
    f = files
    server = serve(TsaResource(f.tsa.signer, f.tsa.cert, [], reactor()))
    query = f.dir / "req.tsq"
    made = openssl("ts", "-query", "-data", f.data, "-sha1", "-cert", "-out", query, cwd=f.dir)
    assert made.returncode == 0, made.stderr
    code, body = await _post(pool, server.url, query.read_bytes())
    assert code == 200
    reply = f.dir / "resp.tsr"
    reply.write_bytes(body)
    text = openssl("ts", "-reply", "-in", reply, "-text", cwd=f.dir).stdout
    assert "Status: Rejected." in text and "unrecognized or unsupported algorithm identifier" in text
    await pool.closeCachedConnections()


# ---------------------------------------------------------------------------------------------
# (c) openssl's tokens, our verifier
# ---------------------------------------------------------------------------------------------


def tsa_cnf(f: Files, ess_alg: str) -> Path:
    (f.dir / "tsaserial").write_text("1000\n")
    cnf = f.dir / "tsa.cnf"
    cnf.write_text(
        f"""
[ tsa ]
default_tsa = tsa_config1

[ tsa_config1 ]
dir = {f.dir}
serial = $dir/tsaserial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/ca.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
other_policies = 1.2.3.4.5
digests = sha256, sha384, sha512
accuracy = secs:1, millisecs:500, microsecs:100
clock_precision_digits = 3
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = {ess_alg}
"""
    )
    return cnf


@pytest.mark.parametrize("mechanism", ["rsa-pkcs1", "ecdsa"])  # openssl ts signs RSA with PKCS#1 v1.5 only
@pytest.mark.parametrize("ess_alg", ["sha1", "sha256"])  # ESSCertID and ESSCertIDv2
def test_openssl_tokens_verify_with_ours(tmp_path: Path, mechanism: str, ess_alg: str) -> None:
    f = write_pki(tmp_path, mechanism)
    cnf = tsa_cnf(f, ess_alg)
    data = f.data.read_bytes()
    for i, hash_name in enumerate(("sha256", "sha384", "sha512")):
        digest = hashlib.new(hash_name, data).digest()
        nonce = 2**63 + i
        query = f.dir / "req.tsq"
        query.write_bytes(tsp.build_request(digest, hash_name, nonce=nonce, cert_req=True))
        reply = f.dir / "resp.tsr"
        made = openssl("ts", "-reply", "-config", cnf, "-queryfile", query, "-out", reply, cwd=f.dir)
        assert made.returncode == 0, made.stderr
        token = tsp.verify_response(reply.read_bytes(), digest=digest, hash_name=hash_name, nonce=nonce,
                                    tsa_certs=[f.tsa.cert])
        assert token.serial == 0x1001 + i and token.policy == "1.2.3.4.1" and token.nonce == nonce
        # the stored token verifies offline too
        tsp.verify_token(token.token_der, digest=digest, hash_name=hash_name, tsa_certs=[f.tsa.cert])
        with pytest.raises(TimestampError) as info:
            tsp.verify_response(reply.read_bytes(), digest=digest, hash_name=hash_name, nonce=nonce + 1,
                                tsa_certs=[f.tsa.cert])
        assert info.value.code == "tsa.nonce_mismatch"
    # an openssl query with openssl's own nonce, answered by openssl, verified as a token
    query = f.dir / "req2.tsq"
    assert openssl("ts", "-query", "-data", f.data, "-sha512", "-no_nonce", "-out", query, cwd=f.dir).returncode == 0
    reply = f.dir / "resp2.tsr"
    made = openssl("ts", "-reply", "-config", cnf, "-queryfile", query, "-out", reply, cwd=f.dir)
    assert made.returncode == 0, made.stderr
    token = tsp.verify_response(reply.read_bytes(), digest=hashlib.sha512(data).digest(), hash_name="sha512",
                                nonce=None, tsa_certs=[f.tsa.cert])
    assert token.nonce is None


def test_openssl_token_from_other_tsa_is_refused(tmp_path: Path) -> None:
    f = write_pki(tmp_path, "rsa-pkcs1")
    other = make_tsa("ecdsa", name="Another TSA")
    cnf = tsa_cnf(f, "sha256")
    digest = hashlib.sha256(b"x").digest()
    query = tmp_path / "req.tsq"
    query.write_bytes(tsp.build_request(digest, "sha256", nonce=5))
    reply = tmp_path / "resp.tsr"
    assert openssl("ts", "-reply", "-config", cnf, "-queryfile", query, "-out", reply, cwd=tmp_path).returncode == 0
    with pytest.raises(TimestampError) as info:
        tsp.verify_response(reply.read_bytes(), digest=digest, hash_name="sha256", nonce=5, tsa_certs=[other.cert])
    assert info.value.code == "tsa.unknown_signer"


# ---------------------------------------------------------------------------------------------
# (d) broken servers
# ---------------------------------------------------------------------------------------------


class Canned(Resource):
    isLeaf = True

    def __init__(self, code: int, body: bytes, content_type: bytes = b"application/timestamp-reply") -> None:
        super().__init__()
        self.code, self.body, self.content_type = code, body, content_type

    def render_POST(self, request: Any) -> bytes:
        request.setResponseCode(self.code)
        request.setHeader(b"content-type", self.content_type)
        return self.body


class Silent(protocol.Protocol):
    """Accepts the connection, reads the request, never answers."""

    def dataReceived(self, data: bytes) -> None:
        pass


class Dribble(protocol.Protocol):
    """Sends the response headers and one byte of body, then stalls."""

    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/timestamp-reply\r\nContent-Length: 100\r\n\r\n0"
            )


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: Canned(200, os.urandom(300)), "tsa.malformed"),
        (lambda: Canned(500, b"internal error"), "tsa.http_error"),
        (lambda: Canned(200, tsp.rejection("rejection", "time_not_available", "clock unsynchronised")),
         "tsa.rejected"),
        (lambda: Canned(200, b"\x30" * (2 << 20)), "tsa.response_too_large"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_client_against_broken_servers(tmp_path: Path, serve: Any, pool: Any, make: Any, code: str) -> None:
    f = write_pki(tmp_path, "rsa-pkcs1")
    server = serve(make())
    with pytest.raises(TimestampError) as info:
        await client(pool, server.url, [f.tsa.cert]).timestamp(hashlib.sha512(b"x").digest(), "sha512")
    assert info.value.code == code, str(info.value)
    await pool.closeCachedConnections()


@pytest.mark.parametrize("behaviour", [Silent, Dribble])
@pytest_twisted.ensureDeferred
async def test_client_timeout_no_hang(tmp_path: Path, serve: Any, pool: Any, behaviour: Any) -> None:
    f = write_pki(tmp_path, "rsa-pkcs1")
    server = serve(protocol.Factory.forProtocol(behaviour))
    started = reactor().seconds()
    with pytest.raises(TimestampError) as info:
        await client(pool, server.url, [f.tsa.cert], timeout=0.5).timestamp(hashlib.sha512(b"x").digest(), "sha512")
    elapsed = reactor().seconds() - started
    assert info.value.code == "tsa.timeout"
    assert 0.4 <= elapsed < 5
    await pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_client_connection_refused(tmp_path: Path, serve: Any, pool: Any) -> None:
    f = write_pki(tmp_path, "rsa-pkcs1")
    server = serve(Canned(200, b""))
    url = server.url
    await server.port.stopListening()
    with pytest.raises(TimestampError) as info:
        await client(pool, url, [f.tsa.cert]).timestamp(hashlib.sha512(b"x").digest(), "sha512")
    assert info.value.code == "tsa.unreachable"


# ---------------------------------------------------------------------------------------------
# The CLI: vdxp-gateway tsa query
# ---------------------------------------------------------------------------------------------


async def run_cli(*args: str | Path) -> tuple[str, str, int]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    out, err, code = await getProcessOutputAndValue(
        CLI[0], [*CLI[1:], *map(str, args)], env=env, path=str(ROOT)
    )
    return out.decode(), err.decode(), code


@pytest_twisted.ensureDeferred
async def test_cli_query(files: Files, serve: Any) -> None:
    f = files
    server = serve(TsaResource(f.tsa.signer, f.tsa.cert, [], reactor()))
    out_file = f.dir / "token.tst"
    out, err, code = await run_cli("tsa", "query", "--url", server.url, "--cert", f.tsa_pem, "--data", f.data,
                                   "--out", out_file)
    assert code == 0, err
    assert "genTime: " in out and "serial: " in out and DEV_POLICY_OID in out
    openssl_verify_token(f, out_file)

    broken = serve(Canned(500, b"nope"))
    out, err, code = await run_cli("tsa", "query", "--url", broken.url, "--cert", f.tsa_pem, "--data", f.data)
    assert code == 1
    assert err.startswith("error: tsa.http_error:"), err

    other = make_tsa("ecdsa", name="Another TSA")
    other_pem = f.dir / "other.pem"
    other_pem.write_bytes(other.cert.public_bytes(Encoding.PEM))
    out, err, code = await run_cli("tsa", "query", "--url", server.url, "--cert", other_pem, "--data", f.data)
    assert code == 1 and "tsa.unknown_signer" in err, err

    out, err, code = await run_cli("tsa", "query", "--url", server.url, "--cert", f.dir / "missing.pem",
                                   "--data", f.data)
    assert code == 2 and "usage.invalid" in err, err


@pytest_twisted.ensureDeferred
async def test_cli_serve_usage_errors(tmp_path: Path) -> None:
    f = write_pki(tmp_path, "rsa-pkcs1")
    _, err, code = await run_cli("tsa", "serve", "--cert", f.tsa_pem, "--key-label", "tsa",
                                   "-c", tmp_path / "missing.yaml")
    assert code == 2 and err.startswith("error: usage.invalid:") and "missing.yaml" in err, err
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate")
    _, err, code = await run_cli("tsa", "serve", "--cert", garbage, "--key-label", "tsa", "-c", f.tsa_pem)
    assert code == 1 and "cert.unreadable" in err, err
    _, err, code = await run_cli("tsa", "serve", "--cert", f.tsa_pem)
    assert code == 2 and "usage.invalid" in err, err
