"""Trickle (RFC 6206 §4.2) on a fake clock with a scripted random source: exact transmit times,
doubling to Imax, suppression by k, reset on inconsistency."""

from __future__ import annotations

import pytest

from amistack.crypto import seeded_random
from amistack.crypto.rand import RandomSource
from amistack.mesh.rpl.trickle import Trickle, TrickleConfig


def fixed(fraction: float) -> RandomSource:
    """A random source that always yields `fraction` of the 32-bit range."""
    return lambda n: int(fraction * (1 << 32)).to_bytes(n, "big")


def run_until(trickle: Trickle, end: float) -> list[float]:
    """Drive the timer as a driver would; the times at which it said transmit."""
    sent = []
    while (when := trickle.get_timer()) is not None and when <= end:
        if trickle.handle_timer(when):
            sent.append(when)
    return sent


def test_transmit_times_double_up_to_imax() -> None:
    trickle = Trickle(TrickleConfig(imin=1.0, doublings=2, k=1), fixed(0.5))  # t = 3I/4
    trickle.start(0.0)
    # intervals [0,1) [1,3) [3,7) [7,11) [11,15): t at 0.75, 2.5, 6, 10, 14
    assert run_until(trickle, 15.0) == [0.75, 2.5, 6.0, 10.0, 14.0]
    assert trickle.interval == 4.0 == trickle.config.imax


def test_t_is_drawn_in_the_second_half_of_the_interval() -> None:
    for fraction, expected in ((0.0, 4.0), (0.999999, 7.999)):
        trickle = Trickle(TrickleConfig(8.0, 0, 1), fixed(fraction))
        trickle.start(0.0)
        assert trickle.transmit_at == pytest.approx(expected, abs=1e-3)
        assert 4.0 <= trickle.transmit_at < 8.0


def test_k_consistent_messages_suppress_the_transmission() -> None:
    trickle = Trickle(TrickleConfig(1.0, 4, k=2), seeded_random(1))
    trickle.start(0.0)
    trickle.hear_consistent()
    assert trickle.handle_timer(trickle.transmit_at) is True  # c = 1 < k
    trickle.handle_timer(trickle.interval_end)
    trickle.hear_consistent()
    trickle.hear_consistent()
    assert trickle.handle_timer(trickle.transmit_at) is False  # c = 2 = k
    assert (trickle.transmissions, trickle.suppressed) == (1, 1)


def test_k_zero_never_suppresses() -> None:
    trickle = Trickle(TrickleConfig(1.0, 4, k=0), seeded_random(2))
    trickle.start(0.0)
    for _ in range(100):
        trickle.hear_consistent()
    assert trickle.handle_timer(trickle.transmit_at) is True


def test_inconsistency_resets_to_imin_only_when_above_it() -> None:
    trickle = Trickle(TrickleConfig(1.0, 5, k=3), seeded_random(3))
    trickle.start(0.0)
    run_until(trickle, 20.0)
    assert trickle.interval == 16.0
    trickle.hear_inconsistent(20.5)
    assert trickle.interval == 1.0 and trickle.interval_start == 20.5
    assert 21.0 <= trickle.transmit_at < 21.5
    before = trickle.transmit_at
    trickle.hear_inconsistent(20.7)  # already at Imin: rule 6 does nothing
    assert trickle.transmit_at == before and trickle.interval_start == 20.5


def test_counter_clears_each_interval_and_stop_silences() -> None:
    trickle = Trickle(TrickleConfig(1.0, 1, k=1), seeded_random(4))
    trickle.start(0.0)
    trickle.hear_consistent()
    trickle.handle_timer(trickle.transmit_at)
    trickle.handle_timer(trickle.interval_end)
    assert trickle.counter == 0
    trickle.stop()
    assert trickle.get_timer() is None and trickle.handle_timer(100.0) is False


def test_rpl_parameters_from_the_dodag_configuration() -> None:
    config = TrickleConfig.for_rpl(dio_interval_min=3, dio_interval_doublings=20, redundancy=10)
    assert config.imin == 0.008  # 2^3 ms (RFC 6550 §17 defaults)
    assert config.imax == pytest.approx(8388.608)  # about 2.3 hours
    assert config.k == 10
