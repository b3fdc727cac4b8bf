"""The RPL node's smaller duties, driven directly or on the fake medium: DAO retransmission and
rejection, route lifetimes, ETX-driven parent change with hysteresis, leaf and MOP 0 nodes,
storing-mode forwarding errors (§11.2.2.3), OF0 DODAGs, and the presets."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.unit.mesh.rpl.rpl_medium import PREFIX, Medium, grid, gua, line, ll

from amistack.crypto import seeded_random
from amistack.mesh.rpl.config import (
    CONTIKI_NG,
    PRESETS,
    RFC6550,
    WSBRD_LARGE,
    WSBRD_MEDIUM,
    WSBRD_SMALL,
)
from amistack.mesh.rpl.constants import ALL_RPL_NODES, Mop, Ocp
from amistack.mesh.rpl.events import DaoFailed, Detached, ParentChanged, RouteRemoved
from amistack.mesh.rpl.messages import (
    Dao,
    Dio,
    PrefixInformation,
    RplTarget,
    TransitInformation,
    from_icmpv6,
    to_icmpv6,
)
from amistack.mesh.rpl.node import RplNode, _target_transits
from amistack.mesh.rpl.packet import Packet

NON_STORING = replace(RFC6550, mop=Mop.NON_STORING)
STORING = replace(RFC6550, mop=Mop.STORING_NO_MULTICAST)
ROOT_GUA = PREFIX[:8] + (1).to_bytes(8, "big")


def formed(medium: Medium, until: float = 60.0) -> Medium:
    medium.start()
    medium.run(until)
    return medium


def lone_node(config: object = NON_STORING) -> RplNode:
    """A router that joined from one DIO of a root at ll(0), with no medium behind it."""
    assert isinstance(config, type(NON_STORING))
    node = RplNode(ll(5), config, seeded_random(5))
    node.start(0.0)
    options = (config.dodag_configuration(), PrefixInformation(PREFIX, 64))
    dio = Dio(0, 240, 256, ROOT_GUA, config.mop, options=options)
    node.receive_packet(
        Packet(ll(0), ALL_RPL_NODES, to_icmpv6(dio, ll(0), ALL_RPL_NODES)), ll(0), 0.1
    )
    assert node.joined
    return node


def drive(node: RplNode, until: float) -> list[Packet]:
    sent = []
    while (when := node.get_timer()) is not None and when <= until:
        node.handle_timer(when)
        sent += [t.packet for t in node.transmissions()]
    return sent


def test_an_unacknowledged_dao_is_retransmitted_then_reported() -> None:
    node = lone_node(replace(NON_STORING, dao_retransmissions=2, dao_ack_timeout=1.0))
    sent = drive(node, 100.0)
    daos = [p for p in sent if p.dst == ROOT_GUA]
    assert len(daos) == 3  # the first and two retransmissions, with backoff
    assert all(isinstance(from_icmpv6(p.payload, p.src, p.dst), Dao) for p in daos)
    events = []
    while (e := node.next_event()) is not None:
        events.append(e)
    assert any(isinstance(e, DaoFailed) and e.status is None for e in events)
    assert node.counters["dao_failed"] == 1
    # the path up is broken: a local repair (poison, rejoin after the hold-down)
    assert any(isinstance(e, Detached) for e in events) and not node.joined


def test_a_full_root_rejects_daos_with_status() -> None:
    # room for one of two nodes: the other is told so, along the path its Transit names
    medium = formed(Medium(line(3), replace(NON_STORING, max_routes=1)))
    assert len(medium.root.routes) == 1
    rejected = [
        i
        for i in range(1, 3)
        if any(isinstance(e, DaoFailed) and e.status == 0x80 for e in medium.events[i])
    ]
    assert len(rejected) == 1
    assert medium.root.counters["route_table_full"] >= 1


def test_routes_expire_without_refresh_and_are_refreshed_otherwise() -> None:
    config = replace(NON_STORING, default_lifetime=1, lifetime_unit=60)  # 60 s routes
    medium = formed(Medium(line(4), config), until=30.0)
    assert len(medium.root.route_table(medium.now)) == 3
    medium.run(300.0)  # nodes re-announce at half the lifetime
    assert len(medium.root.route_table(medium.now)) == 3
    for i in (1, 2, 3):
        medium.kill(i)
    medium.run(500.0)
    assert medium.root.routes == {}
    assert any(isinstance(e, RouteRemoved) for e in medium.events[0])


def test_etx_growth_moves_the_preferred_parent_past_the_threshold_only() -> None:
    medium = formed(Medium(grid(2, 2), NON_STORING))
    node = medium.nodes[3]
    first = node.preferred
    other = ll(2) if first == ll(1) else ll(1)
    node.record_transmission(first or b"", attempts=2, acked=True, now=medium.now)
    assert node.preferred == first  # ETX grew a little: within PARENT_SWITCH_THRESHOLD
    for _ in range(4):
        node.record_transmission(first or b"", attempts=1, acked=False, now=medium.now)
    assert node.preferred == other
    assert any(isinstance(e, ParentChanged) for e in (node.next_event(), node.next_event()) if e)


def test_leaf_and_mop0_nodes() -> None:
    medium = Medium(line(3), replace(NON_STORING, mop=Mop.NO_DOWNWARD_ROUTES))
    medium.nodes[2] = RplNode(ll(2), NON_STORING, seeded_random(2), leaf=True)
    formed(medium)
    assert medium.nodes[2].joined and medium.nodes[2].counters["tx_dio"] == 0
    assert medium.nodes[1].counters["tx_dao"] == 0  # MOP 0: no downward routes at all
    assert medium.root.routes == {}
    medium.send(2, gua(0), b"up only")
    medium.run(medium.now + 1.0)
    assert b"up only" in medium.received(0)


def test_storing_mode_forwarding_error_removes_the_stale_route() -> None:
    medium = formed(Medium(line(4), STORING))
    del medium.nodes[2].routes[gua(3)]  # node 2 lost its route to node 3 (e.g. a reboot)
    medium.send(0, gua(3), b"lost")
    medium.run(medium.now + 1.0)
    assert medium.nodes[2].counters["forwarding_error"] == 1
    assert medium.nodes[1].counters["forwarding_error_received"] == 1
    assert gua(3) not in medium.nodes[1].routes
    assert b"lost" not in medium.received(3)


def test_of0_dodag() -> None:
    medium = formed(Medium(grid(3, 3), replace(NON_STORING, ocp=Ocp.OF0)))
    # OF0 with unmeasured links (ETX 2): step 3*2-2 = 4, so 4 * 256 per hop
    assert medium.nodes[8].rank == 256 + 4 * 4 * 256
    assert medium.nodes[8].config.ocp == Ocp.OF0
    assert len(medium.root.route_table()) == 8


@pytest.mark.parametrize("name", ["wsbrd-small", "wsbrd-medium", "contiki-ng"])
def test_presets_form_a_dodag(name: str) -> None:
    medium = formed(Medium(grid(3, 3), PRESETS[name]), until=1200.0)
    assert all(medium.nodes[i].joined for i in range(9))
    assert medium.nodes[8].config.dio_interval_min == PRESETS[name].dio_interval_min
    assert len(medium.root.route_table()) == 8


def test_preset_values_match_their_sources() -> None:
    assert (
        RFC6550.dio_interval_min,
        RFC6550.dio_interval_doublings,
        RFC6550.dio_redundancy_constant,
    ) == (3, 20, 10)
    assert RFC6550.min_hop_rank_increase == 256
    assert (
        WSBRD_SMALL.dio_interval_min,
        WSBRD_SMALL.dio_interval_doublings,
        WSBRD_SMALL.dio_redundancy_constant,
    ) == (15, 2, 0)
    assert (WSBRD_MEDIUM.dio_interval_min, WSBRD_MEDIUM.dio_interval_doublings) == (17, 3)
    assert (WSBRD_LARGE.dio_interval_min, WSBRD_LARGE.dio_interval_doublings) == (18, 3)
    assert WSBRD_LARGE.route_lifetime == 8 * 3600
    assert (WSBRD_SMALL.min_hop_rank_increase, WSBRD_SMALL.max_rank_increase) == (196, 2048)
    assert (
        CONTIKI_NG.dio_interval_min,
        CONTIKI_NG.dio_interval_doublings,
        CONTIKI_NG.dio_redundancy_constant,
    ) == (12, 8, 0)
    assert CONTIKI_NG.min_hop_rank_increase == 128 and CONTIKI_NG.route_lifetime == 30 * 60
    assert CONTIKI_NG.trickle.imax == pytest.approx(4.096 * 256)
    advertised = WSBRD_SMALL.dodag_configuration()
    assert RFC6550.adopt(advertised, Mop.NON_STORING).trickle == WSBRD_SMALL.trickle


def test_storing_mode_parent_switch_unannounces_and_stays_reachable() -> None:
    medium = formed(Medium(grid(3, 3), STORING))
    node = medium.nodes[4]  # the centre: parents (0, 1) or (1, 0)
    old = node.preferred
    assert old is not None
    old_id = medium.by_address[old]
    assert gua(4) in medium.nodes[old_id].routes
    for _ in range(4):
        node.record_transmission(old, attempts=1, acked=False, now=medium.now)
    assert node.preferred not in (None, old)
    medium.run(medium.now + 10.0)
    assert gua(4) not in medium.nodes[old_id].routes  # the No-Path DAO took it away
    assert medium.nodes[old_id].counters["route_removed_no_path"] >= 1
    for i in range(1, 9):
        medium.send(0, gua(i), b"after %d" % i)
    medium.run(medium.now + 2.0)
    assert all(b"after %d" % i in medium.received(i) for i in range(1, 9))


def test_targets_take_the_transit_that_follows_their_group() -> None:
    a, b, c = (RplTarget(PREFIX[:8] + bytes([0] * 7 + [k])) for k in (1, 2, 3))
    t1, t2 = TransitInformation(1), TransitInformation(2)
    dao = Dao(0, 1, options=(a, b, t1, c, t2))
    assert _target_transits(dao) == [(a, t1), (b, t1), (c, t2)]
    assert _target_transits(Dao(0, 1, options=(a,))) == [(a, None)]
