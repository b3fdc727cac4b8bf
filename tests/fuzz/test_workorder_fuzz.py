"""Work order files under hostile input: the parser raises only WorkOrderError, for random bytes
and for mutations of a well-formed file's fields; a meter's event-log export as the offline
handheld receives it never makes it raise or keep another meter's log."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from amistack.eventlog.record import FILE_MAGIC, FORMAT_VERSION, Mode, parse_header
from amistack.handheld.offline import _SealedExports
from amistack.handheld.workorder import WorkOrder, WorkOrderError, parse_order

ORDER = WorkOrder("WO-1", "hh-7", "tina", ("meter-001",), frozenset({"read"}), 0.0, 3600.0,
                  "sam", -1.0)  # fmt: skip
GOOD = {
    "header": base64.b64encode(ORDER.header()).decode(),
    "kdf": {"alg": "argon2id", "salt": base64.b64encode(bytes(16)).decode(), "t": 1, "m": 64,
            "p": 1},
    "kek": "file:00",
    "sealed": base64.b64encode(bytes(40)).decode(),
}  # fmt: skip

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def check(raw: bytes) -> None:
    try:
        assert isinstance(parse_order(raw), WorkOrder)
    except WorkOrderError as exc:
        assert exc.reason == "unreadable"


def test_the_well_formed_file_parses() -> None:
    assert parse_order(json.dumps(GOOD).encode()) == ORDER


@given(st.binary(max_size=512))
def test_random_bytes(raw: bytes) -> None:
    check(raw)


@given(st.sampled_from(["header", "kdf", "kek", "sealed"]), JSON)
def test_a_field_replaced(name: str, value: object) -> None:
    check(json.dumps({**GOOD, name: value}).encode())


@given(st.sampled_from(["alg", "salt", "t", "m", "p"]), JSON)
def test_a_kdf_field_replaced(name: str, value: object) -> None:
    check(json.dumps({**GOOD, "kdf": {**GOOD["kdf"], name: value}}).encode())  # type: ignore[dict-item]


@given(st.sampled_from(["format", "order_id", "handheld", "technician", "meters", "operations",
                        "not_before", "not_after", "issued_by", "issued_at"]), JSON)  # fmt: skip
def test_a_header_field_replaced(name: str, value: object) -> None:
    header = {**json.loads(ORDER.header()), name: value}
    body = {**GOOD, "header": base64.b64encode(json.dumps(header).encode()).decode()}
    check(json.dumps(body).encode())


class _Held:
    """What the handheld's event-log sink stores (no token needed here)."""

    def __init__(self) -> None:
        self.kept: list[tuple[str, bytes]] = []

    def add_event_log(self, meter_id: str, export: bytes, fetched_at: float) -> bool:
        self.kept.append((meter_id, export))
        return True


HEADERS = st.builds(
    lambda meter, mode, tail: f"{FILE_MAGIC} {FORMAT_VERSION} {meter} {mode}".encode() + tail,
    st.sampled_from(["meter-001", "meter-002", "x"]), st.sampled_from([m.value for m in Mode]),
    st.binary(max_size=200),
)  # fmt: skip


@given(st.binary(max_size=512) | HEADERS)
def test_an_event_log_export_from_a_meter(export: bytes) -> None:
    """The export comes from the meter (untrusted): the handheld keeps it only under the name
    of the meter whose log its header says it is, and never raises."""
    held = _Held()
    sink = _SealedExports(held)  # type: ignore[arg-type]
    verdict = sink.receive("meter-001", export, 0.0)
    assert verdict.ok == bool(held.kept)
    if verdict.ok:
        first = export.split(b"\n", 1)[0].decode("ascii")
        assert parse_header(first).meter_id == "meter-001"
