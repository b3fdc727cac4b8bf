"""The PANA Client (PaC), RFC 5191, following the PaC state machine of RFC 5609 §4 (sans-IO).

The source address of incoming datagrams is not checked (a relay or a NAT may change it): the
Session Identifier, the sequence numbers and, once a key exists, AUTH decide what is accepted.

The EAP-waiting states of RFC 5609 (WAIT_EAP_MSG, WAIT_EAP_RESULT, WAIT_EAP_RESULT_CLOSE) are
never observable here: the `EapPeer` answers synchronously, so the PAN carrying the EAP response
goes out in the same call (piggybacking, as OpenPANA does).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from amistack.addr import Addr
from amistack.crypto import RandomSource
from amistack.eap.peer import EapPeer, EapPeerState
from amistack.pana.auth import prf_hash
from amistack.pana.avp import Avp
from amistack.pana.common import check_avp_lengths, offered_integrity, offered_prfs
from amistack.pana.constants import (
    FLAG_A,
    FLAG_P,
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
from amistack.pana.session import SessionCore
from amistack.pana.timers import PCI_RETRANSMIT, REQ_RETRANSMIT, Retransmission, RetransmitParams

_RESULT_CODES = frozenset(ResultCode)
logger = logging.getLogger(__name__)


class PacState(Enum):
    """RFC 5609 §4 PaC states (see the module docstring for the collapsed EAP-wait states)."""

    INITIAL = "INITIAL"
    WAIT_PAA = "WAIT_PAA"
    OPEN = "OPEN"
    WAIT_PNA_PING = "WAIT_PNA_PING"
    WAIT_PNA_REAUTH = "WAIT_PNA_REAUTH"
    SESS_TERM = "SESS_TERM"
    CLOSED = "CLOSED"


@dataclass(frozen=True)
class PacConfig:
    reauth_fraction: float = 0.75  # re-authenticate when this fraction of Session-Lifetime elapsed
    prf_preference: tuple[PrfAlgorithm, ...] = (
        PrfAlgorithm.PRF_HMAC_SHA2_256,
        PrfAlgorithm.PRF_HMAC_SHA1,
    )
    integrity_preference: tuple[IntegrityAlgorithm, ...] = (
        IntegrityAlgorithm.AUTH_HMAC_SHA2_256_128,
        IntegrityAlgorithm.AUTH_HMAC_SHA1_160,
    )
    pci_retransmit: RetransmitParams = PCI_RETRANSMIT
    req_retransmit: RetransmitParams = REQ_RETRANSMIT
    default_lifetime: float = 3600.0  # if the final PAR carries no Session-Lifetime
    auth_timeout: float = 120.0  # s for one EAP run, from PAR(S) / PNA(A) / the PAA's first PAR
    nonce_length: int = NONCE_LENGTH


class PanaClient:
    def __init__(
        self,
        config: PacConfig,
        eap_factory: Callable[[], EapPeer],
        rng: RandomSource,
        paa: Addr,
    ) -> None:
        self.config = config
        self.paa = paa
        self.state = PacState.INITIAL
        self.counters: Counter[str] = Counter()
        self._eap_factory = eap_factory
        self._rng = rng
        self._s: SessionCore | None = None
        self._pci: tuple[bytes, Retransmission] | None = None
        self._eap: EapPeer | None = None
        self._run_active = False
        self._run_deadline: float | None = None
        self._pac_nonce: bytes | None = None
        self._paa_nonce: bytes | None = None
        self._expires_at: float | None = None
        self._reauth_at: float | None = None
        self._out: list[tuple[bytes, Addr]] = []
        self._events: list[PanaEvent] = []  # not a deque: 760 bytes empty, a fleet has 100,000
        # The vendor-specific AVPs of the last successful PAR with the C flag (what the PAA
        # added, e.g. mesh group keys: keymgmt/groupkeys.py), read at its Authenticated event.
        self.success_avps: tuple[Avp, ...] = ()

    # -- views ----------------------------------------------------------------------------------
    @property
    def session_id(self) -> int | None:
        return None if self._s is None else self._s.session_id

    @property
    def context(self) -> PanaSecurityContext | None:
        """The PANA SA in force (None before the first success and after the session ends)."""
        return None if self._s is None else self._s.ctx

    @property
    def auth_key(self) -> bytes | None:
        return None if self._s is None else self._s.key

    @property
    def expires_at(self) -> float | None:
        return self._expires_at

    # -- commands -------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Send PCI (RFC 5191 §4.1). Also restarts a CLOSED client from scratch."""
        if self.state not in (PacState.INITIAL, PacState.CLOSED) or self._pci is not None:
            self.counters["start_ignored"] += 1
            return
        self._reset()
        raw = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
        self._pci = (raw, Retransmission(self.config.pci_retransmit, self._rng, now))
        self._send(raw)

    def reauthenticate(self, now: float) -> None:
        """PaC-initiated re-authentication: PNR with the A flag (RFC 5191 §4.3)."""
        s = self._s
        if self.state is not PacState.OPEN or s is None:
            self.counters["reauth_refused"] += 1
            return
        if s.outstanding is not None:
            self._reauth_at = now  # as soon as the outstanding request is answered
            return
        self._reauth_at = None
        self._send(self._request(s, MessageType.NOTIFICATION, Flag.A, (), now))
        self.state = PacState.WAIT_PNA_REAUTH

    def ping(self, now: float) -> None:
        s = self._s
        if self.state is not PacState.OPEN or s is None or s.outstanding is not None:
            self.counters["ping_refused"] += 1
            return
        self._send(self._request(s, MessageType.NOTIFICATION, Flag.P, (), now))
        self.state = PacState.WAIT_PNA_PING

    def terminate(self, now: float) -> None:
        """PTR with Termination-Cause LOGOUT; without a PANA SA the session is just dropped."""
        s = self._s
        if self.state in (PacState.CLOSED, PacState.SESS_TERM):
            return
        if s is None or s.key is None:
            sid = 0 if s is None else s.session_id
            self._close()
            self._events.append(SessionTerminated(sid, "terminated locally before authentication"))
            return
        cause = Avp.u32(AvpCode.TERMINATION_CAUSE, TerminationCause.LOGOUT)
        self._send(self._request(s, MessageType.TERMINATION, 0, (cause,), now))
        self.state = PacState.SESS_TERM

    # -- sans-IO surface ------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        try:
            msg = PanaMessage.decode(data)
            check_avp_lengths(msg)
            self._receive(msg, bytes(data), now)
        except PanaDecodeError as exc:
            self.counters["decode_error"] += 1
            logger.debug("PaC dropped malformed datagram", extra={"reason": exc.reason})
        except Exception:  # never let one datagram take the engine down
            self.counters["internal_error"] += 1
            logger.exception("PaC failed on a datagram")

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> PanaEvent | None:
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        # The earliest of the armed deadlines; called after every datagram, so no list.
        at: float | None = None
        if self._pci is not None:
            at = self._pci[1].deadline
        s = self._s
        if s is not None and s.outstanding is not None and s.outstanding.timer is not None:
            t = s.outstanding.timer.deadline
            if at is None or t < at:
                at = t
        t2 = self._expires_at
        if t2 is not None and (at is None or t2 < at):
            at = t2
        t2 = self._run_deadline
        if t2 is not None and (at is None or t2 < at):
            at = t2
        t2 = self._reauth_at
        if (
            t2 is not None
            and (at is None or t2 < at)
            and self.state is PacState.OPEN
            and s is not None
            and s.outstanding is None
        ):
            at = t2
        return at

    def handle_timer(self, now: float) -> None:
        if self._pci is not None and now >= self._pci[1].deadline:
            if self._pci[1].fire(now):
                self.counters["retransmit"] += 1
                self._send(self._pci[0])
            else:
                self._close()
                self._events.append(SessionTerminated(0, "no answer to PCI"))
                return
        s = self._s
        o = None if s is None else s.outstanding
        if s is not None and o is not None and o.timer is not None and now >= o.timer.deadline:
            if o.timer.fire(now):
                self.counters["retransmit"] += 1
                self._send(o.raw)
            else:
                self.counters["retransmit_give_up"] += 1
                name = PanaMessage(o.msg_type, o.flags, 0, 0).name
                self._close()
                self._events.append(SessionTerminated(s.session_id, f"no answer to {name}"))
                return
        if self._run_deadline is not None and now >= self._run_deadline and s is not None:
            # the PAA went quiet mid-run (it gave up, or forgot us): do not wait forever
            self.counters["auth_timeout"] += 1
            established = s.ctx is not None
            self._close()
            if established:
                self._events.append(SessionTerminated(s.session_id, "re-authentication timed out"))
            else:
                self._events.append(
                    AuthenticationFailed(
                        s.session_id,
                        ResultCode.PANA_AUTHENTICATION_REJECTED,
                        "authentication timed out",
                        self.paa,
                    )
                )
            return
        if self._expires_at is not None and now >= self._expires_at and s is not None:
            self._close()
            self._events.append(SessionTerminated(s.session_id, "session lifetime expired"))
            return
        if (
            self._reauth_at is not None
            and now >= self._reauth_at
            and self.state is PacState.OPEN
            and s is not None
            and s.outstanding is None
        ):
            self.reauthenticate(now)

    # -- internals ------------------------------------------------------------------------------
    def _send(self, raw: bytes) -> None:
        self._out.append((raw, self.paa))

    def _request(
        self, s: SessionCore, msg_type: int, flags: int, avps: tuple[Avp, ...], now: float
    ) -> bytes:
        return s.request(msg_type, flags, avps, s.key, self.config.req_retransmit, self._rng, now)

    def _reset(self) -> None:
        self._s = None
        self._pci = None
        self._eap = None
        self._run_active = False
        self._run_deadline = None
        self._pac_nonce = self._paa_nonce = None
        self._expires_at = self._reauth_at = None
        self.state = PacState.INITIAL

    def _close(self) -> None:
        """CLOSED; the session core stays so a retransmitted request still gets its answer."""
        self.state = PacState.CLOSED
        self._pci = None
        self._eap = None
        self._run_active = False
        self._run_deadline = None
        self._expires_at = self._reauth_at = None
        s = self._s
        if s is not None:
            s.outstanding = None
            s.ctx = None
            s.key = None

    def _begin_run(self, now: float) -> None:
        """A new EAP conversation: initial authentication or re-authentication (RFC 5191 §4.3)."""
        self._eap = self._eap_factory()
        self._run_active = True
        self._run_deadline = now + self.config.auth_timeout
        self._pac_nonce = self._paa_nonce = None

    def _authentic(self, s: SessionCore, raw: bytes) -> bool:
        """Once a PANA SA exists every message must carry a valid AUTH (RFC 5191 §5.2)."""
        if s.key is None:
            return True
        if s.verify(raw, s.key):
            return True
        self.counters["bad_auth"] += 1
        return False

    def _receive(self, msg: PanaMessage, raw: bytes, now: float) -> None:
        if msg.msg_type not in (
            MessageType.AUTH,
            MessageType.TERMINATION,
            MessageType.NOTIFICATION,
        ):
            self.counters["unexpected_type"] += 1
            return
        s = self._s
        if s is None:
            if (
                self._pci is not None
                and msg.msg_type == MessageType.AUTH
                and msg.is_request
                and msg.has(Flag.S)
                and not msg.has(Flag.C)
            ):
                self._on_start_par(msg, raw, now)
            else:
                self.counters["no_session"] += 1
            return
        if msg.session_id != s.session_id:
            self.counters["wrong_session"] += 1
            return
        if msg.is_request:
            self._on_request(s, msg, raw, now)
        else:
            self._on_answer(s, msg, raw, now)

    def _on_start_par(self, msg: PanaMessage, raw: bytes, now: float) -> None:
        """PAR with S: pick one PRF and one integrity algorithm and echo them (RFC 5191 §4.1)."""
        prfs = offered_prfs(msg)
        integs = offered_integrity(msg)
        prf = next((p for p in self.config.prf_preference if p in prfs), None)
        integ = next((i for i in self.config.integrity_preference if i in integs), None)
        if prf is None or integ is None:
            self.counters["no_common_algorithm"] += 1
            return
        s = SessionCore(msg.session_id, int.from_bytes(self._rng(4), "big"))
        s.prf, s.integ = prf, integ
        s.i_par = raw
        self._begin_run(now)
        avps: list[Avp] = [
            Avp.u32(AvpCode.INTEGRITY_ALGORITHM, integ),
            Avp.u32(AvpCode.PRF_ALGORITHM, prf),
        ]
        eap = msg.octets(AvpCode.EAP_PAYLOAD)
        if eap is not None and self._eap is not None:
            resp = self._eap.receive(eap)
            if resp is not None:
                avps.insert(0, Avp(AvpCode.EAP_PAYLOAD, resp))
        answer = s.answer(msg, raw, Flag.S, tuple(avps), None)
        s.i_pan = answer
        self._s = s
        self._pci = None
        self.state = PacState.WAIT_PAA
        self._send(answer)

    def _on_request(self, s: SessionCore, msg: PanaMessage, raw: bytes, now: float) -> None:
        kind = s.classify(msg, raw)
        if kind == "dup":
            self.counters["duplicate_request"] += 1
            if s.last_answer is not None:
                self._send(s.last_answer)
            return
        if kind == "bad":
            self.counters["bad_seq"] += 1
            return
        if self.state is PacState.CLOSED:
            self.counters["closed_session"] += 1
            return
        if msg.msg_type == MessageType.AUTH:
            if msg.has(Flag.S):
                self.counters["unexpected_message"] += 1
            elif msg.has(Flag.C):
                self._on_complete_par(s, msg, raw, now)
            else:
                self._on_par(s, msg, raw, now)
        elif msg.msg_type == MessageType.NOTIFICATION:
            if not msg.has(Flag.P) or s.key is None:
                self.counters["unexpected_message"] += 1
            elif self._authentic(s, raw):
                self._send(s.answer(msg, raw, Flag.P, (), s.key))
        else:  # PTR
            if s.key is None:
                self.counters["unexpected_message"] += 1
                return
            if not self._authentic(s, raw):
                return
            self._send(s.answer(msg, raw, 0, (), s.key))
            cause = msg.u32(AvpCode.TERMINATION_CAUSE)
            self._close()
            self._events.append(
                SessionTerminated(s.session_id, f"terminated by PAA (cause {cause})", by_peer=True)
            )

    def _on_par(self, s: SessionCore, msg: PanaMessage, raw: bytes, now: float) -> None:
        if self.state not in (
            PacState.WAIT_PAA,
            PacState.OPEN,
            PacState.WAIT_PNA_PING,
            PacState.WAIT_PNA_REAUTH,
        ):
            self.counters["unexpected_message"] += 1
            return
        if not self._authentic(s, raw):
            return
        if not self._run_active:  # PAA-initiated re-authentication (RFC 5191 §4.3)
            self._begin_run(now)
        if self.state is PacState.OPEN:
            self.state = PacState.WAIT_PAA
        avps: list[Avp] = []
        eap = msg.octets(AvpCode.EAP_PAYLOAD)
        if eap is not None and self._eap is not None:
            resp = self._eap.receive(eap)
            if resp is not None:
                avps.append(Avp(AvpCode.EAP_PAYLOAD, resp))
        nonce = msg.octets(AvpCode.NONCE)
        if nonce is not None and self._paa_nonce is None:
            # RFC 5191 §4.1/§5.3: the first PAR/PAN of each EAP run carry fresh nonces
            self._paa_nonce = nonce
            self._pac_nonce = self._rng(self.config.nonce_length)
            avps.append(Avp(AvpCode.NONCE, self._pac_nonce))
        self._send(s.answer(msg, raw, 0, tuple(avps), s.key))

    def _on_complete_par(self, s: SessionCore, msg: PanaMessage, raw: bytes, now: float) -> None:
        """The last PAR of an EAP run: Result-Code, EAP-Success/Failure, Key-Id, AUTH."""
        if not self._run_active or self._eap is None:
            self.counters["unexpected_message"] += 1
            return
        result = msg.u32(AvpCode.RESULT_CODE)
        if result is None:
            self.counters["missing_avp"] += 1
            return
        eap = msg.octets(AvpCode.EAP_PAYLOAD)
        peer = self._eap
        if eap is not None and peer.state not in (EapPeerState.SUCCESS, EapPeerState.FAILURE):
            peer.receive(eap)
        reauth = s.ctx is not None
        if result == ResultCode.PANA_SUCCESS and peer.state is EapPeerState.SUCCESS and peer.msk:
            key_id = msg.u32(AvpCode.KEY_ID)
            if key_id is None or self._pac_nonce is None or self._paa_nonce is None:
                self.counters["missing_avp"] += 1
                return
            assert s.prf is not None
            ctx = PanaSecurityContext(
                session_id=s.session_id,
                key_id=key_id,
                prf=prf_hash(s.prf),
                msk=peer.msk,
                pac_nonce=self._pac_nonce,
                paa_nonce=self._paa_nonce,
                i_par=s.i_par,
                i_pan=s.i_pan,
            )
            key = pana_auth_key(ctx)
            if not s.verify(raw, key):  # the C-flag PAR is protected by the new key (§5.3)
                self.counters["bad_auth"] += 1
                return
            lifetime_avp = msg.u32(AvpCode.SESSION_LIFETIME)
            lifetime = (
                float(lifetime_avp) if lifetime_avp is not None else self.config.default_lifetime
            )
            answer = s.answer(msg, raw, Flag.C, (Avp.u32(AvpCode.KEY_ID, key_id),), key)
            s.ctx, s.key = ctx, key
            self.success_avps = tuple(a for a in msg.avps if a.vendor_id is not None)
            self._run_active = False
            self._run_deadline = None
            self._eap = None
            self.state = PacState.OPEN
            self._expires_at = now + lifetime
            self._reauth_at = now + lifetime * self.config.reauth_fraction
            self._send(answer)
            logger.info(
                "PANA session authenticated",
                extra={"session_id": s.session_id, "key_id": key_id, "reauth": reauth},
            )
            event = Authenticated(s.session_id, None, ctx, lifetime, reauth, self.paa)
            self._events.append(event)
            return
        # failure, or a success we cannot key: answer, report, close (RFC 5609)
        if s.key is not None and not self._authentic(s, raw):
            return
        self._send(s.answer(msg, raw, Flag.C, (), s.key))
        refused = result != ResultCode.PANA_SUCCESS
        if refused:
            name = ResultCode(result).name if result in _RESULT_CODES else "unknown result"
            code, reason = result, f"refused by the PAA ({name})"
        else:
            code = ResultCode.PANA_AUTHENTICATION_REJECTED
            reason = "EAP did not succeed at the PaC"
        self._close()
        self._events.append(
            AuthenticationFailed(s.session_id, code, reason, self.paa, refused=refused)
        )
        if reauth:
            self._events.append(SessionTerminated(s.session_id, "re-authentication failed"))

    def _on_answer(self, s: SessionCore, msg: PanaMessage, raw: bytes, now: float) -> None:
        o = s.outstanding
        if o is None or not s.matches_outstanding(msg):
            self.counters["unexpected_answer"] += 1
            return
        if not self._authentic(s, raw):
            return
        s.outstanding = None
        if msg.msg_type == MessageType.NOTIFICATION and o.flags & FLAG_A:
            if self.state is PacState.WAIT_PNA_REAUTH:
                self.state = PacState.WAIT_PAA
                if not self._run_active:  # (a PAR may have overtaken this PNA and begun it)
                    self._begin_run(now)
        elif msg.msg_type == MessageType.NOTIFICATION and o.flags & FLAG_P:
            if self.state is PacState.WAIT_PNA_PING:
                self.state = PacState.OPEN
            self._events.append(PingCompleted(s.session_id))
        elif msg.msg_type == MessageType.TERMINATION:
            self._close()
            self._events.append(SessionTerminated(s.session_id, "terminated by PaC"))
        else:
            self.counters["unexpected_answer"] += 1
