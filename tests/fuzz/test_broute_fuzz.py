"""B-route link frames under hostile input: the decoder raises only LinkDecodeError, secured
frames round-trip, and random or mutated datagrams into a connected meter and HEMS end as
counted drops -- nothing reaches the ECHONET Lite node, nothing is delivered twice, the session
stays up."""

from __future__ import annotations

from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amistack.addr import Addr
from amistack.broute import (
    BrouteCredentials,
    BrouteHems,
    BrouteHemsConfig,
    BrouteMeter,
    LinkDecodeError,
    Received,
)
from amistack.broute.link import (
    MAX_FRAME_COUNTER,
    MAX_FRAME_LENGTH,
    PanaFrame,
    Plaintext,
    SecuredFrame,
    decode_frame,
    open_frame,
    seal,
)
from amistack.crypto import seeded_random
from amistack.echonet.frame import Eoj, Esv, Frame, Property
from amistack.echonet.node import EchonetNode
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.keymgmt.ukmf import KeyId
from amistack.meter.model import MeterConfig, MeterModel
from amistack.sim import LinkConfig, VirtualNetwork

METER: Addr = ("fe80::1", 716)
HEMS: Addr = ("fe80::2", 716)
CREDS = BrouteCredentials("00112233445566778899AABBCCDDEEFF", "0123456789AB")


def _only_typed_error(data: bytes) -> None:
    try:
        frame = decode_frame(data)
    except LinkDecodeError as exc:
        assert 0 <= exc.offset <= max(len(data), MAX_FRAME_LENGTH) and exc.reason
        return
    assert frame.encode() == data


@given(st.binary(max_size=120))
def test_random_bytes_decode_or_raise_the_typed_error(data: bytes) -> None:
    _only_typed_error(data)


_PANA = PanaFrame(b"", bytes(8)).encode()
_SECURED = seal(bytes(16), KeyId(1, 1), 0, bytes(8), Plaintext(1, 2, b""), bytes(8)).encode()
HEADS = [_PANA[:3], _PANA[:21], _SECURED[:21], _SECURED[:35], _PANA]


@given(st.sampled_from(HEADS), st.binary(max_size=80))
def test_frame_like_bytes_decode_or_raise_the_typed_error(head: bytes, rest: bytes) -> None:
    _only_typed_error(head + rest)


@given(
    key=st.binary(min_size=16, max_size=16),
    sid=st.integers(0, 0xFFFFFFFF),
    gen=st.integers(0, 0xFFFFFFFF),
    counter=st.integers(0, MAX_FRAME_COUNTER),
    source=st.binary(min_size=8, max_size=8),
    multicast=st.booleans(),
    ports=st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    payload=st.binary(max_size=64),
)
def test_secured_frames_round_trip(
    key: bytes,
    sid: int,
    gen: int,
    counter: int,
    source: bytes,
    multicast: bool,
    ports: tuple[int, int],
    payload: bytes,
) -> None:
    plain = Plaintext(ports[0], ports[1], payload, multicast)
    frame = seal(key, KeyId(sid, gen), counter, source, plain, bytes(7) + b"\x01")
    decoded = decode_frame(frame.encode())
    assert decoded == frame and isinstance(decoded, SecuredFrame)
    assert open_frame(decoded, key) == plain


class _Connected:
    """One authenticated meter/HEMS pair that has exchanged a Get, shared by the examples."""

    def __init__(self) -> None:
        self.net = VirtualNetwork(default_link=LinkConfig(latency=0.01), capture=100_000)
        model = MeterModel(3, MeterConfig(two_way=True))
        node = EchonetNode(NodeProfile([]), [SmartMeterObject(model)], seeded_random(3))
        self.meter = BrouteMeter(node, CREDS, seeded_random(4))
        # forged frames must not make the HEMS re-authenticate during the fuzz
        self.hems = BrouteHems(
            CREDS, METER, seeded_random(5), BrouteHemsConfig(decrypt_failures=10**9)
        )
        self.net.add_node(METER, self.meter)
        self.net.add_node(HEMS, self.hems)
        self.net.call_at(0.0, HEMS, self.hems.start)
        self.net.run_until(2.0)
        get = Frame(1, Eoj(5, 0xFF, 1), Eoj(2, 0x88, 1), Esv.GET, (Property(0xE7),))
        self.hems.send(get.encode(), 3610, 3610, self.net.now)
        self.net.service(HEMS)
        self.net.run_until(3.0)
        self.frames = [d for _, _, _, d in self.net.capture]
        self.node_rx = self.meter.node.counters["rx"]
        self.received = len(self.net.events_of(HEMS, Received))
        assert self.hems.connected and self.received >= 2 and self.node_rx == 1

    def assert_unchanged(self) -> None:
        assert self.meter.node.counters["rx"] == self.node_rx
        assert len(self.net.events_of(HEMS, Received)) == self.received
        assert self.hems.connected and len(self.meter.connected) == 1
        assert self.meter.paa.counters["internal_error"] == 0
        assert self.hems.pac is not None and self.hems.pac.counters["internal_error"] == 0


@cache
def _connected() -> _Connected:
    return _Connected()


def _mutate(frame: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(frame)
    for pos, val in edits:
        b[pos % len(b)] = val
    return bytes(b[:cut] if cut is not None else b)


mutations = st.tuples(
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=4),
    st.none() | st.integers(0, 120),
)
datagrams = (
    st.binary(max_size=120)
    | st.binary(max_size=120).map(lambda b: _SECURED[:35] + b)
    | st.binary(max_size=120).map(lambda b: PanaFrame(b, bytes(7) + b"\xbb").encode())
    | st.tuples(st.integers(0, 1000), mutations).map(
        lambda t: _mutate(_connected().frames[t[0] % len(_connected().frames)], *t[1])
    )
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(datagrams, min_size=1, max_size=5))
def test_engines_drop_hostile_datagrams_and_keep_the_link(batch: list[bytes]) -> None:
    c = _connected()
    for data in batch:
        c.net.inject(("fe80::bad", 716), METER, data)
        c.net.inject(METER, HEMS, data)  # (also as if from the meter's own address)
    c.net.run_until(c.net.now + 0.1)
    c.assert_unchanged()
