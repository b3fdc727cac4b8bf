"""The PANA Authentication Agent (PAA), RFC 5191, following the PAA state machine of RFC 5609 §5.

One `PanaAuthAgent` serves every session of a server process (sessions keyed by Session
Identifier; PaC routes keyed by address). It is sans-IO: datagrams in and out, one timer heap.

Protection against PCI floods (RFC 5191 §4.1 leaves this to the PAA):
  * a PCI creates a *half-open* session; half-open sessions are bounded by `max_half_open`; when
    full, the OLDEST half-open session is evicted (rather than refusing new PCIs, which would let
    a flood lock legitimate PaCs out for as long as it lasts);
  * every PCI first takes a token from its source's bucket (`pci_rate`/s, burst `pci_burst`),
    before anything is answered: one address flooding PCIs gets at most that many PAR(S) back
    (a flood of 16-octet PCIs never gets more octets back than it sent);
  * `per_source_limit` half-open sessions per source address at most: one address flooding PCIs
    only ever occupies its own share and cannot evict many others;
  * RFC 6345 relays: PRY messages are accepted only from `allowed_relays` (none by default: a
    PAA on a wide-area network has no relays until they are configured), and what one relay
    carries is limited per relay (`relay_pci_rate`/`relay_pci_burst`, `per_relay_limit`
    half-open sessions) as well as per PaC behind it, so ever new inner PaC addresses buy a
    relay nothing;
  * a repeated PCI (within its source's budget) gets the same PAR(S) again (no new session), and
    the PAR(S) retransmissions of a half-open session stop at `half_open_timeout`, which bounds
    what spoofed PCIs can make the PAA send;
  * no AAA (EAP) state exists until the PaC proves return routability with its PAN(S), and a
    half-open session dies after `half_open_timeout` s in INITIAL / `auth_timeout` s in EAP.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from amistack.addr import Addr
from amistack.crypto import RandomSource
from amistack.pana.aaa import AaaAnswer, AaaBackend, AaaOutcome
from amistack.pana.auth import prf_hash
from amistack.pana.avp import Avp, find_value_span
from amistack.pana.common import check_avp_lengths
from amistack.pana.constants import (
    FLAG_C,
    FLAG_P,
    FLAG_S,
    HEADER_LENGTH,
    NONCE_LENGTH,
    AvpCode,
    Flag,
    IntegrityAlgorithm,
    MessageType,
    PrfAlgorithm,
    ResultCode,
    TerminationCause,
)
from amistack.pana.errors import PanaDecodeError
from amistack.pana.events import (
    Authenticated,
    AuthenticationFailed,
    PanaEvent,
    PingCompleted,
    SessionTerminated,
)
from amistack.pana.keys import PanaSecurityContext, pana_auth_key
from amistack.pana.message import PanaMessage
from amistack.pana.relay import unwrap_relay, wrap_relay
from amistack.pana.session import SessionCore
from amistack.pana.timers import REQ_RETRANSMIT, RetransmitParams, jitter_source

logger = logging.getLogger(__name__)

_MAX_BUCKETS = 65536
# RFC 5191 §6.2: the Message Type is octets 6-7 of the header
_PCI_TYPE = MessageType.PCI.to_bytes(2, "big")
_PRY_TYPE = MessageType.RELAY.to_bytes(2, "big")
# the algorithms by their number: a dict look-up, not an Enum call (~1.3 us), per PAN(S)
_PRF = {int(a): a for a in PrfAlgorithm}
_INTEGRITY = {int(a): a for a in IntegrityAlgorithm}


class PaaState(Enum):
    """RFC 5609 §5 PAA states."""

    INITIAL = "INITIAL"  # PAR(S) sent, waiting for PAN(S)
    WAIT_EAP_MSG = "WAIT_EAP_MSG"  # waiting for the EAP server (AAA backend)
    WAIT_PAN_OR_PAR = "WAIT_PAN_OR_PAR"  # EAP request sent in a PAR, waiting for the PaC
    WAIT_SUCC_PAN = "WAIT_SUCC_PAN"
    WAIT_FAIL_PAN = "WAIT_FAIL_PAN"
    OPEN = "OPEN"
    WAIT_PNA_PING = "WAIT_PNA_PING"
    SESS_TERM = "SESS_TERM"
    CLOSED = "CLOSED"


@dataclass(frozen=True)
class PaaConfig:
    session_lifetime: float = 3600.0  # s, when the backend gives none (Session-Lifetime AVP)
    prf_algorithms: tuple[PrfAlgorithm, ...] = (
        PrfAlgorithm.PRF_HMAC_SHA2_256,
        PrfAlgorithm.PRF_HMAC_SHA1,
    )
    integrity_algorithms: tuple[IntegrityAlgorithm, ...] = (
        IntegrityAlgorithm.AUTH_HMAC_SHA2_256_128,
        IntegrityAlgorithm.AUTH_HMAC_SHA1_160,
    )
    max_half_open: int = 10000
    per_source_limit: int = 8  # half-open sessions per source address
    pci_rate: float = 5.0  # PCIs per second per source address (token bucket)
    pci_burst: float = 10.0
    half_open_timeout: float = 30.0  # s from PCI to PAN(S)
    auth_timeout: float = 120.0  # s for one EAP run (initial or re-authentication)
    req_retransmit: RetransmitParams = REQ_RETRANSMIT
    closed_linger: float = 30.0  # s a closed session still answers retransmitted requests
    # s a session outlives its lifetime for a re-authentication that starts late (OpenPANA's
    # PaC starts it only when the lifetime expires); a run begun in the grace has its own
    # `auth_timeout`. 0 = delete at expiry, as RFC 5191 §4.4 has it.
    lifetime_grace: float = 10.0
    nonce_length: int = NONCE_LENGTH
    # RFC 6345 relays whose PRY messages are accepted (host strings); none by default. Without a
    # PRE-PAA security association this is the only check on who may claim to relay. Any
    # container (a simulated mesh tests an address's prefix and interface id apart).
    allowed_relays: Container[str] = frozenset()
    relay_pci_rate: float = 50.0  # relayed PCIs per second per relay (token bucket)
    relay_pci_burst: float = 100.0
    per_relay_limit: int = 256  # half-open sessions through one relay


class Route(NamedTuple):
    """Where a PaC is: its address, and the relay (PRE) it talks through, if any.

    A named tuple rather than a frozen dataclass: one is built, hashed and compared per
    datagram, which a tuple does in C (~0.3 against ~0.5 - 0.7 us each)."""

    pac: Addr
    relay: Addr | None = None


@dataclass
class _Session:
    core: SessionCore
    route: Route
    source: tuple[str | None, str]
    state: PaaState = PaaState.INITIAL
    half_open: bool = True
    run_active: bool = False
    aaa_waiting: bool = False
    queued_aaa: AaaAnswer | None = None
    pending_reauth: bool = False
    pac_nonce: bytes | None = None
    paa_nonce: bytes | None = None
    nonce_sent: bool = False
    next_key_id: int = 1
    pending: tuple[PanaSecurityContext, bytes, float, bytes | None] | None = None
    peer_id: bytes | None = None
    lifetime: float = 0.0
    expires_at: float | None = None
    run_deadline: float | None = None
    purge_at: float | None = None
    term_reason: str = ""
    term_reported: bool = False
    scheduled: float | None = None
    in_grace: bool = False  # past the lifetime, within PaaConfig.lifetime_grace
    # what `success_context` showed for a held EAP success - (that answer, the context, the
    # lifetime in s) - so that releasing the very same answer does not build it again
    shown: tuple[AaaAnswer, PanaSecurityContext, int] | None = None

    @property
    def sid(self) -> int:
        return self.core.session_id

    def next_deadline(self) -> float | None:
        if self.purge_at is not None:
            return self.purge_at
        # The earliest armed deadline; called after every datagram, so no list.
        at = self.expires_at
        t = self.run_deadline
        if t is not None and (at is None or t < at):
            at = t
        o = self.core.outstanding
        if o is not None and o.timer is not None:
            t = o.timer.deadline
            if at is None or t < at:
                at = t
        return at


class PanaAuthAgent:
    def __init__(self, config: PaaConfig, backend: AaaBackend, rng: RandomSource) -> None:
        self.config = config
        self.counters: Counter[str] = Counter()
        self._backend = backend
        self._rng = rng
        self._jitter = jitter_source(rng)  # the retransmission timers' RAND only
        self._sessions: dict[int, _Session] = {}
        self._by_route: dict[Route, int] = {}
        self._by_peer: dict[bytes, set[int]] = {}
        self._half_open: OrderedDict[int, None] = OrderedDict()
        self._half_open_by_source: Counter[tuple[str | None, str]] = Counter()
        self._half_open_by_relay: Counter[str] = Counter()
        self._buckets: dict[tuple[str | None, str], tuple[float, float]] = {}
        self._relay_buckets: dict[tuple[str | None, str], tuple[float, float]] = {}
        self._heap: list[tuple[float, int]] = []
        self._out: list[tuple[bytes, Addr]] = []
        self._events: deque[PanaEvent] = deque()
        # what every PAR(S) offers (RFC 5191 §4.1): the same AVPs for every session
        self._offer = tuple(
            [Avp.u32(AvpCode.INTEGRITY_ALGORITHM, a) for a in config.integrity_algorithms]
            + [Avp.u32(AvpCode.PRF_ALGORITHM, a) for a in config.prf_algorithms]
        )
        # Extra AVPs for the PAR with the C flag of a successful run, given (session id, EAP
        # peer identity, the new PANA SA, now): the key server's mesh group keys
        # (keymgmt/groupkeys.py). The PAR's AUTH covers them.
        self.success_avps: (
            Callable[[int, bytes | None, PanaSecurityContext, float], Sequence[Avp]] | None
        ) = None

    # -- views ----------------------------------------------------------------------------------
    def sessions_for_peer(self, peer_id: bytes) -> list[int]:
        """Live sessions authenticated as `peer_id` (for revocation)."""
        return sorted(
            sid
            for sid in self._by_peer.get(peer_id, ())
            if sid in self._sessions
            and self._sessions[sid].state not in (PaaState.CLOSED, PaaState.SESS_TERM)
        )

    def state_of(self, session_id: int) -> PaaState | None:
        s = self._sessions.get(session_id)
        return None if s is None else s.state

    def context(self, session_id: int) -> PanaSecurityContext | None:
        s = self._sessions.get(session_id)
        return None if s is None else s.core.ctx

    def route_of(self, session_id: int) -> Route | None:
        s = self._sessions.get(session_id)
        return None if s is None else s.route

    @property
    def session_count(self) -> int:
        return sum(1 for s in self._sessions.values() if s.state is not PaaState.CLOSED)

    @property
    def half_open_count(self) -> int:
        return len(self._half_open)

    # -- sans-IO surface ------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        try:
            kind = data[6:8]
            if kind == _PCI_TYPE:
                # a source out of PCI tokens: dropped before any decoding, so that a one-source
                # flood costs the server as little as possible (the bucket is not touched)
                bucket = self._buckets.get((None, addr[0]))
                if bucket is not None and bucket[0] + (now - bucket[1]) * self.config.pci_rate < 1:
                    self.counters["pci_rate_limited"] += 1
                    return
            elif kind == _PRY_TYPE:
                if addr[0] not in self.config.allowed_relays:
                    self.counters["relay_not_allowed"] += 1
                    return
                bucket = self._relay_buckets.get((None, addr[0]))
                if (
                    bucket is not None
                    and bucket[0] + (now - bucket[1]) * self.config.relay_pci_rate < 1
                ):
                    # a relay out of PCI tokens: its relayed PCIs are dropped after a look at
                    # the inner header only (its PaCs' other messages still pass)
                    span = find_value_span(data, HEADER_LENGTH, AvpCode.RELAYED_MESSAGE)
                    if span is not None and data[span[0] + 6 : span[0] + 8] == _PCI_TYPE:
                        self.counters["pci_relay_rate_limited"] += 1
                        return
            msg = PanaMessage.decode(data)
            raw = bytes(data)
            route = Route(addr)
            if msg.msg_type == MessageType.RELAY:  # RFC 6345: unwrap, remember the relay
                pac, raw = unwrap_relay(msg)
                msg = PanaMessage.decode(raw)
                if msg.msg_type == MessageType.RELAY:
                    self.counters["nested_relay"] += 1
                    return
                route = Route(pac, addr)
                self.counters["relayed_in"] += 1
            check_avp_lengths(msg)
            self._dispatch(msg, raw, route, now)
        except PanaDecodeError as exc:
            self.counters["decode_error"] += 1
            logger.debug("PAA dropped malformed datagram", extra={"reason": exc.reason})
        except Exception:  # one bad datagram must never stop the server
            self.counters["internal_error"] += 1
            logger.exception("PAA failed on a datagram")

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> PanaEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap:
            t, sid = heap[0]
            s = self._sessions.get(sid)
            if s is None or s.scheduled != t:
                heapq.heappop(heap)
                continue
            return t
        return None

    def handle_timer(self, now: float) -> None:
        due: list[_Session] = []
        while self._heap and self._heap[0][0] <= now:
            t, sid = heapq.heappop(self._heap)
            s = self._sessions.get(sid)
            if s is not None and s.scheduled == t:
                s.scheduled = None
                due.append(s)
        for s in due:
            try:
                self._on_session_timer(s, now)
            except Exception:
                self.counters["internal_error"] += 1
                logger.exception("PAA timer failed", extra={"session_id": s.sid})
            self._schedule(s)

    # -- commands -------------------------------------------------------------------------------
    def aaa_answer(self, session_id: int, answer: AaaAnswer, now: float) -> None:
        """The AAA backend's late answer (when `begin`/`process` returned None)."""
        s = self._sessions.get(session_id)
        if s is None or not s.aaa_waiting:
            self.counters["unexpected_aaa_answer"] += 1
            return
        self._on_aaa(s, answer, now)
        self._schedule(s)

    def success_context(
        self, session_id: int, answer: AaaAnswer
    ) -> tuple[PanaSecurityContext, float] | None:
        """The security context and session lifetime (seconds) that the PAR with the C flag will
        carry once the held EAP success `answer` is given to `aaa_answer` (nothing is sent or
        changed now); None if that answer would fail the run instead. A key server makes the
        keys of that context durable before it lets the success go (keymgmt/server.py)."""
        s = self._sessions.get(session_id)
        if s is None or not s.aaa_waiting or answer.outcome is not AaaOutcome.SUCCESS:
            return None
        ctx, seconds = self._success_terms(s, answer)
        if not isinstance(ctx, PanaSecurityContext):
            return None
        s.shown = (answer, ctx, int(seconds))
        return ctx, float(seconds)

    def reauthenticate(self, session_id: int, now: float) -> None:
        """PAA-initiated re-authentication (RFC 5191 §4.3): a new EAP run inside the session."""
        s = self._sessions.get(session_id)
        if (
            s is None
            or s.core.key is None
            or s.state not in (PaaState.OPEN, PaaState.WAIT_PNA_PING)
        ):
            self.counters["reauth_refused"] += 1
            return
        if s.run_active:
            return
        if s.core.outstanding is not None:
            s.pending_reauth = True
            return
        self._start_run(s, now)
        self._schedule(s)

    def ping(self, session_id: int, now: float) -> None:
        s = self._sessions.get(session_id)
        if s is None or s.state is not PaaState.OPEN or s.core.outstanding is not None:
            self.counters["ping_refused"] += 1
            return
        self._request(s, MessageType.NOTIFICATION, Flag.P, (), s.core.key, now)
        s.state = PaaState.WAIT_PNA_PING
        self._schedule(s)

    def terminate(self, session_id: int, now: float, reason: str) -> None:
        """End a session (revocation, administration): PTR with Termination-Cause ADMINISTRATIVE.
        SessionTerminated(reason) follows at once without a PANA SA, else on PTA / give-up."""
        s = self._sessions.get(session_id)
        if s is None or s.state in (PaaState.CLOSED, PaaState.SESS_TERM):
            return
        if s.core.key is None:
            self._events.append(SessionTerminated(s.sid, reason))
            self._close(s, now)
        else:
            self._begin_termination(s, TerminationCause.ADMINISTRATIVE, reason, now)
        self._schedule(s)

    # -- dispatch -------------------------------------------------------------------------------
    def _dispatch(self, msg: PanaMessage, raw: bytes, route: Route, now: float) -> None:
        if msg.msg_type == MessageType.PCI:
            self._on_pci(msg, route, now)
            return
        if msg.msg_type not in (
            MessageType.AUTH,
            MessageType.TERMINATION,
            MessageType.NOTIFICATION,
        ):
            self.counters["unexpected_type"] += 1
            return
        s = self._sessions.get(msg.session_id)
        if s is None:
            self.counters["unknown_session"] += 1
            return
        if msg.is_request:
            self._on_request(s, msg, raw, route, now)
        else:
            self._on_answer(s, msg, raw, route, now)
        self._schedule(s)

    def _authentic(self, s: _Session, raw: bytes, route: Route, key: bytes | None) -> bool:
        """AUTH must verify once a key exists (RFC 5191 §5.2); without one the message must come
        from the route the session started on. An authenticated message may move the route."""
        if key is None:
            if route != s.route:
                self.counters["address_mismatch"] += 1
                return False
            return True
        if not s.core.verify(raw, key):
            self.counters["bad_auth"] += 1
            return False
        if route != s.route:
            self._move_route(s, route)
        return True

    def _move_route(self, s: _Session, route: Route) -> None:
        if self._by_route.get(s.route) == s.sid:
            del self._by_route[s.route]
        s.route = route
        self._by_route[route] = s.sid
        self.counters["route_changed"] += 1

    # -- PCI ------------------------------------------------------------------------------------
    def _on_pci(self, msg: PanaMessage, route: Route, now: float) -> None:
        if msg.is_request or msg.session_id != 0 or msg.seq != 0:
            self.counters["malformed_pci"] += 1  # RFC 5191 §7.1: both fields are zero
            return
        cfg = self.config
        relay = route.relay[0] if route.relay else None
        source = (relay, route.pac[0])
        # rate limits first: nothing is answered, not even a cached PAR, beyond the budget
        if relay is not None and not self._take_token(
            self._relay_buckets, (None, relay), cfg.relay_pci_rate, cfg.relay_pci_burst, now
        ):
            self.counters["pci_relay_rate_limited"] += 1
            return
        if not self._take_token(self._buckets, source, cfg.pci_rate, cfg.pci_burst, now):
            self.counters["pci_rate_limited"] += 1
            return
        existing = self._sessions.get(self._by_route.get(route, -1))
        if existing is not None and existing.state is PaaState.INITIAL:
            self.counters["pci_duplicate"] += 1
            self._send(existing, existing.core.i_par)
            return
        if self._half_open_by_source[source] >= cfg.per_source_limit:
            self.counters["pci_source_limit"] += 1
            return
        if relay is not None and self._half_open_by_relay[relay] >= cfg.per_relay_limit:
            self.counters["pci_relay_limit"] += 1
            return
        while self._half_open and len(self._half_open) >= self.config.max_half_open:
            oldest = next(iter(self._half_open))
            self.counters["half_open_evicted"] += 1
            self._close(self._sessions[oldest], now)
        sid = self._new_session_id()
        core = SessionCore(sid, int.from_bytes(self._rng(4), "big"))
        s = _Session(core=core, route=route, source=source)
        s.run_deadline = now + self.config.half_open_timeout
        self._sessions[sid] = s
        self._by_route[route] = sid
        self._half_open[sid] = None
        self._half_open_by_source[source] += 1
        if relay is not None:
            self._half_open_by_relay[relay] += 1
        core.i_par = self._request(s, MessageType.AUTH, Flag.S, self._offer, None, now)
        self.counters["pci_accepted"] += 1
        self._schedule(s)

    @staticmethod
    def _take_token(
        buckets: dict[tuple[str | None, str], tuple[float, float]],
        source: tuple[str | None, str],
        rate: float,
        burst: float,
        now: float,
    ) -> bool:
        tokens, last = buckets.get(source, (burst, now))
        tokens = min(burst, tokens + max(0.0, now - last) * rate)
        if tokens < 1.0:
            buckets[source] = (tokens, now)
            return False
        if len(buckets) >= _MAX_BUCKETS and source not in buckets:
            # forget the full buckets (they would refill to full anyway); under a flood of
            # distinct (spoofed) sources, forget the oldest half: the table stays bounded
            for k, v in list(buckets.items()):
                if v[0] + (now - v[1]) * rate >= burst:
                    del buckets[k]
            if len(buckets) >= _MAX_BUCKETS // 2:
                for k in list(buckets)[: len(buckets) // 2]:
                    del buckets[k]
        buckets[source] = (tokens - 1.0, now)
        return True

    def _new_session_id(self) -> int:
        while True:
            sid = int.from_bytes(self._rng(4), "big")
            if sid and sid not in self._sessions:
                return sid

    # -- requests from the PaC ------------------------------------------------------------------
    def _on_request(
        self, s: _Session, msg: PanaMessage, raw: bytes, route: Route, now: float
    ) -> None:
        kind = s.core.classify(msg, raw)
        if kind == "dup":
            self.counters["duplicate_request"] += 1
            if s.core.last_answer is not None:
                self._send(s, s.core.last_answer)
            return
        if kind == "bad":
            self.counters["bad_seq"] += 1
            return
        if s.state is PaaState.CLOSED:
            self.counters["closed_session"] += 1
            return
        key = s.core.key
        if msg.msg_type == MessageType.NOTIFICATION:
            if key is None or not (msg.has(Flag.P) or msg.has(Flag.A)):
                self.counters["unexpected_message"] += 1
                return
            if not self._authentic(s, raw, route, key):
                return
            if msg.has(Flag.P):
                self._send(s, s.core.answer(msg, raw, Flag.P, (), key))
                return
            self._send(s, s.core.answer(msg, raw, Flag.A, (), key))
            if s.state in (PaaState.OPEN, PaaState.WAIT_PNA_PING) and not s.run_active:
                if s.core.outstanding is not None:
                    s.pending_reauth = True
                else:
                    self._start_run(s, now)
        elif msg.msg_type == MessageType.TERMINATION:
            if key is None:
                self.counters["unexpected_message"] += 1
                return
            if not self._authentic(s, raw, route, key):
                return
            self._send(s, s.core.answer(msg, raw, 0, (), key))
            cause = msg.u32(AvpCode.TERMINATION_CAUSE)
            if not s.term_reported:
                reason = f"terminated by PaC (cause {cause})"
                self._events.append(SessionTerminated(s.sid, reason, by_peer=True))
                s.term_reported = True
            self._close(s, now)
        else:  # a PAR from the PaC: its EAP response sent separately (RFC 5191 §4.2)
            eap = msg.octets(AvpCode.EAP_PAYLOAD)
            if (
                msg.has(Flag.S)
                or msg.has(Flag.C)
                or eap is None
                or s.state is not PaaState.WAIT_PAN_OR_PAR
                or s.core.outstanding is not None
            ):
                self.counters["unexpected_message"] += 1
                return
            if not self._authentic(s, raw, route, key):
                return
            self._send(s, s.core.answer(msg, raw, 0, (), key))
            self._take_nonce(s, msg)
            self._aaa_process(s, eap, now)

    # -- answers from the PaC -------------------------------------------------------------------
    def _on_answer(
        self, s: _Session, msg: PanaMessage, raw: bytes, route: Route, now: float
    ) -> None:
        o = s.core.outstanding
        if o is None or not s.core.matches_outstanding(msg) or s.state is PaaState.CLOSED:
            self.counters["unexpected_answer"] += 1
            return
        if msg.msg_type == MessageType.AUTH and o.flags & FLAG_S:
            self._on_start_pan(s, msg, raw, route, now)
            return
        key = s.core.key
        if (
            msg.msg_type == MessageType.AUTH
            and o.flags & FLAG_C
            and s.state is PaaState.WAIT_SUCC_PAN
        ):
            assert s.pending is not None
            key = s.pending[1]
        if not self._authentic(s, raw, route, key):
            return
        if msg.msg_type == MessageType.AUTH and o.flags & FLAG_C:
            if not msg.has(Flag.C):
                self.counters["unexpected_answer"] += 1
                return
            if s.state is PaaState.WAIT_SUCC_PAN:
                assert s.pending is not None
                if msg.u32(AvpCode.KEY_ID) != s.pending[0].key_id:
                    self.counters["bad_key_id"] += 1
                    return
                s.core.outstanding = None
                self._complete_success(s, now)
            else:  # WAIT_FAIL_PAN
                s.core.outstanding = None
                self._close(s, now)
            return
        s.core.outstanding = None
        if msg.msg_type == MessageType.AUTH:
            self._take_nonce(s, msg)
            eap = msg.octets(AvpCode.EAP_PAYLOAD)
            if eap is not None:
                self._aaa_process(s, eap, now)
            # else: the PaC will send its EAP response in a PAR (state stays WAIT_PAN_OR_PAR)
        elif msg.msg_type == MessageType.NOTIFICATION:
            if o.flags & FLAG_P:
                if s.state is PaaState.WAIT_PNA_PING:
                    s.state = PaaState.OPEN
                self._events.append(PingCompleted(s.sid))
        elif msg.msg_type == MessageType.TERMINATION:
            if not s.term_reported:
                self._events.append(SessionTerminated(s.sid, s.term_reason))
                s.term_reported = True
            self._close(s, now)
            return
        self._after_outstanding(s, now)

    def _on_start_pan(
        self, s: _Session, msg: PanaMessage, raw: bytes, route: Route, now: float
    ) -> None:
        """PAN(S): exactly one offered PRF and one offered integrity algorithm (RFC 5191 §4.1)."""
        if not msg.has(Flag.S) or not self._authentic(s, raw, route, None):
            self.counters["unexpected_answer"] += 1
            return
        prfs = [a.as_u32() for a in msg.find_all(AvpCode.PRF_ALGORITHM)]
        integs = [a.as_u32() for a in msg.find_all(AvpCode.INTEGRITY_ALGORITHM)]
        if (
            len(prfs) != 1
            or len(integs) != 1
            or prfs[0] not in self.config.prf_algorithms
            or integs[0] not in self.config.integrity_algorithms
        ):
            self.counters["bad_algorithm"] += 1
            return
        s.core.prf = _PRF[prfs[0]]
        s.core.integ = _INTEGRITY[integs[0]]
        s.core.i_pan = raw
        s.core.outstanding = None
        self._start_run(s, now)

    # -- the EAP run ----------------------------------------------------------------------------
    def _start_run(self, s: _Session, now: float) -> None:
        s.run_active = True
        s.pending_reauth = False
        s.paa_nonce = self._rng(self.config.nonce_length)
        s.pac_nonce = None
        s.nonce_sent = False
        s.run_deadline = now + self.config.auth_timeout
        s.aaa_waiting = True
        s.state = PaaState.WAIT_EAP_MSG
        answer = self._backend.begin(s.sid, now)
        if answer is not None:
            self._on_aaa(s, answer, now)

    def _aaa_process(self, s: _Session, eap: bytes, now: float) -> None:
        s.aaa_waiting = True
        s.state = PaaState.WAIT_EAP_MSG
        answer = self._backend.process(s.sid, eap, now)
        if answer is not None:
            self._on_aaa(s, answer, now)

    def _take_nonce(self, s: _Session, msg: PanaMessage) -> None:
        nonce = msg.octets(AvpCode.NONCE)
        if nonce is not None and s.pac_nonce is None and s.run_active:
            s.pac_nonce = nonce

    def _on_aaa(self, s: _Session, answer: AaaAnswer, now: float) -> None:
        s.aaa_waiting = False
        if s.core.outstanding is not None:  # e.g. a ping in flight: one request at a time
            s.queued_aaa = answer
            return
        if answer.outcome is AaaOutcome.CONTINUE:
            if answer.eap is None:
                self.counters["aaa_empty_answer"] += 1
                return
            first: list[Avp] = [Avp(AvpCode.EAP_PAYLOAD, answer.eap)]
            if not s.nonce_sent and s.paa_nonce is not None:
                first.append(Avp(AvpCode.NONCE, s.paa_nonce))
                s.nonce_sent = True
            self._request(s, MessageType.AUTH, 0, tuple(first), s.core.key, now)
            s.state = PaaState.WAIT_PAN_OR_PAR
            return
        if answer.outcome is AaaOutcome.FAILURE:
            self._fail_run(
                s,
                ResultCode.PANA_AUTHENTICATION_REJECTED,
                answer.eap,
                answer.reason or "EAP failure",
                now,
                answer.peer_id,
            )
            return
        shown, s.shown = s.shown, None
        if shown is not None and shown[0] is answer:
            ctx, seconds = shown[1], shown[2]
        else:
            terms = self._success_terms(s, answer)
            if not isinstance(terms[0], PanaSecurityContext):
                code, reason = terms
                self._fail_run(s, int(code), answer.eap, str(reason), now, answer.peer_id)
                return
            ctx, seconds = terms
        key_id = ctx.key_id
        s.next_key_id = (key_id + 1) & 0xFFFFFFFF or 1
        key = pana_auth_key(ctx)
        avps: list[Avp] = []
        if answer.eap is not None:
            avps.append(Avp(AvpCode.EAP_PAYLOAD, answer.eap))
        avps += [
            Avp.u32(AvpCode.KEY_ID, key_id),
            Avp.u32(AvpCode.RESULT_CODE, ResultCode.PANA_SUCCESS),
            Avp.u32(AvpCode.SESSION_LIFETIME, seconds),
        ]
        if self.success_avps is not None:
            avps += self.success_avps(s.sid, answer.peer_id, ctx, now)
        s.pending = (ctx, key, float(seconds), answer.peer_id)
        # RFC 5191 §5.3: the C-flag PAR/PAN are protected with the new PANA_AUTH_KEY
        self._request(s, MessageType.AUTH, Flag.C, tuple(avps), key, now)
        s.state = PaaState.WAIT_SUCC_PAN

    def _success_terms(
        self, s: _Session, answer: AaaAnswer
    ) -> tuple[PanaSecurityContext, int] | tuple[int, str]:
        """What the PAR with the C flag for EAP success `answer` will carry - the session's next
        security context and its Session-Lifetime in seconds - or (Result-Code, reason) when
        the run has to fail instead. Changes nothing (`success_context` shows it ahead)."""
        lifetime = self.config.session_lifetime if answer.lifetime is None else answer.lifetime
        if not lifetime > 0:  # (NaN included)
            return ResultCode.PANA_AUTHORIZATION_REJECTED, "not authorized"
        if not answer.msk or s.pac_nonce is None or s.paa_nonce is None or s.core.prf is None:
            reason = "EAP produced no MSK" if not answer.msk else "no PaC nonce"
            return ResultCode.PANA_AUTHENTICATION_REJECTED, reason
        seconds = max(1, int(min(lifetime, 0xFFFFFFFF)))  # Session-Lifetime: Unsigned32 s
        ctx = PanaSecurityContext(
            session_id=s.sid,
            key_id=s.next_key_id,
            prf=prf_hash(s.core.prf),
            msk=answer.msk,
            pac_nonce=s.pac_nonce,
            paa_nonce=s.paa_nonce,
            i_par=s.core.i_par,
            i_pan=s.core.i_pan,
        )
        return ctx, seconds

    def _fail_run(
        self,
        s: _Session,
        code: int,
        eap: bytes | None,
        reason: str,
        now: float,
        peer_id: bytes | None = None,
    ) -> None:
        avps: list[Avp] = []
        if eap is not None:
            avps.append(Avp(AvpCode.EAP_PAYLOAD, eap))
        avps.append(Avp.u32(AvpCode.RESULT_CODE, code))
        self._request(s, MessageType.AUTH, Flag.C, tuple(avps), s.core.key, now)
        s.state = PaaState.WAIT_FAIL_PAN
        s.run_active = False
        self._backend.end(s.sid)
        logger.info("PANA authentication failed", extra={"session_id": s.sid, "reason": reason})
        self._events.append(AuthenticationFailed(s.sid, code, reason, s.route.pac, peer_id))
        if s.core.ctx is not None:
            self._events.append(SessionTerminated(s.sid, "re-authentication failed"))
            s.term_reported = True

    def _complete_success(self, s: _Session, now: float) -> None:
        assert s.pending is not None
        ctx, key, lifetime, peer_id = s.pending
        reauth = s.core.ctx is not None
        s.pending = None
        s.core.ctx, s.core.key = ctx, key
        s.run_active = False
        s.run_deadline = None
        s.state = PaaState.OPEN
        s.lifetime = lifetime
        s.expires_at = now + lifetime
        s.in_grace = False
        self._backend.end(s.sid)
        if s.half_open:
            self._leave_half_open(s)
        if peer_id is not None:
            if s.peer_id is not None and s.peer_id != peer_id:
                self._by_peer.get(s.peer_id, set()).discard(s.sid)
            s.peer_id = peer_id
            self._by_peer.setdefault(peer_id, set()).add(s.sid)
        logger.info(
            "PANA session authenticated",
            extra={"session_id": s.sid, "key_id": ctx.key_id, "reauth": reauth},
        )
        self._events.append(Authenticated(s.sid, s.peer_id, ctx, lifetime, reauth, s.route.pac))
        self._after_outstanding(s, now)

    def _after_outstanding(self, s: _Session, now: float) -> None:
        """One request at a time per direction: run what waited for the last one's answer."""
        if s.core.outstanding is not None or s.state is PaaState.CLOSED:
            return
        if s.queued_aaa is not None:
            answer, s.queued_aaa = s.queued_aaa, None
            self._on_aaa(s, answer, now)
        elif s.pending_reauth and s.state is PaaState.OPEN and not s.run_active:
            self._start_run(s, now)

    # -- termination and timers -----------------------------------------------------------------
    def _begin_termination(self, s: _Session, cause: int, reason: str, now: float) -> None:
        if s.run_active:
            self._backend.end(s.sid)
        s.run_active = False
        s.aaa_waiting = False
        s.queued_aaa = None
        s.pending = None
        s.pending_reauth = False
        s.run_deadline = None
        s.expires_at = None
        s.term_reason = reason
        s.core.outstanding = None
        self._request(
            s,
            MessageType.TERMINATION,
            0,
            (Avp.u32(AvpCode.TERMINATION_CAUSE, cause),),
            s.core.key,
            now,
        )
        s.state = PaaState.SESS_TERM

    def _on_session_timer(self, s: _Session, now: float) -> None:
        if s.purge_at is not None:
            if now >= s.purge_at:
                self._purge(s)
            return
        o = s.core.outstanding
        if o is not None and o.timer is not None and now >= o.timer.deadline:
            if o.timer.fire(now):
                self.counters["retransmit"] += 1
                self._send(s, o.raw)
            else:
                self.counters["retransmit_give_up"] += 1
                if not s.term_reported and s.core.ctx is not None:
                    reason = (
                        s.term_reason if s.state is PaaState.SESS_TERM else "no answer from PaC"
                    )
                    self._events.append(SessionTerminated(s.sid, reason))
                    s.term_reported = True
                self._close(s, now)
                return
        if s.run_deadline is not None and now >= s.run_deadline:
            self.counters["auth_timeout"] += 1
            if s.core.ctx is not None and not s.term_reported:
                self._events.append(SessionTerminated(s.sid, "re-authentication timed out"))
                s.term_reported = True
            self._close(s, now)
            return
        if s.expires_at is not None and now >= s.expires_at:
            grace = self.config.lifetime_grace
            if not s.in_grace and grace > 0:
                s.in_grace = True  # a late re-authentication may still save the session
                s.expires_at = now + grace
                self.counters["lifetime_grace"] += 1
                return
            if s.in_grace and s.run_active and s.run_deadline is not None:
                s.expires_at = None  # a re-authentication in flight: its deadline bounds it
                return
            # RFC 5191 §4.4 (session lifetime): both ends delete the session on their own; the
            # PaC's timer started first, so a PTR would only meet a closed PaC.
            self._events.append(SessionTerminated(s.sid, "session lifetime expired"))
            s.term_reported = True
            self._close(s, now)

    def _leave_half_open(self, s: _Session) -> None:
        if s.half_open:
            s.half_open = False
            self._half_open.pop(s.sid, None)
            self._half_open_by_source[s.source] -= 1
            if self._half_open_by_source[s.source] <= 0:
                del self._half_open_by_source[s.source]
            relay = s.source[0]
            if relay is not None:
                self._half_open_by_relay[relay] -= 1
                if self._half_open_by_relay[relay] <= 0:
                    del self._half_open_by_relay[relay]

    def _close(self, s: _Session, now: float) -> None:
        """CLOSED: keys gone; kept `closed_linger` s to answer a retransmitted request."""
        if s.run_active or s.aaa_waiting:
            self._backend.end(s.sid)
        self._leave_half_open(s)
        s.state = PaaState.CLOSED
        s.core.outstanding = None
        s.core.ctx = None
        s.core.key = None
        s.pending = None
        s.queued_aaa = None
        s.shown = None
        s.run_active = s.aaa_waiting = False
        s.expires_at = s.run_deadline = None
        if self._by_route.get(s.route) == s.sid:
            del self._by_route[s.route]
        if s.peer_id is not None:
            peers = self._by_peer.get(s.peer_id)
            if peers is not None:
                peers.discard(s.sid)
                if not peers:
                    del self._by_peer[s.peer_id]
        if s.core.last_answer is None:
            # nothing to answer a retransmission with (e.g. an evicted half-open session):
            # forget it now, so a PCI flood leaves nothing behind
            self._purge(s)
            return
        s.purge_at = now + self.config.closed_linger
        self._schedule(s)

    def _purge(self, s: _Session) -> None:
        self._sessions.pop(s.sid, None)
        s.scheduled = None

    # -- output ---------------------------------------------------------------------------------
    def _request(
        self,
        s: _Session,
        msg_type: int,
        flags: int,
        avps: tuple[Avp, ...],
        key: bytes | None,
        now: float,
        retransmit: bool = True,
    ) -> bytes:
        params = self.config.req_retransmit if retransmit else None
        raw = s.core.request(msg_type, flags, avps, key, params, self._jitter, now)
        self._send(s, raw)
        return raw

    def _send(self, s: _Session, raw: bytes) -> None:
        if s.route.relay is not None:
            self._out.append((wrap_relay(s.route.pac, raw), s.route.relay))
        else:
            self._out.append((raw, s.route.pac))

    def _schedule(self, s: _Session) -> None:
        t = s.next_deadline()
        if s.sid not in self._sessions:
            return
        if t is not None and t != s.scheduled:
            heapq.heappush(self._heap, (t, s.sid))
            if len(self._heap) > 4 * len(self._sessions) + 1024:  # drop stale entries
                self._heap = [
                    (x.scheduled, sid)
                    for sid, x in self._sessions.items()
                    if x.scheduled is not None and sid != s.sid
                ]
                self._heap.append((t, s.sid))
                heapq.heapify(self._heap)
        s.scheduled = t
