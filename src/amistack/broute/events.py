"""What the B-route engines report (aioquic-style event classes); read them with `next_event()`.

HEMS side (`BrouteHems`): LinkUp, LinkDown, Received, KeyRotated, ReconnectStage,
ReconnectStageEnded, ReconnectFailed, RescanRequested, AttemptFailed.
Meter side (`BrouteMeter`): HemsConnected, HemsDisconnected, HemsAuthFailed (the ECHONET Lite
node's own events are passed through unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from amistack.addr import Addr
from amistack.keymgmt.ukmf import KeyId


class Stage(IntEnum):
    """How a link came up (guideline §6.5 reconnection stages; 0 = the first connection)."""

    INITIAL = 0  # start(): the first authentication
    REAUTH = 1  # PANA re-authentication of the existing session
    NEW_AUTH = 2  # a new initial authentication (PCI) to the same meter address
    RESCAN = 3  # the application scanned again and gave the meter's (new) address


# -- HEMS side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkUp:
    """PANA succeeded and the link key is installed: `send` works.
    `elapsed`: seconds the stage that brought the link up took (from start() for stage 0)."""

    session_id: int
    key_id: KeyId
    stage: Stage
    elapsed: float
    downtime: float = 0.0  # seconds since the link went down (0 for the first connection)


@dataclass(frozen=True)
class LinkDown:
    """The link is considered down: reconnection (§6.5) begins unless terminated locally.
    `by_meter`: the meter ended the PANA session (PTR); no reconnection unless configured."""

    reason: str
    by_meter: bool = False


@dataclass(frozen=True)
class KeyRotated:
    """A re-authentication while the link was up installed a new link key."""

    session_id: int
    key_id: KeyId


@dataclass(frozen=True)
class Received:
    """A datagram from the meter: decrypted, authenticated, not replayed."""

    payload: bytes
    src_port: int
    dst_port: int
    src_addr: Addr  # (meter host, src_port)
    multicast: bool = False  # the meter addressed it to a multicast group (e.g. INF)


@dataclass(frozen=True)
class ReconnectStage:
    """A reconnection stage began (§6.5)."""

    stage: Stage
    started_at: float


@dataclass(frozen=True)
class ReconnectStageEnded:
    """A reconnection stage ended: `ok` (the link is up) or timed out / failed."""

    stage: Stage
    ok: bool
    started_at: float
    elapsed: float


@dataclass(frozen=True)
class RescanRequested:
    """Stage 3: scan again (radio/application) and call `BrouteHems.rescan_result(addr, now)`."""

    started_at: float
    deadline: float


@dataclass(frozen=True)
class AttemptFailed:
    """One authentication attempt while connecting failed (no answer, the meter restarted it);
    the HEMS retries within the stage (`restart_delay`). `final`: the meter refused our
    credentials (EAP failure): the HEMS stops at once (link CLOSED; `start()` to try again),
    since the same B-route ID and password would only be refused again."""

    stage: Stage
    reason: str
    final: bool = False


@dataclass(frozen=True)
class ReconnectFailed:
    """All stages failed; the HEMS retries from stage 2 at `retry_at`."""

    downtime: float
    retry_at: float


# -- meter side --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HemsConnected:
    """A HEMS authenticated (or re-authenticated: `reauth`) and has a link key."""

    session_id: int
    rbid: str
    addr: Addr
    key_id: KeyId
    reauth: bool


@dataclass(frozen=True)
class HemsDisconnected:
    """A HEMS's session ended (terminated, expired, replaced by a newcomer: guideline §6.12)."""

    session_id: int
    reason: str


@dataclass(frozen=True)
class HemsAuthFailed:
    """An authentication attempt failed; connected HEMSes are not affected (§6.12)."""

    session_id: int
    addr: Addr
    reason: str


BrouteHemsEvent = (
    LinkUp
    | LinkDown
    | KeyRotated
    | Received
    | ReconnectStage
    | ReconnectStageEnded
    | RescanRequested
    | AttemptFailed
    | ReconnectFailed
)
BrouteMeterEvent = HemsConnected | HemsDisconnected | HemsAuthFailed
