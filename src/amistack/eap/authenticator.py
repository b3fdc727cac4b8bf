"""The EAP authenticator (RFC 3748 §4, after RFC 4137 §5 "EAP stand-alone authenticator").

`start()` gives the Request/Identity (with `skip_identity`, the first method's request: RFC 3748
§2 lets an authenticator bypass the Identity exchange, and a method that learns the peer's
identity in its own exchange - EAP-PSK's ID_P, RFC 4764 §3.1 - saves a round trip); every
`receive(response)` gives an `EapStep`: the next request (CONTINUE), or the EAP-Success/Failure
to send together with the outcome, the keys and the authenticated peer identity. Input that does
not belong to the conversation (undecodable, a wrong or stale Identifier, a duplicate, an
unexpected type) is dropped, counted in `counters` and answered with
`EapStep(send=None, outcome=CONTINUE, reason=...)`.

Retransmission is the lower layer's job: PANA (RFC 5191 §9) is reliable, so this engine never
retransmits on its own (RFC 3748 §4.3); `last_request` holds what is outstanding.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from amistack.crypto import RandomSource
from amistack.eap.method import ServerMethod, ServerMethodFactory, ServerOutcome
from amistack.eap.packet import EapCode, EapDecodeError, EapPacket, EapType, type_name
from amistack.frozeninit import frozen_init

logger = logging.getLogger(__name__)


class EapOutcome(Enum):
    CONTINUE = "continue"
    SUCCESS = "success"
    FAILURE = "failure"


@frozen_init
@dataclass(frozen=True)
class EapStep:
    """One step of the authenticator. SUCCESS/FAILURE carry the EAP-Success/Failure in `send`."""

    send: bytes | None
    outcome: EapOutcome
    msk: bytes | None = None
    emsk: bytes | None = None
    session_id: bytes | None = None
    peer_id: bytes | None = None
    reason: str = ""

    def __repr__(self) -> str:  # keep keys out of logs
        return (
            f"EapStep(outcome={self.outcome.value}, send={len(self.send or b'')} bytes, "
            f"peer_id={self.peer_id!r}, reason={self.reason!r})"
        )


class _Phase(Enum):
    NEW = "new"
    IDENTITY = "identity"  # Request/Identity outstanding
    PROPOSED = "proposed"  # a method's first request outstanding: a Nak is acceptable
    METHOD = "method"
    DONE = "done"


class EapAuthenticator:
    """One EAP conversation on the authenticator side."""

    def __init__(
        self,
        methods: Sequence[ServerMethodFactory],
        rng: RandomSource,
        first_identifier: int | None = None,
        *,
        skip_identity: bool = False,
    ) -> None:
        if not methods:
            raise ValueError("an EAP authenticator needs at least one method")
        # Each factory is called once here so the method types are known for Nak handling;
        # a method instance serves one conversation only.
        self._candidates: list[ServerMethod] = [factory() for factory in methods]
        if first_identifier is None:
            first_identifier = rng(1)[0]
        if not 0 <= first_identifier <= 0xFF:
            raise ValueError("first_identifier must be 0..255")
        self._next_id = first_identifier
        self._current_id: int | None = None
        self._answered: set[int] = set()
        self._phase = _Phase.NEW
        self._tried: set[int] = set()
        self.method: ServerMethod | None = None
        self.identity: bytes | None = None
        self.outcome = EapOutcome.CONTINUE
        self.last_request: bytes | None = None
        self.counters: Counter[str] = Counter()
        self._skip_identity = skip_identity

    @property
    def method_types(self) -> list[int]:
        return [m.method_type for m in self._candidates]

    # -- sending ----------------------------------------------------------------------------

    def _request(self, type_: int, type_data: bytes, identifier: int) -> bytes:
        self._current_id = identifier
        self._next_id = (identifier + 1) % 256
        self._answered.discard(identifier)  # a long conversation reuses identifiers mod 256
        self.last_request = EapPacket.request(identifier, type_, type_data).encode()
        return self.last_request

    def start(self) -> bytes:
        """The request that opens the conversation (the same bytes if repeated): Request/Identity,
        or with `skip_identity` the first method that accepts an unknown peer (RFC 3748 §2); a
        peer that wants another method Naks it, as after an Identity exchange."""
        if self._phase is _Phase.NEW:
            if self._skip_identity:
                for candidate in self._candidates:
                    if candidate.accepts(None):
                        step = self._propose(candidate, self._next_id)
                        assert step.send is not None
                        return step.send
            self._phase = _Phase.IDENTITY
            return self._request(EapType.IDENTITY, b"", self._next_id)
        return self.last_request or b""

    def _drop(self, reason: str) -> EapStep:
        self.counters[reason] += 1
        logger.debug("EAP authenticator drops a response: %s", reason)
        return EapStep(None, EapOutcome.CONTINUE, reason=reason)

    def _failure(self, identifier: int, reason: str) -> EapStep:
        self._phase = _Phase.DONE
        self.outcome = EapOutcome.FAILURE
        self.counters["failure"] += 1
        peer_id = self.method.peer_id if self.method is not None else None
        logger.info(
            "EAP authentication failed: %s",
            reason,
            extra={"peer_id": peer_id or self.identity},
        )
        return EapStep(
            EapPacket.failure(identifier).encode(),
            EapOutcome.FAILURE,
            peer_id=peer_id or self.identity,
            reason=reason,
        )

    def _success(self, identifier: int, method: ServerMethod) -> EapStep:
        self._phase = _Phase.DONE
        self.outcome = EapOutcome.SUCCESS
        self.counters["success"] += 1
        peer_id = method.peer_id or self.identity
        logger.info("EAP authentication succeeded", extra={"peer_id": peer_id})
        return EapStep(
            EapPacket.success(identifier).encode(),
            EapOutcome.SUCCESS,
            msk=method.msk,
            emsk=method.emsk,
            session_id=method.session_id,
            peer_id=peer_id,
        )

    def _propose(self, method: ServerMethod, identifier: int) -> EapStep:
        self.method = method
        self._tried.add(method.method_type)
        self._phase = _Phase.PROPOSED
        type_data = method.initial_request(self.identity, self._next_id)
        return EapStep(
            self._request(method.method_type, type_data, self._next_id), EapOutcome.CONTINUE
        )

    # -- receiving --------------------------------------------------------------------------

    def receive(self, data: bytes) -> EapStep:
        try:
            packet = EapPacket.decode(data)
        except EapDecodeError as exc:
            logger.debug("EAP authenticator: undecodable input: %s", exc)
            return self._drop("decode_error")
        if packet.code is not EapCode.RESPONSE:
            return self._drop("not_a_response")
        if packet.identifier in self._answered:
            return self._drop("duplicate_response")
        if self._phase in (_Phase.NEW, _Phase.DONE):
            return self._drop("no_outstanding_request")
        if packet.identifier != self._current_id:
            return self._drop("identifier_mismatch")
        type_ = packet.type
        if self._phase is _Phase.IDENTITY:
            if type_ != EapType.IDENTITY:
                return self._drop("unexpected_type")
            self._answered.add(packet.identifier)
            self.identity = packet.type_data
            for candidate in self._candidates:
                if candidate.accepts(self.identity):
                    return self._propose(candidate, packet.identifier)
            return self._failure(packet.identifier, "no method is offered to this identity")
        method = self.method
        if method is None:  # cannot happen past IDENTITY; keeps the types honest
            return self._drop("no_method")
        if type_ == EapType.NAK:
            if self._phase is not _Phase.PROPOSED:
                return self._drop("unexpected_nak")
            self._answered.add(packet.identifier)
            return self._on_nak(packet)
        if type_ != method.method_type:
            return self._drop("unexpected_type")
        step = method.process(packet, self._next_id)
        if step.outcome is ServerOutcome.IGNORE:
            return self._drop(f"method_ignored:{step.reason}")
        self._answered.add(packet.identifier)
        if step.outcome is ServerOutcome.REQUEST:
            self._phase = _Phase.METHOD
            return EapStep(
                self._request(method.method_type, step.type_data, self._next_id),
                EapOutcome.CONTINUE,
            )
        if step.outcome is ServerOutcome.SUCCESS:
            return self._success(packet.identifier, method)
        return self._failure(packet.identifier, step.reason or f"{type_name(type_)} failed")

    def _on_nak(self, nak: EapPacket) -> EapStep:
        wanted = set(nak.type_data)  # legacy Nak: one byte per acceptable type (§5.3.1)
        for candidate in self._candidates:
            t = candidate.method_type
            if t in wanted and t not in self._tried and candidate.accepts(self.identity):
                logger.info("EAP peer naked; trying %s", type_name(t))
                return self._propose(candidate, nak.identifier)
        return self._failure(nak.identifier, f"no acceptable method (peer wants {sorted(wanted)})")
