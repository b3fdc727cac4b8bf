"""The meter's append-only, crash-safe event log store and its signing (checkpoint) policy.

One binary file per meter: a header, then frames `u32 length | u8 kind | payload | u32 CRC-32`
(the CRC covers length, kind and payload). Every frame reaches the OS with one write() as it is
appended; `FsyncPolicy` decides when it is forced to stable storage. On open the file is scanned:
a frame cut off by a crash at the very end (a torn tail) is truncated and recorded as a
LOG_TAIL_REPAIRED event; a bad frame followed by more data is corruption in the middle, which is
never accepted (`LogStoreError`).

Merkle mode (default) signs RFC 9162 tree heads; patent mode signs SHA-256 over the whole range
from the first entry (see docs/event-log.md for why Merkle mode is the default).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from amistack.eventlog.merkle import Frontier
from amistack.eventlog.record import (
    MAX_DATA,
    EventRecord,
    EventType,
    HeadKind,
    Item,
    LogFormatError,
    LogHeader,
    Mode,
    SignedHead,
    key_id,
    range_hasher,
    range_update,
    valid_meter_id,
)
from amistack.meter.securemodule import SecureModule
from amistack.meter.securemodule.base import load_p256_public_key

log = logging.getLogger(__name__)

STORE_MAGIC = b"AMIEVLG\x01"
_FRAME = struct.Struct(">IB")  # payload length, kind
_CRC = struct.Struct(">I")
KIND_ENTRY = 0
KIND_HEAD = 1
MAX_FRAME = 16 + 65536 + 32

DEFAULT_SIGN_ON = frozenset(
    {
        EventType.COVER_OPEN,
        EventType.SWITCH_OPENED,
        EventType.SWITCH_CLOSED,
        EventType.CLOCK_ADJUSTED,
        EventType.KEY_ROTATED,
        EventType.FIRMWARE_UPDATED,
        EventType.CONFIG_CHANGED,
        EventType.MAGNETIC_TAMPER,
        EventType.LOG_TAIL_REPAIRED,
    }
)


class LogStoreError(Exception):
    """The store cannot be opened or written: corruption mid-file, wrong meter/mode, I/O."""


class FsyncPolicy(Enum):
    ALWAYS = "always"  # fsync after every frame: nothing acknowledged is ever lost
    CHECKPOINT = "checkpoint"  # fsync after every signed head: signed state is durable
    NEVER = "never"  # leave it to the OS (tests, benchmarks of the CPU cost)


@dataclass(frozen=True)
class CheckpointPolicy:
    """When to sign: on the *specified* event types, and every N entries / T seconds of
    meter time since the last head (None disables that trigger)."""

    sign_on: frozenset[int] = DEFAULT_SIGN_ON
    every_entries: int | None = 1000
    every_seconds: float | None = 3600.0


@dataclass(frozen=True)
class LogConfig:
    mode: Mode = Mode.MERKLE
    checkpoint: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    fsync: FsyncPolicy = FsyncPolicy.CHECKPOINT


@dataclass(frozen=True)
class Appended:
    record: EventRecord
    head: SignedHead | None  # the head signed because of this entry, if any


def _ms(now: float) -> int:
    return round(now * 1000)


def _store_header(meter_id: str, mode: Mode) -> bytes:
    mid = meter_id.encode()
    body = STORE_MAGIC + bytes([0 if mode is Mode.MERKLE else 1, len(mid)]) + mid
    return body + _CRC.pack(zlib.crc32(body))


def _frame(kind: int, payload: bytes) -> bytes:
    head = _FRAME.pack(len(payload), kind)
    return head + payload + _CRC.pack(zlib.crc32(payload, zlib.crc32(head)))


@dataclass
class _Scan:
    header: LogHeader
    items: list[Item]
    good_end: int
    torn_bytes: int


def _scan(data: bytes, path: Path) -> _Scan:
    """Parse a whole store file; a torn tail is reported, mid-file damage raises."""
    if len(data) < len(STORE_MAGIC) + 2 or data[: len(STORE_MAGIC)] != STORE_MAGIC:
        raise LogStoreError(f"{path}: not an amistack event-log store")
    p = len(STORE_MAGIC)
    mode_b, n = data[p], data[p + 1]
    end = p + 2 + n
    if mode_b not in (0, 1) or len(data) < end + 4:
        raise LogStoreError(f"{path}: damaged store header")
    if _CRC.unpack_from(data, end)[0] != zlib.crc32(data[:end]):
        raise LogStoreError(f"{path}: store header fails its CRC")
    meter_id = data[p + 2 : end].decode("ascii", "replace")
    header = LogHeader(meter_id, Mode.MERKLE if mode_b == 0 else Mode.PATENT)
    pos = end + 4
    items: list[Item] = []
    total = len(data)
    while pos < total:
        bad = ""
        if total - pos < _FRAME.size:
            bad = "partial frame header"
            frame_end = total + 1
        else:
            length, kind = _FRAME.unpack_from(data, pos)
            frame_end = pos + _FRAME.size + length + 4
            if length > MAX_FRAME or kind not in (KIND_ENTRY, KIND_HEAD):
                bad = f"bad frame header (length {length}, kind {kind})"
            elif frame_end > total:
                bad = "frame runs past the end of the file"
            else:
                payload = data[pos + _FRAME.size : frame_end - 4]
                crc = zlib.crc32(payload, zlib.crc32(data[pos : pos + _FRAME.size]))
                if crc != _CRC.unpack_from(data, frame_end - 4)[0]:
                    bad = "frame fails its CRC"
                else:
                    try:
                        items.append(
                            EventRecord.decode(payload)
                            if kind == KIND_ENTRY
                            else SignedHead.decode(payload)
                        )
                    except LogFormatError as exc:
                        bad = f"frame does not decode: {exc.reason}"
        if bad:
            # A torn tail: the damage reaches the end of the file (a frame cut short, or the
            # last frame / zero-filled blocks after a power cut). Anything else is tampering
            # or media damage in the middle of the log and must not be papered over.
            rest = data[pos:]
            if frame_end >= total or not rest.strip(b"\x00"):
                return _Scan(header, items, pos, total - pos)
            raise LogStoreError(f"{path}: {bad} at offset {pos}, with data after it")
        pos = frame_end
    return _Scan(header, items, pos, 0)


class EventLog:
    """A meter's event log: append, sign per policy, export. Not thread-safe (one writer)."""

    def __init__(
        self,
        path: Path,
        fd: int,
        meter_id: str,
        module: SecureModule | None,
        config: LogConfig,
    ) -> None:
        self.path = path
        self.meter_id = meter_id
        self.config = config
        self._fd = fd
        self._module = module
        self._key_id: bytes | None = None
        if module is not None:
            pub = load_p256_public_key(module.public_key_pem())
            from cryptography.hazmat.primitives import serialization

            self._key_id = key_id(
                pub.public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        self._frontier = Frontier()
        self._range = range_hasher()
        self.size = 0
        self.heads: list[SignedHead] = []
        self._last_time_ms = 0
        self._last_head_size = 0
        self._last_head_ms: int | None = None
        self.torn_bytes = 0

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path | str,
        meter_id: str,
        module: SecureModule | None,
        now: float,
        config: LogConfig | None = None,
        *,
        create: bool = True,
    ) -> EventLog:
        """Open (or create) the store at `path`. `module` may be None for read-only use
        (export of what is there); appending a signing event then fails."""
        path = Path(path)
        config = config or LogConfig()
        if not valid_meter_id(meter_id):
            raise LogStoreError(f"bad meter id {meter_id!r}")
        try:
            exists = path.exists()
            if not exists and not create:
                raise LogStoreError(f"no event log at {path}")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
        except OSError as exc:
            raise LogStoreError(f"{path}: {exc.strerror}") from None
        try:
            data = _read_all(fd)
            expected = _store_header(meter_id, config.mode)
            if data and len(data) < len(expected) and expected.startswith(data):
                # a crash while the header itself was being written: start again
                os.ftruncate(fd, 0)
                data = b""
            if not data:
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, expected)
                os.fsync(fd)
                data = b""
                scan = None
            else:
                scan = _scan(data, path)
                if scan.header.meter_id != meter_id:
                    raise LogStoreError(
                        f"{path} belongs to meter {scan.header.meter_id}, not {meter_id}"
                    )
                if scan.header.mode is not config.mode:
                    raise LogStoreError(f"{path} is a {scan.header.mode.value}-mode log")
            self = cls(path, fd, meter_id, module, config)
            if scan is not None:
                self._replay(scan.items, path)
                if scan.torn_bytes:
                    os.ftruncate(fd, scan.good_end)
                    os.fsync(fd)
                    self.torn_bytes = scan.torn_bytes
                    log.warning(
                        "event log tail repaired",
                        extra={"path": str(path), "cut_bytes": scan.torn_bytes},
                    )
            os.lseek(fd, 0, os.SEEK_END)
        except BaseException:
            os.close(fd)
            raise
        if self.torn_bytes and module is not None:
            self.append(EventType.LOG_TAIL_REPAIRED, self.torn_bytes.to_bytes(4, "big"), now)
        return self

    def _replay(self, items: list[Item], path: Path) -> None:
        for item in items:
            if isinstance(item, EventRecord):
                if item.seq != self.size:
                    raise LogStoreError(f"{path}: entry {item.seq} where {self.size} was due")
                enc = item.encode()
                self._frontier.append(enc)
                if self.config.mode is Mode.PATENT:
                    range_update(self._range, enc)
                self.size += 1
                self._last_time_ms = item.time_ms
            else:
                if item.size != self.size:
                    raise LogStoreError(f"{path}: head for size {item.size} at {self.size}")
                self.heads.append(item)
                self._last_head_size = item.size
                self._last_head_ms = item.time_ms

    # -- appending and signing ---------------------------------------------------------------

    def _write(self, frame: bytes, *, durable: bool) -> None:
        try:
            os.write(self._fd, frame)
            if self.config.fsync is FsyncPolicy.ALWAYS or (
                durable and self.config.fsync is FsyncPolicy.CHECKPOINT
            ):
                os.fsync(self._fd)
        except OSError as exc:
            raise LogStoreError(f"{self.path}: {exc.strerror}") from None

    def append(self, type: int, data: bytes, now: float) -> Appended:
        """Append one event at meter time `now`; sign a head if the policy says so."""
        if not 0 <= type <= 0xFFFF:
            raise LogStoreError(f"event type {type} out of range")
        if len(data) > MAX_DATA:
            raise LogStoreError(f"event data of {len(data)} bytes (max {MAX_DATA})")
        t = _ms(now)
        if not 0 <= t < 1 << 64:
            raise LogStoreError(f"meter time {now} is out of range")
        rec = EventRecord(self.size, t, int(type), bytes(data))
        enc = rec.encode()
        self._write(_frame(KIND_ENTRY, enc), durable=False)
        self._frontier.append(enc)
        if self.config.mode is Mode.PATENT:
            range_update(self._range, enc)
        self.size += 1
        self._last_time_ms = t
        head = self.checkpoint(now) if self._due(rec) else None
        return Appended(rec, head)

    def _due(self, rec: EventRecord) -> bool:
        policy = self.config.checkpoint
        if rec.type in policy.sign_on:
            return True
        if self.config.mode is Mode.PATENT:
            return False  # the patent signs on specified events only
        if policy.every_entries and self.size - self._last_head_size >= policy.every_entries:
            return True
        if policy.every_seconds is None:
            return False
        if self._last_head_ms is None:  # no head yet: count from the first entry
            self._last_head_ms = rec.time_ms
        return rec.time_ms - self._last_head_ms >= policy.every_seconds * 1000

    def checkpoint(self, now: float) -> SignedHead:
        """Sign the current state now (Merkle: tree head; patent: range hash) and store it."""
        if self._module is None or self._key_id is None:
            raise LogStoreError("no secure module: this log was opened read-only")
        kind = HeadKind.MERKLE if self.config.mode is Mode.MERKLE else HeadKind.RANGE
        root = self._frontier.root() if kind is HeadKind.MERKLE else self._range.copy().digest()
        unsigned = SignedHead(kind, self.size, root, max(_ms(now), 0), self._key_id, b"")
        sig = self._module.sign_digest(unsigned.digest(self.meter_id))
        head = SignedHead(kind, self.size, root, unsigned.time_ms, self._key_id, sig)
        self._write(_frame(KIND_HEAD, head.encode()), durable=True)
        self.heads.append(head)
        self._last_head_size = self.size
        self._last_head_ms = head.time_ms
        return head

    # -- reading -------------------------------------------------------------------------------

    def root(self) -> bytes:
        return self._frontier.root()

    def range_digest(self) -> bytes:
        return self._range.copy().digest()

    @property
    def unsigned_entries(self) -> int:
        return self.size - self._last_head_size

    def items(self) -> Iterator[Item]:
        """Every entry and head in the order they were written (re-read from disk)."""
        try:
            data = _read_all(self._fd)
        except OSError as exc:
            raise LogStoreError(f"{self.path}: {exc.strerror}") from None
        yield from _scan(data, self.path).items

    def export_lines(self) -> Iterator[str]:
        """The export file, line by line (docs/event-log.md), each ending in a newline."""
        yield LogHeader(self.meter_id, self.config.mode).to_line() + "\n"
        for item in self.items():
            yield item.to_line() + "\n"

    def export(self, out: Path | str) -> None:
        out = Path(out)
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "w", encoding="ascii", newline="\n") as f:
            f.writelines(self.export_lines())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)

    def close(self) -> None:
        if self._fd >= 0:
            try:
                if self.config.fsync is not FsyncPolicy.NEVER:
                    os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            break
        chunks.append(b)
    os.lseek(fd, 0, os.SEEK_END)
    return b"".join(chunks)


def naive_whole_log_digest(records: list[bytes]) -> bytes:
    """The literal patent scheme: hash the whole log from its first entry (for the benchmark)."""
    h = range_hasher()
    for r in records:
        range_update(h, r)
    return h.digest()


__all__ = [
    "Appended",
    "CheckpointPolicy",
    "EventLog",
    "FsyncPolicy",
    "LogConfig",
    "LogStoreError",
    "naive_whole_log_digest",
]
