"""Group-commit ingest of decoded interval readings: the only path by which a meter gets an ack.

The C12.22 layer hands over each decoded message's readings with a tag (whatever it needs to
acknowledge that message later). The Ingestor gathers submissions and writes them in one durable
batch when `max_batch` readings are waiting or the oldest has waited `max_delay` seconds; the
report then names the tags that are durable, and only those may be acknowledged. A reading the
meter re-sends because its ack was lost is a duplicate: stored once, counted, and acked again.

Sans-IO in the aioquic manner: `now` is passed in, `get_timer()`/`handle_timer(now)` tell the
driver when the latency bound falls due. Where a batch is written is a `BatchWriter`'s business:
by default at once, in the caller (the simulator, tests: the call returns when it is durable);
the runtime gives one that commits on a thread of its own (`runtime.ingest_writer`), so the
event loop never waits for a commit's fsync. Then one batch (at most `max_batch` readings, whole
messages) is in flight at a time, the next gathers meanwhile, and a finished batch is reported
by the next call (`get_timer` falls due at once when one has finished; the writer wakes the
driver). Memory stays bounded: with `QUEUE_BATCHES` batches' worth waiting behind the one in
flight, `submit` waits for it (under overload the caller is held, as with an immediate write).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from amistack.headend.schema import IntervalReading
from amistack.headend.storage import ReadingRepository, StoreResult

logger = logging.getLogger(__name__)

QUEUE_BATCHES = 4  # batches' worth of readings that may wait behind the one being written


@dataclass(frozen=True)
class IngestReport:
    durable: list[Hashable]  # tags whose every storable reading is now on disk: ack these
    readings: int  # storable readings in this batch
    inserted: int
    duplicates: int
    rejected: list[tuple[Hashable, IntervalReading, str]] = field(default_factory=list)


class BatchWriter(Protocol):
    """Writes one batch at a time for the Ingestor (`repo.store_readings`, durable on return)."""

    def start(self, readings: list[IntervalReading], received_at: float) -> None:
        """Begin writing this batch (none is in progress)."""

    def finished(self) -> bool:
        """True once the batch begun has been written or has failed (until `result`)."""

    def result(self, wait: bool = False) -> StoreResult | BaseException | None:
        """The finished batch's outcome, once (None while it runs, unless `wait`)."""


class ImmediateWriter:
    """The default: the batch is written inside `start`, by the caller."""

    def __init__(self, repo: ReadingRepository) -> None:
        self.repo = repo
        self._outcome: StoreResult | BaseException | None = None

    def start(self, readings: list[IntervalReading], received_at: float) -> None:
        try:
            self._outcome = self.repo.store_readings(readings, received_at)
        except Exception as exc:  # reported by result(): the Ingestor keeps the batch owed
            self._outcome = exc

    def finished(self) -> bool:
        return self._outcome is not None

    def result(self, wait: bool = False) -> StoreResult | BaseException | None:
        outcome, self._outcome = self._outcome, None
        return outcome


@dataclass
class _Batch:
    tags: list[Hashable]
    readings: list[IntervalReading]
    rejected: list[tuple[Hashable, IntervalReading, str]]
    oldest: float
    sizes: list[int]


class Ingestor:
    def __init__(
        self,
        repo: ReadingRepository,
        *,
        max_batch: int = 5000,
        max_delay: float = 0.05,
        writer: BatchWriter | None = None,
    ) -> None:
        if max_batch < 1 or max_delay < 0:
            raise ValueError("max_batch must be >= 1 and max_delay >= 0")
        self.repo = repo
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.writer: BatchWriter = writer or ImmediateWriter(repo)
        self.counters: collections.Counter[str] = collections.Counter()
        self._tags: list[Hashable] = []
        self._sizes: list[int] = []  # storable readings of each tag's message, in order
        self._pending: list[IntervalReading] = []
        self._rejected: list[tuple[Hashable, IntervalReading, str]] = []
        self._oldest: float | None = None
        self._inflight: _Batch | None = None

    @property
    def pending(self) -> int:
        """Readings owed a durable write: waiting, and in the batch being written."""
        return len(self._pending) + (len(self._inflight.readings) if self._inflight else 0)

    def submit(
        self, tag: Hashable, readings: Sequence[IntervalReading], now: float
    ) -> IngestReport | None:
        """Queue one message's readings; returns a report if a batch became durable."""
        pending = self._pending
        before = len(pending)
        for r in readings:
            problem = r.problem()
            if problem is None:
                pending.append(r)
            else:
                self._rejected.append((tag, r, problem))
                self.counters["rejected"] += 1
        self._tags.append(tag)
        self._sizes.append(len(pending) - before)
        if self._oldest is None:
            self._oldest = now
        if (  # the usual submission: nothing in flight to report, no batch due yet
            self._inflight is None
            and len(pending) < self.max_batch
            and now < self._oldest + self.max_delay
        ):
            return None
        backlog = self._inflight is not None and (
            len(self._pending) >= QUEUE_BATCHES * self.max_batch
        )
        report = self._collect(wait=backlog)  # overload: hold the caller, bound the memory
        return _merge(report, self._progress(now))

    def get_timer(self) -> float | None:
        if self._inflight is not None:
            # the writer wakes the driver when it is done; then it is due at once
            return self._inflight.oldest if self.writer.finished() else None
        return None if self._oldest is None else self._oldest + self.max_delay

    def handle_timer(self, now: float) -> IngestReport | None:
        return self._progress(now)

    def flush(self, now: float) -> IngestReport:
        """Write everything pending (waiting for a batch in flight first); returns once it is
        all durable. If storage fails the submissions stay pending (nothing is acked) and the
        error propagates."""
        report = self._collect(wait=True)
        while self._tags:
            self._start(now)
            report = _merge(report, self._collect(wait=True))
        return report or IngestReport([], 0, 0, 0)

    def _progress(self, now: float) -> IngestReport | None:
        report = self._collect()
        if self._inflight is None and self._tags:
            due = self._oldest is not None and now >= self._oldest + self.max_delay
            if len(self._pending) >= self.max_batch or due:
                self._start(now)
                report = _merge(report, self._collect())
        return report

    def _start(self, now: float) -> None:
        """Begin writing the oldest whole messages, up to `max_batch` readings (at least one
        message); the rest waits for the next batch."""
        assert self._oldest is not None
        count = taken = 0
        while taken < len(self._sizes) and (taken == 0 or count < self.max_batch):
            count += self._sizes[taken]
            taken += 1
        batch = _Batch(
            self._tags[:taken],
            self._pending[:count],
            self._rejected,
            self._oldest,
            self._sizes[:taken],
        )
        self._tags, self._sizes = self._tags[taken:], self._sizes[taken:]
        self._pending, self._rejected = self._pending[count:], []
        self._oldest = self._oldest if self._tags else None  # (an approximation: as old)
        self._inflight = batch
        self.writer.start(batch.readings, now)

    def _collect(self, wait: bool = False) -> IngestReport | None:
        """The batch in flight, if it has finished: its report, or (failed) back to pending
        in front of what arrived since, and the error raised."""
        batch = self._inflight
        if batch is None or not (wait or self.writer.finished()):
            return None
        outcome = self.writer.result(wait=True)
        self._inflight = None
        if not isinstance(outcome, StoreResult):
            self._tags = batch.tags + self._tags
            self._sizes = batch.sizes + self._sizes
            self._pending = batch.readings + self._pending
            self._rejected = batch.rejected + self._rejected
            self._oldest = batch.oldest
            if isinstance(outcome, BaseException):
                raise outcome
            raise RuntimeError("the batch writer reported no outcome")
        report = IngestReport(
            durable=batch.tags,
            readings=len(batch.readings),
            inserted=outcome.inserted,
            duplicates=outcome.duplicates,
            rejected=batch.rejected,
        )
        self.counters["batches"] += 1
        self.counters["inserted"] += outcome.inserted
        self.counters["duplicates"] += outcome.duplicates
        logger.debug(
            "batch durable",
            extra={"readings": report.readings, "duplicates": report.duplicates},
        )
        return report


def _merge(a: IngestReport | None, b: IngestReport | None) -> IngestReport | None:
    if a is None or b is None:
        return a or b
    return IngestReport(
        a.durable + b.durable,
        a.readings + b.readings,
        a.inserted + b.inserted,
        a.duplicates + b.duplicates,
        a.rejected + b.rejected,
    )


__all__ = ["BatchWriter", "ImmediateWriter", "IngestReport", "Ingestor"]
