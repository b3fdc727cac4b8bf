"""PANA timers on the virtual clock: session lifetime and re-authentication, retransmission on
loss, PAA-initiated re-authentication, expiry without re-authentication, and a PCI flood from
one address while a thousand meters authenticate. Simulated hours take milliseconds."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

import pytest

from amistack.addr import Addr
from amistack.crypto import RandomSource, seeded_random
from amistack.eap import EapPeer, EapPskPeer, EapPskServer, EapType
from amistack.pana.constants import MessageType
from amistack.pana.events import Authenticated, SessionTerminated
from amistack.pana.local_backend import LocalEapBackend
from amistack.pana.message import PanaMessage
from amistack.pana.paa import PaaConfig, PaaState, PanaAuthAgent
from amistack.pana.pac import PacConfig, PanaClient
from amistack.sim import LinkConfig, VirtualNetwork

PAA: Addr = ("2001:db8::1", 716)


def device(i: int) -> bytes:
    return f"meter-{i:04d}".encode()


def psk(i: int) -> bytes:
    return hashlib.sha256(b"scenario" + i.to_bytes(4, "big")).digest()[:16]


def pac_addr(i: int) -> Addr:
    return (f"2001:db8:1::{i + 1:x}", 716)


@dataclass
class Fleet:
    net: VirtualNetwork
    paa: PanaAuthAgent
    pacs: list[PanaClient]
    log: list[tuple[float, Addr, object]] = field(default_factory=list)

    def events(self, addr: Addr, kind: type[object]) -> list[tuple[float, object]]:
        return [(t, e) for t, a, e in self.log if a == addr and isinstance(e, kind)]

    def auths(self, addr: Addr) -> list[tuple[float, Authenticated]]:
        return [(t, e) for t, a, e in self.log if a == addr and isinstance(e, Authenticated)]


def build_fleet(
    n: int,
    *,
    lifetime: float = 3600.0,
    pac_config: PacConfig | None = None,
    paa_config: PaaConfig | None = None,
    link: LinkConfig | None = None,
    seed: int = 1,
    start_spread: float = 0.0,
) -> Fleet:
    net = VirtualNetwork(seed=seed, default_link=link or LinkConfig(latency=0.01), capture=100_000)
    rng = seeded_random(seed)
    table = {device(i): psk(i) for i in range(n)}
    backend = LocalEapBackend(
        lambda: [lambda: EapPskServer(b"keyserver", table.get, rng)],
        rng,
        lifetime_for=lambda peer: lifetime,
    )
    paa = PanaAuthAgent(paa_config or PaaConfig(session_lifetime=lifetime), backend, rng)
    net.add_node(PAA, paa)
    pacs = []
    for i in range(n):
        pac_rng = seeded_random(seed * 100_000 + i)

        def eap_factory(i: int = i, pac_rng: RandomSource = pac_rng) -> EapPeer:
            ident, key = device(i), psk(i)
            return EapPeer(ident, {EapType.PSK: lambda: EapPskPeer(ident, key, pac_rng)})

        pac = PanaClient(pac_config or PacConfig(), eap_factory, pac_rng, PAA)
        net.add_node(pac_addr(i), pac)
        net.call_at(start_spread * i / max(n, 1), pac_addr(i), pac.start)
        pacs.append(pac)
    fleet = Fleet(net, paa, pacs)
    net.on_event.append(lambda addr, ev, now: fleet.log.append((now, addr, ev)))
    return fleet


def test_pac_reauthenticates_before_expiry_with_a_new_key_id() -> None:
    fleet = build_fleet(1, lifetime=100.0, pac_config=PacConfig(reauth_fraction=0.75))
    fleet.net.run_until(420.0)
    auths = fleet.auths(pac_addr(0))
    assert len(auths) >= 5  # the first one plus a re-authentication every ~75 s
    assert [e.reauth for _, e in auths] == [False] + [True] * (len(auths) - 1)
    key_ids = [e.context.key_id for _, e in auths]
    assert key_ids == sorted(set(key_ids)), f"key ids must be new each time: {key_ids}"
    assert len({e.session_id for _, e in auths}) == 1  # the same session all along
    for (t0, a0), (t1, _) in itertools.pairwise(auths):
        assert t1 < t0 + a0.lifetime, "re-authenticated only after the lifetime ended"
        assert t1 - t0 == pytest.approx(75.0, abs=2.0)
    assert fleet.events(pac_addr(0), SessionTerminated) == []
    # both ends hold the same fresh SA after every run
    paa_auths = fleet.auths(PAA)
    assert [e.context.key_id for _, e in paa_auths] == key_ids
    assert [e.context.msk for _, e in paa_auths] == [e.context.msk for _, e in auths]
    assert len({e.context.msk for _, e in auths}) == len(auths)
    assert paa_auths[0][1].peer_id == device(0)


def test_lost_messages_are_retransmitted() -> None:
    fleet = build_fleet(1)
    dropped: list[int] = []

    def drop_first_two_from_paa(t: float, src: Addr, dst: Addr, data: bytes) -> bool:
        if src == PAA and len(dropped) < 2:
            dropped.append(PanaMessage.decode(data).msg_type)
            return False
        return True

    fleet.net.filters.append(drop_first_two_from_paa)
    fleet.net.run_until(60.0)
    auths = fleet.auths(pac_addr(0))
    assert len(auths) == 1
    assert dropped == [MessageType.AUTH, MessageType.AUTH]
    assert fleet.pacs[0].counters["retransmit"] >= 1  # the PCI went again
    assert auths[0][0] > 1.0  # only after at least one retransmission timeout


def test_lost_first_pan_is_recovered() -> None:
    """A lost PAN(S): the PaC waits without a timer, so the PAA must retransmit PAR(S)."""
    fleet = build_fleet(1)
    lost: list[PanaMessage] = []

    def drop_first_pan(t: float, src: Addr, dst: Addr, data: bytes) -> bool:
        msg = PanaMessage.decode(data)
        if src == pac_addr(0) and msg.msg_type == MessageType.AUTH and not lost:
            lost.append(msg)
            return False
        return True

    fleet.net.filters.append(drop_first_pan)
    fleet.net.run_until(300.0)
    assert len(lost) == 1
    assert len(fleet.auths(pac_addr(0))) == 1


def test_random_loss_fleet_still_authenticates() -> None:
    fleet = build_fleet(40, link=LinkConfig(latency=0.02, jitter=0.01, loss=0.15), seed=5)
    fleet.net.run_until(300.0)
    assert fleet.net.counters["lost"] > 0
    done = [i for i in range(40) if fleet.auths(pac_addr(i))]
    assert len(done) == 40
    retransmits = (
        sum(p.counters["retransmit"] for p in fleet.pacs) + fleet.paa.counters["retransmit"]
    )
    assert retransmits > 0


def test_a_lossy_run_is_reproducible() -> None:
    def run(seed: int) -> list[tuple[float, Addr, Addr, bytes]]:
        fleet = build_fleet(10, link=LinkConfig(latency=0.01, jitter=0.02, loss=0.1), seed=seed)
        fleet.net.run_until(60.0)
        return fleet.net.capture

    first = run(3)
    assert first == run(3)
    assert first != run(4)


def test_paa_initiated_reauthentication() -> None:
    fleet = build_fleet(1)
    fleet.net.run_until(10.0)
    ((_, first),) = fleet.auths(pac_addr(0))
    sid = first.session_id
    fleet.net.call_at(20.0, PAA, lambda now: fleet.paa.reauthenticate(sid, now))
    fleet.net.run_until(40.0)
    auths = fleet.auths(pac_addr(0))
    assert [(e.reauth, e.context.key_id) for _, e in auths] == [(False, 1), (True, 2)]
    assert auths[1][0] >= 20.0
    assert [e.context.key_id for _, e in fleet.auths(PAA)] == [1, 2]
    assert auths[1][1].context.msk != first.context.msk


def test_lifetime_ends_without_reauthentication() -> None:
    """The meter goes silent after authenticating: its re-authentication never arrives, and both
    ends drop the session when the lifetime is over."""
    fleet = build_fleet(1, lifetime=50.0)
    fleet.net.run_until(5.0)
    assert len(fleet.auths(pac_addr(0))) == 1
    fleet.net.filters.append(lambda t, src, dst, data: src != pac_addr(0))
    fleet.net.run_until(600.0)
    paa_end = fleet.events(PAA, SessionTerminated)
    pac_end = fleet.events(pac_addr(0), SessionTerminated)
    assert len(paa_end) == 1 and len(pac_end) == 1
    grace = PaaConfig().lifetime_grace  # the PAA waits that long for a late re-authentication
    assert 50.0 + grace <= paa_end[0][0] <= 50.0 + grace + 5.0
    assert 50.0 <= pac_end[0][0] <= 50.0 + 5.0
    assert len(fleet.auths(pac_addr(0))) == 1
    assert fleet.pacs[0].context is None
    sid = fleet.auths(PAA)[0][1].session_id
    # the PAA's PTR went unanswered; it gave up, closed the session and forgot its keys
    assert fleet.paa.state_of(sid) in (None, PaaState.CLOSED)
    assert fleet.paa.context(sid) is None
    assert fleet.paa.sessions_for_peer(device(0)) == []


@pytest.mark.slow
def test_thousand_meters_authenticate_through_a_pci_flood() -> None:
    n = 1000
    fleet = build_fleet(n, start_spread=20.0, seed=9, link=LinkConfig(latency=0.005))
    pci = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    flooder = "2001:db8:bad::1"
    for k in range(20_000):  # 1000 PCIs per second for 20 s, one host, ever-new source ports
        fleet.net.inject((flooder, 1024 + k), PAA, pci, when=k / 1000.0)
    fleet.net.run_until(120.0)
    failed = [i for i in range(n) if not fleet.auths(pac_addr(i))]
    assert failed == []
    counters = fleet.paa.counters
    assert counters["pci_rate_limited"] + counters["pci_source_limit"] > 19_000
    # the flooder got at most its per-source share of half-open sessions (PAR(S) answers)
    answered = {dst for _, src, dst, _ in fleet.net.capture if src == PAA and dst[0] == flooder}
    assert 0 < len(answered) <= PaaConfig().per_source_limit
