"""Work order files under hostile input: the parser raises only WorkOrderError, for random bytes
and for mutations of a well-formed file's fields."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

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
