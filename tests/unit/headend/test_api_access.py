"""Access control on the head-end API, tested as the red team attacked it: every route refuses
anonymous callers (401) and callers whose roles lack its right (403); the OpenAPI document
declares the security schemes and each route's right; logins, sessions, token rotation and the
failed-login lock-out; every state-changing action lands in the signed operator audit trail."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.unit.headend.conftest import auth

from amistack.access import ROLE_RIGHTS, Right, Role
from amistack.access.http import SESSION_COOKIE, AccessControl
from amistack.eventlog.verify import verify_lines
from amistack.headend.api import PUBLIC_ROUTES, create_app
from amistack.headend.storage import ReadingRepository, SqliteRepository

AP = "2.16.124.113620.1.22.0.1"
PASSWORD = "correct horse battery"


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[ReadingRepository]:
    """Access control does not depend on the backend: SQLite only (test_api.py runs both)."""
    r = SqliteRepository(tmp_path)
    yield r
    r.close()


@pytest.fixture
def client(repo: ReadingRepository, access: AccessControl) -> Iterator[TestClient]:
    with TestClient(create_app(repo, access, clock=access.clock)) as c:
        yield c


def concrete(path: str) -> str:
    values = {
        "meter_id": "m1",
        "concentrator": "conc-1",
        "command_id": "1",
        "alarm_id": "1",
        "token_id": "0" * 12,
        "name": "someone",
        "action": "revoke",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def lacking(right: Right) -> tuple[Role, ...]:
    """Every role that does not grant `right`: held together they still may not."""
    return tuple(r for r in Role if right not in ROLE_RIGHTS[r])


def refused(method: str, path: str, r: Any, status: int, code: str) -> None:
    """The API answers JSON {"error": code}; the dashboard (/ui) sends a page to its login form
    and answers the rest with a short HTML refusal of the same status."""
    if not path.startswith("/ui/"):
        assert r.status_code == status, (method, path, r.text)
        assert r.json()["error"] == code
    elif status == 401 and method == "GET" and not path.endswith(("/stream", "/graph")):
        assert r.status_code == 303 and r.headers["location"] == "/ui/login", (method, path)
    else:
        assert r.status_code == status and "Refused" in r.text, (method, path, r.text)


def test_every_route_declares_a_right_and_refuses_anonymous_callers(
    client: TestClient, access: AccessControl
) -> None:
    assert len(access.route_rights) >= 25
    for method, path in access.route_rights:
        r = client.request(method, concrete(path), follow_redirects=False)
        refused(method, path, r, 401, "unauthenticated")
        if r.status_code == 401:
            assert r.headers["www-authenticate"] == "Bearer"
        bad = client.request(
            method,
            concrete(path),
            headers={"Authorization": "Bearer " + "x" * 43},
            follow_redirects=False,
        )
        assert bad.status_code in (401, 303), (method, path)


def test_every_route_refuses_roles_without_its_right(
    client: TestClient, access: AccessControl
) -> None:
    headers: dict[Right, dict[str, str]] = {}
    for (method, path), right in access.route_rights.items():
        if right is None:
            continue
        if right not in headers:
            headers[right] = auth(access, f"no-{right.value}", *lacking(right))
        r = client.request(method, concrete(path), headers=headers[right])
        refused(method, path, r, 403, "forbidden")
        assert right.value in r.text
    denied = [e for e in access.audit.entries(limit=1000) if e.action == "access.denied"]
    assert len(denied) == sum(1 for r in access.route_rights.values() if r is not None)


def test_openapi_declares_the_security_schemes_and_rights(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearer"]["description"],
    }
    assert schemes["session"]["in"] == "cookie" and schemes["mutualTLS"]["type"] == "mutualTLS"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if (method.upper(), path) in PUBLIC_ROUTES:
                assert "security" not in op
                continue
            assert {"bearer": []} in op["security"] and {"mutualTLS": []} in op["security"]
            assert op["x-required-right"] in {r.value for r in Right} | {"authenticated"}
    assert doc["paths"]["/commands"]["post"]["x-required-right"] == "control"


def test_red_team_anonymous_disconnect_is_refused(
    client: TestClient, repo: ReadingRepository, access: AccessControl
) -> None:
    repo.register_meter("m1", AP, "c", "x", 1.0)
    body = {"meter_id": "m1", "kind": "disconnect"}
    assert client.post("/commands", json=body).status_code == 401
    viewer = auth(access, "vera", Role.VIEWER)
    assert client.post("/commands", json=body, headers=viewer).status_code == 403
    assert repo.commands() == []  # nothing was queued
    operator = auth(access, "olga", Role.OPERATOR)
    made = client.post("/commands", json=body, headers=operator)
    assert made.status_code == 201 and made.json()["params"] == {}
    entry = access.audit.entries(limit=100)[-1]
    assert entry.source == "testclient" and entry.via == "api"
    assert (entry.who, entry.action, entry.target, entry.outcome) == (
        "olga",
        "command.create",
        "m1",
        "ok",
    )


def test_login_session_cookie_logout_and_token_rotation(
    client: TestClient, access: AccessControl
) -> None:
    access.store.add_user("olga", PASSWORD, {Role.OPERATOR}, 1000.0)
    r = client.post("/auth/login", json={"username": "olga", "password": PASSWORD})
    assert r.status_code == 200, r.text
    session = r.json()["token"]
    assert r.json()["kind"] == "session"
    cookie = r.headers["set-cookie"]
    assert SESSION_COOKIE in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    me = client.get("/auth/whoami")  # the TestClient keeps the cookie
    assert me.json() == {
        "user": "olga",
        "roles": ["OPERATOR"],
        "rights": ["control", "read", "upload_log"],
        "via": "session",
    }
    client.cookies.clear()
    bearer = {"Authorization": f"Bearer {session}"}
    new = client.post("/auth/tokens", json={"label": "script"}, headers=bearer).json()
    use_new = {"Authorization": f"Bearer {new['token']}"}
    assert client.get("/auth/whoami", headers=use_new).json()["via"] == "api"
    # rotate: the new token revokes the old session
    old_id = client.get("/auth/whoami", headers=bearer).status_code
    assert old_id == 200
    session_id = access.store.authenticate_token(session, 1000.0)
    assert session_id is not None and session_id.token_id is not None
    assert client.delete(f"/auth/tokens/{session_id.token_id}", headers=use_new).status_code == 204
    assert client.get("/auth/whoami", headers=bearer).status_code == 401
    assert client.post("/auth/logout", headers=use_new).status_code == 204
    assert client.get("/auth/whoami", headers=use_new).status_code == 401
    actions = [e.action for e in access.audit.entries(limit=100)]
    assert actions == ["login", "token.create", "token.revoke", "logout"]


def test_failed_logins_lock_the_account_and_are_audited(
    client: TestClient, access: AccessControl
) -> None:
    access.store.add_user("olga", PASSWORD, {Role.OPERATOR}, 1000.0)
    for _ in range(access.store.policy.max_failures):
        r = client.post("/auth/login", json={"username": "olga", "password": "wrong password"})
        assert r.status_code == 401 and r.json()["error"] == "login_failed"
    unknown = client.post("/auth/login", json={"username": "nobody", "password": "x" * 12})
    assert unknown.json() == r.json()  # the same answer: no user enumeration
    locked = client.post("/auth/login", json={"username": "olga", "password": PASSWORD})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    failed = [e for e in access.audit.entries(limit=100) if e.action == "login"]
    assert [e.outcome for e in failed] == ["failed"] * 7
    assert failed[0].who == "olga" and failed[5].who == "nobody"
    assert failed[0].source == "testclient"  # where each attempt came from


def test_disabled_user_and_expired_token_are_refused(
    client: TestClient, access: AccessControl
) -> None:
    headers = auth(access, "olga", Role.OPERATOR)
    assert client.get("/meters", headers=headers).status_code == 200
    assert access.store.set_disabled("olga", True) == 1
    assert client.get("/meters", headers=headers).status_code == 401
    access.store.set_disabled("olga", False)
    short = access.store.issue_token("olga", 1000.0, ttl_s=1).token
    assert access.store.authenticate_token(short, 1000.5) is not None
    assert access.store.authenticate_token(short, 1001.0) is None


def test_audit_trail_is_readable_by_secaud_and_verifies_as_an_event_log(
    client: TestClient, repo: ReadingRepository, access: AccessControl
) -> None:
    installer = auth(access, "ian", Role.INSTALLER)
    auditor = auth(access, "sue", Role.SECAUD)
    r = client.post("/meters", json={"meter_id": "m1", "ap_title": AP}, headers=installer)
    assert r.status_code == 201
    assert (
        client.post(
            "/meters", json={"meter_id": "m1", "ap_title": AP}, headers=installer
        ).status_code
        == 409
    )
    assert client.get("/audit", headers=installer).status_code == 403
    page = client.get("/audit", headers=auditor).json()["items"]
    assert [(e["action"], e["outcome"]) for e in page] == [
        ("meter.register", "requested"),  # audit-before-action: written before the change
        ("meter.register", "ok"),
        ("meter.register", "requested"),
        ("meter.register", "refused: exists"),
        ("access.denied", "denied"),
    ]
    access.audit.seal(access.clock())
    export = client.get("/audit/export", headers=auditor).text
    pem = client.get("/audit/public-key", headers=auditor).text.encode()
    verdict = verify_lines(export.split("\n"), pem)
    assert verdict.ok and verdict.entries == 5 and verdict.heads == 1
    tampered = export.replace(b"meter.register".hex(), b"meter.regist3r".hex(), 1)
    assert tampered != export
    assert not verify_lines(tampered.split("\n"), pem).ok


def test_users_and_roles_over_the_api(client: TestClient, access: AccessControl) -> None:
    secadm = auth(access, "sam", Role.SECADM)
    rbac = auth(access, "rita", Role.RBACMNT)
    body = {"name": "olga", "password": PASSWORD, "roles": ["OPERATOR"]}
    assert client.post("/users", json=body, headers=rbac).status_code == 403  # no `users`
    made = client.post("/users", json=body, headers=secadm)
    assert made.status_code == 201 and made.json()["roles"] == ["OPERATOR"]
    assert client.post("/users", json=body, headers=secadm).status_code == 409
    bad = {**body, "name": "x", "roles": ["ROOT"]}
    assert client.post("/users", json=bad, headers=secadm).status_code == 422
    r = client.put("/users/olga/roles", json={"roles": ["OPERATOR", "VIEWER"]}, headers=rbac)
    assert r.status_code == 200 and r.json()["roles"] == ["VIEWER", "OPERATOR"]
    assert (
        client.put("/users/ghost/roles", json={"roles": ["VIEWER"]}, headers=rbac).status_code
        == 404
    )
    token = access.store.issue_token("olga", 1000.0).token
    olga = {"Authorization": f"Bearer {token}"}
    assert client.get("/meters", headers=olga).status_code == 200
    assert client.post("/users/olga/disable", headers=rbac).status_code == 403
    off = client.post("/users/olga/disable", headers=secadm)
    assert off.status_code == 200 and off.json()["disabled"] is True
    assert client.get("/meters", headers=olga).status_code == 401  # her tokens went with her
    assert client.post("/users/olga/enable", headers=secadm).json()["disabled"] is False
    listed = {u["name"]: u["roles"] for u in client.get("/users", headers=secadm).json()}
    assert listed["olga"] == ["VIEWER", "OPERATOR"] and listed["rita"] == ["RBACMNT"]
    actions = [(e.who, e.action, e.target) for e in access.audit.entries(limit=100)]
    assert ("sam", "user.add", "olga") in actions and ("rita", "user.roles", "olga") in actions
    assert ("sam", "user.disable", "olga") in actions and ("sam", "user.enable", "olga") in actions


class _FlakyTrail:
    """Stands in front of the real trail's `record`: the calls listed in `fail` raise, as a full
    disk or a lost volume would."""

    def __init__(self, access: AccessControl, fail: set[int]) -> None:
        self.real = access.audit.record
        self.fail = fail
        self.calls = 0

    def record(self, *args: object, **kwargs: object) -> int:
        self.calls += 1
        if self.calls in self.fail:
            raise OSError("No space left on device")
        return self.real(*args, **kwargs)  # type: ignore[arg-type]


def test_audit_before_action_nothing_happens_when_the_trail_cannot_be_written(
    client: TestClient,
    repo: ReadingRepository,
    access: AccessControl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Audit-before-action: with the trail down, a disconnect, a registration and a new token
    are refused (503) and nothing is queued, registered or issued."""
    repo.register_meter("m1", AP, "c", "x", 1.0)
    operator = auth(access, "olga", Role.OPERATOR, Role.INSTALLER)
    monkeypatch.setattr(access.audit, "record", _FlakyTrail(access, set(range(1, 100))).record)
    made = client.post("/commands", json={"meter_id": "m1", "kind": "disconnect"}, headers=operator)
    assert made.status_code == 503 and made.json()["error"] == "unavailable"
    assert repo.commands() == []
    reg = client.post("/meters", json={"meter_id": "m2", "ap_title": AP}, headers=operator)
    assert reg.status_code == 503 and repo.get_meter("m2") is None
    tokens_before = {t.token_id for t in access.store.list_tokens() if not t.revoked}
    assert client.post("/auth/tokens", json={}, headers=operator).status_code == 503
    assert {t.token_id for t in access.store.list_tokens() if not t.revoked} == tokens_before


def test_an_outcome_entry_lost_after_the_action_is_no_500(
    client: TestClient,
    repo: ReadingRepository,
    access: AccessControl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The old order answered 500 after queueing when the entry written after the action
    failed. Now the request entry is on disk first; losing the outcome entry is logged."""
    repo.register_meter("m1", AP, "c", "x", 1.0)
    operator = auth(access, "olga", Role.OPERATOR)
    monkeypatch.setattr(access.audit, "record", _FlakyTrail(access, {2}).record)
    made = client.post("/commands", json={"meter_id": "m1", "kind": "disconnect"}, headers=operator)
    assert made.status_code == 201 and len(repo.commands()) == 1
    [entry] = [e for e in access.audit.entries(limit=10) if e.action == "command.create"]
    assert (entry.who, entry.target, entry.outcome) == ("olga", "m1", "requested")
