"""Shared pieces for the event-log tests: a software module and a small signed log."""

from __future__ import annotations

from pathlib import Path

import pytest

from amistack.eventlog import CheckpointPolicy, EventLog, EventType, FsyncPolicy, LogConfig, Mode
from amistack.securemodule import SoftwareModule

METER = "meter-0001"
T0 = 1_790_000_000.0


@pytest.fixture
def module(tmp_path: Path) -> SoftwareModule:
    return SoftwareModule.create(tmp_path / "module.pem", f"{METER}/eventlog")


@pytest.fixture
def other_module(tmp_path: Path) -> SoftwareModule:
    return SoftwareModule.create(tmp_path / "other.pem", "intruder")


def config(mode: Mode = Mode.MERKLE, every: int | None = 5) -> LogConfig:
    return LogConfig(
        mode=mode,
        checkpoint=CheckpointPolicy(every_entries=every, every_seconds=None),
        fsync=FsyncPolicy.NEVER,
    )


def fill(lg: EventLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        typ = EventType.POWER_FAIL if i % 2 else EventType.POWER_RESTORE
        lg.append(typ, i.to_bytes(2, "big"), T0 + i)


def make_export(
    tmp_path: Path, module: SoftwareModule, n: int = 20, mode: Mode = Mode.MERKLE, name: str = "x"
) -> list[str]:
    """An exported log of n entries with a head every 5 and a final head; its lines."""
    with EventLog.open(tmp_path / f"{name}.store", METER, module, T0, config(mode)) as lg:
        fill(lg, n)
        if lg.unsigned_entries:
            lg.checkpoint(T0 + n)
        return list(lg.export_lines())
