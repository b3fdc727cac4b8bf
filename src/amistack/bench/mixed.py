"""`amistack bench mixed`: ingest while the REST API serves dashboard range queries, both rates.

One process serves the head-end's way: an event loop runs the ingest (one reading per message,
already decoded, through the `Ingestor` group commit) and the API (`headend.api.create_app` under
uvicorn) on SQLite; a client process keeps `api_clients` range queries in flight over HTTP
(keep-alive; one meter's week of half-hour readings per query). Four phases, the same
`duration` each, in one run:

- `ingest_alone` and `api_alone`: the baselines;
- `both_on_loop`: as the head-end was before issue 12 - each batch commits on the event loop
  (the loop waits for the fsync) and the API's queries share the writer's connection and lock;
- `both_off_loop`: as it is now - batches commit on the writer thread
  (`runtime.ingest_writer`), queries run on reader connections of their own threads.

Per phase: `ingest_readings_per_s` (readings reported durable within the window),
`api_queries_per_s` with `api_p50_ms` / `api_p99_ms`, and `loop_lag_max_ms` / `loop_lag_p99_ms`
(how late a 5 ms ticker on the loop woke: what every datagram waits when the loop is held).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import multiprocessing
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from amistack.bench.auth import percentile
from amistack.bench.ingest import T0
from amistack.headend.ingest import BatchWriter, Ingestor
from amistack.headend.schema import IntervalReading
from amistack.headend.storage import SqliteRepository
from amistack.runtime.asgi import serve_asgi
from amistack.runtime.ingest_writer import ThreadedBatchWriter
from amistack.runtime.loop import new_event_loop

DAY = 86_400
QUERY_DAYS = 7  # a dashboard's week of one meter
SUBMIT_CHUNK = 200  # submissions between two yields to the loop
TICK = 0.005  # the loop-lag probe's period

PHASES = ("ingest_alone", "api_alone", "both_on_loop", "both_off_loop")


class _OneConnection(SqliteRepository):
    """The head-end's storage as it was before issue 12: queries go through the writer's
    connection and lock (the baseline of `both_on_loop`)."""

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._tx() as tx:
            return tx.run(sql, params)


def _prepare(directory: Path, meters: int, days: int) -> None:
    repo = SqliteRepository(directory)
    for m in range(meters):
        repo.register_meter(f"m{m:05d}", f"2.16.124.113620.1.22.0.{1000 + m}", "c", "x", 0.0)
        rows = [
            IntervalReading(f"m{m:05d}", T0 + i * 1800, 30, 100 + i % 50, 0, 0, 1)
            for i in range(days * 48)
        ]
        repo.store_readings(rows, 0.0)
    repo.close()


def _query_client(
    port: int,
    token: str,
    meters: int,
    days: int,
    clients: int,
    duration: float,
    conn: Connection,
) -> None:
    """The dashboard: `clients` threads, each one range query at a time, for `duration`."""
    done: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start_evt = threading.Event()
    deadline = [0.0]

    def worker(k: int) -> None:
        session = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n = k
        start_evt.wait()
        while time.perf_counter() < deadline[0]:
            m = n % meters
            n += clients
            first = T0 + (n % max(1, days - QUERY_DAYS)) * DAY
            path = f"/meters/m{m:05d}/readings?start={first}&end={first + QUERY_DAYS * DAY}"
            t = time.perf_counter()
            try:
                session.request(
                    "GET", path + "&limit=1000", headers={"Authorization": f"Bearer {token}"}
                )
                resp = session.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                session.close()
                session = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if ok:
                done[k].append(time.perf_counter() - t)
            else:
                errors[k] += 1
        session.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for th in threads:
        th.start()
    conn.send("ready")
    conn.recv()  # go
    deadline[0] = time.perf_counter() + duration
    start_evt.set()
    for th in threads:
        th.join(duration + 60)
    latencies = sorted(x for d in done for x in d)
    conn.send({"queries": len(latencies), "errors": sum(errors), "latencies": latencies})
    conn.close()


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    clock = time.perf_counter  # (uvloop's loop.time() has millisecond steps)
    while not stop.is_set():
        t = clock()
        await asyncio.sleep(TICK)
        lags.append(max(0.0, clock() - t - TICK))


async def _ingest(ingestor: Ingestor, first_meter: int, deadline: float) -> tuple[int, int]:
    """Submit one reading per message as fast as the loop allows until `deadline`; returns
    (readings reported durable by then, all submitted - every one durable after the flush)."""
    loop = asyncio.get_running_loop()
    durable = n = 0
    slot = 0
    while loop.time() < deadline:
        for _ in range(SUBMIT_CHUNK):
            meter = first_meter + n % 100_000
            if n and n % 100_000 == 0:
                slot += 1
            r = IntervalReading(f"i{meter:06d}", T0 + slot * 1800, 30, n % 900, 0, 0, 1)
            report = ingestor.submit(n, [r], time.time())
            if report is not None:
                durable += len(report.durable)
            n += 1
        report = ingestor.handle_timer(time.time())
        if report is not None:
            durable += len(report.durable)
        await asyncio.sleep(0)
    final = await asyncio.get_running_loop().run_in_executor(None, ingestor.flush, time.time())
    if durable + len(final.durable) != n:
        raise RuntimeError(f"bench mixed: {n} submitted, {durable + len(final.durable)} durable")
    return durable, n


async def _phase(
    name: str,
    directory: Path,
    *,
    meters: int,
    days: int,
    clients: int,
    duration: float,
    batch: int,
    first_meter: int,
) -> dict[str, Any]:
    from amistack.access import AccessStore, AuditTrail, Role
    from amistack.access.http import AccessControl
    from amistack.headend.api import create_app

    ingest = name != "api_alone"
    api = name != "ingest_alone"
    on_loop = name == "both_on_loop"
    repo = _OneConnection(directory) if on_loop else SqliteRepository(directory)
    writer: BatchWriter | None = None if on_loop else ThreadedBatchWriter(repo)
    ingestor = Ingestor(repo, max_batch=batch, max_delay=0.05, writer=writer)
    api_stack = contextlib.AsyncExitStack()
    proc = parent = None
    lags: list[float] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        if api:
            # the dashboard is a VIEWER with a bearer token, as in production
            users = AccessStore(directory / "access")
            if users.get_user("dashboard") is None:
                users.add_user("dashboard", "bench dashboard password", {Role.VIEWER}, time.time())
            token = users.issue_token("dashboard", time.time()).token
            access = AccessControl(users, AuditTrail.open(directory, time.time()), time.time)
            _, port = await api_stack.enter_async_context(
                serve_asgi(create_app(repo, access), "127.0.0.1", 0)
            )
            ctx = multiprocessing.get_context("spawn")
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_query_client,
                args=(port, token, meters, days, clients, duration, child),
                daemon=True,
            )
            proc.start()
            child.close()
            await loop.run_in_executor(None, parent.recv)  # its threads are connected
            parent.send("go")
        ticker = asyncio.create_task(_ticker(lags, stop))
        cpu = time.process_time()
        durable = submitted = 0
        if ingest:
            durable, submitted = await _ingest(ingestor, first_meter, loop.time() + duration)
        else:
            await asyncio.sleep(duration)
        cpu = time.process_time() - cpu
        stop.set()
        await ticker
        client: dict[str, Any] = {"queries": 0, "errors": 0, "latencies": []}
        if parent is not None:
            client = await loop.run_in_executor(None, parent.recv)
    finally:
        await api_stack.aclose()
        if proc is not None:
            await loop.run_in_executor(None, proc.join, 5.0)
            if proc.is_alive():
                proc.kill()
        if isinstance(writer, ThreadedBatchWriter):
            writer.close()
        repo.close()
    lat = client["latencies"]
    return {
        "ingest_readings_per_s": round(durable / duration, 1) if ingest else None,
        "ingest_submitted": submitted,
        "api_queries_per_s": round(client["queries"] / duration, 1) if api else None,
        "api_errors": client["errors"],
        "api_p50_ms": round(percentile(lat, 50) * 1000, 2) if lat else None,
        "api_p99_ms": round(percentile(lat, 99) * 1000, 2) if lat else None,
        "loop_lag_max_ms": round(max(lags, default=0.0) * 1000, 2),
        "loop_lag_p99_ms": round(percentile(sorted(lags), 99) * 1000, 2) if lags else 0.0,
        "server_cpu_s": round(cpu, 3),
    }


def bench_mixed(
    duration: float = 3.0,
    *,
    meters: int = 200,
    days: int = 30,
    api_clients: int = 4,
    batch: int = 5000,
    prefer_uvloop: bool = True,
) -> dict[str, Any]:
    """The four phases (module docstring) on one SQLite database in a temp dir; JSON-ready."""
    if duration <= 0 or meters < 1 or days <= QUERY_DAYS or api_clients < 1 or batch < 1:
        raise ValueError("duration > 0, meters, api_clients, batch >= 1, days > 7 required")
    tmp = Path(tempfile.mkdtemp(prefix="amistack-bench-mixed-"))
    try:
        _prepare(tmp, meters, days)
        loop = new_event_loop(prefer_uvloop)
        results: dict[str, Any] = {}
        try:
            for k, name in enumerate(PHASES):
                results[name] = loop.run_until_complete(
                    _phase(
                        name,
                        tmp,
                        meters=meters,
                        days=days,
                        clients=api_clients,
                        duration=duration,
                        batch=batch,
                        first_meter=k * 1_000_000,
                    )
                )
        finally:
            loop.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    both, alone = results["both_off_loop"], results
    return {
        "benchmark": "mixed",
        "backend": "sqlite",
        "duration_s": duration,
        "meters": meters,
        "api_clients": api_clients,
        "query_rows": QUERY_DAYS * 48,
        "batch": batch,
        **results,
        # the share of each alone-rate kept when both run (1.0 = no interference)
        "off_loop_ingest_kept": _ratio(
            both["ingest_readings_per_s"], alone["ingest_alone"]["ingest_readings_per_s"]
        ),
        "off_loop_api_kept": _ratio(
            both["api_queries_per_s"], alone["api_alone"]["api_queries_per_s"]
        ),
        "on_loop_ingest_kept": _ratio(
            results["both_on_loop"]["ingest_readings_per_s"],
            alone["ingest_alone"]["ingest_readings_per_s"],
        ),
        "on_loop_api_kept": _ratio(
            results["both_on_loop"]["api_queries_per_s"], alone["api_alone"]["api_queries_per_s"]
        ),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


__all__ = ["PHASES", "bench_mixed"]
