"""Frozen descriptions of tokens and keys, as the gateway configuration yields them.

These are the hsm-side view of the YAML ``tokens:`` section (like X-Road's
``devices.ini``); :mod:`gateway.config` validates the YAML and builds them.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from protocols.errors import VdxpError

SignMechanism = Literal["rsa-pkcs1", "rsa-pss", "ecdsa", "auto"]

# Where Debian, Ubuntu, Fedora and Alpine put SoftHSM2's PKCS#11 module.
SOFTHSM2_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


class PinError(VdxpError):
    code = "hsm.pin_unavailable"


@dataclass(frozen=True)
class PinSource:
    """Where a token PIN comes from.  Exactly one of the three is set.

    ``file``: a file readable by the owner only (mode 0600 or 0400);
    ``env``: an environment variable name;
    ``credential``: a systemd credential name (``$CREDENTIALS_DIRECTORY/<name>``).
    The PIN itself never appears in argv, in a log line or in an exception message.
    """

    file: Path | None = None
    env: str | None = None
    credential: str | None = None

    def describe(self) -> str:
        if self.file is not None:
            return f"file {self.file}"
        if self.env is not None:
            return f"environment variable {self.env}"
        return f"systemd credential {self.credential}"

    def problem(self) -> str | None:
        """A sentence naming why the PIN cannot be read, or None if it can."""
        if self.file is not None:
            try:
                st = self.file.stat()
            except OSError as exc:
                return f"file {self.file} cannot be read: {exc.strerror}"
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                return f"file {self.file} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}; use 0600)"
            if not os.access(self.file, os.R_OK):
                return f"file {self.file} is not readable by this user"
            return None
        if self.env is not None:
            if not os.environ.get(self.env):
                return f"environment variable {self.env} is not set"
            return None
        if self.credential is not None:
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                return f"systemd credential {self.credential}: $CREDENTIALS_DIRECTORY is not set"
            if not (Path(directory) / self.credential).is_file():
                return f"systemd credential {self.credential} not found in $CREDENTIALS_DIRECTORY"
            return None
        return "no PIN source given (file, env or credential)"

    def read(self) -> str:
        """Return the PIN.  Raises :class:`PinError` naming the source, never the PIN."""
        problem = self.problem()
        if problem is not None:
            raise PinError(f"PIN unavailable: {problem}")
        if self.file is not None:
            value = self.file.read_text(encoding="utf-8")
        elif self.env is not None:
            value = os.environ[self.env]
        else:
            value = (Path(os.environ["CREDENTIALS_DIRECTORY"]) / str(self.credential)).read_text(encoding="utf-8")
        value = value.strip("\r\n")
        if not value:
            raise PinError(f"PIN unavailable: {self.describe()} is empty")
        return value


@dataclass(frozen=True)
class TokenSpec:
    """One PKCS#11 token: the equivalent of a ``devices.ini`` section.

    ``module`` is the PKCS#11 library path, or ``None`` to find SoftHSM2 automatically.
    The token is chosen by ``label`` or ``serial`` (at least one).
    """

    id: str
    pin: PinSource
    module: str | None = None
    label: str | None = None
    serial: str | None = None
    sign_mechanism: SignMechanism = "auto"
    batch_signing: bool = True
    timeout_seconds: float = 10.0

    def module_path(self) -> str:
        return resolve_module(self.module)


def resolve_module(module: str | None) -> str:
    """The PKCS#11 library to load: ``module`` if given, else SoftHSM2 where it is installed.

    ``$VDXP_PKCS11_MODULE`` overrides the automatic search.
    """
    if module:
        if not Path(module).is_file():
            raise VdxpError(f"PKCS#11 module {module} does not exist", code="hsm.module_not_found")
        return module
    env = os.environ.get("VDXP_PKCS11_MODULE")
    if env:
        return resolve_module(env)
    for candidate in SOFTHSM2_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    raise VdxpError(
        "SoftHSM2 PKCS#11 module not found (install softhsm2 or set tokens[].module)",
        code="hsm.module_not_found",
    )


@dataclass(frozen=True)
class KeyRef:
    """A key on a token, by CKA_ID (hex) or CKA_LABEL."""

    token: str
    key_id: str | None = None
    label: str | None = None
