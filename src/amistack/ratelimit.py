"""Token buckets per key in a table of bounded size (sans-IO: `now` is passed in).

`KeyedBuckets(rate, burst, max_keys)`: each key (a relaying meter's address, a neighbour's
EUI-64 ...) has a bucket that refills at `rate` tokens per second up to `burst`; `allow(key,
now)` takes one token if there is one. At most `max_keys` buckets are kept, the least recently
used forgotten first: a forgotten key starts again with a full bucket, so a flood of ever new
keys costs memory `max_keys` at most and buys each key no more than `burst`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["KeyedBuckets"]


class KeyedBuckets:
    """See the module docstring."""

    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        if not (rate > 0 and burst >= 1 and max_keys >= 1):
            raise ValueError("rate must be > 0, burst >= 1 and max_keys >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: Hashable, now: float) -> bool:
        """Take a token from `key`'s bucket; False (nothing taken) when it has none."""
        tokens, since = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - since) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed
