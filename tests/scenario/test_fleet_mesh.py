"""`amistack sim fleet --topology mesh` at small N: the meters in RPL meshes under several
concentrators per cell, every one joined through PANA relays to the real key server engine,
collected polled and pushed over the mesh by the real head-end; `concentrator-loss`: the
orphaned meters re-home, collection resumes and no reading is lost (backfill counted)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.cli import run_cli

from amistack.cli import sim as cli_sim
from amistack.headend.collector import Mode
from amistack.sim import scenarios
from amistack.sim.scenarios import (
    ScenarioConfig,
    merge_parts,
    run_scenario,
    scenario_part,
    scenarios_for,
)

# one cell of 60 meters under 2 x 2 concentrators (15 each), 3 half-hour slots
SMALL: dict[str, Any] = {
    "topology": "mesh", "meters": 60, "cells": 1, "per_concentrator": 15, "seed": 2,
    "days": 0.0625,
}  # fmt: skip


def _run(**kw: Any) -> dict[str, Any]:
    return run_scenario(ScenarioConfig(**{**SMALL, **kw}))


def test_a_mesh_day_polled_collects_every_slot_over_the_mesh() -> None:
    result = _run(scenario="day")
    sim = result["simulated"]
    assert sim["slots"]["slots"] == 3 and sim["slots"]["slots_complete"] == 3
    assert sim["readings_lost"] == 0 and sim["readings_expected"] == 180
    mesh = sim["mesh"]
    assert mesh["concentrators"] == 4 and mesh["reachable"] == mesh["relay_ready_at_start"] == 60
    assert mesh["hops_max"] >= 2  # multi-hop: relayed joins and reads
    assert sim["keyserver"]["authentications"] >= 60  # each meter through its relays, for real
    he = sim["headend"]
    assert he["c1222_auth_failed"] == he["c1222_no_key"] == he["meters_refused_requests"] == 0
    assert he["reads_without_address"] == 0 and he["address_changes"] >= 60
    # a read crosses hops as fragmented, acknowledged, CCM*-secured frames, besides RPL
    assert sim["link_frames_per_reading"] > 4 * sim["wan_packets_per_reading"] > 0
    assert sim["packets_per_reading"] == pytest.approx(
        sim["link_frames_per_reading"] + sim["wan_packets_per_reading"], abs=0.01
    )
    assert "mesh shards by cell" in result["model"]["shards"]
    assert result["model"]["radio"]["model"] == "unit-disk"


@pytest.mark.slow  # about 5-10 s of CPU
def test_a_mesh_day_pushed_collects_what_the_meters_push_over_the_mesh() -> None:
    sim = _run(scenario="day", mode=Mode.PUSHED)["simulated"]
    assert sim["slots"]["slots_complete"] == 3 and sim["readings_lost"] == 0
    assert sim["headend"]["c1222_auth_failed"] == 0


@pytest.mark.slow  # about 5-10 s of CPU each
@pytest.mark.parametrize("mode", [Mode.POLLED, Mode.PUSHED])
def test_a_lost_concentrators_meters_re_home_and_no_reading_is_lost(mode: Mode) -> None:
    sim = _run(scenario="concentrator-loss", mode=mode)["simulated"]
    loss = sim["concentrator_loss"]
    orphaned = loss["meters_orphaned"]
    assert orphaned >= 5  # the dead concentrator served a share of the cell
    assert loss["meters_rehomed"] == orphaned  # every one joined a neighbouring DODAG
    assert loss["rehomed_s"]["max"] < 1800  # within a DAO refresh and a rejoin
    # each moved its PANA session to the new relay, or authenticated afresh through it
    assert loss["pana_moved_by_ping"] + loss["pana_reauthenticated"] >= orphaned
    assert loss["collection_resumed"] == orphaned
    assert sim["readings_lost"] == 0 and sim["slots"]["slots_complete"] == 3
    assert loss["first_complete_slot_after_s"] is not None
    rows = loss["joined_per_concentrator"]
    before = next(r for r in rows if r["t"] < 0)
    after = rows[-1]
    assert before["c0"] == orphaned and after["c0"] == 0  # the plot's story
    assert sum(after[f"c{j}"] for j in range(1, 4)) == 60


@pytest.mark.slow  # about 5-10 s of CPU
def test_mesh_results_depend_on_the_seed_not_on_the_shards() -> None:
    two = ScenarioConfig(**{**SMALL, "meters": 40, "cells": 2, "per_concentrator": 5,
                            "days": 1 / 48, "scenario": "day"})  # fmt: skip
    whole = merge_parts(two, [scenario_part(two, 0)])
    sharded = ScenarioConfig(**{**two.__dict__, "shards": 2})
    parts = [scenario_part(sharded, 1), scenario_part(sharded, 0)]  # any order of arrival
    assert merge_parts(sharded, parts) == whole  # two runs of the same seed, the same result
    assert whole["mesh"]["cells"] == 2 and whole["readings_lost"] == 0


def test_the_cli_runs_a_mesh_and_refuses_what_a_topology_does_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_sim.SCENARIOS == scenarios.SCENARIOS  # the parser's copy of the names
    assert cli_sim.TOPOLOGIES == scenarios.TOPOLOGIES
    assert scenarios_for("mesh") == scenarios.SCENARIOS  # every scenario runs on the mesh
    assert "concentrator-loss" not in scenarios_for("star")
    out = tmp_path / "r"
    code, stdout, _ = run_cli(
        capsys, "sim", "fleet", "--topology", "mesh", "--meters", "12", "--cells", "1",
        "--per-concentrator", "3", "--days", str(1 / 48), "--report", str(out), "--json",
    )  # fmt: skip
    assert code == 0
    doc = json.loads(stdout)
    assert doc["parameters"]["topology"] == "mesh" and doc["simulated"]["readings_lost"] == 0
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run_cli(capsys, "sim", "fleet", "--scenario", "concentrator-loss")
    assert code == 2 and "topology 'star'" in err
    code, _, err = run_cli(
        capsys, "sim", "fleet", "--topology", "mesh", "--scenario", "concentrator-loss",
        "--meters", "40", "--cells", "1",
    )  # fmt: skip
    assert code == 2 and "2 x 2 concentrators" in err
    code, stdout, _ = run_cli(capsys, "sim", "fleet", "--help")
    assert "--topology" in stdout and "concentrator-loss" in stdout
