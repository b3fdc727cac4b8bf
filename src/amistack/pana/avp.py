"""PANA AVPs, RFC 5191 §8.1.

     0                   1                   2                   3
    |           AVP Code            |           AVP Flags           |
    |          AVP Length           |            Reserved           |
    |                Vendor-Id (only when the V bit is set)         |
    |    Value ... (AVP Length octets, then zero padding to 32 bits)

AVP Length counts the Value only. The only flag is V; RFC 5191 has no M (mandatory) bit, so an
unknown AVP is never an error: it is decoded, kept (round trip is exact) and ignored by the engines.
Reserved flag bits and the Reserved field "MUST be set to zero and ignored by the receiver": we keep
what was received so a re-encoded message is byte-identical, and nothing reads them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from amistack.pana.constants import AVP_FLAG_V, AVP_HEADER_LENGTH
from amistack.pana.errors import PanaDecodeError

_HDR = struct.Struct("!HHHH")
_U32 = struct.Struct("!I")


def padded(n: int) -> int:
    return (n + 3) & ~3


@dataclass(frozen=True)
class Avp:
    code: int
    value: bytes
    vendor_id: int | None = None  # not None <=> the V bit is set
    reserved_flags: int = 0  # flag bits other than V, as received
    reserved: int = 0  # the 16-bit Reserved field, as received

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFFFF:
            raise ValueError("AVP code out of range")
        if len(self.value) > 0xFFFF:
            raise ValueError("AVP value longer than 65535 octets")
        if self.vendor_id is not None and not 0 <= self.vendor_id <= 0xFFFFFFFF:
            raise ValueError("vendor id out of range")
        if self.reserved_flags & AVP_FLAG_V or not 0 <= self.reserved_flags <= 0xFFFF:
            raise ValueError("reserved_flags must not contain V")
        if not 0 <= self.reserved <= 0xFFFF:
            raise ValueError("reserved out of range")

    # -- typed constructors and accessors ---------------------------------------------------
    @classmethod
    def u32(cls, code: int, value: int) -> Avp:
        return cls(code, _U32.pack(value))

    def as_u32(self) -> int:
        """The value as Unsigned32/Integer32/Enumerated; a wrong length is a decode error."""
        if len(self.value) != 4:
            raise PanaDecodeError(
                0, f"AVP {self.code}: expected 4-octet value, got {len(self.value)}"
            )
        return int(_U32.unpack(self.value)[0])

    @property
    def is_vendor(self) -> bool:
        return self.vendor_id is not None

    # -- wire ---------------------------------------------------------------------------------
    def encode(self) -> bytes:
        flags = self.reserved_flags | (AVP_FLAG_V if self.vendor_id is not None else 0)
        out = _HDR.pack(self.code, flags, len(self.value), self.reserved)
        if self.vendor_id is not None:
            out += _U32.pack(self.vendor_id)
        pad = padded(len(self.value)) - len(self.value)
        return out + self.value + b"\x00" * pad

    @classmethod
    def decode(cls, data: bytes) -> Avp:
        """Exactly one AVP (with its padding)."""
        avp, end = cls.decode_from(data, 0)
        if end != len(data):
            raise PanaDecodeError(end, "trailing octets after AVP")
        return avp

    @classmethod
    def decode_from(cls, data: bytes, offset: int) -> tuple[Avp, int]:
        """The AVP at `offset` and the offset just past its padding."""
        if len(data) - offset < AVP_HEADER_LENGTH:
            raise PanaDecodeError(offset, "truncated AVP header")
        code, flags, length, reserved = _HDR.unpack_from(data, offset)
        pos = offset + AVP_HEADER_LENGTH
        vendor: int | None = None
        if flags & AVP_FLAG_V:
            if len(data) - pos < 4:
                raise PanaDecodeError(pos, "truncated Vendor-Id")
            vendor = int(_U32.unpack_from(data, pos)[0])
            pos += 4
        end = pos + length
        if end > len(data):
            raise PanaDecodeError(offset + 4, f"AVP length {length} runs past the message")
        padded_end = pos + padded(length)
        if padded_end > len(data):
            raise PanaDecodeError(end, "AVP padding truncated")
        avp = cls(code, bytes(data[pos:end]), vendor, flags & ~AVP_FLAG_V & 0xFFFF, reserved)
        return avp, padded_end


def decode_avps(data: bytes, offset: int = 0) -> tuple[tuple[Avp, ...], list[tuple[int, int]]]:
    """All AVPs from `offset` to the end, and (value offset, value length) of each."""
    avps: list[Avp] = []
    spans: list[tuple[int, int]] = []
    pos = offset
    while pos < len(data):
        avp, nxt = Avp.decode_from(data, pos)
        value_len = len(avp.value)
        value_start = pos + AVP_HEADER_LENGTH + (4 if avp.vendor_id is not None else 0)
        avps.append(avp)
        spans.append((value_start, value_len))
        pos = nxt
    return tuple(avps), spans
