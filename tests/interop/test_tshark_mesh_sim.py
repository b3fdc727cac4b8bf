"""`amistack sim mesh --pcap`: the whole mesh's radio frames as tshark reads them -- 802.15.4
with FCS carrying 6LoWPAN / IPv6 / ICMPv6 RPL (with its hop-by-hop and routing headers) / UDP /
PANA (EAP inside, relayed or not), 0 malformed, no warnings, every secured frame decrypted with
the group key the command prints, and ciphertext only without it; the capture is bounded."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from tests.conftest import require_tool

from amistack.cli.main import main

pytestmark = pytest.mark.interop


def protocols(tshark: str, pcap: Path, *options: str) -> Counter[str]:
    cmd = [tshark, "-n", "-r", str(pcap), *options, "-T", "fields", "-e", "frame.protocols"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    return Counter(out.split())


def test_a_whole_mesh_capture_decodes_and_decrypts_with_the_group_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tshark = require_tool("tshark")
    pcap = tmp_path / "mesh.pcap"
    assert main(["sim", "mesh", "--nodes", "12", "--seed", "3", "--json", "--pcap", str(pcap)]) == 0
    report = json.loads(capsys.readouterr().out)
    keys = report["pcap"]["wireshark_keys"]
    assert keys and report["pcap"]["frames"] > 100
    contexts = report["pcap"]["wireshark_contexts"]  # IPHC context 0: the DODAG's prefix
    options = [arg for key in keys + contexts for arg in ("-o", key)]
    seen = protocols(tshark, pcap, *options)
    assert sum(seen.values()) == report["pcap"]["frames"]
    layers = {layer for stack in seen for layer in stack.split(":")}
    assert {"wpan", "6lowpan", "ipv6", "icmpv6", "udp", "pana", "eap"} <= layers
    assert {"ipv6.hopopts", "ipv6.routing"} <= layers  # RPL's data-path headers, decrypted
    assert "wpan:data" not in seen  # every secured frame opened with the group key
    check = [tshark, "-n", "-r", str(pcap), *options, "-Y",
             "_ws.malformed || _ws.expert.severity >= warning"]  # fmt: skip
    bad = subprocess.run(check, capture_output=True, text=True, check=True, timeout=60).stdout
    assert bad.strip() == ""
    # without the key: the newcomers' PANA and the join beacons are in the clear, the rest is not
    blind = protocols(tshark, pcap)
    assert blind["wpan:data"] > 0
    blind_layers = {layer for stack in blind for layer in stack.split(":")}
    assert "ipv6.routing" not in blind_layers and "pana" in blind_layers


def test_the_capture_is_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tshark = require_tool("tshark")
    pcap = tmp_path / "mesh.pcap"
    argv = ["sim", "mesh", "--nodes", "5", "--pcap", str(pcap), "--pcap-limit", "40"]
    assert main(argv) == 0
    assert "pcap: 40 frames; tshark -r" in capsys.readouterr().out
    assert sum(protocols(tshark, pcap).values()) == 40
    assert main([*argv[:-1], "0"]) == 2


def test_the_demo_chapter_capture_decrypts_under_both_keys_of_the_rotation(tmp_path: Path) -> None:
    """The demo's capture spans a group-key rotation: with the two keys it prints, tshark opens
    every secured frame, with 0 malformed."""
    from amistack.cli.demo_mesh import chapter_mesh

    tshark = require_tool("tshark")
    report = chapter_mesh(tmp_path)
    assert report.pcap is not None and len(report.wireshark_keys) == 2
    both = report.wireshark_keys + report.wireshark_contexts
    options = [arg for key in both for arg in ("-o", key)]
    seen = protocols(tshark, Path(report.pcap), *options)
    assert "wpan:data" not in seen and any("pana" in stack for stack in seen)
    only_first = protocols(tshark, Path(report.pcap), "-o", report.wireshark_keys[0])
    assert only_first["wpan:data"] > 0  # the frames after the rotation need the second key
    check = [tshark, "-n", "-r", report.pcap, *options, "-Y", "_ws.malformed"]
    assert subprocess.run(check, capture_output=True, text=True, timeout=60).stdout.strip() == ""


def test_c1222_over_the_mesh_decodes_and_verifies_with_the_meters_key(tmp_path: Path) -> None:
    """With C12.22 over the mesh, tshark (given the group key) reassembles the 6LoWPAN
    fragments and decodes the head-end's reads and the meters' answers as C12.22, and, given
    one meter's UKMF C12.22 key, verifies that meter's EAX' both ways; 0 malformed."""
    from amistack.c1222.security import key_id_byte
    from amistack.keymgmt.ukmf import C1222
    from amistack.runtime.pcap import LINKTYPE_IEEE802_15_4_WITHFCS, PcapWriter
    from amistack.sim.mesh import MeshConfig, build_mesh

    tshark = require_tool("tshark")
    pcap = tmp_path / "mesh-c1222.pcap"
    sim = build_mesh(MeshConfig(nodes=12, seed=3, c1222=True))
    writer = PcapWriter(pcap, linktype=LINKTYPE_IEEE802_15_4_WITHFCS)
    sim.on_radio_frame(lambda t, frame: writer.write_frame(frame, 1_700_000_000.0 + t), 100_000)
    assert sim.run(300.0)
    assert sim.read_all(120.0)["delivery_ratio"] == 1.0
    writer.close()
    meter = sim.c1222[0]
    key = meter.meter.ring.current(C1222, sim.net.now)
    addr = sim.c1222_addr(1)
    assert key is not None and addr is not None
    options = [arg for k in sim.wireshark_keys() + sim.wireshark_contexts() for arg in ("-o", k)]
    options += ["-o", "c1222.baseoid:2.16.124.113620.1.22",
                "-o", f'uat:c1222_decryption_table:"{key_id_byte(key.key_id):02x}",'
                f"{key.key.hex()}"]  # fmt: skip
    seen = protocols(tshark, pcap, *options)
    assert sum(n for stack, n in seen.items() if stack.endswith("udp:c1222")) >= 2 * 12
    # from the meter, or to it as the final destination (a source-routed packet passing through
    # it on the way to a deeper meter carries that meter's message, under that meter's key)
    mine = (f"c1222 && (ipv6.src == {addr[0]} || (ipv6.dst == {addr[0]} && "
            "(!ipv6.routing || ipv6.routing.segleft == 0)))")  # fmt: skip
    cmd = [tshark, "-n", "-r", str(pcap), *options, "-Y", mine,
           "-T", "fields", "-e", "c1222.crypto_good", "-e", "c1222.crypto_bad"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) >= 2 and all(row == ["1", "0"] for row in rows)  # request and answer
    check = [tshark, "-n", "-r", str(pcap), *options, "-Y", "_ws.malformed"]
    bad = subprocess.run(check, capture_output=True, text=True, check=True, timeout=60).stdout
    assert bad.strip() == ""
