"""Head-end storage: one repository interface, two backends sharing one schema (schema.py).

- `SqliteRepository`: the embedded default, DIR/headend.db, WAL with synchronous=FULL, so a
  committed batch survives a process kill and a power cut; bulk ingest is one `executemany` of
  `INSERT ... ON CONFLICT DO NOTHING` in one transaction.
- `PostgresRepository` (psycopg 3): bulk ingest COPYs the batch into a temporary staging table and
  moves it with `INSERT ... SELECT ... ON CONFLICT DO NOTHING`, in one transaction; commit waits
  for the WAL flush (synchronous_commit on, the server default).

`store_readings` returns only once the batch is durable: the caller (ingest.Ingestor, then the
C12.22 layer) acknowledges a meter's message only after that. Duplicates (same meter, interval
start and length) are ignored and counted, so a meter resending an unacknowledged message is
harmless. Timestamps are passed in; nothing here reads a clock.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from amistack.headend.registry import (
    HeadendError,
    Meter,
    MeterState,
    check_eventlog_key,
    check_meter_fields,
    check_transition,
)
from amistack.headend.schema import (
    COMMAND_TRANSITIONS,
    EXPECTED_RELAY,
    SCHEMA_VERSION,
    Alarm,
    Command,
    CommandKind,
    CommandState,
    Dialect,
    EventLogHead,
    IntervalReading,
    MeterEvent,
    StoredEvent,
    StoredReading,
    schema_sql,
)
from amistack.pgconn import connect, is_postgres_url, qmark_to_pyformat

logger = logging.getLogger(__name__)

MAX_PAGE = 10_000
MAX_TOPOLOGIES = 10_000  # concentrators whose last DODAG report is kept (one row each)
READING_COLUMNS = (
    "meter_id, interval_start, length_min, forward_wh, reverse_wh, status, received_at, key_id"
)
_STORED_READING = (
    "meter_id, interval_start, length_min, forward_wh, reverse_wh, status, vee_flags, "
    "received_at, key_id"
)
_METER = (
    "meter_id, ap_title, concentrator, cell, state, installed_at, commissioned_at, "
    "decommissioned_at"
)
_COMMAND = (
    "id, meter_id, kind, params, state, created_at, updated_at, confirmation, relay_state, reason"
)
_EVENT = "id, meter_id, seq, at, kind, detail, received_at"
_ALARM = "id, meter_id, kind, detail, raised_at, acknowledged_at"
_HEAD = "meter_id, mode, size, head, accepted_at"


@dataclass(frozen=True)
class StoreResult:
    """What one durable batch did: rows new to the table and rows already there."""

    inserted: int
    duplicates: int


class ReadingRepository(Protocol):
    """The head-end's storage. Every method is one transaction; every write is durable on return."""

    dialect: Dialect

    # meters
    def register_meter(
        self,
        meter_id: str,
        ap_title: str,
        concentrator: str,
        cell: str,
        now: float,
        *,
        eventlog_key: str | bytes | None = None,
    ) -> Meter: ...
    def commission_meter(self, meter_id: str, now: float) -> Meter: ...
    def decommission_meter(self, meter_id: str, now: float) -> Meter: ...
    def get_meter(self, meter_id: str) -> Meter | None: ...
    def meter_by_ap_title(self, ap_title: str) -> Meter | None: ...
    def list_meters(
        self,
        *,
        state: MeterState | None = None,
        concentrator: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[Meter]: ...

    # readings
    def store_readings(
        self, readings: Sequence[IntervalReading], received_at: float
    ) -> StoreResult: ...
    def readings(
        self,
        meter_id: str,
        start: int,
        end: int,
        *,
        length_min: int | None = None,
        after: tuple[int, int] | None = None,
        limit: int = 1000,
    ) -> list[StoredReading]: ...
    def count_readings(self, meter_id: str | None = None) -> int: ...
    def flag_readings(self, flags: Sequence[tuple[str, int, int, int]]) -> int: ...

    # events, commands, alarms
    def add_events(self, events: Sequence[MeterEvent], received_at: float) -> StoreResult: ...
    def events(
        self, *, meter_id: str | None = None, after_id: int = 0, limit: int = 100
    ) -> list[StoredEvent]: ...
    def create_command(
        self, meter_id: str, kind: CommandKind, params: Mapping[str, Any], now: float
    ) -> Command: ...
    def update_command(
        self,
        command_id: int,
        state: CommandState,
        now: float,
        *,
        confirmation: str | None = None,
        relay_state: str | None = None,
        reason: str | None = None,
    ) -> Command: ...
    def get_command(self, command_id: int) -> Command | None: ...
    def commands(
        self,
        *,
        meter_id: str | None = None,
        state: CommandState | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[Command]: ...
    def raise_alarm(self, meter_id: str | None, kind: str, detail: str, now: float) -> Alarm: ...
    def acknowledge_alarm(self, alarm_id: int, now: float) -> Alarm: ...
    def alarms(
        self,
        *,
        meter_id: str | None = None,
        unacknowledged: bool = False,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[Alarm]: ...

    # the event log's trust anchors: the meter's public key and the last head accepted
    def set_eventlog_key(self, meter_id: str, public_key_pem: str | bytes, now: float) -> str: ...
    def eventlog_key(self, meter_id: str) -> tuple[str, str] | None: ...
    def eventlog_keyed(self, meter_ids: Sequence[str]) -> set[str]: ...
    def eventlog_head(self, meter_id: str) -> EventLogHead | None: ...
    def reset_eventlog_head(
        self, meter_id: str, now: float, reason: str
    ) -> EventLogHead | None: ...
    def eventlog_head_history(self, meter_id: str) -> list[EventLogHead]: ...
    def accept_eventlog(
        self,
        head: EventLogHead,
        events: Sequence[MeterEvent],
        previous_size: int | None,
        received_at: float,
    ) -> StoreResult: ...

    # the dashboard's views (read only; headend/dashboard): counts, one page's latest state
    def meter_counts(self) -> dict[str, int]: ...
    def status_counts(self, stale_before: float) -> dict[str, int]: ...
    def find_meters(
        self, *, text: str = "", state: MeterState | None = None, after: str = "", limit: int = 50
    ) -> tuple[list[Meter], int]: ...
    def latest_readings(self, meter_ids: Sequence[str]) -> dict[str, StoredReading]: ...
    def readings_of(
        self, meter_ids: Sequence[str], start: int, end: int
    ) -> list[StoredReading]: ...
    def relay_states(self, meter_ids: Sequence[str]) -> dict[str, str]: ...
    def key_ids_seen(
        self, meter_ids: Sequence[str], since: float
    ) -> list[tuple[str, int, float, float, int]]: ...
    def recent_events(
        self, *, meter_id: str | None = None, limit: int = 100
    ) -> list[StoredEvent]: ...
    def recent_alarms(
        self, *, meter_id: str | None = None, unacknowledged: bool = False, limit: int = 100
    ) -> list[Alarm]: ...
    def recent_commands(self, meter_id: str, limit: int = 100) -> list[Command]: ...
    def put_topology(self, concentrator: str, nodes_json: str, now: float) -> None: ...
    def topologies(self) -> dict[str, float]: ...
    def topology(self, concentrator: str) -> tuple[float, str] | None: ...
    def close(self) -> None: ...


class _Tx(Protocol):
    def run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


def _meter(row: tuple[Any, ...]) -> Meter:
    return Meter(row[0], row[1], row[2], row[3], MeterState(row[4]), row[5], row[6], row[7])


def _command(row: tuple[Any, ...]) -> Command:
    return Command(row[0], row[1], CommandKind(row[2]), row[3], CommandState(row[4]), *row[5:10])


def _marks(values: Sequence[Any]) -> str:
    """The placeholders of an `IN (...)` list of these values."""
    return ", ".join("?" * len(values))


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise HeadendError("invalid", f"limit must be between 1 and {MAX_PAGE}")
    return limit


class _SqlRepository(ABC):
    """The SQL both backends share; subclasses supply transactions and the bulk insert."""

    dialect: Dialect

    @abstractmethod
    def _tx(self) -> AbstractContextManager[_Tx]: ...

    @abstractmethod
    def _insert_readings(self, rows: list[tuple[Any, ...]]) -> int: ...

    def _one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        with self._tx() as tx:
            rows = tx.run(sql, params)
        return rows[0] if rows else None

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A query that writes nothing. Backends run it on a reader connection of the calling
        thread (never behind the writer's lock): an API range query does not wait for the
        ingest commit, and the commit does not wait for it."""
        with self._tx() as tx:
            return tx.run(sql, params)

    def _read_one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        rows = self._read(sql, params)
        return rows[0] if rows else None

    # -- meters --------------------------------------------------------------------------------

    def register_meter(
        self,
        meter_id: str,
        ap_title: str,
        concentrator: str,
        cell: str,
        now: float,
        *,
        eventlog_key: str | bytes | None = None,
    ) -> Meter:
        """Register an installed meter; `eventlog_key` (its secure module's public key, PEM)
        may be given now or later (`set_eventlog_key`)."""
        check_meter_fields(meter_id, ap_title, concentrator, cell)
        key = None if eventlog_key is None else check_eventlog_key(eventlog_key)
        with self._tx() as tx:
            rows = tx.run(
                f"INSERT INTO meters ({_METER}) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL) "
                f"ON CONFLICT DO NOTHING RETURNING {_METER}",
                (meter_id, ap_title, concentrator, cell, MeterState.INSTALLED.value, now),
            )
            if rows and key is not None:
                self._put_key(tx, meter_id, key, now)
        row = rows[0] if rows else None
        if row is None:
            raise HeadendError(
                "exists", f"a meter with id {meter_id!r} or AP title {ap_title!r} exists"
            )
        logger.info("meter registered", extra={"meter_id": meter_id, "ap_title": ap_title})
        return _meter(row)

    def _move(self, meter_id: str, to: MeterState, column: str, now: float) -> Meter:
        with self._tx() as tx:
            rows = tx.run(f"SELECT {_METER} FROM meters WHERE meter_id = ?", (meter_id,))
            if not rows:
                raise HeadendError("not_found", f"no meter {meter_id!r}")
            meter = _meter(rows[0])
            check_transition(meter, to)
            rows = tx.run(
                f"UPDATE meters SET state = ?, {column} = ? WHERE meter_id = ? AND state = ? "
                f"RETURNING {_METER}",
                (to.value, now, meter_id, meter.state.value),
            )
        if not rows:  # a concurrent transition won
            raise HeadendError("invalid_transition", f"meter {meter_id!r} changed state meanwhile")
        logger.info("meter %s", to.value, extra={"meter_id": meter_id})
        return _meter(rows[0])

    def commission_meter(self, meter_id: str, now: float) -> Meter:
        return self._move(meter_id, MeterState.COMMISSIONED, "commissioned_at", now)

    def decommission_meter(self, meter_id: str, now: float) -> Meter:
        return self._move(meter_id, MeterState.DECOMMISSIONED, "decommissioned_at", now)

    def get_meter(self, meter_id: str) -> Meter | None:
        row = self._read_one(f"SELECT {_METER} FROM meters WHERE meter_id = ?", (meter_id,))
        return _meter(row) if row else None

    def meter_by_ap_title(self, ap_title: str) -> Meter | None:
        row = self._read_one(f"SELECT {_METER} FROM meters WHERE ap_title = ?", (ap_title,))
        return _meter(row) if row else None

    def list_meters(
        self,
        *,
        state: MeterState | None = None,
        concentrator: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[Meter]:
        where, params = ["meter_id > ?"], [after or ""]
        if state is not None:
            where.append("state = ?")
            params.append(state.value)
        if concentrator is not None:
            where.append("concentrator = ?")
            params.append(concentrator)
        rows = self._read(
            f"SELECT {_METER} FROM meters WHERE {' AND '.join(where)} "
            f"ORDER BY meter_id LIMIT {_limit(limit)}",
            params,
        )
        return [_meter(r) for r in rows]

    # -- readings ------------------------------------------------------------------------------

    def store_readings(
        self, readings: Sequence[IntervalReading], received_at: float
    ) -> StoreResult:
        rows = []
        for r in readings:
            problem = r.problem()
            if problem is not None:
                raise HeadendError("invalid", f"reading {r.key}: {problem}")
            rows.append(r.row(received_at))
        if not rows:
            return StoreResult(0, 0)
        inserted = self._insert_readings(rows)
        return StoreResult(inserted, len(rows) - inserted)

    def readings(
        self,
        meter_id: str,
        start: int,
        end: int,
        *,
        length_min: int | None = None,
        after: tuple[int, int] | None = None,
        limit: int = 1000,
    ) -> list[StoredReading]:
        """Readings of one meter with start <= interval_start < end, by (start, length)."""
        where = ["meter_id = ?", "interval_start >= ?", "interval_start < ?"]
        params: list[Any] = [meter_id, start, end]
        if length_min is not None:
            where.append("length_min = ?")
            params.append(length_min)
        if after is not None:
            where.append("(interval_start > ? OR (interval_start = ? AND length_min > ?))")
            params += [after[0], after[0], after[1]]
        rows = self._read(
            f"SELECT {_STORED_READING} FROM readings WHERE {' AND '.join(where)} "
            f"ORDER BY interval_start, length_min LIMIT {_limit(limit)}",
            params,
        )
        return [StoredReading(*r) for r in rows]

    def count_readings(self, meter_id: str | None = None) -> int:
        if meter_id is None:
            row = self._read_one("SELECT COUNT(*) FROM readings", ())
        else:
            row = self._read_one("SELECT COUNT(*) FROM readings WHERE meter_id = ?", (meter_id,))
        assert row is not None  # COUNT always answers one row
        return int(row[0])

    def flag_readings(self, flags: Sequence[tuple[str, int, int, int]]) -> int:
        """OR VEE flags into readings (meter_id, interval_start, length_min, flags); values stay."""
        changed = 0
        with self._tx() as tx:
            for meter_id, start, length, flag in flags:
                changed += len(
                    tx.run(
                        "UPDATE readings SET vee_flags = vee_flags | ? WHERE meter_id = ? "
                        "AND interval_start = ? AND length_min = ? RETURNING meter_id",
                        (int(flag), meter_id, start, length),
                    )
                )
        return changed

    # -- events --------------------------------------------------------------------------------

    def add_events(self, events: Sequence[MeterEvent], received_at: float) -> StoreResult:
        inserted = 0
        with self._tx() as tx:
            for e in events:
                inserted += len(
                    tx.run(
                        "INSERT INTO events (meter_id, seq, at, kind, detail, received_at) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                        (e.meter_id, e.seq, e.at, e.kind, e.detail, received_at),
                    )
                )
        return StoreResult(inserted, len(events) - inserted)

    def events(
        self, *, meter_id: str | None = None, after_id: int = 0, limit: int = 100
    ) -> list[StoredEvent]:
        where, params = ["id > ?"], [after_id]
        if meter_id is not None:
            where.append("meter_id = ?")
            params.append(meter_id)  # type: ignore[arg-type]
        rows = self._read(
            f"SELECT {_EVENT} FROM events WHERE {' AND '.join(where)} "
            f"ORDER BY id LIMIT {_limit(limit)}",
            params,
        )
        return [StoredEvent(*r) for r in rows]

    # -- event-log trust anchors -------------------------------------------------------------

    @staticmethod
    def _put_key(tx: _Tx, meter_id: str, key: tuple[str, str], now: float) -> None:
        tx.run(
            "INSERT INTO eventlog_keys (meter_id, public_key_pem, key_id, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (meter_id) DO UPDATE SET "
            "public_key_pem = excluded.public_key_pem, key_id = excluded.key_id, "
            "updated_at = excluded.updated_at",
            (meter_id, key[0], key[1], now),
        )

    def set_eventlog_key(self, meter_id: str, public_key_pem: str | bytes, now: float) -> str:
        """Register (or replace) the meter's event-log public key; returns its key id (hex).
        The accepted head stays: a log signed by another key must still extend it."""
        key = check_eventlog_key(public_key_pem)
        with self._tx() as tx:
            if not tx.run("SELECT 1 FROM meters WHERE meter_id = ?", (meter_id,)):
                raise HeadendError("not_found", f"no meter {meter_id!r}")
            self._put_key(tx, meter_id, key, now)
        logger.info("event-log key set", extra={"meter_id": meter_id, "key_id": key[1]})
        return key[1]

    def eventlog_key(self, meter_id: str) -> tuple[str, str] | None:
        """(PEM, key id hex) of the meter's event-log key, or None."""
        row = self._read_one(
            "SELECT public_key_pem, key_id FROM eventlog_keys WHERE meter_id = ?", (meter_id,)
        )
        return (row[0], row[1]) if row else None

    def eventlog_keyed(self, meter_ids: Sequence[str]) -> set[str]:
        """Which of these meters have an event-log key: one query for a page of meters, not
        one per meter (the head-end asks for every meter it collects, every hour)."""
        if not meter_ids:
            return set()
        rows = self._read(
            f"SELECT meter_id FROM eventlog_keys WHERE meter_id IN ({_marks(meter_ids)})",
            list(meter_ids),
        )
        return {str(r[0]) for r in rows}

    def eventlog_head(self, meter_id: str) -> EventLogHead | None:
        row = self._read_one(f"SELECT {_HEAD} FROM eventlog_heads WHERE meter_id = ?", (meter_id,))
        return EventLogHead(*row) if row else None

    def reset_eventlog_head(self, meter_id: str, now: float, reason: str) -> EventLogHead | None:
        """Retire the accepted head into `eventlog_head_history` (nothing is erased); the next
        upload is trusted on first use. Returns the retired head (None: there was none)."""
        with self._tx() as tx:
            rows = tx.run(f"SELECT {_HEAD} FROM eventlog_heads WHERE meter_id = ?", (meter_id,))
            if not rows:
                return None
            tx.run(
                f"INSERT INTO eventlog_head_history ({_HEAD}, retired_at, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*rows[0], now, reason),
            )
            tx.run("DELETE FROM eventlog_heads WHERE meter_id = ?", (meter_id,))
        logger.warning("event-log head reset", extra={"meter_id": meter_id, "reason": reason})
        return EventLogHead(*rows[0])

    def eventlog_head_history(self, meter_id: str) -> list[EventLogHead]:
        """The heads retired by resets, oldest first."""
        with self._tx() as tx:
            rows = tx.run(
                f"SELECT {_HEAD} FROM eventlog_head_history WHERE meter_id = ? ORDER BY retired_at",
                (meter_id,),
            )
        return [EventLogHead(*r) for r in rows]

    def accept_eventlog(
        self,
        head: EventLogHead,
        events: Sequence[MeterEvent],
        previous_size: int | None,
        received_at: float,
    ) -> StoreResult:
        """One transaction: store a verified upload's events (deduplicated on the meter's
        sequence number) and make `head` the accepted one -- only if the accepted head is still
        the one it was verified against (`previous_size`, None: none yet); otherwise nothing is
        stored and HeadendError("invalid_transition") says another upload won the race."""
        inserted = 0
        with self._tx() as tx:
            rows = tx.run("SELECT size FROM eventlog_heads WHERE meter_id = ?", (head.meter_id,))
            now_size = int(rows[0][0]) if rows else None
            if now_size != previous_size:
                raise HeadendError(
                    "invalid_transition",
                    f"the accepted event-log head of {head.meter_id!r} changed meanwhile",
                )
            for e in events:
                inserted += len(
                    tx.run(
                        "INSERT INTO events (meter_id, seq, at, kind, detail, received_at) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                        (e.meter_id, e.seq, e.at, e.kind, e.detail, received_at),
                    )
                )
            tx.run(
                f"INSERT INTO eventlog_heads ({_HEAD}) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (meter_id) DO UPDATE SET mode = excluded.mode, "
                "size = excluded.size, head = excluded.head, accepted_at = excluded.accepted_at",
                (head.meter_id, head.mode, head.size, head.head, head.accepted_at),
            )
        return StoreResult(inserted, len(events) - inserted)

    # -- commands ------------------------------------------------------------------------------

    def create_command(
        self, meter_id: str, kind: CommandKind, params: Mapping[str, Any], now: float
    ) -> Command:
        kind = CommandKind(kind)
        with self._tx() as tx:
            rows = tx.run("SELECT state FROM meters WHERE meter_id = ?", (meter_id,))
            if not rows:
                raise HeadendError("not_found", f"no meter {meter_id!r}")
            if rows[0][0] == MeterState.DECOMMISSIONED.value:
                raise HeadendError("invalid", f"meter {meter_id!r} is decommissioned")
            rows = tx.run(
                "INSERT INTO commands (meter_id, kind, params, state, created_at, updated_at) "
                f"VALUES (?, ?, ?, ?, ?, ?) RETURNING {_COMMAND}",
                (
                    meter_id,
                    kind.value,
                    json.dumps(dict(params), sort_keys=True),
                    CommandState.PENDING.value,
                    now,
                    now,
                ),
            )
        logger.info("command created", extra={"meter_id": meter_id, "kind": kind.value})
        return _command(rows[0])

    def update_command(
        self,
        command_id: int,
        state: CommandState,
        now: float,
        *,
        confirmation: str | None = None,
        relay_state: str | None = None,
        reason: str | None = None,
    ) -> Command:
        """Move a command along pending -> sent -> confirmed|failed (or pending -> cancelled).

        A disconnect/reconnect is confirmed only with the relay state read back after it, and
        only if that is the state the command asked for.
        """
        state = CommandState(state)
        with self._tx() as tx:
            rows = tx.run(f"SELECT {_COMMAND} FROM commands WHERE id = ?", (command_id,))
            if not rows:
                raise HeadendError("not_found", f"no command {command_id}")
            cmd = _command(rows[0])
            if state not in COMMAND_TRANSITIONS[cmd.state]:
                raise HeadendError(
                    "invalid_transition",
                    f"command {command_id} is {cmd.state.value}; it cannot become {state.value}",
                )
            expected = EXPECTED_RELAY.get(cmd.kind)
            if state is CommandState.CONFIRMED and expected is not None and relay_state != expected:
                raise HeadendError(
                    "invalid",
                    f"a {cmd.kind.value} is confirmed only by reading back relay state "
                    f"{expected!r} (got {relay_state!r})",
                )
            rows = tx.run(
                "UPDATE commands SET state = ?, updated_at = ?, "
                "confirmation = COALESCE(?, confirmation), "
                "relay_state = COALESCE(?, relay_state), reason = COALESCE(?, reason) "
                f"WHERE id = ? AND state = ? RETURNING {_COMMAND}",
                (state.value, now, confirmation, relay_state, reason, command_id, cmd.state.value),
            )
        if not rows:
            raise HeadendError("invalid_transition", f"command {command_id} changed meanwhile")
        return _command(rows[0])

    def get_command(self, command_id: int) -> Command | None:
        row = self._read_one(f"SELECT {_COMMAND} FROM commands WHERE id = ?", (command_id,))
        return _command(row) if row else None

    def commands(
        self,
        *,
        meter_id: str | None = None,
        state: CommandState | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[Command]:
        where: list[str] = ["id > ?"]
        params: list[Any] = [after_id]
        if meter_id is not None:
            where.append("meter_id = ?")
            params.append(meter_id)
        if state is not None:
            where.append("state = ?")
            params.append(CommandState(state).value)
        rows = self._read(
            f"SELECT {_COMMAND} FROM commands WHERE {' AND '.join(where)} "
            f"ORDER BY id LIMIT {_limit(limit)}",
            params,
        )
        return [_command(r) for r in rows]

    # -- mesh topologies -----------------------------------------------------------------------

    def put_topology(self, concentrator: str, nodes_json: str, now: float) -> None:
        """Keep `concentrator`'s latest DODAG report (replacing the last one); a new
        concentrator past MAX_TOPOLOGIES is refused (too_large), so the table stays bounded."""
        with self._tx() as tx:
            known = tx.run("SELECT 1 FROM topologies WHERE concentrator = ?", (concentrator,))
            if not known:
                (count,) = tx.run("SELECT COUNT(*) FROM topologies")[0]
                if count >= MAX_TOPOLOGIES:
                    raise HeadendError(
                        "too_large", f"{MAX_TOPOLOGIES} concentrators have reported already"
                    )
            tx.run(
                "INSERT INTO topologies (concentrator, reported_at, nodes) VALUES (?, ?, ?) "
                "ON CONFLICT (concentrator) DO UPDATE SET reported_at = excluded.reported_at, "
                "nodes = excluded.nodes",
                (concentrator, now, nodes_json),
            )

    def topologies(self) -> dict[str, float]:
        """concentrator -> when it last reported, of every stored report (no nodes: a reader
        loads the reports it can show one by one, `topology`)."""
        rows = self._read("SELECT concentrator, reported_at FROM topologies ORDER BY concentrator")
        return {c: at for c, at in rows}

    def topology(self, concentrator: str) -> tuple[float, str] | None:
        """(reported_at, the nodes' JSON) of `concentrator`'s last report."""
        row = self._read_one(
            "SELECT reported_at, nodes FROM topologies WHERE concentrator = ?", (concentrator,)
        )
        return None if row is None else (row[0], row[1])

    # -- alarms --------------------------------------------------------------------------------

    def raise_alarm(self, meter_id: str | None, kind: str, detail: str, now: float) -> Alarm:
        row = self._one(
            f"INSERT INTO alarms (meter_id, kind, detail, raised_at) VALUES (?, ?, ?, ?) "
            f"RETURNING {_ALARM}",
            (meter_id, kind, detail, now),
        )
        assert row is not None  # INSERT ... RETURNING answers its row
        logger.warning("alarm %s", kind, extra={"meter_id": meter_id, "detail": detail})
        return Alarm(*row)

    def acknowledge_alarm(self, alarm_id: int, now: float) -> Alarm:
        row = self._one(
            "UPDATE alarms SET acknowledged_at = COALESCE(acknowledged_at, ?) WHERE id = ? "
            f"RETURNING {_ALARM}",
            (now, alarm_id),
        )
        if row is None:
            raise HeadendError("not_found", f"no alarm {alarm_id}")
        return Alarm(*row)

    def alarms(
        self,
        *,
        meter_id: str | None = None,
        unacknowledged: bool = False,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[Alarm]:
        where: list[str] = ["id > ?"]
        params: list[Any] = [after_id]
        if meter_id is not None:
            where.append("meter_id = ?")
            params.append(meter_id)
        if unacknowledged:
            where.append("acknowledged_at IS NULL")
        rows = self._read(
            f"SELECT {_ALARM} FROM alarms WHERE {' AND '.join(where)} "
            f"ORDER BY id LIMIT {_limit(limit)}",
            params,
        )
        return [Alarm(*r) for r in rows]

    # -- the dashboard's views (read only) -------------------------------------------------------

    def meter_counts(self) -> dict[str, int]:
        """Meters by registry state (one scan of `meters`: ~10 ms at 100,000 meters)."""
        rows = self._read("SELECT state, COUNT(*) FROM meters GROUP BY state")
        return {str(state): int(n) for state, n in rows}

    def status_counts(self, stale_before: float) -> dict[str, int]:
        """The whole fleet's meters by what their data says: `stale` (commissioned, and the
        newest reading, by interval start, received before `stale_before` or none) and
        `disconnected` (the relay last read back open). Two index lookups per commissioned
        meter (readings' primary key) and one per meter with a switch command."""
        stale = self._read_one(
            "SELECT COUNT(*) FROM meters m WHERE state = 'commissioned' AND NOT EXISTS ("
            "SELECT 1 FROM readings r WHERE r.meter_id = m.meter_id AND r.received_at >= ? "
            "AND r.interval_start = (SELECT MAX(interval_start) FROM readings x "
            "WHERE x.meter_id = m.meter_id))",
            [stale_before],
        )
        open_ = self._read_one(
            "SELECT COUNT(*) FROM commands c WHERE relay_state = 'open' AND id = ("
            "SELECT MAX(id) FROM commands x WHERE x.meter_id = c.meter_id "
            "AND x.relay_state IS NOT NULL)",
            [],
        )
        return {
            "stale": int(stale[0]) if stale else 0,
            "disconnected": int(open_[0]) if open_ else 0,
        }

    def find_meters(
        self, *, text: str = "", state: MeterState | None = None, after: str = "", limit: int = 50
    ) -> tuple[list[Meter], int]:
        """One page of meters whose id, AP title or concentrator contains `text`, in id order
        after `after` (keyset), and how many match in all."""
        where, params = [], []
        if text:
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"
            where.append(
                "(meter_id LIKE ? ESCAPE '\\' OR ap_title LIKE ? ESCAPE '\\' "
                "OR concentrator LIKE ? ESCAPE '\\')"
            )
            params += [pattern, pattern, pattern]
        if state is not None:
            where.append("state = ?")
            params.append(state.value)
        match = " AND ".join(where) or "1 = 1"
        total = self._read_one(f"SELECT COUNT(*) FROM meters WHERE {match}", params)
        rows = self._read(
            f"SELECT {_METER} FROM meters WHERE {match} AND meter_id > ? "
            f"ORDER BY meter_id LIMIT {_limit(limit)}",
            [*params, after],
        )
        return [_meter(r) for r in rows], int(total[0]) if total else 0

    def latest_readings(self, meter_ids: Sequence[str]) -> dict[str, StoredReading]:
        """Each meter's newest reading (by interval start), by the primary key's index."""
        if not meter_ids:
            return {}
        marks = _marks(meter_ids)
        rows = self._read(
            f"SELECT {_STORED_READING} FROM readings r WHERE meter_id IN ({marks}) AND "
            "interval_start = (SELECT MAX(interval_start) FROM readings x "
            "WHERE x.meter_id = r.meter_id) ORDER BY meter_id, length_min",
            list(meter_ids),
        )
        return {r[0]: StoredReading(*r) for r in rows}

    def readings_of(self, meter_ids: Sequence[str], start: int, end: int) -> list[StoredReading]:
        """The readings of several meters with start <= interval_start < end."""
        if not meter_ids:
            return []
        marks = _marks(meter_ids)
        rows = self._read(
            f"SELECT {_STORED_READING} FROM readings WHERE meter_id IN ({marks}) "
            "AND interval_start >= ? AND interval_start < ? ORDER BY meter_id, interval_start",
            [*meter_ids, start, end],
        )
        return [StoredReading(*r) for r in rows]

    def relay_states(self, meter_ids: Sequence[str]) -> dict[str, str]:
        """The relay state each meter last read back after a switch command."""
        if not meter_ids:
            return {}
        marks = _marks(meter_ids)
        rows = self._read(
            f"SELECT meter_id, relay_state FROM commands c WHERE meter_id IN ({marks}) AND "
            "id = (SELECT MAX(id) FROM commands x WHERE x.meter_id = c.meter_id "
            "AND x.relay_state IS NOT NULL)",
            list(meter_ids),
        )
        return {m: str(state) for m, state in rows}

    def key_ids_seen(
        self, meter_ids: Sequence[str], since: float
    ) -> list[tuple[str, int, float, float, int]]:
        """(meter, C12.22 key id, first and last received, readings) of the key generations the
        meters' readings arrived under since `since` (ids only: no key is stored here)."""
        if not meter_ids:
            return []
        marks = _marks(meter_ids)
        rows = self._read(
            "SELECT meter_id, key_id, MIN(received_at), MAX(received_at), COUNT(*) FROM readings "
            f"WHERE meter_id IN ({marks}) AND received_at >= ? GROUP BY meter_id, key_id "
            "ORDER BY meter_id, MAX(received_at)",
            [*meter_ids, since],
        )
        return [(str(a), int(b), float(c), float(d), int(e)) for a, b, c, d, e in rows]

    def recent_events(self, *, meter_id: str | None = None, limit: int = 100) -> list[StoredEvent]:
        """The newest events first."""
        where, params = ("WHERE meter_id = ?", [meter_id]) if meter_id is not None else ("", [])
        rows = self._read(
            f"SELECT {_EVENT} FROM events {where} ORDER BY id DESC LIMIT {_limit(limit)}", params
        )
        return [StoredEvent(*r) for r in rows]

    def recent_commands(self, meter_id: str, limit: int = 100) -> list[Command]:
        """A meter's newest commands first."""
        rows = self._read(
            f"SELECT {_COMMAND} FROM commands WHERE meter_id = ? ORDER BY id DESC "
            f"LIMIT {_limit(limit)}",
            (meter_id,),
        )
        return [_command(r) for r in rows]

    def recent_alarms(
        self, *, meter_id: str | None = None, unacknowledged: bool = False, limit: int = 100
    ) -> list[Alarm]:
        """The newest alarms first."""
        where: list[str] = []
        params: list[Any] = []
        if meter_id is not None:
            where.append("meter_id = ?")
            params.append(meter_id)
        if unacknowledged:
            where.append("acknowledged_at IS NULL")
        cond = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            f"SELECT {_ALARM} FROM alarms {cond} ORDER BY id DESC LIMIT {_limit(limit)}", params
        )
        return [Alarm(*r) for r in rows]


class _Readers:
    """One reader connection per thread, opened on first use; `close` closes them all.

    The writer (ingest, registrations, commands) keeps its own connection and lock; queries
    that write nothing use these, so a long API range query never holds the writer's lock and a
    commit's fsync never stalls a query (SQLite WAL and PostgreSQL both let readers run beside
    one writer, each query on a committed snapshot)."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Any] = []
        self._closed = False

    def get(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:  # as a closed connection says it
                    raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
                conn = self._connect()
                self._all.append(conn)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


# -- SQLite ------------------------------------------------------------------------------------


class _SqliteTx:
    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    def run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._cur.execute(sql, params).fetchall()


SCRATCH_CACHE_KIB = 16384  # a scratch database's page cache


class SqliteRepository(_SqlRepository):
    """The embedded default: one SQLite database in WAL mode, synchronous=FULL.

    Writes go through one connection behind a lock (SQLite runs one writer at a time anyway,
    and a batch is one transaction); queries run on a read-only connection of their own thread
    (`_Readers`), beside the writer, never waiting for its commit.
    """

    dialect: Dialect = "sqlite"
    FILENAME = "headend.db"

    def __init__(
        self, path: str | Path, *, cache_kib: int = 65536, throwaway: bool = False
    ) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / self.FILENAME
        in_memory = str(path) == ":memory:"  # no file of that name in the cwd
        if not in_memory:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not in_memory and not path.exists():  # 0600 from birth (-wal/-shm get the same mode)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if throwaway:  # nothing to survive a crash or to share: no WAL, no fsync, locked once
            self._conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._conn.execute("PRAGMA journal_mode=MEMORY")
            self._conn.execute("PRAGMA synchronous=OFF")
        else:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so an acknowledged batch survives power
            # loss, not only a kill -9 (NORMAL would survive the kill but not the power cut).
            self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        # an in-memory or throwaway database (the simulator's) is one connection's: queries
        # share the writer's
        self._readers = None if in_memory or throwaway else _Readers(self._reader)
        with self._tx() as tx:
            stmt = ""
            for line in schema_sql("sqlite").splitlines(keepends=True):
                stmt += line
                if sqlite3.complete_statement(stmt):
                    tx.run(stmt)
                    stmt = ""
            if not tx.run("SELECT version FROM schema_version"):
                tx.run("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        if throwaway:  # open, locked and ours alone: the name goes, the file stays until closed
            path.unlink()

    @classmethod
    def scratch(cls, cache_kib: int = SCRATCH_CACHE_KIB) -> SqliteRepository:
        """A throwaway database (the simulator's): a file in the temporary directory, removed
        from it at once (the connection holds it until closed, even if the process is killed),
        held under an exclusive lock, no journal on disk, no fsync, and a page cache of
        `cache_kib` KiB. What the cache does not hold is in the file (the OS's page cache), not
        in this process: a simulated day of 50,000 meters stores 2.5 M readings, ~170 MB in
        the process as ":memory:". Costs ~1.5 us more a transaction than ":memory:" (SQLite's
        own temporary database, "", cost ~10 us more)."""
        fd, name = tempfile.mkstemp(prefix="amistack-sim-", suffix=".db")  # 0600
        os.close(fd)
        return cls(name, cache_kib=cache_kib, throwaway=True)

    @contextmanager
    def _tx(self) -> Iterator[_Tx]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(cur)
            except BaseException:
                self._conn.rollback()
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def _reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only=1")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._readers is None:
            return super()._read(sql, params)
        rows: list[tuple[Any, ...]] = self._readers.get().execute(sql, params).fetchall()
        return rows

    def _insert_readings(self, rows: list[tuple[Any, ...]]) -> int:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.executemany(
                    f"INSERT INTO readings ({READING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    rows,
                )
                inserted = cur.rowcount
                cur.execute("COMMIT")
            except BaseException:
                self._conn.rollback()
                raise
            finally:
                cur.close()
        return inserted

    def close(self) -> None:
        if self._readers is not None:
            self._readers.close()
        with self._lock:
            self._conn.close()


# -- PostgreSQL --------------------------------------------------------------------------------


COPY_TYPES = ("text", "int8", "int4", "int8", "int8", "int4", "float8", "int4")

PARTITION_PERIOD_S = 86_400  # one day of readings per partition (28 M meters: ~1.3 G rows)
PARTITIONS_BEHIND = 35  # a meter's load profile holds ~30 days: backfilled rows find a home
PARTITIONS_AHEAD = 7
_BOUND = re.compile(r"'(-?\d+)'")
_PARTITIONS_SQL = (
    "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
    "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'readings'::regclass "
    "AND c.relname <> 'readings_default'"
)


@dataclass(frozen=True)
class Partition:
    name: str
    start: int  # first interval_start it holds
    end: int  # first it does not


@dataclass(frozen=True)
class PartitionReport:
    created: tuple[str, ...]
    dropped: tuple[str, ...]


def _partitions(rows: Sequence[tuple[Any, ...]]) -> list[Partition]:
    """(name, bound) rows -> partitions, oldest first; a bound reads "FOR VALUES FROM ('a')
    TO ('b')"."""
    out = []
    for name, bound in rows:
        lo, hi = (int(v) for v in _BOUND.findall(str(bound)))
        out.append(Partition(str(name), lo, hi))
    return sorted(out, key=lambda p: p.start)


def _partition_name(start: int, period_s: int) -> str:
    day = time.strftime("%Y%m%d", time.gmtime(start))
    if period_s % 86_400 == 0 and start % 86_400 == 0:
        return f"readings_{day}"
    return f"readings_{day}_{start % 86_400:05d}"


class _PgTx:
    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if params:
            self._cur.execute(qmark_to_pyformat(sql), params)
        else:  # no parameters: the simple protocol, which also takes several statements
            self._cur.execute(sql)
        if self._cur.description is None:
            return []
        rows: list[tuple[Any, ...]] = self._cur.fetchall()
        return rows


class PostgresRepository(_SqlRepository):
    """PostgreSQL through psycopg 3: the option for fleets past one machine.

    Several collectors may share one database: the schema is created under an advisory lock,
    and ingest is idempotent on the primary key, so two collectors storing the same interval
    (a meter that re-sent to another collector) store it once.
    """

    dialect: Dialect = "postgresql"
    _SCHEMA_LOCK = 0x414D4953  # pg_advisory_xact_lock key: "AMIS"

    def __init__(self, dsn: str, password: str | None = None) -> None:
        import psycopg

        self._psycopg = psycopg
        self._lock = threading.Lock()
        self._conn = connect(dsn, password)
        self._readers = _Readers(lambda: connect(dsn, password))
        with self._tx() as tx:
            tx.run(f"SELECT pg_advisory_xact_lock({self._SCHEMA_LOCK})")
            tx.run(schema_sql("postgresql"))
            if not tx.run("SELECT version FROM schema_version"):
                tx.run("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        self._conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS readings_staging "
            "(LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )

    @contextmanager
    def _tx(self) -> Iterator[_Tx]:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            yield _PgTx(cur)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._readers.get().cursor() as cur:
            return _PgTx(cur).run(sql, params)

    def _insert_readings(self, rows: list[tuple[Any, ...]]) -> int:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            with cur.copy(
                f"COPY readings_staging ({READING_COLUMNS}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                # binary COPY: no text formatting here, no parsing in the server
                copy.set_types(COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                f"INSERT INTO readings ({READING_COLUMNS}) "
                f"SELECT {READING_COLUMNS} FROM readings_staging ON CONFLICT DO NOTHING"
            )
            inserted: int = cur.rowcount
        return inserted

    # -- time partitions of readings (schema.py) -------------------------------------------------

    def partitions(self) -> list[Partition]:
        """The time partitions of `readings`, oldest first (the default partition left out);
        [] if the table is not partitioned (made before partitioning: not converted)."""
        return _partitions(self._read(_PARTITIONS_SQL))

    def maintain_partitions(
        self,
        now: float,
        *,
        period_s: int = PARTITION_PERIOD_S,
        behind: int = PARTITIONS_BEHIND,
        ahead: int = PARTITIONS_AHEAD,
        retention_s: float | None = None,
    ) -> PartitionReport:
        """Make `readings` partitions of `period_s` (aligned to the epoch) from `behind`
        periods before `now` to `ahead` after it, moving any rows the default partition holds
        for them; with `retention_s`, drop the partitions (and default rows) wholly older than
        `now - retention_s`. One transaction under the schema lock: several collectors may run
        it at once. Timestamps are passed in; nothing here reads a clock."""
        if period_s < 3600 or period_s % 900:
            raise HeadendError("invalid", "a partition period is whole 15-minute steps, >= 1 h")
        if not self._partitioned():
            return PartitionReport((), ())
        first = (int(now) // period_s - behind) * period_s
        starts = [first + i * period_s for i in range(behind + ahead + 1)]
        if retention_s is not None:
            cutoff = int(now - retention_s)
            starts = [t for t in starts if t + period_s > cutoff]
        created: list[str] = []
        dropped: list[str] = []
        with self._tx() as tx:
            tx.run(f"SELECT pg_advisory_xact_lock({self._SCHEMA_LOCK})")
            have = {p.name: p for p in _partitions(tx.run(_PARTITIONS_SQL))}
            for start in starts:
                name = _partition_name(start, period_s)
                if name in have:
                    continue
                if any(p.start < start + period_s and start < p.end for p in have.values()):
                    continue  # covered by a partition of another period length
                self._create_partition(tx, name, start, start + period_s)
                created.append(name)
            if retention_s is not None:
                cutoff = int(now - retention_s)
                for p in have.values():
                    if p.end <= cutoff:
                        tx.run(f"ALTER TABLE readings DETACH PARTITION {p.name}")
                        tx.run(f"DROP TABLE {p.name}")
                        dropped.append(p.name)
                tx.run("DELETE FROM readings_default WHERE interval_start < ?", (cutoff,))
        if created or dropped:
            logger.info(
                "readings partitions maintained",
                extra={"created": len(created), "dropped": len(dropped)},
            )
        return PartitionReport(tuple(created), tuple(sorted(dropped)))

    def _partitioned(self) -> bool:
        row = self._read_one("SELECT relkind FROM pg_class WHERE relname = 'readings'", ())
        return row is not None and row[0] == "p"

    @staticmethod
    def _create_partition(tx: _Tx, name: str, start: int, end: int) -> None:
        """Make the partition as a table, move into it what the default partition holds for
        its range, then attach it (PostgreSQL refuses to attach over rows still in default)."""
        tx.run(f"CREATE TABLE {name} (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        # the range as a CHECK first: ATTACH then skips scanning the table to prove it
        tx.run(
            f"ALTER TABLE {name} ADD CONSTRAINT {name}_range CHECK "
            f"(interval_start >= {start} AND interval_start < {end})"
        )
        tx.run(
            f"WITH moved AS (DELETE FROM readings_default WHERE interval_start >= {start} "
            f"AND interval_start < {end} RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        )
        tx.run(f"ALTER TABLE readings ATTACH PARTITION {name} FOR VALUES FROM ({start}) TO ({end})")
        tx.run(f"ALTER TABLE {name} DROP CONSTRAINT {name}_range")

    def close(self) -> None:
        self._readers.close()
        with self._lock:
            self._conn.close()


def open_repository(
    target: str | Path, password: str | None = None
) -> SqliteRepository | PostgresRepository:
    """`postgresql://...` (or `postgres://`) opens PostgreSQL (with `password`, if given);
    anything else is a data directory (or a .db file) for the embedded SQLite database."""
    if is_postgres_url(target):
        return PostgresRepository(str(target), password)
    return SqliteRepository(target)
