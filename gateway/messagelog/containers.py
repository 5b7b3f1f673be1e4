"""Message log records as ASiC-E containers (X-Road's layout, :func:`protocols.asic.build_container`),
and the client port's ``GET /asic`` and ``GET /verificationconf`` (X-Road's signed-document download,
``ug-sigdoc``): an information system fetches the containers of one of its queries, and the
configuration to verify them offline (``vdxp-gateway log verify FILE --conf DIR``).
"""

from __future__ import annotations

import io
import secrets
import zipfile
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from gateway.messagelog.store import MessageLog, StoredRecord
from protocols.asic import build_container
from protocols.errors import VdxpError
from protocols.xroad.ids import ClientId

__all__ = ["AsicResource", "VerificationConfResource", "container_name", "record_container"]


async def record_container(log: MessageLog, record: StoredRecord, *, verifiable_only: bool = True) -> bytes:
    """The ASiC-E container of a time-stamped record; raises ``VdxpError`` (``mlog.not_stamped``)
    for a record without a time-stamp and, with ``verifiable_only``, ``mlog.body_not_logged`` for
    one logged without its body (its signature cannot be verified; the archiver keeps it anyway,
    as X-Road does)."""
    if verifiable_only and not record.body_logged:
        raise VdxpError(f"record {record.id} was logged without its body: it cannot be verified",
                        code="mlog.body_not_logged")
    found = await log.timestamp_of(record.id)
    if found is None:
        raise VdxpError(f"record {record.id} is not time-stamped yet", code="mlog.not_stamped")
    token, ts_result, ts_chain = found
    attachments = []
    for part in range(1, record.attachments + 1):
        got = await log.attachment(record.id, part)
        attachments.append(got[1] if got is not None else b"")
    return build_container(message=record.message, signature=record.signature,
                           created=datetime.fromtimestamp(record.created_at, UTC), timestamp=token,
                           ts_hash_chain_result=ts_result or None, ts_hash_chain=ts_chain,
                           sig_hash_chain_result=record.hash_chain_result, sig_hash_chain=record.hash_chain,
                           attachments=attachments)


def container_name(record: StoredRecord) -> str:
    """X-Road's entry name: ``<queryId>-request|response-<random>.asice`` (the query id made safe)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in record.query_id)[:200] or "query"
    return f"{safe}-{record.direction}-{secrets.token_hex(5)}.asice"


def _error(request: Request, status: int, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")  # type: ignore[no-untyped-call]
    return (message + "\n").encode()


class AsicResource(Resource):
    """``GET /asic?queryId=Q&xRoadInstance=&memberClass=&memberCode=[&subsystemCode=]
    [&requestOnly|&responseOnly][&unique][&force]``: a ZIP of the ASiC-E containers of query ``Q``
    made for that client (400 bad parameters, 401 a client not hosted here or not authenticated,
    404 nothing logged, 409 ``unique`` and several, 503 not time-stamped yet, 500 the log failed);
    ``force`` time-stamps records that are not yet, at once.

    ``log`` returns the running message log (or None); ``authenticate(request, client)`` raises
    when the information system may not act as ``client``; ``stamp(record)`` time-stamps one
    record now (None: ``force`` is not offered)."""

    isLeaf = True
    log = Logger()

    def __init__(self, message_log: Callable[[], MessageLog | None],
                 authenticate: Callable[[Request, ClientId], Any],
                 stamp: Callable[[StoredRecord], Awaitable[Any]] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._log = message_log
        self._authenticate = authenticate
        self._stamp = stamp

    def render_GET(self, request: Request) -> bytes | int:
        from urllib.parse import parse_qs

        # X-Road's flags (requestOnly, responseOnly, unique) come without "=", which twisted.web drops.
        query = (request.uri or b"").partition(b"?")[2].decode("utf-8", "replace")
        args = parse_qs(query, keep_blank_values=True)

        def one(name: str) -> str | None:
            values = args.get(name)
            return values[0] if values else None

        query_id = one("queryId")
        instance, member_class, member_code = one("xRoadInstance"), one("memberClass"), one("memberCode")
        if not query_id or not instance or not member_class or not member_code:
            return _error(request, 400, "queryId, xRoadInstance, memberClass and memberCode are required")
        if "requestOnly" in args and "responseOnly" in args:
            return _error(request, 400, "requestOnly and responseOnly exclude each other")
        try:
            client = ClientId(instance, member_class, member_code, one("subsystemCode") or None)
        except (VdxpError, ValueError) as exc:
            return _error(request, 400, f"invalid client identifier: {exc}")
        try:
            self._authenticate(request, client)
        except VdxpError as exc:
            return _error(request, 401, f"{client}: {exc}")
        message_log = self._log()
        if message_log is None:
            return _error(request, 500, "the message log is not running")
        only = "request" if "requestOnly" in args else "response" if "responseOnly" in args else None
        d = Deferred.fromCoroutine(self._answer(request, message_log, query_id, client, only, "unique" in args,
                                                "force" in args))
        d.addErrback(lambda f: self.log.failure("asic download failed", f))
        return NOT_DONE_YET

    async def _answer(self, request: Request, message_log: MessageLog, query_id: str, client: ClientId,
                      only: str | None, unique: bool, force: bool = False) -> None:
        try:
            records = [r for r in await message_log.records(query_id)
                       if r.client == str(client) and (only is None or r.direction == only)]
            if not records:
                body = _error(request, 404, f"no logged messages of query {query_id} for {client}")
            elif unique and len(records) > (1 if only else 2):
                body = _error(request, 409, f"query {query_id} is not unique ({len(records)} messages)")
            else:
                if force and self._stamp is not None:
                    for record in records:
                        if record.timestamp_id is None:
                            await self._stamp(record)
                body = await self._zip(records, message_log)
                request.setHeader(b"content-type", b"application/zip")  # type: ignore[no-untyped-call]
                request.setHeader(b"content-disposition",  # type: ignore[no-untyped-call]
                                  b'attachment; filename="asic.zip"')
        except VdxpError as exc:
            status = 503 if exc.code == "mlog.not_stamped" else 500
            body = _error(request, status, exc.message)
        if not request.finished and not getattr(request, "_disconnected", False):
            request.write(body)
            request.finish()

    @staticmethod
    async def _zip(records: Sequence[StoredRecord], message_log: MessageLog) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            for record in records:
                z.writestr(container_name(record), await record_container(message_log, record))
        return out.getvalue()


class VerificationConfResource(Resource):
    """``GET /verificationconf``: a ZIP of the installed global configuration directory, what
    ``vdxp-gateway log verify --conf DIR`` (and X-Road's asicverifier) need offline."""

    isLeaf = True

    def __init__(self, directory: Callable[[], Path | None]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._directory = directory

    def render_GET(self, request: Request) -> bytes:
        root = self._directory()
        if root is None or not root.is_dir():
            return _error(request, 500, "no global configuration installed")
        root = root.resolve()
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(root.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    z.write(path, path.relative_to(root).as_posix())
        request.setHeader(b"content-type", b"application/zip")  # type: ignore[no-untyped-call]
        request.setHeader(b"content-disposition",  # type: ignore[no-untyped-call]
                          b'attachment; filename="verificationconf.zip"')
        return out.getvalue()
