"""A sans-IO RADIUS server that runs EAP (RFC 3579) on amistack's EAP authenticator.

A NAS (a PAA in pass-through mode, an 802.1X switch, eapol_test) sends Access-Requests carrying
the peer's EAP messages; each conversation is one `EapAuthenticator`, found again through the
State attribute (RFC 2865 §5.24) the server puts in every Access-Challenge. The conversation ends
in Access-Accept with the MSK in MS-MPPE-Recv-Key/MS-MPPE-Send-Key (RFC 2548 §2.4) or in
Access-Reject. Every request must carry a valid Message-Authenticator (RFC 3579 §3.2); every
answer carries one. A retransmitted request (same source, Identifier and Request Authenticator)
gets the cached answer again instead of driving the EAP state machine twice (RFC 5080 §2.2.2).

Use it as `answer = server.handle_datagram(data, addr, now)`, or like every amistack engine through
`receive_datagram` / `datagrams_to_send` / `get_timer` / `handle_timer` / `next_event`.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from amistack.addr import Addr
from amistack.crypto.rand import RandomSource
from amistack.eap.authenticator import EapAuthenticator, EapOutcome, EapStep
from amistack.eap.method import ServerMethodFactory
from amistack.radius.events import AccessAccepted, AccessRejected, RadiusEvent
from amistack.radius.mppe import mppe_encrypt, msk_to_mppe
from amistack.radius.packet import (
    VENDOR_MICROSOFT,
    AttrKey,
    MsAttr,
    RadiusAttr,
    RadiusCode,
    RadiusDecodeError,
    RadiusPacket,
    build_reply,
    eap_message_attributes,
    has_single_message_authenticator,
    verify_request,
)

logger = logging.getLogger(__name__)

STATE_LEN = 16
EAP_RESPONSE = 2  # RFC 3748 §4


@dataclass
class _Conversation:
    state: bytes
    nas_host: str
    eap: EapAuthenticator
    user_name: bytes | None
    expires: float


@dataclass(frozen=True)
class _CachedAnswer:
    answer: bytes
    expires: float


class RadiusEapServer:
    """EAP over RADIUS, server side. `secret` serves every client not in `clients` (by source IP);
    with `secret=None` only the listed clients are answered."""

    def __init__(
        self,
        secret: bytes | None,
        methods_factory: Callable[[], Sequence[ServerMethodFactory]],
        rng: RandomSource,
        *,
        clients: Mapping[str, bytes] | None = None,
        conversation_timeout: float = 30.0,
        max_conversations: int = 10_000,
        duplicate_window: float = 10.0,
        max_cached_answers: int = 10_000,
        lifetime_for: Callable[[bytes], float | None] | None = None,
    ) -> None:
        if secret is None and not clients:
            raise ValueError("a RADIUS server needs a default secret or a client table")
        self._secret = secret
        self._clients = dict(clients or {})
        self._methods_factory = methods_factory
        self._rng = rng
        self._conversation_timeout = conversation_timeout
        self._max_conversations = max_conversations
        self._duplicate_window = duplicate_window
        self._max_cached = max_cached_answers
        self._lifetime_for = lifetime_for
        self._conversations: collections.OrderedDict[bytes, _Conversation] = (
            collections.OrderedDict()
        )
        self._answers: collections.OrderedDict[tuple[Addr, int, bytes], _CachedAnswer] = (
            collections.OrderedDict()
        )
        self._outbox: list[tuple[bytes, Addr]] = []
        self._events: collections.deque[RadiusEvent] = collections.deque()
        self.counters: collections.Counter[str] = collections.Counter()

    # -- the engine interface -------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        answer = self.handle_datagram(data, addr, now)
        if answer is not None:
            self._outbox.append((answer, addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        # Both tables are ordered by expiry: their first entries are the earliest.
        times: list[float] = []
        if self._conversations:
            times.append(next(iter(self._conversations.values())).expires)
        if self._answers:
            times.append(next(iter(self._answers.values())).expires)
        return min(times, default=None)

    def handle_timer(self, now: float) -> None:
        self._expire(now)

    def next_event(self) -> RadiusEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def conversation_count(self) -> int:
        return len(self._conversations)

    # -- one request in, at most one answer out --------------------------------------------

    def handle_datagram(self, data: bytes, addr: Addr, now: float) -> bytes | None:
        """The answer to send back to `addr`, or None when the datagram is dropped."""
        self._expire(now)
        secret = self._clients.get(addr[0], self._secret)
        if secret is None:
            self.counters["unknown_client"] += 1
            logger.info("RADIUS request from unknown client", extra={"nas": addr})
            return None
        try:
            request = RadiusPacket.decode(data)
        except RadiusDecodeError as exc:
            self.counters["decode_error"] += 1
            logger.debug("undecodable RADIUS datagram: %s", exc, extra={"nas": addr})
            return None
        if request.code != RadiusCode.ACCESS_REQUEST:
            self.counters["unexpected_code"] += 1
            return None
        if not has_single_message_authenticator(request):
            # RFC 3579 §3.2: an EAP-carrying Access-Request without one is silently discarded.
            self.counters["missing_message_authenticator"] += 1
            return None
        if not verify_request(data, request, secret):
            self.counters["bad_message_authenticator"] += 1
            logger.info("Access-Request with a wrong Message-Authenticator", extra={"nas": addr})
            return None
        self.counters["requests"] += 1
        key = (addr, request.identifier, request.authenticator)
        cached = self._answers.get(key)
        if cached is not None:
            self.counters["duplicate"] += 1
            return cached.answer
        answer = self._answer(request, addr, secret, now)
        if answer is not None:
            self._answers[key] = _CachedAnswer(answer, now + self._duplicate_window)
            while len(self._answers) > self._max_cached:
                self._answers.popitem(last=False)
        return answer

    def _answer(self, request: RadiusPacket, addr: Addr, secret: bytes, now: float) -> bytes | None:
        eap = request.eap_message()
        user_name = request.first(RadiusAttr.USER_NAME)
        if eap is None:
            self.counters["no_eap_message"] += 1
            return self._reject(request, addr, secret, [], user_name, "no EAP-Message")
        state = request.first(RadiusAttr.STATE)
        if state is not None:
            conversation = self._conversations.get(state)
            if conversation is None or conversation.nas_host != addr[0]:
                self.counters["unknown_state"] += 1
                return self._reject(request, addr, secret, [], user_name, "unknown State")
            step = conversation.eap.receive(eap)
        else:
            if len(self._conversations) >= self._max_conversations:
                self.counters["conversation_table_full"] += 1
                logger.warning("RADIUS conversation table full", extra={"nas": addr})
                return None
            started = self._start(eap, addr, user_name, now)
            if started is None:
                # Only EAP-Start or an EAP-Response opens a conversation (RFC 3579 §2.1).
                self.counters["unexpected_eap"] += 1
                return None
            conversation, step = started
        return self._step_answer(request, addr, secret, conversation, step, now)

    def _start(
        self, eap: bytes, addr: Addr, user_name: bytes | None, now: float
    ) -> tuple[_Conversation, EapStep] | None:
        if not eap:
            # EAP-Start, an EAP-Message with no data (RFC 3579 §2.1): we ask for the identity.
            authenticator = EapAuthenticator(self._methods_factory(), self._rng)
            step = EapStep(send=authenticator.start(), outcome=EapOutcome.CONTINUE)
        elif len(eap) >= 4 and eap[0] == EAP_RESPONSE:
            # The NAS asked for the identity itself (RFC 3579 §2.1): continue its numbering.
            authenticator = EapAuthenticator(
                self._methods_factory(), self._rng, first_identifier=eap[1]
            )
            authenticator.start()
            step = authenticator.receive(eap)
        else:
            return None
        state = self._new_state()
        conversation = _Conversation(
            state, addr[0], authenticator, user_name, now + self._conversation_timeout
        )
        return conversation, step

    def _new_state(self) -> bytes:
        while True:
            state = self._rng(STATE_LEN)
            if state not in self._conversations:
                return state

    def _step_answer(
        self,
        request: RadiusPacket,
        addr: Addr,
        secret: bytes,
        conversation: _Conversation,
        step: EapStep,
        now: float,
    ) -> bytes | None:
        eap_attrs = eap_message_attributes(step.send) if step.send is not None else []
        if step.outcome is EapOutcome.CONTINUE:
            if step.send is None:
                # The EAP layer discarded the message; the NAS will retransmit or give up.
                self.counters["eap_discarded"] += 1
                return None
            conversation.expires = now + self._conversation_timeout
            self._conversations[conversation.state] = conversation
            self._conversations.move_to_end(conversation.state)
            self.counters["access_challenge"] += 1
            return build_reply(
                RadiusCode.ACCESS_CHALLENGE,
                request,
                [*eap_attrs, (RadiusAttr.STATE, conversation.state)],
                secret,
            )
        self._conversations.pop(conversation.state, None)
        if step.outcome is EapOutcome.FAILURE or step.msk is None:
            reason = step.reason or "EAP failure"
            return self._reject(request, addr, secret, eap_attrs, conversation.user_name, reason)
        recv_key, send_key = msk_to_mppe(step.msk)
        salts = self._salts()
        attrs: list[tuple[AttrKey, bytes]] = [
            *eap_attrs,
            (
                (VENDOR_MICROSOFT, MsAttr.MS_MPPE_RECV_KEY),
                mppe_encrypt(recv_key, secret, request.authenticator, salts[0]),
            ),
            (
                (VENDOR_MICROSOFT, MsAttr.MS_MPPE_SEND_KEY),
                mppe_encrypt(send_key, secret, request.authenticator, salts[1]),
            ),
        ]
        name = step.peer_id or conversation.user_name
        if name:
            attrs.append((RadiusAttr.USER_NAME, name[:253]))
        if self._lifetime_for is not None and step.peer_id is not None:
            lifetime = self._lifetime_for(step.peer_id)
            if lifetime is not None:
                seconds = max(1, min(int(lifetime), 0xFFFFFFFF))
                attrs.append((RadiusAttr.SESSION_TIMEOUT, seconds.to_bytes(4, "big")))
        self.counters["access_accept"] += 1
        self._events.append(
            AccessAccepted(addr, conversation.user_name, step.peer_id, step.session_id)
        )
        logger.info("Access-Accept", extra={"nas": addr, "peer_id": step.peer_id, "user": name})
        return build_reply(RadiusCode.ACCESS_ACCEPT, request, attrs, secret)

    def _salts(self) -> tuple[bytes, bytes]:
        # RFC 2548 §2.4.2: salts in one packet MUST differ; the high bit is set by mppe_encrypt.
        first = bytes([self._rng(1)[0] | 0x80]) + self._rng(1)
        while True:
            second = bytes([self._rng(1)[0] | 0x80]) + self._rng(1)
            if second != first:
                return first, second

    def _reject(
        self,
        request: RadiusPacket,
        addr: Addr,
        secret: bytes,
        eap_attrs: list[tuple[AttrKey, bytes]],
        user_name: bytes | None,
        reason: str,
    ) -> bytes:
        self.counters["access_reject"] += 1
        self._events.append(AccessRejected(addr, user_name, reason))
        logger.info("Access-Reject: %s", reason, extra={"nas": addr, "user": user_name})
        return build_reply(RadiusCode.ACCESS_REJECT, request, eap_attrs, secret)

    def _expire(self, now: float) -> None:
        while self._conversations:
            state, conversation = next(iter(self._conversations.items()))
            if conversation.expires > now:
                break
            del self._conversations[state]
            self.counters["conversation_timeout"] += 1
        while self._answers:
            key, cached = next(iter(self._answers.items()))
            if cached.expires > now:
                break
            del self._answers[key]
