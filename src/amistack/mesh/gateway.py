"""The concentrator's UDP gateway between the mesh and a real WAN (sans-IO).

In the simulation the WAN is virtual and speaks IPv6 (`mesh.wan.Ipv6Host`). A concentrator
process (runtime/concentrator.py) has a real UDP network behind it instead: `UdpGateway` lets the
mesh's IPv6 packets for an allowed WAN peer leave as plain UDP payloads, one flow per meter
(address, port) so each answer finds its meter (a NAPT: RFC 4787's endpoint-independent
mapping), and turns the answers back into IPv6 packets from the peer's mesh-side address. An
IPv4 peer has the mesh-side address of RFC 6052's well-known prefix 64:ff9b::/96 (NAT64): the
meters address the key server at 127.0.0.1 as 64:ff9b::7f00:1.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from amistack.addr import Addr
from amistack.mesh.errors import MeshDecodeError
from amistack.mesh.ipv6 import NEXT_HEADER_UDP, Ipv6Packet, UdpDatagram

__all__ = ["NAT64_PREFIX", "Flow", "UdpGateway", "WanDatagram", "mesh_side", "wan_side"]

NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 §2.1, the well-known prefix
DEFAULT_MAX_FLOWS = 1024  # meter (address, port) pairs with a WAN flow at one time


def mesh_side(host: str) -> str:
    """The address the mesh reaches a WAN host at: an IPv6 literal as it is, an IPv4 one
    embedded in 64:ff9b::/96 (RFC 6052 §2.2)."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ipaddress.IPv6Address(int(NAT64_PREFIX.network_address) | int(ip)))
    return str(ip)


def wan_side(ip: ipaddress.IPv6Address) -> str:
    """The inverse of `mesh_side`."""
    if ip in NAT64_PREFIX:
        return str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return str(ip)


Flow = tuple[str, int]  # a meter's (IPv6 literal, UDP port) inside the mesh


@dataclass(frozen=True)
class WanDatagram:
    """What the driver sends: `payload` to `dst` on the WAN from the socket of `flow`."""

    flow: Flow
    payload: bytes
    dst: Addr


class UdpGateway:
    """The concentrator's UDP translation between the mesh and a real WAN (module docstring).
    `peers`: the WAN (host, port)s the mesh may reach (the key server, the head-end); anything
    else is counted and dropped, so the border router is no open relay."""

    def __init__(self, peers: Iterable[Addr], max_flows: int = DEFAULT_MAX_FLOWS) -> None:
        self.peers = frozenset((wan_side(ipaddress.IPv6Address(mesh_side(h))), p) for h, p in peers)
        self.max_flows = max_flows
        self.flows: OrderedDict[Flow, None] = OrderedDict()  # least recently used first
        self.evicted: list[Flow] = []  # flows the driver should close
        self.counters: Counter[str] = Counter()

    def outbound(self, data: bytes) -> WanDatagram | None:
        """An IPv6 packet the mesh sent to the WAN."""
        try:
            packet = Ipv6Packet.decode(data)
            if packet.next_header != NEXT_HEADER_UDP:
                self.counters["wan-not-udp"] += 1
                return None
            udp = UdpDatagram.decode(packet)
        except MeshDecodeError:
            self.counters["wan-decode-error"] += 1
            return None
        dst = (wan_side(packet.dst), udp.dst_port)
        if dst not in self.peers:
            self.counters["wan-not-allowed"] += 1
            return None
        flow = (str(packet.src), udp.src_port)
        if flow in self.flows:
            self.flows.move_to_end(flow)
        else:
            self.flows[flow] = None
            if len(self.flows) > self.max_flows:
                self.evicted.append(self.flows.popitem(last=False)[0])
                self.counters["wan-flow-evicted"] += 1
        self.counters["wan-out"] += 1
        return WanDatagram(flow, udp.payload, dst)

    def inbound(self, flow: Flow, payload: bytes, src: Addr) -> bytes | None:
        """A UDP datagram that came from `src` on the WAN socket of `flow`: the IPv6 packet
        to give the concentrator, or None (not from an allowed peer, or no such flow)."""
        if (src[0], src[1]) not in self.peers:
            self.counters["wan-in-not-allowed"] += 1
            return None
        if flow not in self.flows:
            self.counters["wan-in-no-flow"] += 1
            return None
        src_ip = ipaddress.IPv6Address(mesh_side(src[0]))
        dst_ip = ipaddress.IPv6Address(flow[0])
        udp = UdpDatagram(src[1], flow[1], payload).encode(src_ip, dst_ip)
        self.counters["wan-in"] += 1
        return Ipv6Packet(src_ip, dst_ip, NEXT_HEADER_UDP, udp).encode()
