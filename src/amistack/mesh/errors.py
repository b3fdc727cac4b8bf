"""The exception family for untrusted link-layer input: 802.15.4 frames, their security, 6LoWPAN.

Every error has the byte offset where decoding stopped and a reason; the engines catch
`MeshDecodeError`, count `kind` and drop the frame.
"""

from __future__ import annotations

__all__ = [
    "MeshDecodeError",
    "MeshFrameDecodeError",
    "MeshLowpanDecodeError",
    "MeshSecurityError",
]


class MeshDecodeError(Exception):
    """A link-layer input that is refused: where (byte offset), why, and a counter name."""

    kind = "malformed"

    def __init__(self, offset: int, reason: str, kind: str | None = None) -> None:
        super().__init__(f"offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason
        if kind is not None:
            self.kind = kind


class MeshFrameDecodeError(MeshDecodeError):
    """A malformed IEEE 802.15.4 MAC frame."""

    kind = "frame-malformed"


class MeshSecurityError(MeshDecodeError):
    """A frame refused by link security; `kind` says why (forged, replayed, stale, unknown-key,
    level-too-low, unsecured, ...)."""


class MeshLowpanDecodeError(MeshDecodeError):
    """A malformed 6LoWPAN header or fragment (RFC 4944, RFC 6282)."""

    kind = "lowpan-malformed"
