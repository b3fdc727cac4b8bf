"""The PostgreSQL path against a real server (a throwaway cluster started by the tests):
several collectors sharing one database, as docs/headend.md describes for fleets past one box."""

from __future__ import annotations

import threading

from tests.conftest_pg import pg_cluster, pg_dsn  # noqa: F401  (fixtures)

from amistack.headend.schema import IntervalReading
from amistack.headend.storage import PostgresRepository

T0 = 1_767_225_600


def _readings(meters: range, intervals: int) -> list[IntervalReading]:
    return [
        IntervalReading(f"m{m:05d}", T0 + i * 1800, 30, m + i, 0, 0, 3)
        for m in meters
        for i in range(intervals)
    ]


def test_collectors_opening_one_database_at_once(pg_dsn: str) -> None:  # noqa: F811
    errors: list[BaseException] = []
    repos: list[PostgresRepository] = []
    lock = threading.Lock()

    def open_one() -> None:
        try:
            r = PostgresRepository(pg_dsn)  # each creates the schema if missing
            with lock:
                repos.append(r)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(repos) == 4
    for r in repos:
        r.close()


def test_overlapping_collectors_store_each_interval_once(pg_dsn: str) -> None:  # noqa: F811
    # Three collectors; meters near cell borders reach two of them, so their ranges overlap.
    ranges = [range(0, 400), range(300, 700), range(600, 1000)]
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def collector(meters: range) -> None:
        try:
            repo = PostgresRepository(pg_dsn)
            rows = _readings(meters, 8)
            inserted = duplicates = 0
            for i in range(0, len(rows), 500):
                r = repo.store_readings(rows[i : i + 500], 1.0)
                inserted += r.inserted
                duplicates += r.duplicates
            results.append((inserted, duplicates))
            repo.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=collector, args=(m,)) for m in ranges]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    repo = PostgresRepository(pg_dsn)
    try:
        assert repo.count_readings() == 1000 * 8
        assert sum(i for i, _ in results) == 1000 * 8  # each interval inserted exactly once
        assert sum(d for _, d in results) == 2 * 100 * 8  # the overlaps, counted as duplicates
        assert repo.count_readings("m00350") == 8
    finally:
        repo.close()
