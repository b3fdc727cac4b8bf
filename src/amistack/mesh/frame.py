"""IEEE 802.15.4-2006/2011 MAC frames: the header codec and the auxiliary security header.

    MHR: frame control (2) | sequence number (1) | addressing fields (0..20)
         | auxiliary security header (0, 5, 6, 10 or 14)
    MAC payload | (MIC, when secured) -- the FCS (2) is the PHY driver's (see `fcs`)

Frame control (802.15.4-2006 §7.2.1.1, figure 42): bits 0-2 frame type, 3 security enabled,
4 frame pending, 5 acknowledgment request, 6 PAN ID compression, 7-9 reserved, 10-11 destination
addressing mode, 12-13 frame version, 14-15 source addressing mode. Multi-octet fields are sent
least significant octet first (§7.2), so addresses are reversed on the wire.

PAN ID compression (§7.2.1.1.5): with both addresses present and the bit set, the source PAN id
is left out and equals the destination PAN id. The auxiliary security header (§7.6.2): security
control (level, bits 0-2; key identifier mode, bits 3-4), frame counter (4), key identifier
(mode 0: none; 1: key index; 2: 4-octet key source + index; 3: 8-octet key source + index).

Frame versions 0 (2003) and 1 (2006/2011) are decoded; secured frames are sent as version 1, as
2006 requires (§7.2.1.1.7). Version 2 (802.15.4-2015, with its other PAN ID compression table and
header IEs) is refused with a typed error. `Frame.decode` raises only `MeshFrameDecodeError`.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from enum import IntEnum

from amistack.addr import EUI64_LENGTH, Eui64, LinkAddr, PanId, ShortAddr
from amistack.crypto.ccm_star import SecurityLevel
from amistack.mesh.errors import MeshFrameDecodeError
from amistack.mesh.unchecked import unchecked

__all__ = [
    "MAX_PHY_PACKET_SIZE",
    "AddrMode",
    "AuxSecurityHeader",
    "Frame",
    "FrameType",
    "KeyIdMode",
    "fcs",
]

MAX_PHY_PACKET_SIZE = 127  # aMaxPHYPacketSize, 802.15.4-2006 §6.4.1 (MAC frame + 2-octet FCS)
FCS_LENGTH = 2  # 802.15.4-2006 §7.2.1.9
_FCF = struct.Struct("<HB")  # frame control, sequence number


class FrameType(IntEnum):
    """802.15.4-2006 table 79."""

    BEACON = 0
    DATA = 1
    ACK = 2
    COMMAND = 3


class AddrMode(IntEnum):
    """802.15.4-2006 table 80."""

    NONE = 0
    SHORT = 2
    EXTENDED = 3


class KeyIdMode(IntEnum):
    """802.15.4-2006 table 96."""

    IMPLICIT = 0
    INDEX = 1  # key index only: what amistack uses (1..7, as wsbrd's GTK indexes)
    SOURCE4 = 2
    SOURCE8 = 3


_LEVELS = tuple(SecurityLevel)  # by value: decoding without the enum call per frame
_KEY_ID_MODES = tuple(KeyIdMode)
_FRAME_TYPES = tuple(FrameType)
_ADDR_MODES = (AddrMode.NONE, None, AddrMode.SHORT, AddrMode.EXTENDED)  # 1 is reserved
_KEY_SOURCE_LENGTH = {KeyIdMode.IMPLICIT: 0, KeyIdMode.INDEX: 0, KeyIdMode.SOURCE4: 4,
                      KeyIdMode.SOURCE8: 8}  # fmt: skip
_FC_SECURITY = 1 << 3
_FC_PENDING = 1 << 4
_FC_ACK_REQUEST = 1 << 5
_FC_PAN_COMPRESSION = 1 << 6
_FC_RESERVED = 0b111 << 7
FRAME_VERSION_2003 = 0
FRAME_VERSION_2006 = 1


@dataclass(frozen=True)
class AuxSecurityHeader:
    """The auxiliary security header (802.15.4-2006 §7.6.2)."""

    level: SecurityLevel
    counter: int
    key_id_mode: KeyIdMode = KeyIdMode.INDEX
    key_index: int = 1
    key_source: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.counter <= 0xFFFFFFFF:
            raise ValueError("frame counters are 32-bit")
        if not 0 <= self.key_index <= 0xFF:
            raise ValueError("key indexes are one octet")
        if len(self.key_source) != _KEY_SOURCE_LENGTH[self.key_id_mode]:
            raise ValueError(f"key id mode {self.key_id_mode.name} needs another key source")

    @property
    def length(self) -> int:
        """Octets on the wire: 5, or 6 / 10 / 14 with a key identifier."""
        extra = 0 if self.key_id_mode == KeyIdMode.IMPLICIT else 1 + len(self.key_source)
        return 5 + extra

    def encode(self) -> bytes:
        out = bytes((self.level | self.key_id_mode << 3,)) + self.counter.to_bytes(4, "little")
        if self.key_id_mode != KeyIdMode.IMPLICIT:
            out += self.key_source[::-1] + bytes((self.key_index,))
        return out

    @classmethod
    def decode(cls, data: bytes, offset: int) -> tuple[AuxSecurityHeader, int]:
        if offset + 5 > len(data):
            raise MeshFrameDecodeError(offset, "auxiliary security header truncated")
        control = data[offset]
        if control & 0xE0:
            raise MeshFrameDecodeError(offset, f"reserved security control bits ({control:#04x})")
        level = _LEVELS[control & 7]
        if level == SecurityLevel.NONE:
            raise MeshFrameDecodeError(offset, "security enabled with security level 0")
        mode = _KEY_ID_MODES[control >> 3 & 3]
        counter = int.from_bytes(data[offset + 1 : offset + 5], "little")
        pos = offset + 5
        source, index = b"", 0
        if mode != KeyIdMode.IMPLICIT:
            n = _KEY_SOURCE_LENGTH[mode]
            if pos + n + 1 > len(data):
                raise MeshFrameDecodeError(pos, "key identifier truncated")
            source, index = bytes(data[pos : pos + n][::-1]), data[pos + n]
            pos += n + 1
        # the checks of __post_init__ hold by construction (one octet, four octets, the mode's
        # source length): build without them, as `Frame.decode` does
        return unchecked(cls, level=level, counter=counter, key_id_mode=mode, key_index=index,
                         key_source=source), pos  # fmt: skip


def _addr_mode(addr: LinkAddr | None) -> AddrMode:
    if addr is None:
        return AddrMode.NONE
    return AddrMode.EXTENDED if isinstance(addr, Eui64) else AddrMode.SHORT


def _encode_addr(addr: LinkAddr) -> bytes:
    return addr.value[::-1] if isinstance(addr, Eui64) else addr.value.to_bytes(2, "little")


@dataclass(frozen=True)
class Frame:
    """One MAC frame. `payload` is what follows the MHR on the wire: the plaintext of an
    unsecured frame, or (for a secured one) the payload as sealed by `mesh.security`.
    With `pan_id_compression` the source PAN id is left out (`src_pan` None, see `source_pan`)."""

    frame_type: FrameType
    seq: int
    dst_pan: PanId | None = None
    dst: LinkAddr | None = None
    src_pan: PanId | None = None
    src: LinkAddr | None = None
    payload: bytes = b""
    security: AuxSecurityHeader | None = None
    pan_id_compression: bool = False
    frame_pending: bool = False
    ack_request: bool = False
    version: int = FRAME_VERSION_2006

    def __post_init__(self) -> None:
        if not 0 <= self.seq <= 0xFF:
            raise ValueError("sequence numbers are one octet")
        if (self.dst is None) != (self.dst_pan is None):
            raise ValueError("a destination address goes with a destination PAN id")
        if self.pan_id_compression:
            if self.dst is None or self.src is None or self.src_pan is not None:
                raise ValueError("PAN ID compression needs both addresses and no source PAN id")
        elif (self.src is None) != (self.src_pan is None):
            raise ValueError("a source address goes with a source PAN id (or compression)")
        if self.version not in (FRAME_VERSION_2003, FRAME_VERSION_2006):
            raise ValueError("frame versions 0 and 1 are supported")

    @property
    def source_pan(self) -> PanId | None:
        """The source PAN id, compressed or not."""
        return self.dst_pan if self.pan_id_compression else self.src_pan

    def header(self) -> bytes:
        """The MHR, auxiliary security header included: the authenticated data of CCM*."""
        fc = int(self.frame_type)
        fc |= _FC_SECURITY if self.security is not None else 0
        fc |= _FC_PENDING if self.frame_pending else 0
        fc |= _FC_ACK_REQUEST if self.ack_request else 0
        fc |= _FC_PAN_COMPRESSION if self.pan_id_compression else 0
        fc |= _addr_mode(self.dst) << 10 | self.version << 12 | _addr_mode(self.src) << 14
        out = bytearray(_FCF.pack(fc, self.seq))
        if self.dst is not None and self.dst_pan is not None:
            out += self.dst_pan.value.to_bytes(2, "little") + _encode_addr(self.dst)
        if self.src is not None:
            if self.src_pan is not None:
                out += self.src_pan.value.to_bytes(2, "little")
            out += _encode_addr(self.src)
        if self.security is not None:
            out += self.security.encode()
        return bytes(out)

    def encode(self) -> bytes:
        return self.header() + self.payload

    def with_payload(self, payload: bytes, security: AuxSecurityHeader | None) -> Frame:
        """This frame with another payload and security header. Neither takes part in the
        checks of `__post_init__`, so the copy skips them (it runs for every frame secured or
        opened: `dataclasses.replace` cost a twentieth of a 1,000-node mesh's CPU)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__, payload=payload, security=security)
        return new

    @classmethod
    def decode(cls, data: bytes, max_length: int = MAX_PHY_PACKET_SIZE - FCS_LENGTH) -> Frame:
        """One MAC frame without FCS; raises only MeshFrameDecodeError. `max_length`: a SUN
        PHY (802.15.4g) carries longer frames than the 2006 PHYs' 127 octets."""
        if len(data) < _FCF.size:
            raise MeshFrameDecodeError(len(data), "shorter than frame control and sequence number")
        if len(data) > max_length:
            raise MeshFrameDecodeError(max_length, "longer than aMaxPHYPacketSize")
        fc, seq = _FCF.unpack_from(data)
        ftype = fc & 7
        if ftype > FrameType.COMMAND:
            raise MeshFrameDecodeError(0, f"reserved frame type {ftype}")
        if fc & _FC_RESERVED:
            raise MeshFrameDecodeError(0, f"reserved frame control bits ({fc:#06x})")
        version = fc >> 12 & 3
        if version > FRAME_VERSION_2006:
            raise MeshFrameDecodeError(1, f"frame version {version} is not supported")
        dst_mode, src_mode = _ADDR_MODES[fc >> 10 & 3], _ADDR_MODES[fc >> 14 & 3]
        if dst_mode is None or src_mode is None:
            raise MeshFrameDecodeError(1, "reserved addressing mode 1")
        compression = bool(fc & _FC_PAN_COMPRESSION)
        if compression and (dst_mode == AddrMode.NONE or src_mode == AddrMode.NONE):
            raise MeshFrameDecodeError(0, "PAN ID compression without both addresses")
        pos = _FCF.size
        dst_pan = dst = src_pan = src = None
        if dst_mode != AddrMode.NONE:
            dst_pan, pos = _read_pan(data, pos)
            dst, pos = _read_addr(data, pos, dst_mode)
        if src_mode != AddrMode.NONE:
            if not compression:
                src_pan, pos = _read_pan(data, pos)
            src, pos = _read_addr(data, pos, src_mode)
        security = None
        if fc & _FC_SECURITY:
            if version == FRAME_VERSION_2003:
                raise MeshFrameDecodeError(
                    pos, "a 2003 frame cannot carry the 2006 security header"
                )
            security, pos = AuxSecurityHeader.decode(data, pos)
        # every check of __post_init__ was made above: build without running them again
        # (one frame decoded per reception: the dataclass __init__ showed in the profile)
        return unchecked(
            cls, frame_type=_FRAME_TYPES[ftype], seq=seq, dst_pan=dst_pan, dst=dst,
            src_pan=src_pan, src=src, payload=bytes(data[pos:]), security=security,
            pan_id_compression=compression, frame_pending=bool(fc & _FC_PENDING),
            ack_request=bool(fc & _FC_ACK_REQUEST), version=version,
        )  # fmt: skip

    @classmethod
    def data(
        cls, seq: int, pan: PanId, dst: LinkAddr, src: LinkAddr, payload: bytes, ack_request: bool
    ) -> Frame:
        """A data frame inside one PAN (PAN ID compression), 2006 version, unsecured: what a
        mesh link sends, built without re-running the checks it meets by construction
        (`seq` is taken modulo 256)."""
        return unchecked(
            cls, frame_type=FrameType.DATA, seq=seq & 0xFF, dst_pan=pan, dst=dst, src_pan=None,
            src=src, payload=payload, security=None, pan_id_compression=True,
            frame_pending=False, ack_request=ack_request, version=FRAME_VERSION_2006,
        )  # fmt: skip


# Every frame decoded builds two or three address objects; the same few neighbours' come again
# and again, so they are interned (immutable values; bounded: PAN ids and short addresses are
# 16 bits, extended addresses a recently-used cache)
_pan_id = functools.lru_cache(maxsize=1024)(PanId)
_short_addr = functools.lru_cache(maxsize=1024)(ShortAddr)
_eui64 = functools.lru_cache(maxsize=65536)(Eui64)


def _read_pan(data: bytes, pos: int) -> tuple[PanId, int]:
    if pos + 2 > len(data):
        raise MeshFrameDecodeError(pos, "PAN id truncated")
    return _pan_id(data[pos] | data[pos + 1] << 8), pos + 2


def _read_addr(data: bytes, pos: int, mode: AddrMode) -> tuple[LinkAddr, int]:
    if mode == AddrMode.EXTENDED:
        if pos + EUI64_LENGTH > len(data):
            raise MeshFrameDecodeError(pos, "extended address truncated")
        return _eui64(bytes(data[pos : pos + EUI64_LENGTH][::-1])), pos + EUI64_LENGTH
    if pos + 2 > len(data):
        raise MeshFrameDecodeError(pos, "short address truncated")
    return _short_addr(data[pos] | data[pos + 1] << 8), pos + 2


def fcs(frame: bytes) -> bytes:
    """The 2-octet FCS: ITU-T CRC-16, x^16 + x^12 + x^5 + 1, initial value 0, least significant
    bit first (802.15.4-2006 §7.2.1.9), sent least significant octet first."""
    crc = 0
    for octet in frame:
        crc ^= octet
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")
