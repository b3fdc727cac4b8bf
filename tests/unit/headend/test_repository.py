"""The repository contract, run unchanged against SQLite and PostgreSQL (fixture `repo`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.headend.conftest import T0, reading

from amistack.headend.registry import HeadendError, MeterState
from amistack.headend.schema import CommandKind, CommandState, MeterEvent, VeeFlag
from amistack.headend.storage import ReadingRepository
from amistack.securemodule import SoftwareModule

AP = "2.16.124.113620.1.22.0."


def _register(repo: ReadingRepository, n: int, concentrator: str = "c1") -> None:
    for i in range(n):
        repo.register_meter(f"m{i:03d}", f"{AP}{i}", concentrator, "cell-a", 10.0)


def test_meter_life_cycle(repo: ReadingRepository) -> None:
    m = repo.register_meter("m1", AP + "1", "conc-7", "cell-3", 10.0)
    assert (m.state, m.installed_at, m.commissioned_at) == (MeterState.INSTALLED, 10.0, None)
    m = repo.commission_meter("m1", 20.0)
    assert (m.state, m.commissioned_at) == (MeterState.COMMISSIONED, 20.0)
    with pytest.raises(HeadendError) as e:
        repo.commission_meter("m1", 21.0)
    assert e.value.code == "invalid_transition"
    m = repo.decommission_meter("m1", 30.0)
    assert (m.state, m.decommissioned_at) == (MeterState.DECOMMISSIONED, 30.0)
    assert repo.get_meter("m1") == m
    assert repo.meter_by_ap_title(AP + "1") == m
    with pytest.raises(HeadendError) as e:
        repo.decommission_meter("m1", 31.0)
    assert e.value.code == "invalid_transition"
    # reversible (the red team's lock-out): re-commissioning keeps the row and its history
    m = repo.commission_meter("m1", 40.0)
    assert (m.state, m.commissioned_at, m.decommissioned_at) == (
        MeterState.COMMISSIONED,
        40.0,
        30.0,
    )
    assert repo.get_meter("nope") is None


def test_register_refuses_duplicates_and_bad_fields(repo: ReadingRepository) -> None:
    repo.register_meter("m1", AP + "1", "c", "x", 1.0)
    for meter_id, ap in (("m1", AP + "2"), ("m2", AP + "1")):
        with pytest.raises(HeadendError) as e:
            repo.register_meter(meter_id, ap, "c", "x", 1.0)
        assert e.value.code == "exists"
    with pytest.raises(HeadendError) as e:
        repo.register_meter("m3", "not-an-oid", "c", "x", 1.0)
    assert e.value.code == "invalid"
    with pytest.raises(HeadendError) as e:
        repo.commission_meter("ghost", 1.0)
    assert e.value.code == "not_found"


def test_eventlog_keyed_names_the_meters_with_a_key(
    repo: ReadingRepository, tmp_path: Path
) -> None:
    _register(repo, 3)
    pem = SoftwareModule.create(tmp_path / "module.pem", "m001/eventlog").public_key_pem()
    repo.set_eventlog_key("m001", pem, 11.0)
    assert repo.eventlog_keyed(["m000", "m001", "m002", "ghost"]) == {"m001"}
    assert repo.eventlog_keyed(["m000"]) == set() and repo.eventlog_keyed([]) == set()


def test_list_meters_pages_and_filters(repo: ReadingRepository) -> None:
    _register(repo, 7)
    repo.register_meter("z1", AP + "99", "c2", "cell-b", 1.0)
    repo.commission_meter("m003", 2.0)
    seen, after = [], None
    while True:
        page = repo.list_meters(after=after, limit=3)
        seen += [m.meter_id for m in page]
        if len(page) < 3:
            break
        after = page[-1].meter_id
    assert seen == [f"m{i:03d}" for i in range(7)] + ["z1"]
    assert [m.meter_id for m in repo.list_meters(concentrator="c2")] == ["z1"]
    assert [m.meter_id for m in repo.list_meters(state=MeterState.COMMISSIONED)] == ["m003"]
    with pytest.raises(HeadendError):
        repo.list_meters(limit=0)


def test_ingest_is_idempotent_and_counts_duplicates(repo: ReadingRepository) -> None:
    batch = [reading("m1", i) for i in range(10)] + [reading("m2", i) for i in range(5)]
    r1 = repo.store_readings(batch, 100.0)
    assert (r1.inserted, r1.duplicates) == (15, 0)
    # a resent message (ack lost) overlapping new intervals, with a duplicate inside the batch
    again = [reading("m1", i, fwd=999) for i in range(8, 12)] + [reading("m1", 11)]
    r2 = repo.store_readings(again, 200.0)
    assert (r2.inserted, r2.duplicates) == (2, 3)
    assert repo.count_readings() == 17
    assert repo.count_readings("m2") == 5
    stored = {r.interval_start: r for r in repo.readings("m1", T0, T0 + 86400)}
    assert stored[T0 + 8 * 900].forward_wh == 100  # the first write wins; a duplicate is ignored
    assert stored[T0 + 8 * 900].received_at == 100.0
    assert stored[T0 + 10 * 900].received_at == 200.0
    assert repo.store_readings([], 1.0).inserted == 0


def test_15_and_30_minute_values_of_one_start_are_distinct(repo: ReadingRepository) -> None:
    r = repo.store_readings([reading("m1", 0, 15), reading("m1", 0, 30)], 1.0)
    assert r.inserted == 2
    assert [x.length_min for x in repo.readings("m1", T0, T0 + 1)] == [15, 30]
    assert [x.length_min for x in repo.readings("m1", T0, T0 + 1, length_min=30)] == [30]


def test_invalid_reading_refuses_the_batch(repo: ReadingRepository) -> None:
    bad = reading("m1", 0)
    for broken in (
        bad.__class__(bad.meter_id, bad.interval_start + 1, 15, 1, 0, 0, 1),
        bad.__class__(bad.meter_id, bad.interval_start, 20, 1, 0, 0, 1),
        bad.__class__(bad.meter_id, bad.interval_start, 15, -1, 0, 0, 1),
    ):
        with pytest.raises(HeadendError) as e:
            repo.store_readings([reading("m1", 5), broken], 1.0)
        assert e.value.code == "invalid"
    assert repo.count_readings() == 0


def test_readings_range_and_keyset_pages(repo: ReadingRepository) -> None:
    repo.store_readings([reading("m1", i, 15, fwd=i) for i in range(20)], 1.0)
    repo.store_readings([reading("m1", i, 30, fwd=i) for i in range(10)], 1.0)
    repo.store_readings([reading("m2", i) for i in range(20)], 1.0)
    got, after = [], None
    while True:
        page = repo.readings("m1", T0 + 900, T0 + 3600 * 4, after=after, limit=4)
        got += [(r.interval_start, r.length_min) for r in page]
        if len(page) < 4:
            break
        after = (page[-1].interval_start, page[-1].length_min)
    expected = sorted(
        [(T0 + i * 900, 15) for i in range(1, 16)] + [(T0 + i * 1800, 30) for i in range(1, 8)]
    )
    assert got == expected
    assert repo.readings("m3", T0, T0 + 86400) == []


def test_flags_are_ored_and_values_kept(repo: ReadingRepository) -> None:
    repo.store_readings([reading("m1", 0, fwd=123)], 1.0)
    n = repo.flag_readings([("m1", T0, 15, VeeFlag.SPIKE), ("m1", T0 + 900, 15, VeeFlag.SPIKE)])
    assert n == 1  # no row for the second: nothing invented
    repo.flag_readings([("m1", T0, 15, VeeFlag.SUM_MISMATCH)])
    (r,) = repo.readings("m1", T0, T0 + 1)
    assert r.vee_flags == VeeFlag.SPIKE | VeeFlag.SUM_MISMATCH
    assert r.forward_wh == 123


def test_events_dedupe_on_sequence(repo: ReadingRepository) -> None:
    evs = [MeterEvent("m1", 5.0 + i, "power_fail", f"#{i}", seq=i) for i in range(3)]
    assert repo.add_events(evs, 10.0).inserted == 3
    again = repo.add_events([*evs[1:], MeterEvent("m1", 9.0, "cover_open", seq=None)], 11.0)
    assert (again.inserted, again.duplicates) == (1, 2)
    assert [e.kind for e in repo.events(meter_id="m1")] == ["power_fail"] * 3 + ["cover_open"]
    first = repo.events(limit=2)
    rest = repo.events(after_id=first[-1].id)
    assert len(first) + len(rest) == 4
    assert repo.events(meter_id="m2") == []


def test_command_life_cycle_with_relay_read_back(repo: ReadingRepository) -> None:
    repo.register_meter("m1", AP + "1", "c", "x", 1.0)
    c = repo.create_command("m1", CommandKind.DISCONNECT, {"reason": "non-payment"}, 5.0)
    assert c.state is CommandState.PENDING
    assert json.loads(c.params) == {"reason": "non-payment"}
    with pytest.raises(HeadendError) as e:
        repo.update_command(c.id, CommandState.CONFIRMED, 6.0, relay_state="open")
    assert e.value.code == "invalid_transition"  # not sent yet
    c = repo.update_command(c.id, CommandState.SENT, 6.0)
    with pytest.raises(HeadendError) as e:  # relay still closed: not confirmed
        repo.update_command(c.id, CommandState.CONFIRMED, 7.0, relay_state="closed")
    assert e.value.code == "invalid"
    c = repo.update_command(
        c.id, CommandState.CONFIRMED, 8.0, confirmation="ok", relay_state="open"
    )
    assert (c.state, c.relay_state, c.confirmation, c.updated_at) == (
        CommandState.CONFIRMED,
        "open",
        "ok",
        8.0,
    )
    assert repo.get_command(c.id) == c
    dr = repo.create_command("m1", CommandKind.DEMAND_RESPONSE, {"limit_w": 2000}, 9.0)
    dr = repo.update_command(dr.id, CommandState.SENT, 9.5)
    dr = repo.update_command(dr.id, CommandState.CONFIRMED, 10.0)  # no relay needed for DR
    assert dr.state is CommandState.CONFIRMED
    assert [x.id for x in repo.commands(meter_id="m1")] == [c.id, dr.id]
    assert repo.commands(state=CommandState.PENDING) == []
    assert repo.get_command(999) is None


def test_commands_need_a_live_meter(repo: ReadingRepository) -> None:
    with pytest.raises(HeadendError) as e:
        repo.create_command("ghost", CommandKind.TIME_SYNC, {}, 1.0)
    assert e.value.code == "not_found"
    repo.register_meter("m1", AP + "1", "c", "x", 1.0)
    repo.decommission_meter("m1", 2.0)
    with pytest.raises(HeadendError) as e:
        repo.create_command("m1", CommandKind.RECONNECT, {}, 3.0)
    assert e.value.code == "invalid"


def test_alarms(repo: ReadingRepository) -> None:
    a = repo.raise_alarm("m1", "eventlog_verification_failed", "entry 7 edited", 5.0)
    b = repo.raise_alarm(None, "collector_backlog", "", 6.0)
    assert [x.id for x in repo.alarms(unacknowledged=True)] == [a.id, b.id]
    acked = repo.acknowledge_alarm(a.id, 7.0)
    assert acked.acknowledged_at == 7.0
    assert repo.acknowledge_alarm(a.id, 8.0).acknowledged_at == 7.0  # first ack stands
    assert [x.id for x in repo.alarms(unacknowledged=True)] == [b.id]
    assert [x.kind for x in repo.alarms(meter_id="m1")] == ["eventlog_verification_failed"]
    with pytest.raises(HeadendError):
        repo.acknowledge_alarm(999, 1.0)


def test_queries_do_not_wait_for_the_writer(repo: ReadingRepository) -> None:
    """A dashboard's range query runs beside a commit in progress (its own reader connection,
    on the last committed snapshot), instead of queueing behind the ingest's writer lock."""
    import threading

    repo.register_meter("m1", AP + "1", "c", "x", 1.0)
    repo.store_readings([reading("m1", 0), reading("m1", 1)], 5.0)
    writer_lock: threading.Lock = repo._lock  # type: ignore[attr-defined]
    answered: list[int] = []
    with writer_lock:  # the writer is busy (a commit waiting for its fsync)
        t = threading.Thread(
            target=lambda: answered.append(len(repo.readings("m1", T0, T0 + 86400))), daemon=True
        )
        t.start()
        t.join(5.0)
        assert answered == [2]
        assert repo.get_meter("m1") is not None and repo.count_readings("m1") == 2
    repo.store_readings([reading("m1", 2)], 6.0)
    assert repo.count_readings("m1") == 3  # a reader sees every commit before it


def test_reader_connections_cannot_write(tmp_path: Path) -> None:
    """A query path that went wrong (or was talked into it) cannot change anything: SQLite's
    readers are query_only; writes only go through the writer's transactions."""
    import sqlite3

    from amistack.headend.storage import SqliteRepository

    repo = SqliteRepository(tmp_path)
    repo.register_meter("m1", AP + "1", "c", "x", 1.0)
    reader = repo._readers.get()  # type: ignore[union-attr]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("DELETE FROM meters")
    assert repo.get_meter("m1") is not None
    repo.close()


def test_a_topology_report_replaces_the_concentrators_last(repo: ReadingRepository) -> None:
    assert repo.topologies() == {}
    repo.put_topology("conc-1", '[{"eui64": "02:00:00:00:00:00:00:01"}]', T0)
    repo.put_topology("conc-2", "[]", T0)
    repo.put_topology("conc-1", "[]", T0 + 60)
    assert repo.topologies() == {"conc-1": T0 + 60, "conc-2": T0}
    assert repo.topology("conc-1") == (T0 + 60, "[]") and repo.topology("conc-3") is None
