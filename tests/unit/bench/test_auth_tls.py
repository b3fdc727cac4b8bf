"""`amistack bench auth --method tls`: EAP-TLS with ECDSA P-256 device certificates beside
EAP-PSK, on one key-server path, in one run."""

from __future__ import annotations

import json

import pytest

from amistack.cli.main import main


def test_tls_beside_psk_on_the_key_server(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "auth", "--method", "tls", "--sessions", "12", "--concurrency", "4",
            "--rounds", "1", "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "tls" and result["baseline_method"] == "psk"
    assert result["server"] == "keyserver" and result["failures"] == 0, result["failure_reasons"]
    assert [r["method"] for r in result["runs"]] == ["tls", "psk"]
    assert all(r["completed"] == 12 for r in result["runs"])
    for method in ("tls", "psk"):
        assert result[method]["auths_per_s_median"] > 0
        assert result[method]["server_cpu_us_per_auth_median"] > 0
    tls, psk = result["tls"]["auths_per_s"][0], result["psk"]["auths_per_s"][0]
    assert result["tls_vs_psk"] == [round(tls / psk, 3)]
    # the whole key server issued keys to EAP-TLS devices
    assert result["runs"][0]["server_counters"].get("auth-success") == 12


def test_profile_dir_is_refused_with_tls(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "auth", "--method", "tls", "--server", "paa", "--profile-dir", "/tmp/x"]
    assert main(argv) == 2
    assert "amistack bench auth:" in capsys.readouterr().err
