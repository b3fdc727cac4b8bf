"""The meter's network-access engine on the virtual clock against a real PAA with EAP-PSK:
keys installed and rotated on the ring, refusals and lost sessions retried after a jittered
exponential back-off, a clean stop, and the same seed giving the same run."""

from __future__ import annotations

import hashlib
from typing import TypeVar

import pytest

from amistack.addr import Addr
from amistack.crypto import RandomSource, seeded_random
from amistack.eap import EapPeer, EapPskPeer, EapPskServer, EapType
from amistack.keymgmt.events import KeysExpired, KeysInstalled, KeysRetired
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.ukmf import C1222, PurposeRegistry
from amistack.meter.access import AccessConfig, MeterAccess
from amistack.meter.events import (
    AccessGranted,
    AccessLost,
    AccessRefused,
    KeysChanged,
    RetryScheduled,
)
from amistack.pana.local_backend import LocalEapBackend
from amistack.pana.paa import PaaConfig, PanaAuthAgent
from amistack.pana.pac import PacConfig, PanaClient
from amistack.sim import LinkConfig, VirtualNetwork

PAA: Addr = ("2001:db8::1", 716)
T = TypeVar("T")


def psk(i: int) -> bytes:
    return hashlib.sha256(b"access" + i.to_bytes(4, "big")).digest()[:16]


def meter_addr(i: int) -> Addr:
    return (f"2001:db8:1::{i + 1:x}", 716)


class Bed:
    """A PAA (with its own PSK table) and `n` meters, each a MeterAccess engine."""

    def __init__(
        self,
        n: int,
        *,
        lifetime: float = 3600.0,
        config: AccessConfig | None = None,
        seed: int = 1,
        wrong_psk: frozenset[int] = frozenset(),
    ) -> None:
        self.net = VirtualNetwork(seed=seed, default_link=LinkConfig(latency=0.01))
        rng = seeded_random(seed)
        self.table = {f"meter-{i}".encode(): psk(i) for i in range(n)}
        backend = LocalEapBackend(
            lambda: [lambda: EapPskServer(b"keyserver", self.table.get, rng)],
            rng,
            lifetime_for=lambda peer: lifetime,
        )
        self.paa = PanaAuthAgent(PaaConfig(session_lifetime=lifetime), backend, rng)
        self.net.add_node(PAA, self.paa)
        self.meters: list[MeterAccess] = []
        self.log: list[tuple[float, Addr, object]] = []
        for i in range(n):
            ident = f"meter-{i}".encode()
            key = bytes(16) if i in wrong_psk else psk(i)
            m_rng = seeded_random(seed * 1000 + i)

            def new_pac(
                ident: bytes = ident, key: bytes = key, m_rng: RandomSource = m_rng
            ) -> PanaClient:
                def eap() -> EapPeer:
                    return EapPeer(ident, {EapType.PSK: lambda: EapPskPeer(ident, key, m_rng)})

                return PanaClient(PacConfig(), eap, m_rng, PAA)

            ring = KeyRing(ident, PurposeRegistry())
            access = MeterAccess(ident.decode(), new_pac, ring, m_rng, config)
            self.net.add_node(meter_addr(i), access)
            self.net.call_at(0.0, meter_addr(i), access.start)
            self.meters.append(access)
        self.net.on_event.append(lambda addr, ev, now: self.log.append((now, addr, ev)))

    def events(self, i: int, kind: type[T]) -> list[tuple[float, T]]:
        return [(t, e) for t, a, e in self.log if a == meter_addr(i) and isinstance(e, kind)]


def test_a_meter_authenticates_and_its_ring_holds_the_generation() -> None:
    bed = Bed(1)
    bed.net.run_until(10.0)
    granted = bed.events(0, AccessGranted)
    assert len(granted) == 1
    _, ev = granted[0]
    assert not ev.reauth
    assert any(isinstance(k, KeysInstalled) for k in ev.key_events)
    key = bed.meters[0].keyring.current(C1222, bed.net.now)
    assert key is not None and key.key_id.session_id == ev.session_id
    assert bed.meters[0].sessions == 1 and bed.meters[0].authentications == 1


def test_reauthentication_rotates_keys_and_old_generations_expire_on_the_ring_timer() -> None:
    bed = Bed(1, lifetime=100.0)
    bed.net.run_until(400.0)
    granted = [e for _, e in bed.events(0, AccessGranted)]
    assert len(granted) >= 3
    assert [g.reauth for g in granted] == [False] + [True] * (len(granted) - 1)
    assert len({g.key_id for g in granted}) == len(granted)
    expired = [k for _, e in bed.events(0, KeysChanged) for k in e.key_events]
    assert expired and all(isinstance(k, KeysExpired) for k in expired)
    assert bed.events(0, AccessLost) == [] and bed.meters[0].sessions == 1


def test_a_refused_meter_backs_off_exponentially_with_jitter_up_to_the_cap() -> None:
    config = AccessConfig(retry_backoff=(2.0, 16.0), jitter=0.5)
    bed = Bed(1, config=config, wrong_psk=frozenset({0}))
    bed.net.run_until(200.0)
    refused = bed.events(0, AccessRefused)
    pauses = [e.pause for _, e in bed.events(0, RetryScheduled)]
    assert len(refused) >= 6 and len(pauses) == len(refused)
    caps = [2.0, 4.0, 8.0, 16.0, 16.0, 16.0]
    for pause, cap in zip(pauses, caps, strict=False):
        assert cap / 2 <= pause <= cap
    assert len(set(pauses)) == len(pauses)  # drawn, not fixed
    assert bed.events(0, AccessGranted) == []
    assert bed.meters[0].keyring.current(C1222, bed.net.now) is None
    # each retry is a new session, started after its pause
    for (t_fail, _), pause, (t_next, _) in zip(refused, pauses, refused[1:], strict=False):
        assert t_next >= t_fail + pause


def test_a_success_resets_the_backoff() -> None:
    config = AccessConfig(retry_backoff=(1.0, 64.0), jitter=0.0)
    bed = Bed(1, config=config, lifetime=50.0)
    ident = b"meter-0"
    bed.table[ident] = bytes(16)  # refused at first: the PSK is not yet the meter's
    bed.net.run_until(30.0)  # refused at ~0, ~1, ~3, ~7, ~15 s
    bed.table[ident] = psk(0)
    bed.net.run_until(80.0)
    assert bed.events(0, AccessGranted)
    # the PAA now ends the session: the next pause starts from the first step again
    sid = bed.paa.sessions_for_peer(ident)[0]
    bed.net.call_at(81.0, PAA, lambda now: bed.paa.terminate(sid, now, "revoked"))
    bed.net.run_until(95.0)
    lost = bed.events(0, AccessLost)
    assert len(lost) == 1 and lost[0][1].by_peer
    assert any(isinstance(k, KeysRetired) for k in lost[0][1].key_events)
    pauses = [e.pause for _, e in bed.events(0, RetryScheduled)]
    assert pauses[-1] == 1.0 and max(pauses) >= 16.0
    regained = [t for t, _ in bed.events(0, AccessGranted) if t > lost[0][0]]
    assert regained and regained[0] - lost[0][0] == pytest.approx(1.0, abs=0.2)


def test_stop_ends_the_session_and_schedules_nothing() -> None:
    bed = Bed(1)
    bed.net.run_until(5.0)
    bed.net.call_at(6.0, meter_addr(0), bed.meters[0].stop)
    bed.net.run_until(60.0)
    lost = bed.events(0, AccessLost)
    assert len(lost) == 1 and not lost[0][1].by_peer
    assert bed.events(0, RetryScheduled) == []
    assert bed.paa.session_count == 0 and bed.meters[0].pac is None
    bed.net.run_until(10_000.0)
    assert bed.meters[0].get_timer() is None
    assert bed.meters[0].keyring.current(C1222, bed.net.now) is None


def test_a_fleet_refused_together_does_not_retry_together() -> None:
    config = AccessConfig(retry_backoff=(4.0, 60.0), jitter=0.5)
    bed = Bed(40, config=config, wrong_psk=frozenset(range(40)))
    bed.net.run_until(3.0)
    pauses = [bed.events(i, RetryScheduled)[0][1].pause for i in range(40)]
    assert min(pauses) >= 2.0 and max(pauses) <= 4.0
    assert max(pauses) - min(pauses) > 1.0  # spread over the jitter window


def test_same_seed_same_run() -> None:
    def run(seed: int) -> list[tuple[float, Addr, str]]:
        bed = Bed(5, lifetime=60.0, seed=seed, wrong_psk=frozenset({2}))
        bed.net.run_until(300.0)
        return [(t, a, type(e).__name__) for t, a, e in bed.log]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="retry_backoff"):
        AccessConfig(retry_backoff=(5.0, 1.0))
    with pytest.raises(ValueError, match="jitter"):
        AccessConfig(jitter=1.5)
