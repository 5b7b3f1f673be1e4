"""Signed global configuration directories (X-Road PR-GCONF, versions 2-6).

A directory as served by a central server (``GET <downloadURL>?version=N``) is a MIME
entity that carries its own ``Content-Type`` header line::

    Content-Type: multipart/related; charset=UTF-8; boundary=OUTER

    --OUTER
    Content-Type: multipart/mixed; charset=UTF-8; boundary=INNER

    --INNER                                   <- signed data starts here
    Expire-date: 2035-11-11T03:07:40Z
    Version: 6                                (V3 on; absent in V2 = version 2)

    --INNER
    Content-type: application/octet-stream
    Content-transfer-encoding: base64
    Content-identifier: SHARED-PARAMETERS; instance='DEV'
    Content-location: /V6/20251110170000548026000/shared-params.xml
    Hash-algorithm-id: http://www.w3.org/2001/04/xmlenc#sha512

    <base64 hash of the file>
    --INNER--                                 <- signed data ends after this line
    (the line break before the next delimiter is not signed)
    --OUTER
    Content-Type: application/octet-stream
    Content-Transfer-Encoding: base64
    Signature-Algorithm-Id: http://www.w3.org/2001/04/xmldsig-more#rsa-sha512
    Verification-certificate-hash: <base64>; hash-algorithm-id="http://www.w3.org/2001/04/xmlenc#sha512"

    <base64 signature over the signed data>
    --OUTER--

The signature covers the raw bytes of the first outer part's body exactly as they are in
the file (LF or CRLF line endings), without the line break that precedes the next outer
delimiter.  The inner multipart need not be closed (X-Road's own test directories end it
at the outer delimiter); the outer one must be.

Checks run in X-Road's order (``ConfigurationParser``): (1) the signature part: certificate
lookup by ``Verification-certificate-hash`` (``gconf.missing_verification_cert``), signature
(``gconf.signature_invalid``); (2) the header part: ``Expire-date`` present
(``gconf.header_missing``) and not reached (``gconf.expired``), ``Version``; (3) the
content parts.  :func:`read_directory` does all of it in that order; :func:`parse_directory`
(structure) followed by :func:`verify_directory` (signature, freshness) is the split form.

Version rule (ours, X-Road does not check it): the directory does not say which version was
requested, so the caller may pass ``expected_version`` (the ``?version=`` it asked for).  When
given and at least 3, a directory without ``Version`` is ``gconf.version_missing``; a
``Version`` different from it is ``gconf.version_mismatch``.  Without ``expected_version`` a
directory without ``Version`` is version 2.

The parser is hand-written over ``bytes``: bounded size (:data:`MAX_DIRECTORY_BYTES`), bounded
part count and header size, linear time.  Every failure is a :class:`GlobalConfError`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import posixpath
import re
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from protocols.gconf.anchor import DIGEST_URIS, SHA512_URI, cert_hash, digest
from protocols.gconf.errors import GlobalConfError, gconf_error

__all__ = [
    "CONTENT_ID_PRIVATE_PARAMETERS",
    "CONTENT_ID_SHARED_PARAMETERS",
    "ECDSA_SHA256_URI",
    "ECDSA_SHA384_URI",
    "ECDSA_SHA512_URI",
    "MAX_DIRECTORY_BYTES",
    "MAX_ENTRIES",
    "MAX_HEADER_BYTES",
    "RSA_SHA256_URI",
    "RSA_SHA384_URI",
    "RSA_SHA512_URI",
    "SHA256_RSA_MGF1_URI",
    "SHA384_RSA_MGF1_URI",
    "SHA512_MGF1_URI",
    "SHA512_URI",
    "SIGNATURE_ALGORITHMS",
    "DirectoryEntry",
    "PreparedDirectory",
    "SignedDirectory",
    "build_directory",
    "check_entry",
    "parse_directory",
    "random_boundary",
    "read_directory",
    "verify_directory",
    "verify_signature",
]

RSA_SHA256_URI = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA384_URI = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384"
RSA_SHA512_URI = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
SHA256_RSA_MGF1_URI = "http://www.w3.org/2007/05/xmldsig-more#sha256-rsa-MGF1"
SHA384_RSA_MGF1_URI = "http://www.w3.org/2007/05/xmldsig-more#sha384-rsa-MGF1"
SHA512_MGF1_URI = "http://www.w3.org/2007/05/xmldsig-more#sha512-rsa-MGF1"
ECDSA_SHA256_URI = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
ECDSA_SHA384_URI = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"
ECDSA_SHA512_URI = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512"

_HashFactory = Callable[[], hashes.HashAlgorithm]

#: signature algorithm URI -> (scheme, hash).  Scheme "rsa" = PKCS#1 v1.5, "pss" = RSASSA-PSS
#: with MGF1 of the same hash and salt length = hash length (Java's SHAnnnwithRSAandMGF1),
#: "ecdsa" = ECDSA with a DER ``SEQUENCE {r, s}`` signature (what the central server writes:
#: it converts the token's raw r||s to DER before publishing, as Java's verifier requires).
SIGNATURE_ALGORITHMS: Mapping[str, tuple[str, _HashFactory]] = {
    RSA_SHA256_URI: ("rsa", hashes.SHA256),
    RSA_SHA384_URI: ("rsa", hashes.SHA384),
    RSA_SHA512_URI: ("rsa", hashes.SHA512),
    SHA256_RSA_MGF1_URI: ("pss", hashes.SHA256),
    SHA384_RSA_MGF1_URI: ("pss", hashes.SHA384),
    SHA512_MGF1_URI: ("pss", hashes.SHA512),
    ECDSA_SHA256_URI: ("ecdsa", hashes.SHA256),
    ECDSA_SHA384_URI: ("ecdsa", hashes.SHA384),
    ECDSA_SHA512_URI: ("ecdsa", hashes.SHA512),
}

CONTENT_ID_PRIVATE_PARAMETERS = "PRIVATE-PARAMETERS"
CONTENT_ID_SHARED_PARAMETERS = "SHARED-PARAMETERS"

MAX_DIRECTORY_BYTES = 8 * 1024 * 1024
#: content parts of one directory (X-Road publishes a handful)
MAX_ENTRIES = 256
#: header block of one part (or of the entity)
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_FIELDS = 64

_LF = 0x0A


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class DirectoryEntry:
    """One content part: a file the client downloads from ``content_location``."""

    content_identifier: str  # e.g. "SHARED-PARAMETERS"; "" when the part has none
    instance: str | None  # the instance parameter, quotes removed
    content_location: str  # e.g. "/V6/20251110170000548026000/shared-params.xml"
    hash_algorithm: str  # URI
    hash: bytes
    raw_headers: Mapping[str, str] = field(compare=False)  # lower-case field names

    @property
    def file_name(self) -> str:
        """The last path segment of ``content_location``."""
        return posixpath.basename(self.content_location)


@dataclass(frozen=True)
class SignedDirectory:
    """A parsed signed configuration directory (see the module documentation)."""

    version: int  # 2 when the header part has no Version field
    expire_date: datetime
    entries: tuple[DirectoryEntry, ...]
    signature_algorithm: str  # URI
    verification_cert_hash: bytes
    verification_cert_hash_algorithm: str  # URI
    signed_data: bytes
    signature: bytes


# --------------------------------------------------------------------------- MIME primitives


def _malformed(message: str) -> GlobalConfError:
    return gconf_error("gconf.malformed", message)


def _header_split(part: bytes) -> tuple[int, int]:
    """(end of the header block, start of the body) of ``part``.

    A part that starts with a line break has no headers.  A part without a blank line is
    all headers and has an empty body (as mime4j reads it).
    """
    if part.startswith(b"\r\n"):
        return 0, 2
    if part.startswith(b"\n"):
        return 0, 1
    window = part[: MAX_HEADER_BYTES + 3]
    best: tuple[int, int] | None = None
    for sep in (b"\n\r\n", b"\n\n"):
        i = window.find(sep)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, i + len(sep))
    if best is not None:
        end, body = best
        if end > MAX_HEADER_BYTES:
            raise _malformed(f"header block longer than {MAX_HEADER_BYTES} bytes")
        return end + 1, body
    if len(part) > MAX_HEADER_BYTES:
        raise _malformed(f"header block longer than {MAX_HEADER_BYTES} bytes")
    return len(part), len(part)


_FIELD_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII except ':'


def _parse_fields(block: bytes, where: str) -> dict[str, str]:
    """Header fields of ``block`` (names lower-cased; folded lines unfolded)."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(f"{where}: header block is not UTF-8") from exc
    lines: list[str] = []
    for raw in text.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line:
            continue
        if line[0] in " \t":
            if not lines:
                raise _malformed(f"{where}: header block starts with a continuation line")
            lines[-1] += line
        else:
            lines.append(line)
    if len(lines) > MAX_HEADER_FIELDS:
        raise _malformed(f"{where}: more than {MAX_HEADER_FIELDS} header fields")
    fields: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not _FIELD_NAME.fullmatch(name):
            raise _malformed(f"{where}: not a header field: {line[:60]!r}")
        key = name.lower()
        if key in fields:
            raise _malformed(f"{where}: header field {name} appears twice")
        if any(ord(c) < 0x20 and c != "\t" for c in value):
            raise _malformed(f"{where}: control character in header field {name}")
        fields[key] = value.strip()
    return fields


def _parse_part(part: bytes, where: str) -> tuple[dict[str, str], bytes]:
    end, body = _header_split(part)
    return _parse_fields(part[:end], where), part[body:]


def _split_value(value: str, where: str) -> tuple[str, dict[str, str]]:
    """``main; name=value; name="quoted"; name='single'`` -> (main, {name: value})."""
    items: list[str] = []
    cur: list[str] = []
    quote: str | None = None
    for ch in value:
        if quote is not None:
            cur.append(ch)
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            cur.append(ch)
        elif ch == ";":
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if quote is not None:
        raise _malformed(f"{where}: unterminated quoted string")
    items.append("".join(cur))
    params: dict[str, str] = {}
    for item in items[1:]:
        item = item.strip()
        if not item:
            continue
        name, sep, val = item.partition("=")
        if not sep:
            raise _malformed(f"{where}: parameter without a value: {item[:40]!r}")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "\"'":
            val = val[1:-1]
        params[name.strip().lower()] = val
    return items[0].strip(), params


_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def _multipart_boundary(content_type: str | None, where: str) -> str:
    if not content_type:
        raise _malformed(f"{where}: no Content-Type")
    main, params = _split_value(content_type, where)
    if not main.lower().startswith("multipart/"):
        raise _malformed(f"{where}: Content-Type {main!r} is not multipart")
    boundary = params.get("boundary", "")
    if not _BOUNDARY.fullmatch(boundary):
        raise _malformed(f"{where}: missing or invalid multipart boundary")
    return boundary


def _find_delimiter(data: bytes, delim: bytes, start: int) -> tuple[int, int, bool] | None:
    """Next delimiter line at or after ``start``: (start, end of line, is closing)."""
    i = start
    n = len(data)
    while True:
        j = data.find(delim, i)
        if j < 0:
            return None
        if j == 0 or data[j - 1] == _LF:
            k = j + len(delim)
            close = data.startswith(b"--", k)
            if close:
                k += 2
            while k < n and data[k] in b" \t":
                k += 1
            if k == n:
                return j, k, close
            if data.startswith(b"\r\n", k):
                return j, k + 2, close
            if data[k] == _LF:
                return j, k + 1, close
        i = j + 1


def _split_multipart(data: bytes, boundary: str, max_parts: int, where: str) -> tuple[list[bytes], bool]:
    """Body parts of a multipart body and whether it was closed (``--boundary--``).

    A part runs from after its delimiter line to the line break before the next delimiter;
    an unclosed last part runs to the end of ``data``.  The preamble and epilogue are ignored.
    """
    delim = b"--" + boundary.encode("ascii")
    first = _find_delimiter(data, delim, 0)
    if first is None:
        return [], False
    _, cur, closed = first
    parts: list[bytes] = []
    while not closed:
        nxt = _find_delimiter(data, delim, cur)
        if nxt is None:
            parts.append(data[cur:])
            break
        start, after, closed = nxt
        end = start - 2 if data[start - 2:start] == b"\r\n" else start - 1
        parts.append(data[cur:max(cur, end)])
        if len(parts) > max_parts:
            raise _malformed(f"{where}: more than {max_parts} parts")
        cur = after
    if len(parts) > max_parts:
        raise _malformed(f"{where}: more than {max_parts} parts")
    return parts, closed


def _b64decode(text: bytes) -> bytes:
    """Strict base64 after removing whitespace (line breaks, padding spaces)."""
    return base64.b64decode(b"".join(text.split()), validate=True)


# --------------------------------------------------------------------------- envelope


@dataclass(frozen=True)
class _Envelope:
    signed_data: bytes
    signed_content_type: str
    signature_algorithm: str
    cert_hash: bytes
    cert_hash_algorithm: str
    signature: bytes


def _require(fields: Mapping[str, str], name: str, where: str, expected: str | None = None) -> str:
    """X-Road's verifyFieldExists: present and non-blank, optionally equal to ``expected``."""
    value = fields.get(name.lower(), "").strip()
    if not value:
        raise gconf_error("gconf.header_missing", f"{where}: missing header field {name}")
    if expected is not None and value.lower() != expected:
        raise gconf_error("gconf.header_wrong_value", f"{where}: field {name} must be {expected}, not {value!r}")
    return value


def _parse_envelope(body: bytes, content_type: str | None) -> _Envelope:
    if len(body) > MAX_DIRECTORY_BYTES:
        raise gconf_error("gconf.too_large", f"directory of {len(body)} bytes exceeds {MAX_DIRECTORY_BYTES}")
    outer: str | None = None
    start = 0
    if content_type:
        try:
            candidate: str | None = _multipart_boundary(content_type, "Content-Type argument")
        except GlobalConfError:  # not a usable multipart type: read the entity's own header
            candidate = None
        if candidate is not None and body.startswith(b"--" + candidate.encode("ascii")):
            outer = candidate
    if outer is None:
        end, start = _header_split(body)
        fields = _parse_fields(body[:end], "directory header")
        outer = _multipart_boundary(fields.get("content-type"), "directory header")
    parts, closed = _split_multipart(body[start:], outer, 2, "directory")
    if not parts:
        raise gconf_error("gconf.missing_signed_data", "directory has no signed data part")
    if len(parts) == 1:
        raise gconf_error("gconf.missing_signature",
                          "directory has no signature part (it ends inside the signed data)")
    if not closed:
        raise _malformed("directory is truncated: the outer multipart is not closed")

    signed_fields, signed_data = _parse_part(parts[0], "signed data part")
    signed_ct = signed_fields.get("content-type", "")
    inner = _multipart_boundary(signed_ct, "signed data part")
    lead = signed_data.lstrip(b"\r\n")
    if not lead.startswith(b"--" + inner.encode("ascii")):
        raise _malformed("signed data does not start with its multipart delimiter")

    sig_fields, sig_body = _parse_part(parts[1], "signature part")
    where = "signature part"
    _require(sig_fields, "Content-Type", where, "application/octet-stream")
    _require(sig_fields, "Content-Transfer-Encoding", where, "base64")
    algorithm = _require(sig_fields, "Signature-Algorithm-Id", where)
    hash_field = _require(sig_fields, "Verification-certificate-hash", where)
    hash_text, params = _split_value(hash_field, where)
    hash_algorithm = params.get("hash-algorithm-id", "").strip()
    if not hash_algorithm:
        raise gconf_error("gconf.header_parameter_missing",
                          f"{where}: Verification-certificate-hash has no hash-algorithm-id")
    try:
        hash_value = _b64decode(hash_text.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise gconf_error("gconf.header_wrong_value", f"{where}: Verification-certificate-hash is not base64") from exc
    try:
        signature = _b64decode(sig_body)
    except (binascii.Error, ValueError) as exc:
        raise gconf_error("gconf.signature_decode", "signature is not base64") from exc
    return _Envelope(signed_data=signed_data, signed_content_type=signed_ct, signature_algorithm=algorithm,
                     cert_hash=hash_value, cert_hash_algorithm=hash_algorithm, signature=signature)


# --------------------------------------------------------------------------- signed content


def _parse_date(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise gconf_error("gconf.header_wrong_value", f"Expire-date {value!r} is not an ISO 8601 date-time") from exc
    if "T" not in value or parsed.tzinfo is None:
        raise gconf_error("gconf.header_wrong_value", f"Expire-date {value!r} has no time or no time zone")
    return parsed.astimezone(UTC)


def _check_now(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")


def _check_fresh(expire_date: datetime, now: datetime) -> None:
    _check_now(now)
    if now >= expire_date:
        raise gconf_error("gconf.expired", f"configuration expired at {expire_date.isoformat()}")


_VERSION = re.compile(r"[0-9]{1,4}")


def _parse_content_identifier(value: str, where: str) -> tuple[str, str | None]:
    if not value:
        return "", None
    ident, params = _split_value(value, where)
    instance = params.get("instance")
    if instance is not None:
        instance = instance.strip() or None
    if ident in (CONTENT_ID_PRIVATE_PARAMETERS, CONTENT_ID_SHARED_PARAMETERS) and instance is None:
        raise gconf_error("gconf.header_parameter_missing", f"{where}: Content-identifier {ident} has no instance")
    return ident, instance


def _parse_entry(fields: dict[str, str], body: bytes, where: str) -> DirectoryEntry:
    _require(fields, "Content-type", where, "application/octet-stream")
    _require(fields, "Content-transfer-encoding", where, "base64")
    location = _require(fields, "Content-location", where)
    algorithm = _require(fields, "Hash-algorithm-id", where)
    ident, instance = _parse_content_identifier(fields.get("content-identifier", "").strip(), where)
    try:
        value = _b64decode(body)
    except (binascii.Error, ValueError) as exc:
        raise _malformed(f"{where}: hash is not base64") from exc
    if not value:
        raise _malformed(f"{where}: empty hash")
    return DirectoryEntry(content_identifier=ident, instance=instance, content_location=location,
                          hash_algorithm=algorithm, hash=value, raw_headers=MappingProxyType(dict(fields)))


def _parse_signed(env: _Envelope, *, now: datetime | None, expected_version: int | None) -> SignedDirectory:
    inner = _multipart_boundary(env.signed_content_type, "signed data part")
    parts, _closed = _split_multipart(env.signed_data, inner, MAX_ENTRIES + 1, "signed data")
    if not parts:
        raise gconf_error("gconf.header_missing", "signed data has no header part (no Expire-date)")
    header, _ = _parse_part(parts[0], "header part")
    expire_text = header.get("expire-date", "").strip()
    if not expire_text:
        raise gconf_error("gconf.header_missing", "header part: missing header field Expire-date")
    expire_date = _parse_date(expire_text)
    if now is not None:
        _check_fresh(expire_date, now)
    version_text = header.get("version", "").strip()
    if version_text:
        if not _VERSION.fullmatch(version_text) or int(version_text) < 2:
            raise gconf_error("gconf.header_wrong_value", f"header part: invalid Version {version_text!r}")
        version = int(version_text)
        if expected_version is not None and version != expected_version:
            raise gconf_error("gconf.version_mismatch", f"directory is version {version}, not {expected_version}")
    else:
        version = 2
        if expected_version is not None and expected_version >= 3:
            raise gconf_error("gconf.version_missing", f"directory has no Version field (asked for {expected_version})")
    entries = []
    for index, part in enumerate(parts[1:], start=1):
        fields, body = _parse_part(part, f"content part {index}")
        entries.append(_parse_entry(fields, body, f"content part {index}"))
    return SignedDirectory(version=version, expire_date=expire_date, entries=tuple(entries),
                           signature_algorithm=env.signature_algorithm, verification_cert_hash=env.cert_hash,
                           verification_cert_hash_algorithm=env.cert_hash_algorithm, signed_data=env.signed_data,
                           signature=env.signature)


# --------------------------------------------------------------------------- signatures


def _signature_scheme(algorithm: str) -> tuple[str, _HashFactory]:
    scheme = SIGNATURE_ALGORITHMS.get(algorithm)
    if scheme is None:
        raise gconf_error("gconf.unsupported_algorithm", f"unsupported signature algorithm {algorithm!r}")
    return scheme


def verify_signature(algorithm: str, cert: x509.Certificate, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` (``algorithm`` URI) over ``data`` verifies with ``cert``'s key.

    Raises ``gconf.unsupported_algorithm`` for an unknown URI; a key of the wrong type is
    simply a signature that does not verify.
    """
    kind, hash_factory = _signature_scheme(algorithm)
    try:
        key = cert.public_key()
        if kind in ("rsa", "pss"):
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            pad: padding.AsymmetricPadding = padding.PKCS1v15()
            if kind == "pss":
                h = hash_factory()
                pad = padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
            key.verify(signature, data, pad, hash_factory())
        else:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return False
            key.verify(signature, data, ec.ECDSA(hash_factory()))
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _find_cert(certs: Sequence[x509.Certificate], hash_value: bytes, hash_algorithm: str) -> x509.Certificate:
    for cert in certs:
        if hmac.compare_digest(cert_hash(cert, hash_algorithm), hash_value):
            return cert
    raise gconf_error("gconf.missing_verification_cert",
                      "no verification certificate has hash " + base64.b64encode(hash_value).decode("ascii"))


def _verify(signature_algorithm: str, cert_hash_value: bytes, cert_hash_algorithm: str, signature: bytes,
            signed_data: bytes, certs: Sequence[x509.Certificate]) -> x509.Certificate:
    _signature_scheme(signature_algorithm)
    cert = _find_cert(certs, cert_hash_value, cert_hash_algorithm)
    if not verify_signature(signature_algorithm, cert, signature, signed_data):
        raise gconf_error("gconf.signature_invalid", "the directory signature does not verify")
    return cert


# --------------------------------------------------------------------------- public reading API


def parse_directory(body: bytes, content_type: str | None = None, *,
                    expected_version: int | None = None) -> SignedDirectory:
    """Parse the structure of a signed directory (no signature or freshness check).

    ``body`` is what ``downloadURL?version=N`` returned.  Central servers publish the
    directory with its own ``Content-Type`` header line at the top of the body; that line
    is used unless ``content_type`` (the HTTP header) is a multipart type whose boundary
    delimits ``body`` directly.
    """
    env = _parse_envelope(body, content_type)
    return _parse_signed(env, now=None, expected_version=expected_version)


def verify_directory(d: SignedDirectory, certs: Sequence[x509.Certificate], now: datetime) -> x509.Certificate:
    """Verify the signature with the certificate named by its hash, then the Expire-date.

    Returns the certificate that verified.  ``gconf.missing_verification_cert``,
    ``gconf.signature_invalid``, ``gconf.expired`` (when ``now`` >= Expire-date).
    """
    _check_now(now)
    cert = _verify(d.signature_algorithm, d.verification_cert_hash, d.verification_cert_hash_algorithm,
                   d.signature, d.signed_data, certs)
    _check_fresh(d.expire_date, now)
    return cert


def read_directory(body: bytes, content_type: str | None, certs: Sequence[x509.Certificate], now: datetime, *,
                   expected_version: int | None = None) -> tuple[SignedDirectory, x509.Certificate]:
    """Parse and verify in X-Road's order: envelope, signature, Expire-date, Version, content.

    This is the configuration client's entry point; its errors are those X-Road reports for
    the same input.
    """
    _check_now(now)
    env = _parse_envelope(body, content_type)
    cert = _verify(env.signature_algorithm, env.cert_hash, env.cert_hash_algorithm, env.signature,
                   env.signed_data, certs)
    return _parse_signed(env, now=now, expected_version=expected_version), cert


def check_entry(entry: DirectoryEntry, data: bytes) -> None:
    """Check a downloaded file against its entry: ``gconf.hash_mismatch`` when it differs."""
    if not hmac.compare_digest(digest(entry.hash_algorithm, data), entry.hash):
        raise gconf_error("gconf.hash_mismatch", f"content of {entry.content_location} does not match its hash")


# --------------------------------------------------------------------------- building

_BOUNDARY_CHARS = string.ascii_letters + string.digits
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_.\-]+")
_SAFE_INSTANCE = re.compile(r"[!#-&(-:<-~]+")  # printable ASCII without space, quotes and ';'
_SAFE_LOCATION = re.compile(r"[!-~]+")


def random_boundary() -> str:
    """20 random letters and digits (as the central server's MultipartMessage)."""
    return "".join(secrets.choice(_BOUNDARY_CHARS) for _ in range(20))


def _pick_boundary(source: Callable[[], str], avoid: Sequence[bytes], taken: Sequence[str] = ()) -> str:
    for _ in range(16):
        candidate = source()
        if not _BOUNDARY.fullmatch(candidate) or candidate.endswith(" ") or candidate in taken:
            continue
        delim = b"--" + candidate.encode("ascii")
        if not any(delim in text for text in avoid):
            return candidate
    raise gconf_error("gconf.build_invalid", "boundary_source gave no usable boundary")


def _format_expire_date(value: datetime) -> str:
    if value.tzinfo is None:
        raise gconf_error("gconf.build_invalid", "expire_date must carry a time zone")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_CRLF = b"\r\n"


@dataclass(frozen=True)
class PreparedDirectory:
    """The signed data of a directory being built, waiting for its signature."""

    data_to_sign: bytes
    inner_boundary: str
    outer_boundary: str

    def finish(self, *, signature_algorithm: str, signature: bytes, verification_cert: x509.Certificate,
               cert_hash_algorithm: str = SHA512_URI) -> tuple[bytes, str]:
        """The published directory and the Content-Type header value to serve it with.

        ``signature`` is the signature over :attr:`data_to_sign`; an ECDSA signature may be
        given raw (r||s, as PKCS#11 returns it) and is written in DER.  The signature is
        verified with ``verification_cert`` before anything is returned.
        """
        kind, _ = _signature_scheme(signature_algorithm)
        if kind == "ecdsa":
            signature = _ecdsa_to_der(signature, verification_cert)
        if not verify_signature(signature_algorithm, verification_cert, signature, self.data_to_sign):
            raise gconf_error("gconf.signature_invalid", "the signature does not verify with verification_cert")
        cert_hash_b64 = base64.b64encode(cert_hash(verification_cert, cert_hash_algorithm)).decode("ascii")
        signature_b64 = base64.b64encode(signature)
        outer = self.outer_boundary.encode("ascii")
        if b"--" + outer in signature_b64:
            raise gconf_error("gconf.build_invalid", "outer boundary occurs in the signature; build again")
        content_type = f"multipart/related; charset=UTF-8; boundary={self.outer_boundary}"
        lines = [
            b"Content-Type: " + content_type.encode("ascii"),
            b"",
            b"--" + outer,
            b"Content-Type: multipart/mixed; charset=UTF-8; boundary=" + self.inner_boundary.encode("ascii"),
            b"",
            self.data_to_sign,  # ends with CRLF; the CRLF below belongs to the delimiter
            b"--" + outer,
            b"Content-Type: application/octet-stream",
            b"Content-Transfer-Encoding: base64",
            b"Signature-Algorithm-Id: " + signature_algorithm.encode("ascii"),
            b"Verification-certificate-hash: " + cert_hash_b64.encode("ascii")
            + b'; hash-algorithm-id="' + cert_hash_algorithm.encode("ascii") + b'"',
            b"",
            signature_b64,
            b"--" + outer + b"--",
        ]
        return _CRLF.join(lines) + _CRLF, content_type


def _ecdsa_to_der(signature: bytes, cert: x509.Certificate) -> bytes:
    try:
        r, s = decode_dss_signature(signature)
        if encode_dss_signature(r, s) == signature:
            return signature
    except ValueError:
        pass
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        size = (key.curve.key_size + 7) // 8
        if len(signature) == 2 * size:
            return encode_dss_signature(int.from_bytes(signature[:size], "big"),
                                        int.from_bytes(signature[size:], "big"))
    return signature


def build_directory(*, expire_date: datetime, version: int,
                    files: Sequence[tuple[str, str | None, str, bytes]],
                    hash_algorithm: str = SHA512_URI,
                    boundary_source: Callable[[], str] = random_boundary) -> PreparedDirectory:
    """Prepare a directory listing ``files`` = (content identifier, instance, content location, data).

    Version 2 directories carry no ``Version`` field; from 3 on it is written.  The layout
    and line endings (CRLF) are those of the central server.  Sign ``data_to_sign`` and
    call :meth:`PreparedDirectory.finish`.
    """
    if isinstance(version, bool) or not isinstance(version, int) or not 2 <= version <= 9999:
        raise gconf_error("gconf.build_invalid", f"invalid version {version!r}")
    if hash_algorithm not in DIGEST_URIS:
        raise gconf_error("gconf.build_invalid", f"unsupported hash algorithm {hash_algorithm!r}")
    if len(files) > MAX_ENTRIES:
        raise gconf_error("gconf.build_invalid", f"more than {MAX_ENTRIES} files")
    header = [b"Expire-date: " + _format_expire_date(expire_date).encode("ascii")]
    if version >= 3:
        header.append(b"Version: " + str(version).encode("ascii"))
    parts: list[bytes] = [_CRLF.join(header) + _CRLF]  # header-only part: fields, blank line, empty body
    for ident, instance, location, data in files:
        if not _SAFE_TOKEN.fullmatch(ident):
            raise gconf_error("gconf.build_invalid", f"invalid content identifier {ident!r}")
        if instance is not None and not _SAFE_INSTANCE.fullmatch(instance):
            raise gconf_error("gconf.build_invalid", f"invalid instance {instance!r}")
        if not _SAFE_LOCATION.fullmatch(location):
            raise gconf_error("gconf.build_invalid", f"invalid content location {location!r}")
        content_id = ident if instance is None else f"{ident}; instance='{instance}'"
        fields = [
            "Content-type: application/octet-stream",
            "Content-transfer-encoding: base64",
            f"Content-identifier: {content_id}",
            f"Content-location: {location}",
            f"Hash-algorithm-id: {hash_algorithm}",
        ]
        hash_b64 = base64.b64encode(digest(hash_algorithm, data)).decode("ascii")
        parts.append(("\r\n".join(fields) + "\r\n\r\n" + hash_b64).encode("ascii"))
    inner = _pick_boundary(boundary_source, parts)
    delim = b"--" + inner.encode("ascii")
    signed = b"".join(delim + _CRLF + part + _CRLF for part in parts) + delim + b"--" + _CRLF
    outer = _pick_boundary(boundary_source, [signed], taken=[inner])
    return PreparedDirectory(data_to_sign=signed, inner_boundary=inner, outer_boundary=outer)
