"""Small interfaces shared by the signer, the TSA and the OCSP code.

``DigestSigner`` is what any component that needs a private-key operation gets: it
signs a precomputed digest and never exposes the key.  The HSM implementation sends
the call to the single PKCS#11 thread of its module; tests may use
:class:`hsm.softkey.SoftwareDigestSigner`.
"""

from __future__ import annotations

from typing import Protocol


class DigestSigner(Protocol):
    """Signs digests with one private key whose certificate is known."""

    @property
    def key_type(self) -> str:
        """``"rsa"`` or ``"ec"``."""
        ...

    @property
    def mechanism(self) -> str:
        """``"rsa-pkcs1"``, ``"rsa-pss"`` or ``"ecdsa"``."""
        ...

    async def sign_digest(self, digest: bytes, hash_name: str) -> bytes:
        """Return the signature over ``digest`` (made with hash ``hash_name``, e.g. ``"sha256"``).

        RSA PKCS#1 v1.5: the DigestInfo-wrapped signature; RSA-PSS: MGF1 with the same
        hash, salt length = digest length; ECDSA: **DER** encoded (use
        :func:`hsm.softkey.ecdsa_der_to_raw` for X-Road's raw r||s).
        """
        ...
