"""OCSP for our own certificates (from the responder global configuration names) and the 5577 responder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.web.test.requesthelper import DummyRequest

from gateway.devocsp import OcspResponderResource as DevResponder
from gateway.devpki import init_pki
from gateway.ownocsp import OcspResponderResource, OwnOcsp, sha1_hex
from protocols import ocsp as p_ocsp
from protocols.errors import VdxpError
from protocols.gconf import params as p


def _csr(cn: str) -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).sign(key, hashes.SHA256()))


def _setup(tmp: Path, approved: bool = True):
    pki = init_pki(tmp / "pki", ocsp_url="http://ocsp.test/")
    auth = pki.issue(_csr("gw1.test"), "auth")
    ocsp_info = (p.OcspInfo(url="http://ocsp.test/", cert=pki.ocsp_cert),)
    cas = (p.ApprovedCa(name="dev", authentication_only=False, top_ca=pki.root, top_ca_ocsp=(),
                        intermediates=(p.CaInfo(pki.intermediate, ocsp_info),),
                        certificate_profile_info="basic"),) if approved else ()
    shared = SimpleNamespace(cas=cas, ocsp_freshness_seconds=3600)
    conf = SimpleNamespace(check_valid=lambda: SimpleNamespace(own_shared=shared))
    http = StubTreq(DevResponder(tmp / "pki", reactor))
    own = OwnOcsp(reactor, conf, http, CollectorRegistry())
    own.add(auth, "auth")
    return pki, auth, own


@pytest_twisted.ensureDeferred
async def test_fetches_verified_responses_and_serves_them(tmp_path: Path) -> None:
    pki, auth, own = _setup(tmp_path)
    await own.refresh()
    assert own.health() == (True, "authentication certificate OCSP good")
    der = own.response(sha1_hex(auth))
    assert der is not None
    status = p_ocsp.verify_response(der, cert=auth, issuer=pki.intermediate, at=datetime.now(UTC))
    assert status.is_good
    # Port 5577: X-Road's multipart answer.
    request = DummyRequest([b""])
    request.args = {b"cert": [sha1_hex(auth).encode()]}
    body = OcspResponderResource(own).render_GET(request)
    ctype = request.responseHeaders.getRawHeaders(b"content-type")[0]
    assert ctype.startswith(b"multipart/related; boundary=")
    assert der in body and b"Content-Type: application/ocsp-response" in body
    unknown = DummyRequest([b""])
    unknown.args = {b"cert": [b"00" * 20]}
    OcspResponderResource(own).render_GET(unknown)
    assert unknown.responseCode == 500


@pytest_twisted.ensureDeferred
async def test_revoked_certificate_fails_health(tmp_path: Path) -> None:
    pki, auth, own = _setup(tmp_path)
    pki.revoke(auth.serial_number, "keyCompromise", now=datetime.now(UTC) - timedelta(minutes=1))
    await own.refresh()
    ok, reason = own.health()
    assert not ok and "revoked" in reason


@pytest_twisted.ensureDeferred
async def test_issuer_must_be_an_approved_ca(tmp_path: Path) -> None:
    _pki, _auth, own = _setup(tmp_path, approved=False)
    await own.refresh()
    ok, reason = own.health()
    assert not ok and "cert.issuer_not_approved" in reason


@pytest_twisted.ensureDeferred
async def test_no_valid_global_configuration(tmp_path: Path) -> None:
    _pki, _auth, own = _setup(tmp_path)

    def outdated():
        raise VdxpError("expired", code="gconf.outdated")

    own._conf_source = SimpleNamespace(check_valid=outdated)
    await own.refresh()
    ok, reason = own.health()
    assert not ok and "gconf.outdated" in reason
