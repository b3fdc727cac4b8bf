"""tshark reads our pcap files: IP/UDP headers check out, PANA and EAP dissect cleanly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.conftest import require_tool

from amistack.runtime.pcap import PcapWriter

pytestmark = pytest.mark.interop


def tshark_fields(
    tshark: str, pcap: Path, fields: list[str], *extra: str, display: str | None = None
) -> list[list[str]]:
    cmd = [tshark, "-n", "-r", str(pcap), *extra, "-T", "fields", "-E", "separator=|"]
    if display:
        cmd += ["-Y", display]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("|") for line in out.stdout.splitlines()]


def test_tshark_verifies_synthesised_checksums(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    pcap = tmp_path / "udp.pcap"
    with PcapWriter(pcap) as w:
        w.write(("127.0.0.1", 40000), ("127.0.0.1", 40001), b"x" * 33, 1.0)
        w.write(("::1", 40001), ("::1", 40000), b"y" * 1200, 2.0)
        w.write(("192.0.2.1", 40002), ("198.51.100.2", 40003), b"", 3.0)
    rows = tshark_fields(
        tshark,
        pcap,
        ["ip.version", "ip.checksum.status", "udp.checksum.status", "udp.length", "ip.len"],
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
    )
    # checksum status 1 = good (0 bad, 2 unverified)
    assert rows == [
        ["4", "1", "1", "41", "61"],
        ["6", "", "1", "1208", ""],  # ip.version covers IPv6 too
        ["4", "1", "1", "8", "28"],
    ]


def test_tshark_decodes_pana_codec_output(tmp_path: Path) -> None:
    from amistack.pana.constants import Flag, MessageType
    from amistack.pana.message import PanaMessage

    tshark = require_tool("tshark")
    pcap = tmp_path / "pci.pcap"
    pci = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    par = PanaMessage(MessageType.AUTH, int(Flag.R | Flag.S), 0x1234, 7).encode()
    with PcapWriter(pcap) as w:
        w.write(("127.0.0.1", 50000), ("127.0.0.1", 716), pci, 1.0)
        w.write(("127.0.0.1", 716), ("127.0.0.1", 50000), par, 1.1)
    rows = tshark_fields(tshark, pcap, ["pana.type", "pana.sid", "pana.flags.s", "_ws.malformed"])
    assert [r[:2] for r in rows] == [["1", "0x00000000"], ["2", "0x00001234"]]
    assert all(r[3] == "" for r in rows)
