"""C12.19 table codecs, the procedure runner, segmentation and the replay window."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.c1222.c1222_harness import T0, FakeMeter

from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.segmentation import Reassembler, Segment, segment
from amistack.c1222.services import ResponseCode
from amistack.c1222.tables import (
    Clock,
    CurrentRegisters,
    GeneralConfig,
    Identification,
    Interval,
    LoadProfile,
    MeterTables,
    PackedIntervals,
    Procedure,
    ProcedureInitiate,
    ProcedureResponse,
    ProcedureResult,
    Table,
    decode_intervals,
    decode_ltime,
    encode_ltime,
    remote_switch,
)

times = st.integers(946_684_800, 7_000_000_000).map(float)  # 2000 .. 2191
i64 = st.integers(-(2**63), 2**63 - 1)
sets = st.frozensets(st.integers(0, 200), max_size=20)


@given(times)
def test_ltime_round_trip(t: float) -> None:
    assert decode_ltime(encode_ltime(t)) == t
    assert Clock.decode(Clock(t).encode()) == Clock(t)


@given(times)
def test_ltime_is_the_utc_calendar_second_each_time(t: float) -> None:
    d = datetime.datetime.fromtimestamp(int(t), datetime.UTC)  # encode_ltime keeps a memo
    want = bytes([d.year - 2000, d.month, d.day, d.hour, d.minute, d.second])
    assert encode_ltime(t) == encode_ltime(t + 0.5) == want


def test_ltime_rejects_invalid_dates() -> None:
    with pytest.raises(C1222DecodeError):
        decode_ltime(bytes([26, 2, 30, 0, 0, 0]))
    with pytest.raises(C1222DecodeError):
        decode_ltime(b"\x00")
    for t in (946_684_799.0, 9_100_000_000.0):  # before 2000, after 2255: every time
        for _ in range(2):
            with pytest.raises(ValueError):
                encode_ltime(t)


@given(
    st.builds(GeneralConfig, st.binary(min_size=4, max_size=4), sets, sets, sets, sets, sets, sets)
)
def test_st0_round_trip(cfg: GeneralConfig) -> None:
    assert GeneralConfig.decode(cfg.encode()) == cfg


@given(
    st.builds(
        Identification,
        st.binary(max_size=4).map(lambda b: b.replace(b" ", b"x")),
        st.binary(max_size=8).map(lambda b: b.replace(b" ", b"x")),
        st.binary(max_size=16).map(lambda b: b.replace(b" ", b"x")),
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(0, 255),
    )
)
def test_st1_round_trip(ident: Identification) -> None:
    assert len(ident.encode()) == 32
    assert Identification.decode(ident.encode()) == ident


@given(
    st.builds(
        CurrentRegisters,
        i64,
        i64,
        i64,
        i64,
        st.integers(0, 2**32 - 1),
        times,
        st.integers(0, 2**64 - 1),
        st.integers(0, 255),
        st.tuples(i64, i64, i64, i64, i64, i64),
    )
)
def test_st23_round_trip(regs: CurrentRegisters) -> None:
    assert len(regs.encode()) == CurrentRegisters.SIZE
    assert CurrentRegisters.decode(regs.encode()) == regs


@given(
    st.sampled_from([15, 30]),
    times,
    st.lists(st.builds(Interval, st.integers(0, 2**32 - 1), st.integers(0, 255)), max_size=50),
)
def test_load_profile_round_trip(minutes: int, end: float, ivs: list[Interval]) -> None:
    lp = LoadProfile(minutes, end, tuple(ivs))
    assert LoadProfile.decode(lp.encode()) == lp
    if ivs:
        assert lp.interval_start(len(ivs) - 1) == end - minutes * 60


@given(st.integers(0, 0xFFF), st.integers(0, 255), st.binary(max_size=20), st.integers(0, 15))
def test_st7_st8_round_trip(proc: int, seq: int, params: bytes, sel: int) -> None:
    init = ProcedureInitiate(proc, seq, params, sel)
    assert ProcedureInitiate.decode(init.encode()) == init
    resp = ProcedureResponse(proc, seq, ProcedureResult.COMPLETED, params)
    assert ProcedureResponse.decode(resp.encode()) == resp


def test_procedure_number_is_little_endian_with_mfg_bit() -> None:
    # what Wireshark shows as "MF-1" with c1222.big_endian FALSE (its default)
    assert remote_switch(1, True).encode()[:2] == b"\x01\x08"


def test_meter_tables_procedures_and_refusals() -> None:
    meter = FakeMeter()
    tables = MeterTables(meter)
    assert tables.read(Table.PROC_RESPONSE, T0, b"a") == ResponseCode.DNR
    assert tables.read(Table.PROC_INITIATE, T0) == ResponseCode.IAR
    assert tables.write(Table.PROC_INITIATE, 0, b"\x01", T0) == ResponseCode.ERR
    assert tables.write(Table.PROC_INITIATE, 3, b"\x01\x08\x00\x00", T0) == ResponseCode.IAR
    assert tables.write(Table.CLOCK, None, b"", T0) == ResponseCode.IAR
    assert tables.write(500, None, b"", T0) == ResponseCode.ONP
    bad = ProcedureInitiate(Procedure.REMOTE_SWITCH, 1, b"\x07")
    assert tables.write(Table.PROC_INITIATE, None, bad.encode(), T0, b"a") == ResponseCode.OK
    st8 = tables.read(Table.PROC_RESPONSE, T0, b"a")
    assert isinstance(st8, bytes)
    assert ProcedureResponse.decode(st8).result == ProcedureResult.INVALID_PARAMETER
    assert tables.read(Table.PROC_RESPONSE, T0, b"b") == ResponseCode.DNR  # per requester
    unknown = ProcedureInitiate(77, 2)
    tables.write(Table.PROC_INITIATE, None, unknown.encode(), T0, b"a")
    st8 = tables.read(Table.PROC_RESPONSE, T0, b"a")
    assert isinstance(st8, bytes)
    assert ProcedureResponse.decode(st8).result == ProcedureResult.UNRECOGNIZED
    assert meter.calls == []


@given(st.binary(min_size=1, max_size=5000), st.integers(40, 1500), st.randoms())
def test_segmentation_round_trip_any_order(apdu: bytes, mtu: int, rnd: object) -> None:
    parts = segment(apdu, 9, mtu)
    assert all(len(p) <= mtu for p in parts)
    if len(parts) == 1:
        assert parts == [apdu] or len(apdu) <= mtu
        return
    rnd.shuffle(parts)  # type: ignore[attr-defined]
    r = Reassembler()
    outs = [r.receive(Segment.decode(p), "x", T0) for p in parts]
    assert outs[-1] == apdu and all(o is None for o in outs[:-1]) and len(r) == 0


def test_reassembly_bounds_and_timeout() -> None:
    r = Reassembler(timeout=10.0, max_apdu=100, max_pending=2)
    with pytest.raises(C1222DecodeError, match="too large"):
        r.receive(Segment(1, 101, 0, b"x"), "a", T0)
    for seq in range(3):
        assert r.receive(Segment(seq, 10, 0, b"abc"), "a", T0) is None
    assert len(r) == 2 and r.dropped == 1
    with pytest.raises(C1222DecodeError, match="disagrees"):
        r.receive(Segment(2, 11, 3, b"x"), "a", T0)
    assert r.get_timer() == T0 + 10.0
    assert r.expire(T0 + 10.0) == 1 and len(r) == 0


@given(st.binary(max_size=64), st.sampled_from([15, 30]), times)
def test_packed_intervals_read_as_the_table_decodes_them(
    raw: bytes, minutes: int, end: float
) -> None:
    if len(raw) % LoadProfile.INTERVAL_SIZE:
        with pytest.raises(ValueError):
            PackedIntervals(raw)
        with pytest.raises(C1222DecodeError):
            decode_intervals(raw)
        return
    packed = PackedIntervals(raw)
    lp = LoadProfile(minutes, end, packed)
    decoded = LoadProfile.decode(lp.encode())
    assert decoded == lp and lp == decoded  # equal to the tuple of the same intervals
    assert list(packed) == list(decoded.intervals) and len(packed) == len(decoded.intervals)
    assert decode_intervals(raw) == list(decoded.intervals)  # a partial read's slice
    assert [packed[i] for i in range(-len(packed), len(packed))] == list(decoded.intervals) * 2
    assert packed[1:3] == decoded.intervals[1:3]
    with pytest.raises(IndexError):
        packed[len(packed)]
