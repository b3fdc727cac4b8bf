"""tshark reads the B route as it is on the air: the demo's `broute.pcap` (IEEE 802.15.4, link
type 230) decodes as wpan / 6lowpan / IPv6 / UDP / PANA, and, with the link key the demo writes
beside it, as wpan / 6lowpan / IPv6 / UDP / ECHONET Lite (a minimal Lua dissector: Wireshark 4.0
has none), with 0 malformed packets; without the key the secured frames stay ciphertext."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from tests.conftest import require_tool

from amistack.cli.demo_broute import KEYS_FILE, chapter_broute

pytestmark = pytest.mark.interop

LUA = Path(__file__).parent / "wireshark" / "echonet_lite.lua"
FIELDS = ["frame.protocols", "udp.dstport", "echonet_lite.esv", "_ws.malformed"]


def rows(tshark: str, pcap: Path, *extra: str) -> list[list[str]]:
    cmd = [tshark, "-n", "-r", str(pcap), "-X", f"lua_script:{LUA}", *extra, "-T", "fields",
           "-E", "separator=|"] + [a for f in FIELDS for a in ("-e", f)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.split("|") for line in out.splitlines()]


def test_broute_pcap_decodes_as_802154_6lowpan_udp_echonet_lite(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    report = asyncio.run(chapter_broute(tmp_path))
    assert report.secured_frames > 0 and report.pana_frames > 0 and report.clear_frames == 0
    pcap = tmp_path / "broute.pcap"
    key = (tmp_path / KEYS_FILE).read_text().strip()
    decoded = rows(tshark, pcap, "-o", f"uat:ieee802154_keys:{key}")
    assert len(decoded) == report.secured_frames + report.pana_frames
    for protocols, port, esv, malformed in decoded:
        assert not malformed, protocols
        assert protocols.startswith("wpan:6lowpan:ipv6:udp:")
        if port == "716":
            assert ":udp:pana" in protocols
        else:
            assert port == "3610" and protocols.endswith(":echonet_lite") and esv
    echonet = [r for r in decoded if r[1] == "3610"]
    assert len(echonet) == report.secured_frames
    assert {"0x62", "0x72"} <= {r[2] for r in echonet}  # Get and Get_Res at least
    # without the key: PANA still reads, the ECHONET Lite frames are ciphertext
    blind = rows(tshark, pcap)
    assert sum(r[0] == "wpan:data" for r in blind) == report.secured_frames
    assert not any(r[3] for r in blind)
