"""Anti-replay sliding windows over monotonically numbered messages (RFC 4303 §3.4.3 style).

One shape serves every protocol that numbers what a sender sends: 802.15.4 frame counters (the
B-route link, the mesh), C12.22 calling AP invocation ids. `check` runs before the (costlier)
cryptographic check and `accept` only after it succeeded, so a forged message never moves a
window. `ReplayWindows` keeps one window per sender, bounded: the least recently accepted
sender is forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from enum import StrEnum
from typing import Generic, TypeVar

__all__ = ["DEFAULT_WINDOW", "Replay", "ReplayWindow", "ReplayWindows"]

DEFAULT_WINDOW = 64  # RFC 4303 §3.4.3: a window of 64 is the recommended default
K = TypeVar("K", bound=Hashable)


class Replay(StrEnum):
    """Why `check` refused a number; the value doubles as the counter name."""

    REPLAYED = "replayed"  # inside the window and seen before
    STALE = "stale"  # older than the window


class ReplayWindow:
    """The window of one sender: the highest number accepted and a bitmap of the `size` below."""

    __slots__ = ("_bitmap", "_mask", "highest", "size")

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 1:
            raise ValueError("window size must be >= 1")
        self.size = size
        self.highest = -1
        self._bitmap = 0  # bit i: number `highest - i` was accepted
        self._mask = (1 << size) - 1

    def check(self, number: int) -> Replay | None:
        """None if `number` may be accepted, else why not."""
        if number > self.highest:
            return None
        behind = self.highest - number
        if behind >= self.size:
            return Replay.STALE
        return Replay.REPLAYED if (self._bitmap >> behind) & 1 else None

    def accept(self, number: int) -> None:
        """Record `number` (call only after its message authenticated)."""
        if number > self.highest:
            shift = number - self.highest
            self._bitmap = ((self._bitmap << shift) | 1) & self._mask if shift < self.size else 1
            self.highest = number
        else:
            self._bitmap |= 1 << (self.highest - number)


class ReplayWindows(Generic[K]):
    """One `ReplayWindow` per sender, at most `max_senders` of them (least recently heard
    forgotten first; a forgotten sender's old numbers are accepted again, so size it for the
    neighbourhood)."""

    def __init__(self, size: int = DEFAULT_WINDOW, max_senders: int = 1_000_000) -> None:
        if size < 1:
            raise ValueError("window size must be positive")
        if max_senders < 1:
            raise ValueError("max_senders must be positive")
        self.size = size
        self.max_senders = max_senders
        self._windows: OrderedDict[K, ReplayWindow] = OrderedDict()

    def check(self, sender: K, number: int) -> Replay | None:
        window = self._windows.get(sender)
        return None if window is None else window.check(number)

    def accept(self, sender: K, number: int) -> None:
        window = self._windows.pop(sender, None)
        if window is None:
            window = ReplayWindow(self.size)
        window.accept(number)
        self._windows[sender] = window
        while len(self._windows) > self.max_senders:
            self._windows.popitem(last=False)

    def admit(self, sender: K, number: int) -> Replay | None:
        """`check`, then `accept` when it passed, in one look-up: for a caller that checks only
        after the message authenticated (a C12.22 window is per sender and per key)."""
        windows = self._windows
        window = windows.get(sender)
        if window is None:
            window = windows[sender] = ReplayWindow(self.size)
            while len(windows) > self.max_senders:
                windows.popitem(last=False)
        else:
            verdict = window.check(number)
            if verdict is not None:
                return verdict
            windows.move_to_end(sender)
        window.accept(number)
        return None

    def highest(self, sender: K) -> int | None:
        """The highest number accepted from `sender` (None if unknown)."""
        window = self._windows.get(sender)
        return None if window is None else window.highest

    def __len__(self) -> int:
        return len(self._windows)
