"""The virtual clock: ordering, cancellation, the run_* loops, and the stall guard."""

from __future__ import annotations

import pytest

from amistack.sim import SimulationStalled, VirtualClock
from amistack.sim.clock import COMPACT_MIN


def test_callbacks_run_in_time_then_scheduling_order() -> None:
    clock = VirtualClock()
    seen: list[tuple[float, str]] = []
    for name, t in [("c", 2.0), ("a", 1.0), ("b", 1.0), ("d", 0.5)]:
        clock.call_at(t, lambda n=name: seen.append((clock.now, n)))
    clock.run_until_idle()
    assert seen == [(0.5, "d"), (1.0, "a"), (1.0, "b"), (2.0, "c")]
    assert clock.now == 2.0


def test_run_until_stops_and_stands_at_t() -> None:
    clock = VirtualClock(start=10.0)
    seen: list[float] = []
    clock.call_later(1.0, lambda: seen.append(clock.now))
    clock.call_later(5.0, lambda: seen.append(clock.now))
    clock.run_until(13.0)
    assert seen == [11.0] and clock.now == 13.0 and clock.pending() == 1
    with pytest.raises(ValueError):
        clock.run_until(12.0)


def test_past_deadlines_run_now_and_cancel_works() -> None:
    clock = VirtualClock(start=5.0)
    seen: list[str] = []
    clock.call_at(1.0, lambda: seen.append(f"late@{clock.now}"))
    handle = clock.call_at(6.0, lambda: seen.append("cancelled"))
    handle.cancel()
    assert clock.next_time() == 5.0
    clock.run_until_idle()
    assert seen == ["late@5.0"]


def test_callbacks_may_schedule_more() -> None:
    clock = VirtualClock()
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(clock.now)
        if len(ticks) < 4:
            clock.call_later(0.25, tick)

    clock.call_at(0.0, tick)
    assert clock.run_until_idle(max_time=0.6) == 0.6
    assert ticks == [0.0, 0.25, 0.5]
    clock.run_until_idle()
    assert ticks[-1] == 0.75


def test_run_while() -> None:
    clock = VirtualClock()
    box = {"n": 0}
    for i in range(10):
        clock.call_at(float(i), lambda: box.__setitem__("n", box["n"] + 1))
    assert clock.run_while(lambda: box["n"] < 3, max_time=100.0)
    assert clock.now == 2.0
    assert not clock.run_while(lambda: box["n"] < 100, max_time=5.5)
    assert clock.now == 5.5 and box["n"] == 6


def test_zero_time_loop_is_caught() -> None:
    clock = VirtualClock(max_per_instant=50)

    def again() -> None:
        clock.call_at(clock.now, again)

    clock.call_at(1.0, again)
    with pytest.raises(SimulationStalled):
        clock.run_until_idle()


def test_a_heap_of_cancelled_timers_is_compacted_in_the_same_order() -> None:
    """Hosts re-arm their timers all the time: the cancelled entries do not pile up until due,
    and what runs, and in which order, is unchanged."""
    clock = VirtualClock(0.0)
    ran: list[int] = []
    live = [clock.call_at(1000.0 + (i % 7), lambda i=i: ran.append(i)) for i in range(100)]
    for i in range(3 * COMPACT_MIN):
        clock.cancel(clock.call_at(500.0 + i, lambda: ran.append(-1)))
    assert len(clock._heap) < 2 * COMPACT_MIN  # not 3 x COMPACT_MIN + 100
    clock.cancel(live[0])
    clock.run_until(2000.0)
    assert ran == sorted(range(1, 100), key=lambda i: (i % 7, i))
