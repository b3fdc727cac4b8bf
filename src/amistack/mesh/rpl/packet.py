"""The IPv6 view the RPL engine exchanges with its link layer: one packet per hop.

Until the 6LoWPAN/IPv6 layer carries them as bytes, the two RPL extension headers travel as
their decoded objects (both have byte codecs in `srh.py`); the payload is bytes (an RPL
control message is the ICMPv6 encoding with its checksum, checked on receipt)."""

from __future__ import annotations

from dataclasses import dataclass

from amistack.mesh.icmpv6 import ICMPV6_NEXT_HEADER
from amistack.mesh.rpl.srh import RplHopOption, SourceRoutingHeader

DEFAULT_HOP_LIMIT = 64  # RFC 8200 §3 leaves it to the node; IANA's default is 64
LINK_LOCAL_PREFIX = bytes.fromhex("fe800000000000000000000000000000")[:8]


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
    srh: SourceRoutingHeader | None = None  # RFC 6554


@dataclass(frozen=True)
class Transmission:
    """Send `packet` to the link neighbour `next_hop` (link-local), or to every neighbour
    when `next_hop` is None (link-local multicast, e.g. ff02::1a for DIOs)."""

    next_hop: bytes | None
    packet: Packet
