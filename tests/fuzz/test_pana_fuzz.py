"""PANA under hostile input: codec round trips, and random or mutated datagrams into both engines
end as counted drops (PanaDecodeError is the only exception the codec raises)."""

from __future__ import annotations

from functools import cache
from random import Random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import load_vector
from tests.unit.pana.pana_harness import (
    PAA_ADDR,
    PSK,
    RELAY_ADDR,
    World,
    make_backend,
    make_paa,
    make_pac,
    pac_addr,
)

from amistack.pana.avp import Avp
from amistack.pana.constants import AvpCode, MessageType
from amistack.pana.errors import PanaDecodeError
from amistack.pana.events import Authenticated, PingCompleted
from amistack.pana.message import PanaMessage
from amistack.pana.paa import PaaConfig, PaaState
from amistack.pana.pac import PacConfig, PacState
from amistack.pana.relay import decode_pac_information, wrap_relay

A1 = pac_addr(1)

avps = st.builds(
    Avp,
    code=st.integers(0, 0xFFFF),
    value=st.binary(max_size=64),
    vendor_id=st.none() | st.integers(0, 0xFFFFFFFF),
    reserved_flags=st.integers(0, 0x7FFF),
    reserved=st.integers(0, 0xFFFF),
)
messages = st.builds(
    PanaMessage,
    msg_type=st.integers(0, 0xFFFF),
    flags=st.integers(0, 0xFFFF),
    session_id=st.integers(0, 0xFFFFFFFF),
    seq=st.integers(0, 0xFFFFFFFF),
    avps=st.lists(avps, max_size=6).map(tuple),
    reserved=st.integers(0, 0xFFFF),
)


@given(messages)
def test_message_round_trip(msg: PanaMessage) -> None:
    raw = msg.encode()
    assert len(raw) % 4 == 0
    assert PanaMessage.decode(raw) == msg
    assert PanaMessage.decode(raw).encode() == raw


@given(avps)
def test_avp_round_trip(avp: Avp) -> None:
    assert Avp.decode(avp.encode()) == avp


def _decode_only_typed_error(data: bytes) -> None:
    try:
        PanaMessage.decode(data)
    except PanaDecodeError as exc:
        assert 0 <= exc.offset <= len(data) and exc.reason


@given(st.binary(max_size=300))
def test_random_bytes_decode(data: bytes) -> None:
    _decode_only_typed_error(data)


@cache
def _transcript() -> tuple[bytes, ...]:
    vec = load_vector("pana_openpana_transcript.json")
    return tuple(bytes.fromhex(f["hex"]) for f in vec["frames"])


def _mutate(frame: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(frame)
    for pos, val in edits:
        b[pos % len(b)] = val
    return bytes(b[:cut] if cut is not None else b)


mutations = st.tuples(
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=4),
    st.none() | st.integers(0, 120),
)


@given(st.integers(0, 14), mutations)
def test_mutated_transcript_decode(i: int, m: tuple[list[tuple[int, int]], int | None]) -> None:
    _decode_only_typed_error(_mutate(_transcript()[i], *m))


class _Established:
    """One authenticated PaC/PAA pair, shared by the engine fuzz examples below."""

    def __init__(self) -> None:
        self.w = World(make_paa())
        self.pac = self.w.add(A1, make_pac())
        self.pac.start(0.0)
        self.w.run_until(5)
        (self.ev,) = self.w.of(A1, Authenticated)
        self.frames = [d for _, _, d in self.w.wire]
        self.key = self.pac.auth_key

    def assert_unchanged(self) -> None:
        sid = self.ev.session_id
        assert self.pac.state is PacState.OPEN and self.pac.auth_key == self.key
        assert self.pac.context == self.ev.context
        assert self.w.paa.state_of(sid) is PaaState.OPEN
        assert self.w.paa.context(sid) == self.ev.context
        assert self.pac.counters["internal_error"] == 0
        assert self.w.paa.counters["internal_error"] == 0
        assert len(self.w.of(A1, Authenticated)) == 1


@cache
def _established() -> _Established:
    return _Established()


datagrams = st.binary(max_size=200) | st.tuples(st.integers(0, 1000), mutations).map(
    lambda t: _mutate(_established().frames[t[0] % len(_established().frames)], *t[1])
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(datagrams, min_size=1, max_size=5))
def test_engines_survive_hostile_datagrams(batch: list[bytes]) -> None:
    e = _established()
    for data in batch:
        e.pac.receive_datagram(data, PAA_ADDR, e.w.now)
        e.w.paa.receive_datagram(data, A1, e.w.now)
        e.w.paa.receive_datagram(data, ("203.0.113.9", 716), e.w.now)
    e.w.pump()  # whatever they answered (cached answers to duplicates) is delivered
    e.assert_unchanged()


def test_established_session_still_works_after_fuzz() -> None:
    e = _established()
    before = len(e.w.of(A1, PingCompleted))
    e.pac.ping(e.w.now)
    e.w.run_until(e.w.now + 1)
    assert len(e.w.of(A1, PingCompleted)) == before + 1
    e.assert_unchanged()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.floats(0.0, 0.6))
def test_lossy_network_converges_to_one_shared_key(rnd: Random, loss: float) -> None:
    """Any loss pattern for a minute (initial auth and re-auths inside it), then a clean network:
    the two ends end up in one OPEN session holding the same PANA SA, never two different ones."""
    backend = make_backend({b"meter-1": PSK}, lifetime_for=lambda peer: 40.0)
    w = World(make_paa(backend=backend))
    pac = w.add(A1, make_pac(config=PacConfig(reauth_fraction=0.5)))
    w.drop = lambda data, src, dst: w.now < 60 and rnd.random() < loss
    pac.start(0.0)
    for t in range(5, 400, 5):
        w.run_until(float(t))
        if pac.state is PacState.CLOSED:  # the application starts over
            pac.start(w.now)
        sid = pac.session_id
        if sid is not None and pac.state is PacState.OPEN and w.paa.state_of(sid) is PaaState.OPEN:
            assert w.paa.context(sid) == pac.context
    sid = pac.session_id
    assert sid is not None and pac.state is PacState.OPEN, (pac.state, pac.counters)
    assert w.paa.state_of(sid) is PaaState.OPEN and w.paa.context(sid) == pac.context
    assert pac.counters["internal_error"] == 0 == w.paa.counters["internal_error"]


@given(st.binary(max_size=40))
def test_pac_information_decodes_or_raises_the_typed_error(value: bytes) -> None:
    try:
        host, port = decode_pac_information(value)
    except PanaDecodeError:
        assert len(value) not in (6, 8, 18, 20)
    else:
        assert 0 <= port <= 0xFFFF and host


@settings(max_examples=300)
@given(st.binary(max_size=120), st.binary(max_size=40))
def test_a_configured_relay_cannot_break_the_paa(inner: bytes, info: bytes) -> None:
    """Hostile PRYs from an allowed relay (also past its PCI budget, where only the inner header
    is looked at): counted and dropped or answered, never an internal error."""
    paa = make_paa(config=PaaConfig(allowed_relays=frozenset({RELAY_ADDR[0]}), relay_pci_burst=1))
    pry = PanaMessage(
        MessageType.RELAY,
        0,
        0,
        0,
        (Avp(AvpCode.PAC_INFORMATION, info), Avp(AvpCode.RELAYED_MESSAGE, inner)),
    ).encode()
    pci = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    for data in (wrap_relay(A1, pci), pry, pry[:-3], wrap_relay(A1, pci), pry):
        paa.receive_datagram(data, RELAY_ADDR, 0.0)
    assert paa.counters["internal_error"] == 0
