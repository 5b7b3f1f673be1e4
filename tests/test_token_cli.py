"""The token, key and cert commands through the real CLI, on a fresh SoftHSM2 token per test module."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

GW = [sys.executable, "-m", "gateway"]
MEMBER = "VN-TEST/GOV/000.00.00.H41"


@pytest.fixture(scope="module")
def hsm_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    d = tmp_path_factory.mktemp("tokcli")
    (d / "tokens").mkdir()
    (d / "softhsm2.conf").write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\n"
                                     "log.level = ERROR\n")
    return {**os.environ, "SOFTHSM2_CONF": str(d / "softhsm2.conf")}, d


def gw(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([*GW, *args], env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert out.returncode == 0, out.stderr
    return out


def tok(d: Path) -> list[str]:
    return ["--token-label", "gw", "--pin-file", str(d / "pin")]


@pytest.fixture(scope="module")
def initialised(hsm_env: tuple[dict[str, str], Path]) -> tuple[dict[str, str], Path]:
    env, d = hsm_env
    out = gw(env, "token", "init", "--label", "gw", "--pin-file", str(d / "pin"), "--generate-pins")
    assert "initialised" in out.stdout
    return env, d


def test_init_writes_pin_files_0600_and_refuses_duplicates(initialised: tuple[dict[str, str], Path]) -> None:
    env, d = initialised
    assert (d / "pin").stat().st_mode & 0o777 == 0o600
    assert (d / "pin.so").stat().st_mode & 0o777 == 0o600
    pin = (d / "pin").read_text().strip()
    again = gw(env, "token", "init", "--label", "gw", "--pin-file", str(d / "pin"), "--pin-env", "X", ok=False)
    assert again.returncode in (1, 2)
    assert pin not in again.stderr + again.stdout


def test_generate_csr_issue_import_list(initialised: tuple[dict[str, str], Path]) -> None:
    env, d = initialised
    gw(env, "key", "generate", *tok(d), "--usage", "sign", "--member", MEMBER)
    gw(env, "key", "generate", *tok(d), "--usage", "auth", "--member", "VN-TEST/GOV/000.00.00.G22", "--type", "ec")
    listing = gw(env, "token", "list", *tok(d)).stdout
    sign_id = re.search(r"key ([0-9a-f]{32})  RSA-2048  usage SIGN  member " + re.escape(MEMBER), listing)
    auth_id = re.search(r"key ([0-9a-f]{32})  EC-256  usage AUTH  member VN-TEST/GOV/000.00.00.G22", listing)
    assert sign_id and auth_id, listing
    gw(env, "key", "csr", *tok(d), "--key-id", sign_id.group(1), "--profile", "sign", "--member", MEMBER,
       "--member-name", "UBND tinh H41", "--out", str(d / "sign.csr"))
    gw(env, "key", "csr", *tok(d), "--key-id", auth_id.group(1), "--profile", "auth",
       "--member", "VN-TEST/GOV/000.00.00.G22", "--member-name", "VPCP", "--server", "gw1.example.vn",
       "--out", str(d / "auth.csr"))
    verify = subprocess.run(["openssl", "req", "-in", str(d / "sign.csr"), "-verify", "-noout", "-subject"],
                            capture_output=True, text=True)
    assert "verify OK" in verify.stdout + verify.stderr
    assert "serialNumber = 000.00.00.H41" in verify.stdout and "businessCategory = GOV" in verify.stdout
    gw(env, "pki", "init", str(d / "pki"))
    gw(env, "pki", "issue", str(d / "pki"), "--csr", str(d / "sign.csr"), "--profile", "sign",
       "--out", str(d / "sign.pem"))
    gw(env, "pki", "issue", str(d / "pki"), "--csr", str(d / "auth.csr"), "--profile", "auth",
       "--out", str(d / "auth.pem"))
    gw(env, "cert", "import", *tok(d), str(d / "sign.pem"))
    gw(env, "cert", "import", *tok(d), str(d / "auth.pem"))
    certs = gw(env, "cert", "list", *tok(d)).stdout
    assert re.search(sign_id.group(1) + r"  SIGN  .*serialNumber=000.00.00.H41.* (36[45]) days", certs), certs
    assert re.search(auth_id.group(1) + r"  AUTH  .*CN=gw1.example.vn", certs), certs
    dup = gw(env, "cert", "import", *tok(d), str(d / "sign.pem"), ok=False)
    assert dup.returncode == 1 and "hsm.cert_exists" in dup.stderr


def test_errors_are_one_coded_line(initialised: tuple[dict[str, str], Path]) -> None:
    env, d = initialised
    bad = d / "bad-pin"
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not-the-pin\n")
    os.close(fd)
    cases = [
        (["token", "list", "--token-label", "gw", "--pin-file", str(bad)], 1, "hsm.pin_incorrect"),
        (["token", "list", "--token-label", "nope", "--pin-file", str(d / "pin")], 1, "hsm.token_not_found"),
        (["cert", "import", *tok(d), str(d / "softhsm2.conf")], 1, "cert.malformed"),
        (["key", "csr", *tok(d), "--key-id", "00" * 16, "--profile", "sign", "--member", MEMBER,
          "--member-name", "x"], 1, "hsm.key_not_found"),
        (["key", "generate", *tok(d), "--usage", "sign", "--member", "VN-TEST/GOV/bad code!"], 2,
         "usage.member_invalid"),
        (["token", "list"], 2, "usage.token_missing"),
        (["key", "frobnicate"], 2, "usage.invalid"),
    ]
    for args, code, text in cases:
        out = gw(env, *args, ok=False)
        assert out.returncode == code, (args, out.returncode, out.stderr)
        lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]
        assert len(lines) == 1 and text in lines[0], (args, out.stderr)
        assert "not-the-pin" not in out.stderr
    open_pin = d / "open-pin"
    open_pin.write_text("x")
    open_pin.chmod(0o644)
    out = gw(env, "token", "list", "--token-label", "gw", "--pin-file", str(open_pin), ok=False)
    assert out.returncode == 1 and "readable by others" in out.stderr


def test_token_vanishing_and_returning_recovers_without_restart(initialised: tuple[dict[str, str], Path]) -> None:
    env, d = initialised
    # A key of its own, so the test does not depend on the keys an earlier test generated.
    gw(env, "key", "generate", *tok(d), "--usage", "sign", "--member", "VN-TEST/GOV/000.00.00.G33")
    script = textwrap.dedent("""
        import hashlib, shutil, sys, time
        from pathlib import Path
        from hsm.config import PinSource, TokenSpec
        from hsm.token import Token
        d = Path(sys.argv[1])
        t = Token(TokenSpec(id="gw", label="gw", pin=PinSource(file=d / "pin")))
        key = t.list_keys()[0]
        digest = hashlib.sha256(b"x").digest()
        mech = "ecdsa" if key.key_type == "ec" else "rsa-pkcs1"
        print("before", len(t.sign(key.key_id, mech, digest, "sha256")) > 0)
        tokdir = next((d / "tokens").iterdir())
        shutil.move(str(tokdir), str(d / "moved"))
        try:
            t.sign(key.key_id, mech, digest, "sha256")
        except Exception as e:
            print("gone", e.code)
        shutil.move(str(d / "moved"), str(tokdir))
        time.sleep(2.1)
        print("back", len(t.sign(key.key_id, mech, digest, "sha256")) > 0)
    """)
    out = subprocess.run([sys.executable, "-c", script, str(d)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split("\n")[:3] == ["before True", "gone hsm.token_not_found", "back True"], out.stderr
