"""A work session on the virtual clock: the handheld authenticates itself, becomes DODAG root and
PANA relay, the isolated meters join end to end with the real key server engine, and the end of
the session takes everything down."""

from __future__ import annotations

from tests.unit.handheld.harness import HANDHELD_ID, build_field

from amistack.handheld import (
    HandheldAuthenticated,
    MeterRouted,
    WorkEnded,
    WorkState,
)
from amistack.mesh.node import radio_addr
from amistack.sim.handheld_area import AreaConfig, area_meter_id, handheld_eui

ALL = set(range(1, 7))


def test_a_full_work_session_brings_six_isolated_meters_in_and_ends_clean() -> None:
    field = build_field()
    net = field.area.net
    net.run_until(30.0)
    assert field.area.authenticated() == []  # nobody hears them without the handheld
    session = field.start_work()
    assert field.run_until_joined(ALL), field.area.report()
    handheld = radio_addr(handheld_eui())
    got = net.events[handheld]
    assert any(isinstance(e, HandheldAuthenticated) for e in got)
    assert session.state is WorkState.SERVING
    view = session.view(net.now)
    assert len(view["meters"]) == 6 and len(view["routes"]) == 6  # claim 2: the route table
    assert max(len(path) for path in view["routes"].values()) >= 2  # some meters are hops out
    assert sum(isinstance(e, MeterRouted) for e in got) == 6
    for i in ALL:  # every meter authenticated by the key server itself, under its own name
        assert field.store.audit_log(device_id=area_meter_id(i).encode())
    assert field.keyserver.agent.sessions_for_peer(HANDHELD_ID.encode())

    session.end("logout", net.now)
    net.service(handheld)
    net.run_until(net.now + 5.0)
    field.area.detach()
    assert isinstance(net.events[handheld][-1], WorkEnded)
    assert session.root is None and session.route_table(net.now) == {}
    assert not list(field.keyserver.agent.sessions_for_peer(HANDHELD_ID.encode()))  # PTR arrived


def test_the_session_times_out_without_the_technicians_actions() -> None:
    field = build_field(AreaConfig(meters=1))
    session = field.start_work(idle_timeout=120.0)
    net = field.area.net
    net.run_until(119.0)
    assert session.state is WorkState.SERVING
    net.run_until(121.0)
    assert session.state is WorkState.ENDED
    ended = [e for e in net.events[radio_addr(handheld_eui())] if isinstance(e, WorkEnded)]
    assert [e.reason for e in ended] == ["timeout"]
