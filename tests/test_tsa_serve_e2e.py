"""``vdxp-gateway tsa serve`` with its key on a SoftHSM2 token, checked by openssl and our client."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_softhsm

GW = [sys.executable, "-m", "gateway"]
OWNER = "VN-TEST/GOV/000.00.00.G22"


def run(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([*GW, *args], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def tsa_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    d = tmp_path_factory.mktemp("tsa-serve")
    hsm = make_softhsm(d / "hsm", label="tsa")
    env = hsm.env()
    tok = ["--token-label", "tsa", "--pin-file", str(hsm.pin_file)]
    run(env, "key", "generate", *tok, "--label", "tsa-key")
    key_id = next(ln.split()[1] for ln in run(env, "token", "list", *tok).splitlines() if "'tsa-key'" in ln)
    run(env, "key", "csr", *tok, "--key-id", key_id, "--profile", "tsa", "--member", OWNER,
        "--member-name", "Test TSA", "--server", "tsa.test", "--out", str(d / "tsa.csr"))
    run(env, "pki", "init", str(d / "pki"))
    run(env, "pki", "issue", str(d / "pki"), "--csr", str(d / "tsa.csr"), "--profile", "tsa",
        "--out", str(d / "tsa.pem"))
    (d / "ca.pem").write_bytes((d / "pki" / "root.pem").read_bytes() + (d / "pki" / "intermediate.pem").read_bytes())
    config = {
        "server": {"instance": "VN-TEST", "owner": OWNER, "server_code": "tsa", "mode": "dedicated",
                   "state_dir": str(d / "state")},
        "tokens": [{"id": "t", "label": "tsa", "pin": {"file": str(hsm.pin_file)}}],
        "auth_key": {"token": "t", "label": "auth"},
        "members": [{"id": OWNER, "name": "VPCP", "sign_key": {"token": "t", "label": "sign"}}],
    }
    (d / "gateway.yaml").write_text(yaml.safe_dump(config))
    return env, d


def test_tsa_serve_tokens_verify_with_openssl_and_our_client(tsa_setup: tuple[dict[str, str], Path]) -> None:
    env, d = tsa_setup
    proc = subprocess.Popen([*GW, "tsa", "serve", "-c", str(d / "gateway.yaml"), "--cert", str(d / "tsa.pem"),
                             "--chain", str(d / "pki" / "intermediate.pem"), "--key-label", "tsa-key",
                             "--listen", "tcp:0:interface=127.0.0.1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("TSA listening on 127.0.0.1:"), line + (proc.stderr.read() if proc.poll() else "")
        url = f"http://{line.rsplit(' ', 1)[1].strip()}/"
        data = d / "document.xml"
        data.write_bytes(b"<message>time-stamp me</message>")
        subprocess.run(["openssl", "ts", "-query", "-data", str(data), "-sha256", "-cert", "-out", str(d / "q.tsq")],
                       check=True, capture_output=True)
        request = urllib.request.Request(url, data=(d / "q.tsq").read_bytes(),
                                         headers={"Content-Type": "application/timestamp-query"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers["Content-Type"] == "application/timestamp-reply"
            (d / "r.tsr").write_bytes(response.read())
        verify = subprocess.run(["openssl", "ts", "-verify", "-data", str(data), "-in", str(d / "r.tsr"),
                                 "-CAfile", str(d / "ca.pem"), "-untrusted", str(d / "tsa.pem")],
                                capture_output=True, text=True)
        assert "Verification: OK" in verify.stdout, verify.stdout + verify.stderr
        ours = run(env, "tsa", "query", "--url", url, "--cert", str(d / "tsa.pem"), "--data", str(data))
        assert "genTime" in ours
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_tsa_serve_with_unknown_key_label_fails_with_coded_line(tsa_setup: tuple[dict[str, str], Path]) -> None:
    env, d = tsa_setup
    out = subprocess.run([*GW, "tsa", "serve", "-c", str(d / "gateway.yaml"), "--cert", str(d / "tsa.pem"),
                          "--key-label", "missing", "--listen", "tcp:0:interface=127.0.0.1"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "error: hsm.key_not_found" in out.stderr
