"""6LoWPAN: IPHC compression round trips and its best forms, the uncompressed dispatch, scapy's
6LoWPAN dissector reading our IPHC, RFC 4944 fragmentation and bounded reassembly."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.addr import Eui64, ShortAddr
from amistack.mesh.errors import MeshLowpanDecodeError
from amistack.mesh.ipv6 import NEXT_HEADER_UDP, Ipv6Packet, UdpDatagram
from amistack.mesh.lowpan import (
    DISPATCH_IPV6,
    Reassembler,
    ReassemblyConfig,
    compress,
    decompress,
    fragment,
)

A = Eui64.parse("02:00:00:00:00:00:00:0a")
B = Eui64.parse("02:00:00:00:00:00:00:0b")
LL_A, LL_B = A.link_local(), B.link_local()
C1222 = 1153
IP = ipaddress.IPv6Address


def udp(src: IP, dst: IP, payload: bytes, sport: int = C1222, dport: int = C1222) -> Ipv6Packet:
    return UdpDatagram(sport, dport, payload).packet(src, dst)


def test_link_local_udp_compresses_to_the_minimum() -> None:
    packet = udp(LL_A, LL_B, b"hello")
    wire = compress(packet, A, B)
    # IPHC 2 + NHC 1 + ports 4 + checksum 2, addresses and hop limit 64 elided
    assert wire[0] & 0xE0 == 0x60 and len(wire) == 2 + 1 + 4 + 2 + 5
    assert decompress(wire, A, B) == packet
    assert UdpDatagram.decode(decompress(wire, A, B)).payload == b"hello"


@pytest.mark.parametrize(
    ("src", "dst", "extra"),
    [
        ("fe80::ff:fe00:7", "ff02::1a", 2 + 1),  # 16-bit source id, 8-bit multicast
        ("fe80::1234:5678:9abc:def0", "ff05::1:3", 8 + 4),  # 64-bit source, 32-bit multicast
        ("2001:db8::1", "ff02::1:2:3", 16 + 6),  # global source, 48-bit multicast
        ("::", "2001:db8::2", 0 + 16),  # unspecified source (SAC = 1)
        ("fe80::b0b", "ff12:3456::1", 8 + 16),  # multicast with no short form
    ],
)
def test_address_forms(src: str, dst: str, extra: int) -> None:
    packet = udp(IP(src), IP(dst), b"x", 0xF0B1, 0xF0B2)  # both ports in the 4-bit range
    wire = compress(packet, A, ShortAddr(0xFFFF))
    assert len(wire) == 2 + extra + 1 + 1 + 2 + 1
    assert decompress(wire, A, ShortAddr(0xFFFF)) == packet


def test_short_link_addresses_and_other_headers() -> None:
    sa, sb = ShortAddr(1), ShortAddr(2)
    src = IP(b"\xfe\x80" + bytes(6) + sa.interface_id())
    dst = IP(b"\xfe\x80" + bytes(6) + sb.interface_id())
    icmp = Ipv6Packet(src, dst, 58, b"\x9b\x00\x00\x00rpl", hop_limit=255, traffic_class=0xB8,
                      flow_label=0x12345)  # fmt: skip
    wire = compress(icmp, sa, sb)
    assert decompress(wire, sa, sb) == icmp
    assert len(wire) == 2 + 4 + 1 + len(icmp.payload)  # TF inline, NH inline, HLIM elided
    for tc, fl in ((0x01, 0x54321), (0xB8, 0), (0, 0x1)):
        p = Ipv6Packet(src, dst, 0, b"", 7, tc, fl)
        assert decompress(compress(p, sa, sb), sa, sb) == p
    plain = bytes((DISPATCH_IPV6,)) + icmp.encode()
    assert decompress(plain, sa, sb) == icmp


@pytest.mark.parametrize(
    ("src", "dst", "dst_ll"),
    [
        ("fe80::a", "fe80::b", B),  # both interface ids from the 802.15.4 addresses
        ("fe80::ff:fe00:7", "ff02::1", ShortAddr(0xFFFF)),  # 16-bit source, 8-bit multicast
        ("2001:db8::a", "ff05::1:3", ShortAddr(0xFFFF)),  # inline source, 32-bit multicast
    ],
)
def test_scapy_reads_our_frames_and_iphc(src: str, dst: str, dst_ll: Eui64 | ShortAddr) -> None:
    """An independent 6LoWPAN implementation (scapy) decodes our 802.15.4 frame and IPHC."""
    from scapy.config import conf
    from scapy.layers.dot15d4 import Dot15d4
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import IPv6

    from amistack.addr import PanId
    from amistack.mesh.frame import Frame, FrameType

    packet = udp(IP(src), IP(dst), b"\x60\x0a")
    frame = Frame(FrameType.DATA, 5, PanId(0xFACE), dst_ll, None, A, compress(packet, A, dst_ll),
                  pan_id_compression=True)  # fmt: skip
    saved = conf.dot15d4_protocol
    conf.dot15d4_protocol = "sixlowpan"
    try:
        parsed = Dot15d4(frame.encode())
    finally:
        conf.dot15d4_protocol = saved
    assert str(parsed[IPv6].src) == src and str(parsed[IPv6].dst) == dst
    assert parsed[IPv6].hlim == 64 and parsed[IPv6].plen == 10
    assert parsed[UDP].sport == C1222 and bytes(parsed[UDP].payload) == b"\x60\x0a"
    assert parsed[UDP].chksum == int.from_bytes(packet.payload[6:8], "big")


@settings(max_examples=60)
@given(
    src=st.binary(min_size=16, max_size=16),
    dst=st.binary(min_size=16, max_size=16),
    nh=st.sampled_from([NEXT_HEADER_UDP, 58, 0, 43]),
    payload=st.binary(max_size=200),
    hlim=st.sampled_from([1, 64, 255, 17]),
    tc=st.integers(0, 255),
    fl=st.integers(0, 0xFFFFF),
)
def test_iphc_round_trip(
    src: bytes, dst: bytes, nh: int, payload: bytes, hlim: int, tc: int, fl: int
) -> None:
    if nh == NEXT_HEADER_UDP:
        packet = udp(IP(src), IP(dst), payload)
    else:
        packet = Ipv6Packet(IP(src), IP(dst), nh, payload, hlim, tc, fl)
    assert decompress(compress(packet, A, B), A, B) == packet


CONTEXT = bytes.fromhex("20010db800010003")  # context 0: a DODAG's /64, 2001:db8:1:3::/64


@pytest.mark.parametrize(
    ("src", "dst", "inline"),
    [
        ("2001:db8:1:3::ff:fe00:7", "2001:db8:1:3:1:2:3:4", 2 + 8),  # 16-bit id, 64-bit id
        ("2001:db8:1:3:0:0:0:b", "2001:db8:ffff::1", 8 + 16),  # outside the context: in full
        ("fe80::1", "2001:db8:1:3::1", 8 + 8),  # link-local and context-based side by side
    ],
)
def test_context_0_compresses_global_addresses_under_the_dodag_prefix(
    src: str, dst: str, inline: int
) -> None:
    packet = udp(IP(src), IP(dst), b"x", 0xF0B1, 0xF0B2)
    wire = compress(packet, A, ShortAddr(0xFFFF), CONTEXT)
    assert len(wire) == 2 + inline + 1 + 1 + 2 + 1
    assert decompress(wire, A, ShortAddr(0xFFFF), CONTEXT) == packet


def test_context_0_elides_an_address_the_link_layer_gives() -> None:
    """A global address whose interface identifier is the frame's EUI-64 costs no octet: the
    first hop of a packet from a meter's own global address, the last hop to the root."""
    src = IP(CONTEXT + A.interface_id())
    dst = IP(CONTEXT + B.interface_id())
    packet = Ipv6Packet(src, dst, 58, b"\x9b\x02" + bytes(30))
    wire = compress(packet, A, B, CONTEXT)
    assert wire[1] == 0b0_1_11_0_1_11  # CID 0, SAC 1, SAM 11, M 0, DAC 1, DAM 11
    assert len(wire) == 2 + 1 + 32  # IPHC, next header inline, the ICMPv6 message
    assert decompress(wire, A, B, CONTEXT) == packet
    frags = fragment(Ipv6Packet(src, dst, 58, bytes(200)), A, B, 9, 90, context=CONTEXT)
    r = Reassembler()
    got = [r.receive(f, A, B, 0.0, CONTEXT) for f in frags]
    assert got[-1] == Ipv6Packet(src, dst, 58, bytes(200)) and len(r) == 0


def test_a_context_based_form_without_the_context_is_refused_not_guessed() -> None:
    packet = udp(IP("2001:db8:1:3::a"), IP("2001:db8:1:3::b"), b"x")
    wire = compress(packet, A, B, CONTEXT)
    with pytest.raises(MeshLowpanDecodeError, match="without a context"):
        decompress(wire, A, B)
    with pytest.raises(MeshLowpanDecodeError, match="without a context"):
        Reassembler().receive(wire, A, B, 0.0)
    assert compress(packet, A, B) == compress(packet, A, B, bytes(8))  # another prefix: inline


@settings(max_examples=60)
@given(
    src_iid=st.binary(min_size=8, max_size=8),
    dst=st.binary(min_size=16, max_size=16),
    payload=st.binary(max_size=200),
    nh=st.sampled_from([NEXT_HEADER_UDP, 58, 0, 43]),
)
def test_iphc_round_trip_with_context_0(
    src_iid: bytes, dst: bytes, payload: bytes, nh: int
) -> None:
    src = IP(CONTEXT + src_iid)
    if nh == NEXT_HEADER_UDP:
        packet = udp(src, IP(dst), payload)
    else:
        packet = Ipv6Packet(src, IP(dst), nh, payload)
    assert decompress(compress(packet, A, B, CONTEXT), A, B, CONTEXT) == packet


@given(st.binary(max_size=120), st.sampled_from([None, CONTEXT]))
def test_fuzz_decoders_raise_only_the_typed_error(data: bytes, context: bytes | None) -> None:
    r = Reassembler()
    for fn in (
        lambda: decompress(data, A, B, context),
        lambda: r.receive(data, A, B, 0.0, context),
    ):
        try:
            fn()
        except MeshLowpanDecodeError as exc:
            assert exc.offset >= 0 and exc.reason


@pytest.mark.parametrize(
    ("hexdata", "reason"),
    [
        ("", "no dispatch"),
        ("01", "not IPv6"),
        ("80", "mesh addressing"),
        ("7880", "contexts other than 0"),
        ("7804", "DAC = 1 with M = 0, DAM = 00"),
        ("7850", "context-based form without a context"),
        ("7b", "IPHC header truncated"),
        ("7e33" + "f4", "elided UDP checksum"),
        ("7e33" + "e0", "not UDP"),
        ("7833", "next header truncated"),
        ("c0", "fragment header truncated"),
        ("c7ff0001", "out of bounds"),
    ],
)
def test_malformed_payloads(hexdata: str, reason: str) -> None:
    with pytest.raises(MeshLowpanDecodeError) as err:
        Reassembler().receive(bytes.fromhex(hexdata), A, B, 0.0) if hexdata.startswith(
            "c"
        ) else decompress(bytes.fromhex(hexdata), A, B)
    assert reason in err.value.reason


def c1222_sized(n: int) -> Ipv6Packet:
    return udp(IP("2001:db8::a"), IP("2001:db8::1"), bytes(i % 251 for i in range(n)))


@pytest.mark.parametrize("iphc", [True, False])
@pytest.mark.parametrize("size", [10, 200, 700, 1232])
def test_fragments_fit_and_reassemble_in_any_order(size: int, iphc: bool) -> None:
    packet = c1222_sized(size)
    frags = fragment(packet, A, B, tag=0x1234, room=90, iphc=iphc)
    assert all(len(f) <= 90 for f in frags)
    if len(frags) > 1:
        assert frags[0][0] & 0xF8 == 0xC0 and all(f[0] & 0xF8 == 0xE0 for f in frags[1:])
        assert int.from_bytes(frags[0][:2], "big") & 0x7FF == len(packet.encode())
    for order in (frags, frags[::-1], frags[1:] + frags[:1]):
        r = Reassembler()
        results = [r.receive(f, A, B, 1.0) for f in order]
        assert results[-1] == packet and all(x is None for x in results[:-1])
        assert len(r) == 0


def test_duplicates_overlaps_and_timeouts() -> None:
    packet = c1222_sized(400)
    frags = fragment(packet, A, B, tag=7, room=90)
    r = Reassembler(ReassemblyConfig(timeout=60.0))
    r.receive(frags[0], A, B, 0.0)
    r.receive(frags[0], A, B, 0.0)
    assert r.counters["duplicate-fragments"] == 1
    # a fragment overlapping differently kills the whole datagram
    bad = frags[1][:4] + bytes((frags[1][4] + 1,)) + frags[1][5:]
    r.receive(frags[1], A, B, 0.0)
    r.receive(bad, A, B, 0.0)
    assert r.counters["overlapping-fragments"] == 1 and len(r) == 0
    # an incomplete datagram expires after the timeout
    r.receive(frags[0], A, B, 10.0)
    assert r.get_timer() == 70.0
    r.handle_timer(69.0)
    assert len(r) == 1
    r.handle_timer(70.0)
    assert len(r) == 0 and r.counters["reassembly-timeouts"] == 1 and r.get_timer() is None
    with pytest.raises(MeshLowpanDecodeError, match="outside"):
        r.receive(frags[1][:4] + b"\xff" + frags[1][5:], A, B, 0.0)


def test_a_flooding_sender_is_capped_and_others_still_reassemble() -> None:
    r = Reassembler(ReassemblyConfig(max_per_sender=3, max_total=5))
    packet = c1222_sized(300)
    for tag in range(100):  # one sender starts 100 datagrams and never finishes them
        r.receive(fragment(packet, A, B, tag, 90)[0], A, B, 0.0)
    assert len(r) == 3 and r.counters["reassembly-sender-limit"] == 97
    others = [Eui64(bytes([2, 0, 0, 0, 0, 0, 2, i])) for i in range(3)]
    for o in others[:2]:
        r.receive(fragment(packet, o, B, 1, 90)[0], o, B, 0.0)
    assert len(r) == 5
    late = others[2]
    frags = fragment(packet, late, B, 1, 90)
    assert r.receive(frags[0], late, B, 0.0) is None and r.counters["reassembly-full"] == 1
    r.handle_timer(60.0)  # the flood times out; the late sender gets through afterwards
    assert [r.receive(f, late, B, 61.0) for f in frags][-1] == packet


def test_bad_fragmentation_requests() -> None:
    with pytest.raises(ValueError):
        fragment(c1222_sized(1300), A, B, 1, 90)
    with pytest.raises(ValueError):
        fragment(c1222_sized(300), A, B, 1, 10)
