"""Write (and read back) UDP traffic as classic libpcap files that Wireshark and tshark dissect.

The runtime sees only UDP payloads and addresses, so each record gets synthesised IPv4 (RFC 791) or
IPv6 (RFC 8200) and UDP (RFC 768) headers with correct lengths and checksums, on LINKTYPE_RAW
(101: the packet starts at the IP header, version nibble tells v4 from v6). Link frames that
exist as bytes already (the mesh's IEEE 802.15.4 frames) go in as they are with `write_packet` on
a writer opened with their link type (195 with FCS, 230 without).
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from amistack.addr import Addr
from amistack.mesh.frame import fcs

PCAP_MAGIC = 0xA1B2C3D4  # microsecond timestamps
PCAP_VERSION = (2, 4)
LINKTYPE_RAW = 101  # https://www.tcpdump.org/linktypes.html
LINKTYPE_IEEE802_15_4_WITHFCS = 195  # the MAC frame and its 2-octet FCS
LINKTYPE_IEEE802_15_4_NOFCS = 230  # the MAC frame alone
SNAPLEN = 65535
IPPROTO_UDP = 17
IPV4_HEADER = 20
IPV6_HEADER = 40
UDP_HEADER = 8
MAX_UDP_PAYLOAD = 65535 - UDP_HEADER  # the UDP length field; IPv4 also caps the total at 65535

_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")


class PcapError(Exception):
    """A pcap file (or record) this module cannot read."""


def internet_checksum(data: bytes) -> int:
    """The 16-bit one's complement of the one's complement sum (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ip_bytes(host: str) -> bytes:
    return ipaddress.ip_address(host.split("%", 1)[0]).packed  # drop an IPv6 zone ("%eth0")


def udp_packet(src: Addr, dst: Addr, payload: bytes, ident: int = 0) -> bytes:
    """An IPv4 or IPv6 packet carrying `payload` in UDP from `src` to `dst`, checksums filled in."""
    s, d = _ip_bytes(src[0]), _ip_bytes(dst[0])
    if len(s) != len(d):
        raise ValueError(f"cannot mix address families in one packet: {src} -> {dst}")
    udp_len = UDP_HEADER + len(payload)
    if udp_len > 65535 or (len(s) == 4 and udp_len + IPV4_HEADER > 65535):
        raise ValueError(f"UDP payload of {len(payload)} bytes does not fit one IP packet")
    header = _UDP.pack(src[1], dst[1], udp_len, 0)
    if len(s) == 4:
        pseudo = s + d + struct.pack("!BBH", 0, IPPROTO_UDP, udp_len)
    else:
        pseudo = s + d + struct.pack("!IxxxB", udp_len, IPPROTO_UDP)
    csum = internet_checksum(pseudo + header + payload) or 0xFFFF  # 0 means "none" (RFC 768)
    udp = _UDP.pack(src[1], dst[1], udp_len, csum) + payload
    if len(s) == 4:
        ip = _IPV4.pack(
            0x45, 0, IPV4_HEADER + udp_len, ident & 0xFFFF, 0x4000, 64, IPPROTO_UDP, 0, s, d
        )
        ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
        return ip + udp
    return _IPV6.pack(6 << 28, udp_len, IPPROTO_UDP, 64, s, d) + udp


class PcapWriter:
    """Appends UDP datagrams to a pcap file; `capture` plugs into `EngineDriver(capture=...)`."""

    def __init__(
        self, target: str | Path | BinaryIO, snaplen: int = SNAPLEN, linktype: int = LINKTYPE_RAW
    ) -> None:
        if isinstance(target, str | Path):
            self._fh: BinaryIO = open(target, "wb")  # noqa: SIM115 -- closed by close()
            self._owned = True
        else:
            self._fh = target
            self._owned = False
        self._snaplen = snaplen
        self._ident = 0
        self.count = 0
        self.linktype = linktype
        self._fh.write(_GLOBAL.pack(PCAP_MAGIC, *PCAP_VERSION, 0, 0, snaplen, linktype))

    def write(self, src: Addr, dst: Addr, payload: bytes, ts: float | None = None) -> None:
        """One datagram from `src` to `dst`; `ts` is wall-clock seconds (now when omitted)."""
        if self.linktype != LINKTYPE_RAW:
            raise ValueError("UDP datagrams go into a LINKTYPE_RAW capture")
        self._ident = (self._ident + 1) & 0xFFFF
        self.write_packet(udp_packet(src, dst, payload, self._ident), ts)

    def write_packet(self, packet: bytes, ts: float | None = None) -> None:
        """One record as it is (a packet of the writer's link type)."""
        if ts is None:
            ts = time.time()
        sec = int(ts)
        usec = min(round((ts - sec) * 1e6), 999_999)
        caplen = min(len(packet), self._snaplen)
        self._fh.write(_RECORD.pack(sec, usec, caplen, len(packet)))
        self._fh.write(packet[:caplen])
        self.count += 1

    def write_frame(self, frame: bytes, ts: float | None = None) -> None:
        """One IEEE 802.15.4 MAC frame (without FCS); the FCS is added for link type 195."""
        if self.linktype == LINKTYPE_IEEE802_15_4_WITHFCS:
            frame += fcs(frame)
        elif self.linktype != LINKTYPE_IEEE802_15_4_NOFCS:
            raise ValueError("802.15.4 frames go into a capture of link type 195 or 230")
        self.write_packet(frame, ts)

    def capture(self, payload: bytes, src: Addr, dst: Addr) -> None:
        """The `EngineDriver` capture hook: (payload, src, dst), stamped with the wall clock."""
        self.write(src, dst, payload)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        if self._owned:
            self._fh.close()
        else:
            self._fh.flush()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class UdpRecord:
    """One UDP datagram read back from a pcap file."""

    ts: float
    src: Addr
    dst: Addr
    payload: bytes


def _parse_udp(packet: bytes, offset: int) -> tuple[Addr, Addr, bytes]:
    version = packet[0] >> 4 if packet else 0
    if version == 4:
        if len(packet) < IPV4_HEADER:
            raise PcapError(f"record at {offset}: truncated IPv4 header")
        ihl = (packet[0] & 0x0F) * 4
        if internet_checksum(packet[:ihl]) != 0:
            raise PcapError(f"record at {offset}: bad IPv4 header checksum")
        total, proto = struct.unpack_from("!H", packet, 2)[0], packet[9]
        s, d = packet[12:16], packet[16:20]
        pseudo_tail = struct.pack("!BB", 0, IPPROTO_UDP)
        body = packet[ihl:total]
    elif version == 6:
        if len(packet) < IPV6_HEADER:
            raise PcapError(f"record at {offset}: truncated IPv6 header")
        plen, proto = struct.unpack_from("!H", packet, 4)[0], packet[6]
        s, d = packet[8:24], packet[24:40]
        body = packet[IPV6_HEADER : IPV6_HEADER + plen]
        pseudo_tail = b""
    else:
        raise PcapError(f"record at {offset}: not an IP packet (version {version})")
    if proto != IPPROTO_UDP or len(body) < UDP_HEADER:
        raise PcapError(f"record at {offset}: not UDP")
    sport, dport, ulen, _ = _UDP.unpack_from(body)
    if ulen != len(body):
        raise PcapError(f"record at {offset}: UDP length {ulen} != {len(body)}")
    if version == 4:
        pseudo = s + d + pseudo_tail + struct.pack("!H", ulen)
    else:
        pseudo = s + d + struct.pack("!IxxxB", ulen, IPPROTO_UDP)
    if internet_checksum(pseudo + body) != 0:
        raise PcapError(f"record at {offset}: bad UDP checksum")
    src_ip = str(ipaddress.ip_address(s))
    dst_ip = str(ipaddress.ip_address(d))
    return (src_ip, sport), (dst_ip, dport), bytes(body[UDP_HEADER:])


def _records(path: str | Path, linktypes: tuple[int, ...]) -> Iterator[tuple[float, bytes, int]]:
    """(timestamp, packet, offset) of each record of a pcap file of one of `linktypes`."""
    data = Path(path).read_bytes()
    if len(data) < _GLOBAL.size:
        raise PcapError("file shorter than the pcap global header")
    magic, _vmaj, _vmin, _tz, _sig, _snap, linktype = _GLOBAL.unpack_from(data)
    if magic != PCAP_MAGIC:
        raise PcapError(f"unsupported pcap magic {magic:#x}")
    if linktype not in linktypes:
        raise PcapError(f"unsupported link type {linktype}")
    offset = _GLOBAL.size
    while offset < len(data):
        if offset + _RECORD.size > len(data):
            raise PcapError(f"record at {offset}: truncated record header")
        sec, usec, caplen, _origlen = _RECORD.unpack_from(data, offset)
        start = offset + _RECORD.size
        packet = data[start : start + caplen]
        if len(packet) != caplen:
            raise PcapError(f"record at {offset}: truncated packet")
        yield sec + usec / 1e6, packet, offset
        offset = start + caplen


def read_udp_pcap(path: str | Path) -> Iterator[UdpRecord]:
    """The UDP datagrams of a LINKTYPE_RAW pcap file (`PcapWriter` output), checksums verified."""
    for ts, packet, offset in _records(path, (LINKTYPE_RAW,)):
        src, dst, payload = _parse_udp(packet, offset)
        yield UdpRecord(ts, src, dst, payload)


def read_frame_pcap(path: str | Path) -> Iterator[tuple[float, bytes]]:
    """(timestamp, MAC frame) of an IEEE 802.15.4 pcap file without FCS (link type 230)."""
    for ts, frame, _ in _records(path, (LINKTYPE_IEEE802_15_4_NOFCS,)):
        yield ts, frame
