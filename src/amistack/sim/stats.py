"""Figures the simulators report about a population: when a share of it had got somewhere."""

from __future__ import annotations

import math


def percentile_time(times: list[float], expected: int, fraction: float) -> float | None:
    """When `fraction` of the `expected` members had got there (`times` sorted), or None if
    fewer did."""
    if expected == 0:
        return 0.0
    k = max(1, math.ceil(fraction * expected))
    return round(times[k - 1], 3) if len(times) >= k else None


__all__ = ["percentile_time"]
