"""Reading SOAP requests with attachments: envelope validated, attachments spooled with digests."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from pathlib import Path

import pytest

from gateway.relay.intake import read_soap
from protocols.xroad.faults import XRoadFault

VECTORS = Path(__file__).parent / "vectors" / "xroad" / "soap-messages"
SIMPLE = (VECTORS / "simple.query").read_bytes()


def test_plain_soap_request() -> None:
    got = read_soap(io.BytesIO(SIMPLE), "text/xml; charset=utf-8", prefix=("Client",))
    assert got.message.header.client is not None and got.attachments == []


def test_attachments_stream_to_spool_with_digests() -> None:
    size = 20 * 1024 * 1024
    boundary = "b0undary"

    def chunks():
        yield (f"--{boundary}\r\nContent-Type: text/xml; charset=utf-8\r\n\r\n").encode() + SIMPLE
        yield f"\r\n--{boundary}\r\nContent-Type: application/pdf\r\nContent-ID: <a1>\r\n\r\n".encode()
        block = b"0123456789abcdef" * 4096
        for _ in range(size // len(block)):
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    tracemalloc.start()
    got = read_soap(chunks(), f'multipart/related; type="text/xml"; boundary={boundary}')
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(got.attachments) == 1
    att = got.attachments[0]
    expected = hashlib.sha512(b"0123456789abcdef" * (size // 16)).digest()
    assert att.size == size and att.digest == expected and att.headers.get("Content-ID") == "<a1>"
    assert hashlib.sha512(b"".join(att.chunks())).digest() == expected
    assert peak < 6 * 1024 * 1024, peak  # spooled to disk beyond 1 MiB, never whole in memory
    got.close()


def test_faults_carry_the_prefix() -> None:
    with pytest.raises(XRoadFault) as err:
        read_soap(io.BytesIO(b"<not-soap/>"), "text/xml", prefix=("Client",))
    assert err.value.faultcode().startswith("Client.")
    with pytest.raises(XRoadFault) as err:
        read_soap(io.BytesIO(SIMPLE), "application/json", prefix=("Client",))
    assert err.value.faultcode() == "Client.InvalidContentType"


def test_size_limit() -> None:
    with pytest.raises(XRoadFault) as err:
        read_soap(io.BytesIO(SIMPLE), "text/xml", prefix=("Client",), max_bytes=100)
    assert "exceeds" in err.value.faultstring
