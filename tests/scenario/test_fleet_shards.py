"""`amistack sim fleet --shards`: a `day` split by cell into shards run as tasks on Dask
distributed (a LocalCluster of worker processes here). The result depends on the seed and the
number of shards, never on the number of workers; the shards' counts add up to the fleet's."""

from __future__ import annotations

import json
from typing import Any

import pytest
from distributed import LocalCluster
from tests.cli import run_cli

from amistack.sim.scenarios import ScenarioConfig, run_scenario

SMALL = {"scenario": "day", "meters": 24, "cells": 4, "seed": 5, "days": 1 / 24}  # 2 slots


def _run(**kw: Any) -> dict[str, Any]:
    return run_scenario(ScenarioConfig(**{**SMALL, **kw}))


@pytest.mark.slow  # starts two LocalClusters (worker processes)
def test_shards_on_one_or_two_workers_simulate_the_same() -> None:
    one = _run(shards=2, workers=1)  # a LocalCluster of one worker, started for the run
    # a running cluster of two workers, as `--cluster tcp://scheduler:8786` reaches one
    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        two = _run(shards=2, cluster=cluster.scheduler_address)
    assert one["simulated"] == two["simulated"]
    sim = one["simulated"]
    assert sim["slots"]["slots"] == sim["slots"]["slots_complete"] == 2
    assert sim["keyserver"]["authentications"] == 24  # every meter, in one shard or the other
    assert sim["headend"]["readings_stored"] >= 24 * 2
    shards = one["wall"]["shards"]
    assert len(shards) == 2 and all(s["peak_rss_mb"] > 0 for s in shards)
    # the same fleet unsharded: the same meters read in every slot (the key server's capacity,
    # split in two, is far from the limit here)
    whole = _run()["simulated"]
    assert whole["slots"]["completeness"] == sim["slots"]["completeness"]
    assert whole["headend"]["readings_stored"] == sim["headend"]["readings_stored"]


def test_only_day_runs_in_shards_and_not_more_shards_than_cells() -> None:
    with pytest.raises(ValueError, match="shards"):
        ScenarioConfig(scenario="blackout", shards=2)
    with pytest.raises(ValueError, match="shards"):
        ScenarioConfig(meters=10, cells=2, shards=3)


def test_cli_runs_shards_and_refuses_more_shards_than_cells(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, stdout, _ = run_cli(
        capsys, "sim", "fleet", "--meters", "8", "--cells", "2", "--days", "0.03",
        "--shards", "2", "--workers", "1", "--json",
    )  # fmt: skip
    assert code == 0
    doc = json.loads(stdout)
    assert doc["parameters"]["shards"] == 2 and len(doc["wall"]["shards"]) == 2
    code, _, err = run_cli(capsys, "sim", "fleet", "--meters", "8", "--cells", "2", "--shards", "3")
    assert code == 2 and "shards" in err
