"""ECHONET Lite frames (ECHONET Lite specification part 2, chapter 3).

Format 1 (EHD 0x1081) is decoded into `Frame`; format 2 (EHD 0x1082, arbitrary message format)
is carried opaque as `Frame2`. Decoding is strict: a frame is exactly one datagram, so bytes after
the last property (or fewer than a PDC announces) are a malformation, raised as
`EchonetDecodeError(offset, reason)`; nothing else escapes `decode`.

Implementation (docs/echonet.md, "How the codec is built"): the classes behave like frozen
dataclasses (field equality and hash, `FrozenInstanceError` on assignment, dataclass-style repr)
but are plain `__slots__` classes, because this module is compiled with mypyc when the package is
built (setup.py) and mypyc turns them into native classes: construction becomes a few stores
instead of `object.__setattr__` calls, and the byte loops run as C. The same source runs
interpreted when no compiler was available. A decoded `Frame` keeps the datagram it came from, so
`encode()` of a frame that cannot have changed (it is immutable) returns those bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import FrozenInstanceError
from enum import IntEnum
from typing import ClassVar, Final, TypeVar, final

from amistack.echonet.errors import EchonetDecodeError

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # interpreted without mypy installed: the decorator only speaks to mypyc
    _C = TypeVar("_C")

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Callable[[_C], _C]:
        return lambda cls: cls


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
EHD1: Final = 0x10
EHD2_FORMAT1: Final = 0x81
EHD2_FORMAT2: Final = 0x82
HEADER_LEN: Final = 4  # EHD1 EHD2 TID(2)
FORMAT1_FIXED: Final = 12  # header + SEOJ(3) + DEOJ(3) + ESV + OPC


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


def _is_setget(esv: int) -> bool:
    # The three codes of SETGET_ESVS as plain comparisons: compiled, no set lookup, no boxing.
    return esv == 0x6E or esv == 0x7E or esv == 0x5E


def _frozen(name: str) -> FrozenInstanceError:
    return FrozenInstanceError(f"cannot assign to field {name!r}")


# For mypyc: `acyclic` because these objects only hold ints, bytes and tuples of each other and
# so can never close a reference cycle (no cycle-GC bookkeeping per object; a caller who puts
# foreign objects into `props` that point back would leak, not crash); `free_list_len=1` keeps
# one freed instance for the next allocation, as decoding allocates and drops them per frame.
@mypyc_attr(acyclic=True, free_list_len=1)
@final
class Property:
    """One EPC with its EDT; PDC on the wire = len(edt) (0 in a Get request)."""

    __slots__ = ("edt", "epc")
    __match_args__: ClassVar[tuple[str, ...]] = ("epc", "edt")
    epc: int
    edt: bytes

    def __init__(self, epc: int, edt: bytes = b"") -> None:
        # object.__setattr__ because __setattr__ refuses; mypyc compiles it to a plain store.
        object.__setattr__(self, "epc", epc)
        object.__setattr__(self, "edt", edt)

    def __setattr__(self, name: str, value: object) -> None:
        raise _frozen(name)

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not Property:
            return NotImplemented
        return self.epc == other.epc and self.edt == other.edt

    def __hash__(self) -> int:
        return hash((self.epc, self.edt))

    def __repr__(self) -> str:
        return f"Property(epc={self.epc!r}, edt={self.edt!r})"

    def __reduce__(self) -> tuple[type[Property], tuple[int, bytes]]:
        # copy/deepcopy/pickle rebuild through __init__ (the default would call __setattr__).
        return (Property, (self.epc, self.edt))


@mypyc_attr(acyclic=True)
@final
class Eoj:
    """ECHONET object: class group code, class code, instance code (spec part 2, §3.2.4)."""

    __slots__ = ("_wire", "cls", "group", "instance")
    __match_args__: ClassVar[tuple[str, ...]] = ("group", "cls", "instance")
    group: int
    cls: int
    instance: int
    # The three bytes on the wire, filled on first use by a frame's encode() once the codes are
    # known to be bytes (the object is immutable, so they never go stale).
    _wire: bytes | None

    def __init__(self, group: int, cls: int, instance: int) -> None:
        object.__setattr__(self, "group", group)
        object.__setattr__(self, "cls", cls)
        object.__setattr__(self, "instance", instance)
        object.__setattr__(self, "_wire", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise _frozen(name)

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not Eoj:
            return NotImplemented
        return (
            self.group == other.group and self.cls == other.cls and self.instance == other.instance
        )

    def __hash__(self) -> int:
        return hash((self.group, self.cls, self.instance))

    def __repr__(self) -> str:
        return f"Eoj(group={self.group!r}, cls={self.cls!r}, instance={self.instance!r})"

    def __reduce__(self) -> tuple[type[Eoj], tuple[int, int, int]]:
        return (Eoj, (self.group, self.cls, self.instance))

    @property
    def class_code(self) -> int:
        """Group and class as one 16-bit number, e.g. 0x0288."""
        return (self.group << 8) | self.cls

    def encode(self) -> bytes:
        return bytes((self.group, self.cls, self.instance))

    @staticmethod
    def decode(data: bytes) -> Eoj:
        if len(data) != 3:
            raise EchonetDecodeError(0, f"EOJ is 3 bytes, got {len(data)}")
        return Eoj(data[0], data[1], data[2])

    @staticmethod
    def from_int(value: int) -> Eoj:
        """0x028801 -> Eoj(0x02, 0x88, 0x01)."""
        return Eoj((value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF)

    def __int__(self) -> int:
        return (self.group << 16) | (self.cls << 8) | self.instance

    def __str__(self) -> str:
        return f"{self.group:02X}{self.cls:02X}{self.instance:02X}"


# bytes((i,)) for every byte value: encoding picks these and joins them with one allocation
# (`b"%b%b" % (...)` compiles to a single copy), instead of building ints or tuples per field.
_BYTE: Final[tuple[bytes, ...]] = tuple(bytes((i,)) for i in range(256))


def _eoj_wire(name: str, e: Eoj) -> bytes:
    wire = e._wire
    if wire is None:
        # `x & -256` is non-zero for anything outside 0..255, negatives included.
        if (e.group | e.cls | e.instance) & -256:
            raise ValueError(f"{name} {e!r} has a code that is not a byte")
        wire = b"%b%b%b" % (_BYTE[e.group], _BYTE[e.cls], _BYTE[e.instance])
        object.__setattr__(e, "_wire", wire)
    return wire


def _check_epc_pdc(epc: int, pdc: int) -> None:
    if epc & -256:
        raise ValueError(f"EPC {epc} is not a byte")
    if pdc > 0xFF:
        raise ValueError(f"EPC 0x{epc:02X}: EDT of {pdc} bytes does not fit in PDC")


def _encode_props(props: tuple[Property, ...], what: str) -> bytes:
    """OPC + (EPC, PDC, EDT)*, every EPC and PDC checked on the way."""
    n = len(props)
    if n > 0xFF:
        raise ValueError(f"{what}: {n} properties do not fit in OPC")
    b = _BYTE
    if n == 1:
        p = props[0]
        epc = p.epc
        edt = p.edt
        pdc = len(edt)
        _check_epc_pdc(epc, pdc)
        return b"\x01%b%b%b" % (b[epc], b[pdc], edt)
    if n == 0:
        return b"\x00"
    if n <= 4:  # a few properties: grow one bytes object (no list, no buffer protocol)
        out = b[n]
        for p in props:
            epc = p.epc
            edt = p.edt
            pdc = len(edt)
            _check_epc_pdc(epc, pdc)
            out = b"%b%b%b%b" % (out, b[epc], b[pdc], edt)
        return out
    parts: list[bytes] = [b[n]]
    for p in props:
        epc = p.epc
        edt = p.edt
        pdc = len(edt)
        _check_epc_pdc(epc, pdc)
        parts.append(b[epc])
        parts.append(b[pdc])
        parts.append(edt)
    return b"".join(parts)


# Decoding shares immutable values instead of allocating them per frame (like small ints):
# every property with an empty EDT (Get requests, Set responses) ...
_EMPTY: Final[tuple[Property, ...]] = tuple(Property(epc) for epc in range(256))
# ... and recently seen EOJs, in a small direct-mapped table (bounded whatever arrives; an entry
# is only used after its three codes compared equal, so a collision just replaces it).
_EOJ_SLOTS: Final = 64
_eojs: Final[list[Eoj | None]] = [None] * _EOJ_SLOTS


def _eoj(group: int, cls: int, instance: int) -> Eoj:
    i = (group * 7 + cls * 3 + instance) & (_EOJ_SLOTS - 1)
    e = _eojs[i]
    if e is not None and e.group == group and e.cls == cls and e.instance == instance:
        return e
    e = Eoj(group, cls, instance)
    _eojs[i] = e
    return e


def _decode_props(data: bytes, pos: int, what: str) -> tuple[tuple[Property, ...], int]:
    n = len(data)
    if pos >= n:
        raise EchonetDecodeError(pos, f"truncated: {what} missing")
    opc = data[pos]
    pos += 1
    if opc == 1 and pos + 2 <= n:  # the common case: one property, no list
        end = pos + 2 + data[pos + 1]
        if end <= n:
            pdc = data[pos + 1]
            return (
                _EMPTY[data[pos]] if pdc == 0 else Property(data[pos], data[pos + 2 : end]),
            ), end
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
        props.append(_EMPTY[epc] if pdc == 0 else Property(epc, data[start:end]))
        pos = end
    return tuple(props), pos


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return data if type(data) is bytes else bytes(data)


def _decode_header(data: bytes) -> int:
    if len(data) < HEADER_LEN:
        raise EchonetDecodeError(len(data), f"truncated: {len(data)} bytes, header needs 4")
    if data[0] != EHD1:
        raise EchonetDecodeError(0, f"EHD1 0x{data[0]:02X} is not ECHONET Lite (0x10)")
    return data[1]


@mypyc_attr(acyclic=True, free_list_len=1)
@final
class Frame:
    """A format-1 ECHONET Lite frame. For SetGet services (6E/7E/5E) `props` is the OPCSet part
    and `props_get` the OPCGet part; for every other service `props_get` is empty."""

    __slots__ = ("_wire", "deoj", "esv", "props", "props_get", "seoj", "tid")
    __match_args__: ClassVar[tuple[str, ...]] = ("tid", "seoj", "deoj", "esv", "props", "props_get")
    tid: int
    seoj: Eoj
    deoj: Eoj
    esv: int
    props: tuple[Property, ...]
    props_get: tuple[Property, ...]
    # The datagram a decoded frame came from (None for a frame built in code): the frame is
    # immutable, so those are exactly the bytes encode() would build.
    _wire: bytes | None

    def __init__(
        self,
        tid: int,
        seoj: Eoj,
        deoj: Eoj,
        esv: int,
        props: Sequence[Property],
        props_get: Sequence[Property] = (),
    ) -> None:
        object.__setattr__(self, "tid", tid)
        object.__setattr__(self, "seoj", seoj)
        object.__setattr__(self, "deoj", deoj)
        object.__setattr__(self, "esv", esv)
        # Stored as tuples whatever sequence was given: a list would make the frame unhashable.
        object.__setattr__(self, "props", props if type(props) is tuple else tuple(props))
        object.__setattr__(
            self, "props_get", props_get if type(props_get) is tuple else tuple(props_get)
        )
        object.__setattr__(self, "_wire", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise _frozen(name)

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not Frame:
            return NotImplemented
        return (
            self.tid == other.tid
            and self.seoj == other.seoj
            and self.deoj == other.deoj
            and self.esv == other.esv
            and self.props == other.props
            and self.props_get == other.props_get
        )

    def __hash__(self) -> int:
        return hash((self.tid, self.seoj, self.deoj, self.esv, self.props, self.props_get))

    def __repr__(self) -> str:
        return (
            f"Frame(tid={self.tid!r}, seoj={self.seoj!r}, deoj={self.deoj!r}, esv={self.esv!r}, "
            f"props={self.props!r}, props_get={self.props_get!r})"
        )

    def __reduce__(
        self,
    ) -> tuple[type[Frame], tuple[int, Eoj, Eoj, int, tuple[Property, ...], tuple[Property, ...]]]:
        return (Frame, (self.tid, self.seoj, self.deoj, self.esv, self.props, self.props_get))

    @property
    def is_setget(self) -> bool:
        return _is_setget(self.esv)

    def encode(self) -> bytes:
        wire = self._wire
        if wire is not None:
            return wire
        tid = self.tid
        if tid < 0 or tid > 0xFFFF:
            raise ValueError(f"TID {tid} is not 16 bits")
        esv = self.esv
        if esv & -256:
            raise ValueError(f"ESV {esv} is not a byte")
        seoj = _eoj_wire("SEOJ", self.seoj)
        deoj = _eoj_wire("DEOJ", self.deoj)
        props = self.props
        props_get = self.props_get
        b = _BYTE
        if len(props) == 1 and not props_get and not _is_setget(esv):
            # The common frame (one property, e.g. a Get or Get_Res of E7): one allocation.
            p = props[0]
            epc = p.epc
            edt = p.edt
            pdc = len(edt)
            _check_epc_pdc(epc, pdc)
            return b"\x10\x81%b%b%b%b%b\x01%b%b%b" % (
                b[tid >> 8],
                b[tid & 0xFF],
                seoj,
                deoj,
                b[esv],
                b[epc],
                b[pdc],
                edt,
            )
        head = b"\x10\x81%b%b%b%b%b" % (b[tid >> 8], b[tid & 0xFF], seoj, deoj, b[esv])
        if _is_setget(esv):
            opc_set = _encode_props(props, "OPC")
            return b"%b%b%b" % (head, opc_set, _encode_props(props_get, "OPCGet"))
        body = _encode_props(props, "OPC")  # its errors come first, as on the wire
        if props_get:
            raise ValueError(f"ESV 0x{esv:02X} is not SetGet: props_get must be empty")
        return b"%b%b" % (head, body)

    @staticmethod
    def decode(data: bytes | bytearray | memoryview) -> Frame:
        """Decode one format-1 frame; EchonetDecodeError for anything else (format 2 included:
        use `decode_any` or `Frame2.decode` for those)."""
        raw = _as_bytes(data)
        ehd2 = _decode_header(raw)
        if ehd2 != EHD2_FORMAT1:
            raise EchonetDecodeError(1, f"EHD2 0x{ehd2:02X} is not format 1 (0x81)")
        n = len(raw)
        if n < FORMAT1_FIXED:
            raise EchonetDecodeError(n, f"truncated: {n} bytes, a format-1 frame needs 12")
        esv = raw[10]
        props_get: tuple[Property, ...] = ()
        if _is_setget(esv):
            props, pos = _decode_props(raw, 11, "OPCSet")
            props_get, pos = _decode_props(raw, pos, "OPCGet")
        else:
            props, pos = _decode_props(raw, 11, "OPC")
        if pos != n:
            raise EchonetDecodeError(pos, f"{n - pos} trailing bytes after the last EDT")
        frame = Frame(
            (raw[2] << 8) | raw[3],
            _eoj(raw[4], raw[5], raw[6]),
            _eoj(raw[7], raw[8], raw[9]),
            esv,
            props,
            props_get,
        )
        object.__setattr__(frame, "_wire", raw)
        return frame


@mypyc_attr(acyclic=True)
@final
class Frame2:
    """A format-2 frame (EHD 0x1082): TID and an opaque payload, passed through unchanged."""

    __slots__ = ("payload", "tid")
    __match_args__: ClassVar[tuple[str, ...]] = ("tid", "payload")
    tid: int
    payload: bytes

    def __init__(self, tid: int, payload: bytes) -> None:
        object.__setattr__(self, "tid", tid)
        object.__setattr__(self, "payload", payload)

    def __setattr__(self, name: str, value: object) -> None:
        raise _frozen(name)

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not Frame2:
            return NotImplemented
        return self.tid == other.tid and self.payload == other.payload

    def __hash__(self) -> int:
        return hash((self.tid, self.payload))

    def __repr__(self) -> str:
        return f"Frame2(tid={self.tid!r}, payload={self.payload!r})"

    def __reduce__(self) -> tuple[type[Frame2], tuple[int, bytes]]:
        return (Frame2, (self.tid, self.payload))

    def encode(self) -> bytes:
        if not 0 <= self.tid <= 0xFFFF:
            raise ValueError(f"TID {self.tid} is not 16 bits")
        return bytes((EHD1, EHD2_FORMAT2, self.tid >> 8, self.tid & 0xFF)) + self.payload

    @staticmethod
    def decode(data: bytes | bytearray | memoryview) -> Frame2:
        raw = _as_bytes(data)
        ehd2 = _decode_header(raw)
        if ehd2 != EHD2_FORMAT2:
            raise EchonetDecodeError(1, f"EHD2 0x{ehd2:02X} is not format 2 (0x82)")
        return Frame2((raw[2] << 8) | raw[3], raw[4:])


def decode_any(data: bytes | bytearray | memoryview) -> Frame | Frame2:
    """Decode a datagram of either format (EHD2 0x81 or 0x82)."""
    raw = _as_bytes(data)
    ehd2 = _decode_header(raw)
    if ehd2 == EHD2_FORMAT2:
        return Frame2.decode(raw)
    if ehd2 != EHD2_FORMAT1:
        raise EchonetDecodeError(1, f"EHD2 0x{ehd2:02X} is neither format 1 nor format 2")
    return Frame.decode(raw)
