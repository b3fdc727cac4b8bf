"""RPL over the virtual radio of `sim/` (RadioMedium): a seeded random geometric mesh with lossy
links, unicast with link-layer retries whose outcomes feed the ETX estimator, broadcast DIOs
that may be lost. The DODAG forms, the root reaches (nearly) everyone, parents are good links."""

from __future__ import annotations

import heapq
import random
from dataclasses import replace

from amistack.addr import Addr
from amistack.crypto import seeded_random
from amistack.mesh.rpl.config import RFC6550
from amistack.mesh.rpl.constants import MRHOF_MAX_LINK_METRIC, Mop
from amistack.mesh.rpl.events import DataReceived
from amistack.mesh.rpl.messages import PrefixInformation
from amistack.mesh.rpl.node import RplNode
from amistack.mesh.rpl.packet import LINK_LOCAL_PREFIX, Packet
from amistack.sim.radio import BROADCAST, RadioMedium, UnitDisk, scatter

PREFIX = bytes.fromhex("20010db8000000000000000000000000")
MAC_RETRIES = 4  # transmissions per unicast frame before the link layer gives up
IPV6_HEADER = 40  # octets counted for airtime on top of the payload


def ll(i: int) -> bytes:
    return LINK_LOCAL_PREFIX + (i + 1).to_bytes(8, "big")


def radio_addr(i: int) -> Addr:
    return (f"fe80::{i + 1:x}", 0)


class RadioMesh:
    def __init__(self, n: int, seed: int, loss: float, radius: float = 70.0) -> None:
        self.medium = RadioMedium(UnitDisk(radius, loss), seed=seed)
        rng = random.Random(seed)
        positions = [(150.0, 150.0), *scatter(n - 1, 300.0, 300.0, rng)]
        for i, (x, y) in enumerate(positions):
            self.medium.place(radio_addr(i), x, y)
        config = replace(RFC6550, mop=Mop.NON_STORING)
        self.nodes = [
            RplNode(ll(i), config, seeded_random(seed * 7919 + i),
                    root_prefix=PrefixInformation(PREFIX, 64) if i == 0 else None)
            for i in range(n)
        ]  # fmt: skip
        self.index = {radio_addr(i): i for i in range(n)}
        self.by_ll = {ll(i): i for i in range(n)}
        self.now = 0.0
        self.queue: list[tuple[float, int, int, int, Packet]] = []
        self.seq = 0
        self.received: dict[int, list[bytes]] = {i: [] for i in range(n)}
        for node in self.nodes:
            node.start(0.0)

    def reachable(self) -> set[int]:
        """The nodes with a radio path to the root (the most any routing can serve)."""
        seen, todo = {0}, [0]
        while todo:
            for other, _ in self.medium.neighbours(radio_addr(todo.pop())):
                j = self.index[other]
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        return seen

    def _air(self, i: int) -> None:
        node = self.nodes[i]
        for tx in node.transmissions():
            size = IPV6_HEADER + len(tx.packet.payload)
            if tx.next_hop is None:
                for d in self.medium.transmit(radio_addr(i), BROADCAST, size, self.now):
                    self._push(d.delay, i, self.index[d.dst], tx.packet)
                continue
            j = self.by_ll.get(tx.next_hop)
            for attempt in range(1, MAC_RETRIES + 1):
                copies = (
                    []
                    if j is None
                    else self.medium.transmit(radio_addr(i), radio_addr(j), size, self.now)
                )
                if copies:
                    node.record_transmission(tx.next_hop, attempt, True, self.now)
                    self._push(copies[0].delay * attempt, i, self.index[copies[0].dst], tx.packet)
                    break
            else:
                node.record_transmission(tx.next_hop, MAC_RETRIES, False, self.now)
                node.neighbor_unreachable(tx.next_hop, self.now)
        while (event := node.next_event()) is not None:
            if isinstance(event, DataReceived):
                self.received[i].append(event.payload)

    def _push(self, delay: float, sender: int, receiver: int, packet: Packet) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (self.now + delay, self.seq, sender, receiver, packet))

    def run(self, until: float) -> None:
        for i in range(len(self.nodes)):
            self._air(i)
        timers = {i: n.get_timer() for i, n in enumerate(self.nodes)}
        while True:
            next_timer = min(
                ((t, i) for i, t in timers.items() if t is not None), default=(float("inf"), -1)
            )
            next_packet = self.queue[0][0] if self.queue else float("inf")
            if min(next_timer[0], next_packet) > until:
                self.now = until
                return
            if next_packet <= next_timer[0]:
                self.now, _, sender, acting, packet = heapq.heappop(self.queue)
                self.nodes[acting].receive_packet(packet, ll(sender), self.now)
            else:
                self.now, acting = next_timer
                self.nodes[acting].handle_timer(self.now)
            self._air(acting)
            timers[acting] = self.nodes[acting].get_timer()


def test_a_lossy_random_mesh_forms_over_the_virtual_radio() -> None:
    mesh = RadioMesh(n=60, seed=11, loss=0.2)
    served = mesh.reachable()
    assert len(served) == 60  # the seed gives a connected placement
    mesh.run(600.0)
    joined = {i for i, n in enumerate(mesh.nodes) if n.joined}
    assert joined >= served - {0} and joined <= served
    routes = mesh.nodes[0].route_table(mesh.now)
    assert len(routes) >= 0.95 * (len(served) - 1)
    for i in sorted(served - {0}):
        mesh.nodes[0].send(PREFIX[:8] + (i + 1).to_bytes(8, "big"), b"read %d" % i, mesh.now)
    mesh.run(mesh.now + 30.0)
    delivered = sum(b"read %d" % i in mesh.received[i] for i in served - {0})
    assert delivered >= 0.95 * (len(served) - 1)
    attached = [n for n in mesh.nodes[1:] if n.joined]  # a node may be between two parents
    assert len(attached) >= 0.95 * (len(served) - 1)
    for node in attached:  # every chosen parent is over a link the OF accepts, by measured ETX
        assert node.preferred is not None
        assert node.links.etx(node.preferred) <= MRHOF_MAX_LINK_METRIC
