"""PANA messages, RFC 5191 §6.2 (header) and §7 (messages).

     0                   1                   2                   3
    |         Reserved              |          Message Length       |
    |           Flags               |          Message Type         |
    |                       Session Identifier                      |
    |                        Sequence Number                        |
    |  AVPs ...

Message Length counts the whole message, header included, and must equal the datagram length.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace

from amistack.pana.avp import Avp, decode_avp_tuple, decode_avps, find_value_span
from amistack.pana.constants import HEADER_LENGTH, AvpCode, Flag, MessageType
from amistack.pana.errors import PanaDecodeError

_HDR = struct.Struct("!HHHHII")
_HDR_UNPACK = _HDR.unpack_from
_HDR_PACK = _HDR.pack
_R = int(Flag.R)  # plain int: IntFlag arithmetic builds a new enum member per operation
_AUTH = int(AvpCode.AUTH)
_new = object.__new__

_SHORT = {
    (MessageType.PCI, True): "PCI",
    (MessageType.PCI, False): "PCI",
    (MessageType.AUTH, True): "PAR",
    (MessageType.AUTH, False): "PAN",
    (MessageType.TERMINATION, True): "PTR",
    (MessageType.TERMINATION, False): "PTA",
    (MessageType.NOTIFICATION, True): "PNR",
    (MessageType.NOTIFICATION, False): "PNA",
    (MessageType.RELAY, True): "PRY",
    (MessageType.RELAY, False): "PRY",
}


@dataclass(frozen=True, init=False)
class PanaMessage:
    msg_type: int
    flags: int
    session_id: int
    seq: int
    avps: tuple[Avp, ...] = ()
    reserved: int = 0  # the 16-bit Reserved field, as received (RFC 5191 §6.2: ignored)

    def __init__(
        self,
        msg_type: int,
        flags: int,
        session_id: int,
        seq: int,
        avps: tuple[Avp, ...] = (),
        reserved: int = 0,
    ) -> None:
        # As Avp.__init__: the instance dict directly, not object.__setattr__ per field.
        d = self.__dict__
        d["msg_type"] = msg_type
        d["flags"] = flags
        d["session_id"] = session_id
        d["seq"] = seq
        d["avps"] = avps
        d["reserved"] = reserved
        self.__post_init__()

    def __post_init__(self) -> None:
        if (
            0 <= self.msg_type <= 0xFFFF
            and 0 <= self.flags <= 0xFFFF
            and 0 <= self.session_id <= 0xFFFFFFFF
            and 0 <= self.seq <= 0xFFFFFFFF
            and 0 <= self.reserved <= 0xFFFF
        ):
            return  # the common case, without building the table below
        for name, value, top in (
            ("msg_type", self.msg_type, 0xFFFF),
            ("flags", self.flags, 0xFFFF),
            ("session_id", self.session_id, 0xFFFFFFFF),
            ("seq", self.seq, 0xFFFFFFFF),
            ("reserved", self.reserved, 0xFFFF),
        ):
            if not 0 <= value <= top:
                raise ValueError(f"{name} out of range")

    # -- views --------------------------------------------------------------------------------
    @property
    def is_request(self) -> bool:
        return bool(self.flags & _R)

    def has(self, flag: Flag) -> bool:
        return bool(self.flags & int(flag))

    @property
    def name(self) -> str:
        try:
            return _SHORT[(MessageType(self.msg_type), self.is_request)]
        except ValueError:
            return f"type{self.msg_type}"

    def find(self, code: int) -> Avp | None:
        """The first non-vendor AVP with `code` (vendor AVPs live in another code space)."""
        # A plain loop: messages carry a handful of AVPs, so this beats building an index.
        for a in self.avps:
            if a.code == code and a.vendor_id is None:
                return a
        return None

    def find_all(self, code: int) -> Iterator[Avp]:
        return iter([a for a in self.avps if a.code == code and a.vendor_id is None])

    def u32(self, code: int) -> int | None:
        avp = self.find(code)
        return None if avp is None else avp.as_u32()

    def octets(self, code: int) -> bytes | None:
        avp = self.find(code)
        return None if avp is None else avp.value

    def without(self, code: int) -> PanaMessage:
        return replace(
            self, avps=tuple(a for a in self.avps if not (a.code == code and a.vendor_id is None))
        )

    def __repr__(self) -> str:
        codes = ",".join(str(a.code) for a in self.avps)
        return (
            f"PanaMessage({self.name} flags={self.flags:#06x} session={self.session_id:#x} "
            f"seq={self.seq:#x} avps=[{codes}])"
        )

    # -- wire ---------------------------------------------------------------------------------
    def encode(self) -> bytes:
        body = b"".join([a.encode() for a in self.avps])
        length = HEADER_LENGTH + len(body)
        if length > 0xFFFF:
            raise ValueError("PANA message longer than 65535 octets")
        return (
            _HDR_PACK(self.reserved, length, self.flags, self.msg_type, self.session_id, self.seq)
            + body
        )

    @classmethod
    def decode(cls, data: bytes) -> PanaMessage:
        return _decode(data)


def decode_with_spans(data: bytes) -> tuple[PanaMessage, list[tuple[int, int]]]:
    """The message and, per AVP, (value offset, value length) in `data` (for AUTH checking)."""
    data, (reserved, _, flags, msg_type, session_id, seq) = _header(data)
    avps, spans = decode_avps(data, HEADER_LENGTH)
    return _message(msg_type, flags, session_id, seq, avps, reserved), spans


def _header(data: bytes) -> tuple[bytes, tuple[int, int, int, int, int, int]]:
    """`data` as bytes and its header fields, once the Message Length matches the datagram."""
    if type(data) is not bytes:
        data = bytes(data)
    size = len(data)
    if size < HEADER_LENGTH:
        raise PanaDecodeError(0, f"truncated header ({size} octets)")
    reserved, length, flags, msg_type, session_id, seq = _HDR_UNPACK(data, 0)
    if length < HEADER_LENGTH:
        raise PanaDecodeError(2, f"Message Length {length} shorter than the header")
    if length > size:
        raise PanaDecodeError(2, f"Message Length {length} exceeds datagram ({size})")
    if length < size:
        raise PanaDecodeError(length, f"{size - length} octets after Message Length")
    return data, (reserved, length, flags, msg_type, session_id, seq)


def _message(
    msg_type: int, flags: int, session_id: int, seq: int, avps: tuple[Avp, ...], reserved: int
) -> PanaMessage:
    # Every field comes from a fixed-width wire field, so __post_init__'s range checks cannot fail.
    msg: PanaMessage = _new(PanaMessage)
    msg.__dict__.update(
        msg_type=msg_type,
        flags=flags,
        session_id=session_id,
        seq=seq,
        avps=avps,
        reserved=reserved,
    )
    return msg


def _decode(data: bytes) -> PanaMessage:
    """`decode_with_spans(data)[0]`, without collecting the spans."""
    data, (reserved, _, flags, msg_type, session_id, seq) = _header(data)
    return _message(
        msg_type, flags, session_id, seq, decode_avp_tuple(data, HEADER_LENGTH), reserved
    )


def auth_span(data: bytes) -> tuple[PanaMessage, tuple[int, int] | None]:
    """Decode `data` and locate the value of its (first, non-vendor) AUTH AVP."""
    msg, spans = decode_with_spans(data)
    for avp, span in zip(msg.avps, spans, strict=True):
        if avp.code == _AUTH and avp.vendor_id is None:
            return msg, span
    return msg, None


def check_header(data: bytes) -> None:
    """The header checks of `decode_with_spans`, raising the same PanaDecodeError."""
    size = len(data)
    if size < HEADER_LENGTH:
        raise PanaDecodeError(0, f"truncated header ({size} octets)")
    length = _HDR_UNPACK(data, 0)[1]
    if length < HEADER_LENGTH:
        raise PanaDecodeError(2, f"Message Length {length} shorter than the header")
    if length > size:
        raise PanaDecodeError(2, f"Message Length {length} exceeds datagram ({size})")
    if length < size:
        raise PanaDecodeError(length, f"{size - length} octets after Message Length")


def auth_value_span(data: bytes) -> tuple[int, int] | None:
    """`auth_span(data)[1]` with the same validation, without building the message."""
    if type(data) is not bytes:
        data = bytes(data)
    check_header(data)
    return find_value_span(data, HEADER_LENGTH, _AUTH)
