"""Typed errors with stable dotted codes.

Every error the gateway reports (in logs, metrics, the CLI) carries a stable code of
our own such as ``hsm.token_not_found`` or ``conf.signature_invalid``.  On the wire to
X-Road peers these are mapped to X-Road fault codes elsewhere; the code here is for
operators and tests, and must never change once released.
"""

from __future__ import annotations


class VdxpError(Exception):
    """Base class of every error with a stable dotted code.

    ``code`` is machine-readable and stable; ``message`` is a human sentence that
    names the problem (which file, which key, which token).  ``xroad_code`` is the
    X-Road fault code (7.7 CamelCase dialect) when X-Road defines one.
    """

    code: str = "internal.error"
    xroad_code: str | None = None

    def __init__(self, message: str, *, code: str | None = None, xroad_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if xroad_code is not None:
            self.xroad_code = xroad_code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class UsageError(VdxpError):
    """Bad command-line usage or configuration (CLI exit code 2)."""

    code = "usage.invalid"


class XmlError(VdxpError):
    """Malformed or hostile XML."""

    code = "xml.malformed"
    xroad_code = "InvalidXml"


class HashChainError(VdxpError):
    """A hash chain failed to parse or verify.  ``code`` is ``hashchain.<reason>``."""

    code = "hashchain.invalid"


class TimestampError(VdxpError):
    """An RFC 3161 exchange or token failed.  ``code`` is ``tsa.<reason>``."""

    code = "tsa.invalid"


class OcspError(VdxpError):
    """An OCSP exchange or response failed.  ``code`` is ``ocsp.<reason>``."""

    code = "ocsp.invalid"


class CertificateError(VdxpError):
    """A certificate, CSR or key file is unusable.  ``code`` is ``cert.<reason>``."""

    code = "cert.invalid"


class SignatureError(VdxpError):
    """A signature could not be made or does not verify.  ``code`` is ``signature.<reason>``."""

    code = "signature.invalid"
