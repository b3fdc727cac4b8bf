"""ECHONET Lite frames (ECHONET Lite specification part 2, chapter 3).

Format 1 (EHD 0x1081) is decoded into `Frame`; format 2 (EHD 0x1082, arbitrary message format)
is carried opaque as `Frame2`. Decoding is strict: a frame is exactly one datagram, so bytes after
the last property (or fewer than a PDC announces) are a malformation, raised as
`EchonetDecodeError(offset, reason)`; nothing else escapes `decode`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from amistack.echonet.errors import EchonetDecodeError

__all__ = [
    "EHD1",
    "EHD2_FORMAT1",
    "EHD2_FORMAT2",
    "SETGET_ESVS",
    "EchonetDecodeError",
    "Eoj",
    "Esv",
    "Frame",
    "Frame2",
    "Property",
    "decode_any",
]

# ECHONET Lite spec part 2, §3.2.1: EHD1 0x10 = ECHONET Lite; EHD2 0x81 format 1, 0x82 format 2.
EHD1 = 0x10
EHD2_FORMAT1 = 0x81
EHD2_FORMAT2 = 0x82
HEADER_LEN = 4  # EHD1 EHD2 TID(2)
FORMAT1_FIXED = 12  # header + SEOJ(3) + DEOJ(3) + ESV + OPC


class Esv(IntEnum):
    """ECHONET Lite service codes (spec part 2, §3.2.5, table 3-9 .. 3-11)."""

    SETI = 0x60
    SETC = 0x61
    GET = 0x62
    INF_REQ = 0x63
    SETGET = 0x6E
    SET_RES = 0x71
    GET_RES = 0x72
    INF = 0x73
    INFC = 0x74
    INFC_RES = 0x7A
    SETGET_RES = 0x7E
    SETI_SNA = 0x50
    SETC_SNA = 0x51
    GET_SNA = 0x52
    INF_SNA = 0x53
    SETGET_SNA = 0x5E


# Services whose EDATA is OPCSet + properties, then OPCGet + properties (spec part 2, §3.2.6).
SETGET_ESVS = frozenset({Esv.SETGET, Esv.SETGET_RES, Esv.SETGET_SNA})


@dataclass(frozen=True, slots=True)
class Property:
    """One EPC with its EDT; PDC on the wire = len(edt) (0 in a Get request)."""

    epc: int
    edt: bytes = b""


@dataclass(frozen=True, slots=True)
class Eoj:
    """ECHONET object: class group code, class code, instance code (spec part 2, §3.2.4)."""

    group: int
    cls: int
    instance: int

    @property
    def class_code(self) -> int:
        """Group and class as one 16-bit number, e.g. 0x0288."""
        return (self.group << 8) | self.cls

    def encode(self) -> bytes:
        return bytes((self.group, self.cls, self.instance))

    @classmethod
    def decode(cls, data: bytes) -> Eoj:
        if len(data) != 3:
            raise EchonetDecodeError(0, f"EOJ is 3 bytes, got {len(data)}")
        return cls(data[0], data[1], data[2])

    @classmethod
    def from_int(cls, value: int) -> Eoj:
        """0x028801 -> Eoj(0x02, 0x88, 0x01)."""
        return cls((value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF)

    def __int__(self) -> int:
        return (self.group << 16) | (self.cls << 8) | self.instance

    def __str__(self) -> str:
        return f"{self.group:02X}{self.cls:02X}{self.instance:02X}"


def _check_byte(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} {value} is not a byte")


def _encode_props(out: bytearray, props: tuple[Property, ...], what: str) -> None:
    if len(props) > 0xFF:
        raise ValueError(f"{what}: {len(props)} properties do not fit in OPC")
    out.append(len(props))
    for p in props:
        _check_byte("EPC", p.epc)
        if len(p.edt) > 0xFF:
            raise ValueError(f"EPC 0x{p.epc:02X}: EDT of {len(p.edt)} bytes does not fit in PDC")
        out.append(p.epc)
        out.append(len(p.edt))
        out += p.edt


def _decode_props(data: bytes, pos: int, what: str) -> tuple[tuple[Property, ...], int]:
    n = len(data)
    if pos >= n:
        raise EchonetDecodeError(pos, f"truncated: {what} missing")
    opc = data[pos]
    pos += 1
    props: list[Property] = []
    for i in range(opc):
        if pos + 2 > n:
            raise EchonetDecodeError(pos, f"truncated: property {i + 1}/{opc} of {what} missing")
        epc = data[pos]
        pdc = data[pos + 1]
        start = pos + 2
        end = start + pdc
        if end > n:
            raise EchonetDecodeError(
                pos + 1, f"PDC {pdc} of EPC 0x{epc:02X} exceeds the {n - start} bytes left"
            )
        props.append(Property(epc, data[start:end]))
        pos = end
    return tuple(props), pos


def _decode_header(data: bytes) -> int:
    if len(data) < HEADER_LEN:
        raise EchonetDecodeError(len(data), f"truncated: {len(data)} bytes, header needs 4")
    if data[0] != EHD1:
        raise EchonetDecodeError(0, f"EHD1 0x{data[0]:02X} is not ECHONET Lite (0x10)")
    return data[1]


@dataclass(frozen=True, slots=True)
class Frame:
    """A format-1 ECHONET Lite frame. For SetGet services (6E/7E/5E) `props` is the OPCSet part
    and `props_get` the OPCGet part; for every other service `props_get` is empty."""

    tid: int
    seoj: Eoj
    deoj: Eoj
    esv: int
    props: tuple[Property, ...]
    props_get: tuple[Property, ...] = ()

    @property
    def is_setget(self) -> bool:
        return self.esv in SETGET_ESVS

    def encode(self) -> bytes:
        if not 0 <= self.tid <= 0xFFFF:
            raise ValueError(f"TID {self.tid} is not 16 bits")
        _check_byte("ESV", self.esv)
        for name, e in (("SEOJ", self.seoj), ("DEOJ", self.deoj)):
            for v in (e.group, e.cls, e.instance):
                _check_byte(name, v)
        out = bytearray(
            (
                EHD1,
                EHD2_FORMAT1,
                self.tid >> 8,
                self.tid & 0xFF,
                self.seoj.group,
                self.seoj.cls,
                self.seoj.instance,
                self.deoj.group,
                self.deoj.cls,
                self.deoj.instance,
                self.esv,
            )
        )
        _encode_props(out, self.props, "OPC")
        if self.esv in SETGET_ESVS:
            _encode_props(out, self.props_get, "OPCGet")
        elif self.props_get:
            raise ValueError(f"ESV 0x{self.esv:02X} is not SetGet: props_get must be empty")
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Frame:
        """Decode one format-1 frame; EchonetDecodeError for anything else (format 2 included:
        use `decode_any` or `Frame2.decode` for those)."""
        data = bytes(data)
        ehd2 = _decode_header(data)
        if ehd2 != EHD2_FORMAT1:
            raise EchonetDecodeError(1, f"EHD2 0x{ehd2:02X} is not format 1 (0x81)")
        if len(data) < FORMAT1_FIXED:
            raise EchonetDecodeError(
                len(data), f"truncated: {len(data)} bytes, a format-1 frame needs 12"
            )
        esv = data[10]
        props, pos = _decode_props(data, 11, "OPC" if esv not in SETGET_ESVS else "OPCSet")
        props_get: tuple[Property, ...] = ()
        if esv in SETGET_ESVS:
            props_get, pos = _decode_props(data, pos, "OPCGet")
        if pos != len(data):
            raise EchonetDecodeError(pos, f"{len(data) - pos} trailing bytes after the last EDT")
        return cls(
            (data[2] << 8) | data[3],
            Eoj(data[4], data[5], data[6]),
            Eoj(data[7], data[8], data[9]),
            esv,
            props,
            props_get,
        )


@dataclass(frozen=True, slots=True)
class Frame2:
    """A format-2 frame (EHD 0x1082): TID and an opaque payload, passed through unchanged."""

    tid: int
    payload: bytes

    def encode(self) -> bytes:
        if not 0 <= self.tid <= 0xFFFF:
            raise ValueError(f"TID {self.tid} is not 16 bits")
        return bytes((EHD1, EHD2_FORMAT2, self.tid >> 8, self.tid & 0xFF)) + self.payload

    @classmethod
    def decode(cls, data: bytes) -> Frame2:
        data = bytes(data)
        ehd2 = _decode_header(data)
        if ehd2 != EHD2_FORMAT2:
            raise EchonetDecodeError(1, f"EHD2 0x{ehd2:02X} is not format 2 (0x82)")
        return cls((data[2] << 8) | data[3], data[4:])


def decode_any(data: bytes) -> Frame | Frame2:
    """Decode a datagram of either format (EHD2 0x81 or 0x82)."""
    ehd2 = _decode_header(bytes(data))
    if ehd2 == EHD2_FORMAT2:
        return Frame2.decode(data)
    if ehd2 != EHD2_FORMAT1:
        raise EchonetDecodeError(1, f"EHD2 0x{ehd2:02X} is neither format 1 nor format 2")
    return Frame.decode(data)
