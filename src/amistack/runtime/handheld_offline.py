"""The offline work session as a process (`amistack workorder run`): a `handheld.OfflineRun`
on the UDP radio of `runtime.mesh`, where real `amistack meter --mesh` processes join it.

The radio is the one the concentrator and the mesh meters use (a UDP socket with a static
neighbour table; the 802.15.4 frames as they are): what the handheld transmits goes to every
neighbour in the table, and a datagram from any other address was never heard (counted,
dropped). The engine clock is the wall clock (`EngineDriver(wall_clock=True)`), because the
work order's validity window is in Unix time. Nothing leaves the handheld but radio frames:
its key server and collector are inside the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable

from amistack.addr import Addr, WrappingEngine
from amistack.handheld.offline_run import OfflineRun
from amistack.runtime.udp import EngineDriver, normalize_addr

__all__ = ["FieldRadio", "run_offline"]

log = logging.getLogger(__name__)


class FieldRadio(WrappingEngine):
    """`run` behind a radio socket with a neighbour table (module docstring)."""

    def __init__(self, run: OfflineRun, neighbours: Iterable[Addr]) -> None:
        self.engine = run
        self.neighbours = frozenset(normalize_addr(a) for a in neighbours)
        self.counters: Counter[str] = Counter()

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if addr not in self.neighbours:
            self.counters["not-a-neighbour"] += 1
            return
        self.engine.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out = self.engine.datagrams_to_send(now)
        return [(data, n) for data, _ in out for n in self.neighbours]


async def run_offline(
    run: OfflineRun,
    *,
    radio: Addr,
    neighbours: Iterable[Addr],
    stop: asyncio.Event,
    on_event: Callable[[object], None],
    on_ready: Callable[[Addr, Callable[[Callable[[float], None]], None]], None] | None = None,
    reason: Callable[[], str] = lambda: "stopped",
) -> None:
    """Serve until `stop` is set (then the session ends with `reason()`) or the run ends by
    itself (timeout, expiry, the office refusing the handheld). `on_ready(radio, submit)`:
    `submit(command)` runs `command(now)` on the run (a technician's command) and sends what
    it queued; what `command` raises reaches the caller of `submit`."""
    engine = FieldRadio(run, neighbours)

    def event(ev: object) -> None:
        on_event(ev)
        if run.ended:
            stop.set()

    async with EngineDriver(engine, on_event=event, wall_clock=True) as driver:
        bound = await driver.bind(radio[0], radio[1])
        run.start(driver.now())
        driver.kick()

        def submit(command: Callable[[float], None]) -> None:
            try:
                command(driver.now())
            finally:
                driver.kick()

        if on_ready is not None:
            on_ready(bound, submit)
        await stop.wait()
        run.end(reason(), driver.now())
        driver.kick()  # the session's last frames, its events
        log.info("offline run %s: counters %s", run.order.order_id, dict(engine.counters))
