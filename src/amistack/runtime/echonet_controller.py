"""Drive an `EchonetController` over real UDP (IPv4 and IPv6), with awaitable requests.

The driver drives any `ControllerEngine`: the plain controller on the LAN (`open` its sockets),
or one carried by another link, such as the HEMS on the B route
(`broute.controller.BrouteController`, on one socket from `bind`).

`ControllerDriver` is `runtime.udp.EngineDriver` plus the sockets an ECHONET Lite controller
needs and a future per request:

- the *answer* socket on port 3610 of the bound address (every node answers to port 3610 of its
  requester: ECHONET Lite spec part 2, §4.2), which also serves requests aimed at the
  controller's own node profile;
- optionally an *ephemeral* socket that requests are sent from (`ephemeral_source=True`; devices
  accept requests from any source port, and this lets a second controller share the host);
- optionally the multicast group socket (224.0.23.0 / ff02::1 on a chosen interface, via
  `runtime.echonet.multicast_socket`), whose datagrams reach the engine with `multicast=True`.

`await driver.get(dest, deoj, epcs)` returns the `RequestCompleted` (check `.ok`: a not-possible
answer is a partial result, not an error) or raises `RequestTimeout` when the engine gave up
(its retries and grace, `ControllerConfig`) or the optional `timeout` ran out; any other failure
(e.g. the device queue is full) raises `RequestError`.

The hot path -- a benchmark measures Get round trips per second through it -- is one engine
command, one future and one immediate flush per request; replies are batched by the loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from amistack.addr import Addr, MulticastEngine
from amistack.echonet.controller import ControllerConfig, KnownNode
from amistack.echonet.events import (
    NodeDiscovered,
    PropertyMapsRetrieved,
    RequestCompleted,
    RequestFailed,
)
from amistack.echonet.frame import Eoj
from amistack.echonet.node import EL_PORT, MULTICAST_V4, MULTICAST_V6
from amistack.runtime.echonet import multicast_socket, peer_addr, unicast_socket
from amistack.runtime.udp import EngineDriver, _Endpoint

log = logging.getLogger(__name__)

__all__ = ["ControllerDriver", "ControllerEngine", "RequestError", "RequestTimeout"]

_RESULTS = (RequestCompleted, RequestFailed)
_DISCOVERY = (NodeDiscovered, PropertyMapsRetrieved)


class RequestError(Exception):
    """A request of the controller failed; `event` is the engine's `RequestFailed` (None when
    the caller's own timeout ran out first)."""

    def __init__(self, message: str, event: RequestFailed | None = None) -> None:
        super().__init__(message)
        self.event = event


class RequestTimeout(RequestError):
    """No answer: the engine's retries and grace period ran out, or the caller's timeout."""


class ControllerEngine(MulticastEngine, Protocol):
    """What `ControllerDriver` drives: `EchonetController`'s commands and engine shape."""

    @property
    def config(self) -> ControllerConfig: ...

    @property
    def nodes(self) -> Mapping[Addr, KnownNode]: ...

    def start(self, now: float) -> None: ...

    def probe(self, addr: Addr, now: float) -> None: ...

    def get(self, dest: Addr, deoj: Eoj, epcs: Sequence[int], now: float) -> int: ...

    def set(
        self, dest: Addr, deoj: Eoj, props: Sequence[tuple[int, bytes]], now: float, ack: bool
    ) -> int: ...

    def setget(
        self,
        dest: Addr,
        deoj: Eoj,
        set_props: Sequence[tuple[int, bytes]],
        get_epcs: Sequence[int],
        now: float,
    ) -> int: ...

    def inf_req(self, dest: Addr, deoj: Eoj, epcs: Sequence[int], now: float) -> int: ...


class _ControllerEndpoint(_Endpoint):
    """A socket of the controller: feeds the engine, telling it whether the datagram came to a
    multicast group."""

    multicast = False

    def datagram_received(self, data: bytes, addr: Any) -> None:
        d = self.driver
        peer: Addr = addr if len(addr) == 2 else peer_addr(addr)
        if d._capture is not None:
            d._capture(data, peer, self.seen_as(peer))
        engine: ControllerEngine = d.engine
        try:
            engine.receive_datagram(data, peer, d._loop.time() + d._offset, self.multicast)
        except Exception:  # an engine bug must not take the socket down with it
            d.counters["engine_error"] += 1
            log.exception("controller failed on a datagram from %s", peer)
        if not d._flush_pending:
            d._flush_pending = True
            d._loop.call_soon(d._flush)


class _GroupEndpoint(_ControllerEndpoint):
    multicast = True


class ControllerDriver(EngineDriver[ControllerEngine]):
    """Runs an `EchonetController` (any `ControllerEngine`) over UDP (module docstring)::

    ctl = EchonetController(ControllerConfig(), system_random)
    async with ControllerDriver(ctl) as driver:
        await driver.open(ipv4="192.168.1.2", interface="eth0")
        meter = await driver.wait_for_node(0x0288, timeout=10.0)
        r = await driver.get(meter.addr, meter.find(0x0288), [0xE7])
    """

    def __init__(self, engine: ControllerEngine, **kw: Any) -> None:
        super().__init__(engine, **kw)
        self._waiters: dict[int, asyncio.Future[RequestCompleted | RequestFailed]] = {}
        self._changed = asyncio.Event()
        self._started = False

    # -- sockets -------------------------------------------------------------------------------

    async def open(
        self,
        *,
        ipv4: str | None = "0.0.0.0",
        ipv6: str | None = None,
        interface: str | None = None,
        port: int = EL_PORT,
        multicast: bool = True,
        ephemeral_source: bool = False,
        multicast_loop: bool = True,
    ) -> list[Addr]:
        """Open, per family asked for, the answer socket on `port` (3610), the ephemeral
        sending socket when `ephemeral_source`, and the group socket when `multicast`; returns
        the bound addresses. The engine's `multicast_groups` should name the groups opened."""
        opened: list[Addr] = []
        for host, group in ((ipv4, MULTICAST_V4[0]), (ipv6, MULTICAST_V6[0])):
            if host is None:
                continue
            if ephemeral_source:  # attached first: the first socket of a family sends
                opened.append(
                    await self._attach(
                        unicast_socket(host, 0, interface, multicast_loop, group=False),
                        _ControllerEndpoint,
                    )
                )
            sock = unicast_socket(host, port, interface, multicast_loop, group=multicast)
            opened.append(await self._attach(sock, _ControllerEndpoint))
            if multicast:
                msock = multicast_socket(group, port, interface)
                opened.append(await self._attach(msock, _GroupEndpoint))
        return opened

    async def _attach(self, sock: socket.socket, kind: type[_ControllerEndpoint]) -> Addr:
        _, proto = await self._loop.create_datagram_endpoint(lambda: kind(self), sock=sock)
        self._endpoints.append(proto)
        if not proto.multicast:
            if sock.family == socket.AF_INET6:
                self._v6 = self._v6 or proto
            else:
                self._v4 = self._v4 or proto
        return proto.local

    # -- requests ------------------------------------------------------------------------------

    async def _wait(self, handle: int, timeout: float | None) -> RequestCompleted:
        fut = self._waiters.get(handle)
        if fut is None:  # already decided inside the command (e.g. the queue was full)
            raise RequestError(f"request {handle} vanished")
        try:
            if timeout is None:
                ev = await fut
            else:
                async with asyncio.timeout(timeout):
                    ev = await fut
        except TimeoutError:
            raise RequestTimeout(f"no answer within {timeout} s") from None
        finally:
            self._waiters.pop(handle, None)
        if isinstance(ev, RequestCompleted):
            return ev
        if ev.reason.startswith("timeout"):
            raise RequestTimeout(f"{ev.addr[0]} {ev.deoj}: {ev.reason}", ev)
        raise RequestError(f"{ev.addr[0]} {ev.deoj}: {ev.reason}", ev)

    def _track(self, handle: int) -> None:
        self._waiters[handle] = self._loop.create_future()
        self.kick_soon()  # one flush for every request made in this loop iteration

    async def get(
        self, dest: Addr, deoj: Eoj, epcs: Sequence[int], timeout: float | None = None
    ) -> RequestCompleted:
        """Get `epcs` of `deoj` at `dest` (see the module docstring for the outcome)."""
        handle = self.engine.get(dest, deoj, epcs, self._loop.time() + self._offset)
        self._track(handle)
        return await self._wait(handle, timeout)

    async def set(
        self,
        dest: Addr,
        deoj: Eoj,
        props: Sequence[tuple[int, bytes]],
        ack: bool = True,
        timeout: float | None = None,
    ) -> RequestCompleted:
        """SetC (SetI with `ack=False`) of `props`."""
        handle = self.engine.set(dest, deoj, props, self.now(), ack)
        self._track(handle)
        return await self._wait(handle, timeout)

    async def setget(
        self,
        dest: Addr,
        deoj: Eoj,
        set_props: Sequence[tuple[int, bytes]],
        get_epcs: Sequence[int],
        timeout: float | None = None,
    ) -> RequestCompleted:
        """SetGet: write, then read (guideline §2.6)."""
        handle = self.engine.setget(dest, deoj, set_props, get_epcs, self.now())
        self._track(handle)
        return await self._wait(handle, timeout)

    async def inf_req(
        self, dest: Addr, deoj: Eoj, epcs: Sequence[int], timeout: float | None = None
    ) -> RequestCompleted:
        """INF_REQ: the answer is the device's INF (0x73) to us."""
        handle = self.engine.inf_req(dest, deoj, epcs, self.now())
        self._track(handle)
        return await self._wait(handle, timeout)

    # -- discovery -----------------------------------------------------------------------------

    def start(self, probe: Sequence[Addr] = ()) -> None:
        """Start the engine (startup INF, multicast discovery) once, and probe `probe`."""
        now = self.now()
        if not self._started:
            self._started = True
            self.engine.start(now)
        for addr in probe:
            self.engine.probe(addr, now)
        self.kick()

    async def wait_for_node(
        self,
        class_code: int | None = None,
        timeout: float = 10.0,
        maps: bool = True,
    ) -> KnownNode | None:
        """The first known node holding an object of `class_code` (any node if None) -- with
        that object's property maps read when `maps` and the engine reads maps -- or None after
        `timeout` s. Call `start()` first."""
        loop = self._loop
        deadline = loop.time() + timeout
        maps = maps and self.engine.config.fetch_property_maps
        while True:
            for node in self.engine.nodes.values():
                eoj = node.instances[0] if class_code is None and node.instances else None
                if class_code is not None:
                    eoj = node.find(class_code)
                if eoj is not None and (not maps or eoj in node.maps):
                    return node
            left = deadline - loop.time()
            if left <= 0:
                return None
            self._changed.clear()
            try:
                async with asyncio.timeout(left):
                    await self._changed.wait()
            except TimeoutError:
                return None

    # -- events --------------------------------------------------------------------------------

    def _deliver(self, event: object) -> None:
        if isinstance(event, _RESULTS):
            fut = self._waiters.get(event.handle)
            if fut is not None and not fut.done():
                fut.set_result(event)
        elif isinstance(event, _DISCOVERY):
            self._changed.set()
        if self._queue is not None or self._on_event is not None:
            super()._deliver(event)

    def close(self) -> None:
        super().close()
        for fut in self._waiters.values():
            if not fut.done():
                fut.cancel()
        self._waiters.clear()
