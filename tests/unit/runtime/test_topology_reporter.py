"""The concentrator's topology reporter: `dodag_report` turns the DODAG root's RPL state into
the head-end's report (checked against the simulated mesh's own view, `MeshSim.dodag()`), and
`TopologyReporter.post` delivers it over real HTTP to a head-end served by uvicorn on loopback,
where it is stored; a token without the right is refused."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from tests.unit.headend.conftest import auth, make_access

from amistack.access import Role
from amistack.headend.api import TopologyIn, create_app
from amistack.headend.storage import SqliteRepository
from amistack.runtime.concentrator import TopologyReporter, dodag_report
from amistack.sim.mesh import MeshConfig, MeshSim, build_mesh


@pytest.fixture(scope="module")
def sim() -> MeshSim:
    s = build_mesh(MeshConfig(nodes=12, seed=3))
    assert s.run(300.0)
    return s


def test_the_roots_report_matches_the_simulated_dodag(sim: MeshSim) -> None:
    root = sim.concentrators[0]
    nodes = dodag_report(root.rpl, sim.net.now)
    TopologyIn.model_validate({"nodes": nodes})  # what the head-end accepts
    assert nodes[0]["role"] == "concentrator" and nodes[0]["eui64"] == str(root.eui)
    truth = {row["eui64"]: row for row in sim.dodag()}
    reported = {n["eui64"]: n for n in nodes[1:]}
    assert reported  # the meters' DAOs reached the root
    for eui, node in reported.items():
        assert node["parent"] == truth[eui]["parent"]
        assert node["hops"] == truth[eui]["hops"]
    assert any("etx" in n for n in reported.values())  # the root's own children


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, SqliteRepository, dict[str, str]]]:
    repo = SqliteRepository(tmp_path)
    access = make_access(tmp_path, time.time)
    tokens = {
        role.name: auth(access, role.name.lower(), role)["Authorization"].split(" ")[1]
        for role in (Role.ENGINEER, Role.VIEWER)
    }
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        create_app(repo, access), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", repo, tokens
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        repo.close()


def test_the_report_travels_over_http_and_is_stored(
    sim: MeshSim, served: tuple[str, SqliteRepository, dict[str, str]]
) -> None:
    url, repo, tokens = served
    nodes = dodag_report(sim.concentrators[0].rpl, sim.net.now)
    assert TopologyReporter(url, tokens["VIEWER"]).post("conc-1", nodes) == 403
    assert repo.topologies() == {}
    assert TopologyReporter(url, "forged").post("conc-1", nodes) == 401
    assert TopologyReporter(url + "/", tokens["ENGINEER"]).post("conc-1", nodes) == 200
    assert '"parent"' in repo.topology("conc-1")[1]  # type: ignore[index]
