"""Mesh group keys: one network key ring per PAN at the key server, delivered wrapped (sans-IO).

The mesh's link key is shared by neighbours, so it cannot be a meter's pairwise UKMF key. Every
PAN has a group key (GTK) ring instead, and each meter receives it out of its own authentication
(the AMSO idea: every key comes from the one EAP run):

    PSK -> EAP-PSK MSK -> PANA session (UKMF) -> GTK-KEK (purpose "gtk-kek") -> wrapped GTKs

The ring (docs/mesh-keys.md) holds the current key and, from `install_fraction` of its life on,
the next one, which becomes current when the current one ends. The numbers follow wsbrd's
defaults (wisun-br-linux, ws_config.h): DEFAULT_GTK_EXPIRE_OFFSET 30 days and
DEFAULT_GTK_NEW_INSTALL_REQUIRED 80 (% of the GTK lifetime). Keys are named by an 802.15.4 key
index (key id mode 1) 1..7, taken in turn (7 wraps to 1); never two live keys share one.

Revocation asks for a rotation (`rotate`): after `rotation_delay` (revocations in between join
the same rotation) a fresh key is installed that becomes current `activation_delay` later; the
current key is cut to that moment and the next key, which the revoked meter also holds, is
discarded unused. The key server pushes the new ring to every authenticated meter in the
activation delay (keymgmt/server.py).

Delivery (`GroupKeyDelivery`): a vendor-specific PANA AVP (pana/constants.py
`VendorAvpCode.GROUP_KEY_DELIVERY`) whose value is an RFC 3394 AES key wrap, under the session's
GTK-KEK, of

    version(1) | count(1) | PAN id(2) | serial(4)
    count x [ index(1) | reserved(3) | starts_in(4) | expires_in(4) | reserved(4) | key(16) ]

Everything is inside the wrap, so RFC 3394's integrity check covers the metadata too; times are
whole seconds (rounded up) relative to the message (the two clocks need not agree). `serial`
counts the keys a PAN ever installed: a meter refuses a delivery older than the newest it
accepted.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from amistack.crypto import RandomSource
from amistack.keymgmt.events import (
    GroupKeyActivated,
    GroupKeyEvent,
    GroupKeyExpired,
    GroupKeyInstalled,
    GroupKeyRotationScheduled,
)
from amistack.keymgmt.ukmf import GTK_KEK, derive
from amistack.pana.avp import Avp
from amistack.pana.constants import AMISTACK_VENDOR_ID, VendorAvpCode
from amistack.pana.keys import PanaSecurityContext

GTK_LENGTH = 16  # AES-128 for CCM* (IEEE 802.15.4-2006 §7.6.3)
KEY_INDEX_MIN, KEY_INDEX_MAX = 1, 7  # key id mode 1 indexes used for the mesh (docs/mesh-keys.md)
DEFAULT_LIFETIME = 30 * 86400.0  # wsbrd DEFAULT_GTK_EXPIRE_OFFSET: 30 days
DEFAULT_INSTALL_FRACTION = 0.8  # wsbrd DEFAULT_GTK_NEW_INSTALL_REQUIRED: 80 % of the lifetime
DEFAULT_ROTATION_DELAY = 10.0  # s: revocations this close together make one rotation
DEFAULT_ACTIVATION_DELAY = 300.0  # s: from a rotation to its key's use (the push's time)
DELIVERY_VERSION = 1
_HEAD = struct.Struct("!BBHI")  # version, count, PAN id, serial
_ENTRY = struct.Struct("!B3xII4x")  # index, starts_in, expires_in, reserved (then the key)
_ENTRY_LENGTH = _ENTRY.size + GTK_LENGTH  # 32: RFC 3394 wants a multiple of 8 octets
_WRAP_OVERHEAD = 8  # RFC 3394 §2.2.1: the integrity check register
MAX_DELIVERED = 2  # the current key and the next one
_U32 = 0xFFFFFFFF


class GroupKeyError(Exception):
    """A group key delivery is malformed, does not unwrap, or is stale; `offset` is where."""

    def __init__(self, offset: int, reason: str, kind: str = "malformed") -> None:
        super().__init__(f"group key delivery refused at offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason
        self.kind = kind  # the counter name: malformed, unwrap, stale, foreign-pan


def next_index(index: int) -> int:
    """The key index after `index`: 1, 2, ... 7, 1 (docs/mesh-keys.md, "Key indexes")."""
    return index % KEY_INDEX_MAX + KEY_INDEX_MIN


@dataclass(frozen=True)
class GroupKey:
    """One group key of a PAN: used to send from `not_before`, accepted until `not_after`."""

    pan_id: int
    index: int
    serial: int
    key: bytes
    not_before: float
    not_after: float

    def __post_init__(self) -> None:
        if not KEY_INDEX_MIN <= self.index <= KEY_INDEX_MAX:
            raise ValueError(f"group key index must be {KEY_INDEX_MIN}..{KEY_INDEX_MAX}")
        if len(self.key) != GTK_LENGTH:
            raise ValueError(f"group keys are {GTK_LENGTH} octets")
        if not 0 <= self.pan_id <= 0xFFFF or not 0 <= self.serial <= _U32:
            raise ValueError("PAN id is 16 bits, serial 32 bits")

    def __repr__(self) -> str:  # never the key
        return (
            f"GroupKey(pan_id={self.pan_id:#06x}, index={self.index}, serial={self.serial}, "
            f"not_before={self.not_before}, not_after={self.not_after})"
        )


@dataclass(frozen=True)
class GroupKeyConfig:
    lifetime: float = DEFAULT_LIFETIME
    install_fraction: float = DEFAULT_INSTALL_FRACTION
    rotation_delay: float = DEFAULT_ROTATION_DELAY
    activation_delay: float = DEFAULT_ACTIVATION_DELAY

    def __post_init__(self) -> None:
        if not self.lifetime > 0 or not 0 < self.install_fraction < 1:
            raise ValueError("group key lifetime must be > 0 and the install fraction in (0, 1)")
        if not self.rotation_delay >= 0 or not self.activation_delay >= 0:
            raise ValueError("rotation and activation delays must be >= 0")


class GroupKeyPersistence(Protocol):
    """Where a PAN's ring survives a key-server restart (`CredentialStore`: wrapped under the
    store's KEK)."""

    def save_group_keys(
        self, pan_id: int, serial: int, rotate_at: float | None, keys: Sequence[GroupKey]
    ) -> None: ...

    def load_group_keys(self, pan_id: int) -> tuple[int, float | None, list[GroupKey]] | None: ...


@dataclass
class _Ring:
    pan_id: int
    serial: int
    keys: list[GroupKey]  # live keys by not_before: [current] or [current, next]
    rotate_at: float | None = None
    last_index: int = KEY_INDEX_MAX  # the index of the newest key installed (the next is 1)


class GroupKeyManager:
    """The key server's group keys, one ring per PAN; timers via `get_timer`/`handle_timer`,
    randomness injected, what happened in `next_event()` (`keymgmt.events.GroupKeyEvent`)."""

    def __init__(
        self,
        pans: Iterable[int],
        *,
        rng: RandomSource,
        now: float,
        config: GroupKeyConfig | None = None,
        persistence: GroupKeyPersistence | None = None,
    ) -> None:
        self.config = config or GroupKeyConfig()
        self._rng = rng
        self._persistence = persistence
        self._events: deque[GroupKeyEvent] = deque()
        self._rings: dict[int, _Ring] = {}
        for pan in pans:
            if not 0 <= pan <= 0xFFFF:
                raise ValueError(f"PAN id {pan} is not 16 bits")
            stored = None if persistence is None else persistence.load_group_keys(pan)
            if stored is None:
                ring = _Ring(pan, 0, [])
            else:
                serial, rotate_at, keys = stored
                keys = sorted(keys, key=lambda k: k.not_before)
                ring = _Ring(pan, serial, keys, rotate_at)
                if keys:
                    ring.last_index = keys[-1].index
            self._rings[pan] = ring
            self._step(ring, now, "initial" if stored is None else "lapsed")
            self._save(ring)

    # -- views ------------------------------------------------------------------------------

    @property
    def pans(self) -> tuple[int, ...]:
        return tuple(self._rings)

    def keys(self, pan_id: int) -> tuple[GroupKey, ...]:
        """The PAN's live keys: the current one, then the next one if installed."""
        return tuple(self._ring(pan_id).keys)

    def serial(self, pan_id: int) -> int:
        return self._ring(pan_id).serial

    def rotation_at(self, pan_id: int) -> float | None:
        return self._ring(pan_id).rotate_at

    def delivery(self, pan_id: int, now: float) -> GroupKeyDelivery:
        """What a meter of `pan_id` is given now (to seal under its session's GTK-KEK)."""
        ring = self._ring(pan_id)
        return GroupKeyDelivery(pan_id, ring.serial, tuple(ring.keys), now)

    # -- commands ---------------------------------------------------------------------------

    def rotate(self, pan_id: int, now: float, reason: str) -> float:
        """Rotate the PAN's keys `rotation_delay` from now (or with a rotation already due);
        returns when it happens."""
        ring = self._ring(pan_id)
        if ring.rotate_at is None:
            ring.rotate_at = now + self.config.rotation_delay
            self._events.append(GroupKeyRotationScheduled(pan_id, ring.rotate_at, reason))
            self._save(ring)
        return ring.rotate_at

    # -- engine surface ---------------------------------------------------------------------

    def get_timer(self) -> float | None:
        at: float | None = None
        for ring in self._rings.values():
            t = self._due(ring)
            if t is not None and (at is None or t < at):
                at = t
        return at

    def handle_timer(self, now: float) -> None:
        for ring in self._rings.values():
            due = self._due(ring)
            if due is not None and due <= now:
                self._step(ring, now, "lapsed")
                self._save(ring)

    def next_event(self) -> GroupKeyEvent | None:
        return self._events.popleft() if self._events else None

    # -- the ring ---------------------------------------------------------------------------

    def _ring(self, pan_id: int) -> _Ring:
        try:
            return self._rings[pan_id]
        except KeyError:
            raise KeyError(f"no group keys for PAN {pan_id:#06x}") from None

    def _install_at(self, key: GroupKey) -> float:
        return key.not_before + self.config.install_fraction * (key.not_after - key.not_before)

    def _due(self, ring: _Ring) -> float | None:
        if not ring.keys:
            return -math.inf
        at = ring.keys[0].not_after
        if len(ring.keys) == 1:
            at = min(at, self._install_at(ring.keys[0]))
        if ring.rotate_at is not None:
            at = min(at, ring.rotate_at)
        return at

    def _new_key(self, ring: _Ring, index: int, not_before: float, reason: str) -> GroupKey:
        material = self._rng(GTK_LENGTH)
        if len(material) != GTK_LENGTH:
            raise ValueError("random source returned the wrong number of bytes")
        ring.serial = (ring.serial + 1) & _U32
        key = GroupKey(
            ring.pan_id,
            index,
            ring.serial,
            material,
            not_before,
            not_before + self.config.lifetime,
        )
        ring.keys.append(key)
        ring.last_index = index
        self._events.append(
            GroupKeyInstalled(ring.pan_id, index, key.serial, key.not_before, key.not_after, reason)
        )
        return key

    def _step(self, ring: _Ring, now: float, lapsed_reason: str) -> None:
        """Everything due at `now`: the rotation, expiry and activation, the next key."""
        if ring.rotate_at is not None and now >= ring.rotate_at:
            self._rotate(ring, now)
        keys = ring.keys
        while keys and keys[0].not_after <= now:
            old = keys.pop(0)
            self._events.append(GroupKeyExpired(ring.pan_id, old.index, old.serial, "expired"))
            if keys:
                self._events.append(GroupKeyActivated(ring.pan_id, keys[0].index, keys[0].serial))
        if not keys:
            index = next_index(ring.last_index)
            self._new_key(ring, index, now, lapsed_reason)
            self._events.append(GroupKeyActivated(ring.pan_id, index, ring.serial))
        if len(keys) == 1 and now >= self._install_at(keys[0]):
            self._new_key(ring, next_index(keys[0].index), keys[0].not_after, "scheduled")

    def _rotate(self, ring: _Ring, now: float) -> None:
        """Discard the next key, cut the current one to the new key's activation."""
        ring.rotate_at = None
        keys = ring.keys
        for dropped in keys[1:]:
            self._events.append(
                GroupKeyExpired(ring.pan_id, dropped.index, dropped.serial, "discarded by rotation")
            )
        del keys[1:]
        start = now + self.config.activation_delay
        if keys:
            current = keys[0]
            start = min(start, current.not_after)
            keys[0] = replace(current, not_after=start)
        self._new_key(ring, next_index(ring.last_index), start, "rotation")

    def _save(self, ring: _Ring) -> None:
        if self._persistence is not None:
            self._persistence.save_group_keys(ring.pan_id, ring.serial, ring.rotate_at, ring.keys)

    def __repr__(self) -> str:
        return f"GroupKeyManager({', '.join(f'{p:#06x}' for p in self._rings)})"


# -- delivery ---------------------------------------------------------------------------------


def gtk_kek(ctx: PanaSecurityContext) -> bytes:
    """The session's key-encryption key for group keys (UKMF purpose GTK_KEK)."""
    return derive(ctx, GTK_KEK)


@dataclass(frozen=True)
class GroupKeyDelivery:
    """The group keys of a PAN as one meter is given them at `at` (its clock's reading)."""

    pan_id: int
    serial: int
    keys: tuple[GroupKey, ...]
    at: float

    def __repr__(self) -> str:  # never the keys
        return (
            f"GroupKeyDelivery(pan_id={self.pan_id:#06x}, serial={self.serial}, "
            f"indexes={[k.index for k in self.keys]})"
        )

    def seal(self, kek: bytes) -> Avp:
        """The vendor-specific AVP carrying these keys wrapped under `kek` (RFC 3394)."""
        if not 1 <= len(self.keys) <= MAX_DELIVERED:
            raise ValueError(f"a delivery carries 1..{MAX_DELIVERED} keys")
        out = bytearray(_HEAD.pack(DELIVERY_VERSION, len(self.keys), self.pan_id, self.serial))
        for k in self.keys:
            # both rounded up alike: one key's end and the next's start stay one instant
            starts_in = max(0, math.ceil(k.not_before - self.at))
            expires_in = max(0, math.ceil(k.not_after - self.at))
            out += _ENTRY.pack(k.index, min(starts_in, _U32), min(expires_in, _U32)) + k.key
        wrapped = aes_key_wrap(kek, bytes(out))
        return Avp(VendorAvpCode.GROUP_KEY_DELIVERY, wrapped, AMISTACK_VENDOR_ID)

    @classmethod
    def open(cls, avp: Avp, kek: bytes, now: float) -> GroupKeyDelivery:
        """The keys of a delivery AVP, with absolute times on the receiver's clock `now`;
        raises `GroupKeyError` for anything but an intact delivery wrapped under `kek`."""
        if avp.vendor_id != AMISTACK_VENDOR_ID or avp.code != VendorAvpCode.GROUP_KEY_DELIVERY:
            raise GroupKeyError(0, "not a group key delivery AVP")
        value = avp.value
        body = len(value) - _WRAP_OVERHEAD - _HEAD.size
        if body <= 0 or body % _ENTRY_LENGTH or body // _ENTRY_LENGTH > MAX_DELIVERED:
            raise GroupKeyError(0, f"wrapped length {len(value)} is not a delivery")
        try:
            plain = aes_key_unwrap(kek, value)
        except InvalidUnwrap:
            raise GroupKeyError(
                0, "does not unwrap: another session's key, or altered", "unwrap"
            ) from None
        version, count, pan_id, serial = _HEAD.unpack_from(plain)
        if version != DELIVERY_VERSION:
            raise GroupKeyError(0, f"unknown delivery version {version}")
        if count * _ENTRY_LENGTH != len(plain) - _HEAD.size:
            raise GroupKeyError(1, f"count {count} does not match the length")
        keys: list[GroupKey] = []
        for n in range(count):
            at = _HEAD.size + n * _ENTRY_LENGTH
            index, starts_in, expires_in = _ENTRY.unpack_from(plain, at)
            if not KEY_INDEX_MIN <= index <= KEY_INDEX_MAX or expires_in < starts_in:
                raise GroupKeyError(at, f"key {n}: index {index}, times {starts_in}/{expires_in}")
            if any(k.index == index for k in keys):
                raise GroupKeyError(at, f"key index {index} twice")
            material = plain[at + _ENTRY.size : at + _ENTRY_LENGTH]
            keys.append(
                GroupKey(pan_id, index, serial, material, now + starts_in, now + expires_in)
            )
        return cls(pan_id, serial, tuple(keys), now)


def find_delivery(avps: Iterable[Avp]) -> Avp | None:
    """The group key delivery among a message's AVPs, if any."""
    for avp in avps:
        if avp.vendor_id == AMISTACK_VENDOR_ID and avp.code == VendorAvpCode.GROUP_KEY_DELIVERY:
            return avp
    return None


class GroupKeyHolder:
    """The meter's side: the group keys it was last given, dropped at their end.

    `accept` takes a delivery that opened under the session's GTK-KEK; it refuses one for
    another PAN (once the holder has one) and one older (`serial`) than the newest accepted, so
    an old delivery played back cannot bring a discarded key back."""

    def __init__(self) -> None:
        self.pan_id: int | None = None
        self.serial: int | None = None
        self._keys: dict[int, GroupKey] = {}

    def accept(self, delivery: GroupKeyDelivery) -> None:
        if self.pan_id is not None and delivery.pan_id != self.pan_id:
            raise GroupKeyError(2, f"delivery for PAN {delivery.pan_id:#06x}", "foreign-pan")
        if self.serial is not None and delivery.serial < self.serial:
            raise GroupKeyError(4, f"serial {delivery.serial} < {self.serial}", "stale")
        self.pan_id, self.serial = delivery.pan_id, delivery.serial
        self._keys = {k.index: k for k in delivery.keys}

    def held(self) -> tuple[GroupKey, ...]:
        """The keys held, by start time."""
        return tuple(sorted(self._keys.values(), key=lambda k: k.not_before))

    def get_timer(self) -> float | None:
        if not self._keys:  # a star fleet's meters hold none, and are asked after every input
            return None
        return min(k.not_after for k in self._keys.values())

    def expire(self, now: float) -> tuple[int, ...]:
        """Drop keys past their end; the indexes dropped."""
        gone = tuple(i for i, k in self._keys.items() if k.not_after <= now)
        for i in gone:
            del self._keys[i]
        return gone

    def __repr__(self) -> str:
        return f"GroupKeyHolder(pan={self.pan_id}, serial={self.serial}, keys={sorted(self._keys)})"
