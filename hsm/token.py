"""PKCS#11 tokens through python-pkcs11.

A :class:`Token` keeps one logged-in session per token (login state belongs to the
application, not the session: PLATFORM-NOTES §2) and caches key handles.  Every
method whose name starts with ``t_`` must run on the module's thread
(:class:`hsm.p11thread.ModuleThread`); the plain-named wrappers submit them there and
wait, for the CLI; the signer uses :func:`hsm.p11thread.deferred_call`.

After a token error (session closed, device removed, token re-inserted) the next
call logs in again and reopens the session, without a restart.

Key conventions on the token: ``CKA_ID`` is a random 16-byte id shown in hex;
``CKA_LABEL`` is ``sign:<member id>`` or ``auth:<member id>`` for keys generated with
a usage (the usage and owning member that ``token list`` shows), or any label.  A
certificate is stored as a ``CKO_CERTIFICATE`` object with the ``CKA_ID`` of its key.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hsm.config import TokenSpec
from hsm.p11thread import ModuleThread
from protocols.errors import VdxpError

# DER DigestInfo prefixes (RFC 8017 §9.2 note 1): CKM_RSA_PKCS signs DigestInfo || digest.
DIGEST_INFO_PREFIX = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}

USAGES = ("sign", "auth")
_LABEL_RE = re.compile(r"^(sign|auth):(.+)$")


class HsmError(VdxpError):
    code = "hsm.error"
    xroad_code = "Signer.InternalError"


@dataclass(frozen=True)
class KeyInfo:
    """A key pair on a token, as ``token list`` shows it."""

    token: str
    key_id: str
    label: str
    key_type: str  # "rsa" | "ec"
    bits: int
    public_key_der: bytes = field(repr=False)
    certificates: tuple[x509.Certificate, ...] = ()

    @property
    def usage(self) -> str | None:
        m = _LABEL_RE.match(self.label)
        return m.group(1).upper() if m else None

    @property
    def member(self) -> str | None:
        m = _LABEL_RE.match(self.label)
        return m.group(2) if m else None

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        key = serialization.load_der_public_key(self.public_key_der)
        assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
        return key


def _spki(pub: Any) -> tuple[bytes, str, int]:
    """SubjectPublicKeyInfo DER, key type and size of a PKCS#11 public key object."""
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_ec_public_key

    if pub.key_type == KeyType.RSA:
        n = int.from_bytes(pub[Attribute.MODULUS], "big")
        e = int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big")
        key = rsa.RSAPublicNumbers(e, n).public_key()
        return key.public_bytes(serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo), "rsa", key.key_size
    if pub.key_type == KeyType.EC:
        der = bytes(encode_ec_public_key(pub))
        loaded = serialization.load_der_public_key(der)
        assert isinstance(loaded, ec.EllipticCurvePublicKey)
        return der, "ec", loaded.curve.key_size
    raise HsmError(f"unsupported key type {pub.key_type!r}", code="hsm.key_type_unsupported")


def map_pkcs11_error(exc: BaseException, spec: TokenSpec) -> VdxpError:
    """A coded error for a python-pkcs11 exception (never mentions the PIN)."""
    import pkcs11.exceptions as p11e

    name = type(exc).__name__
    tok = spec.label or spec.serial or spec.id
    if isinstance(exc, VdxpError):
        return exc
    if isinstance(exc, p11e.NoSuchToken):
        return HsmError(f"token {tok!r} not found in {spec.module_path()}", code="hsm.token_not_found")
    if isinstance(exc, p11e.PinIncorrect):
        return HsmError(f"wrong PIN for token {tok!r} (from {spec.pin.describe()})", code="hsm.pin_incorrect")
    if isinstance(exc, p11e.PinLocked):
        return HsmError(f"PIN of token {tok!r} is locked", code="hsm.pin_locked")
    if isinstance(exc, p11e.NoSuchKey):
        return HsmError(f"key not found on token {tok!r}", code="hsm.key_not_found")
    if isinstance(exc, p11e.TokenNotPresent | p11e.DeviceRemoved | p11e.TokenNotRecognised):
        return HsmError(f"token {tok!r} is not present", code="hsm.token_not_present")
    return HsmError(f"PKCS#11 error on token {tok!r}: {name}", code="hsm.pkcs11_error")


def _reconnectable(exc: BaseException) -> bool:
    import pkcs11.exceptions as p11e

    return isinstance(exc, p11e.SessionHandleInvalid | p11e.SessionClosed | p11e.DeviceRemoved
                      | p11e.TokenNotPresent | p11e.UserNotLoggedIn | p11e.DeviceError
                      | p11e.GeneralError | p11e.ObjectHandleInvalid | p11e.KeyHandleInvalid
                      | p11e.DeviceMemory | p11e.FunctionFailed)


class Token:
    """One configured token.  See the module docstring for the threading rule."""

    def __init__(self, spec: TokenSpec, thread: ModuleThread | None = None) -> None:
        self.spec = spec
        self.thread = thread or ModuleThread.for_module(spec.module_path())
        self._token: Any = None
        self._session: Any = None
        self._keys: dict[str, Any] = {}
        self._generation = -1
        self.reconnects = 0

    # -- sync wrappers (CLI) ------------------------------------------------------------

    def call(self, fn: Any, *args: Any) -> Any:
        return self.thread.call(fn, *args, timeout=max(self.spec.timeout_seconds, 60.0))

    def info(self) -> dict[str, str]:
        result: dict[str, str] = self.call(self.t_info)
        return result

    def list_keys(self) -> list[KeyInfo]:
        result: list[KeyInfo] = self.call(self.t_list_keys)
        return result

    def generate_key(self, key_type: str = "rsa", *, bits: int = 2048, usage: str | None = None,
                     member: str | None = None, label: str | None = None) -> KeyInfo:
        result: KeyInfo = self.call(self.t_generate_key, key_type, bits, usage, member, label)
        return result

    def find_key(self, *, key_id: str | None = None, label: str | None = None) -> KeyInfo:
        result: KeyInfo = self.call(self.t_find_key, key_id, label)
        return result

    def sign(self, key_id: str, mechanism: str, digest: bytes, hash_name: str) -> bytes:
        result: bytes = self.call(self.t_sign, key_id, mechanism, digest, hash_name)
        return result

    def import_certificate(self, cert: x509.Certificate) -> KeyInfo:
        result: KeyInfo = self.call(self.t_import_certificate, cert)
        return result

    # -- session management (module thread) ---------------------------------------------

    def _open(self) -> Any:
        if self._session is not None and self._generation == self.thread.generation:
            return self._session
        self._session, self._keys = None, {}
        self._generation = self.thread.generation
        lib = self.thread.lib()
        kwargs: dict[str, Any] = {}
        if self.spec.label:
            kwargs["token_label"] = self.spec.label
        if self.spec.serial:
            kwargs["token_serial"] = self.spec.serial.encode()
        if not kwargs:
            raise HsmError(f"token {self.spec.id!r} has neither label nor serial", code="hsm.token_unspecified")
        pin = self.spec.pin.read()
        try:
            self._token = lib.get_token(**kwargs)
            try:
                self._session = self._token.open(user_pin=pin, rw=True)
            except Exception as exc:
                import pkcs11.exceptions as p11e

                if not isinstance(exc, p11e.UserAlreadyLoggedIn):
                    raise
                # Logged in by an earlier session of this process: a session without PIN shares it.
                self._session = self._token.open(rw=True)
        except Exception as exc:
            self._token = None
            raise map_pkcs11_error(exc, self.spec) from exc
        finally:
            del pin
        return self._session

    def _reset(self) -> None:
        session, self._session, self._keys = self._session, None, {}
        if session is not None:
            try:
                session.close()
            except Exception:  # noqa: S110 - the session is already dead
                pass

    def _run(self, op: Any, *args: Any) -> Any:
        """Run ``op(session, *args)``, recovering from session and device errors.

        First a new login session; if that fails too, the module is initialised again
        (a token that vanished and came back is only seen after that).
        """
        last = 3
        for attempt in range(1, last + 1):
            try:
                session = self._open()
                return op(session, *args)
            except Exception as exc:
                cause = exc.__cause__ if isinstance(exc, HsmError) and exc.__cause__ is not None else exc
                if attempt < last and _reconnectable(cause):
                    self._reset()
                    self.reconnects += 1
                    if attempt == 2:
                        self.thread.reinitialize()
                    continue
                if attempt == 1 and _token_missing(cause) and self.thread.reinitialize():
                    # A token that was removed and re-inserted is only seen after re-initialisation.
                    self._reset()
                    self.reconnects += 1
                    continue
                if isinstance(exc, VdxpError) or not _is_pkcs11_error(exc):
                    raise
                raise map_pkcs11_error(exc, self.spec) from None
        raise AssertionError("unreachable")

    def t_close(self) -> None:
        self._reset()

    # -- operations (module thread) -------------------------------------------------------

    def t_info(self) -> dict[str, str]:
        self._open()
        tok = self._token
        return {
            "id": self.spec.id,
            "label": tok.label,
            "serial": tok.serial.decode("ascii", "replace").strip() if isinstance(tok.serial, bytes)
            else str(tok.serial),
            "manufacturer": tok.manufacturer_id,
            "model": tok.model,
            "module": self.spec.module_path(),
        }

    def _key_info(self, session: Any, pub: Any, certs: dict[bytes, list[x509.Certificate]]) -> KeyInfo:
        der, kt, bits = _spki(pub)
        kid = bytes(pub.id)
        return KeyInfo(token=self.spec.id, key_id=kid.hex(), label=pub.label or "", key_type=kt, bits=bits,
                       public_key_der=der, certificates=tuple(certs.get(kid, ())))

    def _certs(self, session: Any) -> dict[bytes, list[x509.Certificate]]:
        from pkcs11 import Attribute, ObjectClass

        out: dict[bytes, list[x509.Certificate]] = {}
        for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}):
            try:
                cert = x509.load_der_x509_certificate(bytes(obj[Attribute.VALUE]))
            except ValueError:
                continue
            out.setdefault(bytes(obj[Attribute.ID]), []).append(cert)
        return out

    def t_list_keys(self) -> list[KeyInfo]:
        from pkcs11 import Attribute, ObjectClass

        def op(session: Any) -> list[KeyInfo]:
            certs = self._certs(session)
            return [self._key_info(session, pub, certs)
                    for pub in session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY})]

        result: list[KeyInfo] = self._run(op)
        return sorted(result, key=lambda k: (k.label, k.key_id))

    def t_find_key(self, key_id: str | None, label: str | None) -> KeyInfo:
        matches = [k for k in self.t_list_keys()
                   if (key_id is None or k.key_id == key_id.lower()) and (label is None or k.label == label)]
        what = f"id {key_id}" if key_id else f"label {label!r}"
        if not matches:
            raise HsmError(f"no key with {what} on token {self.spec.id!r}", code="hsm.key_not_found")
        if len(matches) > 1:
            raise HsmError(f"{len(matches)} keys with {what} on token {self.spec.id!r}; use the key id",
                           code="hsm.key_ambiguous")
        return matches[0]

    def t_generate_key(self, key_type: str, bits: int, usage: str | None, member: str | None,
                       label: str | None) -> KeyInfo:
        from pkcs11 import Attribute, KeyType
        from pkcs11.util.ec import encode_named_curve_parameters

        if usage is not None and usage not in USAGES:
            raise HsmError(f"key usage must be one of {', '.join(USAGES)}", code="hsm.usage_invalid")
        if label is None:
            if usage is None or member is None:
                raise HsmError("a key needs a label, or a usage and a member", code="hsm.label_missing")
            label = f"{usage}:{member}"
        kid = os.urandom(16)
        priv_tmpl = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True,
                     Attribute.DECRYPT: False, Attribute.UNWRAP: False, Attribute.DERIVE: False}
        pub_tmpl = {Attribute.VERIFY: True, Attribute.ENCRYPT: False, Attribute.WRAP: False}

        def op(session: Any) -> KeyInfo:
            if key_type == "rsa":
                if bits < 2048:
                    raise HsmError("RSA keys must have at least 2048 bits", code="hsm.key_size_invalid")
                pub, _priv = session.generate_keypair(KeyType.RSA, bits, id=kid, label=label, store=True,
                                                      private_template=priv_tmpl, public_template=pub_tmpl)
            elif key_type == "ec":
                params = session.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True)
                pub, _priv = params.generate_keypair(id=kid, label=label, store=True,
                                                     private_template=priv_tmpl, public_template=pub_tmpl)
            else:
                raise HsmError(f"key type must be rsa or ec, not {key_type!r}", code="hsm.key_type_unsupported")
            return self._key_info(session, pub, {})

        result: KeyInfo = self._run(op)
        return result

    def _private_key(self, session: Any, key_id: str) -> Any:
        from pkcs11 import ObjectClass

        key = self._keys.get(key_id)
        if key is None:
            key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=bytes.fromhex(key_id))
            self._keys[key_id] = key
        return key

    def t_sign(self, key_id: str, mechanism: str, digest: bytes, hash_name: str) -> bytes:
        """Sign a precomputed digest.  ECDSA returns raw ``r || s`` as the token does."""
        from pkcs11 import MGF, Mechanism

        hash_name = hash_name.lower().replace("-", "")

        def op(session: Any) -> bytes:
            key = self._private_key(session, key_id)
            if mechanism == "rsa-pkcs1":
                sig = key.sign(DIGEST_INFO_PREFIX[hash_name] + digest, mechanism=Mechanism.RSA_PKCS)
            elif mechanism == "rsa-pss":
                mech_hash = {"sha256": (Mechanism.SHA256, MGF.SHA256), "sha384": (Mechanism.SHA384, MGF.SHA384),
                             "sha512": (Mechanism.SHA512, MGF.SHA512)}[hash_name]
                sig = key.sign(digest, mechanism=Mechanism.RSA_PKCS_PSS,
                               mechanism_param=(mech_hash[0], mech_hash[1], len(digest)))
            elif mechanism == "ecdsa":
                sig = key.sign(digest, mechanism=Mechanism.ECDSA)
            else:
                raise HsmError(f"unknown sign mechanism {mechanism!r}", code="hsm.mechanism_invalid")
            return bytes(sig)

        result: bytes = self._run(op)
        return result

    def t_import_certificate(self, cert: x509.Certificate) -> KeyInfo:
        """Store ``cert`` on the token next to the key whose public key it certifies."""
        from pkcs11 import Attribute, CertificateType, ObjectClass

        spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        keys = [k for k in self.t_list_keys() if k.public_key_der == spki]
        if not keys:
            raise HsmError("no key on the token matches the certificate's public key", code="hsm.key_not_found")
        key = keys[0]
        der = cert.public_bytes(serialization.Encoding.DER)
        if any(c.public_bytes(serialization.Encoding.DER) == der for c in key.certificates):
            raise HsmError("certificate is already on the token", code="hsm.cert_exists")

        def op(session: Any) -> None:
            session.create_object({
                Attribute.CLASS: ObjectClass.CERTIFICATE,
                Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: False,
                Attribute.ID: bytes.fromhex(key.key_id),
                Attribute.LABEL: key.label,
                Attribute.SUBJECT: cert.subject.public_bytes(),
                Attribute.ISSUER: cert.issuer.public_bytes(),
                Attribute.SERIAL_NUMBER: cert.serial_number.to_bytes(
                    (cert.serial_number.bit_length() + 8) // 8, "big"),
                Attribute.VALUE: der,
            })

        self._run(op)
        return self.t_find_key(key.key_id, None)


def _is_pkcs11_error(exc: BaseException) -> bool:
    import pkcs11.exceptions as p11e

    return isinstance(exc, p11e.PKCS11Error)


def _token_missing(exc: BaseException) -> bool:
    import pkcs11.exceptions as p11e

    return isinstance(exc, p11e.NoSuchToken | p11e.TokenNotPresent)
