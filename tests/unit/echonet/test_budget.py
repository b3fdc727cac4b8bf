"""ReplyBudget: per-source token buckets of reply bytes with bounded state (echonet/budget.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.echonet.budget import ReplyBudget


def test_a_source_gets_its_burst_then_the_rate() -> None:
    b = ReplyBudget(rate=100.0, burst=1000, max_sources=4)
    assert b.allows("a", 0.0)  # a newcomer: the shared bucket pays its first answer
    b.charge("a", 400)
    served = 0
    for _ in range(100):  # the same instant: its own bucket of 1000 bytes
        if b.allows("a", 0.0):
            b.charge("a", 400)
            served += 1
    assert served == 3  # 1000 -> 600 -> 200 -> -200: an answer may overdraw once
    assert not b.allows("a", 1.0)  # -200 + 100
    assert b.allows("a", 3.0)  # +200 more
    assert b.allows("b", 0.0)  # others are not affected


def test_newcomers_share_one_bucket() -> None:
    b = ReplyBudget(rate=100.0, burst=1000, max_sources=1000)
    served = 0
    for i in range(100):  # one-off (spoofed) addresses at one instant
        host = f"10.0.0.{i}"
        if b.allows(host, 0.0):
            b.charge(host, 404)
            served += 1
    assert served == 3  # what one source would get, not 100 bursts
    assert not b.allows("10.0.1.1", 0.0)
    assert b.allows("10.0.0.0", 0.0)  # a served newcomer has its own bucket now


def test_quiet_full_buckets_are_forgotten_busy_ones_kept() -> None:
    b = ReplyBudget(rate=1000.0, burst=1000, max_sources=2, forget_after=10.0)
    for host in ("a", "b"):
        assert b.allows(host, 0.0)
    assert len(b) == 2
    for t in range(1, 12):
        assert b.allows("a", float(t))  # "a" keeps talking
    assert b.allows("c", 11.0)  # room made by forgetting the quiet "b"
    assert "a" in b and "b" not in b and "c" in b


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        ReplyBudget(rate=0.0, burst=1, max_sources=1)
    with pytest.raises(ValueError):
        ReplyBudget(rate=1.0, burst=1, max_sources=0)


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.integers(0, 500), st.floats(0, 0.5), st.integers(0, 600)), max_size=300)
)
def test_state_stays_bounded_and_bytes_follow_the_rate(
    steps: list[tuple[int, float, int]],
) -> None:
    """Whatever arrives: at most max_sources buckets, and all sources together get at most
    (buckets ever created + 1) bursts plus the rate per bucket (never unbounded)."""
    b = ReplyBudget(rate=50.0, burst=500, max_sources=8, forget_after=1.0)
    now = 0.0
    out = 0
    hosts: set[str] = set()
    for host_no, dt, size in steps:
        now += dt
        host = f"h{host_no}"
        if b.allows(host, now):
            b.charge(host, size)
            out += size
        hosts.add(host)
        assert len(b) <= 8
    assert out <= (len(hosts) + 1) * (500 + 600) + 50 * now * (len(hosts) + 1)
