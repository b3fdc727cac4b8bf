"""What a simulated medium is: who hears a transmission, after how long, and what it cost.

A medium is a pure delivery model (no clock, no engines): `transmit(src, dst, size, now)` says
which nodes receive a datagram and when. The network (`sim.network.Network`) owns the engines,
the clock, captures and filters, and schedules the deliveries a medium returns. A delivery may be
spoiled after it was planned (a later transmission collides with it at the receiver): the
network checks `collided` when the delivery is due.

Two media exist: `sim.network.UdpMedium` (the virtual UDP/IP network: configured links, latency,
jitter, loss, multicast groups) and `sim.radio.RadioMedium` (a radio with node positions, a link
model, broadcast to neighbours, optional collisions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from amistack.addr import Addr

__all__ = ["Delivery", "LinkStats", "Medium"]


class Delivery:
    """One receiver's copy of one transmission."""

    __slots__ = ("collided", "delay", "dst", "link", "multicast")

    def __init__(
        self, dst: Addr, delay: float, multicast: bool = False, link: LinkStats | None = None
    ) -> None:
        self.dst = dst
        self.delay = delay
        self.multicast = multicast
        self.collided = False
        self.link = link  # the medium's statistics of the link crossed, if it keeps them

    def __repr__(self) -> str:
        return f"Delivery({self.dst}, {self.delay}, multicast={self.multicast})"


@dataclass(slots=True)
class LinkStats:
    """Per directed link (src, dst): what crossed it. `prr` is the measured delivery ratio,
    the input of ETX (RFC 6719 §3.1: ETX = 1 / (forward PRR x reverse PRR))."""

    sent: int = 0
    delivered: int = 0
    lost: int = 0
    collided: int = 0

    @property
    def prr(self) -> float | None:
        return self.delivered / self.sent if self.sent else None


class Medium(Protocol):
    """The delivery model a `Network` drives its engines over."""

    def transmit(self, src: Addr, dst: Addr, size: int, now: float) -> Sequence[Delivery]:
        """The copies of a `size`-octet datagram sent at `now` that will reach a receiver."""
        ...

    def delivered(self, src: Addr, delivery: Delivery) -> None:
        """A planned delivery happened (or, `delivery.collided`, was spoiled)."""
        ...

    def remove(self, addr: Addr) -> None:
        """A node left the medium."""
        ...
