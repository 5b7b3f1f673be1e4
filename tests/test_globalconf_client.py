"""The configuration client on in-memory fakes: the central's resource behind treq's StubTreq and a
task.Clock, directories signed with a software key."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import CollectorRegistry
from treq.testing import StubTreq
from twisted.internet.task import Clock

from gateway.central import CentralResource, generation_name
from gateway.config import GlobalConfConfig
from gateway.globalconf.client import ConfClient, GlobalConfOutdated, _source_order
from hsm.softkey import SoftwareDigestSigner
from protocols.gconf import params as p
from protocols.gconf.anchor import AnchorSource, build_anchor
from protocols.gconf.directory import build_directory
from tests.pki_support import TestCa

INSTANCE = "VN-TEST"
START = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class World:
    """A central's output directory, written by hand, and a client pointed at it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca = TestCa()
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.cert = self.ca.issue(self.key.public_key(), "central")
        self.out = tmp / "out"
        self.clock = Clock()
        self.clock.advance(START.timestamp())
        anchor = tmp / "anchor.xml"
        anchor.write_bytes(build_anchor(INSTANCE, [AnchorSource("http://central.test/internalconf", (self.cert,))],
                                        START))
        self.settings = GlobalConfConfig(anchor=anchor, directory=tmp / "globalconf", interval_seconds=60,
                                         timeout_seconds=5, max_backoff_seconds=300)
        self.client = ConfClient(self.clock, self.settings, CollectorRegistry(),
                                 http=StubTreq(CentralResource(self.out)), own_instance=INSTANCE)

    def publish(self, members: int = 2, expiry: float = 600, tamper: str | None = None) -> None:
        now = datetime.fromtimestamp(self.clock.seconds(), UTC)
        name = generation_name(now)
        source = p.ConfigurationSource("central.test", (self.cert,), (self.cert,))
        shared = p.SharedParameters(
            version=6, instance=INSTANCE, sources=(source,), cas=(), tsas=(),
            members=tuple(p.Member(p.ClientId(INSTANCE, "GOV", f"000.00.00.H{i:02d}"), f"Agency {i}")
                          for i in range(members)),
            servers=(), global_groups=(), member_classes=(("GOV", "Government"),), ocsp_freshness_seconds=3600)
        private = p.PrivateParameters(version=6, instance=INSTANCE, anchors=(),
                                      management=p.ManagementService("http://central.test/m", None,
                                                                     p.ClientId(INSTANCE, "GOV", "000.00.00.H00",
                                                                                "management")),
                                      time_stamping_interval_seconds=60)
        shared_xml, private_xml = p.build_shared_params(shared), p.build_private_params(private)
        gen = self.out / "V6" / name
        gen.mkdir(parents=True)
        served_shared = shared_xml + b"<!-- tampered -->" if tamper == "file" else shared_xml
        (gen / "shared-params.xml").write_bytes(served_shared)
        (gen / "private-params.xml").write_bytes(private_xml)
        prepared = build_directory(expire_date=now + timedelta(seconds=expiry), version=6, files=[
            ("PRIVATE-PARAMETERS", INSTANCE, f"/V6/{name}/private-params.xml", private_xml),
            ("SHARED-PARAMETERS", INSTANCE, f"/V6/{name}/shared-params.xml", shared_xml)])
        signer = SoftwareDigestSigner(self.key)
        sig = signer.sign_digest_sync(hashlib.sha512(prepared.data_to_sign).digest(), "sha512")
        body, ctype = prepared.finish(signature_algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
                                      signature=sig, verification_cert=self.cert)
        if tamper == "signature":
            body = body.replace(b"Expire-date: ", b"Expire-date:  ", 1)
        if tamper == "garbage":
            body = b"\x00\xffnot a directory" * 100
        (self.out / "V6").mkdir(parents=True, exist_ok=True)
        (self.out / "V6" / "internalconf").write_bytes(body)
        (self.out / "V6" / "internalconf.content-type").write_bytes(ctype.encode())


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def poll(world: World) -> bool:
    d = world.client.poll()
    assert d.called, "the in-memory exchange should complete synchronously"
    result: list[bool] = []
    d.addCallback(result.append)
    return result[0]


def test_download_installs_and_is_valid(world: World) -> None:
    with pytest.raises(GlobalConfOutdated):
        world.client.check_valid()
    world.publish(members=2)
    assert poll(world) is True
    conf = world.client.check_valid()
    assert conf.own_instance == INSTANCE and len(conf.shared[INSTANCE].members) == 2
    assert world.client.health()[0] is True
    assert world.client.status.version == 6


@pytest.mark.parametrize(("tamper", "code"), [("signature", "gconf."), ("file", "gconf.hash_mismatch"),
                                               ("garbage", "gconf.")])
def test_bad_download_keeps_last_good_configuration(world: World, tamper: str, code: str) -> None:
    world.publish(members=2)
    assert poll(world)
    world.clock.advance(1)
    world.publish(members=5, tamper=tamper)
    assert poll(world) is False
    assert world.client.status.last_error is not None and code in world.client.status.last_error
    assert len(world.client.check_valid().shared[INSTANCE].members) == 2  # still the old one
    metric = world.client.metrics.downloads.collect()[0].samples
    assert any(s.labels.get("result", "").startswith("gconf.") and s.value >= 1 for s in metric)


def test_expiry_refuses_then_recovers(world: World) -> None:
    world.publish(expiry=600)
    assert poll(world)
    world.clock.advance(599)
    world.client.check_valid()
    world.clock.advance(2)
    with pytest.raises(GlobalConfOutdated) as err:
        world.client.check_valid()
    assert err.value.xroad_code == "OutdatedGlobalConf"
    ok, reason = world.client.health()
    assert not ok and "expired" in reason
    world.publish(expiry=600)
    assert poll(world)
    world.client.check_valid()


def test_failures_back_off_exponentially_up_to_the_maximum(world: World) -> None:
    world.settings.anchor.unlink()
    delays = []
    for _ in range(6):
        assert poll(world) is False
        delays.append(world.client._delay)
    assert delays == [120, 240, 300, 300, 300, 300]
    assert "gconf.anchor_missing" in (world.client.status.last_error or "")


def test_expired_directory_is_not_installed(world: World) -> None:
    world.publish(expiry=60)
    world.clock.advance(61)
    assert poll(world) is False
    assert "gconf.expired" in (world.client.status.last_error or "")
    assert world.client.installed is None


def test_https_sources_come_first() -> None:
    order = _source_order(["http://a/internalconf", "https://b/internalconf", "http://c/x", "https://d/x"])
    assert {order[0], order[1]} == {"https://b/internalconf", "https://d/x"}
    assert {order[2], order[3]} == {"http://a/internalconf", "http://c/x"}


# -- HTTPS sources: the server certificate is checked against the configured CA bundle ---------------


def _tls_server_cert(ca: TestCa, tmp: Path) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca.key, hashes.SHA256()))
    key_path, cert_path = tmp / "tls.key", tmp / "tls.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.mark.parametrize("trusted", [True, False])
@pytest_twisted.ensureDeferred
async def test_https_source_verified_against_ca_bundle(tmp_path: Path, trusted: bool) -> None:
    from cryptography.hazmat.primitives import serialization
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString
    from twisted.web.server import Site

    from gateway.globalconf.client import make_http_client

    world = World(tmp_path)
    world.clock = reactor  # real time for real sockets
    key_path, cert_path = _tls_server_cert(world.ca, tmp_path)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes((world.ca if trusted else TestCa("Other CA")).cert.public_bytes(serialization.Encoding.PEM))

    endpoint = serverFromString(reactor, f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}")
    port = await endpoint.listen(Site(CentralResource(world.out)))
    try:
        url = f"https://127.0.0.1:{port.getHost().port}/internalconf"
        world.settings.anchor.write_bytes(build_anchor(INSTANCE, [AnchorSource(url, (world.cert,))], START))
        world.publish()
        client = ConfClient(reactor, world.settings, CollectorRegistry(),
                            http=make_http_client(reactor, bundle), own_instance=INSTANCE)
        ok = await client.poll()
        assert ok is trusted, client.status.last_error
        if not trusted:
            assert "gconf.unreachable" in (client.status.last_error or "")
    finally:
        await port.stopListening()
