"""The front door: `amistack demo` tells its whole story and its pcaps dissect cleanly: each
datagram once, and each meter's C12.22 decrypted with the key table written for it."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_tool

from amistack.runtime.pcap import read_frame_pcap, read_udp_pcap


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
    tls = doc["tls_meter"]  # chapter 1's EAP-TLS meter beside the EAP-PSK ones
    assert len(tls["rotations"]) >= 3 and tls["keys_match"] and all(tls["keys_match"])
    assert doc["tls_downgrade"].startswith("refused")
    assert doc["revoked_again"].startswith("refused")
    # the devices were enrolled and the stolen one revoked by the SECADM over the admin endpoint
    assert "enrolled 9 devices and revoked 1" in doc["key_admin"]
    assert doc["key_admin_audit_entries"] == 2 * (9 + 1)  # requested + ok, each
    assert doc["audit"]["revoke"] == 1 and doc["audit"]["auth-failure"] >= 2
    assert set(doc["eventlog"].values()) == {"accepted"} and len(doc["eventlog"]) == 3
    assert doc["eventlog_edited_entry"] == "edited-entry"
    assert doc["eventlog_rollback"] == "rollback"
    assert min(doc["metering_readings"].values()) >= 4
    assert doc["demand_response"].startswith("confirmed")
    assert doc["disconnect"] == "confirmed, relay read back open"
    assert doc["reconnect"] == "confirmed, relay read back closed"
    assert doc["api_anonymous_disconnect"] == "refused (401)"  # the head-end API's access control
    assert doc["api_audit_entries"] >= 3 * 6  # logins, registrations, commissions, commands
    b = doc["broute"]  # chapter 4: the HEMS on the B route
    assert b["wrong_password"].startswith("refused") and b["link_up"].startswith("PANA")
    assert b["e5"] == "set" and b["history_day"] == 1 and b["history_matches"]
    assert b["power_w"] is not None and b["secured_frames"] > 0 and b["clear_frames"] == 0
    assert (tmp_path / "pcap" / "broute.pcap").stat().st_size > 0
    f = doc["fleet"]  # chapter 5: the fleet simulator with the real engines
    assert f["complete"] and f["blackout"]["with_backoff"]["reauthenticated"] == 50
    assert all(Path(r).read_bytes()[:4] == b"\x89PNG" for r in f["reports"])
    m = doc["mesh"]  # chapter 6: the RPL mesh, joins through relays
    assert m["formed"] and m["wrong_psk"].startswith("refused") and m["revoked"].startswith("shut")
    assert (tmp_path / "pcap" / "mesh.pcap").stat().st_size > 0
    h = doc["handheld"]  # chapter 7: the handheld in an isolated area (tests/unit/cli too)
    assert h["joined"].startswith("6/6") and h["data_dir"].startswith("none found")
    assert h["revoked"].startswith("shut out") and h["shut_out_s"] is not None
    assert h["synced"].startswith("stored") and h["destroyed"].startswith("gone")
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

    # every pcap holds each datagram once (only one end of each exchange captures); a real
    # retransmission is the same bytes again, but not within a few milliseconds
    for name in ("pana.pcap", "c1222.pcap"):
        seen: dict[tuple[object, ...], float] = {}
        for rec in read_udp_pcap(tmp_path / "pcap" / name):
            key = (rec.src, rec.dst, rec.payload)
            assert rec.ts - seen.get(key, -1.0) > 0.005, f"{name}: {rec} recorded twice"
            seen[key] = rec.ts
    frames: dict[bytes, float] = {}  # the B route: 802.15.4 frames, each with its own counter
    for ts, frame in read_frame_pcap(tmp_path / "pcap" / "broute.pcap"):
        assert ts - frames.get(frame, -1.0) > 0.005, f"broute.pcap: {frame.hex()} recorded twice"
        frames[frame] = ts

    # C12.22: one capture and one Wireshark decryption table per meter (the table is keyed by
    # the one-byte key id, which every meter counts from the same start); with its own table
    # every C12.22 message of each meter verifies (crypto_good) and none fails
    captures = doc["c1222_captures"]
    assert len(captures) == min(8, 6)
    per_meter = 0
    for device, files in captures.items():
        keys = Path(files["keys"])
        assert stat.S_IMODE(keys.stat().st_mode) == 0o600  # it holds the keys
        lines = c1222_tshark(tshark, Path(files["pcap"]), doc["headend_port"], keys)
        assert lines and not [x for x in lines if x != ["1", "0", ""]], (device, lines)
        per_meter += len(lines)
    # the head-end's whole capture is the meters' captures together, each message once ...
    whole = tmp_path / "pcap" / "c1222.pcap"
    one_table = Path(next(iter(captures.values()))["keys"])
    lines = c1222_tshark(tshark, whole, doc["headend_port"], one_table)
    assert len(lines) == per_meter
    # ... and no one table decrypts it: other meters' messages under the same key ids fail
    assert ["0", "1", ""] in lines and ["1", "0", ""] in lines


def c1222_tshark(tshark: str, pcap: Path, port: int, keys: Path) -> list[list[str]]:
    """(crypto_good, crypto_bad, malformed) of each C12.22 message, with the key table `keys`
    given to tshark record by record, as the demo prints it."""
    cmd = [tshark, "-n", "-r", str(pcap), "-d", f"udp.port=={port},c1222",
           "-o", "c1222.decrypt:TRUE", "-o", "c1222.baseoid:2.16.124.113620.1.22"]  # fmt: skip
    for record in keys.read_text().splitlines():
        cmd += ["-o", f"uat:c1222_decryption_table:{record}"]
    cmd += ["-Y", "c1222", "-T", "fields", "-E", "separator=|"]
    for f in ("c1222.crypto_good", "c1222.crypto_bad", "_ws.malformed"):
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("|") for line in out.splitlines()]
