"""The EAP layer: identities, Nak, Notification, duplicates, identifiers, Success/Failure rules.

A second method is needed for Nak flows; EAP-MD5-Challenge (RFC 3748 §5.4) is small enough to
write here against the public method interface, which is also the proof that a new method
plugs in without touching the EAP layer.
"""

from __future__ import annotations

import hashlib

import pytest

from amistack.crypto import seeded_random
from amistack.eap import (
    Decision,
    EapAuthenticator,
    EapCode,
    EapOutcome,
    EapPacket,
    EapPeer,
    EapPeerState,
    EapPskPeer,
    EapPskServer,
    EapType,
    MethodState,
    PeerMethod,
    ServerMethod,
    ServerMethodStep,
    ServerOutcome,
)

PSK = bytes(range(16))


class Md5Peer(PeerMethod):
    method_type = EapType.MD5_CHALLENGE

    def __init__(self, password: bytes) -> None:
        super().__init__()
        self.password = password

    def process(self, request: EapPacket) -> bytes | None:
        if not request.type_data or request.type_data[0] + 1 > len(request.type_data):
            return None
        challenge = request.type_data[1 : 1 + request.type_data[0]]
        digest = hashlib.md5(bytes([request.identifier]) + self.password + challenge).digest()
        self.state, self.decision = MethodState.DONE, Decision.COND_SUCC
        return bytes([16]) + digest


class Md5Server(ServerMethod):
    method_type = EapType.MD5_CHALLENGE

    def __init__(self, password: bytes) -> None:
        self.password = password
        self.challenge = b"\x11" * 16
        self.identifier = -1

    def initial_request(self, identity: bytes | None, identifier: int) -> bytes:
        self.identifier = identifier
        return bytes([len(self.challenge)]) + self.challenge

    def process(self, response: EapPacket, next_identifier: int) -> ServerMethodStep:
        want = hashlib.md5(bytes([self.identifier]) + self.password + self.challenge).digest()
        if response.type_data[1:] == want:
            return ServerMethodStep(ServerOutcome.SUCCESS)
        return ServerMethodStep(ServerOutcome.FAILURE, reason="wrong password")


def psk_server() -> EapPskServer:
    return EapPskServer(b"ks", lambda p: PSK if p == b"meter" else None, seeded_random(1))


def psk_peer() -> EapPskPeer:
    return EapPskPeer(b"meter", PSK, seeded_random(2))


def converse(peer: EapPeer, auth: EapAuthenticator) -> list[bytes]:
    """Run to the end; return every message sent, in order."""
    wire = [auth.start()]
    while True:
        resp = peer.receive(wire[-1])
        assert resp is not None, "peer went silent"
        wire.append(resp)
        step = auth.receive(resp)
        assert step.send is not None
        wire.append(step.send)
        if step.outcome is not EapOutcome.CONTINUE:
            assert peer.receive(step.send) is None
            return wire


def req(identifier: int, type_: int, data: bytes = b"") -> bytes:
    return EapPacket.request(identifier, type_, data).encode()


# -- peer -----------------------------------------------------------------------------------


def test_peer_answers_identity_and_notification() -> None:
    peer = EapPeer(b"meter-7", {})
    resp = peer.receive(req(3, EapType.IDENTITY, b"hello"))
    assert resp == EapPacket.response(3, EapType.IDENTITY, b"meter-7").encode()
    resp = peer.receive(req(4, EapType.NOTIFICATION, b"maintenance at 02:00"))
    assert resp == EapPacket.response(4, EapType.NOTIFICATION, b"").encode()
    assert peer.notifications == [b"maintenance at 02:00"]
    assert peer.state is EapPeerState.IDLE


def test_peer_naks_unknown_method_listing_ours_in_order() -> None:
    peer = EapPeer(b"m", {EapType.PSK: psk_peer, EapType.MD5_CHALLENGE: lambda: Md5Peer(b"x")})
    resp = peer.receive(req(9, EapType.TLS, b"\x20"))
    assert resp == EapPacket.response(9, EapType.NAK, bytes([47, 4])).encode()
    assert peer.counters["nak_sent"] == 1
    # expanded types we do not know get a legacy Nak (RFC 3748 §5.3.2)
    resp = peer.receive(req(10, EapType.EXPANDED, bytes(7)))
    assert resp is not None and EapPacket.decode(resp).type == EapType.NAK


def test_peer_without_methods_naks_with_zero() -> None:
    resp = EapPeer(b"m", {}).receive(req(1, EapType.PSK, bytes(17)))
    assert resp == EapPacket.response(1, EapType.NAK, b"\x00").encode()


def test_peer_retransmits_last_response_verbatim() -> None:
    peer = EapPeer(b"m", {EapType.PSK: psk_peer})
    first = peer.receive(req(1, EapType.PSK, bytes(17) + b"ks"))
    again = peer.receive(req(1, EapType.PSK, bytes(17) + b"ks"))
    assert first is not None and again == first
    assert peer.counters["retransmitted_response"] == 1


def test_peer_ignores_early_success_and_counts_it() -> None:
    peer = EapPeer(b"m", {EapType.PSK: psk_peer})
    peer.receive(req(1, EapType.IDENTITY))
    assert peer.receive(EapPacket.success(1).encode()) is None
    assert peer.state is EapPeerState.IDLE
    peer.receive(req(2, EapType.PSK, bytes(17) + b"ks"))
    peer.receive(EapPacket.success(2).encode())
    assert peer.state is EapPeerState.METHOD
    assert peer.counters["early_success"] == 2
    assert peer.msk is None


def test_peer_accepts_failure_with_matching_identifier_only() -> None:
    peer = EapPeer(b"m", {EapType.PSK: psk_peer})
    peer.receive(req(5, EapType.IDENTITY))
    peer.receive(EapPacket.failure(6).encode())
    assert peer.state is EapPeerState.IDLE
    assert peer.counters["failure_bad_identifier"] == 1
    peer.receive(EapPacket.failure(5).encode())
    assert peer.state is EapPeerState.FAILURE


def test_peer_drops_junk_and_never_raises() -> None:
    peer = EapPeer(b"m", {EapType.PSK: psk_peer})
    assert peer.receive(b"\x01") is None
    assert peer.receive(EapPacket.response(1, EapType.IDENTITY, b"x").encode()) is None
    assert peer.receive(req(1, EapType.NAK, b"\x04")) is None
    assert peer.receive(req(3, 0, b"")) is None
    assert peer.receive(req(2, EapType.PSK, b"\x00short")) is None  # malformed PSK message 1
    assert peer.counters["decode_error"] == 1
    assert peer.counters["unexpected_response"] == 1
    assert peer.counters["invalid_request_type"] == 2
    assert peer.counters["method_discarded"] == 1


def test_peer_sticks_to_the_chosen_method() -> None:
    peer = EapPeer(b"m", {EapType.PSK: psk_peer, EapType.MD5_CHALLENGE: lambda: Md5Peer(b"x")})
    assert peer.receive(req(1, EapType.PSK, bytes(17) + b"ks")) is not None
    assert peer.receive(req(2, EapType.MD5_CHALLENGE, b"\x01\x00")) is None
    assert peer.receive(req(3, EapType.IDENTITY)) is None
    assert peer.counters["request_for_other_method"] == 2


def test_peer_with_misconfigured_method_does_not_raise() -> None:
    peer = EapPeer(b"m", {EapType.PSK: lambda: EapPskPeer(b"m", b"short", seeded_random(0))})
    assert peer.receive(req(1, EapType.PSK, bytes(17))) is None
    assert peer.counters["method_init_error"] == 1


# -- authenticator --------------------------------------------------------------------------


def test_identifiers_wrap_mod_256() -> None:
    auth = EapAuthenticator([psk_server], seeded_random(0), first_identifier=255)
    assert auth.start()[1] == 255
    step = auth.receive(EapPacket.response(255, EapType.IDENTITY, b"meter").encode())
    assert step.send is not None and step.send[1] == 0


def test_random_first_identifier_comes_from_rng() -> None:
    ids = {EapAuthenticator([psk_server], seeded_random(s)).start()[1] for s in range(20)}
    assert len(ids) > 5
    assert EapAuthenticator([psk_server], lambda n: b"\x42").start()[1] == 0x42


def test_authenticator_drops_wrong_identifier_and_duplicates() -> None:
    auth = EapAuthenticator([psk_server], seeded_random(0), first_identifier=10)
    auth.start()
    ident = EapPacket.response(10, EapType.IDENTITY, b"meter").encode()
    stray = EapPacket.response(99, EapType.IDENTITY, b"meter").encode()
    step = auth.receive(stray)
    assert (step.send, step.outcome) == (None, EapOutcome.CONTINUE)
    assert auth.counters["identifier_mismatch"] == 1
    assert auth.receive(ident).send is not None
    assert auth.receive(ident).send is None
    assert auth.counters["duplicate_response"] == 1
    assert auth.receive(b"\x02\x0b").send is None
    assert auth.receive(EapPacket.request(11, EapType.IDENTITY).encode()).send is None
    assert auth.counters["decode_error"] == 1 and auth.counters["not_a_response"] == 1


def test_authenticator_needs_methods() -> None:
    with pytest.raises(ValueError):
        EapAuthenticator([], seeded_random(0))


def test_nak_moves_to_the_next_acceptable_method() -> None:
    auth = EapAuthenticator([psk_server, lambda: Md5Server(b"pw")], seeded_random(0), 1)
    peer = EapPeer(b"m", {EapType.MD5_CHALLENGE: lambda: Md5Peer(b"pw")})
    wire = converse(peer, auth)
    codes_types = [(EapPacket.decode(w).code, EapPacket.decode(w).type) for w in wire]
    assert codes_types == [
        (EapCode.REQUEST, EapType.IDENTITY),
        (EapCode.RESPONSE, EapType.IDENTITY),
        (EapCode.REQUEST, EapType.PSK),
        (EapCode.RESPONSE, EapType.NAK),
        (EapCode.REQUEST, EapType.MD5_CHALLENGE),
        (EapCode.RESPONSE, EapType.MD5_CHALLENGE),
        (EapCode.SUCCESS, None),
    ]
    assert auth.outcome is EapOutcome.SUCCESS
    assert peer.state is EapPeerState.SUCCESS


def test_skip_identity_opens_with_the_method_and_authenticates() -> None:
    """RFC 3748 §2: the Identity exchange may be bypassed; EAP-PSK names the peer (ID_P)."""
    auth = EapAuthenticator([psk_server], seeded_random(0), 1, skip_identity=True)
    peer = EapPeer(b"meter", {EapType.PSK: psk_peer})
    wire = converse(peer, auth)
    types = [EapPacket.decode(w).type for w in wire]
    assert types == [EapType.PSK] * 4 + [None]
    assert auth.outcome is EapOutcome.SUCCESS and auth.identity is None
    assert auth.method is not None and auth.method.peer_id == b"meter"
    again = EapAuthenticator([psk_server], seeded_random(0), 1, skip_identity=True)
    assert again.start() == again.start()  # a repeated start gives the same request


def test_skip_identity_still_takes_a_nak() -> None:
    auth = EapAuthenticator(
        [psk_server, lambda: Md5Server(b"pw")], seeded_random(0), 1, skip_identity=True
    )
    peer = EapPeer(b"m", {EapType.MD5_CHALLENGE: lambda: Md5Peer(b"pw")})
    wire = converse(peer, auth)
    types = [EapPacket.decode(w).type for w in wire]
    assert types == [EapType.PSK, EapType.NAK, EapType.MD5_CHALLENGE, EapType.MD5_CHALLENGE, None]
    assert auth.outcome is EapOutcome.SUCCESS


def test_skip_identity_drops_an_identity_response_it_never_asked_for() -> None:
    auth = EapAuthenticator([psk_server], seeded_random(0), 1, skip_identity=True)
    first = EapPacket.decode(auth.start())
    forged = EapPacket.response(first.identifier, EapType.IDENTITY, b"meter").encode()
    step = auth.receive(forged)
    assert step.send is None and step.outcome is EapOutcome.CONTINUE
    assert auth.identity is None and auth.counters["unexpected_type"] == 1


def test_skip_identity_asks_for_it_when_no_method_takes_an_unknown_peer() -> None:
    class NamedOnly(Md5Server):
        def accepts(self, identity: bytes | None) -> bool:
            return identity is not None

    auth = EapAuthenticator([lambda: NamedOnly(b"pw")], seeded_random(0), 1, skip_identity=True)
    assert EapPacket.decode(auth.start()).type == EapType.IDENTITY


def test_nak_without_acceptable_method_fails() -> None:
    auth = EapAuthenticator([psk_server], seeded_random(0), 1)
    peer = EapPeer(b"m", {EapType.MD5_CHALLENGE: lambda: Md5Peer(b"pw")})
    wire = converse(peer, auth)
    assert EapPacket.decode(wire[-1]) == EapPacket.failure(2)
    assert auth.outcome is EapOutcome.FAILURE
    assert peer.state is EapPeerState.FAILURE


def test_nak_is_only_valid_for_a_proposed_method() -> None:
    auth = EapAuthenticator([psk_server, lambda: Md5Server(b"pw")], seeded_random(0), 1)
    peer = EapPeer(b"meter", {EapType.PSK: psk_peer})
    auth.start()
    step = auth.receive(peer.receive(auth.start()) or b"")
    step = auth.receive(peer.receive(step.send or b"") or b"")  # PSK message 2 -> message 3
    late_nak = EapPacket.response(3, EapType.NAK, bytes([4])).encode()
    assert auth.receive(late_nak).send is None
    assert auth.counters["unexpected_nak"] == 1


def test_md5_wrong_password_fails_with_reason() -> None:
    auth = EapAuthenticator([lambda: Md5Server(b"pw")], seeded_random(0), 1)
    peer = EapPeer(b"m", {EapType.MD5_CHALLENGE: lambda: Md5Peer(b"nope")})
    wire = converse(peer, auth)
    assert EapPacket.decode(wire[-1]).code is EapCode.FAILURE
    assert peer.state is EapPeerState.FAILURE


class CountPeer(PeerMethod):
    """A toy method that echoes a counter; the server wants `rounds` of them."""

    method_type = 254

    def process(self, request: EapPacket) -> bytes | None:
        self.decision = Decision.COND_SUCC if request.type_data == b"last" else Decision.FAIL
        return request.type_data


class CountServer(ServerMethod):
    method_type = 254

    def __init__(self, rounds: int) -> None:
        self.rounds, self.seen = rounds, 0

    def initial_request(self, identity: bytes | None, identifier: int) -> bytes:
        return b"0"

    def process(self, response: EapPacket, next_identifier: int) -> ServerMethodStep:
        self.seen += 1
        if self.seen == self.rounds:
            return ServerMethodStep(ServerOutcome.SUCCESS)
        last = self.seen == self.rounds - 1
        return ServerMethodStep(ServerOutcome.REQUEST, b"last" if last else str(self.seen).encode())


def test_conversation_longer_than_256_identifiers() -> None:
    auth = EapAuthenticator([lambda: CountServer(600)], seeded_random(0), first_identifier=7)
    peer = EapPeer(b"m", {254: CountPeer})
    wire = converse(peer, auth)
    assert auth.outcome is EapOutcome.SUCCESS and peer.state is EapPeerState.SUCCESS
    ids = [w[1] for w in wire[::2]]  # the authenticator's packets
    assert ids[:3] == [7, 8, 9] and ids[249:251] == [0, 1]
    assert auth.counters["duplicate_response"] == 0
