"""SECADM actions on the dashboard's Keys page (revoke, rotate a PSK) through the key server's
delegated admin service, attacked first: VIEWER, OPERATOR and SECAUD forging the confirmed
POST, a cross-site post with a SECADM's session, a replayed confirmation, a token for another
meter, action or user, a wrong password at the step-up, a head-end without a delegation
certificate, a head-end SECADM the key server does not know. Then the revocation and rotation
themselves, audited by name on both sides. The real app over SQLite, the real
`KeyAdminService` on a real credential store and signed audit trail (its TLS listener:
tests/unit/runtime/test_keyadmin_tls.py; the whole path in a browser:
tests/browser/test_dashboard_browser.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from tests.unit.headend.conftest import CHEAP_HASHER, T0
from tests.unit.headend.test_dashboard import PASSWORD, SAME, login

from amistack.access import AccessStore, AuditTrail, Principal, Role
from amistack.access.http import AccessControl
from amistack.access.keyadmin import KeyAdminService
from amistack.crypto import seeded_random
from amistack.headend.api import create_app
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.store import CredentialStore

T = TypeVar("T")
NOW = T0 + 3600.0
PSK = bytes.fromhex("00112233445566778899aabbccddeeff")
DELEGATOR = Principal(
    "headend-dashboard", frozenset({Role.VIEWER}), "certificate", "cert:5e", "127.0.0.1"
)


class KeyServer:
    """The key server's admin service, reached in-process as the head-end's certificate. Its
    SQLite store lives on a thread of its own (as on the key server's loop): `on` runs there."""

    name = DELEGATOR.name

    def __init__(self, tmp: Path) -> None:
        tmp.mkdir()
        self.pool = ThreadPoolExecutor(1)
        kek = FileKek.create(tmp / "kek", seeded_random(1))
        self.store = self.on(lambda: CredentialStore(tmp / "ks.db", kek))
        self.audit = AuditTrail.open(tmp, NOW)
        self.users = AccessStore(tmp / "access", hasher=CHEAP_HASHER)
        self.users.add_user("sam", PASSWORD, {Role.SECADM}, NOW)
        self.svc = KeyAdminService(
            self.store, self.audit, users=self.users, delegators=frozenset({self.name})
        )
        for device in ("m1", "m2"):
            self.on(lambda d=device: self.store.enroll(d, PSK, NOW))

    def on(self, fn: Callable[[], T]) -> T:
        return self.pool.submit(fn).result(10)

    async def delegate(self, request: dict[str, Any]) -> dict[str, Any]:
        line = self.on(lambda: self.svc.handle(json.dumps(request).encode(), DELEGATOR, NOW))
        answer: dict[str, Any] = json.loads(line)
        return answer

    def revoked(self, device: str) -> bool:
        found = [d for d in self.on(self.store.list_devices) if d.device_id == device.encode()]
        return found[0].revoked_at is not None

    def psk(self, device: str) -> bytes:
        return self.on(lambda: self.store.get_psk(device))

    def trail(self) -> list[tuple[str, str, str, str]]:
        return [(e.who, e.via, e.action, e.outcome) for e in self.audit.entries(-1, 100)]

    def close(self) -> None:
        self.users.close()
        self.audit.close()
        self.on(self.store.close)
        self.pool.shutdown()


@pytest.fixture
def ks(tmp_path: Path) -> Iterator[KeyServer]:
    k = KeyServer(tmp_path / "keyserver")
    yield k
    k.close()


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[SqliteRepository]:
    r = SqliteRepository(tmp_path)
    for i in (1, 2):
        r.register_meter(f"m{i}", f"2.16.124.113620.1.22.0.{i}", "conc-1", "cell-1", T0)
    yield r
    r.close()


@pytest.fixture
def client(repo: SqliteRepository, access: AccessControl, ks: KeyServer) -> Iterator[TestClient]:
    with TestClient(create_app(repo, access, clock=lambda: NOW, key_admin=ks)) as c:
        yield c


def confirm_token(client: TestClient, meter: str, action: str) -> str:
    page = client.get(f"/ui/keys/{meter}/{action}")
    assert page.status_code == 200, page.text
    found = re.search(r'name="confirm" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def confirm(
    client: TestClient, meter: str, action: str, token: str, password: str = PASSWORD, **kw: Any
) -> Any:
    data = {"confirm": token, "password": password, "reason": "stolen"}
    return client.post(f"/ui/keys/{meter}/{action}", data=data, headers=kw.get("headers", SAME))


# -- attacks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.SECAUD, Role.ENGINEER])
def test_a_role_without_keys_sees_no_buttons_and_its_forged_post_is_refused(
    client: TestClient, access: AccessControl, ks: KeyServer, role: Role
) -> None:
    login(client, access, "mallory", role)
    page = client.get("/ui/keys").text
    assert "Revoke…" not in page and "Rotate PSK…" not in page
    assert client.get("/ui/keys/m1/revoke").status_code == 403
    for action in ("revoke", "rotate"):
        r = confirm(client, "m1", action, "forged")
        assert r.status_code == 403 and "keys" in r.text
    assert not ks.revoked("m1") and ks.psk("m1") == PSK
    assert ks.trail() == []  # the key server was never asked
    denied = [e for e in access.audit.entries(-1, 100) if e.action == "access.denied"]
    assert len(denied) >= 3


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Referer": "https://evil.example/x"}, {}],
)
def test_a_cross_site_post_with_a_secadm_session_and_token_is_refused(
    client: TestClient, access: AccessControl, ks: KeyServer, headers: dict[str, str]
) -> None:
    login(client, access, "sam", Role.SECADM)
    token = confirm_token(client, "m1", "revoke")
    r = confirm(client, "m1", "revoke", token, headers=headers)
    assert r.status_code == 403 and "this dashboard" in r.text
    assert not ks.revoked("m1") and ks.trail() == []


def test_a_replayed_confirmation_is_refused(
    client: TestClient, access: AccessControl, ks: KeyServer
) -> None:
    login(client, access, "sam", Role.SECADM)
    token = confirm_token(client, "m1", "rotate")
    first = confirm(client, "m1", "rotate", token)
    assert first.status_code == 200, first.text
    rotated = ks.psk("m1")
    again = confirm(client, "m1", "rotate", token)
    assert again.status_code == 403 and "already used" in again.text
    assert ks.psk("m1") == rotated
    assert [a for _, _, a, o in ks.trail() if o == "ok"] == ["keys.rotate_psk"]


@pytest.mark.parametrize(
    ("meter", "action"), [("m2", "revoke"), ("m1", "rotate")]
)  # the token was for m1/revoke
def test_a_token_for_another_meter_or_action_is_refused(
    client: TestClient, access: AccessControl, ks: KeyServer, meter: str, action: str
) -> None:
    login(client, access, "sam", Role.SECADM)
    token = confirm_token(client, "m1", "revoke")
    assert confirm(client, meter, action, token).status_code == 403
    assert not ks.revoked("m1") and not ks.revoked("m2") and ks.psk("m1") == PSK


def test_another_users_token_is_refused(
    repo: SqliteRepository, access: AccessControl, ks: KeyServer
) -> None:
    app = create_app(repo, access, clock=lambda: NOW, key_admin=ks)
    with TestClient(app) as sam, TestClient(app) as eve:
        login(sam, access, "sam", Role.SECADM)
        login(eve, access, "eve", Role.SECADM)
        token = confirm_token(sam, "m1", "revoke")
        assert confirm(eve, "m1", "revoke", token).status_code == 403
    assert not ks.revoked("m1")


def test_a_wrong_password_at_the_step_up_changes_nothing_and_is_audited(
    client: TestClient, access: AccessControl, ks: KeyServer
) -> None:
    login(client, access, "sam", Role.SECADM)
    token = confirm_token(client, "m1", "revoke")
    r = confirm(client, "m1", "revoke", token, password="wrong password here")
    assert r.status_code == 401 and "password not confirmed" in r.text
    assert not ks.revoked("m1") and ks.trail() == []
    entries = [(e.who, e.action, e.outcome) for e in access.audit.entries(-1, 100)]
    assert ("sam", "step_up", "failed") in entries


def test_without_a_delegation_certificate_the_buttons_are_disabled_with_a_reason(
    repo: SqliteRepository, access: AccessControl
) -> None:
    with TestClient(create_app(repo, access, clock=lambda: NOW)) as client:
        login(client, access, "sam", Role.SECADM)
        page = client.get("/ui/keys").text
        assert '<button type="button" disabled' in page and "no delegation certificate" in page
        token = confirm_token_absent(client)
        r = confirm(client, "m1", "revoke", token)
        assert r.status_code == 409 and "no delegation certificate" in r.text


def confirm_token_absent(client: TestClient) -> str:
    """Without a delegation the confirmation page says why and offers no form; a token is
    still issued (the page is the same route), so a crafted post reaches the 409."""
    page = client.get("/ui/keys/m1/revoke")
    assert page.status_code == 200 and "Not available" in page.text
    assert 'name="confirm"' not in page.text
    from amistack.headend.dashboard import views

    assert views.NO_DELEGATION in page.text
    return "none"


def test_a_head_end_secadm_the_key_server_does_not_know_is_refused_there(
    client: TestClient, access: AccessControl, ks: KeyServer
) -> None:
    login(client, access, "bob", Role.SECADM)  # a SECADM of the head-end only
    token = confirm_token(client, "m1", "revoke")
    r = confirm(client, "m1", "revoke", token)
    assert r.status_code == 409 and "not an enabled user of this key server" in r.text
    assert not ks.revoked("m1")
    assert ks.trail()[-1][0] == "headend-dashboard" and ks.trail()[-1][3] == "refused: forbidden"
    outcome = [(e.who, e.action, e.outcome) for e in access.audit.entries(-1, 100)][-1]
    assert outcome == ("bob", "keys.revoke", "refused: forbidden")


def test_a_hostile_meter_id_is_text_on_the_confirmation_page(
    client: TestClient, repo: SqliteRepository, access: AccessControl
) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    repo.register_meter(hostile, "2.16.124.113620.1.22.0.9", "c", "c", T0)
    login(client, access, "sam", Role.SECADM)
    page = client.get(f"/ui/keys/{quote(hostile, safe='')}/revoke").text
    assert hostile not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


# -- what works -----------------------------------------------------------------------------------


def test_secadm_revokes_with_confirmation_and_both_trails_name_them(
    client: TestClient, access: AccessControl, ks: KeyServer
) -> None:
    login(client, access, "sam", Role.SECADM)
    page = client.get("/ui/keys").text
    assert 'href="/ui/keys/m1/revoke"' in page and 'href="/ui/keys/m1/rotate"' in page
    confirmation = client.get("/ui/keys/m1/revoke").text
    assert "Your password, to confirm" in confirmation and "headend-dashboard" in confirmation
    r = confirm(client, "m1", "revoke", confirm_token(client, "m1", "revoke"))
    assert r.status_code == 200 and "m1 revoked" in r.text
    assert ks.revoked("m1") and not ks.revoked("m2")
    via = "delegated by headend-dashboard (cert:5e)"
    assert ks.trail()[-2:] == [
        ("sam", via, "keys.revoke", "requested"),
        ("sam", via, "keys.revoke", "ok"),
    ]
    here = [(e.who, e.action, e.target, e.outcome) for e in access.audit.entries(-1, 100)]
    assert here[-2:] == [
        ("sam", "keys.revoke", "m1", "requested"),
        ("sam", "keys.revoke", "m1", "ok"),
    ]
    assert "<td>sam</td><td>revoke</td><td>m1</td><td>ok</td>" in client.get("/ui/keys").text


def test_secadm_rotates_a_psk_shown_once_never_audited_nor_cached(
    client: TestClient, access: AccessControl, ks: KeyServer
) -> None:
    login(client, access, "sam", Role.SECADM)
    r = confirm(client, "m2", "rotate", confirm_token(client, "m2", "rotate"))
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    psk = ks.psk("m2").hex()
    assert psk != PSK.hex() and psk in r.text
    trails = json.dumps(
        [vars(e) for e in [*access.audit.entries(-1, 100), *ks.audit.entries(-1, 100)]]
    )
    assert psk not in trails
    assert psk not in client.get("/ui/keys").text
