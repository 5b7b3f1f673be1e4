"""The relay's HTTP site: bodies are passed on as they are, never parsed as HTML forms."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Site

from gateway.relay.component import _Site


class _Capture(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[Any, bytes]] = []

    def render(self, request: Any) -> bytes:
        self.seen.append((dict(request.args), request.content.read()))
        return b"ok"


def _post(site: Site, content_type: bytes, body: bytes) -> None:
    proto = site.buildProtocol(None)
    proto.makeConnection(StringTransport())
    proto.dataReceived(b"POST /r1/x HTTP/1.1\r\nHost: gw\r\nContent-Type: " + content_type
                       + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


FORM = (b"multipart/form-data; boundary=B",
        b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--B--\r\n")
URLENCODED = (b"application/x-www-form-urlencoded", b"a=1&b=2")


@pytest.mark.parametrize(("content_type", "body"), [FORM, URLENCODED])
def test_relay_site_passes_form_bodies_on_unparsed(content_type: bytes, body: bytes) -> None:
    relay, plain = _Capture(), _Capture()
    _post(_Site(relay), content_type, body)
    _post(Site(plain), content_type, body)
    assert relay.seen == [({}, body)]
    # what a plain twisted.web site does instead: parse the form (a multipart body whole in memory)
    assert plain.seen[0][0] == ({b"a": [b"1"]} if body is FORM[1] else {b"a": [b"1"], b"b": [b"2"]})


def _self_signed(name: str) -> bytes:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_certificate_files_are_read_again_only_when_they_change(tmp_path: Any) -> None:
    import os

    from gateway.relay.proxy import _load_cert

    path = tmp_path / "auth.pem"
    path.write_bytes(_self_signed("first"))
    first = _load_cert(path)
    assert first is not None and _load_cert(path) is first  # parsed once
    path.write_bytes(_self_signed("second, a renewed certificate"))
    os.utime(path, ns=(1, 1))  # even with an old time stamp: the size changed
    renewed = _load_cert(path)
    assert renewed is not None and renewed is not first
    assert renewed.subject.rfc4514_string() == "CN=second\\, a renewed certificate"
    path.write_bytes(b"not a certificate")
    assert _load_cert(path) is None and _load_cert(tmp_path / "missing.pem") is None
