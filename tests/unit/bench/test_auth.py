"""`amistack bench auth`: the whole key server and its baseline (the protocol path) in one run."""

from __future__ import annotations

import json

import pytest

from amistack.bench.auth import AUTH_TARGET
from amistack.cli.main import main


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "auth", "--rounds", "0", "--json"],
        ["bench", "auth", "--profile-dir", "/tmp/x", "--json"],  # two paths, one profile
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "amistack bench auth:" in capsys.readouterr().err


def test_default_run_reports_both_paths_and_their_ratio(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["bench", "auth", "--sessions", "30", "--concurrency", "6", "--rounds", "1", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["server"] == "both" and result["target_auths_per_s"] == AUTH_TARGET
    assert result["failures"] == 0, result["failure_reasons"]
    assert [r["server"] for r in result["runs"]] == ["keyserver", "paa"]
    assert all(r["completed"] == 30 for r in result["runs"])
    for path in ("keyserver", "paa"):
        summary = result[path]
        assert len(summary["auths_per_s"]) == 1 and summary["auths_per_s_median"] > 0
        assert summary["server_cpu_us_per_auth_median"] > 0
        assert summary["client_cpu_us_per_auth_median"] > 0
        cpu, core = summary["server_cpu_us_per_auth"][0], summary["server_core_auths_per_s"][0]
        assert core == pytest.approx(1e6 / cpu, rel=0.01)
    assert set(result["target_met"]) == {"auths_per_s", "server_core_auths_per_s"}
    assert not any(r["eap_identity"] for r in result["runs"])
    ks, paa = result["keyserver"]["auths_per_s"][0], result["paa"]["auths_per_s"][0]
    assert result["keyserver_vs_paa"] == [round(ks / paa, 3)]
    # the key server really issued (and stored) keys; the bare PAA has no store
    assert result["runs"][0]["server_counters"].get("auth-success") == 30


def test_eap_identity_runs_the_old_exchange(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "auth", "--sessions", "12", "--concurrency", "4", "--server", "keyserver"]
    assert main([*argv, "--eap-identity", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["eap_identity"] and result["failures"] == 0 and result["completed"] == 12
