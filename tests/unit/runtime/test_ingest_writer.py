"""Ingest batches commit on the writer's thread: the caller (the event loop) never waits for a
commit, and a batch is still reported durable only after it is."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from tests.unit.headend.conftest import reading

from amistack.headend.ingest import QUEUE_BATCHES, Ingestor
from amistack.headend.schema import IntervalReading
from amistack.headend.storage import SqliteRepository, StoreResult
from amistack.runtime.ingest_writer import ThreadedBatchWriter


def _wait(event: threading.Event) -> None:
    assert event.wait(10.0), "the writer never finished"


def test_a_slow_commit_does_not_hold_up_the_caller(tmp_path: Path) -> None:
    repo = SqliteRepository(tmp_path)
    woke = threading.Event()
    ing = Ingestor(repo, max_batch=2, writer=ThreadedBatchWriter(repo, woke.set))
    writer_lock: threading.Lock = repo._lock  # type: ignore[attr-defined]
    with writer_lock:  # the commit is stuck (a slow fsync)
        t0 = time.monotonic()
        assert ing.submit("a", [reading("m1", 0), reading("m1", 1)], 0.0) is None  # in flight
        assert ing.submit("b", [reading("m1", 2)], 0.1) is None  # the next batch gathers
        assert ing.submit("c", [reading("m1", 3)], 0.2) is None
        assert time.monotonic() - t0 < 1.0  # none of it waited for the disk
        assert ing.get_timer() is None  # nothing due: the writer wakes the driver
        assert ing.pending == 4 and repo.count_readings() == 0  # (readers do not wait either)
        assert not woke.is_set()
    _wait(woke)
    assert ing.get_timer() == 0.0  # due at once: report the durable batch
    woke.clear()
    with writer_lock:  # b and c (2 readings, a full batch) start, and wait for the disk
        report = ing.handle_timer(0.3)
        assert report is not None and report.durable == ["a"]  # exactly what is on disk
        assert repo.count_readings() == 2
    _wait(woke)
    report = ing.handle_timer(0.4)
    assert report is not None and report.durable == ["b", "c"]
    assert ing.pending == 0 and repo.count_readings() == 4
    ing.writer.close()  # type: ignore[attr-defined]


def test_a_failed_batch_is_owed_again_and_acks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = SqliteRepository(tmp_path)
    gate, woke = threading.Event(), threading.Event()

    def disk_error(readings: object, received_at: float) -> None:
        gate.wait(10.0)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(repo, "store_readings", disk_error)
    writer = ThreadedBatchWriter(repo, woke.set)
    ing = Ingestor(repo, max_batch=1, writer=writer)
    assert ing.submit("a", [reading("m1", 0)], 0.0) is None
    gate.set()
    _wait(woke)
    assert ing.get_timer() == 0.0  # finished (failed): due at once
    with pytest.raises(sqlite3.OperationalError):  # the next call reports the failure ...
        ing.submit("b", [reading("m1", 1)], 0.1)  # ... after queueing its message
    assert ing.pending == 2  # a (in front) and b are still owed, nothing was acked
    with pytest.raises(sqlite3.OperationalError):
        ing.flush(0.3)
    assert ing.pending == 2
    writer.close()


def test_flush_waits_for_the_batch_in_flight(tmp_path: Path) -> None:
    repo = SqliteRepository(tmp_path)
    writer = ThreadedBatchWriter(repo)
    ing = Ingestor(repo, max_batch=1, writer=writer)
    ing.submit("a", [reading("m1", 0)], 0.0)
    ing.submit("b", [reading("m1", 1)], 0.0)
    report = ing.flush(0.0)  # shutdown: everything durable before it returns
    assert sorted(report.durable) == ["a", "b"] and repo.count_readings() == 2
    writer.close()


def test_batches_are_bounded_and_an_overload_holds_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer faster than the disk: each batch carries at most max_batch readings, and
    once QUEUE_BATCHES batches' worth wait behind the one in flight, submit waits for it
    (memory stays bounded; under overload the caller is held as with an immediate write)."""
    repo = SqliteRepository(tmp_path)
    gate = threading.Event()
    real = repo.store_readings
    sizes: list[int] = []

    def slow_disk(readings: list[IntervalReading], received_at: float) -> StoreResult:
        gate.wait(10.0)
        sizes.append(len(readings))
        return real(readings, received_at)

    monkeypatch.setattr(repo, "store_readings", slow_disk)
    writer = ThreadedBatchWriter(repo)
    ing = Ingestor(repo, max_batch=3, writer=writer)
    submitted: list[int] = []

    def produce() -> None:
        for n in range(3 + QUEUE_BATCHES * 3 + 1):
            ing.submit(n, [reading("m1", n)], 0.0)
            submitted.append(n)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    producer.join(0.5)
    assert producer.is_alive()  # held: the backlog is full while the disk is stuck
    assert len(submitted) == 3 + QUEUE_BATCHES * 3 - 1
    gate.set()
    producer.join(10.0)
    report = ing.flush(0.0)
    assert ing.pending == 0 and repo.count_readings() == len(submitted) == 16
    assert max(sizes) <= 3 and sum(sizes) == 16
    assert report.durable  # the rest, durable at flush
    writer.close()
