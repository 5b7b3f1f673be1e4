"""Finding and reaching the provider's security server.

The provider may be registered on several security servers (shared-params ``securityServer``
entries whose owner or clients include it); servers in maintenance mode are skipped; a
``securityServer`` header narrows the choice to one.  Among the rest the fastest to accept a
TCP connection wins (X-Road's ``FastestConnectionSelectingSSLSocketFactory``), and the choice
is remembered for a while.  Connections are kept alive in a pool; TLS is
:class:`gateway.relay.tls.PeerPolicy` (the server must show a certificate registered for it).
"""

from __future__ import annotations

import time
from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.web.client import Agent, HTTPConnectionPool

from gateway.config import RelayConfig
from gateway.relay.tls import PeerPolicy, cert_sha256
from protocols.gconf.params import ClientId, SecurityServer
from protocols.xroad.faults import SERVER_CLIENTPROXY, XRoadFault

FASTEST_CACHE_SECONDS = 3600.0


def provider_servers(shared: Any, provider: ClientId, security_server: str | None = None) -> list[SecurityServer]:
    """The servers that host ``provider`` and take traffic (X-Road's address resolution)."""
    servers = [s for s in shared.servers_hosting(provider) if s.address and not s.in_maintenance]
    if security_server is not None:
        servers = [s for s in servers if s.server_id() == security_server]
        if not servers:
            raise XRoadFault("InvalidSecurityServer",
                             f"Security server {security_server} is not a server of {provider}",
                             prefix=SERVER_CLIENTPROXY)
    if not servers:
        all_servers = shared.servers_hosting(provider)
        if all_servers and all(s.in_maintenance for s in all_servers):
            message = "; ".join(s.maintenance_message or "" for s in all_servers).strip("; ")
            raise XRoadFault("MaintenanceMode", message or f"The security servers of {provider} are in maintenance",
                             prefix=SERVER_CLIENTPROXY)
        raise XRoadFault("UnknownMember", f"Could not find addresses for service provider \"{provider}\"",
                         prefix=SERVER_CLIENTPROXY)
    return servers


class _Probe(Protocol):
    pass


class Peers:
    """Keep-alive HTTPS to provider servers; picks the fastest-connecting server of a provider."""

    def __init__(self, reactor: Any, relay: RelayConfig, conf_source: Any) -> None:
        self._reactor = reactor
        self._relay = relay
        self._conf_source = conf_source
        self.policy = PeerPolicy(relay.tls, self._expected)
        self.pool: Any = HTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
        self.pool.maxPersistentPerHost = 32
        self.pool.cachedConnectionTimeout = 120
        agent: Any = Agent(reactor, contextFactory=self.policy, pool=self.pool,  # type: ignore[no-untyped-call]
                           connectTimeout=relay.connect_timeout_seconds)
        self.http = HTTPClient(agent)
        self._fastest: dict[tuple[str, ...], tuple[str, float]] = {}
        self._followed: Any = None  # the shared parameters last seen by follow()
        self._registered: frozenset[Any] | None = None
        self._ocsp_ok: dict[bytes, float] = {}  # provider certificate -> good until (Unix time)
        plain: Any = Agent(reactor, connectTimeout=relay.connect_timeout_seconds)  # type: ignore[no-untyped-call]
        self.ocsp_http = HTTPClient(plain)

    def _expected(self, host: str, port: int) -> set[bytes]:
        """SHA-256 hashes of the certificates registered for the server(s) at ``host``."""
        shared = self._conf_source.check_valid().own_shared
        out: set[bytes] = set()
        for server in shared.servers:
            if server.address == host:
                if server.auth_cert_hash_algorithm.upper().replace("-", "") == "SHA256":
                    out.update(server.auth_cert_hashes)
        return out

    def follow(self, shared: Any) -> None:
        """Called with the shared parameters in force for each outgoing message: when the servers'
        addresses or registered authentication certificates changed, kept-alive connections are
        closed, so the next message to a server makes a new handshake judged by the new rules."""
        if shared is self._followed:
            return
        self._followed = shared
        registered = frozenset((s.address, s.auth_cert_hash_algorithm, tuple(s.auth_cert_hashes))
                               for s in shared.servers)
        if self._registered is not None and registered != self._registered:
            self.pool.closeCachedConnections()
        self._registered = registered

    def server_url(self, server: SecurityServer) -> str:
        host = server.address or ""
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"https://{host}:{self._relay.server_port}/"

    async def choose(self, servers: list[SecurityServer]) -> SecurityServer:
        """The server that accepts a TCP connection first (cached ``FASTEST_CACHE_SECONDS``)."""
        if len(servers) == 1:
            return servers[0]
        key = tuple(sorted(s.server_id() for s in servers))
        cached = self._fastest.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[1] < FASTEST_CACHE_SECONDS:
            for s in servers:
                if s.server_id() == cached[0]:
                    return s
        winner: Deferred[SecurityServer] = Deferred()
        attempts = []
        for server in servers:
            endpoint_cls = TCP6ClientEndpoint if ":" in (server.address or "") else TCP4ClientEndpoint
            endpoint: Any = endpoint_cls(self._reactor, server.address or "", self._relay.server_port,
                                         timeout=self._relay.connect_timeout_seconds)
            factory: Any = Factory.forProtocol(_Probe)
            d = endpoint.connect(factory)

            def connected(proto: Any, server: SecurityServer = server) -> None:
                proto.transport.loseConnection()
                if not winner.called:
                    winner.callback(server)

            d.addCallback(connected)
            attempts.append(d)
        everyone = DeferredList(attempts, consumeErrors=True)

        def none_connected(_results: Any) -> None:
            if not winner.called:
                winner.errback(XRoadFault("NetworkError", "Could not connect to any target host ("
                                          + ", ".join(self.server_url(s) for s in servers) + ")",
                                          prefix=SERVER_CLIENTPROXY))

        everyone.addCallback(none_connected)
        chosen = await winner
        self._fastest[key] = (chosen.server_id(), now)
        return chosen

    async def check_server_cert(self, server: SecurityServer, shared: Any, now: Any) -> None:
        """X-Road's ``AuthTrustVerifier``: the provider's authentication certificate chains to an
        approved CA and its OCSP status (fetched from the provider's port 5577, cached while fresh)
        is good; else ``Server.ClientProxy.SslAuthenticationFailed``."""
        import hashlib

        from cryptography import x509

        from gateway.ownocsp import issuer_in_conf
        from hsm.http import HttpFetchError, fetch
        from protocols import ocsp as p_ocsp
        from protocols.errors import VdxpError
        from protocols.xroad.mime import MultipartParser, PartData, PartEnd, PartStart, parse_content_type

        def fail(text: str) -> XRoadFault:
            return XRoadFault("SslAuthenticationFailed", text, prefix=SERVER_CLIENTPROXY)

        der = self.policy.seen.get((server.address or "", self._relay.server_port))
        if der is None:
            raise fail(f"no TLS certificate seen from {server.server_id()}")
        cached = self._ocsp_ok.get(der)
        if cached is not None and cached > now.timestamp():
            return
        cert = x509.load_der_x509_certificate(der)
        found = issuer_in_conf(cert, shared)
        if found is None:
            raise fail(f"the certificate of {server.server_id()} is not issued by an approved CA")
        issuer, infos = found
        sha1 = hashlib.sha1(der).hexdigest()  # noqa: S324 - X-Road's certificate identifier
        url = f"http://{server.address}:{self._relay.ocsp_port}/?cert={sha1}"
        try:
            answer = await fetch(self.ocsp_http, self._reactor, "GET", url, timeout=self._relay.connect_timeout_seconds,
                                 max_bytes=1 << 20)
        except HttpFetchError as exc:
            raise fail(f"could not get the OCSP response of {server.server_id()}: {exc}") from None
        ct = parse_content_type(answer.content_type_raw)
        parts: list[bytes] = []
        if ct is not None and ct.boundary:
            parser = MultipartParser(ct.boundary, max_parts=20)
            current = bytearray()
            try:
                for ev in [*parser.feed(answer.body), *parser.close()]:
                    if isinstance(ev, PartStart):
                        current = bytearray()
                    elif isinstance(ev, PartData):
                        current.extend(ev.data)
                    elif isinstance(ev, PartEnd):
                        parts.append(bytes(current))
            except VdxpError as exc:
                raise fail(f"malformed OCSP answer from {server.server_id()}: {exc}") from None
        freshness = float(shared.ocsp_freshness_seconds or 3600)
        trusted = [o.cert for o in infos if o.cert is not None]
        for part in parts:
            try:
                status = p_ocsp.verify_response(part, cert=cert, issuer=issuer, at=now, freshness_seconds=freshness,
                                                trusted_responders=trusted)
            except VdxpError:
                continue
            if not status.is_good:
                raise fail(f"the certificate of {server.server_id()} is {status.status}")
            self._ocsp_ok[der] = min(status.this_update.timestamp() + freshness,
                                     status.next_update.timestamp() if status.next_update else float("inf"))
            return
        raise fail(f"no valid OCSP response for the certificate of {server.server_id()}")

    def registered_peer(self, der: bytes) -> bool:
        """Server side: is this client certificate registered for some security server?"""
        try:
            shared = self._conf_source.check_valid().own_shared
        except Exception:
            return False
        return shared.server_by_auth_cert(der) is not None

    async def close(self) -> None:
        await self.pool.closeCachedConnections()


__all__ = ["Peers", "cert_sha256", "provider_servers"]
