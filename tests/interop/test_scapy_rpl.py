"""Our RPL encodings against an independent implementation, scapy (`scapy.contrib.rpl`,
`scapy.layers.inet6`): scapy parses our bytes to the same field values, we parse scapy-built
bytes to the same messages, and both compute the same ICMPv6 checksum."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from tests.conftest import IN_CI

from amistack.mesh.rpl.constants import Mop
from amistack.mesh.rpl.messages import (
    Dao,
    DaoAck,
    Dio,
    Dis,
    DodagConfiguration,
    PadN,
    PrefixInformation,
    RplTarget,
    SolicitedInformation,
    TransitInformation,
    from_icmpv6,
    to_icmpv6,
)
from amistack.mesh.rpl.srh import RplHopOption, SourceRoutingHeader

try:
    from scapy.contrib import rpl as srpl
    from scapy.layers import inet6
except ImportError:  # pragma: no cover - depends on the environment
    if IN_CI:
        pytest.fail("interop peer scapy is not installed (pip install -e .[dev])", pytrace=False)
    pytest.skip("interop peer scapy is not installed", allow_module_level=True)

pytestmark = pytest.mark.interop

SRC, DST = "fe80::1", "ff02::1a"
ROOT = "2001:db8::1"


def a(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def scapy_icmp(layers: Any) -> bytes:
    """The ICMPv6 bytes of IPv6(SRC->DST)/ICMPv6RPL/layers as scapy builds them."""
    packet = inet6.IPv6(src=SRC, dst=DST) / layers
    return bytes(packet)[40:]


def scapy_options(message: Any) -> dict[type, Any]:
    """The options after an RPL message layer, by scapy class. Each option is cut at its own
    Option Length and handed alone to the class RPLOPTS names for its type: scapy's RPL Target
    and Transit Information read their prefix as 8 * (len - 1) octets (the RFC 4191 rule, not
    RFC 6550 §6.7.7's octet count), so a greedy dissection runs into the next option."""
    found: dict[type, Any] = {}
    rest = bytes(message.payload)
    while rest:
        size = 1 if rest[0] == 0 else 2 + rest[1]
        option = srpl.RPLOPTS[rest[0]](rest[:size])
        found[type(option)] = option
        rest = rest[size:]
    return found


def parse_ours_with_scapy(wire: bytes) -> Any:
    return inet6.IPv6(bytes(inet6.IPv6(src=SRC, dst=DST, nh=58, plen=len(wire))) + wire)


def test_dio_with_configuration_and_prefix() -> None:
    dio = Dio(
        instance_id=30, version=2, rank=512, dodag_id=a(ROOT), mop=Mop.STORING_NO_MULTICAST,
        grounded=True, preference=5, dtsn=9,
        options=(
            DodagConfiguration(True, 3, 8, 12, 3, 2048, 128, 0, 30, 60),
            PrefixInformation(a("2001:db8::"), 64, True, True, False, 3600, 1800),
        ),
    )  # fmt: skip
    ours = to_icmpv6(dio, a(SRC), a(DST))
    theirs = scapy_icmp(
        inet6.ICMPv6RPL(code=1)
        / srpl.RPLDIO(RPLInstanceID=30, ver=2, rank=512, G=1, mop=2, prf=5, dtsn=9, dodagid=ROOT)
        / srpl.RPLOptDODAGConfig(
            A=1,
            PCS=3,
            DIOIntDoubl=8,
            DIOIntMin=12,
            DIORedun=3,
            MaxRankIncrease=2048,
            MinRankIncrease=128,
            OCP=0,
            DefLifetime=30,
            LifetimeUnit=60,
        )
        / srpl.RPLOptPIO(
            plen=64, L=1, A=1, R=0, validlifetime=3600, preflifetime=1800, prefix="2001:db8::"
        )
    )
    assert ours == theirs  # same bytes, same checksum
    parsed = parse_ours_with_scapy(ours)
    got = parsed[srpl.RPLDIO]
    assert (got.RPLInstanceID, got.ver, got.rank, got.G, got.mop, got.prf, got.dtsn) == (
        30, 2, 512, 1, 2, 5, 9,
    )  # fmt: skip
    assert got.dodagid == ROOT
    options = scapy_options(got)
    conf = options[srpl.RPLOptDODAGConfig]
    assert (conf.A, conf.PCS, conf.DIOIntDoubl, conf.DIOIntMin, conf.DIORedun) == (1, 3, 8, 12, 3)
    assert (conf.MaxRankIncrease, conf.MinRankIncrease, conf.OCP) == (2048, 128, 0)
    pio = options[srpl.RPLOptPIO]
    assert (pio.plen, pio.L, pio.A, pio.validlifetime, pio.prefix) == (64, 1, 1, 3600, "2001:db8::")
    assert from_icmpv6(theirs, a(SRC), a(DST)) == dio


def test_dao_with_target_and_transit() -> None:
    dao = Dao(
        instance_id=30, sequence=17, ack_requested=True, dodag_id=a(ROOT),
        options=(
            RplTarget(a("2001:db8::42")),
            TransitInformation(4, 0x1E, 0, False, a("2001:db8::7")),
        ),
    )  # fmt: skip
    ours = to_icmpv6(dao, a(SRC), a(ROOT))
    parsed = inet6.IPv6(bytes(inet6.IPv6(src=SRC, dst=ROOT, nh=58, plen=len(ours))) + ours)
    got = parsed[srpl.RPLDAO]
    assert (got.RPLInstanceID, got.K, got.D, got.daoseq, got.dodagid) == (30, 1, 1, 17, ROOT)
    options = scapy_options(got)
    assert options[srpl.RPLOptTgt].prefix == "2001:db8::42"
    assert options[srpl.RPLOptTgt].plen == 128
    tio = options[srpl.RPLOptTIO]
    assert (tio.pathseq, tio.pathlifetime, tio.parentaddr) == (4, 0x1E, "2001:db8::7")
    theirs = bytes(
        inet6.IPv6(src=SRC, dst=ROOT)
        / inet6.ICMPv6RPL(code=2)
        / srpl.RPLDAO(RPLInstanceID=30, K=1, D=1, daoseq=17, dodagid=ROOT)
        / srpl.RPLOptTgt(plen=128, prefix="2001:db8::42")
        / srpl.RPLOptTIO(pathseq=4, pathlifetime=0x1E, parentaddr="2001:db8::7")
    )[40:]
    assert ours == theirs
    assert from_icmpv6(theirs, a(SRC), a(ROOT)) == dao


def test_dao_ack_dis_and_padding() -> None:
    ack = DaoAck(30, 17, 0x80, a(ROOT))
    theirs = scapy_icmp(
        inet6.ICMPv6RPL(code=3)
        / srpl.RPLDAOACK(RPLInstanceID=30, D=1, daoseq=17, status=0x80, dodagid=ROOT)
    )
    assert to_icmpv6(ack, a(SRC), a(DST)) == theirs
    assert from_icmpv6(theirs, a(SRC), a(DST)) == ack
    dis = Dis((PadN(2), SolicitedInformation(30, a(ROOT), 2, True, True, False)))
    theirs = scapy_icmp(
        inet6.ICMPv6RPL(code=0)
        / srpl.RPLDIS()
        / srpl.RPLOptPadN(optdata=b"\x00\x00")
        / srpl.RPLOptSolInfo(RPLInstanceID=30, V=1, I=1, D=0, dodagid=ROOT, ver=2)
    )
    assert to_icmpv6(dis, a(SRC), a(DST)) == theirs
    assert from_icmpv6(theirs, a(SRC), a(DST)) == dis


def test_rpl_option_in_hop_by_hop_matches_scapy() -> None:
    option = RplHopOption(instance_id=30, sender_rank=768, down=True, rank_error=True)
    theirs = bytes(
        inet6.IPv6ExtHdrHopByHop(
            nh=17, options=[inet6.RplOption(Down=1, RankError=1, RplInstanceId=30, SenderRank=768)]
        )
    )
    assert option.to_hop_by_hop(next_header=17) == theirs
    parsed = inet6.IPv6ExtHdrHopByHop(option.to_hop_by_hop(next_header=17))
    got = parsed.options[0]
    assert (got.Down, got.RankError, got.ForwardError, got.SenderRank) == (1, 1, 0, 768)


def test_uncompressed_srh_matches_scapy_routing_header() -> None:
    # a destination sharing no prefix with the hops: CmprI = CmprE = 0, Pad 0, which is
    # exactly scapy's generic Routing header layout with type 3
    hops = [a("2001:db8::2"), a("2001:db8::3"), a("2001:db8::4")]
    srh = SourceRoutingHeader(tuple(hops), 2, next_header=17)
    dst = a("fe80::9")
    theirs = bytes(
        inet6.IPv6ExtHdrRouting(
            nh=17, type=3, segleft=2, addresses=["2001:db8::2", "2001:db8::3", "2001:db8::4"]
        )
    )
    assert srh.encode(dst) == theirs
    parsed = inet6.IPv6ExtHdrRouting(srh.encode(dst))
    assert parsed.addresses == ["2001:db8::2", "2001:db8::3", "2001:db8::4"] and parsed.segleft == 2
    assert SourceRoutingHeader.decode(theirs, dst) == srh
