"""Interval-data collection, sans-IO: polled under concentrator control, or pushed by meters.

The collector sits beside the head-end's `C1222Client` (it issues reads through it and is handed
the client's events) and in front of the `Ingestor` (every reading goes through it, so storage is
idempotent and acknowledgement waits for durability). docs/collection.md has the account.

- **POLLED** (master/slave): after each interval boundary (+ `poll_delay_s`) every meter is due.
  Per cell (the concentrator's radio) at most `per_cell_outstanding` reads are in flight and new
  reads start at most `per_cell_rate` per second; meters are polled in turn (registration order),
  a failed read goes to the back of its cell's queue, `attempts` times per slot.
- **PUSHED**: meters write their newest intervals to the head-end at randomized offsets after the
  boundary (`meter.node.PushConfig`). The collector turns a push into readings and a tag; the
  caller holds the C12.22 reply (the meter's ack) until the Ingestor reports that tag durable
  (`take_durable`). At `boundary + push_grace_s` a meter whose newest interval is still missing
  gets a targeted poll (same throttled machinery).
- **Gaps and backfill**: the collector knows which intervals of each meter it has stored since
  the meter was added; every read asks for the whole missing run (oldest missing .. newest, at
  most `max_read_intervals`) with a partial read of the load-profile table at the right offset.
  The table's header is read in the same EPSEM, so the offset->time mapping is exact even when
  the meter's table is shorter than assumed or its clock crossed a boundary meanwhile.
- **On demand**: `read_registers(meter_id, now)` reads ST23 at the front of the cell's queue.

Statistics per slot (the interval ending at a boundary): which meters' reading became durable
when, and by which path (push, poll, targeted, backfill) -- what sim/fleet.py reports.
"""

from __future__ import annotations

import functools
import heapq
import logging
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from amistack.addr import Addr
from amistack.c1222.acse import ApTitle
from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.events import C1222Event, RequestReceived, RequestTimedOut, ResponseReceived
from amistack.c1222.services import Read, ReadResult, ResponseCode, Write
from amistack.c1222.tables import (
    LP_INTERVALS,
    CurrentRegisters,
    LoadProfile,
    Table,
    decode_ltime,
    unpack_intervals,
)
from amistack.headend.ingest import Ingestor, IngestReport
from amistack.headend.schema import IntervalReading

log = logging.getLogger(__name__)

_TABLE_FOR_MINUTES = {m: t for t, m in LP_INTERVALS.items()}
_MINUTES_FOR_TABLE = {int(t): m for t, m in LP_INTERVALS.items()}


class Mode(StrEnum):
    POLLED = "polled"
    PUSHED = "pushed"


@dataclass(frozen=True)
class CollectorConfig:
    mode: Mode = Mode.POLLED
    interval_minutes: int = 15
    poll_delay_s: float = 5.0  # polled: start this long after the boundary
    per_cell_outstanding: int = 4  # reads in flight per cell
    per_cell_rate: float = 10.0  # read starts per second per cell
    attempts: int = 3  # per meter and slot (each with the C12.22 engine's own retries)
    request_timeout: float = 5.0
    request_retries: int = 1
    push_grace_s: float = 360.0  # pushed: not heard by boundary + this -> targeted poll
    lookback_intervals: int = 96  # gap detection window
    max_read_intervals: int = 96
    retention_days: int = 30  # the meters' load-profile length, until a header says otherwise

    def __post_init__(self) -> None:
        if self.interval_minutes not in _TABLE_FOR_MINUTES:
            raise ValueError("interval_minutes must be 15 or 30")
        if self.per_cell_outstanding < 1 or self.per_cell_rate <= 0 or self.attempts < 1:
            raise ValueError("per-cell limits and attempts must be positive")


@dataclass(frozen=True)
class MeterTarget:
    meter_id: str
    ap_title: ApTitle
    addr: Addr | None  # None: learned from the meter's first push
    cell: str = ""


@dataclass(frozen=True, slots=True)  # a head-end keeps one per meter and kept slot
class Delivery:
    """One reading of one slot became durable."""

    at: float
    via: str  # push | poll | targeted | backfill | on-demand


@dataclass
class SlotStats:
    boundary: int  # end of the interval (epoch s)
    expected: set[str] = field(default_factory=set)
    delivered: dict[str, Delivery] = field(default_factory=dict)


class _Starts:
    """Stored interval starts on the `step` grid, as the bits of an int from the oldest kept
    (bit k: `(base + k) * step`): a meter's lookback window in tens of bytes where a set of
    ints takes ~3.5 KB (a head-end keeps one per meter). Starts off the grid are not kept: the
    lookback window (`Collector._missing`) asks only for starts on it."""

    __slots__ = ("base", "bits", "step")

    def __init__(self, step: int, starts: Iterable[int] = ()) -> None:
        self.step = step
        self.base = 0
        self.bits = 0
        for s in starts:
            self.add(s)

    def __contains__(self, start: object) -> bool:
        if not isinstance(start, int) or start % self.step:
            return False
        k = start // self.step - self.base
        return k >= 0 and bool(self.bits >> k & 1)

    def __bool__(self) -> bool:
        return self.bits != 0

    def absent(self, starts: range) -> list[int]:
        """The starts of `starts` that are not kept, oldest first. A window on the grid (every
        lookback is) is answered from its bits at once, not by a look-up per start: a
        lookback is up to `lookback_intervals` starts, asked at every slot and every read, and
        usually one start or none is absent."""
        first, step, n = starts.start, self.step, len(starts)
        if first % step or (n > 1 and starts.step != step):
            return [s for s in starts if s not in self]
        k = first // step - self.base
        window = self.bits >> k if k >= 0 else self.bits << -k
        holes = ~window & ((1 << n) - 1)  # bit j: start `first + j * step` is not kept
        out = []
        while holes:
            low = holes & -holes
            out.append(first + (low.bit_length() - 1) * step)
            holes ^= low
        return out

    def add(self, start: int) -> None:
        if start % self.step:
            return
        k = start // self.step
        if not self.bits:
            self.base = k
        elif k < self.base:
            self.bits <<= self.base - k
            self.base = k
        self.bits |= 1 << (k - self.base)

    def oldest(self) -> int:
        """The oldest start kept (there must be one)."""
        return (self.base + (self.bits & -self.bits).bit_length() - 1) * self.step

    def forget_before(self, horizon: int) -> None:
        k = -(-horizon // self.step)  # the first grid start at or after the horizon
        if self.bits and k > self.base:
            self.bits >>= k - self.base
            self.base = k


@dataclass
class _Meter:
    target: MeterTarget
    since: int  # first interval start we expect from it
    have: _Starts  # stored interval starts (the lookback window's)
    pending: set[int] = field(default_factory=set)
    n_intervals: int | None = None
    attempts: int = 0
    queued: bool = False
    in_flight: int | None = None


@dataclass
class _Cell:
    index: int  # in the order cells were added (the order they are served in an instant)
    queue: deque[tuple[str, str]] = field(default_factory=deque)  # (meter id, reason)
    outstanding: int = 0
    next_start: float = 0.0
    reads: int = 0
    armed_at: float | None = None  # the next_start of its entry in Collector._ready


class _Read(NamedTuple):  # one per read in flight: a tuple builds faster than a dataclass
    meter_id: str
    reason: str
    first: int  # table index asked for
    intervals: int  # how many asked for
    boundary: int  # the slot the read was made for


class _Tag(NamedTuple):  # one per ingest submission: a tuple builds faster than a dataclass
    meter_id: str
    starts: tuple[int, ...]
    via: str
    boundary: int


@dataclass(frozen=True)
class RegisterRead:
    """The answer to `read_registers` (None: no answer)."""

    meter_id: str
    request_id: int
    registers: CurrentRegisters | None


@functools.lru_cache(maxsize=256)
def _lp_reads(table: int, first: int, count: int) -> tuple[Read, Read]:
    """The EPSEM of a load-profile read: its header, and `count` intervals from index `first`.
    `Read`s are immutable and a fleet's reads are nearly all alike (the newest interval of an
    equally long table): shared, not built (and checked) anew for every read."""
    return (
        Read(table, 0, LoadProfile.HEADER),
        Read(
            table,
            LoadProfile.HEADER + first * LoadProfile.INTERVAL_SIZE,
            count * LoadProfile.INTERVAL_SIZE,
        ),
    )


def parse_lp_header(data: bytes) -> tuple[int, int, float]:
    """(interval minutes, number of intervals, end time) from a load-profile table header."""
    if len(data) < LoadProfile.HEADER:
        raise C1222DecodeError(len(data), "load profile header truncated")
    return data[0], int.from_bytes(data[1:3], "little"), decode_ltime(data[3:9], 3)


class Collector:
    """See the module docstring. `client` is the head-end's `C1222Client` (anything with
    `request(addr, peer, requests, now, timeout=, retries=) -> id`); `send_key_byte(ap device
    id, now)` names the key generation polled readings will be recorded under."""

    def __init__(
        self,
        config: CollectorConfig,
        client: object,
        ingestor: Ingestor,
        now: float,
        *,
        send_key_byte: Callable[[bytes, float], int | None] | None = None,
    ) -> None:
        self.config = config
        # after a boundary the slot opens this much later (asked with every timer: once here)
        self._slot_delay = (
            config.poll_delay_s if config.mode == Mode.POLLED else config.push_grace_s
        )
        self.client = client
        self.ingestor = ingestor
        self.send_key_byte = send_key_byte
        self.step = config.interval_minutes * 60
        self._lookback_span = (config.lookback_intervals - 1) * self.step  # oldest to newest
        self.table = _TABLE_FOR_MINUTES[config.interval_minutes]
        self.counters: Counter[str] = Counter()
        self.slots: dict[int, SlotStats] = {}
        self.register_reads: deque[RegisterRead] = deque()
        self._meters: dict[str, _Meter] = {}
        self._by_ap: dict[bytes, str] = {}
        self._cells: dict[str, _Cell] = {}
        self._cell_list: list[_Cell] = []  # by index
        # (next_start, cell index) of the cells that may start a read (reads queued, fewer
        # than per_cell_outstanding in flight), a heap with stale entries skipped: the next
        # start costs O(log cells), not a walk over every cell (a head-end has thousands)
        self._ready: list[tuple[float, int]] = []
        self._reads: dict[int, _Read] = {}
        self._register_reqs: dict[int, str] = {}
        self._tags: dict[int, _Tag] = {}
        self._next_tag = 1
        self._durable: list[Hashable] = []
        self._store_retry: float | None = None  # after a failed store (disk full, DB down)
        self.store_retry_s = 1.0
        self.keep_slots = 192  # slot statistics kept (two days of 15-minute slots)
        self._next_boundary = self._boundary_after(now)

    # -- meters ------------------------------------------------------------------------------

    def _boundary_after(self, t: float) -> int:
        return (int(t) // self.step + 1) * self.step

    def add_meter(self, target: MeterTarget, now: float, stored: Iterable[int] = ()) -> None:
        """Collect `target` from the next boundary on (the interval ending there is its first).
        `stored`: interval starts already in the repository (a restarted head-end): then the
        lookback window before them is expected too, so what was missed while down is
        backfilled."""
        since = self._boundary_after(now) - self.step
        have = _Starts(self.step, stored)
        if have:
            since = max(have.oldest(), since - (self.config.lookback_intervals - 1) * self.step)
        self._meters[target.meter_id] = _Meter(target, since, have)
        self._by_ap[target.ap_title.device_id] = target.meter_id
        if target.cell not in self._cells:
            cell = self._cells[target.cell] = _Cell(len(self._cell_list))
            self._cell_list.append(cell)

    def remove_meter(self, meter_id: str) -> None:
        m = self._meters.pop(meter_id, None)
        if m is not None:
            self._by_ap.pop(m.target.ap_title.device_id, None)

    def set_address(self, meter_id: str, addr: Addr) -> bool:
        """The meter is at `addr` now (it moved: a mesh meter re-parented into another DODAG
        takes that DODAG's prefix); what it holds and misses is kept. False: not collected."""
        m = self._meters.get(meter_id)
        if m is None:
            return False
        if m.target.addr != addr:
            m.target = MeterTarget(m.target.meter_id, m.target.ap_title, addr, m.target.cell)
            self.counters["address-changed"] += 1
        return True

    def meter_ids(self) -> list[str]:
        return list(self._meters)

    def knows(self, ap_device_id: bytes) -> bool:
        """Whether a message from this AP title (absolute, `ApTitle.device_id`) is a meter's."""
        return ap_device_id in self._by_ap

    def target(self, meter_id: str) -> MeterTarget | None:
        m = self._meters.get(meter_id)
        return None if m is None else m.target

    def missing(self, meter_id: str, now: float) -> list[int]:
        """Interval starts expected from the meter (lookback window) and not stored or pending."""
        return self._missing(self._meters[meter_id], now)

    def _missing(self, m: _Meter, now: float) -> list[int]:
        step = self.step
        newest = (int(now) // step - 1) * step
        oldest = max(m.since, newest - self._lookback_span)  # the lookback window
        absent = m.have.absent(range(oldest, newest + 1, step))
        return [s for s in absent if s not in m.pending] if m.pending else absent

    # -- timers ------------------------------------------------------------------------------

    def _slot_time(self) -> float:
        return self._next_boundary + self._slot_delay

    def get_timer(self) -> float | None:
        best = self._next_boundary + self._slot_delay  # `_slot_time`, asked after every datagram
        t = self.ingestor.get_timer()
        if t is not None:
            t = t if self._store_retry is None else max(t, self._store_retry)
            best = min(best, t)
        heap = self._ready
        while heap:
            at, index = heap[0]
            cell = self._cell_list[index]
            if self._can_start(cell, at):
                return min(best, at)
            heapq.heappop(heap)
            if cell.armed_at == at:
                cell.armed_at = None
        return best

    def _can_start(self, cell: _Cell, at: float) -> bool:
        """Whether the heap entry `at` of `cell` is current: it may start a read then."""
        return (
            bool(cell.queue)
            and cell.outstanding < self.config.per_cell_outstanding
            and cell.next_start == at
        )

    def _arm(self, cell: _Cell) -> None:
        """Keep `_ready` holding the cell's next start while it may start a read."""
        if (
            cell.queue
            and cell.outstanding < self.config.per_cell_outstanding
            and cell.armed_at != cell.next_start
        ):
            heapq.heappush(self._ready, (cell.next_start, cell.index))
            cell.armed_at = cell.next_start

    def handle_timer(self, now: float) -> None:
        while self._slot_time() <= now:
            self._open_slot(self._next_boundary, now)
            self._next_boundary += self.step
        if self._store_retry is None or now >= self._store_retry:
            self._ingest(self.ingestor.handle_timer, now)
        self._pump(now)

    def _ingest(self, call: Callable[..., IngestReport | None], now: float, *args: Any) -> None:
        """Run an Ingestor call that may store, `call(*args, now)` (a bound method: no closure
        per push); a failed store acknowledges nothing, keeps the submissions pending and is
        retried after `store_retry_s`."""
        try:
            report = call(*args, now)
        except Exception:
            self.counters["store-failed"] += 1
            self._store_retry = now + self.store_retry_s
            log.exception("storing readings failed; nothing acknowledged, retrying")
            return
        self._store_retry = None
        if report is not None:
            self._on_report(report, now)

    def _open_slot(self, boundary: int, now: float) -> None:
        slot = self.slots.setdefault(boundary, SlotStats(boundary))
        reason = "poll" if self.config.mode == Mode.POLLED else "targeted"
        horizon = boundary - (self.config.lookback_intervals + 1) * self.step
        for old in [b for b in self.slots if b < boundary - self.keep_slots * self.step]:
            del self.slots[old]
        for meter_id, m in self._meters.items():
            m.have.forget_before(horizon)
            if m.since < boundary:
                slot.expected.add(meter_id)
            if self._missing(m, now):
                m.attempts = 0
                self._enqueue(m, reason)

    def _enqueue(self, m: _Meter, reason: str, front: bool = False) -> None:
        if m.queued or m.in_flight is not None:
            return
        m.queued = True
        cell = self._cells[m.target.cell]
        if front:
            cell.queue.appendleft((m.target.meter_id, reason))
        else:
            cell.queue.append((m.target.meter_id, reason))
        self._arm(cell)

    def _pump(self, now: float) -> None:
        heap = self._ready
        if not heap or heap[0][0] > now:  # the usual call (after each answer): no cell due
            return
        lim = self.config.per_cell_outstanding
        gap = 1.0 / self.config.per_cell_rate
        due: set[int] = set()
        while heap and heap[0][0] <= now:  # the cells that may start a read now
            at, index = heapq.heappop(heap)
            cell = self._cell_list[index]
            if cell.armed_at == at:
                cell.armed_at = None
            if self._can_start(cell, at):
                due.add(index)
        for cell in [self._cell_list[i] for i in sorted(due)]:
            while cell.queue and cell.outstanding < lim and cell.next_start <= now:
                meter_id, reason = cell.queue.popleft()
                m = self._meters.get(meter_id)
                if m is None:
                    continue
                m.queued = False
                if reason == "registers":
                    rid = self._request(m, [Read(Table.CURRENT_REGISTER_DATA)], now)
                    if rid is not None:
                        self._register_reqs[rid] = meter_id
                else:
                    rid = self._start_read(m, reason, now)
                if rid is None:
                    continue
                m.in_flight = rid
                cell.outstanding += 1
                cell.reads += 1
                cell.next_start = max(now, cell.next_start) + gap
            self._arm(cell)

    def _request(self, m: _Meter, requests: Sequence[Read], now: float) -> int | None:
        addr = m.target.addr
        if addr is None:
            self.counters["no-address"] += 1
            return None
        try:
            rid: int = self.client.request(  # type: ignore[attr-defined]
                addr,
                m.target.ap_title,
                requests,
                now,
                timeout=self.config.request_timeout,
                retries=self.config.request_retries,
            )
        except ValueError as exc:  # no send key yet, or too many outstanding
            self.counters["request-refused"] += 1
            log.info("read of %s not sent: %s", m.target.meter_id, exc)
            return None
        self.counters["requests"] += 1
        return rid

    def _start_read(self, m: _Meter, reason: str, now: float) -> int | None:
        missing = self._missing(m, now)
        if not missing:
            return None
        missing = missing[-self.config.max_read_intervals :]
        newest = (int(now) // self.step - 1) * self.step
        count = (newest - missing[0]) // self.step + 1
        n_table = m.n_intervals or self.config.retention_days * 86400 // self.step
        count = min(count, n_table)
        first = n_table - count
        rid = self._request(m, _lp_reads(self.table, first, count), now)
        if rid is not None:
            boundary = newest + self.step
            self._reads[rid] = _Read(m.target.meter_id, reason, first, count, boundary)
        return rid

    # -- on demand ------------------------------------------------------------------------------

    def read_registers(self, meter_id: str, now: float) -> None:
        """Read the meter's current registers (ST23) ahead of its cell's queue; the answer is
        appended to `register_reads`."""
        m = self._meters[meter_id]
        m.queued = True
        cell = self._cells[m.target.cell]
        cell.queue.appendleft((meter_id, "registers"))
        self._arm(cell)
        self._pump(now)

    def backfill(self, meter_id: str, now: float) -> None:
        """Read the meter's missing intervals now (ahead of its cell's queue)."""
        m = self._meters[meter_id]
        m.attempts = 0
        self._enqueue(m, "backfill", front=True)
        self._pump(now)

    # -- events ------------------------------------------------------------------------------

    def handle_event(self, ev: C1222Event, now: float) -> Hashable | None:
        """Feed a client event. For a meter's push returns the ingest tag: hold that message's
        C12.22 reply until `take_durable` names the tag."""
        if isinstance(ev, RequestReceived):
            return self._on_push(ev, now)
        rid = ev.request_id
        if rid in self._register_reqs:
            self._on_registers(ev, now)
        elif rid in self._reads:
            self._on_read(self._reads.pop(rid), ev, now)
        return None

    def _done(self, meter_id: str, now: float) -> _Meter | None:
        m = self._meters.get(meter_id)
        if m is None:
            return None
        m.in_flight = None
        cell = self._cells[m.target.cell]
        cell.outstanding -= 1
        self._arm(cell)
        return m

    def _on_registers(self, ev: ResponseReceived | RequestTimedOut, now: float) -> None:
        meter_id = self._register_reqs.pop(ev.request_id)
        self._done(meter_id, now)
        regs = None
        if isinstance(ev, ResponseReceived) and ev.ok:
            try:
                regs = CurrentRegisters.decode(ReadResult.decode(ev.responses[0].data).data)
            except C1222DecodeError:
                self.counters["decode-error"] += 1
        self.register_reads.append(RegisterRead(meter_id, ev.request_id, regs))
        self._pump(now)

    def _on_read(self, rd: _Read, ev: ResponseReceived | RequestTimedOut, now: float) -> None:
        m = self._done(rd.meter_id, now)
        if m is None:
            return
        if isinstance(ev, RequestTimedOut) or not ev.responses or not ev.responses[0].ok:
            self.counters["read-failed"] += 1
            m.attempts += 1
            if m.attempts < self.config.attempts:
                self._enqueue(m, rd.reason)
            else:
                self.counters["read-gave-up"] += 1
            self._pump(now)
            return
        try:
            _, n_hdr, end = parse_lp_header(ReadResult.decode(ev.responses[0].data).data)
            if len(ev.responses) < 2 or not ev.responses[1].ok:
                if len(ev.responses) == 2 and ev.responses[1].code == ResponseCode.ONP:
                    m.n_intervals = n_hdr  # the table is shorter than assumed: ask again
                    self.counters["table-resized"] += 1
                    self._enqueue(m, rd.reason, front=True)
                else:
                    self.counters["read-failed"] += 1
                self._pump(now)
                return
            packed = ReadResult.decode(ev.responses[1].data).data
            if len(packed) % LoadProfile.INTERVAL_SIZE:  # decode_intervals' check
                raise C1222DecodeError(len(packed), "not a whole number of intervals")
        except C1222DecodeError:
            self.counters["decode-error"] += 1
            self._pump(now)
            return
        m.n_intervals = n_hdr
        key = 0
        if self.send_key_byte is not None:
            key = self.send_key_byte(m.target.ap_title.device_id, now) or 0
        # the intervals as (status, value) tuples, not `Interval`s (as a push's, `_on_push`)
        meter_id, minutes, step = m.target.meter_id, self.config.interval_minutes, self.step
        first = int(end) - (n_hdr - rd.first) * step  # start of the first interval read
        readings = [
            IntervalReading(meter_id, first + j * step, minutes, value, 0, status, key)
            for j, (status, value) in enumerate(unpack_intervals(packed))
        ]
        self.counters["polled-readings"] += len(readings)
        self._submit(m, readings, rd.reason, rd.boundary, now)
        self._pump(now)

    def _on_push(self, ev: RequestReceived, now: float) -> Hashable | None:
        requests, responses = ev.requests, ev.responses
        if len(requests) != 1 or not isinstance(w := requests[0], Write):
            return None
        minutes = _MINUTES_FOR_TABLE.get(w.table)
        if minutes is None or not responses or not responses[0].ok:
            return None
        meter_id = self._by_ap.get(ev.peer.device_id)
        m = self._meters.get(meter_id) if meter_id is not None else None
        if m is None:
            self.counters["push-unknown-meter"] += 1
            return None
        if m.target.addr != ev.addr:
            m.target = MeterTarget(m.target.meter_id, m.target.ap_title, ev.addr, m.target.cell)
        data = w.data
        try:  # LoadProfile.decode's checks, without building the profile's objects
            lp_minutes, n, end = parse_lp_header(data)
            packed = data[LoadProfile.HEADER : LoadProfile.HEADER + n * LoadProfile.INTERVAL_SIZE]
            if len(packed) != n * LoadProfile.INTERVAL_SIZE:
                raise C1222DecodeError(len(data), "load profile truncated")
        except C1222DecodeError:
            self.counters["decode-error"] += 1
            return None
        if lp_minutes != minutes:
            self.counters["push-bad-interval"] += 1
            return None
        meter_id, key_id, length = m.target.meter_id, ev.key_id or 0, minutes * 60
        readings = [
            IntervalReading(
                meter_id, int(end - (n - i) * length), minutes, value, 0, status, key_id
            )
            for i, (status, value) in enumerate(unpack_intervals(packed))
        ]
        self.counters["pushes"] += 1
        self.counters["pushed-readings"] += len(readings)
        boundary = (int(now) // self.step) * self.step
        return self._submit(m, readings, "push", boundary, now)

    # -- ingest --------------------------------------------------------------------------------

    def _submit(
        self, m: _Meter, readings: list[IntervalReading], via: str, boundary: int, now: float
    ) -> int:
        tag = self._next_tag
        self._next_tag += 1
        step_min = self.step // 60
        starts = tuple([r.interval_start for r in readings if r.length_min == step_min])
        have = m.have
        for s in starts:
            if s not in have:
                m.pending.add(s)
        self._tags[tag] = _Tag(m.target.meter_id, starts, via, boundary)
        self._ingest(self.ingestor.submit, now, tag, readings)
        return tag

    def flush(self, now: float) -> None:
        """Make everything submitted durable now (shutdown, tests)."""
        if self.ingestor.pending or self._tags:
            self._ingest(self.ingestor.flush, now)

    def _on_report(self, report: IngestReport, now: float) -> None:
        # a batch's deliveries are all at `now`: one (frozen) `Delivery` per way, shared by
        # every meter and slot of the batch rather than one object per reading
        made: dict[str, Delivery] = {}
        step = self.step
        for tag in report.durable:
            self._durable.append(tag)
            info = self._tags.pop(tag, None) if isinstance(tag, int) else None
            if info is None:
                continue
            m = self._meters.get(info.meter_id)
            for s in info.starts:
                if m is not None:
                    m.pending.discard(s)
                    if s >= m.since:
                        m.have.add(s)
                slot = self.slots.get(s + step)
                if slot is None:
                    slot = self.slots[s + step] = SlotStats(s + step)
                if info.meter_id not in slot.delivered:
                    via = info.via
                    if s + step < info.boundary and via != "push":
                        via = "backfill"
                    d = made.get(via)
                    if d is None:
                        d = made[via] = Delivery(now, via)
                    slot.delivered[info.meter_id] = d

    @property
    def has_durable(self) -> bool:
        """Whether `take_durable` has something (asked after every datagram: no list built)."""
        return bool(self._durable)

    def take_durable(self) -> list[Hashable]:
        """Ingest tags made durable since the last call (release the held push acks)."""
        out, self._durable = self._durable, []
        return out

    # -- reporting -----------------------------------------------------------------------------

    def cell_reads(self) -> dict[str, int]:
        return {name: c.reads for name, c in self._cells.items()}

    def outstanding(self) -> int:
        return sum(c.outstanding for c in self._cells.values())

    def queued(self) -> int:
        return sum(len(c.queue) for c in self._cells.values())


def expected_meters(slots: Iterable[SlotStats]) -> int:
    return sum(len(s.expected) for s in slots)


__all__ = [
    "Collector",
    "CollectorConfig",
    "Delivery",
    "MeterTarget",
    "Mode",
    "RegisterRead",
    "SlotStats",
    "parse_lp_header",
]
