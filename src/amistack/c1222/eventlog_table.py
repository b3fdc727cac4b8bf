"""Manufacturer table MT1 (table id 2049 = MFG_FLAG | 1): the meter's signed event-log export.

Layout (little-endian like every table here):

    TEXT_LENGTH u32 | the export file (docs/event-log.md, ASCII, one entry or signed head a line)

The table is read-only and meant to be read in pieces (C12.22 partial read, offset/count): a
read that starts at offset 0 makes the meter take a fresh snapshot of its export for that
requester, and later reads at other offsets are answered from the same snapshot, so the pieces
of one transfer belong together even while the meter keeps appending. (The head-end verifies
the whole text anyway: a mix of two snapshots would fail verification, not pass unnoticed.)
The partial-read offset is 24 bits, so at most 16 MiB of export text (about 500,000 entries)
can be transferred this way; larger logs go over the REST upload.

`EventLogTables` is `MeterTables` plus MT1 for a `EventLogSource` (an `eventlog.EventLog`);
the head-end side is `headend.eventlog_intake.EventLogReader`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol

from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.services import ResponseCode
from amistack.c1222.tables import MFG_FLAG, MeterTables, TableProvider, TableResult

log = logging.getLogger(__name__)

EVENT_LOG_MFG_TABLE = 1  # MT1, as listed in ST0 MFG_TBLS_USED (without MFG_FLAG)
EVENT_LOG_TABLE = MFG_FLAG | EVENT_LOG_MFG_TABLE  # the table id on the wire: 2049
EVENT_LOG_HEADER = 4  # TEXT_LENGTH u32
MAX_EVENT_LOG_TEXT = 0xFFFFFF - EVENT_LOG_HEADER  # the 24-bit partial-read offset reaches this


class EventLogSource(Protocol):
    """What the meter exports: `eventlog.EventLog.export_lines` (each line ends in a newline)."""

    def export_lines(self) -> Iterable[str]: ...


def encode_event_log_table(text: bytes) -> bytes:
    return len(text).to_bytes(EVENT_LOG_HEADER, "little") + text


def decode_event_log_header(data: bytes) -> int:
    """TEXT_LENGTH from the first bytes of MT1."""
    if len(data) < EVENT_LOG_HEADER:
        raise C1222DecodeError(len(data), "MT1 shorter than its length field")
    return int.from_bytes(data[:EVENT_LOG_HEADER], "little")


class EventLogTables(MeterTables):
    """The standard table subset plus MT1, the event-log export (snapshots per requester)."""

    def __init__(
        self,
        provider: TableProvider,
        source: EventLogSource,
        device_class: bytes = b"AMST",
        *,
        max_snapshots: int = 4,
    ) -> None:
        super().__init__(provider, device_class)
        self.source = source
        self.config = type(self.config)(
            device_class=self.config.device_class,
            std_tables=self.config.std_tables,
            mfg_tables=self.config.mfg_tables | {EVENT_LOG_MFG_TABLE},
            std_procedures=self.config.std_procedures,
            mfg_procedures=self.config.mfg_procedures,
            std_writable=self.config.std_writable,
        )
        self.max_snapshots = max_snapshots
        self._snapshots: OrderedDict[bytes, bytes] = OrderedDict()

    def _snapshot(self, requester: bytes, fresh: bool) -> bytes | ResponseCode:
        snap = None if fresh else self._snapshots.get(requester)
        if snap is None:
            try:
                text = "".join(self.source.export_lines()).encode("ascii")
            except Exception:  # the log store failing must not take the meter's C12.22 down
                log.exception("event-log export for MT1 failed")
                return ResponseCode.DNR
            if len(text) > MAX_EVENT_LOG_TEXT:
                return ResponseCode.RSTL
            snap = encode_event_log_table(text)
        self._snapshots[requester] = snap
        self._snapshots.move_to_end(requester)
        while len(self._snapshots) > self.max_snapshots:
            self._snapshots.popitem(last=False)
        return snap

    def read(self, table: int, now: float, requester: bytes = b"") -> TableResult:
        if table == EVENT_LOG_TABLE:
            return self._snapshot(requester, fresh=True)
        return super().read(table, now, requester)

    def read_partial(
        self, table: int, offset: int, count: int, now: float, requester: bytes = b""
    ) -> TableResult:
        if table != EVENT_LOG_TABLE:
            return super().read_partial(table, offset, count, now, requester)
        whole = self._snapshot(requester, fresh=offset == 0)
        if isinstance(whole, ResponseCode):
            return whole
        if offset >= len(whole) and count:
            return ResponseCode.ONP
        return whole[offset : offset + count]  # a read past the end is cut at the end
