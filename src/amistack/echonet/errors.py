"""The one exception family of the ECHONET Lite codecs (STYLE.md: offset + reason, nothing
else leaks)."""

from __future__ import annotations


class EchonetDecodeError(Exception):
    """Untrusted ECHONET Lite bytes could not be decoded."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"at offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason
