"""The DODAG arithmetic the node engine relies on, as pure functions: lollipop counters
(RFC 6550 §7.2), the parent set and preferred parent (§8.2.1, RFC 6719 §3.2) under the rank
rules that keep the graph loop-free (§8.2.2), and the data-path rank checks (§11.2)."""

from __future__ import annotations

from dataclasses import dataclass

from amistack.mesh.rpl.constants import INFINITE_RANK, SEQUENCE_WINDOW
from amistack.mesh.rpl.errors import RplRoutingError
from amistack.mesh.rpl.of import LinkStats, ObjectiveFunction, dag_rank
from amistack.mesh.rpl.srh import RplHopOption

LOLLIPOP_MAX = 255
LOLLIPOP_CIRCULAR = 127
LOLLIPOP_INIT = LOLLIPOP_MAX + 1 - SEQUENCE_WINDOW  # §7.2: counters start at 240


def lollipop_increment(value: int) -> int:
    """§7.2: the linear region 128..255 runs into the circular region 0..127, which wraps."""
    if value in (LOLLIPOP_CIRCULAR, LOLLIPOP_MAX):
        return 0
    return value + 1


def lollipop_greater(a: int, b: int) -> bool:
    """§7.2: is counter `a` newer than `b`?"""
    if a > LOLLIPOP_CIRCULAR >= b:
        return LOLLIPOP_MAX + 1 + b - a > SEQUENCE_WINDOW
    if a <= LOLLIPOP_CIRCULAR < b:
        return LOLLIPOP_MAX + 1 + a - b <= SEQUENCE_WINDOW
    if a < b:
        return LOLLIPOP_CIRCULAR + 1 - b + a < SEQUENCE_WINDOW
    return a > b and a - b < LOLLIPOP_CIRCULAR + 1 - SEQUENCE_WINDOW


@dataclass
class Neighbor:
    """What a node knows of a neighbour from its last DIO."""

    address: bytes  # link-local
    rank: int
    version: int
    dtsn: int
    last_heard: float


@dataclass(frozen=True)
class ParentChoice:
    preferred: bytes | None
    parents: tuple[bytes, ...]  # the parent set, preferred first
    rank: int  # the rank this node advertises with this choice


NO_PARENT = ParentChoice(None, (), INFINITE_RANK)


def select_parents(
    neighbors: list[Neighbor],
    links: LinkStats,
    of: ObjectiveFunction,
    min_hop_rank_increase: int,
    current: bytes | None,
    parent_set_size: int,
    rank_limit: int = INFINITE_RANK,
    excluded: frozenset[bytes] = frozenset(),
) -> ParentChoice:
    """§8.2.1 / RFC 6719 §3.2: the preferred parent is the acceptable neighbour of least path
    cost, kept while no other beats it by the OF's hysteresis; the parent set adds the next
    best neighbours whose DAGRank is strictly below the node's own (§8.2.2.4 rule 1, which
    makes a loop through the set impossible). `rank_limit` is L + DAGMaxRankIncrease
    (§8.2.2.4 rule 3): a choice that would push the rank past it is no choice."""
    usable: list[Neighbor] = []
    cost: dict[bytes, int] = {}
    etx, acceptable, path_cost = links.etx, of.acceptable, of.path_cost
    for n in neighbors:  # one pass, each link's ETX looked up once (run for every ACK heard)
        if n.address in excluded or n.rank >= INFINITE_RANK:
            continue
        metric = etx(n.address)
        if acceptable(n.rank, metric):
            usable.append(n)
            cost[n.address] = path_cost(n.rank, metric)
    if not usable:
        return NO_PARENT
    usable.sort(key=lambda n: (cost[n.address], n.rank))
    best = usable[0]
    kept = next((n for n in usable if n.address == current), None)
    if kept is not None and not of.should_switch(
        cost[kept.address], cost[best.address], min_hop_rank_increase
    ):
        best = kept
    rank = of.rank_via(best.rank, links.etx(best.address), min_hop_rank_increase)
    if rank > rank_limit or rank >= INFINITE_RANK:
        return NO_PARENT
    own = dag_rank(rank, min_hop_rank_increase)
    others = [
        n.address for n in usable if n is not best and dag_rank(n.rank, min_hop_rank_increase) < own
    ]
    return ParentChoice(best.address, (best.address, *others[: parent_set_size - 1]), rank)


def check_hop_option(option: RplHopOption, own_rank: int, instance_id: int) -> RplHopOption:
    """§11.2.2.2 at a router forwarding a packet that carries the RPL Option. A packet going
    up (O clear) must come from a greater rank, one going down (O set) from a lesser rank;
    the first inconsistency sets the Rank-Error bit, a second one means a loop: raise
    RplRoutingError (drop, and the caller resets its DIO trickle timer). Returns the option
    to forward (R bit possibly set; SenderRank is rewritten by the forwarder)."""
    if option.instance_id != instance_id:
        raise RplRoutingError(f"RPL Option for instance {option.instance_id}, not ours")
    if option.forwarding_error:
        return option  # handled by the storing-mode route logic (§11.2.2.3)
    # raw ranks, as Contiki-NG's rpl-ext-header.c compares them: a packet going up must
    # come from a greater rank, one going down from a strictly lesser one
    closer = option.sender_rank < own_rank
    inconsistent = not closer if option.down else closer
    if not inconsistent:
        return option
    if option.rank_error:
        raise RplRoutingError("rank inconsistency seen twice on this packet: loop")
    return RplHopOption(
        option.instance_id, option.sender_rank, option.down, True, False, option.sub_tlvs,
        option.option_type,
    )  # fmt: skip
