"""The REST API over both backends (TestClient), and once under uvicorn with a real request."""

from __future__ import annotations

import csv
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from tests.unit.headend.conftest import T0, auth, make_access, reading

from amistack.access import Role
from amistack.access.http import AccessControl
from amistack.headend.api import create_app
from amistack.headend.export import CSV_FIELDS, export_readings
from amistack.headend.storage import ReadingRepository, SqliteRepository

AP = "2.16.124.113620.1.22.0."


@pytest.fixture
def client(repo: ReadingRepository, access: AccessControl) -> Iterator[TestClient]:
    with TestClient(create_app(repo, access, clock=lambda: 1000.0)) as c:
        c.headers.update(auth(access, "admin"))
        yield c


def test_openapi_document_lists_the_resources(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["info"]["title"] == "amistack head-end"
    for path in ("/meters", "/meters/{meter_id}/readings", "/commands", "/events", "/alarms"):
        assert path in doc["paths"]


def test_meter_life_cycle_over_http(client: TestClient) -> None:
    r = client.post("/meters", json={"meter_id": "m1", "ap_title": AP + "1", "concentrator": "c"})
    assert r.status_code == 201 and r.json()["state"] == "installed"
    assert client.post("/meters", json={"meter_id": "m1", "ap_title": AP + "2"}).status_code == 409
    bad = client.post("/meters", json={"meter_id": "m9", "ap_title": "x.y"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid"
    assert client.post("/meters", json={"ap_title": AP}).status_code == 422
    assert client.post("/meters/m1/commission").json()["state"] == "commissioned"
    again = client.post("/meters/m1/commission")
    assert again.status_code == 409 and again.json()["error"] == "invalid_transition"
    assert client.get("/meters/m1").json()["commissioned_at"] == 1000.0
    missing = client.get("/meters/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert client.post("/meters/m1/decommission").json()["state"] == "decommissioned"


def test_meter_pages(client: TestClient) -> None:
    for i in range(5):
        client.post("/meters", json={"meter_id": f"m{i}", "ap_title": f"{AP}{i}"})
    p1 = client.get("/meters", params={"limit": 3}).json()
    p2 = client.get("/meters", params={"limit": 3, "after": p1["next_after"]}).json()
    assert [m["meter_id"] for m in p1["items"] + p2["items"]] == [f"m{i}" for i in range(5)]
    assert p2["next_after"] is None
    assert client.get("/meters", params={"limit": 0}).status_code == 422
    assert client.get("/meters", params={"state": "bogus"}).status_code == 422


def test_readings_json_pages_and_csv_export(client: TestClient, repo: ReadingRepository) -> None:
    client.post("/meters", json={"meter_id": "m1", "ap_title": AP + "1"})
    repo.store_readings([reading("m1", i, fwd=10 + i) for i in range(10)], 5.0)
    q = {"start": T0, "end": T0 + 86400, "limit": 4}
    got = []
    page = client.get("/meters/m1/readings", params=q).json()
    while True:
        got += [r["forward_wh"] for r in page["items"]]
        if page["next_after"] is None:
            break
        page = client.get("/meters/m1/readings", params={**q, **page["next_after"]}).json()
    assert got == [10 + i for i in range(10)]
    assert page["items"][0]["interval_start_iso"] == "2026-01-01T02:00:00Z"
    r = client.get("/meters/m1/readings", params={"start": T0, "end": T0 + 86400, "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert tuple(rows[0]) == CSV_FIELDS
    assert [int(x["forward_wh"]) for x in rows] == [10 + i for i in range(10)]
    j = client.get("/meters/m1/readings", params={**q, "format": "json-export"}).json()
    assert len(j) == 10 and j[3]["interval_start"] == T0 + 2700
    assert client.get("/meters/m1/readings", params={"start": 5, "end": 5}).status_code == 400
    assert client.get("/meters/zz/readings", params={"start": 0, "end": 5}).status_code == 404
    half = client.get("/meters/m1/readings", params={**q, "after_start": T0})
    assert half.status_code == 400


def test_commands_events_alarms(client: TestClient, repo: ReadingRepository) -> None:
    client.post("/meters", json={"meter_id": "m1", "ap_title": AP + "1"})
    c = client.post("/commands", json={"meter_id": "m1", "kind": "disconnect"})
    assert c.status_code == 201 and c.json()["state"] == "pending"
    assert client.post("/commands", json={"meter_id": "m1", "kind": "explode"}).status_code == 422
    assert client.post("/commands", json={"meter_id": "m0", "kind": "time_sync"}).status_code == 404
    cid = c.json()["id"]
    assert client.get(f"/commands/{cid}").json()["kind"] == "disconnect"
    assert client.get("/commands/999").status_code == 404
    listed = client.get("/commands", params={"meter_id": "m1", "state": "pending"}).json()
    assert [x["id"] for x in listed["items"]] == [cid]
    from amistack.headend.schema import MeterEvent

    repo.add_events([MeterEvent("m1", 3.0, "cover_open", seq=1)], 4.0)
    assert client.get("/events", params={"meter_id": "m1"}).json()["items"][0]["kind"] == (
        "cover_open"
    )
    a = repo.raise_alarm("m1", "eventlog_verification_failed", "entry 3", 5.0)
    assert client.get("/alarms", params={"unacknowledged": True}).json()["items"][0]["id"] == a.id
    assert client.post(f"/alarms/{a.id}/acknowledge").json()["acknowledged_at"] == 1000.0
    assert client.get("/alarms", params={"unacknowledged": True}).json()["items"] == []
    assert client.post("/alarms/999/acknowledge").status_code == 404


def test_vee_endpoint_flags(client: TestClient, repo: ReadingRepository) -> None:
    client.post("/meters", json={"meter_id": "m1", "ap_title": AP + "1"})
    repo.store_readings([reading("m1", i, fwd=100) for i in range(10)], 1.0)
    repo.store_readings([reading("m1", 10, fwd=9000)], 1.0)
    out = client.post("/meters/m1/vee", params={"start": T0, "end": T0 + 12 * 900}).json()
    assert out["flagged"] == 1
    assert out["gaps"] == [{"length_min": 15, "start": T0 + 11 * 900, "end": T0 + 12 * 900}]
    assert (
        client.post("/meters/m1/vee", params={"start": T0 + 900, "end": T0 + 1800}).status_code
        == 400
    )


def test_export_to_file(tmp_path: Path) -> None:
    repo = SqliteRepository(tmp_path)
    repo.store_readings([reading("m1", i) for i in range(3)], 1.0)
    out = io.StringIO()
    export_readings(repo, "m1", T0, T0 + 86400, "csv", out)
    assert out.getvalue().count("\n") == 4
    with pytest.raises(ValueError):
        export_readings(repo, "m1", T0, T0 + 1, "xml", io.StringIO())


def test_served_by_uvicorn_on_loopback(tmp_path: Path) -> None:
    repo = SqliteRepository(tmp_path)
    repo.register_meter("m1", AP + "1", "c", "x", 1.0)
    access = make_access(tmp_path, time.time)
    headers = auth(access, "viewer", Role.VIEWER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(repo, access), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        assert httpx.get(f"http://127.0.0.1:{port}/meters/m1", timeout=5).status_code == 401
        r = httpx.get(f"http://127.0.0.1:{port}/meters/m1", headers=headers, timeout=5)
        assert r.status_code == 200 and r.json()["ap_title"] == AP + "1"
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5).json()["paths"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()
