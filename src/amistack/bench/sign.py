"""Signing throughput of a secure module, for `amistack bench eventlog` and the docs."""

from __future__ import annotations

import hashlib
import time

from amistack.securemodule.base import SecureModule


def bench_sign(module: SecureModule, n: int) -> float:
    """Signatures per second over `n` distinct SHA-256 digests (wall clock, one thread)."""
    if n <= 0:
        raise ValueError("n must be positive")
    digests = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]
    module.sign_digest(digests[0])  # warm up: first-use costs (sessions, caches) are not throughput
    start = time.perf_counter()
    for digest in digests:
        module.sign_digest(digest)
    elapsed = time.perf_counter() - start
    return n / elapsed if elapsed > 0 else float("inf")
