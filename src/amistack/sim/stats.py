"""Figures the simulators report about a population: when a share of it had got somewhere, and
the nearest-rank quantile of a sample."""

from __future__ import annotations

import math


def percentile_time(times: list[float], expected: int, fraction: float) -> float | None:
    """When `fraction` of the `expected` members had got there (`times` sorted), or None if
    fewer did."""
    if expected == 0:
        return 0.0
    k = max(1, math.ceil(fraction * expected))
    return round(times[k - 1], 3) if len(times) >= k else None


def quantile(values: list[float], q: float) -> float | None:
    """The nearest-rank `q`-quantile of `values` (the value at rank floor(q n), the last for
    q = 1), or None for no values."""
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


__all__ = ["percentile_time", "quantile"]
