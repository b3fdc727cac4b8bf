"""OUR EAP-PSK peer through OUR RadiusPassthroughBackend against hostapd as RADIUS server.

The backend plays the PAA's AAA side over a real UDP socket: it asks the identity itself, relays
each EAP message in an Access-Request, checks hostapd's authenticators and turns the
MS-MPPE-Recv/Send-Key of the Access-Accept into the MSK, which must equal our peer's.
"""

from __future__ import annotations

import socket
import time

import pytest
from tests.interop.conftest import HostapdRadius

from amistack.crypto.rand import system_random
from amistack.eap.packet import EapType
from amistack.eap.peer import EapPeer, EapPeerState
from amistack.eap.psk import EapPskPeer
from amistack.pana.aaa import AaaAnswer, AaaOutcome
from amistack.radius.client import RadiusPassthroughBackend

pytestmark = pytest.mark.interop

SESSION = 0x2A2A


class UdpBackendLoop:
    """A tiny runtime: moves the backend's datagrams over a socket and fires its timers."""

    def __init__(self, backend: RadiusPassthroughBackend) -> None:
        self.backend = backend
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def wait_answer(self, timeout: float = 10.0) -> tuple[int, AaaAnswer]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            for data, addr in self.backend.datagrams_to_send(now):
                self.sock.sendto(data, addr)
            item = self.backend.next_answer()
            if item is not None:
                return item
            timer = self.backend.get_timer()
            wait = max(0.001, min(0.2, (timer - now) if timer is not None else 0.2))
            self.sock.settimeout(wait)
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                self.backend.handle_timer(time.monotonic())
                continue
            self.backend.receive_datagram(data, (addr[0], addr[1]), time.monotonic())
        raise AssertionError("no answer from the RADIUS server")

    def close(self) -> None:
        self.sock.close()


def authenticate(hostapd: HostapdRadius, psk: bytes) -> tuple[AaaAnswer, EapPeer, dict[str, int]]:
    backend = RadiusPassthroughBackend(
        hostapd.addr, hostapd.secret, system_random, initial_timeout=0.5, max_sends=4
    )
    peer = EapPeer(
        hostapd.identity,
        {EapType.PSK: lambda: EapPskPeer(hostapd.identity, psk, system_random)},
    )
    loop = UdpBackendLoop(backend)
    try:
        answer = backend.begin(SESSION, time.monotonic())
        for _ in range(10):
            if answer is None:
                sid, answer = loop.wait_answer()
                assert sid == SESSION
            if answer.outcome is not AaaOutcome.CONTINUE:
                if answer.eap is not None:
                    peer.receive(answer.eap)
                return answer, peer, dict(backend.counters)
            assert answer.eap is not None
            response = peer.receive(answer.eap)
            assert response is not None, peer.counters
            answer = backend.process(SESSION, response, time.monotonic())
        raise AssertionError("no outcome after 10 rounds")
    finally:
        loop.close()


def test_our_peer_against_hostapd_same_msk(hostapd_radius: HostapdRadius) -> None:
    answer, peer, counters = authenticate(hostapd_radius, hostapd_radius.psk)
    assert answer.outcome is AaaOutcome.SUCCESS, (answer, hostapd_radius.log.read_text()[-3000:])
    assert peer.state is EapPeerState.SUCCESS
    assert answer.msk is not None and len(answer.msk) == 64
    assert answer.msk == peer.msk
    assert answer.peer_id == hostapd_radius.identity
    assert counters.get("bad_authenticator", 0) == 0
    assert counters["rx_access_accept"] == 1


def test_our_peer_wrong_psk_rejected_by_hostapd(hostapd_radius: HostapdRadius) -> None:
    answer, peer, counters = authenticate(hostapd_radius, bytes(16))
    assert answer.outcome is AaaOutcome.FAILURE
    assert answer.msk is None
    assert counters["rx_access_reject"] == 1
    assert peer.state is EapPeerState.FAILURE
