"""The message signer: X-Road signatures with batch signing over hash chains.

Callers hand in the digests of a message's parts (the message first, then its
attachments) and get back a :class:`SignedMessage`: the signature document they embed,
and, for batch or multipart signatures, the shared hash-chain result plus their own
hash chain – X-Road's ``signatures.xml``, ``sig-hashchainresult.xml`` and
``sig-hashchain.xml``.

Batching: one :class:`MessageSigner` per signing key.  While the token is busy with
one private-key operation, new requests queue; when it is free, every queued request
(up to ``max_batch``) is covered by one hash tree and **one** signature.  With batch
signing off each request gets its own operation, and two may be in flight: one is
prepared (XAdES layout) while the token signs the other.  Requests that waited longer than
``timeout`` are failed, not signed late (X-Road drops them the same way).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from hsm.p11thread import HsmTimeout, deferred_call
from hsm.softkey import ecdsa_raw_to_der
from hsm.token import HsmError, Token
from protocols import hashchain, xades
from protocols.errors import VdxpError

SIG_HASH_CHAIN = "/sig-hashchain.xml"
SIG_HASH_CHAIN_RESULT = "/sig-hashchainresult.xml"
MESSAGE_URI = "/message.xml"


@dataclass(frozen=True)
class SigningKey:
    """A member's signing key: where it is and the certificate material signatures carry."""

    token: Token
    key_id: str
    key_type: str  # "rsa" | "ec"
    mechanism: str  # "rsa-pkcs1" | "rsa-pss" | "ecdsa"
    cert: x509.Certificate
    extra_certs: tuple[x509.Certificate, ...] = ()
    # OCSP responses (DER) for the signing certificate chain, fetched by the OCSP cache.
    ocsp_responses: Callable[[], Sequence[bytes]] = field(default=lambda: ())


def resolve_mechanism(configured: str, key_type: str) -> str:
    """The sign mechanism for a key: the configured one, or the key type's default."""
    if configured == "auto":
        return "ecdsa" if key_type == "ec" else "rsa-pkcs1"
    if (configured == "ecdsa") != (key_type == "ec"):
        raise HsmError(f"sign mechanism {configured} does not fit a {key_type.upper()} key",
                       code="hsm.mechanism_invalid")
    return configured


@dataclass(frozen=True)
class SignedMessage:
    """What a caller embeds: the signature document and, if any, its hash chain pieces."""

    signature_xml: bytes
    hash_chain_result: bytes | None
    hash_chain: bytes | None
    batch_size: int


@dataclass
class _Request:
    parts: tuple[tuple[str, bytes], ...]
    deferred: Deferred[SignedMessage]
    queued_at: float


class MessageSigner:
    """Signs messages with one key, batching concurrent requests into one HSM operation."""

    def __init__(self, reactor: Any, key: SigningKey, *, batch_signing: bool = True, hash_name: str = "sha512",
                 max_batch: int = 1000, timeout: float = 10.0, pipeline_depth: int | None = None,
                 observer: Callable[[int, float, str], None] | None = None) -> None:
        self._reactor = reactor
        self.key = key
        self.batch_signing = batch_signing
        self.hash_name = hash_name
        self.digest_uri = hashchain.digest_uri_for_hash(hash_name)
        self.max_batch = max_batch if batch_signing else 1
        self.timeout = timeout
        self._queue: deque[_Request] = deque()
        self._in_flight = 0
        # Batching wants every request that arrives during an operation in the next batch;
        # without batching, preparing the next signature while the token works pays.
        self.pipeline_depth = pipeline_depth or (1 if batch_signing else 2)
        self.operations = 0  # private-key operations made (for metrics and tests)
        self._gather: Any = None  # the pending end-of-turn call that starts a batch
        # Called after every batch with (messages, seconds, result code or "ok").
        self._observer = observer

    def digest(self, data: bytes) -> bytes:
        """The digest of one part, with the hash this signer uses."""
        return hashlib.new(self.hash_name, data).digest()

    def sign(self, parts: Sequence[tuple[str, bytes]]) -> Deferred[SignedMessage]:
        """Sign a message given as ``(uri, digest)`` parts: ``/message.xml`` first, then attachments."""
        if not parts:
            raise VdxpError("nothing to sign", code="signer.no_parts")
        size = hashlib.new(self.hash_name).digest_size
        if any(len(d) != size for _u, d in parts):
            raise VdxpError(f"part digests must be {self.hash_name} ({size} bytes)", code="signer.digest_invalid")
        d: Deferred[SignedMessage] = Deferred()
        self._queue.append(_Request(tuple(parts), d, self._reactor.seconds()))
        if self.max_batch == 1:
            self._pump()
        elif self._gather is None:
            # Requests made in the same reactor turn (a burst of messages read together) go into
            # one batch rather than the first alone and the rest in the next operation.
            self._gather = self._reactor.callLater(0, self._gathered)
        return d

    def _gathered(self) -> None:
        self._gather = None
        self._pump()

    def _pump(self) -> None:
        """Start batches while the pipeline has room: one batch is prepared while another is signed."""
        while self._queue and self._in_flight < self.pipeline_depth:
            now = self._reactor.seconds()
            batch: list[_Request] = []
            while self._queue and len(batch) < self.max_batch:
                req = self._queue.popleft()
                if now - req.queued_at > self.timeout:
                    req.deferred.errback(HsmTimeout(
                        f"signature request waited more than {self.timeout:g} s (signer overloaded)",
                        code="signer.timeout"))
                else:
                    batch.append(req)
            if not batch:
                continue
            self._in_flight += 1
            d = Deferred.fromCoroutine(self._sign_batch([r.parts for r in batch]))
            d.addBoth(self._batch_done, batch, self._reactor.seconds())

    def _batch_done(self, result: list[SignedMessage] | Failure, batch: list[_Request], started: float) -> None:
        self._in_flight -= 1
        if self._observer is not None:
            code = "ok"
            if isinstance(result, Failure):
                code = result.value.code if isinstance(result.value, VdxpError) else "internal.error"
            self._observer(len(batch), self._reactor.seconds() - started, code)
        if isinstance(result, Failure):
            for r in batch:
                r.deferred.errback(result)
        else:
            for r, res in zip(batch, result, strict=True):
                r.deferred.callback(res)
        self._pump()

    async def _sign_batch(self, inputs: list[tuple[tuple[str, bytes], ...]]) -> list[SignedMessage]:
        key = self.key
        if len(inputs) == 1 and len(inputs[0]) == 1:
            uri, part_digest = inputs[0][0]
            prepared = xades.prepare_signature(
                reference_uri=uri, reference_digest=part_digest, mime_type=xades.MIME_TEXT_XML,
                signing_cert=key.cert, mechanism=key.mechanism, hash_name=self.hash_name,
                extra_certs=key.extra_certs, ocsp_responses=key.ocsp_responses())
            sig = await self._private_key_operation(prepared.digest_to_sign)
            return [SignedMessage(prepared.finish(sig), None, None, 1)]
        chains = hashchain.build_batch([list(p) for p in inputs], digest_uri=self.digest_uri,
                                       chain_uri=SIG_HASH_CHAIN)
        prepared = xades.prepare_signature(
            reference_uri=SIG_HASH_CHAIN_RESULT, reference_digest=self.digest(chains.result_xml),
            mime_type=xades.MIME_HASH_CHAIN_RESULT, signing_cert=key.cert, mechanism=key.mechanism,
            hash_name=self.hash_name, extra_certs=key.extra_certs, ocsp_responses=key.ocsp_responses())
        sig = await self._private_key_operation(prepared.digest_to_sign)
        document = prepared.finish(sig)
        return [SignedMessage(document, chains.result_xml, chain, len(inputs)) for chain in chains.chains]

    async def _private_key_operation(self, digest: bytes) -> bytes:
        self.operations += 1
        token = self.key.token
        result: bytes = await deferred_call(self._reactor, token.thread, token.t_sign, self.key.key_id,
                                            self.key.mechanism, digest, self.hash_name,
                                            timeout=token.spec.timeout_seconds)
        return result


class TokenDigestSigner:
    """A :class:`hsm.interfaces.DigestSigner` for a key on a token (e.g. the TSA's key)."""

    def __init__(self, reactor: Any, token: Token, key_id: str, key_type: str, mechanism: str) -> None:
        self._reactor = reactor
        self._token = token
        self._key_id = key_id
        self._key_type = key_type
        self._mechanism = mechanism

    @property
    def key_type(self) -> str:
        return self._key_type

    @property
    def mechanism(self) -> str:
        return self._mechanism

    async def sign_digest(self, digest: bytes, hash_name: str) -> bytes:
        sig: bytes = await deferred_call(self._reactor, self._token.thread, self._token.t_sign, self._key_id,
                                         self._mechanism, digest, hash_name,
                                         timeout=self._token.spec.timeout_seconds)
        return ecdsa_raw_to_der(sig) if self._mechanism == "ecdsa" else sig
