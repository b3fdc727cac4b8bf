"""PostgreSQL fixtures: one throwaway cluster per test session (initdb + pg_ctl in a temp dir,
unix socket only), a fresh database per test. Import the fixtures into a conftest or test module:
`from tests.conftest_pg import pg_cluster, pg_dsn`.

Missing PostgreSQL binaries skip the tests outside CI and fail them under CI=true, like
`tests.conftest.require_tool`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from amistack.bench.postgres import PostgresUnavailable, TemporaryPostgres, postgres_bindir
from tests.conftest import IN_CI

_db_numbers = itertools.count()


def require_postgres() -> None:
    if postgres_bindir() is None:
        msg = "PostgreSQL server binaries (initdb, pg_ctl) are not installed (make setup)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[TemporaryPostgres]:
    require_postgres()
    try:
        cluster = TemporaryPostgres().start()
    except PostgresUnavailable as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_dsn(pg_cluster: TemporaryPostgres) -> str:
    """A DSN for a database of its own (created from template0, so no state leaks between tests)."""
    import psycopg

    name = f"t{next(_db_numbers)}"
    with psycopg.connect(pg_cluster.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    return pg_cluster.dsn.replace("/postgres?", f"/{name}?")
