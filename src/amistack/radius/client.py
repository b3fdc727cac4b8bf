"""EAP pass-through to an external RADIUS server: an `AaaBackend` for the PAA (RFC 3579).

The PAA relays each EAP message of a PANA session to the RADIUS server in an Access-Request and
hands the server's answer back through `PanaAuthAgent.aaa_answer`. This object is sans-IO on both
sides: the PAA calls `begin` / `process` / `end` (which return None = "answer later"), the runtime
moves datagrams (`datagrams_to_send`, `receive_datagram`), fires timers (`get_timer`,
`handle_timer` — retransmission with back-off, then a FAILURE answer) and delivers
`next_answer()` to the PAA.

Every answer is checked (Response Authenticator, and a Message-Authenticator that must be there,
RFC 3579 §3.2 / BlastRADIUS); the MSK comes out of MS-MPPE-Recv-Key || MS-MPPE-Send-Key.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass

from amistack.addr import Addr
from amistack.crypto.rand import RandomSource
from amistack.pana.aaa import AaaAnswer, AaaOutcome
from amistack.radius.mppe import MPPE_KEY_LEN, mppe_decrypt, mppe_to_msk
from amistack.radius.packet import (
    AUTHENTICATOR_LEN,
    VENDOR_MICROSOFT,
    AttrKey,
    MsAttr,
    RadiusAttr,
    RadiusCode,
    RadiusDecodeError,
    RadiusPacket,
    build_request,
    eap_message_attributes,
    verify_reply,
)

logger = logging.getLogger(__name__)

EAP_REQUEST, EAP_RESPONSE, EAP_SUCCESS, EAP_FAILURE = 1, 2, 3, 4  # RFC 3748 §4
EAP_TYPE_IDENTITY = 1  # RFC 3748 §5.1
NAS_PORT_TYPE_VIRTUAL = 5  # RFC 2865 §5.41


def _default_calling_station_id(session_id: int) -> bytes:
    return f"pana-{session_id:08x}".encode()


@dataclass
class _Request:
    session_id: int
    attributes: list[tuple[AttrKey, bytes]]
    identifier: int = -1
    authenticator: bytes = b""
    raw: bytes = b""
    deadline: float = 0.0
    interval: float = 0.0
    sent: int = 0


@dataclass
class _Session:
    user_name: bytes | None = None
    state: bytes | None = None
    request: _Request | None = None
    identity_request_id: int | None = None  # Identifier of our own Request/Identity


class RadiusPassthroughBackend:
    """`pana.aaa.AaaBackend` that runs EAP on a RADIUS server at `server`."""

    def __init__(
        self,
        server: Addr,
        secret: bytes,
        rng: RandomSource,
        *,
        nas_identifier: bytes = b"amistack-paa",
        calling_station_id: Callable[[int], bytes | None] = _default_calling_station_id,
        local_identity_request: bool = True,
        framed_mtu: int = 1400,
        initial_timeout: float = 2.0,
        max_timeout: float = 16.0,
        max_sends: int = 4,
    ) -> None:
        self._server = server
        self._secret = secret
        self._rng = rng
        self._nas_identifier = nas_identifier
        self._calling_station_id = calling_station_id
        self._local_identity = local_identity_request
        self._framed_mtu = framed_mtu
        self._initial_timeout = initial_timeout
        self._max_timeout = max_timeout
        self._max_sends = max_sends
        self._sessions: dict[int, _Session] = {}
        self._inflight: dict[int, _Request] = {}  # by RADIUS Identifier
        self._waiting: collections.deque[_Request] = collections.deque()
        self._next_identifier = rng(1)[0]
        self._outbox: list[tuple[bytes, Addr]] = []
        self._answers: collections.deque[tuple[int, AaaAnswer]] = collections.deque()
        self.counters: collections.Counter[str] = collections.Counter()

    # -- AaaBackend ------------------------------------------------------------------------

    def begin(self, session_id: int, now: float) -> AaaAnswer | None:
        self._cancel(session_id)
        session = self._sessions[session_id] = _Session()
        if self._local_identity:
            # Like an 802.1X authenticator, the PAA asks for the identity itself and the RADIUS
            # conversation starts with the EAP-Response/Identity (RFC 3579 §2.1).
            identifier = session.identity_request_id = self._rng(1)[0]
            return AaaAnswer(
                bytes([EAP_REQUEST, identifier, 0, 5, EAP_TYPE_IDENTITY]), AaaOutcome.CONTINUE
            )
        self._submit(session_id, session, b"", now)  # EAP-Start
        return None

    def process(self, session_id: int, eap: bytes, now: float) -> AaaAnswer | None:
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _Session()
        if len(eap) >= 5 and eap[0] == EAP_RESPONSE and eap[4] == EAP_TYPE_IDENTITY:
            # RFC 3579 §2.1: User-Name carries the identity from the Response/Identity.
            session.user_name = eap[5:][:253] or session.user_name
            if eap[1] == session.identity_request_id:
                session.state = None  # the answer to our own request starts the conversation
        self._cancel(session_id)
        self._submit(session_id, session, eap, now)
        return None

    def end(self, session_id: int) -> None:
        self._cancel(session_id)
        self._sessions.pop(session_id, None)

    # -- the network side ------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        return min((r.deadline for r in self._inflight.values()), default=None)

    def handle_timer(self, now: float) -> None:
        for request in list(self._inflight.values()):
            if request.deadline > now:
                continue
            if request.sent >= self._max_sends:
                self.counters["gave_up"] += 1
                logger.warning(
                    "RADIUS server %s did not answer",
                    self._server,
                    extra={"session_id": request.session_id},
                )
                self._finish(request)
                self._answer(
                    request.session_id,
                    AaaAnswer(None, AaaOutcome.FAILURE, reason="RADIUS server did not answer"),
                )
                continue
            self.counters["retransmit"] += 1
            request.sent += 1
            request.interval = min(request.interval * 2, self._max_timeout)
            request.deadline = now + request.interval
            self._outbox.append((request.raw, self._server))
        self._dispatch(now)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if addr != self._server:
            self.counters["unexpected_source"] += 1
            return
        try:
            reply = RadiusPacket.decode(data)
        except RadiusDecodeError as exc:
            self.counters["decode_error"] += 1
            logger.debug("undecodable RADIUS answer: %s", exc)
            return
        if reply.code not in (
            RadiusCode.ACCESS_ACCEPT,
            RadiusCode.ACCESS_REJECT,
            RadiusCode.ACCESS_CHALLENGE,
        ):
            self.counters["unexpected_code"] += 1
            return
        request = self._inflight.get(reply.identifier)
        if request is None:
            self.counters["unmatched_reply"] += 1
            return
        if not verify_reply(data, reply, request.raw, self._secret):
            self.counters["bad_authenticator"] += 1
            logger.info("RADIUS answer failed authentication", extra={"id": reply.identifier})
            return
        self._finish(request)
        self._dispatch(now)
        session = self._sessions.get(request.session_id)
        if session is None or session.request is not None:
            self.counters["stale_reply"] += 1
            return
        self.counters[f"rx_{RadiusCode(reply.code).name.lower()}"] += 1
        self._answer(request.session_id, self._interpret(reply, request, session))

    def next_answer(self) -> tuple[int, AaaAnswer] | None:
        return self._answers.popleft() if self._answers else None

    # -- internals ---------------------------------------------------------------------------

    def _interpret(self, reply: RadiusPacket, request: _Request, session: _Session) -> AaaAnswer:
        eap = reply.eap_message()
        if reply.code == RadiusCode.ACCESS_CHALLENGE:
            if not eap:
                return AaaAnswer(None, AaaOutcome.FAILURE, reason="Access-Challenge without EAP")
            session.state = reply.first(RadiusAttr.STATE)
            return AaaAnswer(eap, AaaOutcome.CONTINUE)
        if reply.code == RadiusCode.ACCESS_REJECT:
            return AaaAnswer(eap or None, AaaOutcome.FAILURE, reason="Access-Reject")
        recv = reply.first((VENDOR_MICROSOFT, MsAttr.MS_MPPE_RECV_KEY))
        send = reply.first((VENDOR_MICROSOFT, MsAttr.MS_MPPE_SEND_KEY))
        if recv is None or send is None:
            self.counters["accept_without_keys"] += 1
            return AaaAnswer(None, AaaOutcome.FAILURE, reason="Access-Accept without MPPE keys")
        try:
            recv_key = mppe_decrypt(recv, self._secret, request.authenticator)
            send_key = mppe_decrypt(send, self._secret, request.authenticator)
        except RadiusDecodeError as exc:
            self.counters["bad_mppe_key"] += 1
            return AaaAnswer(None, AaaOutcome.FAILURE, reason=f"MS-MPPE key: {exc.reason}")
        if len(recv_key) < MPPE_KEY_LEN or len(send_key) < MPPE_KEY_LEN:
            self.counters["bad_mppe_key"] += 1
            return AaaAnswer(None, AaaOutcome.FAILURE, reason="MS-MPPE keys shorter than 32")
        timeout = reply.first(RadiusAttr.SESSION_TIMEOUT)
        lifetime = float(int.from_bytes(timeout, "big")) if timeout and len(timeout) == 4 else None
        return AaaAnswer(
            eap or None,
            AaaOutcome.SUCCESS,
            msk=mppe_to_msk(recv_key, send_key),
            peer_id=reply.first(RadiusAttr.USER_NAME) or session.user_name,
            lifetime=lifetime,
        )

    def _submit(self, session_id: int, session: _Session, eap: bytes, now: float) -> None:
        attrs: list[tuple[AttrKey, bytes]] = []
        if session.user_name:
            attrs.append((RadiusAttr.USER_NAME, session.user_name))
        attrs.append((RadiusAttr.NAS_IDENTIFIER, self._nas_identifier[:253]))
        station = self._calling_station_id(session_id)
        if station:
            attrs.append((RadiusAttr.CALLING_STATION_ID, station[:253]))
        attrs.append((RadiusAttr.NAS_PORT_TYPE, NAS_PORT_TYPE_VIRTUAL.to_bytes(4, "big")))
        attrs.append((RadiusAttr.FRAMED_MTU, self._framed_mtu.to_bytes(4, "big")))
        if session.state is not None:
            attrs.append((RadiusAttr.STATE, session.state))  # RFC 2865 §5.24: echo unmodified
        attrs.extend(eap_message_attributes(eap))
        request = _Request(session_id, attrs)
        session.request = request
        self._waiting.append(request)
        self._dispatch(now)

    def _dispatch(self, now: float) -> None:
        while self._waiting and len(self._inflight) < 256:
            request = self._waiting.popleft()
            while self._next_identifier in self._inflight:
                self._next_identifier = (self._next_identifier + 1) & 0xFF
            request.identifier = self._next_identifier
            self._next_identifier = (self._next_identifier + 1) & 0xFF
            request.authenticator = self._rng(AUTHENTICATOR_LEN)
            request.raw = build_request(
                request.identifier, request.authenticator, request.attributes, self._secret
            )
            request.sent = 1
            request.interval = self._initial_timeout
            request.deadline = now + request.interval
            self._inflight[request.identifier] = request
            self._outbox.append((request.raw, self._server))
            self.counters["access_request"] += 1

    def _finish(self, request: _Request) -> None:
        if self._inflight.get(request.identifier) is request:
            del self._inflight[request.identifier]
        session = self._sessions.get(request.session_id)
        if session is not None and session.request is request:
            session.request = None

    def _cancel(self, session_id: int) -> None:
        session = self._sessions.get(session_id)
        if session is None or session.request is None:
            return
        request = session.request
        self.counters["cancelled"] += 1
        if request in self._waiting:
            self._waiting.remove(request)
        self._finish(request)

    def _answer(self, session_id: int, answer: AaaAnswer) -> None:
        self._answers.append((session_id, answer))
