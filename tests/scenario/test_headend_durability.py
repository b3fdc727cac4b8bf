"""kill -9 during ingest loses no acknowledged reading (SQLite, and PostgreSQL).

A child process ingests messages through the Ingestor as fast as it can (resending some earlier
messages as a meter whose ack was lost would) and prints the tags of each batch the moment
`flush` reports it durable: those are the messages it would acknowledge. The parent SIGKILLs it
mid-run, reopens the database and checks every acknowledged reading is there, with its values,
and that nothing is stored twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest_pg import pg_cluster, pg_dsn  # noqa: F401  (fixtures)

from amistack.headend.schema import IntervalReading
from amistack.headend.storage import open_repository

REPO = Path(__file__).resolve().parents[2]
T0 = 1_767_225_600
METERS = 300
PER_MESSAGE = 4

CHILD = """
import sys
from amistack.headend.ingest import Ingestor
from amistack.headend.storage import open_repository
from tests.scenario.test_headend_durability import message

repo = open_repository(sys.argv[1])
writer = None
if sys.argv[3] == "threaded":  # as the runtime commits: on a writer thread
    from amistack.runtime.ingest_writer import ThreadedBatchWriter

    writer = ThreadedBatchWriter(repo)
ing = Ingestor(repo, max_batch=int(sys.argv[2]), max_delay=1e9, writer=writer)
n = 0
while True:
    report = ing.submit(n, message(n), float(n))
    if n % 7 == 0 and n >= 10:
        ing.submit(-n, message(n - 10), float(n))  # a resend: a duplicate, acked again
    if report is not None:
        acked = [t for t in report.durable if isinstance(t, int) and t >= 0]
        print("ACK", min(acked), max(acked), len(acked), flush=True)
    n += 1
"""


def message(n: int) -> list[IntervalReading]:
    """Message n: meter n % METERS, its next PER_MESSAGE 15-minute intervals; values from n."""
    meter, round_ = n % METERS, n // METERS
    return [
        IntervalReading(
            f"m{meter:04d}", T0 + (round_ * PER_MESSAGE + k) * 900, 15, n * 10 + k, k, 0, n & 0xFF
        )
        for k in range(PER_MESSAGE)
    ]


def _kill_mid_ingest(
    target: str, batch: int, want_batches: int, writer: str = "inline"
) -> list[tuple[int, int]]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'src'}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, target, str(batch), writer],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    acked: list[tuple[int, int]] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while len(acked) < want_batches:
            line = proc.stdout.readline()
            if not line:
                err = proc.stderr.read() if proc.stderr else ""
                pytest.fail(f"ingest child ended early: {err[-2000:]}")
            _, lo, hi, count = line.split()
            assert int(hi) - int(lo) + 1 == int(count)  # tags of one batch are contiguous
            acked.append((int(lo), int(hi)))
            assert time.monotonic() < deadline
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-batch: the child never stops submitting
        proc.wait(timeout=10)
        # lines already printed (acked before the kill) count too
        if proc.stdout is not None:
            for line in proc.stdout.read().splitlines():
                if line.startswith("ACK"):
                    _, lo, hi, _n = line.split()
                    acked.append((int(lo), int(hi)))
    assert proc.returncode == -signal.SIGKILL
    return acked


def _check(target: str, acked: list[tuple[int, int]]) -> None:
    repo = open_repository(target)
    try:
        last = max(hi for _lo, hi in acked)
        expected = {}
        for n in range(last + 1):
            for r in message(n):
                expected[r.key] = r
        stored = {}
        for m in range(METERS):
            for s in repo.readings(f"m{m:04d}", 0, 2**40, limit=10_000):
                assert (s.meter_id, s.interval_start, s.length_min) not in stored
                stored[(s.meter_id, s.interval_start, s.length_min)] = s
        missing = [k for k in expected if k not in stored]
        assert missing == [], f"{len(missing)} acknowledged readings lost, e.g. {missing[:3]}"
        for key, r in expected.items():
            s = stored[key]
            assert (s.forward_wh, s.reverse_wh, s.key_id) == (r.forward_wh, r.reverse_wh, r.key_id)
        assert repo.count_readings() == len(stored)  # no duplicate rows anywhere
        assert len(stored) >= len(expected)  # unacknowledged batches may or may not be there
    finally:
        repo.close()


@pytest.mark.parametrize("writer", ["inline", "threaded"])
def test_sqlite_kill9_mid_ingest_loses_no_acked_reading(tmp_path: Path, writer: str) -> None:
    acked = _kill_mid_ingest(str(tmp_path), batch=400, want_batches=25, writer=writer)
    assert len(acked) >= 25
    _check(str(tmp_path), acked)
    import sqlite3

    with sqlite3.connect(tmp_path / "headend.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_postgres_kill9_mid_ingest_loses_no_acked_reading(pg_dsn: str) -> None:  # noqa: F811
    acked = _kill_mid_ingest(pg_dsn, batch=400, want_batches=25, writer="threaded")
    _check(pg_dsn, acked)
