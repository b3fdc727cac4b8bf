"""Two key-server processes serving different concentrators against one PostgreSQL database:
a revocation or a PSK rotation made anywhere takes effect on both within a second, and a third
process cannot pose as one of them (docs/scale-out.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest_pg import pg_cluster, pg_dsn  # noqa: F401  (fixtures)
from tests.scenario.test_keyserver_process import (
    PSK_A,
    KeyServerProcess,
    Store,
    cli,
    enrolled_store,
    free_port,
    live_meter,
)

pytestmark = pytest.mark.slow  # three CLI processes per test, a dozen CLI runs

PSK_B = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
PSK_B2 = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5"


@pytest.fixture
def shared(tmp_path: Path, pg_dsn: str) -> Store:  # noqa: F811
    store = enrolled_store(tmp_path / "ks", pg_dsn)
    assert cli(*store.keys("enroll", "meter-b", "--psk", PSK_B)).returncode == 0
    return store


@pytest.fixture
def two_servers(shared: Store, tmp_path: Path) -> Iterator[list[KeyServerProcess]]:
    servers = [
        KeyServerProcess(shared, free_port(), tmp_path / f"{name}.log", "--instance", name)
        for name in ("ks1", "ks2")
    ]
    yield servers
    for s in servers:
        s.stop()


def authenticate(port: int, device: str, psk: str) -> int:
    return cli(
        "meter",
        *("--id", device, "--psk", psk, "--keyserver", f"127.0.0.1:{port}"),
        *("--once", "--timeout", "3"),
    ).returncode


def test_both_processes_serve_and_a_third_cannot_take_a_name(
    shared: Store, two_servers: list[KeyServerProcess]
) -> None:
    for ks in two_servers:
        assert authenticate(ks.port, "meter-a", PSK_A) == 0
    kinds = [r[0] for r in shared.query("SELECT instance FROM key_generations")]
    assert sorted(kinds) == ["ks1", "ks2"]  # each process's keys are its own
    twin = cli(
        "keyserver", *shared.args, "--listen", f"127.0.0.1:{free_port()}", "--instance", "ks1"
    )
    assert twin.returncode == 2
    assert "another key server runs as instance 'ks1'" in twin.stderr


def test_revocation_reaches_the_other_process_within_a_second(
    shared: Store, two_servers: list[KeyServerProcess], tmp_path: Path
) -> None:
    ks2 = two_servers[1]
    with live_meter(ks2.port, tmp_path / "meter.log"):
        # the operator revokes through the database, as if at the other key server's site
        assert cli(*shared.keys("revoke", "meter-a")).returncode == 0
        deadline = time.monotonic() + 3.0
        while not (ends := shared.query("SELECT at FROM audit WHERE kind = 'session-end'")):
            assert time.monotonic() < deadline, "the other key server did not end the session"
            time.sleep(0.02)
    revoked_at = shared.query("SELECT at FROM audit WHERE kind = 'revoke'")[0][0]
    # both on the wall clock (the key server's is epoch-aligned monotonic: +-1 ms of skew)
    assert -0.01 <= ends[0][0] - revoked_at < 1.0
    for ks in two_servers:
        assert authenticate(ks.port, "meter-a", PSK_A) == 1


def test_a_rotated_psk_is_the_only_one_either_process_accepts(
    shared: Store, two_servers: list[KeyServerProcess]
) -> None:
    ks1, ks2 = two_servers
    assert authenticate(ks1.port, "meter-b", PSK_B) == 0  # derived keys now cached in ks1
    assert cli(*shared.keys("rotate-psk", "meter-b", "--psk", PSK_B2)).returncode == 0
    for ks in (ks1, ks2):  # at once: every authentication reads the device's row
        assert authenticate(ks.port, "meter-b", PSK_B) == 1
        assert authenticate(ks.port, "meter-b", PSK_B2) == 0
