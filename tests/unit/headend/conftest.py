"""Head-end fixtures: `repo` runs a test against both backends (SQLite in a temp dir, and a fresh
database on the session's throwaway PostgreSQL cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest_pg import pg_cluster, pg_dsn  # noqa: F401  (fixtures)

from amistack.headend.schema import IntervalReading
from amistack.headend.storage import PostgresRepository, ReadingRepository, SqliteRepository

T0 = 1_767_225_600  # 2026-01-01T00:00Z


@pytest.fixture(params=["sqlite", "postgresql"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReadingRepository]:
    r: ReadingRepository
    if request.param == "sqlite":
        r = SqliteRepository(tmp_path)
    else:
        r = PostgresRepository(request.getfixturevalue("pg_dsn"))
    yield r
    r.close()


def reading(
    meter: str = "m1",
    i: int = 0,
    length: int = 15,
    fwd: int = 100,
    rev: int = 0,
    status: int = 0,
    key_id: int = 1,
) -> IntervalReading:
    return IntervalReading(meter, T0 + i * length * 60, length, fwd, rev, status, key_id)
