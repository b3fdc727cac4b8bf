"""The head-end proper fetches meters' signed event logs over C12.22 (MT1) on its schedule,
verifies them on arrival, stores the events, and alarms on a log that does not hold."""

from __future__ import annotations

from pathlib import Path

from amistack.c1222.eventlog_table import EventLogTables
from amistack.eventlog import EventLog, EventType
from amistack.headend.collector import Mode
from amistack.headend.eventlog_intake import ALARM_KIND
from amistack.securemodule import SoftwareModule
from amistack.sim.fleet import FleetConfig, build_fleet, meter_id


class Edited:
    """An export altered on the meter after signing (one entry's data changed)."""

    def __init__(self, log: EventLog) -> None:
        self.log = log

    def export_lines(self) -> list[str]:
        lines = list(self.log.export_lines())
        i = next(i for i, line in enumerate(lines) if line.startswith("E 1 "))
        lines[i] = lines[i].rsplit(" ", 1)[0] + " 99\n"
        return lines


def test_headend_fetches_verifies_stores_and_alarms(tmp_path: Path) -> None:
    fleet = build_fleet(FleetConfig(meters=2, cells=1, mode=Mode.POLLED, slots=1))
    now = fleet.clock.now
    logs = []
    for i, node in enumerate(fleet.nodes):
        module = SoftwareModule.create(tmp_path / f"m{i}.pem")
        log = EventLog.open(tmp_path / f"m{i}.log", meter_id(i), module, now)
        for k in range(5):
            log.append(EventType.COVER_OPEN if k == 2 else EventType.POWER_RESTORE, b"", now + k)
        log.checkpoint(now + 6)
        logs.append(log)
        fleet.repo.set_eventlog_key(meter_id(i), module.public_key_pem().decode(), now)
        source = log if i == 0 else Edited(log)
        node.server.tables = EventLogTables(node.tables, source, b"AMST")
    assert fleet.headend.fetch_event_logs(now) == 2
    fleet.clock.run_until(now + 30)
    stored = fleet.repo.events(meter_id=meter_id(0), limit=100)
    assert len([e for e in stored if e.kind in ("COVER_OPEN", "POWER_RESTORE")]) == 5
    assert fleet.repo.eventlog_head(meter_id(0)) is not None
    alarms = fleet.repo.alarms(meter_id=meter_id(1))
    assert [a.kind for a in alarms] == [ALARM_KIND] and alarms[0].detail.startswith("edited-entry")
    assert fleet.repo.eventlog_head(meter_id(1)) is None
