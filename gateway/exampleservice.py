"""The sandbox's example provider service: what sits behind ``gw-provider``.

``vdxp-gateway sandbox example-service --listen ENDPOINT`` (or ``sandbox up``) serves:

* ``POST /soap`` (also ``POST /``): X-Road SOAP ``echo``. The answer is an X-Road SOAP response
  echoing the request's header (client, service, id, userId, issue, protocolVersion...) whose body
  element is the request's, renamed ``<name>Response`` (``echo`` → ``echoResponse``) in the same
  namespace, with the same children.  With attachments (SwA, ``multipart/related``) the answer is
  multipart too, with the same boundary and the attachments sent back as they came.  Anything that
  is not a valid X-Road request gets a SOAP fault.
* ``GET /items`` → ``{"items": [...]}``, ``GET /items/ID`` → ``{"id": ..., "name": ...}``,
  ``POST /items[/ID]`` → the request body as it came, with its content type (streamed back from
  Twisted's spool file, never whole in memory).  JSON answers name the ``X-Road-Client`` the
  provider gateway passed, when there is one.

Twisted's access log records one line per request (method, path, status, size); nothing of the
content is logged.
"""

from __future__ import annotations

import json
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

__all__ = ["ExampleService", "example_site", "listen"]

MAX_SOAP_BYTES = 10 * 1024 * 1024
ITEMS = [{"id": 1, "name": "item 1"}, {"id": 2, "name": "item 2"}, {"id": 3, "name": "item 3"}]
CHUNK = 64 * 1024


def _fault(code: str, message: str) -> bytes:
    from xml.sax.saxutils import escape

    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>'
        f"<SOAP-ENV:Fault><faultcode>{escape(code)}</faultcode><faultstring>{escape(message)}</faultstring>"
        "</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


def _soap_fault(request: Any, code: str, message: str) -> bytes:
    request.setResponseCode(500)
    return _fault(code, message)


def _echo_or_fault(request: Any, body: bytes, content_type: str | None) -> tuple[bool, bytes]:
    """``(True, echo)``, or ``(False, fault)`` with the response code set to 500."""
    from protocols.errors import VdxpError
    from protocols.xroad.faults import XRoadFault

    try:
        return True, echo_response(body, content_type)
    except XRoadFault as exc:
        code = exc.faultcode()
        return False, _soap_fault(request, code if exc.prefix else f"Client.{code}", exc.faultstring)
    except (VdxpError, ValueError) as exc:
        return False, _soap_fault(request, "Client.InvalidRequest", str(exc))


def echo_response(body: bytes, content_type: str | None) -> bytes:
    """The X-Road SOAP echo of ``body``; raises :class:`protocols.errors.VdxpError` (or an X-Road fault)
    when it is not a valid X-Road request."""
    from protocols.xmlsafe import parse_xml
    from protocols.xroad.soap import SoapMessage, build_response, parse_soap

    message = parse_soap(body, content_type or "text/xml; charset=UTF-8", max_bytes=MAX_SOAP_BYTES)
    if not isinstance(message, SoapMessage):
        raise ValueError("the request is a SOAP fault")
    root = parse_xml(message.raw)
    body_el = root.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
    request_el = body_el[0] if body_el is not None and len(body_el) else None
    children = list(request_el) if request_el is not None else []
    # The provider's security server adds requestHash itself; a service does not.
    return build_response(message, children, request_hash_algorithm=None)


def _copy_body(request: Any, limit: int | None = None) -> bytes:
    content: IO[bytes] | None = request.content
    if content is None:
        return b""
    content.seek(0)
    data = content.read(limit + 1 if limit is not None else -1)
    return data


class ExampleService(Resource):
    """The whole service as one leaf resource (routing on the path)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def render(self, request: Request) -> bytes | int:
        path = (request.path or b"/").decode("utf-8", "replace")
        method = (request.method or b"GET").decode("ascii", "replace")
        req: Any = request  # twisted.web's Request is not annotated
        # twisted.web's access log records each request (method, path, status, size): no content.
        return self._route(req, method, path)

    def _json(self, request: Any, value: Any, code: int = 200) -> bytes:
        client = request.getHeader("x-road-client")
        if client is not None and isinstance(value, dict):
            value = {**value, "x_road_client": client}
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(value).encode() + b"\n"

    def _route(self, request: Any, method: str, path: str) -> bytes | int:
        parts = [p for p in path.split("/") if p]
        if parts in ([], ["soap"]) or parts == ["echo"]:
            if method != "POST":
                request.setResponseCode(405)
                request.setHeader(b"allow", b"POST")
                return b"SOAP: POST an X-Road request\n"
            return self._soap(request)
        if parts and parts[0] == "items" and len(parts) <= 2:
            if method == "GET":
                if len(parts) == 1:
                    return self._json(request, {"items": ITEMS})
                item_id = parts[1]
                return self._json(request, {"id": int(item_id) if item_id.isdigit() else item_id,
                                            "name": f"item {item_id}"})
            if method in ("POST", "PUT"):
                return self._echo(request)
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, POST, PUT")
            return self._json(request, {"error": "method not allowed"}, 405)
        return self._json(request, {"error": "not found", "path": path}, 404)

    def _soap(self, request: Any) -> bytes | int:
        from protocols.xroad.mime import parse_content_type

        content_type = request.getHeader("content-type")
        ctype = parse_content_type(content_type)
        if ctype is not None and ctype.media_type == "multipart/related" and ctype.boundary:
            return self._soap_with_attachments(request, ctype.boundary)
        body = _copy_body(request, MAX_SOAP_BYTES)
        request.setHeader(b"content-type", b"text/xml; charset=UTF-8")
        if len(body) > MAX_SOAP_BYTES:
            return _soap_fault(request, "Server.TooLarge", "the request is too large for the example service")
        return _echo_or_fault(request, body, content_type)[1]

    def _soap_with_attachments(self, request: Any, boundary: str) -> bytes | int:
        """SOAP with attachments (multipart/related): the SOAP part is answered as above, the
        attachments are sent back as they came (copied from the spool file, not held in memory)."""
        content = request.content
        head = _copy_body(request, MAX_SOAP_BYTES + 64 * 1024)
        delimiter = b"--" + boundary.encode("ascii", "replace")
        first = head.find(delimiter)
        headers_end = head.find(b"\r\n\r\n", first) if first >= 0 else -1
        part_end = head.find(b"\r\n" + delimiter, headers_end) if headers_end >= 0 else -1
        if part_end < 0:
            request.setHeader(b"content-type", b"text/xml; charset=UTF-8")
            return _soap_fault(request, "Client.InvalidRequest", "no SOAP part in the multipart request")
        part_headers = head[first + len(delimiter):headers_end].strip(b"\r\n")
        part_type = next((line.split(b":", 1)[1].strip().decode("latin-1") for line in part_headers.split(b"\r\n")
                          if line.lower().startswith(b"content-type:")), None)
        ok, answer = _echo_or_fault(request, head[headers_end + 4:part_end], part_type)
        if not ok:
            request.setHeader(b"content-type", b"text/xml; charset=UTF-8")
            return answer
        kept = b"\r\n".join(line for line in part_headers.split(b"\r\n")
                              if not line.lower().startswith((b"content-type:", b"content-length:",
                                                              b"content-transfer-encoding:")))
        prefix = (delimiter + b"\r\nContent-Type: text/xml; charset=UTF-8\r\n" + (kept + b"\r\n" if kept else b"")
                  + b"\r\n" + answer)
        request.setHeader(b"content-type", request.getHeader("content-type").encode("latin-1"))
        content.seek(0, 2)
        request.setHeader(b"content-length", str(len(prefix) + content.tell() - part_end).encode())
        content.seek(part_end)
        request.write(prefix)
        request.registerProducer(_FileProducer(request, content), False)
        return NOT_DONE_YET

    def _echo(self, request: Any) -> int:
        """POST echoes the body with its content type, streamed from the spool file."""
        request.setResponseCode(200)
        request.setHeader(b"content-type", request.getHeader("content-type") or "application/octet-stream")
        content = request.content
        if content is None:
            request.finish()
            return NOT_DONE_YET
        content.seek(0, 2)
        request.setHeader(b"content-length", str(content.tell()).encode())
        content.seek(0)
        producer = _FileProducer(request, content)
        request.registerProducer(producer, False)
        return NOT_DONE_YET


class _FileProducer:
    """A pull producer: one chunk of the file per ``resumeProducing``."""

    def __init__(self, request: Any, content: IO[bytes]) -> None:
        self.request = request
        self.content = content

    def resumeProducing(self) -> None:
        chunk = self.content.read(CHUNK)
        if chunk:
            self.request.write(chunk)
            return
        self.request.unregisterProducer()
        self.request.finish()

    def stopProducing(self) -> None:
        self.content.seek(0, 2)

    def pauseProducing(self) -> None:  # pragma: no cover - pull producers are not paused
        pass


def example_site() -> Site:
    site = Site(ExampleService())  # type: ignore[no-untyped-call]
    site.noisy = False
    return site


async def listen(reactor: Any, endpoint: str) -> IListeningPort:
    """Serve the example service on ``endpoint`` (a Twisted server endpoint string)."""
    from twisted.internet.endpoints import serverFromString

    port: IListeningPort = await serverFromString(reactor, endpoint).listen(  # type: ignore[no-untyped-call]
        example_site())
    return port


def run_forever(reactor: Any, endpoint: str, out: IO[str]) -> Deferred[None]:
    """``listen`` and print ``example service listening on http://HOST:PORT/``; never fires."""

    async def main() -> None:
        port: Any = await listen(reactor, endpoint)
        address = port.getHost()
        out.write(f"example service listening on http://{getattr(address, 'host', '')}:"
                  f"{getattr(address, 'port', 0)}/\n")
        out.flush()
        await Deferred()

    return Deferred.fromCoroutine(main())
