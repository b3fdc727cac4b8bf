"""Schemathesis against the head-end's OpenAPI document, with valid credentials (every role):
property-based requests on every operation find no 500. Bounded (a few examples per operation)
to stay fast; CI runs it like any unit test."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from tests.unit.headend.conftest import auth, make_access

from amistack.headend.api import create_app
from amistack.headend.storage import SqliteRepository

EXAMPLES = 5


def test_no_operation_answers_500_to_an_authenticated_caller(tmp_path: Path) -> None:
    repo = SqliteRepository(tmp_path)
    repo.register_meter("m1", "2.16.124.113620.1.22.0.1", "c", "x", 1.0)
    repo.create_command("m1", "disconnect", {}, 2.0)  # type: ignore[arg-type]
    repo.raise_alarm("m1", "test", "an alarm", 3.0)
    access = make_access(tmp_path, lambda: 1000.0)
    auth(access, "admin")
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(repo, access))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            # a fresh token per case: POST /auth/logout may revoke the one it presents
            token = access.store.issue_token("admin", 1000.0).token
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)

        run()
    audited = {e.action for e in access.audit.entries(limit=10_000)}
    assert {"meter.register", "command.create", "login"} <= audited  # it did reach the routes
    repo.close()
