"""A software :class:`~hsm.interfaces.DigestSigner`, for unit tests and fixtures only.

Production keys live on a PKCS#11 token (:mod:`hsm.token`); this class exists so the
pure parts (TSA token building, OCSP, XAdES) can be unit-tested without SoftHSM2.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    """The ``cryptography`` hash object for ``"sha256"``-style names."""
    try:
        return _HASHES[name.lower().replace("-", "")]()
    except KeyError:
        raise ValueError(f"unsupported hash algorithm {name!r}") from None


def ecdsa_der_to_raw(der: bytes, key_size_bits: int) -> bytes:
    """DER ECDSA-Sig-Value to X-Road's raw ``r || s`` (each padded to the curve size)."""
    r, s = utils.decode_dss_signature(der)
    n = (key_size_bits + 7) // 8
    return r.to_bytes(n, "big") + s.to_bytes(n, "big")


def ecdsa_raw_to_der(raw: bytes) -> bytes:
    """Raw ``r || s`` to DER ECDSA-Sig-Value."""
    half = len(raw) // 2
    return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))


class SoftwareDigestSigner:
    """Signs digests with an in-memory ``cryptography`` private key."""

    def __init__(self, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, mechanism: str | None = None) -> None:
        self._key = key
        if isinstance(key, rsa.RSAPrivateKey):
            self._key_type = "rsa"
            self._mechanism = mechanism or "rsa-pkcs1"
        else:
            self._key_type = "ec"
            self._mechanism = "ecdsa"

    @property
    def key_type(self) -> str:
        return self._key_type

    @property
    def mechanism(self) -> str:
        return self._mechanism

    def sign_digest_sync(self, digest: bytes, hash_name: str) -> bytes:
        algo = hash_algorithm(hash_name)
        pre = utils.Prehashed(algo)
        if isinstance(self._key, rsa.RSAPrivateKey):
            if self._mechanism == "rsa-pss":
                pad: padding.AsymmetricPadding = padding.PSS(mgf=padding.MGF1(algo), salt_length=algo.digest_size)
            else:
                pad = padding.PKCS1v15()
            return self._key.sign(digest, pad, pre)
        return self._key.sign(digest, ec.ECDSA(pre))

    async def sign_digest(self, digest: bytes, hash_name: str) -> bytes:
        return self.sign_digest_sync(digest, hash_name)
