"""The head-end service on asyncio: `headend.service.HeadEnd` over UDP 1153 (IPv4 and IPv6) by
`EngineDriver`, keys from the key server, and the REST API (FastAPI under uvicorn) on the same
loop.

- The engine clock is the loop's monotonic clock shifted to the epoch (`wall_clock=True`):
  interval boundaries are epoch-aligned and key `not_after`s come from the key server's clock.
- Keys: `key_source` (the in-process `KeyServer` of the demo, or anything with `key_for` /
  `current_key`) is asked synchronously; with `keyserver=(host, port)` a `KeyDistClient` over
  mutual TLS (`TlsFiles.client(data_dir, "headend")` by default) fetches a key when a datagram
  missed one (the datagram is parked and fed again) and prefetches the current key of every
  collected meter whose key is missing or due to expire.
- The API (`headend.api.create_app`) runs as `uvicorn.Server(config).serve()` in a task, behind
  access control (`access`: identities in DIR/access.db, the audit trail in DIR/audit/, sealed
  daily and at shutdown); on a non-loopback address only with `api_tls` (runtime/api_server.py).
  A command created through it is picked up by the engine within `command_poll_s` and executed.
- An address in use (C12.22 or API) is a `BindError` naming it.
- Meter addresses: `addresses` (meter id -> (host, port)) for polled meters; `relays`
  (concentrator id -> the (host, port) of its C12.22 relay) for the meters registered under a
  mesh concentrator (docs/mesh.md); otherwise learned from each meter's pushes.
- The C12.22 invocation-id mark lives in `DIR/c1222-invocation-id` (`InvocationIdFile`), so a
  restarted head-end (kill -9 included) goes on above every id it used: meters accept its acks
  and commands at once instead of refusing them as stale.
- Database work stays off the loop where it waits: ingest batches commit on their own thread
  (`runtime.ingest_writer`), and the API's queries run on reader connections of their own
  threads (`headend.storage`), never behind the ingest's writer lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amistack.addr import Addr
from amistack.c1222.acse import ApTitle
from amistack.c1222.endpoint import C1222_PORT, EndpointConfig
from amistack.crypto import RandomSource, system_random
from amistack.headend.collector import CollectorConfig
from amistack.headend.keys import AsyncKeySource, HeadendKeys, SyncKeySource, repository_resolver
from amistack.headend.service import HeadEnd, HeadEndConfig, KeyNeeded
from amistack.headend.shard import Shard
from amistack.headend.storage import ReadingRepository, open_repository
from amistack.mesh.security import FileCounterStore
from amistack.runtime.eventtext import event_text
from amistack.runtime.ingest_writer import ThreadedBatchWriter
from amistack.runtime.loop import seal_audit_daily
from amistack.runtime.udp import Capture, EngineDriver

if TYPE_CHECKING:  # FastAPI and uvicorn load only when the API is served (CLI start-up time)
    from amistack.access.http import AccessControl
    from amistack.runtime.api_server import ApiTls

log = logging.getLogger(__name__)

DEFAULT_TITLE = "2.16.124.113620.1.22.0.1"
DEFAULT_LISTEN: tuple[Addr, ...] = (("0.0.0.0", C1222_PORT), ("::", C1222_PORT))
PREFETCH_EVERY = 10.0  # seconds between key prefetch rounds
PREFETCH_MARGIN = 60.0  # fetch a meter's current key when its newest expires within this
INVOCATION_ID_FILE = "c1222-invocation-id"


class InvocationIdFile:
    """A `c1222.endpoint.InvocationIdStore` in a small file, replaced atomically and fsynced
    before `reserve` returns (the mesh's frame-counter file, `mesh.security.FileCounterStore`,
    holding one counter)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = FileCounterStore(path)

    def reserved(self) -> int:
        try:
            return int(self._file.load().get(0, 0))
        except (ValueError, AttributeError):  # not JSON, or not a map of numbers
            raise ValueError(f"{self.path}: not an invocation-id mark") from None

    def reserve(self, mark: int) -> None:
        self._file.save({0: mark})


def open_access(
    data_dir: Path, clock: Callable[[], float], tls: ApiTls | None = None
) -> AccessControl:
    """The head-end's identities (DIR/access.db) and operator audit trail (DIR/audit/); with
    TLS, client certificates are checked against the PKI's CRL too."""
    from amistack.access import AccessStore, AuditTrail
    from amistack.access.http import AccessControl
    from amistack.keymgmt.pki import load_certificate

    return AccessControl(
        AccessStore(data_dir),
        AuditTrail.open(data_dir, clock()),
        clock,
        ca_cert=load_certificate(tls.ca) if tls is not None else None,
        crl_path=tls.crl if tls is not None else None,
    )


PARTITION_EVERY = 3600.0  # s between readings-partition maintenance runs (PostgreSQL)


async def _maintain_partitions(repo: Any, retention_s: float | None) -> None:
    """Keep PostgreSQL's readings partitions made ahead and expired ones dropped, off the
    event loop (storage.PostgresRepository.maintain_partitions), now and every hour."""
    while True:
        try:
            await asyncio.to_thread(repo.maintain_partitions, time.time(), retention_s=retention_s)
        except Exception:  # a database hiccup: the next round retries; ingest is unaffected
            log.exception("head-end: readings partition maintenance failed")
        await asyncio.sleep(PARTITION_EVERY)


@dataclass
class HeadEndRuntime:
    engine: HeadEnd
    driver: EngineDriver[HeadEnd]
    repo: ReadingRepository
    udp: list[Addr] = field(default_factory=list)
    api: Addr | None = None
    access: AccessControl | None = None  # the API's identities and audit trail


async def run_headend(
    data_dir: Path | str,
    *,
    db: str | None = None,
    listen: Sequence[Addr] = DEFAULT_LISTEN,
    api: Addr | None = ("127.0.0.1", 8080),
    keyserver: Addr | list[Addr] | None = None,
    tls: Any | None = None,
    key_source: SyncKeySource | None = None,
    ap_title: str | ApTitle = DEFAULT_TITLE,
    collector: CollectorConfig | None = None,
    addresses: Mapping[str, Addr] | None = None,
    relays: Mapping[str, Addr] | None = None,
    max_datagram: int | None = None,
    capture: Capture | None = None,
    access: AccessControl | None = None,
    api_tls: ApiTls | None = None,
    rng: RandomSource = system_random,
    stop: asyncio.Event | None = None,
    ready: Callable[[HeadEndRuntime], None] | None = None,
    shard: Shard | None = None,
    db_password: str | None = None,
    retention_days: float | None = None,
    key_admin: Any | None = None,
) -> None:
    """Serve until `stop` is set (or the task is cancelled). `db`: a `postgresql://` DSN (its
    password, if any, `db_password`), else SQLite under `data_dir`. `shard`: collect only that
    shard's meters (several head-ends on one PostgreSQL database, each with its own
    `data_dir`). On PostgreSQL the readings' daily partitions are made ahead every hour, and
    with `retention_days` those wholly older are dropped. `keyserver`: the key distribution
    service (mutual TLS) to fetch C12.22 keys from (a list: several key servers, each asked
    for the meters it authenticated) (`tls`: a `runtime.keydist.TlsFiles`);
    `key_source`: an in-process one. `max_datagram`: the largest C12.22 datagram it sends
    (default `EndpointConfig`'s; larger messages are segmented). `key_admin`: the key
    server's admin endpoint as this head-end's delegator (`runtime.keydist.KeyAdminClient`):
    the dashboard's SECADM actions."""
    data = Path(data_dir)
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    data.chmod(0o700)  # like the key server's: the database and the audit key live here
    repo = open_repository(db or data, password=db_password)
    async_source: AsyncKeySource | None = None
    if keyserver:
        from amistack.headend.keys import EveryKeySource
        from amistack.runtime.keydist import KeyDistClient, TlsFiles

        files = tls or TlsFiles.client(data, "headend")
        servers = keyserver if isinstance(keyserver, list) else [keyserver]
        clients = [KeyDistClient(h, p, files.ca, files.cert, files.key) for h, p in servers]
        async_source = clients[0] if len(clients) == 1 else EveryKeySource(clients)
    elif key_source is None:
        raise ValueError("the head-end needs a key source: keyserver=(host, port) or key_source")
    keys = HeadendKeys(repository_resolver(repo.meter_by_ap_title), key_source)
    title = ap_title if isinstance(ap_title, ApTitle) else ApTitle.parse(ap_title)
    known = dict(addresses or {})
    via = dict(relays or {})
    # ingest commits on a thread of their own: the loop never waits for an fsync
    writer = ThreadedBatchWriter(repo)
    engine = HeadEnd(
        HeadEndConfig(
            title,
            collector or CollectorConfig(),
            None if max_datagram is None else EndpointConfig(title, max_datagram=max_datagram),
            shard=shard,
        ),
        repo,
        keys,
        rng,
        time.time(),
        addr_of=lambda m: known.get(m.meter_id) or via.get(m.concentrator),
        invocation_ids=InvocationIdFile(data / INVOCATION_ID_FILE),
        writer=writer,
    )
    tasks: set[asyncio.Task[Any]] = set()
    driver: EngineDriver[HeadEnd]

    async def resolve(ev: KeyNeeded) -> None:
        if async_source is None:
            return
        if await keys.fetch_async(async_source, ev.device, ev.key_byte, driver.now()):
            engine.retry_parked(ev.device, driver.now())
            driver.kick()

    def on_event(ev: object) -> None:
        if isinstance(ev, KeyNeeded) and async_source is not None:
            task = asyncio.create_task(resolve(ev))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        else:
            log.info("head-end: %s", event_text(ev))

    async def prefetch() -> None:
        assert async_source is not None
        while True:
            devices = [m.encode() for m in engine.collector.meter_ids()]
            due = keys.expiring(devices, driver.now(), PREFETCH_MARGIN)
            if due:
                await keys.prefetch_async(async_source, due, driver.now())
                driver.kick()
            await asyncio.sleep(PREFETCH_EVERY)

    server: Any = None
    api_task: asyncio.Task[Any] | None = None
    owned: AccessControl | None = None
    driver = EngineDriver(engine, on_event=on_event, capture=capture, wall_clock=True)
    loop = asyncio.get_running_loop()

    def wake() -> None:  # on the writer's thread: a batch is durable, report it (acks)
        loop.call_soon_threadsafe(driver.kick)

    writer.wake = wake
    rt = HeadEndRuntime(engine, driver, repo)
    try:
        from amistack.runtime.api_server import BindError

        for host, port in listen:
            try:
                rt.udp.append(await driver.bind(host, port))
            except OSError as exc:
                why = (exc.strerror or str(exc)).lower()
                raise BindError(f"cannot listen on {host} port {port} (C12.22): {why}") from None
        driver.kick()
        if hasattr(repo, "maintain_partitions"):
            retention = None if retention_days is None else retention_days * 86_400.0
            part = asyncio.create_task(_maintain_partitions(repo, retention))
            tasks.add(part)
        if async_source is not None:
            pf = asyncio.create_task(prefetch())
            tasks.add(pf)
        if api is not None:
            from amistack.headend.api import create_app
            from amistack.runtime.api_server import api_server, bind_api, check_api_address

            check_api_address(api[0], api_tls)
            api_sock = bind_api(*api)
            if access is None:
                access = owned = open_access(data, time.time, api_tls)
            seal = asyncio.create_task(seal_audit_daily(access.audit))
            tasks.add(seal)
            from amistack.headend.dashboard.live import EngineView

            server = api_server(
                create_app(repo, access, live=EngineView(engine), key_admin=key_admin), api_tls
            )
            api_task = asyncio.create_task(server.serve(sockets=[api_sock]))
            while not server.started and not api_task.done():
                await asyncio.sleep(0.01)
            if api_task.done():
                api_task.result()  # raises why it did not start
            sock = api_sock.getsockname()
            rt.api = (str(sock[0]), int(sock[1]))
            rt.access = access
        log.info("head-end: C12.22 on %s, API on %s, data in %s", rt.udp, rt.api, data)
        if ready is not None:
            ready(rt)
        await (stop or asyncio.Event()).wait()
    finally:
        if server is not None:
            server.should_exit = True
        if api_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(api_task, 5.0)
        for t in list(tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            engine.flush(driver.now())  # what was received becomes durable and is acked
            driver.kick()
        writer.wake = None  # (a batch finishing now has nobody left to tell)
        driver.close()
        writer.close()
        if async_source is not None:
            close = getattr(async_source, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        repo.close()
        if access is not None:  # the audit trail's last entries get their signed head
            with contextlib.suppress(Exception):
                access.audit.seal(time.time())
        if owned is not None:
            owned.audit.close()
            owned.store.close()
        counters = {k: v for k, v in engine.collector.counters.items() if v}
        log.info("head-end stopped; collector counters %s", counters)


__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_TITLE",
    "HeadEndRuntime",
    "InvocationIdFile",
    "run_headend",
]
