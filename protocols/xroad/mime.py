# test-case-name: tests.test_xroad_mime
"""Incremental MIME multipart parsing with bounded memory, and ``Content-Type`` parsing.

:class:`MultipartParser` is fed bytes as they arrive and returns events: :class:`PartStart` (the
part's headers), :class:`PartData` (body bytes, in chunks no larger than what was fed plus the
boundary length) and :class:`PartEnd`, then :class:`MultipartEnd` after the close delimiter.  It
never holds more than one fed chunk plus one delimiter length of body, so an attachment of any
size streams in constant memory.  It serves the SwA and MTOM requests of information systems
(``multipart/related``) and the message transport between gateways (``multipart/mixed``); a
nested multipart part is parsed by a second parser fed with that part's data.

Line endings: RFC 2046 says CRLF, but X-Road's own test messages use bare LF, so a delimiter is
recognised after either; a CR before the LF of a delimiter line belongs to the delimiter, not
to the body.  A delimiter line may carry trailing spaces or tabs (transport padding).  A boundary
string followed by anything else is body data.

Hostile input is refused with :class:`MimeError` (``code`` in brackets): a header block larger
than ``max_header_bytes`` or with more than ``max_headers`` fields [``mime.header_too_large``,
``mime.too_many_headers``], a header line without a colon [``mime.malformed_header``], more than
``max_parts`` parts [``mime.too_many_parts``], a part larger than ``max_part_bytes``
[``mime.part_too_large``], a preamble or epilogue beyond their limits (e.g. a wrong boundary)
[``mime.preamble_too_large``, ``mime.epilogue_too_large``], input ending inside a part
[``mime.truncated``], and input with no delimiter at all [``mime.no_parts``].  Input that ends
just after a delimiter line lacking the closing ``--`` is accepted as the end, as X-Road's
mime4j accepts it (its own vector ``soapfault-mtom.answer`` ends that way).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from protocols.errors import VdxpError

__all__ = [
    "ContentType",
    "Headers",
    "MimeError",
    "MultipartEnd",
    "MultipartEvent",
    "MultipartParser",
    "PartData",
    "PartEnd",
    "PartStart",
    "encode_multipart",
    "parse_content_type",
]

MAX_BOUNDARY_LENGTH = 200  # RFC 2046 allows 70; be lenient, but bounded
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class MimeError(VdxpError):
    """Malformed or hostile MIME input.  ``code`` is ``mime.<reason>``."""

    code = "mime.malformed"
    xroad_code = "MimeParsingFailed"


# --------------------------------------------------------------------------- Content-Type


@dataclass(frozen=True, slots=True)
class ContentType:
    """A parsed ``Content-Type``: lower-cased media type and parameters (names lower-cased,
    values unquoted), plus the header as received."""

    media_type: str
    params: Mapping[str, str]
    raw: str

    @property
    def boundary(self) -> str | None:
        return self.params.get("boundary")

    @property
    def charset(self) -> str | None:
        value = self.params.get("charset")
        return value if value else None

    @property
    def is_multipart(self) -> bool:
        return self.media_type.startswith("multipart/")


def _split_params(text: str) -> Iterator[str]:
    start = 0
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            yield text[start:i]
            start = i + 1
        i += 1
    yield text[start:]


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        out: list[str] = []
        i = 1
        while i < len(value) - 1:
            if value[i] == "\\" and i + 1 < len(value) - 1:
                i += 1
            out.append(value[i])
            i += 1
        return "".join(out)
    return value


def parse_content_type(value: str | None) -> ContentType | None:
    """Parse a ``Content-Type`` value; ``None`` when absent or blank.  Parameters that are not
    ``name=value`` are ignored; the first occurrence of a parameter wins."""
    if value is None or not value.strip():
        return None
    pieces = list(_split_params(value))
    media_type = pieces[0].strip().lower()
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, eq, raw = piece.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            continue
        params.setdefault(name, _unquote(raw))
    return ContentType(media_type, params, value)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Headers:
    """Header fields of a part in order; names compare case-insensitively."""

    items: tuple[tuple[str, str], ...] = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        low = name.lower()
        for key, value in self.items:
            if key.lower() == low:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.items if k.lower() == low]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def content_type(self) -> ContentType | None:
        return parse_content_type(self.get("Content-Type"))

    def encode(self) -> bytes:
        """The header block as CRLF lines, with the terminating empty line."""
        return b"".join(f"{k}: {v}\r\n".encode() for k, v in self.items) + b"\r\n"


@dataclass(frozen=True, slots=True)
class PartStart:
    index: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class PartData:
    index: int
    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    index: int
    size: int


@dataclass(frozen=True, slots=True)
class MultipartEnd:
    parts: int


MultipartEvent = PartStart | PartData | PartEnd | MultipartEnd


class _State(enum.Enum):
    PREAMBLE = 1
    HEADERS = 2
    BODY = 3
    EPILOGUE = 4


@dataclass
class _Limits:
    max_header_bytes: int
    max_headers: int
    max_parts: int
    max_part_bytes: int | None
    max_preamble_bytes: int
    max_epilogue_bytes: int


@dataclass
class MultipartParser:
    """Incremental parser of one multipart body with the given ``boundary``.

    Call :meth:`feed` with each chunk and :meth:`close` at the end of input; both return the
    events found so far.  Any violation raises :class:`MimeError`; the parser is then unusable.
    """

    boundary: str | bytes
    max_header_bytes: int = 16 * 1024
    max_headers: int = 64
    max_parts: int = 10_000
    max_part_bytes: int | None = None
    max_preamble_bytes: int = 64 * 1024
    max_epilogue_bytes: int = 64 * 1024

    _buf: bytearray = field(default_factory=bytearray, init=False, repr=False)
    _state: _State = field(default=_State.PREAMBLE, init=False)
    _at_start: bool = field(default=True, init=False)
    _index: int = field(default=-1, init=False)
    _part_size: int = field(default=0, init=False)
    _skipped: int = field(default=0, init=False)
    _header_bytes: int = field(default=0, init=False)
    _headers: list[tuple[str, str]] = field(default_factory=list, init=False)
    _failed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        b = self.boundary.encode("ascii") if isinstance(self.boundary, str) else bytes(self.boundary)
        if not b or len(b) > MAX_BOUNDARY_LENGTH or any(c in b"\r\n" for c in b):
            raise MimeError(f"invalid multipart boundary {b[:80]!r}", code="mime.bad_boundary")
        self._dash = b"--" + b
        self._needle = b"\n--" + b
        self._hold = len(self._needle) + 1

    @property
    def parts(self) -> int:
        """Number of parts started so far."""
        return self._index + 1

    @property
    def finished(self) -> bool:
        return self._state is _State.EPILOGUE

    def _fail(self, message: str, code: str) -> MimeError:
        self._failed = True
        self._buf.clear()
        return MimeError(message, code=code)

    def feed(self, data: bytes) -> list[MultipartEvent]:
        if self._failed:
            raise MimeError("multipart parser used after an error", code="mime.malformed")
        events: list[MultipartEvent] = []
        if self._state is _State.EPILOGUE:
            self._skipped += len(data)
            if self._skipped > self.max_epilogue_bytes:
                raise self._fail(f"multipart epilogue exceeds {self.max_epilogue_bytes} bytes",
                                 "mime.epilogue_too_large")
            return events
        self._buf += data
        while self._step(events):
            pass
        return events

    def close(self) -> list[MultipartEvent]:
        if self._failed:
            raise MimeError("multipart parser used after an error", code="mime.malformed")
        if self._state is _State.EPILOGUE:
            return []
        if self._state is _State.PREAMBLE:
            raise self._fail("multipart body holds no delimiter (no parts)", "mime.no_parts")
        if self._state is _State.BODY:
            # Lenient as mime4j (X-Road's own SoapFaultInMultipartResponse vector): input ending
            # right after a delimiter line that lacks the closing "--" still ends the last part.
            i = self._buf.find(self._needle)
            if i >= 0 and not self._buf[i + len(self._needle):].strip(b" \t\r\n"):
                events: list[MultipartEvent] = []
                self._emit(events, i - 1 if i > 0 and self._buf[i - 1] == 0x0D else i)
                self._buf.clear()
                self._state = _State.EPILOGUE
                events.extend((PartEnd(self._index, self._part_size), MultipartEnd(self._index + 1)))
                return events
        raise self._fail(f"multipart body ends inside part {self._index} (no close delimiter)", "mime.truncated")

    # -- states

    def _step(self, events: list[MultipartEvent]) -> bool:
        """Advance once; False when more input is needed."""
        if self._state is _State.PREAMBLE:
            return self._preamble()
        if self._state is _State.HEADERS:
            return self._header_line(events)
        if self._state is _State.BODY:
            return self._body(events)
        # EPILOGUE: everything left is discarded
        self._skipped += len(self._buf)
        self._buf.clear()
        if self._skipped > self.max_epilogue_bytes:
            raise self._fail(f"multipart epilogue exceeds {self.max_epilogue_bytes} bytes", "mime.epilogue_too_large")
        return False

    def _delimiter_tail(self, pos: int) -> int | None:
        """At ``pos`` (just after the boundary) decide what follows: the length of the rest of the
        delimiter line (``--`` for the close delimiter is reported as -2 - its length), -1 when it
        is not a delimiter, None when more input is needed."""
        buf = self._buf
        n = len(buf)
        if pos + 2 <= n and buf[pos:pos + 2] == b"--":
            return -2
        i = pos
        while i < n and buf[i] in b" \t":
            i += 1
            if i - pos > 1024:
                return -1
        if i >= n:
            return None
        if buf[i] == 0x0A:
            return i + 1 - pos
        if buf[i] == 0x0D:
            if i + 1 >= n:
                return None
            return i + 2 - pos if buf[i + 1] == 0x0A else -1
        if pos + 1 >= n and buf[pos] == 0x2D:  # a single '-' so far: could become '--'
            return None
        return -1

    def _preamble(self) -> bool:
        buf = self._buf
        search_from = 0
        while True:
            if self._at_start and search_from == 0 and buf.startswith(self._dash):
                start, after = 0, len(self._dash)
            else:
                i = buf.find(self._needle, search_from)
                if i < 0:
                    if self._at_start and len(buf) < len(self._dash) and self._dash.startswith(bytes(buf)):
                        return False
                    keep = min(len(buf), self._hold)
                    drop = len(buf) - keep
                    if drop > 0:
                        self._at_start = False
                        self._skipped += drop
                        del buf[:drop]
                    if self._skipped + len(buf) > self.max_preamble_bytes:
                        raise self._fail(f"no multipart delimiter within {self.max_preamble_bytes} bytes",
                                         "mime.preamble_too_large")
                    return False
                start, after = i, i + len(self._needle)
            tail = self._delimiter_tail(after)
            if tail is None:
                return False
            if tail == -1:
                search_from = start + 1
                continue
            self._at_start = False
            if tail == -2:  # a close delimiter before any part: an empty multipart
                del buf[:after + 2]
                raise self._fail("multipart body closes before its first part", "mime.no_parts")
            del buf[:after + tail]
            self._skipped = 0
            self._begin_part()
            return True

    def _begin_part(self) -> None:
        self._index += 1
        if self._index >= self.max_parts:
            raise self._fail(f"multipart body has more than {self.max_parts} parts", "mime.too_many_parts")
        self._state = _State.HEADERS
        self._headers = []
        self._header_bytes = 0
        self._part_size = 0

    def _header_line(self, events: list[MultipartEvent]) -> bool:
        buf = self._buf
        nl = buf.find(b"\n", 0, self.max_header_bytes - self._header_bytes + 1)
        if nl < 0:
            if self._header_bytes + len(buf) > self.max_header_bytes:
                raise self._fail(f"part {self._index} headers exceed {self.max_header_bytes} bytes",
                                 "mime.header_too_large")
            return False
        self._header_bytes += nl + 1
        if self._header_bytes > self.max_header_bytes:
            raise self._fail(f"part {self._index} headers exceed {self.max_header_bytes} bytes",
                             "mime.header_too_large")
        line = bytes(buf[:nl])
        del buf[:nl + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            self._state = _State.BODY
            events.append(PartStart(self._index, Headers(tuple(self._headers))))
            return True
        text = _decode_header(line)
        if text[0] in " \t":
            if not self._headers:
                raise self._fail(f"part {self._index} header block starts with a continuation line",
                                 "mime.malformed_header")
            name, value = self._headers[-1]
            self._headers[-1] = (name, (value + " " + text.strip()).strip())
            return True
        name, colon, value = text.partition(":")
        name = name.strip()
        if not colon or not name or any(ch not in _TOKEN for ch in name):
            raise self._fail(f"part {self._index} has a malformed header line {text[:80]!r}", "mime.malformed_header")
        if len(self._headers) >= self.max_headers:
            raise self._fail(f"part {self._index} has more than {self.max_headers} header fields",
                             "mime.too_many_headers")
        self._headers.append((name, value.strip()))
        return True

    def _emit(self, events: list[MultipartEvent], end: int) -> None:
        if end <= 0:
            return
        self._part_size += end
        if self.max_part_bytes is not None and self._part_size > self.max_part_bytes:
            raise self._fail(f"part {self._index} exceeds {self.max_part_bytes} bytes", "mime.part_too_large")
        events.append(PartData(self._index, bytes(self._buf[:end])))
        del self._buf[:end]

    def _body(self, events: list[MultipartEvent]) -> bool:
        buf = self._buf
        search_from = 0
        while True:
            i = buf.find(self._needle, search_from)
            if i < 0:
                self._emit(events, len(buf) - self._hold)
                return False
            end = i - 1 if i > 0 and buf[i - 1] == 0x0D else i
            after = i + len(self._needle)
            tail = self._delimiter_tail(after)
            if tail is None:
                self._emit(events, end)
                return False
            if tail == -1:
                search_from = i + 1
                continue
            self._emit(events, end)
            # buffer now starts at the (optional CR and) needle
            consumed = (after - end) + (2 if tail == -2 else tail)
            del buf[:consumed]
            events.append(PartEnd(self._index, self._part_size))
            if tail == -2:
                self._state = _State.EPILOGUE
                events.append(MultipartEnd(self._index + 1))
                self._skipped = 0
            else:
                self._begin_part()
            return True


def _decode_header(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


# --------------------------------------------------------------------------- writing


def encode_multipart(boundary: str, parts: Iterable[tuple[Headers, Iterable[bytes]]]) -> Iterator[bytes]:
    """Stream a multipart body: for each part its headers and its body chunks, CRLF line endings,
    then the close delimiter."""
    dash = b"--" + boundary.encode("ascii")
    first = True
    for headers, chunks in parts:
        yield (b"" if first else b"\r\n") + dash + b"\r\n" + headers.encode()
        first = False
        yield from chunks
    yield (b"" if first else b"\r\n") + dash + b"--\r\n"
