"""The operator audit trail: append-only, tamper-evident, a signed head per day.

Every state-changing action by any user (commands, registrations, key actions, alarm
acknowledgements, logins and failed logins, user and token changes) is one entry. The trail IS an
`eventlog.EventLog` (the meters' log store and Merkle machinery, RFC 9162 tree heads) kept under
DIR/audit/: `audit.log` (the store, 0600) and `module.pem` (its software signing key, 0600). An
entry is an event of type `AUDIT_EVENT_TYPE` whose data is a compact JSON object:

    {"who": "alice", "via": "session", "from": "192.0.2.7", "action": "command.create",
     "target": "meter-1", "outcome": "ok", "detail": {...}}

A head is signed when the first entry of a new UTC day is appended (so each day's entries are
covered by a head before the next day's start), on `seal(now)` (the runtime calls it at midnight
and at shutdown) and never otherwise: one signed head per day. `amistack log verify` verifies an
export of the trail like a meter's log (`export_lines`, the key from `public_key_pem`).

Thread-safe (one lock serialises the API's worker threads) and safe for several processes
(`amistack users` beside a running head-end): each append holds an flock on `audit.lock` and
first re-reads the log if another process wrote to it since.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amistack.access.users import Principal
from amistack.eventlog.log import CheckpointPolicy, EventLog, FsyncPolicy, LogConfig
from amistack.eventlog.record import EventRecord, SignedHead, iso_ms
from amistack.securemodule import SecureModule
from amistack.securemodule.software import SoftwareModule

AUDIT_LOG_ID = "operator-audit"  # the log's id in its header and signed heads
AUDIT_EVENT_TYPE = 0x8A00  # amistack's vendor range (eventtypes.py: 0x8000-0xFFFF)
AUDIT_DIR = "audit"
DAY_S = 86400
MAX_DETAIL = 4096  # characters of JSON detail kept per entry

# No automatic signing by the store: the trail decides (per day, on seal). Every entry is fsynced
# before the action it records is answered: people act at human rates, and an audit entry lost
# in a power cut would be an action nobody did.
_CONFIG = LogConfig(
    checkpoint=CheckpointPolicy(sign_on=frozenset(), every_entries=None, every_seconds=None),
    fsync=FsyncPolicy.ALWAYS,
)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str  # ISO 8601 UTC, milliseconds
    who: str
    via: str
    action: str
    target: str
    outcome: str
    detail: Any
    source: str = ""  # where the request came from (the client's address), if known


def _day(time_ms: int) -> int:
    return time_ms // (DAY_S * 1000)


class AuditTrail:
    """Append-only operator audit trail (see the module docstring)."""

    def __init__(self, path: Path, module: SecureModule, now: float) -> None:
        self._path = path
        self._module = module
        self._lock = threading.Lock()
        # Other processes append too (`amistack users` beside a running head-end): every write
        # holds an flock on this file and first re-reads the log if someone else wrote to it.
        self._flock = os.open(path.with_name("audit.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        self._log = self._open(now)

    def _open(self, now: float) -> EventLog:
        log = EventLog.open(self._path, AUDIT_LOG_ID, self._module, now, _CONFIG)
        self._first_unsigned_ms = None
        if log.unsigned_entries:
            for item in log.items():
                if isinstance(item, EventRecord) and item.seq == log.size - log.unsigned_entries:
                    self._first_unsigned_ms = item.time_ms
                    break
        self._seen = self._path.stat().st_size
        return log

    @contextmanager
    def _writing(self, now: float) -> Iterator[EventLog]:
        with self._lock:
            fcntl.flock(self._flock, fcntl.LOCK_EX)
            try:
                if self._path.stat().st_size != self._seen:  # another process appended
                    self._log.close()
                    self._log = self._open(now)
                yield self._log
                self._seen = self._path.stat().st_size
            finally:
                fcntl.flock(self._flock, fcntl.LOCK_UN)

    @classmethod
    def open(cls, data_dir: Path | str, now: float) -> AuditTrail:
        """The trail under DIR/audit/ (created 0700/0600 on first use)."""
        where = Path(data_dir) / AUDIT_DIR
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        where.chmod(0o700)
        module = SoftwareModule.open_or_create(where / "module.pem", "operator audit")
        return cls(where / "audit.log", module, now)

    def public_key_pem(self) -> bytes:
        return self._module.public_key_pem()

    @property
    def size(self) -> int:
        return self._log.size

    def record(
        self,
        now: float,
        who: str,
        action: str,
        *,
        via: str = "",
        target: str = "",
        outcome: str = "ok",
        detail: Mapping[str, Any] | str = "",
        source: str = "",
    ) -> int:
        """Append one entry (fsynced); returns its sequence number. Raises if the store cannot
        be written, and the caller's request then fails loudly rather than unrecorded."""
        body: dict[str, Any] = {
            "who": who,
            "via": via,
            "action": action,
            "target": target,
            "outcome": outcome,
            "detail": detail,
        }
        if source:
            body["from"] = source
        data = json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
        if len(data) > MAX_DETAIL:
            body["detail"] = {"truncated": data[:MAX_DETAIL]}
            data = json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
        t_ms = round(now * 1000)
        with self._writing(now) as log:
            first = self._first_unsigned_ms
            if first is not None and _day(t_ms) > _day(first):
                log.checkpoint(now)  # the previous day's entries get their head first
                self._first_unsigned_ms = None
            seq = log.append(AUDIT_EVENT_TYPE, data.encode("ascii"), now).record.seq
            if self._first_unsigned_ms is None:
                self._first_unsigned_ms = t_ms
        return seq

    def record_by(
        self,
        now: float,
        who: Principal,
        action: str,
        *,
        target: str = "",
        outcome: str = "ok",
        detail: Mapping[str, Any] | str = "",
    ) -> int:
        """`record` for an authenticated principal: its name, how it authenticated, from where."""
        return self.record(
            now,
            who.name,
            action,
            via=who.via,
            target=target,
            outcome=outcome,
            detail=detail,
            source=who.source,
        )

    def seal(self, now: float) -> SignedHead | None:
        """Sign a head over everything appended so far (None: nothing new to sign)."""
        with self._writing(now) as log:
            if not log.unsigned_entries:
                return None
            self._first_unsigned_ms = None
            return log.checkpoint(now)

    def next_seal(self, now: float) -> float | None:
        """When the next daily head is due (the next UTC midnight), None if nothing waits."""
        if self._first_unsigned_ms is None:
            return None
        return float((_day(self._first_unsigned_ms) + 1) * DAY_S)

    def heads(self) -> list[SignedHead]:
        return list(self._log.heads)

    def entries(self, after: int = -1, limit: int = 100) -> list[AuditEntry]:
        """Entries with seq > `after`, oldest first, at most `limit`."""
        out: list[AuditEntry] = []
        with self._lock:
            items = list(self._log.items())
        for item in items:
            if not isinstance(item, EventRecord) or item.seq <= after:
                continue
            out.append(_entry(item))
            if len(out) >= limit:
                break
        return out

    def export_lines(self) -> Iterator[str]:
        with self._lock:
            lines = list(self._log.export_lines())
        yield from lines

    def close(self) -> None:
        with self._lock:
            self._log.close()
            self._module.close()
            os.close(self._flock)


def _entry(rec: EventRecord) -> AuditEntry:
    try:
        body = json.loads(rec.data)
    except ValueError:
        body = {"action": "unreadable", "detail": rec.data.hex()}
    if not isinstance(body, dict):
        body = {"action": "unreadable", "detail": body}
    return AuditEntry(
        rec.seq,
        iso_ms(rec.time_ms),
        str(body.get("who", "")),
        str(body.get("via", "")),
        str(body.get("action", "")),
        str(body.get("target", "")),
        str(body.get("outcome", "")),
        body.get("detail", ""),
        str(body.get("from", "")),
    )
