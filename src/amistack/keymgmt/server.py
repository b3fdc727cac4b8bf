"""The key server: PANA authentication agent + EAP-PSK + credential store + key rings (sans-IO).

    datagrams -> PanaAuthAgent -(LocalEapBackend, EapPskServer(psk_lookup=store.get_psk))
                     | Authenticated          -> key ring install (new generation), audit
                     | AuthenticationFailed   -> audit
                     | SessionTerminated      -> audit
    head-end  -> key_for(KeyId, purpose, now) -> the key and the device it belongs to

It drives nothing itself: the runtime (or the simulator) feeds datagrams and timers exactly as it
does for any engine, and reads `next_event()` - the PANA events followed by the key events each
one caused. Revocation is one call: the store refuses the PSK from then on (so re-authentication
fails), every PANA session of the device is terminated, and the keys already issued are cut;
so are the sessions it relayed from its own UDP address (a handheld's, docs/handheld.md): a
session that authenticated through a relay at the address of a live session of device D is
noted as relayed by D (`_relayed_by`, bounded by the live sessions), even after D's own ends.

Writes are group-committed (`commit_interval`, `flush`): an EAP success is held until its audit
entry is committed, and new keys are neither exported nor announced until they are
(docs/key-hierarchy.md, "Durability").
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from amistack.addr import Addr, Engine
from amistack.crypto import RandomSource
from amistack.eap.method import ServerMethodFactory
from amistack.eap.packet import EapCode, EapPacket
from amistack.eap.psk import EapPskServer, PskKeys
from amistack.keymgmt.events import (
    GroupKeyEvent,
    GroupKeyInstalled,
    KeyEvent,
    KeysInstalled,
    KeysShortened,
)
from amistack.keymgmt.groupkeys import GroupKeyManager, gtk_kek
from amistack.keymgmt.keyring import DEFAULT_OVERLAP, KeyRingDirectory, KeyRingError
from amistack.keymgmt.store import (
    MAX_DEVICE_ID,
    AuditKind,
    CredentialStore,
    InactiveDevices,
    StoreError,
    WriteBatch,
)
from amistack.keymgmt.ukmf import (
    PANA_AUTH,
    STANDARD_PURPOSES,
    KeyId,
    Purpose,
    PurposeRegistry,
)
from amistack.pana.aaa import AaaAnswer, AaaBackend, AaaOutcome
from amistack.pana.avp import Avp
from amistack.pana.events import (
    Authenticated,
    AuthenticationFailed,
    PanaEvent,
    SessionTerminated,
)
from amistack.pana.keys import PanaSecurityContext
from amistack.pana.local_backend import LocalEapBackend
from amistack.pana.paa import PaaConfig, PaaState, PanaAuthAgent, Route

logger = logging.getLogger(__name__)

DEFAULT_SERVER_ID = b"amistack-key-server"
# Sessions per second a group-key rotation re-authenticates (KeyServer.enable_group_keys): about
# what a few concentrator cells carry (ten datagrams per EAP-PSK run; docs/mesh-keys.md).
DEFAULT_PUSH_RATE = 5.0

KeyServerEvent = PanaEvent | KeyEvent | GroupKeyEvent
SuccessAvps = Callable[[int, bytes | None, PanaSecurityContext, float], Sequence[Avp]]


class PaaEngine(Engine, Protocol):
    """What the key server needs of `amistack.pana.paa.PanaAuthAgent`."""

    success_avps: SuccessAvps | None  # AVPs added to the PAR with the C flag (group keys)

    def next_event(self) -> PanaEvent | None: ...
    def reauthenticate(self, session_id: int, now: float) -> None: ...
    def terminate(self, session_id: int, now: float, reason: str) -> None: ...
    def sessions_for_peer(self, peer_id: bytes) -> list[int]: ...
    def route_of(self, session_id: int) -> Route | None: ...
    def state_of(self, session_id: int) -> PaaState | None: ...
    def aaa_answer(self, session_id: int, answer: AaaAnswer, now: float) -> None: ...
    def success_context(
        self, session_id: int, answer: AaaAnswer
    ) -> tuple[PanaSecurityContext, float] | None: ...


def _rejected(answer: AaaAnswer, reason: str) -> AaaAnswer:
    """A held EAP success turned into a failure (its device was revoked, or its keys could
    not be committed): EAP-Failure with the Success's identifier (RFC 3748 §4.2)."""
    eap = None if not answer.eap else EapPacket(EapCode.FAILURE, answer.eap[1]).encode()
    return AaaAnswer(eap, AaaOutcome.FAILURE, peer_id=answer.peer_id, reason=reason)


def _psk_with_lifetime(
    store: CredentialStore,
) -> tuple[Callable[[bytes], PskKeys | None], Callable[[bytes], float | None]]:
    """EAP-PSK's PSK lookup and the backend's per-device lifetime from one query: the lookup
    notes the lifetime, which the EAP success of the same run (moments later) takes. The PSK
    comes as its derived keys, cached by the store per PSK generation."""
    noted: dict[bytes, float | None] = {}  # at most one entry per enrolled device

    def psk_lookup(peer_id: bytes) -> PskKeys | None:
        psk, lifetime = store.get_psk_keys_and_lifetime(peer_id)
        if psk is not None:
            noted[peer_id] = lifetime
        return psk

    def lifetime_for(peer_id: bytes) -> float | None:
        if peer_id in noted:
            return noted.pop(peer_id)
        return store.session_lifetime(peer_id)

    return psk_lookup, lifetime_for


class _GatedBackend:
    """The AAA backend seen through the key server: an EAP success is held (the PAA is told
    "the answer comes later") until its audit entry is committed; then `aaa_answer` releases
    it and the PAA sends the PANA success (PAR with the C flag)."""

    def __init__(self, inner: AaaBackend, server: KeyServer) -> None:
        self.inner = inner
        self.server = server

    def begin(self, session_id: int, now: float) -> AaaAnswer | None:
        return self.server._gate(session_id, self.inner.begin(session_id, now), now)

    def process(self, session_id: int, eap: bytes, now: float) -> AaaAnswer | None:
        return self.server._gate(session_id, self.inner.process(session_id, eap, now), now)

    def end(self, session_id: int) -> None:
        self.inner.end(session_id)


@dataclass(frozen=True)
class IssuedKey:
    """A key handed to an application server, with the device it belongs to."""

    peer_id: bytes
    key_id: KeyId
    purpose: str
    key: bytes
    not_after: float

    def __repr__(self) -> str:  # never the key
        return (
            f"IssuedKey(peer_id={self.peer_id!r}, key_id={self.key_id}, purpose={self.purpose}, "
            f"not_after={self.not_after})"
        )


@dataclass(frozen=True)
class RevocationResult:
    newly_revoked: bool  # False if the store already had the device revoked
    sessions_terminated: tuple[int, ...]
    keys_not_after: float  # no key of the device outlives this
    generations_shortened: tuple[KeyId, ...]
    # sessions of other devices relayed by this one (RFC 6345, a handheld's relay): ended, their
    # keys cut to `keys_not_after` too, so those meters re-authenticate by another path
    relayed_sessions: tuple[int, ...] = ()


class KeyServer:
    """Sans-IO composition of the PAA, the credential store and the key-ring directory.

    `KeyServer(store, rng=...)` is the standard server: a `PanaAuthAgent` whose built-in EAP
    server runs EAP-PSK with `store.get_psk` as the PSK lookup and `store.session_lifetime` as
    the per-device session lifetime, and key rings persisted in (and restored from) `store`.
    `KeyServer.from_parts` composes other parts (e.g. a PAA with a RADIUS pass-through backend).
    """

    def __init__(
        self,
        store: CredentialStore,
        *,
        rng: RandomSource,
        paa_config: PaaConfig | None = None,
        session_lifetime: float | None = None,
        registry: PurposeRegistry | None = None,
        overlap: float = DEFAULT_OVERLAP,
        server_id: bytes = DEFAULT_SERVER_ID,
        backend: AaaBackend | None = None,
        extra_methods: Sequence[ServerMethodFactory] = (),
        require_enrolled: bool = True,
        exportable: frozenset[str] | None = None,
        retire_on_termination: bool = True,
        commit_interval: float | None = None,
        now: float | None = None,
        skip_identity: bool = False,
    ) -> None:
        """`session_lifetime` overrides `paa_config.session_lifetime` (the default for devices
        without their own). `backend` replaces the built-in EAP-PSK server. `extra_methods`
        are offered before EAP-PSK by the built-in one, each to the devices its `accepts`
        takes (EAP-TLS: those enrolled for it; keymgmt/eap_tls.py builds it). `now` drops keys
        that expired while the server was down at once; without it they go at the first timer.

        `commit_interval`: None writes each call's keys and audit entries before it returns
        (one transaction per datagram). A number turns on group commit: writes wait in a batch
        until `flush(now)` (the runtime calls it after each event-loop flush) finds the oldest
        at least that old, or the timer does; see `flush`.

        `skip_identity`: the built-in EAP server opens with EAP-PSK's first message instead of
        Request/Identity (RFC 3748 §2; EAP-PSK carries the peer's identity itself, ID_P) when
        EAP-PSK is the only method: one PANA round trip fewer per authentication. With
        `extra_methods` the identity chooses the method, so the exchange stays.
        """
        config = paa_config or PaaConfig()
        if session_lifetime is not None:
            config = dataclasses.replace(config, session_lifetime=session_lifetime)
        # PANA_AUTH_KEY protects PANA itself: the PAA holds it for the session and it is never
        # exported, so the key rings (and the store) leave it out unless a registry asks for it
        registry = registry or PurposeRegistry(p for p in STANDARD_PURPOSES if p != PANA_AUTH)
        batch = WriteBatch()
        directory = KeyRingDirectory(registry, overlap=overlap, persistence=batch)
        # Every stored row, expired ones too: the ring derives the cut of a superseded
        # generation from its successor, which must be there even if expired (keyring.restore).
        directory.restore(store.load_keys(registry, -math.inf))
        if now is not None:
            directory.expire(now)
            store.commit(batch, durable=True)
            batch.clear()
        if backend is None:
            psk_lookup, lifetime_for = _psk_with_lifetime(store)
            methods = [*extra_methods, lambda: EapPskServer(server_id, psk_lookup, rng)]
            backend = LocalEapBackend(
                lambda: methods,
                rng,
                lifetime_for=lifetime_for,
                skip_identity=skip_identity and not extra_methods,
            )
        self._setup(
            PanaAuthAgent(config, _GatedBackend(backend, self), rng),
            store,
            directory,
            require_enrolled=require_enrolled,
            exportable=exportable,
            retire_on_termination=retire_on_termination,
            commit_interval=commit_interval,
            batch=batch,
        )

    @classmethod
    def from_parts(
        cls,
        agent: PaaEngine,
        store: CredentialStore,
        directory: KeyRingDirectory,
        *,
        require_enrolled: bool = True,
        exportable: frozenset[str] | None = None,
        retire_on_termination: bool = True,
        commit_interval: float | None = None,
    ) -> KeyServer:
        """Compose given parts. Key writes go to `directory`'s own persistence (give it no
        `persistence` and they join the group commit); audit entries are batched either way.
        EAP successes of `agent`'s own backend are not held (only the built-in construction
        wraps its backend); late answers given to `KeyServer.aaa_answer` are."""
        self = cls.__new__(cls)
        self._setup(
            agent,
            store,
            directory,
            require_enrolled=require_enrolled,
            exportable=exportable,
            retire_on_termination=retire_on_termination,
            commit_interval=commit_interval,
            batch=WriteBatch(),
        )
        return self

    def _setup(
        self,
        agent: PaaEngine,
        store: CredentialStore,
        directory: KeyRingDirectory,
        *,
        require_enrolled: bool,
        exportable: frozenset[str] | None,
        retire_on_termination: bool,
        commit_interval: float | None,
        batch: WriteBatch,
    ) -> None:
        """`require_enrolled`: keys are issued only to devices active in `store` (turn off when
        the PAA passes EAP through to an external AAA server that holds the credentials).
        `exportable`: purposes `key_for`/`current_key` hand out; by default every registered
        purpose except PANA_AUTH, which protects PANA itself and never leaves the PAA.
        `retire_on_termination`: when a PANA session ends, its keys stop being current and
        only decrypt for the overlap window (every key dies with its session)."""
        self.agent = agent
        self.store = store
        self.directory = directory
        self.require_enrolled = require_enrolled
        self.retire_on_termination = retire_on_termination
        self.exportable = (
            frozenset(p.name for p in directory.registry if p != PANA_AUTH)
            if exportable is None
            else exportable
        )
        self.counters: Counter[str] = Counter()
        self._events: deque[KeyServerEvent] = deque()
        self._peer_of_session: dict[int, bytes] = {}
        self._revoking: set[int] = set()  # sessions ended by revoke(): their keys obey shorten_to
        # RFC 6345 relays that are devices (a handheld's relay and PaC share one UDP address):
        # where each device's live session is, and which live sessions each device relayed
        self._device_at: dict[Addr, tuple[bytes, int]] = {}  # address -> (device, session)
        self._own_at: dict[int, Addr] = {}  # a device's own session -> its address
        self._relayed_by: dict[int, bytes] = {}  # session -> the device that relayed it
        self._revocations_seen = store.last_audit_seq()  # older revocations are already in force
        # Group commit (docs/key-hierarchy.md, "Durability"): writes wait in `_batch`; what
        # depends on them waits too - EAP successes (`_held`: the PAR with the C flag is not
        # sent), events (`_pending_events`), and key export (`_uncommitted` generations).
        self.commit_interval = commit_interval
        self._batch = batch
        self._batch_since: float | None = None
        self._held: list[tuple[int, AaaAnswer]] = []
        self._pending_events: list[KeyServerEvent] = []
        self._uncommitted: dict[KeyId, tuple[bytes, int]] = {}  # key id -> (peer, session)
        self._success_entries: dict[KeyId, tuple[str, bytes | None, str, float]] = {}
        # Generations issued at the EAP success, before its PANA success is sent (`_issue`):
        # session -> (device, key id, key events shown once the PaC's PAN with the C flag comes)
        self._issued: dict[int, tuple[bytes, KeyId, list[KeyEvent]]] = {}
        if directory._persistence is None:
            directory._persistence = batch
        # Keys that wait in the batch are checked against revocation inside the commit (one
        # query per batch, `_refuse_inactive`); keys a directory persists itself at install
        # time are checked before installing, as they are written at once.
        self._check_at_commit = directory._persistence is batch
        self.group_keys: GroupKeyManager | None = None  # enable_group_keys
        self._pan_of: Callable[[bytes], int | None] = lambda _peer: None
        self._push_queue: deque[int] = deque()  # sessions a rotation still has to reach
        self._push_at: float | None = None
        self._push_interval = 0.0

    # -- the engine surface (forwarded) --------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self.agent.receive_datagram(data, addr, now)
        self._pump(now)
        self._after_call(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return self.agent.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        # called after every flush of the driver: no list, no min() over an iterable
        at = self.agent.get_timer()
        keys = self.directory.get_timer()
        if keys is not None and (at is None or keys < at):
            at = keys
        since, interval = self._batch_since, self.commit_interval
        if since is not None and interval is not None:
            due = since + interval
            if at is None or due < at:
                at = due
        if self.group_keys is not None:
            keys = self.group_keys.get_timer()
            if keys is not None and (at is None or keys < at):
                at = keys
            push = self._push_at
            if push is not None and (at is None or push < at):
                at = push
        return at

    def handle_timer(self, now: float) -> None:
        due = self.agent.get_timer()
        if due is not None and due <= now:
            self.agent.handle_timer(now)
        self._pump(now)
        if self._issued:  # an initial run the PAA gave up on ends without an event
            for sid in [sid for sid in self._issued if self._ended(sid)]:
                self._withdraw(sid, now)
        due = self.directory.get_timer()
        if due is not None and due <= now:
            self._emit(self.directory.expire(now))
        if self.group_keys is not None:
            due = self.group_keys.get_timer()
            if due is not None and due <= now:
                self.group_keys.handle_timer(now)
            self._group_key_events(now)
            if self._push_at is not None and self._push_at <= now:
                self._push(now)
        self._after_call(now)
        self.flush(now)  # no-op unless the oldest pending write is due

    def aaa_answer(self, session_id: int, answer: AaaAnswer, now: float) -> None:
        """A late AAA answer (pass-through backend) for the PAA, through the same gate."""
        gated = self._gate(session_id, answer, now)
        if gated is not None:
            self.agent.aaa_answer(session_id, gated, now)
        self._pump(now)
        self._after_call(now)

    def next_event(self) -> KeyServerEvent | None:
        return self._events.popleft() if self._events else None

    # -- group commit ----------------------------------------------------------------------------

    def flush(self, now: float, *, force: bool = False, durable: bool = False) -> bool:
        """Commit the pending writes (one transaction) if the oldest is `commit_interval` old
        (or `force`); then release what waited for them: the held EAP successes go to the PAA
        (their PAR with the C flag is queued: send `datagrams_to_send`), events become
        readable, keys exportable. Returns True if it committed (the caller has output to
        send). A failed commit fails closed: the sessions whose writes it carried are ended
        and their new keys dropped."""
        since = self._batch_since
        if since is None and not force:
            return False
        if (
            not force
            and since is not None
            and self.commit_interval is not None
            and now < since + self.commit_interval
        ):
            return False
        batch, held, events = self._batch, self._held, self._pending_events
        uncommitted, successes = self._uncommitted, self._success_entries
        self._batch_since = None
        self._held, self._pending_events, self._uncommitted = [], [], {}
        self._success_entries = {}
        if not batch and not held:
            self._events.extend(events)
            return False
        try:
            while True:
                # keys go on disk only for devices still enrolled and not revoked (checked in
                # the commit's own transaction); the sessions of any others are refused
                check = (
                    {peer for peer, _ in uncommitted.values()}
                    if self.require_enrolled and self._check_at_commit
                    else ()
                )
                try:
                    self.store.commit(batch, durable=durable, require_active=check)
                    break
                except InactiveDevices as exc:
                    refused = self._refuse_inactive(
                        exc.device_ids, uncommitted, successes, events, now
                    )
                    # their held successes become failures: the PaC is told (PAR with C,
                    # Result-Code rejected, EAP-Failure) and never holds keys
                    held = [
                        (sid, _rejected(answer, "device revoked") if sid in refused else answer)
                        for sid, answer in held
                    ]
        except StoreError as exc:
            lost = len(batch.audits)
            batch.clear()
            self.counters["commit_errors"] += 1
            self.counters["audit_errors"] += lost
            logger.error("group commit failed; its sessions are ended: %s", exc)
            self._fail_batch(held, events, uncommitted, now)
            return True
        batch.clear()
        self.counters["commits"] += 1
        self._events.extend(events)
        for session_id, answer in held:
            self.agent.aaa_answer(session_id, answer, now)
        if held:
            self._pump(now)
            self._after_call(now)
        return True

    def _refuse_inactive(
        self,
        inactive: set[bytes],
        uncommitted: dict[KeyId, tuple[bytes, int]],
        successes: dict[KeyId, tuple[str, bytes | None, str, float]],
        events: list[KeyServerEvent],
        now: float,
    ) -> set[int]:
        """Devices revoked (or removed) while their authentication was in flight, found by the
        commit: the new generation is dropped (wiped, never written), its `auth-success` entry
        is replaced by an `auth-failure`, its `Authenticated`/`KeysInstalled` never become
        readable, and the session is ended - before its PANA success is sent when the keys
        were issued with it (`_issue`: the held success is never released), else as if
        refused when its PAN with the C flag arrived. What ending it writes joins the batch
        being committed. Returns the sessions refused."""
        refused = {kid: ps for kid, ps in uncommitted.items() if ps[0] in inactive}
        batch = self._batch
        for key_id, (peer, sid) in refused.items():
            del uncommitted[key_id]
            self.directory.drop(peer, key_id, now)  # its keys leave the batch, wiped
            entry = successes.pop(key_id, None)
            if entry is not None:
                batch.audits.remove(entry)
                self.counters[entry[0]] -= 1
            self._peer_of_session.pop(sid, None)
            why = "device is not enrolled or was revoked"
            if self._issued.pop(sid, None) is None:
                self._refuse_session(sid, peer, why, now)
            else:  # its success is still held: answered as a failure instead (audited then)
                self.counters["authenticated_refused"] += 1
        sessions = {sid for _, sid in refused.values()}
        events[:] = [
            e
            for e in events
            if not (isinstance(e, Authenticated) and e.session_id in sessions)
            and not (isinstance(e, KeysInstalled) and e.key_id in refused)
        ]
        self._pump(now)  # the session ends: its events go out with this commit
        events.extend(self._pending_events)
        self._pending_events.clear()
        return sessions

    def _commit_for_export(self, now: float) -> None:
        """A key still in the batch is asked for (head-end): commit now rather than answer
        "unknown key". Held PANA successes stay for the regular flush: this call is outside
        the driver, which would not send their PARs now."""
        held, self._held = self._held, []
        self.counters["commits_for_export"] += 1
        failures = self.counters["commit_errors"]
        self.flush(now, force=True)
        if self.counters["commit_errors"] != failures:
            self._fail_batch(held, [], {}, now)  # their audit entries were lost with it
        elif held:
            self._held = held + self._held
            if self._batch_since is None:
                self._batch_since = now

    def _after_call(self, now: float) -> None:
        """End of an engine call: without group commit, commit now; with it, start the clock."""
        if not self._batch and not self._held:
            self._events.extend(self._pending_events)  # nothing to wait for
            self._pending_events.clear()
            return
        if self._batch_since is None:
            self._batch_since = now
        if self.commit_interval is None:
            self.flush(now, force=True)

    def _emit(self, events: list[KeyEvent]) -> None:
        self._pending_events.extend(events)

    def _gate(self, session_id: int, answer: AaaAnswer | None, now: float) -> AaaAnswer | None:
        if answer is None or answer.outcome is not AaaOutcome.SUCCESS:
            return answer
        if not self._issue(session_id, answer, now):
            self._audit(
                AuditKind.AUTH_ACCEPTED,
                answer.peer_id,
                f"session {session_id:#010x}: EAP success, PANA success to be sent",
                now,
            )
        self._held.append((session_id, answer))
        if self._batch_since is None:
            self._batch_since = now
        return None  # the PAA waits for aaa_answer (sent by flush once the audit is on disk)

    def _issue(self, session_id: int, answer: AaaAnswer, now: float) -> bool:
        """Install the generation the held EAP success will complete - the PAA shows the
        security context its PAR with the C flag will carry - so that its keys and its one
        `auth-success` (or `rekey`) entry are committed, with the enrolment check, before that
        PAR is sent: a success never leaves before its keys are durable, and a device revoked
        meanwhile is never told "success". False (nothing done) when that cannot be done here;
        the keys then come at the PAN with the C flag, after an `auth-accepted` entry."""
        peer = answer.peer_id
        terms = getattr(self.agent, "success_context", None)
        if peer is None or terms is None or not self._check_at_commit:
            return False
        got = terms(session_id, answer)
        if got is None:
            return False
        ctx, lifetime = got
        try:
            key_events = self.directory.install(peer, ctx, lifetime, now)
        except KeyRingError:
            return False  # (refused at the PAN with the C flag, as before)
        key_id = KeyId.of(ctx)
        self._uncommitted[key_id] = (peer, session_id)
        self._issued[session_id] = (peer, key_id, key_events)
        reauth = self._peer_of_session.get(session_id) is not None
        kind = AuditKind.REKEY if reauth else AuditKind.AUTH_SUCCESS
        self.counters[kind.value] += 1
        route = self.agent.route_of(session_id)
        where = "" if route is None else f" from {route.pac[0]}:{route.pac[1]}"
        self._audit(
            kind,
            peer,
            f"session {session_id:#010x} key id {key_id} lifetime {lifetime:g}s{where}",
            now,
        )
        self._success_entries[key_id] = self._batch.audits[-1]  # (withdrawn if refused)
        return True

    def _ended(self, session_id: int) -> bool:
        state = self.agent.state_of(session_id)
        return state is None or state is PaaState.CLOSED

    def _withdraw(self, session_id: int, now: float) -> None:
        """A session whose PANA success was issued ended before the PaC's PAN with the C flag
        confirmed it: its generation is dropped (never announced, never current again).

        A success that went out (not held: counted `successes_unconfirmed`): the PaC may hold the
        generation although this server dropped it, when every PAN and every retransmitted PAR
        was lost (RFC 5191 gives the PaC no way to tell); it learns at its next PANA exchange
        (re-authentication), and until then the head-end finds no key for it."""
        issued = self._issued.pop(session_id, None)
        if issued is not None:
            if all(sid != session_id for sid, _ in self._held):
                self.counters["successes_unconfirmed"] += 1
            self.directory.drop(issued[0], issued[1], now)  # (its events were never shown)
            self._uncommitted.pop(issued[1], None)

    def _fail_batch(
        self,
        held: list[tuple[int, AaaAnswer]],
        events: list[KeyServerEvent],
        uncommitted: dict[KeyId, tuple[bytes, int]],
        now: float,
    ) -> None:
        why = "key server could not commit the session"
        ended = {sid for sid, _ in held} | {sid for _, sid in uncommitted.values()}
        for key_id, (peer, _) in uncommitted.items():
            self.directory.drop(peer, key_id, now)
        for sid, answer in held:  # never told "success": told it failed
            self._issued.pop(sid, None)
            self.agent.aaa_answer(sid, _rejected(answer, why), now)
        for sid in sorted(ended - {sid for sid, _ in held}):
            self.agent.terminate(sid, now, why)
        self._events.extend(
            e
            for e in events
            if not (isinstance(e, Authenticated) and e.session_id in ended)
            and getattr(e, "key_id", None) not in uncommitted  # KeysInstalled of a lost batch
        )
        self._pump(now)
        if self._batch and self._batch_since is None:
            self._batch_since = now  # what ending them wrote goes with the next commit

    # -- commands ------------------------------------------------------------------------------

    def revoke(
        self,
        device_id: bytes | str,
        now: float,
        shorten_to: float | None = None,
        reason: str = "revoked",
    ) -> RevocationResult:
        """Revoke a device: no more PSK, all its sessions ended, its keys cut to `shorten_to`.

        `shorten_to=None` ends the keys now; a later time lets in-flight traffic drain. Raises
        `UnknownDevice` for a device the store does not know.
        """
        did = device_id.encode() if isinstance(device_id, str) else bytes(device_id)
        cut = now if shorten_to is None else max(now, shorten_to)
        # EAP successes of this device still held: never sent (ended below, not released)
        refused = [sid for sid, answer in self._held if answer.peer_id == did]
        for sid in refused:  # keys issued with a held success are never written either
            issued = self._issued.get(sid)
            entry = None if issued is None else self._success_entries.pop(issued[1], None)
            if entry is not None:
                self._batch.audits.remove(entry)
                self.counters[entry[0]] -= 1
            self._withdraw(sid, now)  # (still held: not counted as unconfirmed)
        self._held = [(sid, answer) for sid, answer in self._held if answer.peer_id != did]
        self.flush(now, force=True)  # what happened before the revocation is audited before it
        newly = self.store.revoke(did, reason, now, cut)  # first: re-auth fails from here on
        for sid in refused:
            self.agent.terminate(sid, now, f"revoked while authenticating: {reason}")
        sessions = tuple(self.agent.sessions_for_peer(did))
        relayed = tuple(sorted(sid for sid, by in self._relayed_by.items() if by == did))
        self._revoking.update(sessions)
        for sid in sessions:
            self.agent.terminate(sid, now, f"revoked: {reason}")
        self._end_relayed(did, relayed, cut, now, reason)
        key_events = self.directory.shorten(did, cut, now)
        shortened = tuple(e.key_id for e in key_events if isinstance(e, KeysShortened))
        if shortened:
            self._audit(
                AuditKind.KEYS_SHORTENED,
                did,
                f"{len(shortened)} generation(s) cut to {cut}: "
                + ", ".join(str(k) for k in shortened),
                now,
            )
        self._emit(key_events)
        if self.group_keys is not None:
            pan = self._pan_of(did)
            if pan is not None:  # the revoked meter holds the PAN's keys: replace them
                self.group_keys.rotate(pan, now, f"revoked {did[:32]!r}: {reason}")
                self._group_key_events(now)
        self._pump(now)
        self.flush(now, force=True, durable=True)  # a revocation is never left in a batch
        self.counters["revocations"] += 1
        logger.warning(
            "device revoked",
            extra={"device_id": did, "sessions": len(sessions), "keys_not_after": cut},
        )
        return RevocationResult(newly, sessions, cut, shortened, relayed)

    def _note_route(self, session_id: int, peer: bytes) -> None:
        """Where a device's own session is, or which device relayed this session (a relay at the
        address of a device's live session: a handheld's relay, runtime/handheld_gateway.py)."""
        route = self.agent.route_of(session_id)
        if route is None:
            return
        at = None if route.relay is None else self._device_at.get(route.relay)
        if route.relay is None:
            self._device_at[route.pac] = (peer, session_id)
            self._own_at[session_id] = route.pac
        if at is None:  # (a re-authentication by another path is no longer the relay's)
            self._relayed_by.pop(session_id, None)
        else:
            self._relayed_by[session_id] = at[0]

    def _forget_route(self, session_id: int) -> None:
        self._relayed_by.pop(session_id, None)
        addr = self._own_at.pop(session_id, None)
        if addr is not None and self._device_at.get(addr, (b"", -1))[1] == session_id:
            del self._device_at[addr]

    def _end_relayed(
        self, relay: bytes, sessions: tuple[int, ...], cut: float, now: float, reason: str
    ) -> None:
        """The sessions a revoked device relayed end and their keys are cut to `cut`: the
        meters re-authenticate (by a legitimate path), their keys no longer vouched for by a
        session through a lost device."""
        why = f"relay {relay[:32]!r} revoked: {reason}"
        for sid in sessions:
            peer = self._peer_of_session[sid]  # noted at its success, forgotten with it
            self._revoking.add(sid)
            self.agent.terminate(sid, now, why)
            events = self.directory.shorten(peer, cut, now, session_id=sid)
            self._audit(AuditKind.KEYS_SHORTENED, peer, f"session {sid:#010x}: {why}", now)
            self._emit(events)
        self.counters["relayed_sessions_ended"] += len(sessions)

    def enable_group_keys(
        self,
        manager: GroupKeyManager,
        pan_of: Callable[[bytes], int | None] | None = None,
        *,
        push_rate: float = DEFAULT_PUSH_RATE,
    ) -> None:
        """Deliver `manager`'s mesh group keys (docs/mesh-keys.md): every PANA success (initial
        and re-authentication) carries the current and next keys of the device's PAN, wrapped
        under its session's GTK-KEK; a rotation (revocation) re-authenticates every session of
        the PAN (PAA-initiated, RFC 5191 §4.3), `push_rate` sessions per second so the push
        does not flood the mesh, and each success brings the new ring. `pan_of`: the PAN of a
        device (None: no group keys for it); by default the manager's one PAN for every one."""
        if not push_rate > 0:
            raise ValueError("push_rate must be > 0 sessions per second")
        if pan_of is None:
            if len(manager.pans) != 1:
                raise ValueError("several PANs: pan_of must say which PAN a device is in")
            only = manager.pans[0]
            pan_of = lambda _peer: only  # noqa: E731
        self.group_keys = manager
        self._pan_of = pan_of
        self._push_interval = 1.0 / push_rate
        self.agent.success_avps = self._group_key_avps

    def _group_key_avps(
        self, session_id: int, peer: bytes | None, ctx: PanaSecurityContext, now: float
    ) -> tuple[Avp, ...]:
        """The delivery AVP for a PAR with the C flag (PAA hook): the PAN's current and next
        keys under the GTK-KEK of the session generation being completed."""
        manager = self.group_keys
        if manager is None or peer is None:
            return ()
        pan = self._pan_of(peer)
        if pan is None:
            return ()
        if self.require_enrolled and not self._check_at_commit and not self.store.is_active(peer):
            self.counters["group_keys_refused"] += 1  # (held successes are checked at commit)
            return ()
        try:
            avp = manager.delivery(pan, now).seal(gtk_kek(ctx))
        except (KeyError, ValueError) as exc:  # e.g. pan_of named a PAN the manager lacks
            self.counters["group_keys_errors"] += 1
            logger.error("no group keys delivered", extra={"pan_id": pan, "error": str(exc)})
            return ()
        self.counters["group_keys_delivered"] += 1
        return (avp,)

    def _group_key_events(self, now: float) -> None:
        """Forward the group-key events; a rotation is pushed to the PAN's live sessions."""
        manager = self.group_keys
        assert manager is not None
        while (event := manager.next_event()) is not None:
            self._pending_events.append(event)
            if isinstance(event, GroupKeyInstalled) and event.reason == "rotation":
                sessions = [
                    sid
                    for sid, peer in self._peer_of_session.items()
                    if self._pan_of(peer) == event.pan_id
                ]  # fmt: skip (a session queued twice: its second push finds the run active)
                self._push_queue.extend(sessions)
                if self._push_at is None and self._push_queue:
                    self._push_at = now
                logger.warning(
                    "group key rotated",
                    extra={"pan_id": event.pan_id, "index": event.index, "sessions": len(sessions)},
                )

    def _push(self, now: float) -> None:
        """Re-authenticate the next session waiting for a rotation's keys (paced)."""
        while self._push_queue:
            sid = self._push_queue.popleft()
            if sid in self._peer_of_session:  # (ended meanwhile: its next session gets them)
                self.agent.reauthenticate(sid, now)
                self.counters["group_key_pushes"] += 1
                break
        self._push_at = now + self._push_interval if self._push_queue else None

    def sync_revocations(self, now: float) -> list[RevocationResult]:
        """Apply revocations another process (`amistack keys revoke`) wrote to the store.

        The audit trail is the journal: every REVOKE entry after the last one seen ends the
        device's live sessions and cuts its keys to the journalled `keys_until`. The runtime
        calls this about once a second; it is one indexed query when nothing changed."""
        results = []
        for rev in self.store.revocations_after(self._revocations_seen):
            self._revocations_seen = rev.seq
            self.store.forget_psk_keys(rev.device_id)
            if self.agent.sessions_for_peer(rev.device_id) or self.directory.get(rev.device_id):
                results.append(self.revoke(rev.device_id, now, rev.keys_until, rev.reason))
        return results

    def key_for(self, key_id: KeyId, purpose: Purpose | str, now: float) -> IssuedKey | None:
        """The key a message names (head-end receive path), with the device it belongs to."""
        if not self._exportable(purpose):
            return None
        if key_id in self._uncommitted:
            self._commit_for_export(now)  # a key is exported only once it is on disk
        key = self.directory.lookup(key_id, purpose, now)
        peer = self.directory.peer_of(key_id)
        if key is None or peer is None:
            self.counters["key_lookup_miss"] += 1
            return None
        return IssuedKey(peer, key.key_id, key.purpose.name, key.key, key.not_after)

    def current_key(self, device_id: bytes, purpose: Purpose | str, now: float) -> IssuedKey | None:
        """The key to send to a device with (head-end initiated traffic)."""
        if not self._exportable(purpose):
            return None
        key = self.directory.current(device_id, purpose, now)
        if key is not None and key.key_id in self._uncommitted:
            self._commit_for_export(now)
            key = self.directory.current(device_id, purpose, now)
        if key is None:
            return None
        return IssuedKey(device_id, key.key_id, key.purpose.name, key.key, key.not_after)

    def _audit(self, kind: AuditKind, peer: bytes | None, detail: str, now: float) -> None:
        """Audit without letting a database problem or a hostile identity stop the engine."""
        if peer is not None and not 1 <= len(peer) <= MAX_DEVICE_ID:
            detail = f"{detail} (identity {peer[:32]!r}..., {len(peer)} bytes)"
            peer = None
        self._batch.audit(kind, peer, detail, now)  # committed with the next flush

    def _exportable(self, purpose: Purpose | str) -> bool:
        name = purpose if isinstance(purpose, str) else purpose.name
        if name in self.exportable:
            return True
        self.counters["key_export_refused"] += 1
        logger.warning("refused to export a key", extra={"purpose": name})
        return False

    # -- PANA events -------------------------------------------------------------------------------

    def _pump(self, now: float) -> None:
        while (event := self.agent.next_event()) is not None:
            if isinstance(event, Authenticated):
                self._on_authenticated(event, now)  # forwarded only if its keys are issued
                continue
            self._pending_events.append(event)
            if isinstance(event, AuthenticationFailed):
                self._withdraw(event.session_id, now)  # (failed before its PAN with C)
                self._on_failed(event, now)
            elif isinstance(event, SessionTerminated):
                self._withdraw(event.session_id, now)
                self._on_terminated(event, now)

    def _on_authenticated(self, ev: Authenticated, now: float) -> None:
        peer = ev.peer_id
        issued = self._issued.pop(ev.session_id, None)
        if issued is not None:
            if issued[0] == peer and issued[1] == KeyId.of(ev.context):
                # its keys and audit entry were committed before the success was sent
                self._peer_of_session[ev.session_id] = issued[0]
                self._note_route(ev.session_id, issued[0])
                self._pending_events.append(ev)
                self._pending_events.extend(issued[2])
                return
            self.directory.drop(issued[0], issued[1], now)  # (not what the PAA completed)
        if peer is None:
            self._refuse(ev, None, "authenticated without an EAP peer identity", now)
            return
        if self.require_enrolled and not self._check_at_commit and not self.store.is_active(peer):
            # Revoked (or removed) while its authentication was in flight. (Keys that wait
            # for the group commit are checked there instead: `_refuse_inactive`.)
            self._refuse(ev, peer, "device is not enrolled or was revoked", now)
            return
        try:
            key_events = self.directory.install(peer, ev.context, ev.lifetime, now)
        except (KeyRingError, StoreError) as exc:
            # Fail closed: a session whose keys could not be issued (or persisted) is ended.
            self._refuse(ev, peer, f"keys not installed: {exc}", now)
            return
        key_id = KeyId.of(ev.context)
        self._peer_of_session[ev.session_id] = peer
        self._note_route(ev.session_id, peer)
        self._uncommitted[key_id] = (peer, ev.session_id)
        self._pending_events.append(ev)
        self._pending_events.extend(key_events)
        kind = AuditKind.REKEY if ev.reauth else AuditKind.AUTH_SUCCESS
        self.counters[kind.value] += 1
        self._audit(
            kind,
            peer,
            f"session {ev.session_id:#010x} key id {key_id} lifetime {ev.lifetime:g}s "
            f"from {ev.addr[0]}:{ev.addr[1]}",
            now,
        )
        self._success_entries[key_id] = self._batch.audits[-1]  # (withdrawn if refused)

    def _refuse(self, ev: Authenticated, peer: bytes | None, why: str, now: float) -> None:
        self._refuse_session(ev.session_id, peer, why, now)

    def _refuse_session(self, session_id: int, peer: bytes | None, why: str, now: float) -> None:
        self.counters["authenticated_refused"] += 1
        logger.warning("authenticated session refused", extra={"session_id": session_id})
        self._audit(AuditKind.AUTH_FAILURE, peer, f"session {session_id:#010x}: {why}", now)
        self.agent.terminate(session_id, now, why)

    def _on_failed(self, ev: AuthenticationFailed, now: float) -> None:
        self.counters[AuditKind.AUTH_FAILURE.value] += 1
        peer = self._peer_of_session.get(ev.session_id)
        # The identity a failed run claimed (unauthenticated, but what brute force is traced by),
        # when the PANA engine reports it.
        claimed = ev.peer_id
        if peer is None and claimed:
            peer = claimed
        reason = ev.reason
        if peer is not None and 1 <= len(peer) <= MAX_DEVICE_ID and not self.store.is_active(peer):
            # EAP-PSK says only "unknown_peer" (no PSK to look up): name a revoked device as such
            try:
                info = self.store.device(peer)
            except StoreError:
                info = None
            if info is not None and info.revoked:
                reason = f"device revoked ({info.revoke_reason or 'no reason given'})"
        self._audit(
            AuditKind.AUTH_FAILURE,
            peer,
            f"session {ev.session_id:#010x} result-code {ev.result_code} {reason} "
            f"from {ev.addr[0]}:{ev.addr[1]}",
            now,
        )

    def _on_terminated(self, ev: SessionTerminated, now: float) -> None:
        peer = self._peer_of_session.pop(ev.session_id, None)
        self._forget_route(ev.session_id)
        self.counters["sessions_terminated"] += 1
        revoked = ev.session_id in self._revoking
        self._revoking.discard(ev.session_id)
        if peer is not None and self.retire_on_termination and not revoked:
            self._emit(self.directory.retire(peer, ev.session_id, now))
        self._audit(AuditKind.SESSION_END, peer, f"session {ev.session_id:#010x}: {ev.reason}", now)

    def __repr__(self) -> str:
        return f"KeyServer(sessions={len(self._peer_of_session)}, {self.directory!r})"
