"""pcap writer: synthesised IP/UDP headers read back with checksums verified."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from amistack.runtime.pcap import (
    LINKTYPE_RAW,
    PcapError,
    PcapWriter,
    internet_checksum,
    read_udp_pcap,
    udp_packet,
)


def test_internet_checksum_rfc1071_example() -> None:
    # RFC 1071 §3 worked example: the sum of these words is 0xddf2, the checksum its complement
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert internet_checksum(data) == (~0xDDF2) & 0xFFFF
    # a buffer with its checksum appended sums to zero
    assert internet_checksum(data + struct.pack("!H", internet_checksum(data))) == 0


def test_ipv4_packet_fields() -> None:
    pkt = udp_packet(("192.0.2.1", 716), ("198.51.100.7", 40000), b"hello", ident=7)
    assert len(pkt) == 20 + 8 + 5
    assert pkt[0] == 0x45 and pkt[9] == 17
    assert struct.unpack("!H", pkt[2:4])[0] == 33  # IPv4 total length
    assert internet_checksum(pkt[:20]) == 0
    assert struct.unpack("!HHH", pkt[20:26]) == (716, 40000, 13)
    assert pkt[28:] == b"hello"


def test_ipv6_packet_fields() -> None:
    pkt = udp_packet(("2001:db8::1", 716), ("2001:db8::2%eth0", 5000), b"x" * 3)
    assert pkt[0] >> 4 == 6
    assert struct.unpack("!H", pkt[4:6])[0] == 11 and pkt[6] == 17
    assert pkt[40 + 8 :] == b"xxx"


def test_mixed_families_rejected() -> None:
    with pytest.raises(ValueError):
        udp_packet(("127.0.0.1", 1), ("::1", 2), b"")


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.pcap"
    flows = [
        (("127.0.0.1", 716), ("127.0.0.1", 50000), b"", 1700000000.25),
        (("127.0.0.1", 50000), ("127.0.0.1", 716), b"\x00" * 1001, 1700000000.5),
        (("::1", 716), ("fe80::1", 9), bytes(range(256)), 1700000001.0),
    ]
    with PcapWriter(path) as w:
        for src, dst, payload, ts in flows:
            w.write(src, dst, payload, ts)
    assert w.count == 3
    header = path.read_bytes()[:24]
    assert struct.unpack("<I", header[:4])[0] == 0xA1B2C3D4
    assert struct.unpack("<I", header[20:24])[0] == LINKTYPE_RAW
    back = [(r.src, r.dst, r.payload, r.ts) for r in read_udp_pcap(path)]
    assert back == flows


def test_corrupted_checksum_detected(tmp_path: Path) -> None:
    buf = io.BytesIO()
    w = PcapWriter(buf)
    w.write(("127.0.0.1", 1), ("127.0.0.1", 2), b"payload", 1.0)
    data = bytearray(buf.getvalue())
    data[-1] ^= 0xFF  # flip a payload byte: the UDP checksum no longer matches
    path = tmp_path / "bad.pcap"
    path.write_bytes(bytes(data))
    with pytest.raises(PcapError, match="UDP checksum"):
        list(read_udp_pcap(path))
