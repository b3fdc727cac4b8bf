"""`amistack bench ingest`: interval readings per second into the head-end's storage, end to end,
with the raw insert rate of the same rows measured in the same run as the baseline.

Also home of `TemporaryPostgres`, a throwaway PostgreSQL cluster in a temp dir (initdb + pg_ctl,
unix socket only) used by the benchmark and by the PostgreSQL tests.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from amistack.headend.ingest import Ingestor
from amistack.headend.schema import IntervalReading
from amistack.headend.storage import (
    READING_COLUMNS,
    PostgresRepository,
    SqliteRepository,
    open_repository,
)

log = logging.getLogger(__name__)


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed (or the cluster would not start)."""


def postgres_bindir() -> Path | None:
    """Where initdb/pg_ctl live: on PATH, or Debian's /usr/lib/postgresql/N/bin (newest N)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class TemporaryPostgres:
    """A PostgreSQL cluster in a fresh temp dir, listening only on a unix socket there.

    PostgreSQL refuses to run as root; as root the cluster is owned by and run as the `postgres`
    system user (runuser). `dsn` connects over the socket with trust authentication. Use as a
    context manager; exit stops the server (immediate) and removes the directory.
    """

    def __init__(self, bindir: Path | None = None, user: str = "postgres") -> None:
        found = bindir or postgres_bindir()
        if found is None:
            raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.bindir = found
        self._user = user
        self.dir = Path(tempfile.mkdtemp(prefix="amistack-pg-"))
        self.port = _free_port()
        self.dsn = f"postgresql://postgres@/postgres?host={self.dir}&port={self.port}"
        self._started = False

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            logfile = self.dir / "server.log"
            tail = logfile.read_text()[-2000:] if logfile.exists() else ""
            raise PostgresUnavailable(
                f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip()} {tail}"
            )

    def start(self) -> TemporaryPostgres:
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self._user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        data = self.dir / "data"
        self._run(
            "initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"
        )
        opts = f"-k {self.dir} -c listen_addresses='' -p {self.port}"
        self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        self._started = True
        log.info("temporary PostgreSQL started", extra={"dir": str(self.dir)})
        return self

    def stop(self) -> None:
        if self._started:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
            self._started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TemporaryPostgres:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a half-hour boundary


def make_readings(n_readings: int, meters: int, length_min: int = 30) -> list[IntervalReading]:
    """`n_readings` readings: `meters` meters, consecutive intervals each, meter-major order
    (one meter's intervals together, as one message carries them)."""
    per_meter = -(-n_readings // meters)
    out: list[IntervalReading] = []
    step = length_min * 60
    for m in range(meters):
        mid = f"meter-{m:07d}"
        for i in range(per_meter):
            if len(out) == n_readings:
                return out
            out.append(
                IntervalReading(
                    mid, T0 + i * step, length_min, 100 + (m * 7 + i) % 900, (m + i) % 50, 0, 1
                )
            )
    return out


def _rows(readings: list[IntervalReading], received_at: float) -> list[tuple[Any, ...]]:
    return [
        (
            r.meter_id,
            r.interval_start,
            r.length_min,
            r.forward_wh,
            r.reverse_wh,
            r.status,
            received_at,
            r.key_id,
        )
        for r in readings
    ]


def _baseline_sqlite(directory: Path, readings: list[IntervalReading], batch: int) -> float:
    """Raw executemany INSERT of the same rows into the same table, same pragmas and batches."""
    repo = SqliteRepository(directory / "baseline.db")  # creates the schema
    repo.close()
    conn = sqlite3.connect(directory / "baseline.db", isolation_level=None)
    conn.execute("PRAGMA synchronous=FULL")
    rows = _rows(readings, 0.0)
    sql = f"INSERT INTO readings ({READING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    t = time.perf_counter()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN")
        conn.executemany(sql, rows[i : i + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t
    conn.close()
    return len(rows) / elapsed


def _baseline_postgres(dsn: str, readings: list[IntervalReading], batch: int) -> float:
    """Raw COPY of the same rows into a fresh table like `readings`, same batches."""
    import psycopg

    rows = _rows(readings, 0.0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS readings_baseline")
        conn.execute("CREATE TABLE readings_baseline (LIKE readings INCLUDING ALL)")
        t = time.perf_counter()
        for i in range(0, len(rows), batch):
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(f"COPY readings_baseline ({READING_COLUMNS}) FROM STDIN") as copy,
            ):
                for row in rows[i : i + batch]:
                    copy.write_row(row)
        elapsed = time.perf_counter() - t
        conn.execute("DROP TABLE readings_baseline")
    return len(rows) / elapsed


def bench_ingest(
    backend: str,
    n_readings: int = 200_000,
    *,
    meters: int | None = None,
    intervals_per_message: int = 4,
    batch: int = 20_000,
    dsn: str | None = None,
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Readings per second through Ingestor -> repository (group commit of `batch` readings),
    and the raw insert (SQLite executemany) / COPY (PostgreSQL) rate of the same rows.

    backend: "sqlite" (a temp dir unless `data_dir`) or "postgresql" (`dsn`, else a throwaway
    cluster started for the run). One message = one meter's `intervals_per_message` intervals.
    """
    if backend not in ("sqlite", "postgresql"):
        raise ValueError("backend must be 'sqlite' or 'postgresql'")
    if meters is None:
        meters = max(1, n_readings // intervals_per_message)
    readings = make_readings(n_readings, meters)
    messages = [
        readings[i : i + intervals_per_message]
        for i in range(0, len(readings), intervals_per_message)
    ]
    cluster: TemporaryPostgres | None = None
    tmp: str | None = None
    try:
        if backend == "postgresql" and dsn is None:
            cluster = TemporaryPostgres().start()
            dsn = cluster.dsn
        if backend == "sqlite":
            tmp = tempfile.mkdtemp(prefix="amistack-bench-") if data_dir is None else None
            directory = Path(data_dir or tmp or ".")
            directory.mkdir(parents=True, exist_ok=True)
            for name in ("headend.db", "baseline.db"):
                for suffix in ("", "-wal", "-shm"):
                    (directory / (name + suffix)).unlink(missing_ok=True)
            repo: SqliteRepository | PostgresRepository = SqliteRepository(directory)
        else:
            assert dsn is not None
            repo = open_repository(dsn)
            with repo._tx() as tx:  # a fresh table each run
                tx.run("TRUNCATE readings")
        ingestor = Ingestor(repo, max_batch=batch, max_delay=3600.0)
        acked = 0
        t = time.perf_counter()
        for n, msg in enumerate(messages):
            report = ingestor.submit(n, msg, 0.0)
            if report is not None:
                acked += len(report.durable)
        acked += len(ingestor.flush(0.0).durable)
        elapsed = time.perf_counter() - t
        stored = repo.count_readings()
        repo.close()
        if backend == "sqlite":
            baseline = _baseline_sqlite(directory, readings, batch)
        else:
            assert dsn is not None
            baseline = _baseline_postgres(dsn, readings, batch)
    finally:
        if cluster is not None:
            cluster.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if acked != len(messages) or stored != len(readings):
        raise RuntimeError(f"bench lost data: acked {acked}/{len(messages)}, stored {stored}")
    return {
        "backend": backend,
        "path": "store",  # ingest only: readings handed over already decoded
        "readings": len(readings),
        "messages": len(messages),
        "intervals_per_message": intervals_per_message,
        "batch": batch,
        "seconds": round(elapsed, 3),
        "reads_per_s": round(len(readings) / elapsed),
        "baseline_rows_per_s": round(baseline),
        "cpus": os.cpu_count(),
    }
