"""Group commit: a submission is reported durable only after the batch holding it is stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.headend.conftest import reading

from amistack.headend.ingest import Ingestor
from amistack.headend.storage import ReadingRepository, SqliteRepository


def test_size_bound_flushes_and_reports_tags(repo: ReadingRepository) -> None:
    ing = Ingestor(repo, max_batch=6, max_delay=10.0)
    assert ing.submit("msg-a", [reading("m1", i) for i in range(3)], 0.0) is None
    assert repo.count_readings() == 0  # nothing durable, nothing to ack yet
    assert ing.get_timer() == 10.0
    report = ing.submit("msg-b", [reading("m2", i) for i in range(3)], 1.0)
    assert report is not None
    assert report.durable == ["msg-a", "msg-b"]
    assert (report.readings, report.inserted, report.duplicates) == (6, 6, 0)
    assert repo.count_readings() == 6
    assert ing.get_timer() is None and ing.pending == 0


def test_latency_bound_and_duplicates_acked_again(repo: ReadingRepository) -> None:
    ing = Ingestor(repo, max_batch=1000, max_delay=0.05)
    ing.submit(1, [reading("m1", 0), reading("m1", 1)], 100.0)
    assert ing.handle_timer(100.04) is None
    report = ing.handle_timer(100.05)
    assert report is not None and report.durable == [1]
    # the meter never saw its ack and resends: stored once, acked again
    ing.submit(2, [reading("m1", 0), reading("m1", 1), reading("m1", 2)], 101.0)
    report = ing.flush(101.0)
    assert report.durable == [2]
    assert (report.inserted, report.duplicates) == (1, 2)
    assert ing.counters["duplicates"] == 2 and ing.counters["batches"] == 2
    assert repo.count_readings() == 3


def test_invalid_readings_are_rejected_not_stored(repo: ReadingRepository) -> None:
    ing = Ingestor(repo, max_batch=100)
    bad = reading("m1", 0).__class__("m1", 7, 15, 1, 0, 0, 1)  # start not aligned
    ing.submit("x", [reading("m1", 1), bad], 0.0)
    report = ing.flush(0.0)
    assert report.durable == ["x"]
    assert [(t, r.interval_start, why) for t, r, why in report.rejected] == [
        ("x", 7, "interval start is not aligned to its length")
    ]
    assert repo.count_readings() == 1


def test_storage_failure_acks_nothing_and_keeps_pending(tmp_path: Path) -> None:
    repo = SqliteRepository(tmp_path)
    ing = Ingestor(repo, max_batch=100)
    ing.submit("m", [reading("m1", 0)], 0.0)
    repo.close()  # the database is gone from under the ingestor
    with pytest.raises(Exception, match="closed"):
        ing.flush(0.0)
    assert ing.pending == 1  # still owed; nothing was reported durable


def test_bad_bounds_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Ingestor(SqliteRepository(tmp_path), max_batch=0)
