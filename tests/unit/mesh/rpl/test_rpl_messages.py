"""RPL control messages (RFC 6550 §6), the SRH (RFC 6554) and the RPL Option (RFC 6553):
known-answer bytes laid out by hand from the RFC figures, round trips, and typed errors."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from tests.unit.mesh.rpl.rpl_strategies import hop_options, messages, source_routes

from amistack.mesh.icmpv6 import Icmpv6DecodeError, Icmpv6Message, checksum
from amistack.mesh.rpl.constants import Mop, Ocp
from amistack.mesh.rpl.errors import RplDecodeError, RplRoutingError
from amistack.mesh.rpl.messages import (
    Dao,
    DaoAck,
    Dio,
    Dis,
    DodagConfiguration,
    Pad1,
    PadN,
    PrefixInformation,
    RplMessage,
    RplTarget,
    TransitInformation,
    UnknownOption,
    decode_message,
    from_icmpv6,
    to_icmpv6,
)
from amistack.mesh.rpl.srh import RplHopOption, SourceRoutingHeader


def a(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


ROOT = a("2001:db8::1")
LL1 = a("fe80::1")
LL2 = a("fe80::2")


def test_dio_known_answer_bytes() -> None:
    dio = Dio(
        instance_id=0x1E, version=0xF0, rank=256, dodag_id=ROOT, mop=Mop.NON_STORING,
        grounded=True, preference=0, dtsn=0xF0,
        options=(DodagConfiguration(), PrefixInformation(a("2001:db8::"), 64)),
    )  # fmt: skip
    expected = (
        bytes.fromhex("1e f0 0100 88 f0 0000") + ROOT  # G=1, MOP=1 -> 0b1000_1000
        + bytes.fromhex("040e 00 14 03 0a 0000 0100 0001 00 ff ffff")  # §6.7.6, §17 defaults
        + bytes.fromhex("081e 40 40 ffffffff ffffffff 00000000") + a("2001:db8::")  # §6.7.10
    )  # fmt: skip
    assert dio.encode() == expected
    assert Dio.decode(expected) == dio
    config = Dio.decode(expected).configuration
    assert config is not None and config.ocp == Ocp.MRHOF and config.min_hop_rank_increase == 256


def test_dao_and_ack_known_answer_bytes() -> None:
    dao = Dao(
        0,
        7,
        True,
        ROOT,
        (RplTarget(a("2001:db8::5")), TransitInformation(3, 0xFF, 0, False, a("2001:db8::4"))),
    )
    expected = (
        bytes.fromhex("00 c0 00 07") + ROOT  # K=1, D=1
        + bytes.fromhex("0512 00 80") + a("2001:db8::5")  # §6.7.7: length 2+16
        + bytes.fromhex("0614 00 00 03 ff") + a("2001:db8::4")  # §6.7.8: length 4+16
    )  # fmt: skip
    assert dao.encode() == expected
    assert Dao.decode(expected) == dao
    assert Dao.decode(expected).targets[0].prefix == a("2001:db8::5")
    ack = DaoAck(0, 7, 0)
    assert ack.encode() == bytes.fromhex("00 00 07 00")
    assert DaoAck.decode(bytes.fromhex("00 80 07 81") + ROOT) == DaoAck(0, 7, 0x81, ROOT)


def test_target_prefix_carries_only_the_prefix_octets() -> None:
    target = RplTarget(a("2001:db8:1::"), 48)
    assert target.encode() == bytes.fromhex("0508 00 30 20010db80001")
    assert Dao.decode(b"\x00\x00\x00\x01" + target.encode()).targets == (target,)


def test_padding_and_unknown_options_are_skipped_and_kept() -> None:
    body = bytes.fromhex("0000") + b"\x00" + bytes.fromhex("0103000000") + bytes.fromhex("2a02beef")
    dis = Dis.decode(body)
    assert dis.options == (Pad1(), PadN(3), UnknownOption(0x2A, b"\xbe\xef"))
    assert dis.encode() == body


@given(messages)
def test_every_message_round_trips(message: RplMessage) -> None:
    assert decode_message(message.CODE, message.encode()) == message
    wire = to_icmpv6(message, LL1, LL2)
    assert from_icmpv6(wire, LL1, LL2) == message


def test_icmpv6_checksum_covers_the_pseudo_header() -> None:
    wire = to_icmpv6(Dis(), LL1, LL2)
    assert wire[:2] == bytes((155, 0))
    assert checksum(LL1, LL2, wire) == 0  # a correct checksum sums to zero (RFC 1071)
    with pytest.raises(Icmpv6DecodeError) as err:
        from_icmpv6(wire, LL1, a("fe80::3"))
    assert err.value.offset == 2 and "checksum" in err.value.reason


@pytest.mark.parametrize(
    ("code", "body", "offset", "reason"),
    [
        (0x01, bytes(10), 10, "DIO shorter"),
        (0x02, bytes.fromhex("0040 0001"), 4, "DODAGID truncated"),
        (0x00, bytes.fromhex("0000 0405 0000000000"), 2, "DODAG Configuration length"),
        (0x00, bytes.fromhex("0000 06"), 2, "option header truncated"),
        (0x00, bytes.fromhex("0000 0609 00"), 3, "runs past"),
        (0x00, bytes.fromhex("0000 0502 0081"), 3, "prefix length 129"),
        (0x00, bytes.fromhex("0000 0503 0040 00"), 4, "does not fit"),
        (0x80, b"", 0, "not supported"),
    ],
)
def test_bad_messages_raise_the_typed_error(
    code: int, body: bytes, offset: int, reason: str
) -> None:
    with pytest.raises(RplDecodeError) as err:
        decode_message(code, body)
    assert err.value.offset == offset and reason in err.value.reason


def test_non_rpl_icmp_and_secure_codes_are_rejected() -> None:
    echo = Icmpv6Message(128, 0, b"ping").encode(LL1, LL2)
    with pytest.raises(RplDecodeError, match="not RPL"):
        from_icmpv6(echo, LL1, LL2)
    secure = Icmpv6Message(155, 0x81, bytes(40)).encode(LL1, LL2)
    with pytest.raises(RplDecodeError) as err:
        from_icmpv6(secure, LL1, LL2)
    assert err.value.offset == 1


# ---------------------------------------------------------------- RFC 6554 source routing


def test_srh_elides_the_shared_prefix() -> None:
    hops = [a("2001:db8::a"), a("2001:db8::b"), a("2001:db8::c")]
    dst, srh = SourceRoutingHeader.route(hops)
    assert dst == hops[0] and srh.segments_left == 2
    wire = srh.encode(dst)
    # CmprI = CmprE = 15: one octet per address, 2 octets + 6 pad -> Hdr Ext Len 1
    assert wire == bytes.fromhex("3b 01 03 02 ff 60 0000 0b0c 000000000000")
    assert SourceRoutingHeader.decode(wire, dst) == srh


def test_srh_walk_delivers_along_the_route() -> None:
    hops = [a(f"2001:db8::{i}") for i in range(1, 6)]
    dst, srh = SourceRoutingHeader.route(hops)
    visited = [dst]
    while srh.segments_left:
        dst, srh = SourceRoutingHeader.decode(srh.encode(dst), dst).advance(dst, frozenset({dst}))
        visited.append(dst)
    assert visited == hops


def test_srh_loop_and_multicast_are_refused() -> None:
    me, other = a("2001:db8::1"), a("2001:db8::2")
    loop = SourceRoutingHeader((other, me, other, me, a("2001:db8::9")), 5)
    with pytest.raises(RplRoutingError, match="loop"):
        loop.advance(me, frozenset({me}))
    multicast = SourceRoutingHeader((a("ff02::1"),), 1)
    with pytest.raises(RplRoutingError, match="multicast"):
        multicast.advance(me, frozenset({me}))


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (bytes.fromhex("3b0003"), "shorter"),
        (bytes.fromhex("3b 00 00 00 0000 0000"), "routing type 0"),
        (bytes.fromhex("3b 02 03 00 0000 0000") + bytes(8), "runs past"),
        (bytes.fromhex("3b 01 03 00 0000 0000") + bytes(8), "divide"),
        (bytes.fromhex("3b 02 03 03 0000 0000") + bytes(16), "Segments Left 3"),
    ],
)
def test_bad_srh_raises_the_typed_error(wire: bytes, reason: str) -> None:
    with pytest.raises(RplDecodeError, match=reason):
        SourceRoutingHeader.decode(wire, ROOT)


@given(source_routes())
def test_srh_round_trips(case: tuple[bytes, SourceRoutingHeader]) -> None:
    dst, srh = case
    assert SourceRoutingHeader.decode(srh.encode(dst), dst) == srh


# ---------------------------------------------------------------- RFC 6553 RPL option


def test_rpl_option_in_a_hop_by_hop_header() -> None:
    option = RplHopOption(instance_id=0x1E, sender_rank=0x0200, down=True)
    assert option.encode() == bytes.fromhex("63 04 80 1e 0200")
    hbh = option.to_hop_by_hop(next_header=17)
    assert hbh == bytes.fromhex("11 00 63 04 80 1e 0200")  # exactly 8 octets, no padding
    assert RplHopOption.from_hop_by_hop(hbh) == (option, 17)
    longer = RplHopOption(1, 2, sub_tlvs=b"\x01")
    assert len(longer.to_hop_by_hop()) % 8 == 0
    assert RplHopOption.from_hop_by_hop(longer.to_hop_by_hop())[0] == longer


def test_hop_by_hop_unknown_option_must_not_be_skipped() -> None:
    with pytest.raises(RplDecodeError, match="must not be skipped"):
        RplHopOption.from_hop_by_hop(bytes.fromhex("3b00 c2 04 00000000"))
    skip, nh = RplHopOption.from_hop_by_hop(bytes.fromhex("3b00 1e 04 00000000"))
    assert skip is None and nh == 0x3B


@given(hop_options)
def test_rpl_option_round_trips(option: RplHopOption) -> None:
    assert RplHopOption.decode(option.encode()) == option
    assert RplHopOption.from_hop_by_hop(option.to_hop_by_hop())[0] == option
