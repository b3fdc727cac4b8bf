"""Group-commit ingest of decoded interval readings: the only path by which a meter gets an ack.

The C12.22 layer hands over each decoded message's readings with a tag (whatever it needs to
acknowledge that message later). The Ingestor gathers submissions and writes them in one durable
batch when `max_batch` readings are waiting or the oldest has waited `max_delay` seconds; the
report then names the tags that are durable, and only those may be acknowledged. A reading the
meter re-sends because its ack was lost is a duplicate: stored once, counted, and acked again.

Sans-IO in the aioquic manner: `now` is passed in, `get_timer()`/`handle_timer(now)` tell the
driver when the latency bound falls due. The storage call itself blocks until durable.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from amistack.headend.schema import IntervalReading
from amistack.headend.storage import ReadingRepository

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestReport:
    durable: list[Hashable]  # tags whose every storable reading is now on disk: ack these
    readings: int  # storable readings in this batch
    inserted: int
    duplicates: int
    rejected: list[tuple[Hashable, IntervalReading, str]] = field(default_factory=list)


class Ingestor:
    def __init__(
        self, repo: ReadingRepository, *, max_batch: int = 5000, max_delay: float = 0.05
    ) -> None:
        if max_batch < 1 or max_delay < 0:
            raise ValueError("max_batch must be >= 1 and max_delay >= 0")
        self.repo = repo
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.counters: collections.Counter[str] = collections.Counter()
        self._tags: list[Hashable] = []
        self._pending: list[IntervalReading] = []
        self._rejected: list[tuple[Hashable, IntervalReading, str]] = []
        self._oldest: float | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(
        self, tag: Hashable, readings: Sequence[IntervalReading], now: float
    ) -> IngestReport | None:
        """Queue one message's readings; returns a report if this filled a batch (flushed)."""
        for r in readings:
            problem = r.problem()
            if problem is None:
                self._pending.append(r)
            else:
                self._rejected.append((tag, r, problem))
                self.counters["rejected"] += 1
        self._tags.append(tag)
        if self._oldest is None:
            self._oldest = now
        if len(self._pending) >= self.max_batch:
            return self.flush(now)
        return None

    def get_timer(self) -> float | None:
        return None if self._oldest is None else self._oldest + self.max_delay

    def handle_timer(self, now: float) -> IngestReport | None:
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return None
        return self.flush(now)

    def flush(self, now: float) -> IngestReport:
        """Write everything pending in one transaction; returns once it is durable.

        If storage fails the submissions stay pending (nothing is acked) and the error propagates.
        """
        result = self.repo.store_readings(self._pending, now)
        report = IngestReport(
            durable=self._tags,
            readings=len(self._pending),
            inserted=result.inserted,
            duplicates=result.duplicates,
            rejected=self._rejected,
        )
        self.counters["batches"] += 1
        self.counters["inserted"] += result.inserted
        self.counters["duplicates"] += result.duplicates
        self._tags, self._pending, self._rejected, self._oldest = [], [], [], None
        logger.debug(
            "batch durable",
            extra={"readings": report.readings, "duplicates": report.duplicates},
        )
        return report
