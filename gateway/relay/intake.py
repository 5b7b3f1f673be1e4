"""Reading X-Road SOAP messages (an information system's request, a service's response) as they
stream in: the envelope parsed and validated, attachments spooled to temporary files (memory up to
1 MiB each, then disk) with their digests computed on the way, so nothing large is held in memory."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from protocols.xroad.faults import XRoadFault
from protocols.xroad.mime import Headers
from protocols.xroad.soap import (
    AttachmentData,
    AttachmentEnd,
    AttachmentStart,
    SoapDecoder,
    SoapFaultMessage,
    SoapMessage,
    SoapReceived,
)

CHUNK = 64 * 1024
SPOOL_IN_MEMORY = 1 << 20


@dataclass
class Attachment:
    headers: Headers
    content_type: str
    file: IO[bytes]
    size: int = 0
    digest: bytes = b""

    def chunks(self) -> Iterable[bytes]:
        self.file.seek(0)
        while True:
            data = self.file.read(CHUNK)
            if not data:
                return
            yield data

    def close(self) -> None:
        self.file.close()


@dataclass
class IncomingSoap:
    message: SoapMessage | SoapFaultMessage
    soap_headers: Headers
    content_type: str
    attachments: list[Attachment] = field(default_factory=list)

    def close(self) -> None:
        for a in self.attachments:
            a.close()


def read_soap(body: IO[bytes] | Iterable[bytes], content_type: str | None, *, prefix: Sequence[str] = (),
              fault_is_error: bool = False, response: bool = False, hash_name: str = "sha512",
              max_bytes: int | None = None) -> IncomingSoap:
    """Decode a whole body (a file or chunks); raises the X-Road fault the decoder raises."""
    decoder = SoapDecoder(content_type, fault_prefix=prefix, fault_is_error=fault_is_error, response=response)
    received: SoapReceived | None = None
    attachments: list[Attachment] = []
    hashers: dict[int, Any] = {}
    current: dict[int, Attachment] = {}
    total = 0
    reader = getattr(body, "read", None)
    chunks: Iterable[bytes] = iter(lambda: reader(CHUNK), b"") if reader is not None else body

    def events_of(chunks: Iterable[bytes]) -> Iterable[Any]:
        nonlocal total
        for chunk in chunks:
            total += len(chunk)
            if max_bytes is not None and total > max_bytes:
                raise XRoadFault("InvalidMessage", f"message exceeds {max_bytes} bytes", prefix=prefix)
            yield from decoder.feed(chunk)
        yield from decoder.close()

    try:
        for ev in events_of(chunks):
            if isinstance(ev, SoapReceived):
                received = ev
            elif isinstance(ev, AttachmentStart):
                att = Attachment(ev.headers, ev.content_type,
                                 tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY))
                current[ev.index] = att
                hashers[ev.index] = hashlib.new(hash_name)
                attachments.append(att)
            elif isinstance(ev, AttachmentData):
                current[ev.index].file.write(ev.data)
                hashers[ev.index].update(ev.data)
            elif isinstance(ev, AttachmentEnd):
                att = current.pop(ev.index)
                att.size = ev.size
                att.digest = hashers.pop(ev.index).digest()
    except BaseException:
        for a in attachments:
            a.close()
        raise
    assert received is not None
    return IncomingSoap(received.message, received.part_headers, content_type or "", attachments)
