"""TLS between gateways on real sockets: registered certificates only, X-Road's suites."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.web.client import Agent
from twisted.web.resource import Resource
from twisted.web.server import Site

from gateway.config import DEFAULT_TLS_CIPHERS, TlsConfig
from gateway.relay.tls import PeerPolicy, ServerTls, cert_sha256
from tests.pki_support import TestCa


class Identity:
    def __init__(self, ca: TestCa, name: str, tmp: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = ca.issue(self.key.public_key(), name)
        self.key_path = tmp / f"{name}.key"
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
        os.close(fd)
        self.cert_path = tmp / f"{name}.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.der = self.cert.public_bytes(serialization.Encoding.DER)

    def tls(self, tls13: bool = True) -> TlsConfig:
        return TlsConfig(key=self.key_path, cert=self.cert_path, ciphers=DEFAULT_TLS_CIPHERS, tls13=tls13)


class Peer(Resource):
    isLeaf = True

    def render_GET(self, request):
        from cryptography.x509.oid import NameOID

        cert = request.transport.getPeerCertificate().to_cryptography()
        return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.encode()


@pytest.fixture
def ids(tmp_path: Path) -> dict[str, Identity]:
    ca = TestCa()
    return {n: Identity(ca, n, tmp_path) for n in ("provider", "consumer", "rogue")}


async def _serve(ids: dict[str, Identity], registered: set[bytes], tls13: bool = True):
    server = ServerTls(ids["provider"].tls(tls13), lambda der: cert_sha256(der) in registered)
    return await SSL4ServerEndpoint(reactor, 0, server, interface="127.0.0.1").listen(Site(Peer()))


async def _get(identity: Identity, port: int, expected: set[bytes]) -> bytes:
    import treq

    policy = PeerPolicy(identity.tls(), lambda host, p: expected)
    client = HTTPClient(Agent(reactor, contextFactory=policy))
    response = await client.get(f"https://127.0.0.1:{port}/")
    return await treq.content(response)


@pytest_twisted.ensureDeferred
async def test_registered_peers_talk(ids: dict[str, Identity]) -> None:
    port = await _serve(ids, {cert_sha256(ids["consumer"].der)})
    try:
        body = await _get(ids["consumer"], port.getHost().port, {cert_sha256(ids["provider"].der)})
        assert body == b"consumer"
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_unregistered_client_is_refused(ids: dict[str, Identity]) -> None:
    port = await _serve(ids, {cert_sha256(ids["consumer"].der)})
    try:
        with pytest.raises(Exception):  # noqa: B017 - the handshake fails (alert), whatever Twisted wraps it in
            await _get(ids["rogue"], port.getHost().port, {cert_sha256(ids["provider"].der)})
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_unexpected_server_certificate_is_refused(ids: dict[str, Identity]) -> None:
    port = await _serve(ids, {cert_sha256(ids["consumer"].der)})
    try:
        with pytest.raises(Exception):  # noqa: B017
            await _get(ids["consumer"], port.getHost().port, {cert_sha256(ids["rogue"].der)})
    finally:
        await port.stopListening()


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"])
@pytest_twisted.ensureDeferred
async def test_openssl_client_negotiates_xroad_suites(ids: dict[str, Identity], cipher: str) -> None:
    from twisted.internet.threads import deferToThread

    port = await _serve(ids, {cert_sha256(ids["consumer"].der)}, tls13=False)
    try:
        c = ids["consumer"]
        out = await deferToThread(subprocess.run, [
            "openssl", "s_client", "-connect", f"127.0.0.1:{port.getHost().port}", "-tls1_2", "-cipher", cipher,
            "-cert", str(c.cert_path), "-key", str(c.key_path), "-brief"], input="", capture_output=True,
            text=True, timeout=30)
        text = out.stdout + out.stderr
        assert "Protocol version: TLSv1.2" in text and f"Ciphersuite: {cipher}" in text, text
    finally:
        await port.stopListening()
