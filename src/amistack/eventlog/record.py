"""Typed meter event records, signed heads, their canonical encodings and the export line format.

The canonical encoding of an `EventRecord` is the Merkle leaf input d(i) (RFC 9162 §2.1.1); the
canonical encoding of a `SignedHead` minus its signature is what the secure module signs (after
SHA-256). docs/event-log.md documents both and the line format.
"""

from __future__ import annotations

import calendar
import hashlib
import struct
import time
from dataclasses import dataclass
from enum import Enum

from amistack.eventtypes import EventType as EventType  # re-exported: the log speaks it

FORMAT_VERSION = 1
FILE_MAGIC = "AMISTACK-EVENTLOG"
MAX_DATA = (
    65535  # event data is small evidence, not bulk data (u16 length would do; u32 on the wire)
)
MAX_METER_ID = 64

_REC = struct.Struct(">QQHI")  # seq, time_ms, type, data length
_STH_DOMAIN = b"amistack/eventlog/tree-head/v1\x00"
_RANGE_DOMAIN = b"amistack/eventlog/range-head/v1\x00"


class HeadKind(Enum):
    MERKLE = "H"  # RFC 9162 tree head: size + Merkle root
    RANGE = "P"  # patent mode: SHA-256 over entries [0, size)


class LogFormatError(Exception):
    """Malformed log text or record bytes: the one error the parsers raise on untrusted input."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}" if line else reason)
        self.line = line
        self.reason = reason


def _type_name(t: int) -> str:
    try:
        return EventType(t).name
    except ValueError:
        return f"TYPE_{t}"


_NAME_TO_TYPE = {e.name: int(e) for e in EventType}

# --- time: integer milliseconds since the Unix epoch, printed as ISO 8601 UTC -----------------


def iso_ms(ms: int) -> str:
    sec, milli = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{milli:03d}Z"


_SEC_CACHE: dict[str, int] = {}


def parse_iso_ms(text: str) -> int:
    """`YYYY-MM-DDTHH:MM:SS.mmmZ` -> ms; exactly the form `iso_ms` writes (raises ValueError)."""
    if len(text) != 24 or text[19] != "." or text[23] != "Z":
        raise ValueError("time must be YYYY-MM-DDTHH:MM:SS.mmmZ")
    head = text[:19]
    sec = _SEC_CACHE.get(head)
    if sec is None:
        st = time.strptime(head, "%Y-%m-%dT%H:%M:%S")
        sec = calendar.timegm(st)
        if sec < 0:
            raise ValueError("time before 1970")
        if len(_SEC_CACHE) > 4096:
            _SEC_CACHE.clear()
        _SEC_CACHE[head] = sec
    milli = text[20:23]
    if not milli.isdigit() or not milli.isascii():
        raise ValueError("bad milliseconds")
    ms = sec * 1000 + int(milli)
    if not 0 <= ms < 1 << 64:
        raise ValueError("time before 1970 or out of range")
    return ms


# --- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One log entry. `seq` is its leaf index (0-based, no gaps); `time_ms` is the meter clock."""

    seq: int
    time_ms: int
    type: int
    data: bytes = b""

    def encode(self) -> bytes:
        """Canonical encoding (the Merkle leaf input):
        seq u64 | time_ms u64 | type u16 | data length u32 | data, big-endian."""
        return _REC.pack(self.seq, self.time_ms, self.type, len(self.data)) + self.data

    @classmethod
    def decode(cls, data: bytes) -> EventRecord:
        if len(data) < _REC.size:
            raise LogFormatError(0, f"record of {len(data)} bytes is shorter than its header")
        seq, t, typ, n = _REC.unpack_from(data)
        if n != len(data) - _REC.size or n > MAX_DATA:
            raise LogFormatError(0, f"record data length {n} does not match its {len(data)} bytes")
        return cls(seq, t, typ, bytes(data[_REC.size :]))

    def type_name(self) -> str:
        return _type_name(self.type)

    def to_line(self) -> str:
        return f"E {self.seq} {iso_ms(self.time_ms)} {_type_name(self.type)} " + (
            self.data.hex() if self.data else "-"
        )


def key_id(public_key_der: bytes) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo (as RFC 9162 §4.4 names a log's key)."""
    return hashlib.sha256(public_key_der).digest()


@dataclass(frozen=True, slots=True)
class SignedHead:
    """A tree head (Merkle mode, 'H') or a range head (patent mode, 'P') with its signature.

    `root` is MTH(entries[0:size]) for H and SHA-256(encode(e0) || ... ) framed per entry
    (see `range_hash`) for P. `signature` is ECDSA P-256 raw r||s over SHA-256(tbs())."""

    kind: HeadKind
    size: int
    root: bytes
    time_ms: int
    key_id: bytes
    signature: bytes

    def tbs(self, meter_id: str) -> bytes:
        """The canonical bytes that get hashed and signed; binds the meter id and the kind."""
        mid = meter_id.encode()
        domain = _STH_DOMAIN if self.kind is HeadKind.MERKLE else _RANGE_DOMAIN
        return (
            domain
            + bytes([len(mid)])
            + mid
            + struct.pack(">QQ", self.size, self.time_ms)
            + self.root
        )

    def digest(self, meter_id: str) -> bytes:
        return hashlib.sha256(self.tbs(meter_id)).digest()

    def to_line(self) -> str:
        return (
            f"{self.kind.value} {self.size} {self.root.hex()} {iso_ms(self.time_ms)} "
            f"{self.key_id.hex()} {self.signature.hex()}"
        )

    def encode(self) -> bytes:
        """Binary form for the on-disk store."""
        return (
            self.kind.value.encode()
            + struct.pack(">QQ", self.size, self.time_ms)
            + self.root
            + self.key_id
            + self.signature
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedHead:
        if len(data) != 1 + 16 + 32 + 32 + 64:
            raise LogFormatError(0, f"head of {len(data)} bytes")
        try:
            kind = HeadKind(chr(data[0]))
        except ValueError:
            raise LogFormatError(0, f"unknown head kind {data[0]}") from None
        size, t = struct.unpack_from(">QQ", data, 1)
        return cls(kind, size, data[17:49], t, data[49:81], data[81:145])


def range_hasher() -> hashlib._Hash:
    """Patent mode: SHA-256 over u32 length || canonical record, for every entry from the first."""
    return hashlib.sha256(_RANGE_DOMAIN)


def range_update(h: hashlib._Hash, record_bytes: bytes) -> None:
    h.update(struct.pack(">I", len(record_bytes)))
    h.update(record_bytes)


# --- the export file -------------------------------------------------------------------------


class Mode(Enum):
    MERKLE = "merkle"
    PATENT = "patent"


@dataclass(frozen=True, slots=True)
class LogHeader:
    meter_id: str
    mode: Mode
    version: int = FORMAT_VERSION

    def to_line(self) -> str:
        return f"{FILE_MAGIC} {self.version} {self.meter_id} {self.mode.value}"


def valid_meter_id(meter_id: str) -> bool:
    return (
        0 < len(meter_id) <= MAX_METER_ID
        and meter_id.isascii()
        and meter_id.isprintable()
        and " " not in meter_id
        and "/" not in meter_id
        and meter_id not in (".", "..")
    )


Item = EventRecord | SignedHead


def parse_header(line: str) -> LogHeader:
    parts = line.rstrip("\n").split(" ")
    if len(parts) != 4 or parts[0] != FILE_MAGIC:
        raise LogFormatError(1, f"first line must be '{FILE_MAGIC} <version> <meter> <mode>'")
    if parts[1] != str(FORMAT_VERSION):
        raise LogFormatError(1, f"unsupported format version {parts[1]!r}")
    if not valid_meter_id(parts[2]):
        raise LogFormatError(1, "bad meter id")
    try:
        mode = Mode(parts[3])
    except ValueError:
        raise LogFormatError(1, f"unknown mode {parts[3]!r}") from None
    return LogHeader(parts[2], mode)


def _int(text: str, lineno: int, what: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 20:
        raise LogFormatError(lineno, f"{what} must be a decimal number")
    v = int(text)
    if v >= 1 << 64:
        raise LogFormatError(lineno, f"{what} out of range")
    return v


def _hex(text: str, lineno: int, what: str, size: int | None = None) -> bytes:
    try:
        b = bytes.fromhex(text)
    except ValueError:
        raise LogFormatError(lineno, f"{what} is not hex") from None
    if size is not None and len(b) != size:
        raise LogFormatError(lineno, f"{what} must be {size} bytes")
    return b


def _time(text: str, lineno: int) -> int:
    try:
        return parse_iso_ms(text)
    except (ValueError, OverflowError):
        raise LogFormatError(lineno, f"bad time {text[:40]!r}") from None


def parse_line(line: str, lineno: int) -> Item:
    """One 'E' or 'H'/'P' line (no trailing newline) -> its item; LogFormatError otherwise."""
    parts = line.split(" ")
    tag = parts[0]
    if tag == "E":
        if len(parts) != 5:
            raise LogFormatError(lineno, "entry needs: E <seq> <time> <type> <hex data|->")
        seq = _int(parts[1], lineno, "seq")
        t = _time(parts[2], lineno)
        name = parts[3]
        typ = _NAME_TO_TYPE.get(name)
        if typ is None:
            if name.startswith("TYPE_"):
                typ = _int(name[5:], lineno, "type")
                if typ > 0xFFFF:
                    raise LogFormatError(lineno, "type out of range")
            else:
                raise LogFormatError(lineno, f"unknown event type {name[:40]!r}")
        data = b"" if parts[4] == "-" else _hex(parts[4], lineno, "data")
        if len(data) > MAX_DATA:
            raise LogFormatError(lineno, "event data too long")
        return EventRecord(seq, t, typ, data)
    if tag in ("H", "P"):
        if len(parts) != 6:
            raise LogFormatError(lineno, f"head needs: {tag} <size> <root> <time> <key id> <sig>")
        return SignedHead(
            HeadKind(tag),
            _int(parts[1], lineno, "size"),
            _hex(parts[2], lineno, "root", 32),
            _time(parts[3], lineno),
            _hex(parts[4], lineno, "key id", 32),
            _hex(parts[5], lineno, "signature", 64),
        )
    raise LogFormatError(lineno, f"unknown line tag {tag[:10]!r}")


def parse_head_line(line: str) -> SignedHead:
    item = parse_line(line.strip(), 1)
    if not isinstance(item, SignedHead):
        raise LogFormatError(1, "expected a signed head line (H ...)")
    return item
