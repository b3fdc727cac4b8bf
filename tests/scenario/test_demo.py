"""The front door: `amistack demo` tells its whole story and its pcap dissects cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_tool


def test_demo_story_and_capture(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "amistack.cli.main",
            "demo",
            "--meters",
            "6",
            "--data-dir",
            str(tmp_path / "demo"),
            "--pcap",
            str(tmp_path / "pcap"),
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    doc = json.loads(report.read_text())
    assert doc["ok"] and len(doc["key_generations"]) == 6
    assert all(len(gens) >= 3 for gens in doc["key_generations"].values())  # two rotations
    assert all(doc["keys_match"].values())
    assert doc["wrong_psk"].startswith("refused")
    assert doc["revoked_again"].startswith("refused")
    assert doc["audit"]["revoke"] == 1 and doc["audit"]["auth-failure"] >= 2
    assert set(doc["eventlog"].values()) == {"accepted"} and len(doc["eventlog"]) == 3
    assert doc["eventlog_edited_entry"] == "edited-entry"
    assert doc["eventlog_rollback"] == "rollback"
    logs = sorted((tmp_path / "demo" / "meters").glob("*/events.log"))
    assert len(logs) == 3  # the demo leaves a few meters' logs in its data directory

    tshark = require_tool("tshark")
    pcap = tmp_path / "pcap" / "pana.pcap"
    port = next(line for line in run.stdout.splitlines() if "udp.port==" in line)
    port = port.split("udp.port==")[1].split(",")[0]
    out = subprocess.run(
        [
            tshark,
            "-r",
            str(pcap),
            "-d",
            f"udp.port=={port},pana",
            "-T",
            "fields",
            "-e",
            "frame.protocols",
            "-e",
            "_ws.malformed",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert len(out) > 100
    assert not [line for line in out if "malformed" in line or line.split("\t")[-1]]
    assert all(":pana" in line for line in out), "a datagram on the PANA port was not PANA"
    assert any(":eap" in line for line in out)
