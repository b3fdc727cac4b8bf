"""A virtual clock with its own event queue: time jumps from event to event, nothing sleeps.

Callbacks scheduled for the same instant run in the order they were scheduled, so a run is a
pure function of its inputs (and of the seeds handed to the engines and the network).
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable
from heapq import heappop, heappush

logger = logging.getLogger(__name__)


class SimulationStalled(RuntimeError):
    """More callbacks ran at one instant than `max_per_instant`: something loops in zero time."""


class TimerHandle:
    """A scheduled callback; `cancel()` makes it a no-op (it stays in the heap until due)."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


# A heap is rebuilt without its cancelled entries when they are more than half of it and
# at least this many (each keeps its callback until due: hours for a meter's re-armed timers).
COMPACT_MIN = 4096


class VirtualClock:
    """Simulated time plus a heap of callbacks ordered by (time, scheduling order)."""

    def __init__(self, start: float = 0.0, max_per_instant: int = 1_000_000) -> None:
        self._now = float(start)
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._cancelled = 0  # about how many entries are cancelled (through `cancel`)
        self.max_per_instant = max_per_instant
        self.callbacks_run = 0

    @property
    def now(self) -> float:
        return self._now

    def time(self) -> float:
        """Same as `now`, shaped like `asyncio.AbstractEventLoop.time`."""
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Run `callback` at `when` (at the current time if `when` is already past)."""
        if when < self._now:  # (not max(): a fleet schedules ~10 callbacks per reading)
            when = self._now
        handle = TimerHandle(when, callback)
        heappush(self._heap, (when, next(self._seq), handle))
        return handle

    def cancel(self, handle: TimerHandle) -> None:
        """`handle.cancel()`, counted: a heap mostly of cancelled entries (a fleet's hosts
        re-arm their timers all the time) is rebuilt without them, in the same order."""
        if handle.cancelled:
            return
        handle.cancel()
        self._cancelled += 1
        if self._cancelled >= COMPACT_MIN and 2 * self._cancelled > len(self._heap):
            # in place: `run_until` holds the list while callbacks (which cancel) run
            self._heap[:] = [e for e in self._heap if not e[2].cancelled]
            heapq.heapify(self._heap)  # (time, sequence) keys are unique: the same order
            self._cancelled = 0

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self.call_at(self._now + max(delay, 0.0), callback)

    def next_time(self) -> float | None:
        """When the next live callback is due, or None if nothing is scheduled."""
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
            self._cancelled = max(0, self._cancelled - 1)
        return self._heap[0][0] if self._heap else None

    def pending(self) -> int:
        return sum(1 for _, _, h in self._heap if not h.cancelled)

    def step(self) -> bool:
        """Run every callback due at the next instant; False if nothing was scheduled."""
        when = self.next_time()
        if when is None:
            return False
        self._now = when
        ran = 0
        while self._heap and self._heap[0][0] <= when:
            _, _, handle = heapq.heappop(self._heap)
            if handle.cancelled:
                self._cancelled = max(0, self._cancelled - 1)
                continue
            ran += 1
            if ran > self.max_per_instant:
                raise SimulationStalled(f"more than {self.max_per_instant} callbacks at t={when}")
            handle.callback()
        self.callbacks_run += ran
        return True

    def run_until(self, t: float) -> None:
        """Run everything due up to and including `t`, then stand at `t`.

        What `step()` until `t` does, in one loop: the simulator spends most of its run here
        (a fleet's day is ~10 callbacks per reading), and the calls to `next_time` and `step`
        and their re-reads of the heap's head cost more than many callbacks. The same
        callbacks in the same (time, sequence) order, the same per-instant limit."""
        if t < self._now:
            raise ValueError(f"cannot run back in time: {t} < {self._now}")
        heap = self._heap
        instant, ran = self._now, 0  # callbacks run at `instant` so far
        limit = self.max_per_instant
        while heap:
            when, _, handle = heap[0]
            if when > t:
                break
            heappop(heap)
            if handle.cancelled:
                if self._cancelled:
                    self._cancelled -= 1
                continue
            if when != instant:
                self.callbacks_run += ran
                instant, ran = when, 0
                self._now = when
            ran += 1
            if ran > limit:
                raise SimulationStalled(f"more than {limit} callbacks at t={when}")
            handle.callback()
        self.callbacks_run += ran
        self._now = t

    def run_until_idle(self, max_time: float | None = None) -> float:
        """Run until nothing is scheduled (or `max_time` is reached); return the time."""
        while True:
            when = self.next_time()
            if when is None:
                return self._now
            if max_time is not None and when > max_time:
                self._now = max(self._now, max_time)
                return self._now
            self.step()

    def run_while(self, condition: Callable[[], bool], max_time: float) -> bool:
        """Run while `condition()` holds, at most until `max_time`; True if it stopped holding."""
        while condition():
            when = self.next_time()
            if when is None:
                return False
            if when > max_time:
                self._now = max(self._now, max_time)
                return False
            self.step()
        return True
