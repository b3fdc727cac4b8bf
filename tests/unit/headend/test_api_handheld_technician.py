"""A field handheld acts at the head-end for the technician logged in on it (access/http.py
`AccessControl.on_behalf`, docs/handheld.md), attacked: an ordinary API user (or a login
session) asserting a technician, a handheld asserting roles beyond its own, a malformed name or
role; and the audit row of what a handheld does names the technician and the handheld both."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from tests.unit.headend import test_api_access
from tests.unit.headend.conftest import auth

from amistack.access import Role
from amistack.access.http import TECHNICIAN_HEADER, TECHNICIAN_ROLES_HEADER, AccessControl
from amistack.access.users import HANDHELD_TOKEN
from amistack.headend.storage import ReadingRepository

AP = "2.16.124.113620.1.22.0.1"
client, repo = test_api_access.client, test_api_access.repo  # the fixtures, shared


@pytest.fixture(autouse=True)
def meter(repo: ReadingRepository) -> None:
    repo.register_meter("field-meter-001", AP, "handheld", "field", 1.0)


def handheld(access: AccessControl, name: str, *roles: Role) -> dict[str, str]:
    """A handheld's head-end identity: a user whose token is of the handheld kind."""
    access.store.add_user(name, "correct horse battery", roles, access.clock())
    token = access.store.issue_token(name, access.clock(), kind=HANDHELD_TOKEN).token
    return {"Authorization": f"Bearer {token}"}


def acting(headers: dict[str, str], technician: str, roles: str) -> dict[str, str]:
    return {**headers, TECHNICIAN_HEADER: technician, TECHNICIAN_ROLES_HEADER: roles}


DISCONNECT = {"meter_id": "field-meter-001", "kind": "disconnect"}


def test_an_ordinary_api_user_cannot_assert_a_technician(
    client: TestClient, repo: ReadingRepository, access: AccessControl
) -> None:
    olga = auth(access, "olga", Role.OPERATOR)  # an operator's token, not a handheld's
    r = client.post("/commands", json=DISCONNECT, headers=acting(olga, "tina", "OPERATOR"))
    assert r.status_code == 403 and "no handheld" in r.json()["detail"]
    assert repo.commands() == []
    [entry] = [e for e in access.audit.entries(limit=20) if e.action == "access.denied"]
    assert (entry.who, entry.detail["technician"]) == ("olga", "tina")
    # nor can a browser's login session
    session = client.post("/auth/login", json={"username": "olga",
                                               "password": "correct horse battery"})  # fmt: skip
    assert session.status_code == 200
    r = client.post("/commands", json=DISCONNECT, headers={
        TECHNICIAN_HEADER: "tina", TECHNICIAN_ROLES_HEADER: "OPERATOR"})  # fmt: skip
    assert r.status_code == 403 and repo.commands() == []


@pytest.mark.parametrize(
    ("technician", "roles", "why"),
    [
        ("ivan", "OPERATOR,INSTALLER", "exceed the handheld's"),  # commission: not the handheld's
        ("sam", "SECADM", "exceed the handheld's"),
        ("tina; drop", "OPERATOR", "technician:"),
        ("tina", "ROOT", "technician:"),
    ],
)
def test_a_handheld_cannot_assert_more_than_it_holds(
    client: TestClient,
    repo: ReadingRepository,
    access: AccessControl,
    technician: str,
    roles: str,
    why: str,
) -> None:
    hh = handheld(access, "handheld-7", Role.OPERATOR)
    r = client.post("/commands", json=DISCONNECT, headers=acting(hh, technician, roles))
    assert r.status_code == 403 and why in r.json()["detail"], r.text
    assert repo.commands() == []
    denied = [e for e in access.audit.entries(limit=20) if e.action == "access.denied"]
    assert [e.who for e in denied] == ["handheld-7"]


def test_a_handhelds_request_is_the_technicians_and_the_audit_row_names_both(
    client: TestClient, repo: ReadingRepository, access: AccessControl
) -> None:
    hh = handheld(access, "handheld-7", Role.OPERATOR, Role.INSTALLER)
    r = client.post("/commands", json=DISCONNECT, headers=acting(hh, "tina", "OPERATOR"))
    assert r.status_code == 201, r.text
    rows = [e for e in access.audit.entries(limit=20) if e.action == "command.create"]
    [entry] = [e for e in rows if e.outcome == "requested"]
    assert {(e.who, e.via) for e in rows} == {("tina", "handheld:handheld-7")}  # and the outcome
    assert (entry.who, entry.via, entry.target) == ("tina", "handheld:handheld-7", DISCONNECT[
        "meter_id"])  # fmt: skip
    # the technician's roles, not the handheld's, decide: a VIEWER reads but may not switch
    vic = acting(hh, "vic", "VIEWER")
    assert (
        client.get("/meters/field-meter-001/readings?start=0&end=10", headers=vic).status_code
        == 200
    )
    r = client.post("/commands", json=DISCONNECT, headers=vic)
    assert r.status_code == 403 and len(repo.commands()) == 1
    denied = [e for e in access.audit.entries(limit=20) if e.action == "access.denied"]
    assert [(e.who, e.via) for e in denied] == [("vic", "handheld:handheld-7")]
    # without the header, the handheld is itself
    assert client.post("/commands", json=DISCONNECT, headers=hh).status_code == 201
    mine = [e for e in access.audit.entries(limit=20) if e.action == "command.create"]
    assert [(e.who, e.via) for e in mine][-1] == ("handheld-7", HANDHELD_TOKEN)
