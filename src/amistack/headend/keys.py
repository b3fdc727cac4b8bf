"""The head-end's C12.22 keys: `c1222.security.KeyLookup` / `SendKey` over a key source.

A C12.22 message names its sender by calling AP title and its key only by the key-id byte
(UKMF `KeyId.generation & 0xFF`, docs/c1222.md). `HeadendKeys` maps the AP title to the meter's
device id through the registry (`meters.ap_title`), keeps the keys it fetched per device until
their `not_after`, and answers the engines synchronously from that cache:

- `lookup(ap_device_id, key_byte, now)`: every cached key of that device whose generation has
  that low byte and is still valid -- the current generation and superseded ones within the
  key server's overlap window, so a rollover in flight loses no message (the EAX' tag decides);
- `send_key(ap_device_id, now)`: the newest valid generation.

Unauthenticated input must not drive work at the key server (each key-distribution request is
audited there): a C12.22 datagram names a registered AP title and a key byte before anything is
verified, so a forger could otherwise make the head-end fetch for every datagram. A miss is
therefore cached negatively (`negative_ttl` s per device and key byte: no fetch, no miss
reported again), and fetches on misses are limited per device (a token bucket: `fetch_burst`,
then one per `fetch_interval` s); a miss beyond the budget is counted (`fetch-limited`) and
dropped. A meter whose key really rotated waits at most `fetch_interval` s for its new key.

A refresh falls due every `refresh_s` per device (in a fleet: on nearly every push). A source
with an in-process key directory (`directory`: `DirectorySource`, the `KeyServer`) is not asked
again while the directory's own record of the generation fetched is unchanged: the directory
changes its `AppKey`s in place on every supersede, cut (revocation), retire and expiry (wipe),
so while that record is valid, not superseded and ends when the cached copy ends, asking would
return exactly what is cached. A refresh thus costs a source call once per key generation or
change, and a revoked key stops being accepted exactly when it did (the next due refresh).

Sources (docs/key-distribution.md): a `SyncKeySource` is asked at once on a miss (the in-process
`KeyServer`, or `DirectorySource` over a `KeyRingDirectory`); an asynchronous source
(`KeyDistClient` over mTLS) cannot be awaited from a sans-IO engine, so a miss is recorded
(`take_misses`) and the runtime fetches (`fetch_async`) and re-feeds the datagram, or prefetches
per meter (`prefetch_async`) before head-end initiated traffic.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from amistack.c1222.security import key_id_byte
from amistack.keymgmt.keyring import AppKey, KeyRingDirectory
from amistack.keymgmt.ukmf import C1222, KeyId

log = logging.getLogger(__name__)

PURPOSE = C1222.name
_MAX_NEGATIVE = 65536


class IssuedLike(Protocol):
    """`keymgmt.server.IssuedKey` / `keymgmt.keydist.DistributedKey` shape."""

    @property
    def key_id(self) -> KeyId | None: ...
    @property
    def key(self) -> bytes: ...
    @property
    def not_after(self) -> float: ...


def _same(a: IssuedLike, b: IssuedLike) -> bool:
    """Whether `a` and `b` name the same generation with the same end (ids by identity first:
    asked on every refresh, and the records are usually the very same `KeyId`)."""
    return (a.key_id is b.key_id or a.key_id == b.key_id) and a.not_after == b.not_after


class SyncKeySource(Protocol):
    """`KeyServer` has exactly this shape (in-process demo)."""

    def key_for(self, key_id: KeyId, purpose: str, now: float) -> IssuedLike | None: ...
    def current_key(self, device_id: bytes, purpose: str, now: float) -> IssuedLike | None: ...


class AsyncKeySource(Protocol):
    """`runtime.keydist.KeyDistClient` has this shape (raises on not-found / unavailable)."""

    async def fetch(self, key_id: KeyId, purpose: str) -> IssuedLike: ...
    async def current_key(self, device: bytes, purpose: str) -> IssuedLike: ...


class EveryKeySource:
    """Several key servers as one `AsyncKeySource` (docs/scale-out.md): each holds the keys of
    the meters it authenticated, so a device's key is asked of the server that answered for it
    last, then of the others in turn; the last error is raised if none has it."""

    def __init__(self, sources: Sequence[AsyncKeySource]) -> None:
        if not sources:
            raise ValueError("at least one key source")
        self.sources = list(sources)
        self._owner: dict[bytes, int] = {}  # device -> index of the source that last answered
        self._owners_max = 1_000_000

    def _order(self, device: bytes | None) -> list[int]:
        first = self._owner.get(device, 0) if device is not None else 0
        return [first, *(i for i in range(len(self.sources)) if i != first)]

    async def _ask(self, device: bytes | None, ask: Any) -> IssuedLike:
        error: Exception | None = None
        for i in self._order(device):
            try:
                issued: IssuedLike = await ask(self.sources[i])
            except Exception as exc:  # KeyDistError: not here, refused, unavailable
                error = exc
                continue
            if device is not None and len(self.sources) > 1:
                if len(self._owner) >= self._owners_max:
                    self._owner.clear()
                self._owner[device] = i
            return issued
        assert error is not None
        raise error

    async def fetch(self, key_id: KeyId, purpose: str) -> IssuedLike:
        return await self._ask(None, lambda s: s.fetch(key_id, purpose))

    async def current_key(self, device: bytes, purpose: str) -> IssuedLike:
        return await self._ask(device, lambda s: s.current_key(device, purpose))

    async def close(self) -> None:
        for s in self.sources:
            close = getattr(s, "close", None)
            if close is not None:
                await close()


class _Issued(NamedTuple):  # one per refresh, i.e. per pushed message in a fleet: a tuple
    key_id: KeyId | None
    key: bytes
    not_after: float


class DirectorySource:
    """A `SyncKeySource` over a `KeyRingDirectory` (tests, simulators)."""

    def __init__(self, directory: KeyRingDirectory) -> None:
        self.directory = directory

    def key_for(self, key_id: KeyId, purpose: str, now: float) -> _Issued | None:
        k = self.directory.lookup(key_id, purpose, now)
        return None if k is None else _Issued(k.key_id, k.key, k.not_after)

    def current_key(self, device_id: bytes, purpose: str, now: float) -> _Issued | None:
        k = self.directory.current(device_id, purpose, now)
        return None if k is None else _Issued(k.key_id, k.key, k.not_after)


@dataclass(frozen=True)
class CachedKey:
    key_id: KeyId
    key: bytes
    not_after: float

    def __repr__(self) -> str:  # never the key
        return f"CachedKey({self.key_id}, not_after={self.not_after})"


ApResolver = Callable[[bytes], "str | None"]
"""AP title device id (absolute dotted title, bytes) -> the meter's device id, or None."""


def repository_resolver(meter_by_ap_title: Callable[[str], object | None]) -> ApResolver:
    """Resolve through the registry (`repo.meter_by_ap_title`), caching hits."""
    cache: dict[bytes, str] = {}

    def resolve(ap: bytes) -> str | None:
        hit = cache.get(ap)
        if hit is not None:
            return hit
        meter = meter_by_ap_title(ap.decode("ascii", "replace"))
        meter_id = getattr(meter, "meter_id", None)
        if isinstance(meter_id, str):
            cache[ap] = meter_id
        return meter_id if isinstance(meter_id, str) else None

    return resolve


class HeadendKeys:
    """Key cache + resolver for the head-end's `C1222Client` (see the module docstring)."""

    def __init__(
        self,
        resolve: ApResolver,
        source: SyncKeySource | None = None,
        *,
        max_generations: int = 4,
        refresh_s: float = 30.0,
        negative_ttl: float = 10.0,
        fetch_burst: float = 3.0,
        fetch_interval: float = 10.0,
    ) -> None:
        self.resolve = resolve
        self.source = source
        self.max_generations = max_generations
        # a sync source is asked again after this long: a rotation the meter has not yet used
        # towards us, and the cut not_after of superseded generations, become known
        self.refresh_s = refresh_s
        self.negative_ttl = negative_ttl
        self.fetch_burst = fetch_burst
        self.fetch_interval = fetch_interval
        self._fetched: dict[bytes, float] = {}
        self._keys: dict[bytes, list[CachedKey]] = {}  # device id -> newest first
        self._misses: list[tuple[bytes, int | None]] = []
        # (device, key byte) -> until when a miss is not looked up again; registered devices
        # only (the resolver comes first), so at most 256 entries per meter
        self._negative: dict[tuple[bytes, int], float] = {}
        self._budget: dict[bytes, tuple[float, float]] = {}  # device -> (tokens, at)
        self.counters: Counter[str] = Counter()
        directory = getattr(source, "directory", None)
        self._directory = directory if isinstance(directory, KeyRingDirectory) else None
        # device -> the directory's record of the current generation last fetched
        self._watched: dict[bytes, AppKey] = {}

    # -- the c1222 hooks ---------------------------------------------------------------------

    def lookup(self, ap_device_id: bytes, key_byte: int, now: float) -> list[bytes]:
        device = self._device(ap_device_id)
        if device is None:
            self.counters["unknown-ap-title"] += 1
            return []
        self._maybe_refresh(device, now)
        cached = self._keys.get(device)
        if cached is not None and len(cached) == 1:  # the usual cache: one live generation
            k = cached[0]
            if k.not_after > now and key_id_byte(k.key_id) == key_byte:
                return [k.key]  # what `_matching` finds (it drops only expired keys)
        found = self._matching(device, key_byte, now)
        if found:
            return found
        if self._negative.get((device, key_byte), -math.inf) > now:
            self.counters["negative-hit"] += 1
            return []
        if not self._take_fetch_token(device, now):
            self.counters["fetch-limited"] += 1
            return []
        if self.source is not None:
            self._fetch_sync(device, key_byte, now)
            found = self._matching(device, key_byte, now)
        if not found:
            self.counters["key-miss"] += 1
            self._misses.append((device, key_byte))
            self._remember_miss(device, key_byte, now)
        return found

    def rejected(self, ap_device_id: bytes, key_byte: int, now: float) -> None:
        """No cached key under `key_byte` verified a message from this meter: after a restart its
        new PANA session's generations repeat the old session's low bytes, so the cache may hold
        the old session's key under that byte. Look for the meter's current key as a miss does,
        within the same per-device fetch budget (a forger naming a registered AP title gets no
        more fetches than a miss already allows)."""
        device = self._device(ap_device_id)
        if device is None:
            return
        if not self._take_fetch_token(device, now):
            self.counters["fetch-limited"] += 1
            return
        self.counters["key-rejected"] += 1
        if self.source is not None:
            self._fetch_sync(device, None, now)
        else:
            self._misses.append((device, key_byte))

    def send_key(self, ap_device_id: bytes, now: float) -> tuple[int, bytes] | None:
        device = self._device(ap_device_id)
        if device is None:
            return None
        self._maybe_refresh(device, now)
        key = self._newest(device, now)
        if key is None and self.source is not None:
            self._fetch_sync(device, None, now)
            key = self._newest(device, now)
        if key is None:
            self.counters["send-key-miss"] += 1
            self._misses.append((device, None))
            return None
        return key_id_byte(key.key_id), key.key

    # -- cache ---------------------------------------------------------------------------------

    def install(self, device: bytes, key_id: KeyId, key: bytes, not_after: float) -> None:
        cached = self._keys.get(device, [])
        for k in cached:  # a refresh mostly finds what is cached: nothing to rebuild then
            if k.key_id == key_id and k.not_after == not_after and k.key == key:
                self._negative.pop((device, key_id_byte(key_id)), None)
                return
        keys = [k for k in cached if k.key_id != key_id]
        keys.append(CachedKey(key_id, key, not_after))
        keys.sort(key=lambda k: k.key_id, reverse=True)
        self._keys[device] = keys[: self.max_generations]
        self._negative.pop((device, key_id_byte(key_id)), None)

    def _remember_miss(self, device: bytes, key_byte: int, now: float) -> None:
        if len(self._negative) >= _MAX_NEGATIVE:  # bounded: forget what has run out
            self._negative = {k: t for k, t in self._negative.items() if t > now}
            if len(self._negative) >= _MAX_NEGATIVE:
                self._negative.clear()
        self._negative[(device, key_byte)] = now + self.negative_ttl

    def _take_fetch_token(self, device: bytes, now: float) -> bool:
        """A fetch on a miss for `device` within its budget (token bucket)."""
        burst = self.fetch_burst
        tokens, at = self._budget.get(device, (burst, now))
        tokens = min(burst, tokens + max(0.0, now - at) / self.fetch_interval)
        if tokens < 1.0:
            self._budget[device] = (tokens, now)
            return False
        self._budget[device] = (tokens - 1.0, now)
        return True

    def forget(self, device: bytes) -> None:
        self._keys.pop(device, None)

    def has_key(self, device: bytes, now: float) -> bool:
        return self._newest(device, now) is not None

    def expiring(self, devices: Iterable[bytes], now: float, margin: float) -> list[bytes]:
        """Devices with no valid key, or whose newest expires within `margin` (prefetch these)."""
        out = []
        for d in devices:
            k = self._newest(d, now)
            if k is None or k.not_after - now < margin:
                out.append(d)
        return out

    def generations(self, device: bytes, now: float) -> list[tuple[KeyId, float]]:
        """(key id, not_after) of the device's valid cached generations, newest first: what the
        dashboard shows (never the keys). A snapshot, safe to take from another thread."""
        return [
            (k.key_id, k.not_after) for k in list(self._keys.get(device, ())) if k.not_after > now
        ]

    def held(self, now: float) -> int:
        """Devices with a valid cached generation: the dashboard's "authenticated" count (a
        snapshot, safe to take from another thread; one pass over the cache)."""
        return sum(
            1 for keys in list(self._keys.values()) if any(k.not_after > now for k in list(keys))
        )

    def take_misses(self) -> list[tuple[bytes, int | None]]:
        """(device, key byte or None for a send key) that lookups missed since the last call."""
        out, self._misses = self._misses, []
        return out

    @property
    def missed(self) -> bool:
        """Whether `take_misses` has something (asked after every datagram: no list built)."""
        return bool(self._misses)

    def _device(self, ap_device_id: bytes) -> bytes | None:
        meter_id = self.resolve(ap_device_id)
        return None if meter_id is None else meter_id.encode()

    def _valid(self, device: bytes, now: float) -> list[CachedKey]:
        """The device's unexpired keys, newest first (possibly the cached list: read only)."""
        keys = self._keys.get(device)
        if not keys:
            return []
        if len(keys) == 1 and keys[0].not_after > now:  # the usual cache: no list to build
            return keys
        live = [k for k in keys if k.not_after > now]
        if len(live) != len(keys):
            self._keys[device] = live
        return live

    def _matching(self, device: bytes, key_byte: int, now: float) -> list[bytes]:
        return [k.key for k in self._valid(device, now) if key_id_byte(k.key_id) == key_byte]

    def _newest(self, device: bytes, now: float) -> CachedKey | None:
        live = self._valid(device, now)
        return live[0] if live else None

    @staticmethod
    def _candidate_ids(known: KeyId, key_byte: int) -> list[KeyId]:
        """Generations with this low byte next to a known one: the one after (a rollover the
        meter did first) and the one before (a superseded key in its overlap)."""
        g = known.generation
        up = g + ((key_byte - g) & 0xFF)
        down = g - ((g - key_byte) & 0xFF)
        return [KeyId(known.session_id, x) for x in (up, down) if 0 <= x <= 0xFFFFFFFF]

    def _take(self, device: bytes, issued: IssuedLike | None) -> None:
        if issued is not None and issued.key_id is not None:
            self.install(device, issued.key_id, issued.key, issued.not_after)

    def _take_current(self, device: bytes, current: IssuedLike | None) -> None:
        """The key server's current key for `device`; keys of its other PANA sessions go: the
        meter has started a new session (restart, re-authentication after expiry), and they
        would shadow the new session's generations that repeat their low bytes."""
        if current is not None and current.key_id is not None:
            session = current.key_id.session_id
            kept = [k for k in self._keys.get(device, []) if k.key_id.session_id == session]
            if kept:
                self._keys[device] = kept
            else:
                self._keys.pop(device, None)
        self._take(device, current)

    def _maybe_refresh(self, device: bytes, now: float) -> None:
        src = self.source
        if src is None or now - self._fetched.get(device, -1e18) < self.refresh_s:
            return
        if device not in self._fetched:
            self._fetch_sync(device, None, now)
            return
        self.counters["refreshes"] += 1
        self._fetched[device] = now
        cached = self._keys.get(device)
        watched = self._watched.get(device)
        if watched is not None and cached is not None and len(cached) == 1:
            k = cached[0]
            if (
                watched.superseded_at is None and watched.valid_at(now) and _same(k, watched)
            ):  # what the source would answer (the module docstring): the cache stands
                self.counters["refresh-watched"] += 1
                if self._negative:  # as `install` (usually empty: no miss remembered)
                    self._negative.pop((device, key_id_byte(k.key_id)), None)
                return
        # the current key first: the cached generation it names needs no key_for of its own
        # (the same record), usually the only one cached
        self.counters["fetches"] += 1
        current = src.current_key(device, PURPOSE, now)
        self._watch(device, current, now)
        if current is not None and cached is not None and len(cached) == 1:
            k = cached[0]  # the usual refresh: the one cached generation is the current one
            if _same(k, current) and k.key == current.key:
                self._negative.pop((device, key_id_byte(k.key_id)), None)  # as `install`
                return
        skip = None if current is None else current.key_id
        for k in list(self._keys.get(device, [])):
            if k.key_id == skip:
                continue
            again = src.key_for(k.key_id, PURPOSE, now)
            if again is None:
                self._keys[device] = [x for x in self._keys[device] if x.key_id != k.key_id]
            else:
                self._take(device, again)
        self._take_current(device, current)

    def _watch(self, device: bytes, current: IssuedLike | None, now: float) -> None:
        """Keep the directory's record of `current` (what the source just answered) to watch."""
        if self._directory is not None and current is not None:
            rec = self._directory.current(device, PURPOSE, now)
            if rec is not None and _same(rec, current):
                self._watched[device] = rec
                return
        self._watched.pop(device, None)

    def _fetch_sync(self, device: bytes, key_byte: int | None, now: float) -> None:
        src = self.source
        assert src is not None
        self.counters["fetches"] += 1
        self._fetched[device] = now
        current = src.current_key(device, PURPOSE, now)
        self._watch(device, current, now)
        self._take_current(device, current)
        if key_byte is None or current is None or current.key_id is None:
            return
        if key_id_byte(current.key_id) == key_byte:
            return
        for kid in self._candidate_ids(current.key_id, key_byte):
            self._take(device, src.key_for(kid, PURPOSE, now))

    # -- asynchronous sources (KeyDistClient) --------------------------------------------------

    async def fetch_async(
        self, source: AsyncKeySource, device: bytes, key_byte: int | None, now: float
    ) -> bool:
        """Fetch what a miss needs; True if a key for it is now cached."""
        self.counters["fetches"] += 1
        try:
            current = await source.current_key(device, PURPOSE)
        except Exception as exc:  # KeyDistError: not-found, forbidden, unavailable
            self.counters["fetch-failed"] += 1
            log.info("no current key for %r: %s", device, exc)
            return False
        self._take_current(device, current)
        if key_byte is None:
            return True
        if current.key_id is not None and key_id_byte(current.key_id) != key_byte:
            for kid in self._candidate_ids(current.key_id, key_byte):
                try:
                    self._take(device, await source.fetch(kid, PURPOSE))
                except Exception:
                    continue
        return bool(self._matching(device, key_byte, now))

    async def prefetch_async(
        self, source: AsyncKeySource, devices: Iterable[bytes], now: float
    ) -> int:
        """Fetch the current key of each device; the number that now have one."""
        n = 0
        for d in devices:
            if await self.fetch_async(source, d, None, now):
                n += 1
        return n


__all__ = [
    "AsyncKeySource",
    "CachedKey",
    "DirectorySource",
    "HeadendKeys",
    "SyncKeySource",
    "repository_resolver",
]
