"""The key server as an operator runs it: real processes, real UDP on loopback, the CLI.

`kill -9` in the middle of a burst of authentications, restart on the same data directory
(SQLite) or the same PostgreSQL database (--db): credentials, audit trail and committed keys
survive, no keys exist without the auth-success entry committed with them (before the PANA
success was sent), and meters authenticate again at once. A device revoked with `amistack keys
revoke` loses its live session within ~2 s and is refused from then on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.cli import keys_argv
from tests.conftest_pg import pg_cluster, pg_dsn  # noqa: F401  (fixtures)

from amistack.bench.auth import bench_device_id, bench_psk
from amistack.cli.common import KEYSERVER_DB, open_store
from amistack.keymgmt.store import CredentialStore

PSK_A = "00112233445566778899aabbccddeeff"
FLEET = 16  # bench devices 0..15
PY = sys.executable
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def cli(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "amistack.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Store:
    """Where a key server keeps its credentials, as the tests read it: DIR/keyserver.db, or
    a PostgreSQL database (`dsn`) given to every command with --db."""

    def __init__(self, data_dir: Path, dsn: str | None = None) -> None:
        self.data_dir, self.dsn = data_dir, dsn
        self.args = ["--data-dir", str(data_dir), *(["--db", dsn] if dsn else [])]

    def query(
        self, sql: str, params: tuple[object, ...] = (), *, write: bool = False
    ) -> list[tuple[Any, ...]]:
        if self.dsn is None:
            uri = f"file:{self.data_dir / KEYSERVER_DB}?mode={'rw' if write else 'ro'}"
            with sqlite3.connect(uri, uri=True, timeout=5) as conn:
                return conn.execute(sql, params).fetchall()
        import psycopg

        with psycopg.connect(self.dsn, options="-c search_path=amistack_keys") as conn:
            rows = conn.execute(sql.replace("?", "%s"), params).fetchall()
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]

    def keys(self, *argv: str) -> list[str]:
        """`amistack keys ARGV` on this store as its operator (tests.cli.keys_argv)."""
        return [*keys_argv(self.data_dir, *argv), *(["--db", self.dsn] if self.dsn else [])]

    def open(self) -> CredentialStore:
        return open_store(self.data_dir, create=False, db=self.dsn)


class KeyServerProcess:
    def __init__(self, data_dir: Path | Store, port: int, log: Path, *extra: str) -> None:
        store = data_dir if isinstance(data_dir, Store) else Store(data_dir)
        self.port = port
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                PY,
                "-m",
                "amistack.cli.main",
                "keyserver",
                *store.args,
                "--listen",
                f"127.0.0.1:{port}",
                *extra,
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=ENV,
        )
        deadline = time.monotonic() + 15.0
        while b"PANA on 127.0.0.1" not in log.read_bytes():
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "key server did not start"
            time.sleep(0.05)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._out.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()


def audit_rows(db: Path | Store) -> list[tuple[Any, ...]]:
    """(seq, at, kind, device id, detail) of every audit entry, in order."""
    store = db if isinstance(db, Store) else Store(db.parent)
    return store.query("SELECT seq, at, kind, device_id, detail FROM audit ORDER BY seq")


def key_rows(db: Path | Store) -> list[tuple[int, int, str]]:
    """(session id, generation, purpose) of every stored key (one row holds a generation)."""
    store = db if isinstance(db, Store) else Store(db.parent)
    rows = store.query("SELECT session_id, generation, purposes FROM key_generations")
    return [(sid, gen, item.split(":")[0]) for sid, gen, text in rows for item in text.split(",")]


def count(db: Path | Store, kind: str) -> int:
    store = db if isinstance(db, Store) else Store(db.parent)
    return int(store.query("SELECT count(*) FROM audit WHERE kind = ?", (kind,))[0][0])


def enrolled_store(data_dir: Path, dsn: str | None = None) -> Store:
    """meter-a enrolled by the CLI, the bench fleet in-process (16 CLI runs cost seconds)."""
    store = Store(data_dir, dsn)
    r = cli(*store.keys("enroll", "meter-a", "--psk", PSK_A))
    assert r.returncode == 0, r.stderr
    with store.open() as s:
        for i in range(FLEET):
            s.enroll(bench_device_id(i), bench_psk(i), time.time())
    return store


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ks"
    r = cli(*keys_argv(d, "enroll", "meter-a", "--psk", PSK_A))
    assert r.returncode == 0, r.stderr
    with open_store(d, create=False) as store:  # the fleet in-process: 16 CLI runs cost seconds
        for i in range(FLEET):
            store.enroll(bench_device_id(i), bench_psk(i), time.time())
    return d
    return enrolled_store(tmp_path / "ks").data_dir


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The embedded SQLite store, and PostgreSQL (a throwaway cluster, tests/conftest_pg)."""
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgresql" else None
    return enrolled_store(tmp_path / "ks", dsn)


@pytest.fixture
def server(data_dir: Path, tmp_path: Path) -> Iterator[KeyServerProcess]:
    ks = KeyServerProcess(data_dir, free_port(), tmp_path / "keyserver.log")
    yield ks
    ks.stop()


@contextlib.contextmanager
def live_meter(port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`amistack meter --id meter-a` running against the key server at `port`, once it is
    authenticated; terminated on exit."""
    with open(log, "wb") as out:
        meter = subprocess.Popen(
            [PY, "-m", "amistack.cli.main", "meter", "--id", "meter-a", "--psk", PSK_A,
             "--keyserver", f"127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 15.0
        while b"meter-a: authenticated" not in log.read_bytes():
            assert time.monotonic() < deadline and meter.poll() is None, log.read_text()
            time.sleep(0.05)
        yield meter
    finally:
        meter.terminate()
        meter.wait(10)


def meter_once(port: int, device: str = "meter-a", timeout: float = 5.0) -> int:
    r = cli(
        "meter",
        "--id",
        device,
        "--psk",
        PSK_A,
        "--keyserver",
        f"127.0.0.1:{port}",
        "--once",
        "--timeout",
        str(timeout),
    )
    return r.returncode


# 32 sockets on 127.0.0.2-33: the key server's per-source PCI rate limit (5/s) sees 32 meters
FLEET_SCRIPT = f"""
import asyncio, sys
from amistack.bench.auth import pac_fleet
hosts = [f"127.0.0.{{i}}" for i in range(2, 34)]
asyncio.run(pac_fleet(("127.0.0.1", int(sys.argv[1])), 100000, 32, {FLEET}, 32, timeout=30.0,
                      local_hosts=hosts))
"""


def test_kill_9_in_a_burst_loses_nothing_committed_and_leaves_no_half_session(
    any_store: Store, tmp_path: Path
) -> None:
    db = any_store
    named = ["--instance", "ks1"] if db.dsn else []  # a shared database names its servers
    server = KeyServerProcess(db, free_port(), tmp_path / "keyserver.log", *named)
    assert meter_once(server.port) == 0
    fleet = subprocess.Popen([PY, "-c", FLEET_SCRIPT, str(server.port)], env=ENV)
    try:
        deadline = time.monotonic() + 15.0
        while count(db, "auth-success") < 150:  # well into the burst
            assert time.monotonic() < deadline and fleet.poll() is None
            time.sleep(0.02)
        before = audit_rows(db)
        server.kill9()
    finally:
        fleet.kill()
        fleet.wait(10)
        server.stop()

    after_kill = audit_rows(db)
    assert after_kill[: len(before)] == before  # nothing committed is lost
    successes = [r for r in after_kill if r[2] in ("auth-success", "rekey")]
    assert len(successes) >= 150
    # Keys and their auth-success entry are one transaction, committed before the PANA success
    # is sent: every stored generation has its entry and all its purposes, whenever the
    # server died.
    issued = {r[4].split()[1] + "/" + r[4].split()[4] for r in successes}  # "0x... sid.gen"
    keys = key_rows(db)
    by_gen: dict[str, set[str]] = {}
    for sid, gen, purpose in keys:
        by_gen.setdefault(f"{sid:#010x}/{sid:08x}.{gen:08x}", set()).add(purpose)
    assert by_gen and set(by_gen) <= issued
    assert not [r for r in after_kill if r[2] == "auth-accepted"]  # (the old two-entry path)
    assert all(p == {"c1222", "link"} for p in by_gen.values())  # (PANA_AUTH_KEY: never stored)

    restarted = KeyServerProcess(db, free_port(), tmp_path / "keyserver2.log", *named)
    try:
        t0 = time.monotonic()
        assert meter_once(restarted.port) == 0  # at once
        assert time.monotonic() - t0 < 5.0
        listed = cli(*db.keys("list", "--json"))
        assert listed.returncode == 0
        assert listed.stdout.count('"device_id"') == FLEET + 1  # every credential is still there
        final = audit_rows(db)
        assert final[: len(after_kill)] == after_kill  # append-only across the restart
        seqs = [r[0] for r in final]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        restarted.stop()
    with pytest.raises(Exception, match="append-only"):
        db.query("DELETE FROM audit", write=True)


def test_revoking_a_live_device_ends_its_session_and_refuses_it(
    data_dir: Path, server: KeyServerProcess, tmp_path: Path
) -> None:
    db = data_dir / KEYSERVER_DB
    with live_meter(server.port, tmp_path / "meter.log"):
        ends_before = count(db, "session-end")
        revoked = cli(*keys_argv(data_dir, "revoke", "meter-a"))
        assert revoked.returncode == 0 and "revoked meter-a" in revoked.stdout
        t0 = time.monotonic()
        while count(db, "session-end") == ends_before:
            assert time.monotonic() - t0 < 2.5, "the key server did not end the session"
            time.sleep(0.05)
    assert meter_once(server.port, timeout=3.0) == 1
    kinds = [r[2] for r in audit_rows(db) if r[3] == b"meter-a"]
    assert kinds.index("revoke") < kinds.index("session-end", kinds.index("revoke"))
    # the refused run is audited (EAP-PSK never learns a revoked identity: no device id)
    assert audit_rows(db)[-1][2] == "auth-failure"
