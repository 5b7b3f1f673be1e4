"""The sandbox: a whole federation on loopback addresses of its own (``../shared/design/SANDBOX.md``).

``vdxp-gateway sandbox up DIR [--addresses 127.0.0.0/24]`` builds, entirely through the
``vdxp-gateway`` command line, in ``DIR``:

* a SoftHSM2 configuration and token per gateway and one for the trust services (the central's
  configuration-signing key and the TSA's key), PINs generated into 0600 files;
* a development PKI (``pki init``) whose OCSP responder (``ocsp serve``) has its own address;
* a TSA (``tsa serve``), the development central (``central serve`` with a federation description
  written here) and the example service behind the provider (:mod:`gateway.exampleservice`);
* two gateways (``run -c``): ``gw-provider`` (owner ``000.00.00.G22``, client ``.../example`` with
  the services ``echo`` (SOAP) and ``items`` (REST)) and ``gw-consumer`` (owner ``000.00.00.H41``,
  client ``.../edoc``), each on its own address with the federation's ports (5500, 5577) and its
  authentication key as a 0600 PEM file (the relay's TLS cannot use a key inside the HSM yet);

then writes ``DIR/sandbox.json`` (version 1 without ``axis`` and ``tenants``).  ``status`` adds
``"alive"`` to every process; ``down`` stops them by PID (SIGTERM, then SIGKILL) and keeps the files.

Addresses in the range: the first host is left alone (``127.0.0.1`` in the default range), then
provider, consumer, central, CA/OCSP, TSA and the example service, one address each.

Processes are recorded with their PID and their start time (``/proc/PID/stat``), so a PID that
was reused by another program is never signalled.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from protocols.errors import UsageError, VdxpError

__all__ = [
    "CONSUMER",
    "DEFAULT_ADDRESSES",
    "INSTANCE",
    "PROVIDER",
    "SANDBOX_FILE",
    "Layout",
    "SandboxError",
    "down",
    "layout_for",
    "status",
    "up",
]

INSTANCE = "VN-TEST"
DEFAULT_ADDRESSES = "127.0.0.0/24"
SANDBOX_FILE = "sandbox.json"
SERVER_PORT = 5500
OCSP_PORT = 5577

G22 = f"{INSTANCE}/GOV/000.00.00.G22"
H41 = f"{INSTANCE}/GOV/000.00.00.H41"
EXAMPLE_CLIENT = f"{G22}/example"
EDOC_CLIENT = f"{H41}/edoc"
MEMBER_NAMES = {G22: "Van phong Chinh phu", H41: "UBND tinh H41"}

START_TIMEOUT = 30.0  # seconds for each process to come up
STOP_TIMEOUT = 10.0  # SIGTERM, then SIGKILL
CLI_TIMEOUT = 120.0


class SandboxError(VdxpError):
    """A step of ``sandbox up``/``status``/``down`` failed (CLI exit code 1)."""

    code = "sandbox.failed"


@dataclass(frozen=True)
class GatewaySpec:
    name: str
    owner: str
    client: str  # the subsystem it hosts
    address: str


PROVIDER = "gw-provider"
CONSUMER = "gw-consumer"


@dataclass(frozen=True)
class Layout:
    """Which address runs what, inside one ``--addresses`` range."""

    network: str
    provider: str
    consumer: str
    central: str
    ca: str
    tsa: str
    example: str

    def gateways(self) -> tuple[GatewaySpec, GatewaySpec]:
        return (GatewaySpec(PROVIDER, G22, EXAMPLE_CLIENT, self.provider),
                GatewaySpec(CONSUMER, H41, EDOC_CLIENT, self.consumer))


def layout_for(addresses: str) -> Layout:
    """The addresses of a range such as ``127.0.0.0/24`` (loopback only, at least 7 hosts)."""
    try:
        net = ipaddress.ip_network(addresses, strict=False)
    except ValueError as exc:
        raise UsageError(f"--addresses {addresses!r}: {exc}", code="usage.addresses_invalid") from None
    if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
        raise UsageError(f"--addresses {addresses!r} must be a range inside 127.0.0.0/8 (loopback)",
                         code="usage.addresses_invalid")
    hosts: list[str] = []
    for host in net.hosts():
        hosts.append(str(host))
        if len(hosts) == 7:
            break
    if len(hosts) < 7:
        raise UsageError(f"--addresses {addresses!r} is too small: the sandbox needs 7 host addresses (a /28 "
                         "or larger)", code="usage.addresses_invalid")
    return Layout(network=str(net), provider=hosts[1], consumer=hosts[2], central=hosts[3], ca=hosts[4],
                  tsa=hosts[5], example=hosts[6])


# ---------------------------------------------------------------------------------------------
# Processes


def _proc_start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks), or None when there is no such
    process or it is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rfind(")") + 2:].split()
    if not rest or rest[0] in ("Z", "X"):
        return None
    return rest[19]


def pid_alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, if ``started`` is given, is the process started then."""
    if pid <= 0:
        return False
    if Path("/proc/self/stat").exists():
        now = _proc_start_time(pid)
        return now is not None and (started is None or now == started)
    try:  # pragma: no cover - non-Linux
        os.kill(pid, 0)
    except ProcessLookupError:  # pragma: no cover
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True  # pragma: no cover


def _child_env(softhsm_conf: Path | None = None) -> dict[str, str]:
    drop = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "INVOCATION_ID", "LISTEN_FDS",
            "LISTEN_PID", "LISTEN_FDNAMES")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONUNBUFFERED"] = "1"
    if softhsm_conf is not None:
        env["SOFTHSM2_CONF"] = str(softhsm_conf)
    return env


GW_CMD: tuple[str, ...] = (sys.executable, "-m", "gateway")


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return lines[-1] if lines else "no output"


def cli(env: dict[str, str], *args: str) -> str:
    """Run ``vdxp-gateway ARGS`` and return its standard output; a failure is a :class:`SandboxError`
    naming the step and the child's own coded error line."""
    try:
        out = subprocess.run([*GW_CMD, *args], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SandboxError(f"`vdxp-gateway {' '.join(args[:2])}` did not finish in {CLI_TIMEOUT:.0f} s",
                           code="sandbox.step_failed") from None
    if out.returncode != 0:
        raise SandboxError(f"`vdxp-gateway {' '.join(args[:2])}` failed: {_last_error(out.stderr or out.stdout)}",
                           code="sandbox.step_failed")
    return out.stdout


@dataclass
class Started:
    """A background process started by ``up``."""

    name: str
    pid: int
    started: str | None
    log: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "started": self.started, "log": str(self.log)}


def _spawn(name: str, args: Sequence[str], env: dict[str, str], log: Path, cwd: Path) -> Started:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([*GW_CMD, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
    return Started(name=name, pid=proc.pid, started=_proc_start_time(proc.pid), log=log, popen=proc)


def _wait_for_line(proc: Started, pattern: re.Pattern[str], timeout: float = START_TIMEOUT) -> re.Match[str]:
    """The first line of the process's log matching ``pattern``; fails if the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = proc.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            match = pattern.search(line)
            if match:
                return match
        exited = proc.popen.poll() if proc.popen is not None else (None if pid_alive(proc.pid) else -1)
        if exited is not None:
            raise SandboxError(f"{proc.name} exited (status {exited}) before it was ready: {_last_error(text)} "
                               f"(log {proc.log})", code="sandbox.process_failed")
        if time.monotonic() > deadline:
            raise SandboxError(f"{proc.name} was not ready within {timeout:.0f} s (log {proc.log})",
                               code="sandbox.start_timeout")
        time.sleep(0.1)


def stop_processes(records: Iterable[tuple[int, str | None]], timeout: float = STOP_TIMEOUT) -> list[int]:
    """SIGTERM every live ``(pid, start time)``, SIGKILL those still alive after ``timeout``.
    Returns the PIDs that were signalled."""
    targets = [(pid, started) for pid, started in records if pid_alive(pid, started)]
    for pid, _ in targets:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p, s) for p, s in targets):
        _reap(p for p, _ in targets)
        time.sleep(0.05)
    for pid, started in targets:
        if pid_alive(pid, started):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(pid_alive(p, s) for p, s in targets):
        _reap(p for p, _ in targets)
        time.sleep(0.05)
    return [pid for pid, _ in targets]


def _reap(pids: Iterable[int]) -> None:
    """Collect our own exited children (``up`` cleaning up after a failure), so they are not zombies."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


# ---------------------------------------------------------------------------------------------
# Network helpers


def free_port(address: str, taken: set[int]) -> int:
    """A TCP port free on ``address`` right now (and not already handed out in this run)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((address, 0))
            port = int(s.getsockname()[1])
        if port not in taken and port not in (SERVER_PORT, OCSP_PORT):
            taken.add(port)
            return port
    raise SandboxError(f"no free port on {address}", code="sandbox.address_busy")  # pragma: no cover


def _check_bindable(address: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as exc:
            raise SandboxError(f"{address}:{port} is in use ({exc.strerror}); is another sandbox running on this "
                               "range? Choose another with --addresses", code="sandbox.address_busy") from None


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status ``url`` answers with, or None when nothing answers."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP URL: {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def tcp_open(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Building blocks (all through the CLI)


@dataclass(frozen=True)
class Token:
    label: str
    conf: Path
    pin: Path

    @property
    def env(self) -> dict[str, str]:
        return _child_env(self.conf)

    @property
    def args(self) -> list[str]:
        return ["--token-label", self.label, "--pin-file", str(self.pin)]


def make_token(directory: Path, label: str) -> Token:
    """A SoftHSM2 configuration of its own in ``directory`` and a token initialised with ``token init
    --generate-pins`` (PINs in new 0600 files)."""
    tokens = directory / "tokens"
    tokens.mkdir(parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
                    "slots.removable = false\n")
    pin = directory / "pin"
    token = Token(label=label, conf=conf, pin=pin)
    cli(token.env, "token", "init", "--label", label, "--pin-file", str(pin), "--generate-pins")
    return token


_GENERATED = re.compile(r"^generated \S+ key ([0-9a-f]+) ")


def generate_key(token: Token, *args: str) -> str:
    """``key generate`` on the token; returns the new key's CKA_ID (hex)."""
    out = cli(token.env, "key", "generate", *token.args, *args)
    match = _GENERATED.match(out)
    if match is None:
        raise SandboxError(f"`key generate` printed no key id: {out.strip()!r}", code="sandbox.step_failed")
    return match.group(1)


def make_tls_identity(directory: Path, pki: Path, member: str, address: str, env: dict[str, str]) -> tuple[Path,
                                                                                                            Path]:
    """The relay's TLS identity: an EC P-256 key in a new 0600 PEM file, and its authentication
    certificate (CN = the gateway's address, hence an IP SAN) issued by the development PKI."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from protocols import certprofile

    key = ec.generate_private_key(ec.SECP256R1())
    key_path = directory / "tls-key.pem"
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    subject = certprofile.auth_subject(certprofile.MemberId.parse(member), MEMBER_NAMES[member], address)
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    csr_path = directory / "tls.csr"
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    cert_path = directory / "tls-cert.pem"
    cli(env, "pki", "issue", str(pki), "--csr", str(csr_path), "--profile", "auth", "--out", str(cert_path))
    return key_path, cert_path


def prepare_gateway_token(directory: Path, spec: GatewaySpec, pki: Path, sign_key_type: str = "rsa") -> Token:
    """Token, keys (auth and the member's signing key: RSA-2048 or EC P-256), signing certificate,
    TLS identity."""
    token = make_token(directory / "hsm", spec.name)
    env = token.env
    generate_key(token, "--usage", "auth", "--member", spec.owner, "--type", "ec", "--label", "auth")
    ids = {"sign": generate_key(token, "--usage", "sign", "--member", spec.owner, "--type", sign_key_type,
                                "--label", "sign")}
    csr = directory / "sign.csr"
    cli(env, "key", "csr", *token.args, "--key-id", ids["sign"], "--profile", "sign", "--member", spec.owner,
        "--member-name", MEMBER_NAMES[spec.owner], "--out", str(csr))
    cli(env, "pki", "issue", str(pki), "--csr", str(csr), "--profile", "sign", "--out", str(directory / "sign.pem"))
    cli(env, "cert", "import", *token.args, str(directory / "sign.pem"))
    make_tls_identity(directory, pki, spec.owner, spec.address, env)
    return token


def prepare_trust_token(directory: Path, pki: Path) -> Token:
    """The trust services' token: the central's configuration-signing key and the TSA's key,
    with their certificates from the development PKI."""
    token = make_token(directory / "hsm", "trust")
    env = token.env
    ids = {label: generate_key(token, "--label", label, "--type", "ec") for label in ("conf-signing", "tsa")}
    cli(env, "key", "csr", *token.args, "--key-id", ids["conf-signing"], "--profile", "sign", "--member", G22,
        "--member-name", MEMBER_NAMES[G22], "--out", str(directory / "conf-signing.csr"))
    cli(env, "pki", "issue", str(pki), "--csr", str(directory / "conf-signing.csr"), "--profile", "sign",
        "--out", str(directory / "conf-signing.pem"))
    cli(env, "key", "csr", *token.args, "--key-id", ids["tsa"], "--profile", "tsa", "--member", G22,
        "--member-name", MEMBER_NAMES[G22], "--server", "tsa-1", "--out", str(directory / "tsa.csr"))
    cli(env, "pki", "issue", str(pki), "--csr", str(directory / "tsa.csr"), "--profile", "tsa",
        "--out", str(directory / "tsa.pem"))
    return token


def _parallel(*jobs: Callable[[], Any]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [f.result() for f in futures]


# ---------------------------------------------------------------------------------------------
# up


@dataclass
class _Plan:
    """Everything ``up`` decided before starting processes: addresses, ports, paths."""

    dir: Path
    layout: Layout
    ports: dict[str, int]

    def url(self, address: str, port_name: str, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://{address}:{self.ports[port_name]}{path}"


def _gateway_config(plan: _Plan, spec: GatewaySpec, token: Token, example_url: str) -> dict[str, Any]:
    d = plan.dir / spec.name
    a = spec.address
    member = {"id": spec.owner, "name": MEMBER_NAMES[spec.owner], "subsystems": [spec.client.rsplit("/", 1)[1]],
              "sign_key": {"token": "main", "label": "sign"}}
    client: dict[str, Any] = {"id": spec.client, "connection": "http"}
    if spec.name == PROVIDER:
        client["services"] = [
            {"code": "echo", "type": "soap", "url": f"{example_url}soap"},
            {"code": "items", "type": "rest", "url": f"{example_url}items"},
        ]
        client["access"] = [{"subject": EDOC_CLIENT, "services": ["echo", "items"]}]
    return {
        "server": {"instance": INSTANCE, "owner": spec.owner, "server_code": spec.name, "mode": "dedicated",
                   "state_dir": str(d / "state")},
        "tokens": [{"id": "main", "label": token.label, "pin": {"file": str(token.pin)}}],
        "auth_key": {"token": "main", "label": "auth"},
        "members": [member],
        "listeners": {"health": f"tcp:{plan.ports[spec.name + '.health']}:interface={a}",
                      "metrics": f"tcp:{plan.ports[spec.name + '.metrics']}:interface={a}"},
        "logging": {"format": "json", "level": "info"},
        # A failing check is cached for 30 s by default: far too long for a sandbox starting up.
        "health": {"ok_cache": "1s", "failure_cache": "1s"},
        # Our own certificates' OCSP responses: refreshed often (the local responder is cheap), so a
        # first fetch that failed (e.g. before the global configuration was there) is soon retried.
        "ocsp": {"fetch_interval": "10s"},
        "globalconf": {"interval": "10s", "timeout": "5s", "max_backoff": "30s"},
        "relay": {
            "client_http": f"tcp:{plan.ports[spec.name + '.client_http']}:interface={a}",
            "client_https": f"tcp:{plan.ports[spec.name + '.client_https']}:interface={a}",
            "server": f"tcp:{SERVER_PORT}:interface={a}",
            "ocsp": f"tcp:{OCSP_PORT}:interface={a}",
            "server_port": SERVER_PORT,
            "ocsp_port": OCSP_PORT,
            "tls": {"key": str(d / "tls-key.pem"), "cert": str(d / "tls-cert.pem"),
                    "chain": [str(plan.dir / "pki" / "intermediate.pem")]},
        },
        "clients": [client],
        # Every message is logged (state/gateway.db); bodies over 10 MiB are kept cut to that size
        # rather than refused, so large test attachments still go through the sandbox; records are
        # time-stamped every 2 s (X-Road's interval is 60 s or more) at the sandbox's TSA.
        "message_log": {"oversize": "truncate", "timestamp_interval": "2s"},
    }


def _federation(plan: _Plan, trust: Token) -> dict[str, Any]:
    lay = plan.layout
    return {
        "instance": INSTANCE,
        "listen": f"tcp:{plan.ports['central']}:interface={lay.central}",
        "public_url": plan.url(lay.central, "central", ""),
        "output": str(plan.dir / "central" / "out"),
        "token": {"label": trust.label, "pin": {"file": str(trust.pin)}, "key": "conf-signing"},
        "signing_cert": str(plan.dir / "trust" / "conf-signing.pem"),
        "expiry": "600s",
        "interval": "60s",
        "member_classes": {"GOV": "Government agencies"},
        "members": [
            {"member_class": "GOV", "code": "000.00.00.G22", "name": MEMBER_NAMES[G22], "subsystems": ["example"]},
            {"member_class": "GOV", "code": "000.00.00.H41", "name": MEMBER_NAMES[H41], "subsystems": ["edoc"]},
        ],
        "security_servers": [
            {"owner": spec.owner, "code": spec.name, "address": spec.address,
             "auth_certs": [str(plan.dir / spec.name / "tls-cert.pem")], "clients": [spec.client]}
            for spec in lay.gateways()
        ],
        "cas": [{"name": "dev-ca", "top_ca": str(plan.dir / "pki" / "root.pem"),
                 "intermediates": [{"cert": str(plan.dir / "pki" / "intermediate.pem"),
                                    "ocsp": [{"url": plan.url(lay.ca, "ocsp"),
                                              "cert": str(plan.dir / "pki" / "ocsp.pem")}]}]}],
        "tsas": [{"name": "tsa-1", "url": plan.url(lay.tsa, "tsa"), "cert": str(plan.dir / "trust" / "tsa.pem")}],
        "global_groups": [{"code": "agencies", "description": "All agencies", "members": [EDOC_CLIENT]}],
    }


def _trust_config(plan: _Plan, trust: Token) -> dict[str, Any]:
    """A gateway configuration naming the trust token, as ``tsa serve -c`` wants one."""
    return {
        "server": {"instance": INSTANCE, "owner": G22, "server_code": "trust", "mode": "dedicated",
                   "state_dir": str(plan.dir / "trust" / "state")},
        "tokens": [{"id": "main", "label": trust.label, "pin": {"file": str(trust.pin)}}],
        "auth_key": {"token": "main", "label": "tsa"},
        "members": [{"id": G22, "name": MEMBER_NAMES[G22], "sign_key": {"token": "main", "label": "conf-signing"}}],
        "globalconf": {"enabled": False},
    }


RELAY_LISTENERS = ("client_http", "client_https", "server", "ocsp")
_LISTENING = re.compile(r'"listener":\s*"([a-z_]+)"')


def _relay_expected() -> bool:
    """Whether this build's daemon runs the relay (then its listeners must come up)."""
    from gateway.daemon import standard_components

    return any("relay" in component.name for component in standard_components())


def _gateway_entry(plan: _Plan, spec: GatewaySpec, proc: Started) -> dict[str, Any]:
    a, n = spec.address, spec.name
    return {
        "name": n,
        "mode": "dedicated",
        "owner": spec.owner,
        "address": a,
        "client_http": plan.url(a, f"{n}.client_http"),
        "client_https": plan.url(a, f"{n}.client_https", scheme="https"),
        "server": f"https://{a}:{SERVER_PORT}/",
        "ocsp": f"http://{a}:{OCSP_PORT}/",
        "health": plan.url(a, f"{n}.health"),
        "metrics": plan.url(a, f"{n}.metrics", "/metrics"),
        "pid": proc.pid,
        "config": str(plan.dir / n / "gateway.yaml"),
        "log": str(proc.log),
        "token": {"label": n, "softhsm2_conf": str(plan.dir / n / "hsm" / "softhsm2.conf"),
                  "pin_file": str(plan.dir / n / "hsm" / "pin")},
        "tls": {"key": str(plan.dir / n / "tls-key.pem"), "cert": str(plan.dir / n / "tls-cert.pem")},
        "globalconf": str(plan.dir / n / "state" / "globalconf"),
    }


def _wait_gateway(entry: dict[str, Any], proc: Started, relay_expected: bool, timeout: float) -> dict[str, bool]:
    """Until health answers 200 with the global configuration installed; then the relay's
    listeners (required when the daemon has a relay, reported either way)."""
    deadline = time.monotonic() + timeout
    conf_dir = Path(entry["globalconf"])
    last: int | None = None
    while True:
        if proc.popen is not None and proc.popen.poll() is not None:
            text = proc.log.read_text(encoding="utf-8", errors="replace") if proc.log.exists() else ""
            raise SandboxError(f"{proc.name} exited (status {proc.popen.returncode}): {_last_error(text)} "
                               f"(log {proc.log})", code="sandbox.process_failed")
        last = http_status(entry["health"], timeout=2)
        if last == 200 and (conf_dir / "instance-identifier").exists():
            break
        if time.monotonic() > deadline:
            raise SandboxError(f"{proc.name} was not healthy within {timeout:.0f} s (health {last}; log {proc.log})",
                               code="sandbox.start_timeout")
        time.sleep(0.2)
    listening = {"health": True, "metrics": http_status(entry["metrics"]) is not None}
    address = entry["address"]

    def probe() -> dict[str, bool]:
        ports = {name: int(entry[name].rsplit(":", 1)[1].strip("/")) for name in RELAY_LISTENERS}
        return {name: tcp_open(address, port) for name, port in ports.items()}

    relay = probe()
    while relay_expected and not all(relay.values()):
        if time.monotonic() > deadline:
            missing = ", ".join(n for n, ok in relay.items() if not ok)
            raise SandboxError(f"{proc.name}: relay listeners not up within {timeout:.0f} s: {missing} "
                               f"(log {proc.log})", code="sandbox.start_timeout")
        time.sleep(0.2)
        relay = probe()
    listening.update(relay)
    return listening


def up(directory: Path, addresses: str = DEFAULT_ADDRESSES, *, timeout: float = START_TIMEOUT,
       progress: Callable[[str], None] | None = None, sign_key_type: str = "rsa") -> dict[str, Any]:
    """Build and start the sandbox in ``directory``; returns what was written to ``sandbox.json``.
    ``sign_key_type``: the gateways' member signing keys, ``rsa`` (RSA-2048) or ``ec`` (P-256).

    On failure everything started is stopped and a :class:`SandboxError` (or ``UsageError``) is
    raised; the files stay for diagnosis.
    """
    say = progress or (lambda _text: None)
    layout = layout_for(addresses)
    directory = directory.absolute()
    if (directory / SANDBOX_FILE).exists():
        raise SandboxError(f"{directory} already holds a sandbox ({SANDBOX_FILE}); use `sandbox status` or "
                           "`sandbox down`, or another directory", code="sandbox.exists")
    if directory.exists() and any(directory.iterdir()):
        raise SandboxError(f"{directory} is not empty; the sandbox needs a new or empty directory",
                           code="sandbox.dir_not_empty")
    for spec in layout.gateways():
        for port in (SERVER_PORT, OCSP_PORT):
            _check_bindable(spec.address, port)
    directory.mkdir(parents=True, exist_ok=True)
    # Claim the directory at once: a second `up` racing this one stops here.
    try:
        _write_private(directory / ".sandbox.lock", f"{os.getpid()}\n".encode())
    except FileExistsError:
        raise SandboxError(f"another `sandbox up` is working in {directory}", code="sandbox.exists") from None

    taken: set[int] = set()
    ports: dict[str, int] = {
        "central": free_port(layout.central, taken),
        "ocsp": free_port(layout.ca, taken),
        "tsa": free_port(layout.tsa, taken),
        "example": free_port(layout.example, taken),
    }
    for spec in layout.gateways():
        for name in ("health", "metrics", "client_http", "client_https"):
            ports[f"{spec.name}.{name}"] = free_port(spec.address, taken)
    plan = _Plan(directory, layout, ports)
    started: list[Started] = []
    try:
        return _up(plan, started, timeout, say, sign_key_type)
    except BaseException:
        stop_processes([(p.pid, p.started) for p in reversed(started)])
        for p in started:
            if p.popen is not None:
                p.popen.poll()
        raise


def _up(plan: _Plan, started: list[Started], timeout: float, say: Callable[[str], None],
        sign_key_type: str = "rsa") -> dict[str, Any]:
    d, lay = plan.dir, plan.layout
    logs = d / "logs"
    pki = d / "pki"
    ocsp_url = plan.url(lay.ca, "ocsp")

    say(f"development PKI in {pki}, its OCSP responder and the example service")
    env = _child_env()
    cli(env, "pki", "init", str(pki), "--instance", INSTANCE, "--ocsp-url", ocsp_url)
    ocsp = _spawn("ocsp", ["ocsp", "serve", "--pki", str(pki),
                           "--listen", f"tcp:{plan.ports['ocsp']}:interface={lay.ca}"], env, logs / "ocsp.log", d)
    started.append(ocsp)
    example = _spawn("example", ["sandbox", "example-service",
                                 "--listen", f"tcp:{plan.ports['example']}:interface={lay.example}"],
                     env, logs / "example.log", d)
    started.append(example)
    _wait_for_line(ocsp, re.compile(r"^listening on http://"), timeout)
    _wait_for_line(example, re.compile(r"example service listening on "), timeout)

    say("tokens, keys and certificates (SoftHSM2, through the CLI)")
    provider_spec, consumer_spec = lay.gateways()
    trust, provider_token, consumer_token = _parallel(
        lambda: prepare_trust_token(d / "trust", pki),
        lambda: prepare_gateway_token(d / PROVIDER, provider_spec, pki, sign_key_type),
        lambda: prepare_gateway_token(d / CONSUMER, consumer_spec, pki, sign_key_type),
    )
    tokens = {PROVIDER: provider_token, CONSUMER: consumer_token}

    (d / "central").mkdir()
    federation = d / "central" / "federation.yaml"
    federation.write_text(yaml.safe_dump(_federation(plan, trust), allow_unicode=True, sort_keys=False))
    trust_config = d / "trust" / "tsa.yaml"
    trust_config.write_text(yaml.safe_dump(_trust_config(plan, trust), sort_keys=False))

    say("TSA and central")
    tsa = _spawn("tsa-1", ["tsa", "serve", "-c", str(trust_config), "--cert", str(d / "trust" / "tsa.pem"),
                           "--chain", str(pki / "intermediate.pem"), "--key-label", "tsa",
                           "--listen", f"tcp:{plan.ports['tsa']}:interface={lay.tsa}"],
                 trust.env, logs / "tsa-1.log", d)
    started.append(tsa)
    central = _spawn("central", ["central", "serve", "-c", str(federation)], trust.env, logs / "central.log", d)
    started.append(central)
    _wait_for_line(tsa, re.compile(r"^TSA listening on "), timeout)
    anchor_match = _wait_for_line(central, re.compile(r"^central listening on \S+ ; anchor (.+)$"), timeout)
    anchor = Path(anchor_match.group(1).strip())

    say("gateways")
    example_url = plan.url(lay.example, "example")
    configs: dict[str, Path] = {}
    for spec in lay.gateways():
        path = d / spec.name / "gateway.yaml"
        path.write_text(yaml.safe_dump(_gateway_config(plan, spec, tokens[spec.name], example_url),
                                       allow_unicode=True, sort_keys=False))
        configs[spec.name] = path
    def install_conf(name: str) -> None:
        cli(tokens[name].env, "conf", "import-anchor", "-c", str(configs[name]), str(anchor))
        cli(tokens[name].env, "conf", "download", "-c", str(configs[name]))

    _parallel(*(lambda name=name: install_conf(name) for name in configs))
    gateways: list[tuple[GatewaySpec, Started]] = []
    for spec in lay.gateways():
        proc = _spawn(spec.name, ["run", "-c", str(configs[spec.name])], tokens[spec.name].env,
                      logs / f"{spec.name}.log", d)
        started.append(proc)
        gateways.append((spec, proc))
    relay_expected = _relay_expected()
    entries = []
    for spec, proc in gateways:
        entry = _gateway_entry(plan, spec, proc)
        entry["listening"] = _wait_gateway(entry, proc, relay_expected, timeout)
        entry["relay_ready"] = all(entry["listening"][n] for n in RELAY_LISTENERS)
        entry["alive"] = True
        entries.append(entry)

    services = [
        {"id": f"{EXAMPLE_CLIENT}/echo", "type": "soap", "url": f"{example_url}soap", "provider_gateway": PROVIDER,
         "allowed_clients": [EDOC_CLIENT]},
        {"id": f"{EXAMPLE_CLIENT}/items", "type": "rest", "url": f"{example_url}items",
         "provider_gateway": PROVIDER, "allowed_clients": [EDOC_CLIENT]},
    ]
    data: dict[str, Any] = {
        "version": 1,
        "instance": INSTANCE,
        "dir": str(d),
        "addresses": lay.network,
        "central": {"url": plan.url(lay.central, "central"), "anchor": str(anchor), "pid": central.pid,
                    "federation": str(federation), "log": str(central.log), "alive": True},
        "ca": {"root": str(pki / "root.pem"), "intermediate": str(pki / "intermediate.pem"), "ocsp": ocsp_url,
               "ocsp_cert": str(pki / "ocsp.pem"), "dir": str(pki), "pid": ocsp.pid, "log": str(ocsp.log),
               "alive": True},
        "tsas": [{"name": "tsa-1", "url": plan.url(lay.tsa, "tsa"), "cert": str(d / "trust" / "tsa.pem"),
                  "pid": tsa.pid, "log": str(tsa.log), "alive": True}],
        "gateways": entries,
        "services": services,
        "clients": [{"id": EDOC_CLIENT, "gateway": CONSUMER}],
        "example": {"url": example_url, "soap": f"{example_url}soap", "rest": f"{example_url}items",
                    "pid": example.pid, "log": str(example.log), "alive": True},
        "processes": [p.record() for p in started],
    }
    _write_json(d / SANDBOX_FILE, data)
    (d / ".sandbox.lock").unlink(missing_ok=True)
    return data


# ---------------------------------------------------------------------------------------------
# status and down


def load(directory: Path) -> dict[str, Any]:
    path = directory.absolute() / SANDBOX_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SandboxError(f"no sandbox in {directory.absolute()} ({SANDBOX_FILE} not found)",
                           code="sandbox.not_found") from None
    except (OSError, ValueError) as exc:
        raise SandboxError(f"{path} cannot be read: {exc}", code="sandbox.unreadable") from None
    if data.get("version") != 1:
        raise SandboxError(f"{path}: unknown version {data.get('version')!r}", code="sandbox.unreadable")
    return data


def _started_of(data: dict[str, Any]) -> dict[int, str | None]:
    return {int(p["pid"]): p.get("started") for p in data.get("processes", [])}


def status(directory: Path) -> dict[str, Any]:
    """``sandbox.json`` with ``"alive"`` for every process: its PID runs (the very process ``up``
    started) and, where it serves HTTP, it answers.  Gateways also get ``"healthy"`` (health 200)."""
    data = load(directory)
    started = _started_of(data)

    def running(pid: object) -> bool:
        return isinstance(pid, int) and pid_alive(pid, started.get(pid))

    def answers(url: str) -> bool:
        return http_status(url) is not None

    for proc in data.get("processes", []):
        proc["alive"] = running(proc.get("pid"))
    central = data["central"]
    central["alive"] = running(central.get("pid")) and answers(central["url"].rstrip("/") + "/internalconf?version=6")
    ca = data["ca"]
    ca["alive"] = running(ca.get("pid")) and answers(ca["ocsp"])
    for tsa in data["tsas"]:
        tsa["alive"] = running(tsa.get("pid")) and answers(tsa["url"])
    example = data.get("example")
    if example is not None:
        example["alive"] = running(example.get("pid")) and answers(example["rest"])
    for gw in data["gateways"]:
        code = http_status(gw["health"]) if running(gw.get("pid")) else None
        gw["alive"] = code is not None
        gw["healthy"] = code == 200
        address = gw["address"]
        gw["listening"] = {name: tcp_open(address, int(gw[name].rsplit(":", 1)[1].strip("/").split("/")[0]))
                           for name in ("health", "metrics", *RELAY_LISTENERS)}
        gw["relay_ready"] = all(gw["listening"][n] for n in RELAY_LISTENERS)
    return data


def down(directory: Path, timeout: float = STOP_TIMEOUT) -> list[tuple[str, int, bool]]:
    """Stop every process of the sandbox (gateways first), by PID: SIGTERM, then SIGKILL after
    ``timeout``.  Returns ``(name, pid, was_running)``; the files stay; idempotent."""
    data = load(directory)
    procs = list(reversed(data.get("processes", [])))
    out = [(str(p["name"]), int(p["pid"]), pid_alive(int(p["pid"]), p.get("started"))) for p in procs]
    stop_processes([(int(p["pid"]), p.get("started")) for p in procs], timeout)
    still = [f"{p['name']} (pid {p['pid']})" for p in procs if pid_alive(int(p["pid"]), p.get("started"))]
    if still:
        raise SandboxError(f"still running after SIGKILL: {', '.join(still)}", code="sandbox.stop_failed")
    return out
