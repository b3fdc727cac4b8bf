"""How fast the metering model produces a fleet's intervals (`amistack bench meter` material).

`bench_model(n_meters, days)` builds `n_meters` models (30 % with PV, 10 % one-way), computes every
15-minute interval of `days` days for each (by reading the registers at the end, which builds the
per-day cumulative rows), then times random register reads and 30-minute load-profile reads on the
built models. The clock is read here, in the benchmark, never in the model.
"""

from __future__ import annotations

import random
import time
from typing import Any

from amistack.meter.model import DAY_S, MeterConfig, MeterModel
from amistack.meter.model_shapes import INTERVALS_PER_DAY


def bench_model(n_meters: int, days: int, seed: int = 1) -> dict[str, Any]:
    """Intervals per second for a fleet, and register / load-profile queries per second."""
    if n_meters < 1 or days < 1:
        raise ValueError("n_meters and days must be >= 1")
    configs = (
        MeterConfig(),
        MeterConfig(pv=True),
        MeterConfig(pv=True, two_way=False),
    )
    models = []
    t0 = time.perf_counter()
    for i in range(n_meters):
        kind = 1 if i % 10 < 3 else 2 if i % 10 == 3 else 0
        models.append(MeterModel(seed * 1_000_003 + i, configs[kind]))
    create_s = time.perf_counter() - t0
    start = models[0].install_time
    end = start + days * DAY_S

    t0 = time.perf_counter()
    for m in models:
        m.registers(end - 1)  # the last second of the last day: exactly `days` days computed
    build_s = time.perf_counter() - t0
    intervals = n_meters * days * INTERVALS_PER_DAY

    rng = random.Random(seed)
    n_queries = min(20_000, 20 * n_meters)
    times = [start + rng.random() * (end - start) for _ in range(n_queries)]
    picks = [models[rng.randrange(n_meters)] for _ in range(n_queries)]
    t0 = time.perf_counter()
    for m, t in zip(picks, times, strict=True):
        m.registers(t)
    reg_s = time.perf_counter() - t0

    n_lp = min(2_000, 2 * n_meters)
    t0 = time.perf_counter()
    for m, t in zip(picks[:n_lp], times[:n_lp], strict=True):
        m.load_profile_30min(t - DAY_S, t, t)
    lp_s = time.perf_counter() - t0

    return {
        "n_meters": n_meters,
        "days": days,
        "intervals": intervals,
        "build_s": round(build_s, 3),
        "models_per_s": round(n_meters / create_s),
        "intervals_per_s": round(intervals / build_s),
        "register_reads_per_s": round(n_queries / reg_s),
        "day_profile_30min_reads_per_s": round(n_lp / lp_s),
        "fleet_100k_day_s_estimate": round(100_000 * build_s / (n_meters * days), 1),
    }
