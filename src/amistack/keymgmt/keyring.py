"""Key rings: the application keys of each peer, by generation, with lifetimes (sans-IO).

Each successful (re-)authentication installs a generation: one key per registered purpose, all
named by the same `KeyId`. The newest generation is the one to send with (`current`). When a new
generation arrives the previous one is *superseded*: it is never again returned by `current`, but
`lookup` still finds it for an overlap window so messages already in flight can be decrypted.
Keys are dropped at `not_after` by `expire(now)` - from memory (bytes zeroed) and from the
persistence hook - and revocation `shorten`s the keys already issued.

Nothing here reads a clock: `now` is passed in, and `get_timer()` says when `expire` is next due.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from amistack.keymgmt.events import (
    KeyEvent,
    KeysExpired,
    KeysInstalled,
    KeysRetired,
    KeysShortened,
    KeysSuperseded,
)
from amistack.keymgmt.ukmf import KeyId, Purpose, PurposeRegistry, derive_all
from amistack.pana.keys import PanaSecurityContext

logger = logging.getLogger(__name__)

DEFAULT_OVERLAP = 30.0  # seconds a superseded generation still decrypts


class KeyRingError(Exception):
    """A key ring operation that cannot be done (duplicate generation, bad lifetime, ...)."""


class AppKey:
    """One application key. The bytes live in a bytearray that `wipe()` zeroes in place.

    `key` hands out an immutable copy (what the ciphers take); copies cannot be wiped, so callers
    should not keep them longer than one operation.
    """

    __slots__ = (
        "_material",
        "_wiped",
        "key_id",
        "not_after",
        "not_before",
        "purpose",
        "superseded_at",
    )

    def __init__(
        self,
        key_id: KeyId,
        purpose: Purpose,
        material: bytes | bytearray,
        not_before: float,
        not_after: float,
        superseded_at: float | None = None,
    ) -> None:
        self.key_id = key_id
        self.purpose = purpose
        self._material = bytearray(material)
        self._wiped = False
        self.not_before = not_before
        self.not_after = not_after
        self.superseded_at = superseded_at

    # `key` and `valid_at` are asked for every C12.22 message: they read `_wiped` itself, not
    # through the `wiped` property (a second call each)
    @property
    def key(self) -> bytes:
        if self._wiped:
            raise KeyRingError(f"key {self.key_id}/{self.purpose.name} has been wiped")
        return bytes(self._material)

    @property
    def wiped(self) -> bool:
        return self._wiped

    def valid_at(self, now: float) -> bool:
        return not self._wiped and self.not_before <= now < self.not_after

    def wipe(self) -> None:
        # Same-length slice assignment overwrites the buffer in place (no reallocation), so
        # the zeros land where the key was, even if someone still holds a memoryview of it.
        self._material[:] = bytes(len(self._material))
        self._wiped = True

    def __repr__(self) -> str:  # never the key material
        state = " wiped" if self.wiped else ""
        sup = f", superseded_at={self.superseded_at}" if self.superseded_at is not None else ""
        return (
            f"AppKey({self.key_id}, {self.purpose.name}, not_before={self.not_before}, "
            f"not_after={self.not_after}{sup}{state})"
        )


class KeyPersistence(Protocol):
    """Where a ring mirrors its keys so a restart loses none (`CredentialStore` implements it)."""

    def save_keys(self, peer_id: bytes, keys: Sequence[AppKey]) -> None:
        """Insert or update these keys, all or none."""

    def delete_keys(self, keys: Sequence[AppKey]) -> None:
        """Remove these keys (by key id and purpose), all or none."""


class KeyRing:
    """The generations of application keys shared with one peer."""

    def __init__(
        self,
        peer_id: bytes,
        registry: PurposeRegistry,
        *,
        overlap: float = DEFAULT_OVERLAP,
        persistence: KeyPersistence | None = None,
    ) -> None:
        if overlap < 0:
            raise KeyRingError("overlap must be >= 0")
        self.peer_id = peer_id
        self.registry = registry
        self.overlap = overlap
        self._persistence = persistence
        # Insertion order is age order: the last generation is the newest.
        self._generations: dict[KeyId, dict[str, AppKey]] = {}
        # Generations not (fully) superseded: what the next install supersedes (0 or 1 of them
        # normally), so installing stays O(1) however many superseded ones the overlap holds.
        self._live: dict[KeyId, None] = {}
        self._timer: float | None = None
        self._timer_valid = True
        # bumped before any key is added, dropped or has its lifetime or state changed: what a
        # caller derived from the ring (c1222.security's per-message look-ups) is current while
        # this number is unchanged (validity at a given `now` is still the key's to say)
        self.version = 0

    # -- commands ---------------------------------------------------------------------------

    def install(self, ctx: PanaSecurityContext, lifetime: float, now: float) -> list[KeyEvent]:
        """Derive every registered purpose for the generation `ctx` names; supersede the rest."""
        if lifetime <= 0:
            raise KeyRingError("lifetime must be > 0")
        key_id = KeyId.of(ctx)
        if key_id in self._generations:
            raise KeyRingError(f"generation {key_id} is already installed for this peer")
        not_after = now + lifetime
        new = {
            p.name: AppKey(key_id, p, material, now, not_after)
            for p, material in derive_all(ctx, self.registry).items()
        }
        self.version += 1
        events: list[KeyEvent] = []
        changed: list[AppKey] = []
        previous: KeyId | None = None
        for old_id in self._live:
            gen = self._generations[old_id]
            previous = old_id
            cut = now + self.overlap
            for k in gen.values():
                k.superseded_at = now
                k.not_after = min(k.not_after, cut)
                changed.append(k)
            events.append(
                KeysSuperseded(self.peer_id, old_id, key_id, max(k.not_after for k in gen.values()))
            )
        if self._persistence is not None:
            # Only the new keys: the superseded generation's cut is not written back (one
            # wrap and row per purpose saved per authentication); `restore` derives it.
            self._persistence.save_keys(self.peer_id, list(new.values()))
        self._generations[key_id] = new
        self._live = {key_id: None}
        if self._timer_valid:  # install only adds keys and shortens others: update in place
            cuts = [k.not_after for k in changed]
            self._timer = min(t for t in (self._timer, not_after, *cuts) if t is not None)
        events.insert(
            0,
            KeysInstalled(self.peer_id, key_id, tuple(new), now, not_after, previous),
        )
        if logger.isEnabledFor(logging.INFO):  # (once per authentication: no extra dict unless)
            logger.info(
                "keys installed",
                extra={"peer_id": self.peer_id, "key_id": str(key_id), "not_after": not_after},
            )
        return events

    def restore(self, keys: Iterable[AppKey]) -> None:
        """Put back keys read from persistence at start-up (oldest first); nothing is saved.

        `install` does not persist the cut it gives the generation it supersedes; it is derived
        here, exactly: a stored generation with no `superseded_at` followed by a newer one was
        superseded at the newer one's `not_before` (bound in that one's AAD), so it ends at most
        `overlap` later. Any later change to the old generation (`shorten`, `retire`) is
        persisted with its `superseded_at` and taken as stored, and so is its cut when its
        successor expires first (`expire`), so the successor it is derived from is never gone."""
        self.version += 1
        for key in sorted(keys, key=lambda k: (k.not_before, k.key_id)):
            self._generations.setdefault(key.key_id, {})[key.purpose.name] = key
        gens = list(self._generations.values())
        for older, newer in itertools.pairwise(gens):
            if any(k.superseded_at is not None for k in older.values()):
                continue
            at = min(k.not_before for k in newer.values())
            end = at + self.overlap
            for k in older.values():
                k.superseded_at = at
                k.not_after = min(k.not_after, end)
        self._live = {
            key_id: None
            for key_id, gen in self._generations.items()
            if any(k.superseded_at is None for k in gen.values())
        }
        self._timer_valid = False

    def shorten(
        self,
        not_after: float,
        now: float,
        *,
        key_ids: Iterable[KeyId] | None = None,
        session_id: int | None = None,
    ) -> list[KeyEvent]:
        """Revocation: no key (of `key_ids`, or of PANA session `session_id`, default all)
        outlives `not_after` (at least `now`)."""
        cut = max(not_after, now)
        wanted = None if key_ids is None else set(key_ids)
        events: list[KeyEvent] = []
        changed: list[AppKey] = []
        self._timer_valid = False
        self.version += 1
        for key_id, gen in self._generations.items():
            if (wanted is not None and key_id not in wanted) or (
                session_id is not None and key_id.session_id != session_id
            ):
                continue
            hit = [k for k in gen.values() if k.not_after > cut]
            for k in hit:
                k.not_after = cut
            if hit:
                changed.extend(hit)
                events.append(KeysShortened(self.peer_id, key_id, cut))
        if changed and self._persistence is not None and cut > now:
            self._persistence.save_keys(self.peer_id, changed)
        events.extend(self.expire(now))
        return events

    def retire(self, session_id: int, now: float) -> list[KeyEvent]:
        """The PANA session `session_id` ended: its keys stop being `current` and only decrypt
        for the overlap window (in-flight messages), then expire."""
        cut = now + self.overlap
        events: list[KeyEvent] = []
        changed: list[AppKey] = []
        self._timer_valid = False
        self.version += 1
        for key_id, gen in self._generations.items():
            if key_id.session_id != session_id:
                continue
            self._live.pop(key_id, None)
            live = [k for k in gen.values() if k.superseded_at is None or k.not_after > cut]
            for k in live:
                if k.superseded_at is None:
                    k.superseded_at = now
                k.not_after = min(k.not_after, cut)
            if live:
                changed.extend(live)
                events.append(
                    KeysRetired(self.peer_id, key_id, max(k.not_after for k in gen.values()))
                )
        if changed and self._persistence is not None and cut > now:
            self._persistence.save_keys(self.peer_id, changed)
        events.extend(self.expire(now))
        return events

    def expire(self, now: float) -> list[KeyEvent]:
        """Drop every key whose `not_after` has passed: persistence first, then zero the bytes."""
        dead = [k for gen in self._generations.values() for k in gen.values() if k.not_after <= now]
        if not dead:
            return []
        if self._persistence is not None:
            # A superseded generation older than one that dies loses the successor its stored
            # cut is derived from (restore): store it as it is, then delete.
            gone = {k.key_id for k in dead}
            order = list(self._generations)
            last = max(order.index(i) for i in gone)
            orphans = [
                k
                for i in order[:last]
                for k in self._generations[i].values()
                if k.superseded_at is not None and k.not_after > now
            ]
            if orphans:
                self._persistence.save_keys(self.peer_id, orphans)
            self._persistence.delete_keys(dead)  # if this raises, memory is untouched: retry later
        self._timer_valid = False
        self.version += 1
        events: list[KeyEvent] = []
        by_gen: dict[KeyId, list[str]] = {}
        for k in dead:
            by_gen.setdefault(k.key_id, []).append(k.purpose.name)
            del self._generations[k.key_id][k.purpose.name]
            k.wipe()
        for key_id, names in by_gen.items():
            if not self._generations[key_id]:
                del self._generations[key_id]
                self._live.pop(key_id, None)
            events.append(KeysExpired(self.peer_id, key_id, tuple(names)))
            if logger.isEnabledFor(logging.INFO):  # (as `install`: no text built unless)
                logger.info("keys expired", extra={"peer_id": self.peer_id, "key_id": str(key_id)})
        return events

    # -- queries ------------------------------------------------------------------------------

    def current(self, purpose: Purpose | str, now: float) -> AppKey | None:
        """The key to send with: the newest valid, not superseded generation."""
        name = purpose if isinstance(purpose, str) else purpose.name
        for gen in reversed(self._generations.values()):
            key = gen.get(name)
            if key is not None and key.superseded_at is None and key.valid_at(now):
                return key
        return None

    def lookup(self, key_id: KeyId, purpose: Purpose | str, now: float) -> AppKey | None:
        """The key a received message names, if still valid (superseded ones within overlap)."""
        name = purpose if isinstance(purpose, str) else purpose.name
        key = self._generations.get(key_id, {}).get(name)
        return key if key is not None and key.valid_at(now) else None

    def get_timer(self) -> float | None:
        """When `expire` next has work to do (cached: every change of a lifetime goes through
        this class)."""
        if not self._timer_valid:
            self._timer = min(
                (k.not_after for gen in self._generations.values() for k in gen.values()),
                default=None,
            )
            self._timer_valid = True
        return self._timer

    def key_ids(self) -> list[KeyId]:
        """Generations held, oldest first."""
        return list(self._generations)

    def keys(self) -> Iterator[AppKey]:
        for gen in self._generations.values():
            yield from gen.values()

    def __len__(self) -> int:
        return len(self._generations)

    def __repr__(self) -> str:
        return (
            f"KeyRing(peer_id={self.peer_id!r}, generations={[str(k) for k in self._generations]})"
        )


class KeyRingDirectory:
    """The key server's rings, by peer id, with lookup by `KeyId` across all peers.

    The head-end only knows the key id a meter put in its message; `lookup` answers that.
    Expiry is driven from one heap so `get_timer` stays cheap with thousands of peers.
    """

    def __init__(
        self,
        registry: PurposeRegistry,
        *,
        overlap: float = DEFAULT_OVERLAP,
        persistence: KeyPersistence | None = None,
    ) -> None:
        self.registry = registry
        self.overlap = overlap
        self._persistence = persistence
        self._rings: dict[bytes, KeyRing] = {}
        self._owner: dict[KeyId, bytes] = {}
        self._timers: list[tuple[float, bytes]] = []

    def ring(self, peer_id: bytes) -> KeyRing:
        ring = self._rings.get(peer_id)
        if ring is None:
            ring = KeyRing(
                peer_id, self.registry, overlap=self.overlap, persistence=self._persistence
            )
            self._rings[peer_id] = ring
        return ring

    def get(self, peer_id: bytes) -> KeyRing | None:
        return self._rings.get(peer_id)

    def peers(self) -> list[bytes]:
        return list(self._rings)

    def install(
        self, peer_id: bytes, ctx: PanaSecurityContext, lifetime: float, now: float
    ) -> list[KeyEvent]:
        key_id = KeyId.of(ctx)
        owner = self._owner.get(key_id)
        if owner is not None and owner != peer_id:
            raise KeyRingError(f"key id {key_id} already belongs to another peer")
        ring = self.ring(peer_id)
        events = ring.install(ctx, lifetime, now)
        self._owner[key_id] = peer_id
        self._after_change(ring, events)
        return events

    def restore(self, records: Iterable[tuple[bytes, AppKey]]) -> None:
        """Load keys from persistence at start-up."""
        by_peer: dict[bytes, list[AppKey]] = {}
        for peer_id, key in records:
            by_peer.setdefault(peer_id, []).append(key)
        for peer_id, keys in by_peer.items():
            ring = self.ring(peer_id)
            ring.restore(keys)
            for key in keys:
                self._owner[key.key_id] = peer_id
            self._after_change(ring, [])

    def lookup(self, key_id: KeyId, purpose: Purpose | str, now: float) -> AppKey | None:
        peer_id = self._owner.get(key_id)
        if peer_id is None:
            return None
        return self._rings[peer_id].lookup(key_id, purpose, now)

    def peer_of(self, key_id: KeyId) -> bytes | None:
        return self._owner.get(key_id)

    def current(self, peer_id: bytes, purpose: Purpose | str, now: float) -> AppKey | None:
        ring = self._rings.get(peer_id)
        return None if ring is None else ring.current(purpose, now)

    def shorten(
        self, peer_id: bytes, not_after: float, now: float, *, session_id: int | None = None
    ) -> list[KeyEvent]:
        ring = self._rings.get(peer_id)
        if ring is None:
            return []
        events = ring.shorten(not_after, now, session_id=session_id)
        self._after_change(ring, events)
        return events

    def drop(self, peer_id: bytes, key_id: KeyId, now: float) -> list[KeyEvent]:
        """Remove one generation at once (its keys could not be persisted)."""
        ring = self._rings.get(peer_id)
        if ring is None:
            return []
        events = ring.shorten(now, now, key_ids=[key_id])
        self._after_change(ring, events)
        return events

    def retire(self, peer_id: bytes, session_id: int, now: float) -> list[KeyEvent]:
        ring = self._rings.get(peer_id)
        if ring is None:
            return []
        events = ring.retire(session_id, now)
        self._after_change(ring, events)
        return events

    def expire(self, now: float) -> list[KeyEvent]:
        events: list[KeyEvent] = []
        due: set[bytes] = set()
        while self._timers and self._timers[0][0] <= now:
            due.add(heapq.heappop(self._timers)[1])
        for peer_id in due:
            ring = self._rings.get(peer_id)
            if ring is None:
                continue
            ring_events = ring.expire(now)
            self._after_change(ring, ring_events)
            events.extend(ring_events)
        return events

    def get_timer(self) -> float | None:
        # Entries go stale when a ring's earliest expiry moves; drop those lazily.
        while self._timers:
            when, peer_id = self._timers[0]
            ring = self._rings.get(peer_id)
            if ring is not None and ring.get_timer() == when:
                return when
            heapq.heappop(self._timers)
        return None

    def handle_timer(self, now: float) -> list[KeyEvent]:
        return self.expire(now)

    def _after_change(self, ring: KeyRing, events: Sequence[KeyEvent]) -> None:
        for ev in events:
            if isinstance(ev, KeysExpired) and ev.key_id not in ring.key_ids():
                self._owner.pop(ev.key_id, None)
        if not len(ring):
            del self._rings[ring.peer_id]
            return
        when = ring.get_timer()
        if when is not None:
            heapq.heappush(self._timers, (when, ring.peer_id))

    def __len__(self) -> int:
        return len(self._rings)

    def __repr__(self) -> str:
        return f"KeyRingDirectory(peers={len(self._rings)}, key_ids={len(self._owner)})"
