"""The device-object super class (ECHONET Lite APPENDIX "Detailed Requirements for ECHONET
Device objects", chapter 2) and what every object shares: per-EPC access rules, EDT sizes, value
ranges for settable properties, property maps and status-change announcements.

An object never sees the network: the node asks `get(epc, now)` for a Get, `set(epc, edt, now)` for
a SetI/SetC, `read(epc, now)` for an INF it has to send, and drains `pop_announcements()` after
every set (status-change announcements, APPENDIX §1.3).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, IntEnum, IntFlag

from amistack.echonet.frame import Eoj
from amistack.echonet.propmap import encode_propmap

logger = logging.getLogger(__name__)

__all__ = [
    "Access",
    "DeviceObject",
    "PropertySpec",
    "RemoteControl",
    "RemoteControlPolicy",
    "SetResult",
    "SetStatus",
    "SuperEpc",
    "identification_number",
]


class Access(IntFlag):
    """Access rules of a property (APPENDIX §1.3): Get, Set, Anno (announced at status change,
    listed in the INF map 0x9D)."""

    GET = 1
    SET = 2
    ANNO = 4


class SuperEpc:
    """EPCs of the device super class (APPENDIX chapter 2, table 2-1)."""

    OPERATION_STATUS = 0x80
    INSTALLATION_LOCATION = 0x81
    STANDARD_VERSION = 0x82
    IDENTIFICATION_NUMBER = 0x83
    FAULT_STATUS = 0x88
    MANUFACTURER_CODE = 0x8A
    PRODUCTION_NUMBER = 0x8D
    REMOTE_CONTROL_SETTING = 0x93
    CURRENT_TIME = 0x97
    CURRENT_DATE = 0x98
    INF_MAP = 0x9D
    SET_MAP = 0x9E
    GET_MAP = 0x9F


OPERATION_ON = 0x30
OPERATION_OFF = 0x31
FAULT = 0x41
NO_FAULT = 0x42
MAP_EPCS = (SuperEpc.INF_MAP, SuperEpc.SET_MAP, SuperEpc.GET_MAP)


@dataclass(frozen=True)
class PropertySpec:
    """One property: its access rule, EDT size (`sizes`: the lengths a Set may carry; None =
    any up to 255) and, for an unsigned settable number, its range `lo..hi` (inclusive)."""

    epc: int
    name: str
    access: Access
    sizes: tuple[int, ...] | None = None
    lo: int | None = None
    hi: int | None = None
    values: frozenset[int] | None = None  # enumerated 1-byte values a Set may carry


class SetStatus(Enum):
    ACCEPTED = "accepted"
    UNSUPPORTED = "unsupported"  # no such EPC, or not settable: the node answers not-possible
    INVALID = "invalid"  # wrong size or out of range: not-possible (or clamp, guideline §2.2)
    REFUSED = "refused"  # a valid value the device will not take now (e.g. guideline §5):
    # always the not-possible response, whatever the §2.2 policy


class RemoteControl(IntEnum):
    """EDT of 0x93, remote control setting (APPENDIX chapter 2, device super class; optional).

    The codes as the APPENDIX defines them, checked against two independent implementations
    (docs/echonet.md, "Verified layouts"): 0x41/0x42 say whether the operation at hand comes
    through a public network, 0x61/0x62 report a normal communication line on which operation
    through a public network is not / is possible."""

    NOT_VIA_PUBLIC_NETWORK = 0x41
    VIA_PUBLIC_NETWORK = 0x42
    LINE_NORMAL_PUBLIC_DISABLED = 0x61
    LINE_NORMAL_PUBLIC_ENABLED = 0x62


@dataclass(frozen=True)
class RemoteControlPolicy:
    """How an object that carries 0x93 handles it (guideline §5, remote control).

    Guideline §5.2 (quoting APPENDIX Release C): a controller operating through a public network
    puts 0x93 = 0x42 (VIA_PUBLIC_NETWORK) as the *first* property of the very request that
    carries the operation; an operation not through a public network is sent *without* 0x93.
    So each write request is judged on its own (`begin_write`, which the node calls before
    applying one): it is remote when it carries 0x93 = 0x42 (anywhere in it: a controller that
    puts it later is still judged remote, the safe side), local when it carries 0x93 = 0x41,
    and `unmarked` when it carries no 0x93. §5.1: in a system whose controllers do not send 0x93
    the device cannot tell, and should act as if every operation came through a public network
    -- `unmarked = VIA_PUBLIC_NETWORK`; the default follows the Release C rule (no 0x93 = local).
    A Get of 0x93 tells which the last operation was (§5.1: whether the device recognised it as
    remote, 0x42, or not, 0x41). In a remote request the object refuses (not-possible response,
    SetStatus.REFUSED) a set of any EPC in `local_only`: the properties the manufacturer allows
    to be operated from inside the home only (for safety, e.g. a heater nobody watches).
    0x61/0x62 describe the line, not the operation, and restrict nothing; with
    `line_status_settable` False a controller cannot write them (the device reports its own
    line, and an unmarked local request leaves that report as it is). 0x93 is not announced."""

    initial: RemoteControl = RemoteControl.NOT_VIA_PUBLIC_NETWORK
    local_only: frozenset[int] = frozenset()
    line_status_settable: bool = False
    unmarked: RemoteControl = RemoteControl.NOT_VIA_PUBLIC_NETWORK

    def __post_init__(self) -> None:
        if self.unmarked not in (
            RemoteControl.NOT_VIA_PUBLIC_NETWORK,
            RemoteControl.VIA_PUBLIC_NETWORK,
        ):
            raise ValueError("unmarked is 0x41 (local, APPENDIX Release C) or 0x42 (§5.1)")

    def accepted(self) -> frozenset[int]:
        codes = {RemoteControl.NOT_VIA_PUBLIC_NETWORK, RemoteControl.VIA_PUBLIC_NETWORK}
        if self.line_status_settable:
            codes |= {
                RemoteControl.LINE_NORMAL_PUBLIC_DISABLED,
                RemoteControl.LINE_NORMAL_PUBLIC_ENABLED,
            }
        return frozenset(int(c) for c in codes)


@dataclass(frozen=True)
class SetResult:
    status: SetStatus
    changed: bool = False  # the stored value differs from before
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status is SetStatus.ACCEPTED


def identification_number(manufacturer: bytes, unique: bytes) -> bytes:
    """0x83: 0xFE, the 3-byte manufacturer code, 13 bytes unique to the object (APPENDIX §2)."""
    if len(manufacturer) != 3:
        raise ValueError("manufacturer code is 3 bytes")
    return b"\xfe" + manufacturer + unique[:13].rjust(13, b"\x00")


def _date_time_fields(local: datetime.datetime) -> tuple[int, int, int, int, int, int]:
    return (local.year, local.month, local.day, local.hour, local.minute, local.second)


class DeviceObject:
    """An ECHONET Lite object with a fixed property table.

    Subclasses add specs (`_specs`), keep stored values in `self._values` and override
    `_read_dynamic` for values computed at `now` and `_apply` for sets that act on something.
    """

    def __init__(
        self,
        eoj: Eoj,
        specs: Iterable[PropertySpec],
        *,
        manufacturer: bytes = b"\xff\xff\xff",
        tz_offset_s: int = 9 * 3600,
        remote_control: RemoteControlPolicy | None = None,
    ) -> None:
        if len(manufacturer) != 3:
            raise ValueError("manufacturer code is 3 bytes")
        self.eoj = eoj
        self.manufacturer = manufacturer
        self.tz_offset_s = tz_offset_s
        self.specs: dict[int, PropertySpec] = {s.epc: s for s in specs}
        for epc in MAP_EPCS:
            self.specs.setdefault(epc, PropertySpec(epc, f"property map 0x{epc:02X}", Access.GET))
        self._values: dict[int, bytes] = {}
        self._pending: list[int] = []
        self.remote_control = remote_control
        if remote_control is not None:  # optional super-class property 0x93 (guideline §5)
            self.specs[SuperEpc.REMOTE_CONTROL_SETTING] = PropertySpec(
                SuperEpc.REMOTE_CONTROL_SETTING,
                "remote control setting",
                Access.GET | Access.SET,
                (1,),
                values=remote_control.accepted(),
            )
            self._values[SuperEpc.REMOTE_CONTROL_SETTING] = bytes((remote_control.initial,))

    # --- maps ----------------------------------------------------------------------------

    def _epcs_with(self, access: Access) -> frozenset[int]:
        return frozenset(e for e, s in self.specs.items() if s.access & access)

    @property
    def get_map(self) -> frozenset[int]:
        return self._epcs_with(Access.GET)

    @property
    def set_map(self) -> frozenset[int]:
        return self._epcs_with(Access.SET)

    @property
    def inf_map(self) -> frozenset[int]:
        return self._epcs_with(Access.ANNO)

    # --- reads ---------------------------------------------------------------------------

    def local_time(self, now: float) -> datetime.datetime:
        """Local wall-clock time at engine time `now` (0x97/0x98); meters override this."""
        return datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=now + self.tz_offset_s)

    def read(self, epc: int, now: float) -> bytes | None:
        """The EDT of any property this object has (whatever its access rule), else None."""
        if epc not in self.specs:
            return None
        if epc == SuperEpc.INF_MAP:
            return encode_propmap(self.inf_map)
        if epc == SuperEpc.SET_MAP:
            return encode_propmap(self.set_map)
        if epc == SuperEpc.GET_MAP:
            return encode_propmap(self.get_map)
        if epc == SuperEpc.CURRENT_TIME:
            lt = self.local_time(now)
            return bytes((lt.hour, lt.minute))
        if epc == SuperEpc.CURRENT_DATE:
            lt = self.local_time(now)
            return lt.year.to_bytes(2, "big") + bytes((lt.month, lt.day))
        dynamic = self._read_dynamic(epc, now)
        if dynamic is not None:
            return dynamic
        return self._values.get(epc)

    def _read_dynamic(self, epc: int, now: float) -> bytes | None:
        return None

    def get(self, epc: int, now: float) -> bytes | None:
        """EDT for a Get request; None when the EPC is absent or not readable (-> Get_SNA)."""
        spec = self.specs.get(epc)
        if spec is None or not spec.access & Access.GET:
            return None
        return self.read(epc, now)

    # --- writes --------------------------------------------------------------------------

    def check(self, epc: int, edt: bytes) -> SetResult:
        """Whether a Set of `edt` would be accepted, without applying it."""
        spec = self.specs.get(epc)
        if spec is None or not spec.access & Access.SET:
            return SetResult(SetStatus.UNSUPPORTED, reason=f"EPC 0x{epc:02X} is not settable")
        if spec.sizes is not None and len(edt) not in spec.sizes:
            return SetResult(
                SetStatus.INVALID, reason=f"EPC 0x{epc:02X}: {len(edt)} bytes, want {spec.sizes}"
            )
        if spec.values is not None and (len(edt) != 1 or edt[0] not in spec.values):
            return SetResult(SetStatus.INVALID, reason=f"EPC 0x{epc:02X}: value not allowed")
        if spec.lo is not None or spec.hi is not None:
            v = int.from_bytes(edt, "big")
            if (spec.lo is not None and v < spec.lo) or (spec.hi is not None and v > spec.hi):
                return SetResult(
                    SetStatus.INVALID,
                    reason=f"EPC 0x{epc:02X}: {v} outside {spec.lo}..{spec.hi}",
                )
        reason = self._validate(epc, edt)
        if reason:
            return SetResult(SetStatus.INVALID, reason=reason)
        if self.operated_via_public_network and epc in self._local_only():
            return SetResult(
                SetStatus.REFUSED,
                reason=f"EPC 0x{epc:02X} is not operated through a public network (guideline §5)",
            )
        return SetResult(SetStatus.ACCEPTED)

    def begin_write(self, marks: Iterable[bytes]) -> None:
        """A write request is about to be applied; `marks` are the EDTs of the 0x93 properties
        it carries. Decides whether it is an operation through a public network (guideline §5,
        `RemoteControlPolicy`); nothing to do for an object without 0x93."""
        rc = self.remote_control
        if rc is None:
            return
        seen = set(marks)
        if bytes((RemoteControl.VIA_PUBLIC_NETWORK,)) in seen:
            state = RemoteControl.VIA_PUBLIC_NETWORK
        elif bytes((RemoteControl.NOT_VIA_PUBLIC_NETWORK,)) in seen:
            state = RemoteControl.NOT_VIA_PUBLIC_NETWORK
        else:
            state = rc.unmarked
            current = self._values.get(SuperEpc.REMOTE_CONTROL_SETTING, b"")
            if state is RemoteControl.NOT_VIA_PUBLIC_NETWORK and current in (b"\x61", b"\x62"):
                return  # the device's line report stays: a local operation restricts nothing
        self._values[SuperEpc.REMOTE_CONTROL_SETTING] = bytes((state,))

    def _local_only(self) -> frozenset[int]:
        rc = self.remote_control
        return frozenset() if rc is None else rc.local_only

    @property
    def operated_via_public_network(self) -> bool:
        """0x93 reads 0x42: the operation at hand comes through a public network (§5)."""
        value = self._values.get(SuperEpc.REMOTE_CONTROL_SETTING)
        return self.remote_control is not None and value == bytes(
            (RemoteControl.VIA_PUBLIC_NETWORK,)
        )

    def _validate(self, epc: int, edt: bytes) -> str:
        """Object-specific checks beyond size and range; a non-empty reason refuses the set."""
        return ""

    def clamp(self, epc: int, edt: bytes) -> bytes | None:
        """The nearest acceptable EDT for an out-of-range number (guideline §2.1), or None when
        the property has no numeric range or the EDT cannot be repaired."""
        spec = self.specs.get(epc)
        if spec is None or (spec.lo is None and spec.hi is None) or not edt:
            return None
        if spec.sizes is not None and len(edt) not in spec.sizes:
            return None
        v = int.from_bytes(edt, "big")
        if spec.lo is not None:
            v = max(v, spec.lo)
        if spec.hi is not None:
            v = min(v, spec.hi)
        return v.to_bytes(len(edt), "big")

    def set(self, epc: int, edt: bytes, now: float) -> SetResult:
        """Apply a SetI/SetC of one property; announced properties that change are queued for
        `pop_announcements`."""
        res = self.check(epc, edt)
        if not res.ok:
            logger.debug("set refused", extra={"eoj": str(self.eoj), "epc": epc, "why": res.reason})
            return res
        before = self.read(epc, now)
        self._apply(epc, bytes(edt), now)
        changed = self.read(epc, now) != before
        if changed and self.specs[epc].access & Access.ANNO:
            self._pending.append(epc)
        return SetResult(SetStatus.ACCEPTED, changed=changed)

    def _apply(self, epc: int, edt: bytes, now: float) -> None:
        self._values[epc] = edt

    def update(self, epc: int, edt: bytes) -> None:
        """A local change of a stored value (e.g. a fault); announced when it changes and the
        property is in the INF map."""
        if epc not in self.specs:
            raise KeyError(f"EPC 0x{epc:02X} is not a property of {self.eoj}")
        if self._values.get(epc) != edt:
            self._values[epc] = bytes(edt)
            if self.specs[epc].access & Access.ANNO:
                self._pending.append(epc)

    def pop_announcements(self) -> list[int]:
        """EPCs whose status changed since the last call (in order, without repeats)."""
        out = list(dict.fromkeys(self._pending))
        self._pending.clear()
        return out


def super_specs(extra_anno: Iterable[int] = ()) -> list[PropertySpec]:
    """The device super-class properties every device object has (APPENDIX table 2-1)."""
    anno = set(extra_anno)
    specs = [
        PropertySpec(0x80, "operation status", Access.GET | Access.ANNO, (1,)),
        PropertySpec(0x81, "installation location", Access.GET | Access.SET | Access.ANNO, (1,)),
        PropertySpec(0x82, "standard version information", Access.GET),
        PropertySpec(0x83, "identification number", Access.GET),
        PropertySpec(0x88, "fault status", Access.GET | Access.ANNO),
        PropertySpec(0x8A, "manufacturer code", Access.GET),
        PropertySpec(0x8D, "production number", Access.GET),
        PropertySpec(0x97, "current time setting", Access.GET),
        PropertySpec(0x98, "current date setting", Access.GET),
    ]
    return [
        PropertySpec(s.epc, s.name, s.access | Access.ANNO, s.sizes) if s.epc in anno else s
        for s in specs
    ]


def local_date_time(local: datetime.datetime, with_seconds: bool = True) -> bytes:
    """YYYY(2) MM DD hh mm [ss], the date-time layout of EA/EB/EC/ED/EE/EF/D0."""
    y, mo, d, h, mi, s = _date_time_fields(local)
    tail = (mo, d, h, mi, s) if with_seconds else (mo, d, h, mi)
    return y.to_bytes(2, "big") + bytes(tail)
