"""``C_InitToken`` and ``C_InitPIN`` through ctypes (python-pkcs11 has neither).

For development tokens (SoftHSM2).  The PINs are passed in memory only: never on a
command line (softhsm2-util would need them in argv or on a terminal).  Runs on the
module's PKCS#11 thread like every other call, so it can share a process with
python-pkcs11 (it then finds the library already initialised and leaves it so).
"""

from __future__ import annotations

import ctypes
from ctypes import Structure, byref, c_char, c_ubyte, c_ulong

from protocols.errors import VdxpError

CKR_OK = 0
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
CKF_TOKEN_INITIALIZED = 0x400
CKF_RW_SESSION = 0x2
CKF_SERIAL_SESSION = 0x4
CKU_SO = 0

_RV_NAMES = {
    0x5: "CKR_GENERAL_ERROR",
    0x6: "CKR_FUNCTION_FAILED",
    0x7: "CKR_ARGUMENTS_BAD",
    0x3: "CKR_SLOT_ID_INVALID",
    0xA0: "CKR_PIN_INCORRECT",
    0xA1: "CKR_PIN_INVALID",
    0xA2: "CKR_PIN_LEN_RANGE",
    0xA4: "CKR_PIN_LOCKED",
    0xB3: "CKR_SESSION_HANDLE_INVALID",
    0xB6: "CKR_SESSION_READ_ONLY",
    0xB7: "CKR_SESSION_EXISTS",
    0xE0: "CKR_TOKEN_NOT_PRESENT",
    0xE1: "CKR_TOKEN_NOT_RECOGNIZED",
    0x100: "CKR_USER_ALREADY_LOGGED_IN",
}


class _Version(Structure):
    _fields_ = (("major", c_ubyte), ("minor", c_ubyte))


class _TokenInfo(Structure):
    _fields_ = (
        ("label", c_char * 32),
        ("manufacturerID", c_char * 32),
        ("model", c_char * 16),
        ("serialNumber", c_char * 16),
        ("flags", c_ulong),
        ("ulMaxSessionCount", c_ulong),
        ("ulSessionCount", c_ulong),
        ("ulMaxRwSessionCount", c_ulong),
        ("ulRwSessionCount", c_ulong),
        ("ulMaxPinLen", c_ulong),
        ("ulMinPinLen", c_ulong),
        ("ulTotalPublicMemory", c_ulong),
        ("ulFreePublicMemory", c_ulong),
        ("ulTotalPrivateMemory", c_ulong),
        ("ulFreePrivateMemory", c_ulong),
        ("hardwareVersion", _Version),
        ("firmwareVersion", _Version),
        ("utcTime", c_char * 16),
    )


class TokenInitError(VdxpError):
    code = "hsm.token_init_failed"


def _check(rv: int, what: str) -> None:
    if rv != CKR_OK:
        name = _RV_NAMES.get(rv, f"0x{rv:x}")
        code = "hsm.pin_invalid" if rv in (0xA1, 0xA2) else "hsm.token_init_failed"
        raise TokenInitError(f"{what} failed: {name}", code=code)


def init_token(module_path: str, label: str, so_pin: str, user_pin: str) -> str:
    """Initialise the first free slot of ``module_path`` as token ``label``.

    Returns the new token's serial number.  Refuses a label that already exists.
    """
    if not label or len(label.encode()) > 32:
        raise TokenInitError("token label must be 1 to 32 bytes", code="hsm.token_label_invalid")
    lib = ctypes.CDLL(module_path)
    for name in ("C_Initialize", "C_GetSlotList", "C_GetTokenInfo", "C_InitToken", "C_OpenSession",
                 "C_Login", "C_InitPIN", "C_Logout", "C_CloseSession", "C_Finalize"):
        getattr(lib, name).restype = c_ulong
    rv = lib.C_Initialize(None)
    initialised_here = rv == CKR_OK
    if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
        _check(rv, "C_Initialize")
    try:
        free_slot = None
        for slot, info in _slots(lib):
            tok_label = info.label.decode("utf-8", "replace").rstrip()
            if info.flags & CKF_TOKEN_INITIALIZED:
                if tok_label == label:
                    raise TokenInitError(f"a token labelled {label!r} already exists",
                                         code="hsm.token_exists")
            elif free_slot is None:
                free_slot = slot
        if free_slot is None:
            raise TokenInitError("no free slot to initialise a token in", code="hsm.no_free_slot")
        so = so_pin.encode()
        user = user_pin.encode()
        padded = (label.encode() + b" " * 32)[:32]
        _check(lib.C_InitToken(c_ulong(free_slot), so, c_ulong(len(so)), padded), "C_InitToken")
        # SoftHSM2 moves the new token to a new slot id: find it by label.
        new_slot = next((s for s, i in _slots(lib)
                     if i.flags & CKF_TOKEN_INITIALIZED and i.label.decode("utf-8", "replace").rstrip() == label),
                    None)
        if new_slot is None:
            raise TokenInitError("initialised token not found afterwards")
        slot = new_slot
        session = c_ulong()
        _check(lib.C_OpenSession(c_ulong(slot), c_ulong(CKF_SERIAL_SESSION | CKF_RW_SESSION), None, None,
                                 byref(session)), "C_OpenSession")
        try:
            _check(lib.C_Login(session, c_ulong(CKU_SO), so, c_ulong(len(so))), "C_Login(SO)")
            _check(lib.C_InitPIN(session, user, c_ulong(len(user))), "C_InitPIN")
            lib.C_Logout(session)
        finally:
            lib.C_CloseSession(session)
        info = _TokenInfo()
        _check(lib.C_GetTokenInfo(c_ulong(slot), byref(info)), "C_GetTokenInfo")
        serial: bytes = info.serialNumber
        return serial.decode("ascii", "replace").strip()
    finally:
        if initialised_here:
            lib.C_Finalize(None)


def _slots(lib: ctypes.CDLL) -> list[tuple[int, _TokenInfo]]:
    count = c_ulong()
    _check(lib.C_GetSlotList(c_ubyte(1), None, byref(count)), "C_GetSlotList")
    ids = (c_ulong * max(count.value, 1))()
    _check(lib.C_GetSlotList(c_ubyte(1), ids, byref(count)), "C_GetSlotList")
    out = []
    for i in range(count.value):
        info = _TokenInfo()
        _check(lib.C_GetTokenInfo(ids[i], byref(info)), "C_GetTokenInfo")
        out.append((int(ids[i]), info))
    return out


__all__ = ["TokenInitError", "init_token"]
