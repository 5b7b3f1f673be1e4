"""The README's main job, ``vdxp-gateway demo``, run as a user runs it, and its artefacts re-checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cryptography import x509

from protocols import hashchain, tsp, xades


def test_demo_runs_every_step_and_leaves_verifiable_artefacts(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    out = subprocess.run([sys.executable, "-m", "gateway", "demo", "--dir", str(work), "--messages", "40"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    steps = re.findall(r"^\[(\d)/8\]", text, re.M)
    assert steps == [str(i) for i in range(1, 9)], text
    assert "status good" in text
    # Batch signing covers the concurrent messages with far fewer HSM operations than messages.
    on = re.findall(r"batch signing on\s+(\d+) HSM operations", text)
    off = re.findall(r"batch signing off\s+(\d+) HSM operations", text)
    assert len(on) == 2 and all(int(n) < 40 for n in on), text
    assert off == ["40", "40"], text
    assert "openssl ts -verify of the same token: Verification: OK" in text
    # Secrets: 0600 files, never printed.
    for name in ("pin", "pin.so", "pki/root.key", "pki/intermediate.key", "pki/ocsp.key"):
        assert (work / name).stat().st_mode & 0o777 == 0o600, name
        assert (work / name).read_text().strip() not in text if name.startswith("pin") else True

    # The sample batch signature verifies on its own, offline.
    sample = work / "sample"
    sig = xades.parse_signature((sample / "signatures.xml").read_bytes())
    xades.verify_signature_value(sig)
    result = (sample / "sig-hashchainresult.xml").read_bytes()
    xades.verify_references(sig, {"/sig-hashchainresult.xml": result}.get)
    chain = (sample / "sig-hashchain.xml").read_bytes()
    # The chain covers one of the demo's messages and no other text.
    member = "VN-TEST/GOV/000.00.00.H41"
    matches = 0
    for i in range(40):
        message = f"<soap>message {i} from {member}</soap>".encode()
        try:
            hashchain.verify_hash_chain(result, {"/sig-hashchain.xml": chain, "/message.xml": message}.get,
                                        {"/message.xml": None})
            matches += 1
        except hashchain.HashChainError:  # other messages do not match
            continue
    assert matches == 1
    tsa_cert = x509.load_pem_x509_certificate((sample / "tsa.pem").read_bytes())
    import hashlib

    token = tsp.verify_token((sample / "timestamp.tst").read_bytes(), digest=hashlib.sha512(result).digest(),
                             hash_name="sha512", tsa_certs=[tsa_cert])
    assert token.signer_cert == tsa_cert


def test_demo_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    out = subprocess.run([sys.executable, "-m", "gateway", "demo", "--dir", str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("error: usage.dir_not_empty:")
