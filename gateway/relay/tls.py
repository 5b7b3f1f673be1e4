"""TLS between gateways, as X-Road does it.

Both sides present their server's authentication certificate.  Trust does not come from a CA
list at the TLS layer but from the global configuration: a peer is accepted when the SHA-256
hash of its certificate is registered for a security server (``authCertHash``), and when we
connect to a provider, its certificate must be registered for *that* server.  The chain to an
approved CA and the OCSP status are checked by the relay with the OCSP responses that travel in
the messages.  TLS 1.2 with X-Road's CBC suites (needed by Java X-Road servers) and the ECDHE
AES-GCM suites, plus TLS 1.3, by default; the list is configurable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from gateway.config import TlsConfig
from protocols.errors import VdxpError

# Is this DER certificate acceptable as the peer (server side), or as the given netloc (client side)?
PeerCheck = Callable[[bytes], bool]


class TlsConfigError(VdxpError):
    code = "tls.config_invalid"


def cert_sha256(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()


def _load_identity(tls: TlsConfig) -> tuple[Any, list[Any], Any]:
    if tls.key is None or tls.cert is None:
        raise TlsConfigError("relay.tls needs key and cert")
    try:
        key = serialization.load_pem_private_key(tls.key.read_bytes(), password=None)
        certs = x509.load_pem_x509_certificates(tls.cert.read_bytes())
        chain = [c for path in tls.chain for c in x509.load_pem_x509_certificates(path.read_bytes())]
    except (OSError, ValueError) as exc:
        raise TlsConfigError(f"cannot load the TLS identity: {exc}") from None
    leaf = certs[0]
    if leaf.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise TlsConfigError(f"{tls.cert} does not certify the key in {tls.key}", code="tls.key_mismatch")
    return key, [*certs, *chain], leaf


def make_context(tls: TlsConfig, *, server: bool, peer_check: PeerCheck) -> SSL.Context:
    key, chain, leaf = _load_identity(tls)
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD if server else SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    if not tls.tls13:
        ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    try:
        ctx.set_cipher_list(tls.ciphers.encode())
    except SSL.Error as exc:
        raise TlsConfigError(f"relay.tls.ciphers: {exc}", code="tls.ciphers_invalid") from None
    ctx.use_certificate(leaf)
    for extra in chain[1:]:
        ctx.add_extra_chain_cert(crypto.X509.from_cryptography(extra))
    ctx.use_privatekey(key)
    ctx.check_privatekey()
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    if server:
        ctx.set_session_id(b"vdxp-gateway")

    def verify(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        if depth > 0:
            return True  # the chain is judged by the relay (approved CA, OCSP)
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
        return peer_check(der)

    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
    return ctx


@implementer(IOpenSSLServerConnectionCreator)
class ServerTls:
    """For the server listener (port 5500): peers must present a registered authentication certificate."""

    def __init__(self, tls: TlsConfig, registered: PeerCheck) -> None:
        self._ctx = make_context(tls, server=True, peer_check=registered)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._ctx, None)

    def getContext(self) -> SSL.Context:
        return self._ctx


@implementer(IOpenSSLClientConnectionCreator)
class _ClientCreator:
    def __init__(self, ctx: SSL.Context) -> None:
        self._ctx = ctx

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._ctx, None)


@implementer(IPolicyForHTTPS)
class PeerPolicy:
    """For connections to provider servers: the server at ``host:port`` must present one of the
    certificates registered for it (``expected(host, port) -> set of SHA-256 hashes``)."""

    def __init__(self, tls: TlsConfig, expected: Callable[[str, int], set[bytes]]) -> None:
        self._tls = tls
        self._expected = expected
        self._contexts: dict[tuple[str, int], SSL.Context] = {}
        # The certificate each peer last presented (the relay checks its chain and OCSP).
        self.seen: dict[tuple[str, int], bytes] = {}
        # The certificate a peer presented that is not registered for it (the handshake failed).
        self.rejected: dict[tuple[str, int], bytes] = {}

    def creatorForNetloc(self, hostname: bytes, port: int) -> _ClientCreator:
        host = hostname.decode("ascii")
        key = (host, port)
        ctx = self._contexts.get(key)
        if ctx is None:
            def check(der: bytes, host: str = host, port: int = port) -> bool:
                if cert_sha256(der) in self._expected(host, port):
                    self.seen[(host, port)] = der
                    self.rejected.pop((host, port), None)
                    return True
                self.rejected[(host, port)] = der
                return False

            ctx = self._contexts[key] = make_context(self._tls, server=False, peer_check=check)
        return _ClientCreator(ctx)

    def forget(self) -> None:
        """Drop cached contexts (after a new global configuration)."""
        self._contexts.clear()


@implementer(IPolicyForHTTPS)
class ServicePolicy:
    """For HTTPS services behind this gateway (the provider side calling its information systems).

    ``pinned`` set (X-Road's TLS authentication of the service, the default): the service must
    present one of the certificates registered for its client (``is_certs``); none registered
    means no service is trusted.  ``pinned`` None: the service's certificate must chain to
    ``ca_bundle`` (or the system's CAs) and name the URL's host; a certificate is never accepted
    unverified.
    """

    def __init__(self, pinned: frozenset[bytes] | None, ca_bundle: Any = None) -> None:
        self._pinned = pinned
        self._ca_bundle = ca_bundle
        # Made at the first connection and kept (Twisted asks for a creator per new connection).
        self._trust: Any = None
        self._pinned_creator: _ClientCreator | None = None

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        if self._pinned is None:
            from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust, trustRootFromCertificates

            if self._trust is None:
                if self._ca_bundle is not None:
                    pems = self._ca_bundle.read_bytes()
                    self._trust = trustRootFromCertificates(
                        [Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM))
                         for c in x509.load_pem_x509_certificates(pems)])
                else:
                    self._trust = platformTrust()
            return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._trust)
        if self._pinned_creator is None:
            pinned = self._pinned
            ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
            ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
            ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)

            def verify(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
                if depth > 0:
                    return True  # the leaf itself is pinned
                return crypto.dump_certificate(crypto.FILETYPE_ASN1, cert) in pinned

            ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
            self._pinned_creator = _ClientCreator(ctx)
        return self._pinned_creator
