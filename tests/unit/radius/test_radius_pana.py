"""PaC <-> PAA (RADIUS pass-through) <-> our RadiusEapServer, all sans-IO on a virtual clock."""

from __future__ import annotations

from radius_helpers import PEER, psk_methods, psk_peer

from amistack.crypto.rand import seeded_random
from amistack.eap.peer import EapPeer
from amistack.pana.events import Authenticated, AuthenticationFailed, PanaEvent
from amistack.pana.paa import PaaConfig, PanaAuthAgent
from amistack.pana.pac import PacConfig, PanaClient
from amistack.radius.client import RadiusPassthroughBackend
from amistack.radius.server import RadiusEapServer

PAC = ("2001:db8::2", 40001)
PAA = ("2001:db8::1", 716)
AAA = ("2001:db8::100", 1812)
SECRET = b"paa-to-aaa"


def run(
    psk: bytes | None = None, lifetime: float | None = 600.0
) -> tuple[list[PanaEvent], list[PanaEvent], EapPeer, RadiusEapServer]:
    server = RadiusEapServer(
        SECRET, psk_methods(seeded_random(1)), seeded_random(2), lifetime_for=lambda _: lifetime
    )
    backend = RadiusPassthroughBackend(AAA, SECRET, seeded_random(3))
    peers: list[EapPeer] = []

    def eap_factory() -> EapPeer:
        peer = psk_peer(seeded_random(4)) if psk is None else psk_peer(seeded_random(4), psk)
        peers.append(peer)
        return peer

    pac = PanaClient(PacConfig(), eap_factory, seeded_random(5), PAA)
    paa = PanaAuthAgent(PaaConfig(), backend, seeded_random(6))
    pac_events: list[PanaEvent] = []
    paa_events: list[PanaEvent] = []
    now = 0.0
    pac.start(now)
    for _ in range(200):
        for data, _addr in pac.datagrams_to_send(now):
            paa.receive_datagram(data, PAC, now)
        for data, _addr in paa.datagrams_to_send(now):
            pac.receive_datagram(data, PAA, now)
        for data, addr in backend.datagrams_to_send(now):
            assert addr == AAA
            answer = server.handle_datagram(data, ("2001:db8::1", 32000), now)
            if answer is not None:
                backend.receive_datagram(answer, AAA, now)
        while (item := backend.next_answer()) is not None:
            paa.aaa_answer(item[0], item[1], now)
        while (event := pac.next_event()) is not None:
            pac_events.append(event)
        while (event := paa.next_event()) is not None:
            paa_events.append(event)
        done = (Authenticated, AuthenticationFailed)
        if any(isinstance(e, done) for e in pac_events) and any(
            isinstance(e, done) for e in paa_events
        ):
            break
        now += 0.01
    return pac_events, paa_events, peers[-1], server


def test_pass_through_to_our_server() -> None:
    pac_events, paa_events, peer, server = run()
    pac_ok = [e for e in pac_events if isinstance(e, Authenticated)]
    paa_ok = [e for e in paa_events if isinstance(e, Authenticated)]
    assert pac_ok and paa_ok
    assert pac_ok[0].context.msk == paa_ok[0].context.msk == peer.msk
    assert paa_ok[0].peer_id == PEER
    assert paa_ok[0].lifetime == 600.0  # Session-Timeout from the RADIUS server
    assert server.counters["access_accept"] == 1


def test_pass_through_rejected() -> None:
    pac_events, paa_events, _, server = run(psk=bytes(16))
    assert any(isinstance(e, AuthenticationFailed) for e in pac_events)
    assert not any(isinstance(e, Authenticated) for e in pac_events + paa_events)
    assert server.counters["access_reject"] == 1
