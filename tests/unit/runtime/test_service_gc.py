"""`runtime.loop.service_gc`: fewer full collections while a service runs, restored after."""

from __future__ import annotations

import gc

from amistack.runtime.loop import service_gc


def test_start_up_state_is_frozen_and_thresholds_restored() -> None:
    before = gc.get_threshold()
    state = [[i] for i in range(1000)]  # what a service built at start-up
    with service_gc():
        assert gc.get_threshold() == (20_000, 50, 100)
        assert gc.get_freeze_count() >= len(state)  # never scanned again while it runs
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_the_simulator_collects_its_young_objects_less_often() -> None:
    from amistack.gctune import SIMULATION_YOUNG

    before = gc.get_threshold()
    with service_gc(young=SIMULATION_YOUNG):
        assert gc.get_threshold() == (SIMULATION_YOUNG, 50, 100)
    assert gc.get_threshold() == before
