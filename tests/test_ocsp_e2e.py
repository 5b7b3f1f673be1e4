"""OCSP end to end: our CLI, our responder on a real socket, and openssl on both sides."""

from __future__ import annotations

import select
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway import devpki
from protocols import ocsp
from protocols.errors import OcspError

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "vdxp-gateway"


def cli(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, f"{args}: {r.stdout}{r.stderr}"
    return r


def openssl(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, f"openssl {args}: {r.stdout}{r.stderr}"
    return r


def write_csr(path: Path, cn: str, *, der: bool = False) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "UBND tinh H41"),
            x509.NameAttribute(NameOID.BUSINESS_CATEGORY, "GOV"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "000.00.00.H41"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    path.write_bytes(csr.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM))


@dataclass
class Env:
    tmp: Path
    pki: Path
    cert_path: Path
    cert: x509.Certificate
    issuer: x509.Certificate
    chain: Path

    @property
    def serial(self) -> str:
        return devpki.serial_hex(self.cert.serial_number)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    pki = tmp_path / "pki"
    cli("pki", "init", pki, "--instance", "VN-TEST")
    write_csr(tmp_path / "auth.csr", "gw-provider.vdxp.test", der=True)
    cli("pki", "issue", pki, "--csr", tmp_path / "auth.csr", "--profile", "auth", "--out", tmp_path / "auth.pem")
    openssl("verify", "-CAfile", pki / "root.pem", "-untrusted", pki / "intermediate.pem", tmp_path / "auth.pem")
    chain = tmp_path / "chain.pem"
    chain.write_bytes((pki / "intermediate.pem").read_bytes() + (pki / "root.pem").read_bytes())
    return Env(
        tmp=tmp_path,
        pki=pki,
        cert_path=tmp_path / "auth.pem",
        cert=x509.load_pem_x509_certificate((tmp_path / "auth.pem").read_bytes()),
        issuer=x509.load_pem_x509_certificate((pki / "intermediate.pem").read_bytes()),
        chain=chain,
    )


@pytest.fixture
def responder_url(env: Env) -> Iterator[str]:
    """`vdxp-gateway ocsp serve` on an ephemeral 127.0.0.1 port; waits for its readiness line."""
    proc = subprocess.Popen(
        [str(CLI), "ocsp", "serve", "--pki", str(env.pki), "--listen", "tcp:0:interface=127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the responder did not report readiness within 30 s"
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:"), line + (proc.stderr.read() if proc.stderr else "")
        yield line.removeprefix("listening on ")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


def _openssl_query(env: Env, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return openssl(
        "ocsp",
        "-issuer",
        env.pki / "intermediate.pem",
        *extra,
        "-cert",
        env.cert_path,
        "-url",
        url,
        "-CAfile",
        env.chain,
    )


def test_openssl_queries_our_responder(env: Env, responder_url: str) -> None:
    r = _openssl_query(env, responder_url, "-sha256")
    assert "Response verify OK" in r.stdout + r.stderr
    assert f"{env.cert_path}: good" in r.stdout
    # openssl's default SHA-1 CertID is answered too.
    r = _openssl_query(env, responder_url)
    assert f"{env.cert_path}: good" in r.stdout

    cli("pki", "revoke", env.pki, "--serial", env.serial, "--reason", "keyCompromise")
    r = _openssl_query(env, responder_url, "-sha256")
    assert "Response verify OK" in r.stdout + r.stderr
    assert f"{env.cert_path}: revoked" in r.stdout
    assert "Reason: keyCompromise" in r.stdout


def test_ocsp_check_cli(env: Env, responder_url: str) -> None:
    r = cli("ocsp", "check", "--cert", env.cert_path, "--issuer", env.pki / "intermediate.pem", "--url", responder_url)
    assert r.stdout.startswith("good thisUpdate=")
    cli("pki", "revoke", env.pki, "--serial", env.serial, "--reason", "superseded")
    r = cli(
        "ocsp",
        "check",
        "--cert",
        env.cert_path,
        "--issuer",
        env.pki / "intermediate.pem",
        "--url",
        responder_url,
        check=False,
    )
    assert r.returncode == 1
    assert r.stdout.startswith("revoked ") and "reason=superseded" in r.stdout
    # Wrong issuer: our responder says unauthorized; the check fails with one coded line.
    r = cli(
        "ocsp", "check", "--cert", env.cert_path, "--issuer", env.pki / "root.pem", "--url", responder_url, check=False
    )
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error: ocsp.unsuccessful:")
    assert len(r.stderr.strip().splitlines()) == 1


def test_ocsp_check_cli_unreachable(env: Env) -> None:
    # The AIA default (127.0.0.1:8888) is used; point it at a closed port instead.
    r = cli(
        "ocsp",
        "check",
        "--cert",
        env.cert_path,
        "--issuer",
        env.pki / "intermediate.pem",
        "--url",
        "http://127.0.0.1:9/",
        check=False,
    )
    assert r.returncode == 1
    assert r.stderr.startswith("error: ocsp.unreachable:")


@pytest_twisted.ensureDeferred
async def test_our_client_against_our_responder(env: Env, responder_url: str) -> None:
    import treq
    from twisted.internet import reactor
    from twisted.web.client import Agent, HTTPConnectionPool

    from hsm.ocsp import OcspCache, OcspClient

    pool = HTTPConnectionPool(reactor, persistent=False)
    client = OcspClient(treq.client.HTTPClient(Agent(reactor, pool=pool)), reactor, timeout_seconds=10)
    status = await client.fetch(env.cert, env.issuer, responder_url)
    assert status.is_good
    # Concurrent callers share one fetch through the cache.  The certificate's AIA names the
    # default port, so pin the client to this responder's URL.

    class _Pinned:
        async def fetch(
            self, cert: x509.Certificate, issuer: x509.Certificate, url: str | None = None
        ) -> ocsp.OcspStatus:
            return await client.fetch(cert, issuer, responder_url)

    cache = OcspCache(_Pinned(), reactor)
    from twisted.internet.defer import Deferred, gatherResults

    results = await gatherResults([Deferred.fromCoroutine(cache.status(env.cert, env.issuer)) for _ in range(5)])
    assert all(r is results[0] for r in results)
    assert cache.fetches == 1

    cli("pki", "revoke", env.pki, "--serial", env.serial, "--reason", "keyCompromise")
    status = await client.fetch(env.cert, env.issuer, responder_url)
    assert status.status == "revoked" and status.revocation_reason == "keyCompromise"
    await pool.closeCachedConnections()


# ---------------------------------------------------------------------------------------
# the other direction: openssl's responder (offline, no port), our verifier


def _openssl_respond(env: Env, request: bytes, *extra: str | Path, signer: Path | None = None) -> bytes:
    req = env.tmp / "req.der"
    resp = env.tmp / "resp.der"
    req.write_bytes(request)
    signer_dir = signer or env.pki
    openssl(
        "ocsp",
        "-index",
        env.pki / "index.txt",
        "-rsigner",
        signer_dir / "ocsp.pem",
        "-rkey",
        signer_dir / "ocsp.key",
        "-CA",
        env.pki / "intermediate.pem",
        "-reqin",
        req,
        "-respout",
        resp,
        *extra,
    )
    return resp.read_bytes()


def test_openssl_responder_verified_by_us(env: Env) -> None:
    nonce = b"e2e-nonce-123456"
    request = ocsp.build_request(env.cert, env.issuer, "sha256", nonce=nonce)
    der = _openssl_respond(env, request, "-ndays", "1")
    now = datetime.now(UTC)
    status = ocsp.verify_response(der, cert=env.cert, issuer=env.issuer, at=now, nonce=nonce)
    assert status.status == "good"
    assert status.next_update is not None and status.next_update > now + timedelta(hours=23)

    cli("pki", "revoke", env.pki, "--serial", env.serial, "--reason", "keyCompromise")
    der = _openssl_respond(env, request, "-ndays", "1")
    status = ocsp.verify_response(der, cert=env.cert, issuer=env.issuer, at=datetime.now(UTC), nonce=nonce)
    assert status.status == "revoked"
    assert status.revocation_reason == "keyCompromise"
    assert status.revocation_time is not None

    # A SHA-1 CertID request (openssl's default) through the same path.
    der = _openssl_respond(env, ocsp.build_request(env.cert, env.issuer, "sha1"))
    assert ocsp.verify_response(der, cert=env.cert, issuer=env.issuer, at=datetime.now(UTC)).status == "revoked"


def test_openssl_responses_rejected_with_their_codes(env: Env) -> None:
    request = ocsp.build_request(env.cert, env.issuer, "sha256")

    def code(der: bytes, at: datetime, **kwargs: object) -> str:
        with pytest.raises(OcspError) as info:
            ocsp.verify_response(der, cert=env.cert, issuer=env.issuer, at=at, **kwargs)  # type: ignore[arg-type]
        return info.value.code

    # Signed by the responder of another PKI: not authorised for our intermediate.
    other = env.tmp / "other-pki"
    cli("pki", "init", other)
    der = _openssl_respond(env, request, "-ndays", "1", signer=other)
    assert code(der, datetime.now(UTC)) == "ocsp.unauthorized_responder"

    # A response with a 1-minute nextUpdate.
    der = _openssl_respond(env, request, "-nmin", "1")
    now = datetime.now(UTC)
    assert ocsp.verify_response(der, cert=env.cert, issuer=env.issuer, at=now).is_good
    # Checked two hours later: thisUpdate is older than the 3600 s freshness.
    assert code(der, now + timedelta(hours=2)) == "ocsp.stale"
    # Checked four minutes earlier (the responder certificate is back-dated by five): thisUpdate
    # is in the future beyond the allowed skew.
    assert code(der, now - timedelta(minutes=4)) == "ocsp.future"
    assert code(der, now - timedelta(hours=1)) == "ocsp.unauthorized_responder"  # not yet valid
    # Checked five minutes later: still fresh, but past nextUpdate.
    assert code(der, now + timedelta(minutes=5)) == "ocsp.expired"
    # We asked for a nonce, the response (to a request without one) has none.
    assert code(der, now, nonce=b"expected") == "ocsp.nonce_mismatch"

    # A response about another certificate.
    write_csr(env.tmp / "other.csr", "gw-other.vdxp.test")
    cli("pki", "issue", env.pki, "--csr", env.tmp / "other.csr", "--profile", "sign", "--out", env.tmp / "other.pem")
    other_cert = x509.load_pem_x509_certificate((env.tmp / "other.pem").read_bytes())
    der = _openssl_respond(env, ocsp.build_request(other_cert, env.issuer), "-ndays", "1")
    assert code(der, datetime.now(UTC)) == "ocsp.cert_mismatch"

    # A CertID of a CA openssl does not serve: openssl answers "unknown" for *that* CertID,
    # which is not a statement about our certificate.
    foreign = x509.load_pem_x509_certificate((other / "intermediate.pem").read_bytes())
    der = _openssl_respond(env, ocsp.build_request(env.cert, foreign))
    assert code(der, datetime.now(UTC)) == "ocsp.cert_mismatch"
