"""`amistack bench ingest`: interval readings per second into the head-end's storage, end to end,
with the raw insert rate of the same rows measured in the same run as the baseline (PostgreSQL
runs on a throwaway cluster, `bench.postgres.TemporaryPostgres`, unless a DSN is given).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import resource
import shutil
import sqlite3
import struct
import tempfile
import time
from itertools import starmap
from pathlib import Path
from typing import Any

from amistack.bench.postgres import TemporaryPostgres
from amistack.headend.ingest import Ingestor
from amistack.headend.schema import IntervalReading
from amistack.headend.storage import (
    COPY_TYPES,
    READING_COLUMNS,
    PostgresRepository,
    SqliteRepository,
    open_repository,
)

log = logging.getLogger(__name__)


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
                IntervalReading(mid, T0 + i * step, length_min, 100 + (m * 7 + i) % 900, 0, 0, 1)
            )
    return out


def _rows(readings: list[IntervalReading], received_at: float) -> list[tuple[Any, ...]]:
    return [r.row(received_at) for r in readings]


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
    """Raw binary COPY of the same rows into a fresh table like `readings`, same batches."""
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
                cur.copy(
                    f"COPY readings_baseline ({READING_COLUMNS}) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(COPY_TYPES)
                for row in rows[i : i + batch]:
                    copy.write_row(row)
        elapsed = time.perf_counter() - t
        conn.execute("DROP TABLE readings_baseline")
    return len(rows) / elapsed


# -- end to end: C12.22 messages, EAX' protected, decoded and stored ------------------------------

_HEADEND_TITLE = ".0.1"


def encode_interval_block(readings: list[IntervalReading]) -> bytes:
    """A meter's consecutive intervals as ANSI C12.19 load-profile table data (ST64/ST65 layout
    of amistack.c1222.tables.LoadProfile: forward energy and status per interval; that table
    carries no reverse energy, so the benchmark's readings have reverse_wh = 0)."""
    from amistack.c1222.tables import Interval, LoadProfile

    length = readings[0].length_min
    end = readings[-1].interval_start + length * 60
    return LoadProfile(
        length, float(end), tuple(Interval(r.forward_wh, r.status) for r in readings)
    ).encode()


def _decode_interval_block(
    meter_id: str, data: bytes, key_id: int
) -> list[tuple[str, int, int, int, int, int, int]]:
    from amistack.c1222.tables import LoadProfile

    lp = LoadProfile.decode(data)
    step = lp.interval_minutes * 60
    first = int(lp.end_time) - len(lp.intervals) * step
    return [
        (meter_id, first + i * step, lp.interval_minutes, iv.value_wh, 0, iv.status, key_id)
        for i, iv in enumerate(lp.intervals)
    ]


def _meter_title(m: int) -> str:
    return f"2.16.124.113620.1.22.0.{1000 + m}"


def _meter_key(meter_id: str) -> bytes:
    return hashlib.sha256(b"bench c1222 key " + meter_id.encode()).digest()[:16]


def build_messages(messages: list[list[IntervalReading]]) -> list[bytes]:
    """Each message: one meter's intervals in a read response, EAX' ciphertext+auth, encoded."""
    from amistack.c1222.acse import AcseMessage, ApTitle
    from amistack.c1222.epsem import Epsem, SecurityMode
    from amistack.c1222.security import protect
    from amistack.c1222.services import ReadResult, Response, ResponseCode

    out = []
    called = ApTitle.parse(_HEADEND_TITLE)
    titles: dict[str, ApTitle] = {}
    for n, msg in enumerate(messages):
        meter_id = msg[0].meter_id
        title = titles.get(meter_id)
        if title is None:
            title = titles[meter_id] = ApTitle.parse(_meter_title(int(meter_id.split("-")[1])))
        service = Response(ResponseCode.OK, ReadResult(encode_interval_block(msg)).encode())
        epsem = Epsem((service.encode(),), security_mode=SecurityMode.CIPHERTEXT_AUTH)
        header = AcseMessage(
            b"", called_ap_title=called, calling_ap_title=title, calling_ap_invocation_id=n + 1
        )
        key_id = msg[0].key_id
        sealed = protect(header, epsem, _meter_key(meter_id), key_id, (n + 1).to_bytes(4, "big"))
        out.append(sealed.encode())
    return out


_WORKER_DIRECTORY: dict[str, tuple[str, bytes]] = {}


def _init_worker(directory: dict[str, tuple[str, bytes]]) -> None:
    global _WORKER_DIRECTORY
    _WORKER_DIRECTORY = directory


def open_messages(
    chunk: list[bytes], directory: dict[str, tuple[str, bytes]] | None = None
) -> tuple[list[tuple[str, int, int, int, int, int, int]], int]:
    """Decode, authenticate+decrypt (EAX'), decode the read response and its interval block.

    Returns the rows and how many messages were refused (unknown sender, bad tag, malformed).
    `directory`: calling AP title (absolute, dotted) -> (meter id, key).
    """
    from amistack.c1222.acse import AcseMessage
    from amistack.c1222.errors import C1222DecodeError
    from amistack.c1222.security import C1222SecurityError, unprotect
    from amistack.c1222.services import ReadResult, decode_response

    table = _WORKER_DIRECTORY if directory is None else directory
    rows: list[tuple[str, int, int, int, int, int, int]] = []
    refused = 0
    for data in chunk:
        try:
            msg = AcseMessage.decode(data)
            if msg.calling_ap_title is None or msg.auth is None:
                refused += 1
                continue
            entry = table.get(str(msg.calling_ap_title.absolute()))  # dotted absolute title
            if entry is None:
                refused += 1
                continue
            meter_id, key = entry
            opened = unprotect(msg, [key])
            response = decode_response(opened.epsem.services[0])
            block = ReadResult.decode(response.data).data
            rows += _decode_interval_block(meter_id, block, msg.auth.key_id)
        except (C1222DecodeError, C1222SecurityError, ValueError, struct.error):
            refused += 1
    return rows, refused


DECODE_SAMPLE = 3_000  # messages of the run per pass of the decode baselines (3 passes)


def decode_baselines(wire: list[bytes], directory: dict[str, tuple[str, bytes]]) -> dict[str, Any]:
    """In this process, on the run's messages: the whole decode per message (`open_messages`),
    and EAX' alone (one verify+decrypt under each message's own key, as a head-end sees them)
    by the C extension and by the reference over `cryptography`. The least of 3 passes, each
    over messages of its own: a sender's AP title decodes faster the second time (the title
    cache of `c1222.acse`), and the run's every message comes from a meter not heard before."""
    from amistack.c1222.acse import AcseMessage
    from amistack.crypto.eax_prime import NATIVE, EaxPrime, NativeEaxPrime

    parts = [p for p in (wire[i * DECODE_SAMPLE : (i + 1) * DECODE_SAMPLE] for i in range(3)) if p]

    def eax_jobs(part: list[bytes]) -> list[tuple[bytes, bytes, bytes, bytes]]:
        jobs = []
        for data in part:
            msg = AcseMessage.decode(data)
            assert msg.calling_ap_title is not None
            key = directory[str(msg.calling_ap_title.absolute())][1]
            ui = msg.user_information
            jobs.append((key, msg.canonical_cleartext(), ui[1:-4], ui[-4:]))
        return jobs

    def least(step: Any, inputs: list[Any]) -> float:
        """The least process CPU time per item of `step(x)` over the inputs, in us."""
        best = float("inf")
        for x in inputs:
            t = time.process_time()
            step(x)
            best = min(best, (time.process_time() - t) / len(x))
        return round(best * 1e6, 2)

    def eax(impl: type[EaxPrime] | type[NativeEaxPrime]) -> Any:
        def run(jobs: list[tuple[bytes, bytes, bytes, bytes]]) -> None:
            for key, clear, sealed, tag in jobs:
                impl(key).decrypt(clear, sealed, tag)

        return run

    out: dict[str, Any] = {
        "eax_native": NATIVE,
        "decode_cpu_us_per_message": least(lambda p: open_messages(p, directory), parts),
    }
    jobs = [eax_jobs(p) for p in parts]
    out["eax_reference_cpu_us_per_message"] = least(eax(EaxPrime), jobs)
    if NATIVE:
        out["eax_native_cpu_us_per_message"] = least(eax(NativeEaxPrime), jobs)
    return out


def _e2e_run(
    repo: SqliteRepository | PostgresRepository,
    wire: list[bytes],
    per_message: int,
    directory: dict[str, tuple[str, bytes]],
    batch: int,
    workers: int,
) -> tuple[float, int, int, float, float]:
    """Time decrypt+verify+decode (in `workers` processes, 0 = inline) + store with acks.

    Returns (elapsed, refused, chunks, CPU seconds of this process over the timed part, CPU
    seconds of the worker processes over their life)."""
    chunk = max(1, batch // per_message // 4)
    chunks = [wire[i : i + chunk] for i in range(0, len(wire), chunk)]
    ingestor = Ingestor(repo, max_batch=batch, max_delay=3600.0)
    acked = refused = 0
    pool = None
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if workers > 0:
        ctx = multiprocessing.get_context("fork")
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(directory,))
        pool.map(len, [[b""]] * workers)  # workers up before the clock starts
    try:
        t, cpu = time.perf_counter(), time.process_time()
        results = (
            pool.imap(open_messages, chunks)
            if pool is not None
            else (open_messages(c, directory) for c in chunks)
        )
        for n, (rows, bad) in enumerate(results):
            refused += bad
            report = ingestor.submit(n, list(starmap(IntervalReading, rows)), 0.0)
            if report is not None:
                acked += len(report.durable)
        acked += len(ingestor.flush(0.0).durable)
        elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # (joined workers only)
    worker_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    if acked != len(chunks):
        raise RuntimeError("bench: not every chunk was acknowledged")
    return elapsed, refused, len(chunks), cpu, worker_cpu


def bench_ingest(
    backend: str,
    n_readings: int = 200_000,
    *,
    meters: int | None = None,
    intervals_per_message: int = 4,
    batch: int = 20_000,
    dsn: str | None = None,
    data_dir: str | Path | None = None,
    path: str = "e2e",
    workers: int | None = None,
) -> dict[str, Any]:
    """Readings per second into the repository (Ingestor group commit of `batch` readings),
    and the raw insert (SQLite executemany) / COPY (PostgreSQL) rate of the same rows.

    backend: "sqlite" (a temp dir unless `data_dir`) or "postgresql" (`dsn`, else a throwaway
    cluster started for the run). One message = one meter's `intervals_per_message` intervals.

    path: "e2e" builds the C12.22 messages up front (EAX' ciphertext+auth under a per-meter
    key), then times ACSE decode + EAX' verify/decrypt + EPSEM/response decode + store, the
    decoding spread over `workers` processes (default: one per CPU; 0 = in this process);
    "store" times only Ingestor + repository on readings handed over already decoded.
    """
    if backend not in ("sqlite", "postgresql"):
        raise ValueError("backend must be 'sqlite' or 'postgresql'")
    if path not in ("e2e", "store"):
        raise ValueError("path must be 'e2e' or 'store'")
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    if meters is None:
        meters = max(1, n_readings // intervals_per_message)
    readings = make_readings(n_readings, meters)
    messages = [
        readings[i : i + intervals_per_message]
        for i in range(0, len(readings), intervals_per_message)
    ]
    wire: list[bytes] = []
    senders: dict[str, tuple[str, bytes]] = {}
    if path == "e2e":
        wire = build_messages(messages)
        for r in readings:
            m = int(r.meter_id.split("-")[1])
            senders[_meter_title(m)] = (r.meter_id, _meter_key(r.meter_id))
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
        refused = 0
        cpu = {}
        if path == "e2e":
            elapsed, refused, _chunks, main_cpu, worker_cpu = _e2e_run(
                repo, wire, intervals_per_message, senders, batch, n_workers
            )
            # CPU per message: what the rate would be on idle cores (a shared machine's wall
            # clock is not), e.g. 47,000 messages/s on 2 cores need <= 42.5 us in all
            per = 1e6 / len(messages)
            cpu = {
                "main_cpu_us_per_message": round(main_cpu * per, 1),
                "worker_cpu_us_per_message": round(worker_cpu * per, 1),
                "cpu_us_per_message": round((main_cpu + worker_cpu) * per, 1),
            }
            acked = len(messages) - refused
            cpu.update(decode_baselines(wire, senders))
        else:
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
        "path": path,
        "workers": n_workers if path == "e2e" else 0,
        "readings": len(readings),
        "messages": len(messages),
        "intervals_per_message": intervals_per_message,
        "batch": batch,
        "seconds": round(elapsed, 3),
        "reads_per_s": round(len(readings) / elapsed),
        "baseline_rows_per_s": round(baseline),
        "cpus": os.cpu_count(),
        **cpu,
    }


# -- the head-end engine per pushed message, and the meter's side of it ---------------------------

ENGINE_SLOT_S = 900  # the meters push once per 15-minute slot
ENGINE_RATE = 5_000.0  # pushes per second reach the head-end: group commits of ~250 readings
ENGINE_MAX_METERS = 2_000  # more messages: more slots of the same meters (bounded memory)


def _meter_context(i: int) -> Any:
    """The meter's PANA security context, made up (this bench times C12.22, not PANA): the same
    context goes into the meter's ring and the key server's directory."""
    from amistack.crypto import PrfHash
    from amistack.pana.keys import PanaSecurityContext

    seed = hashlib.sha256(b"bench c1222 session %d" % i).digest()
    return PanaSecurityContext(
        session_id=i + 1,
        key_id=1,
        prf=PrfHash.SHA256,
        msk=seed * 2,
        pac_nonce=seed[:16],
        paa_nonce=seed[16:],
        i_par=b"\x00\x00\x00\x10PAR" + seed[:13],
        i_pan=b"\x00\x00\x00\x10PAN" + seed[13:26],
    )


def _engines_alone(
    n: int, tables: Any, headend_title: Any, registry: Any, block: bytes, start: float
) -> dict[str, float]:
    """The C12.22 engines without the head-end and the meter node around them (the share of
    the figures above that the c1222 package owns): one `C1222Server` over its key ring pushes
    `block` `n` times to one `C1222Client` over the same session's keys, which acknowledges
    each, and the server takes the acks; CPU us per message of each of the three steps."""
    from amistack.c1222.acse import ApTitle
    from amistack.c1222.endpoint import C1222Client, C1222Server, EndpointConfig
    from amistack.c1222.events import ResponseReceived
    from amistack.c1222.security import ring_key_lookup, ring_send_key
    from amistack.crypto import seeded_random
    from amistack.keymgmt.keyring import KeyRing

    ctx = _meter_context(0)
    meter_title = ApTitle((0, 1000), relative=True)
    rings = []
    for name in (b"meter", b"headend"):
        ring = KeyRing(name, registry, overlap=60.0)
        ring.install(ctx, n + 3600.0, start - 60)
        rings.append(ring)
    server = C1222Server(
        EndpointConfig(meter_title),
        tables,
        ring_key_lookup(rings[0]),
        ring_send_key(rings[0]),
        seeded_random(1),
    )
    client = C1222Client(
        EndpointConfig(headend_title),
        ring_key_lookup(rings[1]),
        ring_send_key(rings[1]),
        seeded_random(2),
    )
    meter_addr, headend_addr = ("10.1.0.1", 1153), ("10.0.0.1", 1153)
    cpu = [0.0, 0.0, 0.0]
    acked = 0
    for i in range(n + 1):  # the first exchange warms up (titles decoded, keys derived)
        now = start + i * 0.001
        t0 = time.process_time()
        server.push(headend_addr, headend_title, 64, block, now)
        pushes = server.datagrams_to_send(now)
        t1 = time.process_time()
        for data, _ in pushes:
            client.receive_datagram(data, meter_addr, now)
        acks = client.datagrams_to_send(now)
        while client.next_event() is not None:
            pass
        t2 = time.process_time()
        for data, _ in acks:
            server.receive_datagram(data, headend_addr, now)
        while (ev := server.next_event()) is not None:
            acked += isinstance(ev, ResponseReceived) and ev.ok and i > 0
        t3 = time.process_time()
        if i:
            cpu[0] += t1 - t0
            cpu[1] += t2 - t1
            cpu[2] += t3 - t2
    if acked != n:
        raise RuntimeError(f"bench lost data: {acked}/{n} pushes acknowledged between engines")
    push, headend, ack = (round(c * 1e6 / n, 1) for c in cpu)
    return {"meter_push": push, "headend": headend, "meter_ack": ack}


def bench_engine(
    n_messages: int = 20_000, *, intervals_per_message: int = 1, meters: int | None = None
) -> dict[str, Any]:
    """CPU per pushed message through the real engines, in one process: `meters` `MeterNode`s
    (their `C1222Server`, key rings) push their newest intervals once per slot to one `HeadEnd`
    (C12.22 client with replay windows, `HeadendKeys` over the key server's key directory,
    the collector in pushed mode, the Ingestor into SQLite in a temporary directory), which
    acknowledges each push once its readings are durable; the acks go back to the meters.

    A first slot warms up (each meter's first message: its AP title decoded, its device
    resolved in the registry, its key fetched - once per meter, not per message) and is not
    timed; then `n_messages` pushes, per slot three phases, each timed as process CPU: the
    meters build and protect their pushes
    (`C1222Server.push`), the head-end takes them in time order with its timers run as a driver
    would (decode, replay window, key look-up and refresh, EAX', the collector, ingest, the
    protected ack), the meters take the acks (`MeterNode.receive_datagram`). The head-end's
    per-meter key cache is refreshed from the key source each slot (`HeadendKeys.refresh_s`),
    as in the fleet. Baseline in the same run: the decode-only path of `bench ingest` on as
    many messages of its own (`decode_cpu_us_per_message`). GC is frozen after set-up."""
    import gc

    from amistack.c1222.acse import ApTitle
    from amistack.c1222.events import ResponseReceived
    from amistack.c1222.tables import Interval, LoadProfile
    from amistack.crypto import seeded_random
    from amistack.headend.collector import CollectorConfig, Mode
    from amistack.headend.keys import DirectorySource, HeadendKeys, repository_resolver
    from amistack.headend.service import HeadEnd, HeadEndConfig
    from amistack.keymgmt.keyring import KeyRing, KeyRingDirectory
    from amistack.keymgmt.ukmf import PurposeRegistry
    from amistack.meter.model import DAY_S, MeterConfig, MeterModel
    from amistack.meter.node import MeterNode, MeterNodeConfig

    if n_messages < 1 or intervals_per_message < 1:
        raise ValueError("messages and intervals per message must be >= 1")
    n_meters = min(n_messages, ENGINE_MAX_METERS) if meters is None else meters
    slots = -(-n_messages // n_meters)
    step = ENGINE_SLOT_S
    start = float(T0)
    headend_title = ApTitle.parse(_HEADEND_TITLE)
    headend_addr = ("10.0.0.1", 1153)
    registry = PurposeRegistry()
    directory = KeyRingDirectory(registry, overlap=60.0)
    lifetime = (slots + 2) * step
    # SQLite in memory, as the fleet simulator's (a commit's disk cost is `--path e2e`'s)
    repo = SqliteRepository(Path(":memory:"))
    try:
        nodes: list[MeterNode] = []
        addrs: list[tuple[str, int]] = []
        # no seeded model events (outages, cover, billing): the meter's figure is its C12.22 path
        model_cfg = MeterConfig(
            install_time=start - 40 * DAY_S,
            outage_rate_per_year=0.0,
            cover_open_rate_per_year=0.0,
            billing_day=None,
        )
        for i in range(n_meters):
            mid = f"meter-{i:07d}"
            title = ApTitle((0, 1000 + i), relative=True)
            repo.register_meter(mid, str(title.absolute()), "conc-0", "cell-0", start)
            repo.commission_meter(mid, start)
            ctx = _meter_context(i)
            ring = KeyRing(mid.encode(), registry, overlap=60.0)
            ring.install(ctx, lifetime, start - 60)
            directory.install(mid.encode(), ctx, lifetime, start - 60)
            nodes.append(
                MeterNode(
                    MeterNodeConfig(title, headend_title, headend_addr),
                    MeterModel(i, model_cfg),
                    ring,
                    seeded_random(i + 1),
                )
            )
            nodes[-1].start(start)  # the model's first event poll, before the clock starts
            addrs.append((f"10.1.{i >> 8 & 255}.{i & 255}", 1153))
        keys = HeadendKeys(repository_resolver(repo.meter_by_ap_title), DirectorySource(directory))
        headend = HeadEnd(
            HeadEndConfig(
                headend_title,
                CollectorConfig(mode=Mode.PUSHED, interval_minutes=15, retention_days=1),
                meter_refresh_s=DAY_S,
                command_poll_s=DAY_S,
                eventlog_every_s=0.0,
            ),
            repo,
            keys,
            seeded_random(0),
            start + 1,  # collecting from the slot after T0: every expected interval is pushed
        )
        by_addr = {a: n for n, a in enumerate(addrs)}
        gc.collect()
        gc.freeze()
        cpu = {"push": 0.0, "headend": 0.0, "ack": 0.0}
        sent = acked = timed = 0
        for slot in range(slots + 1):  # slot 0 warms up: every meter heard once, not timed
            boundary = start + (slot + 1) * step
            count = n_meters if slot == 0 else min(n_meters, n_messages - timed)
            counted = 1.0 if slot else 0.0
            times = [boundary + 5.0 + k / ENGINE_RATE for k in range(count)]
            blocks = [
                LoadProfile(
                    15,
                    boundary,
                    tuple(Interval(100 + (k + j) % 900, 0) for j in range(intervals_per_message)),
                ).encode()
                for k in range(count)
            ]
            # the meters push
            pushes: list[tuple[bytes, tuple[str, int], float]] = []
            t = time.process_time()
            for k in range(count):
                node = nodes[k]
                node.server.push(headend_addr, headend_title, 64, blocks[k], times[k])
                for data, _ in node.server.datagrams_to_send(times[k]):
                    pushes.append((data, addrs[k], times[k]))
            cpu["push"] += (time.process_time() - t) * counted
            # the head-end takes them, its timers run as a driver runs them
            acks: list[tuple[bytes, tuple[str, int], float]] = []
            t = time.process_time()
            for data, addr, at in pushes:
                while (due := headend.get_timer()) is not None and due <= at:
                    headend.handle_timer(due)
                    acks.extend((d, a, due) for d, a in headend.datagrams_to_send(due))
                headend.receive_datagram(data, addr, at)
                acks.extend((d, a, at) for d, a in headend.datagrams_to_send(at))
            end = times[-1] + 1.0
            while (due := headend.get_timer()) is not None and due <= end:
                headend.handle_timer(due)
                acks.extend((d, a, due) for d, a in headend.datagrams_to_send(due))
            cpu["headend"] += (time.process_time() - t) * counted
            # the meters take the acks
            t = time.process_time()
            for data, addr, at in acks:
                nodes[by_addr[addr]].receive_datagram(data, headend_addr, at)
            cpu["ack"] += (time.process_time() - t) * counted
            for node in nodes[:count]:
                while (ev := node.next_event()) is not None:
                    acked += isinstance(ev, ResponseReceived) and ev.ok
            sent += count
            timed += count if slot else 0
        engines = _engines_alone(
            timed, nodes[0].tables, headend_title, registry, blocks[0], boundary + step
        )
        gc.unfreeze()
        stored = repo.count_readings()
    finally:
        repo.close()
    # each push carries the meter's newest intervals: from the second on, one new and the rest
    # already stored (kept once: ingest is idempotent)
    heard = [1 + timed // n_meters + (k < timed % n_meters) for k in range(n_meters)]
    expected = sum(h + intervals_per_message - 1 for h in heard if h)
    if acked != sent or stored != expected:
        raise RuntimeError(f"bench lost data: acked {acked}/{sent}, stored {stored}")
    # the decode-only path of `bench ingest` on as many messages of its own: the baseline
    readings = make_readings(min(timed, 3 * DECODE_SAMPLE) * intervals_per_message, 10**9)
    sample = [
        readings[i : i + intervals_per_message]
        for i in range(0, len(readings), intervals_per_message)
    ]
    senders = {
        _meter_title(int(m[0].meter_id.split("-")[1])): (m[0].meter_id, _meter_key(m[0].meter_id))
        for m in sample
    }
    baseline = decode_baselines(build_messages(sample), senders)
    per = 1e6 / timed
    meter_us = (cpu["push"] + cpu["ack"]) * per
    return {
        "path": "engine",
        "messages": timed,
        "meters": n_meters,
        "slots": slots,
        "intervals_per_message": intervals_per_message,
        "headend_cpu_us_per_message": round(cpu["headend"] * per, 1),
        "meter_cpu_us_per_message": round(meter_us, 1),
        "meter_push_cpu_us_per_message": round(cpu["push"] * per, 1),
        "meter_ack_cpu_us_per_message": round(cpu["ack"] * per, 1),
        "decode_cpu_us_per_message": baseline["decode_cpu_us_per_message"],
        "c1222_engines_cpu_us_per_message": engines,
        "eax_native": baseline["eax_native"],
        "headend_counters": {k: v for k, v in sorted(headend.client.counters.items())},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
