"""The cyclic garbage collector as a long-running process wants it: the services of `runtime/`
and the fleet simulator of `sim/` (both hold a large, long-lived heap and allocate many
short-lived objects per datagram)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["service_gc", "settle_gc"]

_active = 0  # how many service_gc blocks are open


@contextlib.contextmanager
def service_gc() -> Iterator[None]:
    """The cyclic garbage collector as a long-running service wants it, restored on exit.

    The engines allocate many short-lived objects per datagram, and a key server keeps a key
    ring per device: with CPython's default thresholds a full collection comes every ~70,000
    allocations and scans every ring, which cost a key server ~12 us of a ~35-45 us key-ring
    install with 20,000 generations held (docs/key-hierarchy.md). So: collect once, freeze
    what exists (start-up state is never garbage), and collect far less often."""
    global _active
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
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
