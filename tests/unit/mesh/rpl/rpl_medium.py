"""A tiny in-test radio for RPL scenarios: a dict of neighbour lists, a virtual clock, one
packet per hop with a fixed latency. Unicast to a dead or absent neighbour is reported back to
the sender as the link layer would (`neighbor_unreachable`)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from amistack.crypto import seeded_random
from amistack.mesh.rpl.config import RplConfig
from amistack.mesh.rpl.events import DataReceived, RplEvent
from amistack.mesh.rpl.messages import PrefixInformation
from amistack.mesh.rpl.node import RplNode
from amistack.mesh.rpl.packet import LINK_LOCAL_PREFIX, Packet, Transmission

PREFIX = bytes.fromhex("20010db8000000000000000000000000")
LATENCY = 0.005  # seconds per hop


def ll(i: int) -> bytes:
    return LINK_LOCAL_PREFIX + (i + 1).to_bytes(8, "big")


def gua(i: int) -> bytes:
    return PREFIX[:8] + (i + 1).to_bytes(8, "big")


def line(n: int) -> dict[int, list[int]]:
    return {i: [j for j in (i - 1, i + 1) if 0 <= j < n] for i in range(n)}


def grid(rows: int, cols: int) -> dict[int, list[int]]:
    def nbrs(r: int, c: int) -> Iterator[int]:
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            if 0 <= r + dr < rows and 0 <= c + dc < cols:
                yield (r + dr) * cols + c + dc

    return {r * cols + c: list(nbrs(r, c)) for r in range(rows) for c in range(cols)}


class Medium:
    def __init__(self, topology: dict[int, list[int]], config: RplConfig, seed: int = 1) -> None:
        self.topology = topology
        self.now = 0.0
        self.alive: set[int] = set()  # started and not killed
        self.by_address = {ll(i): i for i in topology}
        self.nodes: dict[int, RplNode] = {}
        for i in topology:
            prefix = PrefixInformation(PREFIX, 64) if i == 0 else None
            self.nodes[i] = RplNode(
                ll(i), config, seeded_random(seed * 1000 + i), root_prefix=prefix
            )
        self.events: dict[int, list[RplEvent]] = {i: [] for i in topology}
        self._queue: list[tuple[float, int, int, int, Packet]] = []
        self._seq = 0
        self.delivered = 0
        self._unreachable_reported: list[int] = []
        self.extra_links: dict[int, list[int]] = {}  # injector id -> neighbours it reaches
        self.captured: dict[int, list[Packet]] = {}  # what nodes sent to an injector

    @property
    def root(self) -> RplNode:
        return self.nodes[0]

    def start(self, nodes: list[int] | None = None) -> None:
        for i in nodes if nodes is not None else list(self.nodes):
            self.alive.add(i)
            self.nodes[i].start(self.now)

    def kill(self, i: int) -> None:
        self.alive.discard(i)

    def inject(self, sender: int, to: int | None, packet: Packet) -> None:
        """Put a hand-made packet on the air from `sender` (which needs no RplNode)."""
        targets = self.topology.get(sender, []) + self.extra_links.get(sender, [])
        for j in targets if to is None else [to]:
            self._push(self.now + LATENCY, sender, j, packet)

    def _push(self, when: float, sender: int, receiver: int, packet: Packet) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, sender, receiver, packet))

    def _flush(self, only: list[int] | None = None) -> None:
        for i in self.nodes if only is None else only:
            node = self.nodes[i]
            for tx in node.transmissions():
                self._transmit(i, tx)
            while (event := node.next_event()) is not None:
                self.events[i].append(event)

    def _transmit(self, i: int, tx: Transmission) -> None:
        if i not in self.alive:
            return
        if tx.next_hop is None:
            for j in self.topology[i]:
                self._push(self.now + LATENCY, i, j, tx.packet)
            return
        for evil, reach in self.extra_links.items():
            if tx.next_hop == ll(evil) and i in reach:
                self.captured.setdefault(evil, []).append(tx.packet)
                return
        j = self.by_address.get(tx.next_hop)
        if j is None or j not in self.topology[i] or j not in self.alive:
            self.nodes[i].neighbor_unreachable(tx.next_hop, self.now)
            self._unreachable_reported.append(i)
            return
        self._push(self.now + LATENCY, i, j, tx.packet)

    def run(self, until: float) -> None:
        self._flush()
        timers = {i: self.nodes[i].get_timer() for i in self.alive}
        while True:
            next_timer = min(
                ((t, i) for i, t in timers.items() if t is not None and i in self.alive),
                default=(float("inf"), -1),
            )
            next_packet = self._queue[0][0] if self._queue else float("inf")
            when = min(next_timer[0], next_packet)
            if when > until:
                self.now = until
                return
            self.now = when
            touched = []
            if next_packet <= next_timer[0]:
                _, _, sender, receiver, packet = heapq.heappop(self._queue)
                if receiver in self.alive and receiver in self.nodes:
                    self.nodes[receiver].receive_packet(packet, ll(sender), self.now)
                    self.delivered += 1
                    touched.append(receiver)
            else:
                self.nodes[next_timer[1]].handle_timer(self.now)
                touched.append(next_timer[1])
            self._flush(touched)
            for i in touched + self._unreachable_reported:
                timers[i] = self.nodes[i].get_timer()
            self._unreachable_reported.clear()

    def send(self, i: int, dst: bytes, payload: bytes) -> None:
        self.nodes[i].send(dst, payload, self.now)
        self._flush([i])

    def received(self, i: int) -> list[bytes]:
        return [e.payload for e in self.events[i] if isinstance(e, DataReceived)]
