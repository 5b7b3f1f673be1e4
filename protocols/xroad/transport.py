# test-case-name: tests.test_xroad_transport
"""The X-Road Message Transport Protocol between gateways: a streaming encoder and decoder.

Facts from X-Road's ``ProxyMessageEncoder``, ``ProxyMessageDecoder``, ``MultipartEncoder``,
``MimeUtils``, ``MimeTypes`` and the client/server message processors (proxy-core), and
``doc/Protocols/pr-messtransp_x-road_message_transport_protocol.md``.

**Message.**  HTTP body ``multipart/mixed; charset=UTF-8; boundary=xtop<30 letters>``; parts in
order:

1. ``application/ocsp-response`` — zero or more (the consumer sends the OCSP responses of its
   authentication certificate chain; a response normally has none, but X-Road's decoder accepts
   them in either direction);
2. the message: a SOAP part (``text/xml`` or ``application/xop+xml``, its other MIME headers
   kept), or ``application/x-road-rest-request`` / ``application/x-road-rest-response`` (the REST
   header part, see :mod:`protocols.xroad.rest`) optionally followed by
   ``application/x-road-rest-body``;
3. for SOAP, a nested ``multipart/mixed; charset=UTF-8; boundary=xatt<30 letters>`` holding
   the attachments, each with its own MIME headers (only when there are attachments);
4. for a batch signature ``application/hash-chain-result`` then ``application/hash-chain``;
5. ``signature/bdoc-1.0/ts``: the signature XML — or, when the sender failed mid-stream, a
   ``text/xml`` SOAP fault in its place (the last part either way).

A message that failed before anything was streamed is a bare ``text/xml`` SOAP fault.

Signed parts: ``/message.xml`` = the SOAP part bytes or the REST header part; the REST body is
``/attachment1``; SOAP attachments are ``/attachment1``… in order.  Each digest is computed with
the algorithm named by the ``x-hash-algorithm`` HTTP header (``SHA-512``; X-Road never sends
another, and computes its own message-part and request-hash digests with SHA-512 regardless).

**HTTP headers.**  Request: ``x-hash-algorithm``, ``x-proxy-version``, ``x-original-content-type``
(the client's ``Content-Type``), ``x-original-soapaction`` (SOAP), ``x-road-request-id``, and
``x-road-message-type: REST`` for REST.  Response: ``x-hash-algorithm`` and, for SOAP,
``x-original-content-type``.  See :class:`TransportHeaders`.

**Decoding** follows ``ProxyMessageDecoder``'s state machine part by part: OCSP → REST or SOAP →
REST body → attachments (SOAP only) → hash-chain result → hash chain → signature, each step
optional except that the part that is not what a step expects falls through to the next, and
whatever reaches the signature step must be the signature (or a ``text/xml`` fault).  Faults,
as X-Road reports them: for a request decoded by the provider the prefix is
``Server.ServerProxy``, for a response decoded by the consumer ``Server.ClientProxy``; errors
raised while parsing get ``ServiceFailed`` after it (X-Road's ``withPrefix(X_SERVICE_FAILED_X)``
around ``decoder.parse``):

* wrong outer content type, multipart without boundary, a SOAP part of another type, any other
  type where the signature is due (unknown types included), a nested attachment multipart in a
  REST message → ``…ServiceFailed.InvalidContentType``;
* a part after the signature (or after the trailing fault) → ``…ServiceFailed.InvalidMessage``;
  a bare ``text/xml`` body that is not a fault → ``…ServiceFailed.InvalidMessage``;
* malformed or hostile MIME (header block too large, too many parts or attachments, a part over
  its limit, total size over ``max_total_bytes``) → ``…ServiceFailed.MimeParsingFailed``;
  SOAP errors as :class:`protocols.xroad.soap.SoapPartParser` reports them
  (``…ServiceFailed.InvalidSoap`` …); REST header-part errors as :mod:`protocols.xroad.rest`;
* a missing or unknown ``x-hash-algorithm`` → ``…InternalError`` (no ``ServiceFailed``: Java
  reads it before parsing);
* input that ends early (no close delimiter) or a message without signature →
  ``…MissingSignature``; without a SOAP/REST part → ``…MissingSoap`` / ``…MissingRest``
  (X-Road's ``checkRequest``/``checkResponse``, raised by :meth:`TransportDecoder.close`).
  A response whose last part is a fault is not an error of the decoder: the fault is returned
  (the consumer relays it as X-Road does); in a request it is ``MissingSignature``.

Differences from the Java code, each deliberate: mime4j parses leniently, so a truncated stream
there ends the current part silently and X-Road notices only the missing signature (or a SOAP
part cut short: ``InvalidSoap``); we report ``MissingSignature`` for every truncation after the
message part (``ServiceFailed.InvalidSoap`` inside the SOAP part, ``MissingSoap``/``MissingRest``
before or inside the message part).  X-Road buffers the REST header part without a limit; we
bound it (``max_message_bytes``), and OCSP, hash-chain and signature parts
(``max_small_part_bytes``).  A REST part of the other direction (``x-road-rest-request`` in a
response) is ``InvalidContentType`` here; X-Road accepts it and then misses the message
(``MissingRest``).  ``x-hash-algorithm`` must be SHA-256, SHA-384 or SHA-512 (X-Road would
also take MD5, SHA-1, SHA-224).
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from protocols.errors import VdxpError
from protocols.xroad import rest, soap
from protocols.xroad.faults import SERVER_CLIENTPROXY, SERVER_SERVERPROXY, XRoadFault
from protocols.xroad.mime import (
    Headers,
    MimeError,
    MultipartEnd,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    parse_content_type,
)

__all__ = [
    "HASH_CHAIN",
    "HASH_CHAIN_RESULT",
    "HEADER_HASH_ALGO_ID",
    "HEADER_MESSAGE_TYPE",
    "HEADER_ORIGINAL_CONTENT_TYPE",
    "HEADER_ORIGINAL_SOAP_ACTION",
    "HEADER_PROXY_VERSION",
    "HEADER_REQUEST_ID",
    "MULTIPART_MIXED",
    "OCSP_RESPONSE",
    "REST_BODY",
    "REST_REQUEST",
    "REST_RESPONSE",
    "SIGNATURE_BDOC",
    "TEXT_XML",
    "VALUE_MESSAGE_TYPE_REST",
    "XOP_XML",
    "AttachmentData",
    "AttachmentEnd",
    "AttachmentStart",
    "BodyData",
    "BodyEnd",
    "BodyStart",
    "Direction",
    "FaultPart",
    "HashChainPart",
    "HashChainResultPart",
    "MessageEnd",
    "OcspResponsePart",
    "RestRequestPart",
    "RestResponsePart",
    "SignatureLike",
    "SignaturePart",
    "SoapPart",
    "TransportDecoder",
    "TransportEncoder",
    "TransportEvent",
    "TransportHeaders",
    "attachment_uri",
    "hash_algorithm_name",
    "hash_name",
]

OCSP_RESPONSE = "application/ocsp-response"
SIGNATURE_BDOC = "signature/bdoc-1.0/ts"
MULTIPART_MIXED = "multipart/mixed"
HASH_CHAIN_RESULT = "application/hash-chain-result"
HASH_CHAIN = "application/hash-chain"
TEXT_XML = "text/xml"
XOP_XML = "application/xop+xml"
REST_REQUEST = "application/x-road-rest-request"
REST_RESPONSE = "application/x-road-rest-response"
REST_BODY = "application/x-road-rest-body"

HEADER_HASH_ALGO_ID = "x-hash-algorithm"
HEADER_PROXY_VERSION = "x-proxy-version"
HEADER_ORIGINAL_CONTENT_TYPE = "x-original-content-type"
HEADER_ORIGINAL_SOAP_ACTION = "x-original-soapaction"
HEADER_MESSAGE_TYPE = "x-road-message-type"
HEADER_REQUEST_ID = "x-road-request-id"
VALUE_MESSAGE_TYPE_REST = "REST"

MESSAGE_URI = "/message.xml"
_CRLF = b"\r\n"
_HASHES = {"sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512"}
_HASH_NAMES = {v: k.upper() for k, v in _HASHES.items()}


def attachment_uri(index: int) -> str:
    """``/attachmentN`` (1-based), X-Road's ``MessageFileNames.attachmentOfIdx``."""
    return f"/attachment{index}"


def hash_name(header_value: str | None) -> str:
    """The :mod:`hashlib` name for an ``x-hash-algorithm`` value (``SHA-512`` → ``sha512``);
    ``InternalError`` (unprefixed) when missing or not supported."""
    if header_value is None:
        raise XRoadFault("InternalError", "Could not get hash algorithm identifier from message")
    name = _HASHES.get(header_value.strip().lower())
    if name is None:
        raise XRoadFault("InternalError", f"Unsupported hash algorithm {header_value[:40]!r}")
    return name


def hash_algorithm_name(name: str) -> str:
    """The ``x-hash-algorithm`` value for a :mod:`hashlib` name (``sha512`` → ``SHA-512``)."""
    try:
        return _HASH_NAMES[name.lower().replace("-", "")]
    except KeyError:
        raise ValueError(f"unsupported transport hash {name!r}") from None


def _random_letters(n: int = 30) -> str:
    return "".join(secrets.choice(string.ascii_letters) for _ in range(n))


class Direction(enum.Enum):
    """Which message: a request (consumer → provider) or a response (provider → consumer)."""

    REQUEST = "request"
    RESPONSE = "response"

    @property
    def fault_prefix(self) -> tuple[str, ...]:
        """Who decodes it: the provider gateway's server proxy for requests, the consumer's client
        proxy for responses."""
        return SERVER_SERVERPROXY if self is Direction.REQUEST else SERVER_CLIENTPROXY


# --------------------------------------------------------------------------- HTTP headers


@dataclass(frozen=True, slots=True)
class TransportHeaders:
    """The HTTP headers of a transport message besides the framing ones."""

    content_type: str
    hash_algorithm: str | None = "SHA-512"
    request_id: str | None = None
    original_content_type: str | None = None
    original_soap_action: str | None = None
    proxy_version: str | None = None
    message_type: str | None = None

    @property
    def is_rest(self) -> bool:
        return self.message_type == VALUE_MESSAGE_TYPE_REST

    def items(self) -> list[tuple[str, str]]:
        out = [("Content-Type", self.content_type)]
        for name, value in ((HEADER_HASH_ALGO_ID, self.hash_algorithm), (HEADER_PROXY_VERSION, self.proxy_version),
                            (HEADER_ORIGINAL_CONTENT_TYPE, self.original_content_type),
                            (HEADER_ORIGINAL_SOAP_ACTION, self.original_soap_action),
                            (HEADER_MESSAGE_TYPE, self.message_type), (HEADER_REQUEST_ID, self.request_id)):
            if value is not None:
                if any(ch in value for ch in "\r\n\x00"):
                    raise ValueError(f"invalid value for HTTP header {name}")
                out.append((name, value))
        return out

    @classmethod
    def from_items(cls, headers: Iterable[tuple[str, str]]) -> TransportHeaders:
        """Read them from HTTP headers (names case-insensitive, the first of each wins)."""
        found: dict[str, str] = {}
        for name, value in headers:
            found.setdefault(name.lower(), value)
        return cls(found.get("content-type", ""), found.get(HEADER_HASH_ALGO_ID), found.get(HEADER_REQUEST_ID),
                   found.get(HEADER_ORIGINAL_CONTENT_TYPE), found.get(HEADER_ORIGINAL_SOAP_ACTION),
                   found.get(HEADER_PROXY_VERSION), found.get(HEADER_MESSAGE_TYPE))


# --------------------------------------------------------------------------- encoder


class SignatureLike(Protocol):
    """What the signer returns (``hsm.signer.SignedMessage``)."""

    @property
    def signature_xml(self) -> bytes: ...

    @property
    def hash_chain_result(self) -> bytes | None: ...

    @property
    def hash_chain(self) -> bytes | None: ...


class _Enc(enum.IntEnum):
    START = 0
    OCSP = 1
    MESSAGE = 2
    BODY = 3
    BODY_DONE = 4
    ATTACHMENTS = 5
    IN_ATTACHMENT = 6
    CLOSED = 7


def _header_lines(content_type: str, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"content-type: {content_type}"]
    for name, value in headers:
        if name.lower() == "content-type":
            continue
        if not name or any(ch in name + value for ch in "\r\n\x00") or ":" in name:
            raise VdxpError(f"invalid MIME header {name[:40]!r}", code="transport.header_invalid")
        lines.append(f"{name}: {value}")
    for line in lines:
        if any(ch in line for ch in "\r\n\x00"):
            raise VdxpError("invalid MIME header value", code="transport.header_invalid")
    return "".join(line + "\r\n" for line in lines).encode("utf-8") + _CRLF


class TransportEncoder:
    """Writes one transport message, part by part; every method returns the bytes to send next,
    in order, so a body or attachment of any size streams through chunk by chunk.

    Call order: :meth:`ocsp_response`\\* (requests), then :meth:`soap` or :meth:`rest_request` /
    :meth:`rest_response`, then for REST optionally :meth:`body_start`, :meth:`body_data`\\*,
    :meth:`body_end`, for SOAP :meth:`attachment_start`, :meth:`attachment_data`\\*,
    :meth:`attachment_end` per attachment; then :meth:`parts_to_sign` for the signer and
    :meth:`signature`, or :meth:`fault` at any point after the first part.  Both close the
    message.  Misuse raises :class:`~protocols.errors.VdxpError` (``transport.encoder_state``).
    """

    def __init__(self, direction: Direction, *, hash_algorithm: str = "SHA-512", boundary: str | None = None,
                 attachment_boundary: str | None = None) -> None:
        self.direction = direction
        self.hash_algorithm = hash_algorithm
        self._hash = hash_name(hash_algorithm)
        unique = _random_letters()
        self.boundary = boundary or "xtop" + unique
        self.attachment_boundary = attachment_boundary or "xatt" + unique
        for b in (self.boundary, self.attachment_boundary):
            if not 0 < len(b) <= 70 or any(ch not in string.ascii_letters + string.digits + "'()+_,-./:=?" for ch in b):
                raise ValueError(f"invalid MIME boundary {b!r}")
        self._state = _Enc.START
        self._started = False
        self._rest = False
        self._digests: list[tuple[str, bytes]] = []
        self._part_hash: hashlib._Hash | None = None
        self.bytes_written = 0
        self.attachment_bytes = 0

    @property
    def content_type(self) -> str:
        """``multipart/mixed; charset=UTF-8; boundary=…`` (``MimeUtils.mpMixedContentType``)."""
        return f"{MULTIPART_MIXED}; charset=UTF-8; boundary={self.boundary}"

    def http_headers(self, *, request_id: str | None = None, original_content_type: str | None = None,
                     original_soap_action: str | None = None, proxy_version: str | None = None) -> TransportHeaders:
        """The HTTP headers for this message (``x-road-message-type: REST`` for REST requests)."""
        rest_request = self._rest and self.direction is Direction.REQUEST
        return TransportHeaders(self.content_type, self.hash_algorithm, request_id, original_content_type,
                                original_soap_action, proxy_version, VALUE_MESSAGE_TYPE_REST if rest_request else None)

    # -- helpers

    def _out(self, data: bytes) -> bytes:
        self.bytes_written += len(data)
        return data

    def _require(self, ok: bool, what: str) -> None:
        if not ok:
            raise VdxpError(f"transport encoder: {what} not allowed in state {self._state.name}",
                            code="transport.encoder_state")

    def _start_part(self, content_type: str, headers: Iterable[tuple[str, str]] = (), *, boundary: str | None = None,
                    first_in_nested: bool = False) -> bytes:
        b = (boundary or self.boundary).encode("ascii")
        lead = _CRLF if (self._started or first_in_nested) else b""
        self._started = True
        return lead + b"--" + b + _CRLF + _header_lines(content_type, headers)

    def _end_attachments(self) -> bytes:
        if self._state in (_Enc.ATTACHMENTS, _Enc.IN_ATTACHMENT):
            self._require(self._state is _Enc.ATTACHMENTS, "ending attachments inside an attachment")
            self._state = _Enc.BODY_DONE
            return _CRLF + b"--" + self.attachment_boundary.encode("ascii") + b"--" + _CRLF
        return b""

    def _digest(self, data: bytes) -> bytes:
        return hashlib.new(self._hash, data).digest()

    # -- parts

    def ocsp_response(self, der: bytes) -> bytes:
        self._require(self._state <= _Enc.OCSP, "an OCSP response")
        self._state = _Enc.OCSP
        return self._out(self._start_part(OCSP_RESPONSE) + der)

    def soap(self, data: bytes, content_type: str = "text/xml; charset=UTF-8",
             headers: Iterable[tuple[str, str]] = ()) -> bytes:
        """The SOAP part (its bytes exactly as signed); ``headers`` are further MIME headers of it."""
        self._require(self._state <= _Enc.OCSP, "the SOAP part")
        ct = parse_content_type(content_type)
        if ct is None or ct.media_type not in (TEXT_XML, XOP_XML):
            raise VdxpError(f"SOAP part content type {content_type!r}", code="transport.encoder_state")
        self._state = _Enc.BODY_DONE
        self._digests.append((MESSAGE_URI, self._digest(data)))
        return self._out(self._start_part(content_type, headers) + data)

    def rest_request(self, request: rest.RestRequest) -> bytes:
        self._require(self._state <= _Enc.OCSP and self.direction is Direction.REQUEST, "a REST request")
        return self._rest_part(REST_REQUEST, request.serialize())

    def rest_response(self, response: rest.RestResponse) -> bytes:
        self._require(self._state <= _Enc.OCSP and self.direction is Direction.RESPONSE, "a REST response")
        return self._rest_part(REST_RESPONSE, response.serialize())

    def _rest_part(self, content_type: str, data: bytes) -> bytes:
        self._rest = True
        self._state = _Enc.MESSAGE
        self._digests.append((MESSAGE_URI, self._digest(data)))
        return self._out(self._start_part(content_type) + data)

    def body_start(self) -> bytes:
        """Start the REST body part (``/attachment1``)."""
        self._require(self._state is _Enc.MESSAGE and self._rest, "a REST body")
        self._state = _Enc.BODY
        self._part_hash = hashlib.new(self._hash)
        return self._out(self._start_part(REST_BODY))

    def body_data(self, chunk: bytes) -> bytes:
        self._require(self._state is _Enc.BODY, "REST body data")
        assert self._part_hash is not None
        self._part_hash.update(chunk)
        self.attachment_bytes += len(chunk)
        return self._out(bytes(chunk))

    def body_end(self) -> bytes:
        """End the REST body; returns ``b""`` (the part ends with the next delimiter)."""
        self._require(self._state is _Enc.BODY, "ending a REST body")
        assert self._part_hash is not None
        self._digests.append((attachment_uri(1), self._part_hash.digest()))
        self._part_hash = None
        self._state = _Enc.BODY_DONE
        return b""

    def body(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The whole REST body part from ``chunks`` (streamed)."""
        yield self.body_start()
        for chunk in chunks:
            if chunk:
                yield self.body_data(chunk)
        self.body_end()

    @property
    def body_digest(self) -> bytes | None:
        """The REST body's digest once written (for the request hash), else ``None``."""
        return self._digests[1][1] if self._rest and len(self._digests) > 1 else None

    def attachment_start(self, content_type: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
        """Start a SOAP attachment (opens the nested multipart before the first one)."""
        self._require(not self._rest and self._state in (_Enc.BODY_DONE, _Enc.ATTACHMENTS)
                      and bool(self._digests), "an attachment")
        out = b""
        if self._state is _Enc.BODY_DONE:
            if any(uri != MESSAGE_URI for uri, _ in self._digests):
                raise VdxpError("attachments must follow one another", code="transport.encoder_state")
            out = self._start_part(f"{MULTIPART_MIXED}; charset=UTF-8; boundary={self.attachment_boundary}")
        self._state = _Enc.IN_ATTACHMENT
        self._part_hash = hashlib.new(self._hash)
        # MultipartEncoder writes CRLF before every delimiter once a part was written
        out += self._start_part(content_type, headers, boundary=self.attachment_boundary, first_in_nested=True)
        return self._out(out)

    def attachment_data(self, chunk: bytes) -> bytes:
        self._require(self._state is _Enc.IN_ATTACHMENT, "attachment data")
        assert self._part_hash is not None
        self._part_hash.update(chunk)
        self.attachment_bytes += len(chunk)
        return self._out(bytes(chunk))

    def attachment_end(self) -> bytes:
        self._require(self._state is _Enc.IN_ATTACHMENT, "ending an attachment")
        assert self._part_hash is not None
        self._digests.append((attachment_uri(len(self._digests)), self._part_hash.digest()))
        self._part_hash = None
        self._state = _Enc.ATTACHMENTS
        return b""

    def attachment(self, content_type: str, chunks: Iterable[bytes],
                   headers: Iterable[tuple[str, str]] = ()) -> Iterator[bytes]:
        """One whole attachment from ``chunks`` (streamed)."""
        yield self.attachment_start(content_type, headers)
        for chunk in chunks:
            if chunk:
                yield self.attachment_data(chunk)
        self.attachment_end()

    def parts_to_sign(self) -> list[tuple[str, bytes]]:
        """``(uri, digest)`` of the message part and each attachment, for the signer."""
        self._require(self._state in (_Enc.MESSAGE, _Enc.BODY_DONE, _Enc.ATTACHMENTS, _Enc.CLOSED)
                      and bool(self._digests), "signing")
        return list(self._digests)

    def signature(self, signed: SignatureLike) -> bytes:
        """Hash-chain parts (batch signatures) and the signature part, then the close delimiter."""
        self._require(self._state in (_Enc.MESSAGE, _Enc.BODY_DONE, _Enc.ATTACHMENTS) and bool(self._digests),
                      "the signature")
        out = self._end_attachments()
        if signed.hash_chain_result is not None:
            if signed.hash_chain is None:
                raise VdxpError("a batch signature needs its hash chain", code="transport.encoder_state")
            out += self._start_part(HASH_CHAIN_RESULT) + signed.hash_chain_result
            out += self._start_part(HASH_CHAIN) + signed.hash_chain
        out += self._start_part(SIGNATURE_BDOC) + signed.signature_xml
        return self._out(out + self._close())

    def fault(self, fault_xml: bytes) -> bytes:
        """A SOAP fault as the last part (the sender failed after starting), then the close
        delimiter.  Also allowed inside an attachment or body: that part is cut short."""
        self._require(self._started and self._state is not _Enc.CLOSED, "a fault part")
        out = b""
        if self._state is _Enc.IN_ATTACHMENT:
            self._state = _Enc.ATTACHMENTS
        out += self._end_attachments()
        out += self._start_part("text/xml; charset=UTF-8") + fault_xml
        return self._out(out + self._close())

    def _close(self) -> bytes:
        self._state = _Enc.CLOSED
        self._part_hash = None
        return _CRLF + b"--" + self.boundary.encode("ascii") + b"--" + _CRLF

    @property
    def closed(self) -> bool:
        return self._state is _Enc.CLOSED


# --------------------------------------------------------------------------- decoder events


@dataclass(frozen=True, slots=True)
class OcspResponsePart:
    der: bytes


@dataclass(frozen=True, slots=True)
class SoapPart:
    """The SOAP message (parsed and checked), its part's content type and other MIME headers, and
    the digest of its bytes (``/message.xml``)."""

    message: soap.SoapMessage
    content_type: str
    headers: Headers
    digest: bytes


@dataclass(frozen=True, slots=True)
class RestRequestPart:
    request: rest.RestRequest
    raw: bytes
    digest: bytes


@dataclass(frozen=True, slots=True)
class RestResponsePart:
    response: rest.RestResponse
    raw: bytes
    digest: bytes


@dataclass(frozen=True, slots=True)
class BodyStart:
    """The REST body begins."""


@dataclass(frozen=True, slots=True)
class BodyData:
    data: bytes


@dataclass(frozen=True, slots=True)
class BodyEnd:
    digest: bytes
    size: int


@dataclass(frozen=True, slots=True)
class AttachmentStart:
    """A SOAP attachment begins: 1-based ``index``, its ``Content-Type`` (``None`` if absent) and
    its other MIME headers."""

    index: int
    content_type: str | None
    headers: Headers


@dataclass(frozen=True, slots=True)
class AttachmentData:
    index: int
    data: bytes


@dataclass(frozen=True, slots=True)
class AttachmentEnd:
    index: int
    digest: bytes
    size: int


@dataclass(frozen=True, slots=True)
class HashChainResultPart:
    data: bytes


@dataclass(frozen=True, slots=True)
class HashChainPart:
    data: bytes


@dataclass(frozen=True, slots=True)
class SignaturePart:
    data: bytes


@dataclass(frozen=True, slots=True)
class FaultPart:
    """A SOAP fault: in place of the message, in place of the signature, or the whole body."""

    fault: XRoadFault
    raw: bytes


@dataclass(frozen=True, slots=True)
class MessageEnd:
    """The message is complete.  ``digests`` are ``(uri, digest)`` of the signed parts in order;
    ``signature`` is ``None`` when a fault came instead."""

    digests: tuple[tuple[str, bytes], ...]
    signature: bytes | None
    hash_chain_result: bytes | None
    hash_chain: bytes | None
    fault: XRoadFault | None


TransportEvent = (OcspResponsePart | SoapPart | RestRequestPart | RestResponsePart | BodyStart | BodyData | BodyEnd
                  | AttachmentStart | AttachmentData | AttachmentEnd | HashChainResultPart | HashChainPart
                  | SignaturePart | FaultPart | MessageEnd)


class _Next(enum.IntEnum):
    """``ProxyMessageDecoder.NextPart``."""

    OCSP = 0
    REST = 1
    SOAP = 2
    RESTBODY = 3
    ATTACHMENT = 4
    HASH_CHAIN_RESULT = 5
    HASH_CHAIN = 6
    SIGNATURE = 7
    NONE = 8


class _Kind(enum.Enum):
    OCSP = 1
    REST = 2
    SOAP = 3
    BODY = 4
    ATTACHMENTS = 5
    HASH_CHAIN_RESULT = 6
    HASH_CHAIN = 7
    SIGNATURE = 8
    FAULT = 9


@dataclass
class TransportDecoder:
    """Incremental decoder of one transport message.

    ``content_type`` is the HTTP ``Content-Type``; ``hash_algorithm`` the ``x-hash-algorithm``
    value; ``rest`` whether a REST message is expected (``x-road-message-type: REST`` on requests;
    the consumer knows it for responses) — it only chooses ``MissingRest`` over ``MissingSoap``.
    A bare ``text/xml`` fault body is accepted when ``fault_allowed`` (default: for responses, as
    X-Road's client proxy; the server proxy refuses it).

    :meth:`feed` and :meth:`close` return events; :meth:`close` ends with :class:`MessageEnd` or
    raises the fault for a missing message or signature.  Memory stays bounded: only the SOAP
    part (``max_message_bytes``), the REST header part and OCSP/hash-chain/signature parts
    (``max_small_part_bytes``) are buffered; bodies and attachments stream as events.
    """

    content_type: str | None
    direction: Direction
    hash_algorithm: str | None = "SHA-512"
    rest: bool = False
    fault_allowed: bool | None = None
    max_parts: int = 64
    max_attachments: int = 1000
    max_header_bytes: int = 16 * 1024
    max_message_bytes: int = soap.MAX_SOAP_BYTES
    max_rest_header_bytes: int = 1024 * 1024
    max_small_part_bytes: int = 4 * 1024 * 1024
    max_attachment_bytes: int | None = None
    max_total_bytes: int | None = None

    _next: _Next = field(default=_Next.OCSP, init=False)
    _kind: _Kind | None = field(default=None, init=False)
    _buf: bytearray = field(default_factory=bytearray, init=False, repr=False)
    _part_headers: Headers = field(default_factory=Headers, init=False)
    _soap: soap.SoapPartParser | None = field(default=None, init=False, repr=False)
    _nested: MultipartParser | None = field(default=None, init=False, repr=False)
    _hash_obj: hashlib._Hash | None = field(default=None, init=False, repr=False)
    _digests: list[tuple[str, bytes]] = field(default_factory=list, init=False)
    _attachment_index: int = field(default=0, init=False)
    _attachment_size: int = field(default=0, init=False)
    _total: int = field(default=0, init=False)
    _message_seen: bool = field(default=False, init=False)
    _signature: bytes | None = field(default=None, init=False, repr=False)
    _hcr: bytes | None = field(default=None, init=False, repr=False)
    _hc: bytes | None = field(default=None, init=False, repr=False)
    _fault: XRoadFault | None = field(default=None, init=False)
    _fault_only: bool = field(default=False, init=False)
    _done: bool = field(default=False, init=False)
    _rest_seen: bool = field(default=False, init=False)
    _failed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        try:
            self._hash = hash_name(self.hash_algorithm)
        except XRoadFault as exc:
            raise exc.with_prefix(*self.direction.fault_prefix) from None
        if self.fault_allowed is None:
            self.fault_allowed = self.direction is Direction.RESPONSE
        ct = parse_content_type(self.content_type)
        media = ct.media_type if ct is not None else ""
        if self.fault_allowed and media == TEXT_XML:
            self._fault_only = True
            self._kind = _Kind.FAULT
            return
        if media != MULTIPART_MIXED:
            raise self._service_failed("InvalidContentType", f"Invalid content type: {media or self.content_type!r}")
        if ct is None or not ct.boundary:
            raise self._service_failed("InvalidContentType", "Multipart content type is missing required boundary")
        try:
            self._parser = MultipartParser(ct.boundary, max_header_bytes=self.max_header_bytes,
                                           max_parts=self.max_parts)
        except MimeError as exc:
            raise self._service_failed("InvalidContentType", exc.message) from None

    @classmethod
    def from_headers(cls, headers: TransportHeaders, direction: Direction, **limits: int | None) -> TransportDecoder:
        """A decoder for a message with these HTTP headers."""
        return cls(headers.content_type, direction, headers.hash_algorithm, rest=headers.is_rest,
                   **limits)  # type: ignore[arg-type]

    # -- faults

    def _service_failed(self, code: str, message: str) -> XRoadFault:
        self._failed = True
        return XRoadFault((*self.direction.fault_prefix, "ServiceFailed", code), message)

    def _wrap(self, exc: XRoadFault) -> XRoadFault:
        self._failed = True
        return XRoadFault((*self.direction.fault_prefix, "ServiceFailed", *exc.tokens), exc.faultstring,
                          faultactor=exc.faultactor, detail=exc.detail)

    def _missing(self, code: str, message: str) -> XRoadFault:
        self._failed = True
        return XRoadFault((*self.direction.fault_prefix, code), message)

    def _missing_message(self) -> XRoadFault:
        if self.rest:
            what = "Request does not have REST message" if self.direction is Direction.REQUEST \
                else "Response does not have REST message"
            return self._missing("MissingRest", what)
        what = "Request does not have SOAP message" if self.direction is Direction.REQUEST \
            else "Response does not have SOAP message"
        return self._missing("MissingSoap", what)

    def _missing_signature(self) -> XRoadFault:
        what = "Request" if self.direction is Direction.REQUEST else "Response"
        return self._missing("MissingSignature", f"{what} does not have signature")

    # -- public

    @property
    def digests(self) -> tuple[tuple[str, bytes], ...]:
        """``(uri, digest)`` of the signed parts decoded so far."""
        return tuple(self._digests)

    @property
    def hash(self) -> str:
        """The :mod:`hashlib` name of the announced hash algorithm."""
        return self._hash

    def feed(self, data: bytes) -> list[TransportEvent]:
        if self._failed:
            raise VdxpError("transport decoder used after an error", code="transport.decoder_state")
        self._total += len(data)
        if self.max_total_bytes is not None and self._total > self.max_total_bytes:
            raise self._service_failed("MimeParsingFailed", f"message exceeds {self.max_total_bytes} bytes")
        events: list[TransportEvent] = []
        if self._fault_only:
            self._collect(data, self.max_message_bytes)
            return events
        try:
            mime_events = self._parser.feed(data)
        except MimeError as exc:
            raise self._service_failed("MimeParsingFailed", exc.message) from None
        for ev in mime_events:
            self._on_event(ev, events)
        return events

    def close(self) -> list[TransportEvent]:
        """End of input: the remaining events, :class:`MessageEnd` last."""
        if self._failed:
            raise VdxpError("transport decoder used after an error", code="transport.decoder_state")
        events: list[TransportEvent] = []
        if self._fault_only:
            fault = self._parse_fault(bytes(self._buf), TEXT_XML)
            if fault is None:
                raise self._service_failed("InvalidMessage", "Expected fault message, but got regular SOAP message")
            self._fault = fault.fault
            events.append(fault)
            return self._finish(events)
        try:
            mime_events = self._parser.close()
        except MimeError as exc:
            if exc.code in ("mime.truncated", "mime.no_parts"):
                raise self._truncated() from None
            raise self._service_failed("MimeParsingFailed", exc.message) from None
        for ev in mime_events:
            self._on_event(ev, events)
        return self._finish(events)

    # -- internals

    def _truncated(self) -> XRoadFault:
        if self._kind is _Kind.SOAP:
            return self._service_failed("InvalidSoap", "Malformed SOAP message: premature end of input")
        if not self._message_seen:
            return self._missing_message()
        return self._missing_signature()

    def _finish(self, events: list[TransportEvent]) -> list[TransportEvent]:
        if not self._fault_only:
            if not self._message_seen and not (self._fault is not None and self.direction is Direction.RESPONSE):
                raise self._missing_message()
            if self._signature is None:
                if self._fault is None or self.direction is Direction.REQUEST:
                    raise self._missing_signature()
        self._done = True
        events.append(MessageEnd(tuple(self._digests), self._signature, self._hcr, self._hc, self._fault))
        return events

    def _collect(self, data: bytes, limit: int) -> None:
        if len(self._buf) + len(data) > limit:
            raise self._service_failed("MimeParsingFailed", f"MIME part exceeds {limit} bytes")
        self._buf += data

    def _on_event(self, ev: PartStart | PartData | PartEnd | MultipartEnd, events: list[TransportEvent]) -> None:
        if isinstance(ev, PartStart):
            self._start(ev.headers, events)
        elif isinstance(ev, PartData):
            self._data(ev.data, events)
        elif isinstance(ev, PartEnd):
            self._end(events)

    def _start(self, headers: Headers, events: list[TransportEvent]) -> None:
        raw_ct = headers.get("Content-Type")
        ct = parse_content_type(raw_ct)
        media = ct.media_type if ct is not None else ""
        nxt = self._next
        self._part_headers = headers
        self._buf = bytearray()
        if nxt is _Next.NONE:
            raise self._service_failed("InvalidMessage", f"Extra content ({media}) after signature")
        if nxt <= _Next.OCSP and media == OCSP_RESPONSE:
            self._kind = _Kind.OCSP
            return
        if nxt <= _Next.REST and media in (REST_REQUEST, REST_RESPONSE):
            expected = REST_REQUEST if self.direction is Direction.REQUEST else REST_RESPONSE
            if media != expected:
                raise self._service_failed("InvalidContentType", f"Unexpected {media} in a {self.direction.value}")
            self._kind = _Kind.REST
            self._next = _Next.RESTBODY
            return
        if nxt <= _Next.SOAP:
            if media not in (TEXT_XML, XOP_XML):
                raise self._service_failed("InvalidContentType", f"Invalid content type for SOAP message: {media}")
            try:
                self._soap = soap.SoapPartParser(raw_ct, max_bytes=self.max_message_bytes)
            except XRoadFault as exc:
                raise self._wrap(exc) from None
            self._hash_obj = hashlib.new(self._hash)
            self._kind = _Kind.SOAP
            self._next = _Next.ATTACHMENT
            return
        if nxt <= _Next.RESTBODY and media == REST_BODY:
            self._kind = _Kind.BODY
            self._next = _Next.HASH_CHAIN_RESULT
            self._hash_obj = hashlib.new(self._hash)
            self._attachment_size = 0
            events.append(BodyStart())
            return
        if nxt <= _Next.ATTACHMENT and not self._rest_seen and media == MULTIPART_MIXED:
            assert ct is not None
            if not ct.boundary:
                raise self._service_failed("InvalidContentType", "Attachment multipart is missing its boundary")
            try:
                self._nested = MultipartParser(ct.boundary, max_header_bytes=self.max_header_bytes,
                                               max_parts=self.max_attachments, max_part_bytes=self.max_attachment_bytes)
            except MimeError as exc:
                raise self._service_failed("InvalidContentType", exc.message) from None
            self._kind = _Kind.ATTACHMENTS
            self._next = _Next.HASH_CHAIN_RESULT
            return
        if nxt <= _Next.HASH_CHAIN_RESULT and media == HASH_CHAIN_RESULT:
            self._kind = _Kind.HASH_CHAIN_RESULT
            self._next = _Next.HASH_CHAIN
            return
        if nxt <= _Next.HASH_CHAIN and media == HASH_CHAIN:
            self._kind = _Kind.HASH_CHAIN
            self._next = _Next.SIGNATURE
            return
        # the signature step: the signature, or a fault instead of it
        if media == SIGNATURE_BDOC:
            self._kind = _Kind.SIGNATURE
        elif media == TEXT_XML:
            self._kind = _Kind.FAULT
        else:
            raise self._service_failed("InvalidContentType",
                                       f"Received invalid content type instead of signature: {media or None}")
        self._next = _Next.NONE

    def _data(self, data: bytes, events: list[TransportEvent]) -> None:
        kind = self._kind
        if kind is _Kind.SOAP:
            assert self._soap is not None and self._hash_obj is not None
            self._hash_obj.update(data)
            try:
                self._soap.feed(data)
            except XRoadFault as exc:
                raise self._wrap(exc) from None
        elif kind is _Kind.BODY:
            assert self._hash_obj is not None
            self._hash_obj.update(data)
            self._attachment_size += len(data)
            if self.max_attachment_bytes is not None and self._attachment_size > self.max_attachment_bytes:
                raise self._service_failed("MimeParsingFailed", f"REST body exceeds {self.max_attachment_bytes} bytes")
            events.append(BodyData(data))
        elif kind is _Kind.ATTACHMENTS:
            assert self._nested is not None
            try:
                nested = self._nested.feed(data)
            except MimeError as exc:
                raise self._service_failed("MimeParsingFailed", exc.message) from None
            self._on_nested(nested, events)
        elif kind is _Kind.REST:
            self._collect(data, self.max_rest_header_bytes)
        elif kind is _Kind.FAULT:
            self._collect(data, self.max_message_bytes)
        else:
            self._collect(data, self.max_small_part_bytes)

    def _on_nested(self, nested: list[PartStart | PartData | PartEnd | MultipartEnd],
                   events: list[TransportEvent]) -> None:
        for ev in nested:
            if isinstance(ev, PartStart):
                self._attachment_index += 1
                self._attachment_size = 0
                self._hash_obj = hashlib.new(self._hash)
                rest_headers = Headers(tuple((k, v) for k, v in ev.headers.items if k.lower() != "content-type"))
                events.append(AttachmentStart(self._attachment_index, ev.headers.get("Content-Type"), rest_headers))
            elif isinstance(ev, PartData):
                assert self._hash_obj is not None
                self._hash_obj.update(ev.data)
                self._attachment_size += len(ev.data)
                events.append(AttachmentData(self._attachment_index, ev.data))
            elif isinstance(ev, PartEnd):
                assert self._hash_obj is not None
                digest = self._hash_obj.digest()
                self._hash_obj = None
                self._digests.append((attachment_uri(self._attachment_index), digest))
                events.append(AttachmentEnd(self._attachment_index, digest, self._attachment_size))

    def _parse_fault(self, raw: bytes, content_type: str | None) -> FaultPart | None:
        try:
            parser = soap.SoapPartParser(content_type)
            parser.feed(raw)
            parsed = parser.close()
        except XRoadFault as exc:
            raise self._wrap(exc) from None
        if isinstance(parsed, soap.SoapFaultMessage):
            return FaultPart(parsed.fault, raw)
        return None

    def _end(self, events: list[TransportEvent]) -> None:
        kind = self._kind
        self._kind = None
        raw = bytes(self._buf)
        self._buf = bytearray()
        if kind is _Kind.OCSP:
            events.append(OcspResponsePart(raw))
        elif kind is _Kind.REST:
            digest = hashlib.new(self._hash, raw).digest()
            try:
                if self.direction is Direction.REQUEST:
                    events.append(RestRequestPart(rest.parse_rest_request(raw), raw, digest))
                else:
                    events.append(RestResponsePart(rest.parse_rest_response(raw), raw, digest))
            except XRoadFault as exc:
                raise self._wrap(exc) from None
            self._digests.append((MESSAGE_URI, digest))
            self._message_seen = True
            self._rest_seen = True
        elif kind is _Kind.SOAP:
            assert self._soap is not None and self._hash_obj is not None
            try:
                parsed = self._soap.close()
            except XRoadFault as exc:
                raise self._wrap(exc) from None
            digest = self._hash_obj.digest()
            self._soap = None
            self._hash_obj = None
            if isinstance(parsed, soap.SoapFaultMessage):  # a fault in place of the message
                self._fault = parsed.fault
                events.append(FaultPart(parsed.fault, parsed.raw))
            else:
                self._digests.append((MESSAGE_URI, digest))
                self._message_seen = True
                headers = Headers(tuple((k, v) for k, v in self._part_headers.items if k.lower() != "content-type"))
                events.append(SoapPart(parsed, self._part_headers.get("Content-Type") or TEXT_XML, headers, digest))
        elif kind is _Kind.BODY:
            assert self._hash_obj is not None
            digest = self._hash_obj.digest()
            self._hash_obj = None
            self._digests.append((attachment_uri(1), digest))
            events.append(BodyEnd(digest, self._attachment_size))
        elif kind is _Kind.ATTACHMENTS:
            assert self._nested is not None
            try:
                nested = self._nested.close()
            except MimeError as exc:
                raise self._service_failed("MimeParsingFailed", f"attachments: {exc.message}") from None
            self._on_nested(nested, events)
            self._nested = None
        elif kind is _Kind.HASH_CHAIN_RESULT:
            self._hcr = raw
            events.append(HashChainResultPart(raw))
        elif kind is _Kind.HASH_CHAIN:
            self._hc = raw
            events.append(HashChainPart(raw))
        elif kind is _Kind.SIGNATURE:
            self._signature = raw
            events.append(SignaturePart(raw))
        elif kind is _Kind.FAULT:
            fault = self._parse_fault(raw, self._part_headers.get("Content-Type"))
            if fault is None:
                raise self._service_failed("InvalidContentType",
                                           "Received invalid content type instead of signature: text/xml")
            self._fault = fault.fault
            events.append(fault)
