# test-case-name: tests.test_xroad_rest
"""X-Road Message Protocol for REST: requests, responses, header filtering and the request hash.

Facts from X-Road's ``RestMessage``, ``RestRequest``, ``RestResponse`` (common-message),
``ClientRestMessageProcessor`` and ``ServerRestMessageProcessor`` (proxy-core) and
``doc/Protocols/pr-rest_x-road_message_protocol_for_rest.md``:

* A client calls ``VERB /r1/INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICECODE[/path][?query]`` with the
  header ``X-Road-Client: INSTANCE/CLASS/CODE[/SUBSYSTEM]`` (parts percent-encoded; the *last*
  one wins), optionally ``X-Road-Id`` (last one wins; generated as ``INSTANCE-<uuid4>`` when
  absent, ``INSTANCE`` being the consumer gateway's own instance), ``X-Road-UserId``,
  ``X-Road-Issue``, ``X-Road-Security-Server: INST/CLASS/CODE/SERVER`` and
  ``X-Road-Represented-Party: [CLASS/]CODE``.
* The client's headers are kept in order and case, minus the hop-by-hop and origin-revealing
  headers :data:`SKIPPED_HEADERS` and any ``X-Road-Request-Id`` / ``X-Road-Request-Hash``; then
  ``x-road-request-id: <id of this exchange>`` is appended, then ``x-road-id`` if the client
  sent none.  All other ``X-Road-*`` headers (client, user id, issue…) stay and reach the service.
* The *header part* (``message.xml`` in the message log, ``/message.xml`` in the signature) is
  ``VERB CRLF path[?query] CRLF`` and ``Name:Value CRLF`` per header — no space after the colon;
  a response's is ``status CRLF reason CRLF`` and the headers.  The body travels separately and
  is signed as ``/attachment1``.
* The provider gateway filters the service's response headers the same way, drops any
  ``x-road-id``, ``x-road-client``, ``x-road-request-id``, ``x-road-request-hash`` the service set
  (not ``x-road-service``: X-Road keeps a service's own one, so it then appears twice) and appends
  ``x-road-id``, ``x-road-client``, ``x-road-service``, ``x-road-request-id``,
  ``x-road-request-hash`` in that order (identifier parts escaped as Guava's
  ``urlPathSegmentEscaper`` does).
* Request hash (``ServerRestMessageProcessor``, "calculate request hash"):
  ``SHA-512(SHA-512(header part) ‖ body digest)`` when the request had a body, else
  ``SHA-512(header part)``; the body digest uses the transport's ``x-hash-algorithm``
  (always SHA-512 in X-Road) and the header-part digest is SHA-512 of the header part *as
  re-serialised from the parsed request* (``RestMessage.getHash`` over ``toByteArray``).  The
  consumer side recomputes it and compares (``InconsistentResponse``).  A request has a body
  when the client sent at least one byte of it.

Errors are :class:`~protocols.xroad.faults.XRoadFault` without an origin prefix (the caller adds
``Server.ClientProxy`` or ``Server.ServerProxy``), with the codes X-Road reaches: a missing
``X-Road-Client`` is ``InvalidClientIdentifier``; anything X-Road's constructors reject with an
``IllegalArgumentException`` (unknown verb, malformed path, wrong protocol version, malformed
identifier header, a skipped header inside a serialised message, a response without
``x-road-id``/``x-road-request-hash``) is ``InternalError`` as in Java.  Deviations (stricter):
identifier parts failing :func:`protocols.xroad.ids.check_wire_part` are
``InvalidClientIdentifier`` (Java only logs them), and header names or values holding CR, LF or
NUL, and request targets holding spaces or control characters, are ``InternalError`` (they would
forge lines of the signed header part).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from protocols.xroad.faults import XRoadFault
from protocols.xroad.ids import (
    REST_PROTOCOL_VERSION,
    ClientId,
    IdentifierError,
    RepresentedParty,
    SecurityServerId,
    ServiceId,
    parse_rest_path,
)

__all__ = [
    "HEADER_CLIENT_ID",
    "HEADER_ERROR",
    "HEADER_ISSUE",
    "HEADER_QUERY_ID",
    "HEADER_REPRESENTED_PARTY",
    "HEADER_REQUEST_HASH",
    "HEADER_REQUEST_ID",
    "HEADER_SECURITY_SERVER",
    "HEADER_SERVICE_ID",
    "HEADER_USER_ID",
    "SKIPPED_HEADERS",
    "VERBS",
    "HeaderList",
    "RestRequest",
    "RestResponse",
    "accept_values",
    "build_response",
    "check_response",
    "client_request",
    "compute_request_hash",
    "encode_identifier",
    "filter_headers",
    "is_rest_path",
    "parse_rest_message",
    "parse_rest_request",
    "parse_rest_response",
]

HEADER_QUERY_ID = "x-road-id"
HEADER_CLIENT_ID = "x-road-client"
HEADER_SERVICE_ID = "x-road-service"
HEADER_REQUEST_HASH = "x-road-request-hash"
HEADER_REQUEST_ID = "x-road-request-id"
HEADER_USER_ID = "x-road-userid"
HEADER_ISSUE = "x-road-issue"
HEADER_SECURITY_SERVER = "x-road-security-server"
HEADER_ERROR = "x-road-error"
HEADER_REPRESENTED_PARTY = "x-road-represented-party"

#: Headers never carried through X-Road (``RestMessage.SKIPPED_HEADERS``), lower case.
SKIPPED_HEADERS: frozenset[str] = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "user-agent", "server", "content-length", "expect",
})

#: ``RestRequest.Verb``: the methods X-Road relays (case-sensitive).
VERBS: frozenset[str] = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})

CRLF = b"\r\n"
HeaderList = tuple[tuple[str, str], ...]

# Guava's urlPathSegmentEscaper: unreserved characters and sub-delims, ':' and '@' stay literal.
_PATH_SEGMENT_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@")
_FORBIDDEN_IN_HEADER = frozenset("\r\n\x00")
_FORBIDDEN_IN_TARGET = frozenset(" \t\r\n\x00\x7f\"<>\\^`{|}")


def _internal(message: str) -> XRoadFault:
    return XRoadFault("InternalError", message)


def _identifier_fault(exc: IdentifierError, what: str) -> XRoadFault:
    if exc.reason == "invalid_characters":
        return XRoadFault("InvalidClientIdentifier", f"Invalid {what}: {exc.message}")
    return _internal(f"Invalid {what}: {exc.message}")


def encode_identifier(parts: Iterable[str]) -> str:
    """``a/b/c`` with each part escaped as Guava's ``urlPathSegmentEscaper`` (X-Road's
    ``RestResponse.encodeXRoadId``): UTF-8, upper-case hex, sub-delims ``:`` ``@`` literal."""
    out: list[str] = []
    for part in parts:
        out.append("".join(chr(b) if chr(b) in _PATH_SEGMENT_SAFE else f"%{b:02X}" for b in part.encode("utf-8")))
    return "/".join(out)


def is_rest_path(target: str) -> bool:
    """Whether a request target is a REST call (``/r1/…``), as ``ClientRestMessageHandler`` decides."""
    return target.startswith(f"/r{REST_PROTOCOL_VERSION}/")


def _header_values(headers: HeaderList, name: str) -> list[str]:
    low = name.lower()
    return [v for k, v in headers if k.lower() == low]


def _first(headers: HeaderList, name: str) -> str | None:
    values = _header_values(headers, name)
    return values[0] if values else None


def _last(headers: HeaderList, name: str) -> str | None:
    values = _header_values(headers, name)
    return values[-1] if values else None


def _serialize_headers(headers: HeaderList, only_xroad: bool = False) -> bytes:
    return b"".join(f"{k}:{v}".encode() + CRLF for k, v in headers
                    if not only_xroad or k.lower().startswith("x-road-"))


def _check_header(name: str, value: str) -> None:
    if not name or any(ch in _FORBIDDEN_IN_HEADER or ch == ":" for ch in name):
        raise _internal(f"Invalid header name {name[:80]!r}")
    if any(ch in _FORBIDDEN_IN_HEADER for ch in value):
        raise _internal(f"Invalid value of header {name}")


def filter_headers(headers: Iterable[tuple[str, str]], drop: Iterable[str] = ()) -> HeaderList:
    """The headers without :data:`SKIPPED_HEADERS` and ``drop`` (names compared case-insensitively),
    order and spelling kept."""
    extra = {d.lower() for d in drop}
    out: list[tuple[str, str]] = []
    for name, value in headers:
        low = name.lower()
        if low in SKIPPED_HEADERS or low in extra:
            continue
        _check_header(name, value)
        out.append((name, value))
    return tuple(out)


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class RestRequest:
    """A REST request as X-Road carries it: verb, raw (still encoded) path, raw query (``None``
    without ``?``) and the filtered headers in order.  The identifiers are decoded from them."""

    verb: str
    path: str
    query: str | None
    headers: HeaderList
    service: ServiceId
    service_path: str
    client: ClientId | None
    query_id: str | None
    x_request_id: str | None
    security_server: SecurityServerId | None
    represented_party: RepresentedParty | None

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (``RestMessage.findHeaderValueByName``)."""
        return _first(self.headers, name)

    def header_all(self, name: str) -> list[str]:
        return _header_values(self.headers, name)

    @property
    def user_id(self) -> str | None:
        return self.header(HEADER_USER_ID)

    @property
    def issue(self) -> str | None:
        return self.header(HEADER_ISSUE)

    @property
    def target(self) -> str:
        """``path[?query]`` as sent to the service's address (the service path is appended there)."""
        return self.path if self.query is None else f"{self.path}?{self.query}"

    def serialize(self) -> bytes:
        """The header part: what is signed as ``/message.xml`` and logged as ``message.xml``."""
        return self.verb.encode() + CRLF + self.target.encode() + CRLF + _serialize_headers(self.headers)

    def filtered(self) -> bytes:
        """``getFilteredMessage``: the path without the service path and only ``X-Road-*`` headers
        (what the message log keeps when body logging is off)."""
        path = self.path[:len(self.path) - len(self.service_path)] if self.service_path else self.path
        return self.verb.encode() + CRLF + path.encode() + CRLF + _serialize_headers(self.headers, only_xroad=True)

    def digest(self) -> bytes:
        """SHA-512 of the header part (``RestMessage.getHash``)."""
        return hashlib.sha512(self.serialize()).digest()

    def with_query_id(self, query_id: str) -> RestRequest:
        """``setQueryId``: append ``x-road-id`` (only when the request has none)."""
        if self.query_id is not None:
            raise ValueError("the request already has an X-Road-Id")
        _check_header(HEADER_QUERY_ID, query_id)
        return _decode(self.verb, self.path, self.query, (*self.headers, (HEADER_QUERY_ID, query_id)))


def _split_target(target: str) -> tuple[str, str | None]:
    if any(ch in _FORBIDDEN_IN_TARGET or ord(ch) < 0x20 for ch in target):
        raise _internal("Invalid request URI")
    target = target.split("#", 1)[0]
    path, q, query = target.partition("?")
    if not path.startswith("/"):
        raise _internal("Invalid request URI")
    return path, (query if q else None)


def _decode(verb: str, path: str, query: str | None, headers: HeaderList) -> RestRequest:
    if verb not in VERBS:
        raise _internal(f"Unsupported HTTP method {verb[:20]!r}")
    try:
        target = parse_rest_path(path)
    except IdentifierError as exc:
        raise _identifier_fault(exc, "request URI") from None
    client: ClientId | None = None
    query_id: str | None = None
    x_request_id: str | None = None
    server: SecurityServerId | None = None
    party: RepresentedParty | None = None
    for name, value in headers:  # as RestRequest.decodeHeaders: the last one of each wins
        low = name.lower()
        try:
            if low == HEADER_CLIENT_ID:
                client = ClientId.from_rest_header(value)
            elif low == HEADER_QUERY_ID:
                query_id = value
            elif name == HEADER_REQUEST_ID:  # case-sensitive in Java; we append it in lower case
                x_request_id = value
            elif low == HEADER_SECURITY_SERVER:
                server = SecurityServerId.from_rest_header(value)
            elif low == HEADER_REPRESENTED_PARTY:
                party = RepresentedParty.from_rest_header(value)
        except IdentifierError as exc:
            raise _identifier_fault(exc, f"{name} header") from None
    return RestRequest(verb, path, query, headers, target.service, target.service_path, client, query_id,
                       x_request_id, server, party)


def client_request(method: str, path: str, query: str | None, headers: Iterable[tuple[str, str]], *,
                   x_request_id: str, instance: str | None = None,
                   id_factory: Callable[[], str] = lambda: str(uuid.uuid4())) -> RestRequest:
    """The request a consumer gateway relays for an information system's call.

    ``path`` and ``query`` are raw (still percent-encoded) as received, ``headers`` in order as
    received.  Unless ``instance`` is ``None``, a request without ``X-Road-Id`` gets
    ``x-road-id: INSTANCE-<uuid>`` as X-Road's client proxy adds it.  Raises
    ``InvalidClientIdentifier`` without a usable ``X-Road-Client``."""
    kept = filter_headers(headers, drop=(HEADER_REQUEST_ID, HEADER_REQUEST_HASH))
    _check_header(HEADER_REQUEST_ID, x_request_id)
    if any(ch in _FORBIDDEN_IN_TARGET or ord(ch) < 0x20 for ch in path + (query or "")):
        raise _internal("Invalid request URI")
    request = _decode(method, path, query, (*kept, (HEADER_REQUEST_ID, x_request_id)))
    if request.client is None:
        raise XRoadFault("InvalidClientIdentifier", "The client identifier is missing")
    if request.query_id is None and instance is not None:
        request = request.with_query_id(f"{instance}-{id_factory()}")
    return request


def _lines(data: bytes) -> list[str]:
    """Lines as Java's ``BufferedReader`` reads them (LF, CR or CRLF; UTF-8 with replacement)."""
    text_lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if text_lines and text_lines[-1] == b"":
        text_lines.pop()
    return [line.decode("utf-8", errors="replace") for line in text_lines]


def _split_header(line: str) -> tuple[str, str]:
    name, colon, value = line.partition(":")
    if not line or not colon:
        raise _internal("Invalid header")
    if name.lower() in SKIPPED_HEADERS:
        raise _internal(f"Invalid header: {name[:80]}")
    if "\x00" in line:
        raise _internal("Invalid header")
    return name, value


def parse_rest_request(data: bytes) -> RestRequest:
    """Parse a serialised header part (``application/x-road-rest-request``), as ``RestRequest(byte[])``."""
    lines = _lines(data)
    if len(lines) < 2:
        raise _internal("Invalid REST request message")
    path, query = _split_target(lines[1])
    headers = tuple(_split_header(line) for line in lines[2:])
    return _decode(lines[0], path, query, headers)


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class RestResponse:
    """A REST response as X-Road carries it (status, reason, headers with X-Road's own)."""

    status: int
    reason: str
    headers: HeaderList
    query_id: str
    request_hash: bytes
    service: ServiceId | None
    client: ClientId | None
    x_request_id: str | None

    def header(self, name: str) -> str | None:
        return _first(self.headers, name)

    def header_all(self, name: str) -> list[str]:
        return _header_values(self.headers, name)

    @property
    def is_error(self) -> bool:
        """``isErrorResponse``: status 400–599."""
        return 400 <= self.status <= 599

    @property
    def request_hash_b64(self) -> str:
        return base64.b64encode(self.request_hash).decode("ascii")

    def serialize(self) -> bytes:
        return str(self.status).encode() + CRLF + self.reason.encode() + CRLF + _serialize_headers(self.headers)

    def filtered(self) -> bytes:
        return str(self.status).encode() + CRLF + self.reason.encode() + CRLF + _serialize_headers(self.headers, True)

    def digest(self) -> bytes:
        return hashlib.sha512(self.serialize()).digest()


def build_response(request: RestRequest, status: int, reason: str, headers: Iterable[tuple[str, str]], *,
                   request_hash: bytes, x_request_id: str) -> RestResponse:
    """The response a provider gateway signs for its service's answer (``RestResponse`` constructor):
    the service's headers filtered, then X-Road's headers appended."""
    if request.client is None or request.query_id is None:
        raise _internal("request lacks client or X-Road-Id")
    if not 100 <= status <= 999:
        raise _internal(f"Invalid HTTP status {status}")
    if any(ch in _FORBIDDEN_IN_HEADER for ch in reason):
        raise _internal("Invalid reason phrase")
    kept = filter_headers(headers, drop=(HEADER_QUERY_ID, HEADER_REQUEST_HASH, HEADER_CLIENT_ID, HEADER_REQUEST_ID))
    _check_header(HEADER_REQUEST_ID, x_request_id)
    own = ((HEADER_QUERY_ID, request.query_id),
           (HEADER_CLIENT_ID, encode_identifier(request.client.parts())),
           (HEADER_SERVICE_ID, encode_identifier(request.service.parts()[:5])),
           (HEADER_REQUEST_ID, x_request_id),
           (HEADER_REQUEST_HASH, base64.b64encode(request_hash).decode("ascii")))
    return RestResponse(status, reason, kept + own, request.query_id, request_hash, request.service, request.client,
                        x_request_id)


def _service_from_header(value: str) -> ServiceId:
    parts = value.split("/", 5)
    if len(parts) != 5:
        raise _internal("Invalid Service Id")
    try:
        target = parse_rest_path(f"/r{REST_PROTOCOL_VERSION}/" + value)
    except IdentifierError as exc:
        raise _identifier_fault(exc, "x-road-service header") from None
    return target.service


def parse_rest_response(data: bytes) -> RestResponse:
    """Parse a serialised response header part (``application/x-road-rest-response``), as
    ``RestResponse.of``: ``x-road-id`` and ``x-road-request-hash`` must be present and non-empty."""
    lines = _lines(data)
    if len(lines) < 2:
        raise _internal("Invalid REST response message")
    status_text = lines[0]
    if not status_text.isascii() or not status_text.lstrip("+-").isdigit() or len(status_text) > 10:
        raise _internal(f"Invalid HTTP status {status_text[:20]!r}")
    headers = tuple(_split_header(line) for line in lines[2:])
    query_id = request_hash = None
    service: ServiceId | None = None
    client: ClientId | None = None
    x_request_id: str | None = None
    for name, value in headers:
        low = name.lower()
        try:
            if low == HEADER_QUERY_ID:
                query_id = value
            elif low == HEADER_REQUEST_HASH:
                try:
                    request_hash = base64.b64decode(value, validate=True)
                except ValueError:
                    raise _internal("Invalid x-road-request-hash") from None
            elif low == HEADER_SERVICE_ID:
                service = _service_from_header(value)
            elif low == HEADER_CLIENT_ID:
                client = ClientId.from_rest_header(value)
            elif low == HEADER_REQUEST_ID:
                x_request_id = value
        except IdentifierError as exc:
            raise _identifier_fault(exc, f"{name} header") from None
    if not query_id or not request_hash:
        raise _internal("Invalid REST Response message")
    return RestResponse(int(status_text), lines[1], headers, query_id, request_hash, service, client, x_request_id)


def parse_rest_message(data: bytes) -> RestRequest | RestResponse:
    """``RestMessage.of``: a response when the first byte is a digit 1–9, else a request."""
    if not data:
        raise _internal("Invalid message")
    return parse_rest_response(data) if 0x31 <= data[0] <= 0x39 else parse_rest_request(data)


# --------------------------------------------------------------------------- request hash


def compute_request_hash(request: RestRequest | bytes, body_digest: bytes | None) -> bytes:
    """``X-Road-Request-Hash`` (raw bytes; base64 on the wire): SHA-512(SHA-512(header part) ‖
    ``body_digest``), or SHA-512(header part) without a body.  ``request`` is the request or its
    SHA-512 header-part digest."""
    head = request.digest() if isinstance(request, RestRequest) else request
    if body_digest is None:
        return head
    return hashlib.sha512(head + body_digest).digest()


def check_response(request: RestRequest, response: RestResponse, body_digest: bytes | None) -> None:
    """The consumer gateway's consistency checks (``ClientRestMessageProcessor.checkConsistency``):
    client, X-Road-Id, service and request id echoed, and the request hash; else
    ``InconsistentResponse``."""
    if request.client != response.client:
        raise XRoadFault("InconsistentResponse", "Response client id does not match request message")
    if request.query_id != response.query_id:
        raise XRoadFault("InconsistentResponse", "Response message id does not match request message")
    if request.service != response.service:
        raise XRoadFault("InconsistentResponse", "Response service id does not match request message")
    if request.x_request_id != response.x_request_id:
        raise XRoadFault("InconsistentResponse", "Response message request id does not match request message")
    if not hmac.compare_digest(compute_request_hash(request, body_digest), response.request_hash):
        raise XRoadFault("InconsistentResponse", "Response message hash does not match request message")


def accept_values(headers: Sequence[tuple[str, str]]) -> list[str]:
    """The ``Accept`` values of a header list, for :meth:`XRoadFault.to_rest`."""
    return [v for k, v in headers if k.lower() == "accept"]
