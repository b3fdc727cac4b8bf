"""tshark reads the mesh's link frames: IEEE 802.15.4 (link types 195 and 230) carrying
6LoWPAN / IPv6 / UDP / C12.22 with 0 malformed, fragments reassembled, and the CCM* payloads
decrypted when tshark is given the key (its `ieee802154_keys` table) -- and not without it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.conftest import require_tool

from amistack.addr import Eui64, PanId, ShortAddr
from amistack.c1222.acse import AcseMessage, ApTitle
from amistack.c1222.epsem import Epsem
from amistack.c1222.services import ReadResult, Response, ResponseCode
from amistack.crypto.ccm_star import SecurityLevel
from amistack.mesh.frame import Frame, FrameType
from amistack.mesh.ipv6 import UdpDatagram
from amistack.mesh.lowpan import fragment
from amistack.mesh.security import LinkSecurity, LinkSecurityConfig, MemoryCounterStore
from amistack.runtime.pcap import (
    LINKTYPE_IEEE802_15_4_NOFCS,
    LINKTYPE_IEEE802_15_4_WITHFCS,
    PcapWriter,
)

pytestmark = pytest.mark.interop

KEY = bytes.fromhex("c0c1c2c3c4c5c6c7c8c9cacbcccdcecf")
TSHARK_KEY = f'uat:ieee802154_keys:"{KEY.hex()}","1","No hash"'
PAN = PanId(0xFACE)
METER = Eui64.parse("02:00:00:00:00:00:00:0a")
ROOT = Eui64.parse("02:00:00:00:00:00:00:01")
C1222_PORT = 1153  # ANSI C12.22 over UDP (IANA)
ROOM = 127 - 2 - 21 - 6 - 8  # aMaxPHYPacketSize - FCS - MHR - aux header - MIC-64


def c1222(data_len: int, inv: int) -> bytes:
    """A C12.22 read response carrying `data_len` octets of table data."""
    table = bytes(i % 251 for i in range(data_len))
    epsem = Epsem((Response(ResponseCode.OK, ReadResult(table).encode()).encode(),))
    return AcseMessage(
        user_information=epsem.encode(),
        called_ap_title=ApTitle.parse("2.16.124.113620.1.22.0.1"),
        calling_ap_title=ApTitle.parse("2.16.124.113620.1.22.1.10"),
        calling_ap_invocation_id=inv,
    ).encode()


def write_capture(path: Path, linktype: int) -> list[int]:
    """The meter's frames to the root: a one-frame read, a four-frame read (fragmented), under
    ENC-MIC-64, one MIC-64 frame and one unsecured broadcast. Returns the frames' lengths."""
    tx = LinkSecurity(METER, MemoryCounterStore())
    tx.install_key(1, KEY)
    mic_only = LinkSecurity(METER, MemoryCounterStore(), LinkSecurityConfig(SecurityLevel.MIC_64))
    mic_only.install_key(1, KEY)
    src, dst = METER.link_local(), ROOT.link_local()
    lengths = []
    seq = 0
    with PcapWriter(path, linktype=linktype) as w:
        for inv, size, sec in ((1, 20, tx), (2, 300, tx), (3, 10, mic_only)):
            packet = UdpDatagram(C1222_PORT, C1222_PORT, c1222(size, inv)).packet(src, dst)
            for payload in fragment(packet, METER, ROOT, tag=inv, room=ROOM):
                frame = Frame(FrameType.DATA, seq, PAN, ROOT, None, METER, payload,
                              pan_id_compression=True, ack_request=True)  # fmt: skip
                raw = sec.protect(frame, 1).encode()
                w.write_frame(raw, 1_700_000_000.0 + seq)
                lengths.append(len(raw))
                seq += 1
        hello = UdpDatagram(C1222_PORT, C1222_PORT, c1222(4, 9)).packet(src, ROOT.link_local())
        bcast = Frame(FrameType.DATA, seq, PAN, ShortAddr(0xFFFF), None, METER,
                      fragment(hello, METER, ShortAddr(0xFFFF), 9, ROOM)[0],
                      pan_id_compression=True)  # fmt: skip
        w.write_frame(bcast.encode(), 1_700_000_000.0 + seq)
        lengths.append(len(bcast.encode()))
    return lengths


def tshark_rows(tshark: str, pcap: Path, fields: list[str], *extra: str) -> list[list[str]]:
    cmd = [tshark, "-n", "-r", str(pcap), *extra, "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("|") for line in out.stdout.splitlines()]


@pytest.mark.parametrize("linktype", [LINKTYPE_IEEE802_15_4_WITHFCS, LINKTYPE_IEEE802_15_4_NOFCS])
def test_tshark_decrypts_and_decodes_every_layer(tmp_path: Path, linktype: int) -> None:
    tshark = require_tool("tshark")
    pcap = tmp_path / "mesh.pcap"
    lengths = write_capture(pcap, linktype)
    assert all(n <= 125 for n in lengths)  # each fits aMaxPHYPacketSize with its FCS
    rows = tshark_rows(
        tshark, pcap, ["frame.protocols", "wpan.src64", "ipv6.src", "udp.srcport",
                       "c1222.calling_AP_invocation_id", "_ws.malformed", "_ws.expert.severity"],
        "-o", TSHARK_KEY,
    )  # fmt: skip
    assert len(rows) == len(lengths) == 1 + 5 + 1 + 1
    for protocols, src64, *_rest, malformed, severity in rows:
        assert protocols.startswith("wpan") and src64 == str(METER), protocols
        assert not malformed and not severity  # no malformed packet, no expert info at all
    complete = [r for r in rows if r[0].endswith("wpan:6lowpan:ipv6:udp:c1222")]
    # the one-frame read, the reassembled read (its last fragment), the MIC-only read, the hello
    assert [r[4] for r in complete] == ["1", "2", "3", "9"]
    assert {r[2] for r in complete} == {str(METER.link_local())}
    assert {r[3] for r in complete} == {str(C1222_PORT)}


def test_without_the_key_tshark_sees_only_ciphertext(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    pcap = tmp_path / "mesh.pcap"
    write_capture(pcap, LINKTYPE_IEEE802_15_4_NOFCS)
    fields = ["frame.protocols", "wpan.aux_sec.sec_level", "wpan.aux_sec.key_index",
              "wpan.aux_sec.frame_counter"]  # fmt: skip
    rows = tshark_rows(tshark, pcap, fields)
    encrypted = [r for r in rows if r[1] == "0x06"]
    assert len(encrypted) == 6
    assert all("c1222" not in r[0] and r[2] == "0x01" for r in encrypted)
    assert [r[3] for r in encrypted] == ["0", "1", "2", "3", "4", "5"]
    # without the key tshark cannot check a MIC-only frame either: it shows only the unsecured one
    assert sum("c1222" in r[0] for r in rows) == 1


def test_a_simulated_radio_capture_decodes(tmp_path: Path) -> None:
    """The simulator's path: MeshLink nodes on the virtual radio, the capture hook writes every
    frame on the air (data, ACKs); tshark with the key reads RPL DIS, C12.22, fragments, ACKs."""
    import ipaddress

    from tests.unit.mesh.mesh_link_harness import GROUP_KEY, mesh, radio_addr

    from amistack.mesh.icmpv6 import Icmpv6Message
    from amistack.mesh.ipv6 import Ipv6Packet

    tshark = require_tool("tshark")
    pcap = tmp_path / "radio.pcap"
    net, (a, b, _c) = mesh([0.0, 50.0, 90.0])
    epoch = 1_700_000_000.0
    with PcapWriter(pcap, linktype=LINKTYPE_IEEE802_15_4_WITHFCS) as w:
        net.capture_hooks.append(lambda t, s, d, frame: w.write_frame(frame, epoch + t))
        src = a.eui.link_local()
        all_rpl_nodes = ipaddress.IPv6Address("ff02::1a")
        dis = Icmpv6Message(155, 0x00, b"\x00\x00").encode(src.packed, all_rpl_nodes.packed)
        a.send(Ipv6Packet(src, all_rpl_nodes, 58, dis, 255), None)
        a.send(UdpDatagram(C1222_PORT, C1222_PORT, c1222(400, 7)).packet(src, b.eui.link_local()),
               b.eui)  # fmt: skip
        net.service(radio_addr(a.eui))
        net.run_until_idle()
    fields = ["frame.protocols", "wpan.frame_type", "_ws.malformed", "_ws.expert.severity"]
    key = f'uat:ieee802154_keys:"{GROUP_KEY.hex()}","1","No hash"'
    rows = tshark_rows(tshark, pcap, fields, "-o", key)
    data = [r for r in rows if int(r[1], 16) == FrameType.DATA]
    acks = [r for r in rows if int(r[1], 16) == FrameType.ACK]
    assert len(data) >= 6 and len(acks) == len(data) - 1  # every unicast frame acknowledged
    assert data[0][0].endswith("ipv6:icmpv6") and data[-1][0].endswith("udp:c1222")
    assert not any(r[2] or r[3] for r in rows)
