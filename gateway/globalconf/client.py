"""The configuration client: download, verify and install the federation's global configuration.

Every ``interval`` seconds (exponential back-off after failures, up to
``max_backoff``) the client asks the anchor's sources, HTTPS first, for the signed
directory (``<downloadURL>?version=6``), verifies its signature against the anchor's
certificates and its expiry against the injected clock, downloads the files it lists,
checks each hash and schema, and installs them atomically in X-Road's on-disk layout.
A bad download never replaces the last good configuration.

Once the installed configuration has expired, :meth:`ConfClient.check_valid` raises
:class:`GlobalConfOutdated` (X-Road's ``OutdatedGlobalConf``) and the health check
fails; both recover by themselves when a valid directory arrives.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Counter, Gauge
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gateway.config import GlobalConfConfig
from hsm.http import HttpFetchError, fetch
from protocols.errors import VdxpError

DIRECTORY_MAX_BYTES = 8 << 20
FILE_MAX_BYTES = 64 << 20
# The files a security server needs from its own instance's internal configuration.
WANTED = {"SHARED-PARAMETERS": "shared-params.xml", "PRIVATE-PARAMETERS": "private-params.xml"}


class GlobalConfOutdated(VdxpError):
    """No valid global configuration: refuse traffic (X-Road's OutdatedGlobalConf)."""

    code = "gconf.outdated"
    xroad_code = "OutdatedGlobalConf"


@dataclass
class Status:
    source: str | None = None
    version: int | None = None
    expires: str | None = None
    last_attempt: str | None = None
    last_success: str | None = None
    last_change: str | None = None
    last_error: str | None = None
    consecutive_failures: int = 0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def status_path(directory: Path) -> Path:
    return directory.with_name(directory.name + ".status.json")


class ConfMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.downloads = Counter("vdxp_globalconf_downloads", "Global configuration download attempts by result code.",
                                 ["result"], registry=registry)
        self.expires = Gauge("vdxp_globalconf_expiry_timestamp_seconds",
                             "Unix time at which the installed global configuration expires.", registry=registry)
        self.valid = Gauge("vdxp_globalconf_valid", "1 while the installed global configuration is valid.",
                           registry=registry)
        self.installs = Counter("vdxp_globalconf_installs", "New global configurations installed.",
                                registry=registry)


def _source_order(urls: list[str]) -> list[str]:
    """HTTPS sources first (X-Road prefers them), each group in random order."""
    https = [u for u in urls if u.lower().startswith("https:")]
    http = [u for u in urls if not u.lower().startswith("https:")]
    random.shuffle(https)
    random.shuffle(http)
    return https + http


def _file_url(source_url: str, content_location: str) -> str:
    parts = urlsplit(source_url)
    path, _, query = content_location.partition("?")
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def make_http_client(reactor: Any, ca_bundle: Path | None) -> Any:
    """A treq client whose HTTPS verifies servers against ``ca_bundle`` (or the system store)."""
    from treq.client import HTTPClient
    from twisted.internet import ssl
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

    if ca_bundle is not None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        certs = x509.load_pem_x509_certificates(ca_bundle.read_bytes())
        trust = ssl.trustRootFromCertificates(  # type: ignore[no-untyped-call]
            [ssl.Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM)) for c in certs])
    else:
        trust = ssl.platformTrust()  # type: ignore[no-untyped-call]
    agent: Any = Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust))  # type: ignore[no-untyped-call]
    return HTTPClient(agent)


class ConfClient(Service):
    log = Logger()

    def __init__(self, reactor: Any, settings: GlobalConfConfig, registry: CollectorRegistry,
                 *, http: Any = None, own_instance: str | None = None) -> None:
        self._reactor = reactor
        self.settings = settings
        self.metrics = _metrics(registry)
        self._http = http
        self.own_instance = own_instance
        self.installed: Any = None  # gateway.globalconf.disk.InstalledConf
        self.status = Status()
        self._call: Any = None
        self._delay = settings.interval_seconds
        self._polling: Deferred[bool] | None = None

    # -- life cycle ------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self._http is None:
            self._http = make_http_client(self._reactor, self.settings.ca_bundle)
        self._load_installed()
        self._load_status()
        self._schedule(0)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def whenStarted(self) -> Deferred[bool]:
        """The first download attempt (the daemon waits for it before READY=1)."""
        return self._polling if self._polling is not None else self.poll()

    def _schedule(self, delay: float) -> None:
        if not self.running:
            return
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self._reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None
        d = self.poll()
        d.addBoth(lambda ok: self._schedule(self._delay))

    # -- validity --------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._reactor.seconds(), UTC)

    def check_valid(self) -> Any:
        """The installed configuration, or :class:`GlobalConfOutdated` if there is none valid."""
        conf = self.installed
        if conf is None:
            self.metrics.valid.set(0)
            raise GlobalConfOutdated("no global configuration installed (import an anchor and let the client "
                                     "download)")
        if conf.expires is not None and conf.expires <= self._now():
            self.metrics.valid.set(0)
            raise GlobalConfOutdated(f"global configuration of {conf.own_instance} expired at "
                                     f"{conf.expires.isoformat()}")
        self.metrics.valid.set(1)
        return conf

    def health(self) -> tuple[bool, str]:
        try:
            conf = self.check_valid()
        except GlobalConfOutdated as exc:
            return False, str(exc)
        return True, f"valid until {conf.expires.isoformat() if conf.expires else '?'}"

    # -- one download round ----------------------------------------------------------------

    def poll(self) -> Deferred[bool]:
        if self._polling is not None:
            return self._polling
        d = Deferred.fromCoroutine(self._poll())

        def done(result: Any) -> Any:
            self._polling = None
            return result

        d.addBoth(done)
        if not d.called:
            self._polling = d
        return d

    async def _poll(self) -> bool:
        from protocols.gconf.anchor import parse_anchor

        now_ts = self._reactor.seconds()
        self.status.last_attempt = _iso(now_ts)
        try:
            anchor = parse_anchor(self.settings.anchor.read_bytes())
        except OSError as exc:
            return self._failed("gconf.anchor_missing", f"configuration anchor {self.settings.anchor}: "
                                f"{exc.strerror}")
        except VdxpError as exc:
            return self._failed(exc.code, f"configuration anchor {self.settings.anchor}: {exc.message}")
        if self.own_instance is not None and anchor.instance != self.own_instance:
            return self._failed("gconf.anchor_instance", f"anchor is for instance {anchor.instance}, this server "
                                f"belongs to {self.own_instance}")
        errors = []
        by_url = {s.download_url: s for s in anchor.sources}
        for url in _source_order(list(by_url)):
            try:
                changed = await self._download(url, by_url[url].verification_certs, anchor.instance)
            except VdxpError as exc:
                errors.append(f"{url}: {exc}")
                self.metrics.downloads.labels(result=exc.code).inc()
                self.log.warn("Global configuration from {url} rejected: {error}", url=url, error=str(exc),
                              code=exc.code)
                continue
            self.metrics.downloads.labels(result="ok").inc()
            self.status.source = url
            self.status.last_success = _iso(self._reactor.seconds())
            self.status.last_error = None
            self.status.consecutive_failures = 0
            self._delay = self.settings.interval_seconds
            if changed:
                self.status.last_change = self.status.last_success
            self._save_status()
            self.check_valid_quietly()
            return True
        return self._failed("gconf.download_failed", "; ".join(errors) or "the anchor lists no sources")

    def check_valid_quietly(self) -> None:
        try:
            self.check_valid()
        except GlobalConfOutdated:
            pass

    def _failed(self, code: str, message: str) -> bool:
        self.status.last_error = f"{code}: {message}"
        self.status.consecutive_failures += 1
        self._delay = min(self.settings.interval_seconds * (2 ** self.status.consecutive_failures),
                          self.settings.max_backoff_seconds)
        self._save_status()
        self.metrics.downloads.labels(result=code).inc()
        self.check_valid_quietly()
        self.log.error("Global configuration download failed: {error}; next attempt in {delay:g} s",
                       error=self.status.last_error, code=code, delay=self._delay)
        return False

    async def _get(self, url: str, max_bytes: int) -> Any:
        try:
            return await fetch(self._http, self._reactor, "GET", url, timeout=self.settings.timeout_seconds,
                               max_bytes=max_bytes)
        except HttpFetchError as exc:
            raise VdxpError(str(exc), code=f"gconf.{exc.kind}") from None

    async def _download(self, url: str, certs: Any, instance: str) -> bool:
        from gateway.globalconf.disk import InstallFile, install_conf
        from protocols.gconf.directory import check_entry, parse_directory, verify_directory
        from protocols.gconf.params import parse_private_params, parse_shared_params

        sep = "&" if "?" in url else "?"
        answer = await self._get(f"{url}{sep}version={self.settings.version}", DIRECTORY_MAX_BYTES)
        directory = parse_directory(answer.body, answer.content_type_raw)
        verify_directory(directory, certs, self._now())
        current = self._current_hashes()
        files: list[Any] = []
        wanted = [e for e in directory.entries if e.content_identifier in WANTED
                  and (e.instance in (None, instance))]
        if not any(e.content_identifier == "SHARED-PARAMETERS" for e in wanted):
            raise VdxpError(f"directory from {url} has no SHARED-PARAMETERS for {instance}",
                            code="gconf.incomplete")
        for entry in wanted:
            name = f"{instance}/{WANTED[entry.content_identifier]}"
            got = await self._get(_file_url(url, entry.content_location), FILE_MAX_BYTES)
            check_entry(entry, got.body)
            if entry.content_identifier == "SHARED-PARAMETERS":
                parse_shared_params(got.body, directory.version)
            else:
                parse_private_params(got.body, directory.version)
            metadata = {"contentIdentifier": entry.content_identifier, "instanceIdentifier": instance,
                        "expirationDate": directory.expire_date.isoformat().replace("+00:00", "Z"),
                        "configurationVersion": str(directory.version)}
            files.append(InstallFile(name, got.body, metadata))
        new_hashes = {f.path: f.data for f in files}
        self.status.version = directory.version
        self.status.expires = directory.expire_date.isoformat().replace("+00:00", "Z")
        if new_hashes == current and self.installed is not None:
            # Same files: only the expiry moves on.
            install_conf(self.settings.directory, own_instance=instance, files=files,
                         expires=directory.expire_date)
            self._load_installed()
            return False
        install_conf(self.settings.directory, own_instance=instance, files=files, expires=directory.expire_date)
        self._load_installed()
        self.metrics.installs.inc()
        conf = self.installed
        self.log.info("Installed global configuration of {instance} (version {version}, expires {expires}): "
                      "{members} members, {servers} security servers",
                      instance=instance, version=directory.version, expires=self.status.expires,
                      members=len(conf.shared[instance].members) if conf else 0,
                      servers=len(conf.shared[instance].servers) if conf else 0)
        return True

    def _current_hashes(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        conf = self.installed
        if conf is None:
            return out
        for rel in conf.files:
            try:
                out[rel] = (self.settings.directory / rel).read_bytes()
            except OSError:
                return {}
        return out

    # -- persistence -----------------------------------------------------------------------

    def _load_installed(self) -> None:
        from gateway.globalconf.disk import read_conf_dir

        if not (self.settings.directory / "instance-identifier").exists():
            self.installed = None
            return
        try:
            self.installed = read_conf_dir(self.settings.directory)
        except VdxpError as exc:
            self.log.error("Installed global configuration in {dir} is unusable: {error}",
                           dir=str(self.settings.directory), error=str(exc), code=exc.code)
            self.installed = None
            return
        if self.installed.expires is not None:
            self.metrics.expires.set(self.installed.expires.timestamp())

    def _load_status(self) -> None:
        try:
            data = json.loads(status_path(self.settings.directory).read_text())
            self.status = Status(**{k: v for k, v in data.items() if k in Status.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            pass

    def _save_status(self) -> None:
        path = status_path(self.settings.directory)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.status.__dict__, indent=2))
            os.replace(tmp, path)
        except OSError as exc:
            self.log.warn("Cannot write {path}: {error}", path=str(path), error=exc.strerror)


_metrics_by_registry: dict[int, ConfMetrics] = {}


def _metrics(registry: CollectorRegistry) -> ConfMetrics:
    key = id(registry)
    if key not in _metrics_by_registry:
        _metrics_by_registry[key] = ConfMetrics(registry)
    return _metrics_by_registry[key]
