"""The link layer of a node on the simulated radio: packets to a neighbour (fragmented when
large) and to all neighbours, frames for others ignored, replays, forgeries, outsiders and
unsecured frames dropped and counted while the link keeps working; a lost fragment times out."""

from __future__ import annotations

import ipaddress

from hypothesis import example, given
from hypothesis import strategies as st

from amistack.addr import Addr, Eui64, PanId
from amistack.crypto import seeded_random
from amistack.mesh.ipv6 import Ipv6Packet, UdpDatagram
from amistack.mesh.link import MeshLink, Received
from amistack.mesh.security import LinkSecurity, MemoryCounterStore
from amistack.sim import Network
from amistack.sim.radio import BROADCAST, RadioMedium, UnitDisk

PAN = PanId(0xFACE)
GROUP_KEY = bytes(range(16))


class LinkNode:
    """A test engine: a MeshLink that sends what it is told and keeps what it receives."""

    def __init__(self, eui: Eui64, key: bytes = GROUP_KEY, seed: int = 1) -> None:
        sec = LinkSecurity(eui, MemoryCounterStore())
        sec.install_key(1, key)
        self.link = MeshLink(sec, PAN, seeded_random(seed))
        self.eui = eui
        self.got: list[Received] = []
        self.out: list[tuple[bytes, Addr]] = []
        self.allow_unsecured = False

    def send(self, packet: Ipv6Packet, next_hop: Eui64 | None, secure: bool = True) -> None:
        self.out += [(f, BROADCAST) for f in self.link.send(packet, next_hop, secure)]

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        got = self.link.receive(data, now, self.allow_unsecured)
        if got is not None:
            self.got.append(got)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self.out = self.out, []
        return out

    def get_timer(self) -> float | None:
        return self.link.get_timer()

    def handle_timer(self, now: float) -> None:
        self.link.handle_timer(now)

    def next_event(self) -> object | None:
        return None


def radio_addr(eui: Eui64) -> Addr:
    return (str(eui.link_local()), 0)


def mesh(xs: list[float], loss: float = 0.0) -> tuple[Network[RadioMedium], list[LinkNode]]:
    medium = RadioMedium(UnitDisk(100.0, loss=loss), seed=3)
    net = Network(medium, capture=1000)
    nodes = []
    for i, x in enumerate(xs):
        eui = Eui64(bytes([2, 0, 0, 0, 0, 0, 0, i + 1]))
        node = LinkNode(eui, seed=i)
        medium.place(radio_addr(eui), x, 0.0)
        net.add_node(radio_addr(eui), node)
        nodes.append(node)
    return net, nodes


def c1222_packet(a: LinkNode, b: LinkNode, size: int) -> Ipv6Packet:
    body = bytes(i % 253 for i in range(size))
    return UdpDatagram(1153, 1153, body).packet(a.eui.link_local(), b.eui.link_local())


def send(net: Network[RadioMedium], node: LinkNode, packet: Ipv6Packet, hop: Eui64 | None,
         secure: bool = True) -> None:  # fmt: skip
    node.send(packet, hop, secure)
    net.service(radio_addr(node.eui))


def test_unicast_large_packet_crosses_in_fragments_and_others_ignore_it() -> None:
    net, (a, b, c) = mesh([0.0, 50.0, 90.0])
    packet = c1222_packet(a, b, 600)
    send(net, a, packet, b.eui)
    net.run_until_idle()
    assert [r.packet for r in b.got] == [packet] and b.got[0].secured and b.got[0].src == a.eui
    frames = a.link.counters["frames-sent"]
    assert frames == 8 and all(len(f) <= 125 for _, _, _, f in net.capture)
    assert c.got == [] and c.link.counters["not-for-us"] == frames  # heard, not for it
    assert b.link.reassembler.counters["reassembled"] == 1


def test_broadcast_reaches_every_neighbour() -> None:
    net, (a, b, c) = mesh([0.0, 50.0, 90.0])
    dio = Ipv6Packet(
        a.eui.link_local(), ipaddress.IPv6Address("ff02::1a"), 58, b"\x9b\x01" + bytes(30)
    )
    send(net, a, dio, None)
    net.run_until_idle()
    assert [r.packet for r in b.got] == [dio] == [r.packet for r in c.got]


def test_replays_forgeries_outsiders_and_cleartext_are_dropped_and_counted() -> None:
    net, (a, b, _c) = mesh([0.0, 50.0, 90.0])
    packet = c1222_packet(a, b, 20)
    send(net, a, packet, b.eui)
    net.run_until_idle()
    [frame] = [f for _, _, _, f in net.capture]
    attacker: Addr = ("fe80::bad", 0)
    net.medium.place(attacker, 40.0, 0.0)
    net.inject(attacker, BROADCAST, frame)  # replay
    forged = bytearray(frame)
    forged[-1] ^= 1
    net.inject(attacker, BROADCAST, bytes(forged))  # (its counter was replayed too: replayed)
    outsider = LinkNode(Eui64.parse("02:00:00:00:00:00:0b:ad"), key=bytes(16))
    outsider_frames = outsider.link.send(c1222_packet(outsider, b, 20), b.eui)
    clear = LinkNode(Eui64.parse("02:00:00:00:00:00:0c:1e")).link.send(packet, b.eui, secure=False)
    for f in outsider_frames + clear:
        net.inject(attacker, BROADCAST, f)
    net.inject(attacker, BROADCAST, b"\x41\x88")  # truncated garbage
    net.run_until_idle()
    counters = b.link.counters
    assert counters["replayed"] == 2 and counters["forged"] == 1 and counters["unsecured"] == 1
    assert counters["frame-malformed"] == 1
    assert len(b.got) == 1  # only the original
    send(net, a, c1222_packet(a, b, 30), b.eui)  # and the link still works
    net.run_until_idle()
    assert len(b.got) == 2
    b.allow_unsecured = True  # a joining node's parent takes PANA in the clear
    for f in clear:
        net.inject(attacker, BROADCAST, f)
    net.run_until_idle()
    assert len(b.got) == 3 and not b.got[-1].secured


def test_a_lost_fragment_times_out_and_frees_the_buffer() -> None:
    net, (a, b) = mesh([0.0, 50.0])
    sent: list[bytes] = []

    def drop_second_frame(t: float, src: Addr, dst: Addr, data: bytes) -> bool:
        sent.append(data)
        return len(sent) != 2

    net.filters.append(drop_second_frame)
    send(net, a, c1222_packet(a, b, 300), b.eui)
    net.run_until(1.0)
    assert b.got == [] and len(b.link.reassembler) == 1
    net.run_until(70.0)
    assert len(b.link.reassembler) == 0
    assert b.link.reassembler.counters["reassembly-timeouts"] == 1


_SAMPLE: list[bytes] = []


def _sample(index: int) -> bytes:
    """Frames from ...01 to ...02: a packet in fragments, one in one frame, one in the clear."""
    if not _SAMPLE:
        a = LinkNode(Eui64(bytes([2, 0, 0, 0, 0, 0, 0, 1])))
        b = LinkNode(Eui64(bytes([2, 0, 0, 0, 0, 0, 0, 2])))
        _SAMPLE.extend(a.link.send(c1222_packet(a, b, 300), b.eui))
        _SAMPLE.extend(a.link.send(c1222_packet(a, b, 10), b.eui))
        _SAMPLE.extend(a.link.send(c1222_packet(a, b, 10), None, secure=False))
    return _SAMPLE[index % len(_SAMPLE)]


def _mutated(index: int, value: int, position: int) -> bytes:
    frame = bytearray(_sample(index))
    frame[position % len(frame)] = value
    return bytes(frame)


@given(
    st.one_of(
        st.binary(max_size=130),
        st.tuples(st.integers(0, 200), st.integers(0, 255), st.integers(0, 130)).map(
            lambda t: _mutated(*t)
        ),
    )
)
@example(_sample(0))  # a first fragment: kept
@example(_sample(-2))  # a one-frame packet: received
@example(_sample(-1))  # in the clear: dropped
def test_fuzz_receive_never_raises_and_counts_every_drop(data: bytes) -> None:
    node = LinkNode(Eui64(bytes([2, 0, 0, 0, 0, 0, 0, 2])))
    got = node.link.receive(data, 0.0)
    dropped = sum(v for k, v in node.link.counters.items() if k != "packets-received") > 0
    kept_fragment = len(node.link.reassembler) == 1
    assert (got is not None) + dropped + kept_fragment == 1  # exactly one of the three
