"""Provider address resolution (maintenance, securityServer header) and fastest-connecting selection."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

from gateway.config import RelayConfig
from gateway.relay.peers import Peers, provider_servers
from protocols.gconf.params import ClientId, SecurityServer, SharedParameters
from protocols.xroad.faults import XRoadFault

OWNER = ClientId("VN-TEST", "GOV", "000.00.00.G22")
PROVIDER = ClientId("VN-TEST", "GOV", "000.00.00.H41", "edoc")


def server(code: str, address: str, maintenance: bool = False) -> SecurityServer:
    return SecurityServer(owner=OWNER, server_code=code, address=address, auth_cert_hashes=(b"x" * 32,),
                          auth_cert_hash_algorithm="SHA-256", clients=(PROVIDER,), in_maintenance=maintenance,
                          maintenance_message="upgrade until 18:00" if maintenance else None)


def shared(*servers: SecurityServer) -> SharedParameters:
    return SharedParameters(version=6, instance="VN-TEST", sources=(), cas=(), tsas=(), members=(),
                            servers=servers, global_groups=(), member_classes=(), ocsp_freshness_seconds=3600)


def test_resolution_skips_maintenance_and_narrows() -> None:
    conf = shared(server("a", "127.0.0.3"), server("b", "127.0.0.4", maintenance=True), server("c", "127.0.0.5"))
    assert [s.server_code for s in provider_servers(conf, PROVIDER)] == ["a", "c"]
    assert [s.server_code for s in provider_servers(conf, PROVIDER, f"{OWNER}/c")] == ["c"]
    with pytest.raises(XRoadFault) as err:
        provider_servers(conf, PROVIDER, f"{OWNER}/zzz")
    assert err.value.faultcode() == "Server.ClientProxy.InvalidSecurityServer"
    with pytest.raises(XRoadFault) as err:
        provider_servers(conf, ClientId("VN-TEST", "GOV", "000.00.00.X"))
    assert err.value.faultcode() == "Server.ClientProxy.UnknownMember"
    with pytest.raises(XRoadFault) as err:
        provider_servers(shared(server("b", "127.0.0.4", maintenance=True)), PROVIDER)
    assert err.value.faultcode() == "Server.ClientProxy.MaintenanceMode"
    assert "upgrade until 18:00" in err.value.faultstring


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_twisted.ensureDeferred
async def test_fastest_connecting_server_wins_and_none_is_a_network_error() -> None:
    port = _free_port()
    conf = SimpleNamespace(check_valid=lambda: None)
    peers = Peers(reactor, RelayConfig(enabled=True, server_port=port, connect_timeout_seconds=2), conf)
    listening = await TCP4ServerEndpoint(reactor, port, interface="127.0.0.4").listen(Factory.forProtocol(Protocol))
    try:
        chosen = await peers.choose([server("dead", "127.0.0.3"), server("alive", "127.0.0.4")])
        assert chosen.server_code == "alive"
    finally:
        await listening.stopListening()
    with pytest.raises(XRoadFault) as err:
        await peers.choose([server("x", "127.0.0.6"), server("y", "127.0.0.7")])
    assert err.value.faultcode() == "Server.ClientProxy.NetworkError"
    await peers.close()
