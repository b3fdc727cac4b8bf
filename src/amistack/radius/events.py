"""What the RADIUS EAP server tells its owner (audit, key server): small frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from amistack.addr import Addr


@dataclass(frozen=True)
class AccessAccepted:
    """An EAP conversation ended in Access-Accept; the MSK went to the NAS in MS-MPPE keys."""

    nas: Addr
    user_name: bytes | None
    peer_id: bytes | None
    session_id: bytes | None


@dataclass(frozen=True)
class AccessRejected:
    """An EAP conversation ended in Access-Reject."""

    nas: Addr
    user_name: bytes | None
    reason: str


RadiusEvent = AccessAccepted | AccessRejected
