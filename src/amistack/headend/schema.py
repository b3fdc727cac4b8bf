"""The head-end/MDMS schema (one text for SQLite and PostgreSQL) and the records it stores.

The SQL is written once; `schema_sql(dialect)` fills the few words the two disagree on (the
auto-numbered key, WITHOUT ROWID, PostgreSQL's partitioning of readings by day). Times are
seconds since the epoch (UTC): interval starts as integers aligned to the interval length, other
instants as doubles. Energy is in whole Wh.

A reading is one meter's one interval: the primary key (meter_id, interval_start, length_min)
is what makes ingest idempotent, a resent interval is a duplicate and is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag, StrEnum
from typing import Literal

SCHEMA_VERSION = 1
Dialect = Literal["sqlite", "postgresql"]

INTERVAL_LENGTHS = (15, 30)  # minutes: the load profile's 15-minute and the 30-minute values

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meters (
    meter_id          TEXT PRIMARY KEY,      -- key-server device identity (EAP-PSK ID_P)
    ap_title          TEXT NOT NULL UNIQUE,  -- ANSI C12.22 AP title, dotted OID
    concentrator      TEXT NOT NULL,
    cell              TEXT NOT NULL,
    state             TEXT NOT NULL,         -- installed | commissioned | decommissioned
    installed_at      DOUBLE PRECISION NOT NULL,
    commissioned_at   DOUBLE PRECISION,
    decommissioned_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS meters_concentrator ON meters (concentrator, meter_id);
-- the dashboard's fleet counts by state and its state filter (a scan otherwise: 100,000 meters)
CREATE INDEX IF NOT EXISTS meters_state ON meters (state, meter_id);
CREATE TABLE IF NOT EXISTS readings (
    meter_id       TEXT NOT NULL,
    interval_start BIGINT NOT NULL,          -- epoch seconds, a multiple of length_min * 60
    length_min     INTEGER NOT NULL,         -- 15 or 30
    forward_wh     BIGINT NOT NULL,          -- active energy imported in the interval
    reverse_wh     BIGINT NOT NULL,          -- active energy exported (rooftop PV)
    status         INTEGER NOT NULL,         -- the meter's interval status flags
    vee_flags      INTEGER NOT NULL DEFAULT 0,  -- set by VEE, values are never altered
    received_at    DOUBLE PRECISION NOT NULL,
    key_id         INTEGER NOT NULL,         -- C12.22 key id the message was protected under
    PRIMARY KEY (meter_id, interval_start, length_min)
){without_rowid}{partitioned};
{default_partition}
CREATE TABLE IF NOT EXISTS events (
    id          {serial},
    meter_id    TEXT NOT NULL,
    seq         BIGINT,                      -- the meter's event-log sequence number, if any
    at          DOUBLE PRECISION NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    UNIQUE (meter_id, seq)
);
CREATE INDEX IF NOT EXISTS events_meter ON events (meter_id, id);
CREATE TABLE IF NOT EXISTS commands (
    id           {serial},
    meter_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,              -- demand_response | disconnect | reconnect | time_sync
    params       TEXT NOT NULL,              -- JSON object
    state        TEXT NOT NULL,              -- pending | sent | confirmed | failed | cancelled
    created_at   DOUBLE PRECISION NOT NULL,
    updated_at   DOUBLE PRECISION NOT NULL,
    confirmation TEXT,                       -- the meter's procedure response, as text
    relay_state  TEXT,                       -- read back after disconnect/reconnect
    reason       TEXT
);
CREATE INDEX IF NOT EXISTS commands_meter ON commands (meter_id, id);
CREATE INDEX IF NOT EXISTS commands_state ON commands (state, id);
CREATE TABLE IF NOT EXISTS alarms (
    id              {serial},
    meter_id        TEXT,
    kind            TEXT NOT NULL,           -- e.g. eventlog_verification_failed, vee_gap
    detail          TEXT NOT NULL,
    raised_at       DOUBLE PRECISION NOT NULL,
    acknowledged_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS alarms_meter ON alarms (meter_id, id);
CREATE TABLE IF NOT EXISTS eventlog_keys (
    meter_id       TEXT PRIMARY KEY,         -- the meter whose secure module holds the key
    public_key_pem TEXT NOT NULL,            -- SubjectPublicKeyInfo PEM, EC P-256
    key_id         TEXT NOT NULL,            -- hex SHA-256 of the DER SPKI (the heads' key id)
    updated_at     DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS eventlog_heads (
    meter_id    TEXT PRIMARY KEY,            -- the last signed head accepted from this meter
    mode        TEXT NOT NULL,               -- merkle | patent
    size        BIGINT NOT NULL,             -- entries the head covers
    head        TEXT NOT NULL,               -- its H/P line (docs/event-log.md)
    accepted_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS eventlog_head_history (
    meter_id    TEXT NOT NULL,               -- heads retired by a SECADM reset, never erased
    mode        TEXT NOT NULL,
    size        BIGINT NOT NULL,
    head        TEXT NOT NULL,
    accepted_at DOUBLE PRECISION NOT NULL,
    retired_at  DOUBLE PRECISION NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS eventlog_head_history_meter ON eventlog_head_history (meter_id);
CREATE TABLE IF NOT EXISTS topologies (
    concentrator TEXT PRIMARY KEY,           -- the DODAG root that reported (its last report only)
    reported_at  DOUBLE PRECISION NOT NULL,
    nodes        TEXT NOT NULL               -- JSON list of validated nodes (api.TopologyNodeIn)
);
"""

_DIALECT_WORDS: dict[str, dict[str, str]] = {
    "sqlite": {
        "serial": "INTEGER PRIMARY KEY",
        "without_rowid": " WITHOUT ROWID",
        "partitioned": "",
        "default_partition": "",
    },
    # PostgreSQL: readings partitioned by time (declarative range partitioning on
    # interval_start; storage.PostgresRepository.maintain_partitions creates them ahead and
    # drops expired ones). The default partition catches a reading no partition covers (a
    # meter's clock far off) until its period's partition is made and takes its rows.
    "postgresql": {
        "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "without_rowid": "",
        "partitioned": " PARTITION BY RANGE (interval_start)",
        "default_partition": "CREATE TABLE IF NOT EXISTS readings_default PARTITION OF readings "
        "DEFAULT;",
    },
}


def schema_sql(dialect: Dialect) -> str:
    return _SCHEMA.format(**_DIALECT_WORDS[dialect])


class ReadingStatus(IntFlag):
    """The meter's own interval status (a subset of C12.19 Table 64 interval status)."""

    NONE = 0
    POWER_FAIL = 0x01
    CLOCK_ADJUSTED = 0x02
    PARTIAL = 0x04  # the interval was not complete (power fail, clock set)
    OVERFLOW = 0x08
    ESTIMATED = 0x10
    NO_DATA = 0x20  # no supply for the whole interval: the values mean nothing (not 0 Wh)
    DISCONNECTED = 0x40  # the remote switch was open (a real 0 Wh)
    REVERSE_FLOW = 0x80  # energy was exported during the interval

    @staticmethod
    def has_data(status: int) -> bool:
        return not status & ReadingStatus.NO_DATA


class VeeFlag(IntFlag):
    NONE = 0
    SPIKE = 0x01  # far above the meter's recent median
    SUM_MISMATCH = 0x02  # 15-minute intervals do not add up to the 30-minute value
    REGISTER_MISMATCH = 0x04  # intervals do not add up to the register delta


@dataclass(frozen=True, slots=True)
class IntervalReading:
    """One decoded interval reading, as the C12.22 layer hands it over."""

    meter_id: str
    interval_start: int  # epoch seconds, aligned to length_min
    length_min: int
    forward_wh: int
    reverse_wh: int
    status: int
    key_id: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.meter_id, self.interval_start, self.length_min)

    def row(self, received_at: float) -> tuple[str, int, int, int, int, int, float, int]:
        """The readings-table row, in the column order of storage.READING_COLUMNS."""
        return (
            self.meter_id,
            self.interval_start,
            self.length_min,
            self.forward_wh,
            self.reverse_wh,
            self.status,
            received_at,
            self.key_id,
        )

    def problem(self) -> str | None:
        """Why this reading cannot be stored, or None."""
        if self.length_min not in INTERVAL_LENGTHS:
            return f"interval length {self.length_min} min is not 15 or 30"
        if self.interval_start % (self.length_min * 60):
            return "interval start is not aligned to its length"
        if self.forward_wh < 0 or self.reverse_wh < 0:
            return "negative energy"
        if not self.meter_id:
            return "empty meter id"
        return None


@dataclass(frozen=True, slots=True)
class StoredReading:
    meter_id: str
    interval_start: int
    length_min: int
    forward_wh: int
    reverse_wh: int
    status: int
    vee_flags: int
    received_at: float
    key_id: int


@dataclass(frozen=True, slots=True)
class MeterEvent:
    meter_id: str
    at: float
    kind: str
    detail: str = ""
    seq: int | None = None  # the meter's event-log sequence; makes re-delivery idempotent


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    meter_id: str
    seq: int | None
    at: float
    kind: str
    detail: str
    received_at: float


class CommandKind(StrEnum):
    DEMAND_RESPONSE = "demand_response"  # load limit / curtailment
    DISCONNECT = "disconnect"
    RECONNECT = "reconnect"
    TIME_SYNC = "time_sync"
    READ = "read"  # on-demand read of the current registers (ST23): energy, demand, TOU tiers


class CommandState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    CANCELLED = "cancelled"


COMMAND_TRANSITIONS: dict[CommandState, frozenset[CommandState]] = {
    CommandState.PENDING: frozenset(
        {CommandState.SENT, CommandState.FAILED, CommandState.CANCELLED}
    ),
    CommandState.SENT: frozenset({CommandState.CONFIRMED, CommandState.FAILED}),
    CommandState.CONFIRMED: frozenset(),
    CommandState.FAILED: frozenset(),
    CommandState.CANCELLED: frozenset(),
}

# The relay state a confirmed switch command must read back.
EXPECTED_RELAY: dict[CommandKind, str] = {
    CommandKind.DISCONNECT: "open",
    CommandKind.RECONNECT: "closed",
}


@dataclass(frozen=True, slots=True)
class Command:
    id: int
    meter_id: str
    kind: CommandKind
    params: str  # JSON object text
    state: CommandState
    created_at: float
    updated_at: float
    confirmation: str | None
    relay_state: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class EventLogHead:
    """The last event-log head the MDMS accepted for a meter (the `HeadStore` of
    eventlog/verify.py kept in the repository): a later upload must extend it."""

    meter_id: str
    mode: str  # "merkle" | "patent" (eventlog.record.Mode values)
    size: int
    head: str  # the signed head's export line (H or P)
    accepted_at: float


@dataclass(frozen=True, slots=True)
class Alarm:
    id: int
    meter_id: str | None
    kind: str
    detail: str
    raised_at: float
    acknowledged_at: float | None
