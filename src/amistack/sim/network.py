"""A virtual datagram network that drives sans-IO engines on a `VirtualClock`.

Every node is one engine at one address. The network does for it what `runtime.udp` does over
real sockets: hands it datagrams (`receive_datagram`), collects what it wants to send
(`datagrams_to_send`), keeps exactly one pending wake-up at `get_timer()` (`handle_timer`) and
drains its events (`next_event`) into `events[addr]` and the `on_event` hooks.

Links are directional, (src, dst) -> `LinkConfig(latency, jitter, loss)`, with a default for
every pair not configured. Loss and jitter draw from one `random.Random(seed)`, so a run is
reproducible. Every datagram put on the wire is recorded in `capture` as (time, src, dst,
bytes) -- also the ones the link then loses -- for pcap files and for assertions; `filters`
can drop chosen datagrams (a function returning False drops it).

Multicast: `join_group(group, member)` makes `member` receive what is sent to the address
`group` (e.g. ECHONET Lite's 224.0.23.0:3610). A datagram to a group is captured and filtered once
(with the group as destination), then crosses the link (src, member) to every member except its
sender, which gets it with `receive_datagram(data, src, now, multicast=True)` -- engines use this to
tell multicast requests apart (ECHONET Lite guideline §2.4). Members must accept that keyword.

After calling a command on an engine from outside the loop (``pac.start(net.now)``), call
`net.service(addr)` -- or use `net.call_at(t, addr, fn)` which does both at time t.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

from amistack.addr import Addr
from amistack.sim.clock import TimerHandle, VirtualClock

logger = logging.getLogger(__name__)


class SimEngine(Protocol):
    """What the network drives: the common sans-IO engine shape (ARCHITECTURE.md)."""

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None: ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> object | None: ...


class MulticastEngine(Protocol):
    """An engine that can be a group member: told which datagrams came to a group."""

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None: ...


@dataclass(frozen=True)
class LinkConfig:
    latency: float = 0.005  # seconds, one way
    jitter: float = 0.0  # extra delay, uniform in [0, jitter)
    loss: float = 0.0  # probability that a datagram is lost

    def __post_init__(self) -> None:
        if self.latency < 0 or self.jitter < 0 or not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"invalid link {self}")


CaptureRecord = tuple[float, Addr, Addr, bytes]
DatagramFilter = Callable[[float, Addr, Addr, bytes], bool]
EventHook = Callable[[Addr, object, float], None]
T = TypeVar("T")


class _Node:
    __slots__ = ("addr", "engine", "timer_at", "timer_handle")

    def __init__(self, addr: Addr, engine: SimEngine) -> None:
        self.addr = addr
        self.engine = engine
        self.timer_at: float | None = None
        self.timer_handle: TimerHandle | None = None


class VirtualNetwork:
    def __init__(
        self,
        clock: VirtualClock | None = None,
        seed: int = 0,
        default_link: LinkConfig | None = None,
        capture: bool = True,
    ) -> None:
        self.clock = clock or VirtualClock()
        self._rng = random.Random(seed)
        self.default_link = default_link or LinkConfig()
        self._links: dict[tuple[Addr, Addr], LinkConfig] = {}
        self._nodes: dict[Addr, _Node] = {}
        self._groups: dict[Addr, list[Addr]] = {}
        self.capture_enabled = capture
        self.capture: list[CaptureRecord] = []
        self.capture_hooks: list[Callable[[float, Addr, Addr, bytes], None]] = []
        self.filters: list[DatagramFilter] = []
        self.events: defaultdict[Addr, list[object]] = defaultdict(list)
        self.on_event: list[EventHook] = []
        self.counters: Counter[str] = Counter()

    # -- topology ---------------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.clock.now

    def add_node(self, addr: Addr, engine: SimEngine) -> None:
        if addr in self._nodes:
            raise ValueError(f"address {addr} is already in use")
        self._nodes[addr] = _Node(addr, engine)
        self.service(addr)

    def remove_node(self, addr: Addr) -> None:
        node = self._nodes.pop(addr)
        if node.timer_handle is not None:
            node.timer_handle.cancel()
        for group in list(self._groups):
            self.leave_group(group, addr)

    def join_group(self, group: Addr, member: Addr) -> None:
        """Deliver datagrams sent to `group` to the node `member` too (with multicast=True)."""
        if member not in self._nodes:
            raise KeyError(f"no node at {member}")
        if group in self._nodes:
            raise ValueError(f"{group} is a node's address, not a group")
        members = self._groups.setdefault(group, [])
        if member not in members:
            members.append(member)

    def leave_group(self, group: Addr, member: Addr) -> None:
        members = self._groups.get(group)
        if members and member in members:
            members.remove(member)
            if not members:
                del self._groups[group]

    def members(self, group: Addr) -> list[Addr]:
        return list(self._groups.get(group, ()))

    def engine(self, addr: Addr) -> SimEngine:
        return self._nodes[addr].engine

    def addresses(self) -> list[Addr]:
        return list(self._nodes)

    def set_link(self, a: Addr, b: Addr, config: LinkConfig, symmetric: bool = True) -> None:
        self._links[(a, b)] = config
        if symmetric:
            self._links[(b, a)] = config

    def link(self, src: Addr, dst: Addr) -> LinkConfig:
        return self._links.get((src, dst), self.default_link)

    # -- driving ----------------------------------------------------------------------------

    def call_at(self, when: float, addr: Addr, command: Callable[[float], None]) -> TimerHandle:
        """At `when`, run `command(now)` (an engine method like `pac.start`) and service `addr`."""

        def run() -> None:
            command(self.clock.now)
            self.service(addr)

        return self.clock.call_at(when, run)

    def service(self, addr: Addr) -> None:
        """Collect `addr`'s datagrams and events and re-arm its timer; call after a command."""
        node = self._nodes.get(addr)
        if node is None:
            return
        now = self.clock.now
        engine = node.engine
        for data, dst in engine.datagrams_to_send(now):
            self._transmit(addr, dst, data, now)
        while (event := engine.next_event()) is not None:
            self.events[addr].append(event)
            for hook in self.on_event:
                hook(addr, event, now)
        self._arm(node)

    def _arm(self, node: _Node) -> None:
        when = node.engine.get_timer()
        if when == node.timer_at and node.timer_handle is not None:
            return
        if node.timer_handle is not None:
            node.timer_handle.cancel()
            node.timer_handle = None
        node.timer_at = when
        if when is not None:
            node.timer_handle = self.clock.call_at(when, lambda: self._fire(node))

    def _fire(self, node: _Node) -> None:
        if self._nodes.get(node.addr) is not node:
            return
        node.timer_handle = None
        node.timer_at = None
        self.counters["timers"] += 1
        node.engine.handle_timer(self.clock.now)
        self.service(node.addr)

    def _transmit(self, src: Addr, dst: Addr, data: bytes, now: float) -> None:
        data = bytes(data)
        self.counters["sent"] += 1
        if self.capture_enabled:
            self.capture.append((now, src, dst, data))
        for hook in self.capture_hooks:
            hook(now, src, dst, data)
        if not all(keep(now, src, dst, data) for keep in self.filters):
            self.counters["filtered"] += 1
            return
        members = self._groups.get(dst)
        if members is None:
            self._cross(src, dst, data, now, multicast=False)
            return
        self.counters["multicast"] += 1
        for member in list(members):  # each copy crosses its own link (own loss and latency)
            if member != src:
                self._cross(src, member, data, now, multicast=True)

    def _cross(self, src: Addr, dst: Addr, data: bytes, now: float, multicast: bool) -> None:
        link = self.link(src, dst)
        if link.loss and self._rng.random() < link.loss:
            self.counters["lost"] += 1
            return
        delay = link.latency + (self._rng.random() * link.jitter if link.jitter else 0.0)
        self.clock.call_at(now + delay, lambda: self._deliver(src, dst, data, multicast))

    def _deliver(self, src: Addr, dst: Addr, data: bytes, multicast: bool = False) -> None:
        node = self._nodes.get(dst)
        if node is None:
            self.counters["undeliverable"] += 1
            return
        self.counters["delivered"] += 1
        if multicast:
            cast(MulticastEngine, node.engine).receive_datagram(
                data, src, self.clock.now, multicast=True
            )
        else:
            node.engine.receive_datagram(data, src, self.clock.now)
        self.service(dst)

    def inject(self, src: Addr, dst: Addr, data: bytes, when: float | None = None) -> None:
        """Put a datagram on the wire from `src` (which need not be a node): traffic, attacks."""
        t = self.clock.now if when is None else when
        self.clock.call_at(t, lambda: self._transmit(src, dst, data, self.clock.now))

    # -- running ----------------------------------------------------------------------------

    def run_until(self, t: float) -> None:
        self.clock.run_until(t)

    def run_until_idle(self, max_time: float | None = None) -> float:
        """Run until nothing is in flight and no timer is pending (or `max_time`)."""
        return self.clock.run_until_idle(max_time)

    def run_while(self, condition: Callable[[], bool], max_time: float) -> bool:
        """Run while `condition()` holds, up to `max_time`; True if it stopped holding."""
        return self.clock.run_while(condition, max_time)

    def events_of(self, addr: Addr, kind: type[T]) -> list[T]:
        """The events `addr`'s engine has produced so far that are instances of `kind`."""
        return [e for e in self.events[addr] if isinstance(e, kind)]
