"""PaC <-> PAA end to end in memory, with real EAP-PSK on both ends."""

from __future__ import annotations

import pytest
from tests.unit.pana.pana_harness import (
    PAA_ADDR,
    PSK,
    DeferredBackend,
    World,
    make_backend,
    make_paa,
    make_pac,
    pac_addr,
)

from amistack.crypto import PrfHash
from amistack.pana.constants import (
    AvpCode,
    Flag,
    IntegrityAlgorithm,
    MessageType,
    PrfAlgorithm,
    ResultCode,
)
from amistack.pana.events import (
    Authenticated,
    AuthenticationFailed,
    PingCompleted,
    SessionTerminated,
)
from amistack.pana.keys import pana_auth_key
from amistack.pana.message import PanaMessage
from amistack.pana.paa import PaaConfig, PaaState
from amistack.pana.pac import PacConfig, PacState

A1 = pac_addr(1)


def world(
    pac_config: PacConfig | None = None, paa_config: PaaConfig | None = None, **kw: object
) -> World:
    w = World(make_paa(config=paa_config, **kw))  # type: ignore[arg-type]
    w.add(A1, make_pac(config=pac_config))
    return w


def authenticate(w: World, addr=A1) -> tuple[Authenticated, Authenticated]:  # type: ignore[no-untyped-def]
    w.pacs[addr].start(w.now)
    w.run_until(w.now + 5)
    pac_ok = w.of(addr, Authenticated)
    paa_ok = w.of("paa", Authenticated)
    assert pac_ok and paa_ok, (w.events, w.paa.counters, w.pacs[addr].counters)
    return pac_ok[-1], paa_ok[-1]


def frames(w: World) -> list[PanaMessage]:
    return [PanaMessage.decode(d) for _, _, d in w.wire]


def test_success_default_suite_sha256() -> None:
    w = world()
    pac_ev, paa_ev = authenticate(w)
    assert pac_ev.context == paa_ev.context
    assert pac_ev.context.prf is PrfHash.SHA256
    assert pac_ev.context.key_id == 1 and not pac_ev.reauth and not paa_ev.reauth
    assert paa_ev.peer_id == b"meter-1" and pac_ev.peer_id is None
    assert paa_ev.addr == A1 and pac_ev.addr == PAA_ADDR
    pac = w.pacs[A1]
    assert pac.state is PacState.OPEN
    assert pac.auth_key == pana_auth_key(pac_ev.context) and len(pac.auth_key) == 32
    sid = pac_ev.session_id
    assert w.paa.state_of(sid) is PaaState.OPEN
    assert w.paa.sessions_for_peer(b"meter-1") == [sid]
    assert pac_ev.lifetime == paa_ev.lifetime == 3600.0
    msgs = frames(w)
    # PCI, PAR(S) offering both suites, PAN(S) echoing one pair
    assert msgs[0].msg_type == MessageType.PCI
    assert sorted(a.as_u32() for a in msgs[1].find_all(AvpCode.PRF_ALGORITHM)) == [2, 5]
    assert sorted(a.as_u32() for a in msgs[1].find_all(AvpCode.INTEGRITY_ALGORITHM)) == [7, 12]
    assert (
        msgs[2].u32(AvpCode.PRF_ALGORITHM) == 5 and msgs[2].u32(AvpCode.INTEGRITY_ALGORITHM) == 12
    )
    # nonces in the first PAR/PAN after the S exchange; C-flag PAR/PAN carry a 16-octet AUTH
    assert msgs[3].find(AvpCode.NONCE) is not None and msgs[4].find(AvpCode.NONCE) is not None
    complete = [m for m in msgs if m.has(Flag.C)]
    assert len(complete) == 2
    for m in complete:
        auth = m.octets(AvpCode.AUTH)
        assert auth is not None and len(auth) == 16
    assert complete[0].u32(AvpCode.KEY_ID) == 1 == complete[1].u32(AvpCode.KEY_ID)
    assert complete[0].u32(AvpCode.SESSION_LIFETIME) == 3600
    assert w.paa.half_open_count == 0


def test_success_sha1_suite() -> None:
    cfg = PacConfig(
        prf_preference=(PrfAlgorithm.PRF_HMAC_SHA1,),
        integrity_preference=(IntegrityAlgorithm.AUTH_HMAC_SHA1_160,),
    )
    w = world(pac_config=cfg)
    pac_ev, paa_ev = authenticate(w)
    assert pac_ev.context == paa_ev.context and pac_ev.context.prf is PrfHash.SHA1
    assert len(pana_auth_key(pac_ev.context)) == 20
    last = frames(w)[-1]
    assert last.has(Flag.C) and len(last.octets(AvpCode.AUTH) or b"") == 20


def test_pac_falls_back_to_what_paa_offers() -> None:
    paa_cfg = PaaConfig(
        prf_algorithms=(PrfAlgorithm.PRF_HMAC_SHA1,),
        integrity_algorithms=(IntegrityAlgorithm.AUTH_HMAC_SHA1_160,),
    )
    w = world(paa_config=paa_cfg)
    pac_ev, _ = authenticate(w)
    assert pac_ev.context.prf is PrfHash.SHA1


def test_no_common_algorithm_never_answers() -> None:
    cfg = PacConfig(prf_preference=(PrfAlgorithm.PRF_HMAC_SHA1,))
    paa_cfg = PaaConfig(prf_algorithms=(PrfAlgorithm.PRF_HMAC_SHA2_256,))
    w = world(pac_config=cfg, paa_config=paa_cfg)
    w.pacs[A1].start(0.0)
    w.run_until(3)
    assert w.pacs[A1].counters["no_common_algorithm"] >= 1
    assert not w.of(A1, Authenticated)


def _failure(w: World) -> tuple[AuthenticationFailed, AuthenticationFailed]:
    w.pacs[A1].start(0.0)
    w.run_until(5)
    assert not w.of(A1, Authenticated) and not w.of("paa", Authenticated)
    pf, af = w.of(A1, AuthenticationFailed), w.of("paa", AuthenticationFailed)
    assert len(pf) == 1 and len(af) == 1, w.events
    assert w.pacs[A1].state is PacState.CLOSED
    assert w.paa.state_of(af[0].session_id) is None  # nothing cached to re-send: forgotten
    return pf[0], af[0]


def test_wrong_psk_fails_both_ends() -> None:
    w = World(make_paa({b"meter-1": bytes(16)}))
    w.add(A1, make_pac())
    pf, af = _failure(w)
    assert pf.result_code == af.result_code == ResultCode.PANA_AUTHENTICATION_REJECTED
    assert pf.session_id == af.session_id
    assert af.peer_id == b"meter-1"  # the claimed identity, for the audit trail
    assert pf.reason == "refused by the PAA (PANA_AUTHENTICATION_REJECTED)"


def test_unknown_identity_fails() -> None:
    w = World(make_paa({b"other": PSK}))
    w.add(A1, make_pac())
    pf, af = _failure(w)
    assert pf.result_code == ResultCode.PANA_AUTHENTICATION_REJECTED
    assert w.paa.sessions_for_peer(b"meter-1") == []
    assert af.peer_id == b"meter-1" and af.reason == "unknown_peer"


def test_authorization_rejected_when_lifetime_zero() -> None:
    backend = make_backend({b"meter-1": PSK}, lifetime_for=lambda peer: 0.0)
    w = World(make_paa(backend=backend))
    w.add(A1, make_pac())
    pf, af = _failure(w)
    assert pf.result_code == af.result_code == ResultCode.PANA_AUTHORIZATION_REJECTED


def test_per_peer_lifetime_from_backend() -> None:
    backend = make_backend({b"meter-1": PSK}, lifetime_for=lambda peer: 120.0)
    w = World(make_paa(backend=backend))
    w.add(A1, make_pac())
    pac_ev, paa_ev = authenticate(w)
    assert pac_ev.lifetime == paa_ev.lifetime == 120.0


def test_pac_reauth_new_key_id_and_key_same_session() -> None:
    w = world()
    first, _ = authenticate(w)
    w.now = 10.0
    w.pacs[A1].reauthenticate(w.now)
    w.run_until(15)
    pac_evs, paa_evs = w.of(A1, Authenticated), w.of("paa", Authenticated)
    assert len(pac_evs) == 2 and len(paa_evs) == 2
    second = pac_evs[1]
    assert second.reauth and paa_evs[1].reauth
    assert second.session_id == first.session_id
    assert second.context.key_id == 2
    assert second.context == paa_evs[1].context
    assert pana_auth_key(second.context) != pana_auth_key(first.context)
    assert second.context.msk != first.context.msk
    assert second.context.pac_nonce != first.context.pac_nonce
    assert second.context.i_par == first.context.i_par  # I_PAR/I_PAN are the session's first
    notif = [m for m in frames(w) if m.msg_type == MessageType.NOTIFICATION]
    assert notif[0].has(Flag.A) and notif[0].is_request and notif[1].has(Flag.A)
    # the session keeps working under the new key
    w.pacs[A1].ping(w.now)
    w.run_until(w.now + 1)
    assert w.of(A1, PingCompleted)


def test_automatic_reauth_at_fraction_of_lifetime() -> None:
    backend = make_backend({b"meter-1": PSK}, lifetime_for=lambda peer: 100.0)
    w = World(make_paa(backend=backend))
    w.add(A1, make_pac(config=PacConfig(reauth_fraction=0.5)))
    authenticate(w)
    w.run_until(49)
    assert len(w.of(A1, Authenticated)) == 1
    w.run_until(55)
    evs = w.of(A1, Authenticated)
    assert len(evs) == 2 and evs[1].reauth and evs[1].context.key_id == 2
    w.run_until(400)  # keeps re-authenticating, never expires
    assert len(w.of(A1, Authenticated)) >= 8
    assert not w.of(A1, SessionTerminated) and not w.of("paa", SessionTerminated)


def test_paa_initiated_reauth() -> None:
    w = world()
    first, _ = authenticate(w)
    w.paa.reauthenticate(first.session_id, w.now)
    w.run_until(w.now + 5)
    evs = w.of(A1, Authenticated)
    assert len(evs) == 2 and evs[1].reauth and evs[1].context.key_id == 2
    assert w.of("paa", Authenticated)[1].context == evs[1].context
    assert not any(m.msg_type == MessageType.NOTIFICATION for m in frames(w))


def test_lifetime_expiry_both_ends() -> None:
    backend = make_backend({b"meter-1": PSK}, lifetime_for=lambda peer: 30.0)
    w = World(make_paa(backend=backend))
    w.add(A1, make_pac(config=PacConfig(reauth_fraction=2.0)))  # never re-authenticates
    pac_ev, _ = authenticate(w)
    w.run_until(29)
    assert not w.of(A1, SessionTerminated)
    w.run_until(40)
    pt, at = w.of(A1, SessionTerminated), w.of("paa", SessionTerminated)
    assert [e.reason for e in pt] == ["session lifetime expired"]
    assert [e.reason for e in at] == ["session lifetime expired"]
    assert w.pacs[A1].state is PacState.CLOSED and w.pacs[A1].auth_key is None
    assert w.paa.sessions_for_peer(b"meter-1") == []
    w.run_until(200)
    assert w.paa.state_of(pac_ev.session_id) is None  # purged after the linger time


def test_ping_both_directions() -> None:
    w = world()
    ev, _ = authenticate(w)
    w.pacs[A1].ping(w.now)
    w.run_until(w.now + 1)
    assert w.of(A1, PingCompleted) == [PingCompleted(ev.session_id)]
    w.paa.ping(ev.session_id, w.now)
    w.run_until(w.now + 1)
    assert w.of("paa", PingCompleted) == [PingCompleted(ev.session_id)]
    assert w.pacs[A1].state is PacState.OPEN and w.paa.state_of(ev.session_id) is PaaState.OPEN


def test_termination_from_pac() -> None:
    w = world()
    ev, _ = authenticate(w)
    w.pacs[A1].terminate(w.now)
    w.run_until(w.now + 1)
    assert [e.reason for e in w.of(A1, SessionTerminated)] == ["terminated by PaC"]
    assert len(w.of("paa", SessionTerminated)) == 1
    assert w.paa.sessions_for_peer(b"meter-1") == []
    assert w.paa.state_of(ev.session_id) is PaaState.CLOSED


def test_termination_from_paa_revocation() -> None:
    table = {b"meter-1": PSK}
    w = World(make_paa(table))
    w.add(A1, make_pac())
    authenticate(w)
    del table[b"meter-1"]
    for sid in w.paa.sessions_for_peer(b"meter-1"):
        w.paa.terminate(sid, w.now, "revoked")
    w.run_until(w.now + 1)
    assert [e.reason for e in w.of("paa", SessionTerminated)] == ["revoked"]
    pac_term = w.of(A1, SessionTerminated)
    assert len(pac_term) == 1 and "terminated by PAA" in pac_term[0].reason
    assert w.pacs[A1].auth_key is None
    # and it cannot come back
    w.pacs[A1].start(w.now)
    w.run_until(w.now + 5)
    assert len(w.of(A1, Authenticated)) == 1 and len(w.of(A1, AuthenticationFailed)) == 1


def test_reauth_after_revocation_fails_and_ends_session() -> None:
    table = {b"meter-1": PSK}
    w = World(make_paa(table))
    w.add(A1, make_pac())
    authenticate(w)
    del table[b"meter-1"]
    w.pacs[A1].reauthenticate(w.now)
    w.run_until(w.now + 5)
    assert len(w.of(A1, AuthenticationFailed)) == 1 and len(w.of("paa", AuthenticationFailed)) == 1
    assert [e.reason for e in w.of(A1, SessionTerminated)] == ["re-authentication failed"]
    assert w.paa.sessions_for_peer(b"meter-1") == []


def _drop_nth(predicate, n: int = 1):  # type: ignore[no-untyped-def]
    seen = [0]

    def drop(data: bytes, src, dst) -> bool:  # type: ignore[no-untyped-def]
        msg = PanaMessage.decode(data)
        if predicate(msg):
            seen[0] += 1
            return seen[0] <= n
        return False

    return drop


@pytest.mark.parametrize(
    "what",
    ["PCI", "PAR(S)", "PAN(S)", "PAR", "PAN", "PAR(C)", "PAN(C)"],
)
def test_recovers_from_one_dropped_datagram(what: str) -> None:
    def pred(m: PanaMessage) -> bool:
        if what == "PCI":
            return m.msg_type == MessageType.PCI
        if m.msg_type != MessageType.AUTH:
            return False
        base = ("PAR" if m.is_request else "PAN") + (
            "(S)" if m.has(Flag.S) else "(C)" if m.has(Flag.C) else ""
        )
        return base == what

    w = world()
    w.drop = _drop_nth(pred)
    w.pacs[A1].start(0.0)
    w.run_until(20)
    assert len(w.of(A1, Authenticated)) == 1 and len(w.of("paa", Authenticated)) == 1
    assert w.of(A1, Authenticated)[0].context == w.of("paa", Authenticated)[0].context
    retransmits = w.pacs[A1].counters["retransmit"] + w.paa.counters["retransmit"]
    assert retransmits + w.paa.counters["pci_duplicate"] >= 1
    if what in ("PAN", "PAN(C)"):  # the PaC re-sent its cached answer to the repeated PAR
        assert w.pacs[A1].counters["duplicate_request"] == 1


def test_retransmission_gives_up_and_terminates() -> None:
    w = world()
    ev, _ = authenticate(w)
    w.drop = lambda data, src, dst: dst == A1  # the PaC is gone
    w.paa.ping(ev.session_id, w.now)
    w.run_until(w.now + 1000)
    assert w.paa.counters["retransmit"] == 10  # REQ_MRC
    assert [e.reason for e in w.of("paa", SessionTerminated)] == ["no answer from PaC"]


def test_replayed_and_forged_messages_dropped_and_counted() -> None:
    w = world()
    ev, _ = authenticate(w)
    pac = w.pacs[A1]
    key_before = pac.auth_key
    old = [d for s, dst, d in w.wire if s == PAA_ADDR]
    # replay every PAA->PaC frame of the authentication: all stale
    before = pac.counters.copy()
    for data in old[:-1]:
        pac.receive_datagram(data, PAA_ADDR, w.now)
    dup_last = old[-1]
    pac.receive_datagram(dup_last, PAA_ADDR, w.now)  # the last PAR(C): cached PAN re-sent
    assert pac.counters["bad_seq"] - before["bad_seq"] >= 4
    assert pac.counters["duplicate_request"] - before["duplicate_request"] == 1
    assert pac.state is PacState.OPEN and pac.auth_key == key_before
    assert len(w.of(A1, Authenticated)) == 1
    # forged PNR with the right session and next sequence number but a bad AUTH
    pac.datagrams_to_send(w.now)
    last_par = PanaMessage.decode(dup_last)
    forged = PanaMessage(
        MessageType.NOTIFICATION, Flag.R | Flag.P, ev.session_id, (last_par.seq + 1) % 2**32
    )
    from amistack.pana.auth import sign

    raw = sign(forged, IntegrityAlgorithm.AUTH_HMAC_SHA2_256_128, bytes(32))
    pac.receive_datagram(raw, PAA_ADDR, w.now)
    assert pac.counters["bad_auth"] == 1 and pac.datagrams_to_send(w.now) == []
    # forged PTR without AUTH at all
    ptr = PanaMessage(MessageType.TERMINATION, Flag.R, ev.session_id, (last_par.seq + 1) % 2**32)
    pac.receive_datagram(ptr.encode(), PAA_ADDR, w.now)
    assert pac.counters["bad_auth"] == 2 and pac.state is PacState.OPEN
    # PAA side: replay the PaC's frames, and a forged PNR
    paa_before = w.paa.counters.copy()
    for s, _dst, data in list(w.wire):
        if s == A1:
            w.paa.receive_datagram(data, A1, w.now)
    assert w.paa.state_of(ev.session_id) is PaaState.OPEN
    assert sum(w.paa.counters.values()) > sum(paa_before.values())
    assert len(w.of("paa", Authenticated)) == 1
    w.paa.datagrams_to_send(w.now)
    pnr = PanaMessage(MessageType.NOTIFICATION, Flag.R | Flag.A, ev.session_id, 12345)
    w.paa.receive_datagram(
        sign(pnr, IntegrityAlgorithm.AUTH_HMAC_SHA2_256_128, bytes(32)), A1, w.now
    )
    assert w.paa.datagrams_to_send(w.now) == []
    assert w.paa.counters["bad_auth"] >= 1
    # tampering with one octet of a genuine PaC request
    pac.ping(w.now)
    ((data, _),) = pac.datagrams_to_send(w.now)
    bad = bytearray(data)
    bad[-1] ^= 1
    w.paa.receive_datagram(bytes(bad), A1, w.now)
    assert w.paa.datagrams_to_send(w.now) == []
    w.paa.receive_datagram(data, A1, w.now)  # the genuine one still works
    assert len(w.paa.datagrams_to_send(w.now)) == 1
    assert w.paa.counters["internal_error"] == 0 and pac.counters["internal_error"] == 0


def test_wrong_session_and_unexpected_types() -> None:
    w = world()
    ev, _ = authenticate(w)
    pac = w.pacs[A1]
    other = PanaMessage(MessageType.NOTIFICATION, Flag.R | Flag.P, ev.session_id ^ 1, 1).encode()
    pac.receive_datagram(other, PAA_ADDR, w.now)
    assert pac.counters["wrong_session"] == 1
    w.paa.receive_datagram(other, A1, w.now)
    assert w.paa.counters["unknown_session"] == 1
    pac.receive_datagram(PanaMessage(MessageType.PCI, 0, 0, 0).encode(), PAA_ADDR, w.now)
    pac.receive_datagram(PanaMessage(99, Flag.R, ev.session_id, 1).encode(), PAA_ADDR, w.now)
    assert pac.counters["unexpected_type"] == 2
    pac.receive_datagram(b"\x00garbage", PAA_ADDR, w.now)
    w.paa.receive_datagram(b"\x00garbage", A1, w.now)
    assert pac.counters["decode_error"] == 1 and w.paa.counters["decode_error"] == 1
    assert pac.state is PacState.OPEN and w.paa.state_of(ev.session_id) is PaaState.OPEN


def test_pci_flood_from_one_address_does_not_block_others() -> None:
    paa_cfg = PaaConfig(max_half_open=50, per_source_limit=4, pci_rate=2.0, pci_burst=5.0)
    w = world(paa_config=paa_cfg)
    pci = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    for i in range(2000):
        w.paa.receive_datagram(pci, ("6.6.6.6", 1000 + i), w.now)
    assert w.paa.half_open_count <= 4
    assert w.paa.counters["pci_rate_limited"] + w.paa.counters["pci_source_limit"] >= 1996
    w.paa.datagrams_to_send(w.now)
    authenticate(w)
    assert w.paa.counters["half_open_evicted"] == 0


def test_half_open_bound_evicts_oldest() -> None:
    paa_cfg = PaaConfig(max_half_open=20, per_source_limit=2)
    w = world(paa_config=paa_cfg)
    pci = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    for i in range(500):
        w.paa.receive_datagram(pci, (f"6.6.{i // 250}.{i % 250}", 1000), w.now)
    assert w.paa.half_open_count == 20
    assert w.paa.counters["half_open_evicted"] == 480
    assert len(w.paa._sessions) == 20  # evicted sessions leave nothing behind
    assert len(w.paa._by_route) == 20
    w.paa.datagrams_to_send(w.now)
    authenticate(w)
    # half-open sessions die on their own
    w.run_until(w.now + 60)
    assert w.paa.half_open_count == 0


def test_async_aaa_backend() -> None:
    deferred = DeferredBackend(make_backend({b"meter-1": PSK}))
    w = World(make_paa(backend=deferred))
    w.deferred = deferred
    w.add(A1, make_pac())
    pac_ev, paa_ev = authenticate(w)
    assert pac_ev.context == paa_ev.context
    w.paa.aaa_answer(pac_ev.session_id, deferred.inner.begin(1, 0.0), w.now)  # type: ignore[arg-type]
    assert w.paa.counters["unexpected_aaa_answer"] == 1


def test_many_sessions_one_engine() -> None:
    w = World(make_paa({f"meter-{i}".encode(): PSK for i in range(60)}))
    for i in range(60):
        w.add(pac_addr(i), make_pac(f"meter-{i}".encode(), seed=100 + i)).start(0.0)
    w.run_until(10)
    ok = w.of("paa", Authenticated)
    assert len(ok) == 60 and len({e.session_id for e in ok}) == 60
    assert {e.peer_id for e in ok} == {f"meter-{i}".encode() for i in range(60)}
    for e in ok:
        assert w.of(e.addr, Authenticated)[0].context == e.context
    assert w.paa.session_count == 60


def test_backend_lifetime_is_clamped_to_unsigned32_seconds() -> None:
    backend = make_backend({b"meter-1": PSK}, lifetime_for=lambda peer: float("inf"))
    w = World(make_paa(backend=backend))
    w.add(A1, make_pac())
    pac_ev, paa_ev = authenticate(w)
    assert pac_ev.lifetime == paa_ev.lifetime == float(0xFFFFFFFF)
    backend = make_backend({b"meter-1": PSK}, lifetime_for=lambda peer: 0.4)
    w = World(make_paa(backend=backend))
    w.add(A1, make_pac())
    pac_ev, paa_ev = authenticate(w)
    assert pac_ev.lifetime == paa_ev.lifetime == 1.0
