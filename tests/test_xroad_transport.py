"""The message transport protocol between gateways: encoder → decoder round trips with digests
checked against independent computations, X-Road's part order and faults, hostile input, and a
100 MB attachment in bounded memory."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from hsm.signer import SignedMessage
from protocols.xroad import rest
from protocols.xroad import transport as t
from protocols.xroad.faults import XRoadFault

VECTORS = Path(__file__).parent / "vectors" / "xroad"
SOAP = (VECTORS / "soap-messages" / "getstate.query").read_bytes()
REST_XML = (VECTORS / "signatures" / "non-batch-sig" / "message.xml").read_bytes()
REST_BODY = (VECTORS / "signatures" / "non-batch-sig" / "attachment1").read_bytes()
SIG = SignedMessage(b"<asic:XAdESSignatures/>", None, None, 1)
BATCH_SIG = SignedMessage(b"<asic:XAdESSignatures/>", b"<HashChainResult/>", b"<HashChain/>", 3)
FAULT_XML = XRoadFault("Server.ServerProxy.ServiceFailed.NetworkError", "boom").to_soap()
REQ, RESP = t.Direction.REQUEST, t.Direction.RESPONSE


def sha512(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()


def decode(body: bytes, content_type: str, direction: t.Direction = REQ, chunk: int = 4096,
           **kw: object) -> list[t.TransportEvent]:
    dec = t.TransportDecoder(content_type, direction, **kw)  # type: ignore[arg-type]
    events: list[t.TransportEvent] = []
    for i in range(0, len(body), chunk):
        events += dec.feed(body[i:i + chunk])
    events += dec.close()
    return events


def code_of(exc: pytest.ExceptionInfo[XRoadFault]) -> str:
    return exc.value.faultcode()


def soap_request(attachments: int = 0, sig: SignedMessage = SIG, ocsp: int = 2) -> tuple[t.TransportEncoder, bytes]:
    enc = t.TransportEncoder(REQ)
    out = [enc.ocsp_response(b"\x30\x03OCSP%d" % i) for i in range(ocsp)]
    out.append(enc.soap(SOAP, "text/xml; charset=UTF-8", [("Content-Transfer-Encoding", "8bit")]))
    for i in range(attachments):
        out += enc.attachment(f"application/x-test{i}", [b"part-%d-" % i, b"x" * (1000 * i)],
                              [("Content-ID", f"<att{i}@example>"), ("X-Note", f"n{i}")])
    out.append(enc.signature(sig))
    return enc, b"".join(out)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("chunk", [1, 7, 100, 1 << 20])
def test_soap_round_trip(chunk: int) -> None:
    enc, body = soap_request()
    assert body.startswith(b"--" + enc.boundary.encode() + b"\r\ncontent-type: application/ocsp-response\r\n\r\n")
    assert body.endswith(b"\r\n--" + enc.boundary.encode() + b"--\r\n")
    events = decode(body, enc.content_type, chunk=chunk)
    ocsp = [e.der for e in events if isinstance(e, t.OcspResponsePart)]
    assert ocsp == [b"\x30\x03OCSP0", b"\x30\x03OCSP1"]
    soap_part = next(e for e in events if isinstance(e, t.SoapPart))
    assert soap_part.message.raw == SOAP
    assert soap_part.digest == sha512(SOAP)
    assert soap_part.headers.get("Content-Transfer-Encoding") == "8bit"
    end = events[-1]
    assert isinstance(end, t.MessageEnd)
    assert end.digests == (("/message.xml", sha512(SOAP)),)
    assert end.signature == SIG.signature_xml and end.fault is None and end.hash_chain is None
    assert enc.parts_to_sign() == list(end.digests)


def test_soap_with_three_attachments_and_batch_signature() -> None:
    enc, body = soap_request(attachments=3, sig=BATCH_SIG)
    events = decode(body, enc.content_type, chunk=333)
    starts = [e for e in events if isinstance(e, t.AttachmentStart)]
    assert [(s.index, s.content_type) for s in starts] == [(i + 1, f"application/x-test{i}") for i in range(3)]
    assert [s.headers.items for s in starts] == [(("Content-ID", f"<att{i}@example>"), ("X-Note", f"n{i}"))
                                                 for i in range(3)]
    contents = [b"part-%d-" % i + b"x" * (1000 * i) for i in range(3)]
    for i in range(3):
        got = b"".join(e.data for e in events if isinstance(e, t.AttachmentData) and e.index == i + 1)
        assert got == contents[i]
    ends = [e for e in events if isinstance(e, t.AttachmentEnd)]
    assert [(e.digest, e.size) for e in ends] == [(sha512(c), len(c)) for c in contents]
    end = events[-1]
    assert isinstance(end, t.MessageEnd)
    assert end.digests == (("/message.xml", sha512(SOAP)),
                           *((f"/attachment{i + 1}", sha512(c)) for i, c in enumerate(contents)))
    assert (end.hash_chain_result, end.hash_chain, end.signature) == (b"<HashChainResult/>", b"<HashChain/>",
                                                                      BATCH_SIG.signature_xml)
    kinds = [type(e).__name__ for e in events if not isinstance(e, t.AttachmentData | t.AttachmentStart |
                                                                 t.AttachmentEnd)]
    assert kinds == ["OcspResponsePart", "OcspResponsePart", "SoapPart", "HashChainResultPart", "HashChainPart",
                     "SignaturePart", "MessageEnd"]


def test_sha256_announced_digests_follow_it() -> None:
    enc = t.TransportEncoder(REQ, hash_algorithm="SHA-256")
    body = b"".join([enc.ocsp_response(b"o"), enc.soap(SOAP), *enc.attachment("text/plain", [b"abc"]),
                     enc.signature(SIG)])
    headers = enc.http_headers(request_id="rid", original_content_type="text/xml", proxy_version="7.6.2")
    assert ("x-hash-algorithm", "SHA-256") in headers.items()
    dec = t.TransportDecoder.from_headers(t.TransportHeaders.from_items(headers.items()), REQ)
    events = dec.feed(body) + dec.close()
    end = events[-1]
    assert isinstance(end, t.MessageEnd)
    assert end.digests == (("/message.xml", hashlib.sha256(SOAP).digest()), ("/attachment1",
                                                                              hashlib.sha256(b"abc").digest()))


def rest_request_message(with_body: bool) -> tuple[t.TransportEncoder, bytes, rest.RestRequest]:
    req = rest.parse_rest_request(REST_XML)
    enc = t.TransportEncoder(REQ)
    out = [enc.ocsp_response(b"ocsp"), enc.rest_request(req)]
    if with_body:
        out += enc.body([REST_BODY[:5], REST_BODY[5:]])
    out.append(enc.signature(SIG))
    return enc, b"".join(out), req


@pytest.mark.parametrize("with_body", [True, False])
def test_rest_request_round_trip_and_request_hash(with_body: bool) -> None:
    enc, body, req = rest_request_message(with_body)
    headers = enc.http_headers(request_id="9bb842bb-9256-429b-8e9d-278c7b94f8f1")
    assert headers.message_type == "REST" and headers.is_rest
    assert ("x-road-message-type", "REST") in headers.items()
    events = decode(body, enc.content_type, chunk=50, rest=True)
    part = next(e for e in events if isinstance(e, t.RestRequestPart))
    assert part.raw == REST_XML and part.request == req and part.digest == sha512(REST_XML)
    end = events[-1]
    assert isinstance(end, t.MessageEnd)
    expected = [("/message.xml", sha512(REST_XML))] + ([("/attachment1", sha512(REST_BODY))] if with_body else [])
    assert list(end.digests) == expected == enc.parts_to_sign()
    body_end = [e for e in events if isinstance(e, t.BodyEnd)]
    body_digest = body_end[0].digest if body_end else None
    assert body_digest == enc.body_digest
    if with_body:
        assert b"".join(e.data for e in events if isinstance(e, t.BodyData)) == REST_BODY
        assert [type(e) for e in events].count(t.BodyStart) == 1
    # the provider's request hash from what it decoded, independently recomputed
    want = sha512(sha512(REST_XML) + sha512(REST_BODY)) if with_body else sha512(REST_XML)
    assert rest.compute_request_hash(part.request, body_digest) == want


def test_rest_response_round_trip() -> None:
    req = rest.parse_rest_request(REST_XML)
    resp = rest.build_response(req, 200, "OK", [("Content-Type", "application/json")],
                               request_hash=rest.compute_request_hash(req, sha512(REST_BODY)),
                               x_request_id=req.x_request_id or "")
    enc = t.TransportEncoder(RESP)
    body = b"".join([enc.rest_response(resp), *enc.body([b'{"ok":true}']), enc.signature(BATCH_SIG)])
    assert enc.http_headers().message_type is None
    events = decode(body, enc.content_type, RESP, chunk=10, rest=True)
    part = next(e for e in events if isinstance(e, t.RestResponsePart))
    assert part.response == resp and part.digest == sha512(resp.serialize())
    rest.check_response(req, part.response, sha512(REST_BODY))
    end = events[-1]
    assert isinstance(end, t.MessageEnd)
    assert end.digests == (("/message.xml", sha512(resp.serialize())), ("/attachment1", sha512(b'{"ok":true}')))


def test_fault_as_last_part() -> None:
    enc = t.TransportEncoder(RESP)
    body = b"".join([enc.soap(SOAP), enc.attachment_start("text/plain"), enc.attachment_data(b"half"),
                     enc.fault(FAULT_XML)])
    events = decode(body, enc.content_type, RESP)
    end = events[-1]
    assert isinstance(end, t.MessageEnd) and end.signature is None and end.fault is not None
    assert end.fault.faultcode() == "Server.ServerProxy.ServiceFailed.NetworkError"
    assert any(isinstance(e, t.FaultPart) for e in events)
    # in a request, a fault instead of the signature leaves the request unsigned
    enc2 = t.TransportEncoder(REQ)
    body2 = b"".join([enc2.ocsp_response(b"o"), enc2.soap(SOAP), enc2.fault(FAULT_XML)])
    with pytest.raises(XRoadFault) as exc:
        decode(body2, enc2.content_type, REQ)
    assert code_of(exc) == "Server.ServerProxy.MissingSignature"


def test_fault_in_place_of_message_and_bare_fault_body() -> None:
    enc = t.TransportEncoder(RESP)
    body = enc.soap(FAULT_XML) + enc.signature(SIG)
    end = decode(body, enc.content_type, RESP)[-1]
    assert isinstance(end, t.MessageEnd) and end.fault is not None and end.digests == ()
    events = decode(FAULT_XML, "text/xml; charset=UTF-8", RESP)
    assert isinstance(events[0], t.FaultPart) and isinstance(events[-1], t.MessageEnd)
    assert events[0].fault.faultstring == "boom"
    with pytest.raises(XRoadFault) as exc:
        decode(SOAP, "text/xml", RESP)
    assert code_of(exc) == "Server.ClientProxy.ServiceFailed.InvalidMessage"
    with pytest.raises(XRoadFault) as exc:
        decode(FAULT_XML, "text/xml", REQ)  # the server proxy refuses a bare fault
    assert code_of(exc) == "Server.ServerProxy.ServiceFailed.InvalidContentType"


def test_java_layout_with_lf_and_nested_preamble() -> None:
    """The layout X-Road's MultipartEncoder writes, with bare LF line ends as in its test files."""
    body = (b"--xtopAbc\ncontent-type: text/xml\n\n" + SOAP.replace(b"\r\n", b"\n")
            + b"\n--xtopAbc\ncontent-type: multipart/mixed; charset=UTF-8; boundary=xattAbc\n\n"
            b"\n--xattAbc\ncontent-type: text/plain\n\nblaah\n--xattAbc--\n"
            b"\n--xtopAbc\ncontent-type: signature/bdoc-1.0/ts\n\n<sig/>\n--xtopAbc--\n")
    events = decode(body, "multipart/mixed; charset=UTF-8; boundary=xtopAbc", chunk=13)
    end = events[-1]
    assert isinstance(end, t.MessageEnd) and end.signature == b"<sig/>"
    assert end.digests[1] == ("/attachment1", sha512(b"blaah"))
    assert end.digests[0] == ("/message.xml", sha512(SOAP.replace(b"\r\n", b"\n")))


# --------------------------------------------------------------------------- wrong order, types, headers


def _raw(boundary: str, parts: Iterable[tuple[str, bytes]]) -> bytes:
    out = b""
    for ct, data in parts:
        out += b"\r\n--" + boundary.encode() + b"\r\ncontent-type: " + ct.encode() + b"\r\n\r\n" + data
    return out[2:] + b"\r\n--" + boundary.encode() + b"--\r\n"


CT = "multipart/mixed; charset=UTF-8; boundary=B"


@pytest.mark.parametrize(("parts", "direction", "code"), [
    # signature first: at the SOAP step it is not a SOAP type
    ([("signature/bdoc-1.0/ts", b"<s/>"), ("text/xml", SOAP)], REQ,
     "Server.ServerProxy.ServiceFailed.InvalidContentType"),
    ([("text/xml", SOAP), ("signature/bdoc-1.0/ts", b"<s/>"), ("text/xml", FAULT_XML)], REQ,
     "Server.ServerProxy.ServiceFailed.InvalidMessage"),
    ([("text/xml", SOAP), ("signature/bdoc-1.0/ts", b"<s/>"), ("application/ocsp-response", b"o")], RESP,
     "Server.ClientProxy.ServiceFailed.InvalidMessage"),
    # hash chain before the message: not a SOAP type
    ([("application/hash-chain", b"<x/>"), ("text/xml", SOAP)], REQ,
     "Server.ServerProxy.ServiceFailed.InvalidContentType"),
    # OCSP after the message: falls to the signature step
    ([("text/xml", SOAP), ("application/ocsp-response", b"o"), ("signature/bdoc-1.0/ts", b"<s/>")], REQ,
     "Server.ServerProxy.ServiceFailed.InvalidContentType"),
    # hash chain before hash-chain result: the result then arrives where the signature is due
    ([("text/xml", SOAP), ("application/hash-chain", b"<x/>"), ("application/hash-chain-result", b"<y/>"),
      ("signature/bdoc-1.0/ts", b"<s/>")], REQ, "Server.ServerProxy.ServiceFailed.InvalidContentType"),
    # unknown types
    ([("text/xml", SOAP), ("application/x-unknown", b"?")], REQ, "Server.ServerProxy.ServiceFailed.InvalidContentType"),
    ([("text/xml", SOAP), ("", b"?")], REQ, "Server.ServerProxy.ServiceFailed.InvalidContentType"),
    ([("application/json", b"{}")], REQ, "Server.ServerProxy.ServiceFailed.InvalidContentType"),
    # attachments in a REST message, REST body in a SOAP message
    ([("application/x-road-rest-request", REST_XML), ("multipart/mixed; boundary=C", b"--C\r\n\r\nx\r\n--C--"),
      ("signature/bdoc-1.0/ts", b"<s/>")], REQ, "Server.ServerProxy.ServiceFailed.InvalidContentType"),
    ([("text/xml", SOAP), ("application/x-road-rest-body", b"x"), ("signature/bdoc-1.0/ts", b"<s/>")], REQ,
     "Server.ServerProxy.ServiceFailed.InvalidContentType"),
    # a REST part of the other direction
    ([("application/x-road-rest-request", REST_XML), ("signature/bdoc-1.0/ts", b"<s/>")], RESP,
     "Server.ClientProxy.ServiceFailed.InvalidContentType"),
    # text/xml in place of the signature that is not a fault
    ([("text/xml", SOAP), ("text/xml", SOAP)], REQ, "Server.ServerProxy.ServiceFailed.InvalidContentType"),
    # broken content
    ([("text/xml", b"<not-xml")], REQ, "Server.ServerProxy.ServiceFailed.InvalidSoap"),
    ([("application/x-road-rest-request", b"GET\r\n/nope\r\n"), ("signature/bdoc-1.0/ts", b"<s/>")], REQ,
     "Server.ServerProxy.ServiceFailed.InternalError"),
    ([("text/xml", SOAP), ("multipart/mixed", b"x"), ("signature/bdoc-1.0/ts", b"<s/>")], REQ,
     "Server.ServerProxy.ServiceFailed.InvalidContentType"),
    ([("text/xml", SOAP), ("multipart/mixed; boundary=C", b"--C\r\n\r\nx"), ("signature/bdoc-1.0/ts", b"<s/>")],
     REQ, "Server.ServerProxy.ServiceFailed.MimeParsingFailed"),
    # missing pieces
    ([("text/xml", SOAP)], REQ, "Server.ServerProxy.MissingSignature"),
    ([("text/xml", SOAP), ("application/hash-chain-result", b"<y/>"), ("application/hash-chain", b"<x/>")], RESP,
     "Server.ClientProxy.MissingSignature"),
    ([("application/ocsp-response", b"o")], REQ, "Server.ServerProxy.MissingSoap"),
])
def test_order_and_type_faults(parts: list[tuple[str, bytes]], direction: t.Direction, code: str) -> None:
    with pytest.raises(XRoadFault) as exc:
        decode(_raw("B", parts), CT, direction, chunk=17)
    assert code_of(exc) == code


def test_signature_before_message_is_extra_content() -> None:
    # ProxyMessageDecoder: at the SOAP step a signature type is "Invalid content type for SOAP message"
    with pytest.raises(XRoadFault, match="SOAP message"):
        decode(_raw("B", [("signature/bdoc-1.0/ts", b"<s/>")]), CT)


@pytest.mark.parametrize(("content_type", "hash_alg", "code"), [
    ("text/plain", "SHA-512", "Server.ServerProxy.ServiceFailed.InvalidContentType"),
    ("multipart/mixed", "SHA-512", "Server.ServerProxy.ServiceFailed.InvalidContentType"),
    (None, "SHA-512", "Server.ServerProxy.ServiceFailed.InvalidContentType"),
    (CT, None, "Server.ServerProxy.InternalError"),
    (CT, "MD5", "Server.ServerProxy.InternalError"),
])
def test_bad_http_headers(content_type: str | None, hash_alg: str | None, code: str) -> None:
    with pytest.raises(XRoadFault) as exc:
        t.TransportDecoder(content_type, REQ, hash_alg)
    assert code_of(exc) == code


def test_missing_message_in_rest_and_empty_bodies() -> None:
    with pytest.raises(XRoadFault) as exc:
        decode(b"", CT, RESP, rest=True)
    assert code_of(exc) == "Server.ClientProxy.MissingRest"
    with pytest.raises(XRoadFault) as exc:
        decode(b"garbage without delimiter", CT, REQ)
    assert code_of(exc) == "Server.ServerProxy.MissingSoap"


def test_decoder_unusable_after_error() -> None:
    dec = t.TransportDecoder(CT, REQ)
    with pytest.raises(XRoadFault):
        dec.feed(_raw("B", [("application/json", b"{}")]))
    with pytest.raises(Exception, match="after an error"):
        dec.feed(b"x")


# --------------------------------------------------------------------------- truncation and limits


@pytest.mark.parametrize("kind", ["soap", "rest"])
def test_truncated_at_every_offset(kind: str) -> None:
    if kind == "soap":
        enc, body = soap_request(attachments=2, sig=BATCH_SIG, ocsp=1)
        message_end = body.index(SOAP) + len(SOAP)
        before = {"Server.ServerProxy.MissingSoap", "Server.ServerProxy.ServiceFailed.InvalidSoap"}
    else:
        enc, body, _req = rest_request_message(True)
        message_end = body.index(REST_XML) + len(REST_XML)
        before = {"Server.ServerProxy.MissingRest"}
    complete_from = len(body) - len(b"--\r\n")  # a close delimiter without "--" is accepted (mime4j)
    step = 3 if kind == "rest" else 5
    for n in [*range(0, len(body), step), *range(len(body) - 12, len(body))]:
        if n >= complete_from and n != len(body) - 3:  # "--B-": not yet a close delimiter
            assert isinstance(decode(body[:n], enc.content_type, rest=kind == "rest")[-1], t.MessageEnd)
            continue
        with pytest.raises(XRoadFault) as exc:
            decode(body[:n], enc.content_type, chunk=64, rest=kind == "rest")
        code = code_of(exc)
        if n > message_end + 2 + len(enc.boundary) + 2:  # the message part has certainly ended
            assert code == "Server.ServerProxy.MissingSignature", n
        else:
            assert code in before | {"Server.ServerProxy.MissingSignature"}, (n, code)


def _endless(first: bytes, filler: bytes) -> Iterator[bytes]:
    yield first
    while True:
        yield filler


def _feed_until_fault(dec: t.TransportDecoder, chunks: Iterator[bytes], limit: int = 64 << 20) -> XRoadFault:
    fed = 0
    for chunk in chunks:
        try:
            dec.feed(chunk)
        except XRoadFault as exc:
            return exc
        fed += len(chunk)
        assert fed < limit, "no fault raised"
    raise AssertionError("input ended")


@pytest.mark.parametrize(("head", "kw", "code"), [
    (b"--B\r\ncontent-type: text/xml\r\n\r\n<a>", {"max_message_bytes": 1 << 20},
     "Server.ServerProxy.ServiceFailed.InvalidSoap"),
    (b"--B\r\ncontent-type: application/ocsp-response\r\n\r\n", {},
     "Server.ServerProxy.ServiceFailed.MimeParsingFailed"),
    (b"--B\r\ncontent-type: application/x-road-rest-request\r\n\r\n", {},
     "Server.ServerProxy.ServiceFailed.MimeParsingFailed"),
    (b"--B\r\ncontent-type: text/xml\r\n\r\n" + SOAP + b"\r\n--B\r\ncontent-type: signature/bdoc-1.0/ts\r\n\r\n", {},
     "Server.ServerProxy.ServiceFailed.MimeParsingFailed"),
    (b"--B\r\ncontent-type: text/xml\r\n\r\n" + SOAP + b"\r\n--B\r\ncontent-type: multipart/mixed; boundary=C\r\n\r\n"
     b"--C\r\ncontent-type: a/b\r\n\r\n", {"max_attachment_bytes": 1 << 20},
     "Server.ServerProxy.ServiceFailed.MimeParsingFailed"),
    (b"--B\r\ncontent-type: text/xml\r\n\r\n" + SOAP + b"\r\n--B\r\ncontent-type: multipart/mixed; boundary=C\r\n\r\n"
     b"--C\r\ncontent-type: a/b\r\n\r\n", {"max_total_bytes": 2 << 20},
     "Server.ServerProxy.ServiceFailed.MimeParsingFailed"),
    (b"--B\r\ncontent-type: text/xml\r\nX-Pad: ", {}, "Server.ServerProxy.ServiceFailed.MimeParsingFailed"),
])
def test_endless_parts_are_refused(head: bytes, kw: dict[str, int], code: str) -> None:
    dec = t.TransportDecoder(CT, REQ, **kw)  # type: ignore[arg-type]
    fault = _feed_until_fault(dec, _endless(head, b"y" * 65536))
    assert fault.faultcode() == code


def test_too_many_parts_and_attachments() -> None:
    many_ocsp = b"".join(b"--B\r\ncontent-type: application/ocsp-response\r\n\r\no\r\n" for _ in range(100))
    fault = _feed_until_fault(t.TransportDecoder(CT, REQ, max_parts=64), iter([many_ocsp]))
    assert fault.faultcode() == "Server.ServerProxy.ServiceFailed.MimeParsingFailed"
    nested = b"".join(b"--C\r\ncontent-type: a/b\r\n\r\nz\r\n" for _ in range(20))
    body = (b"--B\r\ncontent-type: text/xml\r\n\r\n" + SOAP
            + b"\r\n--B\r\ncontent-type: multipart/mixed; boundary=C\r\n\r\n" + nested)
    fault = _feed_until_fault(t.TransportDecoder(CT, REQ, max_attachments=10), iter([body]))
    assert fault.faultcode() == "Server.ServerProxy.ServiceFailed.MimeParsingFailed"


# --------------------------------------------------------------------------- encoder misuse


def test_encoder_state_is_enforced() -> None:
    enc = t.TransportEncoder(REQ)
    with pytest.raises(Exception, match="not allowed"):
        enc.signature(SIG)
    enc.soap(SOAP)
    with pytest.raises(Exception, match="not allowed"):
        enc.ocsp_response(b"o")
    with pytest.raises(Exception, match="not allowed"):
        enc.body_start()
    enc.attachment_start("text/plain")
    with pytest.raises(Exception, match="not allowed"):
        enc.signature(SIG)
    enc.attachment_end()
    enc.signature(SIG)
    assert enc.closed
    with pytest.raises(Exception, match="not allowed"):
        enc.fault(FAULT_XML)
    with pytest.raises(ValueError):
        t.TransportEncoder(REQ, boundary="bad boundary\r\n")
    with pytest.raises(XRoadFault):
        t.TransportEncoder(REQ, hash_algorithm="SHA-1")
    rest_enc = t.TransportEncoder(RESP)
    with pytest.raises(Exception, match="not allowed"):
        rest_enc.rest_request(rest.parse_rest_request(REST_XML))


def test_mime_header_injection_refused() -> None:
    enc = t.TransportEncoder(REQ)
    enc.soap(SOAP)
    with pytest.raises(Exception, match="invalid MIME header"):
        enc.attachment_start("text/plain", [("X-A", "v\r\n--evil")])


def test_transport_headers_round_trip() -> None:
    h = t.TransportHeaders("multipart/mixed; boundary=x", "SHA-512", "rid", "text/xml", '""', "7.7.0")
    back = t.TransportHeaders.from_items([(n.upper(), v) for n, v in h.items()])
    assert back == h
    assert t.hash_name("sha-512") == "sha512" and t.hash_algorithm_name("sha512") == "SHA-512"


# --------------------------------------------------------------------------- 100 MB


def _pattern_chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    block = bytes(range(256)) * (size // 256)
    sent = 0
    n = 0
    while sent < total:
        chunk = block[n % 251:] + block[:n % 251]
        chunk = chunk[:min(size, total - sent)]
        sent += len(chunk)
        n += 1
        yield chunk


def test_100_mb_attachment_streams_in_bounded_memory() -> None:
    total = 100 * 1024 * 1024
    expected = hashlib.sha512()
    for chunk in _pattern_chunks(total):
        expected.update(chunk)

    def message(enc: t.TransportEncoder) -> Iterator[bytes]:
        yield enc.ocsp_response(b"ocsp")
        yield enc.soap(SOAP)
        yield from enc.attachment("application/octet-stream", _pattern_chunks(total))
        yield enc.signature(BATCH_SIG)

    tracemalloc.start()
    try:
        enc = t.TransportEncoder(REQ)
        dec = t.TransportDecoder(enc.content_type, REQ)
        received = 0
        end: t.MessageEnd | None = None
        for piece in message(enc):
            for ev in dec.feed(piece):
                if isinstance(ev, t.AttachmentData):
                    received += len(ev.data)
        for ev in dec.close():
            if isinstance(ev, t.MessageEnd):
                end = ev
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == total
    assert end is not None and end.digests[1] == ("/attachment1", expected.digest())
    assert enc.parts_to_sign() == list(end.digests)
    assert peak < 3 * 1024 * 1024, peak
