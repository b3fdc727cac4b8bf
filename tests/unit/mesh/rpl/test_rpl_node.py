"""The RPL node engine on a fake medium: DODAG formation over a 30-node line and grid in both
modes of operation, routes from the root to everyone, local and global repair."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.unit.mesh.rpl.rpl_medium import Medium, grid, gua, line, ll

from amistack.mesh.rpl.config import CONTIKI_NG, RFC6550, RplConfig
from amistack.mesh.rpl.constants import Mop
from amistack.mesh.rpl.events import DaoAcknowledged, GlobalRepair, Joined, ParentChanged

NON_STORING = replace(RFC6550, mop=Mop.NON_STORING)
STORING = replace(RFC6550, mop=Mop.STORING_NO_MULTICAST)


def formed(medium: Medium, until: float = 60.0) -> Medium:
    medium.start()
    medium.run(until)
    return medium


def assert_everyone_reachable(medium: Medium) -> None:
    for i in sorted(medium.alive - {0}):
        medium.send(0, gua(i), b"down %d" % i)
        medium.send(i, gua(0), b"up %d" % i)
    medium.run(medium.now + 5.0)
    for i in sorted(medium.alive - {0}):
        assert b"down %d" % i in medium.received(i), f"node {i} unreachable from the root"
        assert b"up %d" % i in medium.received(0), f"root unreachable from node {i}"


@pytest.mark.parametrize("config", [NON_STORING, STORING], ids=["non-storing", "storing"])
def test_a_30_node_line_forms_and_every_node_has_a_route(config: RplConfig) -> None:
    medium = formed(Medium(line(30), config))
    for i in range(1, 30):
        node = medium.nodes[i]
        assert node.joined and node.preferred == ll(i - 1)
        assert node.rank == 256 * (i + 1)  # MRHOF, ETX 1 per link: one MinHopRankIncrease a hop
        assert node.global_address == gua(i)
    table = medium.root.route_table()
    assert set(table) == {gua(i) for i in range(1, 30)}
    if config.mop == Mop.NON_STORING:
        assert medium.root.source_route(gua(29)) == [gua(i) for i in range(1, 30)]
    assert_everyone_reachable(medium)
    acks = [e for i in range(1, 30) for e in medium.events[i] if isinstance(e, DaoAcknowledged)]
    assert len(acks) >= 29


@pytest.mark.parametrize("config", [NON_STORING, STORING], ids=["non-storing", "storing"])
def test_a_5x6_grid_forms_shortest_hop_dodag(config: RplConfig) -> None:
    medium = formed(Medium(grid(5, 6), config))
    for i in range(1, 30):
        r, c = divmod(i, 6)
        assert medium.nodes[i].rank == 256 * (r + c + 1), f"node {i} not on a shortest path"
    assert len(medium.root.route_table()) == 29
    assert_everyone_reachable(medium)


def test_a_killed_parent_is_replaced_locally() -> None:
    medium = formed(Medium(grid(5, 6), NON_STORING))
    # (2, 2) has two shortest-path parents, (1, 2) and (2, 1): kill the one it chose
    victim = medium.by_address[medium.nodes[14].preferred or b""]
    orphans = [i for i in range(30) if medium.nodes[i].preferred == ll(victim)]
    assert orphans
    medium.kill(victim)
    for i in orphans:  # traffic makes the link layer notice the dead parent
        medium.send(i, gua(0), b"probe")
    medium.run(medium.now + 30.0)
    for i in orphans:
        node = medium.nodes[i]
        assert node.joined and node.preferred != ll(victim)
        assert any(isinstance(e, ParentChanged) for e in medium.events[i])
    assert gua(victim) not in {hop for r in medium.root.route_table().values() for hop in r[:-1]}
    assert_everyone_reachable(medium)


def test_a_line_cut_detaches_the_far_side_with_poison() -> None:
    medium = formed(Medium(line(10), NON_STORING))
    medium.kill(5)
    medium.send(6, gua(0), b"probe")
    medium.run(medium.now + 30.0)
    for i in range(6, 10):
        assert not medium.nodes[i].joined, f"node {i} should have no way to the root"
    assert medium.nodes[6].counters["detached"] >= 1
    for i in range(1, 5):
        assert medium.nodes[i].joined


@pytest.mark.parametrize("config", [NON_STORING, STORING], ids=["non-storing", "storing"])
def test_global_repair_moves_everyone_to_the_new_version(config: RplConfig) -> None:
    medium = formed(Medium(grid(5, 6), config))
    old = medium.root.version
    medium.root.global_repair(medium.now)
    medium.run(medium.now + 60.0)
    new = medium.root.version
    assert new != old
    for i in range(1, 30):
        assert medium.nodes[i].version == new and medium.nodes[i].joined
        assert any(isinstance(e, GlobalRepair) and e.version == new for e in medium.events[i])
    assert len(medium.root.route_table()) == 29
    assert_everyone_reachable(medium)


def test_a_late_node_solicits_with_dis() -> None:
    medium = Medium(line(3), NON_STORING)
    medium.start([0, 1])
    medium.run(3000.0)  # trickle has backed off to long intervals
    medium.start([2])
    medium.run(medium.now + 5.0)
    assert medium.nodes[2].joined
    assert medium.nodes[2].counters["tx_dis"] >= 1
    assert any(isinstance(e, Joined) for e in medium.events[2])


def test_contiki_ng_preset_forms_too() -> None:
    medium = formed(Medium(grid(3, 4), CONTIKI_NG), until=120.0)
    assert all(medium.nodes[i].joined for i in range(12))
    # ROOT_RANK 128, then five unmeasured links at Contiki-NG's initial ETX of 2 (256)
    assert medium.nodes[11].rank == 128 + 5 * 256
    assert_everyone_reachable(medium)
