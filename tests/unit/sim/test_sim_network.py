"""The virtual network driving real engines: the EAP peer and authenticator over a toy lower
layer (the authenticator retransmits its outstanding request, RFC 3748 §4.3), with latency,
seeded loss, filters, capture and per-node events."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from amistack.addr import Addr
from amistack.crypto import seeded_random
from amistack.eap import (
    EapAuthenticator,
    EapOutcome,
    EapPacket,
    EapPeer,
    EapPeerState,
    EapPskPeer,
    EapPskServer,
    EapStep,
    EapType,
)
from amistack.runtime.pcap import PcapWriter, read_udp_pcap
from amistack.sim import LinkConfig, VirtualNetwork

PSK = bytes(range(16))
SERVER: Addr = ("10.0.0.1", 716)


@dataclass(frozen=True)
class GaveUp:
    retries: int


class ServerNode:
    """EAP authenticator for one peer; retransmits every `rto` seconds, up to `max_retx`."""

    def __init__(self, peer: Addr, seed: int, rto: float = 1.0, max_retx: int = 4) -> None:
        rng = seeded_random(seed)
        self.auth = EapAuthenticator([lambda: EapPskServer(b"ks", {b"meter": PSK}.get, rng)], rng)
        self.peer, self.rto, self.max_retx = peer, rto, max_retx
        self._out: list[tuple[bytes, Addr]] = []
        self._events: list[object] = []
        self._timer: float | None = None
        self._retx = 0

    def start(self, now: float) -> None:
        self._send(self.auth.start(), now)

    def _send(self, data: bytes, now: float) -> None:
        self._out.append((data, self.peer))
        self._timer, self._retx = now + self.rto, 0

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        step = self.auth.receive(data)
        if step.send is None:
            return
        if step.outcome is EapOutcome.CONTINUE:
            self._send(step.send, now)
        else:
            self._out.append((step.send, self.peer))
            self._timer = None
            self._events.append(step)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return self._timer

    def handle_timer(self, now: float) -> None:
        if self._timer is None or now < self._timer:
            return
        if self._retx >= self.max_retx:
            self._timer = None
            self._events.append(GaveUp(self._retx))
            return
        self._retx += 1
        self._out.append((self.auth.last_request or b"", self.peer))
        self._timer = now + self.rto

    def next_event(self) -> object | None:
        return self._events.pop(0) if self._events else None


class PeerNode:
    """EAP peer: answers whatever arrives; no timers (the authenticator drives, §4.3)."""

    def __init__(self, seed: int) -> None:
        self.eap = EapPeer(
            b"meter", {EapType.PSK: lambda: EapPskPeer(b"meter", PSK, seeded_random(seed))}
        )
        self._out: list[tuple[bytes, Addr]] = []
        self._reported = False

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        resp = self.eap.receive(data)
        if resp is not None:
            self._out.append((resp, addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def next_event(self) -> object | None:
        if self.eap.state is EapPeerState.SUCCESS and not self._reported:
            self._reported = True
            return self.eap.state
        return None


def build(
    net: VirtualNetwork, n: int = 1, base_port: int = 5000
) -> tuple[list[Addr], list[ServerNode]]:
    peers: list[Addr] = []
    servers: list[ServerNode] = []
    for i in range(n):
        addr = ("10.1.0.2", base_port + i)
        server_addr = (SERVER[0], SERVER[1] + i)
        net.add_node(addr, PeerNode(seed=100 + i))
        server = ServerNode(addr, seed=200 + i)
        net.add_node(server_addr, server)
        net.call_at(0.0, server_addr, server.start)
        peers.append(addr)
        servers.append(server)
    return peers, servers


def test_authentication_over_the_network_with_latency() -> None:
    net = VirtualNetwork(default_link=LinkConfig(latency=0.010), capture=100)
    (peer,), _ = build(net)
    end = net.run_until_idle()
    # 3 round trips (identity, PSK 1/2, PSK 3/4) then Success: 7 one-way trips of 10 ms
    assert end == pytest.approx(0.070)
    steps = net.events_of(SERVER, EapStep)
    assert [s.outcome for s in steps] == [EapOutcome.SUCCESS]
    assert net.events[peer] == [EapPeerState.SUCCESS]
    assert [round(t, 3) for t, *_ in net.capture] == [round(0.01 * i, 3) for i in range(7)]
    assert net.capture[0][1:3] == (SERVER, peer)
    assert EapPacket.decode(net.capture[-1][3]).code.name == "SUCCESS"
    assert net.counters["sent"] == net.counters["delivered"] == 7


def test_loss_is_recovered_by_retransmission_and_duplicate_detection() -> None:
    net = VirtualNetwork(seed=3, default_link=LinkConfig(latency=0.005, loss=0.3))
    peers, _ = build(net, n=20)
    net.run_until_idle(max_time=60.0)
    assert net.counters["lost"] > 0
    outcomes = [s for i in range(20) for s in net.events[(SERVER[0], SERVER[1] + i)]]
    succeeded = [e for e in outcomes if isinstance(e, EapStep)]
    assert len(succeeded) + len([e for e in outcomes if isinstance(e, GaveUp)]) == 20
    assert len(succeeded) >= 15
    peer_nodes = [net.engine(p) for p in peers]
    assert all(isinstance(n, PeerNode) for n in peer_nodes)
    retransmitted = sum(
        n.eap.counters["retransmitted_response"] for n in peer_nodes if isinstance(n, PeerNode)
    )
    assert retransmitted > 0  # a lost response was answered again, verbatim
    assert net.now < 60.0  # every conversation ended (success or give-up) before the cap


def test_same_seed_same_run_other_seed_other_run() -> None:
    def run(seed: int) -> list[tuple[float, Addr, Addr, bytes]]:
        net = VirtualNetwork(
            seed=seed, default_link=LinkConfig(latency=0.002, jitter=0.003, loss=0.2), capture=1000
        )
        build(net, n=5)
        net.run_until_idle(max_time=30.0)
        return list(net.capture)

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_filters_links_and_undeliverable() -> None:
    net = VirtualNetwork(default_link=LinkConfig(latency=0.001), capture=100)
    peer = ("10.1.0.2", 5000)
    net.set_link(SERVER, peer, LinkConfig(latency=0.5), symmetric=False)
    dropped: list[bytes] = []

    def drop_first_psk_request(t: float, src: Addr, dst: Addr, data: bytes) -> bool:
        if src != SERVER or dropped:
            return True
        if EapPacket.decode(data).type == EapType.PSK:
            dropped.append(data)
            return False
        return True

    net.filters.append(drop_first_psk_request)
    build(net)
    net.inject(("10.9.9.9", 1), ("10.9.9.9", 2), b"nobody home")
    net.run_until_idle()
    assert len(dropped) == 1 and net.counters["filtered"] == 1
    assert net.counters["undeliverable"] == 1
    assert net.events_of(SERVER, EapStep)[0].outcome is EapOutcome.SUCCESS
    # the first PSK request was re-sent after rto=1 s; server->peer is 0.5 s, back 1 ms
    first_psk = [t for t, s, _, d in net.capture if s == SERVER and d == dropped[0]]
    assert first_psk[0] == pytest.approx(0.501) and first_psk[1] == pytest.approx(1.501)


def test_link_config_is_validated_and_addresses_unique() -> None:
    with pytest.raises(ValueError):
        LinkConfig(loss=1.5)
    net = VirtualNetwork()
    net.add_node(SERVER, PeerNode(1))
    with pytest.raises(ValueError):
        net.add_node(SERVER, PeerNode(2))
    net.remove_node(SERVER)
    assert net.addresses() == []


def test_capture_hook_writes_a_pcap_in_virtual_time(tmp_path: Path) -> None:
    """The demo's path: a capture hook streams the simulated wire into a pcap file."""
    epoch = 1_700_000_000.0  # virtual t=0 stamped as a fixed wall-clock instant
    path = tmp_path / "eap.pcap"
    net = VirtualNetwork(default_link=LinkConfig(latency=0.010), capture=100)
    with PcapWriter(path) as pcap:
        net.capture_hooks.append(lambda t, s, d, data: pcap.write(s, d, data, ts=epoch + t))
        build(net)
        net.run_until_idle()
    records = list(read_udp_pcap(path))
    assert [(r.src, r.dst, r.payload) for r in records] == [c[1:] for c in net.capture]
    assert [round(r.ts - epoch, 3) for r in records] == [round(c[0], 3) for c in net.capture]
