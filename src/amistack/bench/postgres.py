"""`TemporaryPostgres`: a throwaway PostgreSQL cluster in a temp dir (initdb + pg_ctl, unix
socket only), used by the benchmarks and by the PostgreSQL tests (`tests/conftest_pg.py`).
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

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


__all__ = ["PostgresUnavailable", "TemporaryPostgres", "postgres_bindir"]
