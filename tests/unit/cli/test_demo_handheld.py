"""The demo's handheld chapter (chapter 7): an isolated area joins through the handheld, is read
and switched; after the logout the handheld's data dir holds no PSK, key or reading; the lost
handheld is revoked and shut out; an offline work order runs, syncs once and is destroyed."""

from __future__ import annotations

from pathlib import Path

from amistack.cli.demo_handheld import METERS, chapter_handheld


def test_the_handheld_chapter_tells_its_story(tmp_path: Path) -> None:
    report = chapter_handheld(tmp_path)
    assert report.ok(), report.lines()
    assert report.isolated.startswith("no meter authenticated")
    assert report.joined.startswith(f"{METERS}/{METERS}")
    assert report.read.startswith(f"{METERS}/{METERS}")
    assert report.disconnect.endswith("relay disconnected")
    assert report.reconnect.endswith("relay connected")
    # every file the handheld wrote was searched, for every kind of secret and the readings
    assert report.data_dir.startswith("none found (")
    for kind in ("PSKs", "MSKs", "PANA keys", "C12.22 keys", "readings"):
        assert f"{METERS} {kind}" in report.data_dir
    assert (tmp_path / "handheld").is_dir() and any((tmp_path / "handheld").iterdir())
    assert report.shut_out_s is not None and report.shut_out_s < 1.0
    assert report.revoked_again.startswith("refused")
    assert f"{METERS}/{METERS} meters joined" in report.offline
    assert "a second sync added 0" in report.synced
    assert f"{METERS} meters marked for PSK rotation" in report.synced
    assert report.destroyed.startswith("gone") and "none found" in report.destroyed
    assert not (tmp_path / "handheld" / "readings.db").exists()
    assert not list((tmp_path / "handheld" / "orders").iterdir())
    assert any("software variants" in line for line in report.lines())
