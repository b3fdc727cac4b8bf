"""`amistack bench mixed` runs its four phases and reports both rates (measured, never asserted)."""

from __future__ import annotations

import pytest

from amistack.bench.mixed import PHASES, bench_mixed


@pytest.mark.slow
def test_four_phases_report_ingest_and_api_rates() -> None:
    r = bench_mixed(0.3, meters=3, days=8, api_clients=2, batch=500)
    assert [p for p in PHASES if p in r] == list(PHASES)
    for name in PHASES:
        phase = r[name]
        assert (phase["ingest_readings_per_s"] is None) == (name == "api_alone")
        assert (phase["api_queries_per_s"] is None) == (name == "ingest_alone")
        assert phase["api_errors"] == 0 and phase["loop_lag_max_ms"] >= 0
    assert r["both_off_loop"]["ingest_submitted"] > 0 and r["both_on_loop"]["ingest_submitted"] > 0
    assert r["both_off_loop"]["api_queries_per_s"] > 0  # queries answered while ingesting
