"""`gctune.settle_gc`: inside `service_gc` the state built so far is frozen and what was
dropped before is collected; outside it, nothing changes."""

from __future__ import annotations

import gc
import weakref

from amistack.gctune import service_gc, settle_gc


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def test_settle_freezes_what_was_built_and_collects_what_was_dropped() -> None:
    with service_gc():
        dropped = _Node()
        gone = weakref.ref(dropped)
        settle_gc()  # `dropped` was built before and is frozen now, like a first fleet
        del dropped
        kept = [[i] for i in range(1000)]  # a second fleet, built since
        settle_gc()
        assert gone() is None  # the dropped cycle was unfrozen and collected
        assert gc.get_freeze_count() >= len(kept)
    assert gc.get_freeze_count() == 0


def test_outside_service_gc_nothing_is_frozen() -> None:
    before = gc.get_freeze_count()
    settle_gc()
    assert gc.get_freeze_count() == before == 0
