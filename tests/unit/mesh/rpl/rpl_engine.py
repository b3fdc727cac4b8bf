"""An `RplNode` in the engine shape that `sim/drive.py` drives: packets travel as IPv6 bytes and
a neighbour's address is its link-local address, `(str(fe80::...), 0)`, so the test radios run
RPL through `sim.drive.Host` instead of a lockstep loop of their own."""

from __future__ import annotations

from ipaddress import IPv6Address

from amistack.addr import Addr
from amistack.mesh.ipv6 import Ipv6Packet
from amistack.mesh.rpl.events import RplEvent
from amistack.mesh.rpl.node import RplNode
from amistack.mesh.rpl.packet import Packet
from amistack.sim.radio import BROADCAST


def addr_of(link_local: bytes) -> Addr:
    return (str(IPv6Address(link_local)), 0)


def link_local_of(addr: Addr) -> bytes:
    return IPv6Address(addr[0]).packed


def decode(data: bytes) -> Packet:
    return Packet.from_ipv6(Ipv6Packet.decode(data))


class RplEngine:
    """Adapts `node`: each transmission goes to its next hop's address (or to BROADCAST)."""

    def __init__(self, node: RplNode) -> None:
        self.node = node

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        self.node.receive_packet(decode(data), link_local_of(addr), now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out = []
        for tx in self.node.transmissions():
            dst = BROADCAST if tx.next_hop is None else addr_of(tx.next_hop)
            out.append((tx.packet.to_ipv6().encode(), dst))
        return out

    def get_timer(self) -> float | None:
        return self.node.get_timer()

    def handle_timer(self, now: float) -> None:
        self.node.handle_timer(now)

    def next_event(self) -> RplEvent | None:
        return self.node.next_event()
