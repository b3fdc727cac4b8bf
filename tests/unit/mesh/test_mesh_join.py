"""Joining through relays: meters authenticate with real PANA + EAP-PSK against the real key
server through their DODAG parents (RFC 6345 relays), on the virtual clock; and what an attacker
without the group key can and cannot make the mesh do."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from amistack.addr import Addr, Eui64
from amistack.crypto import seeded_random
from amistack.mesh.ipv6 import UdpDatagram
from amistack.mesh.link import MeshLink
from amistack.mesh.node import MeshNode, radio_addr
from amistack.mesh.rpl.constants import Mop
from amistack.mesh.security import LinkSecurity, MemoryCounterStore
from amistack.pana.constants import PANA_PORT, MessageType
from amistack.pana.events import AuthenticationFailed
from amistack.pana.message import PanaMessage
from amistack.pana.paa import PanaAuthAgent
from amistack.pana.relay import PanaRelay
from amistack.sim.mesh import (
    KEYSERVER_HOST,
    KEYSERVER_IP,
    PAN,
    MeshConfig,
    MeshSim,
    build_mesh,
    meter_id,
)
from amistack.sim.radio import UnitDisk

ATTACKER = Eui64(bytes.fromhex("02aaaaaaaaaaaa01"))


def paa_counters(sim: MeshSim) -> dict[str, int]:
    agent = sim.keyserver.agent
    assert isinstance(agent, PanaAuthAgent)
    return dict(agent.counters)


def test_every_meter_authenticates_through_relays_and_joins_the_dodag() -> None:
    sim = build_mesh(MeshConfig(nodes=30, seed=1))
    assert sim.run(300.0)
    assert sim.expected == set(range(1, 31))
    assert set(sim.authenticated_at) == set(sim.ready_at) == sim.expected
    dodag = {d["eui64"]: d for d in sim.dodag()}
    root = str(sim.concentrator.eui)
    for d in dodag.values():
        assert d["hops"] is not None and d["rank"] is not None
        if d["eui64"] != root:  # ranks fall strictly toward the root: no loop
            assert dodag[d["parent"]]["rank"] < d["rank"]
    # the link keys are the key server's group keys, delivered wrapped in each PANA success
    root_keys = sim.concentrator.link.security.key_indexes()
    assert root_keys and sim.keyserver.counters["group_keys_delivered"] == 30
    for m in sim.meters:
        assert m.counters["group-keys-accepted"] == 1
        assert m.link.security.key_indexes() == root_keys
    far = [i for i, h in sim.radio_distance.items() if h >= 2]

    assert far, "the topology must have meters out of the concentrator's range"
    # those meters' PANA went through a meter acting as relay, and the PAA saw it relayed
    relays = sum(m.relay.counters["to_paa"] for m in sim.meters)
    assert relays > 0 and paa_counters(sim)["relayed_in"] > 0
    # nothing any meter sent before PANA success was refused as a secured frame, and every
    # DODAG frame ran under CCM*: unknown-key is only what newcomers heard before their key
    report = sim.report(include_dodag=False)
    assert report["authenticated_s"]["p100"] is not None
    assert report["frames_per_node"] > 0 and report["radio"]["model"] == "unit-disk"


def test_a_wrong_psk_meter_is_refused_through_relays_and_the_rest_join() -> None:
    probe = build_mesh(MeshConfig(nodes=30, seed=1))
    deep = max(probe.radio_distance, key=lambda i: probe.radio_distance[i])
    assert probe.radio_distance[deep] >= 3  # PaC -> meter relay -> meter(s) -> concentrator
    sim = build_mesh(MeshConfig(nodes=30, seed=1, wrong_psk=frozenset({deep})))
    assert sim.run(300.0)
    sim.net.run_until(sim.net.now + 60.0)
    bad = sim.meters[deep - 1]
    assert deep not in sim.authenticated_at and not bad.authenticated
    assert bad.counters["pana-refused"] + bad.counters["pana-failed"] >= 1
    assert bad.link.security.key_indexes() == []  # never got the group key
    assert set(sim.ready_at) == sim.expected
    refused = sim.net.events_of(KEYSERVER_HOST, AuthenticationFailed)
    assert {e.peer_id for e in refused} == {meter_id(deep).encode()}  # by the key server
    # its parent relayed for it: the refusal came back through the mesh
    parent = next(m for m in sim.meters if m.eui == bad.parent)
    assert parent.relay.counters["to_pac"] > 0


def _attacker_frames(
    sim: MeshSim, victim: MeshNode, packets: list[tuple[bytes, ipaddress.IPv6Address, int]]
) -> list[bytes]:
    """Unsecured frames from a node without the group key, to `victim`."""
    link = MeshLink(LinkSecurity(ATTACKER, MemoryCounterStore()), PAN, seeded_random(9))
    src = ATTACKER.link_local()
    frames = []
    for payload, dst, port in packets:
        link.send(UdpDatagram(PANA_PORT, port, payload).packet(src, dst), victim.eui, False)
        frames += [f for f, _ in link.frames_to_send(0.0)]
        link._in_flight = None  # the attacker does not wait for ACKs
    return frames


def test_an_unauthenticated_node_gets_nothing_but_pana_forwarded() -> None:
    sim = build_mesh(MeshConfig(nodes=30, seed=1))
    assert sim.run(300.0)
    sim.net.run_until(sim.net.now + 30.0)  # the meters' own PANA (moves to RPL parents) is done
    victim = sim.meters[0]
    x, y = sim.net.medium.radio.position(radio_addr(victim.eui))
    attacker: Addr = radio_addr(ATTACKER)
    radio = sim.net.medium.radio
    radio.place(attacker, x + 1.0, y)
    assert isinstance(radio.model, UnitDisk)
    radio.model.set_loss(attacker, radio_addr(victim.eui), 0.0)  # every attack frame arrives
    wan_before = sum(n.counters["wan-out"] for n in [sim.concentrator])
    relayed_before = victim.relay.counters["to_paa"]
    pana = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    keyserver = ipaddress.IPv6Address(KEYSERVER_IP)
    victim_ll = victim.eui.link_local()
    frames = _attacker_frames(
        sim,
        victim,
        [
            (pana, keyserver, PANA_PORT),  # PANA, but routed past the parent to the WAN
            (b"GET /meter HTTP/1.0", keyserver, 80),  # anything else to the WAN
            (b"\x00" * 20, victim_ll, 5683),  # to the relay itself, not PANA
            (b"not pana at all", victim_ll, PANA_PORT),  # PANA port, not PANA
        ],
    )
    for frame in frames:
        sim.net.inject(attacker, radio_addr(victim.eui), frame)
    sim.net.run_until(sim.net.now + 5.0)
    assert victim.counters["unsecured-dropped"] >= 3
    assert victim.relay.counters["decode_error"] >= 1
    assert victim.relay.counters["to_paa"] == relayed_before  # nothing relayed
    assert sim.concentrator.counters["wan-out"] == wan_before  # nothing reached the WAN
    # and a real PCI to the relay's link-local address is relayed (the only thing that is)
    for frame in _attacker_frames(sim, victim, [(pana, victim_ll, PANA_PORT)]):
        sim.net.inject(attacker, radio_addr(victim.eui), frame)
    sim.net.run_until(sim.net.now + 5.0)
    assert victim.relay.counters["to_paa"] == relayed_before + 1


def test_a_neighbour_flooding_its_relay_with_pana_is_cut_off_at_the_relay() -> None:
    sim = build_mesh(MeshConfig(nodes=30, seed=1))
    assert sim.run(300.0)
    victim = sim.meters[0]
    x, y = sim.net.medium.radio.position(radio_addr(victim.eui))
    attacker: Addr = radio_addr(ATTACKER)
    radio = sim.net.medium.radio
    radio.place(attacker, x + 1.0, y)
    assert isinstance(radio.model, UnitDisk)
    radio.model.set_loss(attacker, radio_addr(victim.eui), 0.0)
    relayed_before = victim.relay.counters["to_paa"]
    pana = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    victim_ll = victim.eui.link_local()
    start = sim.net.now
    for frame in _attacker_frames(sim, victim, [(pana, victim_ll, PANA_PORT)] * 100):
        sim.net.inject(attacker, radio_addr(victim.eui), frame, start)
    sim.net.run_until(start + 5.0)
    relayed = victim.relay.counters["to_paa"] - relayed_before
    assert 1 <= relayed <= victim.config.relay_burst + 1  # the bucket refills 2/s meanwhile
    assert victim.counters["relay-rate-limited"] >= 100 - relayed
    assert all(m.authenticated for m in sim.meters)  # the rest of the mesh is untouched


class SilentRelay(PanaRelay):
    def receive_from_paa(self, data: bytes, now: float) -> None:
        self.counters["kept"] += 1


@pytest.mark.slow
def test_a_relay_for_thousands_of_fake_pacs_is_limited_at_the_paa() -> None:
    sim = build_mesh(MeshConfig(nodes=30, seed=1))
    assert sim.run(300.0)
    rogue = next(m for m in sim.meters if m.relay_ready)
    rogue.relay = SilentRelay(rogue.paa)  # compromised: it keeps the answers to itself
    pci = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    start = sim.net.now
    fakes, per_burst, every = 600, 10, 0.5  # 20 fake PaCs a second, what the link carries

    agent = sim.keyserver.agent
    assert isinstance(agent, PanaAuthAgent)
    half_open = [0]

    def burst(k: int) -> None:
        def relay(now: float) -> None:
            half_open[0] = max(half_open[0], agent.half_open_count)
            for j in range(k * per_burst, (k + 1) * per_burst):
                fake = f"fe80::dead:{j >> 16:x}:{j & 0xFFFF:x}"
                rogue.relay.receive_from_pac(pci, (fake, PANA_PORT), now)

        sim.net.call_at(start + every * k, radio_addr(rogue.eui), relay)

    for k in range(fakes // per_burst):
        burst(k)
    sim.net.run_until(start + every * (fakes // per_burst) + 10.0)
    counters = paa_counters(sim)
    limited = counters.get("pci_relay_rate_limited", 0) + counters.get("pci_relay_limit", 0)
    assert limited > 0
    assert 0 < half_open[0] <= 256  # PaaConfig.per_relay_limit: half-open through one relay
    assert rogue.relay.counters["to_paa"] == fakes
    # the honest meters' sessions stand
    assert all(m.authenticated for m in sim.meters)


def test_a_revoked_meter_is_shut_out_of_the_next_group_key() -> None:
    sim = build_mesh(MeshConfig(nodes=30, seed=1))
    assert sim.run(300.0)
    revoked = sim.meters[-1]
    old = set(sim.concentrator.link.security.key_indexes())

    def revoke(now: float) -> None:
        sim.keyserver.revoke(meter_id(30), now)

    sim.net.call_at(sim.net.now, KEYSERVER_HOST, revoke)
    sim.net.run_until(sim.net.now + 400.0)  # rotation delay, the push, the activation
    new = set(sim.concentrator.link.security.key_indexes())
    assert new and new.isdisjoint(old)  # the old key was cut at the activation
    send = sim.concentrator.link.config.key_index
    pushed = [m for m in sim.meters if m is not revoked]
    assert all(m.link.config.key_index == send for m in pushed)  # re-authenticated via relays
    assert send not in revoked.link.security.key_indexes()
    before = sum(m.link.counters["unknown-key"] for m in pushed)
    sim.net.call_at(sim.net.now, radio_addr(revoked.eui), revoked.rpl.trickle.reset)
    sim.net.run_until(sim.net.now + 30.0)  # its DIOs, under a key nobody holds any more
    assert sum(m.link.counters["unknown-key"] for m in pushed) > before


def test_joining_works_in_storing_mode_too() -> None:
    config = MeshConfig(nodes=20, seed=4)
    config = replace(config, rpl=replace(config.rpl, mop=Mop.STORING_NO_MULTICAST))
    sim = build_mesh(config)
    assert sim.run(300.0)
    assert set(sim.authenticated_at) == set(sim.ready_at) == sim.expected
    assert any(h >= 2 for h in sim.radio_distance.values())


def test_several_concentrators_each_root_a_dodag_of_their_own_prefix() -> None:
    """Past `per_concentrator` meters the mesh gets a k x k grid of concentrators: each roots
    its own DODAG with its own /64, the key server answers each relay through the concentrator
    of its prefix, and every meter joins through relays."""
    sim = build_mesh(MeshConfig(nodes=60, seed=1, per_concentrator=15))
    assert len(sim.concentrators) == 4 and sim.concentrator is sim.concentrators[0]
    assert sim.run(300.0)
    assert set(sim.ready_at) == sim.expected == set(range(1, 61))
    roots = {c.rpl.dodag_id for c in sim.concentrators}
    assert len({r[:8] for r in roots if r}) == 4  # a prefix each
    joined = {m.rpl.dodag_id for m in sim.meters}
    assert joined == roots  # every DODAG has meters
    for m in sim.meters:  # the global address is in the prefix of the DODAG joined
        assert m.global_address is not None and m.rpl.dodag_id is not None
        assert m.global_address[:8] == m.rpl.dodag_id[:8]
    report = sim.report()
    assert report["radio"]["concentrators"] == 4
    dodag = report["dodag"]
    assert [d["role"] for d in dodag[:4]] == ["concentrator"] * 4
    assert all(d["hops"] is not None and d["hops"] >= 1 for d in dodag[4:])
    # the PAA's answers went down through every concentrator, not only the first
    assert all(c.counters["wan-in"] > 0 for c in sim.concentrators)


def test_after_a_parent_change_pana_and_the_key_push_go_through_the_new_parent() -> None:
    """A meter's PANA parent dies: RPL re-parents, PANA follows (an AUTH-protected ping through
    the new parent moves the PAA's route), and the next group-key push reaches the meter."""
    sim = build_mesh(MeshConfig(nodes=30, seed=1))
    assert sim.run(300.0)
    sim.net.run_until(sim.net.now + 10.0)  # PANA has followed each meter's first RPL parent
    by_eui = {m.eui: m for m in sim.meters}
    meter = next(
        m for m in sim.meters
        if m.parent in by_eui and len(m.rpl.neighbors) >= 3 and not any(
            o.parent == m.eui for o in sim.meters)  # a leaf under a meter, with alternatives
    )  # fmt: skip
    dead = meter.parent
    assert dead is not None and meter.counters["pana-moved"] <= 1
    moved_before = paa_counters(sim).get("route_changed", 0)
    sim.net.remove_node(radio_addr(dead))  # the parent is gone
    assert meter.pac is not None
    sim.net.call_at(sim.net.now, radio_addr(meter.eui), meter.pac.ping)  # finds it gone
    sim.net.run_until(sim.net.now + 60.0)
    assert meter.parent != dead and meter.rpl.preferred is not None
    assert meter.parent == Eui64.from_interface_id(meter.rpl.preferred[8:])
    assert paa_counters(sim)["route_changed"] > moved_before  # the PAA follows the ping
    old = set(sim.concentrator.link.security.key_indexes())

    def revoke(now: float) -> None:  # a rotation: the key server pushes to every meter
        sim.keyserver.revoke(meter_id(30 if by_eui.get(dead) is not sim.meters[-1] else 29), now)

    sim.net.call_at(sim.net.now, KEYSERVER_HOST, revoke)
    sim.net.run_until(sim.net.now + 400.0)
    send = sim.concentrator.link.config.key_index
    assert send not in old
    assert meter.link.config.key_index == send  # the push came through the new parent
