"""Event-log intake at the head-end, with real signed logs (EventLog + SoftwareModule), on both
repository backends: accepted logs are stored and advance the accepted head; every tampering is
refused with its own reason, raises an alarm and stores nothing. Then the REST upload."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.unit.headend.conftest import auth, make_access

from amistack.eventlog import CheckpointPolicy, EventLog, EventType, FsyncPolicy, LogConfig
from amistack.eventlog.verify import Reason
from amistack.headend.api import create_app
from amistack.headend.eventlog_intake import ALARM_KIND, STORE_ALARM_KIND, EventLogIntake
from amistack.headend.registry import HeadendError
from amistack.headend.storage import ReadingRepository
from amistack.securemodule import SoftwareModule

METER = "meter-0001"
AP = "2.16.124.113620.1.22.0.1"
T0 = 1_790_000_000.0
NOW = 1_790_100_000.0
CONFIG = LogConfig(
    checkpoint=CheckpointPolicy(every_entries=5, every_seconds=None), fsync=FsyncPolicy.NEVER
)


@pytest.fixture
def module(tmp_path: Path) -> SoftwareModule:
    return SoftwareModule.create(tmp_path / "module.pem", f"{METER}/eventlog")


@pytest.fixture
def log(tmp_path: Path, module: SoftwareModule) -> Iterator[EventLog]:
    with EventLog.open(tmp_path / "events.log", METER, module, T0, CONFIG) as lg:
        yield lg


def fill(lg: EventLog, n: int) -> None:
    for _ in range(n):
        i = lg.size
        typ = EventType.POWER_FAIL if i % 2 else EventType.POWER_RESTORE
        lg.append(typ, i.to_bytes(2, "big"), T0 + i)


def export(lg: EventLog) -> list[str]:
    return list(lg.export_lines())


@pytest.fixture
def registered(repo: ReadingRepository, module: SoftwareModule) -> ReadingRepository:
    repo.register_meter(METER, AP, "c1", "cell", T0, eventlog_key=module.public_key_pem())
    return repo


def alarms(repo: ReadingRepository) -> list[str]:
    return [a.detail for a in repo.alarms(meter_id=METER) if a.kind == ALARM_KIND]


def test_accepted_log_is_stored_and_its_head_becomes_the_accepted_one(
    registered: ReadingRepository, log: EventLog
) -> None:
    repo = registered
    intake = EventLogIntake(repo)
    fill(log, 12)  # heads at 5 and 10; entries 10, 11 unsigned
    v = intake.receive(METER, export(log), NOW)
    assert v.ok and v.entries == 12 and v.unsigned_tail == 2
    assert intake.last_stored == 10
    events = repo.events(meter_id=METER, limit=100)
    assert [e.seq for e in events] == list(range(10))  # the unsigned tail is not evidence
    assert events[1].kind == "POWER_FAIL" and events[1].detail == "0001"
    assert events[1].at == pytest.approx(T0 + 1)
    head = repo.eventlog_head(METER)
    assert head is not None and head.size == 10 and head.mode == "merkle"
    assert head.head == log.heads[-1].to_line()
    assert alarms(repo) == []

    # the meter goes on; the next upload extends the accepted head: only new events stored
    fill(log, 4)  # head at 15
    log.checkpoint(T0 + 100)  # and 16
    text = "".join(export(log))
    v2 = intake.receive(METER, text, NOW + 1)
    assert v2.ok and intake.last_stored == 6
    assert [e.seq for e in repo.events(meter_id=METER, limit=100)] == list(range(16))
    head2 = repo.eventlog_head(METER)
    assert head2 is not None and head2.size == 16
    # the same upload again: holds, nothing new
    assert intake.receive(METER, text.encode(), NOW + 2).ok and intake.last_stored == 0
    assert repo.count_readings() == 0 and alarms(repo) == []


def _tampered(lines: list[str], how: str) -> list[str]:
    """lines: header, E0..E4, H5, E5..E9, H10, E10..E14, H15 (a log of 15, heads every 5)."""
    out = list(lines)
    e = [i for i, ln in enumerate(out) if ln.startswith("E ")]
    if how == "edited":
        parts = out[e[7]].split(" ")
        parts[4] = "ffff\n"
        out[e[7]] = " ".join(parts)
    elif how == "deleted":
        del out[e[7]]
    elif how == "reordered":
        out[e[7]], out[e[8]] = out[e[8]], out[e[7]]
    elif how == "truncated":
        del out[e[13] : e[14] + 1]  # the last entries cut off, their head kept
    return out


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("edited", Reason.EDITED_ENTRY),
        ("deleted", Reason.DELETED_ENTRY),
        ("reordered", Reason.REORDERED_ENTRIES),
        ("truncated", Reason.TRUNCATED),
    ],
)
def test_each_tampering_raises_an_alarm_with_its_reason_and_stores_nothing(
    registered: ReadingRepository, log: EventLog, how: str, reason: Reason
) -> None:
    repo = registered
    fill(log, 15)
    v = EventLogIntake(repo).receive(METER, _tampered(export(log), how), NOW)
    assert not v.ok and v.reason is reason
    got = alarms(repo)
    assert len(got) == 1 and got[0].startswith(reason.value + ": ")
    assert v.detail in got[0]
    assert repo.events(meter_id=METER) == [] and repo.eventlog_head(METER) is None


def test_rollback_and_fork_are_refused_against_the_accepted_head(
    registered: ReadingRepository, log: EventLog, tmp_path: Path, module: SoftwareModule
) -> None:
    repo = registered
    intake = EventLogIntake(repo)
    fill(log, 10)
    old = export(log)  # ends at its head of size 10
    fill(log, 10)
    assert intake.receive(METER, export(log), NOW).ok
    stored = repo.events(meter_id=METER, limit=100)
    v = intake.receive(METER, old, NOW + 1)
    assert v.reason is Reason.ROLLBACK
    # a different history, validly signed by the same module: not an extension
    with EventLog.open(tmp_path / "fork.log", METER, module, T0, CONFIG) as fork:
        fork.append(EventType.COVER_OPEN, b"x", T0)
        fill(fork, 24)
        v2 = intake.receive(METER, export(fork), NOW + 2)
    assert v2.reason is Reason.NOT_EXTENSION
    assert [a.split(":")[0] for a in alarms(repo)] == ["rollback", "not-an-extension"]
    head = repo.eventlog_head(METER)
    assert head is not None and head.size == 20  # unchanged
    assert repo.events(meter_id=METER, limit=100) == stored


def test_a_log_signed_by_another_key_is_refused(
    registered: ReadingRepository, tmp_path: Path
) -> None:
    intruder = SoftwareModule.create(tmp_path / "intruder.pem", "intruder")
    with EventLog.open(tmp_path / "other.log", METER, intruder, T0, CONFIG) as lg:
        fill(lg, 5)
        v = EventLogIntake(registered).receive(METER, export(lg), NOW)
    assert v.reason is Reason.WRONG_KEY
    assert alarms(registered)[0].startswith("wrong-key: ")
    assert registered.events(meter_id=METER) == []


def test_malformed_uploads_are_refused(registered: ReadingRepository, log: EventLog) -> None:
    intake = EventLogIntake(registered)
    fill(log, 5)
    text = "".join(export(log))
    assert intake.receive(METER, "", NOW).reason is Reason.MALFORMED
    assert intake.receive(METER, text.replace("\n", "\r\n"), NOW).reason is Reason.MALFORMED
    assert intake.receive(METER, text.encode() + b"\xff", NOW).reason is Reason.MALFORMED
    assert intake.receive(METER, text + "é", NOW).reason is Reason.MALFORMED
    other = text.replace(METER, "meter-0002", 1)
    assert intake.receive(METER, other, NOW).reason is Reason.WRONG_METER
    assert len(alarms(registered)) == 5
    assert registered.eventlog_head(METER) is None


def test_unknown_meter_is_refused_without_an_alarm_no_key_with_one(
    repo: ReadingRepository, log: EventLog, module: SoftwareModule
) -> None:
    fill(log, 5)
    intake = EventLogIntake(repo)
    with pytest.raises(HeadendError) as exc:
        intake.receive(METER, export(log), NOW)
    assert exc.value.code == "not_found"
    assert repo.alarms() == []  # red team's alarm flood: invented meter ids raise nothing
    assert intake.counters["rejected-unknown-meter"] == 1
    repo.register_meter(METER, AP, "c1", "cell", T0)
    with pytest.raises(HeadendError) as exc:
        intake.receive(METER, export(log), NOW)
    assert exc.value.code == "no_key" and "eventlog-key" in exc.value.message
    assert [a.detail.split(":")[0] for a in repo.alarms(meter_id=METER)] == ["no-key"]
    key_id = repo.set_eventlog_key(METER, module.public_key_pem(), T0)
    assert repo.eventlog_key(METER) == (module.public_key_pem().decode(), key_id)
    assert intake.receive(METER, export(log), NOW).ok
    with pytest.raises(HeadendError) as exc:
        repo.set_eventlog_key(METER, b"not a key", T0)
    assert exc.value.code == "invalid"
    with pytest.raises(HeadendError):
        repo.set_eventlog_key("nope", module.public_key_pem(), T0)


def test_a_stale_verification_does_not_overwrite_a_newer_head(
    registered: ReadingRepository, log: EventLog
) -> None:
    """accept_eventlog is a compare-and-set on the head it was verified against."""
    repo = registered
    fill(log, 10)
    assert EventLogIntake(repo).receive(METER, export(log), NOW).ok
    head = repo.eventlog_head(METER)
    assert head is not None
    with pytest.raises(HeadendError) as exc:
        repo.accept_eventlog(head, [], None, NOW)  # verified when there was no head
    assert exc.value.code == "invalid_transition"
    assert repo.accept_eventlog(head, [], 10, NOW).inserted == 0


# -- the REST upload -------------------------------------------------------------------------


@pytest.fixture
def client(repo: ReadingRepository, tmp_path: Path) -> Iterator[TestClient]:
    access = make_access(tmp_path, lambda: NOW)
    with TestClient(create_app(repo, access, clock=lambda: NOW, max_eventlog_bytes=20_000)) as c:
        c.headers.update(auth(access, "admin"))
        yield c


def test_upload_over_the_api(client: TestClient, log: EventLog, module: SoftwareModule) -> None:
    pem = module.public_key_pem().decode()
    r = client.post("/meters", json={"meter_id": METER, "ap_title": AP, "eventlog_key": pem})
    assert r.status_code == 201
    assert client.get(f"/meters/{METER}/eventlog/head").status_code == 404
    fill(log, 10)
    body = "".join(export(log))
    ok = client.post(
        f"/meters/{METER}/eventlog", content=body, headers={"content-type": "text/plain"}
    )
    assert ok.status_code == 200, ok.text
    j = ok.json()
    assert j["ok"] and j["reason"] == "ok" and j["signed_size"] == 10 and j["stored"] == 10
    head = client.get(f"/meters/{METER}/eventlog/head").json()
    assert head["size"] == 10 and head["head"] == log.heads[-1].to_line()
    assert head["root"] == log.heads[-1].root.hex()
    assert len(client.get("/events", params={"meter_id": METER}).json()["items"]) == 10

    bad = client.post(f"/meters/{METER}/eventlog", content=body.replace(" 0005\n", " 0105\n"))
    assert bad.status_code == 422 and bad.json()["reason"] == "edited-entry"
    alarm = client.get("/alarms", params={"meter_id": METER}).json()["items"]
    assert [a["kind"] for a in alarm] == [ALARM_KIND]
    assert alarm[0]["detail"].startswith("edited-entry: ")
    assert client.get(f"/meters/{METER}/eventlog/head").json()["size"] == 10

    big = client.post(f"/meters/{METER}/eventlog", content="#" * 20_001)
    assert big.status_code == 413
    assert client.post("/meters/nope/eventlog", content=body).status_code == 404


def test_eventlog_key_over_the_api(client: TestClient, module: SoftwareModule) -> None:
    assert client.post("/meters", json={"meter_id": METER, "ap_title": AP}).status_code == 201
    no_key = client.post(f"/meters/{METER}/eventlog", content="AMISTACK-EVENTLOG 1 x merkle\n")
    assert no_key.status_code == 409 and no_key.json()["error"] == "no_key"
    assert client.get(f"/meters/{METER}/eventlog-key").status_code == 404
    r = client.put(f"/meters/{METER}/eventlog-key", content=module.public_key_pem())
    assert r.status_code == 200
    assert r.json()["public_key_pem"] == module.public_key_pem().decode()
    assert client.get(f"/meters/{METER}/eventlog-key").json()["key_id"] == r.json()["key_id"]
    assert client.put(f"/meters/{METER}/eventlog-key", content=b"junk").status_code == 400
    assert client.put("/meters/nope/eventlog-key", content=module.public_key_pem()).status_code == (
        404
    )
    bad = client.post("/meters", json={"meter_id": "m2", "ap_title": AP + "2", "eventlog_key": "x"})
    assert bad.status_code == 400
    assert client.get("/meters/m2").status_code == 404  # nothing registered with a bad key


def test_a_meter_reporting_its_store_rolled_back_raises_the_store_alarm(
    registered: ReadingRepository, tmp_path: Path, module: SoftwareModule
) -> None:
    """The log holds (it is genuine, and extends what was accepted), but the meter recorded in
    it, signed, that its store had been restored from an old copy: the MDMS is told."""
    intake = EventLogIntake(registered)
    path = tmp_path / "store.log"
    with EventLog.open(path, METER, module, T0, CONFIG) as lg:
        fill(lg, 5)
        assert intake.receive(METER, export(lg), NOW).ok
        shutil.copy(path, tmp_path / "backup")
        fill(lg, 5)  # a head at 10 the attacker wants gone
    os.replace(tmp_path / "backup", path)
    with EventLog.open(path, METER, module, T0 + 50, CONFIG) as lg:
        verdict = intake.receive(METER, export(lg), NOW + 1)
    assert verdict.ok and not alarms(registered)
    store = [a.detail for a in registered.alarms(meter_id=METER) if a.kind == STORE_ALARM_KIND]
    assert store == [
        "entry 5: store rolled back: the secure module's last signed head covers 10 entries, "
        "the store held 5"
    ]
    kinds = [e.kind for e in registered.events(meter_id=METER, limit=100)]
    assert "LOG_ROLLED_BACK" in kinds
