"""PaC <-> PAA (EAP pass-through) <-> hostapd as RADIUS EAP-PSK server.

The PANA engines talk over an in-memory wire (they are sans-IO; their UDP runtime has its own
tests); the PAA's RadiusPassthroughBackend talks to a real hostapd over loopback UDP. The PaC must
reach the open state with the MSK its EAP-PSK derived, and the PAA must hold the same MSK, which
it only learnt from hostapd's MS-MPPE keys.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping

import pytest
from tests.interop.conftest import HostapdRadius

from amistack.crypto.rand import system_random
from amistack.eap.method import PeerMethod
from amistack.eap.packet import EapType
from amistack.eap.peer import EapPeer
from amistack.eap.psk import EapPskPeer
from amistack.pana.events import Authenticated, AuthenticationFailed
from amistack.pana.paa import PaaConfig, PanaAuthAgent
from amistack.pana.pac import PacConfig, PanaClient
from amistack.radius.client import RadiusPassthroughBackend

pytestmark = pytest.mark.interop

PAC = ("127.0.0.1", 40001)
PAA = ("127.0.0.1", 716)


def run_pana(
    hostapd: HostapdRadius,
    psk: bytes,
    methods: Mapping[int, Callable[[], PeerMethod]] | None = None,
) -> tuple[list[object], list[object], EapPeer]:
    """One PANA run through the PAA to hostapd; `methods` replaces the EAP-PSK peer method."""
    backend = RadiusPassthroughBackend(
        hostapd.addr, hostapd.secret, system_random, initial_timeout=0.5
    )
    peers: list[EapPeer] = []

    def eap_factory() -> EapPeer:
        peer = EapPeer(
            hostapd.identity,
            methods or {EapType.PSK: lambda: EapPskPeer(hostapd.identity, psk, system_random)},
        )
        peers.append(peer)
        return peer

    pac = PanaClient(PacConfig(), eap_factory, system_random, PAA)
    paa = PanaAuthAgent(PaaConfig(), backend, system_random)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.01)
    pac_events: list[object] = []
    paa_events: list[object] = []
    try:
        pac.start(time.monotonic())
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            now = time.monotonic()
            for data, _ in pac.datagrams_to_send(now):
                paa.receive_datagram(data, PAC, now)
            for data, _ in paa.datagrams_to_send(now):
                pac.receive_datagram(data, PAA, now)
            for data, addr in backend.datagrams_to_send(now):
                sock.sendto(data, addr)
            while (item := backend.next_answer()) is not None:
                paa.aaa_answer(item[0], item[1], now)
            for engine in (pac, paa, backend):
                timer = engine.get_timer()
                if timer is not None and timer <= now:
                    engine.handle_timer(now)
            while (event := pac.next_event()) is not None:
                pac_events.append(event)
            while (event := paa.next_event()) is not None:
                paa_events.append(event)
            done = (Authenticated, AuthenticationFailed)
            if any(isinstance(e, done) for e in pac_events) and any(
                isinstance(e, done) for e in paa_events
            ):
                break
            try:
                data, addr = sock.recvfrom(4096)
            except TimeoutError:
                continue
            backend.receive_datagram(data, (addr[0], addr[1]), time.monotonic())
    finally:
        sock.close()
    assert peers
    return pac_events, paa_events, peers[-1]


def test_pac_authenticates_through_paa_and_hostapd(hostapd_radius: HostapdRadius) -> None:
    pac_events, paa_events, peer = run_pana(hostapd_radius, hostapd_radius.psk)
    pac_ok = [e for e in pac_events if isinstance(e, Authenticated)]
    paa_ok = [e for e in paa_events if isinstance(e, Authenticated)]
    assert pac_ok and paa_ok, (pac_events, paa_events, hostapd_radius.log.read_text()[-2000:])
    assert peer.msk is not None
    assert pac_ok[0].context.msk == peer.msk == paa_ok[0].context.msk
    assert pac_ok[0].session_id == paa_ok[0].session_id
    assert paa_ok[0].peer_id == hostapd_radius.identity


def test_wrong_psk_fails_on_both_sides(hostapd_radius: HostapdRadius) -> None:
    pac_events, paa_events, _ = run_pana(hostapd_radius, bytes(16))
    assert not any(isinstance(e, Authenticated) for e in pac_events + paa_events)
    assert any(isinstance(e, AuthenticationFailed) for e in pac_events)
