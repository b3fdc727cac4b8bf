"""CSV and JSON export of stored readings (the API's `format=csv|json` and the CLI share these).

CSV columns are fixed (CSV_FIELDS); times appear both as epoch seconds and ISO 8601 UTC so a
spreadsheet and a program both read them without guessing.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

from amistack.headend.schema import ReadingStatus, StoredReading
from amistack.headend.storage import ReadingRepository

CSV_FIELDS = (
    "meter_id",
    "interval_start",
    "interval_start_iso",
    "length_min",
    "forward_wh",
    "reverse_wh",
    "status",
    "vee_flags",
    "received_at",
    "key_id",
)
PAGE = 5000


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def reading_dict(r: StoredReading) -> dict[str, Any]:
    """One reading for export; an interval without data has no values (null), never 0 Wh."""
    has_data = ReadingStatus.has_data(r.status)
    return {
        "meter_id": r.meter_id,
        "interval_start": r.interval_start,
        "interval_start_iso": iso(r.interval_start),
        "length_min": r.length_min,
        "forward_wh": r.forward_wh if has_data else None,
        "reverse_wh": r.reverse_wh if has_data else None,
        "status": r.status,
        "vee_flags": r.vee_flags,
        "received_at": r.received_at,
        "key_id": r.key_id,
    }


def iter_readings(
    repo: ReadingRepository, meter_id: str, start: int, end: int, length_min: int | None = None
) -> Iterator[StoredReading]:
    """Every reading of a meter in [start, end), fetched a page at a time (keyset)."""
    after: tuple[int, int] | None = None
    while True:
        page = repo.readings(meter_id, start, end, length_min=length_min, after=after, limit=PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = (page[-1].interval_start, page[-1].length_min)


def csv_lines(readings: Iterable[StoredReading], header: bool = True) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(CSV_FIELDS)
    for r in readings:
        d = reading_dict(r)
        writer.writerow([d[f] for f in CSV_FIELDS])
        if buf.tell() > 65536:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def json_lines(readings: Iterable[StoredReading]) -> Iterator[str]:
    """A JSON array, produced incrementally (an export may be larger than memory allows)."""
    yield "["
    first = True
    for r in readings:
        yield ("" if first else ",") + json.dumps(reading_dict(r), separators=(",", ":"))
        first = False
    yield "]\n"


def export_readings(
    repo: ReadingRepository,
    meter_id: str,
    start: int,
    end: int,
    fmt: str,
    out: TextIO,
    length_min: int | None = None,
) -> None:
    rows = iter_readings(repo, meter_id, start, end, length_min)
    if fmt == "csv":
        chunks = csv_lines(rows)
    elif fmt == "json":
        chunks = json_lines(rows)
    else:
        raise ValueError(f"unknown export format {fmt!r} (csv or json)")
    for chunk in chunks:
        out.write(chunk)
