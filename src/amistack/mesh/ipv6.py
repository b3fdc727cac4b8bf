"""The IPv6 header (RFC 8200 §3) and UDP (RFC 768, checksum per RFC 8200 §8.1) as the mesh
carries them inside 6LoWPAN: plain dataclasses, `decode` raising `MeshLowpanDecodeError`."""

from __future__ import annotations

import functools
import ipaddress
import struct
from dataclasses import dataclass

from amistack.mesh.errors import MeshLowpanDecodeError
from amistack.mesh.unchecked import unchecked

__all__ = [
    "IPV6_HEADER_LENGTH",
    "IPV6_MIN_MTU",
    "NEXT_HEADER_UDP",
    "UDP_HEADER_LENGTH",
    "Ipv6Packet",
    "UdpDatagram",
    "ipv6_address",
    "pseudo_header_checksum",
    "upper_layer_checksum",
]

IPV6_HEADER_LENGTH = 40
IPV6_MIN_MTU = 1280  # RFC 8200 §5; RFC 4944 §4: the 6LoWPAN MTU
IPV6_VERSION = 6
NEXT_HEADER_UDP = 17
UDP_HEADER_LENGTH = 8
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")

Ipv6Address = ipaddress.IPv6Address

ipv6_address = functools.lru_cache(maxsize=65536)(Ipv6Address)
"""`IPv6Address(packed)`, interned: a mesh node meets the same few addresses (its neighbours',
the root's, the servers') in every packet it decodes (immutable values; a bounded cache)."""


def _ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_header_checksum(src: bytes, dst: bytes, next_header: int, data: bytes) -> int:
    """RFC 8200 §8.1: the one's complement of the one's complement sum of the pseudo-header
    (`src`, `dst` as 16 bytes each) and `data` (its checksum field zero). ICMPv6 (RFC 4443
    §2.3) sends it as it is; UDP sends a computed 0 as all ones (`upper_layer_checksum`)."""
    pseudo = src + dst + struct.pack("!I3xB", len(data), next_header)
    return 0xFFFF - _ones_complement_sum(pseudo + data)


def upper_layer_checksum(src: Ipv6Address, dst: Ipv6Address, next_header: int, data: bytes) -> int:
    """The UDP checksum (RFC 8200 §8.1) of `data` (its checksum field zero)."""
    return pseudo_header_checksum(src.packed, dst.packed, next_header, data) or 0xFFFF  # RFC 768


@dataclass(frozen=True)
class Ipv6Packet:
    src: Ipv6Address
    dst: Ipv6Address
    next_header: int
    payload: bytes
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.traffic_class <= 0xFF and 0 <= self.flow_label <= 0xFFFFF):
            raise ValueError("traffic class is 8 bits, flow label 20")
        if not (0 <= self.hop_limit <= 0xFF and 0 <= self.next_header <= 0xFF):
            raise ValueError("hop limit and next header are one octet")
        if len(self.payload) > 0xFFFF:
            raise ValueError("payload too long for the IPv6 payload length")

    def header(self) -> bytes:
        first = IPV6_VERSION << 28 | self.traffic_class << 20 | self.flow_label
        return _IPV6.pack(first, len(self.payload), self.next_header, self.hop_limit,
                          self.src.packed, self.dst.packed)  # fmt: skip

    def encode(self) -> bytes:
        return self.header() + self.payload

    @classmethod
    def decode(cls, data: bytes, offset: int = 0) -> Ipv6Packet:
        """One IPv6 packet filling `data` exactly (errors at `offset` + position)."""
        if len(data) < IPV6_HEADER_LENGTH:
            raise MeshLowpanDecodeError(offset + len(data), "IPv6 header truncated")
        first, length, nh, hlim, src, dst = _IPV6.unpack_from(data)
        if first >> 28 != IPV6_VERSION:
            raise MeshLowpanDecodeError(offset, f"IP version {first >> 28}")
        if length != len(data) - IPV6_HEADER_LENGTH:
            raise MeshLowpanDecodeError(offset + 4, "IPv6 payload length disagrees with the data")
        # every field is in range by its width on the wire: build without __post_init__
        return unchecked(
            cls, src=ipv6_address(src), dst=ipv6_address(dst), next_header=nh,
            payload=bytes(data[IPV6_HEADER_LENGTH:]), hop_limit=hlim,
            traffic_class=first >> 20 & 0xFF, flow_label=first & 0xFFFFF,
        )  # fmt: skip


@dataclass(frozen=True)
class UdpDatagram:
    src_port: int
    dst_port: int
    payload: bytes

    def encode(self, src: Ipv6Address, dst: Ipv6Address) -> bytes:
        length = UDP_HEADER_LENGTH + len(self.payload)
        unchecked = _UDP.pack(self.src_port, self.dst_port, length, 0) + self.payload
        checksum = upper_layer_checksum(src, dst, NEXT_HEADER_UDP, unchecked)
        return _UDP.pack(self.src_port, self.dst_port, length, checksum) + self.payload

    def packet(self, src: Ipv6Address, dst: Ipv6Address, hop_limit: int = 64) -> Ipv6Packet:
        return Ipv6Packet(src, dst, NEXT_HEADER_UDP, self.encode(src, dst), hop_limit)

    @classmethod
    def decode(cls, packet: Ipv6Packet) -> UdpDatagram:
        """The UDP datagram of `packet`, length and checksum verified."""
        data = packet.payload
        if packet.next_header != NEXT_HEADER_UDP:
            raise MeshLowpanDecodeError(6, f"next header {packet.next_header} is not UDP")
        if len(data) < UDP_HEADER_LENGTH:
            raise MeshLowpanDecodeError(IPV6_HEADER_LENGTH, "UDP header truncated")
        sport, dport, length, checksum = _UDP.unpack_from(data)
        if length != len(data):
            raise MeshLowpanDecodeError(IPV6_HEADER_LENGTH + 4, "UDP length disagrees")
        unchecked = data[:6] + b"\x00\x00" + data[8:]
        if checksum != upper_layer_checksum(packet.src, packet.dst, NEXT_HEADER_UDP, unchecked):
            raise MeshLowpanDecodeError(IPV6_HEADER_LENGTH + 6, "UDP checksum mismatch")
        return cls(sport, dport, bytes(data[UDP_HEADER_LENGTH:]))
