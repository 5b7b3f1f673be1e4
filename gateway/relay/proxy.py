"""The relay: the client side (information systems → this gateway) and the server side (peer
gateways → this gateway → the service), for X-Road SOAP messages.

Consumer side (:class:`ClientProxy`, ports 8080/8443): the information system POSTs an X-Road
SOAP message; the gateway checks it (protocol, global configuration valid, client hosted here,
how the information system authenticates), finds the provider's security server, signs the
message with the client member's key, sends the transport message over mutual TLS, verifies the
signed response (signer = the provider member, echoed header, ``requestHash``) and returns the
SOAP response.

Provider side (:class:`ServerProxy`, port 5500): the peer's TLS certificate is registered in
global configuration (checked in the handshake) and belongs to a server that hosts the calling
client, with a good OCSP response among the message's OCSP parts; the signature is verified; the
access rights of the service are checked; the request goes to the service's URL; the response is
checked, its ``requestHash`` set, signed with the provider member's key and streamed back.

Every failure is an X-Road fault with a UUID in its detail, logged with that UUID and counted.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import secrets
import tempfile
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import IO, Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry, Counter, Histogram
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from gateway.config import GatewayConfig
from gateway.messagelog.store import LogEntry, LoggingFailed
from gateway.ownocsp import issuer_in_conf
from gateway.ownocsp import sha1_hex as _sha1_hex
from gateway.relay import metaservices
from gateway.relay.access import check_access
from gateway.relay.intake import IncomingSoap, read_soap
from gateway.relay.peers import Peers, provider_servers
from hsm.http import HttpFetchError
from protocols import ocsp as p_ocsp
from protocols import sigverify
from protocols.errors import VdxpError
from protocols.gconf.params import ClientId as ConfClientId
from protocols.xroad import faults, meta, soap, transport
from protocols.xroad.faults import CLIENT, SERVER_CLIENTPROXY, SERVER_SERVERPROXY, Dialect, XRoadFault

PROXY_VERSION = "vdxp-gateway/0.1"
CHUNK = 64 * 1024
SPOOL = 1 << 20


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("vdxp_relay_requests", "Messages relayed, by side and result (ok or fault code).",
                                ["side", "result"], registry=registry)
        self.seconds = Histogram("vdxp_relay_seconds", "Time to relay one message, by side.", ["side"],
                                 registry=registry)


_metrics: dict[int, RelayMetrics] = {}


def relay_metrics(registry: CollectorRegistry) -> RelayMetrics:
    if id(registry) not in _metrics:
        _metrics[id(registry)] = RelayMetrics(registry)
    return _metrics[id(registry)]


def _conf_id(client: Any) -> ConfClientId:
    return ConfClientId.parse(str(client))


def _spool() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL)


def _chunks(f: IO[bytes]) -> Iterable[bytes]:
    f.seek(0)
    while True:
        data = f.read(CHUNK)
        if not data:
            return
        yield data


def _as_fault(exc: BaseException, prefix: tuple[str, ...]) -> XRoadFault:
    if isinstance(exc, XRoadFault):
        return exc if exc.prefix else exc.with_prefix(*prefix)
    if isinstance(exc, VdxpError) and exc.xroad_code:
        # A full code (Server.ClientProxy.X) stands as it is; a bare one gets our prefix.
        return XRoadFault(exc.xroad_code, exc.message, prefix=() if "." in exc.xroad_code else prefix)
    if isinstance(exc, VdxpError):
        return XRoadFault("InternalError", str(exc), prefix=prefix)
    return XRoadFault("InternalError", f"internal error: {type(exc).__name__}", prefix=prefix)


def _soap_multipart(message_raw: bytes, content_type: str, attachments: list[Any],
                    original: str | None = None, soap_headers: Any = None) -> tuple[str, IO[bytes]]:
    """The information system's view of a message with attachments (SwA or MTOM ``multipart/related``).
    With the ``original`` content type of the other end (its boundary and parameters) it is kept as it was."""
    from protocols.xroad.mime import parse_content_type

    parsed = parse_content_type(original) if original else None
    keep = parsed is not None and parsed.media_type == "multipart/related" and bool(parsed.boundary)
    boundary = parsed.boundary if keep and parsed is not None and parsed.boundary else "vdxp" + secrets.token_hex(12)
    out = _spool()
    out.write(f"--{boundary}\r\nContent-Type: {content_type}\r\n".encode())
    for name, value in soap_headers.items if soap_headers is not None else ():
        if name.lower() != "content-type":
            out.write(f"{name}: {value}\r\n".encode())
    out.write(b"\r\n" + message_raw)
    for att in attachments:
        out.write(f"\r\n--{boundary}\r\n".encode())
        for name, value in att.headers.items:
            out.write(f"{name}: {value}\r\n".encode())
        if att.headers.get("Content-Type") is None:
            out.write(f"Content-Type: {att.content_type}\r\n".encode())
        out.write(b"\r\n")
        for chunk in att.chunks():
            out.write(chunk)
    out.write(f"\r\n--{boundary}--\r\n".encode())
    if keep and original:
        return original, out
    start_type = content_type.split(";")[0].strip()
    return f'multipart/related; type="{start_type}"; boundary="{boundary}"', out


class _Base(Resource):
    isLeaf = True
    log = Logger()
    side = ""
    prefix: tuple[str, ...] = ()

    def __init__(self, reactor: Any, config: GatewayConfig, services: Any, peers: Peers,
                 registry: CollectorRegistry, current: Any = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._reactor = reactor
        self.config = config
        # Hosted clients, services and rights are looked up in the configuration in force, so a
        # connection kept alive across a reload answers with the new rights.
        self._current = current or (lambda: config)
        self._services = services  # the daemon's running components: "globalconf", "signing", "ownocsp"
        self.peers = peers
        self.metrics = relay_metrics(registry)
        self.dialect = Dialect.SNAKE if config.faults.dialect == "snake" else Dialect.CAMEL
        # Certificate paths, OCSP outcomes and signer names already verified for a peer's messages.
        self.verification_cache = sigverify.VerificationCache()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._reactor.seconds(), UTC)

    async def _log_message(self, direction: Literal["request", "response"], protocol: Literal["soap", "rest"],
                           query_id: str, client: Any, service: Any, signer: str, message: bytes, end: Any,
                           attachments: Sequence[tuple[str, IO[bytes]]] = (), x_request_id: str | None = None,
                           ) -> None:
        """Write the message to the message log before it is passed on; a message that cannot be
        logged is refused with ``LoggingFailed`` under this side's prefix.  ``end`` holds the
        signature and hash chain parts (a received ``MessageEnd`` or a ``SignedMessage``)."""
        service_log = self._services.get("messagelog")
        if service_log is None or not hasattr(service_log, "write"):
            if not self._current().message_log.enabled:
                return  # message logging is off (message_log.enabled: false)
            raise XRoadFault("LoggingFailed", "the message log is not running", prefix=self.prefix)
        provider = getattr(service, "provider", None)
        signature: bytes = getattr(end, "signature", None) or getattr(end, "signature_xml", None) or b""
        subsystem = str(provider) if provider is not None else str(service)
        stripped = None
        if not self._current().message_log.logs_body(subsystem):  # only then is the body-less copy kept
            # X-Road keeps the headers only: the SOAP envelope with an empty Body; a REST message's
            # serialisation holds no body already (that is the first attachment, not kept)
            stripped = soap.without_body(message) if protocol == "soap" else message
        entry = LogEntry(
            side="client" if self.side == "client" else "server", direction=direction, protocol=protocol,
            query_id=query_id, client=str(client), service=str(service),
            service_subsystem=subsystem, signer=signer,
            message=message, signature=signature,
            hash_chain=end.hash_chain, hash_chain_result=end.hash_chain_result, x_request_id=x_request_id,
            attachments=attachments, stripped_message=stripped)
        try:
            await service_log.write(entry)
        except LoggingFailed as exc:
            raise XRoadFault(exc.xroad_code or "LoggingFailed", exc.message, prefix=self.prefix) from None

    def _conf(self) -> Any:
        try:
            return self._services["globalconf"].check_valid().own_shared
        except KeyError:
            raise XRoadFault("OutdatedGlobalConf", "global configuration is not enabled on this gateway",
                             prefix=self.prefix) from None
        except VdxpError as exc:
            raise XRoadFault("OutdatedGlobalConf", exc.message, prefix=self.prefix) from None

    async def _signer(self, member: str) -> Any:
        """The member's signer, with the OCSP response of its certificate at hand (a signature
        carries it; without one X-Road cannot create the signature either)."""
        try:
            signer = self._services["signing"].signer_for(member)
        except (KeyError, VdxpError) as exc:
            raise XRoadFault("CannotCreateSignature", f"no signing key ready for {member}: {exc}",
                             prefix=self.prefix) from None
        own = self._own_ocsp()
        if own is not None:
            cert = signer.key.cert
            if not await own.ensure(cert, f"sign:{member}"):
                entry = own.entries.get(_sha1_hex(cert))
                raise XRoadFault("CannotCreateSignature", "no OCSP response for the signing certificate of "
                                 f"{member}: {getattr(entry, 'error', None) or 'not fetched'}", prefix=self.prefix)
            if not getattr(signer.key, "_vdxp_ocsp_hooked", False):
                import dataclasses

                hooked = dataclasses.replace(signer.key, ocsp_responses=lambda: own.responses_for(cert))
                object.__setattr__(hooked, "_vdxp_ocsp_hooked", True)
                signer.key = hooked
        return signer

    async def _sign(self, signer: Any, parts: list[tuple[str, bytes]]) -> Any:
        """Sign through the HSM; a failure of the token or key is X-Road's ``CannotCreateSignature``."""
        try:
            return await signer.sign(parts)
        except VdxpError as exc:
            self.log.error("{side}: signing failed ({code}): {error}", side=self.side, code=exc.code,
                           error=exc.message)
            raise XRoadFault("CannotCreateSignature", f"cannot create the signature: {exc.message}",
                             prefix=self.prefix) from None

    def _own_ocsp(self) -> Any:
        return self._services.get("ownocsp")

    def _fail(self, request: Request, exc: BaseException, started: float, rest: bool = False) -> None:
        fault = _as_fault(exc, self.prefix)
        if not isinstance(exc, VdxpError):
            from twisted.python.failure import Failure

            self.log.failure("{side}: unexpected error ({detail})", Failure(exc), side=self.side,
                             detail=fault.detail)
        self.metrics.requests.labels(side=self.side, result=fault.faultcode()).inc()
        self.metrics.seconds.labels(side=self.side).observe(time.monotonic() - started)
        self.log.warn("{side} fault {faultcode} ({detail}): {faultstring}", side=self.side,
                      faultcode=fault.faultcode(self.dialect), detail=fault.detail, faultstring=fault.faultstring)
        if request.finished or getattr(request, "_disconnected", False):
            return
        if rest:
            accept = [v.decode("latin-1") for v in request.requestHeaders.getRawHeaders(b"accept", [])]
            error = fault.to_rest(accept, self.dialect)
            request.setResponseCode(error.status)
            request.setHeader(b"content-type", error.content_type.encode())  # type: ignore[no-untyped-call]
            for name, value in error.headers.items():
                request.setHeader(name.encode(), value.encode())  # type: ignore[no-untyped-call]
            request.setHeader(b"content-length", str(len(error.body)).encode())  # type: ignore[no-untyped-call]
            request.write(error.body)
            request.finish()
            return
        body = fault.to_soap(self.dialect)
        request.setResponseCode(faults.SOAP_FAULT_HTTP_STATUS)
        request.setHeader(b"content-type", faults.SOAP_FAULT_CONTENT_TYPE.encode())  # type: ignore[no-untyped-call]
        request.setHeader(b"content-length", str(len(body)).encode())  # type: ignore[no-untyped-call]
        request.write(body)
        request.finish()

    def _ok(self, started: float) -> None:
        self.metrics.requests.labels(side=self.side, result="ok").inc()
        self.metrics.seconds.labels(side=self.side).observe(time.monotonic() - started)

    def _run(self, request: Request, coro: Any, rest: bool = False) -> int:
        started = time.monotonic()
        d = Deferred.fromCoroutine(coro)
        d.addCallbacks(lambda _: self._ok(started), lambda f: self._fail(request, f.value, started, rest))
        return NOT_DONE_YET


async def _stream(request: Request, f: IO[bytes]) -> None:
    """Send ``f`` as the response body with back-pressure (the transport is never handed more than
    it can take), then finish the response and close ``f``."""
    from twisted.protocols.basic import FileSender

    f.seek(0, 2)
    request.setHeader(b"content-length", str(f.tell()).encode())  # type: ignore[no-untyped-call]
    f.seek(0)
    try:
        await FileSender().beginFileTransfer(f, request)
        request.finish()
    finally:
        f.close()


def _write_fault(request: Request, raw: bytes) -> None:
    request.setResponseCode(faults.SOAP_FAULT_HTTP_STATUS)
    request.setHeader(b"content-type", faults.SOAP_FAULT_CONTENT_TYPE.encode())  # type: ignore[no-untyped-call]
    request.setHeader(b"content-length", str(len(raw)).encode())  # type: ignore[no-untyped-call]
    request.write(raw)
    request.finish()


def _is_rest(request: Request) -> bool:
    return bool(request.path and request.path.startswith(b"/r1/"))


def _request_headers(request: Request) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1"))
            for k, vs in request.requestHeaders.getAllRawHeaders() for v in vs]


def _split_uri(request: Request) -> tuple[str, str | None]:
    uri = request.uri.decode("latin-1")
    path, q, query = uri.partition("?")
    return path, (query if q else None)


def _has_body(f: IO[bytes] | None) -> bool:
    if f is None:
        return False
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    return size > 0


# Response headers a relay does not pass on (hop-by-hop and framing).
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                  "transfer-encoding", "upgrade", "content-length", "server", "date"})


def _header(request: Request, name: str) -> str | None:
    value = request.getHeader(name)
    return value if isinstance(value, str) or value is None else value.decode("latin-1")


async def _send(http: Any, url: str, headers: list[tuple[str, str]], body: IO[bytes], timeout: float,
                clock: Any, decoder: Any, prefix: tuple[str, ...], sink: Collected) -> None:
    """POST ``body`` and feed the response body, as it arrives, into ``decoder`` and its events into ``sink``."""
    import treq

    body.seek(0)
    d: Deferred[Any] = Deferred.fromCoroutine(_post(http, url, headers, body))

    def timed_out(_r: object, seconds: float) -> Any:
        raise XRoadFault("NetworkError", f"no answer from {url} within {seconds:g} s", prefix=prefix)

    d.addTimeout(timeout, clock, onTimeoutCancel=timed_out)
    response = await d
    if response.code != 200:
        await treq.content(response)
        raise XRoadFault("HttpError", f"{url} answered HTTP {response.code}", prefix=prefix)
    headers_in = [(k.decode("latin-1"), v.decode("latin-1")) for k, vs in response.headers.getAllRawHeaders()
                  for v in vs]
    th = transport.TransportHeaders.from_items(headers_in)
    if th.hash_algorithm is None:
        # A bare SOAP fault (the peer failed before streaming anything) carries no hash algorithm, and
        # an answer that is not a transport message at all is judged by its content type first.
        th = dataclasses.replace(th, hash_algorithm="SHA-512")
    dec = decoder(th)
    sink.http = th
    failed: list[BaseException] = []

    def collect(chunk: bytes) -> None:
        if failed:
            return
        try:
            for ev in dec.feed(chunk):
                sink.add(ev)
        except Exception as exc:  # kept, and raised once the body has been read
            failed.append(exc)

    collected: Deferred[Any] = treq.collect(response, collect)
    collected.addTimeout(timeout, clock, onTimeoutCancel=timed_out)
    try:
        await collected
    except XRoadFault:
        raise
    except Exception as exc:
        if failed:
            raise failed[0] from None
        raise XRoadFault(("ServiceFailed", "IOError"), f"connection to {url} broke while reading the answer: "
                         f"{type(exc).__name__}", prefix=prefix) from None
    if failed:
        raise failed[0]
    for ev in dec.close():
        sink.add(ev)


def _producer(body: IO[bytes]) -> Any:
    from twisted.web.client import FileBodyProducer

    body.seek(0, 2)
    size = body.tell()
    body.seek(0)
    producer = FileBodyProducer(body)  # type: ignore[arg-type]
    producer.length = size
    return producer


async def _post(http: Any, url: str, headers: list[tuple[str, str]], body: IO[bytes]) -> Any:
    try:
        return await http.request("POST", url, data=_producer(body), headers={k: [v] for k, v in headers},
                                  unbuffered=True)
    except HttpFetchError:
        raise
    except Exception as exc:
        raise XRoadFault("NetworkError", f"cannot reach {url}: {_why(exc)}", prefix=SERVER_CLIENTPROXY) from exc


def _why(exc: BaseException) -> str:
    """A readable reason for a failed connection (Twisted wraps the causes in Failures)."""
    reasons = getattr(exc, "reasons", None)
    if reasons:
        return "; ".join(_why(getattr(r, "value", r)) for r in reasons)
    args = getattr(exc, "args", ())
    if type(exc).__module__.startswith("OpenSSL") and args and isinstance(args[0], list) and args[0]:
        return "TLS handshake failed: " + ", ".join(str(e[-1]) for e in args[0] if isinstance(e, tuple))
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ClientProxy(_Base):
    """Ports 8080/8443: information systems call services of other members here."""

    side = "client"
    prefix = SERVER_CLIENTPROXY

    def __init__(self, *args: Any, secure: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.secure = secure
        self._list_clients = metaservices.ListClientsResource(self._installed, self._now, dialect=self.dialect)
        from gateway.messagelog.containers import AsicResource, VerificationConfResource

        self._asic = AsicResource(self._message_log, self._authenticate_is, self._stamp_now)
        self._verification_conf = VerificationConfResource(lambda: self._current().globalconf.directory)

    def _message_log(self) -> Any:
        service = self._services.get("messagelog")
        return getattr(service, "message_log", None)

    async def _stamp_now(self, record: Any) -> None:
        """``/asic?…&force``: time-stamp a record now (LoggingFailed when no TSA answers)."""
        timestamper = getattr(self._services.get("messagelog"), "timestamper", None)
        if timestamper is None:
            raise VdxpError("the message log is not running", code="mlog.not_running")
        await timestamper.stamp_record(record.id, record.signature)

    def _installed(self) -> Any:
        try:
            return self._services["globalconf"].check_valid()
        except KeyError:
            raise VdxpError("global configuration is not enabled on this gateway", code="gconf.outdated") from None

    def render(self, request: Request) -> int:
        if metaservices.is_list_clients_request(request.method, request.path or b""):
            return self._list_clients.render(request)  # type: ignore[no-any-return]
        if request.method in (b"GET", b"HEAD") and request.path == b"/asic":
            return self._asic.render(request)  # type: ignore[no-any-return]
        if request.method in (b"GET", b"HEAD") and request.path == b"/verificationconf":
            return self._verification_conf.render(request)  # type: ignore[no-any-return]
        if _is_rest(request):
            return self._run(request, self._handle_rest(request), rest=True)
        if request.method == b"POST":
            return self._run(request, self._handle(request))
        return self._run(request, self._method_not_allowed(request))

    async def _method_not_allowed(self, request: Request) -> None:
        soap.check_http_method(request.method.decode("ascii", "replace"), prefix=CLIENT)

    def _authenticate_is(self, request: Request, client: Any) -> Any:
        conf = self._current().client(str(client))
        if conf is None:
            raise XRoadFault("UnknownMember", f"Client '{client}' not found", prefix=SERVER_CLIENTPROXY)
        if conf.connection in ("https", "https-auth") and not request.isSecure():
            raise XRoadFault("SslAuthenticationFailed",
                             f"Client ({client}) specifies HTTPS but did not supply TLS certificate",
                             prefix=SERVER_CLIENTPROXY)
        if conf.connection == "https-auth":
            cert = request.transport.getPeerCertificate() if request.transport else None  # type: ignore[attr-defined]
            der = cert.to_cryptography().public_bytes(serialization.Encoding.DER) if cert is not None else b""
            allowed_der = {c.public_bytes(serialization.Encoding.DER)
                           for c in map(_load_cert, conf.is_certs) if c is not None}
            if der not in allowed_der:
                raise XRoadFault("SslAuthenticationFailed",
                                 f"Client ({client}) TLS certificate does not match any IS certificates",
                                 prefix=SERVER_CLIENTPROXY)
        return conf

    async def _exchange(self, server: Any, headers: Any, body: IO[bytes], make_decoder: Any) -> Collected:
        """POST the signed request ``body`` to the provider's gateway ``server`` and collect its answer.

        ``body`` is closed either way; so is a partly collected answer when the exchange fails.
        """
        got = Collected()
        peer = (server.address or "", self.config.relay.server_port)
        self.peers.policy.rejected.pop(peer, None)
        try:
            await _send(self.peers.http, self.peers.server_url(server), headers, body,
                        self.config.relay.service_timeout_seconds, self._reactor, make_decoder,
                        SERVER_CLIENTPROXY, got)
        except XRoadFault as fault:
            got.close()
            if fault.tokens[-1] == "NetworkError" and self.peers.policy.rejected.pop(peer, None) is not None:
                # The TLS handshake failed because the server showed a certificate global
                # configuration does not register for it (X-Road's AuthTrustVerifier).
                raise XRoadFault("SslAuthenticationFailed", f"the authentication certificate of {server.server_id()} "
                                 "is not registered for it in global configuration",
                                 prefix=SERVER_CLIENTPROXY) from None
            raise
        except BaseException:
            got.close()
            raise
        finally:
            body.close()
        return got

    async def _outgoing(self, shared: Any, client: Any, provider: Any,
                        security_server: Any) -> tuple[Any, Any, transport.TransportEncoder, IO[bytes]]:
        """The provider's server (fastest of those that host it), the client member's signer, and a
        request encoder whose spool already holds the OCSP responses of our authentication certificate."""
        target = str(security_server) if security_server else None
        self.peers.follow(shared)
        server = await self.peers.choose(provider_servers(shared, _conf_id(provider), target))
        signer = await self._signer(str(client.member))
        encoder = transport.TransportEncoder(transport.Direction.REQUEST)
        body = _spool()
        own = self._own_ocsp()
        auth_cert = _load_cert(self.config.relay.tls.cert)
        if own is not None and auth_cert is not None:
            for der in own.responses_for(auth_cert):
                body.write(encoder.ocsp_response(der))
        return server, signer, encoder, body

    async def _handle(self, request: Request) -> None:
        soap.check_http_method(request.method.decode("ascii", "replace"), prefix=CLIENT)
        action = soap.validate_soap_action(_header(request, "SOAPAction"), prefix=CLIENT)
        content_type = _header(request, "Content-Type")
        shared = self._conf()
        assert request.content is not None
        incoming = read_soap(request.content, content_type, prefix=CLIENT, fault_is_error=True,
                             max_bytes=self.config.relay.max_message_bytes)
        try:
            await self._relay(request, incoming, shared, content_type or "", action)
        finally:
            incoming.close()

    async def _relay(self, request: Request, incoming: IncomingSoap, shared: Any, content_type: str,
                     action: str | None) -> None:
        message = incoming.message
        assert isinstance(message, soap.SoapMessage)
        client = message.header.client
        self._authenticate_is(request, client)
        service = message.header.service
        provider = service.provider
        server, signer, encoder, body = await self._outgoing(shared, client, provider,
                                                             message.header.security_server)
        part_type = incoming.soap_headers.get("Content-Type") or content_type
        if not incoming.attachments:
            part_type = content_type
        body.write(encoder.soap(message.raw, part_type,
                                [(k, v) for k, v in incoming.soap_headers.items if k.lower() != "content-type"]
                                if incoming.attachments else ()))
        for att in incoming.attachments:
            body.write(encoder.attachment_start(att.content_type,
                                                [(k, v) for k, v in att.headers.items if k.lower() != "content-type"]))
            for chunk in att.chunks():
                body.write(encoder.attachment_data(chunk))
            body.write(encoder.attachment_end())
        signed = await self._sign(signer, encoder.parts_to_sign())
        request_id = secrets.token_hex(16)
        query_id = message.header.query_id
        await self._log_message("request", "soap", query_id, client, service, str(client.member), message.raw, signed,
                                [(a.content_type, a.file) for a in incoming.attachments], x_request_id=request_id)
        body.write(encoder.signature(signed))
        headers = encoder.http_headers(request_id=request_id, original_content_type=content_type,
                                       original_soap_action=action, proxy_version=PROXY_VERSION).items()

        def make_decoder(h: transport.TransportHeaders) -> Any:
            return transport.TransportDecoder.from_headers(h, transport.Direction.RESPONSE)

        got = await self._exchange(server, headers, body, make_decoder)
        response, attachments, end = got.message, got.attachments, got.end
        try:
            if got.fault_raw is not None:
                # The provider's gateway (or its service) answered with a fault: relayed as it is.
                _write_fault(request, got.fault_raw)
                return
            await self.peers.check_server_cert(server, shared, self._now())
            if end is None:
                raise XRoadFault("MissingSignature", "incomplete response", prefix=SERVER_CLIENTPROXY)
            if end.fault is not None:
                raise end.fault
            assert response is not None and end.signature is not None
            self._verify(end, response, attachments, str(provider.member), shared)
            if isinstance(response.message, soap.SoapFaultMessage):
                await self._log_message("response", "soap", query_id, client, service, str(provider.member),
                                        response.message.raw, end, x_request_id=request_id)
                _write_fault(request, response.message.raw)  # the service's own fault, signed and verified
                return
            try:
                soap.check_response(message, response.message)
            except XRoadFault as exc:
                raise exc.with_prefix(*SERVER_CLIENTPROXY) from None
            await self._log_message("response", "soap", query_id, client, service, str(provider.member),
                                    response.message.raw, end, _log_parts(attachments), x_request_id=request_id)
            await self._answer(request, response, attachments,
                               got.http.original_content_type if got.http is not None else None)
        finally:
            got.close()

    def _verify(self, end: Any, response: Any, attachments: list[dict[str, Any]], signer: str, shared: Any) -> None:
        parts = [sigverify.SignedPart(uri, digest=digest) for uri, digest in end.digests]
        try:
            sigverify.verify_signature(end.signature, signer=_conf_id(signer), conf=shared, at=self._now(),
                                       parts=parts, hash_chain_result=end.hash_chain_result,
                                       hash_chain=end.hash_chain, cache=self.verification_cache)
        except VdxpError as exc:
            code = exc.xroad_code or "InvalidSignatureValue"
            raise XRoadFault(code, exc.message, prefix=SERVER_CLIENTPROXY) from None

    async def _answer(self, request: Request, response: Any, attachments: list[dict[str, Any]],
                      original_type: str | None = None) -> None:
        raw = response.message.raw
        if not attachments:
            request.setHeader(b"content-type", response.content_type.encode())  # type: ignore[no-untyped-call]
            request.setHeader(b"content-length", str(len(raw)).encode())  # type: ignore[no-untyped-call]
            request.write(raw)
            request.finish()
            return
        atts = [_SpooledView(a) for a in attachments]
        ctype, out = _soap_multipart(raw, response.content_type, atts, original_type)
        request.setHeader(b"content-type", ctype.encode())  # type: ignore[no-untyped-call]
        await _stream(request, out)

    async def _handle_rest(self, request: Request) -> None:
        from protocols.xroad import rest as p_rest

        shared = self._conf()
        path, query = _split_uri(request)
        try:
            rest_req = p_rest.client_request(request.method.decode("ascii", "replace"), path, query,
                                             _request_headers(request), x_request_id=secrets.token_hex(16),
                                             instance=shared.instance)
        except XRoadFault as exc:
            raise exc if exc.prefix else exc.with_prefix(*CLIENT) from None
        client = rest_req.client
        assert client is not None
        self._authenticate_is(request, client)
        provider = rest_req.service.provider
        server, signer, encoder, body = await self._outgoing(shared, client, provider, rest_req.security_server)
        body.write(encoder.rest_request(rest_req))
        if _has_body(request.content):
            assert request.content is not None
            body.write(encoder.body_start())
            for chunk in _chunks(request.content):
                body.write(encoder.body_data(chunk))
            body.write(encoder.body_end())
        request_body_digest = encoder.body_digest
        signed = await self._sign(signer, encoder.parts_to_sign())
        await self._log_message("request", "rest", rest_req.query_id or "", client, rest_req.service,
                                str(client.member), rest_req.serialize(), signed,
                                [(_header(request, "Content-Type") or "application/octet-stream", request.content)]
                                if request_body_digest is not None and request.content is not None else (),
                                x_request_id=rest_req.x_request_id)
        body.write(encoder.signature(signed))
        headers = encoder.http_headers(request_id=rest_req.x_request_id, proxy_version=PROXY_VERSION).items()

        def make_decoder(h: transport.TransportHeaders) -> Any:
            return transport.TransportDecoder(h.content_type, transport.Direction.RESPONSE, h.hash_algorithm,
                                              rest=True)

        got = await self._exchange(server, headers, body, make_decoder)
        response = got.message.response if got.message is not None else None
        out = got.body if got.body is not None else _spool()
        end = got.end
        try:
            await self.peers.check_server_cert(server, shared, self._now())
            if end is None or end.fault is not None:
                raise end.fault if end is not None else XRoadFault("MissingRest", "no REST response",
                                                                  prefix=SERVER_CLIENTPROXY)
            assert response is not None and end.signature is not None
            self._verify(end, response, [], str(provider.member), shared)
            try:
                p_rest.check_response(rest_req, response, request_body_digest)
            except XRoadFault as exc:
                raise exc.with_prefix(*SERVER_CLIENTPROXY) from None
            await self._log_message("response", "rest", rest_req.query_id or "", client, rest_req.service,
                                    str(provider.member), got.message.raw, end,
                                    [(response.header("Content-Type") or "application/octet-stream", out)]
                                    if got.body is not None else (), x_request_id=rest_req.x_request_id)
            request.setResponseCode(response.status, response.reason.encode("latin-1", "replace"))
            for name, value in response.headers:
                if name.lower() not in _HOP:
                    request.responseHeaders.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
            await _stream(request, out)
        finally:
            out.close()
            got.close()


class _SpooledView:
    def __init__(self, a: dict[str, Any]) -> None:
        self.headers = a["headers"]
        self.content_type = a["content_type"] or "application/octet-stream"
        self._file = a["file"]

    def chunks(self) -> Iterable[bytes]:
        return _chunks(self._file)


class Collected:
    """A decoded transport message, taken in event by event: bodies and attachments go straight
    to spool files (memory up to 1 MiB each, then disk), so nothing large is held in memory."""

    def __init__(self) -> None:
        self.message: Any = None  # SoapPart, RestRequestPart or RestResponsePart
        self.ocsp: list[bytes] = []
        self.attachments: list[dict[str, Any]] = []
        self.body: IO[bytes] | None = None
        self.end: Any = None
        self.fault_raw: bytes | None = None  # a SOAP fault sent in place of the message or signature
        self.http: Any = None  # the TransportHeaders of the message

    def add(self, ev: Any) -> None:
        if isinstance(ev, transport.FaultPart):
            self.fault_raw = ev.raw
        if isinstance(ev, transport.SoapPart | transport.RestRequestPart | transport.RestResponsePart):
            self.message = ev
        elif isinstance(ev, transport.OcspResponsePart):
            self.ocsp.append(ev.der)
        elif isinstance(ev, transport.AttachmentStart):
            self.attachments.append({"headers": ev.headers, "content_type": ev.content_type, "file": _spool()})
        elif isinstance(ev, transport.AttachmentData):
            self.attachments[-1]["file"].write(ev.data)
        elif isinstance(ev, transport.BodyStart):
            self.body = _spool()
        elif isinstance(ev, transport.BodyData):
            assert self.body is not None
            self.body.write(ev.data)
        elif isinstance(ev, transport.MessageEnd):
            self.end = ev

    def close(self) -> None:
        for a in self.attachments:
            a["file"].close()
        if self.body is not None:
            self.body.close()


def _log_parts(attachments: list[dict[str, Any]]) -> list[tuple[str, IO[bytes]]]:
    """Received attachments (as :class:`Collected` keeps them) as the message log takes them."""
    return [(a["content_type"] or "application/octet-stream", a["file"]) for a in attachments]


def _load_cert(path: Any) -> x509.Certificate | None:
    """The first certificate of a PEM file; parsed again only when the file changed."""
    if path is None:
        return None
    try:
        st = os.stat(path)
        return _parse_cert_file(str(path), st.st_mtime_ns, st.st_size, st.st_ino)
    except (OSError, ValueError):
        return None


@functools.lru_cache(maxsize=32)
def _parse_cert_file(path: str, _mtime_ns: int, _size: int, _ino: int) -> x509.Certificate:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())[0]


class ServerProxy(_Base):
    """Port 5500 (mutual TLS): peer gateways call services of the clients hosted here."""

    side = "server"
    prefix = SERVER_SERVERPROXY

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._peer_verdicts: dict[tuple[bytes, tuple[bytes, ...], int], float] = {}

    def render(self, request: Request) -> int:
        if request.method != b"POST":
            return self._run(request, self._bad_method(request))
        return self._run(request, self._handle(request))

    async def _bad_method(self, request: Request) -> None:
        soap.check_http_method(request.method.decode("ascii", "replace"), prefix=SERVER_SERVERPROXY)

    def _peer_der(self, request: Request) -> bytes:
        cert = request.transport.getPeerCertificate() if request.transport else None  # type: ignore[attr-defined]
        if cert is None:
            raise XRoadFault("SslAuthenticationFailed", "the peer presented no certificate", prefix=self.prefix)
        return bytes(cert.to_cryptography().public_bytes(serialization.Encoding.DER))

    def _check_peer(self, shared: Any, peer_der: bytes, client: Any, ocsp_parts: list[bytes]) -> None:
        """X-Road's ``verifySslClientCert``: registered server that hosts the client; chain and OCSP."""
        server = shared.server_by_auth_cert(peer_der)
        if server is None:
            raise XRoadFault("SslAuthenticationFailed", "the peer's certificate is not registered",
                             prefix=self.prefix)
        cid = _conf_id(client)
        if not (server.hosts(cid) or server.hosts(_conf_id(client.member))):
            raise XRoadFault("SslAuthenticationFailed",
                             f"Client '{client}' is not registered at security server {server.server_id()}",
                             prefix=self.prefix)
        # The chain and OCSP verdict of a (certificate, OCSP response) pair holds until the response
        # is no longer fresh: peers send the same response with every message.
        now = self._now()
        key = (peer_der, tuple(ocsp_parts), id(shared))
        good_until = self._peer_verdicts.get(key)
        if good_until is not None and now.timestamp() < good_until:
            return
        cert = x509.load_der_x509_certificate(peer_der)
        found = issuer_in_conf(cert, shared)
        if found is None:
            raise XRoadFault("SslAuthenticationFailed", "the peer's certificate is not issued by an approved CA",
                             prefix=self.prefix)
        issuer, infos = found
        trusted = [o.cert for o in infos if o.cert is not None]
        last: VdxpError | None = None
        for der in ocsp_parts:
            try:
                freshness = float(shared.ocsp_freshness_seconds or 3600)
                status = p_ocsp.verify_response(der, cert=cert, issuer=issuer, at=now,
                                                freshness_seconds=freshness, trusted_responders=trusted)
            except VdxpError as exc:
                last = exc
                continue
            if status.is_good:
                until = status.this_update.timestamp() + freshness
                if status.next_update is not None:
                    until = min(until, status.next_update.timestamp())
                if len(self._peer_verdicts) > 1000:
                    self._peer_verdicts.clear()
                self._peer_verdicts[key] = min(until, cert.not_valid_after_utc.timestamp())
                return
            raise XRoadFault("SslAuthenticationFailed", f"the peer's certificate is {status.status}",
                             prefix=self.prefix)
        raise XRoadFault("SslAuthenticationFailed",
                         f"no valid OCSP response for the peer's certificate{': ' + str(last) if last else ''}",
                         prefix=self.prefix)

    async def _handle(self, request: Request) -> None:
        shared = self._conf()
        peer_der = self._peer_der(request)
        headers_in = [(k.decode("latin-1"), v.decode("latin-1"))
                      for k, vs in request.requestHeaders.getAllRawHeaders() for v in vs]
        th = transport.TransportHeaders.from_items(headers_in)
        decoder = transport.TransportDecoder.from_headers(th, transport.Direction.REQUEST)
        assert request.content is not None
        got = Collected()
        try:
            for chunk in _chunks(request.content):
                for ev in decoder.feed(chunk):
                    got.add(ev)
            for ev in decoder.close():
                got.add(ev)
            if th.is_rest:
                await self._serve_rest(request, shared, peer_der, got)
            else:
                await self._serve(request, shared, peer_der, th, got.message, got.attachments, got.end, got.ocsp)
        finally:
            got.close()

    def _admit(self, shared: Any, peer_der: bytes, client: Any, service: Any, ocsp_parts: list[bytes], end: Any,
               *, rest_method: str | None = None, rest_path: str = "/") -> tuple[Any, Any, Any]:
        """X-Road's server-side checks, in its order: the provider is hosted here, the peer is a server of
        the client (certificate chain and OCSP), access rights (none for listMethods/allowedMethods; other
        reserved codes are not served), the signature.  Returns (local client, service or None for a
        metaservice, global-group check)."""
        local = self._current().client(str(service.provider))
        if local is None:
            raise XRoadFault("UnknownMember", f"Client '{service.provider}' not found", prefix=self.prefix)
        self._check_peer(shared, peer_der, client, ocsp_parts)

        def in_group(caller: str, instance: str, code: str) -> bool:
            return bool(instance == shared.instance and shared.is_member_of_group(_conf_id(caller), code))

        svc = None
        if meta.is_metaservice(service.service_code):
            if service.service_code not in meta.METHOD_LIST_CODES or rest_method not in (None, "GET"):
                raise meta.unavailable_metaservice_fault(service)
        else:
            svc = check_access(local, service.service_code, str(client), in_group, rest=rest_method is not None,
                               method=rest_method or "", path=rest_path)
        parts = [sigverify.SignedPart(uri, digest=digest) for uri, digest in end.digests]
        try:
            sigverify.verify_signature(end.signature, signer=_conf_id(client.member), conf=shared, at=self._now(),
                                       parts=parts, hash_chain_result=end.hash_chain_result,
                                       hash_chain=end.hash_chain, cache=self.verification_cache)
        except VdxpError as exc:
            raise XRoadFault(exc.xroad_code or "InvalidSignatureValue", exc.message, prefix=self.prefix) from None
        return local, svc, in_group

    async def _serve(self, request: Request, shared: Any, peer_der: bytes, th: Any, message: Any,
                     attachments: list[dict[str, Any]], end: Any, ocsp_parts: list[bytes]) -> None:
        if message is None:
            raise XRoadFault("MissingSoap", "Request does not contain SOAP message", prefix=self.prefix)
        msg: soap.SoapMessage = message.message
        client, service = msg.header.client, msg.header.service
        provider = service.provider
        local, svc, in_group = self._admit(shared, peer_der, client, service, ocsp_parts, end)
        x_request_id = th.request_id
        await self._log_message("request", "soap", msg.header.query_id, client, service, str(client.member), msg.raw,
                                end, _log_parts(attachments), x_request_id=x_request_id)
        metaservice = svc is None
        if metaservice:
            await self._send_soap_answer(request, str(provider.member),
                                         metaservices.soap_metaservice_response(local, msg, in_group), None,
                                         msg, x_request_id)
            return
        # Forward to the service.
        original_type = th.original_content_type or message.content_type
        if attachments:
            out_type, out = _soap_multipart(msg.raw, message.content_type, [_SpooledView(a) for a in attachments],
                                            th.original_content_type, message.headers)
        else:
            out_type, out = original_type, _spool()
            out.write(msg.raw)
        headers = [("Content-Type", out_type)]
        if th.original_soap_action is not None:
            headers.append(("SOAPAction", th.original_soap_action))
        timeout = svc.timeout_seconds or self.config.relay.service_timeout_seconds
        response_events = await self._call_service(svc.url, headers, out, timeout, self._service_http(svc, local))
        out.close()
        svc_response = response_events
        resp_msg = svc_response.message
        if isinstance(resp_msg, soap.SoapFaultMessage):
            answer_raw = resp_msg.raw
        else:
            # Consistency with the request is the consumer's check (X-Road's ClientMessageProcessor).
            answer_raw = soap.set_request_hash(resp_msg.raw, msg)
        try:
            await self._send_soap_answer(request, str(provider.member), answer_raw, svc_response, msg, x_request_id)
        finally:
            svc_response.close()

    async def _send_soap_answer(self, request: Request, member: str, answer_raw: bytes,
                                service_answer: IncomingSoap | None, msg: soap.SoapMessage,
                                x_request_id: str | None) -> None:
        """Sign the answer (and its attachments) with ``member``'s key and stream it back."""
        signer = await self._signer(member)
        encoder = transport.TransportEncoder(transport.Direction.RESPONSE)
        body = _spool()
        part_type = "text/xml; charset=UTF-8"
        if service_answer is not None and service_answer.attachments:
            part_type = service_answer.soap_headers.get("Content-Type") or part_type
        body.write(encoder.soap(answer_raw, part_type))
        for att in service_answer.attachments if service_answer is not None else ():
            body.write(encoder.attachment_start(att.content_type,
                                                [(k, v) for k, v in att.headers.items
                                                 if k.lower() != "content-type"]))
            for chunk in att.chunks():
                body.write(encoder.attachment_data(chunk))
            body.write(encoder.attachment_end())
        signed = await self._sign(signer, encoder.parts_to_sign())
        await self._log_message("response", "soap", msg.header.query_id, msg.header.client, msg.header.service, member,
                                answer_raw, signed,
                                [(a.content_type, a.file) for a in service_answer.attachments]
                                if service_answer is not None else (), x_request_id=x_request_id)
        body.write(encoder.signature(signed))
        original = service_answer.content_type if service_answer is not None else "text/xml; charset=UTF-8"
        for name, value in encoder.http_headers(original_content_type=original).items():
            request.setHeader(name.encode(), value.encode())  # type: ignore[no-untyped-call]
        await _stream(request, body)

    async def _serve_rest(self, request: Request, shared: Any, peer_der: bytes, got: Collected) -> None:
        import treq


        rest_req = got.message.request if got.message is not None else None
        has_body = got.body is not None
        body_in = got.body if got.body is not None else _spool()
        end = got.end
        ocsp_parts = got.ocsp
        try:
            if rest_req is None or end is None:
                raise XRoadFault("MissingRest", "Request does not contain a REST message", prefix=self.prefix)
            client, service = rest_req.client, rest_req.service
            provider = service.provider
            local, svc, in_group = self._admit(shared, peer_der, client, service, ocsp_parts, end,
                                               rest_method=rest_req.verb, rest_path=rest_req.service_path or "/")
            await self._log_message("request", "rest", rest_req.query_id or "", client, service, str(client.member),
                                    got.message.raw, end,
                                    [(rest_req.header("Content-Type") or "application/octet-stream", body_in)]
                                    if has_body else (), x_request_id=rest_req.x_request_id)
            metaservice = svc is None
            request_body_digest = dict(end.digests).get("/attachment1") if has_body else None
            if metaservice:
                ctype, meta_body = metaservices.rest_metaservice_body(local, service, str(client), rest_req.verb,
                                                                      in_group)
                answer_file = _spool()
                answer_file.write(meta_body)
                await self._send_rest_answer(request, rest_req, str(provider.member), 200, "OK",
                                             [("Content-Type", ctype)], answer_file, request_body_digest)
                return
            url = svc.url.rstrip("/") + (rest_req.service_path or "")
            if rest_req.query is not None:
                url += "?" + rest_req.query
            headers = {k: [v] for k, v in rest_req.headers if k.lower() not in _HOP and k.lower() != "host"}
            http = self._service_http(svc, local)
            timeout = svc.timeout_seconds or self.config.relay.service_timeout_seconds
            d: Deferred[Any] = Deferred.fromCoroutine(_service_request(
                http, rest_req.verb, url, headers, body_in if has_body else None))

            def timed_out(_r: object, seconds: float) -> Any:
                raise XRoadFault(("ServiceFailed", "NetworkError"),
                                 f"service {url} did not answer within {seconds:g} s", prefix=self.prefix)

            d.addTimeout(timeout, self._reactor, onTimeoutCancel=timed_out)
            svc_response = await d
            answer = _spool()
            def keep(chunk: bytes) -> None:
                answer.write(chunk)

            collected: Deferred[Any] = treq.collect(svc_response, keep)
            collected.addTimeout(timeout, self._reactor, onTimeoutCancel=timed_out)
            await collected
            resp_headers = [(k.decode("latin-1"), v.decode("latin-1"))
                            for k, vs in svc_response.headers.getAllRawHeaders() for v in vs]
            reason = (svc_response.phrase or b"").decode("latin-1") or "OK"
            await self._send_rest_answer(request, rest_req, str(provider.member), svc_response.code, reason,
                                         resp_headers, answer, request_body_digest)
        finally:
            body_in.close()

    async def _send_rest_answer(self, request: Request, rest_req: Any, member: str, status: int, reason: str,
                                headers: list[tuple[str, str]], answer: IO[bytes],
                                request_body_digest: bytes | None) -> None:
        """Sign a REST answer with ``member``'s key and stream it back (closes ``answer``)."""
        from protocols.xroad import rest as p_rest

        try:
            rest_resp = p_rest.build_response(
                rest_req, status, reason, headers,
                request_hash=p_rest.compute_request_hash(rest_req, request_body_digest),
                x_request_id=rest_req.x_request_id or "")
            signer = await self._signer(member)
            encoder = transport.TransportEncoder(transport.Direction.RESPONSE)
            out = _spool()
            raw = rest_resp.serialize()
            out.write(encoder.rest_response(rest_resp))
            has_body = _has_body(answer)
            if has_body:
                out.write(encoder.body_start())
                for chunk in _chunks(answer):
                    out.write(encoder.body_data(chunk))
                out.write(encoder.body_end())
            signed = await self._sign(signer, encoder.parts_to_sign())
            await self._log_message("response", "rest", rest_req.query_id or "", rest_req.client, rest_req.service,
                                    member, raw, signed,
                                    [(rest_resp.header("Content-Type") or "application/octet-stream", answer)]
                                    if has_body else (), x_request_id=rest_req.x_request_id)
        finally:
            answer.close()
        out.write(encoder.signature(signed))
        for name, value in encoder.http_headers().items():
            request.setHeader(name.encode(), value.encode())  # type: ignore[no-untyped-call]
        await _stream(request, out)

    async def _call_service(self, url: str, headers: list[tuple[str, str]], body: IO[bytes],
                            timeout: float, http: Any) -> IncomingSoap:
        import treq

        body.seek(0)
        d: Deferred[Any] = Deferred.fromCoroutine(_service_post(http, url, headers, body))

        def timed_out(_r: object, seconds: float) -> Any:
            raise XRoadFault(("ServiceFailed", "NetworkError"), f"service {url} did not answer within {seconds:g} s",
                             prefix=self.prefix)

        d.addTimeout(timeout, self._reactor, onTimeoutCancel=timed_out)
        response = await d
        if response.code >= 400 and response.code != 500:
            await treq.content(response)
            raise XRoadFault(("ServiceFailed", "HttpError"), f"service {url} answered HTTP {response.code}",
                             prefix=self.prefix)
        if not response.headers.getRawHeaders(b"content-type"):
            raise XRoadFault(("ServiceFailed", "InvalidContentType"), "Could not get content type from response",
                             prefix=self.prefix)
        spooled = _spool()
        def write(chunk: bytes) -> None:
            spooled.write(chunk)

        collected: Deferred[Any] = treq.collect(response, write)
        collected.addTimeout(timeout, self._reactor, onTimeoutCancel=timed_out)
        try:
            await collected
        except XRoadFault:
            spooled.close()
            raise
        except Exception as exc:
            spooled.close()
            raise XRoadFault(("ServiceFailed", "IOError"), f"connection to service {url} broke: {type(exc).__name__}",
                             prefix=self.prefix) from None
        spooled.seek(0)
        ctype = response.headers.getRawHeaders(b"content-type", [b""])[0].decode("latin-1") or None
        try:
            return read_soap(spooled, ctype, prefix=(*self.prefix, "ServiceFailed"), response=True)
        finally:
            spooled.close()

    def _service_http(self, svc: Any, local: Any) -> Any:
        """The HTTP client for a service: one keep-alive pool per way of judging the service's TLS
        certificate (plain HTTP and each HTTPS trust setting have their own)."""
        from gateway.relay.tls import ServicePolicy

        https = svc.url.lower().startswith("https:")
        if not https:
            key: tuple[Any, ...] = ("http",)
        elif svc.verify_tls:
            key = ("pinned", frozenset(c.public_bytes(serialization.Encoding.DER)
                                       for c in map(_load_cert, local.is_certs) if c is not None))
        else:
            key = ("ca", str(svc.ca_bundle) if svc.ca_bundle else None)
        clients: dict[tuple[Any, ...], Any] = self.__dict__.setdefault("_service_clients", {})
        http = clients.get(key)
        if http is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool

            pool: Any = HTTPConnectionPool(self._reactor, persistent=True)  # type: ignore[no-untyped-call]
            pool.maxPersistentPerHost = 32  # keep a connection per concurrent call (the default is 2)
            pool.cachedConnectionTimeout = 120
            kwargs: dict[str, Any] = {"pool": pool}
            if https:
                kwargs["contextFactory"] = ServicePolicy(key[1] if key[0] == "pinned" else None,
                                                         svc.ca_bundle if key[0] == "ca" else None)
            agent: Any = Agent(self._reactor, **kwargs)  # type: ignore[no-untyped-call]
            http = clients[key] = HTTPClient(agent)
        return http


async def _service_post(http: Any, url: str, headers: list[tuple[str, str]], body: IO[bytes]) -> Any:
    try:
        return await http.request("POST", url, data=_producer(body), headers={k: [v] for k, v in headers},
                                  unbuffered=True)
    except Exception as exc:
        raise _service_unreachable(url, exc) from exc


def _service_unreachable(url: str, exc: BaseException) -> XRoadFault:
    """``ServiceFailed.SslAuthenticationFailed`` when the service's TLS certificate was refused,
    else ``ServiceFailed.NetworkError``."""
    if _tls_failure(exc):
        return XRoadFault(("ServiceFailed", "SslAuthenticationFailed"),
                          f"the TLS certificate of service {url} is not accepted: {_why(exc)}",
                          prefix=SERVER_SERVERPROXY)
    return XRoadFault(("ServiceFailed", "NetworkError"), f"cannot reach service {url}: {_why(exc)}",
                      prefix=SERVER_SERVERPROXY)


def _tls_failure(exc: BaseException) -> bool:
    reasons = getattr(exc, "reasons", None)
    if reasons:
        return any(_tls_failure(getattr(r, "value", r)) for r in reasons)
    return type(exc).__module__.startswith("OpenSSL") or "VerificationError" in type(exc).__name__


async def _service_request(http: Any, method: str, url: str, headers: dict[str, list[str]],
                           body: IO[bytes] | None) -> Any:
    try:
        return await http.request(method, url, data=_producer(body) if body is not None else None, headers=headers,
                                  unbuffered=True)
    except Exception as exc:
        raise _service_unreachable(url, exc) from exc


def digest(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()
