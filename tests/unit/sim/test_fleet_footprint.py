"""What a simulated fleet holds per meter, outside the engines' behaviour: the head-end's
readings in a scratch SQLite file with a bounded page cache (not in the process), the key
server's cache of derived EAP-PSK keys bounded, and the built fleet (star and mesh) frozen
for the garbage collector. docs/simulator.md, "What it costs"."""

from __future__ import annotations

import gc
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from amistack.gctune import service_gc
from amistack.headend.schema import IntervalReading
from amistack.headend.storage import SCRATCH_CACHE_KIB, SqliteRepository
from amistack.sim import fleet as sim_fleet
from amistack.sim.fleet import Fleet, FleetConfig, authenticated, build_fleet
from amistack.sim.scenarios import Sampler, ScenarioConfig, run_scenario

T0 = 1_767_225_600


def _readings(meters: int, intervals: int) -> list[IntervalReading]:
    return [
        IntervalReading(f"m{m:05d}", T0 + i * 1800, 30, 100 + i, 0, 0, 1)
        for m in range(meters)
        for i in range(intervals)
    ]


def test_a_scratch_database_is_a_private_file_with_a_bounded_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    repo = SqliteRepository.scratch(cache_kib=256)
    try:
        conn = repo._conn
        assert conn.execute("PRAGMA cache_size").fetchone()[0] == -256
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "memory"
        assert conn.execute("PRAGMA locking_mode").fetchone()[0] == "exclusive"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 0  # OFF: nothing to survive
        # its name is gone at once: nothing left behind, not even by a killed process
        assert os.listdir(tmp_path) == []
        assert repo.path.parent == tmp_path
        # more readings than the cache holds (~7 MB of rows against 256 KiB): all stored, and
        # idempotent as the real repository is
        batch = _readings(2000, 48)
        assert repo.store_readings(batch, 1.0).inserted == len(batch)
        again = repo.store_readings(batch[:100], 2.0)
        assert (again.inserted, again.duplicates) == (0, 100)
        for r in batch[-50:]:  # one reading at a time, as the simulator's ingest mostly does
            repo.store_readings([replace(r, interval_start=r.interval_start + 86400)], 3.0)
        assert repo.count_readings() == len(batch) + 50
        assert repo.count_readings("m01999") == 2 * 48  # the last 50 were its 48 and 2 more
        assert os.listdir(tmp_path) == []
    finally:
        repo.close()
    default = SqliteRepository.scratch()
    assert default._conn.execute("PRAGMA cache_size").fetchone()[0] == -SCRATCH_CACHE_KIB
    default.close()


def test_the_fleet_stores_into_a_scratch_database_unless_given_a_directory(
    tmp_path: Path,
) -> None:
    fleet = build_fleet(FleetConfig(meters=4, cells=2))
    assert fleet.repo._conn.execute("PRAGMA locking_mode").fetchone()[0] == "exclusive"
    assert not fleet.repo.path.exists()
    kept = build_fleet(FleetConfig(meters=4, cells=2, data_dir=tmp_path))
    assert kept.repo.path == tmp_path / SqliteRepository.FILENAME
    assert kept.repo._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_simulated_key_server_keeps_few_derived_psk_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sim_fleet, "SIM_PSK_KEYS_CACHE", 3)
    fleet = build_fleet(FleetConfig(meters=12, cells=2))
    store = fleet.keyserver.store
    assert store.psk_keys_cache == 3
    assert len(store._psk_keys) <= 3  # not one per meter
    assert authenticated(fleet) == 12  # every meter authenticated all the same


def _frozen(obj: object) -> bool:
    """Tracked by the collector but in none of its generations: in the permanent one."""
    return gc.is_tracked(obj) and not any(o is obj for o in gc.get_objects())


def test_a_built_fleet_and_a_built_mesh_cell_are_frozen() -> None:
    from amistack.sim.fleet_mesh import build_cell

    with service_gc():
        fleet = build_fleet(FleetConfig(meters=8, cells=2))
        assert _frozen(fleet.nodes[0]) and _frozen(fleet.access[0])
        sc = ScenarioConfig("day", meters=10, cells=1, days=0.0625, topology="mesh",
                            per_concentrator=10)  # fmt: skip
        cell = build_cell(sc, 0)
        assert _frozen(cell) and _frozen(cell.sim.meters[0]) and _frozen(cell.headend)
    assert not _frozen(cell.sim.meters[0])  # unfrozen when the scenario's part ends


@pytest.mark.parametrize(
    "config",
    [
        FleetConfig(meters=40, cells=2),
        # a congested cell and a slow key server: retransmissions, dropped and failed joins
        FleetConfig(
            meters=60,
            cells=1,
            cell=sim_fleet.CellConfig(rate_pps=5.0, queue=5),
            join_window=5.0,
            keyserver_service_s=0.05,
            keyserver_queue=4,
        ),
    ],
    ids=["calm", "congested"],
)
def test_building_a_fleet_makes_no_cyclic_garbage(config: FleetConfig) -> None:
    # gctune.building freezes a built fleet without a full collection: sound only because
    # the build leaves nothing for one to find
    gc.collect()
    with service_gc():
        fleet = build_fleet(config)
        assert gc.isenabled() and _frozen(fleet.access[0])
        gc.unfreeze()
        assert gc.collect() == 0
        assert fleet.join["sent"] > 0


def _scan(fleet: Fleet) -> tuple[int, int]:
    """What `authenticated` and the fleet's authentications are, asking every meter's PaC."""
    down = fleet.net.down
    held = sum(
        1
        for i, a in enumerate(fleet.access)
        if a.pac is not None and a.pac.context is not None and fleet.pana_addr(i) not in down
    )
    return held, sum(a.authentications for a in fleet.access)


@pytest.mark.parametrize(
    "sc",
    [
        ScenarioConfig("day", meters=30, cells=3, days=0.125),
        ScenarioConfig("rollover", meters=20, cells=2, days=0.25, rollover_lifetime=1800.0),
        ScenarioConfig("revocation", meters=40, cells=2, days=0.125, revoke_fraction=0.1),
        ScenarioConfig("blackout", meters=30, cells=3, return_window=20.0, keyserver_auth_rate=5.0),
    ],
    ids=lambda sc: sc.scenario,
)
def test_the_counted_meters_holding_keys_are_the_ones_a_scan_finds(
    sc: ScenarioConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[tuple[int, int], tuple[int, int]]] = []
    sample = Sampler._sample

    def checked(self: Sampler) -> None:
        sample(self)
        row = self.rows[-1]
        seen.append(((int(row["authenticated"]), int(row["authentications"])), _scan(self.fleet)))

    monkeypatch.setattr(Sampler, "_sample", checked)
    run_scenario(sc)
    assert seen and all(fast == scan for fast, scan in seen)
    if sc.scenario != "day":  # the counts moved (re-authentications, shut-outs, a blackout)
        assert len({fast for fast, _ in seen}) > 1


def test_a_disposable_shard_leaves_only_its_last_fleet_frozen() -> None:
    from amistack.sim.shard import run_shard

    # (what a worker of the LocalCluster started for a run does: sim/shard.py)
    sc = ScenarioConfig("day", meters=16, cells=2, shards=2, days=0.0625)
    try:
        run_shard(sc, 0, disposable=True)
        first = gc.get_freeze_count()
        assert first > 10_000  # the dead fleet, left for the process's end
        run_shard(sc, 1, disposable=True)  # a second shard on the same worker
        assert gc.get_freeze_count() < 1.5 * first  # the first's fleet was collected
    finally:
        gc.unfreeze()
        gc.collect()
