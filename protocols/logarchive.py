# test-case-name: tests.test_logarchive
"""X-Road message-log archives: the ``linkinginfo`` hash chain between archives, verified and built.

An archive is a ZIP (``mlog[-<group>]-<first>-<last>-<16 hex>.zip``, GPG-encrypted on disk as
``.zip.gpg`` when the operator asks; verified after decryption) holding one ASiC-E container
(``<queryId>-request|response-<random>.asice``) per logged message and, written last, the entry
``linkinginfo``: UTF-8 text, one record per line (LF; CRLF read too), fields separated by
whitespace::

    <PREV_DIGEST> <PREV_ARCHIVE> <ALGORITHM>      header: "-" for none; SHA-256, SHA-384 or SHA-512
    <CHAINED_DIGEST> <ENTRY_NAME>                 one per .asice entry

Chain rule: ``D0`` = PREV_DIGEST (the empty string for "-"); for the i-th ``.asice`` entry in ZIP
(central directory) order, ``h_i`` = lower-case hex of H(entry bytes) and ``D_i`` = lower-case
hex of H(UTF-8 of ``D_(i-1)`` followed by ``h_i``).  ``D_n`` is the archive's result: it becomes
the next archive's PREV_DIGEST and its first 16 hex digits end the file name.

Verification (:func:`verify_archive`, X-Road's ``messagelog-archive-verifier``), failures in this
order, each an :class:`ArchiveError` with a ``logarchive.*`` code (X-Road's verifier has no fault
codes): ``no_linkinginfo``; ``linkinginfo_malformed`` / ``unsupported_algorithm``;
``no_containers`` (at least one ``.asice`` entry); ``previous_digest_mismatch`` (the caller's
previous digest, or "" for the first archive, must equal PREV_DIGEST; hex compared ignoring case);
``names_differ`` (the names in ``linkinginfo`` and the ``.asice`` entries must be the same sets);
``digest_mismatch`` (the first entry, in ZIP order, whose recomputed ``D_i`` differs from its line).
Stricter than X-Road: a ``linkinginfo`` line with other than 3 (header) or 2 fields, a name listed
twice, or two entries whose names differ only in case are refused.  The ZIP is read within
:data:`ARCHIVE_LIMITS` by :class:`protocols.asic.SafeZip` (``AsicInvalidContainer`` errors with
``asic.zip_*`` codes), every entry streamed through the hash.

Building: :class:`LinkingChain` computes the chain and writes ``linkinginfo``; :func:`archive_name`
names the file; :func:`build_archive` writes a whole archive to a binary file object.

Pure: no I/O except through the file objects given.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO
from urllib.parse import quote

from protocols.asic import SafeZip, ZipLimits
from protocols.errors import VdxpError

__all__ = [
    "ALGORITHMS",
    "ARCHIVE_LIMITS",
    "LINKING_INFO",
    "MAX_LINKING_INFO_BYTES",
    "ArchiveBuild",
    "ArchiveContainer",
    "ArchiveError",
    "ArchiveVerification",
    "LinkingChain",
    "LinkingInfo",
    "archive_name",
    "build_archive",
    "chain_digest",
    "parse_linking_info",
    "verify_archive",
]

LINKING_INFO = "linkinginfo"
ASIC_SUFFIX = ".asice"
#: linkinginfo algorithm names (compared ignoring case) -> hashlib names.
ALGORITHMS: Mapping[str, str] = MappingProxyType({"SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"})
MAX_LINKING_INFO_BYTES = 32 * 1024 * 1024
#: Bounds for an archive: X-Road closes an archive at 32 MiB by default; operators may raise that.
ARCHIVE_LIMITS = ZipLimits(max_zip_bytes=4 * 1024 ** 3, max_entries=65_535, max_directory_bytes=16 * 1024 * 1024,
                           max_entry_bytes=128 * 1024 * 1024, max_total_bytes=16 * 1024 ** 3)
_HEX = re.compile(r"[0-9a-fA-F]+")


class ArchiveError(VdxpError):
    """A log archive does not verify.  ``code`` is ``logarchive.<reason>``."""

    code = "logarchive.invalid"


def _err(reason: str, message: str) -> ArchiveError:
    return ArchiveError(message, code=f"logarchive.{reason}")


def _algorithm(name: str) -> tuple[str, str]:
    """(canonical name, hashlib name) of a linkinginfo algorithm name."""
    canonical = name.upper()
    hash_name = ALGORITHMS.get(canonical)
    if hash_name is None:
        raise _err("unsupported_algorithm", f"linkinginfo names the digest algorithm {name[:40]!r}; "
                                            f"{', '.join(ALGORITHMS)} are supported")
    return canonical, hash_name


def chain_digest(hash_name: str, previous: str, entry_digest: bytes) -> str:
    """``D_i`` (lower-case hex) from ``D_(i-1)`` and the raw digest of the i-th container."""
    return hashlib.new(hash_name, (previous + entry_digest.hex()).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- linkinginfo


@dataclass(frozen=True)
class LinkingInfo:
    """A parsed ``linkinginfo``: ``previous_digest`` and ``previous_archive`` are "" for "-";
    ``algorithm`` is canonical (``SHA-512``); ``digests`` maps entry names to their chained
    digest as written; ``names`` keeps the file's order."""

    previous_digest: str
    previous_archive: str
    algorithm: str
    digests: Mapping[str, str]
    names: tuple[str, ...]

    @property
    def hash_name(self) -> str:
        return ALGORITHMS[self.algorithm]


def parse_linking_info(data: bytes) -> LinkingInfo:
    """Parse ``linkinginfo`` (see the module docstring); raises ``logarchive.linkinginfo_malformed``
    or ``logarchive.unsupported_algorithm``."""
    if len(data) > MAX_LINKING_INFO_BYTES:
        raise _err("linkinginfo_malformed", f"linkinginfo has {len(data)} bytes, over {MAX_LINKING_INFO_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _err("linkinginfo_malformed", f"linkinginfo is not UTF-8 text: {exc}") from None
    lines = re.split(r"\r?\n", text)
    while lines and lines[-1] == "":
        lines.pop()  # as Java's String.split: trailing empty lines do not count
    if not lines:
        raise _err("linkinginfo_malformed", "linkinginfo is empty")
    header = lines[0].split()
    if len(header) != 3:
        raise _err("linkinginfo_malformed", f"linkinginfo header {lines[0][:200]!r} does not have the three "
                                            "fields PREV_DIGEST PREV_ARCHIVE ALGORITHM")
    algorithm, _hash_name = _algorithm(header[2])
    digests: dict[str, str] = {}
    names: list[str] = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if len(fields) != 2:
            raise _err("linkinginfo_malformed", f"linkinginfo line {number} {line[:200]!r} does not have the two "
                                                "fields CHAINED_DIGEST ENTRY_NAME")
        digest, name = fields
        if name in digests:
            raise _err("linkinginfo_malformed", f"linkinginfo lists {name!r} twice (lines {names.index(name) + 2} "
                                                f"and {number})")
        digests[name] = digest
        names.append(name)
    return LinkingInfo(previous_digest="" if header[0] == "-" else header[0],
                       previous_archive="" if header[1] == "-" else header[1], algorithm=algorithm,
                       digests=MappingProxyType(digests), names=tuple(names))


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class ArchiveContainer:
    """One container of an archive being verified, handed to ``on_container``."""

    index: int  # 1-based, in ZIP order
    total: int
    name: str
    data: bytes


@dataclass(frozen=True)
class ArchiveVerification:
    """A verified archive: ``last_digest`` is ``D_n`` (the next archive's previous digest)."""

    last_digest: str
    algorithm: str
    entries: int
    previous_digest: str
    previous_archive: str
    names: tuple[str, ...]


def _names_differ(listed: Iterable[str], present: Iterable[str]) -> str:
    only_listed = sorted(set(listed) - set(present))
    only_present = sorted(set(present) - set(listed))
    parts = []
    if only_listed:
        parts.append(f"listed in linkinginfo but not in the archive: {', '.join(only_listed[:10])}"
                     + (f" and {len(only_listed) - 10} more" if len(only_listed) > 10 else ""))
    if only_present:
        parts.append(f"in the archive but not in linkinginfo: {', '.join(only_present[:10])}"
                     + (f" and {len(only_present) - 10} more" if len(only_present) > 10 else ""))
    return "; ".join(parts)


def verify_archive(
    source: IO[bytes] | bytes,
    previous_digest: str | None,
    *,
    on_container: Callable[[ArchiveContainer], None] | None = None,
    limits: ZipLimits = ARCHIVE_LIMITS,
) -> ArchiveVerification:
    """Verify the ``linkinginfo`` chain of a log archive (a seekable binary file object or bytes).

    ``previous_digest`` is the last digest of the previous archive of the group, or None for the
    first archive (X-Road's ``--first``).  ``on_container``, when given, receives every container's
    bytes (each at most ``limits.max_entry_bytes``) in ZIP order, all of them even when the chain
    breaks (the first break is raised after the last container); without it the entries are only
    streamed through the hash.  Returns :class:`ArchiveVerification`; raises :class:`ArchiveError`
    (or :class:`~protocols.asic.AsicError` for a ZIP outside the limits).
    """
    fp = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    archive = SafeZip(fp, limits, not_zip_is_empty=False, what="archive")
    by_name = {info.filename: info for info in archive.entries}
    linking_entry = by_name.get(LINKING_INFO)
    if linking_entry is None:
        raise _err("no_linkinginfo", f"the archive has no {LINKING_INFO} entry")
    linking = parse_linking_info(archive.read(linking_entry, MAX_LINKING_INFO_BYTES))
    containers = [info for info in archive.entries if info.filename.endswith(ASIC_SUFFIX)]
    if not containers:
        raise _err("no_containers", "the archive holds no ASiC container (.asice entry); at least one is expected")
    given = "" if previous_digest is None else previous_digest
    if given.lower() != linking.previous_digest.lower():
        raise _err("previous_digest_mismatch",
                   f"the previous digest differs: given {given or '(none: first archive)'}, in linkinginfo "
                   f"{linking.previous_digest or '- (first archive)'}")
    present = [info.filename for info in containers]
    if set(present) != set(linking.digests):
        raise _err("names_differ", f"the containers listed in linkinginfo and those in the archive differ: "
                                   f"{_names_differ(linking.digests, present)}")
    hash_name = linking.hash_name
    current = linking.previous_digest
    first_break: ArchiveError | None = None
    for index, info in enumerate(containers, start=1):
        if on_container is not None:
            data = archive.read(info)
            entry_digest = hashlib.new(hash_name, data).digest()
        else:
            entry_digest = archive.digest(info, hash_name)
        current = chain_digest(hash_name, current, entry_digest)
        listed = linking.digests[info.filename]
        if current != listed and first_break is None:
            first_break = _err("digest_mismatch", f"the chained digest of {info.filename} does not match: "
                                                  f"linkinginfo has {listed[:200]}, computed {current}")
            if on_container is None:
                raise first_break
        if on_container is not None:
            on_container(ArchiveContainer(index, len(containers), info.filename, data))
    if first_break is not None:
        raise first_break
    return ArchiveVerification(last_digest=current, algorithm=linking.algorithm, entries=len(containers),
                               previous_digest=linking.previous_digest, previous_archive=linking.previous_archive,
                               names=tuple(present))


# --------------------------------------------------------------------------- building


class LinkingChain:
    """Builds ``linkinginfo`` container by container (in the order they are written to the ZIP).

    ``previous_digest``/``previous_archive``: the last digest and file name of the previous archive
    of the group (None for the first).  ``algorithm``: ``SHA-256``, ``SHA-384`` or ``SHA-512``.
    """

    def __init__(self, previous_digest: str | None = None, previous_archive: str | None = None,
                 algorithm: str = "SHA-512") -> None:
        self.algorithm, self.hash_name = _algorithm(algorithm)
        if previous_digest is not None and (not _HEX.fullmatch(previous_digest)
                                            or len(previous_digest) != 2 * hashlib.new(self.hash_name).digest_size):
            raise ValueError(f"previous digest {previous_digest[:200]!r} is not a {self.algorithm} hex digest")
        for value, what in ((previous_archive, "previous archive name"),):
            if value is not None and (not value or any(ch.isspace() for ch in value)):
                raise ValueError(f"{what} {value!r} must be non-empty and hold no whitespace")
        self.previous_digest = (previous_digest or "").lower()
        self.previous_archive = previous_archive
        self.last_digest = self.previous_digest
        self._lines: list[tuple[str, str]] = []
        self._names: set[str] = set()

    def add(self, name: str, data: bytes | None = None, *, digest: bytes | None = None) -> str:
        """Chain the next container (its bytes, or their raw ``algorithm`` digest); returns ``D_i``."""
        if not name.endswith(ASIC_SUFFIX) or any(ch.isspace() for ch in name) or "/" in name:
            raise ValueError(f"container name {name!r} must end with {ASIC_SUFFIX} and hold no whitespace or '/'")
        if name.lower() in self._names:
            raise ValueError(f"container {name!r} added twice")
        if (data is None) == (digest is None):
            raise ValueError("give the container's bytes or its digest")
        raw = hashlib.new(self.hash_name, data).digest() if data is not None else digest
        assert raw is not None
        if len(raw) != hashlib.new(self.hash_name).digest_size:
            raise ValueError(f"digest of {name!r} has {len(raw)} bytes, not a {self.algorithm} digest")
        self.last_digest = chain_digest(self.hash_name, self.last_digest, raw)
        self._lines.append((self.last_digest, name))
        self._names.add(name.lower())
        return self.last_digest

    def __len__(self) -> int:
        return len(self._lines)

    def linking_info(self) -> bytes:
        """The ``linkinginfo`` entry (LF line ends, a final LF)."""
        header = f"{self.previous_digest or '-'} {self.previous_archive or '-'} {self.algorithm}"
        return ("\n".join([header, *(f"{d} {n}" for d, n in self._lines)]) + "\n").encode("utf-8")


def archive_name(first: datetime, last: datetime, last_digest: str, group: str | None = None, *,
                 encrypted: bool = False) -> str:
    """``mlog[-<group>]-<first>-<last>-<16 hex>.zip[.gpg]``: the times of the first and last record
    (UTC, ``yyyyMMddHHmmss``), the first 16 hex digits of the last digest; the group name is
    percent-encoded outside ``A-Za-z0-9._~-``."""
    if not _HEX.fullmatch(last_digest) or len(last_digest) < 16:
        raise ValueError(f"last digest {last_digest[:200]!r} is not a hex digest")
    if group is not None and not group:
        raise ValueError("an empty group name")

    def stamp(when: datetime) -> str:
        utc = when.astimezone(UTC) if when.tzinfo is not None else when.replace(tzinfo=UTC)
        return utc.strftime("%Y%m%d%H%M%S")

    prefix = "mlog" if group is None else f"mlog-{quote(group, safe='')}"
    return f"{prefix}-{stamp(first)}-{stamp(last)}-{last_digest[:16].lower()}.zip" + (".gpg" if encrypted else "")


@dataclass(frozen=True)
class ArchiveBuild:
    """What :func:`build_archive` wrote."""

    last_digest: str
    algorithm: str
    names: tuple[str, ...]
    linking_info: bytes


def build_archive(out: IO[bytes], containers: Iterable[tuple[str, bytes]], *, created: datetime,
                  previous_digest: str | None = None, previous_archive: str | None = None,
                  algorithm: str = "SHA-512") -> ArchiveBuild:
    """Write a log archive to ``out``: the containers (name, ASiC-E bytes) in the given order, stored
    (they are ZIPs already), then ``linkinginfo``.  ``ValueError`` for no container or a bad name."""
    chain = LinkingChain(previous_digest, previous_archive, algorithm)
    when = created.astimezone(UTC) if created.tzinfo is not None else created.replace(tzinfo=UTC)
    date_time = (max(when.year, 1980), when.month, when.day, when.hour, when.minute, when.second)
    names: list[str] = []
    with zipfile.ZipFile(out, "w") as zf:
        def add(name: str, data: bytes, compress: int) -> None:
            info = zipfile.ZipInfo(name, date_time)
            info.compress_type = compress
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            zf.writestr(info, data)

        for name, data in containers:
            chain.add(name, data)
            add(name, data, zipfile.ZIP_STORED)
            names.append(name)
        if not names:
            raise ValueError("an archive needs at least one container")
        linking = chain.linking_info()
        add(LINKING_INFO, linking, zipfile.ZIP_DEFLATED)
    return ArchiveBuild(chain.last_digest, chain.algorithm, tuple(names), linking)
