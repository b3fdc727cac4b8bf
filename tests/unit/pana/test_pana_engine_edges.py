"""PANA engine edge cases: PCI retransmission, give-ups, early termination, address changes."""

from __future__ import annotations

from tests.unit.pana.pana_harness import PAA_ADDR, World, make_paa, make_pac, pac_addr

from amistack.crypto import seeded_random
from amistack.pana.constants import MessageType
from amistack.pana.events import Authenticated, PingCompleted, SessionTerminated
from amistack.pana.message import PanaMessage
from amistack.pana.paa import PaaState, Route
from amistack.pana.pac import PacConfig, PacState
from amistack.pana.timers import Retransmission, RetransmitParams, jitter_source

A1 = pac_addr(1)


def _world(config: PacConfig | None = None) -> World:
    w = World(make_paa())
    w.add(A1, make_pac(config=config))
    return w


def test_pci_retransmitted_until_the_paa_answers() -> None:
    w = _world()
    w.drop = lambda data, src, dst: dst == PAA_ADDR and w.now < 10
    w.pacs[A1].start(0.0)
    w.run_until(30)
    pcis = [d for _, _, d in w.wire if PanaMessage.decode(d).msg_type == MessageType.PCI]
    assert 4 <= len(pcis) <= 6  # ~0, 1, 3, 7, 15 s (RFC 5191 §9: IRT 1 s, doubling)
    assert len(w.of(A1, Authenticated)) == 1


def test_pci_give_up_when_limited() -> None:
    cfg = PacConfig(pci_retransmit=RetransmitParams(irt=1.0, mrt=4.0, mrc=3, mrd=0.0))
    w = _world(cfg)
    w.drop = lambda data, src, dst: True
    w.pacs[A1].start(0.0)
    w.run_until(100)
    assert [e.reason for e in w.of(A1, SessionTerminated)] == ["no answer to PCI"]
    assert w.pacs[A1].state is PacState.CLOSED and w.pacs[A1].get_timer() is None


def test_retransmission_schedule_is_rfc3315() -> None:
    rng = iter([b"\x7f\xff"] * 100)  # RAND ~ 0
    r = Retransmission(RetransmitParams(1.0, 30.0, 10, 0.0), lambda n: next(rng), 0.0)
    deadlines = [r.deadline]
    while r.fire(r.deadline):
        deadlines.append(r.deadline)
    gaps = [round(b - a, 2) for a, b in zip([0.0, *deadlines], deadlines, strict=False)]
    assert gaps[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0] and len(deadlines) == 11


def test_jitter_source_hands_out_the_injected_stream_in_order() -> None:
    # the PAA's timers draw RAND in batches: the same octets, in the same order, as the source
    calls: list[int] = []
    source = seeded_random(7)

    def counted(n: int) -> bytes:
        calls.append(n)
        return source(n)

    jitter = jitter_source(counted, batch=8)
    got = b"".join(jitter(n) for n in (2, 2, 3, 2, 2, 20, 2))
    want = seeded_random(7)
    assert got == want(8)[:7] + want(8)[:4] + want(20) + want(8)[:2]
    assert calls == [8, 8, 20, 8]  # one call per batch (or per larger draw), never per timer


def test_repeated_pci_is_rate_limited_before_the_par_cache() -> None:
    """A flood of one repeated PCI gets at most the source's token budget of PAR(S) back, and
    never more octets than it sent."""
    paa = make_paa()
    pci = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    for i in range(20000):
        paa.receive_datagram(pci, A1, i / 1000)  # 1000 PCIs/s for 20 s
    out = paa.datagrams_to_send(20.0)
    burst, rate = paa.config.pci_burst, paa.config.pci_rate
    assert len(out) <= burst + 20 * rate + 1
    assert sum(len(d) for d, _ in out) <= len(pci) * 20000 // 10
    assert paa.half_open_count == 1 and paa.counters["pci_rate_limited"] >= 19800


def test_duplicate_pci_gets_the_same_par() -> None:
    paa = make_paa()
    pci = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    paa.receive_datagram(pci, A1, 0.0)
    paa.receive_datagram(pci, A1, 0.5)
    (first, _), (second, _) = paa.datagrams_to_send(0.5)
    assert first == second and paa.half_open_count == 1 and paa.counters["pci_duplicate"] == 1
    bad = PanaMessage(MessageType.PCI, 0, 5, 0).encode()
    paa.receive_datagram(bad, pac_addr(2), 0.6)
    assert paa.counters["malformed_pci"] == 1 and paa.half_open_count == 1


def test_pac_terminate_before_authentication() -> None:
    w = _world()
    w.drop = lambda data, src, dst: dst == A1  # the PAR(S) never arrives
    w.pacs[A1].start(0.0)
    w.pump()
    assert w.pacs[A1].state is PacState.INITIAL and w.paa.half_open_count == 1
    w.pacs[A1].terminate(w.now)
    assert w.pacs[A1].state is PacState.CLOSED
    assert len(w.of(A1, SessionTerminated)) == 0  # events are collected on the next pump
    w.run_until(300)
    assert [e.reason for e in w.of(A1, SessionTerminated)] == [
        "terminated locally before authentication"
    ]
    assert not w.of("paa", Authenticated) and w.paa.half_open_count == 0
    assert w.paa.counters["auth_timeout"] + w.paa.counters["retransmit_give_up"] >= 1


def test_pac_ping_give_up_ends_session() -> None:
    w = _world()
    w.pacs[A1].start(0.0)
    w.run_until(5)
    w.drop = lambda data, src, dst: dst == PAA_ADDR
    w.pacs[A1].ping(w.now)
    w.run_until(w.now + 600)
    assert [e.reason for e in w.of(A1, SessionTerminated)] == ["no answer to PNR"]
    assert w.pacs[A1].counters["retransmit"] == 10


def test_commands_refused_in_wrong_state() -> None:
    w = _world()
    pac = w.pacs[A1]
    pac.ping(0.0)
    pac.reauthenticate(0.0)
    assert pac.counters["ping_refused"] == 1 and pac.counters["reauth_refused"] == 1
    w.paa.ping(1234, 0.0)
    w.paa.reauthenticate(1234, 0.0)
    w.paa.terminate(1234, 0.0, "nothing")
    assert w.paa.counters["ping_refused"] == 1 and w.paa.counters["reauth_refused"] == 1
    pac.start(0.0)
    pac.start(0.0)
    assert pac.counters["start_ignored"] == 1


def test_authenticated_pac_may_change_address() -> None:
    w = _world()
    w.pacs[A1].start(0.0)
    w.run_until(5)
    (ev,) = w.of("paa", Authenticated)
    moved = pac_addr(77)
    w.pacs[moved] = w.pacs.pop(A1)
    w.pacs[moved].ping(w.now)
    w.run_until(w.now + 2)
    assert w.of(moved, PingCompleted)
    assert w.paa.route_of(ev.session_id) == Route(moved)
    assert w.paa.counters["route_changed"] == 1
    assert w.paa.state_of(ev.session_id) is PaaState.OPEN


def test_unauthenticated_message_from_other_address_dropped() -> None:
    paa = make_paa()
    paa.receive_datagram(PanaMessage(MessageType.PCI, 0, 0, 0).encode(), A1, 0.0)
    ((par, _),) = paa.datagrams_to_send(0.0)
    pac = make_pac()
    pac.start(0.0)
    pac.datagrams_to_send(0.0)
    pac.receive_datagram(par, PAA_ADDR, 0.0)
    ((pan, _),) = pac.datagrams_to_send(0.0)
    paa.receive_datagram(pan, pac_addr(9), 0.1)  # PAN(S) from somewhere else
    assert paa.counters["address_mismatch"] == 1
    assert paa.datagrams_to_send(0.1) == []
    paa.receive_datagram(pan, A1, 0.2)
    assert len(paa.datagrams_to_send(0.2)) == 1  # the PAR carrying EAP-Request/Identity


def test_pac_gives_up_when_the_paa_goes_quiet_mid_run() -> None:
    from amistack.pana.events import AuthenticationFailed

    w = _world()
    seen_pan_s = []

    def drop(data: bytes, src: tuple[str, int], dst: tuple[str, int]) -> bool:
        if src == A1 and PanaMessage.decode(data).msg_type == MessageType.AUTH:
            seen_pan_s.append(w.now)
        return dst == A1 and bool(seen_pan_s)  # after the PaC's PAN(S), the PAA is unheard

    w.drop = drop
    w.pacs[A1].start(0.0)
    w.run_until(119)
    assert w.pacs[A1].state is PacState.WAIT_PAA and not w.of(A1, AuthenticationFailed)
    w.run_until(125)
    (failed,) = w.of(A1, AuthenticationFailed)
    assert failed.reason == "authentication timed out"
    assert w.pacs[A1].state is PacState.CLOSED and w.pacs[A1].counters["auth_timeout"] == 1
