"""The meter's C12.19 tables, read from the metering model (`c1222.tables.TableProvider`).

`ModelTables(model)` answers the C12.22 server (docs/c1222.md): ST1 identification, ST23 current
registers and demand, ST52 clock (the model's true time plus the clock offset that time syncs
leave behind), ST64/ST65 the 15/30-minute load profile (30 days kept), and the procedures: remote
switch with relay read-back, demand reset, set date/time (-> `model.adjust_clock`, which flags
the interval and queues a `ClockAdjusted` event).

Times: the C12.22 engine's clock (`now`, the driver's monotonic clock) is mapped to model time by
a `TimeScale` (`model = origin_model + (now - origin_now) * factor`), which is how the demo and the
simulator accelerate a meter. Every model call gets model time; commands arrive in time order
because the engine clock does.

Load-profile status byte (`LpStatus`): the head-end's `ReadingStatus` bits (a subset of C12.19
Table 64 interval status) plus `NO_DATA` (0x20): an interval whose supply was out for all of it
has no value (sent as 0 with NO_DATA | POWER_FAIL), which is not the same as a measured zero.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntFlag

from amistack.c1222.tables import (
    N_TIERS,
    CurrentRegisters,
    Identification,
    Interval,
    LoadProfile,
    PackedIntervals,
    pack_intervals,
)
from amistack.meter.model import (
    BLOCK_S,
    INTERVAL_S,
    RETENTION_DAYS,
    IntervalFlag,
    MeterModel,
    ModelTimeError,
)
from amistack.meter.model import Interval as ModelInterval
from amistack.meter.switch import SwitchError

log = logging.getLogger(__name__)

DAY_S = 86400
U32_MAX = 0xFFFF_FFFF
LP_CACHE_MAX = RETENTION_DAYS * DAY_S // 900 + 96  # a full 15-minute window and a day more
LTIME_NEVER = 946684800.0  # 2000-01-01T00:00:00Z: C12.19 "no time" in our LTIME_DATE
_ProfileCall = tuple[float, float, float, int]  # start, end, model time, model revision
_ProfileKey = tuple[int, int, int, float]  # model revision, window start and stop, its end


@dataclass(frozen=True)
class TimeScale:
    """Engine clock -> model time: `model = origin_model + (now - origin_now) * factor`."""

    origin_now: float = 0.0
    origin_model: float = 0.0
    factor: float = 1.0

    def __post_init__(self) -> None:
        if not self.factor > 0:
            raise ValueError("time scale factor must be > 0")

    def model(self, now: float) -> float:
        return self.origin_model + (now - self.origin_now) * self.factor

    def engine(self, model_t: float) -> float:
        """The engine time at which the model reaches `model_t` (the inverse of `model`)."""
        return self.origin_now + (model_t - self.origin_model) / self.factor


class LpStatus(IntFlag):
    """Load-profile interval status (u8). Bits 0x01..0x10 are the head-end's `ReadingStatus`."""

    NONE = 0
    POWER_FAIL = 0x01
    CLOCK_ADJUSTED = 0x02
    PARTIAL = 0x04
    OVERFLOW = 0x08
    ESTIMATED = 0x10
    NO_DATA = 0x20  # supply out for the whole interval: the value is not a measurement
    DISCONNECTED = 0x40  # the remote switch was open for part or all of it
    REVERSE_FLOW = 0x80


def lp_status(flags: IntervalFlag, no_data: bool) -> LpStatus:
    s = LpStatus.NONE
    if flags & IntervalFlag.OUTAGE:
        s |= LpStatus.POWER_FAIL
    if flags & IntervalFlag.PARTIAL:
        s |= LpStatus.PARTIAL
    if flags & IntervalFlag.CLOCK_ADJUSTED:
        s |= LpStatus.CLOCK_ADJUSTED
    if flags & IntervalFlag.DISCONNECTED:
        s |= LpStatus.DISCONNECTED
    if flags & IntervalFlag.REVERSE_FLOW:
        s |= LpStatus.REVERSE_FLOW
    if no_data:
        s |= LpStatus.NO_DATA | LpStatus.POWER_FAIL
    return s


def lp_interval(iv: ModelInterval) -> Interval:
    """A model interval as a C12.19 one: forward active energy (Wh, u32) and its status."""
    return Interval(*_lp_value(iv.forward_wh, int(iv.flags)))


def _lp_value(forward_wh: int | None, flags: int) -> tuple[int, int]:
    """(value, status) of a C12.19 interval from a model interval's forward energy (None: no
    data) and flags."""
    status = _status_byte(flags, forward_wh is None)
    value = forward_wh or 0
    if value > U32_MAX:
        value, status = U32_MAX, status | LpStatus.OVERFLOW
    return value, status


@functools.lru_cache(maxsize=256)
def _status_byte(flags: int, no_data: bool) -> int:
    return int(lp_status(IntervalFlag(flags), no_data))


def _packed_intervals(forwards: list[tuple[int | None, int]]) -> bytes:
    """Model intervals' (forward energy, flags) (`MeterModel.forwards`) as the table carries
    them (`c1222.tables.PackedIntervals`)."""
    flat: list[int] = []
    for forward, flags in forwards:
        if flags or forward is None or forward > U32_MAX:
            value, status = _lp_value(forward, flags)
        else:  # measured, no flag (most): what _lp_value makes of it, without a call
            value, status = forward, 0
        flat += (status, value)
    return pack_intervals(flat)


def default_identification(serial: bytes) -> Identification:
    return Identification(b"AMST", b"AMI-SIM", serial[:16])


class ModelTables:
    """`c1222.tables.TableProvider` on a `MeterModel` (see the module docstring)."""

    def __init__(
        self,
        model: MeterModel,
        identification: Identification | None = None,
        *,
        time: TimeScale | None = None,
        retention_days: int = RETENTION_DAYS,
    ) -> None:
        if not 1 <= retention_days <= RETENTION_DAYS:
            raise ValueError(f"retention_days must be 1..{RETENTION_DAYS}")
        self.model = model
        self.ident = identification or default_identification(b"00000000")
        self.time = time or TimeScale()
        self.retention_days = retention_days
        self.clock_offset = 0.0  # meter clock - true (model) time, moved by time syncs
        self.cumulative_demand_w = 0  # C12.19 CUM_DEMAND: sum of max demands at resets
        self.failed_commands = 0
        # interval minutes -> (model revision, index of the first, the packed run of completed
        # intervals from it, index of the first interval of the newest local day packed whole,
        # that day): completed intervals never change while the model's revision stands, so a
        # read takes only the ones completed since the last from their day (each read used to
        # rebuild the whole window); 5 bytes an interval
        self._lp_cache: dict[int, tuple[int, int, bytes, int, bytes]] = {}
        # interval minutes -> the last profile: the arguments and revision it answered, its
        # window and revision, and itself (see `profile`)
        self._lp_last: dict[int, tuple[_ProfileCall, _ProfileKey, LoadProfile]] = {}

    def model_time(self, now: float) -> float:
        return self.time.model(now)

    # -- TableProvider -------------------------------------------------------------------

    def identification(self) -> Identification:
        return self.ident

    def registers(self, now: float) -> CurrentRegisters:
        t = self.model_time(now)
        reg = self.model.registers(t)
        dem = self.model.demand(t)
        tou = reg.tou_forward_wh
        tiers = tuple(tou[:N_TIERS]) + (0,) * max(0, N_TIERS - len(tou))
        return CurrentRegisters(
            active_forward_wh=reg.active_forward_wh,
            active_reverse_wh=reg.active_reverse_wh or 0,
            reactive_lagging_varh=reg.reactive_lagging_varh,
            reactive_leading_varh=reg.reactive_leading_varh,
            max_demand_w=min(dem.max_w, U32_MAX),
            max_demand_time=LTIME_NEVER if dem.max_block_end is None else dem.max_block_end,
            cumulative_demand_w=self.cumulative_demand_w,
            demand_resets=dem.resets & 0xFF,
            tiers_wh=tiers,
        )

    def clock(self, now: float) -> float:
        return self.model_time(now) + self.clock_offset

    def set_clock(self, meter_time: float, now: float) -> None:
        t = self.model_time(now)
        delta = meter_time - (t + self.clock_offset)
        try:
            self.model.adjust_clock(t, delta)
        except ModelTimeError as exc:
            self.failed_commands += 1
            log.warning("time sync refused by the model: %s", exc)
            return
        self.clock_offset += delta
        log.info("clock set", extra={"delta_s": delta})

    def load_profile(self, interval_minutes: int, now: float) -> LoadProfile:
        t = self.model_time(now)
        step = interval_minutes * 60
        end = math.floor(t / step) * step
        return self.profile(interval_minutes, end - self.retention_days * DAY_S, end, t)

    def profile(
        self, interval_minutes: int, start: float, end: float, model_now: float
    ) -> LoadProfile:
        """The complete intervals in model time [start, end) kept at `model_now`, as a
        C12.19 load profile whose end time is `end` (the newest interval ends there)."""
        model = self.model
        call = (start, end, model_now, model.revision)
        last = self._lp_last.get(interval_minutes)
        # A collector reads the header, then a slice, of the same table in one request: the
        # same call at the same model revision is the same profile, before any window is built
        if last is not None and last[0] == call:
            return last[2]
        compute: Callable[[int, int], list[tuple[int | None, int]]]
        if interval_minutes == INTERVAL_S // 60:
            compute = model.forwards
        elif interval_minutes == BLOCK_S // 60:
            compute = model.forwards_30min
        else:
            raise ValueError(f"no {interval_minutes}-minute load profile")
        step = interval_minutes * 60
        window = model.window(start, end, model_now, step)
        revision = model.revision
        if window:
            newest_end = float((window[-1] + 1) * step)
        else:
            newest_end = math.floor(min(end, model_now) / step) * step
        key = (revision, window.start, window.stop, newest_end)
        if last is not None and last[1] == key:  # a later time in the same interval
            profile = last[2]
        else:
            packed = self._packed_window(interval_minutes, compute, window, revision)
            profile = LoadProfile(interval_minutes, newest_end, PackedIntervals(packed))
        if model.revision == revision:
            self._lp_last[interval_minutes] = (call, key, profile)
        return profile

    def _packed_window(
        self,
        interval_minutes: int,
        compute: Callable[[int, int], list[tuple[int | None, int]]],
        window: range,
        revision: int,
    ) -> bytes:
        """The intervals of `window`, packed (`PackedIntervals`), from the meter's packed run
        of completed intervals (index of the first, bytes): a read packs only the intervals
        completed since the last one, and drops the ones that left the window.

        New intervals are sliced from their local day packed whole (the newest day kept): a
        meter read or pushing once an interval needs one new interval at a time, and slicing
        it costs less than computing and packing it alone. The model computes a day whole
        anyway (`MeterModel._day`), and these are the same model calls in the same order as
        computing the new intervals at once: one per day."""
        if not window:  # nothing complete and kept in it (its stop may even be below its start)
            return b""
        size = LoadProfile.INTERVAL_SIZE
        first, run, day_first, day = window.start, b"", -1, b""
        cached = self._lp_cache.get(interval_minutes)
        if cached is not None and cached[0] == revision:
            _, first, run, day_first, day = cached
        stop = first + len(run) // size
        if window.start < first or window.start > stop or stop - first > LP_CACHE_MAX:
            first, run, stop = window.start, b"", window.start  # not contiguous: start afresh
        if first < window.start:  # out of the window for good
            run = run[(window.start - first) * size :]
            first = window.start
        parts = [run]
        k, step = stop, interval_minutes * 60
        model = self.model
        while k < window.stop:
            if not day_first <= k < day_first + len(day) // size:
                day_first = int(model.day_start(model.local_day(k * step))) // step
                day = _packed_intervals(compute(day_first, day_first + DAY_S // step))
            k_stop = min(window.stop, day_first + len(day) // size)
            parts.append(day[(k - day_first) * size : (k_stop - day_first) * size])
            k = k_stop
        if len(parts) > 1:
            run = b"".join(parts)
            stop = window.stop
        if model.revision == revision:
            self._lp_cache[interval_minutes] = (revision, first, run, day_first, day)
        else:  # computing settled a load-limit trip: keep nothing that might predate it
            self._lp_cache.pop(interval_minutes, None)
        if window.stop == stop:
            return run
        return run[: (window.stop - first) * size]

    def switch_connected(self, now: float) -> bool:
        return self.model.switch.relay_closed(self.model_time(now))

    def set_load_limit(self, limit_w: int | None, now: float) -> None:
        try:
            self.model.set_load_limit(
                None if limit_w is None else float(limit_w), self.model_time(now)
            )
        except (ModelTimeError, SwitchError) as exc:
            self.failed_commands += 1
            log.warning("load limit refused by the model: %s", exc)

    def set_switch(self, connected: bool, now: float) -> bool:
        t = self.model_time(now)
        try:
            if connected:
                self.model.connect(t)
            else:
                self.model.disconnect(t)
        except (ModelTimeError, SwitchError) as exc:
            self.failed_commands += 1
            log.warning("switch command refused by the model: %s", exc)
            # read back the relay as it is now, after the later command that made this one late
            return self.model.switch.relay_closed(max(t, self.model.switch.last_change))
        return self.model.switch.relay_closed(t)

    def demand_reset(self, now: float) -> None:
        t = self.model_time(now)
        try:
            before = self.model.reset_demand(t)
        except ModelTimeError as exc:
            self.failed_commands += 1
            log.warning("demand reset refused by the model: %s", exc)
            return
        self.cumulative_demand_w += before.max_w
