"""The IPv6 view the RPL engine exchanges with its link layer: one packet per hop.

The two RPL extension headers travel as decoded objects, the payload as bytes (an RPL control
message is the ICMPv6 encoding with its checksum, checked on receipt). `to_ipv6()` and
`from_ipv6()` turn a packet into the `mesh.ipv6.Ipv6Packet` that `mesh.link.MeshLink` carries
(6LoWPAN, 802.15.4) and back: Hop-by-Hop header with the RPL Option (RFC 6553) first, then the
RPL Source Routing Header (RFC 6554), then the upper layer (RFC 8200 §4.1 order)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from amistack.mesh.icmpv6 import ICMPV6_NEXT_HEADER
from amistack.mesh.ipv6 import IPV6_HEADER_LENGTH, Ipv6Packet, ipv6_address
from amistack.mesh.rpl.constants import IPV6_NEXT_HEADER_HOP_BY_HOP, IPV6_NEXT_HEADER_ROUTING
from amistack.mesh.rpl.errors import RplDecodeError
from amistack.mesh.rpl.srh import RplHopOption, SourceRoutingHeader
from amistack.mesh.unchecked import unchecked

DEFAULT_HOP_LIMIT = 64  # RFC 8200 §3 leaves it to the node; IANA's default is 64
LINK_LOCAL_PREFIX = bytes.fromhex("fe800000000000000000000000000000")[:8]
_EXTENSION_MIN = 8  # every extension header is a multiple of 8 octets (RFC 8200 §4.3, §4.4)


def link_local_of(address: bytes) -> bytes:
    """fe80::IID of a node whose global address has the same interface identifier (the
    addresses 6LoWPAN nodes derive from their EUI-64, RFC 4944 §6)."""
    return LINK_LOCAL_PREFIX + address[8:]


@dataclass(frozen=True)
class Packet:
    src: bytes
    dst: bytes
    payload: bytes
    next_header: int = ICMPV6_NEXT_HEADER
    hop_limit: int = DEFAULT_HOP_LIMIT
    hop_option: RplHopOption | None = None  # RFC 6553, in a Hop-by-Hop header
    srh: SourceRoutingHeader | None = None  # RFC 6554; its Next Header is `next_header`

    def but(self, **changes: Any) -> Packet:
        """`dataclasses.replace(self, **changes)` without its introspection (the data path
        copies a packet at every hop, and `Packet` has no checks to run)."""
        if not changes.keys() <= _FIELDS:
            raise TypeError(f"Packet has no field {sorted(changes.keys() - _FIELDS)}")
        return unchecked(Packet, **{**self.__dict__, **changes})

    def to_ipv6(self) -> Ipv6Packet:
        payload, next_header = self.payload, self.next_header
        if self.srh is not None:
            srh = replace(self.srh, next_header=next_header)
            payload, next_header = srh.encode(self.dst) + payload, IPV6_NEXT_HEADER_ROUTING
        if self.hop_option is not None:
            payload = self.hop_option.to_hop_by_hop(next_header) + payload
            next_header = IPV6_NEXT_HEADER_HOP_BY_HOP
        return Ipv6Packet(ipv6_address(self.src), ipv6_address(self.dst), next_header, payload,
                          self.hop_limit)  # fmt: skip

    @classmethod
    def from_ipv6(cls, packet: Ipv6Packet) -> Packet:
        """Peel the RPL extension headers; any other extension header is the upper layer's
        business. Raises RplDecodeError (offsets from the start of the IPv6 header)."""
        data, next_header, at = packet.payload, packet.next_header, IPV6_HEADER_LENGTH
        hop_option = srh = None
        dst = packet.dst.packed
        try:
            if next_header == IPV6_NEXT_HEADER_HOP_BY_HOP:
                hop_option, next_header = RplHopOption.from_hop_by_hop(data)
                size = _EXTENSION_MIN + 8 * data[1]
                data, at = data[size:], at + size
            if next_header == IPV6_NEXT_HEADER_ROUTING:
                srh = SourceRoutingHeader.decode(data, dst)
                size = _EXTENSION_MIN + 8 * data[1]
                data, at, next_header = data[size:], at + size, srh.next_header
        except RplDecodeError as exc:
            raise RplDecodeError(at + exc.offset, exc.reason) from None
        return unchecked(cls, src=packet.src.packed, dst=dst, payload=bytes(data),
                         next_header=next_header, hop_limit=packet.hop_limit,
                         hop_option=hop_option, srh=srh)  # fmt: skip


_FIELDS = frozenset(f.name for f in fields(Packet))


@dataclass(frozen=True)
class Transmission:
    """Send `packet` to the link neighbour `next_hop` (link-local), or to every neighbour
    when `next_hop` is None (link-local multicast, e.g. ff02::1a for DIOs)."""

    next_hop: bytes | None
    packet: Packet
