"""The Target Descriptor (RFC 6550 §6.7.8) a non-storing node adds to its DAO when
`RplConfig.describe_targets` is on: its rank and its parent link's ETX, stored with the root's
route for the concentrator's topology report. Off by default (the DAO is as before); a
descriptor is only ever taken for the Target right before it; values saturate."""

from __future__ import annotations

from dataclasses import replace

from tests.unit.mesh.rpl.rpl_medium import Medium, gua, line

from amistack.mesh.rpl.config import RFC6550
from amistack.mesh.rpl.constants import ETX_DIVISOR, Mop
from amistack.mesh.rpl.messages import Dao, RplTarget, TargetDescriptor, TransitInformation
from amistack.mesh.rpl.node import _target_descriptors, describe_target, described

NON_STORING = replace(RFC6550, mop=Mop.NON_STORING)


def test_each_route_at_the_root_carries_its_nodes_rank_and_parent_link_etx() -> None:
    medium = Medium(line(8), replace(NON_STORING, describe_targets=True))
    medium.start()
    medium.run(60.0)
    for i in range(1, 8):
        route = medium.root.routes[gua(i)]
        assert route.descriptor is not None
        rank, etx = described(route.descriptor)
        node = medium.nodes[i]
        assert rank == node.rank == 256 * (i + 1)
        assert etx == node.links.etx(node.preferred)  # as the node estimated it at its DAO
        assert etx >= ETX_DIVISOR  # RFC 6551 §4.3.2: ETX x 128, at least 1


def test_off_by_default_the_dao_is_as_before() -> None:
    medium = Medium(line(4), NON_STORING)
    medium.start()
    medium.run(60.0)
    assert all(r.descriptor is None for r in medium.root.routes.values())


def test_a_descriptor_describes_only_the_target_right_before_it() -> None:
    t1, t2 = RplTarget(gua(1)), RplTarget(gua(2))
    transit = TransitInformation(1, 30, parent=gua(0))
    options = (TargetDescriptor(7), t1, transit, TargetDescriptor(8), t2, TargetDescriptor(9))
    assert _target_descriptors(Dao(0, 1, options=options)) == {gua(2): 9}
    two = (t1, TargetDescriptor(1), TargetDescriptor(2))  # only the first follows t1
    assert _target_descriptors(Dao(0, 1, options=two)) == {gua(1): 1}


def test_values_saturate_in_their_16_bits() -> None:
    assert described(describe_target(0x1_0000, 0x1_0000)) == (0xFFFF, 0xFFFF)
    assert described(describe_target(512, -5)) == (512, 0)
