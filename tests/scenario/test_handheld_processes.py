"""The handheld as its own process between an isolated mesh (simulated in that process) and the
REAL key server, over the real gateway process and mutual TLS, driven by the `amistack handheld`
commands: a full work session, roles enforced, the key server told who the handheld serves; then
the handheld's data dir and log are searched for every meter PSK and the handheld's own (none
found); a meter outside a handheld's certificate (`--meters`) never joins through it (refused
at the gateway, audited at the key server); and a revoked handheld is shut out, the meters'
sessions it relayed ended, the time from revocation to shut-out measured."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from tests.scenario.test_keyserver_process import count, free_port

from amistack.access import AccessStore, Role
from amistack.cli.common import open_store
from amistack.keymgmt import pki
from amistack.runtime.handheld import SOCKET_NAME, control
from amistack.sim.handheld_area import area_meter_id, area_meter_psk

PY = sys.executable
METERS = 6
HANDHELD = "handheld-7"
SECOND = "handheld-8"
HANDHELD_PSK = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
PASSWORD = "a long field passphrase"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "AMISTACK_PASSWORD": PASSWORD}

pytestmark = pytest.mark.slow


def start(args: list[str], log: Path, ready: bytes, env: dict[str, str] | None = None) -> Any:
    out = open(log, "ab")  # noqa: SIM115 - closed by the fixture
    proc = subprocess.Popen([PY, "-m", "amistack.cli.main", "-v", *args], stdout=out,
                            stderr=subprocess.STDOUT, env=env or ENV)  # fmt: skip
    deadline = time.monotonic() + 20.0
    while ready not in log.read_bytes():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return proc, out


def hh(data_dir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    argv = [PY, "-m", "amistack.cli.main", "handheld", *args, "--data-dir", str(data_dir)]
    r = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=30)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def ask(data_dir: Path, **req: Any) -> dict[str, Any]:
    return asyncio.run(control(data_dir / SOCKET_NAME, req))


def wait_for(data_dir: Path, pred: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = ask(data_dir, op="status")
        if pred(status):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def wait_audit(office: Path, kind: str, device: bytes, timeout: float) -> list[Any]:
    """The key server's audit entries of `kind` for `device`, once there are some."""
    deadline = time.monotonic() + timeout
    while True:
        with open_store(office, create=False) as store:
            entries = store.audit_log(kind=kind, device_id=device)
        if entries:
            return entries
        assert time.monotonic() < deadline, kind
        time.sleep(0.2)


@dataclass
class Office:
    office: Path
    handheld: Path
    handheld_log: Path
    second: Path  # another handheld, revoked at the key server


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Office]:
    """One office and one handheld for the module (process start-up is most of the cost); the
    revocation test comes last."""
    tmp_path = tmp_path_factory.mktemp("handheld")
    off, hdir = tmp_path / "office", tmp_path / "handheld"
    with open_store(off, create=True) as store:
        store.enroll(HANDHELD, bytes.fromhex(HANDHELD_PSK), time.time())
        store.enroll(SECOND, bytes.fromhex(HANDHELD_PSK), time.time())
        for i in range(1, METERS + 1):
            store.enroll(area_meter_id(i), area_meter_psk(1, i), time.time())
    pki.init_ca(off)
    pki.issue_server(off, "handheld-gateway", ["127.0.0.1"])
    second = tmp_path / "second"
    for device, where, scope in (
        (HANDHELD, hdir, "field-meter-*"),
        (SECOND, second, area_meter_id(1)),
    ):  # provisioned at the office
        pki.issue_client(off, device, ["handheld"], meters=[scope])
        (where / "pki" / "clients").mkdir(parents=True, mode=0o700)
        for rel in ("ca.crt", f"clients/{device}.crt", f"clients/{device}.key"):
            shutil.copy2(off / "pki" / rel, where / "pki" / rel)
        users = AccessStore(where, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
        for name, role in (("tina", Role.OPERATOR), ("vic", Role.VIEWER), ("rob", Role.RBACMNT)):
            users.add_user(name, PASSWORD, [role], time.time())
        users.close()
    ks_port, gw_port = free_port(), free_port()
    procs = [
        start(["keyserver", "--data-dir", str(off), "--listen", f"127.0.0.1:{ks_port}",
               "--relay", "127.0.0.1", "--mesh-pan", "0x0f1e"], tmp_path / "ks.log",
              b"PANA on 127.0.0.1"),
        start(["handheld", "gateway", "--listen", f"127.0.0.1:{gw_port}", "--keyserver",
               f"127.0.0.1:{ks_port}", "--data-dir", str(off)], tmp_path / "gw.log",
              b"handheld gateway: on"),
        start(["handheld", "run", "--device", HANDHELD, "--gateway", f"127.0.0.1:{gw_port}",
               "--data-dir", str(hdir), "--meters", str(METERS)], tmp_path / "handheld.log",
              b"control socket", {**ENV, "AMISTACK_PSK": HANDHELD_PSK}),
        start(["handheld", "run", "--device", SECOND, "--gateway", f"127.0.0.1:{gw_port}",
               "--data-dir", str(second), "--meters", "2"], tmp_path / "second.log",
              b"control socket", {**ENV, "AMISTACK_PSK": HANDHELD_PSK}),
    ]  # fmt: skip
    try:
        yield Office(off, hdir, tmp_path / "handheld.log", second)
    finally:
        stop_all(procs)


def stop_all(procs: list[Any]) -> None:
    """Terminate the processes `start` started, last first."""
    for proc, out in reversed(procs):
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        out.close()


def test_a_work_session_end_to_end_leaves_no_meter_secret_on_the_handheld(office: Office) -> None:
    d = office.handheld
    assert ask(d, op="meters")["error"] == "not-logged-in"
    code, ans = hh(d, "login", "tina")
    assert code == 0 and ans["roles"] == ["OPERATOR"]
    assert ask(d, op="start", work_order="WO-1")["ok"]
    wait_for(d, lambda s: s.get("meters") == METERS, 60.0)
    code, view = hh(d, "meters")
    assert code == 0 and len(view["meters"]) == METERS and len(view["routes"]) == METERS
    assert view["technician"] == "tina" and view["work_order"] == "WO-1"
    assert ask(d, op="read", meter="field-meter-001")["ok"]
    assert hh(d, "command", "field-meter-002", "disconnect")[0] == 0
    refused = ask(d, op="command", meter="field-meter-002", kind="commission")  # an INSTALLER's
    assert refused["error"] == "forbidden"
    code, ans = hh(d, "stop")
    assert code == 0 and ans["ended"] == "stopped by the technician"
    assert ask(d, op="status")["state"] == "idle"
    assert ask(d, op="logout")["ok"]

    # a VIEWER sees but cannot switch
    assert ask(d, op="login", user="vic", password=PASSWORD)["ok"]
    assert ask(d, op="start", work_order="WO-2")["ok"]
    denied = ask(d, op="command", meter="field-meter-001", kind="disconnect")
    assert denied["error"] == "forbidden"
    assert ask(d, op="logout")["ok"]  # ends the work session too
    assert ask(d, op="status")["state"] == "idle"
    # a technician whose roles grant no field work gets no work session
    assert ask(d, op="login", user="rob", password=PASSWORD)["ok"]
    assert ask(d, op="start", work_order="WO-2")["error"] == "forbidden"
    assert ask(d, op="logout")["ok"]

    # the key server knows which handheld served whom
    db = office.office / "keyserver.db"
    assert count(db, "handheld-session") == 2
    with open_store(office.office, create=False) as store:
        details = [e for e in store.audit_log(device_id=HANDHELD.encode())]
    assert any("technician tina" in str(e) and "WO-1" in str(e) for e in details)

    # no meter secret on the handheld: its data dir and its log
    secrets = [area_meter_psk(1, i) for i in range(1, METERS + 1)] + [bytes.fromhex(HANDHELD_PSK)]
    forms = [
        f
        for s in secrets
        for f in (s, s.hex().encode(), s.hex().upper().encode(), base64.b64encode(s))
    ]
    files = [p for p in d.rglob("*") if p.is_file()] + [office.handheld_log]
    assert len(files) >= 4  # access.db (+ WAL), the audit trail, its module key, pki, the log
    for path in files:
        data = path.read_bytes()
        assert not [f for f in forms if f in data], path
    trail = (d / "audit" / "audit.log").read_bytes()
    for action in (b"handheld.start", b"handheld.disconnect", b"handheld.commission", b"logout",
                   b'"outcome":"denied"'):  # fmt: skip
        assert action in trail


def test_a_handheld_revoked_at_the_key_server_loses_its_session(
    office: Office, capsys: pytest.CaptureFixture[str]
) -> None:
    d = office.second
    assert ask(d, op="login", user="tina", password=PASSWORD)["ok"]
    assert ask(d, op="start", work_order="WO-9")["ok"]
    wait_for(d, lambda s: s.get("meters") == 1, 30.0)  # its meter joined through it
    # the other meter of its area is not in its certificate (--meters field-meter-001): its
    # PANA is refused at the gateway, audited at the key server, and it never joins
    scope = wait_audit(office.office, "handheld-scope", SECOND.encode(), 30.0)
    assert area_meter_id(2) in scope[0].detail and area_meter_id(1) in scope[0].detail
    assert ask(d, op="status")["meters"] == 1
    with open_store(office.office, create=False) as store:  # `amistack keys revoke handheld-8`
        t0 = time.monotonic()
        assert store.revoke(SECOND, "reported lost", time.time())
    status = wait_for(d, lambda s: s["state"] == "idle", 10.0)
    shut_out = time.monotonic() - t0
    assert status["last_end"] == "key server: session ended"
    # the meter's session it relayed ended too, its keys cut (it re-authenticates elsewhere)
    with open_store(office.office, create=False) as store:
        cut = store.audit_log(kind="keys-shortened", device_id=area_meter_id(1).encode())
    assert [e for e in cut if "relay b'handheld-8' revoked: reported lost" in e.detail], cut
    with capsys.disabled():
        print(f"\nhandheld revoked at the key server -> PANA session ended in "
              f"{shut_out * 1000:.0f} ms (revocation journal polled every 1 s)")  # fmt: skip
    assert shut_out < 5.0
    assert ask(d, op="start", work_order="WO-10")["ok"]  # the channel opens, PANA is refused
    status = wait_for(d, lambda s: s["state"] == "idle", 30.0)
    assert status["last_end"] == "key server: refused"


def test_a_revoked_handheld_is_shut_out(office: Office, capsys: pytest.CaptureFixture[str]) -> None:
    d = office.handheld
    assert ask(d, op="login", user="tina", password=PASSWORD)["ok"]
    assert ask(d, op="start", work_order="WO-3")["ok"]
    wait_for(d, lambda s: s.get("state") == "serving", 30.0)
    t0 = time.monotonic()
    pki.revoke(office.office, HANDHELD)  # a SECADM reports it lost
    status = wait_for(d, lambda s: s["state"] == "idle", 10.0)
    shut_out = time.monotonic() - t0
    assert status["last_end"] == "channel closed by the office"
    with capsys.disabled():
        print(f"\nhandheld revoked -> shut out in {shut_out * 1000:.0f} ms (CRL poll 200 ms)")
    assert shut_out < 2.0
    again = ask(d, op="start", work_order="WO-4")  # and it stays out
    assert again["ok"] is False and again["error"] == "channel"
