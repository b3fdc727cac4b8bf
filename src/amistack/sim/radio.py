"""A virtual radio: nodes at positions, a link model, broadcast to neighbours, collisions.

`RadioMedium` is a `sim.medium.Medium` for `sim.network.Network`. A transmission occupies the
channel for its airtime (`Phy`: bit rate and the PHY's synchronisation header and PHY header
octets) and reaches every neighbour of the sender: a datagram to `BROADCAST` is delivered to all
of them, one to a node only to that node (the others still hear the channel busy, which matters
for collisions); one node's frames go out one after another. Each copy is lost with the link's
loss probability (one `random.Random(seed)`, so a run is a pure function of the seed). With
`collisions=True` two receptions overlapping in time at one receiver spoil each other (no capture
effect, no carrier sense: the pessimistic ALOHA model; MAC back-off belongs to the engines).

Link models (`LinkModel`): `UnitDisk(radius, loss)` -- a link exists within `radius` metres, with
one loss probability for all links and per-link overrides (`set_loss`); `LogDistance` -- received
power from the log-distance path-loss model with log-normal shadowing drawn once per link from the
seed (symmetric), and a loss probability from the margin over the receiver's sensitivity.

Neighbours are found through a grid of cells one maximum range wide (3 x 3 cells are searched),
so the cost of a broadcast grows with the density, not with the number of nodes; the neighbour
lists are cached until the topology changes. `stats(a, b)` gives the per-link counts (sent,
delivered, lost, collided) that link-quality estimators (ETX) read.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from amistack.addr import Addr
from amistack.sim.medium import Delivery, LinkStats

__all__ = [
    "BROADCAST",
    "FSK_920",
    "OQPSK_2450",
    "LinkModel",
    "LogDistance",
    "Phy",
    "RadioMedium",
    "UnitDisk",
    "scatter",
]

BROADCAST: Addr = ("ff02::1", 0)
"""The radio broadcast destination: link-local all-nodes, which 6LoWPAN sends to the 802.15.4
broadcast short address 0xFFFF (RFC 4944 §9)."""


@dataclass(frozen=True)
class Phy:
    """Bit rate and per-frame PHY overhead (synchronisation header + PHY header), for airtime."""

    name: str
    bitrate: int  # bit/s
    overhead: int  # octets before the MAC frame

    def airtime(self, size: int) -> float:
        return (self.overhead + size) * 8 / self.bitrate


OQPSK_2450 = Phy("O-QPSK 2450 MHz", 250_000, 6)
"""802.15.4-2006 §6.5: 250 kbit/s; SHR 5 octets (preamble 4 + SFD 1) + PHR 1."""

FSK_920 = Phy("SUN FSK 920 MHz", 100_000, 12)
"""802.15.4g SUN FSK as Wi-SUN / ARIB STD-T108 use it at 100 kbit/s; SHR 10 octets (preamble 8 +
SFD 2) + PHR 2."""


class LinkModel(Protocol):
    max_range: float  # metres: beyond it there is never a link

    def loss(self, a: Addr, b: Addr, distance: float) -> float | None:
        """The loss probability of the directed link a -> b (None: no link)."""
        ...


class UnitDisk:
    """A link within `radius` metres, lost with probability `loss` (or its per-link override)."""

    def __init__(self, radius: float, loss: float = 0.0) -> None:
        if radius <= 0 or not 0.0 <= loss <= 1.0:
            raise ValueError("range must be positive and loss a probability")
        self.max_range = float(radius)
        self.default_loss = loss
        self._loss: dict[tuple[Addr, Addr], float] = {}

    def set_loss(self, a: Addr, b: Addr, loss: float, symmetric: bool = True) -> None:
        if not 0.0 <= loss <= 1.0:
            raise ValueError("loss must be a probability")
        self._loss[(a, b)] = loss
        if symmetric:
            self._loss[(b, a)] = loss

    def loss(self, a: Addr, b: Addr, distance: float) -> float | None:
        if distance > self.max_range:
            return None
        return self._loss.get((a, b), self.default_loss)


class LogDistance:
    """PL(d) = PL(d0) + 10 n log10(d / d0) + X (X ~ N(0, sigma) per link, from the seed).

    Loss = 1 / (1 + exp(margin / slope)) with margin = P_rx - sensitivity (dB): 50 % at the
    sensitivity, about 3 % five dB above it. Links lossier than `cutoff` are no links. Defaults:
    920 MHz (free-space PL(1 m) = 20 log10(4 pi f / c) = 31.7 dB), n = 3 (suburban), sigma = 4 dB,
    13 dBm (ARIB STD-T108: 20 mW), sensitivity -100 dBm (typical SUN FSK 100 kbit/s receiver).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        tx_power_dbm: float = 13.0,
        pl_d0_db: float = 31.7,
        d0: float = 1.0,
        exponent: float = 3.0,
        sigma_db: float = 4.0,
        sensitivity_dbm: float = -100.0,
        slope_db: float = 1.5,
        cutoff: float = 0.99,
    ) -> None:
        if exponent <= 0 or sigma_db < 0 or slope_db <= 0 or not 0 < cutoff < 1 or d0 <= 0:
            raise ValueError("invalid log-distance parameters")
        self.seed = seed
        self.tx_power_dbm = tx_power_dbm
        self.pl_d0_db = pl_d0_db
        self.d0 = d0
        self.exponent = exponent
        self.sigma_db = sigma_db
        self.sensitivity_dbm = sensitivity_dbm
        self.slope_db = slope_db
        self.cutoff = cutoff
        # no link beyond the distance where even a +3 sigma link is lossier than the cutoff
        margin_at_cutoff = slope_db * math.log((1 - cutoff) / cutoff)  # negative
        budget = tx_power_dbm - pl_d0_db - sensitivity_dbm - margin_at_cutoff + 3 * sigma_db
        self.max_range = d0 * 10 ** (budget / (10 * exponent))
        self._shadow: dict[tuple[Addr, Addr], float] = {}

    def shadowing(self, a: Addr, b: Addr) -> float:
        """The link's shadowing in dB: the same for a -> b and b -> a, a function of the seed."""
        key = (a, b) if a <= b else (b, a)
        x = self._shadow.get(key)
        if x is None:
            digest = hashlib.blake2b(repr((self.seed, key)).encode(), digest_size=8).digest()
            x = random.Random(int.from_bytes(digest, "big")).gauss(0.0, self.sigma_db)
            self._shadow[key] = x
        return x

    def rx_power(self, a: Addr, b: Addr, distance: float) -> float:
        d = max(distance, self.d0)
        path_loss = self.pl_d0_db + 10 * self.exponent * math.log10(d / self.d0)
        return self.tx_power_dbm - path_loss - self.shadowing(a, b)

    def loss(self, a: Addr, b: Addr, distance: float) -> float | None:
        if distance > self.max_range:
            return None
        margin = self.rx_power(a, b, distance) - self.sensitivity_dbm
        loss = 1.0 / (1.0 + math.exp(min(margin / self.slope_db, 700.0)))
        return None if loss > self.cutoff else loss


class _Link:
    """One directed link of a node's neighbour cache: its loss and statistics (None until a
    copy crosses it; `RadioMedium._stats` holds the same object)."""

    __slots__ = ("loss", "stats")

    def __init__(self, loss: float, stats: LinkStats | None) -> None:
        self.loss = loss
        self.stats = stats


class RadioMedium:
    """The virtual radio (module docstring)."""

    def __init__(
        self,
        model: LinkModel,
        seed: int = 0,
        phy: Phy = FSK_920,
        collisions: bool = False,
        broadcast: Addr = BROADCAST,
    ) -> None:
        self.model = model
        self.phy = phy
        self.collisions = collisions
        self.broadcast = broadcast
        self._rng = random.Random(seed)
        self._pos: dict[Addr, tuple[float, float]] = {}
        self._grid: dict[tuple[int, int], list[Addr]] = {}
        self._neighbours: dict[Addr, list[tuple[Addr, float]]] = {}
        self._links: dict[Addr, dict[Addr, _Link]] = {}  # the same by neighbour (`_table`)
        self._rx_end: dict[Addr, tuple[float, Delivery | None]] = {}
        self._tx_end: dict[Addr, float] = {}
        self._stats: dict[tuple[Addr, Addr], LinkStats] = {}
        self.counters: Counter[str] = Counter()

    # -- topology ---------------------------------------------------------------------------

    def _cell(self, x: float, y: float) -> tuple[int, int]:
        size = self.model.max_range
        return (math.floor(x / size), math.floor(y / size))

    def place(self, addr: Addr, x: float, y: float) -> None:
        """Put (or move) the node `addr` at (x, y) metres."""
        if addr == self.broadcast:
            raise ValueError(f"{addr} is the broadcast address")
        if addr in self._pos:
            self.remove(addr)
        self._pos[addr] = (float(x), float(y))
        self._grid.setdefault(self._cell(x, y), []).append(addr)
        self._neighbours.clear()
        self._links.clear()

    def remove(self, addr: Addr) -> None:
        pos = self._pos.pop(addr, None)
        if pos is None:
            return
        cell = self._grid[self._cell(*pos)]
        cell.remove(addr)
        self._neighbours.clear()
        self._links.clear()
        self._rx_end.pop(addr, None)
        self._tx_end.pop(addr, None)

    def position(self, addr: Addr) -> tuple[float, float]:
        return self._pos[addr]

    def nodes(self) -> list[Addr]:
        return list(self._pos)

    def neighbours(self, addr: Addr) -> list[tuple[Addr, float]]:
        """(neighbour, loss probability of addr -> neighbour) for every link out of `addr`."""
        cached = self._neighbours.get(addr)
        if cached is not None:
            return cached
        x, y = self._pos[addr]
        cx, cy = self._cell(x, y)
        out: list[tuple[Addr, float]] = []
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for other in self._grid.get((cx + dx, cy + dy), ()):
                    if other == addr:
                        continue
                    ox, oy = self._pos[other]
                    loss = self.model.loss(addr, other, math.hypot(ox - x, oy - y))
                    if loss is not None:
                        out.append((other, loss))
        self._neighbours[addr] = out
        return out

    def stats(self, src: Addr, dst: Addr) -> LinkStats:
        """What crossed the directed link src -> dst so far (zeros if nothing did)."""
        return self._stats.get((src, dst)) or LinkStats()

    def link_stats(self) -> dict[tuple[Addr, Addr], LinkStats]:
        return dict(self._stats)

    # -- the Medium protocol ----------------------------------------------------------------

    def transmit(self, src: Addr, dst: Addr, size: int, now: float) -> Sequence[Delivery]:
        if src not in self._pos:
            self.counters["unplaced"] += 1
            return []
        airtime = self.phy.airtime(size)
        self.counters["airtime_us"] += round(airtime * 1e6)
        start = max(now, self._tx_end.get(src, now))  # one radio: its frames go one after another
        end = self._tx_end[src] = start + airtime
        to_all = dst == self.broadcast
        links = self._links.get(src)
        if links is None:
            links = self._table(src)
        if not to_all and not self.collisions:  # only dst hears it: no neighbour scan
            return self._unicast(src, dst, end - now, links)
        out: list[Delivery] = []
        reached = False
        for other, link in links.items():
            addressed = to_all or other == dst
            delivery: Delivery | None = None
            if addressed:
                reached = True
                stats = self._crosses(src, other, link)
                if stats is not None:
                    delivery = Delivery(other, end - now, to_all, stats)
                    out.append(delivery)
            if self.collisions:
                self._hear(other, start, end, delivery)
        if not reached:
            self.counters["out_of_range"] += 1
        return out

    def _table(self, src: Addr) -> dict[Addr, _Link]:
        """src's links in `neighbours` order with their statistics (kept with the neighbour
        cache: a frame's copies need no lookup in the table of every link)."""
        links = self._links[src] = {
            other: _Link(loss, self._stats.get((src, other)))
            for other, loss in self.neighbours(src)
        }
        return links

    def _unicast(
        self, src: Addr, dst: Addr, delay: float, links: dict[Addr, _Link]
    ) -> list[Delivery]:
        link = links.get(dst)
        if link is None:
            self.counters["out_of_range"] += 1
            return []
        stats = self._crosses(src, dst, link)
        return [] if stats is None else [Delivery(dst, delay, False, stats)]

    def _crosses(self, src: Addr, dst: Addr, link: _Link) -> LinkStats | None:
        """Count one copy sent over src -> dst; None if the link loses it, else the link's
        statistics."""
        stats = link.stats
        if stats is None:
            stats = link.stats = self._stats[(src, dst)] = LinkStats()
        stats.sent += 1
        loss = link.loss
        if loss and self._rng.random() < loss:
            stats.lost += 1
            self.counters["radio_lost"] += 1
            return None
        return stats

    def _hear(self, rx: Addr, start: float, end: float, delivery: Delivery | None) -> None:
        """Register a reception at `rx`; an overlap with the one before spoils both."""
        previous = self._rx_end.get(rx)
        if previous is not None and start < previous[0]:
            if delivery is not None:
                delivery.collided = True
            if previous[1] is not None:
                previous[1].collided = True
            if end <= previous[0]:
                return
        self._rx_end[rx] = (end, delivery)

    def delivered(self, src: Addr, delivery: Delivery) -> None:
        stats = delivery.link or self._stats[(src, delivery.dst)]
        if delivery.collided:
            stats.collided += 1
            self.counters["collided"] += 1
        else:
            stats.delivered += 1


def scatter(n: int, width: float, height: float, rng: random.Random) -> list[tuple[float, float]]:
    """`n` positions uniformly at random in a width x height area (random geometric placement)."""
    return [(rng.uniform(0.0, width), rng.uniform(0.0, height)) for _ in range(n)]
