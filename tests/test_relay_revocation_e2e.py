"""Revoked authentication certificates stop the relay, on a sandbox of its own (it ends revoked):
the consumer checks the provider's certificate with the OCSP response fetched from the provider's
port 5577 and refuses its answer once the CA says it is revoked."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.test_relay_e2e import call, consumer, envelope, faultcode, sandbox_down, sandbox_up

GW = [sys.executable, "-m", "gateway"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    d = tmp_path_factory.mktemp("revocation-sandbox") / "sb"
    data, _net = sandbox_up(d)
    try:
        yield data
    finally:
        sandbox_down(d)


def test_revoked_provider_certificate_is_refused_by_the_consumer(sandbox: dict) -> None:
    provider = next(g for g in sandbox["gateways"] if g["name"] == "gw-provider")
    cert = x509.load_pem_x509_certificate(Path(provider["tls"]["cert"]).read_bytes())
    # Nothing was called yet: the consumer has no OCSP verdict about the provider cached.
    out = subprocess.run([*GW, "pki", "revoke", str(Path(sandbox["ca"]["root"]).parent), "--serial",
                          f"{cert.serial_number:X}", "--reason", "keyCompromise"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    # The provider refreshes its own OCSP response (every 10 s in the sandbox) and then serves "revoked"
    # on its port 5577 – where the consumer will look before accepting the provider's answer.
    sha1 = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    deadline = time.monotonic() + 60
    served = b""
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{provider['ocsp']}?cert={sha1}", timeout=10) as r:
            served = r.read()
        if _status(served, cert, sandbox) == "revoked":
            break
        time.sleep(1)
    assert _status(served, cert, sandbox) == "revoked"
    _s, _ct, body = call(consumer(sandbox), envelope())
    assert faultcode(body) == "Server.ClientProxy.SslAuthenticationFailed", body
    assert b"revoked" in body


def _status(multipart: bytes, cert: x509.Certificate, sandbox: dict) -> str:
    """The status in the first OCSP response of a 5577 answer ('' if there is none)."""
    from datetime import UTC, datetime

    from protocols import ocsp
    from protocols.errors import VdxpError

    issuer = x509.load_pem_x509_certificate(Path(sandbox["ca"]["intermediate"]).read_bytes())
    start = multipart.find(b"\r\n\r\n")
    end = multipart.find(b"\r\n--", start)
    if start < 0 or end < 0:
        return ""
    try:
        return ocsp.verify_response(multipart[start + 4:end], cert=cert, issuer=issuer, at=datetime.now(UTC)).status
    except VdxpError:
        return ""
