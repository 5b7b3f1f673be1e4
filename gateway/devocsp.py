"""The development OCSP responder: a Twisted web resource over a :mod:`gateway.devpki` directory.

It answers POST (``application/ocsp-request`` body) and GET (RFC 6960 A.1: the base64
DER request, URL-encoded, as the path) for certificates of the PKI's intermediate CA,
from ``index.txt`` (re-read whenever the file changes), signed by the delegated
responder ``ocsp.pem``/``ocsp.key``.  CertIDs hashed with SHA-1, SHA-256, SHA-384 or
SHA-512 are accepted; a CertID of another issuer gets ``unauthorized``, garbage gets
``malformedRequest``.  ``thisUpdate`` is the injected clock's time and ``nextUpdate``
``thisUpdate + next_update_seconds``.
"""

from __future__ import annotations

import base64
import binascii
import os
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from gateway import devpki
from protocols import ocsp
from protocols.errors import CertificateError, OcspError

OCSP_RESPONSE_TYPE = b"application/ocsp-response"
DEFAULT_NEXT_UPDATE_SECONDS = 3600
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024


class _IndexReader:
    """index.txt, parsed again only when its mtime, size or inode changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._entries: dict[int, devpki.IndexEntry] = {}

    def entries(self) -> dict[int, devpki.IndexEntry]:
        st = os.stat(self._path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            self._entries = devpki.parse_index(self._path.read_text("utf-8"))
            self._stamp = stamp
        return self._entries


class OcspResponderResource(Resource):
    """Answers OCSP requests for the certificates issued by a development PKI."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        pki_dir: str | os.PathLike[str],
        clock: IReactorTime,
        *,
        next_update_seconds: float = DEFAULT_NEXT_UPDATE_SECONDS,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        directory = Path(pki_dir)
        paths = {
            name: directory / devpki.LAYOUT[name] for name in ("intermediate", "ocsp", "ocsp_key", "index")
        }
        for path in paths.values():
            if not path.exists():
                raise CertificateError(
                    f"{directory} is not a development PKI: {path} is missing", code="cert.pki_missing"
                )
        self._issuer = devpki.load_certificate(paths["intermediate"])
        self._responder_cert = devpki.load_certificate(paths["ocsp"])
        key = devpki.load_private_key(paths["ocsp_key"])
        self._responder_key = key
        self._index = _IndexReader(paths["index"])
        self._clock = clock
        self._next_update = timedelta(seconds=next_update_seconds)
        self._max_request_bytes = max_request_bytes
        self._issuer_hashes = {
            name: ocsp.issuer_hashes(self._issuer, name) for name in ("sha1", "sha256", "sha384", "sha512")
        }

    # -- the OCSP logic, usable without HTTP ----------------------------------------------

    def answer(self, request_der: bytes) -> bytes:
        """The DER OCSPResponse for a DER OCSPRequest."""
        try:
            parsed = ocsp.parse_request(request_der)
        except OcspError as exc:
            self.log.info("OCSP request rejected: {error}", error=str(exc))
            return ocsp.build_unsuccessful("malformedRequest")
        cid = parsed.cert_id
        if self._issuer_hashes.get(cid.hash_name) != (cid.issuer_name_hash, cid.issuer_key_hash):
            self.log.info(
                "OCSP request for serial {serial} of another issuer",
                serial=devpki.serial_hex(cid.serial_number),
            )
            return ocsp.build_unsuccessful("unauthorized")
        try:
            entry = self._index.entries().get(cid.serial_number)
        except (OSError, CertificateError) as exc:
            self.log.error("cannot read the CA database: {error}", error=str(exc))
            return ocsp.build_unsuccessful("internalError")
        status = devpki.entry_status(entry)
        seconds: float = self._clock.seconds()  # type: ignore[misc]
        now = datetime.fromtimestamp(seconds, UTC).replace(microsecond=0)
        der = ocsp.build_response(
            cid,
            status=status.status,
            responder_cert=self._responder_cert,
            responder_key=self._responder_key,
            this_update=now,
            next_update=now + self._next_update,
            revocation_time=status.revocation_time,
            revocation_reason=status.reason,
            nonce=parsed.nonce,
        )
        self.log.info(
            "OCSP {status} for serial {serial}",
            status=status.status,
            serial=devpki.serial_hex(cid.serial_number),
        )
        return der

    # -- HTTP -------------------------------------------------------------------------------

    def _reply(self, request: Request, der: bytes) -> bytes:
        request.setResponseCode(200)
        request.setHeader(b"content-type", OCSP_RESPONSE_TYPE)  # type: ignore[no-untyped-call]
        request.setHeader(b"cache-control", b"no-store")  # type: ignore[no-untyped-call]
        return der

    def render_POST(self, request: Request) -> bytes:
        content = request.content
        body = content.read(self._max_request_bytes + 1) if content is not None else b""
        if len(body) > self._max_request_bytes:
            return self._reply(request, ocsp.build_unsuccessful("malformedRequest"))
        return self._reply(request, self.answer(body))

    def render_GET(self, request: Request) -> bytes:
        encoded = b"/".join(request.postpath or [])
        try:
            text = urllib.parse.unquote(encoded.decode("ascii"))
            der = base64.b64decode(text, validate=True) if text else b""
        except (UnicodeDecodeError, binascii.Error, ValueError):
            der = b""
        if not der or len(der) > self._max_request_bytes:
            return self._reply(request, ocsp.build_unsuccessful("malformedRequest"))
        return self._reply(request, self.answer(der))
