"""The daemon's tokens and signers: the ``signing`` component of ``vdxp-gateway run``.

At start every configured token is opened (login through its module's PKCS#11
thread), the server's authentication key and each member's signing key and
certificate are looked up, and a :class:`hsm.signer.MessageSigner` is made per
member.  A token that cannot be opened (wrong PIN, missing, unplugged) is logged with
its coded error and retried with back-off; the health check reports it until it
works.  Nothing here blocks the reactor: token calls go through
:func:`hsm.p11thread.deferred_call`, each with the token's timeout.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gateway.config import GatewayConfig
from gateway.daemon import Component, ComponentContext
from gateway.health import HealthResult
from gateway.metrics import per_registry
from hsm.config import KeyRef
from hsm.p11thread import deferred_call
from hsm.signer import MessageSigner, SigningKey, resolve_mechanism
from hsm.token import HsmError, KeyInfo, Token
from protocols.errors import VdxpError

RETRY_INITIAL = 5.0
RETRY_MAX = 300.0


class SigningMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.token_up = Gauge("vdxp_hsm_token_up", "1 when the token is logged in and its keys were found.",
                              ["token"], registry=registry)
        self.token_errors = Counter("vdxp_hsm_token_errors", "Failed attempts to open a token, by error code.",
                                    ["token", "code"], registry=registry)
        self.messages = Counter("vdxp_signer_messages", "Messages signed, by member (tenant) and result.",
                                ["tenant", "result"], registry=registry)
        self.operations = Counter("vdxp_signer_operations", "Private-key operations of the message signer.",
                                  ["tenant", "result"], registry=registry)
        self.batch_size = Histogram("vdxp_signer_batch_size", "Messages covered by one signature (batch signing).",
                                    ["tenant"], buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
                                    registry=registry)
        self.seconds = Histogram("vdxp_signer_batch_seconds", "Time to sign one batch (hash tree, XAdES, HSM).",
                                 ["tenant"], registry=registry)


class SigningService(Service):
    """Opens the configured tokens and keeps one signer per member."""

    log = Logger()

    def __init__(self, reactor: Any, config: GatewayConfig, metrics: SigningMetrics) -> None:
        self._reactor = reactor
        self._config = config
        self._metrics = metrics
        self.tokens: dict[str, Token] = {}
        self.signers: dict[str, MessageSigner] = {}
        self.auth_key: KeyInfo | None = None
        self._problems: dict[str, str] = {}
        self._retries: dict[str, Any] = {}
        self._delays: dict[str, float] = {}
        self._first: list[Deferred[None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        from gateway.keys import token_for

        for spec in self._config.tokens:
            self.tokens[spec.id] = token_for(self._config, spec.id)
            self._problems[spec.id] = "opening"
            self._metrics.token_up.labels(token=spec.id).set(0)
            self._first.append(Deferred.fromCoroutine(self._open(spec.id)))

    def whenStarted(self) -> Deferred[Any]:
        """Fires when every token had its first attempt (successful or not)."""
        from twisted.internet.defer import gatherResults

        return gatherResults(self._first)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()  # type: ignore[no-untyped-call]
        for call in self._retries.values():
            if call.active():
                call.cancel()
        self._retries.clear()
        return None

    def ready(self) -> bool:
        return not self._problems

    def signer_for(self, member_id: str) -> MessageSigner:
        try:
            return self.signers[member_id]
        except KeyError:
            raise HsmError(f"no signing key ready for {member_id}", code="signer.key_unavailable",
                           xroad_code="Server.ClientProxy.CannotCreateSignature") from None

    # -- opening tokens --------------------------------------------------------------------

    async def _call(self, token: Token, fn: Any, *args: Any) -> Any:
        return await deferred_call(self._reactor, token.thread, fn, *args, timeout=token.spec.timeout_seconds)

    async def _find(self, ref: KeyRef) -> tuple[Token, KeyInfo]:
        token = self.tokens[ref.token]
        info: KeyInfo = await self._call(token, token.t_find_key, ref.key_id, ref.label)
        return token, info

    async def _open(self, token_id: str) -> None:
        token = self.tokens[token_id]
        try:
            info = await self._call(token, token.t_info)
            await self._resolve_keys(token_id)
        except Exception as exc:
            code = exc.code if isinstance(exc, VdxpError) else "hsm.error"
            text = str(exc) if isinstance(exc, VdxpError) else f"hsm.error: {exc!r}"
            self._problems[token_id] = text
            self._metrics.token_errors.labels(token=token_id, code=code).inc()
            self._metrics.token_up.labels(token=token_id).set(0)
            delay = min(self._delays.get(token_id, RETRY_INITIAL / 2) * 2, RETRY_MAX)
            self._delays[token_id] = delay
            self.log.error("token {token} not ready: {error}; retrying in {delay:g} s", token=token_id,
                           error=text, code=code, delay=delay)
            if self.running:
                self._retries[token_id] = self._reactor.callLater(
                    delay, lambda: Deferred.fromCoroutine(self._open(token_id)))
            return
        self._problems.pop(token_id, None)
        self._delays.pop(token_id, None)
        self._metrics.token_up.labels(token=token_id).set(1)
        self.log.info("token {token} ready: label {label} serial {serial}, {signers} member signer(s)",
                      token=token_id, label=info["label"], serial=info["serial"], signers=len(self.signers))

    async def _resolve_keys(self, token_id: str) -> None:
        """Find the keys this token holds for the server and its members."""
        config = self._config
        if config.auth_key.token == token_id:
            _t, self.auth_key = await self._find(config.auth_key)
        for member in config.members:
            if member.sign_key.token != token_id:
                continue
            token, info = await self._find(member.sign_key)
            if not info.certificates:
                raise HsmError(f"the signing key of {member.id} ({info.key_id}) has no certificate; import one "
                               "with `vdxp-gateway cert import`", code="hsm.cert_missing")
            cert = max(info.certificates, key=lambda c: c.not_valid_after_utc)
            key = SigningKey(token=token, key_id=info.key_id, key_type=info.key_type,
                             mechanism=resolve_mechanism(token.spec.sign_mechanism, info.key_type), cert=cert)
            self.signers[member.id] = MessageSigner(self._reactor, key, batch_signing=token.spec.batch_signing,
                                                    timeout=token.spec.timeout_seconds,
                                                    observer=self._observer(member.id))

    def _observer(self, tenant: str) -> Any:
        m = self._metrics

        def observe(messages: int, seconds: float, result: str) -> None:
            m.messages.labels(tenant=tenant, result=result).inc(messages)
            m.operations.labels(tenant=tenant, result=result).inc()
            if result == "ok":
                m.batch_size.labels(tenant=tenant).observe(messages)
                m.seconds.labels(tenant=tenant).observe(seconds)

        return observe

    # -- health ----------------------------------------------------------------------------

    def health(self, token_id: str) -> Deferred[HealthResult]:
        """X-Road's check: the token is logged in and the keys it should hold are accessible."""

        async def probe() -> HealthResult:
            problem = self._problems.get(token_id)
            if problem is not None:
                return False, problem
            token = self.tokens[token_id]
            ref = self._config.auth_key if self._config.auth_key.token == token_id else next(
                (m.sign_key for m in self._config.members if m.sign_key.token == token_id), None)
            try:
                if ref is None:
                    await self._call(token, token.t_info)
                else:
                    await self._find(ref)
            except Exception as exc:
                self._metrics.token_up.labels(token=token_id).set(0)
                return False, str(exc)
            self._metrics.token_up.labels(token=token_id).set(1)
            return True, "logged in, keys accessible"

        return Deferred.fromCoroutine(probe())


def signing_component() -> Component:
    def build(ctx: ComponentContext) -> SigningService:
        service = SigningService(ctx.reactor, ctx.config, _metrics(ctx.metrics.registry))
        for spec in ctx.config.tokens:
            ctx.add_health_check(f"token {spec.id}", _bound_health(service, spec.id))
        return service

    return Component(name="signing", build=build, sections=frozenset({"tokens", "auth_key", "members"}),
                     reloadable=True)


def _bound_health(service: SigningService, token_id: str) -> Any:
    return lambda: service.health(token_id)


_metrics = per_registry(SigningMetrics)  # one set of series per registry (a reload rebuilds the component)
