"""The daemon: unit tests on Twisted fakes, then the real ``vdxp-gateway run`` process."""

from __future__ import annotations

import io
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.web.test.requesthelper import DummyRequest

from gateway.config import ConfigError, GatewayConfig, HealthConfig, load_config
from gateway.daemon import Component, ComponentContext, GatewayApp, ListenError
from gateway.health import HealthChecks, HealthResource
from gateway.logs import LogOutput, choose_format, json_line
from gateway.metrics import GatewayMetrics, MetricsResource
from gateway.sdnotify import SystemdNotifier, WatchdogService, watchdog_interval

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "vdxp-gateway"
OWNER = "VN-TEST/GOV/000.00.00.G22"


def config_data(
    health: str = "tcp:0:interface=127.0.0.1", metrics: str = "tcp:0:interface=127.0.0.1"
) -> dict[str, Any]:
    return {
        "server": {"instance": "VN-TEST", "owner": OWNER, "server_code": "gw1", "mode": "axis", "state_dir": "state"},
        "tokens": [{"id": "main", "label": "gw", "pin": {"file": "pin"}}],
        "auth_key": {"token": "main", "label": "auth"},
        "members": [
            {"id": OWNER, "name": "Axis", "subsystems": ["vdxp"], "sign_key": {"token": "main", "label": "sign"}}
        ],
        "listeners": {"health": health, "metrics": metrics},
        "logging": {"format": "json", "level": "info"},
        # No central in these tests (tests/test_globalconf_e2e.py runs one).
        "globalconf": {"enabled": False},
    }


@pytest.fixture(scope="module")
def gw_token(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A SoftHSM2 token "gw" holding the keys the configuration names: "auth", and "sign" with a
    certificate (made through the real CLI)."""
    from tests.conftest import make_softhsm

    d = tmp_path_factory.mktemp("daemon-hsm")
    hsm = make_softhsm(d, label="gw")
    env = hsm.env()
    tok = ["--token-label", "gw", "--pin-file", str(hsm.pin_file)]

    def gw(*args: str) -> str:
        out = subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    gw("key", "generate", *tok, "--usage", "auth", "--member", OWNER, "--label", "auth", "--type", "ec")
    gw("key", "generate", *tok, "--usage", "sign", "--member", OWNER, "--label", "sign")
    key_id = next(line.split()[1] for line in gw("token", "list", *tok).splitlines() if "'sign'" in line)
    gw("key", "csr", *tok, "--key-id", key_id, "--profile", "sign", "--member", OWNER, "--member-name", "Axis",
       "--out", str(d / "sign.csr"))
    gw("pki", "init", str(d / "pki"))
    gw("pki", "issue", str(d / "pki"), "--csr", str(d / "sign.csr"), "--profile", "sign", "--out", str(d / "s.pem"))
    gw("cert", "import", *tok, str(d / "s.pem"))
    return hsm


@pytest.fixture
def confdir(tmp_path: Path, gw_token: Any) -> Path:
    pin = tmp_path / "pin"
    pin.write_text(gw_token.pin_file.read_text())
    pin.chmod(0o600)
    (tmp_path / "softhsm2.conf").write_text(gw_token.conf.read_text())
    return tmp_path


def write(confdir: Path, data: dict[str, Any] | str) -> Path:
    path = confdir / "gateway.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


class RecordingNotifier(SystemdNotifier):
    """A notifier that records what it would send (enabled, no socket)."""

    def __init__(self) -> None:
        super().__init__({})
        self.address = "recorder"
        self.messages: list[list[str]] = []

    def notify(self, *lines: str) -> bool:
        self.messages.append(list(lines))
        return True

    def firsts(self) -> list[str]:
        return [m[0] for m in self.messages]


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    captured: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(captured.append)
    yield captured
    globalLogPublisher.removeObserver(captured.append)


def done(d: Deferred[Any]) -> Any:
    """The result of a Deferred that must already have fired."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


class Loader:
    """Returns prepared results for ``GatewayApp(loader=...)``."""

    def __init__(self) -> None:
        self.next: GatewayConfig | ConfigError | None = None

    def __call__(self, path: str) -> GatewayConfig:
        assert self.next is not None
        if isinstance(self.next, ConfigError):
            raise self.next
        return self.next


def make_app(
    confdir: Path, components: tuple[Component, ...] = (), reactor: Any = None, **kw: Any
) -> tuple[GatewayApp, Any, RecordingNotifier, Loader]:
    reactor = reactor if reactor is not None else MemoryReactorClock()
    notifier = RecordingNotifier()
    loader = Loader()
    config = load_config(write(confdir, config_data(**kw)))
    app = GatewayApp(reactor, config, components, loader=loader, notifier=notifier, environ={})
    return app, reactor, notifier, loader


def counter(app: GatewayApp, result: str) -> float:
    value = app.metrics.registry.get_sample_value("vdxp_config_reloads_total", {"result": result})
    assert value is not None
    return value


# -- GatewayApp on a MemoryReactorClock -------------------------------------------------


def test_start_binds_listeners_then_reports_ready(confdir: Path) -> None:
    app, reactor, notifier, _ = make_app(confdir, health="tcp:5588:interface=127.0.0.1", metrics="tcp:9465")
    done(Deferred.fromCoroutine(app.start()))
    assert [(port, iface) for port, _, _, iface in reactor.tcpServers] == [(5588, "127.0.0.1"), (9465, "")]
    assert notifier.firsts() == ["READY=1"]
    assert app.service.running
    assert set(app.addresses()) == {"health", "metrics"}
    done(Deferred.fromCoroutine(app.stop()))
    assert notifier.firsts() == ["READY=1", "STOPPING=1"]
    assert not app.service.running and app.addresses() == {}


class _BusyReactor(MemoryReactorClock):
    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if port == 9465:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        return super().listenTCP(port, factory, backlog, interface)


def test_start_failure_is_a_coded_error_and_stops_what_started(confdir: Path) -> None:
    started: list[str] = []
    component = Component("probe", lambda ctx: _Probe(started))
    app, _, notifier, _ = make_app(confdir, (component,), reactor=_BusyReactor(), health="tcp:5588", metrics="tcp:9465")
    with pytest.raises(ListenError) as info:
        done(Deferred.fromCoroutine(app.start()))
    assert info.value.code == "daemon.listen_failed"
    assert str(info.value).startswith("daemon.listen_failed: metrics listener tcp:9465: Couldn't listen")
    assert "READY=1" not in notifier.firsts()
    assert started == ["start", "stop"]
    assert not app.service.running


class _Probe(Service):
    def __init__(self, record: list[str]) -> None:
        self.record = record

    def startService(self) -> None:
        super().startService()
        self.record.append("start")

    def stopService(self) -> None:
        super().stopService()
        self.record.append("stop")


def test_reload_with_invalid_file_keeps_running_config(confdir: Path, events: list[dict[str, Any]]) -> None:
    app, _, notifier, loader = make_app(confdir)
    done(Deferred.fromCoroutine(app.start()))
    before = app.config
    loader.next = ConfigError([("tokens[0].pin", "file /x is readable by others"), ("members[0].id", "bad")])
    outcome = done(Deferred.fromCoroutine(app.reload()))
    assert not outcome.ok
    assert app.config is before
    assert counter(app, "failed") == 1 and counter(app, "ok") == 0
    errors = [e for e in events if e.get("log_level") == LogLevel.error]
    assert [(e["key_path"], e["problem"]) for e in errors] == [
        ("tokens[0].pin", "file /x is readable by others"),
        ("members[0].id", "bad"),
    ]
    assert notifier.firsts() == ["READY=1", "RELOADING=1", "READY=1"]


def test_reload_moves_listeners_and_applies_logging(confdir: Path) -> None:
    app, reactor, _, loader = make_app(confdir, health="tcp:5588", metrics="tcp:9465")
    output = LogOutput(io.StringIO(), "json", "info")
    app.log_output = output
    done(Deferred.fromCoroutine(app.start()))
    data = config_data(health="tcp:5599", metrics="tcp:9465")
    data["logging"] = {"format": "text", "level": "debug"}
    loader.next = load_config(write(confdir, data))
    outcome = done(Deferred.fromCoroutine(app.reload()))
    assert outcome.ok and outcome.applied == ("logging", "listeners")
    assert outcome.restart_needed == ()
    assert [port for port, *_ in reactor.tcpServers] == [5588, 9465, 5599]
    assert app.addresses()["health"].port == 5599
    assert app.config.listeners.health == "tcp:5599"
    assert output.level == "debug" and output.format == "text"
    assert counter(app, "ok") == 1


def test_reload_listener_failure_restores_old_listener(confdir: Path) -> None:
    app, reactor, _, loader = make_app(confdir, reactor=_BusyReactor(), health="tcp:5588", metrics="tcp:9470")
    done(Deferred.fromCoroutine(app.start()))
    loader.next = load_config(write(confdir, config_data(health="tcp:5588", metrics="tcp:9465")))
    outcome = done(Deferred.fromCoroutine(app.reload()))
    assert not outcome.ok
    assert app.config.listeners.metrics == "tcp:9470"
    assert [port for port, *_ in reactor.tcpServers] == [5588, 9470, 9470]
    assert counter(app, "failed") == 1


def test_reload_reports_sections_needing_restart(confdir: Path) -> None:
    app, _, _, loader = make_app(confdir)
    done(Deferred.fromCoroutine(app.start()))
    data = config_data()
    data["tokens"][0]["timeout"] = "30s"
    loader.next = load_config(write(confdir, data))
    outcome = done(Deferred.fromCoroutine(app.reload()))
    assert outcome.ok and outcome.restart_needed == ("tokens",)
    assert app.metrics.registry.get_sample_value("vdxp_config_restart_pending") == 1
    # Changing it back clears the pending restart.
    loader.next = load_config(write(confdir, config_data()))
    outcome = done(Deferred.fromCoroutine(app.reload()))
    assert outcome.restart_needed == ()
    assert app.metrics.registry.get_sample_value("vdxp_config_restart_pending") == 0


def test_components_are_rebuilt_only_when_reloadable(confdir: Path) -> None:
    built: list[tuple[str, float]] = []
    record: list[str] = []

    def build(name: str) -> Callable[[ComponentContext], Service]:
        def _build(ctx: ComponentContext) -> Service:
            built.append((name, ctx.config.ocsp.freshness_seconds))
            ctx.add_health_check(f"{name}-check", lambda: (True, "fine"))
            return _Probe(record)

        return _build

    components = (
        Component("ocsp-fetcher", build("ocsp-fetcher"), frozenset({"ocsp"}), reloadable=True),
        Component("signer", build("signer"), frozenset({"tokens", "ocsp"}), reloadable=False),
    )
    app, _, _, loader = make_app(confdir, components)
    done(Deferred.fromCoroutine(app.start()))
    assert built == [("ocsp-fetcher", 3600.0), ("signer", 3600.0)]
    assert app.health.names == ["ocsp-fetcher-check", "signer-check"]
    data = config_data()
    data["ocsp"] = {"freshness": "2h"}
    loader.next = load_config(write(confdir, data))
    outcome = done(Deferred.fromCoroutine(app.reload()))
    assert built[2:] == [("ocsp-fetcher", 7200.0)]
    assert outcome.applied == ("ocsp-fetcher",)
    assert outcome.restart_needed == ("ocsp",)  # the signer reads it too and cannot reload
    assert app.health.names == ["ocsp-fetcher-check", "signer-check"]
    assert record == ["start", "start", "stop", "start"]
    done(Deferred.fromCoroutine(app.stop()))
    assert app.health.names == []


def test_component_sections_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown configuration sections"):
        Component("x", lambda ctx: Service(), frozenset({"tokenz"}))


# -- health -------------------------------------------------------------------------------


def test_health_results_are_cached_by_outcome() -> None:
    clock = Clock()
    checks = HealthChecks(clock, HealthConfig(ok_cache_seconds=2, failure_cache_seconds=30, check_timeout_seconds=5))
    state = {"ok": True, "calls": 0}

    def check() -> tuple[bool, str]:
        state["calls"] += 1
        return (bool(state["ok"]), "token logged out")

    checks.register("auth key", check)
    assert done(checks.evaluate()).ok and state["calls"] == 1
    clock.advance(1.9)
    assert done(checks.evaluate()).ok and state["calls"] == 1
    state["ok"] = False
    clock.advance(0.2)
    report = done(checks.evaluate())
    assert not report.ok and report.reasons == ("auth key: token logged out",) and state["calls"] == 2
    state["ok"] = True
    clock.advance(29)
    assert not done(checks.evaluate()).ok and state["calls"] == 2
    clock.advance(1.1)
    assert done(checks.evaluate()).ok and state["calls"] == 3


def test_health_check_timeout_and_exception() -> None:
    clock = Clock()
    checks = HealthChecks(clock, HealthConfig(check_timeout_seconds=5))
    never: Deferred[tuple[bool, str]] = Deferred()
    checks.register("conf", lambda: never)

    def boom() -> tuple[bool, str]:
        raise RuntimeError("database is locked")

    checks.register("db", boom)
    first = checks.evaluate()
    second = checks.evaluate()  # shares the evaluation under way
    results: list[Any] = []
    first.addCallback(results.append)
    second.addCallback(results.append)
    assert results == []
    clock.advance(5)
    assert len(results) == 2 and results[0] is results[1]
    assert results[0].reasons == ("conf: no answer within 5 s", "db: check failed: database is locked")


def test_health_resource_answers_200_or_500() -> None:
    clock = Clock()
    checks = HealthChecks(clock, HealthConfig(ok_cache_seconds=0, failure_cache_seconds=0))
    resource = HealthResource(checks)
    request = DummyRequest([b""])
    resource.render(request)
    assert request.responseCode == 200 and b"".join(request.written) == b"OK\n"
    checks.register("global conf", lambda: (False, "expired at 12:00"))
    request = DummyRequest([b""])
    resource.render(request)
    assert request.responseCode == 500
    assert b"".join(request.written) == b"global conf: expired at 12:00\n"


def test_metrics_resource_uses_its_own_registry() -> None:
    metrics = GatewayMetrics()
    metrics.config_reloads.labels(result="ok").inc()
    request = DummyRequest([b"metrics"])
    body = MetricsResource(metrics.registry).render(request)
    text = body.decode()
    assert 'vdxp_build_info{python="' in text
    assert 'vdxp_config_reloads_total{result="ok"} 1.0' in text
    assert 'vdxp_config_reloads_total{result="failed"} 0.0' in text
    assert "python_gc_objects_collected_total" not in text  # not the global default registry
    request = DummyRequest([b"metrics"])
    request.requestHeaders.setRawHeaders(b"accept", [b"application/openmetrics-text; version=1.0.0"])
    body = MetricsResource(metrics.registry).render(request)
    assert body.endswith(b"# EOF\n")


# -- sd_notify and the watchdog -----------------------------------------------------------


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    directory = tempfile.mkdtemp(prefix="vdxp-n")  # short: AF_UNIX paths are limited to 108 bytes
    path = os.path.join(directory, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    yield sock, path
    sock.close()
    shutil.rmtree(directory)


def test_sdnotify_sends_datagrams(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    assert notifier.ready("serving")
    assert sock.recv(4096).decode().split("\n")[:2] == ["READY=1", "STATUS=serving"]
    assert notifier.stopping()
    assert sock.recv(4096).startswith(b"STOPPING=1")


def test_sdnotify_abstract_namespace_and_disabled() -> None:
    name = f"vdxp-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert sock.recv(100) == b"WATCHDOG=1"
    finally:
        sock.close()
    assert not SystemdNotifier({}).ready()
    assert not SystemdNotifier({"NOTIFY_SOCKET": "/nonexistent/notify.sock"}).ready()


def test_watchdog_pings_at_half_the_interval() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "6000000"}) == 3.0
    assert watchdog_interval({"WATCHDOG_USEC": "6000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({"WATCHDOG_USEC": "6000000", "WATCHDOG_PID": "2"}, pid=2) == 3.0
    assert watchdog_interval({}) is None
    clock = Clock()
    notifier = RecordingNotifier()
    service = WatchdogService(clock, notifier, 3.0)
    service.startService()
    assert notifier.firsts() == ["WATCHDOG=1"]
    clock.advance(2.9)
    assert len(notifier.messages) == 1
    clock.advance(0.1)
    clock.advance(3)
    assert notifier.firsts() == ["WATCHDOG=1"] * 3
    service.stopService()
    clock.advance(10)
    assert len(notifier.messages) == 3


def test_app_starts_watchdog_when_asked(confdir: Path) -> None:
    reactor = MemoryReactorClock()
    notifier = RecordingNotifier()
    config = load_config(write(confdir, config_data()))
    app = GatewayApp(reactor, config, notifier=notifier, environ={"WATCHDOG_USEC": "2000000"})
    done(Deferred.fromCoroutine(app.start()))
    reactor.advance(1)
    assert notifier.firsts().count("WATCHDOG=1") == 2


# -- logs -----------------------------------------------------------------------------------


def test_log_output_json_lines_and_level(events: list[dict[str, Any]]) -> None:
    stream = io.StringIO()
    output = LogOutput(stream, "json", "info")
    output({"log_format": "hidden {x}", "x": 1, "log_level": LogLevel.debug, "log_time": 0.0, "log_namespace": "t"})
    output({"log_format": "shown {x}", "x": 2, "log_level": LogLevel.warn, "log_time": 0.0, "log_namespace": "t"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["message"] == "shown 2" and record["level"] == "warn" and record["x"] == 2
    output.configure("text", "debug")
    output({"log_format": "now {x}", "x": 3, "log_level": LogLevel.debug, "log_time": 0.0, "log_namespace": "t"})
    assert stream.getvalue().splitlines()[1].endswith("now 3")


def test_choose_format() -> None:
    tty = io.StringIO()
    tty.isatty = lambda: True  # type: ignore[method-assign]
    assert choose_format("auto", tty, {}) == "text"
    assert choose_format("auto", io.StringIO(), {}) == "json"
    assert choose_format("auto", tty, {"JOURNAL_STREAM": "8:1234"}) == "json"
    assert choose_format("auto", tty, {"INVOCATION_ID": "abc"}) == "json"
    assert choose_format("text", io.StringIO(), {"INVOCATION_ID": "abc"}) == "text"
    assert choose_format("json", tty, {}) == "json"
    assert json_line({"log_format": "x", "log_level": LogLevel.info}).endswith("\n")


# -- the real process ------------------------------------------------------------------------


class Daemon:
    """``vdxp-gateway run`` as a subprocess, its JSON log lines and its sd_notify datagrams."""

    def __init__(self, config: Path, notify: tuple[socket.socket, str] | None = None) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "INVOCATION_ID", "LISTEN_FDS")
        }
        self.notify_sock: socket.socket | None = None
        if notify is not None:
            self.notify_sock, env["NOTIFY_SOCKET"] = notify
            env["WATCHDOG_USEC"] = "1000000"
        # The token of the gw_token fixture (confdir carries a copy of its SoftHSM2 config).
        env["SOFTHSM2_CONF"] = str(config.parent / "softhsm2.conf")
        self.proc = subprocess.Popen(
            [str(CLI), "run", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.notifications: list[str] = []
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.events.put({"message": line.rstrip("\n"), "unparsed": True})

    def wait_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20) -> dict[str, Any]:
        for event in self.seen:
            if predicate(event):
                self.seen.remove(event)
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.events.empty():
                    break
                continue
            if predicate(event):
                return event
            self.seen.append(event)
        raise AssertionError(f"log event not seen; got {[e.get('message') for e in self.seen]}")

    def wait_notify(self, first: str, timeout: float = 20) -> str:
        assert self.notify_sock is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.notify_sock.settimeout(max(0.1, deadline - time.monotonic()))
            message = self.notify_sock.recv(4096).decode()
            self.notifications.append(message)
            if message.split("\n")[0] == first:
                return message
        raise AssertionError(f"{first} not received; got {self.notifications}")

    def ports(self) -> dict[str, int]:
        found: dict[str, int] = {}
        while len(found) < 2:
            event = self.wait_log(lambda e: str(e.get("log_format", "")).startswith("Listening for"))
            found[event["listener"]] = event["port"]
        return found

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def http_get(port: int, path: str = "/") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_healthy(port: int, timeout: float = 20) -> tuple[int, str]:
    """Tokens open in the background after READY: poll until the health check passes."""
    deadline = time.monotonic() + timeout
    result = http_get(port)
    while result[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        result = http_get(port)
    return result


def metric(port: int, line_start: str) -> str:
    _, body = http_get(port, "/metrics")
    matches = [line for line in body.splitlines() if line.startswith(line_start)]
    assert len(matches) == 1, body
    return matches[0].rsplit(" ", 1)[1]


@pytest.mark.e2e
def test_daemon_serves_reloads_and_stops(confdir: Path, notify_socket: tuple[socket.socket, str]) -> None:
    path = write(confdir, config_data())
    daemon = Daemon(path, notify_socket)
    try:
        ready = daemon.wait_notify("READY=1")
        assert f"STATUS=serving {OWNER}/gw1" in ready
        ports = daemon.ports()
        assert wait_healthy(ports["health"]) == (200, "OK\n")
        assert 'vdxp_hsm_token_up{token="main"} 1.0' in http_get(ports["metrics"], "/metrics")[1]
        assert "vdxp_build_info{" in http_get(ports["metrics"], "/metrics")[1]
        daemon.wait_notify("WATCHDOG=1")

        # A broken file: errors logged, old configuration kept, still serving.
        path.write_text(yaml.safe_dump(config_data()).replace("label: auth", "label: auth\n  slot: 3"))
        daemon.proc.send_signal(signal.SIGHUP)
        error = daemon.wait_log(lambda e: e.get("key_path") == "auth_key.slot")
        assert error["level"] == "error" and error["problem"] == "unknown key"
        daemon.wait_log(lambda e: str(e.get("message", "")).startswith("Keeping the running configuration"))
        assert http_get(ports["health"]) == (200, "OK\n")
        assert metric(ports["metrics"], 'vdxp_config_reloads_total{result="failed"}') == "1.0"
        assert daemon.wait_notify("RELOADING=1")
        daemon.wait_notify("READY=1")

        # A valid change: the new log level applies, result=ok.
        data = config_data()
        data["logging"]["level"] = "warn"
        data["health"] = {"ok_cache": "1s"}
        path.write_text(yaml.safe_dump(data))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_notify("RELOADING=1")
        daemon.wait_notify("READY=1")
        assert metric(ports["metrics"], 'vdxp_config_reloads_total{result="ok"}') == "1.0"
        assert metric(ports["metrics"], 'vdxp_config_reloads_total{result="failed"}') == "1.0"
        assert float(metric(ports["metrics"], "vdxp_config_loaded_timestamp_seconds")) > time.time() - 60

        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
        daemon.wait_notify("STOPPING=1")
        # At level warn, the info lines of the shutdown were filtered out.
        with pytest.raises(AssertionError):
            daemon.wait_log(lambda e: e.get("message") == "Gateway stopped", timeout=1)
    finally:
        daemon.stop()


@pytest.mark.e2e
def test_reload_disables_a_listener_and_sigint_stops(confdir: Path) -> None:
    path = write(confdir, config_data())
    daemon = Daemon(path)
    try:
        ports = daemon.ports()
        daemon.wait_log(lambda e: e.get("log_format") == "Gateway {server_id} ready")
        assert wait_healthy(ports["health"]) == (200, "OK\n")
        data = config_data(health="tcp:0:interface=127.0.0.1")
        data["listeners"]["metrics"] = None
        path.write_text(yaml.safe_dump(data))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log(lambda e: e.get("log_format", "").startswith("Listener {listener} disabled"))
        with pytest.raises(OSError):
            http_get(ports["metrics"], "/metrics")
        assert http_get(ports["health"]) == (200, "OK\n")
        daemon.proc.send_signal(signal.SIGINT)
        assert daemon.proc.wait(timeout=10) == 0
    finally:
        daemon.stop()


@pytest.mark.e2e
def test_port_in_use_exits_1_with_one_coded_line(confdir: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        path = write(confdir, config_data(metrics=f"tcp:{port}:interface=127.0.0.1"))
        result = subprocess.run(
            [str(CLI), "run", "-c", str(path)], capture_output=True, text=True, timeout=30, check=False
        )
    finally:
        busy.close()
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: daemon.listen_failed: metrics listener tcp:{port}:interface=127.0.0.1: ")
    assert "Address already in use" in lines[0]


@pytest.mark.e2e
def test_run_with_invalid_config_exits_2(confdir: Path) -> None:
    (confdir / "pin").chmod(0o644)
    path = write(confdir, config_data())
    result = subprocess.run([str(CLI), "run", "-c", str(path)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert (
        result.stderr
        == f"error: config.invalid: tokens[0].pin: file {confdir / 'pin'} is readable by others (mode 0644; use 0600)\n"
    )


@pytest.mark.e2e
def test_missing_token_is_reported_not_fatal(confdir: Path) -> None:
    data = config_data()
    data["tokens"][0]["label"] = "no-such-token"
    daemon = Daemon(write(confdir, data))
    try:
        ports = daemon.ports()
        error = daemon.wait_log(lambda e: e.get("code") == "hsm.token_not_found")
        assert error["level"] == "error" and error["token"] == "main"
        status, body = http_get(ports["health"])
        assert status == 500 and "token main: hsm.token_not_found" in body
        assert 'vdxp_hsm_token_errors_total{code="hsm.token_not_found",token="main"} 1.0' in \
            http_get(ports["metrics"], "/metrics")[1]
        assert daemon.proc.poll() is None  # still running, retrying with back-off
    finally:
        assert daemon.stop() == 0
