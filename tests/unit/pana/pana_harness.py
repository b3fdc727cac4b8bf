"""A tiny in-memory world for PANA tests: shuttles datagrams between engines, advances `now`.

Deliberately independent of amistack.sim; real EAP-PSK on both ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from amistack.addr import Addr
from amistack.crypto import seeded_random
from amistack.eap import EapPeer, EapPskPeer, EapPskServer, EapType
from amistack.pana.aaa import AaaAnswer, AaaBackend
from amistack.pana.events import PanaEvent
from amistack.pana.local_backend import LocalEapBackend
from amistack.pana.paa import PaaConfig, PanaAuthAgent
from amistack.pana.pac import PacConfig, PanaClient
from amistack.pana.relay import PanaRelay

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
    now: float = 0.0
    drop: Drop | None = None
    wire: list[tuple[Addr, Addr, bytes]] = field(default_factory=list)  # (src, dst, data)
    events: dict[Any, list[PanaEvent]] = field(default_factory=dict)
    deferred: DeferredBackend | None = None

    def add(self, addr: Addr, pac: PanaClient) -> PanaClient:
        self.pacs[addr] = pac
        return pac

    def _engines(self) -> list[tuple[Addr, Any]]:
        out: list[tuple[Addr, Any]] = [(PAA_ADDR, self.paa)]
        if self.relay is not None:
            out.append((RELAY_ADDR, self.relay))
        out += list(self.pacs.items())
        return out

    def deliver(self, src: Addr, dst: Addr, data: bytes) -> None:
        self.wire.append((src, dst, data))
        if self.drop is not None and self.drop(data, src, dst):
            return
        if dst == PAA_ADDR:
            self.paa.receive_datagram(data, src, self.now)
        elif dst == RELAY_ADDR and self.relay is not None:
            self.relay.receive_datagram(data, src, self.now)
        elif dst in self.pacs:
            self.pacs[dst].receive_datagram(data, src, self.now)

    def pump(self) -> None:
        for _ in range(10000):
            moved = False
            if self.deferred is not None and self.deferred.pending:
                pending, self.deferred.pending = self.deferred.pending, []
                for sid, answer in pending:
                    self.paa.aaa_answer(sid, answer, self.now)
                moved = True
            for addr, engine in self._engines():
                for data, dst in engine.datagrams_to_send(self.now):
                    moved = True
                    self.deliver(addr, dst, data)
            self._collect()
            if not moved:
                return
        raise AssertionError("datagram storm")

    def _collect(self) -> None:
        for addr, engine in self._engines():
            key = "paa" if engine is self.paa else addr
            while (ev := engine.next_event()) is not None:
                self.events.setdefault(key, []).append(ev)

    def run_until(self, t: float) -> None:
        self.pump()
        for _ in range(100000):
            timers = [(tm, e) for _, e in self._engines() if (tm := e.get_timer()) is not None]
            nxt = min((tm for tm, _ in timers), default=None)
            if nxt is None or nxt > t:
                self.now = max(self.now, t)
                return
            self.now = max(self.now, nxt)
            for tm, e in timers:
                if tm <= self.now:
                    e.handle_timer(self.now)
            self.pump()
        raise AssertionError("timer storm")

    def of(self, key: Any, kind: type) -> list[Any]:
        return [e for e in self.events.get(key, []) if isinstance(e, kind)]
