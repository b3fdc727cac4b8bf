"""Property maps (EPC 0x9D/0x9E/0x9F; ECHONET Lite spec part 2, appendix 1 "Property map
description format").

Byte 0 is the number of properties. Below 16 they follow as a list of EPCs (1 + n bytes); from 16
on a 16-byte bitmap follows (17 bytes): EPC `e` is bit `(e >> 4) - 8` of byte `e & 0x0F`, which is
why only EPCs 0x80-0xFF can appear. Decoding is strict: a wrong length, an EPC below 0x80, a
repeated EPC or a count that disagrees with the bitmap is an `EchonetDecodeError`.
"""

from __future__ import annotations

from collections.abc import Iterable

from amistack.echonet.errors import EchonetDecodeError

__all__ = ["BITMAP_THRESHOLD", "decode_propmap", "encode_propmap"]

BITMAP_THRESHOLD = 16  # from this many properties on, the bitmap form is used


def encode_propmap(epcs: Iterable[int]) -> bytes:
    """EDT of a property map for `epcs` (duplicates collapse; ValueError outside 0x80-0xFF)."""
    s = sorted(set(epcs))
    for e in s:
        if not 0x80 <= e <= 0xFF:
            raise ValueError(f"EPC 0x{e:02X} cannot appear in a property map (0x80-0xFF only)")
    if len(s) < BITMAP_THRESHOLD:
        return bytes([len(s), *s])
    bitmap = bytearray(16)
    for e in s:
        bitmap[e & 0x0F] |= 1 << ((e >> 4) - 8)
    return bytes([len(s)]) + bytes(bitmap)


def decode_propmap(edt: bytes) -> frozenset[int]:
    """The EPCs of a property map EDT."""
    if not edt:
        raise EchonetDecodeError(0, "empty property map")
    n = edt[0]
    if n < BITMAP_THRESHOLD:
        if len(edt) != 1 + n:
            raise EchonetDecodeError(
                min(len(edt), 1 + n), f"list map of {n} EPCs must be {1 + n} bytes, got {len(edt)}"
            )
        out = frozenset(edt[1:])
        if len(out) != n:
            raise EchonetDecodeError(1, "repeated EPC in a list map")
        for i, e in enumerate(edt[1:], start=1):
            if e < 0x80:
                raise EchonetDecodeError(i, f"EPC 0x{e:02X} below 0x80 in a property map")
        return out
    if len(edt) != 17:
        raise EchonetDecodeError(min(len(edt), 17), f"bitmap map must be 17 bytes, got {len(edt)}")
    found = frozenset(
        0x80 | (bit << 4) | i for i in range(16) for bit in range(8) if edt[1 + i] >> bit & 1
    )
    if len(found) != n:
        raise EchonetDecodeError(0, f"count {n} disagrees with the {len(found)} bits set")
    return found
