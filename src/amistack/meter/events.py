"""The meter's typed event streams: what goes into the event log, and what network access did.

Each event is a small frozen dataclass with the time it happened (`time`, seconds since the Unix
epoch, the meter's clock) and maps onto one `amistack.eventlog.record.EventType` with a compact,
documented binary `data()` payload, so a meter appends it with
``log.append(ev.event_type, ev.data(), ev.time)``.

Power failures and cover openings come from the metering model (seeded); switch operations from the
remote switch; clock adjustments, authentication failures and key rotations are recorded by the
meter composition through `EventQueue.record`.

The access events at the end (`AccessGranted` ...) are what `meter.access.MeterAccess` reports:
sessions and key generations, carrying the key ring's own events (`keymgmt.events`, no key
material); they are not log records themselves.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

from amistack.eventtypes import EventType
from amistack.keymgmt.events import KeyEvent


class SwitchReason(IntEnum):
    """Why the relay moved (one byte in SWITCH_OPENED/SWITCH_CLOSED data)."""

    REMOTE = 1  # a head-end command
    LOAD_LIMIT = 2  # demand-response load limit exceeded: trip
    BUTTON = 3  # the customer pressed the button on an armed meter
    LOCAL = 4  # a technician on site


@dataclass(frozen=True, slots=True)
class PowerFail:
    time: float

    @property
    def event_type(self) -> EventType:
        return EventType.POWER_FAIL

    def data(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class PowerRestore:
    time: float
    outage_s: float  # how long the supply was lost

    @property
    def event_type(self) -> EventType:
        return EventType.POWER_RESTORE

    def data(self) -> bytes:
        """u32 outage duration in seconds."""
        return struct.pack(">I", min(int(self.outage_s), 0xFFFFFFFF))


@dataclass(frozen=True, slots=True)
class CoverOpen:
    time: float

    @property
    def event_type(self) -> EventType:
        return EventType.COVER_OPEN

    def data(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class CoverClose:
    time: float

    @property
    def event_type(self) -> EventType:
        return EventType.COVER_CLOSE

    def data(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class SwitchOperated:
    time: float
    closed: bool  # relay state after the operation
    reason: SwitchReason
    operations: int  # the relay's operation counter after this one

    @property
    def event_type(self) -> EventType:
        return EventType.SWITCH_CLOSED if self.closed else EventType.SWITCH_OPENED

    def data(self) -> bytes:
        """u8 reason | u32 operation counter."""
        return struct.pack(">BI", int(self.reason), self.operations & 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class ClockAdjusted:
    time: float  # the clock after the adjustment
    delta_s: float  # new - old

    @property
    def event_type(self) -> EventType:
        return EventType.CLOCK_ADJUSTED

    def data(self) -> bytes:
        """i64 adjustment in milliseconds."""
        return struct.pack(">q", round(self.delta_s * 1000))


@dataclass(frozen=True, slots=True)
class AuthFailure:
    time: float
    peer: bytes  # who failed (AP title, PANA peer id, ...), at most 64 bytes kept
    reason: str = ""

    @property
    def event_type(self) -> EventType:
        return EventType.AUTH_FAILURE

    def data(self) -> bytes:
        """u8 peer length | peer | reason (UTF-8, at most 200 bytes)."""
        peer = self.peer[:64]
        return bytes([len(peer)]) + peer + self.reason.encode()[:200]


@dataclass(frozen=True, slots=True)
class KeyRotated:
    time: float
    generation: int  # the new key id (UKMF KeyId.generation)

    @property
    def event_type(self) -> EventType:
        return EventType.KEY_ROTATED

    def data(self) -> bytes:
        """u32 key generation."""
        return struct.pack(">I", self.generation & 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class ReverseFlowStarted:
    time: float

    @property
    def event_type(self) -> EventType:
        return EventType.REVERSE_FLOW

    def data(self) -> bytes:
        return b""


MeterEvent = (
    PowerFail
    | PowerRestore
    | CoverOpen
    | CoverClose
    | SwitchOperated
    | ClockAdjusted
    | AuthFailure
    | KeyRotated
    | ReverseFlowStarted
)


@dataclass(order=True)
class _Queued:
    time: float
    seq: int
    event: MeterEvent = field(compare=False)


class EventQueue:
    """Time-ordered events waiting for the event log (sans-IO: `next_event()` drains it)."""

    def __init__(self) -> None:
        self._heap: list[_Queued] = []
        self._seq = 0

    def record(self, event: MeterEvent) -> None:
        heapq.heappush(self._heap, _Queued(event.time, self._seq, event))
        self._seq += 1

    def extend(self, events: Iterable[MeterEvent]) -> None:
        for ev in events:
            self.record(ev)

    def next_event(self, now: float | None = None) -> MeterEvent | None:
        """The oldest queued event (with `now`: only one that happened at or before `now`)."""
        if not self._heap or (now is not None and self._heap[0].time > now):
            return None
        return heapq.heappop(self._heap).event

    def __len__(self) -> int:
        return len(self._heap)


# -- network access (meter.access) --------------------------------------------------------------


@dataclass(frozen=True)
class AccessGranted:
    """A (re-)authentication succeeded and its key generation is installed in the key ring."""

    device_id: str
    session_id: int
    key_id: int
    lifetime: float
    reauth: bool
    key_events: tuple[KeyEvent, ...] = ()  # what the meter's key ring did

    def __str__(self) -> str:
        what = "keys rotated" if self.reauth else "authenticated"
        return (
            f"{self.device_id}: {what}, session {self.session_id:#010x} key id {self.key_id} "
            f"lifetime {self.lifetime:g} s"
        )


@dataclass(frozen=True)
class AccessRefused:
    """The authentication failed (the PAA refused, or the run could not complete)."""

    device_id: str
    session_id: int
    reason: str
    result_code: int

    def __str__(self) -> str:
        return (
            f"{self.device_id}: authentication failed ({self.reason}, result code "
            f"{self.result_code})"
        )


@dataclass(frozen=True)
class AccessLost:
    """The session ended (PTR from either side, lifetime expiry, retransmission give-up); its
    keys only decrypt for the overlap window from now on."""

    device_id: str
    session_id: int
    reason: str
    by_peer: bool
    key_events: tuple[KeyEvent, ...] = ()

    def __str__(self) -> str:
        return f"{self.device_id}: session ended: {self.reason}"


@dataclass(frozen=True)
class RetryScheduled:
    """A new session starts after `pause` seconds (back-off with jitter)."""

    device_id: str
    pause: float

    def __str__(self) -> str:
        return f"{self.device_id}: new session in {self.pause:.3g} s"


@dataclass(frozen=True)
class KeysChanged:
    """The key ring acted on its own timer (expired generations wiped)."""

    device_id: str
    key_events: tuple[KeyEvent, ...]


@dataclass(frozen=True)
class GroupKeysChanged:
    """The mesh group keys the meter holds changed: a delivery was accepted (with a PANA
    success) or keys reached their end (`dropped` key indexes). `keys`: (key index, not_before,
    not_after) of each key now held; never key material."""

    device_id: str
    pan_id: int
    serial: int
    keys: tuple[tuple[int, float, float], ...]
    dropped: tuple[int, ...] = ()

    def __str__(self) -> str:
        held = ", ".join(f"index {i} {nb:.0f}..{na:.0f}" for i, nb, na in self.keys)
        return f"{self.device_id}: group keys of PAN {self.pan_id:#06x} #{self.serial}: {held}"


@dataclass(frozen=True)
class GroupKeysRefused:
    """A group key delivery was refused (`kind`: malformed, unwrap, stale, foreign-pan)."""

    device_id: str
    kind: str
    reason: str


AccessEvent = (
    AccessGranted
    | AccessRefused
    | AccessLost
    | RetryScheduled
    | KeysChanged
    | GroupKeysChanged
    | GroupKeysRefused
)
