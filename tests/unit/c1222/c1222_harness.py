"""Test harness: a small TableProvider, UKMF keys from real PANA security contexts, and a
wire between a C12.22 client (head-end) and server (meter)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.contexts import make_ctx

from amistack.addr import Addr
from amistack.c1222.acse import ApTitle
from amistack.c1222.endpoint import C1222Client, C1222Server, EndpointConfig
from amistack.c1222.security import ring_key_lookup, ring_send_key
from amistack.c1222.tables import CurrentRegisters, Identification, Interval, LoadProfile
from amistack.crypto import seeded_random
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.ukmf import PurposeRegistry

METER_TITLE = ApTitle.parse(".0.7.1")
HEADEND_TITLE = ApTitle.parse("2.16.124.113620.1.22.0.1")
METER_ADDR: Addr = ("192.0.2.10", 1153)
HEADEND_ADDR: Addr = ("192.0.2.1", 1153)
T0 = 1_790_000_000.0  # 2026-09-21


@dataclass
class FakeMeter:
    """A deterministic TableProvider (the real one is amistack.meter's model)."""

    clock_offset: float = 0.0
    connected: bool = True
    demand_resets: int = 0
    lp15: int = 96
    calls: list[str] = field(default_factory=list)

    def identification(self) -> Identification:
        return Identification(b"AMST", b"SIM-1", b"00000001")

    def registers(self, now: float) -> CurrentRegisters:
        return CurrentRegisters(
            123_456, 789, 4_000, 50, 3_500, T0, 99_000, self.demand_resets, (1, 2, 3, 4, 5, 6)
        )

    def clock(self, now: float) -> float:
        return now + self.clock_offset

    def set_clock(self, meter_time: float, now: float) -> None:
        self.calls.append("set_clock")
        self.clock_offset = meter_time - now

    def load_profile(self, interval_minutes: int, now: float) -> LoadProfile:
        n = self.lp15 if interval_minutes == 15 else self.lp15 // 2
        end = now - now % (interval_minutes * 60)
        return LoadProfile(interval_minutes, end, tuple(Interval(100 + i, i % 2) for i in range(n)))

    def switch_connected(self, now: float) -> bool:
        return self.connected

    def set_switch(self, connected: bool, now: float) -> bool:
        self.calls.append(f"switch:{connected}")
        self.connected = connected
        return self.connected

    def demand_reset(self, now: float) -> None:
        self.demand_resets += 1


@dataclass
class Pair:
    meter: FakeMeter
    server: C1222Server
    client: C1222Client
    meter_ring: KeyRing
    headend_ring: KeyRing
    wire: list[tuple[str, bytes]] = field(default_factory=list)

    def pump(self, now: float, rounds: int = 4) -> None:
        """Deliver everything both sides queued, a few round trips, recording the wire."""
        for _ in range(rounds):
            moved = False
            for data, addr in self.client.datagrams_to_send(now):
                assert addr == METER_ADDR
                self.wire.append(("c2s", data))
                self.server.receive_datagram(data, HEADEND_ADDR, now)
                moved = True
            for data, addr in self.server.datagrams_to_send(now):
                assert addr == HEADEND_ADDR
                self.wire.append(("s2c", data))
                self.client.receive_datagram(data, METER_ADDR, now)
                moved = True
            if not moved:
                return


def make_pair(
    *, meter_config: dict[str, object] | None = None, client_config: dict[str, object] | None = None
) -> Pair:
    ctx = make_ctx()
    meter_ring = KeyRing(b"meter-1", PurposeRegistry())
    headend_ring = KeyRing(b"meter-1", PurposeRegistry())
    meter_ring.install(ctx, 3600.0, T0)
    headend_ring.install(ctx, 3600.0, T0)
    meter = FakeMeter()
    server = C1222Server(
        EndpointConfig(METER_TITLE, **(meter_config or {})),  # type: ignore[arg-type]
        meter,
        ring_key_lookup(meter_ring),
        ring_send_key(meter_ring),
        seeded_random(1),
    )
    client = C1222Client(
        EndpointConfig(HEADEND_TITLE, **(client_config or {})),  # type: ignore[arg-type]
        ring_key_lookup(headend_ring),
        ring_send_key(headend_ring),
        seeded_random(2),
    )
    return Pair(meter, server, client, meter_ring, headend_ring)
