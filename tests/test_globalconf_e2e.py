"""Global configuration end to end: the development central serves, the gateway's client downloads;
a new member appears within one poll; without the central the configuration expires and the gateway
refuses (health fails with OutdatedGlobalConf); a restarted central brings it back without a restart."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.gconf_support import GW, Federation, gateway_config, make_federation, run
from tests.test_daemon import Daemon, http_get


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return make_federation(tmp_path_factory.mktemp("fed"), expiry="6s", interval="1s")


class Central:
    def __init__(self, fed: Federation) -> None:
        self.proc = subprocess.Popen([*GW, "central", "serve", "-c", str(fed.description)], env=fed.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=fed.dir)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("central listening on http://127.0.0.1:"), line + self._err()
        self.url = line.split()[3]
        self.anchor = Path(line.rsplit(" ", 1)[1].strip())

    def _err(self) -> str:
        if self.proc.poll() is not None and self.proc.stderr is not None:
            return self.proc.stderr.read()
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


@pytest.fixture
def central(fed: Federation) -> Iterator[Central]:
    c = Central(fed)
    try:
        yield c
    finally:
        c.stop()


def until(predicate: Callable[[], object], timeout: float = 20, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def status(env: dict[str, str], config: Path) -> dict[str, object]:
    out = subprocess.run([*GW, "conf", "status", "-c", str(config), "--json"], env=env, capture_output=True,
                         text=True, timeout=60)
    if not out.stdout:
        return {}
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_central_serves_and_the_anchor_and_directory_verify(fed: Federation, central: Central,
                                                              tmp_path: Path) -> None:
    config = gateway_config(fed, tmp_path)
    out = run(fed.env, "conf", "import-anchor", "-c", str(config), str(central.anchor))
    assert f"{central.url}internalconf" in out
    out = run(fed.env, "conf", "download", "-c", str(config))
    assert "installed: version 6" in out
    st = status(fed.env, config)
    assert (st["instance"], st["version"], st["valid"], st["members"], st["security_servers"]) == \
        ("VN-TEST", 6, True, 2, 1)
    assert (st["approved_cas"], st["approved_tsas"], st["global_groups"]) == (1, 1, 1)
    # X-Road's layout on disk.
    conf_dir = tmp_path / "state" / "globalconf"
    assert (conf_dir / "instance-identifier").read_text().strip() == "VN-TEST"
    meta = json.loads((conf_dir / "VN-TEST" / "shared-params.xml.metadata").read_text())
    assert meta["contentIdentifier"] == "SHARED-PARAMETERS" and meta["configurationVersion"] == "6"


def test_wrong_anchor_instance_is_refused(fed: Federation, central: Central, tmp_path: Path) -> None:
    config = gateway_config(fed, tmp_path)
    text = central.anchor.read_text().replace("VN-TEST", "VN-OTHER")
    bad = tmp_path / "other-anchor.xml"
    bad.write_text(text)
    out = subprocess.run([*GW, "conf", "import-anchor", "-c", str(config), str(bad)], env=fed.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "gconf.anchor_instance" in out.stderr


@pytest.mark.e2e
def test_gateway_follows_central_expires_without_it_and_recovers(fed: Federation, tmp_path: Path) -> None:
    central = Central(fed)
    config = gateway_config(fed, tmp_path)
    data = yaml.safe_load(config.read_text())
    data["health"] = {"ok_cache": "0.5s", "failure_cache": "0.5s"}
    config.write_text(yaml.safe_dump(data))
    shutil.copy(fed.hsm.conf, tmp_path / "softhsm2.conf")
    run(fed.env, "conf", "import-anchor", "-c", str(config), str(central.anchor))
    daemon = Daemon(config)
    original = fed.data()
    try:
        ports = daemon.ports()
        assert until(lambda: http_get(ports["health"])[0] == 200, what="healthy gateway")
        assert status(fed.env, config)["members"] == 2

        # A new member appears at the client within one poll of the next generation.
        changed = fed.data()
        changed["members"].append({"member_class": "GOV", "code": "000.00.00.H53", "name": "UBND tinh H53",
                                   "subsystems": ["edoc"]})
        fed.write(changed)
        t0 = time.monotonic()
        until(lambda: status(fed.env, config).get("members") == 3, timeout=10, what="the new member")
        assert time.monotonic() - t0 < 5  # central interval 1 s + client interval 1 s, with slack

        # Without the central the configuration expires (6 s) and traffic must stop.
        central.stop()
        daemon.wait_log(lambda e: e.get("code") == "gconf.unreachable", timeout=10)
        body = until(lambda: (lambda r: r[1] if r[0] == 500 else None)(http_get(ports["health"])), timeout=15,
                     what="health to fail on expiry")
        assert "global configuration: gconf.outdated" in str(body)
        metrics = http_get(ports["metrics"], "/metrics")[1]
        assert "vdxp_globalconf_valid 0.0" in metrics
        assert status(fed.env, config)["valid"] is False

        # The central comes back: the gateway recovers by itself.
        central = Central(fed)
        assert until(lambda: http_get(ports["health"])[0] == 200, timeout=15, what="recovery")
        assert status(fed.env, config)["valid"] is True
        assert daemon.proc.poll() is None
    finally:
        fed.write(original)
        central.stop()
        assert daemon.stop() == 0
