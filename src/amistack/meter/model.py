"""The metering model: what a household's smart meter measures, as a pure function of time.

`MeterModel(seed, config)` is deterministic: the same seed, configuration and commands give the same
values at the same time, whatever order they are asked in. Time is `t: float`, seconds since the
Unix epoch (UTC); the meter's local time is `t + config.tz_offset_s` (days, TOU divisions and the
load shape follow local time). The model never reads a clock, so the demo and the simulator
accelerate it by feeding a faster one.

How values come about (docs/meter-model.md has the whole account and every parameter):

* Per local day `d`, one counter-based hash (SHAKE-128 of the meter key and `d`) yields the day's
  weather and 96 quarter-hour noise and cloud values; with the per-meter parameters (derived once
  from the seed) they give each 15-minute interval's average household load and PV generation.
  Nothing depends on another day, so any day is computed on its own in O(96).
* Seeded outages (fail/restore events, "no data" intervals), the remote switch (a disconnected meter
  measures nothing) and the load-limit trip decide how much of each interval was live.
* Registers at `t` = initial reading + cumulative totals at the start of t's local day (cached, one
  small row per day) + the sum of that day's intervals before t + the live share of the current
  interval. The day rows are built once and extended lazily; later queries are sums of at most 96
  values plus O(log n) bisects into the switch timeline. A command (switch, demand reset, clock
  adjustment) drops the caches from its day.

Public API (all times in epoch seconds):

    MeterModel(seed: int | bytes, config: MeterConfig = MeterConfig())
      .registers(t) -> Registers                 active/reactive energy, TOU, forward+/-reverse
      .demand(t) -> Demand                       30-minute block demand of the billing period
      .instantaneous(t) -> Instantaneous | None  None while the power is out
      .interval(k) -> Interval                   the 15-minute interval k = floor(start / 900)
      .load_profile(start, end, now) -> list[Interval]        15-min, kept RETENTION_DAYS
      .load_profile_30min(start, end, now) -> list[Interval]  derived 30-min values
      .daily_history(day, now, reverse=False) -> list[int | None]  48 half-hour readings (E2/E4)
      .fixed_time_reading(t, reverse=False) -> tuple[float, int | None]        (EA/EB)
      .outages_between(a, b) -> list[tuple[float, float]] ; .in_outage(t) -> bool
      .seeded_events(a, b) -> list[MeterEvent]
      commands (time-ordered, ModelTimeError otherwise):
      .disconnect(now) .connect(now) .arm(now) .press_button(now) .set_load_limit(limit_w, now)
      .reset_demand(now) -> Demand ; .adjust_clock(now, delta_s) ; .record_event(event)
      .poll_events(now) -> None ; .next_event(now) -> MeterEvent | None
      .local_day(t) -> int ; .day_start(day) -> float ; .switch: RemoteSwitch ; .params: MeterParams
"""

from __future__ import annotations

import bisect
import datetime
import functools
import hashlib
import logging
import math
import operator
import struct
from array import array
from collections import OrderedDict
from collections.abc import MutableSequence
from dataclasses import dataclass, field
from enum import IntFlag

from amistack.meter.events import (
    ClockAdjusted,
    CoverClose,
    CoverOpen,
    EventQueue,
    MeterEvent,
    PowerFail,
    PowerRestore,
)
from amistack.meter.model_shapes import (
    COOLING_SHAPE,
    DIVISIONS_PER_DAY,
    HEATING_SHAPE,
    INTERVALS_PER_DAY,
    WEEKDAY_SHAPE,
    WEEKEND_SHAPE,
    TariffTable,
    daily_temperature,
    day_length_h,
    pv_bell,
    pv_peak_factor,
    shifted,
)
from amistack.meter.switch import RemoteSwitch, SwitchState

logger = logging.getLogger(__name__)

INTERVAL_S = 900  # load-profile interval (15 minutes)
BLOCK_S = 1800  # demand block / TOU division / ECHONET history step (30 minutes)
DAY_S = 86400
RETENTION_DAYS = 30  # 15-minute load profile kept this long
LIMIT_CHECK_S = 60  # the load limit is checked once a minute
WIGGLE = 0.08  # instantaneous power varies +-8 % around its interval's average
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
# Full day tables kept per meter (a fleet of 100,000 must fit in memory): a load-profile read
# after the first needs only the newest day, a register read that day and its cumulative row.
_DAY_CACHE = 2
# Uncurtailed days kept: one is read again only while its measured day is rebuilt (a command,
# a load-limit check, an instantaneous read), and those ask about the current day.
_RAW_CACHE = 1
_BURST_W = 1500.0  # an appliance burst (about one quarter hour in 64)


def _degree_means() -> tuple[float, float]:
    """Yearly means of the heating and cooling terms (over days and weather noise)."""
    heat = cool = 0.0
    n = 0
    for doy in range(1, 366):
        for k in range(-4, 5):
            temp = daily_temperature(doy, k / 4)
            heat += max(0.0, 16.0 - temp) / 10.0
            cool += max(0.0, temp - 24.0) / 6.0
            n += 1
    return heat / n, cool / n


_HEAT_MEAN, _COOL_MEAN = _degree_means()


class ModelTimeError(ValueError):
    """A command dated before an earlier one, or a bad time argument."""


class IntervalFlag(IntFlag):
    """Status of a load-profile interval."""

    OUTAGE = 1  # the supply failed during the interval (all of it: the interval has no data)
    PARTIAL = 2  # the interval is incomplete (outage for part of it)
    CLOCK_ADJUSTED = 4  # the clock was set during the interval
    REVERSE_FLOW = 8  # energy flowed to the grid (two-way meters)
    DISCONNECTED = 16  # the remote switch was open for part or all of it


_FLAGS = tuple(IntervalFlag(v) for v in range(32))  # by value: IntervalFlag(v) costs microseconds
_ONE_HALF_MISSING = IntervalFlag.PARTIAL.value | IntervalFlag.OUTAGE.value  # of a 30-minute value


@dataclass(frozen=True)
class MeterConfig:
    """What kind of meter and household. Everything not given here comes from the seed."""

    two_way: bool = True  # registers reverse energy; one-way meters report it as None
    pv: bool = False  # rooftop PV behind the meter
    pv_kw: float | None = None  # PV peak power; None: 3-6 kW from the seed
    annual_kwh: float | None = None  # household consumption; None: 2,500-7,000 kWh from the seed
    tz_offset_s: int = 9 * 3600  # local time = UTC + this (a multiple of 30 minutes)
    install_time: float = 1_704_034_800.0  # 2024-01-01 00:00 JST: registers start here
    initial_registers: bool = True  # start from a seeded reading (an old meter), else from 0
    nominal_voltage: float = 101.0  # per leg of a single-phase three-wire 100/200 V supply
    frequency_hz: float = 50.0
    outage_rate_per_year: float = 2.0  # seeded supply failures (1 min .. 4 h)
    cover_open_rate_per_year: float = 0.2  # seeded cover openings (5 .. 30 min)
    billing_day: int | None = 1  # automatic demand reset at 00:00 local on this day of the month
    tariff: TariffTable = field(default_factory=TariffTable)

    def __post_init__(self) -> None:
        if self.tz_offset_s % BLOCK_S:
            raise ModelTimeError("tz_offset_s must be a multiple of 1800 s")
        if self.billing_day is not None and not 1 <= self.billing_day <= 28:
            raise ModelTimeError("billing_day must be 1..28")
        if self.pv_kw is not None and self.pv_kw < 0:
            raise ValueError("pv_kw must be >= 0")


@dataclass(frozen=True, slots=True)
class MeterParams:
    """Per-meter household parameters derived from the seed (see docs/meter-model.md)."""

    annual_kwh: float
    base_w: float  # mean load, W
    shift_quarters: int  # the daily shape moved by this many quarter hours (-4..4)
    weekend_factor: float
    heating: float  # electric heating sensitivity (0: none)
    cooling: float  # air-conditioning sensitivity
    noise: float  # relative amplitude of quarter-hour noise
    pf: float  # typical power factor (lagging)
    r_share: float  # share of the load on leg R (the rest on T)
    pv_w: float  # PV peak power, W (0: no PV)
    pv_noon_h: float  # local solar noon, hours
    v_offset: float  # supply voltage offset of this service point, V


@dataclass(frozen=True, slots=True)
class Registers:
    """Energy registers at `time`, integers as meters keep them (Wh, varh)."""

    time: float
    active_forward_wh: int
    active_reverse_wh: int | None  # None on a one-way meter
    reactive_lagging_varh: int
    reactive_leading_varh: int
    tou_forward_wh: tuple[int, ...]  # per tier; sums to active_forward_wh

    @property
    def active_sum_wh(self) -> int | None:
        """Forward + reverse (None on a one-way meter)."""
        rev = self.active_reverse_wh
        return None if rev is None else self.active_forward_wh + rev

    @property
    def active_net_wh(self) -> int | None:
        """Forward - reverse (None on a one-way meter)."""
        rev = self.active_reverse_wh
        return None if rev is None else self.active_forward_wh - rev


@dataclass(frozen=True, slots=True)
class Demand:
    """30-minute block demand (forward active) of the billing period containing `time`."""

    time: float
    max_w: int  # the largest completed block since period_start
    max_block_end: float | None  # when that block ended (None: no block completed yet)
    present_w: int  # energy of the running block so far, as W over a full block
    period_start: float
    resets: int  # manual demand resets so far


@dataclass(frozen=True, slots=True)
class Instantaneous:
    """Instantaneous values at `time` (signed: positive = from the grid)."""

    time: float
    active_w: float
    reactive_var: float
    apparent_va: float
    power_factor: float
    voltage_r_v: float  # leg R to neutral
    voltage_t_v: float  # leg T to neutral
    current_r_a: float
    current_t_a: float
    frequency_hz: float
    relay_closed: bool


@dataclass(frozen=True, slots=True)
class Interval:
    """One load-profile interval [start, end). An outage interval has NO data: every value None."""

    start: float
    end: float
    forward_wh: int | None
    reverse_wh: int | None  # also None on a one-way meter
    lagging_varh: int | None
    leading_varh: int | None
    flags: IntervalFlag

    @property
    def no_data(self) -> bool:
        return self.forward_wh is None


class _Raw:
    """A local day's uncurtailed per-interval values (independent of switch and outages)."""

    __slots__ = ("net_w", "tan_phi", "tiers")

    def __init__(self, net_w: list[float], tan_phi: float, tiers: array[int]) -> None:
        # arrays, not lists: a fleet of 100,000 models keeps a few of these each
        self.net_w: MutableSequence[float] = array("d", net_w)
        self.tan_phi = tan_phi
        self.tiers = tiers  # TOU tier of each interval (shared: see _tier_array)


class _Day:
    """A local day's measured interval values (register reads add up the ones before `t`)."""

    __slots__ = ("flags", "fwd", "lag", "lead", "live", "nodata", "rev", "tiers", "tou_tot")

    def __init__(self) -> None:
        # filled as lists, then packed into arrays (`pack`): 4 bytes a value instead of ~36
        self.fwd: MutableSequence[int] = []
        self.rev: MutableSequence[int] = []
        self.lag: MutableSequence[int] = []
        self.lead: MutableSequence[int] = []
        self.live: MutableSequence[float] = []
        self.nodata: MutableSequence[int] = []  # 0/1
        self.flags: MutableSequence[int] = []
        self.tiers: MutableSequence[int] = []
        self.tou_tot: MutableSequence[int] = []

    def pack(self) -> None:
        for name in ("fwd", "rev", "lag", "lead"):
            setattr(self, name, _ints(getattr(self, name)))
        if isinstance(self.live, list):  # else the shared all-live day (_fill_simple)
            self.live = array("d", self.live)
            self.nodata = array("B", self.nodata)
        self.flags = _NO_FLAGS if not any(self.flags) else array("B", self.flags)


# A whole day live (most days of most meters): one copy of its live seconds and no-data flags
# for every meter, ~1 KB a day a meter less. Packed days are never changed, only replaced, so
# these (and _ZEROS, _tier_array) are shared by every model.
_ALL_LIVE = array("d", [float(INTERVAL_S)] * INTERVALS_PER_DAY)
_NONE_MISSING = array("B", bytes(INTERVALS_PER_DAY))
_NO_FLAGS = _NONE_MISSING
# A day with no reverse energy (every day of a meter without PV): its reverse and leading
# columns, and its flags, are all zero.
_ZEROS = array("h", bytes(2 * INTERVALS_PER_DAY))


def _ints(values: MutableSequence[int]) -> MutableSequence[int]:
    """Packed 2 bytes a value (a household's quarter hour fits: up to 32.7 kWh), 4 or 8 if
    some value does not; all zero: the shared _ZEROS."""
    if len(values) == INTERVALS_PER_DAY and not any(values):
        return _ZEROS
    for code in ("h", "i"):
        try:
            return array(code, values)
        except OverflowError:
            continue
    return array("q", values)


@functools.lru_cache(maxsize=64)
def _tier_array(schedule: tuple[int, ...]) -> array[int]:
    """The TOU tier of each interval of a day with this 30-minute schedule (shared)."""
    return array("B", [schedule[i >> 1] for i in range(INTERVALS_PER_DAY)])


def _u(b: bytes) -> float:
    """Bytes -> uniform float in [0, 1)."""
    return int.from_bytes(b, "big") / (1 << (8 * len(b)))


COVER_MAX_S = 1800  # a seeded cover opening lasts 300 s to under this (5 .. 30 min)
_OUTAGE_CACHE = 64  # days of seeded outages a model remembers (a few for live reads)


class MeterModel:
    """A household's meter; see the module docstring for the API."""

    def __init__(self, seed: int | bytes, config: MeterConfig | None = None) -> None:
        self.config = cfg = config if config is not None else MeterConfig()
        raw_seed = seed if isinstance(seed, bytes) else seed.to_bytes(32, "big", signed=True)
        self._key = hashlib.blake2b(raw_seed, digest_size=16, person=b"amistack-meter").digest()
        self.params = self._derive_params()
        q = self.params.shift_quarters
        self._shapes = (shifted(WEEKDAY_SHAPE, q), shifted(WEEKEND_SHAPE, q))
        self._tiers = cfg.tariff.tiers
        self._stride = 4 + self._tiers  # fwd, rev, lag, lead, tou...
        self.install_day = self.local_day(cfg.install_time)
        self.install_time = self.day_start(self.install_day)
        self._cum = array("q", self._initial_row())  # row j: totals at the start of day j
        self._dmax: dict[int, tuple[int, int]] = {}  # day -> (max block Wh, its block index)
        self._raw: OrderedDict[int, _Raw] = OrderedDict()
        self._days: OrderedDict[int, _Day] = OrderedDict()
        # day -> its seeded outage: every instantaneous read asks about two days, and hashing
        # them each time was a third of a read's cost (benchmarks/README.md, ECHONET Lite)
        self._outage_days: dict[int, tuple[float, float] | None] = {}
        self.switch = RemoteSwitch()
        self._settled = self.install_time  # load-limit trips decided up to here
        self._last_command = float("-inf")
        self._resets: list[float] = []
        self._clock_adjustments: list[float] = []
        # Bumped whenever computed days are dropped (a command, a load-limit trip): completed
        # intervals are a pure function of (interval, revision), so readers may cache them.
        self.revision = 0
        self.events = EventQueue()
        self._polled = self.install_time
        self._reported_at_polled: set[int] = set()  # switch events at exactly `_polled`

    # --- seed-derived parameters -----------------------------------------------------------

    def _hash(self, tag: bytes, n: int) -> bytes:
        return hashlib.shake_128(self._key + tag).digest(n)

    def _derive_params(self) -> MeterParams:
        cfg = self.config
        h = self._hash(b"params", 48)
        u = [_u(h[i : i + 2]) for i in range(0, 48, 2)]
        annual = cfg.annual_kwh if cfg.annual_kwh is not None else 2500.0 + 4500.0 * u[0]
        pv_kw = 0.0
        if cfg.pv:
            pv_kw = cfg.pv_kw if cfg.pv_kw is not None else 3.0 + 3.0 * u[1]
        weekend_factor = 1.05 + 0.2 * u[3]
        heating = 0.0 if u[4] < 0.4 else 0.3 + 0.9 * u[5]
        cooling = 0.2 + 0.8 * u[6]
        # Scale the base so that a year's consumption comes out at `annual` on average.
        mean_factor = (
            (5 + 2 * weekend_factor) / 7 * (1 + heating * _HEAT_MEAN + cooling * _COOL_MEAN)
        )
        base_w = (annual * 1000.0 / 8766.0 - _BURST_W / 64) / mean_factor
        return MeterParams(
            annual_kwh=annual,
            base_w=base_w,
            shift_quarters=int(u[2] * 9) - 4,
            weekend_factor=weekend_factor,
            heating=heating,
            cooling=cooling,
            noise=0.15 + 0.25 * u[7],
            pf=0.88 + 0.09 * u[8],
            r_share=0.42 + 0.16 * u[9],
            pv_w=pv_kw * 1000.0,
            pv_noon_h=11.75 + 0.75 * u[10],
            v_offset=-2.0 + 4.0 * u[11],
        )

    def _initial_row(self) -> list[int]:
        cfg = self.config
        row = [0] * self._stride
        if not cfg.initial_registers:
            return row
        h = self._hash(b"initial", 8)
        years = 0.5 + 9.5 * _u(h[:4])
        fwd = int(self.params.annual_kwh * 1000 * years)
        rev = int(self.params.pv_w * 1.2 * years) if cfg.two_way else 0
        row[0], row[1], row[2], row[3] = fwd, rev, int(fwd * 0.3), int(rev * 0.05)
        weights = (0.3, 0.1, 0.2, 0.15, 0.15, 0.1)
        parts = [int(fwd * weights[i % len(weights)] / (1 + i // 6)) for i in range(self._tiers)]
        parts[0] += fwd - sum(parts)
        row[4:] = parts
        return row

    # --- time ------------------------------------------------------------------------------

    def local_day(self, t: float) -> int:
        """The local day number (days since 1970-01-01 in local time) of `t`."""
        return math.floor((t + self.config.tz_offset_s) / DAY_S)

    def day_start(self, day: int) -> float:
        """Epoch time of local midnight starting `day`."""
        return float(day * DAY_S - self.config.tz_offset_s)

    def _date(self, day: int) -> datetime.date:
        return datetime.date.fromordinal(day + _EPOCH_ORDINAL)

    # --- outages and cover openings (seeded) -----------------------------------------------

    def _day_outage(self, day: int) -> tuple[float, float] | None:
        if self.config.outage_rate_per_year <= 0:  # nothing to remember (a fleet's meters)
            return None
        try:
            return self._outage_days[day]
        except KeyError:
            pass
        if len(self._outage_days) >= _OUTAGE_CACHE:
            self._outage_days.clear()
        outage = self._outage_days[day] = self._seeded_outage(day)
        return outage

    def _seeded_outage(self, day: int) -> tuple[float, float] | None:
        rate = self.config.outage_rate_per_year
        if rate <= 0:
            return None
        h = self._hash(b"o" + struct.pack(">q", day), 12)
        if _u(h[:4]) >= rate / 365.25:
            return None
        start = self.day_start(day) + math.floor(_u(h[4:8]) * DAY_S)
        dur = math.exp(math.log(60.0) + _u(h[8:12]) * (math.log(4 * 3600.0) - math.log(60.0)))
        return (start, start + math.floor(dur))

    def outages_between(self, a: float, b: float) -> list[tuple[float, float]]:
        """Seeded outages [fail, restore) overlapping [a, b), in time order."""
        out = []
        for day in range(self.local_day(a) - 1, self.local_day(b) + 1):
            o = self._day_outage(day)
            if o is not None and o[1] > a and o[0] < b and o[0] >= self.install_time:
                out.append(o)
        return out

    def in_outage(self, t: float) -> bool:
        return any(s <= t < e for s, e in self.outages_between(t, t + 1e-6))

    def seeded_events(self, a: float, b: float) -> list[MeterEvent]:
        """Power fail/restore and cover open/close events with a < time <= b."""
        evs: list[MeterEvent] = []
        for s, e in self.outages_between(a - 5 * 3600, b + 1):
            if a < s <= b:
                evs.append(PowerFail(s))
            if a < e <= b:
                evs.append(PowerRestore(e, e - s))
        rate = self.config.cover_open_rate_per_year
        if rate > 0:  # a cover closes within COVER_MAX_S of opening: only those days can
            for day in range(self.local_day(a - COVER_MAX_S), self.local_day(b) + 1):
                h = self._hash(b"c" + struct.pack(">q", day), 12)
                if _u(h[:4]) >= rate / 365.25:
                    continue
                s = self.day_start(day) + math.floor(_u(h[4:8]) * DAY_S)
                e = s + 300 + math.floor(_u(h[8:12]) * 1500)  # < s + COVER_MAX_S
                if s < self.install_time:
                    continue
                if a < s <= b:
                    evs.append(CoverOpen(s))
                if a < e <= b:
                    evs.append(CoverClose(e))
        evs.sort(key=lambda ev: ev.time)
        return evs

    # --- the uncurtailed day ---------------------------------------------------------------

    def _raw_day(self, day: int) -> _Raw:
        r = self._raw.get(day)
        if r is not None:
            self._raw.move_to_end(day)
            return r
        p = self.params
        date = self._date(day)
        doy = date.timetuple().tm_yday
        weekend = date.weekday() >= 5
        buf = self._hash(b"d" + struct.pack(">q", day), 2 * INTERVALS_PER_DAY + 96 + 8)
        noise = struct.unpack_from(">96H", buf, 0)
        du = struct.unpack_from(">4H", buf, 2 * INTERVALS_PER_DAY + 96)
        temp = daily_temperature(doy, du[0] / 32767.5 - 1.0)
        heat = p.heating * max(0.0, 16.0 - temp) / 10.0
        cool = p.cooling * max(0.0, temp - 24.0) / 6.0
        shape = self._shapes[weekend]
        base = p.base_w * (p.weekend_factor if weekend else 1.0)
        amp = p.noise / 32767.5
        keep, burst = 1.0 - p.noise, _BURST_W  # (locals: 96 look-ups fewer, the same sums)
        # Each quarter: shape + heating + cooling, times noise; about 1 in 64 quarters carries an
        # appliance burst (kettle, oven, washing machine heater).
        net = [
            base * (s + heat * hs + cool * cs) * (keep + amp * n) + (burst if n & 63 == 0 else 0.0)
            for s, hs, cs, n in zip(shape, HEATING_SHAPE, COOLING_SHAPE, noise, strict=True)
        ]
        if p.pv_w > 0:
            daylen = day_length_h(doy)
            sunrise = p.pv_noon_h - daylen / 2
            peak = p.pv_w * 0.85 * pv_peak_factor(doy)
            sky = du[1] / 65536
            lo, hi = (0.85, 1.0) if sky < 0.45 else (0.35, 1.0) if sky < 0.8 else (0.08, 0.35)
            span = (hi - lo) / 255
            cloud = buf[2 * INTERVALS_PER_DAY : 2 * INTERVALS_PER_DAY + 96]
            for i in range(INTERVALS_PER_DAY):
                bell = pv_bell((i + 0.5) / 4.0, sunrise, daylen)
                if bell > 0.0:
                    net[i] -= peak * bell * (lo + span * cloud[i])
        pf = min(0.995, p.pf + (du[2] / 65536 - 0.5) * 0.04)
        sched = self.config.tariff.schedule(date.month, weekend)
        r = _Raw(net, math.tan(math.acos(pf)), _tier_array(sched))
        self._raw[day] = r
        if len(self._raw) > _RAW_CACHE:
            self._raw.popitem(last=False)
        return r

    # --- live time: supply present and relay closed ----------------------------------------

    def _live_seconds(self, a: float, b: float, outs: list[tuple[float, float]]) -> float:
        sw = self.switch
        live = sw.closed_seconds(a, b)
        for s, e in outs:
            lo, hi = max(a, s), min(b, e)
            if lo < hi:
                live -= sw.closed_seconds(lo, hi)
        return live

    # --- measured day ----------------------------------------------------------------------

    def _day(self, day: int) -> _Day:
        dd = self._days.get(day)
        if dd is not None:
            self._days.move_to_end(day)
            return dd
        self._settle(self.day_start(day + 1))
        raw = self._raw_day(day)
        t0 = self.day_start(day)
        t1 = t0 + DAY_S
        outs = self.outages_between(t0, t1)
        sw = self.switch
        simple = not outs and not sw.changes_between(t0, t1) and sw.relay_closed(t0)
        adj = self._clock_adjustments
        adj_lo = bisect.bisect_left(adj, t0)
        adjusted = adj_lo < len(adj) and adj[adj_lo] < t1
        dd = _Day()
        if simple and not adjusted:
            self._fill_simple(dd, raw)
        else:
            self._fill(dd, raw, t0, outs, adjusted)
        dd.tiers = raw.tiers
        tou = [0] * self._tiers
        for tier, f in zip(raw.tiers, dd.fwd, strict=True):
            tou[tier] += f
        dd.tou_tot = array("q", tou)  # not a list of int objects
        dd.pack()
        self._days[day] = dd
        if len(self._days) > _DAY_CACHE:
            self._days.popitem(last=False)
        return dd

    def _fill_simple(self, dd: _Day, raw: _Raw) -> None:
        """A whole day live: the same arithmetic as `_fill` with 900 live seconds everywhere."""
        hours = INTERVAL_S / 3600.0
        net, tan_phi = raw.net_w, raw.tan_phi
        dd.live, dd.nodata = _ALL_LIVE, _NONE_MISSING  # shared, never changed
        if min(net) >= 0.0:  # from the grid only (every day of a meter without PV): the
            # reverse columns and flags are the zeros `pack` would share, without computing them
            dd.fwd = fwd = [round(p * hours) for p in net]
            dd.lag = [round(f * tan_phi) for f in fwd]
            dd.rev = dd.lead = _ZEROS
            dd.flags = _NO_FLAGS
            return
        dd.fwd = fwd = [round(p * hours) if p * hours >= 0 else 0 for p in net]
        if self.config.two_way:
            dd.rev = rev = [0 if p * hours >= 0 else round(-(p * hours)) for p in net]
        else:
            dd.rev = rev = [0] * INTERVALS_PER_DAY
        dd.lag = [round(f * tan_phi) for f in fwd]
        dd.lead = [round(r * 0.05) for r in rev]
        rf = int(IntervalFlag.REVERSE_FLOW)
        dd.flags = [rf if r else 0 for r in rev]

    def _fill(
        self, dd: _Day, raw: _Raw, t0: float, outs: list[tuple[float, float]], adjusted: bool
    ) -> None:
        two_way = self.config.two_way
        sw = self.switch
        t1 = t0 + DAY_S
        adj = self._clock_adjustments
        fwd, rev, lag, lead = dd.fwd, dd.rev, dd.lag, dd.lead
        tan_phi = raw.tan_phi
        relay_open_all = not sw.changes_between(t0, t1) and not sw.relay_closed(t0)
        for i, p in enumerate(raw.net_w):
            flags = 0
            a = t0 + i * INTERVAL_S
            b = a + INTERVAL_S
            down = sum(max(0.0, min(b, e) - max(a, s)) for s, e in outs)
            nodata = down >= INTERVAL_S
            if down > 0:
                flags |= IntervalFlag.OUTAGE
                if not nodata:
                    flags |= IntervalFlag.PARTIAL
            live = 0.0 if nodata or relay_open_all else self._live_seconds(a, b, outs)
            if not nodata and live < INTERVAL_S - down:
                flags |= IntervalFlag.DISCONNECTED
            if adjusted:
                a = t0 + i * INTERVAL_S
                j = bisect.bisect_left(adj, a)
                if j < len(adj) and adj[j] < a + INTERVAL_S:
                    flags |= IntervalFlag.CLOCK_ADJUSTED
            e_wh = p * (live / 3600.0)
            if e_wh >= 0:
                f = round(e_wh)
                r = 0
            else:
                f = 0
                r = round(-e_wh) if two_way else 0
            if r:
                flags |= IntervalFlag.REVERSE_FLOW
            fwd.append(f)
            rev.append(r)
            lag.append(round(f * tan_phi))
            lead.append(round(r * 0.05))
            dd.live.append(live)
            dd.nodata.append(nodata)
            dd.flags.append(flags)

    def _cum_row(self, day: int) -> array[int]:
        """Register totals at the start of local `day` (day >= install_day)."""
        j = day - self.install_day
        st = self._stride
        cum = self._cum
        while len(cum) // st <= j:
            d = self.install_day + len(cum) // st - 1
            dd = self._day(d)
            cum = self._cum  # _day may have truncated it (a load-limit trip)
            if len(cum) // st != d - self.install_day + 1:
                continue
            last = cum[-st:]
            row = [
                last[0] + sum(dd.fwd),
                last[1] + sum(dd.rev),
                last[2] + sum(dd.lag),
                last[3] + sum(dd.lead),
            ]
            row.extend(last[4 + q] + dd.tou_tot[q] for q in range(self._tiers))
            cum.extend(row)
        return cum[j * st : (j + 1) * st]

    # --- registers -------------------------------------------------------------------------

    def registers(self, t: float) -> Registers:
        """Energy registers at `t` (before installation: the installation reading)."""
        t = max(t, self.install_time)
        day = self.local_day(t)
        dd = self._day(day)
        row = self._cum_row(day)
        dd = self._day(day)
        t0 = self.day_start(day)
        i = int((t - t0) // INTERVAL_S)
        # sums of at most 96 values: cheaper to add up than to keep 4 prefix arrays a day
        fwd = row[0] + sum(dd.fwd[:i])
        rev = row[1] + sum(dd.rev[:i])
        lag = row[2] + sum(dd.lag[:i])
        lead = row[3] + sum(dd.lead[:i])
        tou = list(row[4:])
        for q in range(i):
            tou[dd.tiers[q]] += dd.fwd[q]
        a = t0 + i * INTERVAL_S
        if t > a and dd.live[i] > 0:
            part = self._live_seconds(a, t, self.outages_between(a, t)) / dd.live[i]
            pf = math.floor(dd.fwd[i] * part)
            fwd += pf
            tou[dd.tiers[i]] += pf
            rev += math.floor(dd.rev[i] * part)
            lag += math.floor(dd.lag[i] * part)
            lead += math.floor(dd.lead[i] * part)
        return Registers(
            time=t,
            active_forward_wh=fwd,
            active_reverse_wh=rev if self.config.two_way else None,
            reactive_lagging_varh=lag,
            reactive_leading_varh=lead,
            tou_forward_wh=tuple(tou),
        )

    # --- load profile ----------------------------------------------------------------------

    def _slot(self, k: int) -> tuple[_Day, int]:
        """The measured day of 15-minute interval k and k's index in it."""
        a = float(k * INTERVAL_S)
        if a < self.install_time:
            raise ModelTimeError("interval before installation")
        day = self.local_day(a)
        return self._day(day), int((a - self.day_start(day)) // INTERVAL_S)

    def interval(self, k: int) -> Interval:
        """The 15-minute interval [k*900, (k+1)*900)."""
        a = float(k * INTERVAL_S)
        dd, i = self._slot(k)
        flags = _FLAGS[dd.flags[i]]
        if dd.nodata[i]:
            return Interval(a, a + INTERVAL_S, None, None, None, None, flags)
        return Interval(
            a,
            a + INTERVAL_S,
            dd.fwd[i],
            dd.rev[i] if self.config.two_way else None,
            dd.lag[i],
            dd.lead[i],
            flags,
        )

    def window(self, start: float, end: float, now: float | None, step: int) -> range:
        """Indices k of the `step`-second intervals [k*step, (k+1)*step) inside [start, end),
        complete and kept (30 days) at `now`."""
        lo = max(start, self.install_time)
        hi = end
        if now is not None:
            lo = max(lo, now - RETENTION_DAYS * DAY_S)
            hi = min(hi, now)
        first = math.ceil(lo / step)
        last = math.floor(hi / step)  # intervals ending at or before hi
        return range(first, last)

    def load_profile(self, start: float, end: float, now: float | None = None) -> list[Interval]:
        """15-minute intervals inside [start, end), complete and kept at `now` (30 days)."""
        return [self.interval(k) for k in self.window(start, end, now, INTERVAL_S)]

    def load_profile_30min(
        self, start: float, end: float, now: float | None = None
    ) -> list[Interval]:
        """30-minute values (see `interval_30min`) inside [start, end), complete and kept."""
        return [self.interval_30min(b) for b in self.window(start, end, now, BLOCK_S)]

    def interval_30min(self, b: int) -> Interval:
        """The 30-minute value [b*1800, (b+1)*1800): the sum of its two 15-minute intervals; no
        data only when both halves have none (one missing half: PARTIAL)."""
        x, y = self.interval(2 * b), self.interval(2 * b + 1)
        flags = x.flags.value | y.flags.value  # ints: IntFlag's own | costs microseconds
        halves = [h for h in (x, y) if not h.no_data]
        if not halves:
            return Interval(x.start, y.end, None, None, None, None, _FLAGS[flags])
        if len(halves) == 1:
            flags |= _ONE_HALF_MISSING
        rev = None if not self.config.two_way else sum(h.reverse_wh or 0 for h in halves)
        return Interval(
            x.start,
            y.end,
            sum(h.forward_wh or 0 for h in halves),
            rev,
            sum(h.lagging_varh or 0 for h in halves),
            sum(h.leading_varh or 0 for h in halves),
            _FLAGS[flags],
        )

    def forwards(self, k0: int, k1: int) -> list[tuple[int | None, int]]:
        """Of each 15-minute interval k in [k0, k1): `interval(k)`'s forward active energy
        (None: no data) and flags (an `IntervalFlag` value), which is all a C12.19 load
        profile carries; a day's arrays at a time, no interval built (a meter's first
        load-profile read packs a whole window of them)."""
        out: list[tuple[int | None, int]] = []
        k = k0
        while k < k1:
            dd, i = self._slot(k)
            n = min(k1 - k, INTERVALS_PER_DAY - i)
            fwd, nodata, flags = dd.fwd, dd.nodata, dd.flags
            if nodata is _NONE_MISSING:  # a day live throughout (most): no value to hide
                out.extend(zip(fwd[i : i + n], flags[i : i + n], strict=True))
            else:
                out.extend([(None if nodata[j] else fwd[j], flags[j]) for j in range(i, i + n)])
            k += n
        return out

    def forwards_30min(self, b0: int, b1: int) -> list[tuple[int | None, int]]:
        """`forwards` of the 30-minute values b in [b0, b1), as `interval_30min(b)` has them."""
        out: list[tuple[int | None, int]] = []
        k, k1 = 2 * b0, 2 * b1
        while k < k1:
            dd, i = self._slot(k)
            n = min(k1 - k, INTERVALS_PER_DAY - i)  # even: a day holds whole 30-minute values
            if dd.nodata is _NONE_MISSING:  # a day live throughout (most): sums of the halves
                fwd, flags = dd.fwd, dd.flags
                halves = (fwd[i : i + n : 2], fwd[i + 1 : i + n : 2])
                flag_halves = (flags[i : i + n : 2], flags[i + 1 : i + n : 2])
                sums = map(operator.add, *halves)
                out.extend(zip(sums, map(operator.or_, *flag_halves), strict=True))
                k += n
                continue
            quarters = self.forwards(k, k + n)
            for (x, x_flags), (y, y_flags) in zip(quarters[::2], quarters[1::2], strict=True):
                both = x_flags | y_flags
                if x is None and y is None:
                    out.append((None, both))
                    continue
                if x is None or y is None:
                    both |= _ONE_HALF_MISSING
                out.append(((x or 0) + (y or 0), both))
            k += n
        return out

    def fixed_time_reading(self, t: float, reverse: bool = False) -> tuple[float, int | None]:
        """The latest 30-minute boundary at or before `t` and the register value there
        (ECHONET Lite EA/EB); None while the power was out then, or for reverse on a one-way
        meter."""
        x = float(math.floor(t / BLOCK_S) * BLOCK_S)
        return x, self._reading_at(x, reverse)

    def _reading_at(self, x: float, reverse: bool) -> int | None:
        if x < self.install_time or (reverse and not self.config.two_way) or self.in_outage(x):
            return None
        reg = self.registers(x)
        return reg.active_reverse_wh if reverse else reg.active_forward_wh

    def daily_history(self, day: int, now: float, reverse: bool = False) -> list[int | None]:
        """The 48 half-hour readings of local `day` (00:00, 00:30, ... 23:30; ECHONET Lite E2/E4):
        None for a time after `now`, before installation, or while the power was out."""
        t0 = self.day_start(day)
        return [
            self._reading_at(x, reverse) if (x := t0 + j * BLOCK_S) <= now else None
            for j in range(DIVISIONS_PER_DAY)
        ]

    # --- demand ----------------------------------------------------------------------------

    def _period_start(self, t: float) -> float:
        start = self.install_time
        j = bisect.bisect_right(self._resets, t)
        if j:
            start = max(start, self._resets[j - 1])
        bd = self.config.billing_day
        if bd is not None:
            date = self._date(self.local_day(t))
            y, m = date.year, date.month
            if date.day < bd:
                y, m = (y, m - 1) if m > 1 else (y - 1, 12)
            boundary = self.day_start(datetime.date(y, m, bd).toordinal() - _EPOCH_ORDINAL)
            start = max(start, boundary)
        return start

    def _day_max(self, day: int) -> tuple[int, int]:
        got = self._dmax.get(day)
        if got is None:
            dd = self._day(day)  # settles trips first, so its values are final
            blocks = [dd.fwd[2 * q] + dd.fwd[2 * q + 1] for q in range(DIVISIONS_PER_DAY)]
            best = max(blocks)
            got = self._dmax[day] = (best, blocks.index(best))
            if len(self._dmax) > 64:  # two billing periods are plenty
                del self._dmax[min(self._dmax)]
        return got

    def demand(self, t: float) -> Demand:
        """Maximum 30-minute block demand since the last demand reset (or billing boundary)."""
        t = max(t, self.install_time)
        ps = self._period_start(t)
        first = math.ceil(ps / BLOCK_S)  # blocks starting at or after the period start
        last = math.floor(t / BLOCK_S)  # the running block; completed ones are < last
        best_wh, best_end = -1, None
        b = first
        while b < last:
            day = self.local_day(b * BLOCK_S)
            d0 = self.day_start(day)
            q0 = int((b * BLOCK_S - d0) // BLOCK_S)
            day_last = math.floor(d0 / BLOCK_S) + DIVISIONS_PER_DAY
            if q0 == 0 and day_last <= last:
                wh, q = self._day_max(day)
                if wh > best_wh:
                    best_wh, best_end = wh, d0 + (q + 1) * BLOCK_S
                b = day_last
                continue
            dd = self._day(day)
            for q in range(q0, min(DIVISIONS_PER_DAY, q0 + last - b)):
                wh = dd.fwd[2 * q] + dd.fwd[2 * q + 1]
                if wh > best_wh:
                    best_wh, best_end = wh, d0 + (q + 1) * BLOCK_S
            b = min(last, day_last)
        start_reg = self.registers(max(last * BLOCK_S, ps)).active_forward_wh
        present_wh = self.registers(t).active_forward_wh - start_reg
        return Demand(
            time=t,
            max_w=max(0, best_wh) * 3600 // BLOCK_S,
            max_block_end=best_end,
            present_w=present_wh * 3600 // BLOCK_S,
            period_start=ps,
            resets=bisect.bisect_right(self._resets, t),
        )

    # --- instantaneous ---------------------------------------------------------------------

    def _wiggle(self, t: float) -> tuple[float, float, float]:
        h = hashlib.blake2b(
            self._key + struct.pack(">q", math.floor(t / 10)), digest_size=6
        ).digest()
        return (_u(h[0:2]) * 2 - 1, _u(h[2:4]) * 2 - 1, _u(h[4:6]) * 2 - 1)

    def instantaneous(self, t: float) -> Instantaneous | None:
        """Instantaneous values at `t`; None while the power is out (the meter is dark)."""
        if t < self.install_time or self.in_outage(t):
            return None
        self._settle(t)
        day = self.local_day(t)
        raw = self._raw_day(day)
        i = int((t - self.day_start(day)) // INTERVAL_S)
        w_p, w_v, w_f = self._wiggle(t)
        closed = self.switch.relay_closed(t)
        p = raw.net_w[i] * (1.0 + WIGGLE * w_p) if closed else 0.0
        # Exporting: inverters run near unity power factor, slightly leading.
        q = p * raw.tan_phi if p >= 0 else -p * 0.05
        s = math.hypot(p, q)
        pf = abs(p) / s if s > 0 else 1.0
        par = self.params
        v_nom = self.config.nominal_voltage + par.v_offset + 0.6 * w_v
        share_r = par.r_share
        v_r = v_nom - 0.00025 * p * share_r
        v_t = v_nom - 0.00025 * p * (1 - share_r) + 0.3
        sign = 1.0 if p >= 0 else -1.0
        return Instantaneous(
            time=t,
            active_w=p,
            reactive_var=q,
            apparent_va=s,
            power_factor=pf,
            voltage_r_v=v_r,
            voltage_t_v=v_t,
            current_r_a=sign * s * share_r / v_r,
            current_t_a=sign * s * (1 - share_r) / v_t,
            frequency_hz=self.config.frequency_hz + 0.03 * w_f,
            relay_closed=closed,
        )

    # --- load limit (demand response) ------------------------------------------------------

    def _settle(self, until: float) -> None:
        """Decide load-limit trips up to `until` (lazily, in time order)."""
        if until <= self._settled:
            return
        x = self._settled
        self._settled = until
        sw = self.switch
        while x < until:
            changes = sw.limit_changes_between(x, until)
            seg_end = changes[0][0] if changes else until
            limit = sw.load_limit_at(x)
            if limit is not None:
                m = self._first_exceed(x, seg_end, limit)
                if m is not None:
                    sw.trip(m)
                    logger.info("load limit %.0f W exceeded: trip", limit, extra={"t": m})
                    self._invalidate(m)
                    self._settled = max(self._settled, until)
            x = seg_end

    def _first_exceed(self, x0: float, x1: float, limit: float) -> float | None:
        sw = self.switch
        if not sw.changes_between(x0, x1) and not sw.relay_closed(x0):
            return None
        m = math.ceil(x0 / LIMIT_CHECK_S) * LIMIT_CHECK_S
        while m < x1:
            k = m // INTERVAL_S
            kb = (k + 1) * INTERVAL_S
            day = self.local_day(m)
            net = self._raw_day(day).net_w[int((m - self.day_start(day)) // INTERVAL_S)]
            if net * (1 + WIGGLE) <= limit:
                m = kb
                continue
            while m < min(kb, x1):
                if (
                    sw.relay_closed(m)
                    and net * (1 + WIGGLE * self._wiggle(m)[0]) > limit
                    and not self.in_outage(m)
                ):
                    return float(m)
                m += LIMIT_CHECK_S
        return None

    # --- commands --------------------------------------------------------------------------

    def _invalidate(self, t: float) -> None:
        self.revision += 1
        day = max(self.local_day(t), self.install_day)
        for d in [d for d in self._days if d >= day]:
            del self._days[d]
        j = day - self.install_day
        del self._cum[(j + 1) * self._stride :]
        for d in [d for d in self._dmax if d >= day]:
            del self._dmax[d]

    def _command(self, now: float) -> None:
        if now < self._last_command:
            raise ModelTimeError(f"command at {now} before the last one at {self._last_command}")
        self._last_command = now
        self._settle(now)
        # Trips predicted after `now` were only predictions: this command may change them.
        self.switch.rollback_after(now)
        self._settled = min(self._settled, now)
        self._invalidate(now)

    def disconnect(self, now: float) -> None:
        self._command(now)
        self.switch.disconnect(now)

    def connect(self, now: float) -> None:
        self._command(now)
        self.switch.connect(now)

    def arm(self, now: float) -> None:
        self._command(now)
        self.switch.arm(now)

    def press_button(self, now: float) -> None:
        self._command(now)
        self.switch.press_button(now)

    def set_load_limit(self, limit_w: float | None, now: float) -> None:
        """Demand response: the switch trips at the first once-a-minute check where the power
        exceeds `limit_w` (None lifts the limit)."""
        self._command(now)
        self.switch.set_load_limit(limit_w, now)

    def reset_demand(self, now: float) -> Demand:
        """Demand reset: returns the billing period's demand as it stood before the reset."""
        before = self.demand(now)
        self._command(now)
        self._resets.append(now)
        return before

    def adjust_clock(self, now: float, delta_s: float) -> None:
        """The meter clock was set by `delta_s` at `now` (flags the interval, records the event).
        The model itself runs on the true time it is given."""
        self._command(now)
        self._clock_adjustments.append(now)
        self.events.record(ClockAdjusted(now, delta_s))

    def record_event(self, event: MeterEvent) -> None:
        """Queue an event from another part of the meter (auth failure, key rotation...)."""
        self.events.record(event)

    def poll_events(self, now: float) -> None:
        """Queue the seeded and switch events that happened up to `now`."""
        if now < self._polled:
            return
        self._settle(now)
        self._last_command = max(self._last_command, now)  # the meter's clock has passed `now`
        if now > self._polled:
            self.events.extend(self.seeded_events(self._polled, now))
            self._reported_at_polled = set()
        # A command may land at an instant already polled (two datagrams at the same `now`):
        # events at exactly `_polled` are told apart by identity, so none is lost or repeated.
        for ev in self.switch.events:
            if self._polled < ev.time <= now or (
                ev.time == now and id(ev) not in self._reported_at_polled
            ):
                self.events.record(ev)
                if ev.time == now:
                    self._reported_at_polled.add(id(ev))
        self._polled = now

    def quiet_until(self, after: float, horizon: float) -> float:
        """A time up to which `poll_events` can find nothing that it would not find at `after`:
        the first seeded event after `after`, or `after + horizon` if none comes sooner; `after`
        itself while events wait in the queue or the switch has been commanded (its events
        depend on what is decided when polling). A driver polls no sooner than that."""
        if len(self.events) or not self.switch.idle:
            return after
        evs = self.seeded_events(after, after + horizon)
        return evs[0].time if evs else after + horizon

    def next_event(self, now: float) -> MeterEvent | None:
        self.poll_events(now)
        return self.events.next_event(now)

    @property
    def switch_state(self) -> SwitchState:
        return self.switch.state
