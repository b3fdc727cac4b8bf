"""The demo's fleet chapter: a small utility on the virtual clock with the real engines.

Fifty meters in two cells under one key server and one head-end (`amistack sim fleet`): a
collection day's first hours, every slot complete; then a blackout against a deliberately small
key server (2 authentications/s), run with and without the meters' back-off. The reports
(JSON + PNG) go to DATA_DIR/fleet/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amistack.sim.report import write_report
from amistack.sim.scenarios import ScenarioConfig, run_scenario

METERS, CELLS = 50, 2


def _config(scenario: str) -> ScenarioConfig:
    """Four half-hour slots; the blackout against a key server of 2 authentications/s."""
    return ScenarioConfig(
        scenario=scenario, meters=METERS, cells=CELLS, days=2 / 24, keyserver_auth_rate=2.0,
        keyserver_queue=10, return_window=5.0,
    )  # fmt: skip


@dataclass
class FleetReport:
    slots: str = ""
    complete: bool = False
    blackout: dict[str, Any] = field(default_factory=dict)
    reports: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        on = self.blackout.get("with_backoff", {})
        off = self.blackout.get("without_backoff", {})
        return (
            self.complete
            and on.get("reauthenticated") == METERS
            and off.get("keyserver", {}).get("dropped", 0)
            > on.get("keyserver", {}).get("dropped", 0)
        )

    def lines(self) -> list[str]:
        out = [f"  {METERS} meters in {CELLS} cells, PANA + C12.22 for real: {self.slots}"]
        for key, label in (("with_backoff", "with back-off"), ("without_backoff", "without")):
            run = self.blackout.get(key, {})
            ks = run.get("keyserver", {})
            out.append(
                f"  blackout, key server at 2 auth/s, {label}: 50 % back in {run.get('t50_s')} s, "
                f"100 % in {run.get('t100_s')} s, {ks.get('dropped')} datagrams dropped"
            )
        out.append(f"  reports: {', '.join(self.reports)}")
        return out


def chapter_fleet(data_dir: Path) -> FleetReport:
    report = FleetReport()
    day = run_scenario(_config("day"))
    slots = day["simulated"]["slots"]
    report.complete = slots["slots_complete"] == slots["slots"] > 0
    report.slots = (
        f"{slots['slots_complete']}/{slots['slots']} half-hour slots complete, "
        f"p99 {slots['lateness_p99_s']} s after the boundary"
    )
    blackout = run_scenario(_config("blackout"))
    report.blackout = blackout["simulated"]
    for name, result in (("day", day), ("blackout", blackout)):
        written = write_report(result, data_dir / "fleet" / name)
        report.reports.append(str(written[1]))
    return report
