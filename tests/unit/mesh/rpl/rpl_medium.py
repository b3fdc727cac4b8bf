"""A tiny in-test radio for RPL scenarios: a dict of neighbour lists, one packet per hop with a
fixed latency, the nodes driven by `sim.drive.Host` on a virtual clock. Unicast to a dead or
absent neighbour is reported back to the sender as the link layer would (`neighbor_unreachable`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from tests.unit.mesh.rpl.rpl_engine import RplEngine, addr_of, decode, link_local_of

from amistack.addr import Addr
from amistack.crypto import seeded_random
from amistack.mesh.rpl.config import RplConfig
from amistack.mesh.rpl.events import DataReceived, RplEvent
from amistack.mesh.rpl.messages import PrefixInformation
from amistack.mesh.rpl.node import RplNode
from amistack.mesh.rpl.packet import LINK_LOCAL_PREFIX, Packet
from amistack.sim.clock import VirtualClock
from amistack.sim.drive import Host
from amistack.sim.radio import BROADCAST

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


def addr(i: int) -> Addr:
    return addr_of(ll(i))


def id_of(address: Addr) -> int:
    return int.from_bytes(link_local_of(address)[8:], "big") - 1


class Medium:
    """The nodes driven by `sim.drive.Host` on one clock; the neighbour lists deliver here."""

    def __init__(self, topology: dict[int, list[int]], config: RplConfig, seed: int = 1) -> None:
        self.topology = topology
        self.clock = VirtualClock()
        self.alive: set[int] = set()  # started and not killed
        self.by_address = {ll(i): i for i in topology}
        self.nodes: dict[int, RplNode] = {}
        for i in topology:
            prefix = PrefixInformation(PREFIX, 64) if i == 0 else None
            self.nodes[i] = RplNode(
                ll(i), config, seeded_random(seed * 1000 + i), root_prefix=prefix
            )
        self.hosts: dict[int, Host] = {}  # the started nodes
        self.events: dict[int, list[RplEvent]] = {i: [] for i in topology}
        self.extra_links: dict[int, list[int]] = {}  # injector id -> neighbours it reaches
        self.captured: dict[int, list[Packet]] = {}  # what nodes sent to an injector

    @property
    def now(self) -> float:
        return self.clock.now

    @property
    def root(self) -> RplNode:
        return self.nodes[0]

    def start(self, nodes: list[int] | None = None) -> None:
        for i in nodes if nodes is not None else list(self.nodes):
            self.alive.add(i)
            self.hosts[i] = Host(
                addr(i), RplEngine(self.nodes[i]), self.clock, self._transmit, self._event
            )
            self.nodes[i].start(self.now)

    def kill(self, i: int) -> None:
        self.alive.discard(i)
        self.hosts[i].detach()

    def inject(self, sender: int, to: int | None, packet: Packet) -> None:
        """Put a hand-made packet on the air from `sender` (which needs no RplNode)."""
        targets = self.topology.get(sender, []) + self.extra_links.get(sender, [])
        data = packet.to_ipv6().encode()
        for j in targets if to is None else [to]:
            self._push(sender, j, data)

    def _push(self, sender: int, receiver: int, data: bytes) -> None:
        self.clock.call_at(self.now + LATENCY, lambda: self._deliver(sender, receiver, data))

    def _deliver(self, sender: int, receiver: int, data: bytes) -> None:
        host = self.hosts.get(receiver)
        if host is not None:  # a node not started hears nothing (a killed one is detached)
            host.receive(data, addr(sender))

    def _event(self, address: Addr, event: object, now: float) -> None:
        self.events[id_of(address)].append(cast(RplEvent, event))

    def _transmit(self, src: Addr, dst: Addr, data: bytes, now: float) -> None:
        i = id_of(src)
        if dst == BROADCAST:
            for j in self.topology[i]:
                self._push(i, j, data)
            return
        hop = link_local_of(dst)
        for evil, reach in self.extra_links.items():
            if hop == ll(evil) and i in reach:
                self.captured.setdefault(evil, []).append(decode(data))
                return
        j = self.by_address.get(hop)
        if j is None or j not in self.topology[i] or j not in self.alive:
            self.nodes[i].neighbor_unreachable(hop, now)
            return
        self._push(i, j, data)

    def run(self, until: float) -> None:
        for host in self.hosts.values():  # what was started or sent from outside goes out
            host.service()
        self.clock.run_until(until)

    def send(self, i: int, dst: bytes, payload: bytes) -> None:
        self.nodes[i].send(dst, payload, self.now)
        self.hosts[i].service()

    def received(self, i: int) -> list[bytes]:
        return [e.payload for e in self.events[i] if isinstance(e, DataReceived)]
