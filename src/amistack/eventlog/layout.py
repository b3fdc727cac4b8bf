"""Where a meter's event log and its signing key live under a data directory.

    DIR/meters/<ID>/events.log   the append-only store (eventlog.log.EventLog)
    DIR/meters/<ID>/module.pem   the software secure module's key (0600), when no token is used

One layout for the meter that writes the log and for `amistack log` that exports it.
"""

from __future__ import annotations

from pathlib import Path

from amistack.eventlog.record import valid_meter_id


class LayoutError(ValueError):
    """A meter id that cannot name a directory."""


def meter_dir(data_dir: Path | str, meter_id: str) -> Path:
    if not valid_meter_id(meter_id):
        raise LayoutError(f"bad meter id {meter_id!r}")
    return Path(data_dir) / "meters" / meter_id


def log_path(data_dir: Path | str, meter_id: str) -> Path:
    return meter_dir(data_dir, meter_id) / "events.log"


def module_path(data_dir: Path | str, meter_id: str) -> Path:
    return meter_dir(data_dir, meter_id) / "module.pem"
