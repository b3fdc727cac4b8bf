"""KeyServer end to end on a virtual clock: real PaCs, the real PAA, EAP-PSK, SQLite, key rings."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar, cast

import pytest

from amistack.addr import Addr
from amistack.crypto import seeded_random
from amistack.eap import (
    EapPacket,
    EapPeer,
    EapPskPeer,
    EapType,
    ServerMethod,
    ServerMethodStep,
)
from amistack.keymgmt.events import (
    KeysExpired,
    KeysInstalled,
    KeysRetired,
    KeysShortened,
    KeysSuperseded,
)
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.server import KeyServer, KeyServerEvent
from amistack.keymgmt.store import AuditKind, CredentialStore, UnknownDevice
from amistack.keymgmt.ukmf import C1222, LINK, PANA_AUTH, KeyId, PurposeRegistry
from amistack.pana.events import (
    Authenticated,
    AuthenticationFailed,
    PanaEvent,
    SessionTerminated,
)
from amistack.pana.paa import PaaConfig
from amistack.pana.pac import PacConfig, PanaClient
from amistack.sim.clock import VirtualClock
from amistack.sim.drive import Host

E = TypeVar("E")
PAA: Addr = ("192.0.2.1", 716)
LIFETIME = 600.0
PSKS = {
    b"meter-1": bytes.fromhex("11112222333344445555666677778888"),
    b"meter-2": bytes.fromhex("99990000aaaabbbbccccddddeeeeffff"),
}


class Meter:
    """A PaC with its own key ring, as a meter holds it."""

    def __init__(self, name: bytes, psk: bytes, port: int, seed: int) -> None:
        self.name = name
        self.addr: Addr = ("198.51.100.7", port)
        rng = seeded_random(seed)
        self.pac = PanaClient(
            PacConfig(),
            lambda: EapPeer(name, {EapType.PSK: lambda: EapPskPeer(name, psk, rng)}),
            rng,
            PAA,
        )
        self.ring = KeyRing(name, PurposeRegistry(), overlap=30.0)
        self.events: list[PanaEvent] = []

    def on_event(self, ev: PanaEvent, now: float) -> None:
        self.events.append(ev)
        if isinstance(ev, Authenticated):
            self.ring.install(ev.context, ev.lifetime, now)


class Net:
    """The key server and the meters driven by `sim.drive.Host` on a virtual clock; a datagram
    waits in flight until the next `step` (one hop), so a test can act between hops."""

    def __init__(self, server: KeyServer, meters: list[Meter], now: float = 0.0) -> None:
        self.server, self.meters = server, meters
        self.clock = VirtualClock(now)
        self.events: list[KeyServerEvent] = []
        self.hosts: dict[Addr, Host] = {}
        self.in_flight: list[tuple[Addr, Addr, bytes]] = []

    @property
    def now(self) -> float:
        return self.clock.now

    def _sync(self) -> None:
        """A Host for the server and each meter's PaC (a test may add meters or swap a PaC)."""
        engines = {PAA: self.server, **{m.addr: m.pac for m in self.meters}}
        for addr, engine in engines.items():
            host = self.hosts.get(addr)
            if host is None or host.engine is not engine:
                if host is not None:
                    host.detach()
                self.hosts[addr] = Host(addr, engine, self.clock, self._send, self._event)
            self.hosts[addr].service()

    def _send(self, src: Addr, dst: Addr, data: bytes, now: float) -> None:
        self.in_flight.append((src, dst, data))

    def _event(self, addr: Addr, event: object, now: float) -> None:
        if addr == PAA:
            self.events.append(cast(KeyServerEvent, event))
            return
        for m in self.meters:
            if m.addr == addr:
                m.on_event(cast(PanaEvent, event), now)

    def _flush(self) -> None:
        for _ in range(1000):
            if not self.step():
                return
        raise AssertionError("datagram storm")

    def step(self) -> bool:
        """One hop: every datagram in flight is delivered (what it provokes waits for the next)."""
        self._sync()
        moved, self.in_flight = self.in_flight, []
        for src, dst, data in moved:
            if (host := self.hosts.get(dst)) is not None:
                host.receive(data, src)
        return bool(moved)

    def run_until(self, t_end: float) -> None:
        self._flush()
        while (when := self.clock.next_time()) is not None and when <= t_end:
            self.clock.run_until(when)
            self._flush()
        self.clock.run_until(max(t_end, self.now))

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def store(tmp_path: Path, kek: FileKek) -> Iterator[CredentialStore]:
    s = CredentialStore(tmp_path / "ks.db", kek)
    for name, psk in PSKS.items():
        s.enroll(name, psk, now=0.0)
    yield s
    s.close()


def make_server(store: CredentialStore, now: float = 0.0) -> KeyServer:
    return KeyServer(
        store,
        rng=seeded_random(1),
        paa_config=PaaConfig(session_lifetime=LIFETIME),
        overlap=30.0,
        now=now,
    )


def start(net: Net, *meters: Meter) -> None:
    for m in meters:
        if m not in net.meters:
            net.meters.append(m)
        m.pac.start(net.now)
    net.run_until(net.now + 5.0)


def test_authentication_installs_the_same_keys_on_both_ends(store: CredentialStore) -> None:
    server = make_server(store)
    meter = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    net = Net(server, [])
    start(net, meter)
    auth = net.of(Authenticated)
    assert len(auth) == 1 and auth[0].peer_id == b"meter-1"
    installed = net.of(KeysInstalled)
    assert len(installed) == 1
    # the PANA event comes first, then the key events it caused
    assert net.events.index(auth[0]) < net.events.index(installed[0])
    mine = meter.ring.current(C1222, net.now)
    assert mine is not None
    theirs = server.key_for(mine.key_id, "c1222", net.now)
    assert theirs is not None and theirs.key == mine.key and theirs.peer_id == b"meter-1"
    link, my_link = server.current_key(b"meter-1", LINK, net.now), meter.ring.current(LINK, net.now)
    assert link is not None and my_link is not None and link.key == my_link.key
    assert installed[0].not_after - installed[0].not_before == LIFETIME
    assert theirs.not_after == installed[0].not_after
    # the PANA_AUTH key of the UKMF is the one PANA really uses, and it is never exported
    my_auth = meter.ring.current(PANA_AUTH, net.now)
    assert my_auth is not None and my_auth.key == meter.pac.auth_key
    assert server.key_for(mine.key_id, PANA_AUTH, net.now) is None
    assert server.counters["key_export_refused"] == 1
    # ... nor kept by the key server's rings or store (the PAA holds it for the session)
    assert server.directory.lookup(mine.key_id, PANA_AUTH, net.now) is None
    assert {k.purpose for _, k in store.load_keys(PurposeRegistry(), net.now)} == {C1222, LINK}
    assert mine.key.hex() not in repr(theirs) and repr(mine.key) not in repr(theirs)
    assert [e.kind for e in store.audit_log(device_id=b"meter-1")] == [
        "auth-success",  # committed with the keys before the PANA success (PAR C) was sent
        "enroll",
    ]


def test_reauthentication_rotates_with_overlap(store: CredentialStore) -> None:
    server = make_server(store)
    meter = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    net = Net(server, [])
    start(net, meter)
    first = meter.ring.current(C1222, net.now)
    assert first is not None
    first_id, first_key = first.key_id, first.key
    net.run_until(LIFETIME * 0.75 + 10.0)  # the PaC re-authenticates at 75 % of the lifetime
    auths = net.of(Authenticated)
    assert [a.reauth for a in auths] == [False, True]
    second = meter.ring.current(C1222, net.now)
    assert second is not None and second.key_id != first_id
    assert second.key_id.session_id == first_id.session_id
    sup = net.of(KeysSuperseded)
    assert len(sup) == 1 and sup[0].key_id == first_id
    rekey_at = store.audit_log(kind=AuditKind.REKEY)[0].at
    # the previous generation decrypts during the overlap only, and is gone after it
    old = server.key_for(first_id, C1222, rekey_at + 29.0)
    assert old is not None and old.key == first_key
    cur = server.current_key(b"meter-1", C1222, rekey_at + 1)
    assert cur is not None and cur.key_id == second.key_id
    assert server.key_for(first_id, C1222, rekey_at + 30.0) is None
    assert net.of(KeysExpired) == []
    net.run_until(rekey_at + 30.0)  # the key server's timer drops the old generation
    expired = net.of(KeysExpired)
    assert [e.key_id for e in expired] == [first_id]
    rows = store._db.execute("SELECT DISTINCT generation FROM key_generations").fetchall()
    assert rows == [(second.key_id.generation,)]


def test_unknown_and_wrong_psk_fail_and_are_audited(store: CredentialStore) -> None:
    server = make_server(store)
    stranger = Meter(b"meter-x", PSKS[b"meter-1"], 40001, seed=3)
    impostor = Meter(b"meter-2", PSKS[b"meter-1"], 40002, seed=4)
    net = Net(server, [])
    start(net, stranger, impostor)
    assert len(net.of(AuthenticationFailed)) == 2
    assert net.of(KeysInstalled) == [] and len(server.directory) == 0
    assert len(store.audit_log(kind=AuditKind.AUTH_FAILURE)) == 2


class _NamedDevicesOnly(ServerMethod):
    """A method offered before EAP-PSK to named devices only (as EAP-TLS is to its enrolled
    ones): with it the identity picks the method, so the Identity exchange must stay."""

    method_type = EapType.MD5_CHALLENGE

    def accepts(self, identity: bytes | None) -> bool:
        return identity == b"a device enrolled for the other method"

    def initial_request(self, identity: bytes | None, identifier: int) -> bytes:
        raise AssertionError("never offered to these meters")

    def process(self, response: EapPacket, next_identifier: int) -> ServerMethodStep:
        raise AssertionError("never offered to these meters")


@pytest.mark.parametrize(
    ("skip_identity", "extra", "datagrams"),
    [(False, (), 11), (True, (), 9), (True, (_NamedDevicesOnly,), 11)],
    ids=["identity", "skipped", "kept-for-method-choice"],
)
def test_skip_identity_saves_a_round_trip_and_keeps_every_check(
    store: CredentialStore,
    skip_identity: bool,
    extra: tuple[type[ServerMethod], ...],
    datagrams: int,
) -> None:
    """EAP-PSK alone: the first PAR carries EAP-PSK's first message (RFC 3748 §2), 9 datagrams
    instead of 11; an unknown or wrong-PSK meter still fails, and the keys still agree. With
    another method offered by identity the Identity exchange stays."""
    server = KeyServer(
        store,
        rng=seeded_random(1),
        paa_config=PaaConfig(session_lifetime=LIFETIME),
        now=0.0,
        skip_identity=skip_identity,
        extra_methods=extra,
    )
    meter = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    net = Net(server, [])
    sources: list[Addr] = []
    forward = net._send

    def counting(src: Addr, dst: Addr, data: bytes, now: float) -> None:
        sources.append(src)
        forward(src, dst, data, now)

    net._send = counting  # type: ignore[method-assign]
    start(net, meter)
    assert (sources.count(PAA), len(sources) - sources.count(PAA)) == (
        datagrams // 2,
        datagrams - datagrams // 2,
    )
    mine = meter.ring.current(C1222, net.now)
    assert mine is not None
    theirs = server.key_for(mine.key_id, "c1222", net.now)
    assert theirs is not None and theirs.key == mine.key
    stranger = Meter(b"meter-x", PSKS[b"meter-1"], 40010, seed=3)
    impostor = Meter(b"meter-2", PSKS[b"meter-1"], 40020, seed=4)
    start(net, stranger, impostor)
    assert len(net.of(AuthenticationFailed)) == 2
    assert len(store.audit_log(kind=AuditKind.AUTH_FAILURE)) == 2


def test_revocation_ends_sessions_cuts_keys_and_refuses_reauth(store: CredentialStore) -> None:
    server = make_server(store)
    lost = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    other = Meter(b"meter-2", PSKS[b"meter-2"], 40002, seed=5)
    net = Net(server, [])
    start(net, lost, other)
    cur = lost.ring.current(C1222, net.now)
    assert cur is not None
    kid = cur.key_id
    now = net.now
    result = server.revoke(b"meter-1", now, shorten_to=now + 10.0, reason="handheld lost")
    assert result.newly_revoked and len(result.sessions_terminated) == 1
    assert result.generations_shortened == (kid,) and result.keys_not_after == now + 10.0
    net.run_until(now + 1.0)
    assert len(net.of(SessionTerminated)) >= 1
    assert net.of(KeysShortened)[0].not_after == now + 10.0
    assert store.get_psk(b"meter-1") is None
    assert server.key_for(kid, C1222, now + 9.0) is not None  # in-flight traffic drains
    net.run_until(now + 10.0)
    assert server.key_for(kid, C1222, now + 10.0) is None
    left = store._db.execute(
        "SELECT count(*) FROM key_generations WHERE peer_id = ?", (b"meter-1",)
    )
    assert left.fetchone()[0] == 0
    # the device tries again: EAP-PSK fails, no keys
    lost.pac = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=9).pac
    start(net, lost)
    assert len(net.of(AuthenticationFailed)) == 1
    assert server.current_key(b"meter-1", C1222, net.now) is None
    # the other meter is untouched
    assert server.current_key(b"meter-2", C1222, net.now) is not None
    kinds = [e.kind for e in store.audit_log(device_id=b"meter-1")]
    assert {"revoke", "keys-shortened", "session-end", "auth-success"} <= set(kinds)
    assert server.revoke(b"meter-1", net.now).newly_revoked is False
    with pytest.raises(UnknownDevice):
        server.revoke(b"ghost", net.now)


def test_a_revoked_device_trying_again_is_audited_as_revoked(store: CredentialStore) -> None:
    """EAP-PSK only knows there is no PSK ("unknown_peer"); the audit trail names the device
    and says it was revoked."""
    server = make_server(store)
    store.revoke(b"meter-1", "stolen", now=0.0)
    meter = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    net = Net(server, [])
    start(net, meter)
    failures = [e for e in store.audit_log(device_id=b"meter-1") if e.kind == "auth-failure"]
    assert len(failures) == 1
    assert "device revoked (stolen)" in failures[0].detail
    assert "unknown_peer" not in failures[0].detail
    # an identity nobody enrolled stays "unknown_peer"
    ghost = Meter(b"ghost-9", PSKS[b"meter-1"], 40009, seed=3)
    start(net, ghost)
    (entry,) = [e for e in store.audit_log(device_id=b"ghost-9") if e.kind == "auth-failure"]
    assert "unknown_peer" in entry.detail


def test_revocation_without_grace_wipes_keys_now(store: CredentialStore) -> None:
    server = make_server(store)
    meter = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    net = Net(server, [])
    start(net, meter)
    key = server.directory.current(b"meter-1", C1222, net.now)
    assert key is not None
    server.revoke(b"meter-1", net.now)
    assert key.wiped and server.directory.get(b"meter-1") is None


def test_restart_keeps_credentials_and_keys(tmp_path: Path, store: CredentialStore) -> None:
    server = make_server(store)
    meter = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    net = Net(server, [])
    start(net, meter)
    mine = meter.ring.current(C1222, net.now)
    assert mine is not None
    store.close()
    kek = FileKek.load(tmp_path / "kek.key", os.urandom)
    with CredentialStore(tmp_path / "ks.db", kek) as reopened:
        restarted = make_server(reopened, now=net.now)
        got = restarted.key_for(mine.key_id, C1222, net.now + 1)
        assert got is not None and got.key == mine.key and got.peer_id == b"meter-1"
        assert restarted.get_timer() is not None


def test_per_device_session_lifetime(store: CredentialStore) -> None:
    store.set_session_lifetime(b"meter-2", 120.0, now=0.0)
    server = make_server(store)
    meter = Meter(b"meter-2", PSKS[b"meter-2"], 40002, seed=5)
    net = Net(server, [])
    start(net, meter)
    auth = net.of(Authenticated)[0]
    assert auth.lifetime == 120.0
    inst = net.of(KeysInstalled)[0]
    assert inst.not_after - inst.not_before == 120.0


def test_key_id_lookup_for_unknown_key(store: CredentialStore) -> None:
    server = make_server(store)
    assert server.key_for(KeyId(1, 1), C1222, 0.0) is None
    assert server.counters["key_lookup_miss"] == 1


def test_revoked_while_authenticating_gets_no_keys(
    store: CredentialStore, tmp_path: Path, kek: FileKek
) -> None:
    def rounds_to_success() -> int:
        probe = CredentialStore(tmp_path / "probe.db", kek)
        probe.enroll(b"meter-2", PSKS[b"meter-2"], now=0.0)
        net = Net(make_server(probe), [Meter(b"meter-2", PSKS[b"meter-2"], 40002, seed=5)])
        net.meters[0].pac.start(0.0)
        for n in range(1, 50):
            net.step()
            if net.of(Authenticated):
                return n
        raise AssertionError("never authenticated")

    n = rounds_to_success()
    server = make_server(store)
    net = Net(server, [Meter(b"meter-2", PSKS[b"meter-2"], 40002, seed=5)])
    net.meters[0].pac.start(0.0)
    for _ in range(n - 3):
        net.step()
    # the PSK was already looked up; now an operator revokes from another process (the CLI),
    # before the EAP success whose keys the commit checks
    assert server.counters["auth-success"] == 0
    store.revoke(b"meter-2", "stolen", now=0.0)
    net.run_until(5.0)
    assert server.counters["authenticated_refused"] == 1
    assert net.of(Authenticated) == [] and net.of(KeysInstalled) == []
    assert server.directory.get(b"meter-2") is None
    assert len(net.of(AuthenticationFailed)) == 1  # its held success answered as a failure
    failures = store.audit_log(kind=AuditKind.AUTH_FAILURE, device_id=b"meter-2")
    assert len(failures) == 1 and "revoked" in failures[0].detail


def test_session_end_retires_its_keys(store: CredentialStore) -> None:
    server = make_server(store)
    meter = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    net = Net(server, [])
    start(net, meter)
    kid = server.directory.current(b"meter-1", C1222, net.now).key_id  # type: ignore[union-attr]
    meter.pac.terminate(net.now)  # the meter leaves (PTR)
    net.run_until(net.now + 1.0)
    ended = net.of(SessionTerminated)
    assert len(ended) == 1
    retired = net.of(KeysRetired)
    assert [r.key_id for r in retired] == [kid]
    t_end = retired[0].not_after
    assert server.current_key(b"meter-1", C1222, net.now) is None  # nothing to send with
    assert server.key_for(kid, C1222, t_end - 0.5) is not None  # in-flight replies decrypt
    net.run_until(t_end)
    assert server.key_for(kid, C1222, t_end) is None
    assert net.of(KeysExpired)[-1].key_id == kid
    assert store._db.execute("SELECT count(*) FROM key_generations").fetchone()[0] == 0
    assert "session-end" in [e.kind for e in store.audit_log(device_id=b"meter-1")]


def test_hostile_identity_is_refused_and_audited(store: CredentialStore) -> None:
    server = make_server(store)
    name = b"x" * 300  # longer than any enrolled id
    net = Net(server, [])
    start(net, Meter(name, PSKS[b"meter-1"], 40005, seed=8))
    assert len(net.of(AuthenticationFailed)) == 1 and net.of(KeysInstalled) == []
    entries = store.audit_log(kind=AuditKind.AUTH_FAILURE)
    assert len(entries) == 1 and server.counters["audit_errors"] == 0


def test_revocation_by_another_process_reaches_the_running_server(
    tmp_path: Path, store: CredentialStore, kek: FileKek
) -> None:
    """`amistack keys revoke` opens its own store handle; the running server applies it."""
    server = make_server(store)
    lost = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    other = Meter(b"meter-2", PSKS[b"meter-2"], 40002, seed=5)
    net = Net(server, [])
    start(net, lost, other)
    kid = server.directory.current(b"meter-1", C1222, net.now)
    assert kid is not None
    assert server.sync_revocations(net.now) == []  # nothing journalled yet
    assert b"meter-1" in store._psk_keys  # its EAP-PSK keys, derived once, are cached
    now = net.now
    with CredentialStore(tmp_path / "ks.db", kek) as cli:
        assert cli.revoke(b"meter-1", "stolen", now, keys_until=now + 5.0)
    assert store.get_psk_keys_and_lifetime(b"meter-1")[0] is None  # refused at once, no sync
    (result,) = server.sync_revocations(now)
    assert b"meter-1" not in store._psk_keys and b"meter-2" in store._psk_keys
    assert not result.newly_revoked  # the CLI already revoked it in the store
    assert len(result.sessions_terminated) == 1 and result.keys_not_after == now + 5.0
    net.run_until(now + 1.0)
    assert server.key_for(kid.key_id, C1222, now + 4.0) is not None
    assert server.key_for(kid.key_id, C1222, now + 5.0) is None
    assert server.current_key(b"meter-2", C1222, net.now) is not None
    assert server.sync_revocations(net.now) == []  # applied once only


# -- group commit (docs/key-hierarchy.md, "Durability") ------------------------------------------


def batched_server(store: CredentialStore, interval: float = 0.01) -> KeyServer:
    return KeyServer(
        store,
        rng=seeded_random(1),
        paa_config=PaaConfig(session_lifetime=LIFETIME),
        overlap=30.0,
        commit_interval=interval,
        now=0.0,
    )


STORED = 2  # keys per generation a key server stores: c1222 and link (never PANA_AUTH_KEY)


def kinds(store: CredentialStore, device: bytes = b"meter-1") -> list[str]:
    return [e.kind for e in reversed(store.audit_log(device_id=device))]


def key_rows(store: CredentialStore) -> int:
    return len(store.load_keys(PurposeRegistry(), 0.0))


def step_without_commit(net: Net, rounds: int = 20) -> None:
    """Move datagrams, never running a timer (so nothing commits unless forced)."""
    for _ in range(rounds):
        if not net.step():
            return


def held_success(store: CredentialStore) -> tuple[KeyServer, Net, Meter]:
    """meter-1 authenticating up to its EAP success, held (nothing committed: 60 s interval)."""
    server = batched_server(store, interval=60.0)
    meter = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    net = Net(server, [meter])
    meter.pac.start(0.0)
    step_without_commit(net)
    return server, net, meter


def test_pana_success_waits_for_its_audit_entry_and_keys_for_theirs(
    store: CredentialStore,
) -> None:
    server = batched_server(store)
    meter = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    net = Net(server, [meter])
    meter.pac.start(0.0)
    step_without_commit(net)
    # EAP succeeded, but the PANA success (PAR with C flag) is held: the meter knows nothing
    assert not [e for e in meter.events if isinstance(e, Authenticated)]
    assert kinds(store) == ["enroll"] and key_rows(store) == 0  # nothing is on disk yet
    assert server.get_timer() == pytest.approx(0.01)
    server.handle_timer(0.01)  # the commit timer: keys and their entry, then the success
    assert kinds(store) == ["enroll", "auth-success"] and key_rows(store) == STORED
    assert not net.of(Authenticated)  # announced when the PaC confirms (PAN with C flag)
    step_without_commit(net)
    assert len([e for e in meter.events if isinstance(e, Authenticated)]) == 1
    mine = meter.ring.current(C1222, 0.0)
    assert mine is not None
    assert len(net.of(Authenticated)) == 1 and len(net.of(KeysInstalled)) == 1
    assert server.counters["commits"] == 1  # nothing more to write for the PAN with C
    theirs = server.key_for(mine.key_id, C1222, 0.01)
    assert theirs is not None and theirs.key == mine.key
    assert server.counters["commits_for_export"] == 0


def test_asking_for_a_key_in_the_batch_commits_it_first(store: CredentialStore) -> None:
    server, net, meter = held_success(store)  # EAP succeeded: its keys wait in the batch
    ring = server.directory.get(b"meter-1")
    assert ring is not None and key_rows(store) == 0
    theirs = server.key_for(ring.key_ids()[-1], C1222, 0.0)  # e.g. an eager head-end
    assert theirs is not None
    assert key_rows(store) == STORED and kinds(store)[-1] == "auth-success"
    assert server.counters["commits_for_export"] == 1
    assert not [e for e in meter.events if isinstance(e, Authenticated)]  # (still held)
    server.flush(0.0, force=True)
    step_without_commit(net)
    mine = meter.ring.current(C1222, 0.0)
    assert mine is not None and mine.key == theirs.key
    current = server.current_key(b"meter-1", LINK, 0.0)
    assert current is not None and server.counters["commits_for_export"] == 1


def test_many_authentications_share_one_commit(store: CredentialStore) -> None:
    server = batched_server(store)
    meters = [
        Meter(name, psk, 40000 + i, seed=10 + i) for i, (name, psk) in enumerate(PSKS.items())
    ]
    net = Net(server, [])
    start(net, *meters)
    assert len(net.of(Authenticated)) == 2
    # per meter: keys + auth-success before the success; both meters ran in lockstep
    assert server.counters["commits"] == 1
    assert key_rows(store) == 2 * STORED


def test_crash_before_the_commit_leaves_no_half_session(tmp_path: Path, kek: FileKek) -> None:
    store = CredentialStore(tmp_path / "ks.db", kek)
    store.enroll(b"meter-1", PSKS[b"meter-1"], now=0.0)
    server = batched_server(store)
    meter = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    net = Net(server, [meter])
    meter.pac.start(0.0)
    step_without_commit(net)  # EAP succeeded: keys pending, the PANA success held
    assert server.directory.get(b"meter-1") is not None
    store.close()  # "kill -9": the batch is never committed
    assert not [e for e in meter.events if isinstance(e, Authenticated)]  # nor the success sent
    again = CredentialStore(tmp_path / "ks.db", kek)
    assert key_rows(again) == 0
    assert kinds(again) == ["enroll"]
    assert KeyServer(again, rng=seeded_random(3), now=1.0).directory.get(b"meter-1") is None
    again.close()


def test_a_failed_commit_ends_the_session_and_drops_its_keys(
    tmp_path: Path, store: CredentialStore
) -> None:
    server = batched_server(store, interval=0.0)
    with sqlite3.connect(tmp_path / "ks.db") as other:  # e.g. a full disk, seen as an error
        other.execute(
            "CREATE TRIGGER no_keys BEFORE INSERT ON key_generations "
            "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    meter = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    net = Net(server, [])
    start(net, meter)
    assert server.counters["commit_errors"] == 1
    assert not net.of(Authenticated) and not net.of(KeysInstalled)
    assert server.directory.get(b"meter-1") is None
    assert len(net.of(AuthenticationFailed)) == 1
    # the meter, never told "success", is told its run ended
    assert not [e for e in meter.events if isinstance(e, Authenticated)]
    assert [e for e in meter.events if isinstance(e, SessionTerminated | AuthenticationFailed)]


def test_revocation_commits_pending_writes_durably(store: CredentialStore) -> None:
    server, net, _meter = held_success(store)
    server.flush(0.0, force=True)
    step_without_commit(net)
    server._audit(AuditKind.SESSION_END, b"meter-1", "a pending entry", 0.5)
    assert kinds(store) == ["enroll", "auth-success"]
    server.revoke(b"meter-1", 1.0)
    assert kinds(store) == ["enroll", "auth-success", "session-end", "revoke", "keys-shortened"]
    assert not server._batch
    assert server.current_key(b"meter-1", C1222, 1.0) is None


def test_revocation_while_the_success_is_held_never_sends_it(store: CredentialStore) -> None:
    server, net, meter = held_success(store)  # EAP succeeded, the PANA success is held
    server.revoke(b"meter-1", 0.5)
    net.run_until(10.0)
    assert not [e for e in meter.events if isinstance(e, Authenticated)]
    assert server.directory.get(b"meter-1") is None and not net.of(Authenticated)
    assert kinds(store)[:2] == ["enroll", "revoke"]  # its issued keys were withdrawn unsaid
    assert "auth-success" not in kinds(store) and key_rows(store) == 0
    assert server.counters["successes_unconfirmed"] == 0  # never sent: nobody holds it


def test_revoked_by_another_process_before_the_commit_gets_no_keys(
    tmp_path: Path, kek: FileKek, store: CredentialStore
) -> None:
    # The enrolment check of a group-committed session runs in the commit's own transaction
    # (one query per batch, not one per authentication): a revocation that lands after the
    # EAP success but before the commit refuses the session, and only it - before its PANA
    # success is sent.
    server = batched_server(store, interval=60.0)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    meters = [
        Meter(name, psk, 40000 + i, seed=10 + i) for i, (name, psk) in enumerate(PSKS.items())
    ]
    net = Net(server, meters)
    for m in meters:
        m.pac.start(0.0)
    step_without_commit(net)  # both EAP successes held: their keys wait in the batch
    assert server.directory.get(b"meter-2") is not None and key_rows(store) == 0
    other = CredentialStore(tmp_path / "ks.db", kek)  # `amistack keys revoke` elsewhere
    other.revoke(b"meter-2", "stolen", now=0.5)
    other.close()
    assert server.flush(1.0, force=True)
    net.run_until(5.0)  # the PTR to meter-2 and its answer
    server.flush(5.0, force=True)  # (the session's end is audited in a batch too)
    net.step()
    assert [e.peer_id for e in net.of(Authenticated)] == [b"meter-1"]
    assert [e.peer_id for e in net.of(KeysInstalled)] == [b"meter-1"]
    assert server.directory.get(b"meter-2") is None and server.directory.get(b"meter-1")
    assert key_rows(store) == STORED  # meter-1's generation only
    assert kinds(store, b"meter-2")[:3] == ["enroll", "revoke", "auth-failure"]
    assert not [e for e in meters[1].events if isinstance(e, Authenticated)]  # never told
    assert "revoked" in store.audit_log(1, kind=AuditKind.AUTH_FAILURE)[0].detail
    assert kinds(store)[-1] == "auth-success"
    assert server.counters["authenticated_refused"] == 1 and server.counters["auth-success"] == 1
    ended = net.of(AuthenticationFailed)  # its held success was answered as a failure
    assert len(ended) == 1 and ended[0].session_id not in server._peer_of_session
    assert [  # the meter is told its run ended
        e for e in meters[1].events if isinstance(e, SessionTerminated | AuthenticationFailed)
    ]
    # no per-authentication enrolment query; one check inside each commit that carried keys
    # (the one single-device query names meter-2's failure "revoked" in the audit trail)
    singles = [s for s in statements if s.startswith("SELECT revoked_at FROM devices")]
    assert len(singles) == 1 and b"meter-2".hex() in singles[0]
    assert len([s for s in statements if "revoked_at IS NULL AND device_id IN" in s]) == 2


def test_pana_auth_keys_stored_by_an_older_key_server_are_skipped_at_restart(
    tmp_path: Path, kek: FileKek, caplog: pytest.LogCaptureFixture
) -> None:
    store = CredentialStore(tmp_path / "old.db", kek)
    store.enroll(b"meter-1", PSKS[b"meter-1"], now=0.0)
    old = KeyServer(store, rng=seeded_random(1), registry=PurposeRegistry(), now=0.0)
    net = Net(old, [])
    meter = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    start(net, meter)
    assert len(store.load_keys(PurposeRegistry(), net.now)) == 3  # with pana-auth, as before
    restarted = KeyServer(store, rng=seeded_random(2), now=net.now)
    mine = meter.ring.current(C1222, net.now)
    assert mine is not None
    theirs = restarted.key_for(mine.key_id, C1222, net.now)
    assert theirs is not None and theirs.key == mine.key
    assert restarted.directory.lookup(mine.key_id, PANA_AUTH, net.now) is None
    assert [r.message for r in caplog.records].count(
        "stored keys of unregistered purposes skipped"
    ) == 1


def test_a_success_never_confirmed_has_its_issued_keys_withdrawn(store: CredentialStore) -> None:
    # An attacker (or a lossy link) swallows the PaC's PAN with the C flag: the keys issued
    # with the success were committed before it was sent, but the session never completes -
    # so they are withdrawn (row deleted, never announced, never exported).
    server = make_server(store)
    meter = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    net = Net(server, [meter])
    deliver = net._send

    def swallow(src: Addr, dst: Addr, data: bytes, now: float) -> None:
        flags = int.from_bytes(data[4:6], "big")  # RFC 5191 §6.2: R 0x8000, C 0x2000
        if not (src == meter.addr and flags & 0x2000 and not flags & 0x8000):
            deliver(src, dst, data, now)

    net._send = swallow  # type: ignore[method-assign]
    meter.pac.start(0.0)
    net.run_until(1.0)
    mine = meter.ring.current(C1222, 1.0)
    assert mine is not None  # the meter was told "success": its keys are on record
    assert key_rows(store) == STORED and kinds(store) == ["enroll", "auth-success"]
    assert server.key_for(mine.key_id, C1222, 1.0) is not None  # committed: exportable
    net.run_until(400.0)  # the PAA's PAR with C retransmissions give up (RFC 5191 §9)
    server.flush(400.0, force=True)
    assert not net.of(Authenticated) and not net.of(KeysInstalled)
    assert server.directory.get(b"meter-1") is None and key_rows(store) == 0
    assert server.key_for(mine.key_id, C1222, 400.0) is None
    assert not server._issued and not server._uncommitted
    # the meter still holds what it was told: counted, since it learns only at its next exchange
    assert server.counters["successes_unconfirmed"] == 1


def test_the_context_shown_ahead_is_the_one_the_success_carries(store: CredentialStore) -> None:
    server, net, meter = held_success(store)
    ((sid, answer),) = server._held
    shown = server.agent.success_context(sid, answer)
    assert shown is not None
    ctx, lifetime = shown
    assert server.agent.success_context(sid, answer) == shown  # (showing changes nothing)
    server.flush(0.0, force=True)
    step_without_commit(net)
    (done,) = net.of(Authenticated)
    assert done.context == ctx and done.lifetime == lifetime == LIFETIME
    assert meter.pac.context == ctx
    # nothing to show for a session not waiting for its AAA answer, or for a failure
    assert server.agent.success_context(sid, answer) is None
    assert server.agent.success_context(0x7FFF_FFFF, answer) is None


def test_a_success_other_than_the_one_shown_carries_its_own_terms(store: CredentialStore) -> None:
    # The PAA keeps what it showed for the held answer only: another success answer for the
    # session (here with another lifetime) is not given the context shown for the first.
    server, net, _meter = held_success(store)
    ((sid, answer),) = server._held
    shown = server.agent.success_context(sid, answer)
    assert shown is not None and shown[1] == LIFETIME
    server._held.clear()
    other = dataclasses.replace(answer, lifetime=LIFETIME / 2)
    server.agent.aaa_answer(sid, other, 0.0)
    step_without_commit(net)
    server.flush(0.0, force=True)
    step_without_commit(net)
    (done,) = net.of(Authenticated)
    assert done.lifetime == LIFETIME / 2 and done.context.key_id == shown[0].key_id
