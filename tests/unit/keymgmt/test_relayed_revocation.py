"""A lost handheld is revoked at the key server: the meters' sessions it relayed end too and
their keys are cut, so they re-authenticate by another path (`KeyServer.revoke`).

The real key server engine, real PaCs and a real RFC 6345 relay on the virtual clock. As the
handheld gateway forwards them (runtime/handheld_gateway.py), the handheld's own PaC and its
relay reach the key server from one UDP address (`Handheld` below). The key server remembers
which device relayed a session, so a handheld reported lost after its work session ended still
takes its relayed meters' sessions with it. A meter that authenticated directly is left alone,
and so are the relayed sessions when another device is revoked."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.keymgmt import test_key_server
from tests.unit.keymgmt.test_key_server import PAA, Net

from amistack.addr import Addr
from amistack.crypto import seeded_random
from amistack.eap import EapPeer, EapPskPeer, EapType
from amistack.keymgmt.server import KeyServer
from amistack.keymgmt.store import AuditKind, CredentialStore
from amistack.keymgmt.ukmf import C1222
from amistack.pana.constants import MessageType
from amistack.pana.events import Authenticated, SessionTerminated
from amistack.pana.message import PanaMessage
from amistack.pana.paa import PaaConfig
from amistack.pana.pac import PacConfig, PanaClient
from amistack.pana.relay import PanaRelay

store = test_key_server.store  # the fixture, shared (it enrolls other meters too)
GATEWAY: Addr = ("127.0.0.1", 41000)  # the gateway's one socket for this handheld
HANDHELD, M1, M2, OFFICE = b"handheld-7", b"field-meter-001", b"field-meter-002", b"office-1"
PSKS = {
    HANDHELD: bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
    M1: bytes.fromhex("11112222333344445555666677778888"),
    M2: bytes.fromhex("99990000aaaabbbbccccddddeeeeffff"),
    OFFICE: bytes.fromhex("00112233445566778899aabbccddeeff"),
}


class Device:
    """A PaC as `Net` drives it: `addr`, `pac` (the engine), `on_event`."""

    def __init__(self, name: bytes, addr: Addr, paa: Addr, seed: int) -> None:
        rng = seeded_random(seed)
        psk = PSKS[name]
        self.name, self.addr = name, addr
        self.pac: Any = PanaClient(
            PacConfig(),
            lambda: EapPeer(name, {EapType.PSK: lambda: EapPskPeer(name, psk, rng)}),
            rng,
            paa,
        )
        self.events: list[object] = []

    def on_event(self, ev: object, now: float) -> None:
        self.events.append(ev)


class Handheld(Device):
    """The handheld's PaC and its relay behind the one address the key server sees: PRYs from
    the key server go to the relay, its other PANA to the PaC, the meters' PANA to the relay."""

    def __init__(self) -> None:
        super().__init__(HANDHELD, GATEWAY, PAA, seed=9)
        self.own: PanaClient = self.pac
        self.relay = PanaRelay(PAA)
        self.pac = self

    def start(self, now: float) -> None:
        self.own.start(now)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if addr == PAA and PanaMessage.decode(data).msg_type != MessageType.RELAY:
            self.own.receive_datagram(data, addr, now)
        else:
            self.relay.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return self.own.datagrams_to_send(now) + self.relay.datagrams_to_send(now)

    def next_event(self) -> object | None:
        return self.own.next_event()

    def get_timer(self) -> float | None:
        return self.own.get_timer()

    def handle_timer(self, now: float) -> None:
        self.own.handle_timer(now)


def _field(store: CredentialStore) -> tuple[KeyServer, Net, Handheld]:
    """The handheld, two meters through it, one meter on its own: all authenticated."""
    for name, psk in PSKS.items():
        store.enroll(name, psk, now=0.0)
    config = PaaConfig(session_lifetime=600.0, allowed_relays=frozenset({GATEWAY[0]}))
    server = KeyServer(store, rng=seeded_random(1), paa_config=config, overlap=30.0, now=0.0)
    devices = [
        Handheld(),
        Device(M1, ("fe80::1", 716), GATEWAY, seed=2),
        Device(M2, ("fe80::2", 716), GATEWAY, seed=3),
        Device(OFFICE, ("198.51.100.9", 716), PAA, seed=4),
    ]
    net = Net(server, devices)  # type: ignore[arg-type]
    for d in devices:
        d.pac.start(0.0)
    net.run_until(5.0)
    assert sorted(e.peer_id for e in net.of(Authenticated)) == sorted(PSKS)
    return server, net, devices[0]  # type: ignore[return-value]


def _session(net: Net, peer: bytes) -> int:
    return next(e.session_id for e in net.of(Authenticated) if e.peer_id == peer)


@pytest.mark.parametrize("work_ended", [False, True])
def test_revoking_the_handheld_ends_the_sessions_it_relayed_and_cuts_their_keys(
    store: CredentialStore, work_ended: bool
) -> None:
    server, net, handheld = _field(store)
    relayed = {_session(net, M1), _session(net, M2)}
    keys = {m: server.current_key(m, C1222, net.now) for m in (M1, M2, OFFICE)}
    if work_ended:  # the work session ended (its PANA session too); lost on the way back
        handheld.own.terminate(net.now)
        net.run_until(net.now + 1.0)
        assert _session(net, HANDHELD) in {e.session_id for e in net.of(SessionTerminated)}
    result = server.revoke(HANDHELD, net.now, reason="reported lost")
    assert set(result.relayed_sessions) == relayed
    net.run_until(net.now + 1.0)
    ended = {e.session_id for e in net.of(SessionTerminated)}
    assert relayed | {_session(net, HANDHELD)} <= ended
    assert _session(net, OFFICE) not in ended  # a meter that did not come through it: untouched
    for m in (M1, M2):  # keys cut at the revocation, not left for the overlap window
        issued = keys[m]
        assert issued is not None
        assert server.key_for(issued.key_id, C1222, net.now) is None
        assert server.current_key(m, C1222, net.now) is None
        (entry,) = store.audit_log(kind=AuditKind.KEYS_SHORTENED, device_id=m)
        assert "relay b'handheld-7' revoked: reported lost" in entry.detail
    office = keys[OFFICE]
    assert office is not None and server.key_for(office.key_id, C1222, net.now) is not None
    assert server.counters["relayed_sessions_ended"] == 2


def test_revoking_another_device_leaves_the_relayed_sessions(store: CredentialStore) -> None:
    server, net, _ = _field(store)
    result = server.revoke(OFFICE, net.now)
    assert result.relayed_sessions == ()  # its own session was not a relay's address
    net.run_until(net.now + 1.0)
    for m in (M1, M2):
        assert server.current_key(m, C1222, net.now) is not None
    assert server.counters["relayed_sessions_ended"] == 0
