"""The head-end's ingest commits on a thread of their own, off the event loop.

`headend.ingest.Ingestor` hands each batch to a `BatchWriter`; this one runs
`repo.store_readings` (one transaction, durable when it returns: SQLite's WAL fsync, or the
PostgreSQL commit) on a single writer thread. The loop keeps receiving, decoding and answering
meanwhile; the next batch gathers. When the batch is durable the thread calls `wake` (the
runtime passes `loop.call_soon_threadsafe(driver.kick)`), the Ingestor's timer falls due and
the driver's next call reports the batch, so its acks go out. sqlite3 and psycopg release the
GIL while they wait for the disk.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from amistack.headend.schema import IntervalReading
from amistack.headend.storage import ReadingRepository, StoreResult


class ThreadedBatchWriter:
    """A `headend.ingest.BatchWriter` that writes on one thread of its own."""

    def __init__(self, repo: ReadingRepository, wake: Callable[[], None] | None = None) -> None:
        self.repo = repo
        self.wake = wake
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amistack-ingest")
        self._future: Future[StoreResult] | None = None

    def start(self, readings: list[IntervalReading], received_at: float) -> None:
        if self._future is not None:
            raise RuntimeError("a batch is already being written")
        future = self._pool.submit(self.repo.store_readings, readings, received_at)
        self._future = future
        future.add_done_callback(self._done)

    def _done(self, _: Future[StoreResult]) -> None:
        wake = self.wake
        if wake is not None:
            wake()

    def finished(self) -> bool:
        future = self._future
        return future is not None and future.done()

    def result(self, wait: bool = False) -> StoreResult | BaseException | None:
        future = self._future
        if future is None or not (wait or future.done()):
            return None
        self._future = None
        exc = future.exception()  # blocks until done
        return exc if exc is not None else future.result()

    def close(self) -> None:
        """Wait for the batch in progress, then stop the thread."""
        self._pool.shutdown(wait=True)


__all__ = ["ThreadedBatchWriter"]
