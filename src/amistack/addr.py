"""What every engine and driver share: transport addresses and the one sans-IO engine shape.

`Addr` is a transport address, (host, port) with the host in IPv4 or IPv6 text form. `Engine` is
the shape of every protocol engine (ARCHITECTURE.md, "One rule for every protocol engine"): the
drivers in `runtime/` (asyncio, real sockets) and `sim/` (virtual clock) drive anything of this
shape; a package that needs more of an engine extends the Protocol instead of copying it.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Addr", "Engine", "MulticastEngine"]

Addr = tuple[str, int]


class Engine(Protocol):
    """A sans-IO protocol engine: input, output, one timer, events. Never does I/O itself."""

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None: ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> object | None: ...


class MulticastEngine(Engine, Protocol):
    """An engine that can be a multicast group member: told which datagrams came to a group
    (ECHONET Lite guideline §2.4 answers multicast requests differently)."""

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None: ...
