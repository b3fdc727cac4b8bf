"""802.15.4 frame security for the mesh: CCM* with key id mode 1, frame counters, replay.

Outgoing (802.15.4-2006 §7.5.8.2.1): the frame gets an auxiliary security header (security
level, key id mode 1 with the key index, the next frame counter of that key index) and its
payload is sealed with CCM* (`crypto.ccm_star`) under the nonce source EUI-64 | counter | level.
The authenticated data is the MHR; for a command frame also its command identifier (the open
payload, §7.6.3.4), for MIC-only levels the whole frame.

Incoming (§7.5.8.2.3), in this order, each refusal a `MeshSecurityError` whose `kind` is the
counter name: `unsecured` (no security and the caller did not allow it), `level-too-low`,
`bad-key-id-mode` (only mode 1 is used here), `unknown-key` (no key at that index), `no-source`
(the source must be an extended address: it is the nonce), `own-source` (a frame claiming our
own address would reuse our nonces), `counter-exhausted` (0xFFFFFFFF is never valid, §7.5.8.2.3 i),
`replayed` / `stale` (the counter is not above the last one accepted from that (sender, key
index): strictly monotonic unless a wider window is configured), `forged` (the MIC).
The receive window moves only after the MIC verified, so forged frames cannot shift it; at most
`max_senders` windows are kept (the least recently heard sender is forgotten first).

Sending counters never repeat across restarts: each key index's counter is reserved ahead in
a `CounterStore` -- before a counter at or past the stored limit is used, the limit is raised by
`reserve` and written; a restarted sender begins at the stored limit, above every counter it
could have used (OpenThread's OPENTHREAD_CONFIG_STORE_FRAME_COUNTER_AHEAD, default 1000; wsbrd
stores its frame counters the same way). A key index keeps its counter when its key is replaced.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from amistack.addr import Eui64
from amistack.crypto.ccm_star import CcmStar, CcmStarAuthError, SecurityLevel, ccm_star_nonce
from amistack.crypto.replay import ReplayWindows
from amistack.mesh.errors import MeshSecurityError
from amistack.mesh.frame import AuxSecurityHeader, Frame, FrameType, KeyIdMode
from amistack.mesh.unchecked import unchecked

__all__ = [
    "DEFAULT_RESERVE",
    "MAX_FRAME_COUNTER",
    "CounterExhausted",
    "CounterStore",
    "FileCounterStore",
    "LinkSecurity",
    "LinkSecurityConfig",
    "MemoryCounterStore",
]

MAX_FRAME_COUNTER = 0xFFFFFFFE  # 0xFFFFFFFF: the counter is exhausted (802.15.4-2006 §7.5.8.2.1 d)
DEFAULT_RESERVE = 1000  # OpenThread OPENTHREAD_CONFIG_STORE_FRAME_COUNTER_AHEAD
KEY_INDEX_MIN, KEY_INDEX_MAX = (
    1,
    7,
)  # key id mode 1 indexes used (as Wi-SUN GTKs: 1..4, 802.15.4 allows 1..255)


class CounterExhausted(Exception):
    """A key index has used its last frame counter: its key must be replaced."""


class CounterStore(Protocol):
    """Where a sender's frame-counter limits persist, per key index."""

    def load(self) -> Mapping[int, int]: ...

    def save(self, limits: Mapping[int, int]) -> None: ...


class MemoryCounterStore:
    """A `CounterStore` in memory (simulation: a simulated reboot keeps the object)."""

    def __init__(self) -> None:
        self.limits: dict[int, int] = {}
        self.writes = 0

    def load(self) -> Mapping[int, int]:
        return dict(self.limits)

    def save(self, limits: Mapping[int, int]) -> None:
        self.limits = dict(limits)
        self.writes += 1


class FileCounterStore:
    """A `CounterStore` in a small JSON file, replaced atomically (write, fsync, rename), so a
    crash leaves the old limits or the new ones, never a torn file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Mapping[int, int]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {int(k): int(v) for k, v in raw.items()}

    def save(self, limits: Mapping[int, int]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump({str(k): v for k, v in sorted(limits.items())}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@dataclass(frozen=True)
class LinkSecurityConfig:
    level: SecurityLevel = SecurityLevel.ENC_MIC_64  # what we send
    min_level: SecurityLevel = SecurityLevel.MIC_32  # the weakest we accept
    window: int = 1  # 1: strictly monotonic counters per (sender, key index) (§7.5.8.2.3)
    max_senders: int = 4096  # (sender, key index) windows kept
    reserve: int = DEFAULT_RESERVE

    def __post_init__(self) -> None:
        if self.level == SecurityLevel.NONE or self.min_level == SecurityLevel.NONE:
            raise ValueError("link security levels are 1..7")
        if self.reserve < 1 or self.window < 1 or self.max_senders < 1:
            raise ValueError("reserve, window and max_senders must be positive")


_LEVEL_OCTETS = tuple(bytes((level,)) for level in SecurityLevel)  # the nonce's last octet


def _at_least(level: SecurityLevel, minimum: SecurityLevel) -> bool:
    """802.15.4-2006 §7.6.2.2.1: a level is at least as secure as another when its MIC is at
    least as long and it encrypts if the other does (so ENC is not "above" MIC-32)."""
    return level.mic_length >= minimum.mic_length and (level.encrypts or not minimum.encrypts)


def _open_length(frame: Frame) -> int:
    """Octets of the payload that are authenticated but not encrypted (802.15.4-2006 §7.6.3.4)."""
    return 1 if frame.frame_type == FrameType.COMMAND else 0


class LinkSecurity:
    """One node's link security: its keys by index, its send counters, the receive windows."""

    def __init__(
        self, own: Eui64, store: CounterStore, config: LinkSecurityConfig | None = None
    ) -> None:
        self.own = own
        self.config = config or LinkSecurityConfig()
        self._store = store
        self._limits: dict[int, int] = dict(store.load())
        self._next: dict[int, int] = dict(self._limits)  # restart: begin at the stored limits
        self._keys: dict[int, bytes] = {}
        self._ciphers: dict[tuple[int, SecurityLevel], CcmStar] = {}
        self._windows: ReplayWindows[tuple[bytes, int]] = ReplayWindows(  # (EUI-64, key index)
            self.config.window, self.config.max_senders
        )
        self._acceptable = frozenset(
            level for level in SecurityLevel if _at_least(level, self.config.min_level)
        )
        self.counters: Counter[str] = Counter()

    # -- keys -------------------------------------------------------------------------------

    def install_key(self, index: int, key: bytes) -> None:
        """Install (or replace) the key at `index`; its send counter carries on."""
        if not KEY_INDEX_MIN <= index <= KEY_INDEX_MAX:
            raise ValueError(f"key indexes are {KEY_INDEX_MIN}..{KEY_INDEX_MAX}")
        CcmStar(key)  # validates the length
        self._keys[index] = key
        self._ciphers = {k: c for k, c in self._ciphers.items() if k[0] != index}

    def remove_key(self, index: int) -> None:
        self._keys.pop(index, None)
        self._ciphers = {k: c for k, c in self._ciphers.items() if k[0] != index}

    def key_indexes(self) -> list[int]:
        return sorted(self._keys)

    def _cipher(self, index: int, level: SecurityLevel) -> CcmStar:
        cipher = self._ciphers.get((index, level))
        if cipher is None:
            cipher = self._ciphers[(index, level)] = CcmStar(self._keys[index], level)
        return cipher

    # -- counters ---------------------------------------------------------------------------

    def next_counter(self, index: int) -> int:
        """The counter the next frame under `index` will carry."""
        return self._next.get(index, 0)

    def _take_counter(self, index: int) -> int:
        counter = self._next.get(index, 0)
        if counter > MAX_FRAME_COUNTER:
            raise CounterExhausted(f"key index {index} has no frame counter left")
        if counter >= self._limits.get(index, 0):
            self._limits[index] = min(counter + self.config.reserve, MAX_FRAME_COUNTER + 1)
            self._store.save(self._limits)  # written before the counter is used
            self.counters["counter-writes"] += 1
        self._next[index] = counter + 1
        return counter

    # -- frames -----------------------------------------------------------------------------

    def protect(self, frame: Frame, index: int) -> Frame:
        """`frame` (unsecured, source = our EUI-64) secured under the key at `index`."""
        return self._protect(frame, index)[0]

    def protect_encoded(self, frame: Frame, index: int) -> bytes:
        """`protect(frame, index).encode()`, the MHR built once (a link sends bytes)."""
        secured, header = self._protect(frame, index)
        return header + secured.payload

    def _protect(self, frame: Frame, index: int) -> tuple[Frame, bytes]:
        """The secured frame and its MHR (auxiliary security header included)."""
        if frame.security is not None:
            raise ValueError("the frame is already secured")
        if frame.src != self.own:
            raise ValueError("a secured frame carries our own extended address as its source")
        if index not in self._keys:
            raise KeyError(f"no key at index {index}")
        level = self.config.level
        # the header's checks hold: a counter below 2^32 (_take_counter), an index of 1..7
        aux = unchecked(AuxSecurityHeader, level=level, counter=self._take_counter(index),
                        key_id_mode=KeyIdMode.INDEX, key_index=index, key_source=b"")  # fmt: skip
        header = frame.with_payload(b"", aux).header()
        n_open = _open_length(frame)
        nonce = ccm_star_nonce(self.own.value, aux.counter, level)
        payload = frame.payload
        sealed = self._cipher(index, level).seal(nonce, header + payload[:n_open], payload[n_open:])
        self.counters["protected"] += 1
        return frame.with_payload(payload[:n_open] + sealed, aux), header

    def unprotect(
        self, frame: Frame, allow_unsecured: bool = False, received: bytes | None = None
    ) -> Frame:
        """The frame with its plaintext payload (security header kept, for the caller to see
        the key index and level); raises MeshSecurityError, counted in `counters`. `received`:
        the bytes `frame` was decoded from, whose MHR is then used as it is (not re-encoded)."""
        try:
            return self._unprotect(frame, allow_unsecured, received)
        except MeshSecurityError as exc:
            self.counters[exc.kind] += 1
            raise

    def _unprotect(self, frame: Frame, allow_unsecured: bool, received: bytes | None) -> Frame:
        aux = frame.security
        if aux is None:
            if allow_unsecured:
                return frame
            raise MeshSecurityError(0, "unsecured frame", "unsecured")
        if received is not None:
            header = received[: len(received) - len(frame.payload)]
        else:
            header = frame.header()
        at = len(header) - aux.length  # where the auxiliary security header starts
        if aux.level not in self._acceptable:
            raise MeshSecurityError(at, f"security level {aux.level.name}", "level-too-low")
        if aux.key_id_mode != KeyIdMode.INDEX:
            raise MeshSecurityError(at, f"key id mode {aux.key_id_mode.name}", "bad-key-id-mode")
        if aux.key_index not in self._keys:
            raise MeshSecurityError(at, f"no key at index {aux.key_index}", "unknown-key")
        src = frame.src
        if not isinstance(src, Eui64):
            raise MeshSecurityError(at, "secured frame without extended source", "no-source")
        if src.value == self.own.value:
            raise MeshSecurityError(at, "frame claims our own address", "own-source")
        if aux.counter > MAX_FRAME_COUNTER:
            raise MeshSecurityError(at, "frame counter 0xFFFFFFFF", "counter-exhausted")
        sender = (src.value, aux.key_index)
        verdict = self._windows.check(sender, aux.counter)
        if verdict is not None:
            raise MeshSecurityError(at, f"frame counter {aux.counter} {verdict}", str(verdict))
        n_open = 1 if frame.frame_type == FrameType.COMMAND else 0  # _open_length, inlined
        # ccm_star_nonce without its checks: the source is an Eui64, the counter 32 bits
        nonce = src.value + aux.counter.to_bytes(4, "big") + _LEVEL_OCTETS[aux.level]
        aad = header + frame.payload[:n_open] if n_open else header
        try:
            plain = self._cipher(aux.key_index, aux.level).open(nonce, aad, frame.payload[n_open:])
        except CcmStarAuthError:
            raise MeshSecurityError(len(aad), "MIC does not verify", "forged") from None
        self._windows.accept(sender, aux.counter)
        self.counters["accepted"] += 1
        return frame.with_payload(frame.payload[:n_open] + plain, aux)

    def __repr__(self) -> str:  # never the keys
        return f"LinkSecurity({self.own}, keys={self.key_indexes()})"
