"""`amistack bench dashboard`: the dashboard's fleet page with a large registry.

A SQLite head-end database gets `meters` registered meters (bulk-inserted, as a migration
would load them) with `readings` half-hour readings each for today, half of them on the first
page's meters; then the real app (`headend.api.create_app`) is served by uvicorn on loopback
and timed over HTTP: the fleet page (first page, a search, a state filter, a deep page), and as
the baseline in the same run the plain API's meter list (GET /meters?limit=50) on the same
server. Times are wall times of whole requests on loopback (the server's time plus a loopback
round trip), `rounds` requests each: p50, p95 and max in milliseconds. The fleet's counts by
state (the whole fleet's, refreshed in the background by the dashboard) are also timed alone:
`fleet_counts_compute`, what one refresh costs.
"""

from __future__ import annotations

import socket
import sqlite3
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from amistack.access import AccessStore, AuditTrail, Role
from amistack.access.http import AccessControl
from amistack.headend.api import create_app
from amistack.headend.dashboard.fleet import fleet_counts
from amistack.headend.storage import READING_COLUMNS, SqliteRepository

DAY = 86400


def _fill(directory: Path, meters: int, readings: int, now: float) -> None:
    SqliteRepository(directory).close()  # the schema
    day = int(now) - int(now) % DAY
    db = sqlite3.connect(directory / SqliteRepository.FILENAME)
    try:
        with db:
            db.executemany(
                "INSERT INTO meters (meter_id, ap_title, concentrator, cell, state, installed_at, "
                "commissioned_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        f"meter-{i:07d}",
                        f"2.16.124.113620.1.22.{i // 65536}.{i % 65536}",
                        f"conc-{i // 1000:03d}",
                        f"cell-{i // 250:04d}",
                        "decommissioned" if i % 97 == 0 else "commissioned",
                        now,
                        now,
                    )
                    for i in range(meters)
                ),
            )
            marks = ", ".join("?" * len(READING_COLUMNS.split(",")))
            db.executemany(
                f"INSERT INTO readings ({READING_COLUMNS}) VALUES ({marks})",
                (
                    (f"meter-{i:07d}", day + k * 1800, 30, 200 + (i + k) % 300, 0, 0, now, 1)
                    for i in range(0, meters, 2)
                    for k in range(readings)
                ),
            )
    finally:
        db.close()


def serve_in_thread(app: Any) -> tuple[uvicorn.Server, threading.Thread, int]:
    """`app` under uvicorn on a loopback port of its own, in a thread: (server, thread, port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, port


def _timed(get: Callable[[], int], rounds: int) -> dict[str, float]:
    get()  # warm: templates compiled, reader connection opened
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        status = get()
        times.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise RuntimeError(f"answered {status}")
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 2),
        "max_ms": round(times[-1], 2),
    }


def bench_dashboard(meters: int, readings: int, rounds: int) -> dict[str, Any]:
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="amistack-bench-dashboard-") as tmp:
        directory = Path(tmp)
        t0 = time.perf_counter()
        _fill(directory, meters, readings, now)
        fill_s = time.perf_counter() - t0
        repo = SqliteRepository(directory)
        store = AccessStore(directory / "access")
        access = AccessControl(store, AuditTrail.open(directory, now), time.time)
        store.add_user("bench", "bench password 1", {Role.VIEWER}, now)
        token = store.issue_token("bench", now).token
        server, thread, port = serve_in_thread(create_app(repo, access))
        try:
            base = f"http://127.0.0.1:{port}"

            def getter(path: str) -> Callable[[], int]:
                def get() -> int:
                    req = urllib.request.Request(
                        base + path, headers={"Authorization": f"Bearer {token}"}
                    )
                    with urllib.request.urlopen(req, timeout=30) as r:
                        r.read()
                        return int(r.status)

                return get

            deep = f"meter-{meters * 3 // 4:07d}"
            result: dict[str, Any] = {
                "meters": meters,
                "readings": (meters + 1) // 2 * readings,
                "fill_s": round(fill_s, 1),
                "rounds": rounds,
                "baseline_api_meters_page": _timed(getter("/meters?limit=50"), rounds),
                "fleet_first_page": _timed(getter("/ui/fleet"), rounds),
                "fleet_search": _timed(getter("/ui/fleet?q=meter-00420"), rounds),
                "fleet_state_filter": _timed(getter("/ui/fleet?state=decommissioned"), rounds),
                "fleet_deep_page": _timed(getter(f"/ui/fleet?after={deep}"), rounds),
                "fleet_counts_compute": _timed(
                    lambda: 200 if fleet_counts(repo, time.time(), None) else 500,
                    min(rounds, 5),
                ),
            }
        finally:
            server.should_exit = True
            thread.join(10)
            repo.close()
            access.audit.close()
            store.close()
    base_ms = result["baseline_api_meters_page"]["p50_ms"]
    result["fleet_vs_api_p50"] = round(result["fleet_first_page"]["p50_ms"] / base_ms, 1)
    return result
