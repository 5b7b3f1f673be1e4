# test-case-name: tests.test_asic
"""ASiC-E containers of the X-Road message log: bounded reading, offline verification, building.

An archived X-Road message is a ZIP (``application/vnd.etsi.asic-e+zip``) holding the message
(``message.xml``: the SOAP envelope or the REST header part), its signature
(``META-INF/signatures.xml``), the hash chain of a batch signature (``sig-hashchainresult.xml``,
``sig-hashchain.xml``), the time-stamp (``META-INF/timestamp.tst`` with ``ts-hashchainresult.xml``
and ``ts-hashchain.xml`` for a batch time-stamp, else embedded in the signature as
``xades:SignatureTimeStamp``), the manifests and the REST body or SOAP attachments
(``attachmentN``).

**Reading** (:func:`read_container`) applies X-Road's rules (``AsicHelper.read`` and
``AsicContainer.verifyContents``): recognised names are ``mimetype``, ``message.xml``, the hash
chain files, the manifests, ``META-INF/timestamp.tst`` and any name matching
``META-INF/.*signatures.*\\.xml``; names starting with ``attachment`` are attachments, of which only
the SHA-512 digest is kept; everything else is ignored.  X-Road recognises names ignoring case but
then looks entries up by their exact name, so only the exact names count here.  Checks, in order:
``AsicMimeTypeNotFound``, ``AsicInvalidMimeType``, ``AsicMessageNotFound``,
``AsicSignatureNotFound``, ``AsicHashChainResultNotFound`` / ``AsicHashChainNotFound`` (signature
hash chain files come in pairs), ``AsicTimestampNotFound`` (an empty ``timestamp.tst``), the same
pairing for the time-stamp hash chain, ``AsicManifestNotFound`` (an empty manifest).  "Blank" is
Java's ``StringUtils.isBlank`` over the UTF-8 text.  An input that is not a ZIP at all (does not
start with a ZIP local header) has no entries, hence ``AsicMimeTypeNotFound``.

Hostile ZIPs are refused before anything is inflated, with ``AsicInvalidContainer`` and an
``asic.*`` code of their own: the size of the ZIP, of its central directory, the number of entries
and the uncompressed size of every entry and of all of them together are bounded
(:class:`ZipLimits`); the end record must sit right after the central directory (no data before
or inside the ZIP), entries must not overlap (``asic.zip_overlap``: the "better zip bomb"), names
must be relative, without ``..``, backslashes or control characters, and unique ignoring case;
only stored and deflated, unencrypted entries are read, and the CRC of every entry read is
checked (reading stops at the declared size, so a lying size cannot inflate past the bounds).  A
ZIP that starts like one but whose directory cannot be read is ``asic.zip_invalid`` (X-Road's
streaming reader would read what it can).

**Verification** (:func:`verify_container`) follows X-Road's ``AsicContainerVerifier``:

1. the signature document is parsed (``InvalidXml`` / ``MalformedSignature``);
2. the signer is taken from the message: the client of a SOAP request, the service provider of a
   SOAP response (body element ending in ``Response``); a REST message starting with a digit is a
   response (signer: its ``x-road-service`` provider), otherwise a request (signer: its
   ``x-road-client``).  A message that is neither SOAP nor REST fails here (``InternalError``); a
   SOAP message that does not validate leaves the signer unknown, which fails only when the
   signature is verified (step 5), as in X-Road;
3. the signature must reference ``/message.xml`` or ``/sig-hashchainresult.xml``
   (``MalformedSignature``);
4. the time-stamp (``META-INF/timestamp.tst``, else the signature's ``EncapsulatedTimeStamp``):
   with ``ts-hashchainresult.xml`` its hash chain must cover ``/META-INF/signatures.xml`` (any
   failure: ``MalformedSignature``) and the token's imprint is over ``ts-hashchainresult.xml``,
   otherwise over the ``ds:SignatureValue`` bytes (mismatch: ``MalformedSignature``); the token
   must be signed by an approved TSA of the configuration's own instance (else ``InternalError``,
   as X-Road's "Could not find TSP certificate"); a bad token signature is
   ``TimestampValidation``.  The token's genTime is the validation time;
5. the signature is verified by :func:`protocols.sigverify.verify_signature` at that time, with the
   shared parameters of the signer's instance, schema validation off, ``/message.xml`` as the
   required hash chain input and each ``/attachmentN`` reference compared with the SHA-512 of its
   entry.  Hash chain DataRefs whose data the container does not hold are trusted and listed in
   :attr:`ContainerVerification.unverified_digests` (X-Road logs them as "unverified").

Deviations, each stricter than X-Road: a hash chain DataRef naming an ``attachmentN`` present in
the container must carry that attachment's SHA-512 digest (X-Road trusts it and only logs whether
it matched: ``MalformedSignature.InvalidHashChainRef`` here); the TSA certificate must carry a
critical timeStamping-only extended key usage and be valid at genTime (checks of
:func:`protocols.tsp.verify_token`, ``TimestampValidation``); a malformed token is
``TimestampValidation`` (X-Road: an internal error); a container without any time-stamp is
``AsicTimestampNotFound``; a signer whose instance the configuration does not know is
``InternalError`` with a clear message.

**Building** (:func:`build_container`) writes X-Road's layout and entry order (``mimetype``,
``message.xml``, ``META-INF/signatures.xml``, ``sig-hashchainresult.xml``, ``sig-hashchain.xml``,
``ts-hashchainresult.xml``, ``ts-hashchain.xml``, ``META-INF/manifest.xml``,
``META-INF/ASiCManifest.xml``, ``META-INF/timestamp.tst``, then ``attachment1``…), the manifests
byte for byte as X-Road writes them, and the ZIP comment ``mimetype=application/vnd.etsi.asic-e+zip``.
Unlike X-Road 7.x (whose ``ZipOutputStream`` deflates it), ``mimetype`` is stored uncompressed and
without extra field, as ASiC (ETSI EN 319 162-1) requires; readers accept both.

Pure: no I/O.  Containers arrive as bytes, archives (:mod:`protocols.logarchive`) as file objects.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from types import MappingProxyType
from typing import IO, Protocol

from asn1crypto import cms
from lxml import etree  # type: ignore[import-untyped,unused-ignore]

from protocols.errors import HashChainError, SignatureError, TimestampError, VdxpError, XmlError
from protocols.gconf.params import SharedParameters
from protocols.hashchain import SHA256_URI, SHA384_URI, SHA512_URI, verify_hash_chain
from protocols.sigverify import (
    HASH_CHAIN_RESULT_URI,
    MESSAGE_URI,
    ProfileResolver,
    SignatureDocument,
    SignedPart,
    VerificationCache,
    VerifiedSignature,
    parse_signature_document,
    verify_signature,
)
from protocols.tsp import TimestampToken, verify_token
from protocols.xades import NS_DS, NS_XADES
from protocols.xmlsafe import parse_xml
from protocols.xroad.faults import Dialect, XRoadFault, parse_code, render_code
from protocols.xroad.ids import ClientId
from protocols.xroad.rest import RestResponse, parse_rest_message
from protocols.xroad.soap import SoapMessage, parse_soap

__all__ = [
    "ASIC_MANIFEST_NS",
    "CONTAINER_LIMITS",
    "ENTRY_ASIC_MANIFEST",
    "ENTRY_ATTACHMENT",
    "ENTRY_MANIFEST",
    "ENTRY_MESSAGE",
    "ENTRY_MIMETYPE",
    "ENTRY_SIGNATURE",
    "ENTRY_SIG_HASH_CHAIN",
    "ENTRY_SIG_HASH_CHAIN_RESULT",
    "ENTRY_TIMESTAMP",
    "ENTRY_TS_HASH_CHAIN",
    "ENTRY_TS_HASH_CHAIN_RESULT",
    "MIMETYPE",
    "AsicContainer",
    "AsicError",
    "ContainerVerification",
    "SafeZip",
    "VerificationConf",
    "ZipLimits",
    "build_container",
    "embed_timestamp",
    "fault_code",
    "read_container",
    "verify_container",
]

MIMETYPE = "application/vnd.etsi.asic-e+zip"
ENTRY_MIMETYPE = "mimetype"
ENTRY_MESSAGE = "message.xml"
ENTRY_SIGNATURE = "META-INF/signatures.xml"
ENTRY_SIG_HASH_CHAIN_RESULT = "sig-hashchainresult.xml"
ENTRY_SIG_HASH_CHAIN = "sig-hashchain.xml"
ENTRY_TS_HASH_CHAIN_RESULT = "ts-hashchainresult.xml"
ENTRY_TS_HASH_CHAIN = "ts-hashchain.xml"
ENTRY_MANIFEST = "META-INF/manifest.xml"
ENTRY_ASIC_MANIFEST = "META-INF/ASiCManifest.xml"
ENTRY_TIMESTAMP = "META-INF/timestamp.tst"
ENTRY_ATTACHMENT = "attachment"
#: X-Road's ASiCManifest namespace (sic: ``2918``, not ``02918``), as its containers carry it.
ASIC_MANIFEST_NS = "http://uri.etsi.org/2918/v1.2.1#"
ODF_MANIFEST_NS = "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"

#: X-Road's ``AsicContainerEntries.ALL_ENTRIES``: reading recognises them, building writes them in this order.
_ENTRY_ORDER = (ENTRY_MIMETYPE, ENTRY_MESSAGE, ENTRY_SIGNATURE, ENTRY_SIG_HASH_CHAIN_RESULT, ENTRY_SIG_HASH_CHAIN,
                ENTRY_TS_HASH_CHAIN_RESULT, ENTRY_TS_HASH_CHAIN, ENTRY_MANIFEST, ENTRY_ASIC_MANIFEST, ENTRY_TIMESTAMP)
_RECOGNISED_LOWER = frozenset(n.lower() for n in _ENTRY_ORDER if n != ENTRY_SIGNATURE)
_SIGNATURE_PATTERN = re.compile(r"META-INF/.*signatures.*\.xml")
_SIGNATURES_URI = "/" + ENTRY_SIGNATURE

_DS = "{" + NS_DS + "}"
_XA = "{" + NS_XADES + "}"
_CHUNK = 64 * 1024
_SHA512_SIZE = 64
_URI_BY_DIGEST_SIZE = {32: SHA256_URI, 48: SHA384_URI, 64: SHA512_URI}


# --------------------------------------------------------------------------- errors


class AsicError(VdxpError):
    """An ASiC-E container cannot be read or does not verify.  ``code`` is ``asic.<reason>``;
    ``xroad_code`` the X-Road fault code (7.7 dialect), e.g. ``AsicMessageNotFound``."""

    code = "asic.invalid"


def fault_code(error: VdxpError, dialect: Dialect = Dialect.CAMEL) -> str | None:
    """The X-Road fault code of ``error`` in ``dialect`` (``InvalidSignatureValue`` /
    ``invalid_signature_value``), or None when X-Road defines none for it."""
    if error.xroad_code is None:
        return None
    return render_code(parse_code(error.xroad_code), dialect)


def _structure(xroad_code: str, code: str, message: str) -> AsicError:
    return AsicError(message, code=code, xroad_code=xroad_code)


def _bad_zip(code: str, message: str) -> AsicError:
    return AsicError(message, code=code, xroad_code="AsicInvalidContainer")


# --------------------------------------------------------------------------- bounded ZIP reading


@dataclass(frozen=True)
class ZipLimits:
    """Bounds on a ZIP read from an untrusted source.

    ``max_zip_bytes``: the ZIP itself; ``max_entries``: entries in its central directory;
    ``max_directory_bytes``: the central directory; ``max_entry_bytes``: the uncompressed size of an
    entry held in memory; ``max_total_bytes``: the uncompressed bytes of every entry read (held or
    only hashed) together.
    """

    max_zip_bytes: int = 128 * 1024 * 1024
    max_entries: int = 1024
    max_directory_bytes: int = 1024 * 1024
    max_entry_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 256 * 1024 * 1024


#: The defaults for one ASiC-E container.
CONTAINER_LIMITS = ZipLimits()

_LOCAL_HEADER = b"PK\x03\x04"
_EMPTY_ZIP = b"PK\x05\x06"
_EOCD = struct.Struct("<4s4H2LH")
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_CD_RECORD_SIZE = 46
_LOCAL_HEADER_SIZE = 30
_MAX_NAME_CHARS = 1024
_BAD_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def _size_of(fp: IO[bytes]) -> int:
    fp.seek(0, io.SEEK_END)
    size = fp.tell()
    fp.seek(0)
    return size


def _read_at(fp: IO[bytes], offset: int, length: int) -> bytes:
    fp.seek(offset)
    data = fp.read(length)
    if len(data) != length:
        raise _bad_zip("asic.zip_invalid", "the ZIP is truncated")
    return data


def _check_name(name: str, raw: str) -> None:
    if not raw or len(raw) > _MAX_NAME_CHARS:
        raise _bad_zip("asic.zip_unsafe_name", f"ZIP entry name of {len(raw)} characters")
    if _BAD_NAME_CHARS.search(raw):
        raise _bad_zip("asic.zip_unsafe_name", f"ZIP entry name {raw!r} holds a backslash or a control character")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise _bad_zip("asic.zip_unsafe_name", f"ZIP entry name {name!r} is an absolute path")
    if any(part in ("..", ".") for part in name.split("/")):
        raise _bad_zip("asic.zip_unsafe_name", f"ZIP entry name {name!r} holds a '.' or '..' path segment")


class SafeZip:
    """A ZIP opened from an untrusted, seekable binary file object, within :class:`ZipLimits`.

    ``is_zip`` is False (and ``entries`` empty) when the input does not start like a ZIP and
    ``not_zip_is_empty`` is set; otherwise such an input is ``asic.zip_invalid``.  ``entries`` are the
    file entries (directories left out) in central directory order.  Raises :class:`AsicError`
    (``AsicInvalidContainer``) for everything the module docstring lists.
    """

    def __init__(self, fp: IO[bytes], limits: ZipLimits = CONTAINER_LIMITS, *, not_zip_is_empty: bool = True,
                 what: str = "container") -> None:
        self.limits = limits
        self.what = what
        self.total = 0
        self.entries: tuple[zipfile.ZipInfo, ...] = ()
        size = _size_of(fp)
        if size > limits.max_zip_bytes:
            raise _bad_zip("asic.zip_too_large", f"the {what} has {size} bytes, over the limit of "
                                                 f"{limits.max_zip_bytes}")
        head = fp.read(4)
        fp.seek(0)
        self.is_zip = head in (_LOCAL_HEADER, _EMPTY_ZIP)
        if not self.is_zip:
            if not_zip_is_empty:
                return
            raise _bad_zip("asic.zip_invalid", f"the {what} is not a ZIP file")
        cd_offset = self._check_directory(fp, size)
        try:
            self._zip = zipfile.ZipFile(fp)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError, struct.error,
                NotImplementedError) as exc:
            raise _bad_zip("asic.zip_invalid", f"the {what} is not a readable ZIP: {exc}") from None
        self._check_entries(infos, cd_offset)
        self.entries = tuple(i for i in infos if not i.filename.endswith("/"))

    def _check_directory(self, fp: IO[bytes], size: int) -> int:
        """Bound the central directory before :mod:`zipfile` parses it; returns its offset."""
        tail_len = min(size, _EOCD.size + 0xFFFF)
        tail = _read_at(fp, size - tail_len, tail_len)
        pos = tail.rfind(_EMPTY_ZIP)
        if pos < 0 or pos + _EOCD.size > tail_len:
            raise _bad_zip("asic.zip_invalid", f"the {self.what} has no ZIP end of central directory record")
        _sig, disk, cd_disk, _n_disk, n_total, cd_size, cd_offset, _comment = _EOCD.unpack_from(tail, pos)
        end = size - tail_len + pos
        if disk or cd_disk:
            raise _bad_zip("asic.zip_invalid", f"the {self.what} is a multi-volume ZIP")
        if n_total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
            if end < _EOCD64_LOCATOR.size:
                raise _bad_zip("asic.zip_invalid", "ZIP64 end record locator missing")
            loc_sig, _disk, z64_at, _disks = _EOCD64_LOCATOR.unpack(_read_at(fp, end - _EOCD64_LOCATOR.size,
                                                                              _EOCD64_LOCATOR.size))
            if loc_sig != b"PK\x06\x07" or z64_at + _EOCD64.size > end:
                raise _bad_zip("asic.zip_invalid", "ZIP64 end record locator is invalid")
            fields = _EOCD64.unpack(_read_at(fp, z64_at, _EOCD64.size))
            if fields[0] != b"PK\x06\x06":
                raise _bad_zip("asic.zip_invalid", "ZIP64 end record is invalid")
            n_total, cd_size, cd_offset = fields[7], fields[8], fields[9]
            end = z64_at
        if n_total > self.limits.max_entries:
            raise _bad_zip("asic.zip_too_many_entries", f"the {self.what} has {n_total} entries, over the limit "
                                                        f"of {self.limits.max_entries}")
        if cd_size > self.limits.max_directory_bytes:
            raise _bad_zip("asic.zip_too_many_entries", f"the central directory of the {self.what} has {cd_size} "
                                                        f"bytes, over the limit of {self.limits.max_directory_bytes}")
        if cd_offset + cd_size != end:
            raise _bad_zip("asic.zip_invalid", f"the central directory of the {self.what} does not end where its "
                                               "end record is (data before or inside the ZIP)")
        directory = _read_at(fp, cd_offset, cd_size)
        count = pos = 0
        while pos < cd_size:
            if directory[pos:pos + 4] != b"PK\x01\x02" or pos + _CD_RECORD_SIZE > cd_size:
                raise _bad_zip("asic.zip_invalid", f"the central directory of the {self.what} is malformed")
            name_len, extra_len, comment_len = struct.unpack_from("<3H", directory, pos + 28)
            pos += _CD_RECORD_SIZE + name_len + extra_len + comment_len
            count += 1
            if count > self.limits.max_entries:
                raise _bad_zip("asic.zip_too_many_entries", f"the {self.what} has more than "
                                                            f"{self.limits.max_entries} entries")
        if pos != cd_size or count != n_total:
            raise _bad_zip("asic.zip_invalid", f"the central directory of the {self.what} does not match its "
                                               "end record")
        return int(cd_offset)

    def _check_entries(self, infos: Sequence[zipfile.ZipInfo], cd_offset: int) -> None:
        seen: set[str] = set()
        for info in infos:
            _check_name(info.filename, info.orig_filename)
            key = info.filename.lower()
            if key in seen:
                raise _bad_zip("asic.zip_duplicate_entry", f"the {self.what} holds {info.filename!r} twice "
                                                           "(names compared ignoring case)")
            seen.add(key)
            if info.flag_bits & 0x1:
                raise _bad_zip("asic.zip_encrypted", f"entry {info.filename!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise _bad_zip("asic.zip_unsupported", f"entry {info.filename!r} uses compression method "
                                                       f"{info.compress_type} (only stored and deflated are read)")
            if info.file_size > self.limits.max_total_bytes:
                raise _bad_zip("asic.zip_entry_too_large", f"entry {info.filename!r} declares {info.file_size} "
                                                           f"bytes, over the limit of {self.limits.max_total_bytes}")
        # Entries must not overlap one another or the central directory (quoted-overlap zip bombs).
        ordered = sorted(infos, key=lambda i: i.header_offset)
        for index, info in enumerate(ordered):
            name_len = len(info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace"))
            end = info.header_offset + _LOCAL_HEADER_SIZE + name_len + info.compress_size
            limit = ordered[index + 1].header_offset if index + 1 < len(ordered) else cd_offset
            if end > limit:
                raise _bad_zip("asic.zip_overlap", f"entry {info.filename!r} of the {self.what} overlaps the next "
                                                   "entry or the central directory")

    def chunks(self, info: zipfile.ZipInfo) -> Iterator[bytes]:
        """The uncompressed bytes of ``info`` in chunks (CRC checked at the end), counted against
        ``max_total_bytes``."""
        try:
            with self._zip.open(info) as stream:
                while True:
                    chunk = stream.read(_CHUNK)
                    if not chunk:
                        return
                    self.total += len(chunk)
                    if self.total > self.limits.max_total_bytes:
                        raise _bad_zip("asic.zip_too_large", f"the entries of the {self.what} inflate to more than "
                                                             f"{self.limits.max_total_bytes} bytes")
                    yield chunk
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError,
                NotImplementedError) as exc:
            raise _bad_zip("asic.zip_invalid", f"entry {info.filename!r} of the {self.what} cannot be read: "
                                               f"{exc}") from None

    def read(self, info: zipfile.ZipInfo, max_bytes: int | None = None) -> bytes:
        """The whole entry, at most ``max_bytes`` (default ``max_entry_bytes``) long."""
        bound = self.limits.max_entry_bytes if max_bytes is None else max_bytes
        if info.file_size > bound:
            raise _bad_zip("asic.zip_entry_too_large", f"entry {info.filename!r} of the {self.what} has "
                                                       f"{info.file_size} bytes, over the limit of {bound}")
        out = bytearray()
        for chunk in self.chunks(info):
            out += chunk
            if len(out) > bound:  # pragma: no cover - zipfile stops at the declared size
                raise _bad_zip("asic.zip_entry_too_large", f"entry {info.filename!r} exceeds {bound} bytes")
        return bytes(out)

    def digest(self, info: zipfile.ZipInfo, hash_name: str) -> bytes:
        """The ``hash_name`` digest of the entry, streamed."""
        h = hashlib.new(hash_name)
        for chunk in self.chunks(info):
            h.update(chunk)
        return h.digest()


# --------------------------------------------------------------------------- the container


def _is_blank(data: bytes | None) -> bool:
    """Java's ``StringUtils.isBlank`` over the UTF-8 text (``Character.isWhitespace``)."""
    if data is None:
        return True
    text = data.decode("utf-8", "replace")
    return all(ch.isspace() and ch not in "\u00a0\u2007\u202f\x85" for ch in text)


@dataclass(frozen=True)
class AsicContainer:
    """The recognised entries of a container (by exact name) and the SHA-512 digests of its
    attachments; ``names`` lists every file entry of the ZIP in directory order."""

    entries: Mapping[str, bytes]
    attachment_digests: Mapping[str, bytes]
    names: tuple[str, ...] = ()

    def entry(self, name: str) -> bytes | None:
        """An entry by name or URI (a leading ``/`` is ignored, as X-Road's ``stripSlash``)."""
        return self.entries.get(name[1:] if name.startswith("/") else name)

    def attachment_digest(self, name: str) -> bytes | None:
        return self.attachment_digests.get(name[1:] if name.startswith("/") else name)

    @property
    def message(self) -> bytes:
        return self.entries[ENTRY_MESSAGE]

    @property
    def signature(self) -> bytes:
        return self.entries[ENTRY_SIGNATURE]

    @property
    def sig_hash_chain_result(self) -> bytes | None:
        return self.entries.get(ENTRY_SIG_HASH_CHAIN_RESULT)

    @property
    def sig_hash_chain(self) -> bytes | None:
        return self.entries.get(ENTRY_SIG_HASH_CHAIN)

    @property
    def ts_hash_chain_result(self) -> bytes | None:
        return self.entries.get(ENTRY_TS_HASH_CHAIN_RESULT)

    @property
    def ts_hash_chain(self) -> bytes | None:
        return self.entries.get(ENTRY_TS_HASH_CHAIN)

    @property
    def timestamp(self) -> bytes | None:
        """``META-INF/timestamp.tst`` (DER), if present."""
        return self.entries.get(ENTRY_TIMESTAMP)

    @property
    def attachments(self) -> tuple[str, ...]:
        """Attachment entry names in directory order."""
        return tuple(n for n in self.names if n in self.attachment_digests)


def _check_pair(result: bytes | None, chain: bytes | None, result_name: str, chain_name: str) -> None:
    if _is_blank(result) and _is_blank(chain):
        return
    if _is_blank(result):
        raise _structure("AsicHashChainResultNotFound", "asic.hash_chain_result_not_found",
                         f"{result_name} not found or is empty")
    if _is_blank(chain):
        raise _structure("AsicHashChainNotFound", "asic.hash_chain_not_found", f"{chain_name} not found or is empty")


def _check_structure(entries: Mapping[str, bytes]) -> None:
    """X-Road's ``AsicContainer.verifyContents``."""
    mimetype = entries.get(ENTRY_MIMETYPE)
    if _is_blank(mimetype):
        raise _structure("AsicMimeTypeNotFound", "asic.mimetype_not_found", "mimetype not found or is empty")
    assert mimetype is not None
    text = mimetype.decode("utf-8", "replace")
    if text.lower() != MIMETYPE:
        raise _structure("AsicInvalidMimeType", "asic.mimetype_invalid", f"Invalid mime type: {text[:100]!r}")
    if _is_blank(entries.get(ENTRY_MESSAGE)):
        raise _structure("AsicMessageNotFound", "asic.message_not_found", f"{ENTRY_MESSAGE} not found or is empty")
    if _is_blank(entries.get(ENTRY_SIGNATURE)):
        raise _structure("AsicSignatureNotFound", "asic.signature_not_found",
                         f"{ENTRY_SIGNATURE} not found or is empty")
    _check_pair(entries.get(ENTRY_SIG_HASH_CHAIN_RESULT), entries.get(ENTRY_SIG_HASH_CHAIN),
                ENTRY_SIG_HASH_CHAIN_RESULT, ENTRY_SIG_HASH_CHAIN)
    timestamp = entries.get(ENTRY_TIMESTAMP)
    if timestamp is not None and not timestamp:
        raise _structure("AsicTimestampNotFound", "asic.timestamp_not_found", f"{ENTRY_TIMESTAMP} is empty")
    _check_pair(entries.get(ENTRY_TS_HASH_CHAIN_RESULT), entries.get(ENTRY_TS_HASH_CHAIN),
                ENTRY_TS_HASH_CHAIN_RESULT, ENTRY_TS_HASH_CHAIN)
    for name in (ENTRY_MANIFEST, ENTRY_ASIC_MANIFEST):
        value = entries.get(name)
        if value is not None and _is_blank(value):
            raise _structure("AsicManifestNotFound", "asic.manifest_not_found", f"{name} is empty")


def read_container(data: bytes, *, limits: ZipLimits = CONTAINER_LIMITS) -> AsicContainer:
    """Read an ASiC-E container (see the module docstring for the rules and the errors)."""
    archive = SafeZip(io.BytesIO(data), limits)
    entries: dict[str, bytes] = {}
    digests: dict[str, bytes] = {}
    for info in archive.entries:
        name = info.filename
        if name in _ENTRY_ORDER:
            entries[name] = archive.read(info)
        elif name.lower() in _RECOGNISED_LOWER or _SIGNATURE_PATTERN.fullmatch(name):
            continue  # recognised by X-Road, but never looked up under this spelling
        elif name.startswith(ENTRY_ATTACHMENT):
            digests[name] = archive.digest(info, "sha512")
    _check_structure(entries)
    return AsicContainer(MappingProxyType(entries), MappingProxyType(digests),
                         tuple(i.filename for i in archive.entries))


# --------------------------------------------------------------------------- verification


class VerificationConf(Protocol):
    """What verification needs of a global configuration (``InstalledConf`` of
    :mod:`gateway.globalconf.disk` fits): the own instance, whose approved TSAs are trusted, and
    the shared parameters of every instance, the signer's among them."""

    @property
    def own_instance(self) -> str: ...

    @property
    def shared(self) -> Mapping[str, SharedParameters]: ...


@dataclass(frozen=True)
class ContainerVerification:
    """A verified container.  ``validation_time`` is the time-stamp's genTime."""

    signer: ClientId
    message_kind: str  # "SOAP request", "SOAP response", "REST request", "REST response"
    query_id: str | None
    signature: VerifiedSignature
    timestamp: TimestampToken
    tsa_name: str
    batch_signature: bool
    batch_timestamp: bool
    attachments: tuple[str, ...]
    unverified_digests: tuple[tuple[str, bytes], ...] = field(default=())

    @property
    def validation_time(self) -> datetime:
        return self.timestamp.gen_time


@dataclass(frozen=True)
class _Signer:
    client: ClientId | None
    kind: str
    query_id: str | None
    error: VdxpError | None


def _signer_of(message: bytes) -> _Signer:
    """X-Road's ``AsicContainerVerifier.getSigner``."""
    try:
        soap = parse_soap(message, "text/xml; charset=UTF-8", max_bytes=max(len(message), 1))
    except XRoadFault as fault:
        if fault.base != "InvalidSoap":
            return _Signer(None, "SOAP message", None, AsicError(
                f"cannot determine the signer: message.xml is not a valid X-Road SOAP message "
                f"({fault.faultcode()}: {fault.faultstring})", code="asic.signer_unknown", xroad_code="InternalError"))
        try:
            rest = parse_rest_message(message)
        except XRoadFault as rest_fault:
            raise AsicError(f"message.xml is neither a SOAP message ({fault.faultstring}) nor an X-Road REST "
                            f"message ({rest_fault.faultstring})", code="asic.message_invalid",
                            xroad_code="InternalError") from None
        if isinstance(rest, RestResponse):
            sender = rest.service.provider if rest.service is not None else None
            kind = "REST response"
        else:
            sender, kind = rest.client, "REST request"
        error = None if sender is not None else AsicError(
            f"cannot determine the signer: the {kind} in message.xml names no "
            f"{'x-road-service' if kind == 'REST response' else 'x-road-client'}",
            code="asic.signer_unknown", xroad_code="InternalError")
        return _Signer(sender, kind, rest.query_id, error)
    if not isinstance(soap, SoapMessage):
        return _Signer(None, "SOAP fault", None, AsicError(
            "cannot determine the signer: message.xml is a SOAP fault", code="asic.signer_unknown",
            xroad_code="InternalError"))
    if soap.is_response:
        return _Signer(soap.service.provider, "SOAP response", soap.query_id, None)
    return _Signer(soap.client, "SOAP request", soap.query_id, None)


def _b64(text: str | None) -> bytes:
    return base64.b64decode("".join((text or "").split()), validate=True)


def _embedded_timestamp(doc: SignatureDocument) -> bytes:
    found = doc.object_container.xpath(
        "xades:QualifyingProperties/xades:UnsignedProperties/xades:UnsignedSignatureProperties/"
        "xades:SignatureTimeStamp/xades:EncapsulatedTimeStamp", namespaces={"xades": NS_XADES})
    elements = [e for e in found if isinstance(e, etree._Element)] if isinstance(found, list) else []
    if not elements or _is_blank((elements[0].text or "").encode()):
        raise _structure("AsicTimestampNotFound", "asic.timestamp_not_found",
                         f"the container has no {ENTRY_TIMESTAMP} and the signature no EncapsulatedTimeStamp")
    try:
        return _b64(elements[0].text)
    except (binascii.Error, ValueError):
        raise AsicError("the signature's EncapsulatedTimeStamp is not valid base64", code="asic.timestamp_malformed",
                        xroad_code="TimestampValidation") from None


def _token_hash(token_der: bytes) -> str:
    """The hash algorithm of the token's message imprint (hashlib name)."""
    try:
        info = cms.ContentInfo.load(token_der, strict=True)
        content = info["content"]["encap_content_info"]["content"]
        name = str(content.parsed["message_imprint"]["hash_algorithm"]["algorithm"].native)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise AsicError(f"the time-stamp token cannot be read: {exc}", code="asic.timestamp_malformed",
                        xroad_code="TimestampValidation") from None
    if name not in ("sha1", "sha224", "sha256", "sha384", "sha512"):
        raise AsicError(f"the time-stamp token's imprint uses an unsupported algorithm {name}",
                        code="asic.timestamp_malformed", xroad_code="TimestampValidation")
    return name


_TSA_ERRORS = {
    "tsa.imprint_mismatch": ("asic.timestamp_imprint_mismatch", "MalformedSignature"),
    "tsa.unknown_signer": ("asic.tsa_not_approved", "InternalError"),
    "tsa.signature_invalid": ("asic.timestamp_signature_invalid", "TimestampValidation"),
    "tsa.certificate_invalid": ("asic.tsa_certificate_invalid", "TimestampValidation"),
}


class _ChainInputs:
    """Resolution of hash chain URIs against the container, as X-Road's
    ``HashChainReferenceResolverImpl``: entries of the container are fetched and digested; other
    DataRefs are trusted (an attachment present in the container must match, see the docstring)."""

    def __init__(self, asic: AsicContainer) -> None:
        self.asic = asic
        self.trusted: list[tuple[str, bytes]] = []
        self.unverified: list[tuple[str, bytes]] = []

    def resolve(self, uri: str) -> bytes | None:
        return self.asic.entry(uri)

    def should_resolve(self, uri: str, written: bytes) -> bool:
        if self.asic.entry(uri) is not None:
            return True
        present = self.asic.attachment_digest(uri)
        if present is not None and len(written) == _SHA512_SIZE:
            if present != written:
                raise HashChainError(f"invalid digest value in hash chain reference to {uri}: the container's "
                                     f"{uri.lstrip('/')} has another SHA-512 digest", code="hashchain.invalid_ref",
                                     xroad_code="InvalidHashChainRef")
            self.trusted.append((uri, written))
            return False
        self.trusted.append((uri, written))
        self.unverified.append((uri, written))
        return False


def _verify_timestamp(asic: AsicContainer, doc: SignatureDocument, conf: VerificationConf,
                      unverified: list[tuple[str, bytes]]) -> tuple[TimestampToken, str, bool]:
    token_der = asic.timestamp if asic.timestamp is not None else _embedded_timestamp(doc)
    hash_name = _token_hash(token_der)
    ts_result = asic.ts_hash_chain_result
    if ts_result is not None:
        inputs = _ChainInputs(asic)
        try:
            verify_hash_chain(ts_result, inputs.resolve, {_SIGNATURES_URI: None}, inputs.should_resolve)
        except HashChainError as exc:
            raise AsicError(f"Failed to verify time-stamp hash chain: {exc.message}",
                            code="asic.timestamp_hash_chain_invalid", xroad_code="MalformedSignature") from None
        unverified.extend(inputs.unverified)
        stamped = ts_result
    else:
        try:
            stamped = _b64(doc.signature.findtext(_DS + "SignatureValue"))
        except (binascii.Error, ValueError):
            raise SignatureError("ds:SignatureValue is not valid base64", code="signature.malformed",
                                 xroad_code="MalformedSignature") from None
    own = conf.shared.get(conf.own_instance)
    tsas = own.tsas if own is not None else ()
    try:
        token = verify_token(token_der, digest=hashlib.new(hash_name, stamped).digest(), hash_name=hash_name,
                             tsa_certs=[t.cert for t in tsas])
    except TimestampError as exc:
        code, xroad = _TSA_ERRORS.get(exc.code, ("asic.timestamp_malformed", "TimestampValidation"))
        message = exc.message
        if code == "asic.timestamp_imprint_mismatch":
            message = f"Timestamp hashes do not match ({message})"
        elif code == "asic.tsa_not_approved":
            message = f"the time-stamp is not signed by an approved TSA of instance {conf.own_instance}: {message}"
        raise AsicError(message, code=code, xroad_code=xroad) from None
    tsa_name = next((t.name for t in tsas if t.cert == token.signer_cert), "?")
    return token, tsa_name, ts_result is not None


def verify_container(
    container: bytes | AsicContainer,
    conf: VerificationConf,
    *,
    limits: ZipLimits = CONTAINER_LIMITS,
    profile_resolver: ProfileResolver | None = None,
    cache: VerificationCache | None = None,
) -> ContainerVerification:
    """Verify an ASiC-E container offline against ``conf`` (see the module docstring).

    ``container`` is the ZIP bytes or a container read with :func:`read_container`.
    ``profile_resolver`` replaces the default certificate profiles (Basic, FiVRK) of
    :func:`~protocols.sigverify.verify_signature`; ``cache`` (a
    :class:`~protocols.sigverify.VerificationCache`) spares repeated certificate path checks when
    verifying many containers.  Returns :class:`ContainerVerification`; raises :class:`AsicError`,
    :class:`~protocols.errors.SignatureError` or :class:`~protocols.errors.CertificateError`, each
    with ``xroad_code`` (see :func:`fault_code` for the 7.8 spelling).
    """
    asic = container if isinstance(container, AsicContainer) else read_container(container, limits=limits)
    signature_xml = asic.signature
    doc = parse_signature_document(signature_xml)
    signer = _signer_of(asic.message)
    if not doc.references_uri(MESSAGE_URI) and not doc.references_uri(HASH_CHAIN_RESULT_URI):
        raise AsicError(f"Signature does not reference '{MESSAGE_URI}' or '{HASH_CHAIN_RESULT_URI}'",
                        code="asic.signature_references", xroad_code="MalformedSignature")
    unverified: list[tuple[str, bytes]] = []
    token, tsa_name, batch_ts = _verify_timestamp(asic, doc, conf, unverified)
    if signer.error is not None:
        raise signer.error
    assert signer.client is not None
    shared = conf.shared.get(signer.client.instance)
    if shared is None:
        raise AsicError(f"the configuration has no shared parameters of the signer's instance "
                        f"{signer.client.instance}", code="asic.signer_instance_unknown", xroad_code="InternalError")
    message = asic.message
    parts = [SignedPart(MESSAGE_URI, data=message)]
    batch = asic.sig_hash_chain_result is not None and doc.references_uri(HASH_CHAIN_RESULT_URI)
    if batch:
        assert asic.sig_hash_chain_result is not None
        inputs = _ChainInputs(asic)
        try:
            verify_hash_chain(asic.sig_hash_chain_result, inputs.resolve, {MESSAGE_URI: None}, inputs.should_resolve)
        except HashChainError as exc:
            raise SignatureError(f"hash chain does not verify: {exc.message}", code="signature.hash_chain_invalid",
                                 xroad_code=f"MalformedSignature.{exc.xroad_code or 'MalformedHashChain'}") from None
        unverified.extend(inputs.unverified)
        # the data refs trusted above, handed to the signature verifier as known digests
        parts += [SignedPart(uri, digest=digest, digest_method=_URI_BY_DIGEST_SIZE.get(len(digest), SHA512_URI))
                  for uri, digest in dict(inputs.trusted).items() if uri != MESSAGE_URI]
    else:
        parts += [SignedPart("/" + name, digest=asic.attachment_digests[name]) for name in asic.attachments]
    call = verify_signature if profile_resolver is None else partial(verify_signature,
                                                                     profile_resolver=profile_resolver)
    verified = call(signature_xml, signer=signer.client, conf=shared, at=token.gen_time, parts=parts,
                    hash_chain_result=asic.sig_hash_chain_result, hash_chain=asic.sig_hash_chain,
                    hash_chain_resolver=_ChainInputs(asic).resolve, verify_schema=False, cache=cache)
    return ContainerVerification(
        signer=signer.client, message_kind=signer.kind, query_id=signer.query_id, signature=verified,
        timestamp=token, tsa_name=tsa_name, batch_signature=verified.batch, batch_timestamp=batch_ts,
        attachments=asic.attachments, unverified_digests=tuple(unverified))


# --------------------------------------------------------------------------- building


def embed_timestamp(signature_xml: bytes, token_der: bytes) -> bytes:
    """The signature document with ``token_der`` as its
    ``xades:SignatureTimeStamp/xades:EncapsulatedTimeStamp`` (first of the unsigned signature
    properties, as X-Road writes it).  Unsigned properties are outside the signature value, and the
    token's imprint is over the ``ds:SignatureValue``: the signature stays valid."""
    try:
        root = parse_xml(signature_xml)
    except XmlError as exc:
        raise ValueError(f"signature document is not acceptable XML: {exc.message}") from None
    qp = next(root.iter(_XA + "QualifyingProperties"), None)
    if qp is None:
        raise ValueError("signature document has no xades:QualifyingProperties")
    if next(qp.iter(_XA + "EncapsulatedTimeStamp"), None) is not None:
        raise ValueError("signature document already holds a time-stamp")
    up = qp.find(_XA + "UnsignedProperties")
    if up is None:
        up = etree.SubElement(qp, _XA + "UnsignedProperties")
    usp = up.find(_XA + "UnsignedSignatureProperties")
    if usp is None:
        usp = etree.SubElement(up, _XA + "UnsignedSignatureProperties")
    sts = etree.Element(_XA + "SignatureTimeStamp")
    etree.SubElement(sts, _XA + "EncapsulatedTimeStamp").text = base64.b64encode(token_der).decode("ascii")
    usp.insert(0, sts)
    out: bytes = etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")
    return out


def _odf_manifest(xml_entries: Sequence[str], attachments: Sequence[str]) -> bytes:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<manifest:manifest xmlns:manifest="{ODF_MANIFEST_NS}" manifest:version="1.2">',
             f'    <manifest:file-entry manifest:media-type="{MIMETYPE}" manifest:full-path="/"/>']
    lines += [f'    <manifest:file-entry manifest:media-type="text/xml" manifest:full-path="{n}"/>'
              for n in xml_entries]
    lines += [f'    <manifest:file-entry manifest:media-type="application/octet-stream" manifest:full-path="{n}"/>'
              for n in attachments]
    lines.append("</manifest:manifest>\n")
    return "\n".join(lines).encode("utf-8")


def _asic_manifest(ts_hash_chain_result: bytes) -> bytes:
    digest = base64.b64encode(hashlib.sha512(ts_hash_chain_result).digest()).decode("ascii")
    return ("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
            f'<asic:ASiCManifest xmlns:asic="{ASIC_MANIFEST_NS}" xmlns:ds="{NS_DS}">\n'
            f'<asic:SigReference URI="{ENTRY_TIMESTAMP}" MimeType="vnd.etsi.timestamp-token"/>\n'
            f'<asic:DataObjectReference URI="{ENTRY_TS_HASH_CHAIN_RESULT}" MimeType="text/xml">\n'
            f'<ds:DigestMethod Algorithm="{SHA512_URI}" />\n'
            f"<ds:DigestValue>{digest}</ds:DigestValue>\n"
            "</asic:DataObjectReference>\n"
            "</asic:ASiCManifest>").encode()


def _has_embedded_timestamp(signature_xml: bytes) -> bool:
    try:
        doc = parse_signature_document(signature_xml)
        _embedded_timestamp(doc)
    except (SignatureError, AsicError):
        return False
    return True


def build_container(
    *,
    message: bytes,
    signature: bytes,
    created: datetime,
    timestamp: bytes | None = None,
    ts_hash_chain_result: bytes | None = None,
    ts_hash_chain: bytes | None = None,
    sig_hash_chain_result: bytes | None = None,
    sig_hash_chain: bytes | None = None,
    attachments: Sequence[bytes] = (),
) -> bytes:
    """Write an ASiC-E container in X-Road's layout (see the module docstring); returns the ZIP.

    ``timestamp`` is the DER time-stamp token.  With ``ts_hash_chain_result`` and ``ts_hash_chain``
    (a batch time-stamp) it becomes ``META-INF/timestamp.tst`` and ``META-INF/ASiCManifest.xml`` is
    written; without them it is embedded into the signature (:func:`embed_timestamp`); None means
    the signature already embeds one.  ``sig_hash_chain_result``/``sig_hash_chain`` are the hash
    chain of a batch signature.  ``created`` (the log record's time) dates the entries.  The same
    inputs give the same bytes.  ``ValueError`` for inconsistent inputs.
    """
    if _is_blank(message) or _is_blank(signature):
        raise ValueError("a container needs a message and a signature")
    if (sig_hash_chain_result is None) != (sig_hash_chain is None):
        raise ValueError("the signature hash chain needs both its result and its chain")
    if (ts_hash_chain_result is None) != (ts_hash_chain is None):
        raise ValueError("the time-stamp hash chain needs both its result and its chain")
    if ts_hash_chain_result is not None and timestamp is None:
        raise ValueError("a time-stamp hash chain needs its time-stamp token")
    if timestamp is not None and not timestamp:
        raise ValueError("the time-stamp token is empty")
    if timestamp is not None and ts_hash_chain_result is None:
        signature = embed_timestamp(signature, timestamp)
        timestamp = None
    elif timestamp is None and not _has_embedded_timestamp(signature):
        raise ValueError("no time-stamp: give the token, or a signature that embeds one")
    entries: dict[str, bytes] = {ENTRY_MIMETYPE: MIMETYPE.encode("ascii"), ENTRY_MESSAGE: message,
                                 ENTRY_SIGNATURE: signature}
    optional = ((ENTRY_SIG_HASH_CHAIN_RESULT, sig_hash_chain_result), (ENTRY_SIG_HASH_CHAIN, sig_hash_chain),
                (ENTRY_TS_HASH_CHAIN_RESULT, ts_hash_chain_result), (ENTRY_TS_HASH_CHAIN, ts_hash_chain))
    entries.update((name, value) for name, value in optional if value is not None)
    attachment_names = [f"{ENTRY_ATTACHMENT}{i}" for i in range(1, len(attachments) + 1)]
    xml_names = [n for n in _ENTRY_ORDER if n in entries and n != ENTRY_MIMETYPE and not n.startswith("META-INF")]
    entries[ENTRY_MANIFEST] = _odf_manifest(xml_names, attachment_names)
    if ts_hash_chain_result is not None:
        assert timestamp is not None
        entries[ENTRY_ASIC_MANIFEST] = _asic_manifest(ts_hash_chain_result)
        entries[ENTRY_TIMESTAMP] = timestamp
    _check_structure(entries)
    when = created.astimezone(UTC) if created.tzinfo is not None else created.replace(tzinfo=UTC)
    date_time = (max(when.year, 1980), when.month, when.day, when.hour, when.minute, when.second)
    mtime = struct.pack("<HHBl", 0x5455, 5, 1, int(when.timestamp()))  # extended timestamp: mtime (UTC)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.comment = f"mimetype={MIMETYPE}".encode("ascii")

        def add(name: str, data: bytes, stored: bool = False) -> None:
            info = zipfile.ZipInfo(name, date_time)
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            if not stored:
                info.extra = mtime
            zf.writestr(info, data)

        add(ENTRY_MIMETYPE, entries[ENTRY_MIMETYPE], stored=True)
        for name in _ENTRY_ORDER[1:]:
            if name in entries:
                add(name, entries[name])
        for name, data in zip(attachment_names, attachments, strict=True):
            add(name, data)
    return out.getvalue()
