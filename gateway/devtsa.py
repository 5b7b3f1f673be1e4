"""A development RFC 3161 time-stamping authority, as a ``twisted.web`` resource.

For the sandbox and tests (X-Road needs an approved TSA before any message can be
logged).  The key stays behind a :class:`hsm.interfaces.DigestSigner` (SoftHSM2 in the
sandbox); the token is assembled from pre-encoded DER by :class:`protocols.tsp.TsaProfile`,
so the signature is the only expensive step.

HTTP: ``POST`` with ``Content-Type: application/timestamp-query`` and a DER
``TimeStampReq`` (at most 64 KiB) gets ``200 application/timestamp-reply``: a granted
token, or a rejection (``badDataFormat`` for a malformed query, ``badAlg`` for an
unsupported hash, ``unacceptedPolicy``, ``unacceptedExtension``, ``systemFailure`` when
signing fails).  Other methods get 405, other content types 415, larger bodies 413.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from hsm.interfaces import DigestSigner
from protocols.errors import CertificateError
from protocols.tsp import PreparedResponse, TimestampQueryRejected, TsaProfile, rejection

__all__ = ["DEV_POLICY_OID", "MAX_QUERY_BYTES", "TsaResource", "check_signer_matches"]

#: The policy of our development TSA: an OID under 2.25 (UUID-derived, no registration).
DEV_POLICY_OID = f"2.25.{uuid.UUID('6f1c2a9e-4d0b-4c47-9a43-2b7d3c5e8f10').int}"
MAX_QUERY_BYTES = 64 * 1024
QUERY_CONTENT_TYPE = b"application/timestamp-query"
REPLY_CONTENT_TYPE = b"application/timestamp-reply"


def _random_serial() -> int:
    """A random positive 128-bit serial number (RFC 3161 allows up to 160 bits)."""
    return secrets.randbits(128) | 1


async def check_signer_matches(signer: DigestSigner, cert: x509.Certificate, hash_name: str = "sha256") -> None:
    """Sign a random digest and verify it with ``cert``'s public key: the key behind
    ``signer`` must be the certificate's (``cert.key_mismatch`` otherwise)."""
    algos: dict[str, hashes.HashAlgorithm] = {
        "sha256": hashes.SHA256(),
        "sha384": hashes.SHA384(),
        "sha512": hashes.SHA512(),
    }
    algo = algos[hash_name]
    digest = secrets.token_bytes(algo.digest_size)
    signature = await signer.sign_digest(digest, hash_name)
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            pad: padding.AsymmetricPadding = (
                padding.PSS(mgf=padding.MGF1(algo), salt_length=algo.digest_size)
                if signer.mechanism == "rsa-pss"
                else padding.PKCS1v15()
            )
            key.verify(signature, digest, pad, utils.Prehashed(algo))
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(utils.Prehashed(algo)))
        else:
            raise CertificateError("TSA certificate key is neither RSA nor EC", code="cert.unsupported_key")
    except CertificateError:
        raise
    except Exception as exc:
        raise CertificateError(
            f"the signing key does not belong to certificate {cert.subject.rfc4514_string()}: {exc!r}",
            code="cert.key_mismatch",
        ) from exc


class TsaResource(Resource):
    """Answers RFC 3161 queries with tokens signed through ``signer``."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        signer: DigestSigner,
        tsa_cert: x509.Certificate,
        chain: Sequence[x509.Certificate],
        clock: IReactorTime,
        policy_oid: str = DEV_POLICY_OID,
        *,
        hash_name: str = "sha256",
        sign_timeout_seconds: float = 10.0,
        serial_source: Callable[[], int] = _random_serial,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._signer = signer
        self._clock = clock
        self._profile = TsaProfile(
            tsa_cert,
            chain,
            policy_oid=policy_oid,
            hash_name=hash_name,
            mechanism=signer.mechanism if signer.key_type == "rsa" else None,
        )
        self._sign_timeout = sign_timeout_seconds
        self._serial_source = serial_source
        self.policy_oid = policy_oid

    def _now(self) -> datetime:
        seconds: float = self._clock.seconds()  # type: ignore[misc]  # zope interface method
        return datetime.fromtimestamp(seconds, UTC)

    def render(self, twisted_request: Request) -> bytes | int:
        request: Any = twisted_request
        if request.method != b"POST":
            request.setResponseCode(405)
            request.setHeader(b"allow", b"POST")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"only POST application/timestamp-query\n"
        return self.render_POST(twisted_request)

    def render_POST(self, twisted_request: Request) -> bytes | int:
        request: Any = twisted_request  # twisted.web.server.Request is mostly unannotated
        peer = str(request.getClientAddress())
        raw_type = request.getHeader(b"content-type") or b""
        content_type = raw_type.split(b";")[0].strip().lower()
        if content_type != QUERY_CONTENT_TYPE:
            self.log.info(
                "Refused query from {peer}: content type {content_type}",
                peer=peer,
                content_type=content_type.decode("latin-1"),
            )
            request.setResponseCode(415)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"expected Content-Type: application/timestamp-query\n"
        declared = request.getHeader(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_QUERY_BYTES:
            return self._too_large(request, peer)
        assert request.content is not None
        body = request.content.read(MAX_QUERY_BYTES + 1)
        if len(body) > MAX_QUERY_BYTES:
            return self._too_large(request, peer)
        serial = self._serial_source()
        try:
            prepared = self._profile.prepare(body, serial=serial, gen_time=self._now())
        except TimestampQueryRejected as exc:
            self.log.info(
                "Rejected query from {peer}: {fail_info}: {reason}",
                peer=peer,
                fail_info=exc.fail_info,
                reason=exc.message,
            )
            return self._reply(request, rejection("rejection", exc.fail_info, exc.message))

        finished = [False]
        request.notifyFinish().addErrback(lambda _f: finished.__setitem__(0, True))
        signing: Deferred[bytes] = Deferred.fromCoroutine(self._sign(prepared))
        signing.addTimeout(self._sign_timeout, self._clock)

        def done(response: bytes) -> None:
            self.log.info(
                "Issued time-stamp {serial} for {peer} ({hash_name})",
                serial=serial,
                peer=peer,
                hash_name=prepared.hash_name,
            )
            if not finished[0]:
                request.write(self._reply(request, response))
                request.finish()

        def failed(failure: Failure) -> None:
            self.log.failure("Signing time-stamp {serial} for {peer} failed", failure, serial=serial, peer=peer)
            if not finished[0]:
                body = rejection("rejection", "system_failure", "signing failed")
                request.write(self._reply(request, body))
                request.finish()

        signing.addCallbacks(done, failed)
        return NOT_DONE_YET

    async def _sign(self, prepared: PreparedResponse) -> bytes:
        signature = await self._signer.sign_digest(prepared.signed_attrs_digest, prepared.hash_name)
        return prepared.finish(signature)

    @staticmethod
    def _reply(request: Any, body: bytes) -> bytes:
        request.setResponseCode(200)
        request.setHeader(b"content-type", REPLY_CONTENT_TYPE)
        request.setHeader(b"content-length", str(len(body)).encode("ascii"))
        return body

    def _too_large(self, request: Any, peer: str) -> bytes:
        self.log.info("Refused query from {peer}: body larger than {limit} bytes", peer=peer, limit=MAX_QUERY_BYTES)
        request.setResponseCode(413)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"query too large\n"
