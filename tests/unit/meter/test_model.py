"""The metering model: determinism, registers, TOU, demand, outages, PV, switch, events."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.bench.meter import bench_model
from amistack.eventlog.record import EventRecord, EventType
from amistack.meter.events import (
    ClockAdjusted,
    KeyRotated,
    PowerFail,
    PowerRestore,
    SwitchOperated,
    SwitchReason,
)
from amistack.meter.model import (
    BLOCK_S,
    DAY_S,
    INTERVAL_S,
    RETENTION_DAYS,
    IntervalFlag,
    MeterConfig,
    MeterModel,
    ModelTimeError,
)
from amistack.meter.model_shapes import TariffError, TariffTable
from amistack.meter.switch import SwitchState

DAY0 = MeterConfig().install_time  # 2024-01-01 00:00 JST
SUMMER = DAY0 + 200 * DAY_S  # mid July
OUTAGE_EVERY_DAY = MeterConfig(outage_rate_per_year=365.25, cover_open_rate_per_year=0.0)


def _aligned(t: float) -> float:
    return math.floor(t / INTERVAL_S) * INTERVAL_S


def _long_outage(m: MeterModel, min_s: float = 2 * INTERVAL_S) -> tuple[float, float]:
    for s, e in m.outages_between(DAY0 + DAY_S, DAY0 + 60 * DAY_S):
        if e - s >= min_s:
            return s, e
    raise AssertionError("no long outage in 60 days with one outage a day")


# --- determinism --------------------------------------------------------------------------


def test_same_seed_same_values_in_any_query_order() -> None:
    cfg = MeterConfig(pv=True)
    times = [SUMMER + k * 3917.0 for k in range(60)]
    a = MeterModel(1234, cfg)
    b = MeterModel(1234, cfg)
    shuffled = times[:]
    random.Random(5).shuffle(shuffled)
    ra = {t: (a.registers(t), a.instantaneous(t), a.demand(t)) for t in times}
    rb = {t: (b.registers(t), b.instantaneous(t), b.demand(t)) for t in shuffled}
    assert ra == rb
    c = MeterModel(1234, cfg)  # far future first, then the past
    c.registers(SUMMER + 40 * DAY_S)
    assert c.registers(times[7]) == ra[times[7]][0]
    assert a.load_profile(SUMMER, SUMMER + DAY_S) == c.load_profile(SUMMER, SUMMER + DAY_S)


def test_different_seeds_differ() -> None:
    a, b = MeterModel(1), MeterModel(2)
    assert a.params != b.params
    prof_a = [i.forward_wh for i in a.load_profile(SUMMER, SUMMER + DAY_S)]
    prof_b = [i.forward_wh for i in b.load_profile(SUMMER, SUMMER + DAY_S)]
    assert prof_a != prof_b


def test_bytes_seed_is_accepted_and_deterministic() -> None:
    assert MeterModel(b"meter-0001").registers(SUMMER) == MeterModel(b"meter-0001").registers(
        SUMMER
    )


# --- registers ----------------------------------------------------------------------------


def test_registers_are_monotonic() -> None:
    m = MeterModel(77, MeterConfig(pv=True, outage_rate_per_year=50))
    prev = m.registers(SUMMER)
    for k in range(1, 3 * 24 * 9):
        cur = m.registers(SUMMER + k * 413.0)
        assert cur.active_forward_wh >= prev.active_forward_wh
        assert cur.active_reverse_wh is not None and prev.active_reverse_wh is not None
        assert cur.active_reverse_wh >= prev.active_reverse_wh
        assert cur.reactive_lagging_varh >= prev.reactive_lagging_varh
        assert cur.reactive_leading_varh >= prev.reactive_leading_varh
        assert all(x >= y for x, y in zip(cur.tou_forward_wh, prev.tou_forward_wh, strict=True))
        prev = cur


def test_register_differences_equal_interval_sums() -> None:
    m = MeterModel(3, MeterConfig(pv=True, outage_rate_per_year=100))
    a, b = _aligned(SUMMER - 3 * DAY_S), _aligned(SUMMER + 2 * DAY_S)
    ivs = m.load_profile(a, b)
    assert len(ivs) == (b - a) / INTERVAL_S
    ra, rb = m.registers(a), m.registers(b)
    assert rb.active_forward_wh - ra.active_forward_wh == sum(i.forward_wh or 0 for i in ivs)
    assert rb.active_reverse_wh is not None and ra.active_reverse_wh is not None
    rev = sum(i.reverse_wh or 0 for i in ivs)
    assert rev > 0
    assert rb.active_reverse_wh - ra.active_reverse_wh == rev
    assert rb.reactive_lagging_varh - ra.reactive_lagging_varh == sum(
        i.lagging_varh or 0 for i in ivs
    )
    assert rb.active_sum_wh == rb.active_forward_wh + rb.active_reverse_wh
    assert rb.active_net_wh == rb.active_forward_wh - rb.active_reverse_wh
    # within an interval each half-step adds no more than the interval holds
    assert all(i.forward_wh is None or i.forward_wh >= 0 for i in ivs)


def test_tou_tiers_sum_to_total_and_follow_the_table() -> None:
    m = MeterModel(11)
    rng = random.Random(1)
    for _ in range(50):
        r = m.registers(DAY0 + rng.random() * 90 * DAY_S)
        assert len(r.tou_forward_wh) == 6
        assert sum(r.tou_forward_wh) == r.active_forward_wh
    # a weekday (2024-07-19 is a Friday): each tier grows by its intervals' energy
    day = m.local_day(SUMMER)
    t0 = m.day_start(day)
    assert m._date(day).weekday() < 5
    sched = TariffTable().weekday
    r0, r1 = m.registers(t0), m.registers(t0 + DAY_S)
    per_tier = [0] * 6
    for iv in m.load_profile(t0, t0 + DAY_S):
        q = int((iv.start - t0) // BLOCK_S)
        per_tier[sched[q]] += iv.forward_wh or 0
    assert [b - a for a, b in zip(r0.tou_forward_wh, r1.tou_forward_wh, strict=True)] == per_tier
    assert all(v > 0 for v in per_tier)


def test_custom_tariff_and_summer_schedule() -> None:
    summer = tuple([5] * 48)
    tariff = TariffTable(summer_weekday=summer, summer_weekend=summer, summer_months=frozenset({7}))
    m = MeterModel(11, MeterConfig(tariff=tariff))
    day = m.local_day(SUMMER)
    r0, r1 = m.registers(m.day_start(day)), m.registers(m.day_start(day + 1))
    diff = [b - a for a, b in zip(r0.tou_forward_wh, r1.tou_forward_wh, strict=True)]
    assert diff[:5] == [0, 0, 0, 0, 0] and diff[5] == r1.active_forward_wh - r0.active_forward_wh
    with pytest.raises(TariffError):
        TariffTable(weekday=(0,) * 47)
    with pytest.raises(TariffError):
        TariffTable(weekend=(6,) * 48)


def test_initial_registers() -> None:
    fresh = MeterModel(5, MeterConfig(initial_registers=False))
    r = fresh.registers(fresh.install_time)
    assert r.active_forward_wh == 0 and r.tou_forward_wh == (0,) * 6
    old = MeterModel(5)
    r = old.registers(old.install_time - DAY_S)  # before installation: the installation reading
    assert r.active_forward_wh > 0 and sum(r.tou_forward_wh) == r.active_forward_wh


def test_household_energy_is_plausible_and_seasonal() -> None:
    m = MeterModel(21, MeterConfig(annual_kwh=4000, outage_rate_per_year=0))
    year = m.registers(DAY0 + 366 * DAY_S).active_forward_wh - m.registers(DAY0).active_forward_wh
    assert 3_000_000 < year < 5_500_000
    # evening peak above the small hours, averaged over a month of weekdays
    ivs = m.load_profile(DAY0 + 30 * DAY_S, DAY0 + 60 * DAY_S)
    by_q = [0] * 96
    for iv in ivs:
        by_q[int(((iv.start - DAY0) % DAY_S) // INTERVAL_S)] += iv.forward_wh or 0
    assert sum(by_q[76:84]) > 1.5 * sum(by_q[8:16])  # 19:00-21:00 vs 02:00-04:00


# --- demand -------------------------------------------------------------------------------


def test_demand_is_the_max_30_minute_block_of_the_period() -> None:
    m = MeterModel(9, MeterConfig(pv=True))
    t = SUMMER + 5 * 3600 + 123
    d = m.demand(t)
    blocks = m.load_profile_30min(d.period_start, t)
    assert blocks and blocks[-1].end <= t
    best = max(blocks, key=lambda b: b.forward_wh or 0)
    assert d.max_w == (best.forward_wh or 0) * 2
    assert d.max_block_end == best.end
    # billing boundary: the 1st of the month, 00:00 local
    assert m.local_day(d.period_start) == m.local_day(m.day_start(m.local_day(t))) - 18


def test_demand_reset() -> None:
    m = MeterModel(9)
    t = SUMMER + 3 * DAY_S
    before = m.demand(t)
    assert before.max_w > 0
    returned = m.reset_demand(t)
    assert returned == before
    just_after = m.demand(t + 60)
    assert just_after.max_w == 0 and just_after.max_block_end is None and just_after.resets == 1
    later = m.demand(t + DAY_S)
    blocks = m.load_profile_30min(math.ceil(t / BLOCK_S) * BLOCK_S, t + DAY_S)
    assert later.max_w == max(b.forward_wh or 0 for b in blocks) * 2
    assert m.demand(t - 1).resets == 0  # the past is unchanged


# --- load profile, outages ---------------------------------------------------------------


def test_outage_intervals_have_no_data_and_registers_stand_still() -> None:
    m = MeterModel(31, OUTAGE_EVERY_DAY)
    s, e = _long_outage(m)
    full = [iv for iv in m.load_profile(s - INTERVAL_S, e + INTERVAL_S) if iv.no_data]
    assert full, "an outage of 30 min or more covers at least one whole interval"
    for iv in full:
        assert iv.start >= s and iv.end <= e
        assert (iv.forward_wh, iv.reverse_wh, iv.lagging_varh, iv.leading_varh) == (None,) * 4
        assert iv.flags & IntervalFlag.OUTAGE and not iv.flags & IntervalFlag.PARTIAL
    edge = m.interval(math.floor(s / INTERVAL_S))
    if s % INTERVAL_S:
        assert edge.flags & IntervalFlag.PARTIAL and edge.forward_wh is not None
    r_fail = m.registers(s)
    for x in (s + 1, (s + e) / 2, e - 1, e):
        assert m.registers(x) == r_fail.__class__(
            x, *[getattr(r_fail, f) for f in r_fail.__slots__[1:]]
        )
    assert m.registers(e + 2 * INTERVAL_S).active_forward_wh > r_fail.active_forward_wh
    assert m.instantaneous((s + e) / 2) is None and m.in_outage((s + e) / 2)
    assert m.instantaneous(e + 1) is not None


def test_outage_half_hours_read_none_in_history_and_fixed_time() -> None:
    m = MeterModel(31, OUTAGE_EVERY_DAY)
    s, e = _long_outage(m, 2 * BLOCK_S)
    x = math.ceil(s / BLOCK_S) * BLOCK_S
    assert s <= x < e
    assert m.fixed_time_reading(x + 10) == (x, None)
    day = m.local_day(x)
    hist = m.daily_history(day, now=x + 10 * DAY_S)
    assert len(hist) == 48
    assert hist[int((x - m.day_start(day)) // BLOCK_S)] is None
    assert sum(v is not None for v in hist) >= 40
    thirty = [b for b in m.load_profile_30min(s, e) if b.start >= s and b.end <= e]
    assert thirty and all(b.no_data for b in thirty)
    # history never shows the future, nor before installation
    assert m.daily_history(day, now=m.day_start(day) + 3600)[3:] == [None] * 45
    assert m.daily_history(m.install_day - 1, now=x) == [None] * 48


def test_seeded_power_events_match_outages() -> None:
    m = MeterModel(31, OUTAGE_EVERY_DAY)
    a, b = DAY0 + 10 * DAY_S, DAY0 + 15 * DAY_S
    evs = m.seeded_events(a, b)
    fails = [ev.time for ev in evs if isinstance(ev, PowerFail)]
    restores = [ev for ev in evs if isinstance(ev, PowerRestore)]
    outs = m.outages_between(a, b)
    assert fails == [s for s, _ in outs if a < s <= b]
    assert [r.time for r in restores] == [e for _, e in outs if a < e <= b]
    assert all(r.outage_s > 0 for r in restores)
    assert [ev.time for ev in evs] == sorted(ev.time for ev in evs)


def test_retention_and_only_complete_intervals() -> None:
    m = MeterModel(4)
    now = SUMMER + 123.0
    ivs = m.load_profile(now - 40 * DAY_S, now + DAY_S, now)
    assert ivs[0].start >= now - RETENTION_DAYS * DAY_S
    assert ivs[0].start - (now - RETENTION_DAYS * DAY_S) < INTERVAL_S
    assert ivs[-1].end <= now and now - ivs[-1].end < INTERVAL_S
    assert len(m.load_profile_30min(now - DAY_S, now, now)) in (47, 48)
    with pytest.raises(ModelTimeError):
        m.interval(int(m.install_time // INTERVAL_S) - 1)


# --- PV -----------------------------------------------------------------------------------


def test_pv_reverse_flow_only_on_two_way_meters() -> None:
    two = MeterModel(8, MeterConfig(pv=True, pv_kw=6.0, outage_rate_per_year=0))
    one = MeterModel(8, MeterConfig(pv=True, pv_kw=6.0, two_way=False, outage_rate_per_year=0))
    day = two.local_day(SUMMER)
    t0 = two.day_start(day)
    iv2 = two.load_profile(t0, t0 + DAY_S)
    iv1 = one.load_profile(t0, t0 + DAY_S)
    reverse = [iv for iv in iv2 if iv.reverse_wh]
    assert reverse and all(iv.flags & IntervalFlag.REVERSE_FLOW for iv in reverse)
    hours = {int(((iv.start - t0) % DAY_S) // 3600) for iv in reverse}
    assert hours <= set(range(6, 19))  # daytime only
    assert all(iv.reverse_wh is None for iv in iv1)
    assert not any(iv.flags & IntervalFlag.REVERSE_FLOW for iv in iv1)
    assert [iv.forward_wh for iv in iv1] == [iv.forward_wh for iv in iv2]
    r1 = one.registers(t0 + DAY_S)
    assert r1.active_reverse_wh is None and r1.active_sum_wh is None and r1.active_net_wh is None
    assert one.daily_history(day, t0 + DAY_S, reverse=True) == [None] * 48
    assert one.fixed_time_reading(t0 + 3600, reverse=True) == (t0 + 3600, None)
    noon = two.instantaneous(t0 + 12 * 3600 + 300)
    assert noon is not None and (noon.active_w < 0) == (
        two.interval(int((t0 + 12 * 3600) // INTERVAL_S)).reverse_wh not in (None, 0)
    )


def test_no_pv_no_reverse_energy() -> None:
    m = MeterModel(8, MeterConfig(outage_rate_per_year=0, initial_registers=False))
    assert m.registers(SUMMER).active_reverse_wh == 0


# --- instantaneous ------------------------------------------------------------------------


def test_instantaneous_is_consistent_with_interval_energy() -> None:
    m = MeterModel(12, MeterConfig(outage_rate_per_year=0))
    for h in (3, 8, 19):
        a = _aligned(SUMMER + h * 3600)
        iv = m.interval(int(a // INTERVAL_S))
        samples = [m.instantaneous(a + 5 + 10 * j) for j in range(90)]
        powers = [s.active_w for s in samples if s is not None]
        assert len(powers) == 90
        avg_wh = sum(powers) / len(powers) * INTERVAL_S / 3600
        assert iv.forward_wh is not None
        assert abs(avg_wh - iv.forward_wh) <= 0.03 * iv.forward_wh + 1
        s = samples[0]
        assert s is not None
        assert s.apparent_va == pytest.approx(math.hypot(s.active_w, s.reactive_var))
        va = s.voltage_r_v * s.current_r_a + s.voltage_t_v * s.current_t_a
        assert va == pytest.approx(s.apparent_va)
        assert 95 < s.voltage_r_v < 107 and 95 < s.voltage_t_v < 107
        assert 49.9 < s.frequency_hz < 50.1 and 0.8 < s.power_factor <= 1.0


# --- switch through the model -------------------------------------------------------------


def test_disconnect_stops_the_registers_and_connect_resumes() -> None:
    m = MeterModel(14, MeterConfig(outage_rate_per_year=0))
    t = SUMMER + 1000.0
    m.disconnect(t)
    r = m.registers(t)
    assert m.registers(t + 5 * 3600).active_forward_wh == r.active_forward_wh
    inst = m.instantaneous(t + 60)
    assert inst is not None and inst.active_w == 0 and not inst.relay_closed
    iv = m.interval(int((t + 3600) // INTERVAL_S))
    assert iv.forward_wh == 0 and iv.flags & IntervalFlag.DISCONNECTED  # zero, not "no data"
    m.arm(t + 6 * 3600)
    assert m.registers(t + 7 * 3600).active_forward_wh == r.active_forward_wh
    m.press_button(t + 7 * 3600)
    assert m.switch_state is SwitchState.CONNECTED
    assert m.registers(t + 9 * 3600).active_forward_wh > r.active_forward_wh
    assert m.switch.operations == 2
    with pytest.raises(ModelTimeError):
        m.connect(t)


def test_load_limit_trips_and_is_order_independent() -> None:
    cfg = MeterConfig(outage_rate_per_year=0)
    t = SUMMER + 1800.0
    a = MeterModel(15, cfg)
    a.set_load_limit(600.0, t)
    far = a.registers(t + 2 * DAY_S)  # decides the trip lazily
    assert a.switch.trips == 1 and a.switch.state is SwitchState.DISCONNECTED
    trip = a.switch.events[-1]
    assert trip.reason is SwitchReason.LOAD_LIMIT and not trip.closed and trip.time > t + 600
    inst = a.instantaneous(trip.time - 60)
    assert inst is not None and inst.active_w <= 600.0  # the check a minute earlier passed
    assert a.registers(trip.time + 1).active_forward_wh == far.active_forward_wh
    b = MeterModel(15, cfg)
    b.set_load_limit(600.0, t)
    steps = [t + k * 600.0 for k in range(1, 150)]
    stepwise = [b.registers(x) for x in steps]
    assert stepwise == [a.registers(x) for x in steps]
    assert b.switch.events == a.switch.events
    # lifting the limit before the predicted trip cancels the prediction
    c = MeterModel(15, cfg)
    c.set_load_limit(600.0, t)
    c.registers(t + DAY_S)
    assert c.switch.trips == 1
    c.set_load_limit(None, t + 60)
    assert c.switch.trips == 0 and c.switch.events == []
    assert c.registers(trip.time + 3600).active_forward_wh > far.active_forward_wh


def test_high_load_limit_never_trips() -> None:
    m = MeterModel(15, MeterConfig(outage_rate_per_year=0))
    m.set_load_limit(50_000.0, SUMMER)
    m.registers(SUMMER + 2 * DAY_S)
    assert m.switch.trips == 0 and m.switch.relay_closed(SUMMER + 2 * DAY_S)


# --- events -------------------------------------------------------------------------------


def test_event_stream_in_time_order_and_mapped_to_the_log() -> None:
    m = MeterModel(31, OUTAGE_EVERY_DAY)
    t = DAY0 + 3 * DAY_S
    m.adjust_clock(t, -2.5)
    m.disconnect(t + 100)
    m.record_event(KeyRotated(t + 50, 7))
    iv = m.interval(int(t // INTERVAL_S))
    assert iv.flags & IntervalFlag.CLOCK_ADJUSTED
    got = []
    while (ev := m.next_event(t + DAY_S)) is not None:
        got.append(ev)
    times = [ev.time for ev in got]
    assert times == sorted(times)
    kinds = {type(ev) for ev in got}
    assert {ClockAdjusted, KeyRotated, SwitchOperated, PowerFail} <= kinds
    for seq, ev in enumerate(got):
        rec = EventRecord(seq, int(ev.time * 1000), int(ev.event_type), ev.data())
        assert EventRecord.decode(rec.encode()) == rec
    sw = next(ev for ev in got if isinstance(ev, SwitchOperated))
    assert sw.event_type is EventType.SWITCH_OPENED
    adj = next(ev for ev in got if isinstance(ev, ClockAdjusted))
    assert adj.data() == (-2500).to_bytes(8, "big", signed=True)
    assert m.next_event(t + DAY_S) is None


# --- benchmark function ------------------------------------------------------------------


def test_bench_model_reports_rates() -> None:
    r = bench_model(3, 2)
    assert r["intervals"] == 3 * 2 * 96
    assert r["intervals_per_s"] > 0 and r["register_reads_per_s"] > 0


def test_fast_day_path_equals_the_general_one() -> None:
    """A clock adjustment sends its day through the per-interval path: same energy, one flag."""
    plain = MeterModel(16, MeterConfig(pv=True, outage_rate_per_year=0))
    adjusted = MeterModel(16, MeterConfig(pv=True, outage_rate_per_year=0))
    t0 = plain.day_start(plain.local_day(SUMMER))
    adjusted.adjust_clock(t0 + 10, 1.0)
    a = plain.load_profile(t0, t0 + DAY_S)
    b = adjusted.load_profile(t0, t0 + DAY_S)
    assert [(i.forward_wh, i.reverse_wh, i.lagging_varh, i.leading_varh) for i in a] == [
        (i.forward_wh, i.reverse_wh, i.lagging_varh, i.leading_varh) for i in b
    ]
    assert [i.flags ^ j.flags for i, j in zip(a, b, strict=True)].count(
        IntervalFlag.CLOCK_ADJUSTED
    ) == 1
    assert plain.registers(t0 + DAY_S) == adjusted.registers(t0 + DAY_S)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**64),
    offsets=st.lists(st.floats(0, 20 * DAY_S), min_size=2, max_size=12),
    order_seed=st.integers(0, 1000),
)
def test_query_order_never_matters(seed: int, offsets: list[float], order_seed: int) -> None:
    cfg = MeterConfig(pv=seed % 2 == 0, two_way=seed % 3 != 0, outage_rate_per_year=60)

    def build() -> MeterModel:
        m = MeterModel(seed, cfg)
        m.disconnect(SUMMER + 2 * DAY_S + 77)
        m.connect(SUMMER + 3 * DAY_S + 5)
        m.set_load_limit(900.0, SUMMER + 5 * DAY_S)
        return m

    times = [SUMMER + o for o in offsets]
    shuffled = times[:]
    random.Random(order_seed).shuffle(shuffled)
    a, b = build(), build()
    got_a = {t: (a.registers(t), a.instantaneous(t), a.fixed_time_reading(t)) for t in times}
    got_b = {t: (b.registers(t), b.instantaneous(t), b.fixed_time_reading(t)) for t in shuffled}
    assert got_a == got_b
    ordered = [got_a[t][0].active_forward_wh for t in sorted(times)]
    assert ordered == sorted(ordered)


def test_switch_event_at_an_instant_already_polled_is_reported_once() -> None:
    m = MeterModel(5)
    t = DAY0 + 2 * DAY_S
    m.poll_events(t)
    while m.next_event(t) is not None:
        pass
    m.disconnect(t)  # a second datagram at the same `now`
    m.poll_events(t)
    m.poll_events(t)
    got = []
    while (ev := m.next_event(t)) is not None:
        got.append(ev)
    assert [type(ev) for ev in got] == [SwitchOperated]


@pytest.mark.parametrize(
    "config",
    [MeterConfig(pv=True, outage_rate_per_year=365.25), MeterConfig(outage_rate_per_year=0.0)],
)
def test_forwards_are_the_intervals_forward_energy_and_flags(config: MeterConfig) -> None:
    """What a C12.19 load profile reads (`forwards`, `forwards_30min`) is what the full
    intervals say, outages (no data, one half missing) and reverse flow included, across
    days; and on days live throughout and from the grid only (their fast paths)."""
    no_data = 0
    for seed in range(6):
        m = MeterModel(seed, config)
        k0 = math.ceil(m.install_time / 900) + 96 * 5 + 7
        assert m.forwards(k0, k0 + 3 * 96) == [
            (iv.forward_wh, iv.flags.value)
            for iv in (m.interval(k) for k in range(k0, k0 + 3 * 96))
        ]
        b0 = k0 // 2
        halves = m.forwards_30min(b0, b0 + 3 * 48)
        assert halves == [
            (iv.forward_wh, iv.flags.value)
            for iv in (m.interval_30min(b) for b in range(b0, b0 + 3 * 48))
        ]
        no_data += sum(v is None for v, _ in halves)
    assert no_data or not config.outage_rate_per_year  # outages were in it
