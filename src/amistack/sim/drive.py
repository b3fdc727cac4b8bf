"""The one drive loop on the virtual clock: what `runtime.udp.EngineDriver` does over sockets.

A `Host` holds one engine at one address. After anything reaches the engine (a datagram, a
command, its timer) `service()` collects what it wants to send (handed to `transmit`), drains its
events (handed to `on_event`) and keeps exactly one pending wake-up at `get_timer()`. Every
network of `sim/` (the virtual UDP network, the radio, the fleet's cells) drives its engines
through `Host`, so there is one place where the engine shape is driven in simulated time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from amistack.addr import Addr, Engine, MulticastEngine
from amistack.sim.clock import TimerHandle, VirtualClock

__all__ = ["EventHook", "Host", "Transmit"]

Transmit = Callable[[Addr, Addr, bytes, float], None]
"""(src, dst, data, now): the engine at src put a datagram on the wire."""

EventHook = Callable[[Addr, object, float], None]
"""(addr, event, now): the engine at addr produced an event."""


class Host:
    """One engine driven on a `VirtualClock` (see the module docstring)."""

    __slots__ = ("_clock", "_on_event", "_transmit", "addr", "attached", "engine", "handle",
                 "timer_at", "timers")  # fmt: skip

    def __init__(
        self,
        addr: Addr,
        engine: Engine,
        clock: VirtualClock,
        transmit: Transmit,
        on_event: EventHook,
    ) -> None:
        self.addr = addr
        self.engine = engine
        self._clock = clock
        self._transmit = transmit
        self._on_event = on_event
        self.timer_at: float | None = None
        self.handle: TimerHandle | None = None
        self.attached = True
        self.timers = 0  # wake-ups fired

    def service(self) -> None:
        """Collect datagrams and events and re-arm the timer; call after every input."""
        if not self.attached:
            return
        now = self._clock.now
        engine = self.engine
        for data, dst in engine.datagrams_to_send(now):
            self._transmit(self.addr, dst, data, now)
        while (event := engine.next_event()) is not None:
            self._on_event(self.addr, event, now)
        when = engine.get_timer()
        if when == self.timer_at and self.handle is not None:
            return
        if self.handle is not None:
            self._clock.cancel(self.handle)
            self.handle = None
        self.timer_at = when
        if when is not None:
            self.handle = self._clock.call_at(when, self._fire)

    def receive(self, data: bytes, src: Addr, multicast: bool = False) -> None:
        """Hand the engine one datagram (multicast: it came to a group it joined)."""
        if not self.attached:
            return
        if multicast:
            cast(MulticastEngine, self.engine).receive_datagram(
                data, src, self._clock.now, multicast=True
            )
        else:
            self.engine.receive_datagram(data, src, self._clock.now)
        self.service()

    def detach(self) -> None:
        """The node left (or its process died): no more input, its timer is dropped."""
        self.attached = False
        if self.handle is not None:
            self._clock.cancel(self.handle)
            self.handle = None

    def _fire(self) -> None:
        self.handle = None
        self.timer_at = None
        if not self.attached:
            return
        self.timers += 1
        self.engine.handle_timer(self._clock.now)
        self.service()
