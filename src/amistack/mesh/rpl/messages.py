"""RPL control messages and their options (RFC 6550 §6): frozen dataclasses with decode/encode.

Options are kept in order, padding and unknown options included, so a decoded message encodes
back to the bytes it came from (reserved fields aside, which encode as zero, §6). Unrecognized
options are skipped over by their length, as §6.7.1 requires, and kept as `UnknownOption`.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import TypeVar

from amistack.mesh.icmpv6 import IPV6_ADDR_LEN, Icmpv6Message
from amistack.mesh.rpl.constants import (
    DEFAULT_DEFAULT_LIFETIME,
    DEFAULT_DIO_INTERVAL_DOUBLINGS,
    DEFAULT_DIO_INTERVAL_MIN,
    DEFAULT_DIO_REDUNDANCY_CONSTANT,
    DEFAULT_LIFETIME_UNIT,
    DEFAULT_MAX_RANK_INCREASE,
    DEFAULT_MIN_HOP_RANK_INCREASE,
    DEFAULT_PATH_CONTROL_SIZE,
    ICMPV6_TYPE_RPL,
    INFINITE_LIFETIME,
    Mop,
    Ocp,
    OptionType,
    RplCode,
)
from amistack.mesh.rpl.errors import RplDecodeError

MAX_OPTIONS = 64  # bound on options kept per message (a 1240-byte body has at most ~620)


def _addr(value: bytes, what: str) -> bytes:
    if len(value) != IPV6_ADDR_LEN:
        raise ValueError(f"{what} must be a 16-byte IPv6 address")
    return value


# ---------------------------------------------------------------- options (§6.7)


@dataclass(frozen=True)
class Pad1:
    """§6.7.2: one octet of padding (no length field)."""

    def encode(self) -> bytes:
        return b"\x00"


@dataclass(frozen=True)
class PadN:
    """§6.7.3: N+2 octets of padding; the data is ignored on receipt and sent as zeros."""

    length: int = 0

    def encode(self) -> bytes:
        return bytes((OptionType.PADN, self.length)) + bytes(self.length)


@dataclass(frozen=True)
class DodagConfiguration:
    """§6.7.6: the DODAG Configuration option (Option Length 14)."""

    authentication_enabled: bool = False
    path_control_size: int = DEFAULT_PATH_CONTROL_SIZE
    dio_interval_doublings: int = DEFAULT_DIO_INTERVAL_DOUBLINGS
    dio_interval_min: int = DEFAULT_DIO_INTERVAL_MIN
    dio_redundancy_constant: int = DEFAULT_DIO_REDUNDANCY_CONSTANT
    max_rank_increase: int = DEFAULT_MAX_RANK_INCREASE
    min_hop_rank_increase: int = DEFAULT_MIN_HOP_RANK_INCREASE
    ocp: int = Ocp.MRHOF
    default_lifetime: int = DEFAULT_DEFAULT_LIFETIME
    lifetime_unit: int = DEFAULT_LIFETIME_UNIT

    LENGTH = 14
    _BODY = struct.Struct("!BBBBHHHxBH")

    def encode(self) -> bytes:
        flags = (0x08 if self.authentication_enabled else 0) | (self.path_control_size & 0x07)
        return bytes((OptionType.DODAG_CONFIGURATION, self.LENGTH)) + self._BODY.pack(
            flags,
            self.dio_interval_doublings,
            self.dio_interval_min,
            self.dio_redundancy_constant,
            self.max_rank_increase,
            self.min_hop_rank_increase,
            self.ocp,
            self.default_lifetime,
            self.lifetime_unit,
        )

    @classmethod
    def decode_body(cls, body: bytes, offset: int) -> DodagConfiguration:
        if len(body) != cls.LENGTH:
            raise RplDecodeError(offset, f"DODAG Configuration length {len(body)}, not 14")
        flags, dbl, imin, k, mri, mhri, ocp, life, unit = cls._BODY.unpack(body)
        return cls(bool(flags & 0x08), flags & 0x07, dbl, imin, k, mri, mhri, ocp, life, unit)


@dataclass(frozen=True)
class RplTarget:
    """§6.7.7: an address, prefix or group reachable through the DAO's sender."""

    prefix: bytes
    prefix_length: int = 128

    def __post_init__(self) -> None:
        _addr(self.prefix, "RPL Target prefix")
        if not 0 <= self.prefix_length <= 128:
            raise ValueError("prefix length is 0..128")

    def encode(self) -> bytes:
        used = (self.prefix_length + 7) // 8
        body = bytes((0, self.prefix_length)) + self.prefix[:used]
        return bytes((OptionType.RPL_TARGET, len(body))) + body

    @classmethod
    def decode_body(cls, body: bytes, offset: int) -> RplTarget:
        if len(body) < 2:
            raise RplDecodeError(offset, "RPL Target shorter than its 2 fixed octets")
        plen = body[1]
        if plen > 128:
            raise RplDecodeError(offset + 1, f"RPL Target prefix length {plen} > 128")
        prefix = body[2:]
        if len(prefix) > IPV6_ADDR_LEN or len(prefix) < (plen + 7) // 8:
            raise RplDecodeError(offset + 2, "RPL Target prefix field does not fit its length")
        used = (plen + 7) // 8
        return cls(prefix[:used] + bytes(IPV6_ADDR_LEN - used), plen)


@dataclass(frozen=True)
class TransitInformation:
    """§6.7.8: the parent a target is reached through (Parent Address: non-storing mode)."""

    path_sequence: int = 0
    path_lifetime: int = INFINITE_LIFETIME
    path_control: int = 0
    external: bool = False
    parent: bytes | None = None

    def __post_init__(self) -> None:
        if self.parent is not None:
            _addr(self.parent, "Transit parent")

    def encode(self) -> bytes:
        body = bytes(
            (
                0x80 if self.external else 0,
                self.path_control,
                self.path_sequence,
                self.path_lifetime,
            )
        )
        if self.parent is not None:
            body += self.parent
        return bytes((OptionType.TRANSIT_INFORMATION, len(body))) + body

    @classmethod
    def decode_body(cls, body: bytes, offset: int) -> TransitInformation:
        if len(body) not in (4, 4 + IPV6_ADDR_LEN):
            raise RplDecodeError(offset, f"Transit Information length {len(body)}, not 4 or 20")
        parent = bytes(body[4:]) if len(body) > 4 else None
        return cls(body[2], body[3], body[1], bool(body[0] & 0x80), parent)


@dataclass(frozen=True)
class SolicitedInformation:
    """§6.7.9: which DODAGs a DIS asks to hear from (V/I/D say which predicates apply)."""

    instance_id: int = 0
    dodag_id: bytes = bytes(IPV6_ADDR_LEN)
    version: int = 0
    match_version: bool = False  # V
    match_instance: bool = False  # I
    match_dodag_id: bool = False  # D

    LENGTH = 19

    def __post_init__(self) -> None:
        _addr(self.dodag_id, "DODAGID")

    def encode(self) -> bytes:
        flags = (
            (0x80 if self.match_version else 0)
            | (0x40 if self.match_instance else 0)
            | (0x20 if self.match_dodag_id else 0)
        )
        return (
            bytes((OptionType.SOLICITED_INFORMATION, self.LENGTH, self.instance_id, flags))
            + self.dodag_id
            + bytes((self.version,))
        )

    @classmethod
    def decode_body(cls, body: bytes, offset: int) -> SolicitedInformation:
        if len(body) != cls.LENGTH:
            raise RplDecodeError(offset, f"Solicited Information length {len(body)}, not 19")
        flags = body[1]
        return cls(
            body[0], bytes(body[2:18]), body[18], bool(flags & 0x80), bool(flags & 0x40),
            bool(flags & 0x20),
        )  # fmt: skip


@dataclass(frozen=True)
class PrefixInformation:
    """§6.7.10: the prefix nodes autoconfigure from (the RFC 4861 §4.6.2 layout)."""

    prefix: bytes
    prefix_length: int = 64
    on_link: bool = False  # L
    autonomous: bool = True  # A
    router_address: bool = False  # R: `prefix` carries the root's full address
    valid_lifetime: int = 0xFFFFFFFF
    preferred_lifetime: int = 0xFFFFFFFF

    LENGTH = 30
    _BODY = struct.Struct("!BBII4x16s")

    def __post_init__(self) -> None:
        _addr(self.prefix, "prefix")

    def encode(self) -> bytes:
        flags = (
            (0x80 if self.on_link else 0)
            | (0x40 if self.autonomous else 0)
            | (0x20 if self.router_address else 0)
        )
        return bytes((OptionType.PREFIX_INFORMATION, self.LENGTH)) + self._BODY.pack(
            self.prefix_length, flags, self.valid_lifetime, self.preferred_lifetime, self.prefix
        )

    @classmethod
    def decode_body(cls, body: bytes, offset: int) -> PrefixInformation:
        if len(body) != cls.LENGTH:
            raise RplDecodeError(offset, f"Prefix Information length {len(body)}, not 30")
        plen, flags, valid, preferred, prefix = cls._BODY.unpack(body)
        if plen > 128:
            raise RplDecodeError(offset, f"prefix length {plen} > 128")
        return cls(
            prefix, plen, bool(flags & 0x80), bool(flags & 0x40), bool(flags & 0x20), valid,
            preferred,
        )  # fmt: skip


@dataclass(frozen=True)
class TargetDescriptor:
    """§6.7.11: an opaque 32-bit tag on the preceding RPL Target."""

    descriptor: int

    def encode(self) -> bytes:
        return bytes((OptionType.TARGET_DESCRIPTOR, 4)) + self.descriptor.to_bytes(4, "big")

    @classmethod
    def decode_body(cls, body: bytes, offset: int) -> TargetDescriptor:
        if len(body) != 4:
            raise RplDecodeError(offset, f"Target Descriptor length {len(body)}, not 4")
        return cls(int.from_bytes(body, "big"))


@dataclass(frozen=True)
class UnknownOption:
    """An option this implementation does not interpret (metric container, route information,
    or a type it does not know): skipped over by its length (§6.7.1) and kept verbatim."""

    type: int
    data: bytes

    def encode(self) -> bytes:
        return bytes((self.type, len(self.data))) + self.data


RplOption = (
    Pad1
    | PadN
    | DodagConfiguration
    | RplTarget
    | TransitInformation
    | SolicitedInformation
    | PrefixInformation
    | TargetDescriptor
    | UnknownOption
)

_DECODERS = {
    OptionType.DODAG_CONFIGURATION: DodagConfiguration.decode_body,
    OptionType.RPL_TARGET: RplTarget.decode_body,
    OptionType.TRANSIT_INFORMATION: TransitInformation.decode_body,
    OptionType.SOLICITED_INFORMATION: SolicitedInformation.decode_body,
    OptionType.PREFIX_INFORMATION: PrefixInformation.decode_body,
    OptionType.TARGET_DESCRIPTOR: TargetDescriptor.decode_body,
}


def decode_options(data: bytes, base: int) -> tuple[RplOption, ...]:
    """Parse the options area of a message; `base` is its offset for error reports."""
    options: list[RplOption] = []
    pos = 0
    while pos < len(data):
        if len(options) >= MAX_OPTIONS:
            raise RplDecodeError(base + pos, f"more than {MAX_OPTIONS} options")
        kind = data[pos]
        if kind == OptionType.PAD1:
            options.append(Pad1())
            pos += 1
            continue
        if pos + 2 > len(data):
            raise RplDecodeError(base + pos, "option header truncated")
        length = data[pos + 1]
        end = pos + 2 + length
        if end > len(data):
            raise RplDecodeError(base + pos + 1, f"option length {length} runs past the message")
        body = bytes(data[pos + 2 : end])
        decoder = _DECODERS.get(kind)  # type: ignore[call-overload]
        if kind == OptionType.PADN:
            options.append(PadN(length))
        elif decoder is not None:
            options.append(decoder(body, base + pos))
        else:
            options.append(UnknownOption(kind, body))
        pos = end
    return tuple(options)


def encode_options(options: tuple[RplOption, ...]) -> bytes:
    return b"".join(option.encode() for option in options)


_O = TypeVar("_O")


def _first(options: tuple[RplOption, ...], kind: type[_O]) -> _O | None:
    return next((o for o in options if isinstance(o, kind)), None)


def _all(options: tuple[RplOption, ...], kind: type[_O]) -> tuple[_O, ...]:
    return tuple(o for o in options if isinstance(o, kind))


# ---------------------------------------------------------------- messages (§6.2-§6.5)


@dataclass(frozen=True)
class Dis:
    """§6.2: DODAG Information Solicitation."""

    options: tuple[RplOption, ...] = ()

    CODE = RplCode.DIS

    def encode(self) -> bytes:
        return b"\x00\x00" + encode_options(self.options)

    @classmethod
    def decode(cls, body: bytes) -> Dis:
        if len(body) < 2:
            raise RplDecodeError(len(body), "DIS shorter than its 2 fixed octets")
        return cls(decode_options(body[2:], 2))

    @property
    def solicited(self) -> SolicitedInformation | None:
        return _first(self.options, SolicitedInformation)


@dataclass(frozen=True)
class Dio:
    """§6.3: DODAG Information Object."""

    instance_id: int
    version: int
    rank: int
    dodag_id: bytes
    mop: int = Mop.NON_STORING
    grounded: bool = True
    preference: int = 0
    dtsn: int = 0
    options: tuple[RplOption, ...] = ()

    CODE = RplCode.DIO
    _FIXED = struct.Struct("!BBHBBxx16s")

    def __post_init__(self) -> None:
        _addr(self.dodag_id, "DODAGID")

    def encode(self) -> bytes:
        flags = (0x80 if self.grounded else 0) | (self.mop & 0x07) << 3 | (self.preference & 0x07)
        return self._FIXED.pack(
            self.instance_id, self.version, self.rank, flags, self.dtsn, self.dodag_id
        ) + encode_options(self.options)

    @classmethod
    def decode(cls, body: bytes) -> Dio:
        if len(body) < cls._FIXED.size:
            raise RplDecodeError(len(body), f"DIO shorter than its {cls._FIXED.size} fixed octets")
        instance, version, rank, flags, dtsn, dodag_id = cls._FIXED.unpack_from(body)
        options = decode_options(body[cls._FIXED.size :], cls._FIXED.size)
        return cls(
            instance, version, rank, dodag_id, (flags >> 3) & 0x07, bool(flags & 0x80),
            flags & 0x07, dtsn, options,
        )  # fmt: skip

    @property
    def configuration(self) -> DodagConfiguration | None:
        return _first(self.options, DodagConfiguration)

    @property
    def prefix(self) -> PrefixInformation | None:
        return _first(self.options, PrefixInformation)


@dataclass(frozen=True)
class Dao:
    """§6.4: Destination Advertisement Object. `dodag_id` present means the D flag is set."""

    instance_id: int
    sequence: int
    ack_requested: bool = True  # K
    dodag_id: bytes | None = None
    options: tuple[RplOption, ...] = ()

    CODE = RplCode.DAO

    def __post_init__(self) -> None:
        if self.dodag_id is not None:
            _addr(self.dodag_id, "DODAGID")

    def encode(self) -> bytes:
        flags = (0x80 if self.ack_requested else 0) | (0x40 if self.dodag_id is not None else 0)
        head = bytes((self.instance_id, flags, 0, self.sequence))
        return head + (self.dodag_id or b"") + encode_options(self.options)

    @classmethod
    def decode(cls, body: bytes) -> Dao:
        if len(body) < 4:
            raise RplDecodeError(len(body), "DAO shorter than its 4 fixed octets")
        instance, flags, _, sequence = body[:4]
        dodag_id, start = _optional_dodag_id(body, flags & 0x40, "DAO")
        return cls(
            instance, sequence, bool(flags & 0x80), dodag_id, decode_options(body[start:], start)
        )

    @property
    def targets(self) -> tuple[RplTarget, ...]:
        return _all(self.options, RplTarget)

    @property
    def transits(self) -> tuple[TransitInformation, ...]:
        return _all(self.options, TransitInformation)


@dataclass(frozen=True)
class DaoAck:
    """§6.5: DAO acknowledgement; Status 0 accepts, 128..255 reject."""

    instance_id: int
    sequence: int
    status: int = 0
    dodag_id: bytes | None = None
    options: tuple[RplOption, ...] = ()

    CODE = RplCode.DAO_ACK

    def __post_init__(self) -> None:
        if self.dodag_id is not None:
            _addr(self.dodag_id, "DODAGID")

    def encode(self) -> bytes:
        head = bytes((self.instance_id, 0x80 if self.dodag_id is not None else 0, self.sequence))
        return head + bytes((self.status,)) + (self.dodag_id or b"") + encode_options(self.options)

    @classmethod
    def decode(cls, body: bytes) -> DaoAck:
        if len(body) < 4:
            raise RplDecodeError(len(body), "DAO-ACK shorter than its 4 fixed octets")
        instance, flags, sequence, status = body[:4]
        dodag_id, start = _optional_dodag_id(body, flags & 0x80, "DAO-ACK")
        return cls(instance, sequence, status, dodag_id, decode_options(body[start:], start))


def _optional_dodag_id(body: bytes, present: int, what: str) -> tuple[bytes | None, int]:
    if not present:
        return None, 4
    if len(body) < 4 + IPV6_ADDR_LEN:
        raise RplDecodeError(len(body), f"{what} D flag set but DODAGID truncated")
    return bytes(body[4 : 4 + IPV6_ADDR_LEN]), 4 + IPV6_ADDR_LEN


RplMessage = Dis | Dio | Dao | DaoAck

_MESSAGES: dict[int, type[Dis] | type[Dio] | type[Dao] | type[DaoAck]] = {
    RplCode.DIS: Dis,
    RplCode.DIO: Dio,
    RplCode.DAO: Dao,
    RplCode.DAO_ACK: DaoAck,
}


def decode_message(code: int, body: bytes) -> RplMessage:
    """The RPL message with ICMPv6 code `code` whose body (after the checksum) is `body`.
    Offsets in errors count from the start of the body."""
    kind = _MESSAGES.get(code)
    if kind is None:
        raise RplDecodeError(0, f"RPL code 0x{code:02x} not supported")
    return kind.decode(body)


def to_icmpv6(message: RplMessage, src: bytes, dst: bytes) -> bytes:
    """The ICMPv6 type-155 message carrying `message`, checksummed for src -> dst."""
    return Icmpv6Message(ICMPV6_TYPE_RPL, message.CODE, message.encode()).encode(src, dst)


def from_icmpv6(data: bytes, src: bytes, dst: bytes) -> RplMessage:
    """Parse an ICMPv6 RPL message; raises Icmpv6DecodeError/RplDecodeError (offsets from the
    start of the ICMPv6 header)."""
    icmp = Icmpv6Message.decode(data, src, dst)
    if icmp.type != ICMPV6_TYPE_RPL:
        raise RplDecodeError(0, f"ICMPv6 type {icmp.type} is not RPL (155)")
    if icmp.code not in _MESSAGES:
        raise RplDecodeError(1, f"RPL code 0x{icmp.code:02x} not supported (secure RPL too)")
    try:
        return decode_message(icmp.code, icmp.body)
    except RplDecodeError as exc:
        raise RplDecodeError(exc.offset + 4, exc.reason) from None


heard = functools.lru_cache(maxsize=4096)(from_icmpv6)
"""`from_icmpv6` remembering its answers: a DIO is broadcast, and each of the sender's dozen
neighbours decodes the same octets (a pure function of them; the messages are immutable, a
decode error is raised each time). For a node's receive path; `data` must be `bytes`."""
