"""Injected randomness: engines take a `RandomSource` and never call a global RNG."""

from __future__ import annotations

import os
import random
from collections.abc import Callable

RandomSource = Callable[[int], bytes]
"""A function returning n random bytes."""


def system_random(n: int) -> bytes:
    """Cryptographically secure bytes from the OS; the default in `runtime/`."""
    return os.urandom(n)  # what secrets.token_bytes returns, without two Python-level calls


def seeded_random(seed: int) -> RandomSource:
    """Deterministic bytes for `sim/` and tests. Never for real keys."""
    rng = random.Random(seed)
    return rng.randbytes
