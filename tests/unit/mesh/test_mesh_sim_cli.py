"""`amistack sim mesh` and `amistack bench mesh`: the commands a user runs, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from amistack.cli.main import main


def test_sim_mesh_prints_the_dodag_and_writes_png_and_graphml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, graphml = tmp_path / "dodag.png", tmp_path / "dodag.graphml"
    argv = ["sim", "mesh", "--nodes", "15", "--seed", "3", "--json"]
    assert main([*argv, "--png", str(png), "--graphml", str(graphml)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["formed"] and report["relay_ready"] == report["expected_to_join"] == 15
    assert report["radio"]["model"] == "unit-disk" and report["radio"]["loss_per_frame"] > 0
    assert set(report["authenticated_s"]) == {"p50", "p95", "p100"}
    dodag = report["dodag"]
    assert len(dodag) == 16 and dodag[0]["hops"] == 0 and dodag[0]["parent"] is None
    assert all(d["hops"] >= 1 and d["parent"] for d in dodag[1:])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    graph = ET.parse(graphml).getroot().find("g:graph", ns)
    assert graph is not None
    assert len(graph.findall("g:node", ns)) == 16 and len(graph.findall("g:edge", ns)) == 15


def test_sim_mesh_text_output_and_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "mesh", "--nodes", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("radio: ") and "parent" in out and '"relay_ready": 5' in out
    assert main(["sim", "mesh", "--nodes", "0"]) == 2
    assert "--nodes" in capsys.readouterr().err
    assert main(["sim", "mesh", "--nodes", "12", "--per-concentrator", "3"]) == 0
    out = capsys.readouterr().out
    assert '"concentrators": 4' in out and '"c1222"' not in out  # C12.22 only when asked
    assert main(["sim", "mesh", "--nodes", "12", "--per-concentrator", "3", "--c1222"]) == 0
    out = capsys.readouterr().out
    assert '"c1222": {' in out and '"delivery_ratio": 1.0' in out  # across 4 DODAGs
    assert main(["sim", "mesh", "--nodes", "5", "--per-concentrator", "0"]) == 2


def test_bench_mesh_reports_sizes_and_the_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "mesh", "--sizes", "8,16", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["nodes"] for r in result["runs"]] == [8, 16]
    assert all(r["formed"] and r["link_frames_per_wall_s"] > 0 for r in result["runs"])
    assert result["baseline_ccm_star_pairs_per_s"] > 0 and result["radio"]["radius_m"] > 0
    for run in result["runs"]:  # one C12.22 read of every meter over the mesh after formation
        assert run["c1222"]["meters"] == run["relay_ready"]
        assert run["c1222"]["delivery_ratio"] == 1.0 and run["c1222"]["latency_s"]["p99"] > 0
    assert main(["bench", "mesh", "--sizes", "x"]) == 2
    assert main(["bench", "mesh", "--sizes", "8", "--per-concentrator", "0"]) == 2
    assert all(r["concentrators"] == 1 for r in result["runs"])
