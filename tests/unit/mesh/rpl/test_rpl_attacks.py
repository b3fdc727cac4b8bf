"""RPL under attack, written as an attacker would try it: forged ranks, DAO floods, DIS floods,
malformed control messages, looping source routes. Each is counted, nothing crashes, the
rest of the DODAG keeps working."""

from __future__ import annotations

from dataclasses import replace

from tests.unit.mesh.rpl.rpl_medium import PREFIX, Medium, grid, gua, line, ll

from amistack.mesh.icmpv6 import Icmpv6Message
from amistack.mesh.rpl.config import RFC6550
from amistack.mesh.rpl.constants import ALL_RPL_NODES, Mop
from amistack.mesh.rpl.events import BogusRank, DataReceived, LoopDetected
from amistack.mesh.rpl.messages import (
    Dao,
    Dio,
    Dis,
    PrefixInformation,
    RplMessage,
    RplTarget,
    TransitInformation,
    to_icmpv6,
)
from amistack.mesh.rpl.packet import Packet
from amistack.mesh.rpl.srh import RplHopOption, SourceRoutingHeader

NON_STORING = replace(RFC6550, mop=Mop.NON_STORING, max_routes=64)
STORING = replace(RFC6550, mop=Mop.STORING_NO_MULTICAST, max_routes=64)
EVIL = 99  # the attacker: no RplNode, it only injects


def formed(medium: Medium, until: float = 60.0) -> Medium:
    medium.start()
    medium.run(until)
    return medium


def packet(message: RplMessage, src: bytes, dst: bytes) -> Packet:
    return Packet(src, dst, to_icmpv6(message, src, dst))


def forged_dio(medium: Medium, rank: int) -> Packet:
    root = medium.root
    assert root.dodag_id is not None
    options = (root.config.dodag_configuration(), PrefixInformation(PREFIX, 64))
    dio = Dio(0, root.version, rank, root.dodag_id, Mop.NON_STORING, options=options)
    return packet(dio, ll(EVIL), ALL_RPL_NODES)


def test_a_node_claiming_root_rank_is_not_chosen_and_is_reported() -> None:
    medium = formed(Medium(line(10), NON_STORING))
    medium.extra_links[EVIL] = [8, 9]
    for rank in (256, 300, 10):  # ROOT_RANK, DAGRank 1, below ROOT_RANK
        medium.inject(EVIL, None, forged_dio(medium, rank))
        medium.run(medium.now + 1.0)
    for i in (8, 9):
        node = medium.nodes[i]
        assert node.preferred == ll(i - 1), "the liar must not become a parent"
        assert node.counters["bogus_rank"] == 1  # then blocked: later lies are not even parsed
        assert node.counters["dio_from_blocked"] == 2
        assert [e.neighbor for e in medium.events[i] if isinstance(e, BogusRank)] == [ll(EVIL)]
    assert_everyone_joined(medium)


def assert_everyone_joined(medium: Medium) -> None:
    assert all(medium.nodes[i].joined for i in medium.alive)


def test_a_plausible_low_rank_is_caught_on_the_data_path() -> None:
    # The liar claims DAGRank 2 next to node 7 (true DAGRank 8): nothing in a DIO can refute
    # that, so node 7 takes it as parent. When the liar forwards node 7's traffic with the
    # rank it claimed, the next router up sees a packet climbing from a lower rank (§11.2).
    medium = formed(Medium(line(10), NON_STORING))
    medium.extra_links[EVIL] = [7]  # node 6 does not hear the lie, only the relayed packets
    medium.inject(EVIL, None, forged_dio(medium, 512))
    medium.run(medium.now + 1.0)
    assert medium.nodes[7].preferred == ll(EVIL)
    medium.send(7, gua(0), b"via the liar")
    medium.run(medium.now + 0.1)
    assert any(p.payload == b"via the liar" for p in medium.captured[EVIL])
    # the liar relays it honestly, but with its claimed rank in the RPL Option
    relayed = Packet(gua(7), gua(0), b"via the liar", 17, 63, RplHopOption(0, 512))
    medium.extra_links[EVIL] = [7, 6]
    medium.inject(EVIL, 6, relayed)
    medium.run(medium.now + 1.0)
    assert medium.nodes[6].counters["rank_error"] == 1
    # first error: flagged (R) and forwarded; node 6 meanwhile hangs below node 7 (which now
    # advertises the rank the lie gave it), so the flagged packet ends at the liar again
    flagged = [p for p in medium.captured[EVIL] if p.payload == b"via the liar"]
    assert any(p.hop_option is not None and p.hop_option.rank_error for p in flagged)
    # a packet that already carries the Rank-Error flag and is inconsistent again is a loop
    medium.inject(
        EVIL,
        6,
        replace(relayed, payload=b"looping", hop_option=RplHopOption(0, 512, rank_error=True)),
    )
    medium.run(medium.now + 1.0)
    assert medium.nodes[6].counters["loop_detected"] == 1
    assert b"looping" not in medium.received(0)
    assert not any(p.payload == b"looping" for p in medium.captured[EVIL])
    assert any(isinstance(e, LoopDetected) for e in medium.events[6])


def dao_from(target: bytes, parent: bytes, sequence: int = 1) -> Dao:
    return Dao(
        0, sequence, True, None, (RplTarget(target), TransitInformation(1, 0xFF, parent=parent))
    )


def test_a_dao_flood_of_forged_targets_is_bounded_at_the_root() -> None:
    medium = formed(Medium(grid(5, 6), NON_STORING))
    legit = medium.root.route_table()
    assert len(legit) == 29
    medium.extra_links[EVIL] = [0]
    received = sent_before = 0
    sent_before = medium.root.counters["tx_daoack"]
    for k in range(2000):
        fake = PREFIX[:8] + (0xEE00000000 + k).to_bytes(8, "big")
        medium.inject(EVIL, 0, packet(dao_from(fake, gua(0)), fake, gua(0)))
        received += 1
    medium.run(medium.now + 5.0)
    root = medium.root
    assert len(root.routes) <= NON_STORING.max_routes
    assert root.counters["route_table_full"] > 0
    assert all(root.source_route(t) == r for t, r in legit.items())  # nobody evicted
    acks = root.counters["tx_daoack"] - sent_before
    assert acks <= received  # never more answers than requests (and each ACK is smaller)
    assert_everyone_joined(medium)


def test_a_dao_flood_from_one_source_is_rate_limited() -> None:
    medium = formed(Medium(line(4), NON_STORING))
    medium.extra_links[EVIL] = [0]
    fake = PREFIX[:8] + bytes.fromhex("00000000deadbeef")
    for k in range(500):
        medium.inject(EVIL, 0, packet(dao_from(fake, gua(0), k % 256), fake, gua(0)))
    medium.run(medium.now + 1.0)
    assert medium.root.counters["dao_rate_limited"] >= 490


def test_a_storing_mode_dao_flood_from_one_neighbour_is_bounded() -> None:
    medium = formed(Medium(line(6), STORING))
    medium.extra_links[EVIL] = [2]
    node = medium.nodes[2]
    before = len(node.routes)
    for k in range(1000):
        fake = PREFIX[:8] + (0xEE00000000 + k).to_bytes(8, "big")
        dao = Dao(0, k % 256, True, None, (RplTarget(fake), TransitInformation(1, 0xFF)))
        medium.inject(EVIL, 2, packet(dao, ll(EVIL), ll(2)))
    medium.run(medium.now + 2.0)
    assert node.counters["dao_rate_limited"] >= 990
    assert len(node.routes) - before <= STORING.dao_burst_per_source + 3
    assert_everyone_joined(medium)


def test_a_dao_with_too_many_targets_is_dropped() -> None:
    medium = formed(Medium(line(3), NON_STORING))
    medium.extra_links[EVIL] = [0]
    targets = tuple(RplTarget(PREFIX[:8] + k.to_bytes(8, "big")) for k in range(100, 140))
    dao = Dao(0, 1, True, None, (*targets, TransitInformation(1, 0xFF, parent=gua(0))))
    medium.inject(EVIL, 0, packet(dao, targets[0].prefix, gua(0)))
    medium.run(medium.now + 1.0)
    assert medium.root.counters["dao_too_many_targets"] == 1
    assert len(medium.root.routes) == 2


def test_a_unicast_dis_flood_gets_bounded_answers() -> None:
    medium = formed(Medium(line(3), NON_STORING))
    medium.extra_links[EVIL] = [1]
    for _ in range(300):
        medium.inject(EVIL, 1, packet(Dis(), ll(EVIL), ll(1)))
    medium.run(medium.now + 1.0)
    node = medium.nodes[1]
    answered = 300 - node.counters["dis_rate_limited"]
    assert answered <= RFC6550.dao_burst_per_source + 2
    assert node.counters["dis_rate_limited"] >= 290
    # multicast DIS resets trickle (§8.3); a flood of them resets it only so often
    before = node.counters["tx_dio"]
    for _ in range(300):
        medium.inject(EVIL, 1, packet(Dis(), ll(EVIL), ALL_RPL_NODES))
    medium.run(medium.now + 1.0)
    assert node.counters["dis_rate_limited"] >= 580
    assert node.counters["tx_dio"] - before <= 2 * RFC6550.dao_burst_per_source


def test_malformed_control_messages_are_counted_and_dropped() -> None:
    medium = formed(Medium(line(3), NON_STORING))
    medium.extra_links[EVIL] = [1]
    bad = [
        Icmpv6Message(155, 1, b"\x00" * 5).encode(ll(EVIL), ALL_RPL_NODES),  # short DIO
        Icmpv6Message(155, 1, b"\x00" * 30).encode(ll(EVIL), ll(1)),  # checksum for another dst
        b"\x9b\x01\x00",  # truncated header
        Icmpv6Message(155, 0x81, b"\x00" * 40).encode(ll(EVIL), ALL_RPL_NODES),  # secure DIO
    ]
    for wire in bad:
        medium.inject(EVIL, 1, Packet(ll(EVIL), ALL_RPL_NODES, wire))
    medium.run(medium.now + 1.0)
    assert medium.nodes[1].counters["decode_error"] == len(bad)
    assert_everyone_joined(medium)
    medium.send(2, gua(0), b"still fine")
    medium.run(medium.now + 1.0)
    assert b"still fine" in medium.received(0)


def test_a_looping_source_route_is_dropped() -> None:
    medium = formed(Medium(line(4), NON_STORING))
    medium.extra_links[EVIL] = [1]
    # node 1 appears twice in what is left of the route, with another node between
    srh = SourceRoutingHeader((gua(2), gua(1), gua(3), gua(1), gua(3)), 5)
    medium.inject(EVIL, 1, Packet(gua(0), gua(1), b"loop", 17, 64, None, srh))
    medium.run(medium.now + 1.0)
    assert medium.nodes[1].counters["loop_detected"] == 1
    assert b"loop" not in medium.received(3)
    assert not any(isinstance(e, DataReceived) and e.payload == b"loop" for e in medium.events[3])


def test_a_forged_no_path_dao_from_another_neighbour_removes_nothing() -> None:
    medium = formed(Medium(line(5), STORING))
    node = medium.nodes[1]
    assert gua(4) in node.routes
    medium.extra_links[EVIL] = [1]
    no_path = Dao(0, 9, False, None, (RplTarget(gua(4)), TransitInformation(250, 0)))
    medium.inject(EVIL, 1, packet(no_path, ll(EVIL), ll(1)))
    medium.run(medium.now + 1.0)
    assert gua(4) in node.routes and node.routes[gua(4)].via == ll(2)


def test_a_joined_node_judges_rank_by_the_roots_min_hop_rank_increase() -> None:
    # the liar advertises MinHopRankIncrease 1 so that rank 10 would look like DAGRank 10
    medium = formed(Medium(line(4), NON_STORING))
    medium.extra_links[EVIL] = [3]
    root = medium.root
    assert root.dodag_id is not None
    options = (replace(root.config.dodag_configuration(), min_hop_rank_increase=1),)
    dio = Dio(0, root.version, 10, root.dodag_id, Mop.NON_STORING, options=options)
    medium.inject(EVIL, None, packet(dio, ll(EVIL), ALL_RPL_NODES))
    medium.run(medium.now + 1.0)
    assert medium.nodes[3].counters["bogus_rank"] == 1
    assert medium.nodes[3].preferred == ll(2)


def test_data_to_the_all_rpl_nodes_group_is_not_delivered() -> None:
    medium = formed(Medium(line(3), NON_STORING))
    medium.extra_links[EVIL] = [1]
    medium.inject(EVIL, 1, Packet(ll(EVIL), ALL_RPL_NODES, b"spam", next_header=17))
    medium.run(medium.now + 1.0)
    assert medium.received(1) == [] and medium.nodes[1].counters["not_for_us"] == 1


def test_a_forged_dodag_version_does_not_pull_nodes_away() -> None:
    # the version-number attack: a newer version makes nodes drop their ranks and rejoin
    # through whoever announced it; only a parent's announcement counts
    medium = formed(Medium(grid(3, 3), NON_STORING))
    medium.extra_links[EVIL] = [4, 5, 8]
    root = medium.root
    assert root.dodag_id is not None
    options = (root.config.dodag_configuration(), PrefixInformation(PREFIX, 64))
    newer = Dio(0, root.version + 1, 512, root.dodag_id, Mop.NON_STORING, options=options)
    medium.inject(EVIL, None, packet(newer, ll(EVIL), ALL_RPL_NODES))
    medium.run(medium.now + 2.0)
    for i in (4, 5, 8):
        node = medium.nodes[i]
        assert node.version == root.version and node.preferred != ll(EVIL)
        assert node.counters["new_version_not_from_parent"] == 1
