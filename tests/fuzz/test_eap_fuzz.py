"""Untrusted bytes into the EAP codec and engines: only EapDecodeError escapes the codec, and
the engines never raise, in every state of a conversation."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.crypto import seeded_random
from amistack.eap import (
    EapAuthenticator,
    EapCode,
    EapDecodeError,
    EapPacket,
    EapPeer,
    EapPskPeer,
    EapPskServer,
    EapStep,
    EapType,
)

PSK = bytes(range(16))


def make_peer() -> EapPeer:
    return EapPeer(b"m", {EapType.PSK: lambda: EapPskPeer(b"m", PSK, seeded_random(1))})


def make_auth() -> EapAuthenticator:
    rng = seeded_random(2)
    return EapAuthenticator([lambda: EapPskServer(b"s", {b"m": PSK}.get, rng)], rng, 0)


def eap_like() -> st.SearchStrategy[bytes]:
    """Bytes that often get past the EAP header, so the method parsers are reached too."""
    structured = st.builds(
        lambda code, ident, type_, body: EapPacket(code, ident, type_, body).encode(),
        st.sampled_from([EapCode.REQUEST, EapCode.RESPONSE]),
        st.integers(0, 3),
        st.sampled_from([1, 2, 3, 4, 47, 254, 0, 255]),
        st.binary(max_size=120),
    )
    return st.one_of(st.binary(max_size=200), structured)


@given(st.binary(max_size=300))
def test_decode_raises_only_eap_decode_error(data: bytes) -> None:
    try:
        packet = EapPacket.decode(data)
    except EapDecodeError as exc:
        assert 0 <= exc.offset <= max(len(data), 4) and exc.reason
    else:
        assert data.startswith(packet.encode())


@settings(max_examples=300)
@given(st.lists(eap_like(), max_size=6))
def test_peer_never_raises(inputs: list[bytes]) -> None:
    peer = make_peer()
    for data in inputs:
        out = peer.receive(data)
        assert out is None or EapPacket.decode(out).code is EapCode.RESPONSE


@settings(max_examples=300)
@given(st.lists(eap_like(), max_size=6))
def test_peer_mid_conversation_never_raises(inputs: list[bytes]) -> None:
    peer, auth = make_peer(), make_auth()
    first = auth.receive(peer.receive(auth.start()) or b"").send or b""
    peer.receive(first)  # the peer now waits for message 3
    for data in inputs:
        out = peer.receive(data)
        assert out is None or EapPacket.decode(out).code is EapCode.RESPONSE
    assert peer.state.value in ("method", "failure")


@settings(max_examples=300)
@given(st.lists(eap_like(), max_size=6), st.integers(0, 2))
def test_authenticator_never_raises(inputs: list[bytes], depth: int) -> None:
    peer, auth = make_peer(), make_auth()
    send = auth.start()
    for _ in range(depth):  # advance to a later state before the junk arrives
        send = auth.receive(peer.receive(send) or b"").send or b""
    for data in inputs:
        step = auth.receive(data)
        assert isinstance(step, EapStep)
        assert step.send is None or EapPacket.decode(step.send).code is not EapCode.RESPONSE
