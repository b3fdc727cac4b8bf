"""The cyclic garbage collector as a long-running process wants it: the services of `runtime/`
and the fleet simulator of `sim/` (both hold a large, long-lived heap and allocate many
short-lived objects per datagram)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["SERVICE_YOUNG", "SIMULATION_YOUNG", "building", "service_gc", "settle_gc"]

_active = 0  # how many service_gc blocks are open

# Young-generation thresholds (allocations less deallocations between young collections).
SERVICE_YOUNG = 20_000
# The simulator's run allocates far more than a service's: every meter's engines per datagram.
# Its young collections find no garbage (a day's run, 10,000 and 25,000 meters: 0 collected in
# each), and each costs about the same per object whatever the threshold, so fewer, larger
# ones cost less in all: a 25,000-meter day spent 10.9 s in 263 of them at 20,000 and 7.0 s
# in 38 at 100,000 (py gc callbacks, process CPU).
SIMULATION_YOUNG = 100_000


@contextlib.contextmanager
def service_gc(young: int = SERVICE_YOUNG) -> Iterator[None]:
    """The cyclic garbage collector as a long-running service wants it, restored on exit.

    The engines allocate many short-lived objects per datagram, and a key server keeps a key
    ring per device: with CPython's default thresholds a full collection comes every ~70,000
    allocations and scans every ring, which cost a key server ~12 us of a ~35-45 us key-ring
    install with 20,000 generations held (docs/key-hierarchy.md). So: collect once, freeze
    what exists (start-up state is never garbage), and collect far less often: a young
    collection every `young` net allocations."""
    global _active
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, 50, 100)
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        gc.set_threshold(*old)
        gc.unfreeze()


def settle_gc() -> None:
    """Inside `service_gc`: the state built so far is long-lived (a simulated fleet once built),
    so collect what is garbage now and freeze the rest, which full collections then never walk
    again (at 40,000 simulated meters they took a quarter of the CPU, walking ~7 M objects each
    time). Unfreezes first, so a state built before and dropped since is collected, not kept.
    Outside `service_gc` it does nothing: a frozen object's cycles are never collected."""
    if not _active:
        return
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def building() -> Iterator[None]:
    """Inside `service_gc`: build a long-lived state (a simulated fleet) with the cyclic
    collector paused, then freeze it without a full collection.

    First what was dropped since the last freeze (a fleet built before this one) is collected
    (`settle_gc`). Then: a young collection during a build walks objects that all survive
    (the state being built; ~9 % of a fleet's build), and a full collection after it walks
    all of them again to find garbage that building a fleet does not make (~7 %;
    tests/unit/sim/test_fleet_footprint.py checks there is none). So the collector is off
    while the block runs, and what it built is frozen as it is. Outside `service_gc` it only
    runs the block (nothing is frozen there)."""
    if not _active:
        yield
        return
    settle_gc()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.freeze()
