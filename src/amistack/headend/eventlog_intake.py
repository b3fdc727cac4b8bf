"""Event-log intake at the head-end: verify a meter's exported log on arrival, store it, alarm.

`EventLogIntake(repo).receive(meter_id, export, now)` takes an export file (docs/event-log.md,
as text, bytes or lines) however it arrived -- `POST /meters/{id}/eventlog` (api.py) or a
C12.22 read of the meter's event-log table (`EventLogReader` below) -- and:

1. verifies it (`eventlog.verify.verify_lines`) with the meter's registered event-log public key
   and against the last head the head-end accepted from that meter (the repository's
   `eventlog_heads`, the `HeadStore` of eventlog/verify.py): only a consistency-proven extension
   of it holds, so an edit, a deletion, a reordering, a truncation, a rollback to an older
   signed state, a fork or another key's signature is refused with its own `Reason`;
2. when it holds: stores the entries the newest signed head covers that are new since the
   accepted head as events (`events`, deduplicated on the meter's sequence number) and makes
   that head the accepted one, in ONE transaction. Entries after the last signed head are not
   evidence: they are stored when a later upload's head covers them;
3. when it does not: raises an alarm (`ALARM_KIND`, detail `<reason> (line N): <detail>`) and
   stores nothing from that upload;
4. a log that holds but records an attack on the meter's own store (LOG_STORE_DAMAGED,
   LOG_ROLLED_BACK, written and signed by the meter when it opens a damaged or rolled-back
   store) raises `STORE_ALARM_KIND` for each such new entry.

A registered meter without a key raises the alarm (reason `no-key`) and then `HeadendError`
("no_key"). An upload for an unregistered meter raises NO alarm (only a counter and
HeadendError "not_found"): alarms are for meters the utility knows, and anyone able to upload
could otherwise flood the alarm list with invented meter ids.

After the meter's key was replaced, the accepted head (signed under the old key) stays the
anchor: an upload signed by the new key is refused (`wrong-key`, an alarm naming both key ids)
until a SECADM resets the accepted head, so swapping a key cannot silently make a forged log
acceptable. Sans-IO apart from the repository: `now` is passed in.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from amistack.addr import Addr
from amistack.c1222.acse import ApTitle
from amistack.c1222.endpoint import C1222Client
from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.eventlog_table import (
    EVENT_LOG_HEADER,
    EVENT_LOG_TABLE,
    decode_event_log_header,
)
from amistack.c1222.events import C1222Event, RequestTimedOut, ResponseReceived
from amistack.c1222.services import ReadResult
from amistack.eventlog.log import STORE_FAULTS, describe_store_fault
from amistack.eventlog.record import (
    EventRecord,
    HeadKind,
    LogFormatError,
    Mode,
    parse_head_line,
    parse_line,
)
from amistack.eventlog.verify import Reason, TrustedHead, Verdict, verify_lines
from amistack.headend.registry import HeadendError
from amistack.headend.schema import EventLogHead, MeterEvent
from amistack.headend.storage import ReadingRepository

log = logging.getLogger(__name__)

ALARM_KIND = "eventlog_verification_failed"
STORE_ALARM_KIND = "eventlog_store_tampered"  # the meter found its own store damaged/rolled back
MAX_EXPORT_BYTES = 64 * 1024 * 1024  # ~2M entries; the API refuses larger bodies (413)
_RACE_RETRIES = 3


def _lines(export: str | bytes | Iterable[str]) -> list[str] | Verdict:
    if isinstance(export, bytes):
        try:
            export = export.decode("ascii")
        except UnicodeDecodeError as exc:
            return Verdict(Reason.MALFORMED, f"non-ASCII bytes at offset {exc.start}")
    if isinstance(export, str):
        if not export.isascii():
            return Verdict(Reason.MALFORMED, "non-ASCII characters")
        return export.split("\n")  # the format's line end; a stray \r makes a line malformed
    lines = list(export)
    if not all(ln.isascii() for ln in lines):
        return Verdict(Reason.MALFORMED, "non-ASCII characters")
    return lines


def _trusted(head: EventLogHead | None) -> TrustedHead | None:
    if head is None:
        return None
    return TrustedHead(head.meter_id, Mode(head.mode), parse_head_line(head.head))


class EventLogIntake:
    """Verify-on-arrival for meters' event logs (see the module docstring)."""

    def __init__(self, repo: ReadingRepository) -> None:
        self.repo = repo
        self.counters: Counter[str] = Counter()
        self.last_stored = 0  # events newly stored by the last `receive` (0 when refused)

    def _alarm(self, meter_id: str, reason: str, detail: str, now: float) -> None:
        self.counters[f"rejected-{reason}"] += 1
        self.repo.raise_alarm(meter_id, ALARM_KIND, f"{reason}: {detail}", now)

    def receive(self, meter_id: str, export: str | bytes | Iterable[str], now: float) -> Verdict:
        """Verify, store and record an upload; the verdict says whether it held."""
        verdict, stored = self.receive_counted(meter_id, export, now)
        self.last_stored = stored
        return verdict

    def receive_counted(
        self, meter_id: str, export: str | bytes | Iterable[str], now: float
    ) -> tuple[Verdict, int]:
        """`receive`, also saying how many events were new to the head-end (thread-safe: the
        API's worker threads share one intake)."""
        if self.repo.get_meter(meter_id) is None:
            self.counters["rejected-unknown-meter"] += 1
            raise HeadendError("not_found", f"no meter {meter_id!r}")
        key = self.repo.eventlog_key(meter_id)
        if key is None:
            self._alarm(meter_id, "no-key", "no event-log public key registered", now)
            raise HeadendError(
                "no_key",
                f"meter {meter_id!r} has no event-log public key: "
                f"PUT /meters/{meter_id}/eventlog-key first",
            )
        lines = _lines(export)
        if isinstance(lines, Verdict):
            return self._refuse(meter_id, lines, now), 0
        for _ in range(_RACE_RETRIES):
            accepted = self.repo.eventlog_head(meter_id)
            try:
                trusted = _trusted(accepted)
            except (LogFormatError, ValueError) as exc:  # our own row: should never happen
                raise HeadendError("invalid", f"stored head of {meter_id!r}: {exc}") from None
            if trusted is not None and trusted.head.key_id.hex() != key[1]:
                changed = Verdict(
                    Reason.WRONG_KEY,
                    f"the accepted head was signed by key {trusted.head.key_id.hex()}, but the "
                    f"meter's event-log key was replaced by {key[1]}: refused until a SECADM "
                    "resets the accepted head",
                    meter_id=meter_id,
                )
                return self._refuse(meter_id, changed, now), 0
            verdict = verify_lines(lines, key[0].encode(), trusted=trusted, meter_id=meter_id)
            if not verdict.ok:
                return self._refuse(meter_id, verdict, now), 0
            try:
                stored = self._store(meter_id, lines, verdict, accepted, now)
            except HeadendError as exc:
                if exc.code != "invalid_transition":
                    raise
                self.counters["head-race"] += 1  # another upload was accepted meanwhile
                continue
            return verdict, stored
        raise HeadendError("invalid_transition", f"event-log head of {meter_id!r} keeps changing")

    def _refuse(self, meter_id: str, verdict: Verdict, now: float) -> Verdict:
        where = f" (line {verdict.line})" if verdict.line else ""
        self._alarm(meter_id, verdict.reason.value, f"{verdict.detail}{where}".strip(), now)
        log.warning(
            "event log refused",
            extra={"meter_id": meter_id, "reason": verdict.reason.value, "line": verdict.line},
        )
        return verdict

    def _store(
        self,
        meter_id: str,
        lines: list[str],
        verdict: Verdict,
        accepted: EventLogHead | None,
        now: float,
    ) -> int:
        head = verdict.last_head
        assert head is not None  # an OK verdict has a signed head
        start = accepted.size if accepted is not None else 0
        events: list[MeterEvent] = []
        faults: list[EventRecord] = []  # the meter's records of attacks on its own store
        for n, line in enumerate(lines, 1):
            if not line.startswith("E "):
                continue
            rec = parse_line(line.rstrip("\n"), n)
            assert isinstance(rec, EventRecord)  # verified: the E lines parse
            if rec.seq >= head.size:
                break  # the unsigned tail
            if rec.seq >= start:
                if rec.type in STORE_FAULTS:
                    faults.append(rec)
                events.append(
                    MeterEvent(
                        meter_id,
                        rec.time_ms / 1000.0,
                        rec.type_name(),
                        rec.data.hex(),
                        rec.seq,
                    )
                )
        mode = Mode.MERKLE if head.kind is HeadKind.MERKLE else Mode.PATENT
        row = EventLogHead(meter_id, mode.value, head.size, head.to_line(), now)
        result = self.repo.accept_eventlog(
            row, events, accepted.size if accepted is not None else None, now
        )
        for rec in faults:
            self.repo.raise_alarm(
                meter_id, STORE_ALARM_KIND, f"entry {rec.seq}: {describe_store_fault(rec)}", now
            )
            self.counters["store-faults"] += 1
        self.counters["accepted"] += 1
        self.counters["events-stored"] += result.inserted
        log.info(
            "event log accepted",
            extra={"meter_id": meter_id, "size": head.size, "stored": result.inserted},
        )
        return result.inserted


# -- transport B: reading the meter's event-log table over C12.22 -------------------------------


@dataclass(frozen=True)
class EventLogFetched:
    """A meter's log arrived in full over C12.22 and went through the intake."""

    meter_id: str
    verdict: Verdict
    size: int  # bytes of export text
    reads: int  # C12.22 reads it took


@dataclass(frozen=True)
class EventLogFetchFailed:
    """The transfer itself failed (timeout, a refused read, a bad table header): no verdict."""

    meter_id: str
    reason: str


EventLogFetchEvent = EventLogFetched | EventLogFetchFailed


@dataclass
class _Fetch:
    meter_id: str
    addr: Addr
    title: ApTitle
    request_id: int
    total: int | None = None  # bytes of export text, from the table header
    got: bytearray | None = None
    reads: int = 0


class ExportSink(Protocol):
    """Where `EventLogReader` hands a whole export: the head-end's `EventLogIntake`, or the
    offline handheld's sealed store (handheld/offline.py), which keeps it for the office."""

    def receive(self, meter_id: str, export: bytes, now: float) -> Verdict: ...


class EventLogReader:
    """Sans-IO: fetch meters' event logs with partial reads of `EVENT_LOG_TABLE` through a
    `C1222Client` and hand each whole export to `intake` (an `ExportSink`).

    The first read (offset 0) makes the meter snapshot its export and answers the header (the
    text's length) plus the first `chunk` bytes; the rest follows `chunk` bytes per read, so a
    long log arrives in pieces. `fetch` starts one on demand; `every_s` > 0 also fetches every
    meter given to `schedule` periodically (`get_timer`/`handle_timer`). The owner of the
    client passes every client event to `handle_event` (True: it was one of ours)."""

    def __init__(
        self,
        client: C1222Client,
        intake: ExportSink,
        *,
        chunk: int = 1024,
        every_s: float = 0.0,
    ) -> None:
        if not 1 <= chunk <= 0xFFFF - EVENT_LOG_HEADER:
            raise ValueError("chunk must fit a C12.22 partial read count")
        self.client = client
        self.intake = intake
        self.chunk = chunk
        self.every_s = every_s
        self.counters: Counter[str] = Counter()
        self._by_request: dict[int, _Fetch] = {}
        self._busy: set[str] = set()
        self._schedule: dict[str, tuple[Addr, ApTitle, float]] = {}
        self._events: deque[EventLogFetchEvent] = deque()

    def fetch(self, meter_id: str, addr: Addr, title: ApTitle, now: float) -> bool:
        """Start fetching a meter's log (False: one is already under way)."""
        if meter_id in self._busy:
            return False
        rid = self.client.read(
            addr, title, EVENT_LOG_TABLE, now, offset=0, count=EVENT_LOG_HEADER + self.chunk
        )
        self._busy.add(meter_id)
        self._by_request[rid] = _Fetch(meter_id, addr, title, rid, reads=1)
        self.counters["fetches"] += 1
        return True

    def schedule(self, meter_id: str, addr: Addr, title: ApTitle, first_at: float) -> None:
        self._schedule[meter_id] = (addr, title, first_at)

    def get_timer(self) -> float | None:
        if self.every_s <= 0:
            return None
        return min((t for _, _, t in self._schedule.values()), default=None)

    def handle_timer(self, now: float) -> None:
        if self.every_s <= 0:
            return
        for meter_id, (addr, title, at) in list(self._schedule.items()):
            if at <= now:
                self.fetch(meter_id, addr, title, now)
                self._schedule[meter_id] = (addr, title, now + self.every_s)

    def next_event(self) -> EventLogFetchEvent | None:
        return self._events.popleft() if self._events else None

    def handle_event(self, ev: C1222Event, now: float) -> bool:
        if not isinstance(ev, ResponseReceived | RequestTimedOut):
            return False
        f = self._by_request.pop(ev.request_id, None)
        if f is None:
            return False
        if isinstance(ev, RequestTimedOut):
            return self._fail(f, "timed out")
        if not ev.ok:
            codes = ",".join(r.code.name for r in ev.responses) or "none"
            return self._fail(f, f"read refused ({codes})")
        try:
            data = ReadResult.decode(ev.responses[0].data).data
            if f.total is None:
                f.total = decode_event_log_header(data)
                data = data[EVENT_LOG_HEADER:]
                f.got = bytearray()
        except C1222DecodeError as exc:
            return self._fail(f, f"bad event-log table data: {exc}")
        assert f.got is not None
        f.got += data
        if len(f.got) > f.total:
            return self._fail(f, "more data than the table header announced")
        if len(f.got) < f.total:
            offset = EVENT_LOG_HEADER + len(f.got)
            count = min(self.chunk, f.total - len(f.got))
            if not data:
                return self._fail(f, "an empty read before the end")
            f.request_id = self.client.read(
                f.addr, f.title, EVENT_LOG_TABLE, now, offset=offset, count=count
            )
            f.reads += 1
            self._by_request[f.request_id] = f
            return True
        self._busy.discard(f.meter_id)
        self.counters["fetched"] += 1
        try:
            verdict = self.intake.receive(f.meter_id, bytes(f.got), now)
        except HeadendError as exc:
            self._events.append(EventLogFetchFailed(f.meter_id, exc.message))
            return True
        self._events.append(EventLogFetched(f.meter_id, verdict, f.total, f.reads))
        return True

    def _fail(self, f: _Fetch, reason: str) -> bool:
        self._busy.discard(f.meter_id)
        self.counters["fetch-failed"] += 1
        log.warning("event-log fetch failed", extra={"meter_id": f.meter_id, "reason": reason})
        self._events.append(EventLogFetchFailed(f.meter_id, reason))
        return True
