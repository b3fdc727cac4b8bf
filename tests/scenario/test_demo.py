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
    assert min(doc["metering_readings"].values()) >= 4
    assert doc["demand_response"].startswith("confirmed")
    assert doc["disconnect"] == "confirmed, relay read back open"
    assert doc["reconnect"] == "confirmed, relay read back closed"
    b = doc["broute"]  # chapter 4: the HEMS on the B route
    assert b["wrong_password"].startswith("refused") and b["link_up"].startswith("PANA")
    assert b["e5"] == "set" and b["history_day"] == 1 and b["history_matches"]
    assert b["power_w"] is not None and b["secured_frames"] > 0 and b["clear_frames"] == 0
    assert (tmp_path / "pcap" / "broute.pcap").stat().st_size > 0
    f = doc["fleet"]  # chapter 5: the fleet simulator with the real engines
    assert f["complete"] and f["blackout"]["with_backoff"]["reauthenticated"] == 50
    assert all(Path(r).read_bytes()[:4] == b"\x89PNG" for r in f["reports"])
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

    # the C12.22 capture: every message dissects, and a meter's key from c1222-keys.csv
    # verifies (crypto_good) the messages protected under it
    key_line = (tmp_path / "pcap" / "c1222-keys.csv").read_text().splitlines()[0]
    c1222 = subprocess.run(
        [
            tshark,
            "-r",
            str(tmp_path / "pcap" / "c1222.pcap"),
            "-d",
            f"udp.port=={doc['headend_port']},c1222",
            "-o",
            "c1222.decrypt:TRUE",
            "-o",
            "c1222.baseoid:2.16.124.113620.1.22",
            "-o",
            f"uat:c1222_decryption_table:{key_line}",
            "-Y",
            "c1222",
            "-T",
            "fields",
            "-e",
            "c1222.crypto_good",
            "-e",
            "_ws.malformed",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert len(c1222) > 20 and not [line for line in c1222 if line.split("\t")[-1]]
    assert any(line.split("\t")[0] == "1" for line in c1222)
