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
_HDR_PACK = _HDR.pack
_HDR_UNPACK = _HDR.unpack_from
_U32_UNPACK = _U32.unpack_from
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")  # by value length mod 4


def padded(n: int) -> int:
    return (n + 3) & ~3


@dataclass(frozen=True, init=False)
class Avp:
    code: int
    value: bytes
    vendor_id: int | None = None  # not None <=> the V bit is set
    reserved_flags: int = 0  # flag bits other than V, as received
    reserved: int = 0  # the 16-bit Reserved field, as received

    def __init__(
        self,
        code: int,
        value: bytes,
        vendor_id: int | None = None,
        reserved_flags: int = 0,
        reserved: int = 0,
    ) -> None:
        # The generated frozen __init__ sets each field through object.__setattr__; filling the
        # instance dict directly is the same result at half the cost (engines build ~20 AVPs per
        # authentication).
        d = self.__dict__
        d["code"] = code
        d["value"] = value
        d["vendor_id"] = vendor_id
        d["reserved_flags"] = reserved_flags
        d["reserved"] = reserved
        self.__post_init__()

    def __post_init__(self) -> None:
        vendor = self.vendor_id
        if (
            0 <= self.code <= 0xFFFF
            and len(self.value) <= 0xFFFF
            and (vendor is None or 0 <= vendor <= 0xFFFFFFFF)
            and 0 <= self.reserved_flags <= 0x7FFF
            and 0 <= self.reserved <= 0xFFFF
        ):
            return  # the common case; the checks below say what is wrong
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
        value = self.value
        n = len(value)
        if self.vendor_id is None:
            return _HDR_PACK(self.code, self.reserved_flags, n, self.reserved) + value + _PAD[n & 3]
        flags = self.reserved_flags | AVP_FLAG_V
        head = _HDR_PACK(self.code, flags, n, self.reserved) + _U32.pack(self.vendor_id)
        return head + value + _PAD[n & 3]

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
        if type(data) is not bytes:
            data = bytes(data)
        avp, _, padded_end = _decode_one(data, offset, len(data))
        return avp, padded_end


_new = object.__new__


def _decode_one(data: bytes, offset: int, size: int) -> tuple[Avp, int, int]:
    """The AVP at `offset`, its value offset, and the offset just past its padding.

    Built without `__init__`: every field comes from a fixed-width wire field, so the range checks
    of `__post_init__` cannot fail, and skipping them (and the frozen `__setattr__`) halves the cost
    of decoding a message."""
    if size - offset < AVP_HEADER_LENGTH:
        raise PanaDecodeError(offset, "truncated AVP header")
    code, flags, length, reserved = _HDR_UNPACK(data, offset)
    pos = offset + AVP_HEADER_LENGTH
    vendor: int | None = None
    if flags & AVP_FLAG_V:
        if size - pos < 4:
            raise PanaDecodeError(pos, "truncated Vendor-Id")
        vendor = _U32_UNPACK(data, pos)[0]
        pos += 4
    end = pos + length
    if end > size:
        raise PanaDecodeError(offset + 4, f"AVP length {length} runs past the message")
    padded_end = pos + ((length + 3) & ~3)
    if padded_end > size:
        raise PanaDecodeError(end, "AVP padding truncated")
    avp: Avp = _new(Avp)
    avp.__dict__.update(
        code=code,
        value=data[pos:end],
        vendor_id=vendor,
        reserved_flags=flags & 0x7FFF,  # ~AVP_FLAG_V & 0xFFFF
        reserved=reserved,
    )
    return avp, pos, padded_end


def decode_avps(data: bytes, offset: int = 0) -> tuple[tuple[Avp, ...], list[tuple[int, int]]]:
    """All AVPs from `offset` to the end, and (value offset, value length) of each."""
    if type(data) is not bytes:
        data = bytes(data)
    avps: list[Avp] = []
    spans: list[tuple[int, int]] = []
    pos = offset
    size = len(data)
    while pos < size:
        avp, value_start, pos = _decode_one(data, pos, size)
        avps.append(avp)
        spans.append((value_start, len(avp.value)))
    return tuple(avps), spans


def find_value_span(data: bytes, offset: int, code: int) -> tuple[int, int] | None:
    """(value offset, value length) of the first non-vendor AVP with `code` from `offset` on,
    checking every AVP header to the end exactly as `decode_avps` does (same PanaDecodeError),
    without building the AVPs: for verifying AUTH over octets already decoded once."""
    size = len(data)
    pos = offset
    found: tuple[int, int] | None = None
    while pos < size:
        if size - pos < AVP_HEADER_LENGTH:
            raise PanaDecodeError(pos, "truncated AVP header")
        avp_code, flags, length, _ = _HDR_UNPACK(data, pos)
        start = pos + AVP_HEADER_LENGTH
        if flags & AVP_FLAG_V:
            if size - start < 4:
                raise PanaDecodeError(start, "truncated Vendor-Id")
            start += 4
        elif found is None and avp_code == code:
            found = (start, length)
        end = start + length
        if end > size:
            raise PanaDecodeError(pos + 4, f"AVP length {length} runs past the message")
        nxt = start + ((length + 3) & ~3)
        if nxt > size:
            raise PanaDecodeError(end, "AVP padding truncated")
        pos = nxt
    return found


def decode_avp_tuple(data: bytes, offset: int) -> tuple[Avp, ...]:
    """`decode_avps(data, offset)[0]` for bytes `data`: the same checks and errors, in one inlined
    loop (no per-AVP call, no spans); the hot path of every received message."""
    avps: list[Avp] = []
    append = avps.append
    size = len(data)
    pos = offset
    while pos < size:
        if size - pos < AVP_HEADER_LENGTH:
            raise PanaDecodeError(pos, "truncated AVP header")
        code, flags, length, reserved = _HDR_UNPACK(data, pos)
        start = pos + AVP_HEADER_LENGTH
        vendor: int | None = None
        if flags & AVP_FLAG_V:
            if size - start < 4:
                raise PanaDecodeError(start, "truncated Vendor-Id")
            vendor = _U32_UNPACK(data, start)[0]
            start += 4
        end = start + length
        if end > size:
            raise PanaDecodeError(pos + 4, f"AVP length {length} runs past the message")
        nxt = start + ((length + 3) & ~3)
        if nxt > size:
            raise PanaDecodeError(end, "AVP padding truncated")
        avp: Avp = _new(Avp)  # see _decode_one
        avp.__dict__.update(
            code=code,
            value=data[start:end],
            vendor_id=vendor,
            reserved_flags=flags & 0x7FFF,
            reserved=reserved,
        )
        append(avp)
        pos = nxt
    return tuple(avps)
