"""`amistack bench dashboard` at a small size: it builds the registry, serves the real app and
answers every page it times (the 100,000-meter figure is the command's default, not a test)."""

from __future__ import annotations

import subprocess
import sys

from amistack.bench.dashboard import bench_dashboard


def test_bench_dashboard_small() -> None:
    out = bench_dashboard(300, 2, 2)
    assert out["meters"] == 300 and out["readings"] == 300
    for page in ("fleet_first_page", "fleet_search", "fleet_state_filter", "fleet_deep_page"):
        assert 0 < out[page]["p50_ms"] <= out[page]["max_ms"], page
    assert out["fleet_vs_api_p50"] > 0


def test_bench_dashboard_refuses_bad_sizes() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "amistack.cli.main", "bench", "dashboard", "--meters", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "--meters" in r.stderr and not r.stdout
