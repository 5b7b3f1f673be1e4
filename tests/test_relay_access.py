"""Relay configuration (relay:, clients:) and the access rights of provided services."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config import ConfigError, parse_config
from gateway.relay.access import allowed_services, check_access, path_matches
from protocols.xroad.faults import XRoadFault

OWNER = "VN-TEST/GOV/000.00.00.G22"
H41 = "VN-TEST/GOV/000.00.00.H41"


def base(tmp: Path) -> dict:
    pin = tmp / "pin"
    if not pin.exists():
        fd = os.open(pin, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"1234")
        os.close(fd)
    return {
        "server": {"instance": "VN-TEST", "owner": OWNER, "server_code": "gw1", "mode": "shared",
                   "state_dir": str(tmp)},
        "tokens": [{"id": "t", "label": "gw", "pin": {"file": str(pin)}}],
        "auth_key": {"token": "t", "label": "auth"},
        "members": [{"id": OWNER, "name": "VPCP", "subsystems": ["vdxp"], "sign_key": {"token": "t", "label": "s1"}},
                    {"id": H41, "name": "H41", "subsystems": ["edoc"], "sign_key": {"token": "t", "label": "s2"}}],
    }


def clients_conf(tmp: Path) -> dict:
    data = base(tmp)
    data["clients"] = [{
        "id": f"{OWNER}/vdxp",
        "services": [
            {"code": "echo", "url": "http://127.0.0.1:9000/echo"},
            {"code": "off", "url": "http://127.0.0.1:9000/off", "disabled": True, "notice": "Back on Monday"},
            {"code": "items", "type": "rest", "url": "http://127.0.0.1:9000/",
             "endpoints": [{"method": "GET", "path": "/items/*"}, {"method": "POST", "path": "/items"}]},
        ],
        "local_groups": {"auditors": [f"{H41}/audit"]},
        "access": [
            {"subject": f"{H41}/edoc", "services": ["echo", "off", "items"]},
            {"subject": "GLOBALGROUP:VN-TEST/agencies", "services": ["echo"]},
            {"subject": "LOCALGROUP:auditors", "services": ["items"],
             "endpoints": [{"method": "GET", "path": "/items/**"}]},
        ],
    }]
    return data


def groups(caller: str, instance: str, code: str) -> bool:
    return (instance, code) == ("VN-TEST", "agencies") and caller == "VN-TEST/GOV/000.00.00.H53/edoc"


def test_relay_absent_means_disabled(tmp_path: Path) -> None:
    cfg = parse_config(base(tmp_path), base_dir=tmp_path)
    assert cfg.relay.enabled is False and cfg.clients == ()


def test_relay_errors_name_their_key_paths(tmp_path: Path) -> None:
    data = base(tmp_path)
    key = tmp_path / "auth.key"
    key.write_text("k")
    key.chmod(0o644)
    data["relay"] = {"client_http": "tcp:80:interfac=x", "tls": {"key": str(key), "cert": str(tmp_path / "no.pem")}}
    data["clients"] = [
        {"id": "VN-TEST/GOV/000.00.00.X99/edoc"},
        {"id": f"{OWNER}/vdxp", "connection": "https-auth",
         "services": [{"code": "a", "url": "ftp://x"}, {"code": "a", "url": "http://x"}],
         "access": [{"subject": "LOCALGROUP:nope", "services": ["zzz"]}]},
        {"id": f"{OWNER}/vdxp"},
    ]
    with pytest.raises(ConfigError) as err:
        parse_config(data, base_dir=tmp_path)
    paths = dict(err.value.problems)
    assert "relay.client_http" in paths
    assert "readable by others" in paths["relay.tls.key"]
    assert "does not exist" in paths["relay.tls.cert"]
    assert "neither a member nor a declared subsystem" in paths["clients[0].id"]
    assert "clients[1].services[0].url" in paths and "clients[1].services[1].code" in paths
    assert "unknown service 'zzz'" in paths["clients[1].access[0].services"]
    assert "unknown local group" in paths["clients[1].access[0].subject"]
    assert "duplicate client" in paths["clients[2].id"]


def _client(tmp: Path):
    cfg = parse_config(clients_conf(tmp), base_dir=tmp)
    client = cfg.client(f"{OWNER}/vdxp")
    assert client is not None
    return client


@pytest.mark.parametrize(("caller", "service", "rest", "method", "path", "outcome"), [
    (f"{H41}/edoc", "echo", False, "", "", "ok"),
    ("VN-TEST/GOV/000.00.00.H53/edoc", "echo", False, "", "", "ok"),           # global group
    ("VN-TEST/GOV/000.00.00.H53/edoc", "items", True, "GET", "/items/1", "AccessDenied"),
    (H41, "echo", False, "", "", "AccessDenied"),                               # the member is not its subsystem
    (f"{H41}/other", "echo", False, "", "", "AccessDenied"),
    (f"{H41}/edoc", "nothing", False, "", "", "UnknownService"),
    (f"{H41}/edoc", "off", False, "", "", "ServiceDisabled"),
    (f"{H41}/edoc", "items", False, "", "", "ServiceType"),                     # REST service called by SOAP
    (f"{H41}/edoc", "echo", True, "GET", "/", "ServiceType"),
    (f"{H41}/edoc", "items", True, "GET", "/items/7", "ok"),
    (f"{H41}/edoc", "items", True, "POST", "/items", "ok"),
    (f"{H41}/edoc", "items", True, "DELETE", "/items/7", "UnknownService"),     # no such endpoint
    (f"{H41}/audit", "items", True, "GET", "/items/7", "ok"),                   # local group, endpoint rule
    (f"{H41}/audit", "items", True, "POST", "/items", "AccessDenied"),
    (f"{H41}/edoc", "items", True, "GET", "/items/../admin", "UnknownService"),  # no climbing out
])
def test_access_rights(tmp_path: Path, caller: str, service: str, rest: bool, method: str, path: str,
                       outcome: str) -> None:
    client = _client(tmp_path)
    if outcome == "ok":
        assert check_access(client, service, caller, groups, rest=rest, method=method, path=path).code == service
        return
    with pytest.raises(XRoadFault) as err:
        check_access(client, service, caller, groups, rest=rest, method=method, path=path)
    assert err.value.faultcode() == f"Server.ServerProxy.{outcome}"
    assert err.value.detail  # a UUID to log


def test_disabled_service_carries_its_notice(tmp_path: Path) -> None:
    with pytest.raises(XRoadFault) as err:
        check_access(_client(tmp_path), "off", f"{H41}/edoc", groups)
    assert err.value.faultstring == "Back on Monday"


def test_allowed_services(tmp_path: Path) -> None:
    client = _client(tmp_path)
    assert [s.code for s in allowed_services(client, f"{H41}/edoc", groups)] == ["echo", "items"]
    assert [s.code for s in allowed_services(client, "VN-TEST/GOV/000.00.00.H53/edoc", groups)] == ["echo"]
    assert allowed_services(client, "VN-TEST/GOV/000.00.00.X/edoc", groups) == []


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("/items/*", "/items/1", True), ("/items/*", "/items/1/x", False), ("/items/**", "/items/1/x", True),
    ("/items/**", "/items", True), ("**", "/anything/at/all", True), ("/a/*/c", "/a/b/c", True),
    ("/a/*/c", "/a/b/d", False), ("/a", "/a/", True), ("/a/**", "/a/../b", False), ("/a", "a", False),
])
def test_path_patterns(pattern: str, path: str, expected: bool) -> None:
    assert path_matches(pattern, path) is expected
