"""The technician's screen as an attacker meets it: anonymous requests, another browser while a
technician is logged in, a role without the right forging a post, another site's page posting
(CSRF), and a cookie kept after logout; all refused by the server, the denied actions audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from amistack.access import AccessStore, AuditTrail, Role
from amistack.handheld.technician import TechnicianDesk
from amistack.runtime.handheld import DeviceConfig, HandheldDevice
from amistack.runtime.handheld_screen import COOKIE, create_screen
from amistack.sim.handheld_area import AreaConfig, area_meter_id

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "a long field passphrase"
OWN = {"Origin": "http://testserver"}
EVIL = {"Origin": "https://evil.example"}
METER = area_meter_id(1)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[HandheldDevice]:
    store = AccessStore(tmp_path, hasher=CHEAP)
    for name, role in (("tina", Role.OPERATOR), ("vic", Role.VIEWER), ("ian", Role.INSTALLER)):
        store.add_user(name, PASSWORD, [role], 0.0)
    desk = TechnicianDesk(store, AuditTrail.open(tmp_path, 0.0), "handheld-7")
    cfg = DeviceConfig(tmp_path, "handheld-7", b"\x5a" * 16, ("127.0.0.1", 9), "127.0.0.1",
                       AreaConfig(meters=3))  # fmt: skip
    yield HandheldDevice(cfg, desk)
    desk.audit.close()
    store.close()


def client(device: HandheldDevice) -> TestClient:
    return TestClient(create_screen(device, ["testserver"]), follow_redirects=False)


def login(device: HandheldDevice, user: str) -> TestClient:
    c = client(device)
    r = c.post("/login", data={"username": user, "password": PASSWORD}, headers=OWN)
    assert r.status_code == 303 and r.headers["location"] == "/work", r.text
    return c


def test_anonymous_requests_are_refused(device: HandheldDevice) -> None:
    c = client(device)
    assert c.get("/work").headers["location"] == "/login"
    assert c.get("/stream").status_code == 401
    for path in (f"/meters/{METER}/read", "/work/start", "/work/stop", "/logout"):
        assert c.post(path, headers=OWN).status_code == 401, path
    page = c.get("/login")
    assert (
        page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    )


def test_a_wrong_password_is_refused_and_nobody_is_logged_in(device: HandheldDevice) -> None:
    r = client(device).post("/login", data={"username": "tina", "password": "guess"}, headers=OWN)
    assert r.status_code == 401 and 'id="login-error"' in r.text
    assert device.technician is None


def test_repeated_failures_lock_the_name_out_on_the_screen_too(device: HandheldDevice) -> None:
    c = client(device)
    for _ in range(5):
        r = c.post("/login", data={"username": "tina", "password": "guess"}, headers=OWN)
        assert r.status_code == 401
    r = c.post("/login", data={"username": "tina", "password": PASSWORD}, headers=OWN)
    assert r.status_code == 429 and device.technician is None
    failed = [e for e in device.desk.audit.entries() if e.outcome != "ok"]
    assert len(failed) >= 5  # each failure in the handheld's signed audit trail


def test_only_the_browser_that_logged_in_sees_the_screen(device: HandheldDevice) -> None:
    tina = login(device, "tina")
    assert "tina" in tina.get("/work").text
    other = client(device)
    other.cookies.set(COOKIE, "guessed")
    assert other.get("/work").headers["location"] == "/login"
    assert other.get("/stream").status_code == 401
    r = other.post("/login", data={"username": "vic", "password": PASSWORD}, headers=OWN)
    assert r.status_code == 409  # one technician at a time: the handheld says busy


@pytest.mark.parametrize(
    ("user", "shown", "refused"),
    [
        ("vic", {"read"}, ["disconnect", "connect", "commission"]),
        ("tina", {"read", "disconnect", "connect"}, ["commission"]),
        ("ian", {"read", "commission"}, ["disconnect", "connect"]),
    ],
)
def test_a_role_sees_its_actions_and_the_server_refuses_the_rest(
    device: HandheldDevice, user: str, shown: set[str], refused: list[str]
) -> None:
    c = login(device, user)
    page = c.get("/work").text
    for op in ("read", "disconnect", "connect", "commission"):
        assert (f'data-op="{op}"' in page) == (op in shown), (user, op)
    for op in refused:
        r = c.post(f"/meters/{METER}/{op}", headers=OWN)
        assert r.status_code == 403 and "Refused" in r.text, (user, op, r.text)
    denied = [(e.action, e.target) for e in device.desk.audit.entries() if e.outcome == "denied"]
    assert denied == [(f"handheld.{op}", METER) for op in refused]


def test_another_sites_page_cannot_post(device: HandheldDevice) -> None:
    assert (
        client(device)
        .post("/login", data={"username": "tina", "password": PASSWORD}, headers=EVIL)
        .status_code
        == 403
    )
    assert device.technician is None
    c = login(device, "tina")
    for path in (f"/meters/{METER}/disconnect", "/work/start", "/work/stop", "/logout"):
        assert c.post(path, headers=EVIL).status_code == 403, path
        assert c.post(path).status_code == 403, path  # neither Origin nor Referer
    assert device.technician is not None  # the forged logout did nothing


def test_a_name_rebound_to_loopback_is_refused(device: HandheldDevice) -> None:
    """DNS rebinding: another site's page reaching the screen under its own name."""
    c = client(device)
    evil = {"Host": "evil.example:8780", "Origin": "http://evil.example:8780"}
    r = c.post("/login", data={"username": "tina", "password": PASSWORD}, headers=evil)
    assert r.status_code == 400 and device.technician is None
    assert c.get("/login", headers={"Host": "evil.example"}).status_code == 400


def test_an_oversized_form_is_refused(device: HandheldDevice) -> None:
    c = client(device)
    r = c.post("/login", content=b"username=" + b"a" * 5000, headers=OWN)
    assert r.status_code == 400 and "larger" in r.text and device.technician is None


def test_unknown_meters_and_operations_are_refused(device: HandheldDevice) -> None:
    c = login(device, "tina")
    assert c.post("/meters/someone-else/read", headers=OWN).status_code == 404
    assert c.post(f"/meters/{METER}/view", headers=OWN).status_code == 404
    assert c.post(f"/meters/{METER}/format-disk", headers=OWN).status_code == 404
    r = c.post(f"/meters/{METER}/read", headers=OWN)  # allowed, but no work session runs
    assert r.status_code == 409 and "no-work-session" in r.text


def test_logout_ends_the_screen_and_the_cookie(device: HandheldDevice) -> None:
    c = login(device, "tina")
    cookie = c.cookies.get(COOKIE)
    assert c.post("/logout", headers=OWN).status_code == 303
    assert device.technician is None
    stale = client(device)
    stale.cookies.set(COOKIE, str(cookie))
    assert stale.get("/work").headers["location"] == "/login"
    assert stale.post(f"/meters/{METER}/read", headers=OWN).status_code == 401


def test_a_logout_through_the_control_socket_ends_the_screen(device: HandheldDevice) -> None:
    import asyncio

    c = login(device, "tina")
    asyncio.run(device.handle({"op": "logout"}))
    assert c.get("/stream").status_code == 401
