"""A federation for global-configuration tests: a SoftHSM2 token holding the central's signing key
and the gateway's keys, a development PKI, and a federation description (made through the real CLI)."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.conftest import SoftHsm, make_softhsm

GW = [sys.executable, "-m", "gateway"]
OWNER = "VN-TEST/GOV/000.00.00.G22"


def run(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([*GW, *args], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{args}: {out.stderr}"
    return out.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Federation:
    dir: Path
    hsm: SoftHsm
    port: int

    @property
    def env(self) -> dict[str, str]:
        return self.hsm.env()

    @property
    def description(self) -> Path:
        return self.dir / "federation.yaml"

    def data(self) -> dict:
        return yaml.safe_load(self.description.read_text())

    def write(self, data: dict) -> None:
        self.description.write_text(yaml.safe_dump(data))


def make_federation(d: Path, *, expiry: str = "600s", interval: str = "60s") -> Federation:
    hsm = make_softhsm(d / "hsm", label="fed")
    env = hsm.env()
    tok = ["--token-label", "fed", "--pin-file", str(hsm.pin_file)]
    run(env, "key", "generate", *tok, "--label", "conf-signing")
    run(env, "key", "generate", *tok, "--usage", "auth", "--member", OWNER, "--label", "auth", "--type", "ec")
    run(env, "key", "generate", *tok, "--usage", "sign", "--member", OWNER, "--label", "sign")
    ids = {ln.split("'")[1]: ln.split()[1] for ln in run(env, "token", "list", *tok).splitlines() if "label '" in ln}
    run(env, "pki", "init", str(d / "pki"))
    for label, profile, extra in (("conf-signing", "sign", []), ("sign", "sign", []),
                                  ("auth", "auth", ["--server", "gw-axis.test"])):
        run(env, "key", "csr", *tok, "--key-id", ids[label], "--profile", profile, "--member", OWNER,
            "--member-name", "VPCP", *extra, "--out", str(d / f"{label}.csr"))
        run(env, "pki", "issue", str(d / "pki"), "--csr", str(d / f"{label}.csr"), "--profile", profile,
            "--out", str(d / f"{label}.pem"))
    run(env, "cert", "import", *tok, str(d / "sign.pem"))
    port = free_port()
    fed = Federation(d, hsm, port)
    fed.write({
        "instance": "VN-TEST",
        "listen": f"tcp:{port}:interface=127.0.0.1",
        "output": "out",
        "token": {"label": "fed", "pin": {"file": str(hsm.pin_file)}, "key": "conf-signing"},
        "signing_cert": "conf-signing.pem",
        "expiry": expiry,
        "interval": interval,
        "members": [
            {"member_class": "GOV", "code": "000.00.00.G22", "name": "Van phong Chinh phu", "subsystems": ["vdxp"]},
            {"member_class": "GOV", "code": "000.00.00.H41", "name": "UBND tinh H41", "subsystems": ["edoc"]},
        ],
        "security_servers": [
            {"owner": OWNER, "code": "gw-axis", "address": "127.0.0.2", "auth_certs": ["auth.pem"],
             "clients": [f"{OWNER}/vdxp"]},
        ],
        "cas": [{"name": "dev-ca", "top_ca": "pki/root.pem",
                 "intermediates": [{"cert": "pki/intermediate.pem",
                                    "ocsp": [{"url": "http://127.0.0.1:8888/", "cert": "pki/ocsp.pem"}]}]}],
        "tsas": [{"name": "tsa-1", "url": "http://127.0.0.1:8318/", "cert": "pki/ocsp.pem"}],
        "global_groups": [{"code": "agencies", "description": "all agencies",
                           "members": ["VN-TEST/GOV/000.00.00.H41/edoc"]}],
    })
    return fed


def gateway_config(fed: Federation, directory: Path, **globalconf: object) -> Path:
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "server": {"instance": "VN-TEST", "owner": OWNER, "server_code": "gw-axis", "mode": "axis",
                   "state_dir": str(directory / "state")},
        "tokens": [{"id": "main", "label": "fed", "pin": {"file": str(fed.hsm.pin_file)}}],
        "auth_key": {"token": "main", "label": "auth"},
        "members": [{"id": OWNER, "name": "VPCP", "subsystems": ["vdxp"], "sign_key": {"token": "main",
                                                                                        "label": "sign"}}],
        "listeners": {"health": "tcp:0:interface=127.0.0.1", "metrics": "tcp:0:interface=127.0.0.1"},
        "logging": {"format": "json", "level": "info"},
        "globalconf": {"interval": "1s", "timeout": "2s", "max_backoff": "2s", **globalconf},
    }))
    return path
