"""A tiny in-memory world for PANA tests: the engines driven by `sim.drive.Host` on a virtual
clock, every datagram delivered at the instant it is sent; real EAP-PSK on both ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from amistack.addr import Addr
from amistack.crypto import seeded_random
from amistack.eap import EapPeer, EapPskPeer, EapPskServer, EapType
from amistack.pana.aaa import AaaAnswer, AaaBackend
from amistack.pana.events import PanaEvent
from amistack.pana.local_backend import LocalEapBackend
from amistack.pana.paa import PaaConfig, PanaAuthAgent
from amistack.pana.pac import PacConfig, PanaClient
from amistack.pana.relay import PanaRelay
from amistack.sim.clock import VirtualClock
from amistack.sim.drive import Host

PAA_ADDR: Addr = ("10.0.0.1", 716)
RELAY_ADDR: Addr = ("10.0.2.1", 716)
PSK = bytes.fromhex("000102030405060708090a0b0c0d0e0f")


def pac_addr(i: int) -> Addr:
    return (f"10.0.1.{i % 250 + 1}", 40000 + i)


def make_pac(
    identity: bytes = b"meter-1",
    psk: bytes = PSK,
    seed: int = 1,
    config: PacConfig | None = None,
    paa: Addr = PAA_ADDR,
) -> PanaClient:
    rng = seeded_random(seed)

    def eap() -> EapPeer:
        return EapPeer(identity, {EapType.PSK: lambda: EapPskPeer(identity, psk, rng)})

    return PanaClient(config or PacConfig(), eap, rng, paa)


def make_backend(
    table: dict[bytes, bytes],
    seed: int = 99,
    lifetime_for: Callable[[bytes], float | None] | None = None,
) -> LocalEapBackend:
    rng = seeded_random(seed)
    if lifetime_for is None:
        return LocalEapBackend(lambda: [lambda: EapPskServer(b"keyserver", table.get, rng)], rng)
    return LocalEapBackend(
        lambda: [lambda: EapPskServer(b"keyserver", table.get, rng)], rng, lifetime_for
    )


def make_paa(
    table: dict[bytes, bytes] | None = None,
    config: PaaConfig | None = None,
    backend: AaaBackend | None = None,
    seed: int = 7,
) -> PanaAuthAgent:
    if backend is None:
        backend = make_backend({b"meter-1": PSK} if table is None else table)
    return PanaAuthAgent(config or PaaConfig(), backend, seeded_random(seed))


class DeferredBackend:
    """Every answer of `inner` arrives later, through PanaAuthAgent.aaa_answer (like RADIUS)."""

    def __init__(self, inner: AaaBackend) -> None:
        self.inner = inner
        self.pending: list[tuple[int, AaaAnswer]] = []

    def begin(self, session_id: int, now: float) -> AaaAnswer | None:
        answer = self.inner.begin(session_id, now)
        if answer is not None:
            self.pending.append((session_id, answer))
        return None

    def process(self, session_id: int, eap: bytes, now: float) -> AaaAnswer | None:
        answer = self.inner.process(session_id, eap, now)
        if answer is not None:
            self.pending.append((session_id, answer))
        return None

    def end(self, session_id: int) -> None:
        self.inner.end(session_id)


Drop = Callable[[bytes, Addr, Addr], bool]


@dataclass
class World:
    paa: PanaAuthAgent
    pacs: dict[Addr, PanaClient] = field(default_factory=dict)
    relay: PanaRelay | None = None
    drop: Drop | None = None
    wire: list[tuple[Addr, Addr, bytes]] = field(default_factory=list)  # (src, dst, data)
    events: dict[Any, list[PanaEvent]] = field(default_factory=dict)
    deferred: DeferredBackend | None = None
    clock: VirtualClock = field(default_factory=VirtualClock)
    hosts: dict[Addr, Host] = field(default_factory=dict)

    @property
    def now(self) -> float:
        return self.clock.now

    @now.setter
    def now(self, t: float) -> None:
        self.run_until(t)

    def add(self, addr: Addr, pac: PanaClient) -> PanaClient:
        self.pacs[addr] = pac
        return pac

    def _engines(self) -> list[tuple[Addr, Any]]:
        out: list[tuple[Addr, Any]] = [(PAA_ADDR, self.paa)]
        if self.relay is not None:
            out.append((RELAY_ADDR, self.relay))
        out += list(self.pacs.items())
        return out

    def _sync(self) -> None:
        """One Host per engine at its current address (a test may move or add engines)."""
        engines = dict(self._engines())
        for addr in [a for a, h in self.hosts.items() if engines.get(a) is not h.engine]:
            self.hosts.pop(addr).detach()
        for addr, engine in engines.items():
            if addr not in self.hosts:
                self.hosts[addr] = Host(addr, engine, self.clock, self._transmit, self._event)

    def _transmit(self, src: Addr, dst: Addr, data: bytes, now: float) -> None:
        self.clock.call_at(now, lambda: self.deliver(src, dst, data))

    def _event(self, addr: Addr, event: object, now: float) -> None:
        key = "paa" if addr == PAA_ADDR else addr
        self.events.setdefault(key, []).append(cast(PanaEvent, event))

    def deliver(self, src: Addr, dst: Addr, data: bytes) -> None:
        self.wire.append((src, dst, data))
        if self.drop is not None and self.drop(data, src, dst):
            return
        if (host := self.hosts.get(dst)) is not None:
            host.receive(data, src)

    def pump(self) -> None:
        """Everything the engines have to say now, answered at this instant."""
        for _ in range(10000):
            self._sync()
            if self.deferred is not None and self.deferred.pending:
                pending, self.deferred.pending = self.deferred.pending, []
                for sid, answer in pending:
                    self.paa.aaa_answer(sid, answer, self.now)
            for host in self.hosts.values():
                host.service()
            self.clock.run_until(self.now)
            if self.deferred is None or not self.deferred.pending:
                return
        raise AssertionError("datagram storm")

    def run_until(self, t: float) -> None:
        self.pump()
        while (when := self.clock.next_time()) is not None and when <= t:
            self.clock.run_until(when)
            self.pump()
        self.clock.run_until(max(t, self.now))

    def of(self, key: Any, kind: type) -> list[Any]:
        return [e for e in self.events.get(key, []) if isinstance(e, kind)]
