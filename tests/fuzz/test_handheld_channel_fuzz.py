"""The handheld channel's decoders under hostile input: a frame stream, a hello and a welcome end
as frames or a ChannelError (the only exception they raise); frames round-trip however the
stream is cut; the work session engine drops any packet from the channel or the radio; the
area process's radio datagrams decode or are refused."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.access import Principal, Role
from amistack.crypto import seeded_random
from amistack.handheld import WAN_ADDR, HandheldConfig, WorkSession
from amistack.handheld.channel import MAX_PACKET, ChannelError, FrameDecoder, Hello, Welcome, frame
from amistack.runtime.handheld_area import decode_radio, encode_radio
from amistack.sim.handheld_area import AREA_PAN, AREA_PREFIX, handheld_eui, psk_peer


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000), cut=st.integers(0, 3000))
def test_fuzz_frame_stream_raises_only_channel_error(data: bytes, cut: int) -> None:
    dec = FrameDecoder()
    with contextlib.suppress(ChannelError):
        for f in dec.feed(data[:cut]) + dec.feed(data[cut:]):
            assert 0 < len(f) <= MAX_PACKET


@settings(max_examples=100, deadline=None)
@given(frames=st.lists(st.binary(min_size=1, max_size=MAX_PACKET), max_size=5), cut=st.integers())
def test_frames_round_trip_however_the_stream_is_cut(frames: list[bytes], cut: int) -> None:
    stream = b"".join(frame(f) for f in frames)
    at = cut % (len(stream) + 1)
    dec = FrameDecoder()
    assert dec.feed(stream[:at]) + dec.feed(stream[at:]) == frames


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzz_hello_and_welcome_raise_only_channel_error(data: bytes) -> None:
    for kind in (Hello, Welcome):
        with contextlib.suppress(ChannelError):
            kind.decode(data)


def test_hello_round_trip_and_refusals() -> None:
    hello = Hello("handheld-7", "tina", "WO-1")
    assert Hello.decode(hello.encode()) == hello
    for bad in (b'{"device": "x"}', b"[]", b'{"device":"a b","technician":"t","work_order":"w"}'):
        with contextlib.suppress(ChannelError):
            Hello.decode(bad)
            raise AssertionError(bad)


SESSION = WorkSession(
    HandheldConfig("handheld-7", handheld_eui(), AREA_PAN, AREA_PREFIX, ("2001:db8:ffff::1", 716)),
    Principal("tina", frozenset({Role.OPERATOR}), "session"),
    "WO-1",
    psk_peer("handheld-7", bytes(16), seeded_random(1)),
    seeded_random(2),
    0.0,
)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), wan=st.booleans())
def test_fuzz_the_work_session_drops_garbage(data: bytes, wan: bool) -> None:
    SESSION.receive_datagram(data, WAN_ADDR if wan else ("fe80::1", 0), 1.0)
    SESSION.datagrams_to_send(1.0)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_fuzz_radio_datagrams_decode_or_are_refused(data: bytes) -> None:
    got = decode_radio(data)
    if got is None:
        assert len(data) <= 16
    else:
        addr, frame_ = got
        assert encode_radio(addr, frame_) == data
