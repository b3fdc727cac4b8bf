"""The sans-IO RPL node (RFC 6550): root or router (or leaf), non-storing (MOP 1, the root keeps
the source routes, RFC 6554) or storing (MOP 2, every router keeps downward routes).

The link layer feeds `receive_packet(packet, neighbor, now, link_metric)` and link feedback
(`record_transmission`, `neighbor_unreachable`); the node answers with `transmissions()` (one
hop each, multicast or to a neighbour) and `next_event()`, and wants `handle_timer(now)` at
`get_timer()`. Upper layers send with `send(dst, payload, now)`. Bad input is counted in
`counters` and dropped; every table an untrusted neighbour can grow is bounded.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, replace

from amistack.crypto.rand import RandomSource
from amistack.mesh.icmpv6 import ICMPV6_NEXT_HEADER, Icmpv6DecodeError
from amistack.mesh.rpl.config import RplConfig
from amistack.mesh.rpl.constants import (
    ALL_RPL_NODES,
    DAO_ACK_REJECT_NO_ROOM,
    DAO_ACK_REJECT_THRESHOLD,
    DAO_ACK_UNQUALIFIED_ACCEPT,
    ICMPV6_TYPE_RPL,
    INFINITE_RANK,
    ZERO_LIFETIME,
    Mop,
)
from amistack.mesh.rpl.dodag import (
    LOLLIPOP_INIT,
    Neighbor,
    check_hop_option,
    lollipop_greater,
    lollipop_increment,
    select_parents,
)
from amistack.mesh.rpl.errors import RplRoutingError
from amistack.mesh.rpl.events import (
    BogusRank,
    DaoAcknowledged,
    DaoFailed,
    DataReceived,
    Detached,
    GlobalRepair,
    Joined,
    LoopDetected,
    ParentChanged,
    RouteAdded,
    RouteRemoved,
    RplEvent,
)
from amistack.mesh.rpl.messages import (
    Dao,
    DaoAck,
    Dio,
    Dis,
    PrefixInformation,
    RplMessage,
    RplTarget,
    TargetDescriptor,
    TransitInformation,
    heard,
    to_icmpv6,
)
from amistack.mesh.rpl.of import LinkStats, ObjectiveFunction, dag_rank, objective_function
from amistack.mesh.rpl.packet import LINK_LOCAL_PREFIX, Packet, Transmission, link_local_of
from amistack.mesh.rpl.srh import RplHopOption, SourceRoutingHeader, is_multicast
from amistack.mesh.rpl.trickle import Trickle, uniform
from amistack.ratelimit import KeyedBuckets

log = logging.getLogger(__name__)

MAX_SOURCE_ROUTE_HOPS = 64  # a deeper chain of transit parents is treated as a loop
MAX_EVENTS = 1024  # undrained events beyond this are dropped (and counted)
SWEEP_INTERVAL = 60.0  # how often neighbour and route lifetimes are checked, seconds
DAO_REFRESH_FRACTION = 0.5  # re-announce downward routes at half their lifetime


@dataclass
class Route:
    via: bytes  # non-storing root: the target's transit parent; storing: next-hop child
    path_sequence: int
    expires: float | None
    descriptor: int | None = None  # the target's Target Descriptor, if it sent one (§6.7.8)


DESCRIPTOR_MAX = 0xFFFF  # each half of the 32-bit descriptor


def describe_target(rank: int, etx: int) -> int:
    """amistack's content of the opaque RPL Target Descriptor (RFC 6550 §6.7.8) a node puts
    after its own Target in a non-storing DAO (`RplConfig.describe_targets`): its rank (upper
    16 bits, §3.5) and the ETX of the link to its preferred parent in RFC 6551 §4.3.2 units
    (x 128, lower 16 bits, saturating)."""
    return (min(rank, DESCRIPTOR_MAX) << 16) | min(max(etx, 0), DESCRIPTOR_MAX)


def described(descriptor: int) -> tuple[int, int]:
    """(rank, parent-link ETX x 128) of a `describe_target` descriptor."""
    return descriptor >> 16, descriptor & DESCRIPTOR_MAX


@dataclass
class _PendingDao:
    sequence: int
    deadline: float
    attempts: int


class RplNode:
    """One RPL node. `root_prefix` makes it the DODAG root of that prefix; DODAGID is then
    its global address prefix + its interface identifier."""

    def __init__(
        self,
        link_local: bytes,
        config: RplConfig,
        random: RandomSource,
        *,
        root_prefix: PrefixInformation | None = None,
        leaf: bool = False,
    ) -> None:
        self.link_local = link_local
        self.config = config
        self._random = random
        self.is_root = root_prefix is not None
        self.leaf = leaf and not self.is_root
        self.prefix = root_prefix
        self.global_address: bytes | None = (
            root_prefix.prefix[:8] + link_local[8:] if root_prefix is not None else None
        )
        self.links = LinkStats(config.max_neighbors)
        self.neighbors: dict[bytes, Neighbor] = {}
        self.of: ObjectiveFunction | None = objective_function(config.ocp)
        self.joined = False
        self.dodag_id: bytes | None = None
        self.version = LOLLIPOP_INIT
        self.rank = INFINITE_RANK
        self.lowest_rank = INFINITE_RANK  # L of §8.2.2.4, within this DODAG version
        self.preferred: bytes | None = None
        self.parents: tuple[bytes, ...] = ()
        self.dtsn = LOLLIPOP_INIT
        self.parent_dtsn: int | None = None
        self.trickle = Trickle(config.trickle, random)
        self.routes: dict[bytes, Route] = {}
        self.counters: Counter[str] = Counter()
        self.dao_sequence = LOLLIPOP_INIT
        self.path_sequence = LOLLIPOP_INIT
        self._events: deque[RplEvent] = deque()
        self._out: list[Transmission] = []
        self._dis_at: float | None = None
        self._dao_at: float | None = None
        self._refresh_at: float | None = None
        self._pending: _PendingDao | None = None
        self._sweep_at: float | None = None
        self._hold_until = 0.0
        self._blocked: OrderedDict[bytes, float] = OrderedDict()
        self._choice_inputs: tuple[object, ...] | None = None  # of the last _reselect
        self._buckets = KeyedBuckets(
            config.dao_rate_per_source, config.dao_burst_per_source, config.max_routes
        )

    # ------------------------------------------------------------------ the driver's side

    @property
    def own_addresses(self) -> frozenset[bytes]:
        return frozenset(a for a in (self.link_local, self.global_address) if a is not None)

    def start(self, now: float) -> None:
        self._sweep_at = now + SWEEP_INTERVAL
        if self.is_root:
            self.dodag_id = self.global_address
            self.rank = self.config.min_hop_rank_increase  # §17: ROOT_RANK = MinHopRankIncrease
            self.lowest_rank = self.rank
            self.joined = True
            self.trickle.start(now)
        else:
            self._dis_at = now + uniform(self._random)  # a short random delay desynchronises nodes

    def transmissions(self) -> list[Transmission]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> RplEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        best = self.trickle.get_timer()
        for t in (
            self._dis_at if not self.joined else None,
            self._dao_at,
            self._refresh_at,
            self._pending.deadline if self._pending else None,
            self._sweep_at,
        ):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timer(self, now: float) -> None:
        when = self.trickle.get_timer()
        if when is not None and when <= now and self.trickle.handle_timer(now) and not self.leaf:
            self._multicast(self._dio(), now)
        if not self.joined and self._dis_at is not None and self._dis_at <= now:
            self._multicast(Dis(), now)
            self._dis_at = now + self.config.dis_interval
        if self._dao_at is not None and self._dao_at <= now:
            self._dao_at = None
            self._send_dao(now)
        if self._refresh_at is not None and self._refresh_at <= now:
            self._refresh_at = None
            self._schedule_dao(now)
        if self._pending is not None and self._pending.deadline <= now:
            self._retry_dao(now)
        if self._sweep_at is not None and self._sweep_at <= now:
            self._sweep_at = now + SWEEP_INTERVAL
            self._sweep(now)

    def record_transmission(self, neighbor: bytes, attempts: int, acked: bool, now: float) -> None:
        """Link-layer feedback for one unicast frame; a parent whose ETX grows past what the
        objective function accepts is replaced."""
        self.links.record_tx(neighbor, attempts, acked)
        if neighbor in self.parents:
            self._reselect(now)

    def neighbor_unreachable(self, neighbor: bytes, now: float) -> None:
        """The link layer gave up on `neighbor` (no ACK after its retries): forget it and,
        if it was a parent, repair locally (§8.2.2.5)."""
        self.counters["neighbor_unreachable"] += 1
        self.neighbors.pop(neighbor, None)
        self.links.forget(neighbor)
        if neighbor in self.parents:
            self._reselect(now)

    def send(self, dst: bytes, payload: bytes, now: float, next_header: int = 17) -> None:
        """Originate a data packet from this node to `dst` over the DODAG."""
        src = self.global_address or self.link_local
        packet = Packet(src, dst, payload, next_header)
        if dst in self.own_addresses:
            self._deliver(packet, None, now)
        else:
            self._route(packet, now)

    def global_repair(self, now: float) -> None:
        """Root only: start a new DODAG version (§8.2.2.1) and ask for fresh DAOs (DTSN)."""
        if not self.is_root:
            raise ValueError("only the root starts a global repair")
        self.version = lollipop_increment(self.version)
        self.dtsn = lollipop_increment(self.dtsn)
        self.counters["global_repair"] += 1
        self._event(GlobalRepair(self.version))
        self.trickle.reset(now)

    def source_route(self, target: bytes, now: float | None = None) -> list[bytes] | None:
        """Non-storing root: the hops (global addresses) from the root's first child down to
        `target`, from the DAO parent pointers; None when the chain is unknown or loops."""
        path = [target]
        current = target
        while True:
            route = self.routes.get(current)
            if route is None or (
                now is not None and route.expires is not None and route.expires <= now
            ):
                return None
            if route.via == self.global_address:
                path.reverse()
                return path
            if route.via in path or len(path) >= MAX_SOURCE_ROUTE_HOPS:
                return None
            path.append(route.via)
            current = route.via

    def route_table(self, now: float | None = None) -> dict[bytes, list[bytes]]:
        """Non-storing root: every target with a complete source route (what the handheld's
        DODAG root hands on); storing mode: target -> [next hop]."""
        if self.config.mop == Mop.NON_STORING:
            routes = {t: self.source_route(t, now) for t in self.routes}
            return {t: r for t, r in routes.items() if r is not None}
        return {t: [r.via] for t, r in self.routes.items()}

    # ------------------------------------------------------------------ receiving

    def receive_packet(
        self, packet: Packet, neighbor: bytes, now: float, link_metric: int | None = None
    ) -> None:
        """One packet from link neighbour `neighbor` (link-local); `link_metric` is the link
        layer's ETX x 128 for that link when it has one."""
        if link_metric is not None:
            self.links.set_etx(neighbor, link_metric)
        if packet.hop_option is not None and packet.hop_option.forwarding_error:
            self._forwarding_error_returned(packet, neighbor)
            return
        mine = packet.dst in self.own_addresses
        if mine and packet.srh is not None and packet.srh.segments_left > 0:
            self._forward_source_routed(packet, now)
        elif mine or packet.dst == ALL_RPL_NODES:
            self._deliver(packet, neighbor, now)
        elif is_multicast(packet.dst) or packet.dst[:2] == LINK_LOCAL_PREFIX[:2]:
            self.counters["not_for_us"] += 1
        else:
            self._forward(packet, neighbor, now)

    def _deliver(self, packet: Packet, neighbor: bytes | None, now: float) -> None:
        rpl = packet.next_header == ICMPV6_NEXT_HEADER and packet.payload[:1] == bytes(
            (ICMPV6_TYPE_RPL,)
        )
        if not rpl and packet.dst == ALL_RPL_NODES:
            self.counters["not_for_us"] += 1  # ff02::1a carries RPL control messages only
            return
        if not rpl:
            self._event(DataReceived(packet.src, packet.payload, packet.next_header))
            return
        try:
            message = heard(packet.payload, packet.src, packet.dst)
        except Icmpv6DecodeError as exc:
            self.counters["decode_error"] += 1
            log.debug("rpl decode error", extra={"offset": exc.offset, "reason": exc.reason})
            return
        self.counters[f"rx_{type(message).__name__.lower()}"] += 1
        sender = neighbor if neighbor is not None else packet.src
        if isinstance(message, Dis):
            self._on_dis(packet, sender, now)
        elif isinstance(message, Dio):
            self._on_dio(message, sender, now)
        elif isinstance(message, Dao):
            self._on_dao(message, packet, sender, now)
        else:
            self._on_dao_ack(message, now)

    # ------------------------------------------------------------------ DIS / DIO (§8)

    def _on_dis(self, packet: Packet, sender: bytes, now: float) -> None:
        if not self.joined or self.leaf:
            return
        # a DIO is larger than the DIS that asks for it: answers are bounded per sender
        if not self._allowed("dis", sender, now):
            self.counters["dis_rate_limited"] += 1
        elif packet.dst == ALL_RPL_NODES:
            self.trickle.reset(now)  # §8.3: a multicast DIS is an inconsistency
        else:
            self._unicast(self._dio(), sender, now)  # §8.3: answer a unicast DIS directly

    def _dio(self, rank: int | None = None) -> Dio:
        assert self.dodag_id is not None
        options = (self.config.dodag_configuration(),) + ((self.prefix,) if self.prefix else ())
        return Dio(
            self.config.instance_id, self.version, self.rank if rank is None else rank,
            self.dodag_id, self.config.mop, True, 0, self.dtsn, options,
        )  # fmt: skip

    def _plausible(self, dio: Dio, sender: bytes, now: float) -> bool:
        """A rank below ROOT_RANK is impossible, and DAGRank 1 belongs to the root alone
        (whose DODAGID carries its interface identifier): anything else claiming it lies."""
        until = self._blocked.get(sender)
        if until is not None and until > now:
            self.counters["dio_from_blocked"] += 1
            return False
        # once joined, the root's MinHopRankIncrease counts, not what this DIO claims
        config = None if self.joined else dio.configuration
        step = config.min_hop_rank_increase if config else self.config.min_hop_rank_increase
        if dio.rank == INFINITE_RANK or step == 0:
            return step != 0
        reason = None
        if dio.rank < step:
            reason = "rank below ROOT_RANK"
        elif dag_rank(dio.rank, step) == 1 and sender[8:] != dio.dodag_id[8:]:
            reason = "root rank from a node that is not the DODAG root"
        if reason is None:
            return True
        self.counters["bogus_rank"] += 1
        self._event(BogusRank(sender, dio.rank, reason))
        self._blocked[sender] = now + self.config.neighbor_lifetime
        while len(self._blocked) > self.config.max_neighbors:
            self._blocked.popitem(last=False)
        if self.neighbors.pop(sender, None) is not None and sender in self.parents:
            self._reselect(now)
        return False

    def _on_dio(self, dio: Dio, sender: bytes, now: float) -> None:
        if dio.instance_id != self.config.instance_id:
            self.counters["dio_other_instance"] += 1
            return
        if self.is_root:
            self._root_hears_dio(dio)
            return
        if not self._plausible(dio, sender, now):
            return
        if not self.joined:
            self._maybe_join(dio, sender, now)
            return
        if dio.dodag_id != self.dodag_id:
            self.counters["dio_other_dodag"] += 1
            return
        if lollipop_greater(dio.version, self.version):
            # only the root starts a version and it flows down the tree, so a parent always
            # has it first: one from elsewhere is a forgery (a version-number attack) or early
            if sender not in self.parents:
                self.counters["new_version_not_from_parent"] += 1
                return
            self._new_version(dio, sender, now)
            return
        if dio.version != self.version:
            self.counters["dio_old_version"] += 1
            self.trickle.hear_inconsistent(now)  # our DIOs will bring it forward
            return
        if dio.rank == INFINITE_RANK:
            self.neighbors.pop(sender, None)  # poisoned (§8.2.2.5)
            if sender in self.parents:
                self._reselect(now)
            return
        self.trickle.hear_consistent()
        self._remember(dio, sender, now)
        if sender == self.preferred:
            if self.parent_dtsn is not None and lollipop_greater(dio.dtsn, self.parent_dtsn):
                if self.config.mop != Mop.NON_STORING:
                    self.dtsn = lollipop_increment(self.dtsn)  # §9.6: pass the trigger down
                self._schedule_dao(now)
            self.parent_dtsn = dio.dtsn
        self._reselect(now)

    def _root_hears_dio(self, dio: Dio) -> None:
        if dio.dodag_id == self.dodag_id and dio.version == self.version:
            self.trickle.hear_consistent()
        else:
            self.counters["root_heard_other_dio"] += 1

    def _remember(self, dio: Dio, sender: bytes, now: float) -> bool:
        known = self.neighbors.get(sender)
        if known is None and len(self.neighbors) >= self.config.max_neighbors:
            self.counters["neighbor_table_full"] += 1
            return False
        if known is None:
            self.neighbors[sender] = Neighbor(sender, dio.rank, dio.version, dio.dtsn, now)
        else:
            known.rank, known.version, known.dtsn, known.last_heard = (
                dio.rank, dio.version, dio.dtsn, now,
            )  # fmt: skip
        return True

    def _maybe_join(self, dio: Dio, sender: bytes, now: float) -> None:
        config = dio.configuration
        if now < self._hold_until or dio.rank == INFINITE_RANK:
            self.counters["dio_ignored_detached"] += 1
            return
        if config is None:
            self.counters["dio_without_configuration"] += 1
            return
        of = objective_function(config.ocp)
        if of is None or dio.mop > Mop.STORING_MULTICAST:
            self.counters["dio_unsupported"] += 1
            return
        self.config = self.config.adopt(config, min(dio.mop, Mop.STORING_NO_MULTICAST))
        self.of = of
        self.dodag_id = dio.dodag_id
        self.version = dio.version
        self.prefix = dio.prefix
        if dio.prefix is not None and dio.prefix.autonomous:
            self.global_address = dio.prefix.prefix[:8] + self.link_local[8:]
        self.trickle = Trickle(self.config.trickle, self._random)
        self.neighbors.clear()
        if self._remember(dio, sender, now):
            self.parent_dtsn = dio.dtsn
            self._reselect(now)

    def _new_version(self, dio: Dio, sender: bytes, now: float) -> None:
        """§8.2.2.2: a new DODAG version: forget ranks of the old one, rejoin, re-announce."""
        self.version = dio.version
        self.neighbors.clear()
        self.rank = self.lowest_rank = INFINITE_RANK
        self.counters["new_version"] += 1
        self._event(GlobalRepair(dio.version))
        self._remember(dio, sender, now)
        self.parent_dtsn = dio.dtsn
        self.preferred, self.parents = None, ()
        self._reselect(now)
        self.trickle.hear_inconsistent(now)
        self._schedule_dao(now)

    def _reselect(self, now: float) -> None:
        if self.is_root or self.of is None:
            return
        # Parent selection is a pure function of these inputs (and of the time, through the
        # blocked neighbours): when none changed since the last selection, neither did its
        # outcome, which is already in place. Most calls come from an acknowledged frame to
        # a parent whose ETX stayed where it was.
        inputs: tuple[object, ...] | None = None
        if not self._blocked:
            inputs = (
                self.links.version, self.preferred, self.rank, self.lowest_rank, self.joined,
                self.of, self.config, *[(a, n.rank) for a, n in self.neighbors.items()],
            )  # fmt: skip
            if inputs == self._choice_inputs:
                return
        self._choice_inputs = inputs
        step = self.config.min_hop_rank_increase
        limit = INFINITE_RANK
        if self.config.max_rank_increase and self.lowest_rank < INFINITE_RANK:
            limit = self.lowest_rank + self.config.max_rank_increase
        # §8.2.2.4: while attached, only neighbours of strictly lower DAGRank may become
        # parents; a node that must go deeper detaches (poisons) first, so it can never
        # pick a descendant that still advertises the rank it got through this node
        excluded = {a for a, until in self._blocked.items() if until > now}
        if self.joined:
            own = dag_rank(self.rank, step)
            # dag_rank inlined: this runs for every acknowledged frame to a parent
            excluded |= {a for a, n in self.neighbors.items() if n.rank // step >= own}
        choice = select_parents(
            list(self.neighbors.values()), self.links, self.of, step, self.preferred,
            self.config.parent_set_size, limit, frozenset(excluded),
        )  # fmt: skip
        if choice.preferred is None:
            if self.joined:
                self._detach(now, "no acceptable parent")
            return
        old = self.preferred
        self.preferred, self.parents, self.rank = choice.preferred, choice.parents, choice.rank
        self.lowest_rank = min(self.lowest_rank, self.rank)
        if not self.joined:
            self.joined = True
            self._dis_at = None
            self.counters["joined"] += 1
            assert self.dodag_id is not None
            self._event(Joined(self.dodag_id, self.version, self.rank, choice.preferred))
            self.trickle.start(now)
            self._schedule_dao(now)
        elif old != choice.preferred:
            self.counters["parent_changed"] += 1
            self._event(ParentChanged(old, choice.preferred, self.rank))
            self.trickle.hear_inconsistent(now)
            storing = self.config.mop in (Mop.STORING_NO_MULTICAST, Mop.STORING_MULTICAST)
            if storing and old in self.neighbors and self.global_address is not None:
                self._send_storing_daos(old, ZERO_LIFETIME, False, now)  # §9.8: un-announce
            self._schedule_dao(now)

    def _detach(self, now: float, reason: str) -> None:
        """§8.2.2.5: advertise INFINITE_RANK so descendants drop this node, then rejoin after
        a hold-down with a fresh view of the neighbourhood (solicited by DIS)."""
        if not self.leaf and self.dodag_id is not None:
            self._multicast(self._dio(rank=INFINITE_RANK), now)
        self.counters["detached"] += 1
        self._event(Detached(reason))
        self.joined = False
        self.preferred, self.parents = None, ()
        self.rank = self.lowest_rank = INFINITE_RANK
        self.neighbors.clear()
        self.trickle.stop()
        self._pending = None
        self._dao_at = self._refresh_at = None
        self._hold_until = now + self.config.detach_hold_down
        self._dis_at = self._hold_until

    # ------------------------------------------------------------------ DAO (§9)

    def _schedule_dao(self, now: float) -> None:
        if self.is_root or not self.joined or self.config.mop == Mop.NO_DOWNWARD_ROUTES:
            return
        when = now + self.config.dao_delay * (0.5 + uniform(self._random))
        if self._dao_at is None or when < self._dao_at:
            self._dao_at = when

    def _path_lifetime(self) -> int:
        return self.config.default_lifetime

    def _send_dao(self, now: float) -> None:
        if not self.joined or self.preferred is None or self.global_address is None:
            self.counters["dao_not_sent"] += 1
            return
        self.path_sequence = lollipop_increment(self.path_sequence)
        if self.config.mop == Mop.NON_STORING:
            parent = (self.prefix.prefix[:8] if self.prefix else b"") + self.preferred[8:]
            transit = TransitInformation(self.path_sequence, self._path_lifetime(), parent=parent)
            target = RplTarget(self.global_address)
            options: tuple[RplTarget | TargetDescriptor | TransitInformation, ...] = (
                target,
                transit,
            )
            if self.config.describe_targets:
                state = describe_target(self.rank, self.links.etx(self.preferred))
                options = (target, TargetDescriptor(state), transit)
            dao = self._new_dao(options, self.config.dao_ack, now)
            assert self.dodag_id is not None
            self._send_message(dao, self.global_address, self.dodag_id, now)
        else:
            self._send_storing_daos(self.preferred, self._path_lifetime(), self.config.dao_ack, now)
        lifetime = self.config.route_lifetime
        if lifetime is not None:
            self._refresh_at = now + lifetime * DAO_REFRESH_FRACTION

    def _send_storing_daos(self, to: bytes, lifetime: int, ack: bool, now: float) -> None:
        """Storing mode (§9.4): this node and every target below it, each Target followed by
        a Transit carrying the originator's Path Sequence, in DAOs of bounded size. A zero
        lifetime makes them No-Path DAOs (§9.8)."""
        assert self.global_address is not None
        entries = [(self.global_address, self.path_sequence)]
        entries += [(t, r.path_sequence) for t, r in self.routes.items()]
        size = self.config.max_targets_per_dao
        for start in range(0, len(entries), size):
            options: list[RplTarget | TransitInformation] = []
            for target, sequence in entries[start : start + size]:
                options += [RplTarget(target), TransitInformation(sequence, lifetime)]
            dao = self._new_dao(tuple(options), ack and start == 0, now)
            self._unicast(dao, to, now)

    def _new_dao(
        self,
        options: tuple[RplTarget | TargetDescriptor | TransitInformation, ...],
        ack: bool,
        now: float,
    ) -> Dao:
        self.dao_sequence = lollipop_increment(self.dao_sequence)
        if ack:
            deadline = now + self.config.dao_ack_timeout
            self._pending = _PendingDao(self.dao_sequence, deadline, 0)
        return Dao(self.config.instance_id, self.dao_sequence, ack, self.dodag_id, options)

    def _retry_dao(self, now: float) -> None:
        assert self._pending is not None
        if self._pending.attempts >= self.config.dao_retransmissions:
            self.counters["dao_failed"] += 1
            self._event(DaoFailed(self._pending.sequence, None))
            self._pending = None
            # the root never answered: the path up is broken (a root that died leaves its
            # DODAG's ranks standing). Repair locally, as Contiki-NG's rpl-lite does on "DAO
            # max rtx": poison, then join whatever DODAG is heard after the hold-down
            self._detach(now, "no DAO-ACK after the retransmissions")
            return
        attempts = self._pending.attempts + 1
        self._send_dao(now)  # a new sequence (§9.3: each DAO is a fresh announcement)
        if self._pending is not None:
            self._pending.attempts = attempts
            self._pending.deadline = now + self.config.dao_ack_timeout * (1 << attempts)

    def _allowed(self, kind: str, source: bytes, now: float) -> bool:
        """A token bucket per (kind, source) in a bounded table: one neighbour or one forged
        source can make the node spend only so much on DAOs or on unicast DIO answers."""
        return self._buckets.allow((kind, source), now)

    def _on_dao(self, dao: Dao, packet: Packet, sender: bytes, now: float) -> None:
        storing = self.config.mop in (Mop.STORING_NO_MULTICAST, Mop.STORING_MULTICAST)
        if self.leaf or not self.joined or (not storing and not self.is_root):
            self.counters["dao_not_expected"] += 1
            return
        if dao.instance_id != self.config.instance_id:
            self.counters["dao_other_instance"] += 1
            return
        if not self._allowed("dao", sender if storing else packet.src, now):
            self.counters["dao_rate_limited"] += 1
            return
        if len(dao.targets) > self.config.max_targets_per_dao:
            self.counters["dao_too_many_targets"] += 1
            return
        transits = dao.transits
        descriptors = _target_descriptors(dao)
        status = DAO_ACK_UNQUALIFIED_ACCEPT
        for target, transit in _target_transits(dao):
            if transit is None or target.prefix_length != 128:
                self.counters["dao_target_ignored"] += 1
                continue
            via = sender if storing else transit.parent
            if via is None or via == target.prefix or target.prefix in self.own_addresses:
                self.counters["dao_transit_invalid"] += 1
                continue
            descriptor = descriptors.get(target.prefix)
            if not self._store_route(target.prefix, via, transit, now, descriptor):
                status = DAO_ACK_REJECT_NO_ROOM
        if dao.ack_requested:
            ack = DaoAck(dao.instance_id, dao.sequence, status, dao.dodag_id)
            if storing:
                self._unicast(ack, sender, now)
            else:
                self._ack_along_transit(ack, packet.src, transits, now)
        if storing and not self.is_root:
            self._schedule_dao(now)

    def _ack_along_transit(
        self, ack: DaoAck, dst: bytes, transits: tuple[TransitInformation, ...], now: float
    ) -> None:
        """Non-storing root: a DAO-ACK goes back by source route; a rejected target has no
        stored route, so the path is the one its Transit parent announces (§9.7)."""
        assert self.global_address is not None
        message = Packet(self.global_address, dst, to_icmpv6(ack, self.global_address, dst))
        self.counters["tx_daoack"] += 1
        hops = self.source_route(dst, now)
        parent = transits[-1].parent if transits else None
        if hops is None and parent is not None:
            above = [] if parent == self.global_address else self.source_route(parent, now)
            hops = None if above is None else [*above, dst]
        if hops is None:
            self.counters["no_route"] += 1
        else:
            self._source_routed(message, hops)

    def _store_route(
        self,
        target: bytes,
        via: bytes,
        transit: TransitInformation,
        now: float,
        descriptor: int | None = None,
    ) -> bool:
        known = self.routes.get(target)
        if transit.path_lifetime == ZERO_LIFETIME:  # a No-Path DAO (§9.8)
            if known is not None and known.via == via:  # only the route's own next hop can
                del self.routes[target]
                self.counters["route_removed_no_path"] += 1
                self._event(RouteRemoved(target, "no-path DAO"))
            return True
        if known is None and len(self.routes) >= self.config.max_routes:
            self.counters["route_table_full"] += 1
            return False
        if known is not None and lollipop_greater(known.path_sequence, transit.path_sequence):
            self.counters["dao_stale"] += 1
            return True
        lifetime = self.config.route_lifetime
        expires = None if lifetime is None else now + lifetime
        self.routes[target] = Route(via, transit.path_sequence, expires, descriptor)
        if known is None or known.via != via:
            self.counters["route_added"] += 1
            self._event(RouteAdded(target, via))
        return True

    def _on_dao_ack(self, ack: DaoAck, now: float) -> None:
        if self._pending is None or ack.sequence != self._pending.sequence:
            self.counters["dao_ack_unexpected"] += 1
            return
        self._pending = None
        if ack.status >= DAO_ACK_REJECT_THRESHOLD:
            self.counters["dao_rejected"] += 1
            self._event(DaoFailed(ack.sequence, ack.status))
        else:
            self._event(DaoAcknowledged(ack.sequence, ack.status))

    # ------------------------------------------------------------------ data path (§11)

    def _option(self, down: bool, previous: RplHopOption | None) -> RplHopOption:
        rank_error = previous.rank_error if previous is not None else False
        return RplHopOption(self.config.instance_id, self.rank, down, rank_error)

    def _forward(self, packet: Packet, neighbor: bytes, now: float) -> None:
        if packet.hop_limit <= 1:
            self.counters["hop_limit_exceeded"] += 1
            return
        packet = packet.but(hop_limit=packet.hop_limit - 1)
        if packet.hop_option is not None:
            try:
                checked = check_hop_option(packet.hop_option, self.rank, self.config.instance_id)
            except RplRoutingError as exc:
                self._loop(packet, exc.reason, now)
                return
            if checked.rank_error and not packet.hop_option.rank_error:
                self.counters["rank_error"] += 1
                self.trickle.hear_inconsistent(now)  # §11.2.2.2: repair the inconsistency
            packet = packet.but(hop_option=checked)
        self._route(packet, now, came_from=neighbor)

    def _loop(self, packet: Packet, reason: str, now: float) -> None:
        self.counters["loop_detected"] += 1
        self._event(LoopDetected(packet.src, packet.dst, reason))
        self.trickle.hear_inconsistent(now)

    def _forward_source_routed(self, packet: Packet, now: float) -> None:
        assert packet.srh is not None
        if packet.hop_limit <= 1:
            self.counters["hop_limit_exceeded"] += 1
            return
        try:
            dst, srh = packet.srh.advance(packet.dst, self.own_addresses)
        except RplRoutingError as exc:
            self._loop(packet, exc.reason, now)
            return
        hop = packet.but(dst=dst, srh=srh, hop_limit=packet.hop_limit - 1)
        self._out.append(Transmission(link_local_of(dst), hop))

    def _route(self, packet: Packet, now: float, came_from: bytes | None = None) -> None:
        """Pick the next hop for a packet not addressed to this node (§9.7, §11.1)."""
        dst = packet.dst
        if self.is_root and self.config.mop == Mop.NON_STORING:
            hops = self.source_route(dst, now)
            if hops is None:
                self.counters["no_route"] += 1
            else:
                self._source_routed(packet, hops)
            return
        route = self.routes.get(dst)
        if route is not None:  # storing mode: down
            self._out.append(
                Transmission(
                    route.via, packet.but(hop_option=self._option(True, packet.hop_option))
                )
            )
            return
        going_down = packet.hop_option is not None and packet.hop_option.down
        if going_down and came_from is not None:
            # §11.2.2.3: no route for a packet on its way down: hand it back with F set
            self.counters["forwarding_error"] += 1
            option = replace(self._option(True, packet.hop_option), forwarding_error=True)
            self._out.append(Transmission(came_from, packet.but(hop_option=option)))
            return
        if self.is_root or self.preferred is None:
            self.counters["no_route"] += 1
            return
        option = self._option(False, packet.hop_option)
        self._out.append(Transmission(self.preferred, packet.but(hop_option=option)))

    def _source_routed(self, packet: Packet, hops: list[bytes]) -> None:
        """Root, non-storing: send along `hops` with an RFC 6554 header (§4.1)."""
        if len(hops) == 1:
            self._out.append(Transmission(link_local_of(hops[0]), packet.but(hop_option=None)))
            return
        first, srh = SourceRoutingHeader.route(hops, packet.next_header)
        hop = packet.but(dst=first, srh=srh, hop_option=None)
        self._out.append(Transmission(link_local_of(first), hop))

    def _forwarding_error_returned(self, packet: Packet, neighbor: bytes) -> None:
        """§11.2.2.3: a child had no route for `packet.dst`: forget the route through it."""
        self.counters["forwarding_error_received"] += 1
        route = self.routes.get(packet.dst)
        if route is not None and route.via == neighbor:
            del self.routes[packet.dst]
            self._event(RouteRemoved(packet.dst, "forwarding error from the next hop"))

    # ------------------------------------------------------------------ housekeeping

    def _sweep(self, now: float) -> None:
        stale = [
            a
            for a, n in self.neighbors.items()
            if now - n.last_heard > self.config.neighbor_lifetime
        ]
        for address in stale:
            del self.neighbors[address]
            self.counters["neighbor_expired"] += 1
        if stale and set(stale) & set(self.parents):
            self._reselect(now)
        expired = [t for t, r in self.routes.items() if r.expires is not None and r.expires <= now]
        for target in expired:
            del self.routes[target]
            self._event(RouteRemoved(target, "lifetime expired"))
        for address in [a for a, until in self._blocked.items() if until <= now]:
            del self._blocked[address]

    def _event(self, event: RplEvent) -> None:
        if len(self._events) >= MAX_EVENTS:
            self.counters["events_dropped"] += 1
            return
        self._events.append(event)

    def _send_message(self, message: RplMessage, src: bytes, dst: bytes, now: float) -> None:
        packet = Packet(src, dst, to_icmpv6(message, src, dst))
        self.counters[f"tx_{type(message).__name__.lower()}"] += 1
        self._route(packet, now)

    def _unicast(self, message: RplMessage, neighbor: bytes, now: float) -> None:
        self.counters[f"tx_{type(message).__name__.lower()}"] += 1
        payload = to_icmpv6(message, self.link_local, neighbor)
        self._out.append(Transmission(neighbor, Packet(self.link_local, neighbor, payload)))

    def _multicast(self, message: RplMessage, now: float) -> None:
        self.counters[f"tx_{type(message).__name__.lower()}"] += 1
        payload = to_icmpv6(message, self.link_local, ALL_RPL_NODES)
        self._out.append(Transmission(None, Packet(self.link_local, ALL_RPL_NODES, payload)))


def _target_descriptors(dao: Dao) -> dict[bytes, int]:
    """§6.7.8: a Target Descriptor describes the RPL Target right before it."""
    out: dict[bytes, int] = {}
    last: RplTarget | None = None
    for option in dao.options:
        if isinstance(option, TargetDescriptor) and last is not None:
            out[last.prefix] = option.descriptor
        last = option if isinstance(option, RplTarget) else None
    return out


def _target_transits(dao: Dao) -> list[tuple[RplTarget, TransitInformation | None]]:
    """§9.4 / §6.7.8: a group of Targets is described by the Transit options that follow it."""
    pairs: list[tuple[RplTarget, TransitInformation | None]] = []
    group: list[RplTarget] = []
    transit_seen = False
    for option in dao.options:
        if isinstance(option, RplTarget):
            if transit_seen:
                group, transit_seen = [], False
            group.append(option)
        elif isinstance(option, TransitInformation) and group and not transit_seen:
            pairs += [(t, option) for t in group]
            transit_seen = True
    if not transit_seen:
        pairs += [(t, None) for t in group]
    return pairs
