"""The EAP peer (RFC 3748 §4, state machine after RFC 4137 §4), sans-IO.

`receive(eap_bytes)` returns the response to send or None. Everything unusable is dropped and
counted in `counters`, never raised:

* Request/Identity -> Response/Identity (only before a method is chosen, RFC 4137 IDENTITY).
* Request/Notification -> Response/Notification (RFC 3748 §5.2); the text is kept.
* a request for a method we have -> that method; for one we lack -> Nak listing ours (§5.3.1).
* a request whose Identifier equals the last one answered -> the last response again, verbatim
  (§4.1, RFC 4137 RETRANSMIT): the authenticator retransmitted because our answer was lost.
* EAP-Success: accepted only when the method has decided COND_SUCC/UNCOND_SUCC and the
  Identifier matches the last response (RFC 4137 SUCCESS); otherwise counted as early.
* EAP-Failure: accepted unless the method decided UNCOND_SUCC (RFC 4137 FAILURE).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from enum import Enum

from amistack.eap.method import Decision, MethodState, PeerMethod
from amistack.eap.packet import EapCode, EapDecodeError, EapPacket, EapType, type_name

logger = logging.getLogger(__name__)

# Types that are part of EAP itself and never offered as methods (RFC 3748 §5.3.1).
_NON_METHOD_TYPES = (EapType.IDENTITY, EapType.NOTIFICATION, EapType.NAK)


class EapPeerState(Enum):
    IDLE = "idle"  # no method chosen yet
    METHOD = "method"  # a method runs
    SUCCESS = "success"
    FAILURE = "failure"


class EapPeer:
    """One EAP conversation on the peer side; create a new one for every (re-)authentication."""

    def __init__(self, identity: bytes, methods: Mapping[int, Callable[[], PeerMethod]]) -> None:
        self.identity = identity
        self._factories = dict(methods)
        self.state = EapPeerState.IDLE
        self.method: PeerMethod | None = None
        self.msk: bytes | None = None
        self.emsk: bytes | None = None
        self.session_id: bytes | None = None
        self.notifications: list[bytes] = []
        self.failure_reason = ""
        self.counters: Counter[str] = Counter()
        self._last_id: int | None = None
        self._last_response: bytes | None = None

    @property
    def supported_types(self) -> list[int]:
        """Our method types in preference order, as the Nak lists them."""
        return [t for t in self._factories if t not in _NON_METHOD_TYPES]

    def receive(self, data: bytes) -> bytes | None:
        try:
            packet = EapPacket.decode(data)
        except EapDecodeError as exc:
            logger.debug("EAP peer drops undecodable input: %s", exc)
            self.counters["decode_error"] += 1
            return None
        if packet.code is EapCode.REQUEST:
            return self._on_request(packet)
        if packet.code is EapCode.SUCCESS:
            self._on_success(packet)
        elif packet.code is EapCode.FAILURE:
            self._on_failure(packet)
        else:
            self.counters["unexpected_response"] += 1
        return None

    # -- requests ---------------------------------------------------------------------------

    def _answer(self, identifier: int, type_: int, type_data: bytes) -> bytes:
        response = EapPacket.response(identifier, type_, type_data).encode()
        self._last_id = identifier
        self._last_response = response
        return response

    def _on_request(self, req: EapPacket) -> bytes | None:
        if req.identifier == self._last_id and self._last_response is not None:
            self.counters["retransmitted_response"] += 1
            return self._last_response
        if self.state in (EapPeerState.SUCCESS, EapPeerState.FAILURE):
            self.counters["request_after_completion"] += 1
            return None
        if req.type == EapType.NOTIFICATION:
            self.notifications.append(req.type_data)
            logger.info("EAP notification: %r", req.type_data)
            return self._answer(req.identifier, EapType.NOTIFICATION, b"")
        if self.method is None:
            return self._choose(req)
        if req.type != self.method.method_type:
            self.counters["request_for_other_method"] += 1
            return None
        if self.method.state is MethodState.DONE:
            self.counters["request_after_method_done"] += 1
            return None
        return self._run_method(self.method, req)

    def _choose(self, req: EapPacket) -> bytes | None:
        if req.type == EapType.IDENTITY:
            return self._answer(req.identifier, EapType.IDENTITY, self.identity)
        if req.type is None or req.type < EapType.MD5_CHALLENGE:
            # Nak (a Response-only type) or reserved 0: nothing to answer, nothing to Nak,
            # since a Nak answers only authentication types, 4 and up (§5.3.1).
            self.counters["invalid_request_type"] += 1
            return None
        factory = self._factories.get(req.type)
        if factory is None:
            self.counters["nak_sent"] += 1
            logger.info("EAP peer naks %s, proposes %s", type_name(req.type), self.supported_types)
            return self._answer(req.identifier, EapType.NAK, bytes(self.supported_types or [0]))
        try:
            method = factory()
        except ValueError as exc:  # misconfiguration (e.g. a PSK of the wrong size)
            logger.error("EAP method %s cannot start: %s", type_name(req.type), exc)
            self.counters["method_init_error"] += 1
            return None
        self.method = method
        self.state = EapPeerState.METHOD
        return self._run_method(method, req)

    def _run_method(self, method: PeerMethod, req: EapPacket) -> bytes | None:
        type_data = method.process(req)
        if type_data is None:
            if method.state is MethodState.DONE and method.decision is Decision.FAIL:
                # The method has failed for good (e.g. MAC_S did not verify): nothing will
                # make this conversation succeed, so say so now rather than at a timeout.
                self.counters["method_failed"] += 1
                self._fail(getattr(method, "failure_reason", "") or "method failed")
            else:
                self.counters["method_discarded"] += 1
            return None
        return self._answer(req.identifier, method.method_type, type_data)

    # -- Success / Failure ------------------------------------------------------------------

    def _on_success(self, packet: EapPacket) -> None:
        if self.state is EapPeerState.SUCCESS:
            self.counters["duplicate_success"] += 1
            return
        if self.state is EapPeerState.FAILURE:
            self.counters["success_after_failure"] += 1
            return
        method = self.method
        if method is None or method.decision is Decision.FAIL:
            self.counters["early_success"] += 1
            logger.info("EAP peer ignores an EAP-Success before its method allows it")
            return
        if packet.identifier != self._last_id:
            self.counters["success_bad_identifier"] += 1
            return
        self.msk, self.emsk, self.session_id = method.msk, method.emsk, method.session_id
        self.state = EapPeerState.SUCCESS
        logger.info("EAP peer: success", extra={"identity": self.identity})

    def _on_failure(self, packet: EapPacket) -> None:
        if self.state in (EapPeerState.SUCCESS, EapPeerState.FAILURE):
            self.counters["failure_after_completion"] += 1
            return
        if self.method is not None and self.method.decision is Decision.UNCOND_SUCC:
            self.counters["failure_after_uncond_success"] += 1
            return
        if packet.identifier != self._last_id:
            self.counters["failure_bad_identifier"] += 1
            return
        self._fail("EAP-Failure")

    def _fail(self, reason: str) -> None:
        self.state = EapPeerState.FAILURE
        self.failure_reason = reason
        self.msk = self.emsk = self.session_id = None
        logger.info("EAP peer: failure (%s)", reason, extra={"identity": self.identity})
