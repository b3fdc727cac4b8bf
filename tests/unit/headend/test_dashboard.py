"""The dashboard's routes (headend/dashboard) over the real app and SQLite, attacks first:
a cross-site form post is refused even with a valid session, a VIEWER is refused commands by
the server (not only by the page), hostile meter ids render as text, a stream's fragment
cannot inject SSE fields. Then what the pages show: the day strip, outages as gaps, the login
and logout forms, acknowledging an alarm into the audit trail, the mesh star graph."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.unit.headend.conftest import T0, auth

from amistack.access import Role
from amistack.access.http import SESSION_COOKIE, AccessControl
from amistack.headend.api import create_app
from amistack.headend.dashboard.fleet import SLOTS_PER_DAY, day_strip, load_profile
from amistack.headend.dashboard.views import MAX_FORM, sse_event
from amistack.headend.schema import (
    CommandKind,
    CommandState,
    IntervalReading,
    ReadingStatus,
    StoredReading,
)
from amistack.headend.storage import ReadingRepository, SqliteRepository

AP = "2.16.124.113620.1.22.0.{}"
PASSWORD = "correct horse battery"
SAME = {"Origin": "http://testserver"}


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[ReadingRepository]:
    r = SqliteRepository(tmp_path)
    r.register_meter("m1", AP.format(1), "conc-1", "cell-1", T0)
    r.commission_meter("m1", T0)
    yield r
    r.close()


@pytest.fixture
def client(repo: ReadingRepository, access: AccessControl) -> Iterator[TestClient]:
    with TestClient(create_app(repo, access, clock=lambda: T0 + 3600.0)) as c:
        yield c


def login(client: TestClient, access: AccessControl, name: str, role: Role) -> None:
    auth(access, name, role)
    r = client.post(
        "/ui/login",
        data={"username": name, "password": PASSWORD},
        headers=SAME,
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui/fleet"
    assert SESSION_COOKIE in client.cookies


# -- attacks --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
        {},  # neither: a form post from this dashboard always carries Origin
        {"Origin": "http://testserver.evil.example"},
    ],
)
def test_cross_site_command_with_a_valid_session_is_refused(
    client: TestClient, repo: ReadingRepository, access: AccessControl, headers: dict[str, str]
) -> None:
    login(client, access, "olga", Role.OPERATOR)
    r = client.post("/ui/meters/m1/commands", data={"kind": "disconnect"}, headers=headers)
    assert r.status_code == 403 and "Refused" in r.text
    assert repo.commands(meter_id="m1") == []
    alarm = repo.raise_alarm("m1", "x", "y", T0)
    assert client.post(f"/ui/alarms/{alarm.id}/acknowledge", headers=headers).status_code == 403
    assert repo.alarms()[0].acknowledged_at is None


def test_login_csrf_is_refused(client: TestClient, access: AccessControl) -> None:
    auth(access, "olga", Role.OPERATOR)
    r = client.post(
        "/ui/login",
        data={"username": "olga", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert r.status_code == 403 and SESSION_COOKIE not in client.cookies


def test_viewer_sees_no_command_buttons_and_the_server_refuses_anyway(
    client: TestClient, repo: ReadingRepository, access: AccessControl
) -> None:
    login(client, access, "vic", Role.VIEWER)
    page = client.get("/ui/meters/m1").text
    assert 'id="cmd-disconnect"' not in page and "do not include sending commands" in page
    r = client.post("/ui/meters/m1/commands", data={"kind": "disconnect"}, headers=SAME)
    assert r.status_code == 403 and "control" in r.text
    assert repo.commands(meter_id="m1") == []
    alarm = repo.raise_alarm("m1", "tamper", "lid opened", T0)
    assert ">Acknowledge</button>" not in client.get("/ui/events").text
    assert client.post(f"/ui/alarms/{alarm.id}/acknowledge", headers=SAME).status_code == 403
    denied = [e for e in access.audit.entries(limit=100) if e.action == "access.denied"]
    assert len(denied) == 2


def test_hostile_meter_ids_render_as_text(
    client: TestClient, repo: ReadingRepository, access: AccessControl
) -> None:
    evil = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    repo.register_meter(evil, AP.format(2), "<b>c</b>", "", T0)
    login(client, access, "vic", Role.VIEWER)
    for path in ("/ui/fleet", "/ui/keys", "/ui/meters/" + evil.replace("/", "%2F")):
        page = client.get(path).text
        assert "<script>alert" not in page and "<img src=x" not in page, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/ui/fleet").text


def test_a_fragment_cannot_inject_sse_fields() -> None:
    frame = sse_event("fleet", "<p>a</p>\n\nevent: audit\ndata: x\r\nid: 9")
    assert frame.startswith(b"event: fleet\n") and frame.endswith(b"\n\n")
    assert frame.count(b"\n\n") == 1  # one event, every line of it a data line
    body = frame.split(b"\n", 1)[1].rstrip(b"\n").split(b"\n")
    assert all(line.startswith(b"data: ") for line in body)


def test_an_oversized_form_is_refused_before_use(client: TestClient, access: AccessControl) -> None:
    login(client, access, "olga", Role.OPERATOR)
    r = client.post(
        "/ui/meters/m1/commands", content=b"kind=" + b"x" * (MAX_FORM + 1), headers=SAME
    )
    assert r.status_code == 413


def test_pages_need_a_login_and_audit_needs_secaud(
    client: TestClient, access: AccessControl
) -> None:
    r = client.get("/ui/fleet", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert client.get("/ui/fleet/stream").status_code == 401
    login(client, access, "vic", Role.VIEWER)
    refused = client.get("/ui/audit")
    assert refused.status_code == 403 and 'id="refused"' in refused.text
    assert 'action="/ui/logout"' in refused.text  # a way out for a user no page admits
    assert 'href="/ui/audit"' not in client.get("/ui/fleet").text
    login(client, access, "sue", Role.SECAUD)
    page = client.get("/ui/audit").text
    assert "login" in page and "access.denied" in page
    for i in range(250):  # the page shows the newest 200, newest first
        access.record("sue", "probe", target=f"t{i}")
    rows = re.findall(r"<td>probe</td><td>(t\d+)</td>", client.get("/ui/audit").text)
    assert rows[0] == "t249" and len(rows) == 200 and rows[-1] == "t50"


def test_pages_carry_a_strict_content_security_policy(
    client: TestClient, access: AccessControl
) -> None:
    login(client, access, "vic", Role.VIEWER)
    csp = client.get("/ui/fleet").headers["content-security-policy"]
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
    assert "<script>" not in client.get("/ui/meters/m1").text  # data rides in JSON blocks


# -- what the pages show -------------------------------------------------------------------------


def stored(i: int, length: int = 15, status: int = 0, fwd: int = 100) -> StoredReading:
    return StoredReading("m1", T0 + i * length * 60, length, fwd, 0, status, 0, T0, 1)


def test_day_strip_classes() -> None:
    rows = [stored(0), stored(1), stored(2), stored(6, status=ReadingStatus.NO_DATA)]
    rows += [stored(4, length=30)]  # one 30-minute reading fills slot 4
    strip = day_strip(rows, T0, now=T0 + 6 * 1800)
    assert len(strip) == SLOTS_PER_DAY
    # 15-min #0 and #1 fill slot 0, #2 half of slot 1, #6 (no supply) is slot 3
    assert strip[:6] == ["full", "partial", "missing", "outage", "full", "missing"]
    assert strip[6:] == ["future"] * (SLOTS_PER_DAY - 6)  # slot 6 starts now


def test_load_profile_draws_outages_and_missing_intervals_as_gaps() -> None:
    rows = [stored(0, fwd=10), stored(1, status=ReadingStatus.NO_DATA), stored(3, fwd=30)]
    xs, fwd, rev = load_profile(rows)
    assert xs == [T0, T0 + 900, T0 + 1800, T0 + 2700]
    assert fwd == [10.0, None, None, 30.0] and rev[1] is None
    assert load_profile([]) == ([], [], [])


def test_fleet_page_shows_the_last_reading_relay_and_strip(
    client: TestClient, repo: ReadingRepository, access: AccessControl
) -> None:
    repo.store_readings(
        [IntervalReading("m1", T0 + 900 * i, 15, 50 + i, 0, 0, 7) for i in range(4)], T0
    )
    cmd = repo.create_command("m1", CommandKind.DISCONNECT, {}, T0)
    repo.update_command(cmd.id, CommandState.SENT, T0)
    repo.update_command(cmd.id, CommandState.CONFIRMED, T0, relay_state="open")
    login(client, access, "vic", Role.VIEWER)
    page = client.get("/ui/fleet?q=m1").text
    assert "53 Wh" in page and 'aria-label="2 of 48 slots complete"' in page
    assert '<span class="badge relay-open">disconnected</span>' in page
    disconnected = page.split('<li data-count="disconnected">')[1].split("</li>")[0]
    assert disconnected.endswith("<strong>1</strong>")  # the whole fleet's count
    assert "VEE:" not in page
    repo.flag_readings([("m1", T0, 15, 1)])
    assert "VEE: 1 flagged" in client.get("/ui/fleet?q=m1").text
    assert "1 meter match" in page
    assert "No meter matches" in client.get("/ui/fleet?q=nothing-like-it").text
    assert "No meter matches" in client.get("/ui/fleet?state=decommissioned").text
    keys = client.get("/ui/keys").text
    assert "7 <small>(4," in keys  # key id 7, 4 readings
    assert "Re-authentications seen, last day</dt><dd>0" in keys


def test_operator_command_and_acknowledge_are_audited(
    client: TestClient, repo: ReadingRepository, access: AccessControl
) -> None:
    login(client, access, "olga", Role.OPERATOR)
    page = client.get("/ui/meters/m1").text
    assert 'id="cmd-disconnect"' in page
    r = client.post("/ui/meters/m1/commands", data={"kind": "disconnect"}, headers=SAME)
    assert r.status_code == 200 and "queued as command" in r.text
    r = client.post(
        "/ui/meters/m1/commands", data={"kind": "demand_response", "limit_w": "x"}, headers=SAME
    )
    assert r.status_code == 400
    r = client.post(
        "/ui/meters/m1/commands",
        data={"kind": "demand_response", "limit_w": "1500"},
        headers=SAME,
    )
    assert r.status_code == 200
    r = client.post("/ui/meters/m1/commands", data={"kind": "read"}, headers=SAME)
    assert r.status_code == 200 and "Read now queued" in r.text
    assert [c.kind.value for c in repo.commands(meter_id="m1")] == [
        "disconnect",
        "demand_response",
        "read",
    ]
    read = repo.commands(meter_id="m1")[-1]
    repo.update_command(read.id, CommandState.SENT, T0)
    regs = '{"active_forward_wh": 1234, "active_reverse_wh": 5, "max_demand_w": 2100, '
    regs += '"max_demand_time": 1767225600.0, "cumulative_demand_w": 0, "demand_resets": 0, '
    regs += '"tiers_wh": [1, 2, 3, 4, 5, 6]}'
    repo.update_command(read.id, CommandState.CONFIRMED, T0, confirmation=regs)
    page = client.get("/ui/meters/m1").text
    assert "1234 Wh imported" in page and "2100 W" in page and "1 / 2 / 3 / 4 / 5 / 6" in page
    alarm = repo.raise_alarm("m1", "eventlog_verification_failed", "entry 3 edited", T0)
    r = client.post(f"/ui/alarms/{alarm.id}/acknowledge", headers=SAME)
    assert r.status_code == 200 and "acknowledged" in r.text
    assert repo.alarms()[0].acknowledged_at is not None
    actions = [(e.who, e.action, e.target) for e in access.audit.entries(limit=100)]
    assert ("olga", "command.create", "m1") in actions
    assert ("olga", "alarm.acknowledge", str(alarm.id)) in actions


def test_login_form_failure_and_logout(client: TestClient, access: AccessControl) -> None:
    auth(access, "olga", Role.OPERATOR)
    r = client.post("/ui/login", data={"username": "olga", "password": "wrong"}, headers=SAME)
    assert r.status_code == 401 and 'id="login-error"' in r.text
    for form in ({}, {"username": "", "password": ""}, {"username": "\x00<b>", "password": "x"}):
        r = client.post("/ui/login", data=form, headers=SAME)
        assert r.status_code == 401 and "<b>" not in r.text, form
    login(client, access, "olga2", Role.OPERATOR)
    r = client.post("/ui/logout", headers=SAME, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert client.get("/ui/fleet", follow_redirects=False).status_code == 303
    actions = [(e.who, e.action, e.outcome) for e in access.audit.entries(limit=100)]
    assert ("olga", "login", "failed") in actions and ("olga2", "logout", "requested") in actions


def test_mesh_graph_is_the_star_the_head_end_knows(
    client: TestClient, repo: ReadingRepository, access: AccessControl
) -> None:
    for i in range(2, 6):
        repo.register_meter(f"m{i}", AP.format(i), "conc-2" if i % 2 else "conc-1", "", T0)
    login(client, access, "vic", Role.VIEWER)
    g = client.get("/ui/mesh/graph").json()
    roots = {n["id"] for n in g["nodes"] if n["kind"] == "concentrator"}
    assert roots == {"concentrator:conc-1", "concentrator:conc-2"}
    assert len(g["edges"]) == 5 and all(e["source"] in roots for e in g["edges"])
    one = client.get("/ui/mesh/graph?concentrator=conc-2").json()
    assert {n["id"] for n in one["nodes"]} == {"concentrator:conc-2", "m3", "m5"}


def test_the_vendored_assets_are_served_without_login(client: TestClient) -> None:
    for name in ("htmx.min.js", "uPlot.iife.min.js", "cytoscape.min.js"):
        r = client.get(f"/ui/static/vendor/{name}")
        assert r.status_code == 200 and len(r.content) > 10_000, name
    assert client.get("/ui/static/dashboard.js").status_code == 200


def test_a_stream_ends_when_its_session_is_revoked(
    repo: ReadingRepository, access: AccessControl
) -> None:
    """Over real uvicorn (the test client buffers streams): the stream sends, the session is
    revoked (as logout or disabling the user does), the stream ends within a tick or two."""
    from amistack.bench.dashboard import serve_in_thread

    headers = auth(access, "vic", Role.VIEWER)
    token_id = access.store.list_tokens()[0].token_id
    server, thread, port = serve_in_thread(create_app(repo, access, clock=lambda: T0))
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/ui/fleet/stream", headers=headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.readline() == b"retry: 2000\n"
            while r.readline() != b"event: fleet\n":
                pass
            access.store.revoke_token(token_id)
            t0 = time.monotonic()
            rest = r.read()  # returns when the server ends the stream
            assert time.monotonic() - t0 < 5 and b"event:" not in rest.split(b"\n\n", 1)[-1]
    finally:
        server.should_exit = True
        thread.join(10)
