"""RadiusEapServer driven by hand-built Access-Requests and our EAP-PSK peer."""

from __future__ import annotations

import pytest
from radius_helpers import PEER, PSK, psk_methods, psk_peer

from amistack.crypto.rand import seeded_random
from amistack.eap.peer import EapPeerState
from amistack.radius.events import AccessAccepted, AccessRejected
from amistack.radius.mppe import mppe_decrypt
from amistack.radius.packet import (
    VENDOR_MICROSOFT,
    AttrKey,
    MsAttr,
    RadiusAttr,
    RadiusCode,
    RadiusPacket,
    build_request,
    eap_message_attributes,
    verify_reply,
)
from amistack.radius.server import RadiusEapServer

SECRET = b"s3cret"
NAS = ("127.0.0.1", 40000)


class Nas:
    """A minimal NAS: numbers requests, echoes State, checks every answer."""

    def __init__(self, secret: bytes = SECRET, seed: int = 7) -> None:
        self.secret = secret
        self.rng = seeded_random(seed)
        self.ident = 0
        self.state: bytes | None = None
        self.last_raw = b""

    def request(self, eap: bytes, extra: list[tuple[AttrKey, bytes]] | None = None) -> bytes:
        attrs: list[tuple[AttrKey, bytes]] = [(RadiusAttr.USER_NAME, PEER)]
        if self.state is not None:
            attrs.append((RadiusAttr.STATE, self.state))
        attrs += eap_message_attributes(eap) + (extra or [])
        self.ident = (self.ident + 1) & 0xFF
        self.last_raw = build_request(self.ident, self.rng(16), attrs, self.secret)
        return self.last_raw

    def check(self, answer: bytes | None) -> RadiusPacket:
        assert answer is not None
        packet = RadiusPacket.decode(answer)
        assert verify_reply(answer, packet, self.last_raw, self.secret)
        self.state = packet.first(RadiusAttr.STATE)
        return packet


def run(
    server: RadiusEapServer, nas: Nas, peer_psk: bytes = PSK, eap_start: bool = False
) -> tuple[RadiusPacket, object]:
    peer = psk_peer(seeded_random(3), peer_psk)
    now = 0.0
    if eap_start:
        answer = nas.check(server.handle_datagram(nas.request(b""), NAS, now))
        response = peer.receive(answer.eap_message() or b"")
    else:
        response = peer.receive(b"\x01\x2a\x00\x05\x01")  # the NAS's own Request/Identity
    for _ in range(10):
        assert response is not None
        now += 0.1
        answer = nas.check(server.handle_datagram(nas.request(response), NAS, now))
        eap = answer.eap_message()
        assert eap is not None
        response = peer.receive(eap)
        if answer.code != RadiusCode.ACCESS_CHALLENGE:
            return answer, peer
    raise AssertionError("no final answer")


@pytest.mark.parametrize("eap_start", [False, True])
def test_success_carries_the_msk(eap_start: bool) -> None:
    server = RadiusEapServer(SECRET, psk_methods(seeded_random(1)), seeded_random(2))
    nas = Nas()
    answer, peer = run(server, nas, eap_start=eap_start)
    assert answer.code == RadiusCode.ACCESS_ACCEPT
    assert peer.state is EapPeerState.SUCCESS  # type: ignore[attr-defined]
    auth = RadiusPacket.decode(nas.last_raw).authenticator
    recv = answer.first((VENDOR_MICROSOFT, MsAttr.MS_MPPE_RECV_KEY))
    send = answer.first((VENDOR_MICROSOFT, MsAttr.MS_MPPE_SEND_KEY))
    assert recv is not None and send is not None and recv[:2] != send[:2]
    msk = mppe_decrypt(recv, SECRET, auth) + mppe_decrypt(send, SECRET, auth)
    assert msk == peer.msk  # type: ignore[attr-defined]
    assert answer.first(RadiusAttr.USER_NAME) == PEER
    assert server.counters["access_accept"] == 1
    assert server.conversation_count == 0
    assert isinstance(server.next_event(), AccessAccepted)


def test_wrong_psk_is_rejected() -> None:
    server = RadiusEapServer(SECRET, psk_methods(seeded_random(1)), seeded_random(2))
    answer, _peer = run(server, Nas(), peer_psk=bytes(16))
    assert answer.code == RadiusCode.ACCESS_REJECT
    assert answer.eap_message() is not None and answer.eap_message()[0] == 4  # type: ignore[index]
    assert answer.first((VENDOR_MICROSOFT, MsAttr.MS_MPPE_RECV_KEY)) is None
    assert isinstance(server.next_event(), AccessRejected)


def test_unknown_peer_is_rejected() -> None:
    server = RadiusEapServer(SECRET, psk_methods(seeded_random(1), {}), seeded_random(2))
    answer, _ = run(server, Nas())
    assert answer.code == RadiusCode.ACCESS_REJECT


def test_duplicate_request_gets_the_cached_answer() -> None:
    server = RadiusEapServer(SECRET, psk_methods(seeded_random(1)), seeded_random(2))
    nas = Nas()
    peer = psk_peer(seeded_random(3))
    raw = nas.request(peer.receive(b"\x01\x2a\x00\x05\x01") or b"")
    first = server.handle_datagram(raw, NAS, 0.0)
    again = server.handle_datagram(raw, NAS, 1.0)
    assert first is not None and first == again
    assert server.counters["duplicate"] == 1
    assert server.conversation_count == 1
    # After the duplicate window the request is new again: a second conversation.
    server.handle_datagram(raw, NAS, 20.0)
    assert server.counters["duplicate"] == 1


def test_message_authenticator_is_required_and_checked() -> None:
    server = RadiusEapServer(SECRET, psk_methods(seeded_random(1)), seeded_random(2))
    eap = b"\x02\x2a\x00\x05\x01"
    unsigned = RadiusPacket(1, 1, bytes(16), tuple(eap_message_attributes(eap))).encode()
    assert server.handle_datagram(unsigned, NAS, 0.0) is None
    assert server.counters["missing_message_authenticator"] == 1
    wrong = Nas(secret=b"other").request(eap)
    assert server.handle_datagram(wrong, NAS, 0.0) is None
    assert server.counters["bad_message_authenticator"] == 1
    assert server.conversation_count == 0


def test_per_client_secrets() -> None:
    server = RadiusEapServer(
        None, psk_methods(seeded_random(1)), seeded_random(2), clients={"10.0.0.1": b"abc"}
    )
    eap = b"\x02\x2a\x00\x05\x01"
    assert server.handle_datagram(Nas(secret=b"abc").request(eap), NAS, 0.0) is None
    assert server.counters["unknown_client"] == 1
    nas = Nas(secret=b"abc")
    assert nas.check(server.handle_datagram(nas.request(eap), ("10.0.0.1", 1812), 0.0))


def test_unknown_state_rejected_and_garbage_dropped() -> None:
    server = RadiusEapServer(SECRET, psk_methods(seeded_random(1)), seeded_random(2))
    nas = Nas()
    nas.state = b"x" * 16
    answer = nas.check(server.handle_datagram(nas.request(b"\x02\x01\x00\x04"), NAS, 0.0))
    assert answer.code == RadiusCode.ACCESS_REJECT
    assert server.counters["unknown_state"] == 1
    assert server.handle_datagram(b"\x01\x00\x00", NAS, 0.0) is None
    assert server.counters["decode_error"] == 1
    no_eap = build_request(5, bytes(16), [(RadiusAttr.USER_NAME, b"u")], SECRET)
    reply = RadiusPacket.decode(server.handle_datagram(no_eap, NAS, 0.0) or b"")
    assert reply.code == RadiusCode.ACCESS_REJECT


def test_conversations_time_out_and_table_is_bounded() -> None:
    server = RadiusEapServer(
        SECRET,
        psk_methods(seeded_random(1)),
        seeded_random(2),
        max_conversations=2,
        conversation_timeout=5.0,
    )
    for seed in range(3):
        nas = Nas(seed=seed)
        server.handle_datagram(nas.request(b"\x02\x2a\x00\x05\x01"), NAS, 0.0)
    assert server.conversation_count == 2
    assert server.counters["conversation_table_full"] == 1
    timer = server.get_timer()
    assert timer is not None and timer == 5.0
    server.handle_timer(5.0)
    assert server.conversation_count == 0
    assert server.counters["conversation_timeout"] == 2


def test_engine_interface_queues_answers() -> None:
    server = RadiusEapServer(SECRET, psk_methods(seeded_random(1)), seeded_random(2))
    nas = Nas()
    server.receive_datagram(nas.request(b""), NAS, 0.0)
    out = server.datagrams_to_send(0.0)
    assert len(out) == 1 and out[0][1] == NAS
    assert nas.check(out[0][0]).code == RadiusCode.ACCESS_CHALLENGE
    assert server.datagrams_to_send(0.0) == []


def test_eap_message_reassembled_across_attributes() -> None:
    server = RadiusEapServer(SECRET, psk_methods(seeded_random(1)), seeded_random(2))
    identity = b"m" * 600  # the Response/Identity spans three EAP-Message attributes
    eap = bytes([2, 0x2A]) + (5 + len(identity)).to_bytes(2, "big") + b"\x01" + identity
    nas = Nas()
    raw = nas.request(eap)
    assert len(RadiusPacket.decode(raw).get(RadiusAttr.EAP_MESSAGE)) == 3
    answer = nas.check(server.handle_datagram(raw, NAS, 0.0))
    # Only a correctly reassembled Response/Identity moves the EAP layer on to EAP-PSK.
    assert answer.code == RadiusCode.ACCESS_CHALLENGE
    eap_request = answer.eap_message()
    assert eap_request is not None and eap_request[4] == 47 and eap_request[1] == 0x2B


def test_only_eap_start_or_a_response_opens_a_conversation() -> None:
    server = RadiusEapServer(SECRET, psk_methods(seeded_random(1)), seeded_random(2))
    nas = Nas()
    assert server.handle_datagram(nas.request(b"\x01\x01\x00\x05\x01"), NAS, 0.0) is None
    assert server.counters["unexpected_eap"] == 1
    assert server.conversation_count == 0
