"""A subset of the ANSI C12.19 standard tables, and the table data a meter serves.

Multi-byte numbers in table data are little-endian (C12.19 ST0 FORMAT_CONTROL_1 DATA_ORDER = 0,
the standard's default); times are UTC LTIME_DATE (year - 2000, month, day, hour, minute,
second). Tables implemented:

| table | name (C12.19)                   | here                                                |
|-------|---------------------------------|-----------------------------------------------------|
| ST0   | General configuration           | `GeneralConfig` (the full ST0 layout, our sets)     |
| ST1   | General manufacturer identification | `Identification`                                |
| ST7   | Procedure initiate (write only) | `ProcedureInitiate`                                 |
| ST8   | Procedure response              | `ProcedureResponse`                                 |
| ST23  | Current register data           | `CurrentRegisters` (documented subset, below)       |
| ST52  | Clock                           | `Clock`                                             |
| ST64  | Load profile data set 1 (15 min)| `LoadProfile`                                       |
| ST65  | Load profile data set 2 (30 min)| `LoadProfile`                                       |

Procedures: SP9 remote reset (demand reset: ACTION_FLAG bit 0), SP10 set date/time (time sync),
manufacturer procedure MP1 remote switch (parameter 0 = disconnect, 1 = connect; the response
data is the relay state read back after the operation), MP2 read relay state, MP3 set load
limit (demand response: u32 LE watts, 0 = no limit; the relay trips when demand exceeds it).

Table data come from a `TableProvider` (the meter model implements it); `MeterTables` turns
reads and writes of the table ids above into provider calls.
"""

from __future__ import annotations

import datetime as _dt
import functools
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.services import ResponseCode

MFG_FLAG = 0x0800  # C12.19: bit 11 of a table/procedure number selects the manufacturer space


class Table(IntEnum):
    """C12.19 standard table numbers used here."""

    GENERAL_CONFIG = 0
    GENERAL_MFG_ID = 1
    PROC_INITIATE = 7
    PROC_RESPONSE = 8
    CURRENT_REGISTER_DATA = 23
    CLOCK = 52
    LOAD_PROFILE_1 = 64
    LOAD_PROFILE_2 = 65


class Procedure(IntEnum):
    """Procedure numbers as in TBL_PROC_NBR (bits 0..10; MFG_FLAG for manufacturer ones)."""

    REMOTE_RESET = 9  # SP9
    SET_DATE_TIME = 10  # SP10
    REMOTE_SWITCH = MFG_FLAG | 1  # MP1
    READ_SWITCH = MFG_FLAG | 2  # MP2
    SET_LOAD_LIMIT = MFG_FLAG | 3  # MP3: u32 little-endian limit in W, 0 lifts the limit


class ProcedureResult(IntEnum):
    """C12.19 ST8 RESULT_CODE."""

    COMPLETED = 0
    NOT_COMPLETED = 1
    INVALID_PARAMETER = 2
    CONFLICT_WITH_SETUP = 3
    TIMING_CONSTRAINT = 4
    NO_AUTHORIZATION = 5
    UNRECOGNIZED = 6


REMOTE_RESET_DEMAND = 0x01  # SP9 ACTION_FLAG bit 0: demand reset
SET_TIME = 0x01  # SP10 SET_MASK bits
SET_DATE = 0x02
LP_INTERVALS = {Table.LOAD_PROFILE_1: 15, Table.LOAD_PROFILE_2: 30}
_LP_MINUTES = {int(table): minutes for table, minutes in LP_INTERVALS.items()}  # by plain int


def _need(data: bytes, n: int, what: str) -> None:
    if len(data) != n:
        raise C1222DecodeError(min(len(data), n), f"{what}: expected {n} bytes, got {len(data)}")


# ------------------------------------------------------------------------ time (LTIME_DATE)

LTIME_LEN = 6


def encode_ltime(t: float) -> bytes:
    second = int(t)
    known = _ENCODED_LTIMES.get(second)
    if known is not None:  # meters stamp the same slot boundaries: most times recur
        return known
    d = _dt.datetime.fromtimestamp(second, _dt.UTC)
    if not 2000 <= d.year <= 2255:
        raise ValueError("LTIME_DATE covers 2000..2255")
    data = bytes([d.year - 2000, d.month, d.day, d.hour, d.minute, d.second])
    if len(_ENCODED_LTIMES) >= 4096:
        _ENCODED_LTIMES.clear()  # a memo of pure values; dropping it only costs recomputing
    _ENCODED_LTIMES[second] = data
    return data


def decode_ltime(data: bytes, offset: int = 0) -> float:
    if len(data) != LTIME_LEN:
        raise C1222DecodeError(offset, "LTIME_DATE is 6 bytes")
    known = _LTIMES.get(data)
    if known is not None:  # meters stamp the same slot boundaries: most times recur
        return known
    try:
        d = _dt.datetime(
            2000 + data[0], data[1], data[2], data[3], data[4], data[5], tzinfo=_dt.UTC
        )
    except ValueError as exc:
        raise C1222DecodeError(offset, f"invalid date/time: {exc}") from None
    t = d.timestamp()
    if len(_LTIMES) >= 4096:
        _LTIMES.clear()  # a memo of pure values; dropping it only costs recomputing
    _LTIMES[bytes(data)] = t
    return t


_LTIMES: dict[bytes, float] = {}
_ENCODED_LTIMES: dict[int, bytes] = {}


# ------------------------------------------------------------------------------- tables


def _bitset(members: frozenset[int], dim: int) -> bytes:
    out = bytearray(dim)
    for m in members:
        out[m // 8] |= 1 << (m % 8)
    return bytes(out)


def _members(data: bytes) -> frozenset[int]:
    return frozenset(i * 8 + b for i, byte in enumerate(data) for b in range(8) if byte >> b & 1)


def _dim(members: frozenset[int]) -> int:
    return (max(members) // 8 + 1) if members else 0


@dataclass(frozen=True)
class GeneralConfig:
    """ST0: format controls, device class, and the sets of tables/procedures used and writable
    (STD_TBLS_USED ... MFG_TBLS_WRITE bit sets, members as numbers without MFG_FLAG)."""

    device_class: bytes = b"AMST"
    std_tables: frozenset[int] = frozenset()
    mfg_tables: frozenset[int] = frozenset()
    std_procedures: frozenset[int] = frozenset()
    mfg_procedures: frozenset[int] = frozenset()
    std_writable: frozenset[int] = frozenset()
    mfg_writable: frozenset[int] = frozenset()
    format_control: bytes = b"\x02\x00\x00"  # little-endian, ISO 8859/1 characters (§ ST0)
    nameplate_type: int = 2  # electricity
    std_version: int = 2
    std_revision: int = 0
    max_proc_parm_length: int = 16
    max_resp_data_len: int = 16

    def encode(self) -> bytes:
        d_std = max(_dim(self.std_tables), _dim(self.std_writable))
        d_mfg = max(_dim(self.mfg_tables), _dim(self.mfg_writable))
        d_sp, d_mp = _dim(self.std_procedures), _dim(self.mfg_procedures)
        head = self.format_control + self.device_class + bytes([
            self.nameplate_type, 0, self.max_proc_parm_length, self.max_resp_data_len,
            self.std_version, self.std_revision, d_std, d_mfg, d_sp, d_mp, 0, 0,
        ])  # fmt:skip
        return (
            head
            + _bitset(self.std_tables, d_std)
            + _bitset(self.mfg_tables, d_mfg)
            + _bitset(self.std_procedures, d_sp)
            + _bitset(self.mfg_procedures, d_mp)
            + _bitset(self.std_writable, d_std)
            + _bitset(self.mfg_writable, d_mfg)
        )

    @classmethod
    def decode(cls, data: bytes) -> GeneralConfig:
        if len(data) < 19:
            raise C1222DecodeError(len(data), "ST0 shorter than its fixed part")
        d_std, d_mfg, d_sp, d_mp = data[13], data[14], data[15], data[16]
        pos = 19
        parts = []
        for n in (d_std, d_mfg, d_sp, d_mp, d_std, d_mfg):
            parts.append(_members(data[pos : pos + n]))
            pos += n
        if pos != len(data):
            raise C1222DecodeError(min(pos, len(data)), "ST0 length disagrees with its dims")
        return cls(
            data[3:7], parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], data[0:3],
            data[7], data[11], data[12], data[9], data[10],
        )  # fmt:skip


def _text(value: bytes, n: int) -> bytes:
    if len(value) > n:
        raise ValueError(f"text longer than {n} bytes")
    return value.ljust(n, b" ")


@dataclass(frozen=True)
class Identification:
    """ST1: MANUFACTURER (4), ED_MODEL (8), HW/FW version and revision, MFG_SERIAL_NUMBER (16)."""

    manufacturer: bytes
    model: bytes
    serial: bytes
    hw_version: int = 1
    hw_revision: int = 0
    fw_version: int = 1
    fw_revision: int = 0

    def encode(self) -> bytes:
        return (
            _text(self.manufacturer, 4)
            + _text(self.model, 8)
            + bytes([self.hw_version, self.hw_revision, self.fw_version, self.fw_revision])
            + _text(self.serial, 16)
        )

    @classmethod
    def decode(cls, data: bytes) -> Identification:
        _need(data, 32, "ST1")
        return cls(
            data[0:4].rstrip(b" "), data[4:12].rstrip(b" "), data[16:32].rstrip(b" "),
            data[12], data[13], data[14], data[15],
        )  # fmt:skip


N_TIERS = 6
_I64 = 8


@dataclass(frozen=True)
class CurrentRegisters:
    """ST23 subset (our documented layout, little-endian):

    NBR_DEMAND_RESETS u8; summations (i64 Wh / varh): active forward, active reverse,
    reactive lagging, reactive leading; MAX_DEMAND (u32 W) with its EVENT_TIME (LTIME_DATE);
    CUM_DEMAND (u64 W); N_TIERS=6 u8 then per tier active forward (i64 Wh).
    Forward+reverse and forward-reverse are derived (`active_sum`, `active_net`)."""

    active_forward_wh: int
    active_reverse_wh: int
    reactive_lagging_varh: int
    reactive_leading_varh: int
    max_demand_w: int = 0
    max_demand_time: float = 946684800.0  # 2000-01-01T00:00:00Z, "never"
    cumulative_demand_w: int = 0
    demand_resets: int = 0
    tiers_wh: tuple[int, ...] = (0,) * N_TIERS

    def __post_init__(self) -> None:
        if len(self.tiers_wh) != N_TIERS:
            raise ValueError(f"{N_TIERS} TOU tiers")

    @property
    def active_sum_wh(self) -> int:
        return self.active_forward_wh + self.active_reverse_wh

    @property
    def active_net_wh(self) -> int:
        return self.active_forward_wh - self.active_reverse_wh

    def encode(self) -> bytes:
        s = (self.active_forward_wh, self.active_reverse_wh, self.reactive_lagging_varh,
             self.reactive_leading_varh)  # fmt:skip
        return (
            bytes([self.demand_resets & 0xFF])
            + b"".join(v.to_bytes(_I64, "little", signed=True) for v in s)
            + self.max_demand_w.to_bytes(4, "little")
            + encode_ltime(self.max_demand_time)
            + self.cumulative_demand_w.to_bytes(8, "little")
            + bytes([N_TIERS])
            + b"".join(v.to_bytes(_I64, "little", signed=True) for v in self.tiers_wh)
        )

    SIZE = 1 + 4 * _I64 + 4 + LTIME_LEN + 8 + 1 + N_TIERS * _I64

    @classmethod
    def decode(cls, data: bytes) -> CurrentRegisters:
        _need(data, cls.SIZE, "ST23")
        s = [int.from_bytes(data[1 + i * 8 : 9 + i * 8], "little", signed=True) for i in range(4)]
        pos = 33
        max_dem = int.from_bytes(data[pos : pos + 4], "little")
        t = decode_ltime(data[pos + 4 : pos + 10], pos + 4)
        cum = int.from_bytes(data[pos + 10 : pos + 18], "little")
        if data[pos + 18] != N_TIERS:
            raise C1222DecodeError(pos + 18, "ST23: unexpected number of tiers")
        base = pos + 19
        tiers = tuple(
            int.from_bytes(data[base + i * 8 : base + 8 + i * 8], "little", signed=True)
            for i in range(N_TIERS)
        )
        return cls(s[0], s[1], s[2], s[3], max_dem, t, cum, data[0], tiers)


CLOCK_QUAL_GMT = 0x10  # TIME_DATE_QUAL: the time is UTC


@dataclass(frozen=True)
class Clock:
    """ST52: CLOCK_CALENDAR (LTIME_DATE) + TIME_DATE_QUAL (day of week bits 0..2, GMT bit 4)."""

    time: float

    def encode(self) -> bytes:
        dow = (_dt.datetime.fromtimestamp(int(self.time), _dt.UTC).isoweekday()) % 7  # 0 = Sun
        return encode_ltime(self.time) + bytes([dow | CLOCK_QUAL_GMT])

    @classmethod
    def decode(cls, data: bytes) -> Clock:
        _need(data, LTIME_LEN + 1, "ST52")
        return cls(decode_ltime(data[:LTIME_LEN]))


@dataclass(frozen=True)
class Interval:
    """One load-profile interval: energy in Wh and the C12.19 extended status nibble."""

    value_wh: int
    status: int = 0


_INTERVAL = struct.Struct("<BI")  # LoadProfile interval: status u8, value u32 Wh


class PackedIntervals(Sequence[Interval]):
    """Load-profile intervals kept as their table encoding (status u8, value u32 Wh each,
    oldest first): 5 bytes an interval where a tuple of `Interval`s takes ~60, and a profile
    built over them encodes without packing again. Read like a tuple of `Interval`s (each
    decoded when indexed). A meter keeps its load-profile window this way
    (`meter.tables.ModelTables`)."""

    __slots__ = ("packed",)

    def __init__(self, packed: bytes) -> None:
        if len(packed) % _INTERVAL.size:
            raise ValueError("not a whole number of packed intervals")
        self.packed = packed

    def __len__(self) -> int:
        return len(self.packed) // _INTERVAL.size

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return tuple(self)[index]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("interval index out of range")
        status, value = _INTERVAL.unpack_from(self.packed, index * _INTERVAL.size)
        return Interval(value, status)

    def __iter__(self) -> Iterator[Interval]:
        return (Interval(value, status) for status, value in _INTERVAL.iter_unpack(self.packed))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedIntervals):
            return self.packed == other.packed
        if isinstance(other, Sequence):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"PackedIntervals({tuple(self)!r})"


def _packed(intervals: Sequence[Interval]) -> bytes:
    if isinstance(intervals, PackedIntervals):
        return intervals.packed
    pack = _INTERVAL.pack
    return b"".join([pack(i.status, i.value_wh) for i in intervals])


def unpack_intervals(packed: bytes) -> Iterator[tuple[int, int]]:
    """(status, value Wh) of each packed interval (see `PackedIntervals`), oldest first."""
    return _INTERVAL.iter_unpack(packed)


def pack_intervals(statuses_values: Sequence[int]) -> bytes:
    """Load-profile intervals as the table carries them (see `PackedIntervals`), from their
    status and value (Wh) laid flat, oldest first: status, value, status, value, ... (a day
    of them in one struct call)."""
    return _intervals_struct(len(statuses_values) // 2).pack(*statuses_values)


@functools.lru_cache(maxsize=8)  # a meter packs a day at a time: 48 or 96 intervals
def _intervals_struct(n: int) -> struct.Struct:
    return struct.Struct("<" + "BI" * n)


@dataclass(frozen=True)
class LoadProfile:
    """ST64/ST65 style: INTERVAL (minutes), NBR_INTERVALS (u16), BLK_END_TIME (LTIME_DATE of
    the end of the newest interval), then per interval, oldest first: status u8, value u32 Wh.
    A partial read of `HEADER + k * INTERVAL_SIZE` bytes at the right offset reads k intervals.
    `intervals`: a tuple of `Interval`s or `PackedIntervals` (equal when they hold the same)."""

    interval_minutes: int
    end_time: float
    intervals: Sequence[Interval] = field(default_factory=tuple)

    HEADER = 1 + 2 + LTIME_LEN
    INTERVAL_SIZE = 5

    def encode(self) -> bytes:
        # once per profile: a collector reads the header, then a slice, of the same table
        # (kept in the instance's __dict__ by hand: functools.cached_property takes a lock)
        encoded: bytes | None = self.__dict__.get("_encoded")
        if encoded is None:
            encoded = self.__dict__["_encoded"] = (
                bytes([self.interval_minutes])
                + len(self.intervals).to_bytes(2, "little")
                + encode_ltime(self.end_time)
                + _packed(self.intervals)
            )
        return encoded

    @classmethod
    def decode(cls, data: bytes) -> LoadProfile:
        if len(data) < cls.HEADER:
            raise C1222DecodeError(len(data), "load profile header truncated")
        n = int.from_bytes(data[1:3], "little")
        _need(data, cls.HEADER + n * cls.INTERVAL_SIZE, "load profile")
        end = decode_ltime(data[3:9], 3)
        ivs = tuple(
            Interval(value, status)
            for status, value in _INTERVAL.iter_unpack(data[cls.HEADER : cls.HEADER + n * 5])
        )
        return cls(data[0], end, ivs)

    def interval_start(self, index: int) -> float:
        return self.end_time - (len(self.intervals) - index) * self.interval_minutes * 60


@dataclass(frozen=True)
class ProcedureInitiate:
    """ST7: TBL_PROC_NBR (u16 LE: number bits 0..10, MFG bit 11, SELECTOR bits 12..15),
    SEQ_NBR u8, PARM_DATA."""

    procedure: int
    sequence: int
    params: bytes = b""
    selector: int = 0  # 0: post the response in ST8 on completion

    def encode(self) -> bytes:
        word = (self.procedure & 0x0FFF) | (self.selector & 0xF) << 12
        return word.to_bytes(2, "little") + bytes([self.sequence & 0xFF]) + self.params

    @classmethod
    def decode(cls, data: bytes) -> ProcedureInitiate:
        if len(data) < 3:
            raise C1222DecodeError(len(data), "ST7 shorter than 3 bytes")
        word = int.from_bytes(data[:2], "little")
        return cls(word & 0x0FFF, data[2], data[3:], word >> 12)


@dataclass(frozen=True)
class ProcedureResponse:
    """ST8: TBL_PROC_NBR (u16 LE), SEQ_NBR, RESULT_CODE, RESP_DATA."""

    procedure: int
    sequence: int
    result: ProcedureResult
    data: bytes = b""

    def encode(self) -> bytes:
        return (
            (self.procedure & 0x0FFF).to_bytes(2, "little")
            + bytes([self.sequence & 0xFF, self.result])
            + self.data
        )

    @classmethod
    def decode(cls, data: bytes) -> ProcedureResponse:
        if len(data) < 4:
            raise C1222DecodeError(len(data), "ST8 shorter than 4 bytes")
        try:
            result = ProcedureResult(data[3])
        except ValueError:
            raise C1222DecodeError(3, f"unknown procedure result {data[3]}") from None
        return cls(int.from_bytes(data[:2], "little") & 0x0FFF, data[2], result, data[4:])


# ------------------------------------------------------------------------ the provider


class TableProvider(Protocol):
    """Where a meter's table data come from (the meter model implements this). `now` is the
    engine's time; the meter's own clock may differ (`clock` / `set_clock`)."""

    def identification(self) -> Identification: ...

    def registers(self, now: float) -> CurrentRegisters: ...

    def clock(self, now: float) -> float: ...

    def set_clock(self, meter_time: float, now: float) -> None: ...

    def load_profile(self, interval_minutes: int, now: float) -> LoadProfile:
        """The retained intervals of that length (15: up to 30 days), oldest first."""
        ...

    def switch_connected(self, now: float) -> bool: ...

    def set_switch(self, connected: bool, now: float) -> bool:
        """Operate the remote switch; returns the relay state read back afterwards."""
        ...

    def demand_reset(self, now: float) -> None: ...

    def set_load_limit(self, limit_w: int | None, now: float) -> None:
        """Demand response: trip the relay above `limit_w` watts (None lifts the limit)."""


STD_TABLES = frozenset({0, 1, 7, 8, 23, 52, 64, 65})
STD_WRITABLE = frozenset({7})
STD_PROCEDURES = frozenset({9, 10})
MFG_PROCEDURES = frozenset({1, 2})

TableResult = bytes | ResponseCode


class MeterTables:
    """Reads and writes of the table subset on top of a `TableProvider`.

    A write of ST7 runs the procedure at once and posts its response in ST8 for that requester
    (C12.19 §9.1.7: a client writes ST7 and reads ST8, usually in the same EPSEM)."""

    def __init__(self, provider: TableProvider, device_class: bytes = b"AMST") -> None:
        self.provider = provider
        self.config = GeneralConfig(
            device_class=device_class,
            std_tables=STD_TABLES,
            std_procedures=STD_PROCEDURES,
            mfg_procedures=MFG_PROCEDURES,
            std_writable=STD_WRITABLE,
        )
        self._st8: dict[bytes, ProcedureResponse] = {}
        self.max_st8 = 10_000

    def read(self, table: int, now: float, requester: bytes = b"") -> TableResult:
        p = self.provider
        # the load profile first, by a plain int: what a collector reads, once an interval
        # from every meter (an enum compare or `Table(table)` costs more than the read itself)
        minutes = _LP_MINUTES.get(table)
        if minutes is not None:
            return p.load_profile(minutes, now).encode()
        if table == Table.GENERAL_CONFIG:
            return self.config.encode()
        if table == Table.GENERAL_MFG_ID:
            return p.identification().encode()
        if table == Table.CURRENT_REGISTER_DATA:
            return p.registers(now).encode()
        if table == Table.CLOCK:
            return Clock(p.clock(now)).encode()
        if table == Table.PROC_RESPONSE:
            resp = self._st8.get(requester)
            return ResponseCode.DNR if resp is None else resp.encode()
        if table == Table.PROC_INITIATE:
            return ResponseCode.IAR  # write-only
        return ResponseCode.ONP  # not a table of this meter

    def read_partial(
        self, table: int, offset: int, count: int, now: float, requester: bytes = b""
    ) -> TableResult:
        whole = self.read(table, now, requester)
        if isinstance(whole, ResponseCode):
            return whole
        if offset + count > len(whole):
            return ResponseCode.ONP
        return whole[offset : offset + count]

    def write(
        self, table: int, offset: int | None, data: bytes, now: float, requester: bytes = b""
    ) -> ResponseCode:
        if table != Table.PROC_INITIATE:
            return ResponseCode.IAR if table in STD_TABLES else ResponseCode.ONP
        if offset not in (None, 0):
            return ResponseCode.IAR
        try:
            init = ProcedureInitiate.decode(data)
        except C1222DecodeError:
            return ResponseCode.ERR
        resp = self._run(init, now)
        self._st8.pop(requester, None)
        self._st8[requester] = resp
        while len(self._st8) > self.max_st8:
            del self._st8[next(iter(self._st8))]
        return ResponseCode.OK

    def _run(self, init: ProcedureInitiate, now: float) -> ProcedureResponse:
        p = self.provider

        def done(result: ProcedureResult, data: bytes = b"") -> ProcedureResponse:
            return ProcedureResponse(init.procedure, init.sequence, result, data)

        if init.procedure == Procedure.REMOTE_RESET:
            if len(init.params) != 1:
                return done(ProcedureResult.INVALID_PARAMETER)
            if init.params[0] & REMOTE_RESET_DEMAND:
                p.demand_reset(now)
            return done(ProcedureResult.COMPLETED)
        if init.procedure == Procedure.SET_DATE_TIME:
            if len(init.params) != 1 + LTIME_LEN + 1:
                return done(ProcedureResult.INVALID_PARAMETER)
            try:
                t = decode_ltime(init.params[1 : 1 + LTIME_LEN])
            except C1222DecodeError:
                return done(ProcedureResult.INVALID_PARAMETER)
            if init.params[0] & (SET_TIME | SET_DATE) != SET_TIME | SET_DATE:
                return done(ProcedureResult.INVALID_PARAMETER)  # only a full set is supported
            p.set_clock(t, now)
            return done(ProcedureResult.COMPLETED)
        if init.procedure == Procedure.REMOTE_SWITCH:
            if len(init.params) != 1 or init.params[0] > 1:
                return done(ProcedureResult.INVALID_PARAMETER)
            state = p.set_switch(bool(init.params[0]), now)
            ok = state == bool(init.params[0])
            return done(
                ProcedureResult.COMPLETED if ok else ProcedureResult.NOT_COMPLETED,
                bytes([int(state)]),
            )
        if init.procedure == Procedure.READ_SWITCH:
            return done(ProcedureResult.COMPLETED, bytes([int(p.switch_connected(now))]))
        if init.procedure == Procedure.SET_LOAD_LIMIT:
            if len(init.params) != 4:
                return done(ProcedureResult.INVALID_PARAMETER)
            limit = int.from_bytes(init.params, "little")
            p.set_load_limit(limit or None, now)
            return done(ProcedureResult.COMPLETED)
        return done(ProcedureResult.UNRECOGNIZED)


# ----------------------------------------------------------- procedure builders (head-end)


def demand_reset(sequence: int) -> ProcedureInitiate:
    return ProcedureInitiate(Procedure.REMOTE_RESET, sequence, bytes([REMOTE_RESET_DEMAND]))


def set_date_time(sequence: int, t: float) -> ProcedureInitiate:
    return ProcedureInitiate(
        Procedure.SET_DATE_TIME,
        sequence,
        bytes([SET_TIME | SET_DATE]) + Clock(t).encode(),
    )


def remote_switch(sequence: int, connect: bool) -> ProcedureInitiate:
    return ProcedureInitiate(Procedure.REMOTE_SWITCH, sequence, bytes([int(connect)]))


def read_switch(sequence: int) -> ProcedureInitiate:
    return ProcedureInitiate(Procedure.READ_SWITCH, sequence)


def load_limit(sequence: int, limit_w: int) -> ProcedureInitiate:
    """MP3: demand response by load limit (0 = none)."""
    return ProcedureInitiate(
        Procedure.SET_LOAD_LIMIT, sequence, max(0, min(limit_w, 0xFFFFFFFF)).to_bytes(4, "little")
    )


def load_profile_offsets(first: int, count: int) -> tuple[int, int]:
    """(offset, count) of a partial read of `count` intervals starting at interval `first`
    (the header is read separately, or with first == 0 include it by reading from 0)."""
    return LoadProfile.HEADER + first * LoadProfile.INTERVAL_SIZE, count * LoadProfile.INTERVAL_SIZE


def decode_intervals(data: bytes) -> Sequence[Interval]:
    """Intervals from a partial read made with `load_profile_offsets`."""
    if len(data) % LoadProfile.INTERVAL_SIZE:
        raise C1222DecodeError(len(data), "not a whole number of intervals")
    return [Interval(value, status) for status, value in _INTERVAL.iter_unpack(data)]
