"""The key server over real UDP: PANA (PAA) on IPv4 and/or IPv6, optionally a RADIUS EAP server.

One sans-IO engine (`keymgmt.KeyServer`, or any PAA-shaped engine) serves every listening socket;
the driver routes each answer out of the socket of the peer's address family. Timers (PANA
retransmission, session lifetime, key expiry) run on the loop's monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from amistack.addr import Addr
from amistack.crypto import RandomSource, system_random
from amistack.runtime.eventtext import event_text
from amistack.runtime.loop import seal_audit_daily
from amistack.runtime.udp import Capture, EngineDriver, is_ipv6

log = logging.getLogger(__name__)

PANA_PORT = 716  # RFC 5191 §6.1
RADIUS_AUTH_PORT = 1812  # RFC 2865 §3
DEFAULT_LISTEN = ("0.0.0.0", "::")
# Group commit of the key server's per-authentication writes: the oldest waits at most this
# long (plus one loop iteration). docs/key-hierarchy.md, "Durability".
DEFAULT_COMMIT_INTERVAL = 0.002


def group_commit(engine: Any, driver: Callable[[], EngineDriver[Any]]) -> Callable[[], None]:
    """An `on_flush` hook: after each flush of `driver()`, `engine.flush(now)` commits the
    writes waiting for a group commit; what that released (PANA successes held until their
    audit entry was on disk, events) goes out on the next loop iteration."""
    flush = getattr(engine, "flush", None)

    def after_flush() -> None:
        if flush is None:
            return
        d = driver()
        if flush(d.now()):
            d.kick_soon()

    return after_flush


def log_key_server_event(event: object) -> None:
    """One log line per event of the key server's engines (never key material)."""
    name = type(event).__name__
    level = logging.WARNING if name in ("AuthenticationFailed", "AccessRejected") else logging.INFO
    log.log(level, "%s", event_text(event), extra={"event": name})


@dataclass
class KeyServerRuntime:
    """The running key server: its engines, drivers and bound addresses."""

    engine: Any
    pana: EngineDriver[Any]
    radius_engine: Any | None = None
    radius: EngineDriver[Any] | None = None
    aaa: EngineDriver[Any] | None = None  # the RADIUS client socket of a pass-through PAA
    pana_addresses: list[Addr] = field(default_factory=list)
    radius_addresses: list[Addr] = field(default_factory=list)
    keydist_addresses: list[Addr] = field(default_factory=list)
    admin_addresses: list[Addr] = field(default_factory=list)

    def close(self) -> None:
        self.pana.close()
        if self.radius is not None:
            self.radius.close()
        if self.aaa is not None:
            self.aaa.close()


class AaaAnswerEngine:
    """An AAA backend with its own socket (`radius.client.RadiusPassthroughBackend`) seen as a
    driver engine: the answers it has for the PAA are its events, as (session id, AaaAnswer)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self.backend.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out: list[tuple[bytes, Addr]] = self.backend.datagrams_to_send(now)
        return out

    def get_timer(self) -> float | None:
        at: float | None = self.backend.get_timer()
        return at

    def handle_timer(self, now: float) -> None:
        self.backend.handle_timer(now)

    def next_event(self) -> object | None:
        answer: object | None = self.backend.next_answer()
        return answer


def build_key_server(
    store: Any, rng: RandomSource = system_random, now: float | None = None, **options: Any
) -> Any:
    """`keymgmt.KeyServer` on `store`; `options` are its keyword arguments (`paa_config`,
    `session_lifetime`, `overlap`, ...; group commit and `skip_identity` on by default), and
    `mesh_pan` (a PAN id: deliver that PAN's mesh
    group keys with every PANA success). `now` is on the runtime's key-server clock: Unix epoch
    seconds (see `start_keyserver`), so key expiry stored in `store` survives restarts."""
    from amistack.keymgmt.server import KeyServer

    mesh_pan = options.pop("mesh_pan", None)
    options.setdefault("commit_interval", DEFAULT_COMMIT_INTERVAL)
    options.setdefault("skip_identity", True)
    now = time.time() if now is None else now
    engine = KeyServer(store, rng=rng, now=now, **options)
    if mesh_pan is not None:  # mesh group keys for one PAN (docs/mesh-keys.md)
        from amistack.keymgmt.groupkeys import GroupKeyManager

        engine.enable_group_keys(GroupKeyManager([mesh_pan], rng=rng, now=now, persistence=store))
    return engine


def build_passthrough_key_server(
    store: Any,
    radius_server: Addr,
    secret: bytes,
    rng: RandomSource = system_random,
    now: float | None = None,
    **options: Any,
) -> tuple[Any, Any]:
    """A `KeyServer` whose PAA passes EAP through to the RADIUS server at `radius_server`
    (RFC 3579); the credentials live there, so devices need not be enrolled in `store`.
    Returns (key server, backend); give both to `start_keyserver(aaa_backend=...)`."""
    from amistack.keymgmt.server import KeyServer
    from amistack.radius.client import RadiusPassthroughBackend

    backend = RadiusPassthroughBackend(radius_server, secret, rng)
    options.setdefault("require_enrolled", False)
    options.setdefault("commit_interval", DEFAULT_COMMIT_INTERVAL)
    engine = KeyServer(
        store, rng=rng, backend=backend, now=time.time() if now is None else now, **options
    )
    return engine, backend


def build_radius_server(
    store: Any,
    secret: bytes,
    rng: RandomSource = system_random,
    extra_methods: Sequence[Callable[[], Any]] = (),
) -> Any:
    """A RADIUS EAP server (EAP-PSK, and `extra_methods` such as EAP-TLS before it, as the key
    server offers them) authenticating the devices of `store` for 802.1X / NAS use."""
    from amistack.eap.psk import EapPskServer
    from amistack.radius.server import RadiusEapServer

    def methods() -> list[Callable[[], Any]]:
        return [*extra_methods, lambda: EapPskServer(b"amistack-key-server", store.get_psk, rng)]

    return RadiusEapServer(secret, methods, rng, lifetime_for=store.session_lifetime)


async def start_keyserver(
    engine: Any,
    listen: Sequence[str] = DEFAULT_LISTEN,
    port: int = PANA_PORT,
    *,
    radius_engine: Any | None = None,
    radius_listen: Sequence[Addr] = (),
    aaa_backend: Any | None = None,
    aaa_server: Addr | None = None,
    capture: Capture | None = None,
    on_event: Callable[[object], None] | None = log_key_server_event,
) -> KeyServerRuntime:
    """Bind `engine` on every `listen` host at `port` (0 = ephemeral, the same one for all hosts
    when possible) and `radius_engine` on `radius_listen`.

    The engines' clock is epoch-aligned monotonic time (`EngineDriver(wall_clock=True)`): the key
    server persists key expiry times, which must mean the same after a restart.

    `aaa_backend` (with `aaa_server`, its RADIUS server): the PAA's pass-through backend gets its
    own client socket; its answers go to the PAA (`aaa_answer`) as they arrive.
    """
    aaa: EngineDriver[Any] | None = None
    pana_ref: list[EngineDriver[Any]] = []
    if aaa_backend is not None:
        if aaa_server is None:
            raise ValueError("a pass-through AAA backend needs its RADIUS server address")
        # KeyServer.aaa_answer holds an EAP success until its audit entry is committed
        target = engine if hasattr(engine, "aaa_answer") else getattr(engine, "agent", engine)

        def deliver(item: object) -> None:
            session_id, answer = cast(tuple[int, Any], item)
            driver = pana_ref[0]
            target.aaa_answer(session_id, answer, driver.now())
            driver.kick_soon()

        aaa = EngineDriver(
            AaaAnswerEngine(aaa_backend), on_event=deliver, capture=capture, wall_clock=True
        )
    commit = group_commit(engine, lambda: pana_ref[0])

    def on_flush() -> None:
        if aaa is not None:
            aaa.kick_soon()  # a PANA message may have queued an Access-Request in the backend
        commit()

    pana = EngineDriver(
        engine, on_event=on_event, capture=capture, wall_clock=True, on_flush=on_flush
    )
    pana_ref.append(pana)
    rt = KeyServerRuntime(engine, pana, aaa=aaa)
    try:
        if aaa is not None and aaa_server is not None:
            await aaa.bind("::" if is_ipv6(aaa_server[0]) else "0.0.0.0", 0)
        for host in listen:
            try:
                bound = await pana.bind(host, port)
            except OSError as exc:
                # a host without IPv6 (or IPv4) still serves the other family
                if len(listen) > 1 and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                    log.warning("key server: cannot listen on %s: %s", host, exc)
                    continue
                raise
            if port == 0:
                port = bound[1]  # let the other family share the ephemeral port
            rt.pana_addresses.append(bound)
        if not rt.pana_addresses:
            raise OSError(errno.EADDRNOTAVAIL, f"no address to listen on among {list(listen)}")
        if radius_engine is not None:
            rt.radius_engine = radius_engine
            rt.radius = EngineDriver(
                radius_engine, on_event=on_event, capture=capture, wall_clock=True
            )
            for host, rport in radius_listen:
                rt.radius_addresses.append(await rt.radius.bind(host, rport))
    except BaseException:
        rt.close()
        raise
    for addr in rt.pana_addresses:
        log.info("key server: PANA on %s port %d", *addr)
    for addr in rt.radius_addresses:
        log.info("key server: RADIUS on %s port %d", *addr)
    return rt


async def _apply_revocations(
    engine: Any, driver: EngineDriver[Any], every: float, changed: asyncio.Event | None = None
) -> None:
    """Apply revocations other processes journalled in the store (KeyServer.sync_revocations):
    every `every` seconds, and at once when `changed` is set (a store that tells of changes)."""
    sync = getattr(engine, "sync_revocations", None)
    if sync is None:
        return
    while True:
        if changed is None:
            await asyncio.sleep(every)
        else:
            # asyncio.timeout, not wait_for: wait_for on 3.11 swallows a cancellation that
            # arrives as the event is set, and the poller would outlive its server
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await changed.wait()
            changed.clear()
        try:
            if sync(driver.now()):
                driver.kick()  # PTRs to send now
        except Exception:  # a locked or broken store must not stop the key server
            log.exception("key server: reading the revocation journal failed")


async def run_keyserver(
    store: Any,
    listen: Sequence[str] = DEFAULT_LISTEN,
    port: int = PANA_PORT,
    *,
    radius_listen: Sequence[Addr] = (),
    radius_secret: bytes | None = None,
    radius_server: Addr | None = None,
    radius_server_secret: bytes | None = None,
    capture: Capture | None = None,
    rng: RandomSource = system_random,
    stop: asyncio.Event | None = None,
    ready: Callable[[KeyServerRuntime], None] | None = None,
    keydist: tuple[Any, Sequence[str], int] | None = None,
    admin: tuple[Any, Sequence[str], int, Any] | None = None,
    revocation_poll: float = 1.0,
    **options: Any,
) -> None:
    """Serve PANA (and RADIUS when `radius_listen` is given) until `stop` is set or cancelled.

    Every `revocation_poll` seconds the store's revocation journal is read, so a device revoked
    by another process (`amistack keys revoke`, another key server) loses its sessions and keys
    at once; a store that tells of changes (PostgreSQL's `watch_changes`, LISTEN/NOTIFY) has it
    read as soon as one commits. A shared store's `claim_instance` refuses a second process
    with this one's instance name.
    `keydist` = (TlsFiles, hosts, port): also serve keys to application servers over mutual
    TLS (runtime.keydist), on the key server's clock.
    `admin` = (TlsFiles, hosts, port, service): also serve key administration to operators
    with role certificates over mutual TLS; `service` is an `access.keyadmin.KeyAdminService`
    on `store` and the operator audit trail (docs/access-control.md).

    `radius_server`: run EAP on that RADIUS server (pass-through) instead of the built-in
    EAP-PSK server; `radius_listen`: also be a RADIUS EAP server for NASes (802.1X, other PAAs).
    """
    backend = None
    claim = getattr(store, "claim_instance", None)
    if claim is not None:
        claim()
    start_checkpointer = getattr(store, "start_checkpointer", None)
    if start_checkpointer is not None:
        start_checkpointer()  # WAL checkpoints (with their fsync) never stall the event loop
    if radius_server is not None:
        if radius_server_secret is None:
            raise ValueError("--radius-server needs its shared secret")
        engine, backend = build_passthrough_key_server(
            store, radius_server, radius_server_secret, rng, **options
        )
    else:
        engine = build_key_server(store, rng, **options)
    radius_engine = None
    if radius_listen:
        if radius_secret is None:
            raise ValueError("--radius-listen needs a RADIUS shared secret")
        radius_engine = build_radius_server(
            store, radius_secret, rng, options.get("extra_methods", ())
        )
    rt = await start_keyserver(
        engine,
        listen,
        port,
        radius_engine=radius_engine,
        radius_listen=radius_listen,
        aaa_backend=backend,
        aaa_server=radius_server,
        capture=capture,
    )
    kd = None
    ka = None
    poller = None
    sealer = None
    unwatch: Callable[[], None] | None = None
    try:
        if keydist is not None:
            from amistack.runtime.keydist import start_keydist

            tls, kd_hosts, kd_port = keydist
            kd = await start_keydist(engine, tls, kd_hosts, kd_port, clock=rt.pana.now)
            rt.keydist_addresses = list(kd.addresses)
        if admin is not None:
            from amistack.runtime.keydist import start_keyadmin

            tls, ka_hosts, ka_port, service = admin
            ka = await start_keyadmin(service, tls, ka_hosts, ka_port, clock=rt.pana.now)
            rt.admin_addresses = list(ka.addresses)
            sealer = asyncio.create_task(seal_audit_daily(service.audit))
        changed: asyncio.Event | None = None
        watch = getattr(store, "watch_changes", None)
        if watch is not None:
            changed = asyncio.Event()
            loop = asyncio.get_running_loop()
            unwatch = watch(lambda _kind: loop.call_soon_threadsafe(changed.set))
        poller = asyncio.create_task(_apply_revocations(engine, rt.pana, revocation_poll, changed))
        if ready is not None:
            ready(rt)
        await (stop or asyncio.Event()).wait()
    finally:
        if unwatch is not None:
            unwatch()
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)  # gone before the loop closes
        if kd is not None:
            await kd.close()
        if ka is not None:
            await ka.close()
        if sealer is not None and admin is not None:
            sealer.cancel()
            with contextlib.suppress(Exception):  # the last entries get their signed head
                admin[3].audit.seal(time.time())
        final = getattr(engine, "flush", None)
        if final is not None:
            with contextlib.suppress(Exception):  # nothing a stopping server can do about it
                final(rt.pana.now(), force=True)
        rt.close()
        with contextlib.suppress(Exception):
            counters = {k: v for k, v in getattr(engine, "counters", {}).items() if v}
            log.info("key server stopped; counters %s", counters)
