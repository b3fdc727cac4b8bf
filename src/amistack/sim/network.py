"""Networks of sans-IO engines on a `VirtualClock`, over a medium; the virtual UDP network.

`Network` holds one engine per address and drives each through `sim.drive.Host` (datagrams out,
events into `events[addr]` and the `on_event` hooks, one pending timer). Where a datagram goes is
the medium's business (`sim.medium.Medium`): `UdpMedium` here, `sim.radio.RadioMedium` for a
radio mesh. Every datagram put on the wire passes the `capture_hooks` (pcap writers) and, when
`capture=N` is given, is kept in the bounded `capture` deque (the last N) as (time, src, dst,
bytes) -- also the ones the medium then loses. `filters` can drop chosen datagrams (a function
returning False drops it). Counters: sent, filtered, delivered, undeliverable, timers, plus the
medium's own (lost, multicast, collided, ...).

`VirtualNetwork` is a `Network` over `UdpMedium`: links are directional, (src, dst) ->
`LinkConfig(latency, jitter, loss)`, with a default for every pair not configured. Loss and
jitter draw from one `random.Random(seed)`, so a run is reproducible.

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
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from amistack.addr import Addr, Engine
from amistack.sim.clock import TimerHandle, VirtualClock
from amistack.sim.drive import EventHook, Host
from amistack.sim.medium import Delivery, Medium

__all__ = ["LinkConfig", "Network", "UdpMedium", "VirtualNetwork"]

logger = logging.getLogger(__name__)


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
T = TypeVar("T")


class CountingMedium(Medium, Protocol):
    counters: Counter[str]


M = TypeVar("M", bound=CountingMedium)


class Network(Generic[M]):
    """Engines at addresses over one medium, on one virtual clock (module docstring)."""

    def __init__(self, medium: M, clock: VirtualClock | None = None, capture: int = 0) -> None:
        if capture < 0:
            raise ValueError("capture is a number of datagrams to keep (0: none)")
        self.medium = medium
        self.clock = clock or VirtualClock()
        self._hosts: dict[Addr, Host] = {}
        self.capture: deque[CaptureRecord] = deque(maxlen=capture)
        self.capture_hooks: list[Callable[[float, Addr, Addr, bytes], None]] = []
        self.filters: list[DatagramFilter] = []
        self.events: defaultdict[Addr, list[object]] = defaultdict(list)
        self.on_event: list[EventHook] = []
        self.counters: Counter[str] = medium.counters

    @property
    def now(self) -> float:
        return self.clock.now

    # -- nodes ------------------------------------------------------------------------------

    def add_node(self, addr: Addr, engine: Engine) -> None:
        if addr in self._hosts:
            raise ValueError(f"address {addr} is already in use")
        host = self._hosts[addr] = Host(addr, engine, self.clock, self._transmit, self._event)
        host.service()

    def remove_node(self, addr: Addr) -> None:
        self._hosts.pop(addr).detach()
        self.medium.remove(addr)

    def engine(self, addr: Addr) -> Engine:
        return self._hosts[addr].engine

    def addresses(self) -> list[Addr]:
        return list(self._hosts)

    def __contains__(self, addr: object) -> bool:
        return addr in self._hosts

    # -- driving ----------------------------------------------------------------------------

    def call_at(self, when: float, addr: Addr, command: Callable[[float], None]) -> TimerHandle:
        """At `when`, run `command(now)` (an engine method like `pac.start`) and service `addr`."""

        def run() -> None:
            command(self.clock.now)
            self.service(addr)

        return self.clock.call_at(when, run)

    def service(self, addr: Addr) -> None:
        """Collect `addr`'s datagrams and events and re-arm its timer; call after a command."""
        host = self._hosts.get(addr)
        if host is not None:
            host.service()

    def _event(self, addr: Addr, event: object, now: float) -> None:
        self.events[addr].append(event)
        for hook in self.on_event:
            hook(addr, event, now)

    def _transmit(self, src: Addr, dst: Addr, data: bytes, now: float) -> None:
        data = bytes(data)
        self.counters["sent"] += 1
        if self.capture.maxlen:
            self.capture.append((now, src, dst, data))
        for hook in self.capture_hooks:
            hook(now, src, dst, data)
        if self.filters and not all(keep(now, src, dst, data) for keep in self.filters):
            self.counters["filtered"] += 1
            return
        for delivery in self.medium.transmit(src, dst, len(data), now):
            self._schedule(src, delivery, data, now)

    def _schedule(self, src: Addr, delivery: Delivery, data: bytes, now: float) -> None:
        self.clock.call_at(now + delivery.delay, lambda: self._deliver(src, delivery, data))

    def _deliver(self, src: Addr, delivery: Delivery, data: bytes) -> None:
        self.medium.delivered(src, delivery)
        if delivery.collided:
            return
        host = self._hosts.get(delivery.dst)
        if host is None:
            self.counters["undeliverable"] += 1
            return
        self.counters["delivered"] += 1
        host.receive(data, src, delivery.multicast)

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

    @property
    def timers_fired(self) -> int:
        return sum(h.timers for h in self._hosts.values())


class UdpMedium:
    """The virtual UDP/IP network: per-pair links and multicast groups (module docstring)."""

    def __init__(self, seed: int = 0, default_link: LinkConfig | None = None) -> None:
        self._rng = random.Random(seed)
        self.default_link = default_link or LinkConfig()
        self._links: dict[tuple[Addr, Addr], LinkConfig] = {}
        self._groups: dict[Addr, list[Addr]] = {}
        self.counters: Counter[str] = Counter()

    def set_link(self, a: Addr, b: Addr, config: LinkConfig, symmetric: bool = True) -> None:
        self._links[(a, b)] = config
        if symmetric:
            self._links[(b, a)] = config

    def link(self, src: Addr, dst: Addr) -> LinkConfig:
        return self._links.get((src, dst), self.default_link)

    def join_group(self, group: Addr, member: Addr) -> None:
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

    def transmit(self, src: Addr, dst: Addr, size: int, now: float) -> Sequence[Delivery]:
        members = self._groups.get(dst)
        if members is None:
            crossed = self._cross(src, dst, multicast=False)
            return [] if crossed is None else [crossed]
        self.counters["multicast"] += 1
        out = []
        for member in list(members):  # each copy crosses its own link (own loss and latency)
            if member != src and (crossed := self._cross(src, member, multicast=True)):
                out.append(crossed)
        return out

    def _cross(self, src: Addr, dst: Addr, multicast: bool) -> Delivery | None:
        link = self.link(src, dst)
        if link.loss and self._rng.random() < link.loss:
            self.counters["lost"] += 1
            return None
        delay = link.latency + (self._rng.random() * link.jitter if link.jitter else 0.0)
        return Delivery(dst, delay, multicast)

    def delivered(self, src: Addr, delivery: Delivery) -> None:
        pass  # links keep no statistics beyond the counters

    def remove(self, addr: Addr) -> None:
        for group in list(self._groups):
            self.leave_group(group, addr)


class VirtualNetwork(Network[UdpMedium]):
    """A `Network` over the virtual UDP medium (module docstring)."""

    def __init__(
        self,
        clock: VirtualClock | None = None,
        seed: int = 0,
        default_link: LinkConfig | None = None,
        capture: int = 0,
    ) -> None:
        super().__init__(UdpMedium(seed, default_link), clock, capture)

    @property
    def default_link(self) -> LinkConfig:
        return self.medium.default_link

    def join_group(self, group: Addr, member: Addr) -> None:
        """Deliver datagrams sent to `group` to the node `member` too (with multicast=True)."""
        if member not in self:
            raise KeyError(f"no node at {member}")
        if group in self:
            raise ValueError(f"{group} is a node's address, not a group")
        self.medium.join_group(group, member)

    def leave_group(self, group: Addr, member: Addr) -> None:
        self.medium.leave_group(group, member)

    def members(self, group: Addr) -> list[Addr]:
        return self.medium.members(group)

    def set_link(self, a: Addr, b: Addr, config: LinkConfig, symmetric: bool = True) -> None:
        self.medium.set_link(a, b, config, symmetric)

    def link(self, src: Addr, dst: Addr) -> LinkConfig:
        return self.medium.link(src, dst)
