"""Shared test fixtures.  Area-specific helpers live in ``tests/<area>_support.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# A copy of ../shared/vectors (X-Road's own conformance data), so a bare clone tests itself.
VECTORS = ROOT / "tests" / "vectors"


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The X-Road conformance vectors (copied from ``../shared/vectors``)."""
    assert VECTORS.is_dir(), f"conformance vectors not found at {VECTORS}"
    return VECTORS


# -- SoftHSM2 ------------------------------------------------------------------------------
# One SoftHSM2 configuration per test process: SoftHSM reads $SOFTHSM2_CONF once, when the
# PKCS#11 module is first initialised.  Subprocess tests make their own.

import os  # noqa: E402
from dataclasses import dataclass  # noqa: E402

SO_PIN = "so-pin-5678"
USER_PIN = "user-pin-1234"


@dataclass(frozen=True)
class SoftHsm:
    conf: Path
    module: str
    pin_file: Path
    label: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}


def make_softhsm(directory: Path, label: str = "test") -> SoftHsm:
    """A SoftHSM2 config in ``directory`` with one initialised token (done in a subprocess,
    so this process's PKCS#11 state is untouched)."""
    import subprocess
    import sys

    from hsm.config import resolve_module

    tokens = directory / "tokens"
    tokens.mkdir(parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
                    "slots.removable = false\n")
    pin_file = directory / "pin"
    fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, USER_PIN.encode())
    os.close(fd)
    module = resolve_module(None)
    code = ("import sys; from hsm.inittoken import init_token; "
            "init_token(sys.argv[1], sys.argv[2], sys.stdin.readline().strip(), sys.stdin.readline().strip())")
    subprocess.run([sys.executable, "-c", code, module, label], input=f"{SO_PIN}\n{USER_PIN}\n", text=True,
                   env={**os.environ, "SOFTHSM2_CONF": str(conf)}, check=True)
    return SoftHsm(conf=conf, module=module, pin_file=pin_file, label=label)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    """The in-process SoftHSM2 token (label ``test``); sets $SOFTHSM2_CONF for this process."""
    hsm = make_softhsm(tmp_path_factory.mktemp("softhsm"))
    os.environ["SOFTHSM2_CONF"] = str(hsm.conf)
    return hsm
