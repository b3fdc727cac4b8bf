"""`amistack workorder issue|show|sync`: a SECADM's token, the technician's password from the
environment, the handheld's KEK in a SoftHSM2 token; secrets never on the command line."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from tests.unit.meter.conftest import SoftHsmToken, init_token

from amistack.access import AccessStore, AuditTrail, Role
from amistack.cli.common import open_kek, open_store
from amistack.cli.main import main
from amistack.crypto import pkcs11_token
from amistack.handheld.offline import READINGS_FILE, ROTATION_DUE, SealedReadings
from amistack.handheld.technician import TechnicianDesk
from amistack.handheld.workorder import WorkOrderError, open_work_order, order_path
from amistack.headend.schema import IntervalReading
from amistack.headend.storage import SqliteRepository
from amistack.securemodule.software import SoftwareModule

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "tina's long field passphrase"
METERS = ["meter-001", "meter-002"]
T = 1_800_000_000  # an interval start (aligned to 15 min)


@dataclass
class Desk:
    office: Path
    hh: Path
    headend: Path
    token: SoftHsmToken
    kek_spec: str
    module_spec: str

    def args(self, *extra: str) -> list[str]:
        return [*extra, "--data-dir", str(self.office), "--handheld-dir", str(self.hh),
                "--handheld-kek", self.kek_spec, "--handheld-module", self.module_spec]  # fmt: skip


@pytest.fixture
def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Desk]:
    (tmp_path / "tok").mkdir()
    token = init_token(tmp_path / "tok", monkeypatch)
    office, hh = tmp_path / "office", tmp_path / "hh"
    users = AccessStore(office, hasher=CHEAP)
    users.add_user("sam", "sam's long admin passphrase", [Role.SECADM], 0.0)
    users.add_user("olga", "olga's long operator phrase", [Role.OPERATOR], 0.0)
    monkeypatch.setenv("AMISTACK_TOKEN", users.issue_token("sam", time.time()).token)
    monkeypatch.setenv("OLGA_TOKEN", users.issue_token("olga", time.time()).token)
    users.close()
    with open_store(office, create=True) as store:
        for i, m in enumerate(METERS, 1):
            store.enroll(m, bytes([i]) * 16, 0.0)
    tech = AccessStore(hh, hasher=CHEAP)
    tech.add_user("tina", PASSWORD, [Role.OPERATOR], 0.0)
    tech.close()
    monkeypatch.setenv("AMISTACK_PASSWORD", PASSWORD)
    monkeypatch.setenv("AMISTACK_PKCS11_PIN", token.pin)
    spec = f"pkcs11:{token.library}?token={token.label}&label=hh-kek"
    yield Desk(office, hh, tmp_path / "headend", token, spec, f"software:{hh / 'sign.pem'}")
    pkcs11_token.close_all()


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, object]]:
    code = main(argv)
    captured = capsys.readouterr()
    out = captured.out
    if code == 2:
        print(captured.err, file=sys.stderr)  # kept for the assertion that follows
    return code, (json.loads(out) if out.strip() else {})


def issue(d: Desk, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    meters = [a for m in METERS for a in ("--meter", m)]
    argv = ["workorder", "issue", "WO-1", "--technician", "tina", "--handheld", "hh-7", *meters,
            "--op", "read", "--hours", "8"]  # fmt: skip
    return run(capsys, d.args(*argv))


def seal_readings(d: Desk, n: int, *, module: str | None = None) -> None:
    kek = open_kek(d.hh, d.kek_spec, create=False)
    mod = SoftwareModule.open_or_create(module or d.module_spec.removeprefix("software:"))
    users = AccessStore(d.hh, hasher=CHEAP)
    trail = AuditTrail.open(d.hh, time.time())
    with kek:
        desk = TechnicianDesk(users, trail, "hh-7")
        opened = open_work_order(order_path(d.hh, "WO-1"), kek, desk, "tina", PASSWORD,
                                 time.time())  # fmt: skip
        store = SealedReadings(d.hh / READINGS_FILE, kek, mod, opened.order, opened.seal_key)
        store.add([IntervalReading(METERS[0], T + 900 * i, 15, 100 + i, 0, 0, 0)
                   for i in range(n)])  # fmt: skip
        store.close()
    users.close()
    trail.close()


def test_issue_provisions_the_handheld_and_sync_uploads_once_then_destroys(
    desk: Desk, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = issue(desk, capsys)
    assert code == 0 and out["ok"] is True, capsys.readouterr().err
    path = order_path(desk.hh, "WO-1")
    # no PSK or password in what it printed, the office record or either audit trail
    written = json.dumps(out).encode() + b"".join(
        p.read_bytes() for p in (*desk.office.rglob("*.json*"), *desk.hh.rglob("*")) if p.is_file()
    )
    for i in range(1, len(METERS) + 1):
        assert (bytes([i]) * 16).hex().encode() not in written
    assert PASSWORD.encode() not in written
    assert path.exists() and oct(path.stat().st_mode & 0o777) == "0o600"
    code, shown = run(capsys, ["workorder", "show", str(path)])
    assert code == 0 and shown["order"]["meters"] == METERS  # type: ignore[index]
    seal_readings(desk, 4)
    sync = ["workorder", "sync", "WO-1", "--headend", str(desk.headend)]
    code, out = run(capsys, desk.args(*sync))
    assert code == 0, out
    assert (out["inserted"], out["duplicates"], out["refused"], out["conflicts"]) == (4, 0, [], [])
    assert out["marked_for_rotation"] == METERS and out["handheld_copies_destroyed"] is True
    assert not path.exists() and not (desk.hh / READINGS_FILE).exists()
    code, again = run(capsys, desk.args(*sync))  # a second sync adds nothing
    assert code == 0 and again["inserted"] == 0
    repo = SqliteRepository(desk.headend)
    assert repo.count_readings() == 4
    repo.close()
    code, listed = run(capsys, ["workorder", "list", "--data-dir", str(desk.office)])
    assert [o["state"] for o in listed["orders"]] == ["synced"]  # type: ignore[attr-defined]


def test_a_forged_reading_is_refused_and_the_copies_kept(
    desk: Desk, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert issue(desk, capsys)[0] == 0
    seal_readings(desk, 2, module=str(tmp_path / "not-the-handhelds-key.pem"))
    code, out = run(capsys, desk.args("workorder", "sync", "WO-1", "--headend", str(desk.headend)))
    assert code == 1 and out["inserted"] == 0 and len(out["refused"]) == 2  # type: ignore[arg-type]
    assert (desk.hh / READINGS_FILE).exists() and order_path(desk.hh, "WO-1").exists()


def test_refusals_exit_2_with_one_line(
    desk: Desk, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMISTACK_TOKEN", os.environ["OLGA_TOKEN"])  # an OPERATOR, not a SECADM
    assert issue(desk, capsys)[0] == 2
    assert "not a SECADM" in capsys.readouterr().err
    monkeypatch.delenv("AMISTACK_TOKEN")
    assert issue(desk, capsys)[0] == 2
    assert "AMISTACK_TOKEN" in capsys.readouterr().err


def test_a_wrong_technician_password_provisions_nothing(
    desk: Desk, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMISTACK_PASSWORD", "not tina's passphrase at all")
    assert issue(desk, capsys)[0] == 2
    assert "login" in capsys.readouterr().err
    assert not order_path(desk.hh, "WO-1").exists()


def test_an_order_that_never_came_back_is_listed_and_its_meters_marked_for_rotation(
    desk: Desk, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert issue(desk, capsys)[0] == 0
    listing = ["workorder", "list", "--data-dir", str(desk.office)]
    code, out = run(capsys, listing)
    assert code == 0 and [o["state"] for o in out["orders"]] == ["issued"]  # type: ignore[attr-defined]
    later = time.time() + 9 * 3600.0  # past the 8-hour validity; the handheld is still out
    monkeypatch.setattr(time, "time", lambda: later)
    code, out = run(capsys, [*listing, "--mark-expired"])
    (row,) = out["orders"]  # type: ignore[misc]
    assert code == 0 and row["state"] == "expired-unsynced" and row["rotation_marked"] is True
    with open_store(desk.office, create=False) as store:
        marked = store.audit_log(kind=ROTATION_DUE)
    assert sorted(e.device_id for e in marked) == [m.encode() for m in METERS]
    run(capsys, [*listing, "--mark-expired"])  # once per order
    with open_store(desk.office, create=False) as store:
        assert len(store.audit_log(kind=ROTATION_DUE)) == len(METERS)
    # and the handheld refuses the order now, destroying it
    tech = AccessStore(desk.hh, hasher=CHEAP)
    trail = AuditTrail.open(desk.hh, later)
    kek = open_kek(desk.hh, desk.kek_spec, create=False)
    with pytest.raises(WorkOrderError, match="expired"):
        open_work_order(order_path(desk.hh, "WO-1"), kek, TechnicianDesk(tech, trail, "hh-7"),
                        "tina", PASSWORD, later)  # fmt: skip
    tech.close()
    trail.close()
    assert not order_path(desk.hh, "WO-1").exists()
