"""The one anti-replay window (802.15.4 frame counters, C12.22 invocation ids)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amistack.crypto.replay import Replay, ReplayWindow, ReplayWindows


def test_window_slides_over_64_numbers() -> None:
    w = ReplayWindow()
    for c in (5, 3, 4, 66):
        assert w.check(c) is None
        w.accept(c)
    for seen in (5, 3, 4, 66):  # 66 - 3 = 63: still inside the 64-number window
        assert w.check(seen) is Replay.REPLAYED
    assert w.check(65) is None  # inside the window, never seen: fine (reordering)
    assert w.check(2) is Replay.STALE  # 64 behind the highest
    w.accept(65)
    w.accept(1000)  # a jump beyond the window clears it
    assert w.check(1000) is Replay.REPLAYED
    assert w.check(999) is None
    assert w.check(66) is Replay.STALE
    with pytest.raises(ValueError):
        ReplayWindow(0)


def test_per_sender_windows_are_bounded_and_least_recent_goes_first() -> None:
    w: ReplayWindows[bytes] = ReplayWindows(size=4)
    assert w.check(b"m", 10) is None
    w.accept(b"m", 10)
    assert w.check(b"m", 10) == "replayed"  # the value is the counter name
    assert w.check(b"m", 9) is None and w.check(b"m", 11) is None
    w.accept(b"m", 8)
    assert w.check(b"m", 8) == "replayed"
    w.accept(b"m", 14)
    assert w.check(b"m", 10) == "stale" and w.check(b"m", 11) is None
    assert w.check(b"other", 10) is None  # per sender
    assert w.highest(b"m") == 14 and w.highest(b"other") is None
    small: ReplayWindows[bytes] = ReplayWindows(size=4, max_senders=2)
    for s in (b"a", b"b", b"a", b"c"):
        small.accept(s, 1)
    assert len(small) == 2
    assert small.check(b"a", 1) is Replay.REPLAYED  # heard recently: kept
    assert small.check(b"b", 1) is None  # least recently heard: forgotten
    with pytest.raises(ValueError):
        ReplayWindows(max_senders=0)


@given(st.lists(st.integers(0, 300), max_size=80))
def test_no_number_is_ever_accepted_twice(numbers: list[int]) -> None:
    w = ReplayWindow(16)
    accepted: set[int] = set()
    for n in numbers:
        if w.check(n) is None:
            assert n not in accepted
            accepted.add(n)
            w.accept(n)


@given(st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c", b"d"]), st.integers(0, 200))))
def test_admit_is_check_then_accept(events: list[tuple[bytes, int]]) -> None:
    """`admit` (one look-up) gives the verdicts, windows and forgetting order of `check`
    followed by `accept` when it passed."""
    one: ReplayWindows[bytes] = ReplayWindows(size=8, max_senders=3)
    two: ReplayWindows[bytes] = ReplayWindows(size=8, max_senders=3)
    for sender, n in events:
        verdict = two.check(sender, n)
        if verdict is None:
            two.accept(sender, n)
        assert one.admit(sender, n) == verdict
        assert list(one._windows) == list(two._windows)
        for s in (b"a", b"b", b"c", b"d"):
            assert one.highest(s) == two.highest(s)
