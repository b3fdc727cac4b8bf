"""Random and signed-but-hostile datagrams into the RADIUS server and client: only counted drops.

Signed inputs matter: without a valid Message-Authenticator everything stops at the first check,
so half of these strategies sign their garbage with the right secret to reach the deeper code.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amistack.crypto.rand import seeded_random
from amistack.eap.psk import EapPskServer
from amistack.radius.client import RadiusPassthroughBackend
from amistack.radius.packet import (
    VENDOR_MICROSOFT,
    AttrKey,
    MsAttr,
    RadiusAttr,
    RadiusCode,
    RadiusDecodeError,
    RadiusPacket,
    build_reply,
    build_request,
)
from amistack.radius.server import RadiusEapServer

SECRET = b"fuzz"
SERVER = ("127.0.0.1", 1812)
NAS = ("127.0.0.1", 5000)
PSK = bytes(range(16))

fast = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

attr_key = st.one_of(
    st.sampled_from([int(a) for a in RadiusAttr if a != RadiusAttr.MESSAGE_AUTHENTICATOR]),
    st.integers(1, 255).filter(lambda t: t not in (26, 80)),
    st.sampled_from(
        [
            (VENDOR_MICROSOFT, int(MsAttr.MS_MPPE_SEND_KEY)),
            (VENDOR_MICROSOFT, int(MsAttr.MS_MPPE_RECV_KEY)),
        ]
    ),
)
attributes = st.lists(st.tuples(attr_key, st.binary(max_size=60)), max_size=10)


def make_server() -> RadiusEapServer:
    rng = seeded_random(1)
    return RadiusEapServer(
        SECRET, lambda: [lambda: EapPskServer(b"ks", {b"p": PSK}.get, rng)], seeded_random(2)
    )


@fast
@given(st.binary(max_size=600))
def test_server_random_bytes(data: bytes) -> None:
    server = make_server()
    assert server.handle_datagram(data, NAS, 0.0) is None  # never signed: always dropped
    assert server.conversation_count == 0
    assert sum(server.counters.values()) == 1


@fast
@given(st.lists(st.tuples(attributes, st.integers(0, 255)), min_size=1, max_size=5))
def test_server_signed_garbage(requests: list[tuple[list[tuple[AttrKey, bytes]], int]]) -> None:
    server = make_server()
    for i, (attrs, ident) in enumerate(requests):
        raw = build_request(ident, bytes([i]) * 16, attrs, SECRET)
        answer = server.handle_datagram(raw, NAS, float(i))
        if answer is not None:
            assert RadiusPacket.decode(answer).code in (
                RadiusCode.ACCESS_CHALLENGE,
                RadiusCode.ACCESS_REJECT,
                RadiusCode.ACCESS_ACCEPT,
            )
        server.handle_timer(float(i))


def pending_backend() -> tuple[RadiusPassthroughBackend, RadiusPacket]:
    backend = RadiusPassthroughBackend(SERVER, SECRET, seeded_random(3))
    backend.begin(1, 0.0)
    backend.process(1, b"\x02\x01\x00\x06\x01p", 0.0)
    ((raw, _),) = backend.datagrams_to_send(0.0)
    return backend, RadiusPacket.decode(raw)


@fast
@given(st.binary(max_size=600))
def test_client_random_bytes(data: bytes) -> None:
    backend, _ = pending_backend()
    backend.receive_datagram(data, SERVER, 0.1)
    assert backend.next_answer() is None  # nothing unsigned is ever believed


@fast
@given(
    st.sampled_from(
        [RadiusCode.ACCESS_ACCEPT, RadiusCode.ACCESS_REJECT, RadiusCode.ACCESS_CHALLENGE]
    ),
    attributes,
)
def test_client_signed_garbage(code: RadiusCode, attrs: list[tuple[AttrKey, bytes]]) -> None:
    backend, request = pending_backend()
    backend.receive_datagram(build_reply(code, request, attrs, SECRET), SERVER, 0.1)
    item = backend.next_answer()
    if any(key == RadiusAttr.PROXY_STATE for key, _ in attrs):
        # A Proxy-State the request did not carry is the BlastRADIUS signature: dropped.
        assert item is None and backend.counters["bad_authenticator"] == 1
        return
    assert item is not None and item[0] == 1
    answer = item[1]
    assert answer.msk is None or len(answer.msk) == 64


@fast
@given(st.binary(max_size=300))
def test_decode_raises_only_its_error(data: bytes) -> None:
    try:
        packet = RadiusPacket.decode(data)
    except RadiusDecodeError as exc:
        assert 0 <= exc.offset <= len(data)
    else:
        assert RadiusPacket.decode(packet.encode()) == packet
