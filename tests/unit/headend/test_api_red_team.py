"""The red team's reproducers against the head-end API (issue 9) and the API items of issue 10,
each now a test: decommission lock-out, event-log key swap, command-parameter jam, body bomb,
alarm flood; `params` as an object, the {"error","detail"} shape for validation errors, a lone
surrogate in a meter id, and parameter injection into the CSV Content-Disposition."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.unit.headend.conftest import T0, auth, make_access, reading

from amistack.access import Role
from amistack.access.http import AccessControl
from amistack.eventlog import CheckpointPolicy, EventLog, EventType, FsyncPolicy, LogConfig
from amistack.headend.api import EVENTLOG_KEY_ALARM, MAX_JSON_BODY, create_app
from amistack.headend.eventlog_intake import ALARM_KIND
from amistack.headend.storage import SqliteRepository
from amistack.securemodule import SoftwareModule

METER = "meter-0001"
AP = "2.16.124.113620.1.22.0.1"
NOW = 1_790_100_000.0
CONFIG = LogConfig(
    checkpoint=CheckpointPolicy(every_entries=5, every_seconds=None), fsync=FsyncPolicy.NEVER
)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[SqliteRepository]:
    r = SqliteRepository(tmp_path)
    yield r
    r.close()


@pytest.fixture
def access(tmp_path: Path) -> AccessControl:
    return make_access(tmp_path, lambda: NOW)


@pytest.fixture
def client(repo: SqliteRepository, access: AccessControl) -> Iterator[TestClient]:
    with TestClient(create_app(repo, access, clock=lambda: NOW, max_eventlog_bytes=200_000)) as c:
        yield c


def test_decommission_is_reversible_by_installer_and_refused_to_others(
    client: TestClient, repo: SqliteRepository, access: AccessControl
) -> None:
    repo.register_meter(METER, AP, "c", "x", 1.0)
    repo.commission_meter(METER, 2.0)
    operator = auth(access, "olga", Role.OPERATOR)
    assert client.post(f"/meters/{METER}/decommission", headers=operator).status_code == 403
    installer = auth(access, "ian", Role.INSTALLER)
    r = client.post(f"/meters/{METER}/decommission", headers=installer)
    assert r.json()["state"] == "decommissioned"
    again = client.post(f"/meters/{METER}/commission", headers=installer)  # was 409 for good
    assert again.status_code == 200 and again.json()["state"] == "commissioned"
    secadm = auth(access, "sam", Role.SECADM)
    assert client.post(f"/meters/{METER}/decommission", headers=secadm).status_code == 200
    assert client.post(f"/meters/{METER}/commission", headers=secadm).status_code == 200
    entries = access.audit.entries(limit=100)
    actions = [(e.who, e.action) for e in entries if e.target == METER and e.outcome == "ok"]
    assert actions == [
        ("ian", "meter.decommission"),
        ("ian", "meter.commission"),
        ("sam", "meter.decommission"),
        ("sam", "meter.commission"),
    ]


def _log(tmp_path: Path, name: str, module: SoftwareModule, n: int) -> EventLog:
    lg = EventLog.open(tmp_path / name, METER, module, NOW - 1000, CONFIG)
    for i in range(n):
        lg.append(EventType.POWER_FAIL if i % 2 else EventType.POWER_RESTORE, b"", NOW - 900 + i)
    return lg


def test_event_log_key_swap_needs_secadm_is_audited_alarmed_and_cannot_launder_a_forgery(
    client: TestClient, repo: SqliteRepository, access: AccessControl, tmp_path: Path
) -> None:
    genuine = SoftwareModule.create(tmp_path / "genuine.pem")
    forger = SoftwareModule.create(tmp_path / "forger.pem")
    repo.register_meter(METER, AP, "c", "x", 1.0, eventlog_key=genuine.public_key_pem())
    uploader = auth(access, "ian", Role.INSTALLER)
    real = _log(tmp_path, "real.log", genuine, 10)
    up = client.post(
        f"/meters/{METER}/eventlog", content="".join(real.export_lines()), headers=uploader
    )
    assert up.status_code == 200 and up.json()["signed_size"] == 10
    old_id = client.get(f"/meters/{METER}/eventlog-key", headers=uploader).json()["key_id"]

    # The attack: replace the key, then upload the genuine entries plus forged tamper events,
    # re-signed with the attacker's key (a consistent extension of the accepted head).
    new_key = forger.public_key_pem()
    assert (
        client.put(f"/meters/{METER}/eventlog-key", content=new_key, headers=uploader).status_code
        == 403
    )
    secadm = auth(access, "sam", Role.SECADM)
    swapped = client.put(f"/meters/{METER}/eventlog-key", content=new_key, headers=secadm)
    assert swapped.status_code == 200
    new_id = swapped.json()["key_id"]
    entry = [e for e in access.audit.entries(limit=100) if e.action == "eventlog.key.fingerprints"]
    assert entry[0].who == "sam" and entry[0].detail == {"old": old_id, "new": new_id}
    key_alarms = repo.alarms(meter_id=METER)
    assert [a.kind for a in key_alarms] == [EVENTLOG_KEY_ALARM]
    assert old_id in key_alarms[0].detail and new_id in key_alarms[0].detail

    forged = _log(tmp_path, "forged.log", forger, 10)
    forged.append(EventType.MAGNETIC_TAMPER, b"", NOW)
    forged.append(EventType.COVER_OPEN, b"", NOW)
    r = client.post(
        f"/meters/{METER}/eventlog", content="".join(forged.export_lines()), headers=uploader
    )
    assert r.status_code == 422 and r.json()["reason"] == "wrong-key"
    refused = [a.detail for a in repo.alarms(meter_id=METER) if a.kind == ALARM_KIND]
    assert refused and "replaced" in refused[-1] and new_id in refused[-1]
    assert repo.eventlog_head(METER) is not None and repo.eventlog_head(METER).size == 10  # type: ignore[union-attr]
    assert not [e for e in repo.events(meter_id=METER, limit=100) if e.kind == "MAGNETIC_TAMPER"]

    # A SECADM may reset the accepted head (a genuine new secure module): audited, alarmed, and
    # the retired head stays in the history.
    reset = client.post(
        f"/meters/{METER}/eventlog/head/reset", json={"reason": "new module"}, headers=uploader
    )
    assert reset.status_code == 403
    reset = client.post(
        f"/meters/{METER}/eventlog/head/reset", json={"reason": "new module"}, headers=secadm
    )
    assert reset.status_code == 200 and reset.json()["retired_size"] == 10
    history = client.get(f"/meters/{METER}/eventlog/head/history", headers=uploader).json()
    assert [h["size"] for h in history] == [10] and history[0]["head"] == real.heads[-1].to_line()
    assert [e.action for e in access.audit.entries(limit=100)][-1] == "eventlog.head.reset"
    assert repo.alarms(meter_id=METER)[-1].kind == EVENTLOG_KEY_ALARM


def test_command_parameters_are_checked_per_kind_and_pending_commands_cancel(
    client: TestClient, repo: SqliteRepository, access: AccessControl
) -> None:
    repo.register_meter(METER, AP, "c", "x", 1.0)
    op = auth(access, "olga", Role.OPERATOR)
    for params in (
        {"limit_w": [1]},
        {"curtail_s": [1]},
        {"limit_w": True},
        {"limit_w": -1},
        {"limit_w": 2**40},
        {"limit_w": 1.5},
        {"curtail_s": 0},
        {"curtail_s": 10**9},
        {"limit_w": 5, "curtail_s": 5},
        {},
    ):
        body = {"meter_id": METER, "kind": "demand_response", "params": params}
        r = client.post("/commands", json=body, headers=op)
        assert r.status_code == 400 and r.json()["error"] == "invalid", params
    bad = {"meter_id": METER, "kind": "disconnect", "params": {"x": 1}}
    assert client.post("/commands", json=bad, headers=op).status_code == 400
    assert repo.commands() == []  # nothing queued
    ok = {"meter_id": METER, "kind": "demand_response", "params": {"curtail_s": 90}}
    made = client.post("/commands", json=ok, headers=op).json()
    assert made["params"] == {"curtail_s": 90}  # an object, not a JSON string (issue 10)
    listed = client.get("/commands", headers=op).json()["items"]
    assert listed[0]["params"] == {"curtail_s": 90}
    cancel = client.post(f"/commands/{made['id']}/cancel", headers=op)
    assert cancel.status_code == 200 and cancel.json()["state"] == "cancelled"
    assert client.post(f"/commands/{made['id']}/cancel", headers=op).status_code == 409
    viewer = auth(access, "vera", Role.VIEWER)
    assert client.post(f"/commands/{made['id']}/cancel", headers=viewer).status_code == 403


def test_body_bomb_is_refused_before_it_is_read(client: TestClient, access: AccessControl) -> None:
    op = auth(access, "olga", Role.OPERATOR)
    declared = client.post(
        "/commands",
        content=b"{}",
        headers={
            **op,
            "content-length": str(200 * 1024 * 1024),
            "content-type": "application/json",
        },
    )
    assert declared.status_code == 413 and declared.json()["error"] == "too_large"

    def chunks() -> Iterator[bytes]:
        yield b'{"meter_id": "'
        for _ in range(100):
            yield b"x" * 4096
        yield b'"}'

    streamed = client.post(
        "/commands", content=chunks(), headers={**op, "content-type": "application/json"}
    )
    assert streamed.status_code == 413 and "65536" in streamed.json()["detail"]
    assert MAX_JSON_BODY == 65536
    anonymous = client.post("/meters", content=b"x" * (MAX_JSON_BODY + 1))
    assert anonymous.status_code == 413  # refused before authentication even reads it


def test_alarm_flood_for_unregistered_meters_raises_no_alarm(
    client: TestClient, repo: SqliteRepository, access: AccessControl
) -> None:
    up = auth(access, "ian", Role.INSTALLER)
    body = "AMISTACK-EVENTLOG 1 x merkle\n"
    for i in range(200):
        r = client.post(f"/meters/ghost-{i}/eventlog", content=body, headers=up)
        assert r.status_code == 404
    assert repo.alarms(limit=1000) == []


def test_validation_errors_use_the_documented_shape_and_lone_surrogates_are_4xx(
    client: TestClient, repo: SqliteRepository, access: AccessControl
) -> None:
    h = auth(access, "admin")
    r = client.post("/meters", json={"ap_title": AP}, headers=h)
    assert r.status_code == 422 and set(r.json()) == {"error", "detail"}
    assert r.json()["error"] == "invalid_request" and "meter_id" in r.json()["detail"]
    raw = b'{"meter_id": "\\ud800", "kind": "disconnect"}'
    r = client.post("/commands", content=raw, headers={**h, "content-type": "application/json"})
    assert r.status_code == 422 and set(r.json()) == {"error", "detail"}
    raw = b'{"meter_id": "m\\udfff", "ap_title": "1.2"}'
    r = client.post("/meters", content=raw, headers={**h, "content-type": "application/json"})
    assert r.status_code == 422
    for path in ("/meters/%ED%A0%80", "/meters?after=%ED%A0%80", "/events?meter_id=%ED%A0%80"):
        assert client.get(path, headers=h).status_code < 500
    assert client.get("/nowhere", headers=h).json()["error"] == "not_found"


def test_csv_content_disposition_cannot_be_injected(
    client: TestClient, repo: SqliteRepository, access: AccessControl
) -> None:
    evil = 'm";filename=evil.exe;x="'
    repo.register_meter(evil, AP, "c", "x", 1.0)
    repo.store_readings([reading(evil, i) for i in range(2)], 1.0)
    from urllib.parse import quote

    r = client.get(
        f"/meters/{quote(evil, safe='')}/readings",
        params={"start": T0, "end": T0 + 86400, "format": "csv"},
        headers=auth(access, "vera", Role.VIEWER),
    )
    assert r.status_code == 200
    cd = r.headers["content-disposition"]
    assert cd.startswith('attachment; filename="m__filename_evil.exe_x__-readings.csv"; filename*=')
    assert cd.count(";") == 2 and '"' not in cd.split("filename*=")[1]
