"""`amistack workorder run` as its own process in the field (embodiment 2, offline mode).

A SECADM issues a work order for two meters; the handheld (`workorder run`, SoftHSM2 token for
its KEK, the technician's password from a 0600 file) becomes DODAG root on the UDP radio, and
real `amistack meter --mesh` processes join it: meter 1 next to it, meter 2 one hop further
(through meter 1), and a third meter enrolled at the office but not in the order, next to the
handheld. The order's meters are read and their signed event logs fetched; the outsider is
refused. Then the handheld is killed with SIGKILL: what it had reported sealed is all there.
At the office a sync with a record tampered at rest refuses that record and keeps the
handheld's copies; the sync of the intact file loads the rest once and the head-end verifies
the event logs; a replayed copy stores nothing new. No secret is in any process's argv; the
handheld's files are 0600 in 0700 directories.

The refusals (expired order, another technician, a meter not in the order, a wrong PIN) are
checked in process: each is one line on stderr and exit status 2."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from tests.scenario.test_mesh_processes import Procs, free_ports
from tests.unit.meter.conftest import SoftHsmToken, init_token

from amistack.access import AccessStore, AuditTrail, Role
from amistack.cli import workorder as workorder_cli
from amistack.cli.common import open_store
from amistack.cli.main import main
from amistack.crypto import pkcs11_token
from amistack.eventlog import layout
from amistack.handheld.offline import READINGS_FILE
from amistack.handheld.workorder import order_path
from amistack.headend.storage import SqliteRepository
from amistack.meter.node import ap_title_for
from amistack.securemodule.software import SoftwareModule

pytestmark = pytest.mark.slow  # four processes, a two-hop join: 10-25 s on a busy machine

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "tina's long field passphrase"
TOM = "tom's other long passphrase"
METERS = ("wo-m1", "wo-m2")
OUTSIDER = "wo-out"
PSK = {"wo-m1": "11" * 16, "wo-m2": "22" * 16, "wo-out": "33" * 16}


@dataclass
class Office:
    tmp: Path
    office: Path
    hh: Path
    headend: Path
    token: SoftHsmToken
    env: dict[str, str]

    @property
    def handheld(self) -> list[str]:
        kek = f"pkcs11:{self.token.library}?token={self.token.label}&label=hh-kek"
        return ["--handheld-dir", str(self.hh), "--handheld-kek", kek,
                "--handheld-module", f"software:{self.hh / 'sign.pem'}"]  # fmt: skip

    def cli(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err


@pytest.fixture
def office(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Office]:
    (tmp_path / "tok").mkdir()
    token = init_token(tmp_path / "tok", monkeypatch)
    o = Office(tmp_path, tmp_path / "office", tmp_path / "hh", tmp_path / "headend", token, {})
    users = AccessStore(o.office, hasher=CHEAP)
    users.add_user("sam", "sam's long admin passphrase", [Role.SECADM], 0.0)
    monkeypatch.setenv("AMISTACK_TOKEN", users.issue_token("sam", time.time()).token)
    users.close()
    with open_store(o.office, create=True) as store:
        for dev, psk in PSK.items():
            store.enroll(dev, bytes.fromhex(psk), 0.0)
    tech = AccessStore(o.hh, hasher=CHEAP)
    tech.add_user("tina", PASSWORD, [Role.OPERATOR], 0.0)
    tech.add_user("tom", TOM, [Role.OPERATOR], 0.0)
    tech.close()
    monkeypatch.setenv("AMISTACK_PKCS11_PIN", token.pin)
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    os.chmod(tmp_path / "pw", 0o600)
    (tmp_path / "tom-pw").write_text(TOM + "\n")
    os.chmod(tmp_path / "tom-pw", 0o600)
    monkeypatch.setenv("AMISTACK_PASSWORD", PASSWORD)  # issue: the technician types it
    o.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    del o.env["AMISTACK_PASSWORD"]  # the run reads it from --password-file only
    del o.env["AMISTACK_TOKEN"]
    yield o
    pkcs11_token.close_all()


def issue(o: Office, capsys: pytest.CaptureFixture[str], order: str, *extra: str) -> None:
    meters = [a for m in METERS for a in ("--meter", m)]
    code, _out, err = o.cli(capsys, "workorder", "issue", order, "--technician", "tina",
                           "--handheld", "hh-7", *meters, "--op", "read", "--op", "events",
                           *extra, "--data-dir", str(o.office), *o.handheld)  # fmt: skip
    assert code == 0, err


def run_args(o: Office, order: str, radio: list[str], *extra: str) -> list[str]:
    return ["workorder", "run", order, "--technician", "tina", "--password-file",
            str(o.tmp / "pw"), "--keyserver", "127.0.0.1:716", "--headend", "127.0.0.1:1153",
            *radio, *extra, *o.handheld]  # fmt: skip


def refused(o: Office, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = o.cli(capsys, *argv)
    assert code == 2 and not out, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_refusals_are_one_line_and_exit_2(
    office: Office, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    o = office
    issue(o, capsys, "WO-1")
    radio = ["--radio", "127.0.0.1:0", "--hear", "127.0.0.1:9"]
    tom = run_args(o, "WO-1", radio)
    tom[tom.index("tina")] = "tom"
    tom[tom.index(str(o.tmp / "pw"))] = str(o.tmp / "tom-pw")
    assert "not for tom" in refused(o, capsys, *tom)
    assert "not in work order WO-1: wo-out" in refused(
        o, capsys, *run_args(o, "WO-1", radio, "--meter", OUTSIDER)
    )
    monkeypatch.setenv("AMISTACK_PKCS11_PIN", "999999")
    assert "PIN" in refused(o, capsys, *run_args(o, "WO-1", radio)).upper()
    monkeypatch.setenv("AMISTACK_PKCS11_PIN", o.token.pin)
    os.chmod(o.tmp / "pw", 0o644)
    assert "readable by others" in refused(o, capsys, *run_args(o, "WO-1", radio))
    os.chmod(o.tmp / "pw", 0o600)
    issue(o, capsys, "WO-2", "--hours", "0.0003")  # about a second
    time.sleep(1.2)
    assert "expired" in refused(o, capsys, *run_args(o, "WO-2", radio))
    assert not order_path(o.hh, "WO-2").exists()  # and its credentials destroyed


def summary(out: str) -> dict[str, object]:
    """The JSON object `workorder run` prints last."""
    start = out.rindex("\n{") + 1
    result: dict[str, object] = json.loads(out[start:])
    return result


def test_the_session_ends_by_itself_at_its_timeout(
    office: Office, capsys: pytest.CaptureFixture[str]
) -> None:
    o = office
    issue(o, capsys, "WO-1")
    radio = ["--radio", "127.0.0.1:0", "--hear", "127.0.0.1:9"]
    code, out, err = o.cli(capsys, *run_args(o, "WO-1", radio, "--timeout", "1"))
    assert code == 0, err
    end = summary(out)
    assert end["ended"] == "timeout" and end["state"] == "ended", out
    assert "the handheld is DODAG root" in out and "session ended (timeout)" in out


def test_a_clock_set_back_during_the_run_ends_it(
    office: Office, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run raises the handheld's clock mark as it goes; a clock set back an hour (past the
    5-minute slack) ends the session."""
    o = office
    issue(o, capsys, "WO-1")
    monkeypatch.setattr(workorder_cli, "CLOCK_MARK_S", 0.3)
    monkeypatch.setattr(workorder_cli, "_wall_clock", lambda: time.time() - 3600.0)
    radio = ["--radio", "127.0.0.1:0", "--hear", "127.0.0.1:9"]
    code, out, err = o.cli(capsys, *run_args(o, "WO-1", radio, "--timeout", "20"))
    assert code == 0, err
    end = summary(out)
    assert str(end["ended"]).startswith("clock: the clock is 3"), out
    assert "behind the latest time this handheld saw" in str(end["ended"])


def test_the_session_ends_on_logout_and_on_a_signal(
    office: Office, capsys: pytest.CaptureFixture[str]
) -> None:
    o = office
    issue(o, capsys, "WO-1")
    radio = ["--radio", "127.0.0.1:0", "--hear", "127.0.0.1:9"]
    cmd = [sys.executable, "-m", "amistack.cli.main"]

    def start(*extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*cmd, *run_args(o, "WO-1", radio, *extra)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=o.env)  # fmt: skip

    def wait_root(proc: subprocess.Popen[bytes]) -> bytes:
        assert proc.stdout is not None
        seen = b""
        while b"waiting for meters" not in seen:
            line = proc.stdout.readline()
            assert line, seen
            seen += line
        return seen

    ends = {}
    proc = start()
    seen = wait_root(proc)
    out, _ = proc.communicate(b"status\nlogout\n", timeout=20)
    assert proc.returncode == 0, seen + out
    assert b'"state": "serving"' in out  # the status line, before the logout
    ends["logout"] = summary((seen + out).decode())
    proc = start()
    seen = wait_root(proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, seen + out
    ends["stopped"] = summary((seen + out).decode())
    for why, end in ends.items():
        assert end["ended"] == why and end["state"] == "ended", end
    assert order_path(o.hh, "WO-1").exists()  # the order stays for the next session


def sealed_lines(log: str) -> tuple[int, int]:
    """(readings, event logs) the handheld reported sealed."""
    readings = sum(int(n) for n in re.findall(r": (\d+) new readings sealed", log))
    return readings, log.count(") sealed")


def test_the_handheld_runs_the_order_in_the_field_and_the_office_syncs_it(
    office: Office, capsys: pytest.CaptureFixture[str]
) -> None:
    o = office
    issue(o, capsys, "WO-1", "--op", "disconnect")
    hh, r1, r2, r3 = (f"127.0.0.1:{p}" for p in free_ports(4))
    p = Procs(o.tmp)
    for name, psk in PSK.items():
        (o.tmp / f"{name}.psk").write_text(psk)
        os.chmod(o.tmp / f"{name}.psk", 0o600)
    hears = {"wo-m1": (r1, [hh, r2]), "wo-m2": (r2, [r1]), "wo-out": (r3, [hh])}
    try:
        with open(p.log("hh"), "wb") as out:
            handheld = subprocess.Popen(
                [sys.executable, "-m", "amistack.cli.main",
                 *run_args(o, "WO-1", ["--radio", hh, "--hear", r1, "--hear", r3])],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=o.env,
            )  # fmt: skip
        p.procs["hh"] = handheld
        for dev, (radio, hear) in hears.items():
            heard = [a for h in hear for a in ("--hear", h)]
            p.start(dev, "meter", "--mesh", "--id", dev, "--psk-file", str(o.tmp / f"{dev}.psk"),
                    "--keyserver", "127.0.0.1:716", "--headend", "127.0.0.1:1153",
                    "--radio", radio, *heard, "--data-dir", str(o.tmp / dev))  # fmt: skip
        p.wait_for("hh", "waiting for meters", 30.0)  # the meters start meanwhile
        for dev in METERS:
            p.wait_for("hh", f"{dev}: collected", 40.0)
        p.wait_for("hh", "REFUSED wo-out", 20.0)
        assert handheld.stdin is not None
        handheld.stdin.write(b"status\n")
        handheld.stdin.flush()
        p.wait_for("hh", '"collected": ["wo-m1", "wo-m2"]', 5.0)
        # the technician's commands: what the order allows, for the order's joined meters
        handheld.stdin.write(b"disconnect wo-m2\nconnect wo-m2\ndisconnect wo-out\n")
        handheld.stdin.flush()
        p.wait_for("hh", "wo-m2: disconnect confirmed", 20.0)
        p.wait_for("hh", "REFUSED connect wo-m2: work order WO-1 does not allow 'connect'", 5.0)
        p.wait_for("hh", "REFUSED disconnect wo-out: meter wo-out is not served", 5.0)
        # the meter logged its switch: the handheld fetches its event log again
        deadline = time.monotonic() + 20.0
        while p.log("hh").read_text().count("wo-m2: signed event log") < 2:
            assert time.monotonic() < deadline, p.log("hh").read_text()
            time.sleep(0.05)

        # no secret in any process's argv
        for proc in p.procs.values():
            argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            for secret in (PASSWORD, TOM, o.token.pin, *PSK.values()):
                assert secret.encode() not in argv
        # SIGKILL mid-session: what was reported sealed is on the disk
        log = p.log("hh").read_text()
        acknowledged = sealed_lines(log)
        assert acknowledged[0] >= 8 and acknowledged[1] >= 2, log
        handheld.send_signal(signal.SIGKILL)
        handheld.wait(5)
    finally:
        p.stop()
    trail = AuditTrail.open(o.hh, time.time())  # the handheld's: each command and its outcome
    switches = {(e.action, e.target, e.outcome) for e in trail.entries(limit=1000)
                if e.action.startswith("offline.")}  # fmt: skip
    trail.close()
    assert switches == {("offline.disconnect", "meter:wo-m2", "sent"),
                        ("offline.disconnect", "meter:wo-m2", "ok"),
                        ("offline.connect", "meter:wo-m2", "refused"),
                        ("offline.disconnect", "meter:wo-out", "refused")}  # fmt: skip
    for path in o.hh.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))

    # -- back at the office ----------------------------------------------------------------
    repo = SqliteRepository(o.headend)
    for dev in METERS:
        repo.register_meter(dev, str(ap_title_for(dev).absolute()), "hh-7", "field", time.time())
        module = SoftwareModule.open(layout.module_path(o.tmp / dev, dev))
        repo.set_eventlog_key(dev, module.public_key_pem(), time.time())
        module.close()
    repo.close()
    db = o.hh / READINGS_FILE
    pristine = o.tmp / "pristine.db"
    shutil.copy(db, pristine)
    conn = sqlite3.connect(db)
    rowid, sealed = conn.execute("SELECT rowid, sealed FROM readings LIMIT 1").fetchone()
    conn.execute("UPDATE readings SET sealed = ? WHERE rowid = ?",
                 (sealed[:30] + bytes([sealed[30] ^ 1]) + sealed[31:], rowid))  # fmt: skip
    conn.commit()
    conn.close()
    sync = ["workorder", "sync", "WO-1", "--headend", str(o.headend), "--data-dir",
            str(o.office), *o.handheld]  # fmt: skip
    code, out, err = o.cli(capsys, *sync)
    first = json.loads(out)
    assert code == 1 and first["ok"] is False, (out, err)
    assert len(first["refused"]) == 1 and "does not open" in first["refused"][0]
    assert first["handheld_copies_destroyed"] is False and db.exists()
    assert first["inserted"] == acknowledged[0] - 1

    shutil.copy(pristine, db)
    code, out, err = o.cli(capsys, *sync)
    second = json.loads(out)
    assert code == 0, (out, err)
    assert (second["inserted"], second["duplicates"]) == (1, acknowledged[0] - 1)
    assert second["event_logs"] == acknowledged[1] and second["refused"] == []
    assert second["handheld_copies_destroyed"] is True and not db.exists()
    assert not order_path(o.hh, "WO-1").exists()

    shutil.copy(pristine, db)  # a replayed copy of the handheld's file
    code, out, err = o.cli(capsys, *sync)
    again = json.loads(out)
    assert code == 0 and again["already_synced"] is True, (out, err)
    assert (again["inserted"], again["duplicates"]) == (0, acknowledged[0])
    assert again["events_stored"] == 0
    repo = SqliteRepository(o.headend)
    try:
        assert sum(repo.count_readings(dev) for dev in METERS) == acknowledged[0]
        for dev in METERS:  # the head-end verified the logs and stored their signed entries
            assert repo.events(meter_id=dev), dev
        assert not repo.alarms()
    finally:
        repo.close()
