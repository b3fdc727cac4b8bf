"""The concentrator's topology reporter: `dodag_report` turns the DODAG root's RPL state into
the head-end's report (checked against the simulated mesh's own view, `MeshSim.dodag()`), and
`TopologyReporter.post` delivers it over real HTTP to a head-end served by uvicorn on loopback,
where it is stored; a token without the right is refused. The meter ids come from the joins
the border router watched (`mesh.gateway.JoinWatch` on the PANA-Relay traffic to and from the
key server: here the simulated mesh's)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from tests.unit.headend.conftest import auth, make_access

from amistack.access import Role
from amistack.headend.api import TopologyIn, create_app
from amistack.headend.storage import SqliteRepository
from amistack.mesh.gateway import JoinWatch, WanDatagram
from amistack.pana.constants import PANA_PORT
from amistack.runtime.concentrator import TopologyReporter, dodag_report
from amistack.sim.mesh import KEYSERVER_IP, MeshConfig, MeshSim, build_mesh, meter_id

PAA = (KEYSERVER_IP, PANA_PORT)


@pytest.fixture(scope="module")
def watched() -> tuple[MeshSim, JoinWatch]:
    """A simulated mesh whose key server's PANA traffic a JoinWatch sees, as the concentrator
    process's gateway sees it on the WAN."""
    rpl = replace(MeshConfig().rpl, describe_targets=True)  # as the process mesh runs RPL
    s = build_mesh(MeshConfig(nodes=12, seed=3, rpl=rpl))
    watch = JoinWatch(PAA)
    ks = s.keyserver
    receive, send = ks.receive_datagram, ks.datagrams_to_send

    def received(data: bytes, addr: Any, now: float) -> None:
        watch.outbound(WanDatagram((str(addr[0]), addr[1]), data, PAA))
        receive(data, addr, now)

    def sent(now: float) -> list[tuple[bytes, Any]]:
        out = send(now)
        for data, _ in out:
            watch.inbound(data, PAA)
        return out

    ks.receive_datagram, ks.datagrams_to_send = received, sent  # type: ignore[method-assign]
    assert s.run(300.0)
    return s, watch


@pytest.fixture(scope="module")
def sim(watched: tuple[MeshSim, JoinWatch]) -> MeshSim:
    return watched[0]


def test_the_report_names_each_joined_meter_as_the_key_server_authenticated_it(
    watched: tuple[MeshSim, JoinWatch],
) -> None:
    s, watch = watched
    nodes = dodag_report(s.concentrators[0].rpl, s.net.now, watch.joined)
    TopologyIn.model_validate({"nodes": nodes})
    truth = {row["eui64"]: row for row in s.dodag()}
    named = [n for n in nodes[1:] if "meter_id" in n]
    assert len(named) == len(nodes) - 1 >= 6  # every reported meter joined through the watch
    for n in named:
        assert n["meter_id"] == meter_id(truth[n["eui64"]]["node"]) and n["authenticated"]
        assert n["rank"] == truth[n["eui64"]]["rank"]  # from its DAO's Target Descriptor
        assert 1.0 <= n["etx"] <= 512  # its own ETX to its parent
    assert "meter_id" not in dodag_report(s.concentrators[0].rpl, s.net.now)[1]


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
