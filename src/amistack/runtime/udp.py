"""Drive one sans-IO engine over real UDP sockets (IPv4 and/or IPv6) on an asyncio loop.

The shape follows aioquic's `QuicConnectionProtocol`: the engine only sees
`receive_datagram(data, addr, now)` / `datagrams_to_send(now)` / `get_timer()` /
`handle_timer(now)` / `next_event()`; the driver owns the sockets, the one loop timer and the clock
(`loop.time()`, monotonic).

Reads are batched: the event loop (uvloop reads up to 32 datagrams per readiness event) calls
`datagram_received` once per datagram, each is fed to the engine at once, and one `call_soon`
flushes the engine after the whole batch -- one `datagrams_to_send`, one event drain and one timer
reschedule per batch instead of per datagram. `batch=False` flushes after every datagram.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, cast

from amistack.addr import Addr, Engine

log = logging.getLogger(__name__)

Capture = Callable[[bytes, Addr, Addr], None]
"""Called with (payload, src, dst) for every datagram in or out, e.g. `PcapWriter.capture`."""

EventSink = Callable[[Any], "Awaitable[None] | None"]

_EARLY_FIRE = 0.002  # s; a loop timer may fire this much before its time (uvloop: 1 ms ticks)

DEFAULT_RCVBUF = 4 * 1024 * 1024  # absorbs bursts of a few thousand PANA messages at benchmark load


E = TypeVar("E", bound=Engine)


def normalize_addr(addr: Any) -> Addr:
    """(host, port) from what the socket layer gives: IPv6 4-tuples lose flowinfo and scope id."""
    return (str(addr[0]), int(addr[1]))


def is_ipv6(host: str) -> bool:
    return ":" in host


def make_udp_socket(host: str, port: int, rcvbuf: int | None = DEFAULT_RCVBUF) -> socket.socket:
    """A bound, non-blocking UDP socket. IPv6 sockets are IPv6-only so that an IPv4 socket can share
    the port (a key server listens on both), and peers keep their real IPv4 addresses."""
    family = socket.AF_INET6 if is_ipv6(host) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if rcvbuf:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
            except OSError:  # capped by net.core.rmem_max; the default still works
                log.debug("could not enlarge socket buffers to %d bytes", rcvbuf)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Endpoint(asyncio.DatagramProtocol):
    """One bound socket of a driver; forwards every datagram to the driver's engine."""

    def __init__(self, driver: EngineDriver[Any]) -> None:
        self.driver = driver
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Addr = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop\'s UDP transport is not an asyncio.DatagramTransport subclass, but quacks like one
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local = normalize_addr(transport.get_extra_info("sockname"))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # The hot path: keep it to the engine call and the flush scheduling.
        d = self.driver
        if len(addr) != 2:
            addr = (addr[0], addr[1])
        if d._capture is not None:
            d._capture(data, addr, self.seen_as(addr))
        try:
            d._engine.receive_datagram(data, addr, d._loop.time() + d._offset)
        except Exception:  # an engine bug must not take the socket down with it
            d.counters["engine_error"] += 1
            log.exception("engine failed on a datagram from %s", addr)
        if d._batch:
            if not d._flush_pending:
                d._flush_pending = True
                d._loop.call_soon(d._flush)
        else:
            d._flush()

    def seen_as(self, peer: Addr) -> Addr:
        """Our address as `peer` sees it, for captures: a wildcard-bound socket talking to a
        loopback peer is on loopback too (the kernel picks the real source per datagram)."""
        host = self.local[0]
        if host in ("0.0.0.0", "::") and peer[0] in ("127.0.0.1", "::1"):
            return (peer[0], self.local[1])
        return self.local

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the engine's retransmission timers handle the loss.
        self.driver.counters["socket_error"] += 1
        log.debug("socket %s: %s", self.local, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class EngineDriver(Generic[E]):
    """Runs `engine` over one or more UDP sockets (at most one IPv4 and one IPv6 is typical).

    The engine clock is the loop's monotonic clock; with `wall_clock=True` it is shifted once to
    the Unix epoch (still monotonic, no jumps), for engines that persist times across restarts
    (key expiry in the key server's store).

    `on_flush` runs after every flush: the place to wake a driver that shares state with this
    engine (a PAA whose AAA backend has its own socket) -- with `kick_soon`, never `kick`.

    Events go to `on_event` (a plain function, or a coroutine function run as a task per event)
    and/or `events` (an asyncio.Queue). After calling an engine command yourself
    (`pac.start(driver.now())`), call `driver.kick()` so its output is sent and its timer set.
    """

    def __init__(
        self,
        engine: E,
        *,
        on_event: EventSink | None = None,
        events: asyncio.Queue[Any] | None = None,
        capture: Capture | None = None,
        batch: bool = True,
        wall_clock: bool = False,
        on_flush: Callable[[], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.engine = engine
        self._engine: Engine = engine
        self._loop = loop or asyncio.get_running_loop()
        self._capture = capture
        self._batch = batch
        self._queue = events
        self._on_event = on_event
        self._async_sink = on_event is not None and asyncio.iscoroutinefunction(on_event)
        self._tasks: set[asyncio.Task[None]] = set()
        self._offset = time.time() - self._loop.time() if wall_clock else 0.0
        self._on_flush = on_flush
        self._flush_pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._endpoints: list[_Endpoint] = []
        self._v4: _Endpoint | None = None
        self._v6: _Endpoint | None = None
        self._closed = False
        self.counters: Counter[str] = Counter()

    # -- sockets -------------------------------------------------------------------------------

    async def bind(self, host: str, port: int = 0, rcvbuf: int | None = DEFAULT_RCVBUF) -> Addr:
        """Open a socket on (host, port) (port 0 = ephemeral); returns the bound (host, port)."""
        sock = make_udp_socket(host, port, rcvbuf)
        return await self.attach(sock)

    async def attach(self, sock: socket.socket) -> Addr:
        """Drive the engine over an already bound UDP socket as well."""
        _, proto = await self._loop.create_datagram_endpoint(lambda: _Endpoint(self), sock=sock)
        self._endpoints.append(proto)
        if sock.family == socket.AF_INET6:
            self._v6 = self._v6 or proto
        else:
            self._v4 = self._v4 or proto
        return proto.local

    @property
    def local_addresses(self) -> list[Addr]:
        return [ep.local for ep in self._endpoints]

    def now(self) -> float:
        """The engine clock: the loop's monotonic time (shifted to the epoch with wall_clock)."""
        return self._loop.time() + self._offset

    # -- driving -------------------------------------------------------------------------------

    def kick(self) -> None:
        """Send whatever the engine has queued, deliver its events and re-arm its timer now."""
        self._flush()

    def kick_soon(self) -> None:
        """`kick` on the next loop iteration (once, however often called): safe from inside
        another driver's flush or event handler."""
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _endpoint_for(self, addr: Addr) -> _Endpoint | None:
        if is_ipv6(addr[0]):
            return self._v6
        return self._v4

    def _flush(self) -> None:
        self._flush_pending = False
        if self._closed:
            return
        engine = self._engine
        loop = self._loop
        capture = self._capture
        offset = self._offset
        while True:
            datagrams = engine.datagrams_to_send(loop.time() + offset)
            if datagrams:
                v4, v6 = self._v4, self._v6
                for data, addr in datagrams:
                    ep = v6 if ":" in addr[0] else v4
                    if ep is None or ep.transport is None:
                        self.counters["no_route"] += 1
                        log.warning("no socket of the family of %s to send on", addr)
                        continue
                    try:
                        ep.transport.sendto(data, addr)
                    except (OSError, ValueError, TypeError) as exc:  # e.g. a malformed address
                        self.counters["send_error"] += 1
                        log.warning("cannot send to %s: %s", addr, exc)
                        continue
                    if capture is not None:
                        capture(data, ep.seen_as(addr), addr)
            event = engine.next_event()
            if event is None:
                break
            # An event handler may call engine commands; loop to send what they queue.
            while event is not None:
                self._deliver(event)
                event = engine.next_event()
        at = engine.get_timer()
        armed = self._timer_at
        # Keep a timer that is due no later than the new deadline (or when there is none): it
        # wakes us early at worst, and `_on_timer` re-reads the deadline. Busy engines move their
        # deadline on almost every flush; re-arming each time cost a cancel and a call_at per batch.
        if at != armed and (armed is None or (at is not None and at < armed)):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None if at is None else loop.call_at(at - offset, self._on_timer)
            self._timer_at = at
        if self._on_flush is not None:
            self._on_flush()

    def _deliver(self, event: object) -> None:
        if self._queue is not None:
            self._queue.put_nowait(event)
        sink = self._on_event
        if sink is None:
            return
        try:
            result = sink(event)
            if self._async_sink and result is not None:
                task: asyncio.Task[None] = self._loop.create_task(result)  # type: ignore[arg-type]
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception:
            self.counters["handler_error"] += 1
            log.exception("event handler failed on %r", event)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self._loop.time() + self._offset
        at = self._engine.get_timer()
        if at is None or now < at - _EARLY_FIRE:
            # A timer kept for an earlier deadline (see `_flush`): nothing is due; re-arm.
            self._flush()
            return
        # The loop may fire a little early (uvloop has millisecond timers); never let the engine
        # see a time before its own deadline, or it would re-arm the same timer and spin.
        if now < at:
            now = at
        try:
            self._engine.handle_timer(now)
        except Exception:
            self.counters["engine_error"] += 1
            log.exception("engine failed in handle_timer")
        self._flush()

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the timer and close every socket (idempotent)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = None
        for ep in self._endpoints:
            if ep.transport is not None:
                ep.transport.close()
        for task in list(self._tasks):
            task.cancel()

    async def __aenter__(self) -> EngineDriver[E]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
