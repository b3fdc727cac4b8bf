"""The one exception family for untrusted PANA input."""

from __future__ import annotations


class PanaDecodeError(Exception):
    """A malformed PANA message or AVP: where (byte offset) and why."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason
