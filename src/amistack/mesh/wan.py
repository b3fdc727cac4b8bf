"""A UDP engine behind an IPv6 address on the WAN side of the concentrator (sans-IO).

The concentrator forwards IPv6 packets between the mesh and the WAN unchanged (the source stays
the meter's address, which is what the PAA's per-relay limits count). `Ipv6Host` puts a UDP
engine (the key server, the head-end) at one IPv6 address and port: packets in are checked
(IPv6, UDP length and checksum) and their payload handed to the engine with the sender's
(address, port); the engine's datagrams leave as IPv6 packets through `gateway`, or, with
several concentrators (one DODAG and /64 prefix each), through the one whose prefix the
destination is in (`routes`: 8-octet prefix -> gateway). Bad packets are counted and dropped.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Mapping

from amistack.addr import Addr, Engine, WrappingEngine
from amistack.mesh.errors import MeshDecodeError
from amistack.mesh.ipv6 import NEXT_HEADER_UDP, Ipv6Packet, UdpDatagram

__all__ = ["Ipv6Host"]


class Ipv6Host(WrappingEngine):
    def __init__(
        self,
        engine: Engine,
        address: Addr,
        gateway: Addr,
        routes: Mapping[bytes, Addr] | None = None,
    ) -> None:
        self.engine = engine
        self.address = address
        self._ip = ipaddress.IPv6Address(address[0])
        self.gateway = gateway
        self.routes = dict(routes or {})
        self.counters: Counter[str] = Counter()

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        try:
            packet = Ipv6Packet.decode(data)
            if packet.dst != self._ip:
                self.counters["not-for-us"] += 1
                return
            udp = UdpDatagram.decode(packet)
        except MeshDecodeError:
            self.counters["decode-error"] += 1
            return
        if udp.dst_port != self.address[1]:
            self.counters["wrong-port"] += 1
            return
        self.engine.receive_datagram(udp.payload, (str(packet.src), udp.src_port), now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out: list[tuple[bytes, Addr]] = []
        for data, (host, port) in self.engine.datagrams_to_send(now):
            try:
                dst = ipaddress.IPv6Address(host)
            except ValueError:
                self.counters["not-ipv6"] += 1
                continue
            udp = UdpDatagram(self.address[1], port, data)
            gateway = self.routes.get(dst.packed[:8], self.gateway)
            out.append((Ipv6Packet(self._ip, dst, NEXT_HEADER_UDP, udp.encode(self._ip, dst))
                        .encode(), gateway))  # fmt: skip
        return out
