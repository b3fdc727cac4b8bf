"""`amistack sim fleet --topology mesh` blackout, rollover and revocation at small N, with the
real engines: every meter joins and (re-)authenticates with PANA + EAP-PSK through RPL relays
(RFC 6345) to the key server engine, the mesh's link frames run under the key server's group
keys, the head-end collects over the mesh. Each scenario's assertions: recovery against the
key server's capacity (and back-off's effect), no refusal of a reading sent under a valid key,
shut-out (session and group key) with nothing accepted after; and the same seed, the same
report apart from its `wall` figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.cli import run_cli

from amistack.headend.collector import Mode
from amistack.keymgmt.groupkeys import DEFAULT_ACTIVATION_DELAY, DEFAULT_ROTATION_DELAY
from amistack.sim.scenarios import (
    SCENARIOS,
    ScenarioConfig,
    merge_parts,
    run_scenario,
    scenario_part,
)


def _run(scenario: str, **kw: Any) -> dict[str, Any]:
    """One cell of 40 meters under one concentrator (up to 3 hops), 3 half-hour slots."""
    cell = ScenarioConfig(scenario, meters=40, cells=1, seed=2, days=0.0625, topology="mesh",
                          per_concentrator=40, **kw)  # fmt: skip
    return run_scenario(cell)


@pytest.mark.slow  # about 6 s of CPU: two blackouts
def test_after_a_mesh_blackout_every_meter_rejoins_through_relays_and_back_off_helps() -> None:
    # 40 meters return within 2 s to a key server serving 1 authentication/s, 10 waiting
    sim = _run("blackout", keyserver_auth_rate=1.0, keyserver_queue=10,
               return_window=2.0)["simulated"]  # fmt: skip
    assert sim["mesh"]["hops_max"] >= 2  # multi-hop: most joins are relayed by meters
    on, off = sim["with_backoff"], sim["without_backoff"]
    for run in (on, off):
        assert run["reauthenticated"] == run["relay_ready_again"] == 40
        assert 0 < run["t50_s"] <= run["t95_s"] <= run["t100_s"]
        assert run["t100_s"] <= run["relay_ready_t100_s"]  # authenticated, then in the DODAG
        assert run["first_complete_slot_after_s"] is not None  # collection recovered
        assert run["slots"]["slots_complete"] == run["slots"]["slots"]  # backfill counted
        held = [r["authenticated"] for r in run["series"]]
        assert held[0] == 40 and min(held) == 0 and held[-1] == 40  # fell, and came back
    # the queue was the limit: every meter got in, but without back-off the rebooted meters
    # retry every second into a full queue, more is dropped and the last gets in later
    assert off["keyserver"]["dropped"] > 1.2 * on["keyserver"]["dropped"] > 0
    assert on["keyserver"]["queue_max"] == off["keyserver"]["queue_max"] == 10
    assert off["t100_s"] > on["t100_s"]
    # a rebooted meter's frame counters carry on from non-volatile memory: restarted at 0 the
    # concentrator, which kept power, would refuse its frames as stale for minutes (824 s)
    assert on["relay_ready_t100_s"] < 500  # 268 s


@pytest.mark.parametrize("mode", [Mode.POLLED, Mode.PUSHED])
def test_a_mesh_rollover_refuses_nothing_sent_under_a_valid_key(mode: Mode) -> None:
    # pushed, the meters' pushes cross key generations too: the overlap window at work
    sim = _run("rollover", rollover_lifetime=1200.0, mode=mode)["simulated"]
    # every meter re-authenticated through its relay every ~900 s (0.75 of the lifetime)
    assert sim["rotations_per_meter_min"] >= 6
    assert sim["keyserver"]["authentications"] >= 40 * sim["rotations_per_meter_min"]
    assert sim["readings_refused_with_valid_key"] == 0
    assert sim["headend"]["c1222_replayed"] == 0
    assert sim["slots"]["slots_complete"] == sim["slots"]["slots"] and sim["readings_lost"] == 0


@pytest.mark.slow  # about 6 s of CPU: the same revocation twice
def test_a_mesh_revocation_shuts_out_by_session_and_group_key_and_is_deterministic() -> None:
    a = _run("revocation", revoke_fraction=0.1)
    sim = a["simulated"]
    assert sim["revoked"] == 4 and sim["shut_out"] == 4
    assert sim["session_ended_at_meter"] == 4 and sim["session_ended_max_s"] < 30.0
    # shut out of the mesh when the rotation the revocation asked for cut the group key
    cut = DEFAULT_ROTATION_DELAY + DEFAULT_ACTIVATION_DELAY
    assert sim["group_key_cut_max_s"] == pytest.approx(cut)
    assert sim["shut_out_max_s"] == pytest.approx(cut)
    assert sim["reauthenticated_after_revocation"] == 0  # refused at every retry
    assert sim["readings_accepted_after_revocation"] == 0
    assert min(sim["slots"]["completeness"]) == 36 / 40  # the others are all collected
    # the attack: until the cut a revoked meter's packets still cross the mesh (refused at
    # the key server and the head-end); after it, not even its own attempt reaches the WAN
    assert sim["revoked_packets_to_wan_before_cut"] > 0
    assert sim["revoked_probes_sent"] == 4
    assert sim["revoked_packets_to_wan_after_cut"] == 0
    # nor can it read the mesh: the new key went to the other 36 meters, not to it
    assert sim["revoked_meters_holding_new_group_key"] == 0
    assert sim["other_meters_holding_new_group_key"] == 36
    b = _run("revocation", revoke_fraction=0.1)
    assert a.keys() == b.keys() == {"scenario", "parameters", "model", "simulated", "wall"}
    assert json.dumps({k: v for k, v in a.items() if k != "wall"}, sort_keys=True) == json.dumps(
        {k: v for k, v in b.items() if k != "wall"}, sort_keys=True
    )


@pytest.mark.slow  # about 7 s of CPU and five plots
def test_the_cli_runs_every_scenario_on_the_mesh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, _ = run_cli(
        capsys, "sim", "fleet", "--topology", "mesh", "--scenario", "all", "--meters", "12",
        "--cells", "1", "--per-concentrator", "3", "--days", str(1 / 48),
        "--report", str(tmp_path), "--json",
    )  # fmt: skip
    assert code == 0
    results = json.loads(stdout)
    assert [r["scenario"] for r in results] == list(SCENARIOS)
    for r in results:
        assert r["parameters"]["topology"] == "mesh"
        assert (tmp_path / r["scenario"] / "report.png").read_bytes()[:4] == b"\x89PNG"
    by = {r["scenario"]: r["simulated"] for r in results}
    assert by["blackout"]["with_backoff"]["reauthenticated"] == 12
    assert by["rollover"]["readings_refused_with_valid_key"] == 0
    assert by["revocation"]["readings_accepted_after_revocation"] == 0


def test_a_mesh_revocation_in_shards_gives_the_whole_fleets_figures() -> None:
    # which meters are revoked is drawn over the fleet's indices, each cell is its own mesh
    kw: dict[str, Any] = {"scenario": "revocation", "topology": "mesh", "meters": 16,
                          "cells": 2, "per_concentrator": 8, "seed": 3, "days": 1 / 24,
                          "revoke_fraction": 0.2}  # fmt: skip
    whole = ScenarioConfig(**kw)
    sharded = ScenarioConfig(**kw, shards=2)
    parts = [scenario_part(sharded, 1), scenario_part(sharded, 0)]  # any order of arrival
    sim = merge_parts(sharded, parts)
    assert sim == merge_parts(whole, [scenario_part(whole, 0)])
    assert sim["revoked"] == 3 and sim["revoked_packets_to_wan_after_cut"] == 0
