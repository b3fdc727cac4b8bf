"""The two IPv6 extension headers RPL uses on the data path: the RPL Source Routing Header
(RFC 6554), which the non-storing root puts on downward packets, and the RPL Option in a
Hop-by-Hop header (RFC 6553), which carries the rank information of RFC 6550 §11.2."""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

from amistack.mesh.icmpv6 import IPV6_ADDR_LEN
from amistack.mesh.rpl.constants import (
    ROUTING_TYPE_RPL_SRH,
    RPL_OPTION_TYPE,
    RPL_OPTION_TYPE_RFC9008,
)
from amistack.mesh.rpl.errors import RplDecodeError, RplRoutingError

MAX_COMPRESSION = 15  # RFC 6554 §3: CmprI/CmprE are 4-bit counts of elided prefix octets
_HBH_PAD1 = 0x00  # RFC 8200 §4.2
_HBH_PADN = 0x01


def is_multicast(address: bytes) -> bool:
    return address[0] == 0xFF  # RFC 4291 §2.7


def _common_prefix(a: bytes, b: bytes) -> int:
    n = 0
    while n < MAX_COMPRESSION and a[n] == b[n]:
        n += 1
    return n


@dataclass(frozen=True)
class SourceRoutingHeader:
    """RFC 6554 §3: the hops after the current IPv6 destination, Address[1..n], in order.
    Prefix elision (CmprI/CmprE) is relative to the packet's IPv6 Destination Address, so
    encode() and decode() take it; encode() always elides as much as it can."""

    addresses: tuple[bytes, ...]
    segments_left: int
    next_header: int = 59  # RFC 8200 §4.7: No Next Header

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError("a source route has at least one address")
        if any(len(a) != IPV6_ADDR_LEN for a in self.addresses):
            raise ValueError("source-route addresses are 16 bytes")
        if not 0 <= self.segments_left <= len(self.addresses):
            raise ValueError("Segments Left is 0..n")

    @classmethod
    def route(cls, hops: list[bytes], next_header: int = 59) -> tuple[bytes, SourceRoutingHeader]:
        """(IPv6 destination, header) for a packet that visits `hops` in order, the last
        being the final destination (RFC 6554 §4.1: the root puts hop 1 in the IPv6 DA)."""
        if len(hops) < 2:
            raise ValueError("a source route needs at least two hops")
        return hops[0], cls(tuple(hops[1:]), len(hops) - 1, next_header)

    def encode(self, dst: bytes) -> bytes:
        *middle, last = self.addresses
        cmpr_i = min((_common_prefix(a, dst) for a in middle), default=0)
        cmpr_e = _common_prefix(last, dst)
        body = b"".join(a[cmpr_i:] for a in middle) + last[cmpr_e:]
        pad = -len(body) % 8
        if (len(body) + pad) // 8 > 0xFF:
            raise ValueError("source route too long for one Routing header")
        head = struct.pack(
            "!BBBBBBxx",
            self.next_header,
            (len(body) + pad) // 8,
            ROUTING_TYPE_RPL_SRH,
            self.segments_left,
            cmpr_i << 4 | cmpr_e,
            pad << 4,
        )
        return head + body + bytes(pad)

    @classmethod
    def decode(cls, data: bytes, dst: bytes) -> SourceRoutingHeader:
        """Parse the header at the start of `data` (trailing bytes are the next header's)."""
        if len(dst) != IPV6_ADDR_LEN:
            raise ValueError("the IPv6 destination is 16 bytes")
        if len(data) < 8:
            raise RplDecodeError(len(data), "SRH shorter than its 8 fixed octets")
        nh, ext_len, rtype, seg_left, cmpr, pad_byte = struct.unpack_from("!BBBBBB", data)
        if rtype != ROUTING_TYPE_RPL_SRH:
            raise RplDecodeError(2, f"routing type {rtype} is not the RPL SRH (3)")
        total = 8 + ext_len * 8
        if total > len(data):
            raise RplDecodeError(1, f"Hdr Ext Len {ext_len} runs past the packet")
        cmpr_i, cmpr_e, pad = cmpr >> 4, cmpr & 0x0F, pad_byte >> 4
        size_i, size_e = IPV6_ADDR_LEN - cmpr_i, IPV6_ADDR_LEN - cmpr_e
        room = ext_len * 8 - pad - size_e
        if room < 0 or room % size_i:
            raise RplDecodeError(4, "CmprI/CmprE/Pad do not divide the header into addresses")
        count = room // size_i + 1
        if seg_left > count:
            raise RplDecodeError(3, f"Segments Left {seg_left} > {count} addresses")
        addresses = [
            dst[:cmpr_i] + data[8 + k * size_i : 8 + (k + 1) * size_i] for k in range(count - 1)
        ]
        start = 8 + room
        addresses.append(dst[:cmpr_e] + data[start : start + size_e])
        return cls(tuple(bytes(a) for a in addresses), seg_left, nh)

    def advance(self, dst: bytes, own: frozenset[bytes]) -> tuple[bytes, SourceRoutingHeader]:
        """RFC 6554 §4.2 at a router that owns `dst`: (new IPv6 destination, header) with the
        next hop swapped in. Raises RplRoutingError for a multicast hop or a routing loop."""
        if self.segments_left == 0:
            raise RplRoutingError("no segments left: this node is the final destination")
        n = len(self.addresses)
        i = n - self.segments_left  # 0-based index of Address[i] after the decrement
        nxt = self.addresses[i]
        if is_multicast(nxt) or is_multicast(dst):
            raise RplRoutingError("multicast address in the source route")
        mine = [k for k, a in enumerate(self.addresses) if a in own]
        if len(mine) >= 2 and any(b - a > 1 for a, b in itertools.pairwise(mine)):
            raise RplRoutingError("source route visits this node twice (loop)")
        swapped = (*self.addresses[:i], dst, *self.addresses[i + 1 :])
        return nxt, SourceRoutingHeader(swapped, self.segments_left - 1, self.next_header)


@dataclass(frozen=True)
class RplHopOption:
    """RFC 6553 §3: the RPL Option: direction (O), rank error (R), forwarding error (F),
    instance and the sender's rank, used for the RFC 6550 §11.2 data-path checks."""

    instance_id: int
    sender_rank: int
    down: bool = False  # O
    rank_error: bool = False  # R
    forwarding_error: bool = False  # F
    sub_tlvs: bytes = b""
    option_type: int = RPL_OPTION_TYPE

    def encode(self) -> bytes:
        flags = (
            (0x80 if self.down else 0)
            | (0x40 if self.rank_error else 0)
            | (0x20 if self.forwarding_error else 0)
        )
        body = struct.pack("!BBH", flags, self.instance_id, self.sender_rank) + self.sub_tlvs
        return bytes((self.option_type, len(body))) + body

    @classmethod
    def decode(cls, data: bytes) -> RplHopOption:
        """Parse one option (type, length, data) that fills `data` exactly."""
        if len(data) < 6:
            raise RplDecodeError(len(data), "RPL Option shorter than 6 octets")
        if data[0] not in (RPL_OPTION_TYPE, RPL_OPTION_TYPE_RFC9008):
            raise RplDecodeError(0, f"option type 0x{data[0]:02x} is not the RPL Option")
        if data[1] < 4 or 2 + data[1] != len(data):
            raise RplDecodeError(1, f"RPL Option data length {data[1]} does not fit")
        flags, instance, rank = struct.unpack_from("!BBH", data, 2)
        return cls(
            instance, rank, bool(flags & 0x80), bool(flags & 0x40), bool(flags & 0x20),
            bytes(data[6:]), data[0],
        )  # fmt: skip

    def to_hop_by_hop(self, next_header: int = 59) -> bytes:
        """A whole Hop-by-Hop Options header (RFC 8200 §4.3) holding this option, padded
        to a multiple of 8 octets with Pad1/PadN."""
        options = self.encode()
        pad = -(2 + len(options)) % 8
        padding = (
            b"\x00" if pad == 1 else (bytes((_HBH_PADN, pad - 2)) + bytes(pad - 2) if pad else b"")
        )
        return bytes((next_header, (2 + len(options) + pad) // 8 - 1)) + options + padding

    @classmethod
    def from_hop_by_hop(cls, data: bytes) -> tuple[RplHopOption | None, int]:
        """(the RPL Option or None, next header) from a Hop-by-Hop header at the start of
        `data`. Unknown options whose action bits say skip (00) are skipped; others make the
        packet undeliverable (RFC 8200 §4.2) and raise RplDecodeError."""
        if len(data) < 8:
            raise RplDecodeError(len(data), "Hop-by-Hop header shorter than 8 octets")
        next_header, ext_len = data[0], data[1]
        end = 8 + 8 * ext_len
        if end > len(data):
            raise RplDecodeError(1, f"Hdr Ext Len {ext_len} runs past the packet")
        found: RplHopOption | None = None
        pos = 2
        while pos < end:
            kind = data[pos]
            if kind == _HBH_PAD1:
                pos += 1
                continue
            if pos + 2 > end or pos + 2 + data[pos + 1] > end:
                raise RplDecodeError(pos, "option runs past the Hop-by-Hop header")
            stop = pos + 2 + data[pos + 1]
            if kind in (RPL_OPTION_TYPE, RPL_OPTION_TYPE_RFC9008):
                if found is not None:
                    raise RplDecodeError(pos, "two RPL Options in one header")
                try:
                    found = cls.decode(bytes(data[pos:stop]))
                except RplDecodeError as exc:
                    raise RplDecodeError(pos + exc.offset, exc.reason) from None
            elif kind != _HBH_PADN and kind >> 6 != 0:
                raise RplDecodeError(pos, f"unrecognized option 0x{kind:02x} must not be skipped")
            pos = stop
        return found, next_header
