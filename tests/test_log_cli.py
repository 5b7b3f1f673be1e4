"""``vdxp-gateway log verify`` as a real process: containers and archives of X-Road's vectors and
archives built here, exit codes, one coded error line, progress only on a terminal."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from protocols.logarchive import build_archive

ROOT = Path(__file__).resolve().parent.parent
XROAD = ROOT / "tests" / "vectors" / "xroad"
CONTAINERS = XROAD / "asic" / "verifier"
ARCHIVES = XROAD / "logarchive"
CONF = XROAD / "globalconf" / "globalconf_good2_v3"
GW = [sys.executable, "-m", "gateway", "log", "verify"]
ARCHIVE_EXPECT: list[dict[str, Any]] = json.loads((ARCHIVES / "expectations.json").read_text())["cases"]
FIRST_DIGEST = ("9011ab557706b5050584d6888af7b390e5350f4edad296bd7a582aa51732aac7f49a4ec44dd361027945ade0de8b8cf607f"
                "b7b7d11f17b0560d44b965c358eaa")


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GW, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120)


def _error_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr
    return errors[0]


def test_container_ok() -> None:
    out = run(CONTAINERS / "valid-signed-message.asice", "--conf", CONF)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout.splitlines() == [
        "ok     valid-signed-message.asice: DEV/COM/4321/TestClient (SOAP request "
        "dd19fe68-7d37-41bd-b79c-8948ccdb36da), signed by 2.5.4.5=DEV/ss2/COM,CN=4321,O=Test client,C=FI, "
        "time-stamped 2024-12-05T13:16:35Z by Test TSA"]


def test_container_batch_ok() -> None:
    out = run(CONTAINERS / "valid-signed-hashchain.asice", "--conf", CONF)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok     valid-signed-hashchain.asice: DEV/COM/4321/TestClient (SOAP request")
    assert out.stdout.rstrip().endswith("time-stamped 2024-12-05T12:37:50Z by Test TSA; batch signature; "
                                        "unverified hash chain inputs: /attachment1")


@pytest.mark.parametrize(("name", "xroad", "code"), [
    ("wrong-message.asice", "InvalidSignatureValue", "signature.value_invalid"),
    ("invalid-hashchain-modified-message.asice", "MalformedSignature.HashChainUnusedInputs",
     "signature.hash_chain_invalid"),
    ("invalid-incorrect-references.asice", "MalformedSignature", "asic.signature_references"),
    ("attachments.asice", "AsicMessageNotFound", "asic.message_not_found"),
])
def test_container_invalid(name: str, xroad: str, code: str) -> None:
    out = run(CONTAINERS / name, "--conf", CONF)
    assert out.returncode == 1
    assert _error_line(out).startswith(f"error: {code}: ")
    assert out.stdout.startswith(f"FAILED {name}: {xroad}: {code}: ")


def test_archive_vectors_without_conf() -> None:
    """Each archive case of the expectations, through the command (chain only: no --conf)."""
    for case in ARCHIVE_EXPECT:
        if case["archive"] is None:
            continue
        expect = case["expect"]
        previous = str(case["previous_digest"])
        chain = ["--first"] if previous.startswith("none") else ([] if previous.startswith("(") else
                                                                  ["--previous", previous])
        out = run(ARCHIVES / case["archive"], *chain)
        if expect["result"] == "usage_error":
            assert out.returncode == 2 and _error_line(out).startswith("error: usage.previous_missing: "), out
            continue
        if expect["result"] == "ok":
            assert out.returncode == 0, (case["id"], out.stderr)
            assert f"last digest: {expect['last_digest']}" in out.stdout.splitlines()
            assert out.stdout.splitlines()[-1] == (f"summary: {expect['entries']} container(s) read, 0 unreadable; "
                                                   "signatures not verified (give --conf DIR)")
            continue
        assert out.returncode == 1, (case["id"], out.stdout)
        assert _error_line(out).startswith("error: logarchive."), out.stderr
        assert f"FAILED {case['archive']}: " in out.stdout


def test_missing_arguments() -> None:
    out = run()
    assert out.returncode == 2 and _error_line(out).startswith("error: usage.invalid: ")
    out = run(ARCHIVES / "message-archive-1.zip", "--first", "--previous", FIRST_DIGEST)
    assert out.returncode == 2 and "not allowed with" in _error_line(out)


@pytest.mark.parametrize(("args", "code"), [
    (["message-archive-1.zip", "--previous", "xyz"], "usage.previous_invalid"),
    (["message-archive-1.zip.gpg", "--first"], "usage.encrypted_archive"),
    (["no-such.zip", "--first"], "usage.file_unreadable"),
    (["@valid-signed-message.asice"], "usage.conf_missing"),
    (["@valid-signed-message.asice", "--first", "--conf", str(CONF)], "usage.invalid"),
    (["@valid-signed-message.asice", "--conf", str(ROOT / "tests")], "gconf.instance_identifier_missing"),
    (["@valid-signed-message.asice", "--conf", str(ROOT / "no-such-dir")], "gconf.dir_invalid"),
])
def test_usage_errors(args: list[str], code: str) -> None:
    first = args[0]
    path = CONTAINERS / first[1:] if first.startswith("@") else ARCHIVES / first
    out = run(path, *args[1:])
    assert out.returncode == 2, out
    assert _error_line(out).startswith(f"error: {code}: ")
    assert out.stdout == ""


def _archive_of(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "mlog-20241205000000-20241205235959-x.zip"
    with path.open("wb") as fp:
        build_archive(fp, [(f"q{i}-request-{n}", (CONTAINERS / n).read_bytes()) for i, n in enumerate(names)],
                      created=datetime(2024, 12, 6, tzinfo=UTC))
    return path


VALID = ["valid-signed-message.asice", "valid-non-batch-rest.asice", "valid-non-batch-soap-attachments.asice",
         "valid-signed-hashchain.asice", "valid-batch-ts.asice", "invalid-not-signed-hashchain.asice"]


def test_kind_by_content_for_other_names(tmp_path: Path) -> None:
    container = tmp_path / "evidence.bin"
    container.write_bytes((CONTAINERS / "valid-batch-ts.asice").read_bytes())
    out = run(container, "--conf", CONF)
    assert out.returncode == 0 and out.stdout.startswith("ok     evidence.bin: DEV/COM/4321/TestClient"), out
    archive = tmp_path / "archive.bin"
    archive.write_bytes((ARCHIVES / "message-archive-0.zip").read_bytes())
    out = run(archive, "--first")
    assert out.returncode == 0 and f"last digest: {FIRST_DIGEST}" in out.stdout, out
    out = run(archive)
    assert out.returncode == 2 and _error_line(out).startswith("error: usage.previous_missing: ")


def test_archive_with_conf_verifies_every_container(tmp_path: Path) -> None:
    out = run(_archive_of(tmp_path, VALID), "--first", "--conf", CONF)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # no progress: stderr is not a terminal
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:6]] == [f"ok     q{i}-request-{n}" for i, n in enumerate(VALID)]
    assert lines[6].startswith("ok     mlog-20241205000000-20241205235959-x.zip: linkinginfo chain of 6 container(s) "
                               "verifies (SHA-512, first archive)")
    assert lines[7].startswith("last digest: ") and len(lines[7]) == len("last digest: ") + 128
    assert lines[8] == "summary: 6 container(s), 6 verified, 0 failed"


def test_archive_with_a_bad_container(tmp_path: Path) -> None:
    names = [*VALID[:2], "wrong-message.asice", "valid-batch-ts.asice"]
    out = run(_archive_of(tmp_path, names), "--first", "--conf", CONF)
    assert out.returncode == 1
    assert _error_line(out) == ("error: log.container_invalid: 1 of 4 container(s) in "
                                "mlog-20241205000000-20241205235959-x.zip do not verify; first: "
                                "q2-request-wrong-message.asice: signature.value_invalid: digest of reference "
                                "/message.xml does not match; signature is not valid")
    assert "FAILED q2-request-wrong-message.asice: InvalidSignatureValue: signature.value_invalid: " in out.stdout
    assert out.stdout.splitlines()[-1] == "summary: 4 container(s), 3 verified, 1 failed"


def test_archive_of_another_federation_with_conf() -> None:
    """message-archive-0.zip holds a container of instance CS: its TSA is not in the DEV configuration."""
    out = run(ARCHIVES / "message-archive-0.zip", "--first", "--conf", CONF)
    assert out.returncode == 1
    assert "error: log.container_invalid: 1 of 1 container(s)" in _error_line(out)
    assert "InternalError: asic.tsa_not_approved: " in out.stdout
    assert f"last digest: {FIRST_DIGEST}" in out.stdout  # the chain itself verifies


def test_progress_only_on_a_terminal(tmp_path: Path) -> None:
    archive = _archive_of(tmp_path, VALID[:3])
    main_fd, sub_fd = pty.openpty()
    try:
        proc = subprocess.run([*GW, str(archive), "--first", "--conf", str(CONF)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=sub_fd, text=True, timeout=120)
        os.close(sub_fd)
        sub_fd = -1
        chunks = []
        while True:
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if sub_fd >= 0:
            os.close(sub_fd)
        os.close(main_fd)
    terminal = b"".join(chunks).decode()
    assert proc.returncode == 0
    assert "verifying: 1/3 containers" in terminal and "verifying: 3/3 containers" in terminal
    assert terminal.endswith("\r\x1b[K")  # cleared at the end
    assert "verifying" not in proc.stdout


def test_module_entry_point_help() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway", "log", "verify", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "--previous HEX" in out.stdout and "--conf DIR" in out.stdout
    assert io.StringIO(out.stdout).readline().startswith("usage: vdxp-gateway log verify")
