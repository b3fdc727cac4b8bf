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


def _capture_authentication(pcap: Path, host: str) -> tuple[int, int]:
    """A real PaC <-> PAA authentication over loopback sockets, both ends captured."""
    import asyncio

    from amistack.bench.auth import bench_key_server_engine, bench_psk
    from amistack.runtime.loop import new_event_loop
    from amistack.runtime.meter import run_meter
    from amistack.runtime.udp import EngineDriver

    async def main() -> tuple[int, int]:
        with PcapWriter(pcap) as w:
            # the PAA's hook sees every datagram of the exchange, in and out
            async with EngineDriver(bench_key_server_engine(2), capture=w.capture) as server:
                paa = await server.bind(host, 0)
                result = await run_meter("bench-meter-00001", bench_psk(1), paa, once=True)
                assert result.ok, result.reason
                await asyncio.sleep(0.05)  # the last PAN
                return paa[1], w.count

    loop = new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), 20))
    finally:
        loop.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tshark_decodes_real_pana_eap_psk_authentication(tmp_path: Path, host: str) -> None:
    tshark = require_tool("tshark")
    pcap = tmp_path / "auth.pcap"
    port, written = _capture_authentication(pcap, host)
    assert written >= 9  # PCI, 4 PAR/PAN pairs at least
    decode_as = ["-d", f"udp.port=={port},pana"]
    rows = tshark_fields(
        tshark,
        pcap,
        [
            "frame.number",
            "udp.port",
            "pana.type",
            "pana.flags",
            "eap.code",
            "eap.type",
            "_ws.malformed",
            "_ws.expert.severity",
        ],
        *decode_as,
        "-o",
        "udp.check_checksum:TRUE",
    )
    assert len(rows) == written
    # every datagram on the PANA port is decoded as PANA, none malformed
    for row in rows:
        frame, _ports, pana_type, _flags, _code, _etype, malformed, _severity = row
        assert pana_type != "", f"frame {frame} not dissected as PANA: {row}"
        assert malformed == "", f"frame {frame} malformed: {row}"
    undecoded = tshark_fields(
        tshark, pcap, ["frame.number"], *decode_as, display=f"udp.port=={port} && !pana"
    )
    assert undecoded == []
    assert tshark_fields(tshark, pcap, ["frame.number"], *decode_as, display="_ws.malformed") == []
    # EAP inside PANA: Request/Identity? EAP-PSK (type 47) requests and responses, then Success
    eap = [(r[4], r[5]) for r in rows if r[4]]
    codes = {c for c, _ in eap}
    assert {"1", "2", "3"} <= codes, eap
    assert ("1", "47") in eap and ("2", "47") in eap, eap
    assert eap[-1][0] == "3"  # EAP-Success last
    # tshark's PANA type 1 = PCI first, then Auth (2) messages
    assert rows[0][2] == "1"
    assert {r[2] for r in rows[1:]} == {"2"}
