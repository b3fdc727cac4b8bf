"""The work display's results table (claim 3): what the head-end answered, newest first, per
meter, operation, result and time; bounded (`RESULT_ROWS`), dropped when the session ends, and
each row summarised in one line for the technician's screen."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.handheld.harness import build_field

from amistack.access import Role
from amistack.handheld.session import RESULT_ROWS, Operation
from amistack.runtime.handheld_screen import outcome
from amistack.sim.handheld_area import AreaConfig


def test_results_are_listed_newest_first_bounded_and_dropped_at_the_end() -> None:
    field = build_field(AreaConfig(meters=1))
    session = field.start_work(roles=frozenset({Role.OPERATOR}))
    now = field.area.net.now
    session.record_result("field-meter-001", Operation.DISCONNECT, {"state": "confirmed"}, now,
                          at=1_700_000_000.0)  # fmt: skip
    session.record_result("field-meter-001", Operation.CONNECT, {"state": "failed"}, now)
    rows = session.results()
    wanted = [("connect", now), ("disconnect", 1_700_000_000.0)]
    assert [(r["operation"], r["at"]) for r in rows] == wanted
    for i in range(RESULT_ROWS + 5):
        session.record_result(f"m{i}", Operation.READ, {"readings": i}, now)
    assert len(session.results()) == RESULT_ROWS
    assert session.results()[0]["meter"] == f"m{RESULT_ROWS + 4}"
    session.end("stopped", now)
    assert session.results() == []


@pytest.mark.parametrize(
    ("result", "line"),
    [
        ({"readings": 3, "newest": {"forward_wh": 1234, "meter_id": "m"}},
         "3 readings, newest 1234 Wh"),
        ({"readings": 0, "newest": None}, "0 readings"),
        ({"id": 1, "kind": "disconnect", "state": "confirmed", "relay_state": "open",
          "reason": None}, "confirmed, relay read back open"),
        ({"state": "failed", "relay_state": None, "reason": "no answer"}, "failed (no answer)"),
        ({"error": "head-end 403: the technician's roles exceed the handheld's"},
         "failed: head-end 403: the technician's roles exceed the handheld's"),
        ({"commissioned": True}, "commissioned"),
        ({"other": 1}, '{"other": 1}'),
    ],
)  # fmt: skip
def test_each_answer_is_one_line(result: dict[str, Any], line: str) -> None:
    assert outcome(result) == line
