# test-case-name: tests.test_gconf_disk
"""X-Road's on-disk global configuration directory: reading it, and installing a new one atomically.

Layout (the one X-Road's configuration client writes under ``/etc/xroad/globalconf``)::

    instance-identifier                 own instance, e.g. "EE" (trailing whitespace ignored)
    files                               list of the configuration files, one per line
    <INSTANCE>/shared-params.xml        one directory per instance (URL-encoded name)
    <INSTANCE>/shared-params.xml.metadata
    <INSTANCE>/private-params.xml       own instance (and older federated copies)
    <INSTANCE>/private-params.xml.metadata

Each ``.metadata`` file is JSON ``{"contentIdentifier", "instanceIdentifier",
"expirationDate", "configurationVersion"}``; a missing ``configurationVersion`` (or a missing
metadata file) means version 2, a missing ``expirationDate`` means "no expiry".

Atomic installation: :func:`install_conf` writes the complete new set into a fresh hidden
sibling directory (``.<name>.<random>.gen``), fsyncs every file and directory, parses it back
with :func:`read_conf_dir`, and only then renames a symbolic link over ``<name>`` (rename(2)
is atomic).  A reader that resolves ``<name>`` once therefore sees either the old or the new
complete set, never a mix; any failure before the rename (disk full, permissions, a file that
does not parse) removes the new directory and leaves the old set untouched.  The previous
generation is kept until the next installation so that a reader still inside it is not cut
short.  A directory that is not yet a link (a layout written by X-Road itself) is moved aside
once, on the first installation; that single migration has a moment without ``<name>``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from protocols.gconf.errors import GlobalConfError
from protocols.gconf.params import (
    ClientId,
    PrivateParameters,
    SharedParameters,
    parse_private_params,
    parse_shared_params,
)

__all__ = [
    "FILES_FILE",
    "INSTANCE_IDENTIFIER_FILE",
    "METADATA_SUFFIX",
    "PRIVATE_PARAMS",
    "SHARED_PARAMS",
    "FileMetadata",
    "InstallFile",
    "InstalledConf",
    "check_conf_dir",
    "configuration_files",
    "install_conf",
    "instance_dir_name",
    "read_conf_dir",
    "read_metadata",
    "readiness_state",
]

INSTANCE_IDENTIFIER_FILE = "instance-identifier"
FILES_FILE = "files"
METADATA_SUFFIX = ".metadata"
SHARED_PARAMS = "shared-params.xml"
PRIVATE_PARAMS = "private-params.xml"

MAX_FILE_BYTES = 32 * 1024 * 1024
_GEN_SUFFIX = ".gen"


# --------------------------------------------------------------------------- names


def instance_dir_name(instance: str) -> str:
    """The directory name of an instance: Java ``URLEncoder.encode(instance, UTF-8)``, as X-Road
    (letters, digits and ``.-*_`` kept, space as ``+``, everything else ``%XX``)."""
    out: list[str] = []
    for ch in instance:
        if ch.isascii() and (ch.isalnum() or ch in ".-*_"):
            out.append(ch)
        elif ch == " ":
            out.append("+")
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def _instance_from_dir(name: str) -> str:
    from urllib.parse import unquote_plus

    return unquote_plus(name, encoding="utf-8", errors="strict")


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class FileMetadata:
    """The ``.metadata`` of one configuration file."""

    content_identifier: str | None = None
    instance_identifier: str | None = None
    expiration_date: datetime | None = None
    configuration_version: int = 2


def _parse_time(text: str, where: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise GlobalConfError(f"{where}: expirationDate {text!r} is not an ISO 8601 time",
                              code="gconf.metadata_invalid") from exc
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _format_time(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def read_metadata(file: Path) -> FileMetadata:
    """The metadata next to ``file`` (``file.metadata``); defaults when there is none."""
    meta_path = file.with_name(file.name + METADATA_SUFFIX)
    try:
        raw = meta_path.read_bytes()
    except FileNotFoundError:
        return FileMetadata()
    except OSError as exc:
        raise GlobalConfError(f"cannot read {meta_path}: {exc.strerror}", code="gconf.dir_invalid") from exc
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GlobalConfError(f"{meta_path} is not JSON: {exc}", code="gconf.metadata_invalid") from exc
    if not isinstance(doc, dict):
        raise GlobalConfError(f"{meta_path} is not a JSON object", code="gconf.metadata_invalid")
    for key in ("contentIdentifier", "instanceIdentifier", "expirationDate"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise GlobalConfError(f"{meta_path}: {key} is not a string", code="gconf.metadata_invalid")
    version_raw = doc.get("configurationVersion")
    version = 2
    if version_raw is not None:
        try:
            version = int(str(version_raw).strip())
        except ValueError as exc:
            raise GlobalConfError(f"{meta_path}: configurationVersion {version_raw!r} is not a number",
                                  code="gconf.metadata_invalid") from exc
    expires = doc.get("expirationDate")
    return FileMetadata(doc.get("contentIdentifier"), doc.get("instanceIdentifier"),
                        _parse_time(expires, str(meta_path)) if expires else None, version)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, eq=True)
class InstalledConf:
    """A configuration directory as read from disk.

    ``shared``/``private`` are keyed by instance identifier (the decoded directory name);
    ``expires`` is the earliest expiration of the own instance's files (None: no expiry
    given); ``files`` the configuration files present (relative POSIX paths, sorted);
    ``metadata`` the metadata of each of them.
    """

    own_instance: str
    shared: Mapping[str, SharedParameters]
    private: Mapping[str, PrivateParameters]
    expires: datetime | None
    files: tuple[str, ...]
    metadata: Mapping[str, FileMetadata] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def own_shared(self) -> SharedParameters:
        return self.shared[self.own_instance]

    @property
    def own_private(self) -> PrivateParameters | None:
        return self.private.get(self.own_instance)

    def is_expired(self, now: datetime) -> bool:
        """True once the own instance's configuration is past its expiration date."""
        return self.expires is not None and now >= self.expires

    def shared_expires(self, instance: str) -> datetime | None:
        meta = self.metadata.get(f"{instance_dir_name(instance)}/{SHARED_PARAMS}")
        return meta.expiration_date if meta is not None else None

    def find_shared(self, instance: str, now: datetime) -> SharedParameters | None:
        """Shared parameters of ``instance``; a federated instance's only while not expired
        (X-Road's ``findShared``: the own instance is returned regardless)."""
        sp = self.shared.get(instance)
        if sp is None or instance == self.own_instance:
            return sp
        expires = self.shared_expires(instance)
        return sp if expires is None or now < expires else None

    def is_member_of_global_group(self, client: ClientId, group_instance: str, group_code: str) -> bool:
        """True when ``client`` is a member of global group ``group_instance``/``group_code``."""
        sp = self.shared.get(group_instance)
        return sp is not None and sp.is_member_of_group(client, group_code)


def readiness_state(path: Path) -> str:
    """X-Road's ``FSGlobalConfValidator`` verdict on a configuration directory:
    ``READY_TO_INIT``, ``FAILURE_CONFIGURATION_ERROR`` (not a directory),
    ``FAILURE_MALFORMED`` (no instance directory), ``FAILURE_MISSING_INSTANCE_IDENTIFIER``
    or ``FAILURE_UNEXPECTED``."""
    try:
        check_conf_dir(path)
    except GlobalConfError as exc:
        return {
            "gconf.dir_invalid": "FAILURE_CONFIGURATION_ERROR",
            "gconf.dir_empty": "FAILURE_MALFORMED",
            "gconf.instance_identifier_missing": "FAILURE_MISSING_INSTANCE_IDENTIFIER",
        }.get(exc.code, "FAILURE_UNEXPECTED")
    except OSError:
        return "FAILURE_UNEXPECTED"
    return "READY_TO_INIT"


def check_conf_dir(path: Path) -> None:
    """Raise ``gconf.dir_invalid`` (missing or not a directory), ``gconf.dir_empty`` (no
    instance directory: nothing downloaded yet, or a download in progress) or
    ``gconf.instance_identifier_missing``."""
    if not path.is_dir():
        raise GlobalConfError(f"global configuration {path} is not a directory", code="gconf.dir_invalid")
    if not any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
        raise GlobalConfError(f"global configuration {path} has no instance directory",
                              code="gconf.dir_empty")
    if not (path / INSTANCE_IDENTIFIER_FILE).is_file():
        raise GlobalConfError(f"global configuration {path} has no {INSTANCE_IDENTIFIER_FILE} file",
                              code="gconf.instance_identifier_missing")


def configuration_files(path: Path) -> list[str]:
    """Every configuration file under ``path`` as a relative POSIX path, sorted: regular files
    except ``files``, ``instance-identifier`` and ``*.metadata`` (X-Road's
    ``VersionedConfigurationDirectory.getConfigurationFiles``).  Hidden entries are skipped."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath)
        for name in filenames:
            if name.startswith(".") or name in (FILES_FILE, INSTANCE_IDENTIFIER_FILE) \
                    or name.endswith(METADATA_SUFFIX):
                continue
            full = base / name
            if full.is_file():
                out.append(full.relative_to(path).as_posix())
    return sorted(out)


def _read_limited(file: Path) -> bytes:
    try:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise GlobalConfError(f"{file} is {size} bytes, over the limit of {MAX_FILE_BYTES}",
                                  code="gconf.too_large")
        return file.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise GlobalConfError(f"cannot read {file}: {exc.strerror}", code="gconf.dir_invalid") from exc


def _read_once(root: Path) -> InstalledConf:
    check_conf_dir(root)
    own = _read_limited(root / INSTANCE_IDENTIFIER_FILE).decode("utf-8", "replace").strip()
    if not own:
        raise GlobalConfError(f"{root / INSTANCE_IDENTIFIER_FILE} is empty",
                              code="gconf.instance_identifier_missing")
    shared: dict[str, SharedParameters] = {}
    private: dict[str, PrivateParameters] = {}
    metadata: dict[str, FileMetadata] = {}
    for inst_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            instance = _instance_from_dir(inst_dir.name)
        except UnicodeDecodeError as exc:
            raise GlobalConfError(f"{inst_dir} is not a URL-encoded instance name", code="gconf.dir_invalid") from exc
        for name in (SHARED_PARAMS, PRIVATE_PARAMS):
            file = inst_dir / name
            if not file.is_file():
                continue
            rel = f"{inst_dir.name}/{name}"
            meta = read_metadata(file)
            data = _read_limited(file)
            try:
                if name == SHARED_PARAMS:
                    shared[instance] = parse_shared_params(data, meta.configuration_version)
                else:
                    private[instance] = parse_private_params(data, meta.configuration_version)
            except GlobalConfError as exc:
                raise GlobalConfError(f"{rel}: {exc.message}", code=exc.code) from exc
            metadata[rel] = meta
    if own not in shared:
        raise GlobalConfError(f"global configuration {root} has no shared parameters of its own instance {own}",
                              code="gconf.own_instance_missing")
    own_dir = instance_dir_name(own)
    own_expiry = [m.expiration_date for rel, m in metadata.items()
                  if rel.split("/", 1)[0] == own_dir and m.expiration_date is not None]
    return InstalledConf(own, MappingProxyType(shared), MappingProxyType(private),
                         min(own_expiry) if own_expiry else None, tuple(configuration_files(root)),
                         MappingProxyType(metadata))


def read_conf_dir(path: Path) -> InstalledConf:
    """Read and validate a whole configuration directory.

    ``path`` is resolved once (it may be the symbolic link :func:`install_conf` maintains), so
    the result comes from one complete set of files.  Every ``shared-params.xml`` and
    ``private-params.xml`` is parsed with the version of its metadata; the own instance must
    have shared parameters.  Errors: those of :func:`check_conf_dir`, ``gconf.metadata_invalid``,
    ``gconf.own_instance_missing``, ``gconf.too_large`` and every parse error (code kept,
    message prefixed with the file).
    """
    for _attempt in range(3):
        root = Path(os.path.realpath(path))
        try:
            return _read_once(root)
        except FileNotFoundError:
            # The set was replaced and removed while we read it: read the new one.
            if Path(os.path.realpath(path)) == root:
                break
    raise GlobalConfError(f"global configuration {path} changed or vanished while being read",
                          code="gconf.dir_invalid")


# --------------------------------------------------------------------------- installing


@dataclass(frozen=True)
class InstallFile:
    """One file to install: ``path`` relative (``EE/shared-params.xml``), its bytes, and the
    metadata written next to it (``expirationDate`` defaults to the directory's expiry)."""

    path: str
    data: bytes
    metadata: Mapping[str, str]


def _write_file(file: Path, data: bytes) -> None:
    """Create ``file`` (must not exist), write ``data``, fsync.  Module-level so tests can make
    it fail midway."""
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_rel_path(rel: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    parts = p.parts
    if (p.is_absolute() or "\\" in rel or len(parts) != 2 or any(x in ("", ".", "..") or x.startswith(".")
                                                                 for x in parts)
            or parts[1] in (FILES_FILE, INSTANCE_IDENTIFIER_FILE) or parts[1].endswith(METADATA_SUFFIX)
            or "\x00" in rel):
        raise GlobalConfError(f"cannot install {rel!r}: expected INSTANCE/FILE", code="gconf.install_invalid")
    return p


def _generations(parent: Path, name: str) -> list[Path]:
    prefix = f".{name}."
    return [p for p in parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(_GEN_SUFFIX)
            and p.is_dir() and not p.is_symlink()]


def install_conf(path: Path, *, own_instance: str, files: Sequence[InstallFile], expires: datetime) -> None:
    """Atomically replace the configuration directory ``path`` with ``files``.

    ``path`` becomes (or stays) a symbolic link to a hidden sibling directory holding the
    complete set; see the module documentation.  The new set is parsed with
    :func:`read_conf_dir` before the switch, so a set that would not load is never installed.
    Errors: ``gconf.install_invalid`` (bad arguments), ``gconf.install_failed`` (I/O), and
    any error of :func:`read_conf_dir` on the new set; in every case the old set is intact.
    """
    if expires.tzinfo is None:
        raise GlobalConfError("expires must carry a time zone", code="gconf.install_invalid")
    if not own_instance.strip() or own_instance != own_instance.strip() or "\n" in own_instance:
        raise GlobalConfError(f"invalid own instance {own_instance!r}", code="gconf.install_invalid")
    seen: set[str] = set()
    for f in files:
        key = _check_rel_path(f.path).as_posix()
        if key in seen:
            raise GlobalConfError(f"{key} is listed twice", code="gconf.install_invalid")
        seen.add(key)
    path = Path(os.path.abspath(path))
    parent, name = path.parent, path.name
    if path.exists() and not path.is_dir():
        raise GlobalConfError(f"{path} exists and is not a directory", code="gconf.dir_invalid")

    new: Path | None = None
    link_tmp: Path | None = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        current = os.path.realpath(path) if path.is_symlink() else None
        # Leftovers of earlier installs (the generation before the current one, crashed attempts).
        for old in _generations(parent, name):
            if current is None or os.path.realpath(old) != current:
                shutil.rmtree(old, ignore_errors=True)
        new = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=_GEN_SUFFIX, dir=parent))
        os.chmod(new, 0o755)  # noqa: S103 - global configuration is public, read by other users
        dirs: set[Path] = {new}
        listed: list[str] = []
        for f in files:
            rel = _check_rel_path(f.path)
            target = new.joinpath(*rel.parts)
            if target.parent not in dirs:
                target.parent.mkdir(mode=0o755)
                dirs.add(target.parent)
            _write_file(target, f.data)
            meta = {str(k): str(v) for k, v in f.metadata.items()}
            meta.setdefault("expirationDate", _format_time(expires))
            _write_file(target.with_name(target.name + METADATA_SUFFIX),
                        json.dumps(meta, ensure_ascii=False).encode("utf-8"))
            listed.append(rel.as_posix())
        _write_file(new / INSTANCE_IDENTIFIER_FILE, own_instance.encode("utf-8"))
        _write_file(new / FILES_FILE, "".join(f"{rel}\n" for rel in listed).encode("utf-8"))
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            _fsync_dir(d)
        installed = read_conf_dir(new)
        if installed.own_instance != own_instance:  # pragma: no cover - we wrote it ourselves
            raise GlobalConfError("own instance did not survive the round trip", code="gconf.install_failed")

        if path.is_dir() and not path.is_symlink():
            # First installation over a directory X-Road (or a copy) wrote: move it aside.
            aside = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=_GEN_SUFFIX, dir=parent))
            os.rmdir(aside)
            os.rename(path, aside)
        link_tmp = parent / f".{name}.link-{os.urandom(6).hex()}"
        os.symlink(new.name, link_tmp)
        os.replace(link_tmp, path)
        link_tmp = None
        _fsync_dir(parent)
        new = None  # installed: keep it
    except OSError as exc:
        raise GlobalConfError(f"cannot install global configuration into {path}: {exc}",
                              code="gconf.install_failed") from exc
    finally:
        if link_tmp is not None:
            try:
                os.unlink(link_tmp)
            except OSError:
                pass
        if new is not None:
            shutil.rmtree(new, ignore_errors=True)
