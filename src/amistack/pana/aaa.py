"""The seam between the PAA and whatever runs the EAP server: built in, or a RADIUS AAA server.

A backend answers at once (the built-in EAP server) or later (a RADIUS round trip): `begin` and
`process` return None when the answer will arrive through `PanaAuthAgent.aaa_answer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from amistack.frozeninit import frozen_init


class AaaOutcome(Enum):
    CONTINUE = "continue"
    SUCCESS = "success"
    FAILURE = "failure"


@frozen_init
@dataclass(frozen=True)
class AaaAnswer:
    """One answer of the EAP server side: the EAP message to carry and where the session stands."""

    eap: bytes | None
    outcome: AaaOutcome
    msk: bytes | None = None
    peer_id: bytes | None = None
    lifetime: float | None = None  # seconds the session may live; None = the PAA's default
    reason: str = ""

    def __repr__(self) -> str:
        return (
            f"AaaAnswer(outcome={self.outcome.value}, peer_id={self.peer_id!r}, "
            f"lifetime={self.lifetime}, reason={self.reason!r})"
        )


class AaaBackend(Protocol):
    def begin(self, session_id: int, now: float) -> AaaAnswer | None:
        """The first EAP request of a new (re-)authentication of `session_id`."""

    def process(self, session_id: int, eap: bytes, now: float) -> AaaAnswer | None:
        """The EAP server's answer to the peer's EAP message `eap`."""

    def end(self, session_id: int) -> None:
        """The session is gone: forget its EAP state."""


def __getattr__(name: str) -> object:
    # The contract names `pana.aaa.LocalEapBackend`; it lives in local_backend.py (it needs
    # amistack.eap, which this seam must not import) and is re-exported lazily here.
    if name == "LocalEapBackend":
        from amistack.pana.local_backend import LocalEapBackend

        return LocalEapBackend
    raise AttributeError(name)
