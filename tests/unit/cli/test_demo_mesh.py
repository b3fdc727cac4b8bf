"""The demo's mesh chapter (chapter 6): fifty meters join through relays on the virtual clock; a
wrong PSK refused through relays, a replay dropped, a dead parent's subtree re-parented, a
revoked meter shut out of the rotated group key, the radio capture written."""

from __future__ import annotations

from pathlib import Path

from amistack.cli.demo_mesh import METERS, chapter_mesh
from amistack.runtime.pcap import LINKTYPE_IEEE802_15_4_WITHFCS


def test_the_mesh_chapter_tells_its_story(tmp_path: Path) -> None:
    report = chapter_mesh(tmp_path)
    assert report.ok(), report.lines()
    assert report.joined.startswith(f"{METERS - 1}/{METERS - 1} relay-ready")
    assert "through its relays" in report.wrong_psk and "never keyed" in report.wrong_psk
    assert report.replay.startswith("dropped by the receiver")
    assert report.revoked.startswith("shut out")
    assert len(report.wireshark_keys) == 2  # the key before the rotation and the one after
    pcap = Path(report.pcap or "")
    header = pcap.read_bytes()[:24]
    assert int.from_bytes(header[20:24], "little") == LINKTYPE_IEEE802_15_4_WITHFCS
    assert pcap.stat().st_size > 10_000
    assert any("tshark -r" in line for line in report.lines())
