"""OCSP: building and verifying responses, the client, the cache, the dev responder (in memory)."""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp as x509_ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from gateway.devocsp import OcspResponderResource
from gateway.devpki import Pki, init_pki
from hsm.ocsp import OcspCache, OcspClient, ocsp_urls
from protocols import ocsp
from protocols.errors import OcspError

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
T = TypeVar("T")


def result_of(d: Deferred[T]) -> T:
    """The result of a Deferred that must already have fired (raises its failure)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    result: T = results[0]
    return result


def run(coro: Coroutine[Any, Any, T]) -> Deferred[T]:
    return Deferred.fromCoroutine(coro)


def make_csr(cn: str) -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.BUSINESS_CATEGORY, "GOV"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "000.00.00.H41"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())


def self_signed_responder(cn: str = "Rogue OCSP") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return init_pki(tmp_path / "pki", now=NOW - timedelta(days=1))


@pytest.fixture
def leaf(pki: Pki) -> x509.Certificate:
    return pki.issue(make_csr("gw1.vdxp.test"), "auth", now=NOW - timedelta(hours=1))


def respond(
    pki: Pki,
    cert: x509.Certificate,
    *,
    status: ocsp.CertStatusName = "good",
    this_update: datetime = NOW,
    next_update: datetime | None = NOW + timedelta(hours=1),
    hash_name: str = "sha256",
    **kwargs: Any,
) -> bytes:
    kwargs.setdefault("responder_cert", pki.ocsp_cert)
    kwargs.setdefault("responder_key", pki.ocsp_key)
    return ocsp.build_response(
        ocsp.cert_id(cert, pki.intermediate, hash_name),
        status=status,
        this_update=this_update,
        next_update=next_update,
        **kwargs,
    )


def verify(pki: Pki, cert: x509.Certificate, der: bytes, **kwargs: Any) -> ocsp.OcspStatus:
    kwargs.setdefault("at", NOW)
    return ocsp.verify_response(der, cert=cert, issuer=pki.intermediate, **kwargs)


def code_of(fn: Callable[[], object]) -> str:
    with pytest.raises(OcspError) as info:
        fn()
    return info.value.code


# ---------------------------------------------------------------------------------------
# requests


@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha384", "sha512"])
def test_request_round_trip(pki: Pki, leaf: x509.Certificate, hash_name: str) -> None:
    der = ocsp.build_request(leaf, pki.intermediate, hash_name, nonce=b"0123456789abcdef")
    parsed = ocsp.parse_request(der)
    assert parsed.nonce == b"0123456789abcdef"
    assert parsed.cert_id == ocsp.cert_id(leaf, pki.intermediate, hash_name)
    # Our issuer hashes agree with cryptography's own CertID computation.
    reference = x509_ocsp.load_der_ocsp_request(der)
    assert reference.issuer_key_hash == parsed.cert_id.issuer_key_hash
    assert reference.serial_number == leaf.serial_number
    assert ocsp.parse_request(ocsp.build_request(leaf, pki.intermediate)).nonce is None


def test_request_garbage_is_malformed() -> None:
    assert code_of(lambda: ocsp.parse_request(b"\x30\x03\x02\x01\x01")) == "ocsp.malformed"
    assert code_of(lambda: ocsp.parse_request(b"nonsense")) == "ocsp.malformed"


# ---------------------------------------------------------------------------------------
# verification


def test_good_response(pki: Pki, leaf: x509.Certificate) -> None:
    der = respond(pki, leaf, nonce=b"n1")
    status = verify(pki, leaf, der, nonce=b"n1")
    assert status.status == "good" and status.is_good
    assert status.this_update == NOW
    assert status.next_update == NOW + timedelta(hours=1)
    assert status.revocation_time is None and status.revocation_reason is None
    assert status.der == der


def test_revoked_and_unknown(pki: Pki, leaf: x509.Certificate) -> None:
    revoked_at = NOW - timedelta(minutes=10)
    der = respond(
        pki, leaf, status="revoked", revocation_time=revoked_at, revocation_reason=x509.ReasonFlags.key_compromise
    )
    status = verify(pki, leaf, der)
    assert status.status == "revoked"
    assert status.revocation_time == revoked_at
    assert status.revocation_reason == "keyCompromise"
    assert verify(pki, leaf, respond(pki, leaf, status="unknown")).status == "unknown"


@pytest.mark.parametrize("hash_name", ["sha1", "sha512"])
def test_other_certid_hashes(pki: Pki, leaf: x509.Certificate, hash_name: str) -> None:
    assert verify(pki, leaf, respond(pki, leaf, hash_name=hash_name)).is_good


def test_responder_by_name_and_issuer_signed(pki: Pki, leaf: x509.Certificate) -> None:
    assert verify(pki, leaf, respond(pki, leaf, responder_id="name")).is_good
    # The CA answering for itself needs no delegation.
    der = respond(pki, leaf, responder_cert=pki.intermediate, responder_key=pki.intermediate_key, certificates=[])
    assert verify(pki, leaf, der).is_good


def test_unsuccessful(pki: Pki, leaf: x509.Certificate) -> None:
    with pytest.raises(OcspError) as info:
        verify(pki, leaf, ocsp.build_unsuccessful("tryLater"))
    assert info.value.code == "ocsp.unsuccessful"
    assert "tryLater" in info.value.message
    assert code_of(lambda: verify(pki, leaf, ocsp.build_unsuccessful("unauthorized"))) == "ocsp.unsuccessful"


@pytest.mark.parametrize("garbage", [b"", b"not der", b"\x30\x03\x0a\x01\x00"])
def test_malformed(pki: Pki, leaf: x509.Certificate, garbage: bytes) -> None:
    assert code_of(lambda: verify(pki, leaf, garbage)) == "ocsp.malformed"


def test_cert_mismatch(pki: Pki, leaf: x509.Certificate) -> None:
    other = pki.issue(make_csr("gw2.vdxp.test"), "auth", now=NOW)
    assert code_of(lambda: verify(pki, leaf, respond(pki, other))) == "ocsp.cert_mismatch"
    # Same serial, other issuer (the root): the issuer hashes do not match.
    fake_id = ocsp.cert_id(leaf, pki.root)
    der = ocsp.build_response(
        fake_id, status="good", responder_cert=pki.ocsp_cert, responder_key=pki.ocsp_key, this_update=NOW
    )
    assert code_of(lambda: verify(pki, leaf, der)) == "ocsp.cert_mismatch"


def test_unauthorized_responders(pki: Pki, leaf: x509.Certificate, tmp_path: Path) -> None:
    rogue, rogue_key = self_signed_responder()
    der = respond(pki, leaf, responder_cert=rogue, responder_key=rogue_key)
    assert code_of(lambda: verify(pki, leaf, der)) == "ocsp.unauthorized_responder"
    # ... unless X-Road's global configuration lists it as an approved OCSP responder.
    assert verify(pki, leaf, der, trusted_responders=[rogue]).is_good

    # Issued by the issuer, but not for OCSP signing.
    sign_key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Not a responder")]))
        .sign(sign_key, hashes.SHA256())
    )
    signer = pki.issue(csr, "sign", now=NOW - timedelta(hours=1))
    der = respond(pki, leaf, responder_cert=signer, responder_key=sign_key)
    assert code_of(lambda: verify(pki, leaf, der)) == "ocsp.unauthorized_responder"

    # A proper responder of another PKI.
    other = init_pki(tmp_path / "other", now=NOW - timedelta(days=1))
    der = respond(pki, leaf, responder_cert=other.ocsp_cert, responder_key=other.ocsp_key)
    assert code_of(lambda: verify(pki, leaf, der)) == "ocsp.unauthorized_responder"

    # The responder certificate is not included and not known otherwise.
    der = respond(pki, leaf, certificates=[])
    assert code_of(lambda: verify(pki, leaf, der)) == "ocsp.unauthorized_responder"
    assert verify(pki, leaf, der, trusted_responders=[pki.ocsp_cert]).is_good


def test_delegated_responder_must_be_valid_at_the_time(pki: Pki, leaf: x509.Certificate) -> None:
    later = pki.ocsp_cert.not_valid_after_utc + timedelta(days=1)
    der = respond(pki, leaf, this_update=later, next_update=later + timedelta(hours=1))
    assert code_of(lambda: verify(pki, leaf, der, at=later)) == "ocsp.unauthorized_responder"


def test_signature_invalid(pki: Pki, leaf: x509.Certificate) -> None:
    der = respond(pki, leaf)
    signature = x509_ocsp.load_der_ocsp_response(der).signature
    at = der.index(signature)
    tampered = bytearray(der)
    tampered[at + len(signature) - 1] ^= 0x01
    assert code_of(lambda: verify(pki, leaf, bytes(tampered))) == "ocsp.signature_invalid"


def test_freshness(pki: Pki, leaf: x509.Certificate) -> None:
    stale = respond(pki, leaf, this_update=NOW - timedelta(seconds=3601), next_update=None)
    assert code_of(lambda: verify(pki, leaf, stale)) == "ocsp.stale"
    assert verify(pki, leaf, stale, freshness_seconds=7200).is_good
    assert verify(pki, leaf, respond(pki, leaf, this_update=NOW - timedelta(seconds=3599), next_update=None)).is_good

    future = respond(pki, leaf, this_update=NOW + timedelta(minutes=5), next_update=NOW + timedelta(hours=2))
    assert code_of(lambda: verify(pki, leaf, future)) == "ocsp.future"
    assert verify(pki, leaf, future, max_clock_skew_seconds=600).is_good
    slightly = respond(pki, leaf, this_update=NOW + timedelta(seconds=30))
    assert verify(pki, leaf, slightly).is_good

    expired = respond(pki, leaf, this_update=NOW - timedelta(minutes=30), next_update=NOW - timedelta(minutes=1))
    assert code_of(lambda: verify(pki, leaf, expired)) == "ocsp.expired"


def test_nonce(pki: Pki, leaf: x509.Certificate) -> None:
    assert code_of(lambda: verify(pki, leaf, respond(pki, leaf), nonce=b"abc")) == "ocsp.nonce_mismatch"
    assert code_of(lambda: verify(pki, leaf, respond(pki, leaf, nonce=b"xyz"), nonce=b"abc")) == "ocsp.nonce_mismatch"
    # No nonce asked for: a response with one is fine.
    assert verify(pki, leaf, respond(pki, leaf, nonce=b"xyz")).is_good


def test_build_response_rejects_nonsense(pki: Pki, leaf: x509.Certificate) -> None:
    assert code_of(lambda: respond(pki, leaf, status="revoked")) == "ocsp.invalid"
    assert code_of(lambda: ocsp.build_unsuccessful("pleaseGoAway")) == "ocsp.invalid"


# ---------------------------------------------------------------------------------------
# the development responder, in memory


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(NOW.timestamp())
    return c


@pytest.fixture
def responder(pki: Pki, clock: Clock) -> OcspResponderResource:
    return OcspResponderResource(pki.directory, clock, next_update_seconds=600)


def test_responder_answers_from_the_index(
    pki: Pki, leaf: x509.Certificate, responder: OcspResponderResource, clock: Clock
) -> None:
    for hash_name in ("sha1", "sha256"):
        der = responder.answer(ocsp.build_request(leaf, pki.intermediate, hash_name, nonce=b"nonce-1"))
        status = verify(pki, leaf, der, nonce=b"nonce-1")
        assert status.is_good
        assert status.this_update == NOW
        assert status.next_update == NOW + timedelta(seconds=600)
    pki.revoke(leaf.serial_number, "keyCompromise", NOW - timedelta(minutes=5))
    clock.advance(60)
    status = verify(
        pki, leaf, responder.answer(ocsp.build_request(leaf, pki.intermediate)), at=NOW + timedelta(seconds=60)
    )
    assert status.status == "revoked"
    assert status.revocation_reason == "keyCompromise"
    assert status.this_update == NOW + timedelta(seconds=60)


def test_responder_unknown_unauthorized_malformed(
    pki: Pki, leaf: x509.Certificate, responder: OcspResponderResource, tmp_path: Path
) -> None:
    other = init_pki(tmp_path / "other", now=NOW - timedelta(days=1))
    stranger = other.issue(make_csr("stranger.test"), "auth", now=NOW)
    # A certificate the CA never issued, under the right issuer: unknown.
    fake = ocsp.build_request(stranger, pki.intermediate)
    status = ocsp.verify_response(responder.answer(fake), cert=stranger, issuer=pki.intermediate, at=NOW)
    assert status.status == "unknown"
    # A CertID of another issuer: unauthorized.
    der = responder.answer(ocsp.build_request(stranger, other.intermediate))
    assert x509_ocsp.load_der_ocsp_response(der).response_status == x509_ocsp.OCSPResponseStatus.UNAUTHORIZED
    # Garbage: malformedRequest.
    der = responder.answer(b"garbage")
    assert x509_ocsp.load_der_ocsp_response(der).response_status == x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_responder_over_http_post_and_get(pki: Pki, leaf: x509.Certificate, responder: OcspResponderResource) -> None:
    stub = StubTreq(responder)
    request = ocsp.build_request(leaf, pki.intermediate, nonce=b"n")
    response = result_of(
        stub.post("http://127.0.0.1:8888/", data=request, headers={b"content-type": b"application/ocsp-request"})
    )
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [b"application/ocsp-response"]
    assert verify(pki, leaf, result_of(response.content()), nonce=b"n").is_good

    # RFC 6960 A.1: GET {url}/{url-encoding of base-64 encoding of the DER request}
    path = urllib.parse.quote(base64.b64encode(request).decode("ascii"), safe="")
    response = result_of(stub.get(f"http://127.0.0.1:8888/{path}"))
    assert verify(pki, leaf, result_of(response.content()), nonce=b"n").is_good
    # Unescaped '/' in the base64 text works too.
    response = result_of(stub.get("http://127.0.0.1:8888/" + base64.b64encode(request).decode("ascii")))
    assert verify(pki, leaf, result_of(response.content()), nonce=b"n").is_good

    response = result_of(stub.get("http://127.0.0.1:8888/%%%not-base64"))
    der = result_of(response.content())
    assert x509_ocsp.load_der_ocsp_response(der).response_status == x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    response = result_of(stub.post("http://127.0.0.1:8888/", data=b"x" * 100_000))
    der = result_of(response.content())
    assert x509_ocsp.load_der_ocsp_response(der).response_status == x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST


# ---------------------------------------------------------------------------------------
# the client


def test_client_fetches_via_aia(
    pki: Pki, leaf: x509.Certificate, responder: OcspResponderResource, clock: Clock
) -> None:
    assert ocsp_urls(leaf) == ["http://127.0.0.1:8888/"]
    client = OcspClient(StubTreq(responder), clock)
    status = result_of(run(client.fetch(leaf, pki.intermediate)))
    assert status.is_good and status.this_update == NOW
    pki.revoke(leaf.serial_number, "superseded", NOW)
    status = result_of(run(client.fetch(leaf, pki.intermediate, "http://127.0.0.1:8888/")))
    assert status.status == "revoked" and status.revocation_reason == "superseded"


def test_client_without_url(pki: Pki, responder: OcspResponderResource, clock: Clock) -> None:
    client = OcspClient(StubTreq(responder), clock)
    # The responder profile carries no AIA.
    with pytest.raises(OcspError) as info:
        result_of(run(client.fetch(pki.ocsp_cert, pki.intermediate)))
    assert info.value.code == "ocsp.no_url"


def test_client_verifies_at_clock_time(pki: Pki, leaf: x509.Certificate, responder: OcspResponderResource) -> None:
    # The responder's clock is two hours behind the client's: the answer is stale.
    client_clock = Clock()
    client_clock.advance((NOW + timedelta(hours=2)).timestamp())
    client = OcspClient(StubTreq(responder), client_clock)
    with pytest.raises(OcspError) as info:
        result_of(run(client.fetch(leaf, pki.intermediate)))
    assert info.value.code in ("ocsp.stale", "ocsp.expired")


class _Fixed(Resource):
    isLeaf = True

    def __init__(self, code: int, body: bytes, content_type: bytes = b"application/ocsp-response") -> None:
        super().__init__()
        self.code, self.body, self.content_type = code, body, content_type

    def render_POST(self, request: Request) -> bytes:
        request.setResponseCode(self.code)
        request.setHeader(b"content-type", self.content_type)
        return self.body


class _Hang(Resource):
    isLeaf = True

    def render_POST(self, request: Request) -> object:
        return NOT_DONE_YET


def test_client_http_errors(pki: Pki, leaf: x509.Certificate, clock: Clock) -> None:
    cases = [
        _Fixed(500, b"oops", b"text/plain"),
        _Fixed(200, b"<html/>", b"text/html"),
        _Fixed(404, b""),
    ]
    for resource in cases:
        client = OcspClient(StubTreq(resource), clock)
        with pytest.raises(OcspError) as info:
            result_of(run(client.fetch(leaf, pki.intermediate)))
        assert info.value.code == "ocsp.http_error"
    client = OcspClient(StubTreq(_Fixed(200, b"\x00" * 5000)), clock, max_response_bytes=4096)
    with pytest.raises(OcspError) as info:
        result_of(run(client.fetch(leaf, pki.intermediate)))
    assert info.value.code == "ocsp.http_error"
    client = OcspClient(StubTreq(_Fixed(200, b"garbage")), clock)
    with pytest.raises(OcspError) as info:
        result_of(run(client.fetch(leaf, pki.intermediate)))
    assert info.value.code == "ocsp.malformed"


def test_client_timeout(pki: Pki, leaf: x509.Certificate, clock: Clock) -> None:
    client = OcspClient(StubTreq(_Hang()), clock, timeout_seconds=10)
    d = run(client.fetch(leaf, pki.intermediate))
    assert not d.called
    clock.advance(9)
    assert not d.called
    clock.advance(2)
    with pytest.raises(OcspError) as info:
        result_of(d)
    assert info.value.code == "ocsp.timeout"


class _Refusing:
    def post(self, url: str, /, *, data: bytes, headers: dict[bytes | str, bytes | str]) -> Deferred[Any]:
        return defer.fail(ConnectionRefusedError("nobody home"))


def test_client_unreachable(pki: Pki, leaf: x509.Certificate, clock: Clock) -> None:
    client = OcspClient(_Refusing(), clock)
    with pytest.raises(OcspError) as info:
        result_of(run(client.fetch(leaf, pki.intermediate)))
    assert info.value.code == "ocsp.unreachable"


# ---------------------------------------------------------------------------------------
# the cache


class _FakeFetcher:
    def __init__(self) -> None:
        self.calls: list[Deferred[ocsp.OcspStatus]] = []

    async def fetch(self, cert: x509.Certificate, issuer: x509.Certificate, url: str | None = None) -> ocsp.OcspStatus:
        d: Deferred[ocsp.OcspStatus] = Deferred()
        self.calls.append(d)
        return await d


def _status(this_update: datetime, next_update: datetime | None = None) -> ocsp.OcspStatus:
    return ocsp.OcspStatus("good", this_update, next_update, this_update, None, None, b"der")


def test_cache_shares_one_fetch_and_serves_while_fresh(pki: Pki, leaf: x509.Certificate, clock: Clock) -> None:
    fetcher = _FakeFetcher()
    cache = OcspCache(fetcher, clock, freshness_seconds=3600, refresh_margin=300)
    a = run(cache.status(leaf, pki.intermediate))
    b = run(cache.status(leaf, pki.intermediate))
    assert len(fetcher.calls) == 1
    assert not a.called and not b.called
    first = _status(NOW)
    fetcher.calls[0].callback(first)
    assert result_of(a) is first and result_of(b) is first

    clock.advance(3000)  # 50 min: still fresh (60 min - 5 min margin)
    assert result_of(run(cache.status(leaf, pki.intermediate))) is first
    assert len(fetcher.calls) == 1
    assert cache.cached(leaf, pki.intermediate) is first

    clock.advance(301)  # past freshness - margin: fetch again
    c = run(cache.status(leaf, pki.intermediate))
    assert len(fetcher.calls) == 2
    second = _status(NOW + timedelta(seconds=3301))
    fetcher.calls[1].callback(second)
    assert result_of(c) is second


def test_cache_respects_next_update(pki: Pki, leaf: x509.Certificate, clock: Clock) -> None:
    fetcher = _FakeFetcher()
    cache = OcspCache(fetcher, clock, freshness_seconds=3600, refresh_margin=60)
    d = run(cache.status(leaf, pki.intermediate))
    fetcher.calls[0].callback(_status(NOW, NOW + timedelta(minutes=10)))
    result_of(d)
    clock.advance(500)
    assert cache.cached(leaf, pki.intermediate) is not None
    clock.advance(100)  # 10 min - 1 min margin passed
    assert cache.cached(leaf, pki.intermediate) is None


def test_cache_does_not_cache_failures(pki: Pki, leaf: x509.Certificate, clock: Clock) -> None:
    fetcher = _FakeFetcher()
    cache = OcspCache(fetcher, clock)
    a = run(cache.status(leaf, pki.intermediate))
    b = run(cache.status(leaf, pki.intermediate))
    fetcher.calls[0].errback(OcspError("down", code="ocsp.unreachable"))
    for d in (a, b):
        with pytest.raises(OcspError) as info:
            result_of(d)
        assert info.value.code == "ocsp.unreachable"
    c = run(cache.status(leaf, pki.intermediate))
    assert len(fetcher.calls) == 2
    fetcher.calls[1].callback(_status(NOW))
    assert result_of(c).is_good
    assert cache.fetches == 2


def test_cache_keys_by_certificate_and_put(pki: Pki, leaf: x509.Certificate, clock: Clock) -> None:
    fetcher = _FakeFetcher()
    cache = OcspCache(fetcher, clock)
    other = pki.issue(make_csr("gw9.vdxp.test"), "auth", now=NOW)
    a = run(cache.status(leaf, pki.intermediate))
    b = run(cache.status(other, pki.intermediate))
    assert len(fetcher.calls) == 2
    for call in fetcher.calls:
        call.errback(OcspError("down", code="ocsp.unreachable"))
    for d in (a, b):
        with pytest.raises(OcspError):
            result_of(d)
    cache.put(other, pki.intermediate, _status(NOW))
    assert result_of(run(cache.status(other, pki.intermediate))).is_good
    assert len(fetcher.calls) == 2
    cache.invalidate(other, pki.intermediate)
    assert cache.cached(other, pki.intermediate) is None


def test_cache_with_real_client_and_responder(
    pki: Pki, leaf: x509.Certificate, responder: OcspResponderResource, clock: Clock
) -> None:
    cache = OcspCache(OcspClient(StubTreq(responder), clock), clock)
    assert result_of(run(cache.status(leaf, pki.intermediate))).is_good
    pki.revoke(leaf.serial_number, "keyCompromise", NOW)
    assert result_of(run(cache.status(leaf, pki.intermediate))).is_good  # still cached
    clock.advance(3600)
    assert result_of(run(cache.status(leaf, pki.intermediate))).status == "revoked"
    assert cache.fetches == 2


def test_responder_names_match_whatever_the_rdn_order() -> None:
    from cryptography.x509.oid import NameOID

    from protocols.ocsp import same_name

    a = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "EE"), x509.NameAttribute(NameOID.COMMON_NAME, "c")])
    b = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "c"), x509.NameAttribute(NameOID.COUNTRY_NAME, "EE")])
    c = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "d"), x509.NameAttribute(NameOID.COUNTRY_NAME, "EE")])
    assert same_name(a, b) and not same_name(a, c)
