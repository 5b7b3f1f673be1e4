"""Throughput and latency of the relay, against the same backend called directly and through nginx.

Starts a sandbox on an address range of its own (``gateway.sandbox.up``), then, for each message
size, measures with a keep-alive load generator (asyncio, raw HTTP/1.1, one connection per client,
``--concurrency`` clients each sending its next message as soon as the last answer arrived):

* **direct**: the example service itself (the backend), plain HTTP;
* **gateways**: the consumer gateway's client port → mutual TLS → the provider gateway → the
  example service and back: the full pipeline, signed and verified both ways;
* **nginx**: two nginx processes (one worker each) in the gateways' places: plain HTTP → nginx →
  mutual TLS (``ssl_verify_client on``, the gateways' dev-PKI authentication certificates) → nginx
  → the example service, keep-alive upstreams (``bench/nginx-relay.conf.tmpl``): the upper bound
  for any relay with these two hops.

Added latency per hop = (path − direct) / 2, for p50 and p99, at ``--concurrency`` clients and
(``--latency-seconds``) at one client.  The peak RSS of each gateway (``VmHWM``) is read after each
size, smallest first, to show whether memory grows with message size.  Prints Markdown; exit 0.

    .venv/bin/python bench/bench_relay.py [--seconds 5] [--concurrency 16] [--sizes 1k,4k,64k,1m]
                                          [--attachment-from 1m] [--keep]

SOAP messages up to ``--attachment-from`` carry their payload as text inside the body element
(``<m:echo><text>…</text></m:echo>``, the whole envelope padded to the size); larger ones are SOAP
with attachments (``multipart/related``: a small envelope plus a binary attachment, the whole
request of the size).  The example service echoes both; a response counts when it is HTTP 200, an
``echoResponse`` and not a fault.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ipaddress
import os
import platform
import random
import re
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SOAP_HEAD, SOAP_MID, SOAP_TAIL, ignoring_signals, on_term  # noqa: E402

TEMPLATE = Path(__file__).resolve().parent / "nginx-relay.conf.tmpl"
SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}
ID_WIDTH = 16  # every request gets its own x:id of this width, so the message size stays fixed
REQUEST_TIMEOUT = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

BOUNDARY = "vdxpBenchBoundary0123456789"


# ---------------------------------------------------------------------------------------------
# Messages


@dataclass(frozen=True)
class Message:
    """A request of exactly ``size`` bytes: ``prefix + id + suffix`` (the id is ID_WIDTH bytes)."""

    size: int
    content_type: str
    prefix: bytes
    suffix: bytes
    form: str  # "body" or "attachment"

    def body(self, qid: bytes) -> bytes:
        return self.prefix + qid + self.suffix


def _filler(n: int, rng: random.Random) -> bytes:
    """``n`` bytes of base64 text (XML-safe, incompressible)."""
    raw = rng.randbytes(n * 3 // 4 + 3)
    return base64.b64encode(raw)[:n]


def make_message(size: int, attachment: bool, rng: random.Random) -> Message:
    head, mid, tail = SOAP_HEAD.encode(), SOAP_MID.encode(), SOAP_TAIL.encode()
    if not attachment:
        pad = size - len(head) - ID_WIDTH - len(mid) - len(tail)
        if pad < 1:
            raise SystemExit(f"--sizes: {size} bytes is smaller than the SOAP envelope ({size - pad + 1} bytes)")
        return Message(size, "text/xml; charset=utf-8", head, mid + _filler(pad, rng) + tail, "body")
    soap_start = (f"--{BOUNDARY}\r\nContent-Type: text/xml; charset=utf-8\r\n\r\n").encode() + head
    soap_end = mid + b"attachment doc1 follows" + tail
    att_head = (f"\r\n--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\nContent-ID: <doc1>\r\n"
                "Content-Transfer-Encoding: binary\r\n\r\n").encode()
    end = f"\r\n--{BOUNDARY}--\r\n".encode()
    pad = size - len(soap_start) - ID_WIDTH - len(soap_end) - len(att_head) - len(end)
    if pad < 1:
        raise SystemExit(f"--sizes: {size} bytes is too small for an attachment message")
    return Message(size, f'multipart/related; type="text/xml"; boundary="{BOUNDARY}"; start-info="text/xml"',
                   soap_start, soap_end + att_head + rng.randbytes(pad) + end, "attachment")


def response_ok(status: int, body: bytes) -> bool:
    head = body[:65536]
    return status == 200 and b"echoResponse" in head and b"faultcode" not in head


# ---------------------------------------------------------------------------------------------
# The load generator


@dataclass
class Target:
    name: str
    host: str
    port: int
    path: str

    @classmethod
    def of(cls, name: str, url: str) -> Target:
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or u.hostname is None or u.port is None:
            raise ValueError(f"{name}: not an http://HOST:PORT/ URL: {url}")
        return cls(name, u.hostname, u.port, u.path or "/")


@dataclass
class RowResult:
    path: str
    size: int
    concurrency: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # of the answers that arrived in the window
    errors: int = 0
    connections: int = 0
    first_error: str | None = None
    loadgen_cpu: float = 0.0  # share of one core used by the load generator during the window
    server_cpu_ms: float | None = None  # server-side CPU per message (ms), over the processes of the path
    other_cpu: float | None = None  # cores used by programs other than this bench and its processes
    skipped: str | None = None

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float | None:
        if not self.latencies:
            return None
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, max(0, round(q * len(xs)) - 1))] * 1000.0


class _Closed(Exception):
    pass


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 response: (status, body, the server keeps the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise _Closed(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    keep = headers.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            n = int(size_line.split(b";", 1)[0].strip(), 16)
            if n == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                break
            chunks.append(await reader.readexactly(n + 2))
        body = b"".join(c[:-2] for c in chunks)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
        keep = False
    return status, body, keep


async def _client(target: Target, msg: Message, wid: int, t_start: float, t_end: float, row: RowResult,
                  limit: int | None = None) -> None:
    head = (f"POST {target.path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\nContent-Type: {msg.content_type}"
            f"\r\nContent-Length: {msg.size}\r\nSOAPAction: \"\"\r\nUser-Agent: vdxp-bench\r\n\r\n").encode()
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    seq = 0
    try:
        while time.perf_counter() < t_end and (limit is None or seq < limit):
            if writer is None:
                reader, writer = await asyncio.open_connection(target.host, target.port, limit=1 << 20)
                writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                row.connections += 1
            assert reader is not None
            seq += 1
            qid = f"b{wid:04d}-{seq:010d}".encode()[:ID_WIDTH].ljust(ID_WIDTH, b"0")
            t0 = time.perf_counter()
            try:
                writer.write(head)
                writer.write(msg.prefix)
                writer.write(qid)
                writer.write(msg.suffix)
                status, body, keep = await asyncio.wait_for(_read_response(reader), REQUEST_TIMEOUT)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _Closed,
                    ValueError) as exc:
                row.errors += 1
                row.first_error = row.first_error or f"{type(exc).__name__}: {exc}"[:200]
                writer.close()
                writer = None
                continue
            t1 = time.perf_counter()
            if t_start <= t1 <= t_end:
                if response_ok(status, body):
                    row.latencies.append(t1 - t0)
                else:
                    row.errors += 1
                    row.first_error = row.first_error or f"HTTP {status}: {body[:300]!r}"
            if not keep:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        total += int(rest[11]) + int(rest[12])  # utime, stime
    return total / CLOCK_TICKS


def machine_busy() -> float:
    """CPU seconds the whole machine was busy since boot (all cores; /proc/stat without idle and iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def run_row(target: Target, msg: Message, concurrency: int, warmup: float, seconds: float,
            server_pids: list[int], our_pids: list[int]) -> RowResult:
    row = RowResult(target.name, msg.size, concurrency, seconds)

    async def main() -> None:
        now = time.perf_counter()
        t_start, t_end = now + warmup, now + warmup + seconds
        clients = [asyncio.create_task(_client(target, msg, i, t_start, t_end, row)) for i in range(concurrency)]
        await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
        own0, srv0, ours0, all0 = time.process_time(), cpu_seconds(server_pids), cpu_seconds(our_pids), machine_busy()
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        own1, srv1, ours1, all1 = time.process_time(), cpu_seconds(server_pids), cpu_seconds(our_pids), machine_busy()
        if all1 > all0:
            row.other_cpu = max(0.0, (all1 - all0) - (ours1 - ours0) - (own1 - own0)) / seconds
        row.loadgen_cpu = (own1 - own0) / seconds
        if server_pids:
            row.server_cpu_ms = (srv1 - srv0) * 1000.0 / max(1, row.ok)
        await asyncio.gather(*clients)

    asyncio.run(main())
    return row


def run_fixed(target: Target, msg: Message, concurrency: int) -> RowResult:
    """``concurrency`` clients sending one message each, all at once."""
    row = RowResult(target.name, msg.size, concurrency, 1)

    async def main() -> None:
        await asyncio.gather(*(_client(target, msg, i, 0.0, float("inf"), row, limit=1) for i in range(concurrency)))

    asyncio.run(main())
    return row


def probe(target: Target, msg: Message) -> str | None:
    """One request; None when it is answered as it should be, else what went wrong."""
    row = RowResult(target.name, msg.size, 1, 1)

    async def main() -> None:
        await _client(target, msg, 9999, 0.0, float("inf"), row, limit=1)

    try:
        asyncio.run(asyncio.wait_for(main(), REQUEST_TIMEOUT + 5))
    except (TimeoutError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return row.first_error if row.errors or not row.ok else None


# ---------------------------------------------------------------------------------------------
# Processes: sandbox, nginx


def status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def find_nginx() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx",
                                                     "/usr/local/nginx/sbin/nginx") if os.access(p, os.X_OK)), None)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"nginx exited ({proc.returncode}): {text.strip()[-300:]}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on {host}:{port} within {timeout:.0f} s")


class NginxPair:
    """front (consumer's address, plain HTTP) → mutual TLS → back (provider's address) → service."""

    def __init__(self, binary: str, sandbox: dict[str, Any], work: Path) -> None:
        self.binary = binary
        self.dir = work / "nginx"
        self.dir.mkdir()
        self.procs: list[subprocess.Popen[bytes]] = []
        gws = {g["name"]: g for g in sandbox["gateways"]}
        consumer, provider = gws["gw-consumer"], gws["gw-provider"]
        example = Target.of("example", sandbox["example"]["soap"])
        pki_bundle = self.dir / "dev-ca.pem"
        pki_bundle.write_bytes(Path(sandbox["ca"]["root"]).read_bytes() + Path(sandbox["ca"]["intermediate"])
                               .read_bytes())
        for g in (consumer, provider):  # leaf + intermediate, as the gateways present them
            (self.dir / f"{g['name']}-chain.pem").write_bytes(Path(g["tls"]["cert"]).read_bytes() +
                                                           Path(sandbox["ca"]["intermediate"]).read_bytes())
        self.front_host, self.back_host = consumer["address"], provider["address"]
        self.front_port, self.back_port = free_port(self.front_host), free_port(self.back_host)
        self.back_chain = self.dir / "gw-provider-chain.pem"
        self.ca_bundle = pki_bundle
        self.front_cert = (self.dir / "gw-consumer-chain.pem", Path(consumer["tls"]["key"]))
        user_line = "user root;" if os.geteuid() == 0 else ""
        tmpl = string.Template(TEMPLATE.read_text())
        back = tmpl.substitute(
            user_line=user_line, dir=self.dir, role="back", upstream=f"{example.host}:{example.port}",
            upstream_scheme="http", listen=f"listen {self.back_host}:{self.back_port} ssl;",
            server_tls=(f"ssl_certificate {self.back_chain};\n        ssl_certificate_key {provider['tls']['key']};\n"
                        f"        ssl_client_certificate {pki_bundle};\n        ssl_verify_client on;\n"
                        "        ssl_verify_depth 2;\n        ssl_protocols TLSv1.2 TLSv1.3;"),
            proxy_tls="")
        front = tmpl.substitute(
            user_line=user_line, dir=self.dir, role="front", upstream=f"{self.back_host}:{self.back_port}",
            upstream_scheme="https", listen=f"listen {self.front_host}:{self.front_port};", server_tls="",
            proxy_tls=(f"proxy_ssl_certificate {self.front_cert[0]};\n"
                       f"            proxy_ssl_certificate_key {self.front_cert[1]};\n"
                       f"            proxy_ssl_trusted_certificate {pki_bundle};\n"
                       "            proxy_ssl_verify on;\n            proxy_ssl_verify_depth 2;\n"
                       f"            proxy_ssl_name {self.back_host};\n            proxy_ssl_session_reuse on;\n"
                       "            proxy_ssl_protocols TLSv1.2 TLSv1.3;"))
        self.target = Target("nginx", self.front_host, self.front_port, example.path)
        for role, text, host, port in (("back", back, self.back_host, self.back_port),
                                       ("front", front, self.front_host, self.front_port)):
            conf = self.dir / f"{role}.conf"
            conf.write_text(text)
            log = self.dir / f"{role}-error.log"
            proc = subprocess.Popen([binary, "-p", str(self.dir), "-c", str(conf), "-e", str(log)],
                                    stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            self.procs.append(proc)
            wait_port(host, port, proc, log)

    def worker_pids(self) -> list[int]:
        return [c for p in self.procs for c in children_of(p.pid)]

    def all_pids(self) -> list[int]:
        return [*(p.pid for p in self.procs), *self.worker_pids()]

    def rejects_anonymous_client(self) -> bool:
        """Whether the back refuses a TLS client without a certificate (HTTP 400 or a handshake alert)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        ctx.check_hostname = False
        try:
            with socket.create_connection((self.back_host, self.back_port), timeout=5) as raw, \
                    ctx.wrap_socket(raw) as tls:
                tls.sendall(f"GET / HTTP/1.1\r\nHost: {self.back_host}\r\nConnection: close\r\n\r\n".encode())
                answer = tls.recv(200)
        except (ssl.SSLError, OSError):
            return True
        return answer.startswith(b"HTTP/1.1 400")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def pick_range(explicit: str | None) -> str:
    if explicit:
        return explicit
    rng = random.SystemRandom()
    for _ in range(50):
        net = ipaddress.ip_network(f"127.{rng.randint(100, 250)}.{rng.randint(0, 255)}.{rng.randrange(0, 256, 16)}/28")
        hosts = [str(h) for h in net.hosts()]
        try:
            for h in hosts[1:3]:
                for port in (5500, 5577):
                    with socket.socket() as s:
                        s.bind((h, port))
        except OSError:
            continue
        return str(net)
    raise SystemExit("no free 127.x.y.z/28 range found; pass --addresses")


# ---------------------------------------------------------------------------------------------
# Report


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{platform.machine()}, {os.cpu_count()} cores ({model}), Linux {platform.release()}"


def human(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size >> 10} KB"
    return f"{size} B"


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1k, 64k, 1m)")
    return int(m.group(1)) * SIZE_UNITS[m.group(2).lower()]


def parse_sizes(text: str) -> list[int]:
    return sorted({parse_size(t) for t in text.split(",") if t.strip()})


PATHS = ("direct", "gateways", "nginx")
PATH_LABEL = {"direct": "(a) direct to the service", "gateways": "(b) consumer gw → mTLS → provider gw",
              "nginx": "(c) nginx → mTLS → nginx"}


def per_hop(rows: dict[tuple[str, int], RowResult], path: str, size: int, q: float) -> str:
    a, b = rows.get(("direct", size)), rows.get((path, size))
    if a is None or b is None or a.pct(q) is None or b.pct(q) is None:
        return "-"
    return fmt((b.pct(q) - a.pct(q)) / 2, 2)  # type: ignore[operator]


@dataclass
class Report:
    args: argparse.Namespace
    sizes: list[int]
    messages: dict[int, Message]
    rows: dict[tuple[str, int], RowResult] = field(default_factory=dict)
    quiet_rows: dict[tuple[str, int], RowResult] = field(default_factory=dict)
    rss: list[tuple[str, dict[str, tuple[int | None, int | None]]]] = field(default_factory=list)
    nginx_note: str = ""
    probe_note: str = ""
    started_in: float = 0.0
    addresses: str = ""

    def render(self) -> str:
        a = self.args
        forms = ", ".join(f"{human(s)} {'in the body' if self.messages[s].form == 'body' else 'as an attachment'}"
                          for s in self.sizes)
        out = [
            "### Relay: throughput and added latency (bench/bench_relay.py)",
            "",
            f"- Machine: {machine()}; Python {platform.python_version()}, {ssl.OPENSSL_VERSION}; "
            "everything on this machine (load generator, example service, both gateways, central, CA/OCSP, TSA"
            + (", nginx" if any(p == "nginx" and not r.skipped for (p, _), r in self.rows.items()) else "") + ").",
            f"- Settings: {a.concurrency} concurrent clients, each on one keep-alive HTTP/1.1 connection (asyncio, "
            f"one process) sending its next message when the last answer arrived; warm-up {a.warmup:g} s, then "
            f"{a.seconds:g} s per row; sandbox on {self.addresses}, started in {self.started_in:.0f} s; member "
            f"signing keys {'EC P-256' if a.sign_key_type == 'ec' else 'RSA-2048'} on SoftHSM2; every message "
            "logged by both gateways (SQLite WAL, synchronous=FULL) and time-stamped every 2 s.",
            f"- Messages (SOAP 1.1 X-Road `echo`, whole request of the size, echoed back): {forms}.",
            f"- nginx: {self.nginx_note}",
            "",
            "| size | path | messages/s | p50 ms | p99 ms | errors | connections | server CPU ms/msg "
            "| load-gen CPU | other programs' CPU |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for size in self.sizes:
            for path in PATHS:
                r = self.rows.get((path, size))
                if r is None:
                    continue
                if r.skipped:
                    out.append(f"| {human(size)} | {PATH_LABEL[path]} | {r.skipped} | | | | | | | |")
                    continue
                out.append(f"| {human(size)} | {PATH_LABEL[path]} | {fmt(r.rate, 0)} | {fmt(r.pct(0.5), 2)} | "
                           f"{fmt(r.pct(0.99), 2)} | {r.errors} | {r.connections} | {fmt(r.server_cpu_ms, 2)} | "
                           f"{r.loadgen_cpu * 100:.0f} % | {fmt(r.other_cpu, 2)} cores |")
        out += [
            "",
            "Server CPU = CPU time of the processes serving the path (a: the service; b: both gateways and the "
            "service; c: both nginx workers and the service) over the messages answered; load-gen CPU = the load "
            "generator's share of one core (near 100 % it, not the server, limits the rate); other programs' "
            "CPU = what the machine spent outside this bench and its processes during the row (the machine is "
            "shared: anything above ~0.1 cores was taken from the processes measured).",
            "",
            "Added latency per hop, ms = (path − direct) / 2:",
            "",
        ]
        quiet = bool(self.quiet_rows)
        hdr = f"| size | gateways p50 @{a.concurrency} | gateways p99 @{a.concurrency} | nginx p50 @{a.concurrency} " \
              f"| nginx p99 @{a.concurrency} |"
        sep = "|---|---:|---:|---:|---:|"
        if quiet:
            hdr += " gateways p50 @1 | gateways p99 @1 | nginx p50 @1 | nginx p99 @1 |"
            sep += "---:|---:|---:|---:|"
        out += [hdr, sep]
        for size in self.sizes:
            line = (f"| {human(size)} | {per_hop(self.rows, 'gateways', size, 0.5)} | "
                    f"{per_hop(self.rows, 'gateways', size, 0.99)} | {per_hop(self.rows, 'nginx', size, 0.5)} | "
                    f"{per_hop(self.rows, 'nginx', size, 0.99)} |")
            if quiet:
                line += (f" {per_hop(self.quiet_rows, 'gateways', size, 0.5)} | "
                         f"{per_hop(self.quiet_rows, 'gateways', size, 0.99)} | "
                         f"{per_hop(self.quiet_rows, 'nginx', size, 0.5)} | "
                         f"{per_hop(self.quiet_rows, 'nginx', size, 0.99)} |")
            out.append(line)
        if quiet:
            out += ["", f"@{a.concurrency}: under the load above (closed loop: latency includes queueing); "
                    f"@1: one client alone, {a.latency_seconds:g} s per path and size (p50/p99 direct, gateways, "
                    "nginx, ms): " + "; ".join(
                        f"{human(s)} " + " / ".join(
                            f"{fmt(r.pct(0.5), 2)}/{fmt(r.pct(0.99), 2)}" if (r := self.quiet_rows.get((p, s)))
                            and not r.skipped else "-" for p in PATHS) for s in self.sizes) + "."]
        names = sorted({n for _, m in self.rss for n in m})
        out += ["", "Gateway memory (MiB): peak RSS (`VmHWM`, the kernel's high-water mark since the process "
                "started) / current RSS, read after each size's rows, smallest size first"
                + (f"; then {self.probe_note}" if self.probe_note else "") + ":", "",
                "| after | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for label, m in self.rss:
            cells = []
            for n in names:
                hwm, rss = m.get(n, (None, None))
                cells.append(f"{fmt(hwm / 1024 if hwm else None)} / {fmt(rss / 1024 if rss else None)}")
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each row (default 1)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent keep-alive clients (default 16)")
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("1k,4k,64k,1m"),
                   help="message sizes, comma-separated (default 1k,4k,64k,1m; k = 1024)")
    p.add_argument("--attachment-from", type=parse_size, default=parse_size("1m"),
                   help="sizes from this one up are sent as an attachment (SwA) (default 1m; 0: never)")
    p.add_argument("--latency-seconds", type=float, default=2.0,
                   help="seconds per path and size with one client, for unloaded latency (default 2; 0: skip)")
    p.add_argument("--memory-probe", type=parse_size, default=parse_size("16m"),
                   help="finally send --concurrency messages of this size at once through the gateways "
                        "(attachments) and read the peak RSS again (default 16m; 0: skip)")
    p.add_argument("--addresses", help="the sandbox's loopback range (default: a free random 127.x.y.z/28)")
    p.add_argument("--nginx", metavar="PATH", help="the nginx binary (default: nginx on PATH, or /usr/sbin/nginx)")
    p.add_argument("--no-nginx", action="store_true", help="skip the nginx rows")
    p.add_argument("--sign-key-type", choices=("rsa", "ec"), default="rsa",
                   help="the gateways' member signing keys: rsa (RSA-2048, default) or ec (P-256)")
    p.add_argument("--keep", action="store_true", help="leave the sandbox (and nginx) running; print where")
    args = p.parse_args(argv)
    if args.concurrency < 1 or args.seconds <= 0:
        p.error("--concurrency and --seconds must be positive")

    from gateway import sandbox as sb

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (`cmd &`)
    rng = random.Random(42)
    messages = {s: make_message(s, bool(args.attachment_from) and s >= args.attachment_from, rng) for s in args.sizes}
    report = Report(args, args.sizes, messages)
    work = Path(tempfile.mkdtemp(prefix="vdxp-bench-relay-"))
    sandbox_dir = work / "sandbox"
    completed = False
    nginx: NginxPair | None = None
    try:
        report.addresses = pick_range(args.addresses)
        log(f"sandbox up {sandbox_dir} --addresses {report.addresses}")
        t0 = time.monotonic()
        data = sb.up(sandbox_dir, report.addresses, sign_key_type=args.sign_key_type)
        report.started_in = time.monotonic() - t0
        gws = {g["name"]: g for g in data["gateways"]}
        gw_pids = {n: int(g["pid"]) for n, g in gws.items()}
        example_pid = int(data["example"]["pid"])
        targets = {"direct": Target.of("direct", data["example"]["soap"]),
                   "gateways": Target.of("gateways", gws["gw-consumer"]["client_http"])}
        sandbox_pids = [int(pr["pid"]) for pr in data["processes"]]
        server_pids: dict[str, Callable[[], list[int]]] = {
            "direct": lambda: [example_pid], "gateways": lambda: [*gw_pids.values(), example_pid]}

        binary = None if args.no_nginx else (args.nginx if args.nginx and os.access(args.nginx, os.X_OK)
                                              else None if args.nginx else find_nginx())
        if args.no_nginx:
            report.nginx_note = "skipped (--no-nginx)."
        elif binary is None:
            report.nginx_note = ("**not installed** (" + (f"no executable {args.nginx}" if args.nginx else
                                                          "no `nginx` on PATH or in /usr/sbin")
                                 + "); the nginx rows are empty. "
                                 "Install: `apt-get install -y --no-install-recommends nginx-light`.")
        else:
            version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
            try:
                nginx = NginxPair(binary, data, work)
                targets["nginx"] = nginx.target
                pair = nginx
                server_pids["nginx"] = lambda: [*pair.worker_pids(), example_pid]
                refused = "refuses" if nginx.rejects_anonymous_client() else "**does not refuse**"
                report.nginx_note = (f"{version.removeprefix('nginx version: ')}, two instances of one worker each; "
                                     f"front on the consumer's address ({nginx.front_host}), back on the provider's "
                                     f"({nginx.back_host}) with the gateways' authentication certificates; the back "
                                     f"{refused} a TLS client without a certificate.")
            except (RuntimeError, OSError) as exc:
                report.nginx_note = f"{version}: failed to start ({exc}); the nginx rows are empty."
                if nginx is not None:
                    nginx.stop()
                nginx = None

        for name, target in targets.items():
            problem = probe(target, messages[args.sizes[0]])
            if problem:
                log(f"{name}: the first request failed: {problem}")
        report.rss.append(("start (idle)", {n: (status_kib(pid, "VmHWM"), status_kib(pid, "VmRSS"))
                                            for n, pid in gw_pids.items()}))
        for size in args.sizes:
            msg = messages[size]
            for path in PATHS:
                if path not in targets:
                    if path == "nginx" and not args.no_nginx:
                        report.rows[(path, size)] = RowResult(path, size, args.concurrency, args.seconds,
                                                              skipped="nginx not available")
                    continue
                problem = probe(targets[path], msg)
                if problem:
                    log(f"{path} {human(size)}: {problem}")
                    report.rows[(path, size)] = RowResult(path, size, args.concurrency, args.seconds,
                                                          skipped=f"failed: {problem[:120]}")
                    continue
                ours = [*sandbox_pids, *(nginx.all_pids() if nginx else [])]
                row = run_row(targets[path], msg, args.concurrency, args.warmup, args.seconds, server_pids[path](),
                              ours)
                report.rows[(path, size)] = row
                log(f"{path:8} {human(size):>6} @{args.concurrency}: {row.rate:8.1f}/s p50 {fmt(row.pct(0.5), 2)} "
                    f"p99 {fmt(row.pct(0.99), 2)} ms errors {row.errors} connections {row.connections}")
                if args.latency_seconds > 0:
                    quiet = run_row(targets[path], msg, 1, min(args.warmup, 0.5), args.latency_seconds,
                                    server_pids[path](), ours)
                    report.quiet_rows[(path, size)] = quiet
                    log(f"{path:8} {human(size):>6} @1: {quiet.rate:8.1f}/s p50 {fmt(quiet.pct(0.5), 2)} "
                        f"p99 {fmt(quiet.pct(0.99), 2)} ms errors {quiet.errors}")
            report.rss.append((human(size), {n: (status_kib(pid, "VmHWM"), status_kib(pid, "VmRSS"))
                                             for n, pid in gw_pids.items()}))
        if args.memory_probe:
            big = make_message(args.memory_probe, True, rng)
            t1 = time.monotonic()
            probe_row = run_fixed(targets["gateways"], big, args.concurrency)
            took = time.monotonic() - t1
            label = f"{human(big.size)} probe"
            report.probe_note = (f"“{label}”: {args.concurrency} messages of {human(big.size)} (attachments) sent at "
                                 f"once through the gateways, {probe_row.ok} answered, {probe_row.errors} errors, "
                                 f"in {took:.1f} s")
            log(report.probe_note)
            report.rss.append((label, {n: (status_kib(pid, "VmHWM"), status_kib(pid, "VmRSS"))
                                       for n, pid in gw_pids.items()}))
        print(report.render(), end="")
        if args.keep:
            print(f"\nSandbox left running: {sandbox_dir} (`vdxp-gateway sandbox down {sandbox_dir}`)"
                  + (f"; nginx PIDs {[pr.pid for pr in nginx.procs]} (conf in {nginx.dir})" if nginx else ""))
        completed = True
        return 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        with ignoring_signals():
            if not (args.keep and completed):
                if nginx is not None:
                    nginx.stop()
                if (sandbox_dir / sb.SANDBOX_FILE).exists():
                    try:
                        sb.down(sandbox_dir)
                    except Exception as exc:  # report it and go on cleaning
                        log(f"sandbox down failed: {exc}")
                shutil.rmtree(work, ignore_errors=True)




if __name__ == "__main__":
    sys.exit(main())
