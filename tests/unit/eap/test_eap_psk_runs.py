"""Whole EAP-PSK conversations between our peer and authenticator, good and bad."""

from __future__ import annotations

import pytest

from amistack.crypto import RandomSource, seeded_random
from amistack.eap import (
    EapAuthenticator,
    EapCode,
    EapOutcome,
    EapPacket,
    EapPeer,
    EapPeerState,
    EapPskPeer,
    EapPskServer,
    EapStep,
    EapType,
    derive_ak_kdk,
    derive_tek_msk_emsk,
)
from amistack.eap.method import request_header, response_header
from amistack.eap.psk import (
    PskFourth,
    PskKeys,
    PskSecond,
    PskThird,
    ResultFlag,
    compute_mac_s,
    seal_pchannel,
)

PSK = bytes.fromhex("00112233445566778899aabbccddeeff")
RAND_P = bytes.fromhex("a0" * 16)
ID_S = b"keyserver"


class Rig:
    """One peer and one authenticator, messages passed by hand so tests can tamper."""

    def __init__(
        self,
        id_p: bytes = b"meter-1",
        peer_psk: bytes = PSK,
        known: dict[bytes, bytes] | None = None,
    ) -> None:
        known = {b"meter-1": PSK} if known is None else known
        self.peer = EapPeer(
            id_p, {EapType.PSK: lambda: EapPskPeer(id_p, peer_psk, lambda n: RAND_P)}
        )
        rng: RandomSource = seeded_random(7)
        self.auth = EapAuthenticator([lambda: EapPskServer(ID_S, known.get, rng)], rng, 40)

    def to_message_3(self) -> tuple[bytes, bytes]:
        """Run to the server's message 3; return (message 2, message 3)."""
        resp = self.peer.receive(self.auth.start())
        assert resp is not None
        first = self.auth.receive(resp).send
        assert first is not None
        second = self.peer.receive(first)
        assert second is not None
        third = self.auth.receive(second).send
        assert third is not None
        return second, third

    def finish(self, third: bytes) -> EapStep | None:
        fourth = self.peer.receive(third)
        if fourth is None:
            return None
        step = self.auth.receive(fourth)
        if step.send is not None:
            self.peer.receive(step.send)
        return step


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_success_both_sides_agree_on_keys() -> None:
    rig = Rig()
    _, third = rig.to_message_3()
    step = rig.finish(third)
    assert step is not None and step.outcome is EapOutcome.SUCCESS
    assert rig.peer.state is EapPeerState.SUCCESS
    assert step.msk == rig.peer.msk and step.msk is not None and len(step.msk) == 64
    assert step.emsk == rig.peer.emsk and step.emsk is not None and step.emsk != step.msk
    assert step.session_id == rig.peer.session_id
    assert step.session_id is not None and step.session_id[:17] == b"\x2f" + RAND_P
    assert step.peer_id == b"meter-1"


def test_wrong_psk_fails_on_both_sides() -> None:
    rig = Rig(peer_psk=bytes(16))
    resp = rig.peer.receive(rig.auth.start())
    first = rig.auth.receive(resp or b"").send
    step = rig.auth.receive(rig.peer.receive(first or b"") or b"")
    assert step.outcome is EapOutcome.FAILURE and step.reason == "mac_p_mismatch"
    assert step.send is not None and EapPacket.decode(step.send).code is EapCode.FAILURE
    assert step.msk is None
    rig.peer.receive(step.send)
    assert rig.peer.state is EapPeerState.FAILURE and rig.peer.msk is None


def test_unknown_peer_fails() -> None:
    rig = Rig(id_p=b"stranger")
    resp = rig.peer.receive(rig.auth.start())
    first = rig.auth.receive(resp or b"").send
    step = rig.auth.receive(rig.peer.receive(first or b"") or b"")
    assert step.outcome is EapOutcome.FAILURE and step.reason == "unknown_peer"
    assert step.peer_id == b"stranger"
    rig.peer.receive(step.send or b"")
    assert rig.peer.state is EapPeerState.FAILURE


def test_tampered_mac_s_fails_the_peer() -> None:
    rig = Rig()
    _, third = rig.to_message_3()
    mac_s_at = 5 + 1 + 16
    assert rig.peer.receive(flip(third, mac_s_at + 3)) is None
    assert rig.peer.state is EapPeerState.FAILURE
    assert rig.peer.failure_reason == "mac_s_mismatch"
    assert rig.peer.receive(third) is None  # the genuine one is too late now
    assert rig.peer.msk is None


def test_tampered_pchannel_from_server_fails_the_peer() -> None:
    rig = Rig()
    _, third = rig.to_message_3()
    assert rig.peer.receive(flip(third, len(third) - 1)) is None
    assert rig.peer.failure_reason == "pchannel_auth"
    assert rig.peer.state is EapPeerState.FAILURE


def test_tampered_header_breaks_the_pchannel() -> None:
    """The EAX header covers the EAP header: a changed identifier is caught."""
    rig = Rig()
    _, third = rig.to_message_3()
    p = EapPacket.decode(third)
    forged = EapPacket(p.code, (p.identifier + 1) % 256, p.type, p.type_data).encode()
    assert rig.peer.receive(forged) is None
    assert rig.peer.failure_reason == "pchannel_auth"


def test_tampered_pchannel_from_peer_fails_the_server_peer_ignores_failure() -> None:
    rig = Rig()
    _, third = rig.to_message_3()
    fourth = rig.peer.receive(third)
    assert fourth is not None
    step = rig.auth.receive(flip(fourth, len(fourth) - 2))
    assert step.outcome is EapOutcome.FAILURE and step.reason == "pchannel_auth"
    # The peer has decided UNCOND_SUCC on a verified DONE_SUCCESS: EAP-Failure is ignored
    # (RFC 4137); the lower layer (PANA Result-Code) carries the verdict.
    rig.peer.receive(step.send or b"")
    assert rig.peer.counters["failure_after_uncond_success"] == 1
    assert rig.peer.state is EapPeerState.METHOD


def _keys() -> tuple[bytes, bytes]:
    ak, kdk = derive_ak_kdk(PSK)
    return ak, derive_tek_msk_emsk(kdk, RAND_P)[0]


def _third(identifier: int, rand_s: bytes, nonce: int, result: ResultFlag) -> bytes:
    ak, tek = _keys()
    body_len = 1 + 16 + 16 + 4 + 16 + 1
    header = request_header(identifier, EapType.PSK, body_len) + b"\x80" + rand_s
    pchannel = seal_pchannel(tek, nonce, header, result)
    msg = PskThird(rand_s, compute_mac_s(ak, ID_S, RAND_P), pchannel)
    return EapPacket.request(identifier, EapType.PSK, msg.encode()).encode()


def test_our_crafted_third_message_equals_the_servers() -> None:
    rig = Rig()
    second, third = rig.to_message_3()
    rand_s = PskSecond.decode(EapPacket.decode(second).type_data).rand_s
    assert _third(third[1], rand_s, 0, ResultFlag.DONE_SUCCESS) == third


def test_wrong_nonce_from_server_fails_the_peer() -> None:
    rig = Rig()
    second, third = rig.to_message_3()
    rand_s = PskSecond.decode(EapPacket.decode(second).type_data).rand_s
    assert rig.peer.receive(_third(third[1], rand_s, 5, ResultFlag.DONE_SUCCESS)) is None
    assert rig.peer.failure_reason == "bad_nonce"


def test_wrong_nonce_from_peer_fails_the_server() -> None:
    rig = Rig()
    second, third = rig.to_message_3()
    rand_s = PskSecond.decode(EapPacket.decode(second).type_data).rand_s
    _, tek = _keys()
    body_len = 1 + 16 + 4 + 16 + 1
    header = response_header(third[1], EapType.PSK, body_len) + b"\xc0" + rand_s
    pchannel = seal_pchannel(tek, 2, header, ResultFlag.DONE_SUCCESS)
    fourth = EapPacket.response(third[1], EapType.PSK, PskFourth(rand_s, pchannel).encode())
    step = rig.auth.receive(fourth.encode())
    assert step.outcome is EapOutcome.FAILURE and step.reason == "bad_nonce"


def test_server_done_failure_is_answered_and_ends_in_failure() -> None:
    rig = Rig()
    second, third = rig.to_message_3()
    rand_s = PskSecond.decode(EapPacket.decode(second).type_data).rand_s
    fourth = rig.peer.receive(_third(third[1], rand_s, 0, ResultFlag.DONE_FAILURE))
    assert fourth is not None
    step = rig.auth.receive(fourth)  # the server did send DONE_SUCCESS, but the peer refuses
    assert step.outcome is EapOutcome.FAILURE and step.reason == "peer_done_failure"
    rig.peer.receive(step.send or b"")
    assert rig.peer.state is EapPeerState.FAILURE and rig.peer.msk is None


def test_unsupported_extension_is_refused() -> None:
    rig = Rig()
    second, third = rig.to_message_3()
    rand_s = PskSecond.decode(EapPacket.decode(second).type_data).rand_s
    fourth = rig.peer.receive(_third(third[1], rand_s, 0, ResultFlag.CONT))
    assert fourth is not None
    assert rig.auth.receive(fourth).reason == "peer_done_failure"


def test_duplicates_on_both_sides() -> None:
    rig = Rig()
    second, third = rig.to_message_3()
    # a late copy of message 2 reaches the server: dropped, nothing changes
    assert rig.auth.receive(second).send is None
    assert rig.auth.counters["duplicate_response"] == 1
    fourth = rig.peer.receive(third)
    # the server retransmits message 3 (our answer was lost): the same message 4 comes back
    assert rig.peer.receive(third) == fourth
    step = rig.auth.receive(fourth or b"")
    assert step.outcome is EapOutcome.SUCCESS
    assert rig.auth.receive(fourth or b"").send is None  # and a duplicate after the end
    rig.peer.receive(step.send or b"")
    rig.peer.receive(step.send or b"")
    assert rig.peer.state is EapPeerState.SUCCESS
    assert rig.peer.counters["duplicate_success"] == 1


def test_malformed_and_stale_messages_are_discarded_not_fatal() -> None:
    rig = Rig()
    _, third = rig.to_message_3()
    p = EapPacket.decode(third)
    short = EapPacket(p.code, p.identifier, p.type, p.type_data[:30]).encode()
    stale = EapPacket(p.code, p.identifier, p.type, b"\x80" + bytes(16) + p.type_data[17:])
    assert rig.peer.receive(short) is None
    assert rig.peer.receive(stale.encode()) is None
    assert rig.peer.state is EapPeerState.METHOD
    step = rig.finish(third)
    assert step is not None and step.outcome is EapOutcome.SUCCESS
    assert rig.peer.counters["method_discarded"] == 2


def test_server_ignores_foreign_rand_s() -> None:
    rng = seeded_random(3)
    auth = EapAuthenticator([lambda: EapPskServer(ID_S, {b"m": PSK}.get, rng)], rng, 1)
    peer = EapPeer(b"m", {EapType.PSK: lambda: EapPskPeer(b"m", PSK, seeded_random(4))})
    first = auth.receive(peer.receive(auth.start()) or b"").send or b""
    second = EapPacket.decode(peer.receive(first) or b"")
    foreign = b"\x40" + bytes(16) + second.type_data[17:]
    step = auth.receive(EapPacket.response(second.identifier, EapType.PSK, foreign).encode())
    assert step.send is None and "rand_s_mismatch" in step.reason
    assert auth.receive(second.encode()).send is not None  # the genuine one still works


def _run_with(peer_psk: bytes | PskKeys, server_psk: bytes | PskKeys) -> tuple[EapStep, EapPeer]:
    rng = seeded_random(5)
    auth = EapAuthenticator([lambda: EapPskServer(ID_S, {b"m": server_psk}.get, rng)], rng, 1)
    peer = EapPeer(b"m", {EapType.PSK: lambda: EapPskPeer(b"m", peer_psk, lambda n: RAND_P)})
    step = auth.receive(peer.receive(auth.start()) or b"")
    while step.send is not None and step.outcome is not EapOutcome.SUCCESS:
        answer = peer.receive(step.send)
        if answer is None:
            break
        step = auth.receive(answer)
    if step.send is not None:
        peer.receive(step.send)  # EAP-Success / Failure
    return step, peer


def test_pre_derived_keys_give_the_same_session_as_the_psk() -> None:
    plain, plain_peer = _run_with(PSK, PSK)
    keys = PskKeys(PSK)
    for peer_psk, server_psk in ((keys, PSK), (PSK, keys), (keys, keys)):
        step, peer = _run_with(peer_psk, server_psk)
        assert step.outcome is EapOutcome.SUCCESS
        assert step.msk == plain.msk == peer.msk == plain_peer.msk
        assert step.emsk == plain.emsk
    # one PskKeys serves many runs: it holds no per-run state
    again, _ = _run_with(keys, keys)
    assert again.outcome is EapOutcome.SUCCESS and again.msk == plain.msk


def test_pre_derived_keys_of_another_psk_fail_and_hide_their_bytes() -> None:
    other = PskKeys(bytes(range(16)))
    step, peer = _run_with(PSK, other)
    assert step.outcome is EapOutcome.FAILURE
    assert peer.msk is None
    assert repr(other) == "PskKeys(<secret>)"
    with pytest.raises(ValueError):
        PskKeys(bytes(15))
