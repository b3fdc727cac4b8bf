"""tshark decrypts a mesh capture with the options `amistack keys group-keys --tshark` prints:
frames under the PAN's current group key (index 1) and under the next one (index 2), each by
its key index, and neither without them (docs/mesh-keys.md, "Giving Wireshark / tshark")."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest
from tests.cli import run_keys
from tests.conftest import require_tool
from tests.interop.test_tshark_mesh_link import C1222_PORT, METER, ROOT, c1222, tshark_rows

from amistack.addr import PanId
from amistack.cli.common import open_store
from amistack.mesh.frame import Frame, FrameType
from amistack.mesh.ipv6 import UdpDatagram
from amistack.mesh.lowpan import fragment
from amistack.mesh.security import LinkSecurity, MemoryCounterStore
from amistack.runtime.keyserver import build_key_server
from amistack.runtime.pcap import LINKTYPE_IEEE802_15_4_NOFCS, PcapWriter

pytestmark = pytest.mark.interop

PAN_ID = 0xFACE


def test_tshark_decrypts_with_the_printed_group_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tshark = require_tool("tshark")
    d = tmp_path / "data"
    now = time.time()
    with open_store(d, create=True) as store:
        server = build_key_server(store, now=now, mesh_pan=PAN_ID)
        manager = server.group_keys
        assert manager is not None
        manager.rotate(PAN_ID, now, "test")  # a second live key (index 2)
        manager.handle_timer(now + manager.config.rotation_delay)
        keys = manager.keys(PAN_ID)
    assert [k.index for k in keys] == [1, 2]
    code, out, _ = run_keys(capsys, d, "group-keys", "--pan", "0xface", "--tshark")
    assert code == 0
    options = [word for line in out.splitlines() for word in shlex.split(line)]
    assert options.count("-o") == 2

    pcap = tmp_path / "mesh.pcap"
    tx = LinkSecurity(METER, MemoryCounterStore())
    for k in keys:
        tx.install_key(k.index, k.key)
    src, dst = METER.link_local(), ROOT.link_local()
    with PcapWriter(pcap, linktype=LINKTYPE_IEEE802_15_4_NOFCS) as w:
        for seq, k in enumerate(keys):
            packet = UdpDatagram(C1222_PORT, C1222_PORT, c1222(8, seq + 1)).packet(src, dst)
            (payload,) = fragment(packet, METER, ROOT, tag=seq, room=90)
            frame = Frame(FrameType.DATA, seq, PanId(PAN_ID), ROOT, None, METER, payload,
                          pan_id_compression=True)  # fmt: skip
            w.write_frame(tx.protect(frame, k.index).encode(), 1_700_000_000.0 + seq)
    fields = ["frame.protocols", "wpan.aux_sec.key_index", "c1222.calling_AP_invocation_id",
              "_ws.malformed"]  # fmt: skip
    rows = tshark_rows(tshark, pcap, fields, *options)
    assert [(r[1], r[2], r[3]) for r in rows] == [("0x01", "1", ""), ("0x02", "2", "")]
    assert all(r[0].endswith("udp:c1222") for r in rows)
    assert not any("c1222" in r[0] for r in tshark_rows(tshark, pcap, fields))
