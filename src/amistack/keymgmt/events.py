"""What key rings report: rotation, shortening and expiry of application keys (no key material)."""

from __future__ import annotations

from dataclasses import dataclass

from amistack.frozeninit import frozen_init
from amistack.keymgmt.ukmf import KeyId


@frozen_init
@dataclass(frozen=True)
class KeysInstalled:
    """A new generation: every registered purpose derived; `previous` is what it rotates out."""

    peer_id: bytes
    key_id: KeyId
    purposes: tuple[str, ...]
    not_before: float
    not_after: float
    previous: KeyId | None


@frozen_init
@dataclass(frozen=True)
class KeysSuperseded:
    """An older generation stops being used to send; it still decrypts until `not_after`."""

    peer_id: bytes
    key_id: KeyId
    by: KeyId
    not_after: float


@dataclass(frozen=True)
class KeysRetired:
    """The session that produced a generation ended: no longer sent with; decrypts until
    `not_after` (the overlap window)."""

    peer_id: bytes
    key_id: KeyId
    not_after: float


@dataclass(frozen=True)
class KeysShortened:
    """Revocation cut the remaining lifetime of a generation."""

    peer_id: bytes
    key_id: KeyId
    not_after: float


@dataclass(frozen=True)
class KeysExpired:
    """Keys reached `not_after`: gone from memory (bytes zeroed) and from persistence."""

    peer_id: bytes
    key_id: KeyId
    purposes: tuple[str, ...]


KeyEvent = KeysInstalled | KeysSuperseded | KeysRetired | KeysShortened | KeysExpired


# -- the mesh group keys of a PAN (keymgmt/groupkeys.py; key index and times, never the key) -----


@dataclass(frozen=True)
class GroupKeyInstalled:
    """A new group key of `pan_id`: `reason` is "initial", "scheduled" (the next key, at the
    install fraction of the current one's life), "rotation" (revocation) or "lapsed" (none was
    live, e.g. after a long outage of the key server)."""

    pan_id: int
    index: int
    serial: int
    not_before: float
    not_after: float
    reason: str


@dataclass(frozen=True)
class GroupKeyActivated:
    """The key at `index` became the one frames are sent under."""

    pan_id: int
    index: int
    serial: int


@dataclass(frozen=True)
class GroupKeyExpired:
    """A group key left the ring: its lifetime ended, or a rotation discarded it unused."""

    pan_id: int
    index: int
    serial: int
    reason: str


@dataclass(frozen=True)
class GroupKeyRotationScheduled:
    """A rotation will happen at `at` (revocations until then join it)."""

    pan_id: int
    at: float
    reason: str


GroupKeyEvent = GroupKeyInstalled | GroupKeyActivated | GroupKeyExpired | GroupKeyRotationScheduled
