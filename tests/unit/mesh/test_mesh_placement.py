"""The mesh's placement at a fixed DODAG size (`MeshConfig.meters_per_dodag`), the PAA's
relay check that does not grow with N x DODAGs, and the growth figures of `bench mesh`."""

from __future__ import annotations

import ipaddress
import json
import math
from collections import Counter

import pytest

from amistack.addr import Addr
from amistack.bench.mesh import _growth
from amistack.cli.main import main
from amistack.mesh.node import radio_addr
from amistack.sim import mesh
from amistack.sim.mesh import (
    MeshConfig,
    MeshRelays,
    MeshSim,
    _near_first,
    build_mesh,
    global_of,
    node_eui,
    prefix_of,
)


@pytest.mark.parametrize(
    ("nodes", "per_dodag", "shape"),
    [(100, 100, (1, 1)), (1_000, 100, (2, 5)), (10_000, 100, (10, 10)), (1_600, 400, (2, 2)),
     (700, 100, (1, 7)), (30, 100, (1, 1))],
)  # fmt: skip
def test_every_size_gets_about_the_same_meters_per_dodag(
    nodes: int, per_dodag: int, shape: tuple[int, int]
) -> None:
    config = MeshConfig(nodes=nodes, meters_per_dodag=per_dodag)
    assert config.shape == shape and config.concentrators == shape[0] * shape[1]
    rows, cols = shape
    # square cells of one density: the same area as the one-square placement, cut in cells
    assert math.isclose(config.side * config.height, MeshConfig(nodes=nodes).side ** 2)
    assert math.isclose(config.side / cols, config.height / rows)
    radio = config.radio_model()
    assert radio["concentrators"] == rows * cols
    assert radio["meters_per_dodag"] == round(nodes / (rows * cols), 1)


def test_a_square_number_of_cells_is_the_k_by_k_placement_exactly() -> None:
    """10,000 meters at 400 a DODAG are the 5 x 5 grid of `per_concentrator=400`: the same
    area to the last bit, so the same positions (the 10-minute target's harder placement)."""
    a, b = MeshConfig(nodes=10_000), MeshConfig(nodes=10_000, meters_per_dodag=400)
    assert a.shape == b.shape == (5, 5)
    assert (a.side, a.cell, a.height) == (b.side, b.cell, b.height)
    with pytest.raises(ValueError, match="meters_per_dodag"):
        MeshConfig(nodes=10, meters_per_dodag=0)
    with pytest.raises(ValueError, match="more than 225"):
        MeshConfig(nodes=10_000, meters_per_dodag=10)


def test_a_mesh_at_a_fixed_dodag_size_forms_with_a_dodag_per_cell() -> None:
    sim = build_mesh(MeshConfig(nodes=48, seed=2, meters_per_dodag=8))  # 6 cells: 2 x 3
    assert len(sim.concentrators) == 6
    assert sim.run(600.0)
    assert set(sim.ready_at) == sim.expected
    per_dodag = Counter(m.rpl.dodag_id for m in sim.meters if m.rpl.joined)
    assert set(per_dodag) == {c.rpl.dodag_id for c in sim.concentrators}  # each has meters
    # the roots stand at the cells' centres, 2 rows of 3 over a 3:2 rectangle
    cell = sim.config.cell
    xs = {round(sim.net.medium.radio.position(a)[0] / cell, 3) for a in _roots(sim)}
    ys = {round(sim.net.medium.radio.position(a)[1] / cell, 3) for a in _roots(sim)}
    assert xs == {0.5, 1.5, 2.5} and ys == {0.5, 1.5}


def _roots(sim: MeshSim) -> list[Addr]:
    return [radio_addr(c.eui) for c in sim.concentrators]


def test_the_paa_takes_a_relay_only_at_a_known_meter_or_concentrator_address() -> None:
    prefixes = [prefix_of(j) for j in range(3)]
    concentrator = str(ipaddress.IPv6Address(global_of(node_eui(0), prefixes[0])))
    relays = MeshRelays({concentrator}, prefixes)
    relays.meters.add(node_eui(7).interface_id())
    for p in prefixes:  # a meter may join any DODAG it hears
        assert str(ipaddress.IPv6Address(global_of(node_eui(7), p))) in relays
    assert concentrator in relays
    stranger = str(ipaddress.IPv6Address(global_of(node_eui(8), prefixes[1])))
    outside = str(ipaddress.IPv6Address(global_of(node_eui(7), prefix_of(9))))
    long_form = ipaddress.IPv6Address(global_of(node_eui(7), prefixes[1])).exploded
    for host in (stranger, outside, long_form, "not an address", "10.0.0.1", "", 7, None):
        assert host not in relays


def test_growth_is_reported_against_n_log_n_in_cpu_and_in_cpu_per_frame() -> None:
    runs = [
        {"nodes": 100, "cpu_s": 1.0, "wall_s": 2.0, "link_frames": 10_000,
         "frames_per_node": 100.0, "cpu_per_frame_us": 100.0},
        {"nodes": 1_000, "cpu_s": 12.0, "wall_s": 24.0, "link_frames": 100_000,
         "frames_per_node": 100.0, "cpu_per_frame_us": 120.0},
    ]  # fmt: skip
    _growth(runs)
    assert "growth" not in runs[0] and runs[0]["cpu_vs_nlogn"] == 1.0
    growth = runs[1]["growth"]
    assert growth["from_nodes"] == 100 and growth["n_log_n"] == 15.0
    assert growth["cpu"] == 12.0 and growth["cpu_per_frame"] == 1.2 and growth["log_n"] == 1.5
    assert runs[1]["cpu_vs_nlogn"] == 0.8  # 12 / 15: no worse than N log N
    assert runs[1]["cpu_per_frame_vs_log_n"] == 0.8  # 1.2 / 1.5


def test_bench_mesh_places_a_fixed_dodag_size_or_the_k_by_k_grid(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "mesh", "--sizes", "8,16", "--meters-per-dodag", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    runs = result["runs"]
    assert [r["concentrators"] for r in runs] == [2, 4] and result["meters_per_dodag"] == 4
    assert [r["meters_per_dodag"] for r in runs] == [4.0, 4.0]
    assert all(r["formed"] and r["cpu_per_frame_us"] > 0 for r in runs)
    assert runs[1]["growth"]["from_nodes"] == 8 and "cpu_per_frame" in runs[1]["growth"]
    assert main(["bench", "mesh", "--sizes", "8", "--per-concentrator", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["runs"][0]["cells"] == "2 x 2" and result["meters_per_dodag"] is None
    assert main(["bench", "mesh", "--sizes", "8", "--meters-per-dodag", "0"]) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "mesh", "--meters-per-dodag", "4", "--per-concentrator", "4"])
    assert exit_.value.code == 2


def test_meters_are_built_near_first_which_changes_no_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The meters' objects are built in Z-order of their radio cells (memory locality only):
    a mesh built in index order runs the same, report and C12.22 read alike."""
    spots = [(5.0, 5.0), (950.0, 950.0), (20.0, 30.0), (960.0, 940.0), (510.0, 10.0)]
    assert _near_first(spots, 100.0) == [1, 3, 5, 2, 4]

    def run() -> dict[str, object]:
        sim = build_mesh(MeshConfig(nodes=40, seed=5, meters_per_dodag=20, c1222=True))
        assert sim.run(3_600.0)
        report = sim.report()
        report["read"] = sim.read_all(300.0)
        report.pop("wall_s", None)
        return report

    near_first = run()
    monkeypatch.setattr(mesh, "_near_first", lambda spots, radius: range(1, len(spots) + 1))
    assert run() == near_first
