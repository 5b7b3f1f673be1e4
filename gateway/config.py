# -*- test-case-name: tests.test_config -*-
"""The gateway configuration: YAML, validated completely, into frozen objects.

:func:`load_config` reads one YAML file and returns a :class:`GatewayConfig`, or raises
:class:`ConfigError` listing **every** problem found, each as ``(key_path, message)``
with paths such as ``tokens[0].pin`` or ``members[2].sign_key.token``.  The schema is
documented key by key in ``conf/README.md``.

Validation happens in two layers:

1. each section (and each list item) is checked against a strict, frozen pydantic
   model (``extra="forbid"``), so one bad token does not hide problems elsewhere;
2. cross-references and the outside world are then checked: token ids referenced by
   keys, member ids against ``server.instance``, PIN sources
   (:meth:`hsm.config.PinSource.problem`), listener endpoint strings (parsed with
   ``serverFromString`` against a memory reactor), TSA certificate files.

The result is made of frozen dataclasses (and the hsm-side :class:`~hsm.config.TokenSpec`,
:class:`~hsm.config.PinSource`, :class:`~hsm.config.KeyRef`); nothing downstream sees a
raw dict.  The configuration never holds a secret: PINs and passwords are *sources*
(file, environment variable, systemd credential), read only when used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from hsm.config import KeyRef, PinSource, TokenSpec
from protocols.errors import UsageError

__all__ = [
    "DEFAULT_HEALTH_ENDPOINT",
    "DEFAULT_METRICS_ENDPOINT",
    "DEFAULT_STATE_DIR",
    "RELOADABLE_SECTIONS",
    "SECTIONS",
    "AccessRule",
    "ClientConfig",
    "ConfigError",
    "DatabaseConfig",
    "EndpointRule",
    "FaultsConfig",
    "GatewayConfig",
    "GlobalConfConfig",
    "HealthConfig",
    "ListenersConfig",
    "LoggingConfig",
    "MemberConfig",
    "MessageLogConfig",
    "OcspConfig",
    "Problem",
    "RelayConfig",
    "ServerConfig",
    "ServiceConfig",
    "TlsConfig",
    "TsaConfig",
    "changed_sections",
    "format_path",
    "load_config",
    "parse_config",
    "parse_duration",
]

DEFAULT_STATE_DIR = Path("/var/lib/vdxp-gateway")
DEFAULT_HEALTH_ENDPOINT = "tcp:5588:interface=127.0.0.1"
DEFAULT_METRICS_ENDPOINT = "tcp:9465:interface=127.0.0.1"
# X-Road's three TLS 1.2 suites (needed to talk to Java X-Road servers) and the ECDHE AES-GCM suites.
DEFAULT_TLS_CIPHERS = (
    "ECDHE-RSA-AES256-SHA384:DHE-RSA-AES256-SHA256:ECDHE-ECDSA-AES256-SHA384:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
)

# Top-level sections, in the order they are documented and reported.
SECTIONS = (
    "server",
    "tokens",
    "auth_key",
    "members",
    "tsa",
    "ocsp",
    "listeners",
    "database",
    "logging",
    "faults",
    "health",
    "globalconf",
    "relay",
    "clients",
    "message_log",
)
# Sections the daemon itself applies on SIGHUP; components may declare more.
RELOADABLE_SECTIONS = frozenset({"logging", "listeners", "health"})

Problem = tuple[str, str]
"""``(key_path, message)``, e.g. ``("tokens[0].pin", "file /etc/pin is readable by others ...")``."""


class ConfigError(UsageError):
    """The configuration file is missing, unreadable or invalid (CLI exit code 2).

    ``problems`` lists every problem as ``(key_path, message)``; ``str()`` is a single
    line naming the first one and how many more there are.
    """

    code = "config.invalid"

    def __init__(self, problems: Sequence[Problem], *, source: Path | None = None, code: str | None = None):
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.source = source
        first_path, first_message = self.problems[0] if self.problems else ("", "invalid configuration")
        first = f"{first_path}: {first_message}" if first_path else first_message
        more = len(self.problems) - 1
        where = f"{source}: " if source is not None else ""
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
        super().__init__(f"{where}{first}{suffix}", code=code)

    def lines(self) -> list[str]:
        """One ``<key path>: <message>`` line per problem."""
        return [f"{path}: {message}" if path else message for path, message in self.problems]


# ---------------------------------------------------------------------------
# Helpers: durations, paths, identifiers


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from ``60``, ``1.5``, ``"500ms"``, ``"60s"``, ``"5m"``, ``"1h"`` or ``"1d"``.

    Raises :class:`ValueError` with a readable sentence for anything else (booleans,
    negative numbers, unknown units).
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 60s, 5m or 1h, not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"expected a duration such as 60s, 5m or 1h, not {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"expected a duration such as 60s, 5m or 1h, not {value!r}")
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"expected a non-negative duration, not {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

# X-Road identifier characters (PR-MESS Annex A, strict identifier checks).
_IDENT = r"[A-Za-z0-9'()+,\-.=?]+"
_IDENT_RE = re.compile(rf"^{_IDENT}$")
_MEMBER_RE = re.compile(rf"^({_IDENT})/({_IDENT})/({_IDENT})$")
_TOKEN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HEX_RE = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _identifier(value: str) -> str:
    if not _IDENT_RE.match(value):
        raise ValueError(f"{value!r} is not an X-Road identifier (letters, digits and '()+,-.=? only)")
    return value


def _member_id(value: str) -> str:
    if not _MEMBER_RE.match(value):
        raise ValueError(f"{value!r} is not a member id INSTANCE/CLASS/CODE (letters, digits and '()+,-.=? only)")
    return value


def _subsystem_id(value: str) -> str:
    member, _slash, subsystem = value.rpartition("/")
    if not member or not _MEMBER_RE.match(member) or not _IDENT_RE.match(subsystem):
        raise ValueError(f"{value!r} is not a subsystem id INSTANCE/CLASS/CODE/SUBSYSTEM")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def format_path(loc: Iterable[str | int]) -> str:
    """``("tokens", 0, "pin")`` → ``tokens[0].pin``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# ---------------------------------------------------------------------------
# Raw models: the YAML shape, strict and frozen.  Cross-checks come later.


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


Identifier = Annotated[str, AfterValidator(_identifier)]
MemberId = Annotated[str, AfterValidator(_member_id)]
SubsystemId = Annotated[str, AfterValidator(_subsystem_id)]


class _Server(_Model):
    instance: Identifier
    owner: MemberId
    server_code: Identifier
    mode: Literal["dedicated", "shared", "axis"]
    state_dir: str = str(DEFAULT_STATE_DIR)


class _Secret(_Model):
    """Exactly one of file / env / credential."""

    file: str | None = None
    env: str | None = None
    credential: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> _Secret:
        given = [k for k in ("file", "env", "credential") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of file, env or credential")
        if self.env is not None and not _ENV_RE.match(self.env):
            raise ValueError(f"env: {self.env!r} is not an environment variable name")
        if self.credential is not None and ("/" in self.credential or self.credential in ("", ".", "..")):
            raise ValueError(f"credential: {self.credential!r} is not a systemd credential name")
        return self


class _Token(_Model):
    id: str
    module: str | None = None
    label: str | None = None
    serial: str | None = None
    pin: _Secret
    sign_mechanism: Literal["auto", "rsa-pkcs1", "rsa-pss", "ecdsa"] = "auto"
    batch_signing: bool = True
    timeout: Duration = 10.0

    @model_validator(mode="after")
    def _check(self) -> _Token:
        if not _TOKEN_ID_RE.match(self.id):
            raise ValueError(f"id: {self.id!r} must be letters, digits, '_', '.' or '-'")
        if self.label is None and self.serial is None:
            raise ValueError("give label or serial to choose the token")
        if self.timeout <= 0:
            raise ValueError("timeout: must be greater than zero")
        return self


class _KeyRef(_Model):
    token: str
    key_id: str | None = None
    label: str | None = None

    @model_validator(mode="after")
    def _check(self) -> _KeyRef:
        if self.key_id is None and self.label is None:
            raise ValueError("give key_id (hex CKA_ID) or label (CKA_LABEL)")
        if self.key_id is not None and not _HEX_RE.match(self.key_id):
            raise ValueError(f"key_id: {self.key_id!r} is not hex (an even number of 0-9a-f digits)")
        return self


class _Member(_Model):
    id: MemberId
    name: Annotated[str, AfterValidator(_not_blank)]
    subsystems: list[Identifier] = []  # pydantic copies mutable defaults
    sign_key: _KeyRef


class _Tsa(_Model):
    name: str
    url: str
    cert: str


class _Ocsp(_Model):
    freshness: Duration = 3600.0
    fetch_interval: Duration = 1200.0


class _Listeners(_Model):
    health: str | None = DEFAULT_HEALTH_ENDPOINT
    metrics: str | None = DEFAULT_METRICS_ENDPOINT


class _Database(_Model):
    url: str | None = None
    password: _Secret | None = None


class _Logging(_Model):
    format: Literal["auto", "json", "text"] = "auto"
    level: Literal["debug", "info", "warn", "error", "critical"] = "info"


class _Faults(_Model):
    dialect: Literal["camel", "snake"] = "camel"


class _MessageLog(_Model):
    enabled: bool = True
    body_logging: bool = True
    body_logging_exceptions: list[SubsystemId] = []
    max_loggable_body_bytes: int = Field(default=10 * 1024 * 1024, ge=0)
    oversize: Literal["reject", "truncate"] = "reject"
    synchronous: Literal["full", "normal"] = "full"
    timeout: Duration = 10.0
    timestamp_interval: Duration | None = None
    timestamp_failure_period: Duration = 14400.0
    timestamp_records_limit: int = Field(default=10000, ge=1, le=100000)
    tsa_timeout: Duration = 10.0
    timestamp_immediately: bool = False
    archive_dir: str | None = None
    archive_interval: Duration = 6 * 3600.0
    archive_grouping: Literal["none", "member", "subsystem"] = "none"
    archive_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1024 * 1024)
    archive_encryption_keys: dict[str, str] = {}
    keep_records_for: Duration = 30 * 86400.0


class _GlobalConf(_Model):
    enabled: bool = True
    anchor: str | None = None
    directory: str | None = None
    interval: Duration = 60.0
    timeout: Duration = 30.0
    max_backoff: Duration = 600.0
    ca_bundle: str | None = None
    version: Literal[6] = 6


class _Tls(_Model):
    key: str | None = None
    cert: str | None = None
    chain: list[str] = []
    ciphers: str = DEFAULT_TLS_CIPHERS
    tls13: bool = True


class _Relay(_Model):
    enabled: bool = True
    client_http: str | None = "tcp:8080:interface=127.0.0.1"
    client_https: str | None = None
    server: str | None = "tcp:5500"
    ocsp: str | None = "tcp:5577"
    server_port: int = 5500
    ocsp_port: int = 5577
    tls: _Tls = _Tls()
    connect_timeout: Duration = 10.0
    service_timeout: Duration = 60.0
    max_message_bytes: int = 1 << 30


class _Endpoint(_Model):
    method: str = "*"
    path: str = "**"


class _Service(_Model):
    code: Identifier
    version: str | None = None
    type: Literal["soap", "rest"] = "soap"
    url: str
    timeout: Duration | None = None
    verify_tls: bool = True
    ca_bundle: str | None = None
    disabled: bool = False
    notice: str = ""
    endpoints: list[_Endpoint] = []


class _Access(_Model):
    subject: str
    services: list[str] = ["*"]
    endpoints: list[_Endpoint] = []


class _Client(_Model):
    id: str
    connection: Literal["http", "https", "https-auth"] = "http"
    is_certs: list[str] = []
    services: list[_Service] = []
    local_groups: dict[str, list[str]] = {}
    access: list[_Access] = []


class _Health(_Model):
    ok_cache: Duration = 2.0
    failure_cache: Duration = 30.0
    check_timeout: Duration = 5.0


# ---------------------------------------------------------------------------
# Frozen results


@dataclass(frozen=True)
class ServerConfig:
    instance: str
    owner: str
    server_code: str
    mode: Literal["dedicated", "shared", "axis"]
    state_dir: Path

    @property
    def server_id(self) -> str:
        """``INSTANCE/CLASS/CODE/SERVERCODE``."""
        return f"{self.owner}/{self.server_code}"


@dataclass(frozen=True)
class MemberConfig:
    id: str
    name: str
    subsystems: tuple[str, ...]
    sign_key: KeyRef

    @property
    def member_class(self) -> str:
        return self.id.split("/")[1]

    @property
    def member_code(self) -> str:
        return self.id.split("/")[2]


@dataclass(frozen=True)
class TsaConfig:
    name: str
    url: str
    cert: Path


@dataclass(frozen=True)
class OcspConfig:
    freshness_seconds: float = 3600.0
    fetch_interval_seconds: float = 1200.0


@dataclass(frozen=True)
class ListenersConfig:
    """Twisted server endpoint strings; ``None`` disables a listener."""

    health: str | None = DEFAULT_HEALTH_ENDPOINT
    metrics: str | None = DEFAULT_METRICS_ENDPOINT

    def items(self) -> list[tuple[str, str]]:
        """``(name, endpoint)`` of every enabled listener."""
        return [(name, value) for name, value in (("health", self.health), ("metrics", self.metrics)) if value]


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the message log, outbox/inbox and mailboxes live.

    ``kind`` is ``sqlite`` (``path`` set) or ``postgresql`` (``url`` without a password;
    ``password`` is a source, read when connecting).
    """

    kind: Literal["sqlite", "postgresql"]
    url: str
    path: Path | None = None
    password: PinSource | None = None


@dataclass(frozen=True)
class LoggingConfig:
    format: Literal["auto", "json", "text"] = "auto"
    level: Literal["debug", "info", "warn", "error", "critical"] = "info"


@dataclass(frozen=True)
class FaultsConfig:
    dialect: Literal["camel", "snake"] = "camel"


@dataclass(frozen=True)
class MessageLogConfig:
    """The message log: every signed request and response, written before it is passed on.

    ``body_logging`` on or off for all; ``body_logging_exceptions`` lists the subsystems
    (``INSTANCE/CLASS/CODE/SUBSYSTEM``) of services whose messages are logged the other way.
    Bodies (SOAP attachments, REST bodies) above ``max_loggable_body_bytes`` are refused
    (``oversize: reject``) or stored cut to that size and marked truncated (``truncate``).
    ``synchronous`` is SQLite's: ``full`` syncs every commit to disk, ``normal`` only at
    checkpoints (survives a crash of the process, not a power loss).  ``timeout`` bounds one write.
    """

    enabled: bool = True
    body_logging: bool = True
    body_logging_exceptions: tuple[str, ...] = ()
    max_loggable_body_bytes: int = 10 * 1024 * 1024
    oversize: Literal["reject", "truncate"] = "reject"
    synchronous: Literal["full", "normal"] = "full"
    timeout_seconds: float = 10.0
    # Time-stamping: every timestamp_interval_seconds (None: global configuration's
    # timeStampingIntervalSeconds, else 60 s) up to timestamp_records_limit records get one token;
    # failing longer than timestamp_failure_period_seconds (0: never) refuses new messages.
    timestamp_interval_seconds: float | None = None
    timestamp_failure_period_seconds: float = 14400.0
    timestamp_records_limit: int = 10000
    tsa_timeout_seconds: float = 10.0
    # Synchronous mode: each message is time-stamped before it is passed on (a failure refuses it).
    timestamp_immediately: bool = False
    # Archives: every archive_interval_seconds the time-stamped records go, as ASiC-E containers,
    # into linked ZIP archives (at most archive_max_bytes) in archive_dir, per archive_grouping;
    # encrypted with GnuPG for archive_encryption_keys[group] ("*": any group); archived records
    # older than keep_records_for_seconds are deleted from the database.
    archive_dir: Path | None = None
    archive_interval_seconds: float = 6 * 3600.0
    archive_grouping: Literal["none", "member", "subsystem"] = "none"
    archive_max_bytes: int = 32 * 1024 * 1024
    archive_encryption_keys: tuple[tuple[str, Path], ...] = ()
    keep_records_for_seconds: float = 30 * 86400.0

    def encryption_key(self, group: str) -> Path | None:
        keys = dict(self.archive_encryption_keys)
        return keys.get(group) or keys.get("*")

    def logs_body(self, service_subsystem: str) -> bool:
        return self.body_logging != (service_subsystem in self.body_logging_exceptions)


@dataclass(frozen=True)
class HealthConfig:
    ok_cache_seconds: float = 2.0
    failure_cache_seconds: float = 30.0
    check_timeout_seconds: float = 5.0


@dataclass(frozen=True)
class GlobalConfConfig:
    """Where the federation's global configuration comes from and is kept.

    ``enabled: false`` runs without one (development of other parts only: every check
    of traffic against the configuration then fails).
    ``anchor``: the configuration anchor (``conf import-anchor`` puts it there);
    ``directory``: X-Road's on-disk layout of the downloaded files; ``ca_bundle``:
    CA certificates for HTTPS sources (``None``: the system trust store; the directory's
    signature stays the trust anchor either way).
    """

    anchor: Path
    directory: Path
    enabled: bool = True
    interval_seconds: float = 60.0
    timeout_seconds: float = 30.0
    max_backoff_seconds: float = 600.0
    ca_bundle: Path | None = None
    version: int = 6


@dataclass(frozen=True)
class TlsConfig:
    """The server's TLS identity between gateways (its authentication certificate) and the suites.

    ``key`` is a software key file (mode 0600): TLS with the authentication key inside the
    HSM needs an OpenSSL provider that this stack cannot load yet (see README).
    """

    key: Path | None = None
    cert: Path | None = None
    chain: tuple[Path, ...] = ()
    ciphers: str = ""
    tls13: bool = True


@dataclass(frozen=True)
class RelayConfig:
    """The relay's listeners and settings; absent from the YAML means ``enabled=False``."""

    enabled: bool = False
    client_http: str | None = "tcp:8080:interface=127.0.0.1"
    client_https: str | None = None
    server: str | None = "tcp:5500"
    ocsp: str | None = "tcp:5577"
    server_port: int = 5500
    ocsp_port: int = 5577
    tls: TlsConfig = field(default_factory=TlsConfig)
    connect_timeout_seconds: float = 10.0
    service_timeout_seconds: float = 60.0
    max_message_bytes: int = 1 << 30


@dataclass(frozen=True)
class EndpointRule:
    method: str = "*"
    path: str = "**"


@dataclass(frozen=True)
class ServiceConfig:
    code: str
    url: str
    version: str | None = None
    type: Literal["soap", "rest"] = "soap"
    timeout_seconds: float | None = None
    # HTTPS services: True (X-Road's TLS authentication) = the service's certificate must be one of its
    # client's is_certs; False = it must chain to ca_bundle (or the system's CAs) and name the host.
    verify_tls: bool = True
    ca_bundle: Path | None = None
    disabled: bool = False
    notice: str = ""
    endpoints: tuple[EndpointRule, ...] = ()


@dataclass(frozen=True)
class AccessRule:
    subject: str  # a client id, GLOBALGROUP:INSTANCE/CODE or LOCALGROUP:CODE
    services: tuple[str, ...] = ("*",)
    endpoints: tuple[EndpointRule, ...] = ()


@dataclass(frozen=True)
class ClientConfig:
    """A client (member or subsystem of a member) this server hosts: its services and their rights."""

    id: str
    connection: Literal["http", "https", "https-auth"] = "http"
    is_certs: tuple[Path, ...] = ()
    services: tuple[ServiceConfig, ...] = ()
    local_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    access: tuple[AccessRule, ...] = ()

    def service(self, code: str) -> ServiceConfig | None:
        return next((s for s in self.services if s.code == code), None)


@dataclass(frozen=True)
class GatewayConfig:
    """The whole, validated configuration.  Compare sections with :func:`changed_sections`."""

    source: Path
    server: ServerConfig
    tokens: tuple[TokenSpec, ...]
    auth_key: KeyRef
    members: tuple[MemberConfig, ...]
    tsa: tuple[TsaConfig, ...] = ()
    ocsp: OcspConfig = field(default_factory=OcspConfig)
    listeners: ListenersConfig = field(default_factory=ListenersConfig)
    database: DatabaseConfig = field(
        default_factory=lambda: DatabaseConfig(
            kind="sqlite",
            url=f"sqlite://{DEFAULT_STATE_DIR}/gateway.db",
            path=DEFAULT_STATE_DIR / "gateway.db",
        )
    )
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    globalconf: GlobalConfConfig = field(
        default_factory=lambda: GlobalConfConfig(
            anchor=DEFAULT_STATE_DIR / "configuration-anchor.xml", directory=DEFAULT_STATE_DIR / "globalconf"
        )
    )
    relay: RelayConfig = field(default_factory=RelayConfig)
    clients: tuple[ClientConfig, ...] = ()
    message_log: MessageLogConfig = field(default_factory=MessageLogConfig)

    def client(self, client_id: str) -> ClientConfig | None:
        return next((c for c in self.clients if c.id == client_id), None)

    def token(self, token_id: str) -> TokenSpec:
        for spec in self.tokens:
            if spec.id == token_id:
                return spec
        raise KeyError(token_id)

    def member(self, member_id: str) -> MemberConfig:
        for member in self.members:
            if member.id == member_id:
                return member
        raise KeyError(member_id)

    @property
    def owner(self) -> MemberConfig:
        return self.member(self.server.owner)

    def summary(self) -> str:
        """One line for ``check-config`` and the start-up log (no secrets)."""
        listeners = ", ".join(f"{name} {endpoint}" for name, endpoint in self.listeners.items()) or "none"
        n_members = len(self.members)
        n_tokens = len(self.tokens)
        return (
            f"{self.server.server_id} ({self.server.mode}): "
            f"{n_members} member{'s' if n_members != 1 else ''}, "
            f"{n_tokens} token{'s' if n_tokens != 1 else ''}, "
            f"{len(self.tsa)} TSA{'s' if len(self.tsa) != 1 else ''}, "
            f"database {self.database.kind}, listeners: {listeners}"
        )


def changed_sections(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The top-level sections whose values differ, in :data:`SECTIONS` order."""
    return [name for name in SECTIONS if getattr(old, name) != getattr(new, name)]


# ---------------------------------------------------------------------------
# Loading


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate the YAML file at ``path``.

    Raises :class:`ConfigError` with code ``config.not_found`` (no such file),
    ``config.unreadable``, ``config.yaml_syntax`` (naming line and column) or
    ``config.invalid`` (every problem, with its key path).
    """
    source = Path(path).absolute()
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([("", f"configuration file {source} does not exist")], code="config.not_found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            [("", f"configuration file {source} cannot be read: {reason}")], code="config.unreadable"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
        what = exc.problem or "syntax error"
        if exc.context:
            what = f"{what} ({exc.context})"
        raise ConfigError(
            [("", f"YAML syntax error at {where}: {what}")], source=source, code="config.yaml_syntax"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"YAML syntax error: {exc}")], source=source, code="config.yaml_syntax") from None
    return parse_config(data, base_dir=source.parent, source=source)


def parse_config(data: object, *, base_dir: Path, source: Path | None = None) -> GatewayConfig:
    """Validate an already parsed YAML document (see :func:`load_config`)."""
    return _Validator(base_dir).run(data, source or base_dir / "<memory>")


_M = TypeVar("_M", bound=_Model)


def _pydantic_problems(exc: ValidationError, prefix: Sequence[str | int]) -> list[Problem]:
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = [*prefix, *err["loc"]]
        kind = err["type"]
        msg = err["msg"]
        if kind == "extra_forbidden":
            msg = "unknown key"
        elif kind == "missing":
            msg = "required key is missing"
        elif kind == "string_type" and isinstance(err.get("input"), int | float | bool):
            msg = f"expected a string, got {err['input']!r} (quote the value in YAML)"
        elif kind in ("literal_error", "enum"):
            msg = msg.replace("Input should be", "must be")
        elif kind == "model_type":
            msg = "expected a mapping of keys to values"
        elif kind in ("tuple_type", "list_type"):
            msg = "expected a list"
        elif kind == "value_error":
            msg = msg.removeprefix("Value error, ")
            # "field: message" raised from a model validator names the field.
            head, sep, tail = msg.partition(": ")
            if sep and re.fullmatch(r"[a-z_]+", head) and not err["loc"]:
                loc.append(head)
                msg = tail
        out.append((format_path(loc), msg))
    return out


class _Validator:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[Problem] = []
        self.declared_tokens: dict[str, int] = {}
        self.instance: str | None = None

    # -- plumbing --------------------------------------------------------

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def model(self, cls: type[_M], data: object, prefix: Sequence[str | int]) -> _M | None:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            self.problems.extend(_pydantic_problems(exc, prefix))
            return None

    def items(self, cls: type[_M], data: object, name: str) -> list[tuple[int, _M]]:
        if data is None:
            return []
        if not isinstance(data, list):
            self.problem(name, "expected a list")
            return []
        out: list[tuple[int, _M]] = []
        for index, item in enumerate(data):
            model = self.model(cls, item, (name, index))
            if model is not None:
                out.append((index, model))
        return out

    def path(self, value: str) -> Path:
        candidate = Path(os.path.expanduser(value))
        return candidate if candidate.is_absolute() else (self.base_dir / candidate)

    # -- the whole document ----------------------------------------------

    def run(self, data: object, source: Path) -> GatewayConfig:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError([("", "the configuration must be a YAML mapping of sections")], source=source)
        for key in data:
            if key not in SECTIONS:
                self.problem(str(key), f"unknown section (known: {', '.join(SECTIONS)})")
        for required in ("server", "tokens", "auth_key", "members"):
            if data.get(required) is None:
                self.problem(required, "required section is missing")

        server = self.server(data.get("server"))
        tokens = self.tokens(data.get("tokens"))
        tokens_known = isinstance(data.get("tokens"), list)
        auth_key: KeyRef | None = None
        if data.get("auth_key") is not None:
            raw_auth = self.model(_KeyRef, data["auth_key"], ("auth_key",))
            if raw_auth is not None:
                auth_key = self.key_ref(raw_auth, ("auth_key",), tokens_known)
        members = self.members(data.get("members"), server, tokens_known, auth_key)
        tsa = self.tsa(data.get("tsa"))
        ocsp = self.ocsp(data.get("ocsp"))
        listeners = self.listeners(data.get("listeners"))
        state_dir = server.state_dir if server is not None else DEFAULT_STATE_DIR
        database = self.database(data.get("database"), state_dir)
        logging = self.simple(_Logging, data.get("logging"), "logging")
        faults = self.simple(_Faults, data.get("faults"), "faults")
        mlog = self.simple(_MessageLog, data.get("message_log"), "message_log")
        health = self.simple(_Health, data.get("health"), "health")
        gconf = self.simple(_GlobalConf, data.get("globalconf"), "globalconf")
        relay = self.relay(data.get("relay"))
        clients = self.clients(data.get("clients"), members)

        if self.problems:
            raise ConfigError(self.problems, source=source)
        assert server is not None and tokens is not None and auth_key is not None and members is not None
        assert tsa is not None and ocsp is not None and listeners is not None and database is not None
        assert logging is not None and faults is not None and health is not None and gconf is not None
        assert relay is not None and mlog is not None
        return GatewayConfig(
            source=source,
            server=server,
            tokens=tuple(tokens),
            auth_key=auth_key,
            members=tuple(members),
            tsa=tuple(tsa),
            ocsp=ocsp,
            listeners=listeners,
            database=database,
            logging=LoggingConfig(format=logging.format, level=logging.level),
            faults=FaultsConfig(dialect=faults.dialect),
            message_log=MessageLogConfig(
                enabled=mlog.enabled, body_logging=mlog.body_logging,
                body_logging_exceptions=tuple(mlog.body_logging_exceptions),
                max_loggable_body_bytes=mlog.max_loggable_body_bytes, oversize=mlog.oversize,
                synchronous=mlog.synchronous, timeout_seconds=mlog.timeout,
                timestamp_interval_seconds=mlog.timestamp_interval,
                timestamp_failure_period_seconds=mlog.timestamp_failure_period,
                timestamp_records_limit=mlog.timestamp_records_limit, tsa_timeout_seconds=mlog.tsa_timeout,
                timestamp_immediately=mlog.timestamp_immediately,
                archive_dir=self.path(mlog.archive_dir) if mlog.archive_dir else state_dir / "archive",
                archive_interval_seconds=mlog.archive_interval, archive_grouping=mlog.archive_grouping,
                archive_max_bytes=mlog.archive_max_bytes,
                archive_encryption_keys=tuple((g, self.path(k)) for g, k in mlog.archive_encryption_keys.items()),
                keep_records_for_seconds=mlog.keep_records_for),
            health=HealthConfig(
                ok_cache_seconds=health.ok_cache,
                failure_cache_seconds=health.failure_cache,
                check_timeout_seconds=health.check_timeout,
            ),
            globalconf=GlobalConfConfig(
                anchor=self.path(gconf.anchor) if gconf.anchor else state_dir / "configuration-anchor.xml",
                directory=self.path(gconf.directory) if gconf.directory else state_dir / "globalconf",
                enabled=gconf.enabled,
                interval_seconds=gconf.interval,
                timeout_seconds=gconf.timeout,
                max_backoff_seconds=gconf.max_backoff,
                ca_bundle=self.path(gconf.ca_bundle) if gconf.ca_bundle else None,
                version=gconf.version,
            ),
            relay=relay,
            clients=tuple(clients),
        )

    def simple(self, cls: type[_M], data: object, name: str) -> _M | None:
        return self.model(cls, {} if data is None else data, (name,))

    # -- sections --------------------------------------------------------

    def server(self, data: object) -> ServerConfig | None:
        if data is None:
            return None
        if isinstance(data, dict):
            # Known even when another server key is wrong, for the member checks.
            instance = data.get("instance")
            if isinstance(instance, str) and _IDENT_RE.match(instance):
                self.instance = instance
        raw = self.model(_Server, data, ("server",))
        if raw is None:
            return None
        if raw.owner.split("/")[0] != raw.instance:
            self.problem("server.owner", f"{raw.owner} does not belong to instance {raw.instance}")
        return ServerConfig(
            instance=raw.instance,
            owner=raw.owner,
            server_code=raw.server_code,
            mode=raw.mode,
            state_dir=self.path(raw.state_dir),
        )

    def secret(self, raw: _Secret, path: str) -> PinSource:
        source = PinSource(
            file=self.path(raw.file) if raw.file is not None else None,
            env=raw.env,
            credential=raw.credential,
        )
        problem = source.problem()
        if problem is not None:
            self.problem(path, problem)
        return source

    def tokens(self, data: object) -> list[TokenSpec] | None:
        if data is None:
            return None
        if not isinstance(data, list):
            self.problem("tokens", "expected a list")
            return None
        if not data:
            self.problem("tokens", "declare at least one token")
        specs: list[TokenSpec] = []
        for index, item in enumerate(data):
            before = len(self.problems)
            raw = self.model(_Token, item, ("tokens", index))
            if raw is None:
                # Keep the id known, so references to it are not reported twice, and
                # still check a well-formed PIN source.
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    self.declared_tokens.setdefault(item["id"], index)
                pin_path = f"tokens[{index}].pin"
                if isinstance(item, dict) and not any(p.startswith(pin_path) for p, _ in self.problems[before:]):
                    try:
                        self.secret(_Secret.model_validate(item.get("pin")), pin_path)
                    except ValidationError:
                        pass
                continue
            if raw.id in self.declared_tokens:
                other = self.declared_tokens[raw.id]
                self.problem(f"tokens[{index}].id", f"duplicate token id {raw.id!r} (also tokens[{other}])")
                continue
            self.declared_tokens[raw.id] = index
            module: str | None = None
            if raw.module is not None:
                module_path = self.path(raw.module)
                if not module_path.is_file():
                    self.problem(f"tokens[{index}].module", f"PKCS#11 module {module_path} does not exist")
                module = str(module_path)
            specs.append(
                TokenSpec(
                    id=raw.id,
                    pin=self.secret(raw.pin, f"tokens[{index}].pin"),
                    module=module,
                    label=raw.label,
                    serial=raw.serial,
                    sign_mechanism=raw.sign_mechanism,
                    batch_signing=raw.batch_signing,
                    timeout_seconds=raw.timeout,
                )
            )
        return specs

    def key_ref(self, raw: _KeyRef, prefix: tuple[str | int, ...], tokens_known: bool) -> KeyRef:
        if tokens_known and raw.token not in self.declared_tokens:
            known = ", ".join(sorted(self.declared_tokens)) or "none"
            self.problem(
                format_path((*prefix, "token")),
                f"no token with id {raw.token!r} is declared (tokens: {known})",
            )
        return KeyRef(token=raw.token, key_id=raw.key_id.lower() if raw.key_id else None, label=raw.label)

    def members(
        self,
        data: object,
        server: ServerConfig | None,
        tokens_known: bool,
        auth_key: KeyRef | None,
    ) -> list[MemberConfig] | None:
        if data is None:
            return None
        if not isinstance(data, list):
            self.problem("members", "expected a list")
            return None
        if not data:
            self.problem("members", "declare at least the owner member")
        out: list[MemberConfig] = []
        seen_ids: dict[str, int] = {}
        seen_keys: dict[KeyRef, int] = {}
        for index, item in enumerate(data):
            raw = self.model(_Member, item, ("members", index))
            if raw is None:
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    seen_ids.setdefault(item["id"], index)
                continue
            where = f"members[{index}]"
            if raw.id in seen_ids:
                self.problem(f"{where}.id", f"duplicate member {raw.id} (also members[{seen_ids[raw.id]}])")
                continue
            seen_ids[raw.id] = index
            if self.instance is not None and raw.id.split("/")[0] != self.instance:
                self.problem(f"{where}.id", f"{raw.id} does not belong to instance {self.instance}")
            for sub_index, code in enumerate(raw.subsystems):
                if code in raw.subsystems[:sub_index]:
                    self.problem(f"{where}.subsystems[{sub_index}]", f"duplicate subsystem {code!r}")
            key = self.key_ref(raw.sign_key, ("members", index, "sign_key"), tokens_known)
            if key in seen_keys:
                self.problem(
                    f"{where}.sign_key",
                    f"members[{seen_keys[key]}] already signs with this key; each member needs its own",
                )
            elif auth_key is not None and key == auth_key:
                self.problem(f"{where}.sign_key", "is the authentication key (auth_key); use a separate signing key")
            seen_keys.setdefault(key, index)
            out.append(MemberConfig(id=raw.id, name=raw.name, subsystems=tuple(raw.subsystems), sign_key=key))
        if server is not None:
            self.check_mode(server, out, seen_ids)
        return out

    def check_mode(self, server: ServerConfig, members: list[MemberConfig], seen_ids: Mapping[str, int]) -> None:
        if server.owner not in seen_ids:
            self.problem("server.owner", f"{server.owner} is not among members[]; declare the owner as a member")
            return
        if server.mode == "dedicated":
            for member in members:
                if member.id != server.owner:
                    self.problem(
                        f"members[{seen_ids[member.id]}].id",
                        f"a dedicated server hosts only its owner {server.owner} (use mode: shared)",
                    )
        elif server.mode == "axis":
            owner = next((m for m in members if m.id == server.owner), None)
            if owner is not None and "vdxp" not in owner.subsystems:
                self.problem(
                    f"members[{seen_ids[owner.id]}].subsystems",
                    "the axis operator must declare the subsystem 'vdxp' (the axis mailbox services)",
                )

    def tsa(self, data: object) -> list[TsaConfig] | None:
        out: list[TsaConfig] = []
        seen: dict[str, int] = {}
        for index, raw in self.items(_Tsa, data, "tsa"):
            where = f"tsa[{index}]"
            if raw.name in seen:
                self.problem(f"{where}.name", f"duplicate TSA name {raw.name!r} (also tsa[{seen[raw.name]}])")
            seen[raw.name] = index
            parts = urlsplit(raw.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                self.problem(f"{where}.url", f"{raw.url!r} is not an http:// or https:// URL")
            cert = self.path(raw.cert)
            cert_problem = _certificate_problem(cert)
            if cert_problem is not None:
                self.problem(f"{where}.cert", cert_problem)
            out.append(TsaConfig(name=raw.name, url=raw.url, cert=cert))
        return out

    def ocsp(self, data: object) -> OcspConfig | None:
        raw = self.simple(_Ocsp, data, "ocsp")
        if raw is None:
            return None
        if raw.freshness <= 0:
            self.problem("ocsp.freshness", "must be greater than zero")
        if raw.fetch_interval <= 0:
            self.problem("ocsp.fetch_interval", "must be greater than zero")
        elif raw.fetch_interval >= raw.freshness > 0:
            self.problem("ocsp.fetch_interval", "must be shorter than ocsp.freshness, or responses go stale")
        return OcspConfig(freshness_seconds=raw.freshness, fetch_interval_seconds=raw.fetch_interval)

    def listeners(self, data: object) -> ListenersConfig | None:
        raw = self.simple(_Listeners, data, "listeners")
        if raw is None:
            return None
        seen: dict[str, str] = {}
        for name in ("health", "metrics"):
            value = getattr(raw, name)
            if value is None:
                continue
            problem = endpoint_problem(value)
            if problem is not None:
                self.problem(f"listeners.{name}", problem)
                continue
            key = _endpoint_identity(value)
            if key is not None and key in seen:
                self.problem(f"listeners.{name}", f"same address as listeners.{seen[key]}")
            elif key is not None:
                seen[key] = name
        return ListenersConfig(health=raw.health, metrics=raw.metrics)

    def relay(self, data: object) -> RelayConfig | None:
        if data is None:
            # No relay section: this gateway does not relay (e.g. only a signer, a TSA, a central).
            return RelayConfig(enabled=False)
        raw = self.simple(_Relay, data, "relay")
        if raw is None:
            return None
        for name in ("client_http", "client_https", "server", "ocsp"):
            value = getattr(raw, name)
            if value is not None:
                problem = endpoint_problem(value)
                if problem is not None:
                    self.problem(f"relay.{name}", problem)
        tls = raw.tls
        key = self.path(tls.key) if tls.key else None
        if key is not None:
            source = PinSource(file=key)
            problem = source.problem()
            if problem is not None:
                self.problem("relay.tls.key", problem.replace("PIN", "key"))
        cert = self.path(tls.cert) if tls.cert else None
        if cert is not None and not cert.is_file():
            self.problem("relay.tls.cert", f"file {cert} does not exist")
        if raw.enabled and raw.server is not None and (key is None or cert is None):
            self.problem("relay.tls", "the server listener needs the authentication key and certificate "
                         "(key:, cert:)")
        if raw.client_https is not None and (key is None or cert is None):
            self.problem("relay.client_https", "needs relay.tls.key and relay.tls.cert")
        return RelayConfig(
            enabled=raw.enabled, client_http=raw.client_http, client_https=raw.client_https, server=raw.server,
            ocsp=raw.ocsp, server_port=raw.server_port, ocsp_port=raw.ocsp_port,
            tls=TlsConfig(key=key, cert=cert, chain=tuple(self.path(c) for c in tls.chain), ciphers=tls.ciphers,
                          tls13=tls.tls13),
            connect_timeout_seconds=raw.connect_timeout, service_timeout_seconds=raw.service_timeout,
            max_message_bytes=raw.max_message_bytes)

    def clients(self, data: object, members: list[MemberConfig] | None) -> list[ClientConfig]:
        member_ids = {m.id for m in members or ()}
        subsystems = {f"{m.id}/{s}" for m in members or () for s in m.subsystems}
        out: list[ClientConfig] = []
        seen: dict[str, int] = {}
        for index, raw in self.items(_Client, data, "clients"):
            where = f"clients[{index}]"
            if raw.id in seen:
                self.problem(f"{where}.id", f"duplicate client {raw.id} (also clients[{seen[raw.id]}])")
                continue
            seen[raw.id] = index
            if members is not None and raw.id not in member_ids and raw.id not in subsystems:
                self.problem(f"{where}.id", f"{raw.id} is neither a member nor a declared subsystem of one")
            # https-auth with no certificates is allowed, as in X-Road: no information system gets in.
            codes: dict[tuple[str, str | None], int] = {}
            services = []
            for s_index, svc in enumerate(raw.services):
                key = (svc.code, svc.version)
                if key in codes:
                    self.problem(f"{where}.services[{s_index}].code", f"duplicate service {svc.code}")
                codes[key] = s_index
                if urlsplit(svc.url).scheme not in ("http", "https"):
                    self.problem(f"{where}.services[{s_index}].url", "must be an http:// or https:// URL")
                services.append(ServiceConfig(
                    code=svc.code, url=svc.url, version=svc.version, type=svc.type, timeout_seconds=svc.timeout,
                    verify_tls=svc.verify_tls, ca_bundle=self.path(svc.ca_bundle) if svc.ca_bundle else None,
                    disabled=svc.disabled, notice=svc.notice,
                    endpoints=tuple(EndpointRule(e.method.upper(), e.path) for e in svc.endpoints)))
            known = {svc.code for svc in raw.services}
            access = []
            for a_index, rule in enumerate(raw.access):
                for code in rule.services:
                    if code != "*" and code not in known:
                        self.problem(f"{where}.access[{a_index}].services", f"unknown service {code!r}")
                if rule.subject.startswith("LOCALGROUP:") and rule.subject[11:] not in raw.local_groups:
                    self.problem(f"{where}.access[{a_index}].subject", f"unknown local group {rule.subject[11:]!r}")
                access.append(AccessRule(subject=rule.subject, services=tuple(rule.services),
                                         endpoints=tuple(EndpointRule(e.method.upper(), e.path)
                                                         for e in rule.endpoints)))
            out.append(ClientConfig(
                id=raw.id, connection=raw.connection, is_certs=tuple(self.path(c) for c in raw.is_certs),
                services=tuple(services), local_groups=tuple((k, tuple(v)) for k, v in raw.local_groups.items()),
                access=tuple(access)))
        return out

    def database(self, data: object, state_dir: Path) -> DatabaseConfig | None:
        raw = self.simple(_Database, data, "database")
        if raw is None:
            return None
        password = self.secret(raw.password, "database.password") if raw.password is not None else None
        url = raw.url if raw.url is not None else f"sqlite://{state_dir / 'gateway.db'}"
        parts = urlsplit(url)
        if parts.scheme == "sqlite":
            if parts.netloc:
                self.problem(
                    "database.url",
                    "sqlite URLs have no host: sqlite:///absolute/path.db or sqlite:relative.db",
                )
                return None
            if not parts.path:
                self.problem("database.url", "sqlite URL names no file")
                return None
            if password is not None:
                self.problem("database.password", "SQLite takes no password")
            return DatabaseConfig(kind="sqlite", url=url, path=self.path(parts.path))
        if parts.scheme in ("postgresql", "postgres"):
            if parts.password is not None:
                # Never echo the URL: it holds the secret.
                self.problem("database.url", "holds a password; move it to database.password (file, env or credential)")
                return None
            if not parts.path.strip("/"):
                self.problem("database.url", "names no database (postgresql://user@host:5432/DATABASE)")
            return DatabaseConfig(kind="postgresql", url=url, password=password)
        self.problem("database.url", "must start with sqlite: or postgresql://")
        return None


def endpoint_problem(description: str) -> str | None:
    """Why ``description`` is not a usable Twisted server endpoint string, or None.

    Parsed with ``serverFromString`` against a :class:`MemoryReactor`, so nothing
    listens.  ``systemd:`` endpoints are checked for syntax only unless the process
    was socket-activated (the descriptors only exist under systemd).
    """
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    if description.startswith("systemd:") and "LISTEN_FDS" not in os.environ:
        args = dict(part.partition("=")[::2] for part in description.split(":")[1:] if part)
        unknown = set(args) - {"domain", "index", "name"}
        if unknown:
            return f"invalid endpoint {description!r}: unknown keyword {sorted(unknown)[0]!r}"
        if args.get("domain") not in ("INET", "INET6", "UNIX"):
            return f"invalid endpoint {description!r}: domain must be INET, INET6 or UNIX"
        if ("index" in args) == ("name" in args):
            return f"invalid endpoint {description!r}: give index or name"
        return None
    try:
        serverFromString(MemoryReactor(), description)  # type: ignore[no-untyped-call]
    except TypeError as exc:
        bad = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
        detail = f"unknown keyword {bad.group(1)!r}" if bad else str(exc)
        return f"invalid endpoint {description!r}: {detail}"
    except (ValueError, KeyError, IndexError, OSError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"invalid endpoint {description!r}: {detail}"
    return None


def _endpoint_identity(description: str) -> str | None:
    """A comparable address for TCP endpoints with a fixed port (port 0 never clashes)."""
    parts = description.split(":")
    if parts[0] not in ("tcp", "tcp6") or len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) == 0:
        return None
    options = dict(p.partition("=")[::2] for p in parts[2:])
    return f"{parts[0]}:{int(parts[1])}:{options.get('interface', '')}"


def _certificate_problem(path: Path) -> str | None:
    from cryptography import x509

    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"certificate {path} cannot be read: {exc.strerror}"
    loaders: tuple[Callable[[bytes], Any], ...] = (
        x509.load_pem_x509_certificate,
        x509.load_der_x509_certificate,
    )
    for loader in loaders:
        try:
            loader(data)
            return None
        except ValueError:
            continue
    return f"{path} is not a PEM or DER X.509 certificate"
