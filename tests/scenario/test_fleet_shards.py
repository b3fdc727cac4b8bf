"""`amistack sim fleet --shards`: a scenario split by cell into shards run as tasks on Dask
distributed (a LocalCluster of worker processes here). The result depends on the seed and the
number of shards, never on the number of workers or where a shard ran (in this process, in
one worker or in two); the shards' counts add up to the fleet's."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from distributed import LocalCluster
from tests.cli import run_cli

from amistack.sim.scenarios import ScenarioConfig, merge_parts, run_scenario, scenario_part
from amistack.sim.shard import AUTO_SHARD_METERS, auto_shards

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
    # each shard's CPU beside its wall time, its fleet's build apart; the cluster's own costs
    assert all(
        s["wall_s"] >= s["build_wall_s"] > 0 < s["build_cpu_s"] <= s["cpu_s"] for s in shards
    )
    assert one["wall"]["cluster"].keys() == {"cluster_start_s", "tasks_s", "cluster_close_s"}
    # the same fleet unsharded: the same meters read in every slot (the key server's capacity,
    # split in two, is far from the limit here)
    whole = _run()["simulated"]
    assert whole["slots"]["completeness"] == sim["slots"]["completeness"]
    assert whole["headend"]["readings_stored"] == sim["headend"]["readings_stored"]


def _in_process(sc: ScenarioConfig) -> dict[str, Any]:
    """The shards' parts run one after the other here, merged as `run_scenario` merges them."""
    return merge_parts(sc, [scenario_part(sc, k) for k in range(sc.shards)])


FEW = {"meters": 20, "cells": 4, "seed": 3, "days": 0.125, "shards": 2}  # 6 slots


def test_every_scenario_runs_in_shards_with_its_assertions() -> None:
    # a blackout against a small key server, split in two (each shard has half of it)
    sc = ScenarioConfig(scenario="blackout", keyserver_auth_rate=1.0, keyserver_queue=10,
                        return_window=2.0, **FEW)  # fmt: skip
    blackout = _in_process(sc)
    on, off = blackout["with_backoff"], blackout["without_backoff"]
    assert on["reauthenticated"] == off["reauthenticated"] == 20
    assert on["t50_s"] <= on["t95_s"] <= on["t100_s"]
    assert on["first_complete_slot_after_s"] is not None
    assert off["keyserver"]["dropped"] > on["keyserver"]["dropped"] > 0
    assert len(on["series"]) > 600  # both shards' samples, second by second, added up
    sim = _in_process(ScenarioConfig(scenario="rollover", rollover_lifetime=1200.0, **FEW))
    assert sim["rotations_per_meter_min"] >= 4
    assert sim["readings_refused_with_valid_key"] == 0
    assert sim["slots"]["slots_complete"] == sim["slots"]["slots"] == 6
    # every 5th meter (0, 5, 10, 15: cells 0, 1, 2, 3, in both shards) revoked
    sim = _in_process(ScenarioConfig(scenario="revocation", revoke_fraction=0.2, **FEW))
    assert sim["revoked"] == sim["shut_out"] == 4
    assert sim["shut_out_max_s"] is not None and sim["shut_out_max_s"] < 5.0
    assert sim["reauthenticated_after_revocation"] == sim["readings_accepted_after_revocation"] == 0


def test_a_meter_draws_the_same_in_any_shard_count() -> None:
    # with the key server far from its limit, the blackout's recovery is the meters' own:
    # the same return times, the same re-authentication times, sharded or not
    kw = {**FEW, "scenario": "blackout", "return_window": 20.0}
    two = _in_process(ScenarioConfig(**kw))["with_backoff"]
    one = _in_process(ScenarioConfig(**{**kw, "shards": 1}))["with_backoff"]
    assert one["reauthenticated"] == two["reauthenticated"] == 20
    # (up to the split key server's service time, microseconds a datagram)
    assert one["t50_s"] == pytest.approx(two["t50_s"], abs=0.01)
    assert one["t100_s"] == pytest.approx(two["t100_s"], abs=0.01)


@pytest.mark.slow  # starts a LocalCluster (worker processes)
def test_a_scenario_on_two_workers_is_the_one_in_process() -> None:
    sc = ScenarioConfig(scenario="revocation", revoke_fraction=0.1, **{**FEW, "days": 1 / 24})
    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        two = run_scenario(dataclasses.replace(sc, cluster=cluster.scheduler_address))
    assert two["simulated"] == _in_process(sc)
    assert len(two["wall"]["shards"]) == 2


def test_not_more_shards_than_cells() -> None:
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
    assert "own key server" in doc["model"]["shards"]  # the report says what is not shared
    code, _, err = run_cli(capsys, "sim", "fleet", "--meters", "8", "--cells", "2", "--shards", "3")
    assert code == 2 and "shards" in err


def test_auto_shards_are_one_per_12500_meters_at_most_one_a_cell() -> None:
    assert auto_shards(1, 1) == 1
    assert auto_shards(AUTO_SHARD_METERS, 1000) == 1
    assert auto_shards(AUTO_SHARD_METERS + 1, 1000) == 2
    assert auto_shards(100_000, 1000) == 8
    assert auto_shards(100_000, 5) == 5  # a shard is a set of cells


def test_cli_shards_auto_by_default_and_refuses_a_word(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, stdout, _ = run_cli(
        capsys, "sim", "fleet", "--meters", "8", "--cells", "2", "--days", "0.03", "--json"
    )
    assert code == 0 and json.loads(stdout)["parameters"]["shards"] == 1  # auto: in process
    code, _, err = run_cli(capsys, "sim", "fleet", "--meters", "8", "--shards", "many")
    assert code == 2 and "neither a number nor auto" in err
