"""What an RPL node reports (aioquic-style event classes); read them with `next_event()`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Joined:
    """The node attached to a DODAG (first parent chosen, or again after a detach)."""

    dodag_id: bytes
    version: int
    rank: int
    parent: bytes  # link-local address of the preferred parent


@dataclass(frozen=True)
class ParentChanged:
    old: bytes | None
    new: bytes
    rank: int


@dataclass(frozen=True)
class Detached:
    """No acceptable parent remains: the node poisoned its rank (§8.2.2.5) and waits to rejoin."""

    reason: str


@dataclass(frozen=True)
class GlobalRepair:
    """The root started a new DODAG version, or this node moved to one (§3.2.2)."""

    version: int


@dataclass(frozen=True)
class RouteAdded:
    """A downward route: `via` is the target's parent (non-storing root, from the Transit
    Information) or the next hop child (storing mode)."""

    target: bytes
    via: bytes


@dataclass(frozen=True)
class RouteRemoved:
    target: bytes
    reason: str


@dataclass(frozen=True)
class DaoAcknowledged:
    sequence: int
    status: int


@dataclass(frozen=True)
class DaoFailed:
    """No DAO-ACK after every retransmission, or the ACK rejected the DAO (status >= 128)."""

    sequence: int
    status: int | None


@dataclass(frozen=True)
class BogusRank:
    """A neighbour advertised a rank it cannot have; it is ignored for a while."""

    neighbor: bytes
    rank: int
    reason: str


@dataclass(frozen=True)
class LoopDetected:
    """The data path showed a loop (§11.2.2.2 second rank error, or an RFC 6554 §4.2 loop)."""

    src: bytes
    dst: bytes
    reason: str


@dataclass(frozen=True)
class DataReceived:
    """A non-RPL packet addressed to this node arrived over the DODAG."""

    src: bytes
    payload: bytes
    next_header: int


RplEvent = (
    Joined
    | ParentChanged
    | Detached
    | GlobalRepair
    | RouteAdded
    | RouteRemoved
    | DaoAcknowledged
    | DaoFailed
    | BogusRank
    | LoopDetected
    | DataReceived
)
