"""Readings partitioned by time on a real PostgreSQL: daily partitions made ahead (and behind,
for backfill), rows in the partition of their interval, a reading no partition covers kept in
the default partition and moved when its day's partition is made, retention that drops whole
partitions, and two collectors maintaining at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from tests.conftest_pg import pg_cluster, pg_dsn  # noqa: F401  (fixtures)

from amistack.headend.registry import HeadendError
from amistack.headend.schema import IntervalReading
from amistack.headend.storage import PARTITION_PERIOD_S, PostgresRepository

DAY = PARTITION_PERIOD_S
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
NOW = T0 + 10 * DAY + 3600


def _reading(meter: str, start: int) -> IntervalReading:
    return IntervalReading(meter, start, 30, 100, 0, 0, 3)


def _where(repo: PostgresRepository) -> dict[int, str]:
    """interval_start -> the partition its row is in."""
    rows = repo._read("SELECT interval_start, tableoid::regclass::text FROM readings")
    return {int(t): str(p) for t, p in rows}


@pytest.fixture
def repo(pg_dsn: str) -> Iterator[PostgresRepository]:  # noqa: F811
    r = PostgresRepository(pg_dsn)
    yield r
    r.close()


def test_partitions_are_made_behind_and_ahead(repo: PostgresRepository) -> None:
    report = repo.maintain_partitions(NOW, behind=3, ahead=2)
    names = [p.name for p in repo.partitions()]
    assert (
        names
        == list(report.created)
        == [
            "readings_20260108",
            "readings_20260109",
            "readings_20260110",
            "readings_20260111",  # today
            "readings_20260112",
            "readings_20260113",
        ]
    )
    assert all(p.end - p.start == DAY for p in repo.partitions())
    assert repo.maintain_partitions(NOW, behind=3, ahead=2).created == ()  # idempotent
    today = T0 + 10 * DAY
    got = repo.store_readings([_reading("m1", today), _reading("m1", today + 1800)], NOW)
    assert got.inserted == 2
    assert set(_where(repo).values()) == {"readings_20260111"}
    # idempotent ingest holds across the partitioned table
    assert repo.store_readings([_reading("m1", today)], NOW).duplicates == 1


def test_a_reading_no_partition_covers_is_kept_then_moved(repo: PostgresRepository) -> None:
    repo.maintain_partitions(NOW, behind=0, ahead=0)
    far = T0 + 100 * DAY  # a meter whose clock is months ahead
    assert repo.store_readings([_reading("m1", far)], NOW).inserted == 1
    assert _where(repo) == {far: "readings_default"}
    repo.maintain_partitions(far, behind=0, ahead=0)  # that day comes
    assert _where(repo) == {far: "readings_20260411"}
    assert repo.count_readings("m1") == 1  # moved, not copied


def test_retention_drops_whole_old_partitions(repo: PostgresRepository) -> None:
    repo.maintain_partitions(NOW, behind=5, ahead=1)
    starts = [T0 + d * DAY for d in range(5, 12)]
    repo.store_readings([_reading("m1", t) for t in starts], NOW)
    report = repo.maintain_partitions(NOW, behind=5, ahead=1, retention_s=3 * DAY)
    # kept: the partitions reaching past now - 3 days (2026-01-08 12:00 -> the 8th onward)
    assert report.dropped == ("readings_20260106", "readings_20260107")
    assert report.created == ()  # nothing dropped is made again
    left = sorted(_where(repo))
    assert left == starts[2:]
    assert repo.partitions()[0].name == "readings_20260108"


def test_bad_period_is_refused(repo: PostgresRepository) -> None:
    with pytest.raises(HeadendError, match="15-minute"):
        repo.maintain_partitions(NOW, period_s=1000)


def test_two_collectors_maintaining_at_once(pg_dsn: str) -> None:  # noqa: F811
    repos = [PostgresRepository(pg_dsn) for _ in range(2)]
    created: list[tuple[str, ...]] = []
    errors: list[BaseException] = []

    def run(r: PostgresRepository) -> None:
        try:
            created.append(r.maintain_partitions(NOW, behind=2, ahead=2).created)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in repos]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert sorted(n for c in created for n in c) == [p.name for p in repos[0].partitions()]
        assert len(repos[0].partitions()) == 5  # each made once, by one of them
    finally:
        for r in repos:
            r.close()
