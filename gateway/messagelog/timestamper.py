"""Batch time-stamping of the message log (RFC 3161), as X-Road's asynchronous timestamper.

Every interval (``timeStampingIntervalSeconds`` of global configuration, 60 s by default) the
oldest un-stamped records, up to ``max_records``, get one time-stamp: with several records, the
token is over the SHA-512 of a hash chain result whose leaves are each record's signature document
(``/META-INF/signatures.xml``), and each record keeps its own time-stamp hash chain
(``ts-hashchain.xml``); a single record is stamped over its ``ds:SignatureValue``.  TSAs are tried
in priority order (the configuration's ``tsa`` list, else the approved TSAs of global
configuration); a TSA that is down, slow or answers garbage is skipped for the next one.

Stamping never blocks the message path.  If it keeps failing for longer than the acceptable
failure period (14400 s by default; 0: never refuse), new messages are refused with
``LoggingFailed.TimestamperFailed`` ("Cannot time-stamp messages") until a stamp succeeds; while
refusing, and when nothing is waiting to be stamped, the TSAs are probed with a token over a
digest of no record, so the gateway recovers by itself (X-Road's 2023 fix: an outage with no
record ever stamped must recover too).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.messagelog.store import LoggingFailed, MessageLog
from gateway.metrics import per_registry
from gateway.rounds import Rounds
from protocols.errors import VdxpError
from protocols.hashchain import SHA512_URI, build_batch

__all__ = ["SIGNATURES_URI", "TS_HASH_CHAIN", "Timestamper", "TsaEndpoint", "signature_value"]

SIGNATURES_URI = "/META-INF/signatures.xml"
TS_HASH_CHAIN = "/ts-hashchain.xml"


@dataclass(frozen=True)
class TsaEndpoint:
    """A TSA the timestamper may use: its name and URL, and a client (``timestamp(digest, hash)``)."""

    name: str
    url: str
    client: Any


def signature_value(signature_xml: bytes) -> bytes:
    """The decoded ``ds:SignatureValue`` of a signature document (what a single record's token
    is over)."""
    from protocols.sigverify import parse_signature_document

    doc = parse_signature_document(signature_xml)
    text = doc.signature.findtext("{http://www.w3.org/2000/09/xmldsig#}SignatureValue") or ""
    return base64.b64decode("".join(text.split()), validate=True)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("vdxp_timestamper_requests", "Time-stamp requests to TSAs.", ["tsa", "result"],
                                registry=registry)
        self.stamped = Counter("vdxp_timestamper_records_stamped", "Message log records time-stamped.",
                               registry=registry)
        self.pending = Gauge("vdxp_timestamper_unstamped_records", "Message log records waiting for a time-stamp.",
                             registry=registry)
        self.failing = Gauge("vdxp_timestamper_failing", "1 while time-stamping fails.", registry=registry)
        self.refusing = Gauge("vdxp_timestamper_refusing", "1 while messages are refused because time-stamping "
                              "failed for longer than the acceptable period.", registry=registry)
        self.last_success = Gauge("vdxp_timestamper_last_success_timestamp_seconds",
                                  "When a time-stamp was last obtained (Unix time).", registry=registry)


_metrics = per_registry(_Metrics)


class Timestamper(Rounds):
    round_name = "time-stamping round"

    def __init__(self, reactor: Any, message_log: MessageLog, tsas: Callable[[], Sequence[TsaEndpoint]], *,
                 interval: Callable[[], float], failure_period: float = 14400.0, max_records: int = 10000,
                 registry: CollectorRegistry) -> None:
        super().__init__(reactor)
        self.message_log = message_log
        self._tsas = tsas
        self._interval = interval
        self.failure_period = failure_period
        self.max_records = max_records
        self.metrics = _metrics(registry)
        self.failing_since: float | None = None  # reactor time of the first failure since the last success
        self.last_error: str | None = None
        self.last_success: float | None = None
        message_log.gate = self.check_can_log

    # -- the gate in the message path ------------------------------------------------------

    def refusing(self) -> bool:
        return (self.failure_period > 0 and self.failing_since is not None
                and self._reactor.seconds() - self.failing_since > self.failure_period)

    def check_can_log(self) -> None:
        if self.refusing():
            raise LoggingFailed(f"Cannot time-stamp messages: time-stamping has failed since "
                                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.failing_since or 0))} "
                                f"({self.last_error})", code="mlog.timestamper_failed",
                                xroad_code="LoggingFailed.TimestamperFailed")

    def health(self) -> tuple[bool, str]:
        if self.refusing():
            return False, f"time-stamping failing for longer than {self.failure_period:g} s: {self.last_error}"
        if self.failing_since is not None:
            return True, f"time-stamping failing (messages still accepted): {self.last_error}"
        return True, "time-stamping ok"

    # -- the loop ------------------------------------------------------------------------------

    def next_delay(self) -> float:
        return max(0.1, self._interval())

    async def run_once(self) -> int:
        """One round: stamp what waits (or probe the TSAs when failing with nothing waiting);
        the number of records stamped."""
        try:
            pending = await self.message_log.unstamped(self.max_records)
        except VdxpError as exc:
            self.log.warn("time-stamping: cannot read the message log ({code}): {error}", code=exc.code,
                          error=exc.message)
            return 0
        self.metrics.pending.set(len(pending))
        if not pending:
            if self.failing_since is not None:
                await self._probe()
            return 0
        chains: list[bytes | None]
        if len(pending) == 1:
            record_id = pending[0][0]
            try:
                stamped = signature_value(await self.message_log.signature_of(record_id) or b"")
            except (VdxpError, ValueError) as exc:  # not expected: the signature was made or verified here
                self.log.error("time-stamping: record {id} has no usable signature value: {error}", id=record_id,
                               error=str(exc))
                return 0
            result, chains = b"", [None]
        else:
            batch = build_batch([[(SIGNATURES_URI, digest)] for _id, digest in pending],
                                digest_uri=SHA512_URI, chain_uri=TS_HASH_CHAIN)
            stamped, result, chains = batch.result_xml, batch.result_xml, list(batch.chains)
        found = await self._stamp(hashlib.sha512(stamped).digest())
        if found is None:
            return 0
        tsa, token = found
        try:
            await self.message_log.save_timestamp(token.token_der, tsa.url, result,
                                                  [(rid, chain) for (rid, _s), chain in zip(pending, chains,
                                                                                           strict=True)],
                                                  self._reactor.seconds())
        except VdxpError as exc:
            self.log.error("time-stamping: cannot store the time-stamp ({code}): {error}", code=exc.code,
                           error=exc.message)
            return 0
        self.metrics.stamped.inc(len(pending))
        self.metrics.pending.set(0 if len(pending) < self.max_records else len(pending))
        self.log.info("time-stamped {count} message log records at {tsa}", count=len(pending), tsa=tsa.name)
        return len(pending)

    async def stamp_record(self, record_id: int, signature: bytes) -> None:
        """Synchronous mode: time-stamp one record now, over its signature value; raises
        :class:`LoggingFailed` (``LoggingFailed.TimestamperFailed``) when no TSA gives a token."""
        found = await self._stamp(hashlib.sha512(signature_value(signature)).digest())
        if found is None:
            raise LoggingFailed(f"Cannot time-stamp messages: {self.last_error}", code="mlog.timestamper_failed",
                                xroad_code="LoggingFailed.TimestamperFailed")
        tsa, token = found
        await self.message_log.save_timestamp(token.token_der, tsa.url, b"", [(record_id, None)],
                                              self._reactor.seconds())
        self.metrics.stamped.inc()

    async def _stamp(self, digest: bytes) -> tuple[TsaEndpoint, Any] | None:
        tsas = list(self._tsas())
        if not tsas:
            self._failed("no time-stamping authority configured or approved in global configuration")
            return None
        problems = []
        for tsa in tsas:
            try:
                token = await tsa.client.timestamp(digest, "sha512")
            except VdxpError as exc:
                self.metrics.requests.labels(tsa=tsa.name, result=exc.code).inc()
                self.log.warn("time-stamping at {tsa} failed ({code}): {error}", tsa=tsa.name, code=exc.code,
                              error=exc.message)
                problems.append(f"{tsa.name}: {exc.message}")
                continue
            self.metrics.requests.labels(tsa=tsa.name, result="ok").inc()
            self._succeeded()
            return tsa, token
        self._failed("; ".join(problems))
        return None

    async def _probe(self) -> None:
        """Nothing to stamp but stamping failed: is a TSA back?"""
        await self._stamp(hashlib.sha512(b"vdxp-gateway time-stamping probe " + secrets.token_bytes(16)).digest())

    def _failed(self, why: str) -> None:
        now = self._reactor.seconds()
        if self.failing_since is None:
            self.failing_since = now
        self.last_error = why
        self.metrics.failing.set(1)
        self.metrics.refusing.set(1 if self.refusing() else 0)

    def _succeeded(self) -> None:
        if self.failing_since is not None:
            self.log.info("time-stamping recovered")
        self.failing_since = None
        self.last_error = None
        self.last_success = self._reactor.seconds()
        self.metrics.failing.set(0)
        self.metrics.refusing.set(0)
        self.metrics.last_success.set(time.time())
