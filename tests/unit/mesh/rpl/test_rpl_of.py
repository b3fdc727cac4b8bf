"""Objective functions (RFC 6552, RFC 6719), ETX estimation, parent selection with hysteresis
and the rank rules (RFC 6550 §8.2.2), lollipop counters (§7.2) and the §11.2 data-path check."""

from __future__ import annotations

import pytest

from amistack.mesh.rpl.constants import INFINITE_RANK
from amistack.mesh.rpl.dodag import (
    NO_PARENT,
    Neighbor,
    check_hop_option,
    lollipop_greater,
    lollipop_increment,
    select_parents,
)
from amistack.mesh.rpl.errors import RplRoutingError
from amistack.mesh.rpl.of import ETX_DEFAULT, LinkStats, Mrhof, Of0, objective_function
from amistack.mesh.rpl.srh import RplHopOption

A, B, C = b"A" * 16, b"B" * 16, b"C" * 16


def neighbors(**ranks: int) -> list[Neighbor]:
    return [Neighbor(name.encode() * 16, rank, 240, 240, 0.0) for name, rank in ranks.items()]


def links(**etx: int) -> LinkStats:
    stats = LinkStats()
    for name, value in etx.items():
        stats.set_etx(name.encode() * 16, value)
    return stats


def test_of0_rank_increase_from_etx() -> None:
    of0 = Of0()
    assert of0.rank_via(256, 128, 256) == 256 + 1 * 256  # ETX 1 -> Sp 1 (3*1-2)
    assert of0.rank_via(256, 256, 256) == 256 + 4 * 256  # ETX 2 -> Sp 4
    assert Of0(etx_based_step=False).rank_via(256, 999, 256) == 256 + 3 * 256  # default Sp 3
    assert Of0(rank_factor=2, rank_stretch=1).rank_via(0, 128, 256) == (2 * 1 + 1) * 256
    assert of0.acceptable(256, 128) and not of0.acceptable(256, 512)  # ETX 4 -> Sp 10 > 9
    with pytest.raises(ValueError):
        Of0(rank_factor=5)


def test_mrhof_rank_is_path_etx_at_least_one_hop() -> None:
    mrhof = Mrhof()
    assert mrhof.rank_via(256, 128, 256) == 512  # max(256 + 256, 256 + 128)
    assert mrhof.rank_via(512, 300, 128) == 812  # path cost wins over one MinHopRankIncrease
    assert not mrhof.acceptable(256, 513)  # link above MAX_LINK_METRIC (ETX 4)
    assert not mrhof.acceptable(32700, 128)  # path above MAX_PATH_COST
    assert objective_function(0) == Of0() and objective_function(1) == Mrhof()
    assert objective_function(7) is None


def test_etx_estimator_is_contiki_ng_ewma() -> None:
    stats = LinkStats()
    assert stats.etx(A) == ETX_DEFAULT == 256
    stats.record_tx(A, attempts=1, acked=True)
    assert stats.etx(A) == (256 * 75 + 128 * 25) // 100  # bootstrap alpha 25 %
    stats.record_tx(B, attempts=3, acked=False)
    assert stats.etx(B) == (256 * 75 + 16 * 128 * 25) // 100  # no-ACK counts as 16 tries
    for _ in range(50):
        stats.record_tx(A, attempts=1, acked=True)
    assert 128 <= stats.etx(A) < 135
    small = LinkStats(max_neighbors=2)
    for n in (A, B, C):
        small.set_etx(n, 200)
    assert not small.known(A) and small.known(C)  # bounded: oldest forgotten


def test_preferred_parent_hysteresis() -> None:
    mrhof = Mrhof()
    # A (current) path cost 768 + 128 = 896; B 512 + 300 = 812: better, but by < 192
    choice = select_parents(neighbors(A=768, B=512), links(A=128, B=300), mrhof, 256, A, 3)
    assert choice.preferred == A
    # B 512 + 128 = 640: better by 256 > 192, switch
    choice = select_parents(neighbors(A=768, B=512), links(A=128, B=128), mrhof, 256, A, 3)
    assert choice.preferred == B and choice.rank == 768
    # with no current parent the best is taken outright
    assert (
        select_parents(neighbors(A=768, B=512), links(A=128, B=300), mrhof, 256, None, 3).preferred
        == B
    )


def test_parent_set_holds_only_lower_dag_rank() -> None:
    mrhof = Mrhof()
    nbrs = neighbors(A=256, B=512, C=768)
    choice = select_parents(nbrs, links(A=128, B=128, C=128), mrhof, 256, None, 3)
    assert choice.preferred == A and choice.rank == 512
    assert choice.parents == (A,)  # B has DAGRank 2 = ours: a sibling, not a parent
    nbrs = neighbors(A=256, B=300, C=768)
    assert select_parents(nbrs, links(A=128, B=128, C=128), mrhof, 256, None, 3).parents == (A, B)
    assert select_parents(nbrs, links(A=128, B=128, C=128), mrhof, 256, None, 1).parents == (A,)


def test_max_rank_increase_and_exclusions() -> None:
    mrhof = Mrhof()
    nbrs = neighbors(A=1024)
    assert select_parents(nbrs, links(A=128), mrhof, 256, None, 3, rank_limit=1200) == NO_PARENT
    assert select_parents(nbrs, links(A=128), mrhof, 256, None, 3, rank_limit=1280).rank == 1280
    assert (
        select_parents(nbrs, links(A=128), mrhof, 256, None, 3, excluded=frozenset({A}))
        == NO_PARENT
    )
    assert (
        select_parents(neighbors(A=INFINITE_RANK), links(A=128), mrhof, 256, None, 3) == NO_PARENT
    )


def test_lollipop_counters() -> None:
    assert lollipop_increment(240) == 241
    assert lollipop_increment(255) == 0 and lollipop_increment(127) == 0
    assert lollipop_greater(241, 240) and not lollipop_greater(240, 241)
    assert lollipop_greater(2, 126) and not lollipop_greater(126, 2)  # circular wrap
    assert lollipop_greater(3, 250)  # just past the linear region
    assert lollipop_greater(240, 40)  # a restarted counter beats a stale circular one
    assert not lollipop_greater(7, 7)


def test_data_path_rank_checks() -> None:
    up_from_child = RplHopOption(0, sender_rank=768)
    assert check_hop_option(up_from_child, own_rank=512, instance_id=0) == up_from_child
    up_from_above = RplHopOption(0, sender_rank=256)
    flagged = check_hop_option(up_from_above, own_rank=512, instance_id=0)
    assert flagged.rank_error
    with pytest.raises(RplRoutingError, match="loop"):
        check_hop_option(RplHopOption(0, 256, rank_error=True), own_rank=512, instance_id=0)
    down_from_parent = RplHopOption(0, 256, down=True)
    assert not check_hop_option(down_from_parent, own_rank=512, instance_id=0).rank_error
    assert check_hop_option(RplHopOption(0, 768, down=True), own_rank=512, instance_id=0).rank_error
    with pytest.raises(RplRoutingError, match="instance"):
        check_hop_option(RplHopOption(5, 768), own_rank=512, instance_id=0)
