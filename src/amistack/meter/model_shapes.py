"""Load and generation shapes for the metering model, and the time-of-use tariff table.

Numbers only: typical residential shapes (hourly weights, mean 1.0 over the day), the seasonal
temperature curve and the PV bell. `amistack.meter.model` combines them per meter and per day.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

INTERVALS_PER_DAY = 96  # 15-minute load-profile intervals
DIVISIONS_PER_DAY = 48  # 30-minute time-of-use divisions / demand blocks
TOU_TIERS = 6

# Hourly weights of a household's daily consumption (local time, hour 0..23), shaped after
# published residential load research curves: night base, a morning peak around 07:00-08:00,
# a midday trough, the evening peak around 19:00-21:00.
_WEEKDAY_HOURLY = (
    0.55, 0.48, 0.45, 0.44, 0.45, 0.55, 0.85, 1.25, 1.20, 0.90, 0.80, 0.78,
    0.82, 0.78, 0.75, 0.80, 0.95, 1.25, 1.60, 1.80, 1.75, 1.55, 1.20, 0.85,
)  # fmt: skip
# Weekends: later, flatter morning, more daytime use.
_WEEKEND_HOURLY = (
    0.62, 0.52, 0.47, 0.45, 0.45, 0.48, 0.58, 0.80, 1.05, 1.20, 1.25, 1.22,
    1.20, 1.10, 1.02, 1.00, 1.05, 1.25, 1.55, 1.70, 1.65, 1.45, 1.15, 0.85,
)  # fmt: skip
# Electric heating runs mostly mornings and evenings; cooling in the afternoon and evening.
_HEATING_HOURLY = (
    0.9, 0.8, 0.8, 0.8, 0.9, 1.2, 1.6, 1.8, 1.4, 1.0, 0.8, 0.7,
    0.6, 0.6, 0.6, 0.7, 0.9, 1.2, 1.5, 1.6, 1.5, 1.3, 1.1, 1.0,
)  # fmt: skip
_COOLING_HOURLY = (
    0.6, 0.5, 0.4, 0.4, 0.3, 0.3, 0.3, 0.4, 0.6, 0.8, 1.0, 1.2,
    1.4, 1.6, 1.8, 1.9, 1.9, 1.8, 1.6, 1.5, 1.4, 1.2, 1.0, 0.8,
)  # fmt: skip


def _to_intervals(hourly: tuple[float, ...]) -> tuple[float, ...]:
    """Hourly weights -> 96 quarter-hour weights, linearly interpolated, normalised to mean 1."""
    out = []
    for i in range(INTERVALS_PER_DAY):
        h = (i + 0.5) / 4.0 - 0.5  # the quarter's midpoint, in hours, relative to hour centres
        lo = math.floor(h)
        f = h - lo
        out.append(hourly[lo % 24] * (1 - f) + hourly[(lo + 1) % 24] * f)
    mean = sum(out) / len(out)
    return tuple(v / mean for v in out)


WEEKDAY_SHAPE = _to_intervals(_WEEKDAY_HOURLY)
WEEKEND_SHAPE = _to_intervals(_WEEKEND_HOURLY)
HEATING_SHAPE = _to_intervals(_HEATING_HOURLY)
COOLING_SHAPE = _to_intervals(_COOLING_HOURLY)


@functools.cache  # a handful of shifts, shared by every model (a fleet holds 100,000 of them)
def shifted(shape: tuple[float, ...], by: int) -> tuple[float, ...]:
    """The shape moved `by` quarters later (a household that gets up later)."""
    n = len(shape)
    return tuple(shape[(i - by) % n] for i in range(n))


def daily_temperature(day_of_year: int, noise: float) -> float:
    """Mean daily outdoor temperature (deg C) in a temperate climate; coldest mid-January,
    warmest early August; `noise` in [-1, 1] is the day's weather."""
    return 15.5 + 11.0 * math.cos(2 * math.pi * (day_of_year - 215) / 365.25) + 4.0 * noise


def day_length_h(day_of_year: int) -> float:
    """Hours of daylight at about 36 deg N (14.5 h in June, 9.8 h in December)."""
    return 12.15 + 2.35 * math.cos(2 * math.pi * (day_of_year - 172) / 365.25)


def pv_peak_factor(day_of_year: int) -> float:
    """Clear-sky peak output relative to the June peak (lower sun in winter)."""
    return 0.72 + 0.28 * math.cos(2 * math.pi * (day_of_year - 172) / 365.25)


def pv_bell(hour_mid: float, sunrise: float, daylen: float) -> float:
    """Clear-sky shape of PV output over the day: 0 at sunrise and sunset, 1 at solar noon."""
    x = (hour_mid - sunrise) / daylen
    if x <= 0.0 or x >= 1.0:
        return 0.0
    s = math.sin(math.pi * x)
    return s * s


class TariffError(ValueError):
    """A malformed tariff table."""


# A six-tier scheme in the spirit of Japanese multi-rate household tariffs:
# 0 night, 1 morning, 2 day, 3 peak, 4 evening, 5 late evening.
_DEFAULT_WEEKDAY = (
    (0,) * 14  # 00:00-07:00 night
    + (1,) * 4  # 07:00-09:00 morning
    + (2,) * 8  # 09:00-13:00 day
    + (3,) * 8  # 13:00-17:00 peak
    + (4,) * 8  # 17:00-21:00 evening
    + (5,) * 4  # 21:00-23:00 late
    + (0,) * 2  # 23:00-24:00 night
)
_DEFAULT_WEEKEND = (0,) * 14 + (2,) * 28 + (5,) * 4 + (0,) * 2


@dataclass(frozen=True)
class TariffTable:
    """Time-of-use table: for each day kind, the tier (0..tiers-1) of each of the 48 half-hour
    divisions of the local day. `summer_months` (1-12) use the summer schedules when given."""

    weekday: tuple[int, ...] = _DEFAULT_WEEKDAY
    weekend: tuple[int, ...] = _DEFAULT_WEEKEND
    summer_weekday: tuple[int, ...] | None = None
    summer_weekend: tuple[int, ...] | None = None
    summer_months: frozenset[int] = frozenset()
    tiers: int = TOU_TIERS

    def __post_init__(self) -> None:
        if not 1 <= self.tiers <= 16:
            raise TariffError("tiers must be 1..16")
        for name in ("weekday", "weekend", "summer_weekday", "summer_weekend"):
            sched = getattr(self, name)
            if sched is None:
                continue
            if len(sched) != DIVISIONS_PER_DAY:
                raise TariffError(f"{name} needs {DIVISIONS_PER_DAY} divisions, has {len(sched)}")
            if any(not 0 <= t < self.tiers for t in sched):
                raise TariffError(f"{name} has a tier outside 0..{self.tiers - 1}")
        if any(not 1 <= m <= 12 for m in self.summer_months):
            raise TariffError("summer months are 1..12")

    def schedule(self, month: int, weekend: bool) -> tuple[int, ...]:
        """The 48 tiers of a day of this month and kind."""
        if month in self.summer_months:
            s = self.summer_weekend if weekend else self.summer_weekday
            if s is not None:
                return s
        return self.weekend if weekend else self.weekday
