"""`amistack headend --shard K/N`: two collectors on one PostgreSQL database split the meters
between them; every meter is read by exactly one, every interval stored once, and a command is
executed by its meter's collector only (docs/scale-out.md). The head-ends and meters are the
real engines on the virtual clock (sim.network); the database is a real PostgreSQL."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.cli import run_cli
from tests.conftest_pg import pg_cluster, pg_dsn  # noqa: F401  (fixtures)
from tests.contexts import make_ctx

from amistack.addr import Addr
from amistack.c1222.acse import ApTitle
from amistack.crypto import seeded_random
from amistack.headend.collector import CollectorConfig, Mode
from amistack.headend.keys import DirectorySource, HeadendKeys, repository_resolver
from amistack.headend.registry import Meter, MeterState
from amistack.headend.schema import CommandKind, CommandState
from amistack.headend.service import HeadEnd, HeadEndConfig
from amistack.headend.shard import Shard, ShardKey, shard_of
from amistack.headend.storage import PostgresRepository
from amistack.keymgmt.keyring import KeyRing, KeyRingDirectory
from amistack.keymgmt.ukmf import PurposeRegistry
from amistack.meter.model import DAY_S, MeterConfig, MeterModel
from amistack.meter.node import MeterNode, MeterNodeConfig
from amistack.sim.clock import VirtualClock
from amistack.sim.network import VirtualNetwork

T0 = 1_767_225_600.0 + 60.0  # a minute past a boundary
HEADEND = ApTitle.parse("2.16.124.113620.1.22.0.1")
METERS, CELLS = 12, 6


def _meter(i: int, cells: int = 100) -> Meter:
    cell = i % cells
    return Meter(f"m-{i:02d}", "", f"conc-{cell}", f"cell-{cell}", MeterState.COMMISSIONED, 0.0)


def test_shards_partition_every_meter_stably() -> None:
    meters = [_meter(i) for i in range(1000)]
    for by in ShardKey:
        owners = [shard_of(m, 3, by) for m in meters]
        assert set(owners) == {0, 1, 2}  # every shard gets some
        shards = [Shard(k, 3, by) for k in range(3)]
        assert all(sum(s.owns(m) for s in shards) == 1 for m in meters)  # exactly one owner
    # a cell's meters stay together (one collector paces the cell)
    assert len({shard_of(m, 3) for m in meters if m.cell == "cell-1"}) == 1
    assert shard_of(meters[0], 7) == shard_of(meters[0], 7)  # no per-process hash seed


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "0/0", "1/2000", " 0/2"])
def test_a_bad_shard_is_a_one_line_error(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="K/N"):
        Shard.parse(text)
    code, _, err = run_cli(
        capsys, "headend", "--keyserver", "127.0.0.1:1", "--db", "postgresql://h@x/db",
        f"--shard={text}",
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--shard" in err


@given(st.text(max_size=12))
def test_any_shard_text_parses_or_is_refused_with_value_error(text: str) -> None:
    try:
        shard = Shard.parse(text)
    except ValueError:
        return
    assert 0 <= shard.index < shard.count and str(shard).startswith(f"{shard.index}/")


def test_shard_without_a_shared_database_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "headend", "--keyserver", "127.0.0.1:1", "--shard", "0/2")
    assert code == 2 and "--db" in err


def test_two_shards_on_one_database_collect_every_meter_exactly_once(
    pg_dsn: str,  # noqa: F811
) -> None:
    setup = PostgresRepository(pg_dsn)
    clock = VirtualClock(T0)
    net = VirtualNetwork(clock)
    registry = PurposeRegistry()
    directory = KeyRingDirectory(registry)
    addrs: dict[str, Addr] = {}
    nodes: dict[str, MeterNode] = {}
    for i in range(METERS):
        mid = f"m-{i:02d}"
        title = ApTitle((0, 5000 + i), relative=True)
        setup.register_meter(
            mid, str(title.absolute()), f"conc-{i % CELLS}", f"cell-{i % CELLS}", T0
        )
        setup.commission_meter(mid, T0)
        ctx = make_ctx(0x5000 + i, 1, seed=i)
        directory.install(mid.encode(), ctx, 7 * DAY_S, T0)
        ring = KeyRing(mid.encode(), registry)
        ring.install(ctx, 7 * DAY_S, T0)
        node = MeterNode(
            MeterNodeConfig(title, HEADEND),
            MeterModel(i, MeterConfig(install_time=T0 - 40 * DAY_S, outage_rate_per_year=0.0)),
            ring,
            seeded_random(100 + i),
        )
        addrs[mid] = (f"10.0.0.{10 + i}", 1153)
        nodes[mid] = node
        net.add_node(addrs[mid], node)
        node.start(T0)
    # one meter per shard gets a disconnect command, pending before the collectors start
    owner = {mid: shard_of(setup.get_meter(mid), 2) for mid in addrs}  # type: ignore[arg-type]
    targets = [next(m for m in addrs if owner[m] == k) for k in (0, 1)]
    commands = [setup.create_command(m, CommandKind.DISCONNECT, {}, T0) for m in targets]

    headends: list[HeadEnd] = []
    repos = []
    for k in (0, 1):
        repo = PostgresRepository(pg_dsn)  # each collector its own connection, as its own process
        repos.append(repo)
        he = HeadEnd(
            HeadEndConfig(HEADEND, CollectorConfig(mode=Mode.POLLED), shard=Shard(k, 2)),
            repo,
            HeadendKeys(repository_resolver(repo.meter_by_ap_title), DirectorySource(directory)),
            seeded_random(k),
            T0,
            addr_of=lambda m: addrs.get(m.meter_id),
        )
        headends.append(he)
        net.add_node((f"10.9.0.{k + 1}", 1153), he)
    try:
        mine = [set(he.collector.meter_ids()) for he in headends]
        assert mine[0] and mine[1] and not mine[0] & mine[1]
        assert mine[0] | mine[1] == set(addrs)
        net.run_until(T0 + 2 * 900.0)  # two 15-minute boundaries and their polls
        # each meter read by exactly one collector (its cells are no one else's), its two
        # slots' intervals once each
        cells = [set(he.collector.cell_reads()) for he in headends]
        assert cells[0] and cells[1] and not cells[0] & cells[1]
        polled = [he.collector.counters["polled-readings"] for he in headends]
        assert polled == [2 * len(m) for m in mine] and sum(polled) == 2 * METERS
        assert all(he.ingestor.counters["duplicates"] == 0 for he in headends)
        for mid in addrs:
            assert setup.count_readings(mid) == 2, mid  # both slots' intervals, stored once
        # every command executed once, by its meter's collector, and confirmed
        for cmd in commands:
            done = setup.get_command(cmd.id)
            assert done is not None and done.state is CommandState.CONFIRMED, done
        assert not any(
            node.model.switch.relay_closed(clock.now) for m, node in nodes.items() if m in targets
        )
        assert all(
            node.model.switch.relay_closed(clock.now)
            for m, node in nodes.items()
            if m not in targets
        )
    finally:
        for repo in [setup, *repos]:
            repo.close()
