"""What the PANA engines report (aioquic-style event classes); read them with `next_event()`."""

from __future__ import annotations

from dataclasses import dataclass

from amistack.addr import Addr
from amistack.frozeninit import frozen_init
from amistack.pana.keys import PanaSecurityContext


@frozen_init
@dataclass(frozen=True)
class Authenticated:
    """A (re-)authentication completed: a new PANA SA (`context`, new Key-Id) is in force."""

    session_id: int
    peer_id: bytes | None  # the EAP peer identity (PAA side); None on the PaC
    context: PanaSecurityContext
    lifetime: float  # seconds, from Session-Lifetime
    reauth: bool  # True when an existing session was re-authenticated
    addr: Addr  # the PaC (PAA side) or the PAA (PaC side)


@dataclass(frozen=True)
class AuthenticationFailed:
    """EAP failed, authorization was refused, or the result could not be trusted."""

    session_id: int
    result_code: int  # ResultCode (RFC 5191 §8.7)
    reason: str
    addr: Addr
    peer_id: bytes | None = None  # the identity the failed run claimed (PAA side; unverified)
    # PaC side: the PAA answered with a failure Result-Code (PAR with the C flag), rather than
    # a timeout or a check of our own: trying the same credentials again will not help
    refused: bool = False


@dataclass(frozen=True)
class SessionTerminated:
    """The session is gone: PTR/PTA, lifetime expiry, revocation, retransmission give-up.
    `by_peer`: the other end ended it with a PTR (its Termination-Cause in `reason`)."""

    session_id: int
    reason: str
    by_peer: bool = False


@dataclass(frozen=True)
class PingCompleted:
    """A PNR/PNA (P flag) round trip we started completed."""

    session_id: int


PanaEvent = Authenticated | AuthenticationFailed | SessionTerminated | PingCompleted
