"""The low-voltage smart electric energy meter class 0x0288 (APPENDIX "Detailed Requirements for
ECHONET Device objects", §3.3.25), with the values of a metering source (`objects.metering`;
amistack's is `amistack.meter.model.MeterModel`).

Every reading is taken at model time `time.model(now)`. No-data codes (APPENDIX §3.3.25 and the
System Design Guidelines chapter 6): unsigned 4-byte values read 0xFFFFFFFE, signed 4-byte
0x7FFFFFFE, signed 2-byte 0x7FFE. History that predates the opening of the B route (guideline
§6.8), times the power was out (§6.3) and times still in the future read no-data, never 0.
"""

from __future__ import annotations

import datetime
import logging
import math
from dataclasses import dataclass
from enum import Enum

from amistack.echonet.frame import Eoj
from amistack.echonet.objects.base import (
    NO_FAULT,
    OPERATION_ON,
    Access,
    DeviceObject,
    PropertySpec,
    RemoteControlPolicy,
    identification_number,
    local_date_time,
    super_specs,
)
from amistack.echonet.objects.metering import IDENTITY_CLOCK, MeteringSource, ModelClock

logger = logging.getLogger(__name__)

__all__ = [
    "NO_DATA_S16",
    "NO_DATA_S32",
    "NO_DATA_U32",
    "UNIT_TENTHS_WH",
    "OneWayMode",
    "SmartMeterConfig",
    "SmartMeterObject",
]

SMART_METER_CLASS = (0x02, 0x88)
NO_DATA_U32 = 0xFFFFFFFE  # unsigned long: no data (§6.3, §6.8)
NO_DATA_S32 = 0x7FFFFFFE  # signed long: no data
NO_DATA_S16 = 0x7FFE  # signed short: no data
U32_NO_DATA = NO_DATA_U32.to_bytes(4, "big")
S32_MIN, S32_MAX = -2_147_483_647, 2_147_483_645  # E7 range (APPENDIX)
S16_MIN, S16_MAX = -32_767, 32_765  # E8 range per phase (0.1 A)
ROUTE_B_ID_LEN = 16  # C0: 0x00 + manufacturer code (3) + free area (12)
HALF_HOUR = 1800
MINUTE = 60
DAY_S = 86400
HISTORY_DAYS = 99  # E5: 0x00-0x63
HISTORY2_SEGMENTS = 12  # ED: 0x01-0x0C
HISTORY3_SEGMENTS = 10  # EF: 0x01-0x0A

# E1: unit of E0/E3/E2/E4/EA/EB/EC/EE/D0 -> its size in tenths of a Wh.
UNIT_TENTHS_WH: dict[int, int] = {
    0x00: 10_000,  # 1 kWh
    0x01: 1_000,  # 0.1 kWh
    0x02: 100,  # 0.01 kWh
    0x03: 10,  # 0.001 kWh
    0x04: 1,  # 0.0001 kWh
    0x0A: 100_000,  # 10 kWh
    0x0B: 1_000_000,  # 100 kWh
    0x0C: 10_000_000,  # 1000 kWh
    0x0D: 100_000_000,  # 10000 kWh
}

REVERSE_EPCS = frozenset({0xE3, 0xE4, 0xEB})  # what a one-way meter can leave out (§6.1)


class OneWayMode(Enum):
    """How a one-way meter shows reverse energy (guideline §6.1)."""

    ABSENT = "absent"  # E3, E4, EB are not in the maps (Get -> Get_SNA)
    NO_DATA = "no_data"  # they are present and read 0xFFFFFFFE


@dataclass(frozen=True)
class SmartMeterConfig:
    instance: int = 1
    two_way: bool | None = None  # None: as the model (MeterConfig.two_way)
    one_way_mode: OneWayMode = OneWayMode.ABSENT
    manufacturer: bytes = b"\xff\xff\xff"  # 0x8A; 0xFFFFFF = experimental / unregistered
    unique_id: bytes = b"amistack-meter"  # 0x83: its first 13 bytes after FE + maker
    production_number: bytes = b"AMI000000001"  # 0x8D, 12 bytes ASCII
    # 0xC0, 16 bytes: 0x00, the 3-byte manufacturer code, a 12-byte free area (see
    # docs/echonet.md "Verified layouts"); None: 0x00 + maker + the first 12 bytes of unique_id.
    route_b_id: bytes | None = None
    # 0x82: the APPENDIX release (and its revision) this object follows. C0, D0 and EE/EF are
    # defined in Release R (B-route readers cite it for them), so an older letter would
    # contradict the property map; momonga reads these bytes as "R.0".
    release: str = "R"
    revision: int = 0
    coefficient: int = 1  # 0xD3: 1..999999
    effective_digits: int = 6  # 0xD7: 1..8
    unit: int = 0x01  # 0xE1: 0.1 kWh
    installation_location: int = 0x00  # 0x81: not specified
    # 0x93 remote control setting (guideline §5): optional in the super class and not among the
    # meter's properties in the APPENDIX class table, so absent unless a policy is given.
    remote_control: RemoteControlPolicy | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.coefficient <= 999_999:
            raise ValueError("coefficient (D3) must be 1..999999")
        if not 1 <= self.effective_digits <= 8:
            raise ValueError("effective digits (D7) must be 1..8")
        if self.unit not in UNIT_TENTHS_WH:
            raise ValueError(f"unit code (E1) 0x{self.unit:02X} is not defined")
        if len(self.manufacturer) != 3:
            raise ValueError("manufacturer code is 3 bytes")
        if len(self.production_number) != 12:
            raise ValueError("production number (8D) is 12 bytes")
        if self.route_b_id is not None and len(self.route_b_id) != ROUTE_B_ID_LEN:
            raise ValueError(f"route B id (C0) is {ROUTE_B_ID_LEN} bytes")
        if (
            len(self.release) != 1
            or not "A" <= self.release <= "Z"
            or not 0 <= self.revision <= 255
        ):
            raise ValueError("release (82) is one letter A-Z, revision 0..255")
        if not 1 <= self.instance <= 0x7F:
            raise ValueError("instance code must be 1..127")


def _meter_specs(reverse: bool) -> list[PropertySpec]:
    g, s, a = Access.GET, Access.SET, Access.ANNO
    specs = [
        *super_specs(),
        PropertySpec(0xC0, "route B identification number", g),
        PropertySpec(0xD0, "one-minute cumulative amounts (normal, reverse)", g),
        PropertySpec(0xD3, "coefficient", g),
        PropertySpec(0xD7, "effective digits for cumulative amounts", g),
        PropertySpec(0xE0, "cumulative amount, normal direction", g),
        PropertySpec(0xE1, "unit for cumulative amounts", g),
        PropertySpec(0xE2, "historical data 1, normal direction", g),
        PropertySpec(0xE3, "cumulative amount, reverse direction", g),
        PropertySpec(0xE4, "historical data 1, reverse direction", g),
        PropertySpec(0xE5, "day for historical data 1", g | s, (1,), 0, HISTORY_DAYS),
        PropertySpec(0xE7, "instantaneous electric power", g),
        PropertySpec(0xE8, "instantaneous currents R/T", g),
        PropertySpec(0xEA, "cumulative amount at fixed time, normal", g | a),
        PropertySpec(0xEB, "cumulative amount at fixed time, reverse", g | a),
        PropertySpec(0xEC, "historical data 2 (normal, reverse)", g),
        PropertySpec(0xED, "day and time for historical data 2", g | s, (7,)),
        PropertySpec(0xEE, "historical data 3 (normal, reverse)", g),
        PropertySpec(0xEF, "day and time for historical data 3", g | s, (7,)),
    ]
    return [p for p in specs if reverse or p.epc not in REVERSE_EPCS]


def _u32(v: int | None) -> bytes:
    return U32_NO_DATA if v is None else v.to_bytes(4, "big")


def _s(v: float | None, lo: int, hi: int, nodata: int, size: int) -> bytes:
    if v is None or not math.isfinite(v):
        return nodata.to_bytes(size, "big")
    return max(lo, min(hi, round(v))).to_bytes(size, "big", signed=True)


class SmartMeterObject(DeviceObject):
    """0x0288xx backed by a metering source (a MeterModel); `time` maps engine time to its
    model time (a `meter.tables.TimeScale`; default: the same). `broute_opened_at` (model
    time) is when the B route opened: history before it reads no-data (guideline §6.8); None
    means installation time."""

    def __init__(
        self,
        model: MeteringSource,
        time: ModelClock | None = None,
        config: SmartMeterConfig | None = None,
        broute_opened_at: float | None = None,
    ) -> None:
        cfg = config if config is not None else SmartMeterConfig()
        self.config = cfg
        self.model = model
        self.time = time if time is not None else IDENTITY_CLOCK
        self.two_way = model.config.two_way if cfg.two_way is None else cfg.two_way
        keep_reverse = self.two_way or cfg.one_way_mode is OneWayMode.NO_DATA
        super().__init__(
            Eoj(*SMART_METER_CLASS, cfg.instance),
            _meter_specs(keep_reverse),
            manufacturer=cfg.manufacturer,
            tz_offset_s=model.config.tz_offset_s,
            remote_control=cfg.remote_control,
        )
        self.broute_opened_at = broute_opened_at
        self.history_day = 0  # E5
        self.history2: tuple[float, int] | None = None  # ED: (model time, segments)
        self.history3: tuple[float, int] | None = None  # EF
        route_b = cfg.route_b_id or b"\x00" + cfg.manufacturer + cfg.unique_id[:12].rjust(
            12, b"\x00"
        )
        self._values.update(
            {
                0x80: bytes((OPERATION_ON,)),
                0x81: bytes((cfg.installation_location,)),
                0x82: bytes((0x00, 0x00, ord(cfg.release), cfg.revision)),
                0x83: identification_number(cfg.manufacturer, cfg.unique_id),
                0x88: bytes((NO_FAULT,)),
                0x8A: cfg.manufacturer,
                0x8D: cfg.production_number,
                0xC0: route_b,
                0xD3: cfg.coefficient.to_bytes(4, "big"),
                0xD7: bytes((cfg.effective_digits,)),
                0xE1: bytes((cfg.unit,)),
            }
        )

    # --- time --------------------------------------------------------------------------

    def local_time(self, now: float) -> datetime.datetime:
        return self._local(self.time.model(now))

    def _local(self, t: float) -> datetime.datetime:
        return datetime.datetime(1970, 1, 1) + datetime.timedelta(
            seconds=math.floor(t) + self.tz_offset_s
        )

    def _from_local(self, y: int, mo: int, d: int, h: int, mi: int) -> float:
        dt = datetime.datetime(y, mo, d, h, mi)
        return (dt - datetime.datetime(1970, 1, 1)).total_seconds() - self.tz_offset_s

    def next_fixed_time(self, now: float) -> float:
        """Engine time of the next 30-minute boundary, when EA (and EB) are announced."""
        t = self.time.model(now)
        return self.time.engine((math.floor(t / HALF_HOUR) + 1) * HALF_HOUR)

    # --- values ------------------------------------------------------------------------

    def to_units(self, wh: int | None) -> int | None:
        """Wh -> the E1 unit, divided by the coefficient, wrapped at the effective digits."""
        if wh is None:
            return None
        cfg = self.config
        v = wh * 10 // UNIT_TENTHS_WH[cfg.unit] // cfg.coefficient
        return v % int(10**cfg.effective_digits)

    def _history_start(self) -> float:
        installed = float(self.model.install_time)
        opened = self.broute_opened_at
        return installed if opened is None else max(opened, installed)

    def _reading(self, x: float, t: float, reverse: bool) -> int | None:
        """The register in E1 units at model time `x` (asked at `t`), or None for no data."""
        if x > t or x < self._history_start() or (reverse and not self.two_way):
            return None
        if self.model.in_outage(x):
            return None
        reg = self.model.registers(x)
        return self.to_units(reg.active_reverse_wh if reverse else reg.active_forward_wh)

    def _current(self, t: float, reverse: bool) -> int | None:
        if reverse and not self.two_way:
            return None
        reg = self.model.registers(t)  # the register now (§6.10), not the last half hour's
        return self.to_units(reg.active_reverse_wh if reverse else reg.active_forward_wh)

    def _history1(self, t: float, reverse: bool) -> bytes:
        day = self.model.local_day(t) - self.history_day
        start = self._history_start()
        values = self.model.daily_history(day, t, reverse=reverse)
        t0 = self.model.day_start(day)
        out = bytearray(self.history_day.to_bytes(2, "big"))
        for j, v in enumerate(values):
            if (reverse and not self.two_way) or t0 + j * HALF_HOUR < start:
                v = None
            out += _u32(self.to_units(v))
        return bytes(out)

    def _segments(self, end: float, n: int, step: int, t: float) -> bytes:
        out = bytearray()
        for k in range(n):
            x = end - k * step
            out += _u32(self._reading(x, t, False))
            out += _u32(self._reading(x, t, True))
        return bytes(out)

    def _default_ref(self, t: float, step: int, n: int) -> tuple[float, int]:
        return (float(math.floor(t / step) * step), n)

    def _read_dynamic(self, epc: int, now: float) -> bytes | None:
        t = self.time.model(now)
        if epc == 0xE0:
            return _u32(self._current(t, False))
        if epc == 0xE3:
            return _u32(self._current(t, True))
        if epc == 0xE2:
            return self._history1(t, False)
        if epc == 0xE4:
            return self._history1(t, True)
        if epc == 0xE5:
            return bytes((self.history_day,))
        if epc == 0xE7:
            inst = self.model.instantaneous(t)
            return _s(None if inst is None else inst.active_w, S32_MIN, S32_MAX, NO_DATA_S32, 4)
        if epc == 0xE8:
            inst = self.model.instantaneous(t)
            if inst is None:
                return NO_DATA_S16.to_bytes(2, "big") * 2
            r = _s(inst.current_r_a * 10, S16_MIN, S16_MAX, NO_DATA_S16, 2)
            return r + _s(inst.current_t_a * 10, S16_MIN, S16_MAX, NO_DATA_S16, 2)
        if epc in (0xEA, 0xEB):
            x = float(math.floor(t / HALF_HOUR) * HALF_HOUR)
            return local_date_time(self._local(x)) + _u32(self._reading(x, t, epc == 0xEB))
        if epc == 0xD0:
            x = float(math.floor(t / MINUTE) * MINUTE)
            return (
                local_date_time(self._local(x))
                + _u32(self._reading(x, t, False))
                + _u32(self._reading(x, t, True))
            )
        if epc in (0xEC, 0xED):
            ref, n = self.history2 or self._default_ref(t, HALF_HOUR, HISTORY2_SEGMENTS)
            head = local_date_time(self._local(ref), with_seconds=False) + bytes((n,))
            return head if epc == 0xED else head + self._segments(ref, n, HALF_HOUR, t)
        if epc in (0xEE, 0xEF):
            ref, n = self.history3 or self._default_ref(t, MINUTE, HISTORY3_SEGMENTS)
            head = local_date_time(self._local(ref), with_seconds=False) + bytes((n,))
            return head if epc == 0xEF else head + self._segments(ref, n, MINUTE, t)
        return None

    # --- sets --------------------------------------------------------------------------

    def _parse_ref(self, edt: bytes, step_min: int, max_seg: int) -> tuple[float, int] | str:
        y = int.from_bytes(edt[0:2], "big")
        mo, d, h, mi, n = edt[2], edt[3], edt[4], edt[5], edt[6]
        if not 1 <= n <= max_seg:
            return f"{n} collection segments outside 1..{max_seg}"
        if h > 23 or mi > 59 or mi % step_min:
            return f"time {h:02d}:{mi:02d} is not a {step_min}-minute boundary"
        try:
            return (self._from_local(y, mo, d, h, mi), n)
        except (ValueError, OverflowError):
            return f"no such date {y:04d}-{mo:02d}-{d:02d}"

    def _validate(self, epc: int, edt: bytes) -> str:
        if epc == 0xED:
            r = self._parse_ref(edt, 30, HISTORY2_SEGMENTS)
            return r if isinstance(r, str) else ""
        if epc == 0xEF:
            r = self._parse_ref(edt, 1, HISTORY3_SEGMENTS)
            return r if isinstance(r, str) else ""
        return ""

    def _apply(self, epc: int, edt: bytes, now: float) -> None:
        if epc == 0xE5:
            self.history_day = edt[0]
        elif epc == 0xED:
            r = self._parse_ref(edt, 30, HISTORY2_SEGMENTS)
            assert not isinstance(r, str)  # checked by _validate before
            self.history2 = r
        elif epc == 0xEF:
            r = self._parse_ref(edt, 1, HISTORY3_SEGMENTS)
            assert not isinstance(r, str)
            self.history3 = r
        else:
            super()._apply(epc, edt, now)
