"""The repository's read-only views for the dashboard, on both backends (SQLite and a throwaway
PostgreSQL): counts by state, search with LIKE's wildcards taken literally, keyset pages, each
meter's newest reading and relay read-back, key ids seen, newest events and alarms first."""

from __future__ import annotations

from tests.unit.headend.conftest import T0, reading

from amistack.headend.registry import MeterState
from amistack.headend.schema import CommandKind, CommandState, MeterEvent
from amistack.headend.storage import ReadingRepository

AP = "2.16.124.113620.1.22.0.{}"


def test_dashboard_views(repo: ReadingRepository) -> None:
    for i, name in enumerate(["a_1", "ab1", "b%2", "c\\3"]):
        repo.register_meter(name, AP.format(i), "conc-x" if i < 2 else "conc-y", "", T0)
    repo.commission_meter("ab1", T0)
    assert repo.meter_counts() == {"installed": 3, "commissioned": 1}
    # LIKE's wildcards and its escape character are matched as themselves
    assert [m.meter_id for m in repo.find_meters(text="_")[0]] == ["a_1"]
    assert [m.meter_id for m in repo.find_meters(text="%")[0]] == ["b%2"]
    assert [m.meter_id for m in repo.find_meters(text="\\")[0]] == ["c\\3"]
    assert repo.find_meters(text="conc-y")[1] == 2
    page, total = repo.find_meters(state=MeterState.INSTALLED, limit=2)
    assert [m.meter_id for m in page] == ["a_1", "b%2"] and total == 3
    assert [m.meter_id for m in repo.find_meters(after="b%2")[0]] == ["c\\3"]

    repo.store_readings([reading("ab1", i, key_id=1 + i // 3) for i in range(5)], T0 + 10)
    repo.store_readings([reading("a_1", 0)], T0 + 20)
    last = repo.latest_readings(["ab1", "a_1", "b%2"])
    assert set(last) == {"ab1", "a_1"} and last["ab1"].interval_start == T0 + 4 * 900
    assert len(repo.readings_of(["ab1", "a_1"], T0, T0 + 2 * 900)) == 3
    assert repo.key_ids_seen(["ab1"], 0.0) == [
        ("ab1", 1, T0 + 10, T0 + 10, 3),
        ("ab1", 2, T0 + 10, T0 + 10, 2),
    ]
    assert repo.key_ids_seen(["ab1"], T0 + 11) == []

    cmd = repo.create_command("ab1", CommandKind.DISCONNECT, {}, T0)
    assert repo.relay_states(["ab1"]) == {}
    repo.update_command(cmd.id, CommandState.SENT, T0)
    repo.update_command(cmd.id, CommandState.CONFIRMED, T0, relay_state="open")
    repo.create_command("ab1", CommandKind.TIME_SYNC, {}, T0)  # no read-back: the relay stays
    assert repo.relay_states(["ab1", "a_1"]) == {"ab1": "open"}
    assert [c.kind for c in repo.recent_commands("ab1", limit=1)] == [CommandKind.TIME_SYNC]
    assert len(repo.recent_commands("ab1")) == 2 and repo.recent_commands("a_1") == []

    repo.add_events([MeterEvent("ab1", T0 + i, f"k{i}", "", i) for i in range(3)], T0)
    assert [e.kind for e in repo.recent_events(meter_id="ab1", limit=2)] == ["k2", "k1"]
    first = repo.raise_alarm("ab1", "x", "", T0)
    repo.raise_alarm(None, "y", "", T0)
    repo.acknowledge_alarm(first.id, T0)
    assert [a.kind for a in repo.recent_alarms()] == ["y", "x"]
    assert [a.kind for a in repo.recent_alarms(unacknowledged=True)] == ["y"]
    assert [a.kind for a in repo.recent_alarms(meter_id="ab1")] == ["x"]
