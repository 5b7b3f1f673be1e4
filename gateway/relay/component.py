"""The ``relay`` component of ``vdxp-gateway run``: listeners for information systems (client
side), for peer gateways (server side, mutual TLS) and for OCSP (port 5577), the OCSP responses of
our own certificates, and the keep-alive pool to peers."""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.server import Site

from gateway.daemon import Component, ComponentContext, ListenerService
from gateway.globalconf.client import make_http_client
from gateway.ownocsp import OcspResponderResource, OwnOcsp
from gateway.relay.peers import Peers
from gateway.relay.proxy import ClientProxy, ServerProxy, _load_cert
from gateway.relay.tls import ServerTls


class _Site(Site):
    """Bodies are never parsed as HTML forms: a relay passes them on as they are (twisted.web would
    read a whole ``multipart/form-data`` body into memory, and parse the content type of every POST
    with the slow ``email`` package)."""

    noisy = False

    def __init__(self, resource: Any) -> None:
        super().__init__(resource, parsePOSTFormSubmission=False)  # type: ignore[no-untyped-call]

    def log(self, request: object) -> None:
        pass


class RelayService(MultiService):
    log = Logger()

    def __init__(self, ctx: ComponentContext) -> None:
        super().__init__()
        self.ctx = ctx
        config = ctx.config
        relay = config.relay
        conf_source = _ConfSource(ctx.peers)
        self.peers = Peers(ctx.reactor, relay, conf_source)
        self.own_ocsp = OwnOcsp(ctx.reactor, conf_source, make_http_client(ctx.reactor, None),
                                ctx.metrics.registry, fetch_interval=config.ocsp.fetch_interval_seconds,
                                freshness=config.ocsp.freshness_seconds)
        auth = _load_cert(relay.tls.cert)
        if auth is not None:
            self.own_ocsp.add(auth, "auth")
        self.own_ocsp.before_refresh = self._sync_signers
        self.own_ocsp.setServiceParent(self)
        services = _Services(ctx.peers, self.own_ocsp)
        args = (ctx.reactor, config, services, self.peers, ctx.metrics.registry, ctx.current)
        self._listeners: list[ListenerService] = []
        if relay.client_http:
            self._add("client_http", relay.client_http, _Site(ClientProxy(*args)))
        if relay.client_https:
            tls = ServerTls(relay.tls, lambda der: True)  # information systems: judged per client
            self._add("client_https", relay.client_https,
                      TLSMemoryBIOFactory(tls, False, _Site(ClientProxy(*args, secure=True))))  # type: ignore[arg-type]
        if relay.server:
            server_tls = ServerTls(relay.tls, self.peers.registered_peer)
            self._add("server", relay.server,
                      TLSMemoryBIOFactory(server_tls, False, _Site(ServerProxy(*args))))  # type: ignore[arg-type]
        if relay.ocsp:
            self._add("ocsp", relay.ocsp, _Site(OcspResponderResource(self.own_ocsp)))
        self._started: Deferred[Any] | None = None

    def _add(self, name: str, description: str, factory: Any) -> None:
        listener = ListenerService(self.ctx.reactor, name, description, factory)
        listener.setServiceParent(self)
        self._listeners.append(listener)

    def _sync_signers(self) -> None:
        signing = self.ctx.peers.get("signing")
        if signing is None:
            return
        for member, signer in getattr(signing, "signers", {}).items():
            key = signer.key
            self.own_ocsp.add(key.cert, f"sign:{member}")
            if getattr(key, "_vdxp_ocsp_hooked", False):
                continue
            hooked = dataclasses.replace(key, ocsp_responses=_responses(self.own_ocsp, key.cert))
            object.__setattr__(hooked, "_vdxp_ocsp_hooked", True)
            signer.key = hooked

    def startService(self) -> None:
        super().startService()
        started = gatherResults([Deferred.fromCoroutine(ls.listen()) for ls in self._listeners], consumeErrors=True)
        # gatherResults wraps the first failure in a FirstError: hand the ListenError itself on.
        started.addErrback(_first_failure)
        self._started = started

    def whenStarted(self) -> Deferred[Any]:
        assert self._started is not None
        return self._started

    def stopService(self) -> Any:
        d = super().stopService()
        Deferred.fromCoroutine(self.peers.close())
        return d


def _first_failure(failure: Any) -> Any:
    return failure.value.subFailure if hasattr(failure.value, "subFailure") else failure


def _responses(own: OwnOcsp, cert: Any) -> Any:
    return lambda: own.responses_for(cert)


class _ConfSource:
    def __init__(self, running: Any) -> None:
        self._running = running

    def check_valid(self) -> Any:
        from gateway.globalconf.client import GlobalConfOutdated

        try:
            conf = self._running["globalconf"]
        except KeyError:
            raise GlobalConfOutdated("global configuration is not enabled on this gateway") from None
        if not hasattr(conf, "check_valid"):
            raise GlobalConfOutdated("global configuration is not enabled on this gateway")
        return conf.check_valid()


class _Services:
    """What the proxies look up: the daemon's running components plus our own OCSP service."""

    def __init__(self, running: Any, own_ocsp: OwnOcsp) -> None:
        self._running = running
        self._own = own_ocsp

    def __getitem__(self, name: str) -> Any:
        if name == "ownocsp":
            return self._own
        service = self._running[name]
        if name == "globalconf" and not hasattr(service, "check_valid"):
            raise KeyError(name)
        return service

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default


def relay_component() -> Component:
    def build(ctx: ComponentContext) -> Any:
        if not ctx.config.relay.enabled:
            return MultiService()
        service = RelayService(ctx)
        ctx.add_health_check("authentication certificate OCSP", service.own_ocsp.health)
        return service

    return Component(name="relay", build=build, sections=frozenset({"relay", "clients", "faults"}), reloadable=True)
