"""RPL over the virtual radio of `sim/` (RadioMedium): a seeded random geometric mesh with lossy
links, unicast with link-layer retries whose outcomes feed the ETX estimator, broadcast DIOs
that may be lost. The DODAG forms, the root reaches (nearly) everyone, parents are good links."""

from __future__ import annotations

import random
from dataclasses import replace

from tests.unit.mesh.rpl.rpl_engine import RplEngine, decode, link_local_of

from amistack.addr import Addr
from amistack.crypto import seeded_random
from amistack.mesh.rpl.config import RFC6550
from amistack.mesh.rpl.constants import MRHOF_MAX_LINK_METRIC, Mop
from amistack.mesh.rpl.events import DataReceived
from amistack.mesh.rpl.messages import PrefixInformation
from amistack.mesh.rpl.node import RplNode
from amistack.mesh.rpl.packet import LINK_LOCAL_PREFIX
from amistack.sim.clock import VirtualClock
from amistack.sim.drive import Host
from amistack.sim.radio import BROADCAST, RadioMedium, UnitDisk, scatter

PREFIX = bytes.fromhex("20010db8000000000000000000000000")
MAC_RETRIES = 4  # transmissions per unicast frame before the link layer gives up
IPV6_HEADER = 40  # octets counted for airtime on top of the payload


def ll(i: int) -> bytes:
    return LINK_LOCAL_PREFIX + (i + 1).to_bytes(8, "big")


def radio_addr(i: int) -> Addr:
    return (f"fe80::{i + 1:x}", 0)


class RadioMesh:
    """The nodes driven by `sim.drive.Host` on one clock; the radio and the MAC retries here."""

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
        self.clock = VirtualClock()
        self.hosts = {
            radio_addr(i): Host(radio_addr(i), RplEngine(node), self.clock, self._air, self._event)
            for i, node in enumerate(self.nodes)
        }
        self.received: dict[int, list[bytes]] = {i: [] for i in range(n)}
        for node in self.nodes:
            node.start(0.0)

    @property
    def now(self) -> float:
        return self.clock.now

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

    def _air(self, src: Addr, dst: Addr, data: bytes, now: float) -> None:
        size = IPV6_HEADER + len(decode(data).payload)
        if dst == BROADCAST:
            for d in self.medium.transmit(src, BROADCAST, size, now):
                self._deliver(now + d.delay, src, d.dst, data)
            return
        node, hop = self.nodes[self.index[src]], link_local_of(dst)
        for attempt in range(1, MAC_RETRIES + 1):
            copies = self.medium.transmit(src, dst, size, now) if dst in self.hosts else []
            if copies:
                node.record_transmission(hop, attempt, True, now)
                self._deliver(now + copies[0].delay * attempt, src, dst, data)
                return
        node.record_transmission(hop, MAC_RETRIES, False, now)
        node.neighbor_unreachable(hop, now)

    def _deliver(self, when: float, src: Addr, dst: Addr, data: bytes) -> None:
        host = self.hosts[dst]
        self.clock.call_at(when, lambda: host.receive(data, src))

    def _event(self, addr: Addr, event: object, now: float) -> None:
        if isinstance(event, DataReceived):
            self.received[self.index[addr]].append(event.payload)

    def run(self, until: float) -> None:
        for host in self.hosts.values():  # what was started or sent from outside goes out
            host.service()
        self.clock.run_until(until)


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
