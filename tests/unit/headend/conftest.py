"""Head-end fixtures: `repo` runs a test against both backends (SQLite in a temp dir, and a fresh
database on the session's throwaway PostgreSQL cluster)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from tests.conftest_pg import pg_cluster, pg_dsn  # noqa: F401  (fixtures)

from amistack.access import AccessStore, AuditTrail, Role
from amistack.access.http import AccessControl
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


# -- access control for API tests ---------------------------------------------------------------

# Argon2id at its lowest cost: the tests exercise the logic, not the hash's strength.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
EVERY_ROLE = frozenset(Role)


def make_access(directory: Path, clock: Callable[[], float]) -> AccessControl:
    store = AccessStore(directory / "access", hasher=CHEAP_HASHER)
    return AccessControl(store, AuditTrail.open(directory, clock()), clock)


def auth(access: AccessControl, name: str, *roles: Role) -> dict[str, str]:
    """Headers of a new user `name` holding `roles` (default: every role)."""
    now = access.clock()
    access.store.add_user(name, "correct horse battery", roles or EVERY_ROLE, now)
    token = access.store.issue_token(name, now).token
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def access(tmp_path: Path) -> Iterator[AccessControl]:
    a = make_access(tmp_path, lambda: 1000.0)
    yield a
    a.audit.close()
    a.store.close()
