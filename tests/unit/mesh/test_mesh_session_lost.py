"""A joined mesh meter whose PANA session ends authenticates again through its parent.

The PAA ends the session (administrative PTR, as an operator or a timed-out ping through a
parent that died would); the meter stays in the DODAG, runs PANA afresh through RPL's
preferred parent after the back-off pause, and the head-end reads it under the new keys.
A former PANA parent that is now the meter's child is a newcomer to it, not its own session.
"""

from __future__ import annotations

from amistack.mesh.node import radio_addr
from amistack.pana.events import Authenticated, SessionTerminated
from amistack.sim.mesh import KEYSERVER_HOST, MeshConfig, MeshSim, build_mesh, meter_id


def _formed(nodes: int = 20) -> MeshSim:
    sim = build_mesh(MeshConfig(nodes=nodes, seed=3, c1222=True))
    assert sim.run(300.0)
    sim.net.run_until(sim.net.now + 10.0)
    return sim


def test_a_meter_whose_session_the_paa_ended_authenticates_again_and_is_read() -> None:
    sim = _formed()
    i = max(sim.expected, key=lambda k: sim.radio_distance[k])  # a meter behind relays
    meter = sim.meters[i - 1]
    addr = radio_addr(meter.eui)
    (sid,) = sim.keyserver.agent.sessions_for_peer(meter_id(i).encode())
    t0 = sim.net.now
    sim.net.call_at(t0, KEYSERVER_HOST, lambda now: sim.keyserver.agent.terminate(sid, now, "x"))
    sim.net.run_until(t0 + 120.0)
    ended = [e for e in sim.net.events_of(addr, SessionTerminated) if e.session_id == sid]
    assert ended and ended[0].by_peer
    assert meter.counters["pana-session-lost"] == 1
    assert meter.counters["pana-reauthenticate"] >= 1
    again = sim.net.events_of(addr, Authenticated)
    assert len(again) == 2 and again[1].context.session_id != sid  # a new session
    assert meter.pac is not None and meter.parent is not None
    assert sim.meters[i - 1].rpl.joined  # it never left the DODAG
    report = sim.read_all(120.0)
    assert sim.reads[i][2] is not None and report["delivery_ratio"] == 1.0


def test_a_former_parents_new_session_is_relayed_not_taken_as_our_own() -> None:
    sim = _formed(12)
    child = next(m for m in sim.meters if m.parent in {x.eui for x in sim.meters})
    parent = next(m for m in sim.meters if m.eui == child.parent)
    # the parent once ran PANA through this child (a parent change the other way round)
    parent._previous_parent = child.eui
    before = parent.counters["relayed-from-pac"]
    assert child.pac is not None
    child.pac = None
    child._reauth_at = sim.net.now  # the child's session is gone: it runs PANA afresh
    sim.net.service(radio_addr(child.eui))
    sim.net.run_until(sim.net.now + 60.0)
    assert parent.counters["relayed-from-pac"] > before
    assert len(sim.net.events_of(radio_addr(child.eui), Authenticated)) == 2
