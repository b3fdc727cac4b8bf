"""6LoWPAN: IPv6 over IEEE 802.15.4 -- dispatch, IPHC header compression, fragmentation.

Dispatch (first octet of the MAC payload, RFC 4944 §5.1, RFC 6282 §2):

    0x41        uncompressed IPv6 follows (RFC 4944 §5.1)
    011xxxxx    IPHC compressed IPv6 header (RFC 6282 §3.1)
    11000xxx    FRAG1: first fragment, 4-octet header (RFC 4944 §5.3)
    11100xxx    FRAGN: later fragment, 5-octet header (RFC 4944 §5.3)
    10xxxxxx    mesh addressing header (RFC 4944 §5.2): not used (the mesh routes over IP, RPL)

IPHC (RFC 6282 §3): traffic class and flow label, next header, hop limit (1, 64, 255 elided)
and link-local addresses whose interface identifier comes from the 802.15.4 address (EUI-64 with
the U/L bit inverted, or 0000:00ff:fe00:XXXX from a short address, §3.2.2) are elided; multicast
destinations use the 48-, 32- and 8-bit forms. Context-based compression (§3.1.1, SAC/DAC = 1)
with context 0 only (CID = 0, no context extension octet): given `context` (a /64 prefix, the
mesh's DODAG prefix: what 6LoWPAN-ND would hand out in a 6LoWPAN Context Option, RFC 6775
§4.2), a global unicast address under it is sent as its interface identifier (64 or 16 bits
inline, or nothing when the link-layer address gives it), as link-local addresses are. Without
a context a packet that uses one is refused (`MeshLowpanDecodeError`); the unspecified source
:: (SAC = 1, SAM = 00) needs none. Other contexts (CID = 1) are not used. UDP uses the NHC header
(§4.3): ports compressed when in 0xF0B0..0xF0BF or 0xF000..0xF0FF, the checksum always carried
(an elided checksum, C = 1, is refused: §4.3.2 allows it only with upper-layer authorization).

Fragmentation (RFC 4944 §5.3): `fragment` cuts a packet that does not fit one frame into FRAG1
(the compressed header and the first octets) and FRAGNs; sizes and offsets count the packet
uncompressed (RFC 6282 §2), offsets in 8-octet units. `Reassembler` puts them together keyed by
(source, destination, datagram size, tag); bounded: a reassembly times out after 60 s (RFC 4944
§5.3's maximum), a sender may have `max_per_sender` datagrams in progress and all senders
together `max_total`, a datagram is at most 1280 octets (the IPv6 MTU, RFC 4944 §4), and a
fragment that overlaps another differently discards the datagram (RFC 4944 §5.3).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field

from amistack.addr import LinkAddr
from amistack.mesh.errors import MeshLowpanDecodeError
from amistack.mesh.ipv6 import (
    IPV6_HEADER_LENGTH,
    IPV6_MIN_MTU,
    NEXT_HEADER_UDP,
    UDP_HEADER_LENGTH,
    Ipv6Packet,
)

__all__ = [
    "DISPATCH_IPV6",
    "REASSEMBLY_TIMEOUT",
    "Reassembler",
    "ReassemblyConfig",
    "compress",
    "decompress",
    "fragment",
]

DISPATCH_IPV6 = 0x41  # RFC 4944 §5.1
IPHC_DISPATCH, IPHC_MASK = 0x60, 0xE0  # RFC 6282 §3.1: 011xxxxx
FRAG1_DISPATCH, FRAGN_DISPATCH, FRAG_MASK = 0xC0, 0xE0, 0xF8  # RFC 4944 §5.3
MESH_DISPATCH, MESH_MASK = 0x80, 0xC0  # RFC 4944 §5.2
NHC_UDP, NHC_UDP_MASK = 0xF0, 0xF8  # RFC 6282 §4.3.3: 11110CPP
FRAG1_HEADER, FRAGN_HEADER = 4, 5
REASSEMBLY_TIMEOUT = 60.0  # RFC 4944 §5.3: at most 60 seconds
_HLIM = {1: 0b01, 64: 0b10, 255: 0b11}  # RFC 6282 §3.1.1 HLIM
_HLIM_VALUES = {v: k for k, v in _HLIM.items()}
_LINK_LOCAL_PREFIX = bytes.fromhex("fe80000000000000")
_SHORT_IID_PREFIX = bytes.fromhex("000000fffe00")  # RFC 6282 §3.2.2

Ipv6Address = ipaddress.IPv6Address


def _iid(ll: LinkAddr) -> bytes:
    return ll.interface_id()


# -- IPHC ------------------------------------------------------------------------------------


def _compress_unicast(addr: bytes, ll: LinkAddr, context: bytes | None) -> tuple[int, int, bytes]:
    """(SAC/DAC, SAM/DAM, inline octets) for a unicast address, RFC 6282 §3.1.1: link-local
    stateless (SAC/DAC = 0), under context 0 stateful (SAC/DAC = 1), else inline in full."""
    prefix = addr[:8]
    if prefix == _LINK_LOCAL_PREFIX:
        stateful = 0
    elif prefix == context:
        stateful = 1
    else:
        return 0, 0b00, addr
    if addr[8:] == _iid(ll):
        return stateful, 0b11, b""
    if addr[8:14] == _SHORT_IID_PREFIX:
        return stateful, 0b10, addr[14:]
    return stateful, 0b01, addr[8:]


def _compress_multicast(addr: bytes) -> tuple[int, bytes]:
    """(DAM, inline octets) for a multicast destination, RFC 6282 §3.1.1 with M = 1, DAC = 0."""
    if addr[1] == 0x02 and addr[2:15] == bytes(13):
        return 0b11, addr[15:]
    if addr[2:13] == bytes(11):
        return 0b10, addr[1:2] + addr[13:]
    if addr[2:11] == bytes(9):
        return 0b01, addr[1:2] + addr[11:]
    return 0b00, addr


def _compress_header(
    packet: Ipv6Packet, src_ll: LinkAddr, dst_ll: LinkAddr, context: bytes | None = None
) -> tuple[bytes, int]:
    """The IPHC (+ NHC UDP) header and how many octets of the uncompressed packet it covers;
    `context`: the /64 prefix of context 0, if there is one."""
    inline = bytearray()
    ecn, dscp = packet.traffic_class & 3, packet.traffic_class >> 2
    if packet.traffic_class == 0 and packet.flow_label == 0:
        tf = 0b11
    elif packet.flow_label == 0:
        tf = 0b10
        inline.append(ecn << 6 | dscp)
    elif dscp == 0:
        tf = 0b01
        inline += (ecn << 22 | packet.flow_label).to_bytes(3, "big")
    else:
        tf = 0b00
        inline += bytes((ecn << 6 | dscp,)) + packet.flow_label.to_bytes(3, "big")
    udp = packet.next_header == NEXT_HEADER_UDP and len(packet.payload) >= UDP_HEADER_LENGTH
    if not udp:
        inline.append(packet.next_header)
    hlim = _HLIM.get(packet.hop_limit, 0)
    if not hlim:
        inline.append(packet.hop_limit)
    src, dst = packet.src.packed, packet.dst.packed
    if src == bytes(16):
        sac, sam, s_inline = 1, 0b00, b""
    else:
        sac, sam, s_inline = _compress_unicast(src, src_ll, context)
    multicast = packet.dst.is_multicast
    if multicast:
        dac, (dam, d_inline) = 0, _compress_multicast(dst)
    else:
        dac, dam, d_inline = _compress_unicast(dst, dst_ll, context)
    inline += s_inline + d_inline
    head = bytes((IPHC_DISPATCH | tf << 3 | int(udp) << 2 | hlim,
                  sac << 6 | sam << 4 | int(multicast) << 3 | dac << 2 | dam))  # fmt: skip
    covered = IPV6_HEADER_LENGTH
    if udp:
        sport = int.from_bytes(packet.payload[0:2], "big")
        dport = int.from_bytes(packet.payload[2:4], "big")
        checksum = packet.payload[6:8]
        if sport & 0xFFF0 == 0xF0B0 and dport & 0xFFF0 == 0xF0B0:
            nhc, ports = 0b11, bytes(((sport & 0xF) << 4 | dport & 0xF,))
        elif dport & 0xFF00 == 0xF000:
            nhc, ports = 0b01, sport.to_bytes(2, "big") + bytes((dport & 0xFF,))
        elif sport & 0xFF00 == 0xF000:
            nhc, ports = 0b10, bytes((sport & 0xFF,)) + dport.to_bytes(2, "big")
        else:
            nhc, ports = 0b00, packet.payload[0:4]
        inline += bytes((NHC_UDP | nhc,)) + ports + checksum
        covered += UDP_HEADER_LENGTH
    return head + bytes(inline), covered


def compress(
    packet: Ipv6Packet, src_ll: LinkAddr, dst_ll: LinkAddr, context: bytes | None = None
) -> bytes:
    """`packet` as an IPHC-compressed 6LoWPAN payload between these link-layer addresses
    (`context`: the /64 prefix of IPHC context 0, if the two nodes share one)."""
    header, covered = _compress_header(packet, src_ll, dst_ll, context)
    return header + packet.encode()[covered:]


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise MeshLowpanDecodeError(self.pos, f"{what} truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(out)


def _unicast(mode: int, r: _Reader, ll: LinkAddr, what: str, prefix: bytes) -> bytes:
    """A SAM/DAM-compressed unicast address; `prefix`: the link-local prefix (SAC/DAC = 0)
    or context 0's (SAC/DAC = 1). Mode 00 is the full address (stateful 00 is refused)."""
    if mode == 0b00:
        return r.take(16, what)
    if mode == 0b01:
        return prefix + r.take(8, what)
    if mode == 0b10:
        return prefix + _SHORT_IID_PREFIX + r.take(2, what)
    return prefix + _iid(ll)


def _multicast(mode: int, r: _Reader) -> bytes:
    what = "multicast destination"
    if mode == 0b00:
        return r.take(16, what)
    if mode == 0b01:
        b = r.take(6, what)
        return bytes((0xFF, b[0])) + bytes(9) + b[1:]
    if mode == 0b10:
        b = r.take(4, what)
        return bytes((0xFF, b[0])) + bytes(11) + b[1:]
    return bytes((0xFF, 0x02)) + bytes(13) + r.take(1, what)


def _decompress_header(
    data: bytes,
    pos: int,
    src_ll: LinkAddr,
    dst_ll: LinkAddr,
    datagram_size: int | None,
    context: bytes | None = None,
) -> tuple[bytes, int]:
    """The uncompressed IPv6 (+ UDP) header of the IPHC header at `pos`, and where the rest of
    the payload starts. Without `datagram_size` the packet ends with `data`."""
    r = _Reader(data, pos)
    b0, b1 = r.take(2, "IPHC header")
    tf, nh, hlim = b0 >> 3 & 3, b0 >> 2 & 1, b0 & 3
    cid, sac, sam, m, dac, dam = b1 >> 7, b1 >> 6 & 1, b1 >> 4 & 3, b1 >> 3 & 1, b1 >> 2 & 1, b1 & 3
    if cid:
        raise MeshLowpanDecodeError(pos + 1, "contexts other than 0 are not used")
    if dac and (m or dam == 0b00):  # reserved, or unicast-prefix-based multicast: not used
        raise MeshLowpanDecodeError(pos + 1, f"DAC = 1 with M = {m}, DAM = {dam:02b} is not used")
    if context is None and (dac or (sac and sam)):
        raise MeshLowpanDecodeError(pos + 1, "context-based form without a context")
    tc = fl = 0
    if tf == 0b00:
        b = r.take(4, "traffic class and flow label")
        tc, fl = (b[0] & 0x3F) << 2 | b[0] >> 6, int.from_bytes(b[1:], "big") & 0xFFFFF
    elif tf == 0b01:
        b = r.take(3, "flow label")
        tc, fl = b[0] >> 6, int.from_bytes(b, "big") & 0xFFFFF
    elif tf == 0b10:
        b = r.take(1, "traffic class")
        tc = (b[0] & 0x3F) << 2 | b[0] >> 6
    next_header = NEXT_HEADER_UDP if nh else r.take(1, "next header")[0]
    hop_limit = _HLIM_VALUES[hlim] if hlim else r.take(1, "hop limit")[0]
    if sac and not sam:
        src = bytes(16)  # the unspecified address
    else:
        prefix = context if sac and context is not None else _LINK_LOCAL_PREFIX
        src = _unicast(sam, r, src_ll, "source address", prefix)
    if m:
        dst = _multicast(dam, r)
    else:
        prefix = context if dac and context is not None else _LINK_LOCAL_PREFIX
        dst = _unicast(dam, r, dst_ll, "destination address", prefix)
    udp_header = b""
    if nh:
        nhc_at = r.pos
        nhc = r.take(1, "NHC header")[0]
        if nhc & NHC_UDP_MASK != NHC_UDP:
            raise MeshLowpanDecodeError(nhc_at, f"NHC {nhc:#04x} is not UDP")
        if nhc & 0x04:
            raise MeshLowpanDecodeError(nhc_at, "elided UDP checksum is not accepted")
        ports = nhc & 3
        if ports == 0b00:
            sport = int.from_bytes(r.take(2, "UDP port"), "big")
            dport = int.from_bytes(r.take(2, "UDP port"), "big")
        elif ports == 0b01:
            sport = int.from_bytes(r.take(2, "UDP port"), "big")
            dport = 0xF000 | r.take(1, "UDP port")[0]
        elif ports == 0b10:
            sport = 0xF000 | r.take(1, "UDP port")[0]
            dport = int.from_bytes(r.take(2, "UDP port"), "big")
        else:
            p = r.take(1, "UDP ports")[0]
            sport, dport = 0xF0B0 | p >> 4, 0xF0B0 | p & 0xF
        checksum = r.take(2, "UDP checksum")
        udp_header = sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
        udp_header += b"\x00\x00" + checksum  # the length is filled in below
    header_length = IPV6_HEADER_LENGTH + len(udp_header)
    if datagram_size is None:
        datagram_size = header_length + len(data) - r.pos
    payload_length = datagram_size - IPV6_HEADER_LENGTH
    if payload_length < len(udp_header):
        raise MeshLowpanDecodeError(pos, "datagram smaller than its headers")
    if udp_header:
        udp_header = udp_header[:4] + payload_length.to_bytes(2, "big") + udp_header[6:]
    first = 6 << 28 | tc << 20 | fl
    ipv6 = (
        first.to_bytes(4, "big") + payload_length.to_bytes(2, "big")
        + bytes((next_header, hop_limit)) + src + dst
    )  # fmt: skip
    return ipv6 + udp_header, r.pos


def _packet_start(data: bytes, pos: int, src_ll: LinkAddr, dst_ll: LinkAddr, size: int | None,
                  context: bytes | None) -> tuple[bytes, int]:  # fmt: skip
    """An uncompressed dispatch or IPHC at `pos`: (uncompressed prefix, start of the rest)."""
    if pos >= len(data):
        raise MeshLowpanDecodeError(pos, "no dispatch")
    dispatch = data[pos]
    if dispatch == DISPATCH_IPV6:
        return b"", pos + 1
    if dispatch & IPHC_MASK == IPHC_DISPATCH:
        return _decompress_header(data, pos, src_ll, dst_ll, size, context)
    if dispatch & MESH_MASK == MESH_DISPATCH:
        raise MeshLowpanDecodeError(pos, "mesh addressing header (mesh-under) is not used")
    raise MeshLowpanDecodeError(pos, f"dispatch {dispatch:#04x} is not IPv6")


def decompress(
    data: bytes, src_ll: LinkAddr, dst_ll: LinkAddr, context: bytes | None = None
) -> Ipv6Packet:
    """One unfragmented 6LoWPAN payload (uncompressed or IPHC) as its IPv6 packet."""
    prefix, rest = _packet_start(data, 0, src_ll, dst_ll, None, context)
    return Ipv6Packet.decode(prefix + data[rest:])


# -- fragmentation -----------------------------------------------------------------------------


def fragment(
    packet: Ipv6Packet,
    src_ll: LinkAddr,
    dst_ll: LinkAddr,
    tag: int,
    room: int,
    iphc: bool = True,
    context: bytes | None = None,
) -> list[bytes]:
    """`packet` as 6LoWPAN payloads of at most `room` octets each: one, or FRAG1 + FRAGNs
    (`context`: IPHC context 0's /64 prefix, see `compress`)."""
    raw = packet.encode()
    if len(raw) > IPV6_MIN_MTU:
        raise ValueError(f"packets above {IPV6_MIN_MTU} octets are not sent")
    if iphc:
        header, covered = _compress_header(packet, src_ll, dst_ll, context)
    else:
        header, covered = bytes((DISPATCH_IPV6,)), 0
    if len(header) + len(raw) - covered <= room:
        return [header + raw[covered:]]
    size = len(raw)
    first_room = room - FRAG1_HEADER - len(header)
    first = (covered + first_room) // 8 * 8 - covered  # FRAGN offsets are in 8-octet units
    if first < 0 or room - FRAGN_HEADER < 8:
        raise ValueError(f"{room} octets per frame cannot carry the fragments")
    out = [_frag_header(FRAG1_DISPATCH, size, tag) + header + raw[covered : covered + first]]
    offset = covered + first
    step = (room - FRAGN_HEADER) // 8 * 8
    while offset < size:
        chunk = raw[offset : offset + step]
        out.append(_frag_header(FRAGN_DISPATCH, size, tag) + bytes((offset // 8,)) + chunk)
        offset += len(chunk)
    return out


def _frag_header(dispatch: int, size: int, tag: int) -> bytes:
    return (dispatch << 8 | size).to_bytes(2, "big") + (tag & 0xFFFF).to_bytes(2, "big")


@dataclass(frozen=True)
class ReassemblyConfig:
    timeout: float = REASSEMBLY_TIMEOUT
    max_per_sender: int = 4
    max_total: int = 64
    max_datagram: int = IPV6_MIN_MTU


@dataclass
class _Partial:
    deadline: float
    buffer: bytearray
    ranges: list[tuple[int, int]] = field(default_factory=list)
    received: int = 0


class Reassembler:
    """Bounded RFC 4944 reassembly for one receiver (module docstring). Sans-IO: `now` is
    given, `get_timer`/`handle_timer` expire what took too long."""

    def __init__(self, config: ReassemblyConfig | None = None) -> None:
        self.config = config or ReassemblyConfig()
        self._partial: dict[tuple[LinkAddr, LinkAddr, int, int], _Partial] = {}
        self._per_sender: Counter[LinkAddr] = Counter()
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._partial)

    def receive(
        self,
        data: bytes,
        src_ll: LinkAddr,
        dst_ll: LinkAddr,
        now: float,
        context: bytes | None = None,
    ) -> Ipv6Packet | None:
        """A 6LoWPAN payload from `src_ll`: the packet it completes, or None (more to come).
        Raises MeshLowpanDecodeError for a malformed one (nothing is kept of it). `context`:
        IPHC context 0's /64 prefix, if the receiver has one."""
        if not data:
            raise MeshLowpanDecodeError(0, "empty 6LoWPAN payload")
        kind = data[0] & FRAG_MASK
        if kind not in (FRAG1_DISPATCH, FRAGN_DISPATCH):
            packet = decompress(data, src_ll, dst_ll, context)
            self.counters["packets"] += 1
            return packet
        first = kind == FRAG1_DISPATCH
        head = FRAG1_HEADER if first else FRAGN_HEADER
        if len(data) < head:
            raise MeshLowpanDecodeError(len(data), "fragment header truncated")
        size = int.from_bytes(data[0:2], "big") & 0x7FF
        tag = int.from_bytes(data[2:4], "big")
        if size > self.config.max_datagram or size < IPV6_HEADER_LENGTH:
            raise MeshLowpanDecodeError(0, f"datagram size {size} out of bounds")
        if first:
            prefix, rest = _packet_start(data, head, src_ll, dst_ll, size, context)
            chunk, offset = prefix + data[rest:], 0
        else:
            chunk, offset = bytes(data[head:]), data[4] * 8
        if not chunk or offset + len(chunk) > size:
            raise MeshLowpanDecodeError(4 if not first else head, "fragment outside the datagram")
        key = (src_ll, dst_ll, size, tag)
        partial = self._partial.get(key)
        if partial is None:
            partial = self._start(key, size, now)
            if partial is None:
                return None
        end = offset + len(chunk)
        for s, e in partial.ranges:
            if s < end and offset < e:
                if (s, e) == (offset, end):
                    self.counters["duplicate-fragments"] += 1
                    return None
                self._drop(key)
                self.counters["overlapping-fragments"] += 1
                return None
        partial.buffer[offset:end] = chunk
        partial.ranges.append((offset, end))
        partial.received += len(chunk)
        self.counters["fragments"] += 1
        if partial.received < size:
            return None
        self._drop(key)
        packet = Ipv6Packet.decode(bytes(partial.buffer))
        self.counters["reassembled"] += 1
        return packet

    def _start(
        self, key: tuple[LinkAddr, LinkAddr, int, int], size: int, now: float
    ) -> _Partial | None:
        sender = key[0]
        if self._per_sender[sender] >= self.config.max_per_sender:
            self.counters["reassembly-sender-limit"] += 1
            return None
        if len(self._partial) >= self.config.max_total:
            self.counters["reassembly-full"] += 1
            return None
        self._per_sender[sender] += 1
        partial = self._partial[key] = _Partial(now + self.config.timeout, bytearray(size))
        return partial

    def _drop(self, key: tuple[LinkAddr, LinkAddr, int, int]) -> None:
        if self._partial.pop(key, None) is not None:
            self._per_sender[key[0]] -= 1
            if not self._per_sender[key[0]]:
                del self._per_sender[key[0]]

    def get_timer(self) -> float | None:
        if not self._partial:
            return None
        return min(p.deadline for p in self._partial.values())

    def handle_timer(self, now: float) -> None:
        for key in [k for k, p in self._partial.items() if p.deadline <= now]:
            self._drop(key)
            self.counters["reassembly-timeouts"] += 1
