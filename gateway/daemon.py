# -*- test-case-name: tests.test_daemon -*-
"""The daemon: a service tree built from the configuration, on an injected reactor.

:class:`GatewayApp` owns a :class:`~twisted.application.service.MultiService` holding

- one :class:`ListenerService` per configured listener (``health``, ``metrics``; the
  relay adds its ports later),
- the services built by **components**: a :class:`Component` declares a name, the
  configuration sections it reads, whether it can be rebuilt on reload, and a
  ``build(context)`` function returning a ``Service``.  This is the hook for the token
  and signer component, the timestamper, the relay and the document services;
  :func:`standard_components` is the list the CLI starts,
- the systemd watchdog, when systemd asked for one.

Life cycle (driven by ``gateway.commands.run``)::

    app = GatewayApp(reactor, config, standard_components(), log_output=output)
    await app.start()     # components, then listeners, then READY=1
    await app.reload()    # SIGHUP: RELOADING=1 … READY=1
    await app.stop()      # STOPPING=1, services stop in reverse order

A reload re-reads and re-validates the whole file.  If it fails, every problem is
logged and the running configuration stays (``vdxp_config_reloads_total{result="failed"}``).
If it succeeds, the logging level and format, the health settings, the listeners and
reloadable components are applied; sections that need a restart are logged and
exported as ``vdxp_config_restart_pending``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Site

from gateway.config import (
    RELOADABLE_SECTIONS,
    SECTIONS,
    ConfigError,
    GatewayConfig,
    changed_sections,
    load_config,
)
from gateway.health import HealthCheck, HealthChecks, HealthResource
from gateway.logs import LogOutput, choose_format
from gateway.metrics import GatewayMetrics, MetricsResource
from gateway.sdnotify import SystemdNotifier, WatchdogService, watchdog_interval
from protocols.errors import VdxpError

__all__ = [
    "Component",
    "ComponentContext",
    "GatewayApp",
    "ListenError",
    "ListenerService",
    "ReloadOutcome",
    "standard_components",
]


def _attach(child: Any, parent: Any) -> None:
    """``child.setServiceParent(parent)`` (zope-typed, hence ``Any``)."""
    child.setServiceParent(parent)


async def _settle(result: object) -> None:
    """Wait for ``result`` if Twisted handed back a Deferred (stopService may or may not)."""
    if isinstance(result, Deferred):
        await result


class _RunningServices(Mapping[str, Any]):
    """A live view: component name -> its running service."""

    def __init__(self, running: dict[str, _Running]) -> None:
        self._running = running

    def __getitem__(self, name: str) -> Any:
        return self._running[name].service

    def __iter__(self) -> Iterator[str]:
        return iter(self._running)

    def __len__(self) -> int:
        return len(self._running)


# How long start-up waits for a component's first attempt (e.g. opening tokens).
FIRST_ATTEMPT_TIMEOUT = 30.0


class ListenError(VdxpError):
    """A listener could not be bound (port in use, permission denied, bad socket)."""

    code = "daemon.listen_failed"


class StartError(VdxpError):
    code = "daemon.start_failed"


# ---------------------------------------------------------------------------
# Components: the hook through which the rest of the gateway joins the tree


@dataclass
class ComponentContext:
    """What a component's ``build`` gets: the reactor, the configuration, and places to
    register health checks and metrics (``metrics.registry``)."""

    reactor: Any
    config: GatewayConfig
    health: HealthChecks
    metrics: GatewayMetrics
    # The running components' services by name (e.g. "globalconf", "signing"); look them up
    # when needed, not at build time, so a rebuilt component is found.
    peers: Mapping[str, Any] = field(default_factory=dict)
    # The configuration in force now (it changes on reload; ``config`` is the one built from).
    current: Callable[[], GatewayConfig] | None = None
    _unregister: list[Callable[[], None]] = field(default_factory=list)

    def add_health_check(self, name: str, check: HealthCheck) -> None:
        """Register a health check; it is removed when the component is rebuilt or stopped."""
        self._unregister.append(self.health.register(name, check))

    def release(self) -> None:
        for unregister in reversed(self._unregister):
            unregister()
        self._unregister.clear()


@dataclass(frozen=True)
class Component:
    """A part of the daemon built from the configuration.

    ``sections`` are the top-level configuration sections ``build`` reads.  When one
    of them changes on reload, a ``reloadable`` component is stopped and rebuilt from
    the new configuration; otherwise the change is logged as needing a restart.
    """

    name: str
    build: Callable[[ComponentContext], IService | Service]
    sections: frozenset[str] = frozenset()
    reloadable: bool = False

    def __post_init__(self) -> None:
        unknown = self.sections - set(SECTIONS)
        if unknown:
            raise ValueError(f"component {self.name}: unknown configuration sections {sorted(unknown)}")


def standard_components() -> tuple[Component, ...]:
    """The components ``vdxp-gateway run`` starts.

    Tokens and signers (:mod:`gateway.signing`); the relay joins as one reading
    ``listeners`` and ``members``.
    """
    from gateway.globalconf.component import globalconf_component
    from gateway.messagelog.component import messagelog_component
    from gateway.relay.component import relay_component
    from gateway.signing import signing_component

    return (globalconf_component(), signing_component(), messagelog_component(), relay_component())


# ---------------------------------------------------------------------------
# Listeners


class GatewaySite(Site):
    """The daemon's HTTP sites: no access-log line per request (health is polled often)."""

    noisy = False

    def log(self, request: object) -> None:
        pass


class ListenerService(Service):
    """One server endpoint string bound to one factory.

    :meth:`listen` binds (and fails loudly with :class:`ListenError`); stopping the
    service closes the port.  Unlike ``StreamServerEndpointService`` a bind failure is
    reported to the caller, so start-up can exit 1 with a coded line.
    """

    log = Logger()

    def __init__(self, reactor: Any, name: str, description: str, factory: IProtocolFactory) -> None:
        self.name = f"listener:{name}"
        self.listener = name
        self.description = description
        self._reactor = reactor
        self._factory = factory
        self.port: Any = None

    async def listen(self) -> Any:
        """Bind the endpoint; raises :class:`ListenError` naming the listener."""
        endpoint = serverFromString(self._reactor, self.description)  # type: ignore[no-untyped-call]
        try:
            port: Any = await endpoint.listen(self._factory)
        except Exception as exc:
            raise ListenError(f"{self.listener} listener {self.description}: {exc}") from exc
        self.port = port
        address = port.getHost()
        self.log.info(
            "Listening for {listener} on {endpoint} ({host}:{port})",
            listener=self.listener,
            endpoint=self.description,
            host=getattr(address, "host", getattr(address, "name", "")),
            port=getattr(address, "port", 0),
        )
        return port

    def stopService(self) -> Deferred[None] | None:
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        if port is None:
            return None
        result: Deferred[None] | None = port.stopListening()
        return result


# ---------------------------------------------------------------------------
# The application


@dataclass(frozen=True)
class ReloadOutcome:
    ok: bool
    changed: tuple[str, ...] = ()
    applied: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()
    problems: tuple[tuple[str, str], ...] = ()


@dataclass
class _Running:
    component: Component
    context: ComponentContext
    service: Any


class GatewayApp:
    """The daemon's service tree and its life cycle (start, reload, stop)."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        config: GatewayConfig,
        components: Iterable[Component] = (),
        *,
        loader: Callable[[str], GatewayConfig] = lambda path: load_config(path),
        notifier: SystemdNotifier | None = None,
        log_output: LogOutput | None = None,
        metrics: GatewayMetrics | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.started_config = config
        self.components = tuple(components)
        names = [c.name for c in self.components]
        if len(set(names)) != len(names):
            raise ValueError(f"component names must be unique: {names}")
        self._loader = loader
        self.notifier = notifier if notifier is not None else SystemdNotifier(environ)
        self._environ = environ
        self.log_output = log_output
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self.health = HealthChecks(reactor, config.health)
        self.service: Any = MultiService()  # type: ignore[no-untyped-call]
        self._sites: dict[str, Any] = {
            "health": GatewaySite(HealthResource(self.health)),  # type: ignore[no-untyped-call]
            "metrics": GatewaySite(MetricsResource(self.metrics.registry)),  # type: ignore[no-untyped-call]
        }
        self._listeners: dict[str, ListenerService] = {}
        self._running: dict[str, _Running] = {}
        self.components_running = _RunningServices(self._running)
        self._reload_lock = DeferredLock()
        self.restart_pending: tuple[str, ...] = ()
        self.started = False

    # -- helpers ---------------------------------------------------------

    def _now(self) -> float:
        return float(self.reactor.seconds())

    def addresses(self) -> dict[str, Any]:
        """The bound address of every listener (``IAddress``), by listener name."""
        return {name: svc.port.getHost() for name, svc in self._listeners.items() if svc.port is not None}

    def _live_sections(self) -> frozenset[str]:
        """Sections a reload applies: the daemon's own, and those only reloadable components read."""
        live = set(RELOADABLE_SECTIONS)
        for section in SECTIONS:
            readers = [c for c in self.components if section in c.sections]
            if readers and all(c.reloadable for c in readers):
                live.add(section)
        return frozenset(live)

    async def _start_listener(self, name: str, description: str) -> None:
        svc = ListenerService(self.reactor, name, description, self._sites[name])
        await svc.listen()
        _attach(svc, self.service)
        self._listeners[name] = svc

    async def _stop_listener(self, name: str) -> None:
        svc = self._listeners.pop(name)
        await _settle(svc.disownServiceParent())  # type: ignore[no-untyped-call]  # closes the port

    def _build(self, component: Component, config: GatewayConfig) -> _Running:
        context = ComponentContext(self.reactor, config, self.health, self.metrics, self.components_running,
                                   lambda: self.config)
        try:
            service = component.build(context)
        except Exception:
            context.release()
            raise
        named: Any = service
        named.setName(component.name)
        return _Running(component, context, named)

    async def _stop_component(self, name: str) -> None:
        running = self._running.pop(name)
        try:
            await _settle(running.service.disownServiceParent())
        finally:
            running.context.release()

    # -- life cycle ------------------------------------------------------

    async def start(self) -> None:
        """Build and start the components, bind the listeners, then tell systemd READY=1.

        Raises :class:`ListenError` (a port in use…) or the component's error; anything
        already started is stopped again first.
        """
        config = self.config
        self.log.info(
            "Starting gateway {server_id} from {source}: {summary}",
            server_id=config.server.server_id,
            source=str(config.source),
            summary=config.summary(),
        )
        try:
            for component in self.components:
                running = self._build(component, config)
                self._running[component.name] = running
                _attach(running.service, self.service)
            self.service.startService()
            for name, description in config.listeners.items():
                await self._start_listener(name, description)
            await self._first_attempts(self._running.values())
        except Exception as exc:
            await self._teardown()
            if isinstance(exc, VdxpError):
                raise
            raise StartError(f"start-up failed: {exc}") from exc
        interval = watchdog_interval(self._environ)
        if interval is not None and self.notifier.enabled:
            _attach(WatchdogService(self.reactor, self.notifier, interval), self.service)
        self.started = True
        self.metrics.config_loaded.set(time.time())
        self.notifier.ready(f"serving {config.server.server_id}")
        self.log.info("Gateway {server_id} ready", server_id=config.server.server_id)

    async def _first_attempts(self, running: Any) -> None:
        """Wait (bounded) for components that open things in the background, e.g. tokens,
        so READY=1 and the first health check reflect their first attempt."""
        for item in list(running):
            when = getattr(item.service, "whenStarted", None)
            if when is not None:
                d = when()
                d.addTimeout(FIRST_ATTEMPT_TIMEOUT, self.reactor)
                try:
                    await d
                except ListenError:
                    raise  # a port the administrator configured cannot be bound: start-up fails
                except Exception:  # noqa: S110 - the component reports its own problems (health, log)
                    pass

    async def _teardown(self) -> None:
        for running in self._running.values():
            running.context.release()
        self._running.clear()
        self._listeners.clear()
        if self.service.running:
            await _settle(self.service.stopService())

    async def stop(self) -> None:
        """STOPPING=1, then stop every service (reverse order) and close the listeners."""
        if not self.started:
            return
        self.started = False
        self.notifier.stopping()
        self.log.info("Stopping gateway {server_id}", server_id=self.config.server.server_id)
        await self._teardown()
        self.log.info("Gateway stopped")

    def request_reload(self) -> Deferred[ReloadOutcome]:
        """Run :meth:`reload` from a signal handler (through ``callFromThread``)."""
        d = Deferred.fromCoroutine(self.reload())

        def crashed(failure: Failure) -> ReloadOutcome:
            self.log.failure("Configuration reload crashed", failure=failure)
            self.metrics.config_reloads.labels(result="failed").inc()
            return ReloadOutcome(ok=False)

        return d.addErrback(crashed)

    async def reload(self) -> ReloadOutcome:
        """Re-read and re-validate the configuration file and apply what can be applied."""
        await self._reload_lock.acquire()
        try:
            self.notifier.reloading(int(time.monotonic() * 1_000_000))
            outcome = await self._reload()
        finally:
            self._reload_lock.release()
            if self.started:
                self.notifier.ready(f"serving {self.config.server.server_id}")
        self.metrics.config_reloads.labels(result="ok" if outcome.ok else "failed").inc()
        return outcome

    async def _reload(self) -> ReloadOutcome:
        old = self.config
        source = str(old.source)
        self.log.info("Reloading configuration from {source}", source=source)
        try:
            new = self._loader(source)
        except ConfigError as exc:
            for key_path, problem in exc.problems:
                self.log.error(
                    "Configuration reload failed ({code}): {key_path}: {problem}",
                    code=exc.code,
                    key_path=key_path,
                    problem=problem,
                )
            self.log.warn(
                "Keeping the running configuration ({count} problems in {source})",
                count=len(exc.problems),
                source=source,
            )
            return ReloadOutcome(ok=False, problems=exc.problems)

        changed = changed_sections(old, new)
        applied: list[str] = []
        ok = True

        if "logging" in changed and self.log_output is not None:
            self.log_output.configure(choose_format(new.logging.format), new.logging.level)
            applied.append("logging")
        if "health" in changed:
            self.health.configure(new.health)
            applied.append("health")
        if "listeners" in changed and self.started:
            if await self._reload_listeners(old, new):
                applied.append("listeners")
            else:
                ok = False
                new = dataclasses.replace(new, listeners=old.listeners)

        for component in self.components:
            touched = sorted(component.sections & set(changed))
            if not touched or not component.reloadable or not self.started:
                continue
            try:
                await self._stop_component(component.name)
                running = self._build(component, new)
                self._running[component.name] = running
                _attach(running.service, self.service)
                await self._first_attempts([running])
                applied.append(component.name)
                self.log.info(
                    "Rebuilt component {component} ({sections} changed)",
                    component=component.name,
                    sections=", ".join(touched),
                )
            except Exception:
                ok = False
                self.log.failure("Component {component} failed to rebuild", component=component.name)

        live = self._live_sections()
        restart = tuple(s for s in changed_sections(self.started_config, new) if s not in live)
        self.config = new
        self.restart_pending = restart
        self.metrics.restart_pending.set(1 if restart else 0)
        if ok:
            self.metrics.config_loaded.set(time.time())
        if restart:
            self.log.warn(
                "Configuration sections {sections} changed; they take effect after a restart",
                sections=", ".join(restart),
            )
        self.log.info(
            "Configuration reloaded ({result}): changed {changed}; applied {applied}",
            result="ok" if ok else "failed",
            changed=", ".join(changed) or "nothing",
            applied=", ".join(applied) or "nothing",
        )
        return ReloadOutcome(ok=ok, changed=tuple(changed), applied=tuple(applied), restart_needed=restart)

    async def _reload_listeners(self, old: GatewayConfig, new: GatewayConfig) -> bool:
        """Rebind changed listeners; on a bind failure put the old one back and return False."""
        before = dict(old.listeners.items())
        after = dict(new.listeners.items())
        ok = True
        for name in ("health", "metrics"):
            if before.get(name) == after.get(name):
                continue
            if name in self._listeners:
                await self._stop_listener(name)
            if name not in after:
                self.log.info("Listener {listener} disabled", listener=name)
                continue
            try:
                await self._start_listener(name, after[name])
            except ListenError as exc:
                ok = False
                self.log.error("Listener {listener} not moved: {error}", listener=name, error=str(exc))
                if name in before:
                    try:
                        await self._start_listener(name, before[name])
                    except ListenError as again:
                        self.log.critical("Listener {listener} lost: {error}", listener=name, error=str(again))
        return ok
