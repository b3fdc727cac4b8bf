"""`amistack sim fleet` scenarios at small N on the virtual clock, with the real engines: every
meter authenticates with PANA + EAP-PSK to the key server engine before it is read; each
scenario's own assertions (completeness, recovery, rollover without refusals, shut-out)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.cli import run_cli

from amistack.sim.scenarios import ScenarioConfig, run_scenario

SMALL = {"meters": 40, "cells": 2, "seed": 3, "days": 0.125}  # 6 half-hour slots


def _run(**kw: Any) -> dict[str, Any]:
    return run_scenario(ScenarioConfig(**{**SMALL, **kw}))


def test_day_collects_every_slot_and_is_deterministic() -> None:
    a, b = _run(scenario="day"), _run(scenario="day")
    sim = a["simulated"]
    assert sim["slots"]["slots"] == 6 and sim["slots"]["slots_complete"] == 6
    assert sim["keyserver"]["authentications"] == 40  # each meter once, for real
    assert sim["headend"]["c1222_auth_failed"] == sim["headend"]["c1222_no_key"] == 0
    assert sim["packets_per_reading"] == pytest.approx(2.0)  # request + response per slot
    assert a["simulated"] == b["simulated"]  # the same seed, the same simulation
    assert a["wall"].keys() == {
        "wall_s", "cpu_s", "peak_rss_mb", "events", "events_per_s", "keyserver_cpu_us_per_datagram"
    }  # fmt: skip
    assert a["wall"]["keyserver_cpu_us_per_datagram"] > 0  # the real engine, measured
    assert len(sim["series"]) == 4 * 3600 / 300 + 1  # a fixed period (3 h + 2 slots), not per event


def test_blackout_recovers_and_back_off_spares_a_small_key_server() -> None:
    # 40 meters return within 2 s to a key server that serves 1 authentication/s, 10 waiting
    sim = _run(scenario="blackout", keyserver_auth_rate=1.0, keyserver_queue=10, return_window=2.0)[
        "simulated"
    ]
    on, off = sim["with_backoff"], sim["without_backoff"]
    assert on["reauthenticated"] == 40 and on["t100_s"] is not None
    assert on["t50_s"] <= on["t95_s"] <= on["t100_s"]
    assert on["first_complete_slot_after_s"] is not None
    # the series shows the collapse (a meter without power holds no keys) and the recovery
    held = [r["authenticated"] for r in on["series"]]
    assert held[0] == 40 and min(held) == 0 and held[-1] == 40
    # without back-off the meters keep the queue full and more of their datagrams are dropped
    # (every meter still gets in: the capacity is the limit either way)
    assert off["keyserver"]["dropped"] > 1.2 * on["keyserver"]["dropped"] > 0
    assert off["reauthenticated"] == 40


def test_rollover_refuses_nothing_sent_under_a_valid_key() -> None:
    sim = _run(scenario="rollover", rollover_lifetime=1200.0)["simulated"]
    assert sim["rotations_per_meter_min"] >= 4  # re-authenticated every ~900 s for 3 h
    assert sim["readings_refused_with_valid_key"] == 0
    assert sim["slots"]["slots_complete"] == sim["slots"]["slots"]


def test_revocation_shuts_out_and_accepts_nothing_after() -> None:
    sim = _run(scenario="revocation", revoke_fraction=0.1)["simulated"]
    assert sim["revoked"] == 4 and sim["shut_out"] == 4
    assert sim["shut_out_max_s"] is not None and sim["shut_out_max_s"] < 5.0
    assert sim["reauthenticated_after_revocation"] == 0
    assert sim["readings_accepted_after_revocation"] == 0


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        ScenarioConfig(scenario="meteor")
    with pytest.raises(ValueError, match="cells"):
        ScenarioConfig(meters=2, cells=3)


def test_cli_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    code, stdout, _ = run_cli(
        capsys, "sim", "fleet", "--meters", "20", "--cells", "2", "--days", "0.05",
        "--report", str(out), "--json",
    )  # fmt: skip
    assert code == 0
    doc = json.loads(stdout)
    assert doc["scenario"] == "day" and doc["parameters"]["meters"] == 20
    assert json.loads((out / "report.json").read_text())["simulated"] == doc["simulated"]
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run_cli(capsys, "sim", "fleet", "--meters", "2", "--cells", "3")
    assert code == 2 and "cells" in err


def test_the_fleets_in_memory_database_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the simulator's head-end database is SQLite in memory: no file named ":memory:" in the cwd
    monkeypatch.chdir(tmp_path)
    _run(scenario="day", meters=4, days=1 / 48)
    assert list(tmp_path.iterdir()) == []
