"""EAP packets (RFC 3748 §4): the codec, nothing else.

    0                   1                   2                   3
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     Code      |  Identifier   |            Length             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     Type      |  Type-Data ...   (Request and Response only)
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Decoding untrusted bytes raises only `EapDecodeError` (with the offset and the reason).
Expanded types (254, RFC 3748 §5.7) are kept opaque: the vendor id and vendor type stay at the
front of `type_data`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

HEADER_LEN = 4
"""Code, Identifier, Length (RFC 3748 §4)."""

MAX_LENGTH = 0xFFFF

_HDR = struct.Struct("!BBH")
_new = object.__new__


class EapCode(IntEnum):
    """RFC 3748 §4."""

    REQUEST = 1
    RESPONSE = 2
    SUCCESS = 3  # §4.2
    FAILURE = 4  # §4.2


class EapType(IntEnum):
    """Request/Response types (RFC 3748 §5, IANA "Method Types")."""

    IDENTITY = 1  # §5.1
    NOTIFICATION = 2  # §5.2
    NAK = 3  # §5.3.1, legacy Nak (Response only)
    MD5_CHALLENGE = 4  # §5.4
    TLS = 13  # RFC 5216
    PSK = 47  # RFC 4764
    EXPANDED = 254  # §5.7


_CODES = {int(c): c for c in EapCode}
_NO_DATA = (EapCode.SUCCESS, EapCode.FAILURE)


class EapDecodeError(Exception):
    """Untrusted bytes that are not a valid EAP packet (or method payload)."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"{reason} (at offset {offset})")
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True, init=False)
class EapPacket:
    """One EAP packet. `type` is None exactly for Success and Failure."""

    code: EapCode
    identifier: int
    type: int | None = None
    type_data: bytes = b""

    def __init__(
        self, code: EapCode, identifier: int, type: int | None = None, type_data: bytes = b""
    ) -> None:
        # The instance dict directly: half the cost of the generated frozen __init__.
        d = self.__dict__
        d["code"] = code
        d["identifier"] = identifier
        d["type"] = type
        d["type_data"] = type_data
        self.__post_init__()

    def __post_init__(self) -> None:
        if not isinstance(self.code, EapCode):
            raise ValueError(f"code must be an EapCode, got {self.code!r}")
        if not 0 <= self.identifier <= 0xFF:
            raise ValueError(f"identifier {self.identifier} out of range 0..255")
        if self.code in (EapCode.SUCCESS, EapCode.FAILURE):
            if self.type is not None or self.type_data:
                raise ValueError("EAP Success/Failure carry no type or data (RFC 3748 §4.2)")
        else:
            if self.type is None or not 0 <= self.type <= 0xFF:
                raise ValueError("EAP Request/Response need a type 0..255 (RFC 3748 §4.1)")
            if HEADER_LEN + 1 + len(self.type_data) > MAX_LENGTH:
                raise ValueError("EAP packet longer than 65535 bytes")

    # -- helpers -----------------------------------------------------------------------------

    @property
    def length(self) -> int:
        """The value of the Length field."""
        return HEADER_LEN if self.type is None else HEADER_LEN + 1 + len(self.type_data)

    @classmethod
    def request(cls, identifier: int, type_: int, type_data: bytes = b"") -> EapPacket:
        return cls(EapCode.REQUEST, identifier, type_, type_data)

    @classmethod
    def response(cls, identifier: int, type_: int, type_data: bytes = b"") -> EapPacket:
        return cls(EapCode.RESPONSE, identifier, type_, type_data)

    @classmethod
    def success(cls, identifier: int) -> EapPacket:
        return cls(EapCode.SUCCESS, identifier)

    @classmethod
    def failure(cls, identifier: int) -> EapPacket:
        return cls(EapCode.FAILURE, identifier)

    # -- codec -------------------------------------------------------------------------------

    @classmethod
    def decode(cls, data: bytes) -> EapPacket:
        """Parse one EAP packet; bytes beyond the Length field are lower-layer padding (§4)."""
        if type(data) is not bytes:
            data = bytes(data)
        size = len(data)
        if size < HEADER_LEN:
            raise EapDecodeError(0, f"EAP header needs {HEADER_LEN} bytes, got {size}")
        code_raw, identifier, length = _HDR.unpack_from(data, 0)
        code = _CODES.get(code_raw)
        if code is None:
            raise EapDecodeError(0, f"unknown EAP code {code_raw}")
        if length < HEADER_LEN:
            raise EapDecodeError(2, f"Length field {length} is shorter than the header")
        if length > size:
            raise EapDecodeError(2, f"Length field {length} exceeds the {size} bytes received")
        if code in _NO_DATA:
            if length != HEADER_LEN:
                raise EapDecodeError(2, f"EAP {code.name} with Length {length}, must be 4")
            return cls(code, identifier)
        if length < HEADER_LEN + 1:
            raise EapDecodeError(2, f"EAP {code.name} with Length {length} has no Type")
        # Built without __init__: code is an EapCode, identifier and type are octets and the
        # length fits 16 bits, so __post_init__'s checks cannot fail.
        packet: EapPacket = _new(cls)
        packet.__dict__.update(
            code=code,
            identifier=identifier,
            type=data[HEADER_LEN],
            type_data=data[HEADER_LEN + 1 : length],
        )
        return packet

    def encode(self) -> bytes:
        head = _HDR.pack(self.code, self.identifier, self.length)
        if self.type is None:
            return head
        return head + bytes([self.type]) + self.type_data

    def __repr__(self) -> str:
        kind = self.code.name
        if self.type is not None:
            try:
                kind += "/" + EapType(self.type).name
            except ValueError:
                kind += f"/type-{self.type}"
        return f"EapPacket({kind}, id={self.identifier}, {len(self.type_data)} bytes)"


def type_name(type_: int | None) -> str:
    """A readable name for a method type, for logs and reasons."""
    if type_ is None:
        return "none"
    try:
        return EapType(type_).name
    except ValueError:
        return str(type_)
