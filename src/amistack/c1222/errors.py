"""The one exception family of the C12.22 codecs (STYLE.md: offset + reason, nothing else leaks)."""

from __future__ import annotations


class C1222DecodeError(Exception):
    """Untrusted C12.22 / C12.19 bytes could not be decoded."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"at offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason
