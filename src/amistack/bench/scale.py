"""`amistack bench scale`: past one box - 1 vs 2 key-server processes and 1 vs 2 collector
processes against one PostgreSQL, with per-process rates, the aggregate, and the database's own
rate (binary COPY of the same readings) measured in the same run (docs/scale-out.md).

- **Key servers.** Each is the real runtime (`runtime.keyserver.run_keyserver`: PANA over UDP,
  group commit, LISTEN/NOTIFY revocation watch) on `PostgresCredentialStore` under its own
  instance name, in a process of its own; each gets its own PaC fleet process (its
  concentrators). The PAA's per-source limits are lifted as in `bench auth` (every meter shares
  the loopback address). After the two-process run, two devices with live sessions (one on
  each server) are revoked through a third connection, as `amistack keys revoke --db` does:
  `revocation_propagation_ms` is, per server, from the revocation's audit time to that server's
  audited cut of the device's keys.
- **Collectors.** Each decodes (ACSE, EAX' verify+decrypt, EPSEM, load-profile table) and
  stores (Ingestor group commit, staging COPY + INSERT ON CONFLICT into the day-partitioned
  `readings`) the C12.22 messages of its shard's meters (`headend.shard`, by meter id), in a
  process of its own, one reading per message (a meter pushing its latest slot).

Every process's rate is over its own run; the aggregate is everything it did over the wall
time from the first start to the last end. On a 2-core machine two processes plus their load
generators share the cores: the JSON carries each process's CPU seconds, so a reader can tell
a scaling limit from a machine limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from amistack.bench.auth import (
    _fleet_process,
    _recv_blocking,
    bench_device_id,
    bench_paa_config,
    bench_psk,
)
from amistack.bench.ingest import (
    T0,
    _baseline_postgres,
    _e2e_run,
    _meter_key,
    _meter_title,
    build_messages,
    make_readings,
)
from amistack.bench.postgres import TemporaryPostgres

TIMEOUT = 120.0
APPLIED = ("keys-shortened", "session-end")  # what a key server audits applying a revocation


@contextlib.contextmanager
def _database(dsn: str | None) -> Iterator[str]:
    if dsn is not None:
        yield dsn
        return
    with TemporaryPostgres() as pg:
        yield pg.dsn


def _kek(material: bytes) -> Any:
    from amistack.crypto import system_random
    from amistack.keymgmt.kek import FileKek

    return FileKek(material, system_random)


def _start(
    ctx: Any, target: Any, args: tuple[Any, ...], *, duplex: bool = False
) -> tuple[Any, Connection]:
    """A daemon process running `target(*args, conn)`; returns it and the parent's end."""
    parent, child = ctx.Pipe(duplex=duplex)
    proc = ctx.Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    child.close()
    return proc, parent


# -- key servers -------------------------------------------------------------------------------


def _keyserver_process(dsn: str, kek: bytes, instance: str, conn: Connection) -> None:
    """One key-server process: the real runtime on PostgreSQL until the parent says stop; then
    its CPU seconds and counters go back up the pipe."""
    from amistack.keymgmt.store_pg import PostgresCredentialStore
    from amistack.runtime.keyserver import KeyServerRuntime, run_keyserver
    from amistack.runtime.loop import run, service_gc

    try:
        store = PostgresCredentialStore(dsn, _kek(kek), instance=instance)
        held: list[KeyServerRuntime] = []

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            def ready(rt: KeyServerRuntime) -> None:
                held.append(rt)
                conn.send(rt.pana_addresses[0])

            async def wait_stop() -> None:
                await loop.run_in_executor(None, conn.recv)
                stop.set()

            waiter = asyncio.create_task(wait_stop())
            cpu = time.process_time()
            await run_keyserver(
                store,
                ["127.0.0.1"],
                0,
                stop=stop,
                ready=ready,
                paa_config=bench_paa_config(),
                now=time.time(),
            )
            await waiter
            counters = {k: v for k, v in held[0].engine.counters.items() if v}
            conn.send({"cpu_s": time.process_time() - cpu, "counters": counters})

        with service_gc():
            run(main)
        store.close()
    except BaseException as exc:  # tell the parent rather than leaving it waiting
        conn.send({"error": repr(exc)})
    finally:
        conn.close()


def _run_keyservers(
    dsn: str, kek: bytes, n: int, sessions: int, concurrency: int, devices: int
) -> dict[str, Any]:
    """`n` key-server processes, each with a PaC fleet process of `sessions` / n sessions."""
    ctx = multiprocessing.get_context("spawn")
    servers: list[tuple[Any, Connection]] = []
    fleets: list[tuple[Any, Connection]] = []
    try:
        for k in range(n):
            servers.append(_start(ctx, _keyserver_process, (dsn, kek, f"ks{k + 1}"), duplex=True))
        addrs = [_recv_blocking(conn, TIMEOUT) for _, conn in servers]
        for addr in addrs:
            if isinstance(addr, dict):
                raise RuntimeError(f"key server failed: {addr['error']}")
        for k, addr in enumerate(addrs):
            share = list(range(k, sessions, n))  # session i authenticates device i % devices
            pacs = max(1, concurrency // n)
            args = (tuple(addr), share, pacs, devices, min(32, pacs), TIMEOUT, True)
            fleets.append(_start(ctx, _fleet_process, args))
        results = [_recv_blocking(conn, TIMEOUT + 60.0) for _, conn in fleets]
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise RuntimeError(f"PaC process failed: {errors[0]}")
        propagation = _revocation_propagation(dsn, kek, n, devices) if n > 1 else None
        for _, conn in servers:
            conn.send("stop")
        server_results = [_recv_blocking(conn, TIMEOUT) for _, conn in servers]
    finally:
        for proc, conn in [*fleets, *servers]:
            proc.join(10.0)
            if proc.is_alive():
                proc.kill()
            conn.close()
    start = min(r["wall_start"] for r in results)
    end = max(r["wall_end"] for r in results)
    completed = sum(r["completed"] for r in results)
    per_process = [
        {
            "instance": f"ks{k + 1}",
            "auths_per_s": round(r["auths_per_s"], 1),
            "completed": r["completed"],
            "failures": r["failures"],
            "p50_ms": round(r["p50_ms"], 2),
            "p99_ms": round(r["p99_ms"], 2),
            "server_cpu_s": round(s.get("cpu_s", 0.0), 2),
            # CPU per authentication in the key server: what a free core would do is 1e6 / it
            "server_cpu_us_per_auth": round(s.get("cpu_s", 0.0) / max(1, r["completed"]) * 1e6),
            "pacs_cpu_s": round(r["cpu_s"], 2),
            "commits": s.get("counters", {}).get("commits", 0),
        }
        for k, (r, s) in enumerate(zip(results, server_results, strict=True))
    ]
    out: dict[str, Any] = {
        "processes": n,
        "auths_per_s": round(completed / (end - start), 1) if end > start else 0.0,
        "completed": completed,
        "elapsed_s": round(end - start, 3),
        "per_process": per_process,
    }
    if propagation is not None:
        out["revocation_propagation_ms"] = propagation
    return out


def _revocation_propagation(dsn: str, kek: bytes, n: int, devices: int) -> dict[str, float]:
    """Revoke device k (its sessions live on server k: session i ran on server i % n) through
    another connection; per server, ms from the revocation's audit time to the first entry
    that server wrote applying it (its keys cut; its sessions' ends follow when the PaCs, gone
    here, stop answering), both on the wall clock."""
    from amistack.keymgmt.store_pg import PostgresCredentialStore

    out: dict[str, float] = {}
    with PostgresCredentialStore(dsn, _kek(kek)) as operator:
        revoked = {}
        for k in range(min(n, devices)):
            did = bench_device_id(k).encode()
            operator.revoke(did, "bench: propagation", time.time())
            revoked[k] = did
        deadline = time.monotonic() + 10.0
        for k, did in revoked.items():
            while time.monotonic() < deadline:
                entries = operator.audit_log(100, device_id=did)  # newest first
                revoke = next(e for e in entries if e.kind == "revoke")
                ends = [e.at for e in entries if e.kind in APPLIED and e.seq > revoke.seq]
                if ends:
                    out[f"ks{k + 1}"] = round((min(ends) - revoke.at) * 1000.0, 1)
                    break
                time.sleep(0.005)
    return out


# -- collectors --------------------------------------------------------------------------------


def _collector_process(
    dsn: str, wire: list[bytes], directory: dict[str, tuple[str, bytes]], batch: int, conn: Any
) -> None:
    from amistack.headend.storage import PostgresRepository

    try:
        repo = PostgresRepository(dsn)
        wall = time.time()
        elapsed, refused, _, cpu, _ = _e2e_run(repo, wire, 1, directory, batch, 0)
        repo.close()
        conn.send({"elapsed_s": elapsed, "cpu_s": cpu, "refused": refused, "wall_start": wall})
    except BaseException as exc:
        conn.send({"error": repr(exc)})
    finally:
        conn.close()


def _run_collectors(
    dsn: str, wire: list[list[bytes]], directory: dict[str, tuple[str, bytes]], batch: int
) -> dict[str, Any]:
    """One collector process per entry of `wire` (its shard's messages), at once."""
    ctx = multiprocessing.get_context("fork")  # the prebuilt messages are inherited, not copied
    procs: list[tuple[Any, Connection]] = []
    try:
        for shard in wire:
            procs.append(_start(ctx, _collector_process, (dsn, shard, directory, batch)))
        results = [_recv_blocking(conn, TIMEOUT) for _, conn in procs]
    finally:
        for proc, conn in procs:
            proc.join(10.0)
            if proc.is_alive():
                proc.kill()
            conn.close()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(f"collector process failed: {errors[0]}")
    start = min(r["wall_start"] for r in results)
    end = max(r["wall_start"] + r["elapsed_s"] for r in results)
    total = sum(len(s) for s in wire)
    return {
        "processes": len(wire),
        "readings_per_s": round(total / (end - start), 1),
        "readings": total,
        "elapsed_s": round(end - start, 3),
        "per_process": [
            {
                "readings_per_s": round(len(s) / r["elapsed_s"], 1),
                "readings": len(s),
                "cpu_s": round(r["cpu_s"], 2),
                "cpu_us_per_reading": round(r["cpu_s"] / max(1, len(s)) * 1e6, 1),
                "refused": r["refused"],
            }
            for s, r in zip(wire, results, strict=True)
        ],
    }


def _shards(
    readings: int, n: int
) -> tuple[list[list[bytes]], dict[str, tuple[str, bytes]], list[Any]]:
    """The messages (one reading each) split over `n` collectors by meter, their directory."""
    from amistack.headend.registry import Meter, MeterState
    from amistack.headend.shard import ShardKey, shard_of

    rows = make_readings(readings, readings)  # one interval per meter: its latest slot
    wire = build_messages([[r] for r in rows])
    shards: list[list[bytes]] = [[] for _ in range(n)]
    for r, data in zip(rows, wire, strict=True):
        meter = Meter(r.meter_id, "", "", "", MeterState.COMMISSIONED, 0.0)
        shards[shard_of(meter, n, ShardKey.METER)].append(data)
    directory = {
        _meter_title(m): (f"meter-{m:07d}", _meter_key(f"meter-{m:07d}")) for m in range(readings)
    }
    return shards, directory, rows


def bench_scale(
    *,
    sessions: int = 1000,
    concurrency: int = 32,
    devices: int = 64,
    readings: int = 20_000,
    batch: int = 5000,
    dsn: str | None = None,
) -> dict[str, Any]:
    """1 vs 2 key servers (`sessions` full authentications each run, `devices` enrolled) and
    1 vs 2 collectors (`readings` messages of one reading each run) on one PostgreSQL (`dsn`,
    else a throwaway cluster), with the COPY rate of the same readings as the baseline."""
    if min(sessions, concurrency, devices, readings, batch) < 2:
        raise ValueError("sessions, concurrency, devices, readings and batch must be >= 2")
    from amistack.headend.storage import PostgresRepository
    from amistack.keymgmt.store_pg import PostgresCredentialStore

    kek = os.urandom(32)
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    with _database(dsn) as url:
        with PostgresCredentialStore(url, _kek(kek)) as store:
            now = time.time()
            for i in range(devices):
                store.enroll(bench_device_id(i), bench_psk(i), now, replace=True)
        keyservers = [_run_keyservers(url, kek, n, sessions, concurrency, devices) for n in (1, 2)]
        repo = PostgresRepository(url)
        repo.maintain_partitions(T0, behind=0, ahead=1)  # the slot's day, as in service
        repo.close()
        one, directory, rows = _shards(readings, 1)
        two, _, _ = _shards(readings, 2)
        collectors = []
        for wire in (one, two):
            _truncate(url)
            collectors.append(_run_collectors(url, wire, directory, batch))
        copy_per_s = _baseline_postgres(url, rows, batch)
    return {
        "keyservers": {"1": keyservers[0], "2": keyservers[1]},
        "keyserver_2_vs_1": _ratio(keyservers[1]["auths_per_s"], keyservers[0]["auths_per_s"]),
        "collectors": {"1": collectors[0], "2": collectors[1]},
        "collector_2_vs_1": _ratio(
            collectors[1]["readings_per_s"], collectors[0]["readings_per_s"]
        ),
        "postgres_copy_readings_per_s": round(copy_per_s, 1),
        "cpus": os.cpu_count(),
        # the machine's 1-minute load average before and after: on a shared box, how much of
        # the cores the run really had
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "sessions": sessions,
        "concurrency": concurrency,
        "devices": devices,
        "readings_per_message": 1,
        "batch": batch,
        "total_s": round(time.perf_counter() - t0, 1),
    }


def _truncate(dsn: str) -> None:
    from amistack.pgconn import connect

    with connect(dsn) as conn:
        conn.execute("TRUNCATE readings")


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0
