"""tshark's RPL dissectors read our bytes: DIS/DIO/DAO/DAO-ACK with their options, the RPL
Option in a Hop-by-Hop header (RFC 6553) and a compressed Source Routing Header (RFC 6554),
with good ICMPv6 checksums and nothing malformed."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from tests.conftest import IN_CI, require_tool

from amistack.mesh.rpl.config import WSBRD_SMALL
from amistack.mesh.rpl.constants import ALL_RPL_NODES, Mop
from amistack.mesh.rpl.messages import (
    Dao,
    DaoAck,
    Dio,
    Dis,
    PrefixInformation,
    RplTarget,
    TransitInformation,
    to_icmpv6,
)
from amistack.mesh.rpl.srh import RplHopOption, SourceRoutingHeader

try:
    from scapy.layers.inet6 import IPv6
    from scapy.utils import wrpcap
except ImportError:  # pragma: no cover - depends on the environment
    if IN_CI:
        pytest.fail("scapy (pcap writing) is not installed (pip install -e .[dev])", pytrace=False)
    pytest.skip("scapy is not installed", allow_module_level=True)

pytestmark = pytest.mark.interop

PREFIX = bytes.fromhex("20010db8000000000000000000000000")
ROOT_LL = bytes.fromhex("fe800000000000000000000000000001")
ROOT = PREFIX[:8] + ROOT_LL[8:]
NODE_LL = bytes.fromhex("fe800000000000000000000000000005")
NODE = PREFIX[:8] + NODE_LL[8:]
ICMPV6, HOP_BY_HOP, ROUTING = 58, 0, 43


def ipv6(src: bytes, dst: bytes, next_header: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, 64, src, dst) + payload


def packets() -> list[bytes]:
    config = WSBRD_SMALL.dodag_configuration()
    options = (config, PrefixInformation(PREFIX, 64))
    dio = Dio(0, 240, 256, ROOT, Mop.NON_STORING, dtsn=241, options=options)
    parent = PREFIX[:8] + bytes(7) + b"\x04"
    dao = Dao(0, 7, True, ROOT, (RplTarget(NODE), TransitInformation(3, 120, parent=parent)))
    ack = DaoAck(0, 7, 0, ROOT)
    hop = RplHopOption(0, sender_rank=1024).to_hop_by_hop(next_header=ICMPV6)
    hops = [PREFIX[:8] + bytes(7) + bytes([k]) for k in (2, 3, 4)] + [NODE]
    first, srh = SourceRoutingHeader.route(hops, next_header=ICMPV6)
    return [
        ipv6(NODE_LL, ALL_RPL_NODES, ICMPV6, to_icmpv6(Dis(), NODE_LL, ALL_RPL_NODES)),
        ipv6(ROOT_LL, ALL_RPL_NODES, ICMPV6, to_icmpv6(dio, ROOT_LL, ALL_RPL_NODES)),
        ipv6(NODE, ROOT, HOP_BY_HOP, hop + to_icmpv6(dao, NODE, ROOT)),
        # the ICMPv6 checksum covers the final destination (RFC 8200 §8.1), not hop 1
        ipv6(ROOT, first, ROUTING, srh.encode(first) + to_icmpv6(ack, ROOT, NODE)),
    ]


def tshark_fields(tshark: str, pcap: Path, fields: list[str]) -> list[list[str]]:
    cmd = [tshark, "-n", "-r", str(pcap), "-T", "fields",
           "-E", "separator=|", "-E", "aggregator=,"]  # fmt: skip
    for field in fields:
        cmd += ["-e", field]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("|") for line in out.stdout.splitlines()]


FIELDS = [
    "icmpv6.code", "icmpv6.checksum.status", "_ws.malformed",
    "icmpv6.rpl.dio.rank", "icmpv6.rpl.dio.version", "icmpv6.rpl.dio.flag.mop",
    "icmpv6.rpl.dio.dtsn", "icmpv6.rpl.dio.dagid", "icmpv6.rpl.opt.config.interval_min",
    "icmpv6.rpl.opt.config.min_hop_rank_inc", "icmpv6.rpl.opt.config.max_rank_inc",
    "icmpv6.rpl.opt.prefix",
    "ipv6.opt.rpl.flag.o", "ipv6.opt.rpl.sender_rank", "icmpv6.rpl.dao.flag.k",
    "icmpv6.rpl.dao.sequence", "icmpv6.rpl.opt.target.prefix",
    "icmpv6.rpl.opt.transit.pathseq", "icmpv6.rpl.opt.transit.parent",
    "ipv6.routing.type", "ipv6.routing.segleft", "ipv6.routing.rpl.cmprI",
    "ipv6.routing.rpl.full_address", "icmpv6.rpl.daoack.sequence",
]  # fmt: skip


def test_tshark_dissects_our_rpl_traffic(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    pcap = tmp_path / "rpl.pcap"
    wrpcap(str(pcap), [IPv6(p) for p in packets()])
    rows = [dict(zip(FIELDS, row, strict=True)) for row in tshark_fields(tshark, pcap, FIELDS)]
    # every message: the right code, a good checksum, nothing malformed
    assert [(r["icmpv6.code"], r["icmpv6.checksum.status"], r["_ws.malformed"]) for r in rows] == [
        ("0", "1", ""), ("1", "1", ""), ("2", "1", ""), ("3", "1", ""),
    ]  # fmt: skip
    dio, dao, ack = rows[1], rows[2], rows[3]

    def num(row: dict[str, str], field: str) -> int:
        return int(row[field], 0)  # tshark prints some fields in hex

    assert [num(dio, f) for f in FIELDS[3:7]] == [256, 240, Mop.NON_STORING, 241]
    assert [dio[f] for f in FIELDS[7:12]] == ["2001:db8::1", "15", "196", "2048", "2001:db8::"]
    assert [num(dao, f) for f in FIELDS[12:16]] == [0, 1024, 1, 7]
    assert [dao[f] for f in FIELDS[16:19]] == ["2001:db8::5", "3", "2001:db8::4"]
    assert [ack[f] for f in FIELDS[19:24]] == [
        "3", "3", "15", "2001:db8::3,2001:db8::4,2001:db8::5", "7",
    ]  # fmt: skip
