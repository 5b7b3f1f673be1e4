"""Incremental multipart parsing: X-Road's SwA/MTOM vectors, hostile input, 100 MB streaming."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.xroad.mime import (
    Headers,
    MimeError,
    MultipartEnd,
    MultipartEvent,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    encode_multipart,
    parse_content_type,
)

SOAP_DIR = Path(__file__).resolve().parent / "vectors" / "xroad" / "soap-messages"
JETTY = "jetty771207119h3h10dty"


def parse_all(boundary: str, data: bytes, chunk: int = 7, **limits: int) -> list[tuple[Headers, bytes]]:
    parser = MultipartParser(boundary, **limits)  # type: ignore[arg-type]
    events: list[MultipartEvent] = []
    for i in range(0, len(data), chunk):
        events += parser.feed(data[i:i + chunk])
    events += parser.close()
    parts: list[tuple[Headers, bytes]] = []
    current = bytearray()
    for ev in events:
        if isinstance(ev, PartStart):
            current = bytearray()
            headers = ev.headers
        elif isinstance(ev, PartData):
            current += ev.data
        elif isinstance(ev, PartEnd):
            assert ev.size == len(current)
            parts.append((headers, bytes(current)))
    assert isinstance(events[-1], MultipartEnd) and events[-1].parts == len(parts)
    return parts


@pytest.mark.parametrize(("name", "count", "soap_type"), [
    ("attachm.query", 2, "text/xml"), ("attachments.query", 4, "text/xml"),
    ("attachm-mtom.query", 2, "application/xop+xml"), ("attachm2-utf8bom-inside.query", 2, "text/xml"),
    ("attachm.answer", None, None), ("soapfault-mtom.answer", 1, "application/xop+xml"),
])
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_x_road_vectors(name: str, count: int | None, soap_type: str | None, chunk: int) -> None:
    data = (SOAP_DIR / name).read_bytes()
    if count is None:  # a plain SOAP answer: no delimiter at all
        with pytest.raises(MimeError) as info:
            parse_all(JETTY, data, chunk)
        assert info.value.code == "mime.no_parts"
        return
    parts = parse_all(JETTY, data, chunk)
    assert len(parts) == count
    ct = parts[0][0].content_type
    assert ct is not None and ct.media_type == soap_type
    assert parts[0][1].lstrip(b"\xef\xbb\xbf").startswith(b"<?xml")
    assert (b"\n--" + JETTY.encode()) not in parts[0][1]


def test_crlf_lf_padding_and_near_boundaries() -> None:
    body = (b"preamble\r\n--b  \t\r\nContent-Type: a/b\r\nX-Long: one\r\n two\r\n\r\n--bX is data\r\n--b\x00 no"
            b"\r\n--b\nContent-Type: c/d\n\nline\n--b--\r\nepilogue")
    for chunk in (1, 2, 3, 100):
        parts = parse_all("b", body, chunk)
        assert [p[1] for p in parts] == [b"--bX is data\r\n--b\x00 no", b"line"]
        assert parts[0][0].get("x-long") == "one two"


def test_writer_round_trip() -> None:
    parts = [(Headers((("Content-Type", "text/xml"),)), [b"<a/>"]),
             (Headers((("Content-Type", "application/octet-stream"),)), [b"\r\n--bnd", b"x" * 1000])]
    data = b"".join(encode_multipart("bnd", parts))
    got = parse_all("bnd", data, 13)
    assert [g[1] for g in got] == [b"<a/>", b"\r\n--bnd" + b"x" * 1000]


@pytest.mark.parametrize(("data", "limits", "code"), [
    (b"--b\r\nContent-Type: a/b\r\n\r\nabc", {}, "mime.truncated"),
    (b"--b\r\nContent-Type: a/b\r\n", {}, "mime.truncated"),
    (b"", {}, "mime.no_parts"),
    (b"--b--\r\n", {}, "mime.no_parts"),
    (b"x" * 70_000, {}, "mime.preamble_too_large"),
    (b"--b\r\n" + b"X-A: " + b"a" * 20_000 + b"\r\n\r\n", {}, "mime.header_too_large"),
    (b"--b\r\n" + b"X-A: " + b"a" * 20_000, {}, "mime.header_too_large"),
    (b"--b\r\n" + b"X-A: 1\r\n" * 65 + b"\r\n--b--", {}, "mime.too_many_headers"),
    (b"--b\r\nno colon here\r\n\r\n--b--", {}, "mime.malformed_header"),
    (b"--b\r\n continuation\r\n\r\n--b--", {}, "mime.malformed_header"),
    (b"--b\r\nBad Name: x\r\n\r\n--b--", {}, "mime.malformed_header"),
    (b"--b\r\n\r\n" + b"x" * 2000 + b"\r\n--b--", {"max_part_bytes": 1000}, "mime.part_too_large"),
    (b"--b\r\n\r\n\r\n--b\r\n\r\n\r\n--b\r\n\r\n\r\n--b--", {"max_parts": 2}, "mime.too_many_parts"),
    (b"--b\r\n\r\nx\r\n--b--\r\n" + b"e" * 70_000, {}, "mime.epilogue_too_large"),
])
def test_hostile_input(data: bytes, limits: dict[str, int], code: str) -> None:
    for chunk in (1, 4096):
        with pytest.raises(MimeError) as info:
            parse_all("b", data, chunk, **limits)
        assert info.value.code == code


def test_bad_boundary_and_reuse_after_error() -> None:
    for bad in ("", "a\r\nb", "x" * 201):
        with pytest.raises(MimeError):
            MultipartParser(bad)
    parser = MultipartParser("b")
    with pytest.raises(MimeError):
        parser.feed(b"--b\r\nno colon\r\n")
    with pytest.raises(MimeError):
        parser.feed(b"more")


def test_content_type_parsing() -> None:
    ct = parse_content_type('Multipart/Related; start-info="application/soap+xml"; type="application/xop+xml"; '
                            'boundary="jetty;1 \\"q\\""; charset=UTF-8')
    assert ct is not None and ct.media_type == "multipart/related" and ct.is_multipart
    assert ct.boundary == 'jetty;1 "q"' and ct.charset == "UTF-8" and ct.params["type"] == "application/xop+xml"
    assert parse_content_type("  ") is None and parse_content_type(None) is None
    blah = parse_content_type("blah")
    assert blah is not None and blah.media_type == "blah" and blah.boundary is None


HUNDRED_MB = 100 * 1024 * 1024


def _generated(chunk: bytes, total: int) -> Iterator[bytes]:
    yield (b"--stream\r\nContent-Type: text/xml\r\n\r\n<a/>\r\n"
           b"--stream\r\nContent-Type: application/octet-stream\r\n\r\n")
    sent = 0
    while sent < total:
        yield chunk
        sent += len(chunk)
    yield b"\r\n--stream--\r\n"


def test_100_mb_attachment_streams_in_constant_memory() -> None:
    # a chunk that contains near-boundaries, so the search has work to do
    block = (b"\r\n--strea" + bytes(range(256)) * 256)[:65536]
    parser = MultipartParser("stream")
    digest = hashlib.sha256()
    size = 0
    tracemalloc.start()
    try:
        for piece in _generated(block, HUNDRED_MB):
            for ev in parser.feed(piece):
                if isinstance(ev, PartData) and ev.index == 1:
                    digest.update(ev.data)
                    size += len(ev.data)
        events = parser.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert events == [] and parser.finished
    assert size == HUNDRED_MB
    expected = hashlib.sha256()
    for _ in range(HUNDRED_MB // len(block)):
        expected.update(block)
    assert digest.digest() == expected.digest()
    assert peak < 1024 * 1024, f"peak traced memory {peak} bytes"
