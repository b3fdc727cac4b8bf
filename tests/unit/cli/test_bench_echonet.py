"""`amistack bench echonet` still runs (a smoke test: benchmarks are measured, never asserted)."""

from __future__ import annotations

import json

import pytest

from amistack.cli.main import main


def test_bench_echonet_codec_only_prints_its_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "echonet", "--codec-only", "--duration", "0.2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["codec_frames"] == 8 and doc["codec_per_s"] > 0 and doc["codec_built_per_s"] > 0
    assert isinstance(doc["codec_compiled"], bool)
    assert "codec_ratio_vs_pychonet" in doc and "get_rtt_per_s" not in doc


def test_bench_echonet_flood_prints_before_and_after(capsys: pytest.CaptureFixture[str]) -> None:
    """The amplification figures of issue 10: smoke only (the numbers are the benchmark's)."""
    assert main(["bench", "echonet-flood", "--duration", "2", "--rate", "500", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for flood in ("one_source", "spoofed_sources"):
        before, after = doc[flood]["before"], doc[flood]["after"]
        assert before["bytes_in"] == after["bytes_in"] > 0
        assert before["budget_sources"] is None and after["budget_sources"] >= 1
        assert after["legit_answered"] == after["legit_sent"] == 2
    assert main(["bench", "echonet-flood", "--rate", "0"]) == 2
