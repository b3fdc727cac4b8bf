"""What a work session on the handheld reports (`WorkSession.next_event`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkStarted:
    """The technician started a work session: the handheld now authenticates itself."""

    technician: str
    work_order: str


@dataclass(frozen=True)
class HandheldAuthenticated:
    """The key server authenticated the handheld (its own PANA run) and delivered the isolated
    PAN's group keys: the handheld is now DODAG root and PANA relay."""

    key_id: str  # the handheld's own session key id (never a key)


@dataclass(frozen=True)
class HandheldRefused:
    """The key server refused the handheld, or its PANA session ended (revoked, expired)."""

    reason: str


@dataclass(frozen=True)
class MeterRouted:
    """A meter appeared in the DODAG root's route table: it authenticated (it holds the group
    key, which only a PANA success through the relay gives it) and sent a DAO."""

    address: str  # its global IPv6 address


@dataclass(frozen=True)
class WorkEnded:
    """The work session ended (stop, logout, timeout, refusal): DODAG, channel and keys gone."""

    reason: str


WorkEvent = WorkStarted | HandheldAuthenticated | HandheldRefused | MeterRouted | WorkEnded
