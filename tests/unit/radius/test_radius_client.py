"""RadiusPassthroughBackend against our RadiusEapServer, over a hand-driven virtual wire."""

from __future__ import annotations

import pytest
from radius_helpers import PEER, PSK, psk_methods, psk_peer

from amistack.crypto.rand import seeded_random
from amistack.eap.peer import EapPeer, EapPeerState
from amistack.pana.aaa import AaaAnswer, AaaOutcome
from amistack.radius.client import RadiusPassthroughBackend
from amistack.radius.packet import RadiusAttr, RadiusCode, RadiusPacket, build_reply
from amistack.radius.server import RadiusEapServer

SECRET = b"shared"
SERVER = ("192.0.2.1", 1812)
NAS = ("192.0.2.2", 50000)


def pump(backend: RadiusPassthroughBackend, server: RadiusEapServer, now: float) -> None:
    for data, addr in backend.datagrams_to_send(now):
        assert addr == SERVER
        answer = server.handle_datagram(data, NAS, now)
        if answer is not None:
            backend.receive_datagram(answer, SERVER, now)


def authenticate(
    backend: RadiusPassthroughBackend, server: RadiusEapServer, peer: EapPeer, sid: int = 0x1234
) -> AaaAnswer:
    now = 0.0
    answer = backend.begin(sid, now)
    pump(backend, server, now)
    for _ in range(12):
        if answer is None:
            item = backend.next_answer()
            assert item is not None and item[0] == sid
            answer = item[1]
        if answer.outcome is not AaaOutcome.CONTINUE:
            if answer.eap is not None:
                peer.receive(answer.eap)
            return answer
        assert answer.eap is not None
        response = peer.receive(answer.eap)
        assert response is not None
        answer = backend.process(sid, response, now)
        assert answer is None
        now += 0.01
        pump(backend, server, now)
    raise AssertionError("no outcome")


@pytest.mark.parametrize("local_identity", [True, False])
def test_success_msk_matches_peer(local_identity: bool) -> None:
    server = RadiusEapServer(
        SECRET, psk_methods(seeded_random(1)), seeded_random(2), lifetime_for=lambda _: 3600.0
    )
    backend = RadiusPassthroughBackend(
        SERVER, SECRET, seeded_random(4), local_identity_request=local_identity
    )
    peer = psk_peer(seeded_random(3))
    answer = authenticate(backend, server, peer)
    assert answer.outcome is AaaOutcome.SUCCESS
    assert peer.state is EapPeerState.SUCCESS
    assert answer.msk is not None and answer.msk == peer.msk and len(answer.msk) == 64
    assert answer.peer_id == PEER
    assert answer.lifetime == 3600.0
    assert backend.get_timer() is None


def test_wrong_psk_fails() -> None:
    server = RadiusEapServer(SECRET, psk_methods(seeded_random(1)), seeded_random(2))
    backend = RadiusPassthroughBackend(SERVER, SECRET, seeded_random(4))
    peer = psk_peer(seeded_random(3), psk=bytes(16))
    answer = authenticate(backend, server, peer)
    assert answer.outcome is AaaOutcome.FAILURE and answer.msk is None
    assert answer.eap is not None and answer.eap[0] == 4  # EAP-Failure passed on
    assert peer.state is EapPeerState.FAILURE


def test_request_attributes() -> None:
    backend = RadiusPassthroughBackend(
        SERVER,
        SECRET,
        seeded_random(4),
        nas_identifier=b"paa-7",
        calling_station_id=lambda sid: b"fe80::1",
    )
    backend.begin(9, 0.0)
    backend.process(9, b"\x02\x05\x00\x08\x01bob", 0.0)
    ((data, _addr),) = backend.datagrams_to_send(0.0)
    request = RadiusPacket.decode(data)
    assert request.code == RadiusCode.ACCESS_REQUEST
    assert request.first(RadiusAttr.USER_NAME) == b"bob"
    assert request.first(RadiusAttr.NAS_IDENTIFIER) == b"paa-7"
    assert request.first(RadiusAttr.CALLING_STATION_ID) == b"fe80::1"
    assert request.eap_message() == b"\x02\x05\x00\x08\x01bob"
    assert request.first(RadiusAttr.MESSAGE_AUTHENTICATOR) is not None


def test_retransmits_with_backoff_then_fails() -> None:
    backend = RadiusPassthroughBackend(
        SERVER, SECRET, seeded_random(4), initial_timeout=1.0, max_timeout=3.0, max_sends=4
    )
    backend.begin(1, 0.0)
    backend.process(1, b"\x02\x05\x00\x08\x01bob", 0.0)
    ((first, _),) = backend.datagrams_to_send(0.0)
    times = []
    while (timer := backend.get_timer()) is not None:
        times.append(timer)
        backend.handle_timer(timer)
        for data, _ in backend.datagrams_to_send(timer):
            assert data == first  # same Identifier and Request Authenticator (RFC 5080 §2.2.1)
    assert times == [1.0, 3.0, 6.0, 9.0]
    assert backend.counters["retransmit"] == 3
    item = backend.next_answer()
    assert item is not None and item[0] == 1 and item[1].outcome is AaaOutcome.FAILURE


def test_forged_or_unexpected_answers_are_dropped() -> None:
    server = RadiusEapServer(b"different", psk_methods(seeded_random(1)), seeded_random(2))
    backend = RadiusPassthroughBackend(SERVER, SECRET, seeded_random(4))
    backend.begin(1, 0.0)
    backend.process(1, b"\x02\x05\x00\x08\x01bob", 0.0)
    ((data, _),) = backend.datagrams_to_send(0.0)
    request = RadiusPacket.decode(data)
    forged = build_reply(RadiusCode.ACCESS_ACCEPT, request, [], b"different")
    backend.receive_datagram(forged, SERVER, 0.1)
    assert backend.counters["bad_authenticator"] == 1
    backend.receive_datagram(
        build_reply(RadiusCode.ACCESS_REJECT, request, [], SECRET), ("192.0.2.9", 1812), 0.1
    )
    assert backend.counters["unexpected_source"] == 1
    backend.receive_datagram(b"\x02\x00", SERVER, 0.1)
    assert backend.counters["decode_error"] == 1
    assert backend.next_answer() is None
    assert server.counters["requests"] == 0
    # The genuine answer still gets through afterwards.
    backend.receive_datagram(
        build_reply(RadiusCode.ACCESS_REJECT, request, [], SECRET), SERVER, 0.2
    )
    item = backend.next_answer()
    assert item is not None and item[1].outcome is AaaOutcome.FAILURE


def test_accept_without_keys_is_a_failure() -> None:
    backend = RadiusPassthroughBackend(SERVER, SECRET, seeded_random(4))
    backend.begin(1, 0.0)
    backend.process(1, b"\x02\x05\x00\x08\x01bob", 0.0)
    ((data, _),) = backend.datagrams_to_send(0.0)
    reply = build_reply(RadiusCode.ACCESS_ACCEPT, RadiusPacket.decode(data), [], SECRET)
    backend.receive_datagram(reply, SERVER, 0.1)
    item = backend.next_answer()
    assert item is not None and item[1].outcome is AaaOutcome.FAILURE
    assert backend.counters["accept_without_keys"] == 1


def test_end_cancels_the_outstanding_request() -> None:
    backend = RadiusPassthroughBackend(SERVER, SECRET, seeded_random(4))
    backend.begin(1, 0.0)
    backend.process(1, b"\x02\x05\x00\x08\x01bob", 0.0)
    ((data, _),) = backend.datagrams_to_send(0.0)
    backend.end(1)
    assert backend.get_timer() is None
    backend.receive_datagram(
        build_reply(RadiusCode.ACCESS_REJECT, RadiusPacket.decode(data), [], SECRET), SERVER, 0.1
    )
    assert backend.next_answer() is None
    assert backend.counters["unmatched_reply"] == 1


def test_identifiers_queue_past_256_outstanding() -> None:
    backend = RadiusPassthroughBackend(SERVER, SECRET, seeded_random(4))
    for sid in range(300):
        backend.begin(sid, 0.0)
        backend.process(sid, b"\x02\x05\x00\x08\x01bob", 0.0)
    sent = backend.datagrams_to_send(0.0)
    assert len(sent) == 256
    assert len({RadiusPacket.decode(d).identifier for d, _ in sent}) == 256
    first = RadiusPacket.decode(sent[0][0])
    backend.receive_datagram(build_reply(RadiusCode.ACCESS_REJECT, first, [], SECRET), SERVER, 1)
    assert len(backend.datagrams_to_send(1.0)) == 1  # a waiting request took the freed id
    assert PSK  # the shared helper constants stay importable
