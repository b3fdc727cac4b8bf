"""C12.22 over the mesh: the real head-end reads the real meter endpoints through the DODAG,
with the keys of each meter's own UKMF session (taken by the head-end from the key server), on
the virtual clock; and a meter that has not joined gets no C12.22 anywhere."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from amistack.addr import Addr
from amistack.mesh.ipv6 import UdpDatagram
from amistack.mesh.node import radio_addr
from amistack.sim.mesh import (
    C1222_PORT,
    HEADEND_HOST,
    HEADEND_IP,
    KEYSERVER_HOST,
    KEYSERVER_IP,
    WAN_ROUTER,
    MeshConfig,
    MeshSim,
    WanRouter,
    build_mesh,
    global_of,
    node_eui,
    prefix_of,
)


def _formed(nodes: int = 30, **kw: object) -> MeshSim:
    sim = build_mesh(MeshConfig(nodes=nodes, seed=1, c1222=True, **kw))  # type: ignore[arg-type]
    assert sim.run(300.0)
    sim.net.run_until(sim.net.now + 10.0)  # PANA has followed each meter's first RPL parent
    return sim


def _assert_right_value(sim: MeshSim, i: int) -> None:
    started, answered, registers = sim.reads[i]
    assert answered is not None and registers is not None
    tables = sim.c1222[i - 1].meter.tables
    low, high = tables.registers(started), tables.registers(answered)
    assert low.active_forward_wh <= registers.active_forward_wh <= high.active_forward_wh
    assert registers.demand_resets == low.demand_resets


def test_every_joined_meter_is_read_once_over_the_mesh_with_its_own_value() -> None:
    sim = _formed()
    report = sim.read_all(120.0)
    assert report["meters"] == len(sim.expected) == 30
    assert report["delivered"] == 30 and report["delivery_ratio"] == 1.0
    assert report["headend"]["requests"] == 30  # one read request each (retries inside it)
    for i in sim.expected:
        _assert_right_value(sim, i)
    values = {sim.reads[i][2].active_forward_wh for i in sim.expected}  # type: ignore[union-attr]
    assert len(values) > 20  # each meter's own model, not one shared answer
    # the answers came from the meters' global addresses (unchanged above IP), via the WAN router
    assert sim.net.engine(WAN_ROUTER).counters["no-route"] == 0  # type: ignore[attr-defined]
    for i in sim.expected:
        assert sim.meters[i - 1].counters["app-in"] >= 1
        assert sim.meters[i - 1].counters["app-out"] >= 1


def test_the_same_seed_reads_the_same() -> None:
    a, b = _formed(12), _formed(12)
    assert a.read_all(60.0) == b.read_all(60.0)
    assert a.reads == b.reads


def test_a_meter_whose_parent_died_is_read_after_re_parenting() -> None:
    sim = _formed()
    meters = {m.eui for m in sim.meters}
    parents = {m.parent for m in sim.meters}
    leaves = [m for m in sim.meters if m.parent in meters and m.eui not in parents]
    meter = max(leaves, key=lambda m: len(m.rpl.neighbors))  # the most alternatives
    assert len(meter.rpl.neighbors) >= 3
    i = sim.meters.index(meter) + 1
    dead = meter.parent
    assert dead is not None
    sim.net.remove_node(radio_addr(dead))  # the parent is gone
    assert meter.pac is not None
    sim.net.call_at(sim.net.now, radio_addr(meter.eui), meter.pac.ping)  # finds it gone
    sim.net.run_until(sim.net.now + 60.0)
    assert meter.parent != dead and meter.rpl.preferred is not None
    report = sim.read_all(120.0)
    assert report["meters"] == len(sim.expected) - 1  # everyone still there
    assert i in sim.reads and sim.reads[i][2] is not None
    _assert_right_value(sim, i)


def test_an_unjoined_meters_c1222_is_never_forwarded() -> None:
    probe = _formed()
    deep = max(probe.expected, key=lambda i: probe.radio_distance[i])
    sim = _formed(wrong_psk=frozenset({deep}))
    outsider = sim.meters[deep - 1]
    endpoint = sim.c1222[deep - 1].meter
    assert not outsider.authenticated and outsider.global_address is None
    assert not endpoint.has_key(sim.net.now)  # no UKMF session, no C12.22 key
    # the head-end cannot even address it: a read that is never sent
    sim.read(deep, sim.net.now)
    assert sim.reads[deep] == (sim.net.now, None, None)
    # it sends C12.22 anyway, unsecured, to every neighbour, from the address it would have
    to_headend: list[tuple[Addr, Addr]] = []
    sim.net.capture_hooks.append(
        lambda now, src, dst, data: to_headend.append((src, dst)) if dst == HEADEND_HOST else None
    )
    src = ipaddress.IPv6Address(global_of(outsider.eui, prefix_of(0)))
    packet = UdpDatagram(C1222_PORT, C1222_PORT, b"\x60\x03\xa1\x01\x00").packet(
        src, ipaddress.IPv6Address(HEADEND_IP)
    )
    radio = sim.net.medium.radio
    neighbours = [addr for addr, _ in radio.neighbours(radio_addr(outsider.eui))]
    joined = [m for m in sim.meters if m.authenticated and radio_addr(m.eui) in neighbours]
    assert joined
    dropped = sum(m.counters["unsecured-dropped"] for m in joined)
    for m in joined:
        outsider.link.send(packet, m.eui, secure=False)
    sim.net.service(radio_addr(outsider.eui))
    sim.net.run_until(sim.net.now + 10.0)
    assert sum(m.counters["unsecured-dropped"] for m in joined) > dropped
    assert to_headend == []  # nothing reached the head-end
    assert sim.headend is not None and sim.headend.client.counters["datagrams-received"] == 0


def _router() -> WanRouter:
    return WanRouter({KEYSERVER_IP: KEYSERVER_HOST, HEADEND_IP: HEADEND_HOST},
                     {prefix_of(0)[:8]: ("concentrator", 0)})  # fmt: skip


def test_the_wan_router_routes_by_address_and_prefix_and_drops_the_rest() -> None:
    router = _router()
    headend, outside = ipaddress.IPv6Address(HEADEND_IP), ipaddress.IPv6Address("2001:db8:9::1")
    meter = ipaddress.IPv6Address(global_of(node_eui(1), prefix_of(0)))
    for dst in (headend, meter, outside):
        router.receive_datagram(UdpDatagram(1, C1222_PORT, b"x").packet(meter, dst).encode(),
                                ("concentrator", 0), 0.0)  # fmt: skip
    assert [to for _, to in router.datagrams_to_send(0.0)] == [HEADEND_HOST, ("concentrator", 0)]
    assert router.counters == {"routed": 2, "no-route": 1}
    assert router.datagrams_to_send(0.0) == []


@given(st.binary(max_size=120))
def test_the_wan_router_takes_any_bytes(data: bytes) -> None:
    router = _router()
    router.receive_datagram(data, ("concentrator", 0), 0.0)
    assert sum(router.counters.values()) == 1  # routed, no route, or a decode error: counted
    assert len(router.datagrams_to_send(0.0)) == router.counters["routed"]
