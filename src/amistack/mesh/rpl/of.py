"""Objective functions and the link statistics they read: OF0 (RFC 6552) and MRHOF with ETX
(RFC 6719). Ranks and ETX are integers; ETX is fixed point with divisor 128 (RFC 6551 §4.3.2),
so a perfect link is 128 and MRHOF's rank equals the path's summed ETX."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from amistack.mesh.rpl.constants import (
    ETX_DIVISOR,
    INFINITE_RANK,
    MRHOF_MAX_LINK_METRIC,
    MRHOF_MAX_PATH_COST,
    MRHOF_PARENT_SWITCH_THRESHOLD,
    OF0_DEFAULT_RANK_FACTOR,
    OF0_DEFAULT_RANK_STRETCH,
    OF0_DEFAULT_STEP_OF_RANK,
    OF0_MAXIMUM_RANK_FACTOR,
    OF0_MAXIMUM_RANK_STRETCH,
    OF0_MAXIMUM_STEP_OF_RANK,
    OF0_MINIMUM_RANK_FACTOR,
    OF0_MINIMUM_STEP_OF_RANK,
    Ocp,
)

# Contiki-NG os/net/link-stats.c: the ETX estimator's EWMA (weights out of 100), the penalty a
# lost frame counts as, the value before any sample, and how many samples bootstrap it.
ETX_EWMA_SCALE = 100
ETX_EWMA_ALPHA = 10
ETX_EWMA_BOOTSTRAP_ALPHA = 25
ETX_NOACK_PENALTY = 16
ETX_DEFAULT = 2 * ETX_DIVISOR
ETX_FRESHNESS_TARGET = 4


def dag_rank(rank: int, min_hop_rank_increase: int) -> int:
    """RFC 6550 §3.5.1: DAGRank(rank) = floor(rank / MinHopRankIncrease)."""
    return rank // min_hop_rank_increase


class LinkStats:
    """Per-neighbour ETX (x128) from link-layer transmission outcomes (an EWMA, as Contiki-NG's
    link-stats does) or set directly by a link layer that measures it. Bounded: the least
    recently updated neighbour is forgotten first."""

    def __init__(self, max_neighbors: int = 256) -> None:
        self.max_neighbors = max_neighbors
        self._etx: dict[bytes, int] = {}
        self._samples: dict[bytes, int] = {}
        self.version = 0  # counts the changes of any neighbour's ETX (readers cache on it)

    def etx(self, neighbor: bytes) -> int:
        return self._etx.get(neighbor, ETX_DEFAULT)

    def known(self, neighbor: bytes) -> bool:
        return neighbor in self._etx

    def _store(self, neighbor: bytes, value: int) -> None:
        if self._etx.pop(neighbor, None) != value:
            self.version += 1
        if len(self._etx) >= self.max_neighbors:
            oldest = next(iter(self._etx))
            del self._etx[oldest]
            self._samples.pop(oldest, None)
            self.version += 1
        self._etx[neighbor] = value

    def set_etx(self, neighbor: bytes, etx: int) -> None:
        """A link layer's own measurement (ETX x 128), replacing the estimate."""
        self._store(neighbor, max(ETX_DIVISOR, min(etx, 0xFFFF)))

    def record_tx(self, neighbor: bytes, attempts: int, acked: bool) -> None:
        """One unicast frame to `neighbor`: `attempts` transmissions, acknowledged or not."""
        sample = (attempts if acked else ETX_NOACK_PENALTY) * ETX_DIVISOR
        count = self._samples.get(neighbor, 0)
        alpha = ETX_EWMA_ALPHA if count >= ETX_FRESHNESS_TARGET else ETX_EWMA_BOOTSTRAP_ALPHA
        old = self.etx(neighbor)
        self._store(neighbor, (old * (ETX_EWMA_SCALE - alpha) + sample * alpha) // ETX_EWMA_SCALE)
        self._samples[neighbor] = count + 1

    def forget(self, neighbor: bytes) -> None:
        if self._etx.pop(neighbor, None) is not None:
            self.version += 1
        self._samples.pop(neighbor, None)


class ObjectiveFunction(Protocol):
    """What the DODAG logic asks an objective function (RFC 6550 §14)."""

    ocp: Ocp

    def acceptable(self, rank: int, link_metric: int) -> bool:
        """May a neighbour with this rank, over this link, be a parent at all?"""
        ...

    def path_cost(self, rank: int, link_metric: int) -> int:
        """The cost of reaching the root through the neighbour (lower is better)."""
        ...

    def rank_via(self, rank: int, link_metric: int, min_hop_rank_increase: int) -> int:
        """The rank this node would have with the neighbour as preferred parent."""
        ...

    def should_switch(self, current_cost: int, best_cost: int, min_hop_rank_increase: int) -> bool:
        """Hysteresis: leave the current preferred parent for one with `best_cost`?"""
        ...


@dataclass(frozen=True)
class Of0:
    """RFC 6552: rank_increase = (Rf * Sp + Sr) * MinHopRankIncrease (§4.1). Sp comes from ETX
    as Contiki-NG's rpl-of0.c maps it (3 * ETX - 2: 1 on a perfect link), or is the default 3
    when the link is unmeasured; a link whose Sp leaves 1..9 is not acceptable (§6.2)."""

    rank_factor: int = OF0_DEFAULT_RANK_FACTOR
    rank_stretch: int = OF0_DEFAULT_RANK_STRETCH
    etx_based_step: bool = True

    ocp = Ocp.OF0

    def __post_init__(self) -> None:
        if not OF0_MINIMUM_RANK_FACTOR <= self.rank_factor <= OF0_MAXIMUM_RANK_FACTOR:
            raise ValueError("OF0 rank factor is 1..4 (RFC 6552 §6.3)")
        if not 0 <= self.rank_stretch <= OF0_MAXIMUM_RANK_STRETCH:
            raise ValueError("OF0 rank stretch is 0..5 (RFC 6552 §6.3)")

    def step_of_rank(self, link_metric: int) -> int:
        if not self.etx_based_step:
            return OF0_DEFAULT_STEP_OF_RANK
        return (3 * link_metric) // ETX_DIVISOR - 2

    def acceptable(self, rank: int, link_metric: int) -> bool:
        step = self.step_of_rank(link_metric)
        return OF0_MINIMUM_STEP_OF_RANK <= step <= OF0_MAXIMUM_STEP_OF_RANK and rank < INFINITE_RANK

    def rank_via(self, rank: int, link_metric: int, min_hop_rank_increase: int) -> int:
        step = self.step_of_rank(link_metric)
        increase = (self.rank_factor * step + self.rank_stretch) * min_hop_rank_increase
        return min(rank + increase, INFINITE_RANK)

    def path_cost(self, rank: int, link_metric: int) -> int:
        return min(rank + link_metric, INFINITE_RANK)

    def should_switch(self, current_cost: int, best_cost: int, min_hop_rank_increase: int) -> bool:
        # ranks are coarse multiples of MinHopRankIncrease: any strict improvement, ties stay
        return best_cost < current_cost


@dataclass(frozen=True)
class Mrhof:
    """RFC 6719 with ETX and no metric container: path cost = neighbour rank + link ETX (§3.1),
    rank = max(path cost, neighbour rank + MinHopRankIncrease) (§3.3), links above
    MAX_LINK_METRIC and paths above MAX_PATH_COST excluded (§3.2.1), parent changes only
    for a gain of PARENT_SWITCH_THRESHOLD (§3.2.2)."""

    switch_threshold: int = MRHOF_PARENT_SWITCH_THRESHOLD
    max_link_metric: int = MRHOF_MAX_LINK_METRIC
    max_path_cost: int = MRHOF_MAX_PATH_COST

    ocp = Ocp.MRHOF

    def acceptable(self, rank: int, link_metric: int) -> bool:
        return (
            link_metric <= self.max_link_metric
            and self.path_cost(rank, link_metric) <= self.max_path_cost
        )

    def path_cost(self, rank: int, link_metric: int) -> int:
        return min(rank + link_metric, INFINITE_RANK)

    def rank_via(self, rank: int, link_metric: int, min_hop_rank_increase: int) -> int:
        return min(
            max(rank + min_hop_rank_increase, self.path_cost(rank, link_metric)), INFINITE_RANK
        )

    def should_switch(self, current_cost: int, best_cost: int, min_hop_rank_increase: int) -> bool:
        return best_cost + self.switch_threshold < current_cost


def objective_function(ocp: int) -> ObjectiveFunction | None:
    """The OF for an Objective Code Point, or None when this node does not support it (a node
    must not join a DODAG whose OF it does not implement, RFC 6550 §8.2.2.1)."""
    if ocp == Ocp.OF0:
        return Of0()
    if ocp == Ocp.MRHOF:
        return Mrhof()
    return None
