"""Per-source reply budgets of a device node: bytes it may send to one address (sans-IO).

A 16-byte Get of E2 and E4 is answered with 404 bytes, so a node that answers everything turns
any source -- or a spoofed victim address -- into a 25x amplifier. `ReplyBudget` gives every
source host a token bucket of bytes: it refills at `rate` bytes per second up to `burst`, a
request is served only while the bucket is above zero, and the answer's bytes are then taken
from it (it may go below zero by one answer, which the refill pays back). Over a flood, what
one source gets back therefore tends to `rate`, whatever it sends.

State is bounded, and a flood from many (spoofed) addresses cannot buy many buckets: a source
the budget does not know yet is served from one bucket shared by all newcomers (same rate and
burst), and only a newcomer that was served gets a bucket of its own -- at most `max_sources`
of them. A bucket is forgotten once it is full again and its source has been quiet for
`forget_after` seconds (swept at most once per `forget_after`, so a table full of busy sources
costs nothing per datagram). A controller that keeps talking therefore keeps its own bucket
through a flood of one-off addresses; a flood of them draws at most `rate` in all.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FORGET_AFTER", "ReplyBudget"]

FORGET_AFTER = 60.0  # s a full bucket is kept after its source's last request


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # time `tokens` was last refilled to (the source's last request)
    newcomer: bool = False  # the answers to its first request are the newcomers' to pay

    def refill(self, rate: float, burst: float, now: float) -> None:
        if now > self.at:
            self.tokens = min(burst, self.tokens + rate * (now - self.at))
            self.at = now


class ReplyBudget:
    """Token buckets of reply bytes per source host (at most `max_sources`), plus one shared by
    the sources not known yet."""

    def __init__(
        self, rate: float, burst: int, max_sources: int, forget_after: float = FORGET_AFTER
    ) -> None:
        if rate <= 0 or burst <= 0 or max_sources < 1 or forget_after <= 0:
            raise ValueError("rate, burst and forget_after must be > 0, max_sources >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_sources = max_sources
        self.forget_after = forget_after
        self._buckets: dict[str, _Bucket] = {}
        self._newcomers = _Bucket(self.burst, 0.0)
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, host: object) -> bool:
        return host in self._buckets

    def allows(self, host: str, now: float) -> bool:
        """Whether to serve a request from `host` at `now` (its bucket, or the newcomers' one,
        is above zero). A newcomer that is served gets a bucket of its own when there is room."""
        bucket = self._buckets.get(host)
        if bucket is not None:
            bucket.newcomer = False
            bucket.refill(self.rate, self.burst, now)
            return bucket.tokens > 0
        shared = self._newcomers
        shared.refill(self.rate, self.burst, now)
        if shared.tokens <= 0:
            return False
        if len(self._buckets) >= self.max_sources and now >= self._next_sweep:
            self._sweep(now)
        if len(self._buckets) < self.max_sources:
            self._buckets[host] = _Bucket(self.burst, now, newcomer=True)
        return True

    def charge(self, host: str, nbytes: int) -> None:
        """Take the bytes of an answer sent to `host` from its bucket (the newcomers' bucket
        when it has none)."""
        bucket = self._buckets.get(host)
        if bucket is None or bucket.newcomer:
            bucket = self._newcomers
        bucket.tokens -= nbytes

    def _sweep(self, now: float) -> None:
        """Forget the buckets that are full again and whose source has been quiet."""
        rate, burst, quiet = self.rate, self.burst, now - self.forget_after
        idle = [
            h
            for h, b in self._buckets.items()
            if b.at <= quiet and b.tokens + rate * (now - b.at) >= burst
        ]
        for host in idle:
            del self._buckets[host]
        self._next_sweep = now + self.forget_after
