"""Configuration loading: every problem reported with its exact key path; check-config CLI."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config import (
    ConfigError,
    GatewayConfig,
    changed_sections,
    load_config,
    parse_duration,
)
from hsm.config import KeyRef, PinSource, TokenSpec
from protocols.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "vdxp-gateway"
OWNER = "VN-TEST/GOV/000.00.00.G22"
PIN_VALUE = "PIN-7319-never-shown"


def base_config() -> dict[str, Any]:
    return {
        "server": {"instance": "VN-TEST", "owner": OWNER, "server_code": "gw1", "mode": "shared"},
        "tokens": [{"id": "main", "label": "gw", "pin": {"file": "pins/main.pin"}}],
        "auth_key": {"token": "main", "label": "auth"},
        "members": [
            {
                "id": OWNER,
                "name": "Văn phòng Chính phủ",
                "subsystems": ["vdxp"],
                "sign_key": {"token": "main", "label": "sign"},
            },
            {"id": "VN-TEST/GOV/000.00.00.H40", "name": "Tenant", "sign_key": {"token": "main", "key_id": "0A1B"}},
        ],
        "listeners": {"health": "tcp:0:interface=127.0.0.1", "metrics": "tcp:0:interface=127.0.0.1"},
    }


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    (tmp_path / "pins").mkdir()
    pin = tmp_path / "pins" / "main.pin"
    pin.write_text(PIN_VALUE + "\n")
    pin.chmod(0o600)
    return tmp_path


def write(confdir: Path, data: dict[str, Any] | str, name: str = "gateway.yaml") -> Path:
    path = confdir / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, allow_unicode=True))
    return path


def problems(confdir: Path, data: dict[str, Any] | str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(write(confdir, data))
    assert PIN_VALUE not in str(info.value.problems)
    return list(info.value.problems)


def paths(found: list[tuple[str, str]]) -> list[str]:
    return [path for path, _ in found]


# -- valid configurations ------------------------------------------------------


def test_valid_config_becomes_frozen_objects(confdir: Path) -> None:
    config = load_config(write(confdir, base_config()))
    assert isinstance(config, GatewayConfig)
    assert config.server.server_id == f"{OWNER}/gw1"
    assert config.tokens == (TokenSpec(id="main", pin=PinSource(file=confdir / "pins" / "main.pin"), label="gw"),)
    assert config.auth_key == KeyRef(token="main", label="auth")
    assert config.members[1].sign_key == KeyRef(token="main", key_id="0a1b")
    assert config.owner.subsystems == ("vdxp",)
    # Defaults
    assert config.ocsp.freshness_seconds == 3600 and config.ocsp.fetch_interval_seconds == 1200
    assert config.faults.dialect == "camel" and config.logging.level == "info"
    assert config.database.kind == "sqlite"
    assert config.database.path == Path("/var/lib/vdxp-gateway/gateway.db")
    assert config.health.ok_cache_seconds == 2 and config.health.failure_cache_seconds == 30
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.mode = "axis"  # type: ignore[misc]
    # The summary names no secret source content.
    assert PIN_VALUE not in config.summary()


def test_relative_paths_resolve_against_the_config_directory(confdir: Path, tmp_path: Path) -> None:
    data = base_config()
    data["server"]["state_dir"] = "state"
    data["database"] = {"url": "sqlite:db/gw.db"}
    config = load_config(write(confdir, data))
    assert config.server.state_dir == confdir / "state"
    assert config.database.path == confdir / "db" / "gw.db"
    assert config.tokens[0].pin.file == confdir / "pins" / "main.pin"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (60, 60.0),
        (1.5, 1.5),
        ("60s", 60.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("2d", 172800.0),
        ("15", 15.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 parsecs", "-1s", True, "1h30", None, [1]])
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_durations_in_config(confdir: Path) -> None:
    data = base_config()
    data["ocsp"] = {"freshness": "2h", "fetch_interval": "10m"}
    data["tokens"][0]["timeout"] = 3
    config = load_config(write(confdir, data))
    assert config.ocsp == dataclasses.replace(config.ocsp, freshness_seconds=7200.0, fetch_interval_seconds=600.0)
    assert config.tokens[0].timeout_seconds == 3.0


# -- one problem each, with its exact key path ------------------------------------


def test_pin_file_readable_by_others(confdir: Path) -> None:
    (confdir / "pins" / "main.pin").chmod(0o644)
    found = problems(confdir, base_config())
    pin = confdir / "pins" / "main.pin"
    assert found == [("tokens[0].pin", f"file {pin} is readable by others (mode 0644; use 0600)")]


def test_missing_pin_sources(confdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VDXP_TEST_UNSET_PIN", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    data = base_config()
    data["tokens"].append({"id": "t2", "label": "b", "pin": {"env": "VDXP_TEST_UNSET_PIN"}})
    data["tokens"].append({"id": "t3", "label": "c", "pin": {"credential": "pin3"}})
    data["tokens"].append({"id": "t4", "label": "d", "pin": {"file": "pins/none", "env": "X"}})
    found = problems(confdir, data)
    assert found == [
        ("tokens[1].pin", "environment variable VDXP_TEST_UNSET_PIN is not set"),
        ("tokens[2].pin", "systemd credential pin3: $CREDENTIALS_DIRECTORY is not set"),
        ("tokens[3].pin", "give exactly one of file, env or credential"),
    ]


def test_sign_key_references_undeclared_token(confdir: Path) -> None:
    data = base_config()
    data["members"][1]["sign_key"]["token"] = "hsm2"
    assert problems(confdir, data) == [
        ("members[1].sign_key.token", "no token with id 'hsm2' is declared (tokens: main)")
    ]


def test_auth_key_references_undeclared_token(confdir: Path) -> None:
    data = base_config()
    data["auth_key"] = {"token": "mian", "label": "auth"}
    assert paths(problems(confdir, data)) == ["auth_key.token"]


def test_duplicate_member(confdir: Path) -> None:
    data = base_config()
    data["members"].append(copy.deepcopy(data["members"][1]))
    data["members"][2]["sign_key"] = {"token": "main", "label": "other"}
    assert problems(confdir, data) == [
        ("members[2].id", "duplicate member VN-TEST/GOV/000.00.00.H40 (also members[1])")
    ]


def test_members_must_not_share_a_signing_key(confdir: Path) -> None:
    data = base_config()
    data["members"][1]["sign_key"] = {"token": "main", "label": "sign"}
    assert paths(problems(confdir, data)) == ["members[1].sign_key"]
    data["members"][1]["sign_key"] = {"token": "main", "label": "auth"}
    assert problems(confdir, data) == [
        ("members[1].sign_key", "is the authentication key (auth_key); use a separate signing key")
    ]


def test_duplicate_token_and_subsystem(confdir: Path) -> None:
    data = base_config()
    data["tokens"].append({"id": "main", "label": "x", "pin": {"file": "pins/main.pin"}})
    data["members"][0]["subsystems"] = ["vdxp", "edoc", "vdxp"]
    assert paths(problems(confdir, data)) == ["tokens[1].id", "members[0].subsystems[2]"]


def test_bad_duration(confdir: Path) -> None:
    data = base_config()
    data["tokens"][0]["timeout"] = "10 parsecs"
    assert problems(confdir, data) == [
        ("tokens[0].timeout", "expected a duration such as 60s, 5m or 1h, not '10 parsecs'")
    ]


def test_bad_endpoint_strings(confdir: Path) -> None:
    data = base_config()
    data["listeners"] = {"health": "tcp:5588:interfac=127.0.0.1", "metrics": "tpc:9465"}
    found = problems(confdir, data)
    assert found[0] == (
        "listeners.health",
        "invalid endpoint 'tcp:5588:interfac=127.0.0.1': unknown keyword 'interfac'",
    )
    assert found[1][0] == "listeners.metrics" and "Unknown endpoint type" in found[1][1]
    assert len(found) == 2


def test_listeners_on_the_same_address(confdir: Path) -> None:
    data = base_config()
    data["listeners"] = {"health": "tcp:5588:interface=127.0.0.1", "metrics": "tcp:5588:interface=127.0.0.1"}
    assert problems(confdir, data) == [("listeners.metrics", "same address as listeners.health")]


def test_listener_disabled_and_systemd_syntax(confdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    data = base_config()
    data["listeners"] = {"health": None, "metrics": "systemd:domain=INET:name=vdxp-metrics"}
    config = load_config(write(confdir, data))
    assert config.listeners.items() == [("metrics", "systemd:domain=INET:name=vdxp-metrics")]
    data["listeners"] = {"metrics": "systemd:domain=INET:nam=x"}
    assert paths(problems(confdir, data)) == ["listeners.metrics"]


def test_unknown_keys(confdir: Path) -> None:
    data = base_config()
    data["server"]["colour"] = "red"
    data["members"][0]["sign_key"]["slot"] = 1
    data["extras"] = {}
    found = problems(confdir, data)
    assert ("server.colour", "unknown key") in found
    assert ("members[0].sign_key.slot", "unknown key") in found
    assert found[0][0] == "extras" and found[0][1].startswith("unknown section")
    assert len(found) == 3


def test_yaml_syntax_error_names_line_and_column(confdir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(confdir, "server:\n  instance: VN-TEST\n  owner: [unclosed\n"))
    assert info.value.code == "config.yaml_syntax"
    assert "line 4, column 1" in info.value.problems[0][1]
    assert isinstance(info.value, UsageError)


def test_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.code == "config.not_found"
    assert str(tmp_path / "nope.yaml") in str(info.value)


def test_member_of_wrong_instance(confdir: Path) -> None:
    data = base_config()
    data["members"][1]["id"] = "VN-PROD/GOV/000.00.00.H40"
    assert problems(confdir, data) == [
        ("members[1].id", "VN-PROD/GOV/000.00.00.H40 does not belong to instance VN-TEST")
    ]


def test_bad_identifiers(confdir: Path) -> None:
    data = base_config()
    data["members"][1]["id"] = "VN-TEST/GOV"
    data["server"]["server_code"] = "gw 1"
    assert paths(problems(confdir, data)) == ["server.server_code", "members[1].id"]


def test_owner_must_be_a_member(confdir: Path) -> None:
    data = base_config()
    data["server"]["owner"] = "VN-TEST/GOV/000.00.00.G99"
    assert paths(problems(confdir, data)) == ["server.owner"]


def test_modes(confdir: Path) -> None:
    data = base_config()
    data["server"]["mode"] = "dedicated"
    assert paths(problems(confdir, data)) == ["members[1].id"]
    data = base_config()
    data["server"]["mode"] = "axis"
    data["members"][0]["subsystems"] = ["edoc"]
    assert paths(problems(confdir, data)) == ["members[0].subsystems"]
    data["server"]["mode"] = "central"
    assert paths(problems(confdir, data)) == ["server.mode"]


def test_required_sections(confdir: Path) -> None:
    found = problems(confdir, {"server": base_config()["server"]})
    assert paths(found)[:3] == ["tokens", "auth_key", "members"]


def test_strings_are_strict(confdir: Path) -> None:
    data = base_config()
    data["tokens"][0] = {"id": "main", "serial": 12345, "pin": {"file": "pins/main.pin"}}
    assert problems(confdir, data) == [("tokens[0].serial", "expected a string, got 12345 (quote the value in YAML)")]


def test_database_urls(confdir: Path) -> None:
    data = base_config()
    data["database"] = {"url": "postgresql://vdxp:hunter2@db/vdxp"}
    found = problems(confdir, data)
    assert paths(found) == ["database.url"]
    assert "hunter2" not in str(found)
    data["database"] = {"url": "mysql://db/x"}
    assert paths(problems(confdir, data)) == ["database.url"]
    data["database"] = {"url": "postgresql://vdxp@db:5432/vdxp", "password": {"file": "pins/main.pin"}}
    config = load_config(write(confdir, data))
    assert config.database.kind == "postgresql" and config.database.password is not None


def test_tsa_entries(confdir: Path) -> None:
    cert = confdir / "tsa.pem"
    cert.write_bytes(_certificate_pem())
    data = base_config()
    data["tsa"] = [
        {"name": "a", "url": "https://tsa.test/tsa", "cert": "tsa.pem"},
        {"name": "a", "url": "ftp://x", "cert": "missing.pem"},
    ]
    assert paths(problems(confdir, data)) == ["tsa[1].name", "tsa[1].url", "tsa[1].cert"]
    data["tsa"] = data["tsa"][:1]
    assert load_config(write(confdir, data)).tsa[0].cert == cert


def test_every_problem_is_reported_at_once(confdir: Path) -> None:
    (confdir / "pins" / "main.pin").chmod(0o640)
    data = base_config()
    data["tokens"][0]["timeout"] = "soon"
    data["members"][1]["sign_key"]["token"] = "nope"
    data["ocsp"] = {"freshness": "10m", "fetch_interval": "1h"}
    data["logging"] = {"level": "loud"}
    found = problems(confdir, data)
    assert paths(found) == [
        "tokens[0].timeout",
        "tokens[0].pin",
        "members[1].sign_key.token",
        "ocsp.fetch_interval",
        "logging.level",
    ]


def test_changed_sections(confdir: Path) -> None:
    first = load_config(write(confdir, base_config()))
    data = base_config()
    data["logging"] = {"level": "debug"}
    data["tokens"][0]["timeout"] = "20s"
    second = load_config(write(confdir, data))
    assert changed_sections(first, second) == ["tokens", "logging"]


# -- the CLI ---------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=60, env=env, check=False)


def test_check_config_ok(confdir: Path) -> None:
    result = run_cli("check-config", "-c", str(write(confdir, base_config())))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"OK: {OWNER}/gw1 (shared): 2 members, 1 token")
    assert result.stderr == ""


def test_check_config_lists_every_problem_and_exits_2(confdir: Path) -> None:
    (confdir / "pins" / "main.pin").chmod(0o644)
    data = base_config()
    data["members"].append(copy.deepcopy(data["members"][1]))
    result = run_cli("check-config", "-c", str(write(confdir, data)))
    assert result.returncode == 2
    pin = confdir / "pins" / "main.pin"
    assert result.stderr.splitlines() == [
        f"tokens[0].pin: file {pin} is readable by others (mode 0644; use 0600)",
        "members[2].id: duplicate member VN-TEST/GOV/000.00.00.H40 (also members[1])",
    ]
    assert result.stdout == ""
    assert PIN_VALUE not in result.stderr


def test_check_config_yaml_error_and_missing_file(confdir: Path) -> None:
    result = run_cli("check-config", "-c", str(write(confdir, "server: {instance: [\n")))
    assert result.returncode == 2
    assert result.stderr.startswith("error: config.yaml_syntax: YAML syntax error at line 2, column 1")
    result = run_cli("check-config", "-c", str(confdir / "absent.yaml"))
    assert result.returncode == 2
    assert result.stderr == f"error: config.not_found: configuration file {confdir / 'absent.yaml'} does not exist\n"


def _certificate_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test TSA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("example", ["dedicated", "shared", "axis"])
def test_shipped_examples_pass_check_config(example: str, tmp_path: Path) -> None:
    """conf/*.yaml pass once the files, credentials and variables they name exist."""
    shutil.copy(ROOT / "conf" / f"{example}.yaml", tmp_path / "gateway.yaml")
    data = yaml.safe_load((tmp_path / "gateway.yaml").read_text())
    creds = tmp_path / "credentials"
    creds.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CREDENTIALS_DIRECTORY",)}
    env["CREDENTIALS_DIRECTORY"] = str(creds)
    sources = [t["pin"] for t in data["tokens"]] + [data.get("database", {}).get("password") or {}]
    for source in sources:
        if "file" in source:
            path = tmp_path / source["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("1234\n")
            path.chmod(0o600)
        if "credential" in source:
            (creds / source["credential"]).write_text("1234\n")
        if "env" in source:
            env[source["env"]] = "1234"
    for tsa in data.get("tsa", []):
        path = tmp_path / tsa["cert"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_certificate_pem())
    tls = (data.get("relay") or {}).get("tls") or {}
    is_certs = [c for client in data.get("clients") or [] for c in client.get("is_certs", [])]
    for name in [tls.get("cert"), *is_certs]:
        if name:
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_certificate_pem())
    if tls.get("key"):
        path = tmp_path / tls["key"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("key\n")
        path.chmod(0o600)
    result = run_cli("check-config", "-c", str(tmp_path / "gateway.yaml"), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: ")
    assert f"({example})" in result.stdout
    # Without the PIN sources the same file is refused, naming the key path.
    for pin in tmp_path.rglob("*.pin"):
        pin.chmod(0o644)
    env.pop("CREDENTIALS_DIRECTORY")
    for source in sources:
        if "env" in source:
            env.pop(source["env"])
    result = run_cli("check-config", "-c", str(tmp_path / "gateway.yaml"), env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("tokens[0].pin: ")
