"""The meter's append-only, crash-safe event log store and its signing (checkpoint) policy.

One binary file per meter: a header, then frames `u32 length | u8 kind | payload | u32 CRC-32`
(the CRC covers length, kind and payload). Every frame reaches the OS with one write() as it is
appended; `FsyncPolicy` decides when it is forced to stable storage. On open the file is scanned:
a frame cut off by a crash at the very end (a torn tail: no intact frame after it) is truncated
and recorded as LOG_TAIL_REPAIRED. Anything else is an attack or media damage and is recorded,
signed, never repaired in place: damage before the end sets the file aside and continues on the
good frames before it (LOG_STORE_DAMAGED); a store without the last head the secure module keeps
(`SecureModule.read_anchor`) was rolled back (LOG_ROLLED_BACK). docs/event-log.md has the details.

Merkle mode (default) signs RFC 9162 tree heads; patent mode signs SHA-256 over the whole range
from the first entry (see docs/event-log.md for why Merkle mode is the default).
"""

from __future__ import annotations

import logging
import os
import re
import struct
import time
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
from amistack.securemodule import SecureModule, SecureModuleError
from amistack.securemodule.base import load_p256_public_key

log = logging.getLogger(__name__)

STORE_MAGIC = b"AMIEVLG\x01"
_FRAME = struct.Struct(">IB")  # payload length, kind
_CRC = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_ANCHOR = _U64  # the size of the last signed head, then its digest (_head_anchor)
ANCHOR_LENGTH = _ANCHOR.size + 32
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
        EventType.LOG_STORE_DAMAGED,
        EventType.LOG_ROLLED_BACK,
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
    header: LogHeader | None  # None: the store header itself is damaged
    items: list[Item]  # every good frame before any damage, in sequence
    body: int  # offset of the first frame
    good_end: int  # end of the last good frame
    torn_bytes: int  # a torn final frame (or zero fill) after good_end: may be cut
    damage: str | None  # why the store cannot be read past good_end, when it is not torn


def _frame_at(data: bytes, pos: int) -> tuple[int, int, bytes] | str:
    """(kind, end, payload) of a frame at `pos` whose length, kind and CRC hold; else why not."""
    if len(data) - pos < _FRAME.size:
        return "partial frame header"
    length, kind = _FRAME.unpack_from(data, pos)
    end = pos + _FRAME.size + length + _CRC.size
    if length > MAX_FRAME or kind not in (KIND_ENTRY, KIND_HEAD):
        return f"bad frame header (length {length}, kind {kind})"
    if end > len(data):
        return "frame runs past the end of the file"
    payload = data[pos + _FRAME.size : end - _CRC.size]
    if (
        zlib.crc32(payload, zlib.crc32(data[pos : pos + _FRAME.size]))
        != _CRC.unpack_from(data, end - _CRC.size)[0]
    ):
        return "frame fails its CRC"
    return kind, end, payload


# where a frame could start: length < 2**17 (MAX_FRAME) and kind 0 or 1
_FRAME_START = re.compile(rb"(?=\x00[\x00\x01][\s\S]{2}[\x00\x01])")


def _torn_tail(data: bytes, pos: int) -> bool:
    """Whether the damage at `pos` is a torn *final* frame: nothing but zeros follows, or no
    intact frame starts anywhere after `pos` (a crash cuts only the frame being appended; a
    flipped length bit mid-file leaves intact frames behind it)."""
    if not data[pos:].strip(b"\x00"):
        return True
    for m in _FRAME_START.finditer(data, pos + 1):
        if not isinstance(_frame_at(data, m.start()), str):
            return False
    return True


def _scan(data: bytes, path: Path) -> _Scan:
    """Parse a whole store file: the good frames, then a torn tail or the damage found."""
    if len(data) < len(STORE_MAGIC) + 2 or data[: len(STORE_MAGIC)] != STORE_MAGIC:
        return _Scan(None, [], 0, 0, 0, "not an amistack event-log store header")
    p = len(STORE_MAGIC)
    mode_b, n = data[p], data[p + 1]
    end = p + 2 + n
    if mode_b not in (0, 1) or len(data) < end + 4:
        return _Scan(None, [], 0, 0, 0, "damaged store header")
    if _CRC.unpack_from(data, end)[0] != zlib.crc32(data[:end]):
        return _Scan(None, [], 0, 0, 0, "the store header fails its CRC")
    meter_id = data[p + 2 : end].decode("ascii", "replace")
    header = LogHeader(meter_id, Mode.MERKLE if mode_b == 0 else Mode.PATENT)
    body = pos = end + 4
    items: list[Item] = []
    entries = 0
    while pos < len(data):
        frame = _frame_at(data, pos)
        if isinstance(frame, str):
            if _torn_tail(data, pos):
                return _Scan(header, items, body, pos, len(data) - pos, None)
            return _Scan(header, items, body, pos, 0, f"{frame} at offset {pos}")
        kind, frame_end, payload = frame
        try:
            item: Item = (EventRecord if kind == KIND_ENTRY else SignedHead).decode(payload)
        except LogFormatError as exc:
            # intact length and CRC but not a record: written so, not torn by a crash
            return _Scan(header, items, body, pos, 0, f"{exc.reason} at offset {pos}")
        if isinstance(item, EventRecord) and item.seq != entries:
            bad = f"entry {item.seq} at offset {pos} where {entries} was due"
        elif isinstance(item, SignedHead) and item.size != entries:
            bad = f"head for size {item.size} at offset {pos} after {entries} entries"
        else:
            bad = ""
        if bad:  # intact frames out of sequence: moved, removed or repeated, never torn
            return _Scan(header, items, body, pos, 0, bad)
        entries += isinstance(item, EventRecord)
        items.append(item)
        pos = frame_end
    return _Scan(header, items, body, pos, 0, None)


STORE_FAULTS = frozenset({EventType.LOG_STORE_DAMAGED, EventType.LOG_ROLLED_BACK})


def describe_store_fault(rec: EventRecord) -> str | None:
    """What a LOG_STORE_DAMAGED / LOG_ROLLED_BACK entry (as `EventLog.open` writes them) says,
    in one line; None for any other entry."""
    if rec.type == EventType.LOG_STORE_DAMAGED and len(rec.data) >= 2 * _U64.size:
        offset, aside = _U64.unpack_from(rec.data)[0], _U64.unpack_from(rec.data, 8)[0]
        what = rec.data[16:].decode("ascii", "replace")
        return f"store damaged at offset {offset} ({aside} bytes set aside): {what}"
    if rec.type == EventType.LOG_ROLLED_BACK and len(rec.data) == ANCHOR_LENGTH + _U64.size:
        expected, found = _U64.unpack_from(rec.data)[0], _U64.unpack_from(rec.data, 40)[0]
        return (
            f"store rolled back: the secure module's last signed head covers {expected} "
            f"entries, the store held {found}"
        )
    if rec.type in STORE_FAULTS:
        return f"{rec.type_name()} (data {rec.data.hex()})"
    return None


def _head_anchor(meter_id: str, head: SignedHead) -> bytes:
    """What the secure module keeps of the last signed head: size u64 | SHA-256 of what was
    signed (binds meter, kind, size, time and root)."""
    return _ANCHOR.pack(head.size) + head.digest(meter_id)


def _set_aside(path: Path, now: float) -> Path:
    """Rename the damaged store out of the way, keeping its bytes; the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(max(now, 0)))
    for n in range(1, 1000):
        aside = path.with_name(f"{path.name}.damaged-{stamp}" + (f"-{n}" if n > 1 else ""))
        if not (aside.exists() or aside.is_symlink()):
            os.rename(path, aside)
            return aside
    raise LogStoreError(f"{path}: too many damaged copies set aside already")


def _write_new_store(path: Path, content: bytes) -> int:
    """A new store file holding `content`, durable; its descriptor (read/write)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


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
        (export of what is there); appending a signing event then fails.

        With its module, the store is checked and whatever is wrong is recorded in it, signed:
        a torn tail is cut (LOG_TAIL_REPAIRED); damage before the end is set aside untouched as
        `<path>.damaged-<time>` and the log continues on the good frames before it
        (LOG_STORE_DAMAGED); a store that lacks the last head the module saw signed -- an old
        copy restored, a cut at a frame boundary, a deleted file -- is a rollback
        (LOG_ROLLED_BACK). Without a module nothing is changed: damage raises LogStoreError."""
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
        damaged: tuple[int, int, str] | None = None  # offset, bytes set aside, what
        try:
            data = _read_all(fd)
            expected = _store_header(meter_id, config.mode)
            if data and len(data) < len(expected) and expected.startswith(data):
                # a crash while the header itself was being written: start again
                os.ftruncate(fd, 0)
                data = b""
            scan = _scan(data, path) if data else _Scan(None, [], len(expected), 0, 0, None)
            if scan.header is not None:
                if scan.header.meter_id != meter_id:
                    raise LogStoreError(
                        f"{path} belongs to meter {scan.header.meter_id}, not {meter_id}"
                    )
                if scan.header.mode is not config.mode:
                    raise LogStoreError(f"{path} is a {scan.header.mode.value}-mode log")
            if scan.damage is not None:
                if module is None:
                    raise LogStoreError(
                        f"{path}: {scan.damage}, with data after it (not a torn tail; opening "
                        "it with its secure module sets it aside and records the damage)"
                    )
                os.close(fd)
                fd = -1
                aside = _set_aside(path, now)
                kept = data[scan.body : scan.good_end]
                damaged = (
                    scan.good_end,
                    len(data) - scan.good_end,
                    f"{scan.damage}; set aside as {aside.name}",
                )
                fd = _write_new_store(path, expected + kept)
                log.error(
                    "event log %s: %s; set aside as %s, continued on the %d bytes before it "
                    "(recorded as LOG_STORE_DAMAGED)",
                    path,
                    scan.damage,
                    aside.name,
                    len(kept),
                    extra={"path": str(path), "aside": str(aside), "damage": scan.damage},
                )
            elif not data:
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, expected)
                os.fsync(fd)
            self = cls(path, fd, meter_id, module, config)
            self._replay(scan.items)
            if scan.torn_bytes:
                self.torn_bytes = scan.torn_bytes
                if module is not None:  # without the module nothing may change, nor be appended
                    os.ftruncate(fd, scan.good_end)
                    os.fsync(fd)
                    log.warning(
                        "event log %s: a torn tail of %d bytes cut (LOG_TAIL_REPAIRED)",
                        path,
                        scan.torn_bytes,
                        extra={"path": str(path), "cut_bytes": scan.torn_bytes},
                    )
            os.lseek(fd, 0, os.SEEK_END)
            rolled_back = self._missing_anchor() if module is not None else None
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        if module is not None:
            try:
                self._record_open_faults(now, damaged, rolled_back)
            except BaseException:
                self.close()
                raise
        return self

    def _replay(self, items: list[Item]) -> None:
        """Rebuild the tree from frames `_scan` found intact and in sequence."""
        for item in items:
            if isinstance(item, EventRecord):
                enc = item.encode()
                self._frontier.append(enc)
                if self.config.mode is Mode.PATENT:
                    range_update(self._range, enc)
                self.size += 1
                self._last_time_ms = item.time_ms
            else:
                self.heads.append(item)
                self._last_head_size = item.size
                self._last_head_ms = item.time_ms

    def _missing_anchor(self) -> tuple[int, bytes] | None:
        """The module's last signed head (size, digest) when this store does not hold it."""
        assert self._module is not None
        try:
            anchor = self._module.read_anchor()
        except SecureModuleError as exc:
            raise LogStoreError(f"{self.path}: {exc}") from None
        if anchor is None:
            return None  # a new module, or one from before anchors: nothing to compare
        if len(anchor) != ANCHOR_LENGTH:
            raise LogStoreError(f"{self.path}: the secure module's anchor is not a log head")
        size, digest = _ANCHOR.unpack_from(anchor)[0], anchor[_ANCHOR.size :]
        for head in self.heads:
            if head.size == size and head.digest(self.meter_id) == digest:
                return None
        return size, digest

    def _record_open_faults(
        self,
        now: float,
        damaged: tuple[int, int, str] | None,
        rolled_back: tuple[int, bytes] | None,
    ) -> None:
        """Append (and so sign) what opening found; else bring the module's anchor up to the
        newest head in the store (a crash between fsyncing a head and storing its anchor)."""
        if damaged is not None:
            offset, aside, what = damaged
            detail = _U64.pack(offset) + _U64.pack(aside) + what.encode("ascii", "replace")
            self.append(EventType.LOG_STORE_DAMAGED, detail[:MAX_DATA], now)
        if self.torn_bytes:
            self.append(EventType.LOG_TAIL_REPAIRED, self.torn_bytes.to_bytes(4, "big"), now)
        if rolled_back is not None:
            size, digest = rolled_back
            log.error(
                "event log %s rolled back: the secure module last signed a head of %d entries "
                "that the store (%d entries) does not hold (recorded as LOG_ROLLED_BACK)",
                self.path,
                size,
                self.size,
                extra={"path": str(self.path), "head_size": size, "store_size": self.size},
            )
            data = _U64.pack(size) + digest + _U64.pack(self.size)
            self.append(EventType.LOG_ROLLED_BACK, data, now)
        if self.unsigned_entries and (damaged or self.torn_bytes or rolled_back):
            # signed whatever the policy: the records are evidence, and the module must move
            # to a head that holds them or the next open would report the same rollback again
            self.checkpoint(now)
        if damaged is None and not self.torn_bytes and rolled_back is None and self.heads:
            assert self._module is not None
            newest = _head_anchor(self.meter_id, self.heads[-1])
            if self._module.read_anchor() != newest:
                self._store_anchor(self.heads[-1])

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
        if self.torn_bytes and self._module is None:
            raise LogStoreError(f"{self.path}: a torn tail is not cut when opened read-only")
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
        self._store_anchor(head)
        return head

    def _store_anchor(self, head: SignedHead) -> None:
        """The module keeps the newest signed head, after the store has it (so a crash between
        the two leaves the module one head behind, never ahead of the store)."""
        assert self._module is not None
        try:
            self._module.write_anchor(_head_anchor(self.meter_id, head))
        except SecureModuleError as exc:
            raise LogStoreError(f"{self.path}: {exc}") from None

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
        scan = _scan(data, self.path)
        if scan.damage is not None:  # changed under us since it was opened
            raise LogStoreError(f"{self.path}: {scan.damage}")
        yield from scan.items

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


__all__ = [
    "STORE_FAULTS",
    "Appended",
    "CheckpointPolicy",
    "EventLog",
    "FsyncPolicy",
    "LogConfig",
    "LogStoreError",
    "describe_store_fault",
]
