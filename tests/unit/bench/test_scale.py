"""`amistack bench scale` runs 1 and 2 key servers and 1 and 2 collectors on one PostgreSQL and
reports every rate with its baseline (measured, never asserted)."""

from __future__ import annotations

import pytest
from tests.cli import run_cli
from tests.conftest_pg import require_postgres

from amistack.bench.scale import bench_scale


@pytest.mark.slow  # a PostgreSQL cluster and six processes
def test_every_process_reports_and_the_work_adds_up() -> None:
    require_postgres()
    r = bench_scale(sessions=40, concurrency=8, devices=8, readings=300, batch=100)
    for n in ("1", "2"):
        ks, col = r["keyservers"][n], r["collectors"][n]
        assert ks["processes"] == col["processes"] == len(ks["per_process"]) == int(n)
        assert ks["completed"] == 40 and ks["auths_per_s"] > 0
        assert all(p["failures"] == 0 and p["server_cpu_s"] > 0 for p in ks["per_process"])
        assert sum(p["readings"] for p in col["per_process"]) == col["readings"] == 300
        assert all(p["refused"] == 0 for p in col["per_process"])
    # the revocation reached both key servers through the database, each within a second (the
    # key servers' clocks are epoch-aligned monotonic ones: a millisecond of skew either way)
    took = r["keyservers"]["2"]["revocation_propagation_ms"]
    assert sorted(took) == ["ks1", "ks2"] and all(-5 < ms < 1000 for ms in took.values()), took
    assert r["postgres_copy_readings_per_s"] > 0


def test_bad_sizes_are_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "bench", "scale", "--sessions", "1", "--json")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
