"""The Trickle algorithm (RFC 6206) as a sans-IO object: the caller feeds the clock and what it
heard; the timer says when it wants to be woken and whether to transmit. RPL runs one for DIOs
(RFC 6550 §8.3) with Imin = 2^DIOIntervalMin ms, Imax = Imin * 2^DIOIntervalDoublings and
k = DIORedundancyConstant, where k = 0 disables suppression (§6.7.6)."""

from __future__ import annotations

from dataclasses import dataclass

from amistack.crypto.rand import RandomSource

_RANDOM_SCALE = 1 << 32


def uniform(random: RandomSource) -> float:
    """A float in [0, 1) from 32 bits of the injected random source."""
    return int.from_bytes(random(4), "big") / _RANDOM_SCALE


@dataclass(frozen=True)
class TrickleConfig:
    """RFC 6206 §4.1: Imin (seconds), the number of doublings to Imax, and k."""

    imin: float
    doublings: int
    k: int

    @property
    def imax(self) -> float:
        return self.imin * (1 << self.doublings)

    @classmethod
    def for_rpl(
        cls, dio_interval_min: int, dio_interval_doublings: int, redundancy: int
    ) -> TrickleConfig:
        """The DIO timer from the DODAG Configuration option fields (RFC 6550 §8.3.1)."""
        return cls((1 << dio_interval_min) / 1000.0, dio_interval_doublings, redundancy)


class Trickle:
    """One Trickle timer (RFC 6206 §4.2). Call `start(now)`, then `handle_timer(now)` at
    `get_timer()`: it returns True when the caller should transmit now (rule 4)."""

    def __init__(self, config: TrickleConfig, random: RandomSource) -> None:
        self.config = config
        self._random = random
        self.interval = config.imin  # I
        self.counter = 0  # c
        self.interval_start = 0.0
        self.transmit_at = 0.0  # t, absolute
        self._fired = True  # t already passed in the current interval
        self.running = False
        self.transmissions = 0
        self.suppressed = 0

    def start(self, now: float) -> None:
        """Rule 1: begin with I = Imin (RFC 6206 allows any I in [Imin, Imax]; the minimum
        makes a node that just joined announce itself quickly, as RIOT and Contiki-NG do)."""
        self.running = True
        self.interval = self.config.imin
        self._begin_interval(now)

    def stop(self) -> None:
        self.running = False

    def _begin_interval(self, now: float) -> None:
        """Rule 2: c = 0 and t uniform in [I/2, I)."""
        self.interval_start = now
        self.counter = 0
        self.transmit_at = now + self.interval / 2 + uniform(self._random) * self.interval / 2
        self._fired = False

    @property
    def interval_end(self) -> float:
        return self.interval_start + self.interval

    def get_timer(self) -> float | None:
        if not self.running:
            return None
        return self.interval_end if self._fired else self.transmit_at

    def handle_timer(self, now: float) -> bool:
        """Rules 4 and 5. Returns True when a transmission is due now."""
        if not self.running:
            return False
        transmit = False
        if not self._fired and now >= self.transmit_at:
            self._fired = True
            if self.config.k == 0 or self.counter < self.config.k:
                transmit = True
                self.transmissions += 1
            else:
                self.suppressed += 1
        if self._fired and now >= self.interval_end:
            # rule 5: double I up to Imax; the next interval starts where this one ended
            end = self.interval_end
            self.interval = min(self.interval * 2, self.config.imax)
            self._begin_interval(end)
        return transmit

    def hear_consistent(self) -> None:
        """Rule 3: a consistent transmission heard."""
        self.counter += 1

    def hear_inconsistent(self, now: float) -> None:
        """Rule 6 (and external events, §4.2): back to Imin unless already there."""
        if not self.running:
            self.start(now)
        elif self.interval > self.config.imin:
            self.interval = self.config.imin
            self._begin_interval(now)

    reset = hear_inconsistent
