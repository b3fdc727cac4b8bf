"""POST /concentrators/{id}/topology (a concentrator's DODAG report) and the mesh page drawing
it: attacks first (anonymous, wrong role, oversized, malformed), then a simulated mesh's DODAG
(`MeshSim.dodag()`) stored and rendered with its parent edges, the star kept for the rest."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tests.unit.headend.conftest import T0, auth
from tests.unit.headend.test_dashboard import AP, login

from amistack.access import Role
from amistack.access.http import AccessControl
from amistack.headend.api import MAX_TOPOLOGY_BODY, MAX_TOPOLOGY_NODES, TopologyIn, create_app
from amistack.headend.storage import SqliteRepository
from amistack.sim.mesh import MeshConfig, build_mesh

URL = "/concentrators/conc-1/topology"
ROOT = "02:00:00:00:00:00:00:01"
CHILD = "02:00:00:00:00:00:00:02"


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[SqliteRepository]:
    r = SqliteRepository(tmp_path)
    r.register_meter("m1", AP.format(1), "conc-1", "", T0)
    r.register_meter("m2", AP.format(2), "conc-2", "", T0)
    yield r
    r.close()


@pytest.fixture
def client(repo: SqliteRepository, access: AccessControl) -> Iterator[TestClient]:
    with TestClient(create_app(repo, access, clock=lambda: T0 + 60.0)) as c:
        yield c


def _nodes(repo: SqliteRepository) -> list[dict[str, Any]]:
    stored = repo.topology("conc-1")
    assert stored is not None
    nodes: list[dict[str, Any]] = json.loads(stored[1])
    return nodes


def _two() -> dict[str, Any]:
    return {
        "nodes": [
            {"eui64": ROOT, "role": "concentrator", "rank": 256, "joined": True},
            {"eui64": CHILD, "meter_id": "m1", "rank": 512, "parent": ROOT, "joined": True,
             "etx": 1.5, "link_quality": 200, "authenticated": True, "address": "2001:db8::2"},
        ]
    }  # fmt: skip


# -- attacks --------------------------------------------------------------------------------------


def test_anonymous_and_a_bad_token_are_refused(client: TestClient, repo: SqliteRepository) -> None:
    assert client.post(URL, json=_two()).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert client.post(URL, json=_two(), headers=bad).status_code == 401
    assert repo.topologies() == {}


@pytest.mark.parametrize("role", [r for r in Role if r is not Role.ENGINEER])
def test_a_role_without_topology_report_is_refused(
    client: TestClient, repo: SqliteRepository, access: AccessControl, role: Role
) -> None:
    r = client.post(URL, json=_two(), headers=auth(access, "someone", role))
    assert r.status_code == 403
    assert repo.topologies() == {}


def test_an_oversized_report_is_refused_before_it_is_read(
    client: TestClient, repo: SqliteRepository, access: AccessControl
) -> None:
    headers = {**auth(access, "eng", Role.ENGINEER), "Content-Type": "application/json"}
    body = b'{"nodes": [' + b" " * MAX_TOPOLOGY_BODY + b"]}"
    assert client.post(URL, content=body, headers=headers).status_code == 413
    many = {"nodes": [{"eui64": f"02:00:00:00:00:00:{i >> 8:02x}:{i & 255:02x}"}
                      for i in range(MAX_TOPOLOGY_NODES + 1)]}  # fmt: skip
    assert client.post(URL, json=many, headers=headers).status_code == 422
    assert repo.topologies() == {}


def _malformed() -> list[dict[str, Any]]:
    two = _two()
    out: list[dict[str, Any]] = [
        {},
        {"nodes": "x"},
        {"nodes": [{}]},
        {"nodes": two["nodes"][:1] * 2},
    ]
    for field, value in [
        ("eui64", "not-an-eui"), ("eui64", "02:00:00:00:00:00:00:0G"), ("rank", -1),
        ("rank", 0x10000), ("parent", "02:00:00:00:00:00:00:99"), ("parent", CHILD),
        ("etx", -1), ("link_quality", 256), ("address", "10.0.0.1"), ("meter_id", "\ud800"),
        ("meter_id", ""), ("role", "root"), ("evil", 1), ("joined", "maybe"),
    ]:  # fmt: skip
        bad = _two()
        bad["nodes"][1][field] = value
        out.append(bad)
    return out


@pytest.mark.parametrize("body", _malformed())
def test_a_malformed_report_is_refused_and_changes_nothing(
    client: TestClient, repo: SqliteRepository, access: AccessControl, body: dict[str, Any]
) -> None:
    headers = {**auth(access, "eng", Role.ENGINEER), "Content-Type": "application/json"}
    raw = json.dumps(body)  # ASCII escapes: a lone surrogate travels as "\\ud800"
    assert client.post(URL, content=raw, headers=headers).status_code == 422
    assert repo.topologies() == {}


def test_the_hostile_names_render_as_text(client: TestClient, access: AccessControl) -> None:
    evil = "<script>alert(1)</script>"
    body = _two()
    body["nodes"][1]["meter_id"] = evil
    assert client.post(
        f"/concentrators/{evil}/topology", json=body, headers=auth(access, "eng", Role.ENGINEER)
    ).status_code in (200, 404)  # a slash-free hostile name is stored, shown escaped
    login(client, access, "vic", Role.VIEWER)
    assert evil not in client.get("/ui/mesh").text


# -- a simulated mesh's DODAG, stored and drawn ---------------------------------------------------


def _sim_report() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    sim = build_mesh(MeshConfig(nodes=12, seed=3))
    assert sim.run(300.0)
    rows = sim.dodag()
    nodes = [
        {
            "eui64": row["eui64"],
            "role": row["role"],
            "rank": row["rank"],
            "parent": row["parent"],
            "hops": row["hops"],
            "joined": row["rank"] is not None,
            "authenticated": bool(row["authenticated"]),
            **({"meter_id": f"m{row['node']}"} if row["role"] == "meter" else {}),
        }
        for row in rows
    ]
    return rows, {"nodes": nodes}


def test_a_sim_dodag_is_stored_and_drawn_with_its_parent_edges(
    client: TestClient, repo: SqliteRepository, access: AccessControl
) -> None:
    rows, body = _sim_report()
    r = client.post(URL, json=body, headers=auth(access, "eng", Role.ENGINEER))
    assert r.status_code == 200 and r.json() == {
        "concentrator": "conc-1", "nodes": len(rows), "reported_at": T0 + 60.0
    }  # fmt: skip
    assert _nodes(repo)[0]["eui64"] == rows[0]["eui64"]
    entry = access.audit.entries(limit=1000)[-1]
    assert (entry.action, entry.target, entry.outcome) == ("topology.report", "conc-1", "ok")

    login(client, access, "vic", Role.VIEWER)
    g = client.get("/ui/mesh/graph").json()
    assert g["dodag"] is True
    edges = {(e["source"], e["target"]) for e in g["edges"]}
    children = [row for row in rows if row["parent"]]
    assert children  # the sim formed a tree
    for row in children:
        assert (f"conc-1/{row['parent']}", f"conc-1/{row['eui64']}") in edges
    # conc-2 reported nothing: its registered meter hangs off the star
    assert ("concentrator:conc-2", "m2") in edges
    assert not any(e["target"] == "m1" for e in g["edges"])  # m1's concentrator reported

    page = client.get("/ui/mesh").text
    assert "DODAG of conc-1" in page
    for row in children:
        assert f'data-parent-edge="{row["parent"]} -> {row["eui64"]}"' in page


def test_a_new_report_replaces_the_last_and_the_table_is_bounded(
    client: TestClient,
    repo: SqliteRepository,
    access: AccessControl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import amistack.headend.storage as storage

    headers = auth(access, "eng", Role.ENGINEER)
    assert client.post(URL, json=_two(), headers=headers).status_code == 200
    one = {"nodes": _two()["nodes"][:1]}
    assert client.post(URL, json=one, headers=headers).status_code == 200
    assert len(_nodes(repo)) == 1
    monkeypatch.setattr(storage, "MAX_TOPOLOGIES", 1)
    assert client.post(URL, json=one, headers=headers).status_code == 200  # known: replaced
    r = client.post("/concentrators/conc-9/topology", json=one, headers=headers)
    assert r.status_code == 413 and set(repo.topologies()) == {"conc-1"}


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
        max_leaves=30,
    )
)
def test_the_report_decoder_takes_any_json_and_answers_valid_or_a_validation_error(
    value: object,
) -> None:
    body = value if not isinstance(value, dict) else {"nodes": [value]}
    with contextlib.suppress(ValidationError):
        TopologyIn.model_validate(body)
