"""What the smart meter object reads its values from, as protocols.

`SmartMeterObject` serves whatever metering source it is given; amistack's is
`amistack.meter.model.MeterModel` (and `amistack.meter.tables.TimeScale` for its clock). The
ECHONET Lite package names only the members it reads, so it does not depend on the meter
package (packages depend only downward: shared/ARCHITECTURE.md), and a HEMS developer can put
recorded data or another model behind the object.

Times are "model time" (Unix epoch seconds of the metered household); energy registers are
integer Wh, as meters keep them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = [
    "IDENTITY_CLOCK",
    "InstantaneousValues",
    "MeteringConfig",
    "MeteringSource",
    "ModelClock",
    "RegisterValues",
]


class MeteringConfig(Protocol):
    @property
    def two_way(self) -> bool:
        """True when the meter also registers reverse energy (export)."""
        ...

    @property
    def tz_offset_s(self) -> int:
        """Local time = model time + this."""
        ...


class RegisterValues(Protocol):
    @property
    def active_forward_wh(self) -> int: ...

    @property
    def active_reverse_wh(self) -> int | None:
        """None on a one-way meter."""
        ...


class InstantaneousValues(Protocol):
    @property
    def active_w(self) -> float:
        """Signed: positive from the grid, negative exported."""
        ...

    @property
    def current_r_a(self) -> float: ...

    @property
    def current_t_a(self) -> float: ...


class MeteringSource(Protocol):
    @property
    def config(self) -> MeteringConfig: ...

    @property
    def install_time(self) -> float:
        """When the registers start; nothing before it is data."""
        ...

    def in_outage(self, t: float) -> bool:
        """True while the power was out at `t` (the meter was dark)."""
        ...

    def registers(self, t: float) -> RegisterValues: ...

    def instantaneous(self, t: float) -> InstantaneousValues | None:
        """None while the power is out."""
        ...

    def local_day(self, t: float) -> int:
        """Days since 1970-01-01 in local time."""
        ...

    def day_start(self, day: int) -> float:
        """Model time of local midnight starting `day`."""
        ...

    def daily_history(self, day: int, now: float, reverse: bool = False) -> Sequence[int | None]:
        """The 48 half-hour register readings of local `day` (Wh); None where there is no data."""
        ...


class ModelClock(Protocol):
    """Engine time <-> model time."""

    def model(self, now: float) -> float: ...

    def engine(self, model_t: float) -> float: ...


class _IdentityClock:
    def model(self, now: float) -> float:
        return now

    def engine(self, model_t: float) -> float:
        return model_t


IDENTITY_CLOCK: ModelClock = _IdentityClock()  # engine time is model time
