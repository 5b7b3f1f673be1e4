"""A test-only HTTP server that answers exactly what a conformance case tells it to (used by
``tests/test_xroad_conformance_e2e.py``).

Two roles, one per process:

* ``service HOST PORT [TLS_PORT KEY CERT]``: the provider's service.  The test sets the next answer
  with ``POST /_control/next`` (JSON ``{"status", "content_type", "body" (base64), "action"}``) and
  reads the last request the service received with ``GET /_control/last``.  With ``TLS_PORT`` the
  same service (same state) also answers over HTTPS there, with ``KEY`` and ``CERT``.
* ``server-proxy HOST PORT CONTROL_PORT KEY CERT [CHAIN...]``: a dummy server proxy on the
  provider's address and port (TLS with the provider's authentication key, answers unsigned),
  controlled the same way on a plain HTTP port of the same host.

``action`` is ``reply`` (status, content type, body), ``truncated`` (headers with
``Content-Length: 1000`` and no body, then the connection is closed) or ``reset`` (the request is
read, then the connection is reset).
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

reactor: Any = _reactor


class State:
    def __init__(self) -> None:
        self.next: dict[str, Any] = {"status": 200, "content_type": "text/xml; charset=UTF-8", "body": "",
                                     "action": "reply"}
        self.last: dict[str, Any] = {}


class Control(Resource):
    isLeaf = True

    def __init__(self, state: State) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.state = state

    def render_POST(self, request: Any) -> bytes:
        self.state.next = json.loads(request.content.read())
        self.state.last = {}
        request.setHeader(b"content-type", b"application/json")
        return b"{}"

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.state.last).encode()


class Answer(Resource):
    isLeaf = True

    def __init__(self, state: State) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.state = state

    def render(self, request: Any) -> bytes | int:
        if request.path.startswith(b"/_control"):
            return Control(self.state).render(request)  # type: ignore[no-any-return]
        body = request.content.read() if request.content is not None else b""
        self.state.last = {
            "method": request.method.decode("ascii", "replace"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")]
                        for k, vs in request.requestHeaders.getAllRawHeaders() for v in vs],
            "body": base64.b64encode(body).decode(),
        }
        spec = self.state.next
        request.defaultContentType = None
        action = spec.get("action", "reply")
        if action == "reset":
            request.channel.transport.abortConnection()
            return NOT_DONE_YET
        if spec.get("content_type") is not None:
            request.setHeader(b"content-type", spec["content_type"].encode("latin-1"))
        request.setResponseCode(int(spec.get("status", 200)))
        if action == "truncated":
            request.setHeader(b"content-length", b"1000")
            request.write(b"")
            transport = request.channel.transport
            # Over TLS, close the TCP connection itself (Twisted's TLS would wait for the peer's close_notify).
            reactor.callLater(0.05, getattr(transport, "transport", transport).loseConnection)
            return NOT_DONE_YET
        data = base64.b64decode(spec.get("body", ""))
        request.setHeader(b"content-length", str(len(data)).encode())
        return data


def _site(resource: Resource) -> Site:
    site = Site(resource)  # type: ignore[no-untyped-call]
    site.noisy = False
    return site


def main(argv: list[str]) -> None:
    state = State()
    role, host, port = argv[0], argv[1], int(argv[2])
    if role == "service":
        reactor.listenTCP(port, _site(Answer(state)), interface=host)
        if len(argv) > 3:
            from twisted.internet import ssl

            tls_port, key, cert = int(argv[3]), argv[4], argv[5]
            with open(key, "rb") as f, open(cert, "rb") as g:
                options = ssl.PrivateCertificate.loadPEM(f.read() + b"\n" + g.read()).options()
            reactor.listenSSL(tls_port, _site(Answer(state)), options, interface=host)
        print(f"service listening on {host}:{port}", flush=True)
    elif role == "server-proxy":
        from twisted.internet import ssl

        control_port, key, cert, chain = int(argv[3]), argv[4], argv[5], argv[6:]
        with open(key, "rb") as f:
            key_pem = f.read()
        with open(cert, "rb") as f:
            cert_pem = f.read()
        extra = []
        for path in chain:
            with open(path, "rb") as f:
                extra.append(ssl.Certificate.loadPEM(f.read()).original)
        options = ssl.PrivateCertificate.loadPEM(key_pem + b"\n" + cert_pem).options()
        options.extraCertChain = extra
        reactor.listenSSL(port, _site(Answer(state)), options, interface=host)
        reactor.listenTCP(control_port, _site(Control(state)), interface=host)
        print(f"server proxy listening on {host}:{port}", flush=True)
    else:
        raise SystemExit(f"unknown role {role!r}")
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
