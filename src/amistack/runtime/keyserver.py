"""The key server over real UDP: PANA (PAA) on IPv4 and/or IPv6, optionally a RADIUS EAP server.

One sans-IO engine (`keymgmt.KeyServer`, or any PAA-shaped engine) serves every listening socket;
the driver routes each answer out of the socket of the peer's address family. Timers (PANA
retransmission, session lifetime, key expiry) run on the loop's monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from amistack.addr import Addr
from amistack.crypto import RandomSource, system_random
from amistack.runtime.udp import Capture, EngineDriver

log = logging.getLogger(__name__)

PANA_PORT = 716  # RFC 5191 §6.1
RADIUS_AUTH_PORT = 1812  # RFC 2865 §3
DEFAULT_LISTEN = ("0.0.0.0", "::")


def log_key_server_event(event: object) -> None:
    """One log line per event of the key server's engines (never key material)."""
    name = type(event).__name__
    fields = getattr(event, "__dataclass_fields__", {})
    detail: dict[str, Any] = {}
    for key in fields:
        value = getattr(event, key)
        if key in ("context",):
            detail["key_id"] = getattr(value, "key_id", None)
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        detail[key] = value
    level = logging.WARNING if name in ("AuthenticationFailed", "AccessRejected") else logging.INFO
    text = " ".join(f"{k}={v}" for k, v in detail.items())
    log.log(level, "%s %s", name, text, extra={"event": name})


@dataclass
class KeyServerRuntime:
    """The running key server: its engines, drivers and bound addresses."""

    engine: Any
    pana: EngineDriver[Any]
    radius_engine: Any | None = None
    radius: EngineDriver[Any] | None = None
    pana_addresses: list[Addr] = field(default_factory=list)
    radius_addresses: list[Addr] = field(default_factory=list)

    def close(self) -> None:
        self.pana.close()
        if self.radius is not None:
            self.radius.close()


def build_key_server(
    store: Any, rng: RandomSource = system_random, now: float | None = None, **options: Any
) -> Any:
    """`keymgmt.KeyServer` on `store`; `options` are its keyword arguments (`paa_config`,
    `session_lifetime`, `overlap`, ...). `now` is on the runtime's key-server clock: Unix epoch
    seconds (see `start_keyserver`), so key expiry stored in `store` survives restarts."""
    from amistack.keymgmt.server import KeyServer

    return KeyServer(store, rng=rng, now=time.time() if now is None else now, **options)


def build_radius_server(store: Any, secret: bytes, rng: RandomSource = system_random) -> Any:
    """A RADIUS EAP server (EAP-PSK) authenticating the devices of `store` for 802.1X / NAS use."""
    from amistack.eap.psk import EapPskServer
    from amistack.radius.server import RadiusEapServer

    def methods() -> list[Callable[[], Any]]:
        return [lambda: EapPskServer(b"amistack-key-server", store.get_psk, rng)]

    return RadiusEapServer(secret, methods, rng, lifetime_for=store.session_lifetime)


async def start_keyserver(
    engine: Any,
    listen: Sequence[str] = DEFAULT_LISTEN,
    port: int = PANA_PORT,
    *,
    radius_engine: Any | None = None,
    radius_listen: Sequence[Addr] = (),
    capture: Capture | None = None,
    on_event: Callable[[object], None] | None = log_key_server_event,
) -> KeyServerRuntime:
    """Bind `engine` on every `listen` host at `port` (0 = ephemeral, the same one for all hosts
    when possible) and `radius_engine` on `radius_listen`.

    The engines' clock is epoch-aligned monotonic time (`EngineDriver(wall_clock=True)`): the key
    server persists key expiry times, which must mean the same after a restart."""
    pana = EngineDriver(engine, on_event=on_event, capture=capture, wall_clock=True)
    rt = KeyServerRuntime(engine, pana)
    try:
        for host in listen:
            bound = await pana.bind(host, port)
            if port == 0:
                port = bound[1]  # let the other family share the ephemeral port
            rt.pana_addresses.append(bound)
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


async def run_keyserver(
    store: Any,
    listen: Sequence[str] = DEFAULT_LISTEN,
    port: int = PANA_PORT,
    *,
    radius_listen: Sequence[Addr] = (),
    radius_secret: bytes | None = None,
    capture: Capture | None = None,
    rng: RandomSource = system_random,
    stop: asyncio.Event | None = None,
    ready: Callable[[KeyServerRuntime], None] | None = None,
    **options: Any,
) -> None:
    """Serve PANA (and RADIUS when `radius_listen` is given) until `stop` is set or cancelled."""
    engine = build_key_server(store, rng, **options)
    radius_engine = None
    if radius_listen:
        if radius_secret is None:
            raise ValueError("--radius-listen needs a RADIUS shared secret")
        radius_engine = build_radius_server(store, radius_secret, rng)
    rt = await start_keyserver(
        engine,
        listen,
        port,
        radius_engine=radius_engine,
        radius_listen=radius_listen,
        capture=capture,
    )
    try:
        if ready is not None:
            ready(rt)
        await (stop or asyncio.Event()).wait()
    finally:
        rt.close()
        with contextlib.suppress(Exception):
            counters = {k: v for k, v in getattr(engine, "counters", {}).items() if v}
            log.info("key server stopped; counters %s", counters)
