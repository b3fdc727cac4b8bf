"""The built-in AAA backend: an `amistack.eap.EapAuthenticator` per PANA session, in process."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

from amistack.crypto import RandomSource
from amistack.eap.authenticator import EapAuthenticator, EapOutcome
from amistack.eap.method import ServerMethodFactory
from amistack.pana.aaa import AaaAnswer, AaaOutcome

logger = logging.getLogger(__name__)

MAX_IGNORED = 3  # dropped EAP responses in a row before the run is failed


def _no_lifetime(peer_id: bytes) -> float | None:
    return None


class LocalEapBackend:
    """`AaaBackend` that answers at once. `lifetime_for(peer_id)` gives the per-peer session
    lifetime (None = the PAA default; <= 0 = authorization refused: revocation shortens it).
    `skip_identity`: open each conversation with the first method's request instead of
    Request/Identity (`EapAuthenticator`): one PANA round trip fewer per authentication."""

    def __init__(
        self,
        methods_factory: Callable[[], Sequence[ServerMethodFactory]],
        rng: RandomSource,
        lifetime_for: Callable[[bytes], float | None] = _no_lifetime,
        *,
        skip_identity: bool = False,
    ) -> None:
        self._methods_factory = methods_factory
        self._skip_identity = skip_identity
        self._rng = rng
        self._lifetime_for = lifetime_for
        self._auths: dict[int, EapAuthenticator] = {}
        self._ignored: Counter[int] = Counter()
        self.counters: Counter[str] = Counter()

    def begin(self, session_id: int, now: float) -> AaaAnswer | None:
        auth = EapAuthenticator(
            self._methods_factory(), self._rng, skip_identity=self._skip_identity
        )
        self._auths[session_id] = auth
        self._ignored.pop(session_id, None)
        return AaaAnswer(eap=auth.start(), outcome=AaaOutcome.CONTINUE)

    def process(self, session_id: int, eap: bytes, now: float) -> AaaAnswer | None:
        auth = self._auths.get(session_id)
        if auth is None:
            self.counters["no_conversation"] += 1
            return AaaAnswer(eap=None, outcome=AaaOutcome.FAILURE, reason="no EAP conversation")
        step = auth.receive(eap)
        if step.outcome is EapOutcome.CONTINUE:
            if step.send is not None:
                self._ignored.pop(session_id, None)
                return AaaAnswer(eap=step.send, outcome=AaaOutcome.CONTINUE)
            # The EAP server dropped the response: retransmit its request (RFC 3748 §4.3),
            # a bounded number of times, so the lockstep PANA exchange cannot stall.
            self._ignored[session_id] += 1
            if self._ignored[session_id] > MAX_IGNORED or auth.last_request is None:
                self.end(session_id)
                return AaaAnswer(None, AaaOutcome.FAILURE, reason=f"EAP: {step.reason}")
            return AaaAnswer(eap=auth.last_request, outcome=AaaOutcome.CONTINUE)
        self.end(session_id)
        if step.outcome is EapOutcome.FAILURE:
            return AaaAnswer(
                eap=step.send, outcome=AaaOutcome.FAILURE, peer_id=step.peer_id, reason=step.reason
            )
        lifetime = self._lifetime_for(step.peer_id) if step.peer_id is not None else None
        return AaaAnswer(
            eap=step.send,
            outcome=AaaOutcome.SUCCESS,
            msk=step.msk,
            peer_id=step.peer_id,
            lifetime=lifetime,
        )

    def end(self, session_id: int) -> None:
        self._auths.pop(session_id, None)
        self._ignored.pop(session_id, None)

    @property
    def active(self) -> int:
        return len(self._auths)
