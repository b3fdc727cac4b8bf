"""The C12.19 tables read from the metering model: values equal the model's, outages carry no data,
procedures act on the model (switch read-back, demand reset, time sync with its event)."""

from __future__ import annotations

import math

import pytest

from amistack.c1222.services import ResponseCode
from amistack.c1222.tables import (
    Clock,
    CurrentRegisters,
    Identification,
    LoadProfile,
    MeterTables,
    ProcedureResponse,
    ProcedureResult,
    Table,
    demand_reset,
    read_switch,
    remote_switch,
    set_date_time,
)
from amistack.meter.events import ClockAdjusted
from amistack.meter.model import (
    BLOCK_S,
    DAY_S,
    INTERVAL_S,
    RETENTION_DAYS,
    IntervalFlag,
    MeterConfig,
    MeterModel,
)
from amistack.meter.tables import LpStatus, ModelTables, TimeScale, lp_interval, lp_status

DAY0 = MeterConfig().install_time
T = DAY0 + 40 * DAY_S + 13 * 3600 + 7 * 60 + 11  # some afternoon, 40 days in
OUTAGES = MeterConfig(outage_rate_per_year=365.25, cover_open_rate_per_year=0.0)


def _tables(model: MeterModel, **kw: object) -> ModelTables:
    return ModelTables(model, Identification(b"AMST", b"TEST", b"SN0001"), **kw)  # type: ignore[arg-type]


def test_registers_equal_the_model() -> None:
    m = MeterModel(5, MeterConfig(pv=True))
    regs = _tables(m).registers(T)
    want = m.registers(T)
    dem = m.demand(T)
    assert regs.active_forward_wh == want.active_forward_wh > 0
    assert regs.active_reverse_wh == want.active_reverse_wh
    assert regs.reactive_lagging_varh == want.reactive_lagging_varh
    assert regs.reactive_leading_varh == want.reactive_leading_varh
    assert regs.tiers_wh == want.tou_forward_wh and sum(regs.tiers_wh) == regs.active_forward_wh
    assert regs.max_demand_w == dem.max_w > 0 and regs.max_demand_time == dem.max_block_end
    assert CurrentRegisters.decode(regs.encode()) == regs  # and it survives ST23 encoding


def test_one_way_meter_reports_zero_reverse() -> None:
    m = MeterModel(6, MeterConfig(two_way=False, pv=True))
    assert _tables(m).registers(T).active_reverse_wh == 0


def test_time_scale_maps_engine_time_to_model_time() -> None:
    m = MeterModel(5)
    scale = TimeScale(origin_now=100.0, origin_model=T, factor=60.0)
    tab = _tables(m, time=scale)
    assert scale.model(110.0) == T + 600 and scale.engine(T + 600) == 110.0
    assert tab.registers(110.0).active_forward_wh == m.registers(T + 600).active_forward_wh
    assert tab.clock(110.0) == T + 600
    with pytest.raises(ValueError):
        TimeScale(factor=0)


def test_load_profile_15_and_30_minutes_equal_the_model() -> None:
    m = MeterModel(8)
    tab = _tables(m)
    lp = tab.load_profile(15, T)
    end = math.floor(T / INTERVAL_S) * INTERVAL_S
    want = m.load_profile(end - RETENTION_DAYS * DAY_S, end, T)
    assert len(lp.intervals) == len(want) >= RETENTION_DAYS * 96 - 1  # the model's retention
    assert lp.end_time == end and lp.interval_minutes == 15
    assert [i.value_wh for i in lp.intervals] == [w.forward_wh or 0 for w in want]
    assert lp.interval_start(0) == want[0].start
    assert LoadProfile.decode(lp.encode()) == lp
    lp30 = tab.load_profile(30, T)
    end30 = math.floor(T / BLOCK_S) * BLOCK_S
    want30 = m.load_profile_30min(end30 - RETENTION_DAYS * DAY_S, end30, T)
    assert [i.value_wh for i in lp30.intervals] == [w.forward_wh or 0 for w in want30]
    assert lp30.end_time == end30 and len(lp30.intervals) == len(want30) >= RETENTION_DAYS * 48 - 1


def test_cached_profile_equals_a_fresh_one_as_time_passes_and_after_commands() -> None:
    # a read builds only the intervals completed since the last; a command (which may change
    # what the model computes from its time on) starts the cache afresh
    def commands(tab: ModelTables) -> None:
        tab.set_switch(False, T + 4800)
        tab.set_load_limit(500, T + 5100)

    tab = _tables(MeterModel(9, OUTAGES), retention_days=2)
    for k, t in enumerate(T + 1800.0 * j for j in range(6)):
        if k == 3:
            commands(tab)
        for minutes in (15, 30):
            fresh = _tables(MeterModel(9, OUTAGES), retention_days=2)
            if k >= 3:
                commands(fresh)
            assert tab.load_profile(minutes, t) == fresh.load_profile(minutes, t)
    assert max(len(run) // 5 for _, _, run, _, _ in tab._lp_cache.values()) <= 2 * 96  # window
    assert all(len(day) // 5 <= 96 for *_, day in tab._lp_cache.values())  # a day per length


def test_reads_across_midnight_equal_the_model_and_a_fresh_table() -> None:
    # new intervals are sliced from their local day packed whole: a read, and a push's short
    # window, on each side of midnight, and a read repeated at the same time after a command
    model = MeterModel(13, OUTAGES)
    tab = _tables(model, retention_days=1)
    midnight = model.day_start(model.local_day(T) + 1)
    for j in range(-6, 7):
        t = midnight + j * 900.0 + 17
        if j == 3:
            tab.set_switch(False, t)
        for minutes in (15, 30):
            step = minutes * 60
            end = math.floor(t / step) * step
            for start in (end - DAY_S, end - 4 * step):
                got = tab.profile(minutes, start, end, t)
                fresh = _tables(MeterModel(13, OUTAGES), retention_days=1)
                if j >= 3:
                    fresh.set_switch(False, midnight + 3 * 900.0 + 17)
                assert got == fresh.profile(minutes, start, end, t)
                want = model.load_profile(start, end, t)
                if minutes == 30:
                    want = model.load_profile_30min(start, end, t)
                assert list(got.intervals) == [lp_interval(iv) for iv in want]
                assert tab.profile(minutes, start, end, t) is got  # the same call: no rebuild
    assert sorted(tab._lp_cache) == [15, 30] and all(
        len(day) == DAY_S // (60 * m) * 5 for m, (*_, day) in tab._lp_cache.items()
    )


def test_outage_intervals_are_flagged_no_data() -> None:
    m = MeterModel(11, OUTAGES)
    tab = _tables(m)
    lp = tab.load_profile(15, T)
    nodata = [(i, iv) for i, iv in enumerate(lp.intervals) if iv.status & LpStatus.NO_DATA]
    assert nodata, "one outage a day for 30 days leaves whole intervals without data"
    for i, iv in nodata:
        model_iv = m.interval(int(lp.interval_start(i) // INTERVAL_S))
        assert model_iv.no_data and iv.value_wh == 0 and iv.status & LpStatus.POWER_FAIL
    measured = [iv for iv in lp.intervals if not iv.status & LpStatus.NO_DATA]
    assert all(iv.value_wh > 0 for iv in measured if not iv.status & LpStatus.POWER_FAIL)


def test_status_mapping() -> None:
    assert lp_status(IntervalFlag(0), False) == LpStatus.NONE
    s = lp_status(IntervalFlag.PARTIAL | IntervalFlag.OUTAGE | IntervalFlag.CLOCK_ADJUSTED, False)
    assert s == LpStatus.PARTIAL | LpStatus.POWER_FAIL | LpStatus.CLOCK_ADJUSTED
    assert lp_status(IntervalFlag.DISCONNECTED, False) == LpStatus.DISCONNECTED
    m = MeterModel(3)
    iv = m.interval(int(T // INTERVAL_S))
    assert lp_interval(iv).value_wh == iv.forward_wh


def test_remote_switch_acts_on_the_model_with_read_back() -> None:
    m = MeterModel(12)
    mt = MeterTables(_tables(m))
    assert mt.write(Table.PROC_INITIATE, None, remote_switch(1, False).encode(), T) == (
        ResponseCode.OK
    )
    resp = mt.read(Table.PROC_RESPONSE, T)
    assert isinstance(resp, bytes)
    got = ProcedureResponse.decode(resp)
    assert got.result == ProcedureResult.COMPLETED and got.data == b"\x00"
    assert not m.switch.relay_closed(T + 1)
    # disconnected: the registers stand still
    r0 = m.registers(T + 1).active_forward_wh
    assert m.registers(T + 3600).active_forward_wh == r0
    mt.write(Table.PROC_INITIATE, None, read_switch(2).encode(), T + 3600)
    st8 = mt.read(Table.PROC_RESPONSE, T + 3600)
    assert isinstance(st8, bytes) and ProcedureResponse.decode(st8).data == b"\x00"
    mt.write(Table.PROC_INITIATE, None, remote_switch(3, True).encode(), T + 3600)
    st8 = mt.read(Table.PROC_RESPONSE, T + 3600)
    assert isinstance(st8, bytes) and ProcedureResponse.decode(st8).data == b"\x01"
    assert m.switch.relay_closed(T + 3601) and m.switch.operations_at(T + 3601) == 2


def test_a_command_out_of_time_order_reads_back_the_real_state() -> None:
    m = MeterModel(12)
    tab = _tables(m)
    assert tab.set_switch(False, T) is False
    assert tab.set_switch(True, T - 100) is False  # the model refuses a command in the past
    assert tab.failed_commands == 1


def test_demand_reset() -> None:
    m = MeterModel(13)
    tab = _tables(m)
    before = m.demand(T)
    assert MeterTables(tab).write(Table.PROC_INITIATE, None, demand_reset(4).encode(), T) == 0
    after = tab.registers(T + 60)
    assert after.demand_resets == before.resets + 1
    assert after.cumulative_demand_w == before.max_w > 0
    assert after.max_demand_w < before.max_w  # a new period: at most one block since T


def test_time_sync_sets_the_clock_and_records_the_event() -> None:
    m = MeterModel(14)
    tab = _tables(m)
    mt = MeterTables(tab)
    target = T + 125.0
    mt.write(Table.PROC_INITIATE, None, set_date_time(1, target).encode(), T)
    st8 = mt.read(Table.PROC_RESPONSE, T)
    assert isinstance(st8, bytes) and ProcedureResponse.decode(st8).result == 0
    clock = mt.read(Table.CLOCK, T + 10)
    assert isinstance(clock, bytes) and Clock.decode(clock).time == target + 10
    assert tab.clock_offset == 125.0
    ev = m.next_event(T + 10)
    while ev is not None and not isinstance(ev, ClockAdjusted):
        ev = m.next_event(T + 10)
    assert isinstance(ev, ClockAdjusted) and ev.delta_s == 125.0 and ev.time == T
    flagged = m.interval(int(T // INTERVAL_S)).flags
    assert flagged & IntervalFlag.CLOCK_ADJUSTED


def test_identification_and_bad_interval_length() -> None:
    tab = _tables(MeterModel(1))
    assert tab.identification().serial == b"SN0001"
    with pytest.raises(ValueError):
        tab.profile(5, T - 3600, T, T)
    with pytest.raises(ValueError):
        ModelTables(MeterModel(1), retention_days=31)


def test_a_window_with_nothing_complete_is_empty_after_a_full_one() -> None:
    tab = _tables(MeterModel(9, OUTAGES), retention_days=2)
    assert len(tab.load_profile(30, T).intervals) > 0
    assert tab.profile(30, T, T - 3600, T).intervals == ()  # end before start
    assert tab.profile(30, T - 600, T, T - 900).intervals == ()  # nothing complete by then
    fresh = _tables(MeterModel(9, OUTAGES), retention_days=2)
    assert tab.load_profile(30, T) == fresh.load_profile(30, T)
