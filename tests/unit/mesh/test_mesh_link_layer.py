"""The link layer of a node on the simulated radio: packets to a neighbour (fragmented when
large) and to all neighbours, frames for others ignored, replays, forgeries, outsiders and
unsecured frames dropped and counted while the link keeps working; ACKs and retransmissions
with their Transmitted feedback; a lost fragment times out."""

from __future__ import annotations

import ipaddress

from hypothesis import example, given
from hypothesis import strategies as st
from tests.unit.mesh.mesh_link_harness import LinkNode, all_frames, mesh, radio_addr

from amistack.addr import Addr, Eui64
from amistack.mesh.ipv6 import Ipv6Packet, UdpDatagram
from amistack.mesh.link import Transmitted
from amistack.sim import Network
from amistack.sim.radio import BROADCAST, RadioMedium


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
    # one frame at a time, each acknowledged at the first attempt
    assert net.events_of(radio_addr(a.eui), Transmitted) == [Transmitted(b.eui, True, 1)] * 8
    assert b.link.counters["acks-sent"] == 8 and a.link.counters["acked"] == 8
    assert c.got == [] and c.link.counters["not-for-us"] == frames  # heard, not for it
    assert c.link.counters["stray-acks"] == 8  # and b's ACKs too
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
    [frame] = [f for _, _, _, f in net.capture if len(f) > 5]  # not the ACK
    attacker: Addr = ("fe80::bad", 0)
    net.medium.place(attacker, 40.0, 0.0)
    net.inject(attacker, BROADCAST, frame)  # replay
    forged = bytearray(frame)
    forged[-1] ^= 1
    net.inject(attacker, BROADCAST, bytes(forged))  # (its counter was replayed too: replayed)
    outsider = LinkNode(Eui64.parse("02:00:00:00:00:00:0b:ad"), key=bytes(16))
    outsider_frames = all_frames(outsider.link, c1222_packet(outsider, b, 20), b.eui)
    stranger = LinkNode(Eui64.parse("02:00:00:00:00:00:0c:1e"))
    clear = all_frames(stranger.link, packet, b.eui, secure=False)
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


def test_lost_frames_are_sent_again_and_a_gone_neighbour_is_reported() -> None:
    net, (a, b) = mesh([0.0, 50.0])
    seen: list[bytes] = []

    def lose_first_copy(t: float, src: Addr, dst: Addr, data: bytes) -> bool:
        first = data not in seen
        seen.append(data)
        return not (first and src == radio_addr(a.eui) and len(seen) == 1)

    net.filters.append(lose_first_copy)
    send(net, a, c1222_packet(a, b, 20), b.eui)
    net.run_until_idle()
    at_a = radio_addr(a.eui)
    assert net.events_of(at_a, Transmitted) == [Transmitted(b.eui, True, 2)]
    assert a.link.counters["retransmissions"] == 1 and len(b.got) == 1
    # b leaves: four attempts (macMaxFrameRetries = 3), then the rest of the packet is dropped
    net.remove_node(radio_addr(b.eui))
    send(net, a, c1222_packet(a, b, 300), b.eui)
    net.run_until_idle()
    assert net.events_of(at_a, Transmitted)[1:] == [Transmitted(b.eui, False, 4)]
    assert a.link.counters["tx-failed"] == 1 and a.link.get_timer() is None
    # and the link goes on with the next packet
    send(net, a, c1222_packet(a, b, 20), None)
    net.run_until_idle()
    assert a.link.counters["packets-sent"] == 3


def test_a_lost_fragment_times_out_and_frees_the_buffer() -> None:
    net, (a, b) = mesh([0.0, 50.0])
    data_frames: list[bytes] = []

    def lose_the_second_fragment(t: float, src: Addr, dst: Addr, data: bytes) -> bool:
        if src != radio_addr(a.eui):
            return True
        if data not in data_frames:
            data_frames.append(data)
        return data != data_frames[1] if len(data_frames) > 1 else True  # every copy of it

    net.filters.append(lose_the_second_fragment)
    send(net, a, c1222_packet(a, b, 300), b.eui)
    net.run_until(1.0)
    assert b.got == [] and len(b.link.reassembler) == 1
    assert net.events_of(radio_addr(a.eui), Transmitted)[-1] == Transmitted(b.eui, False, 4)
    net.run_until(70.0)
    assert len(b.link.reassembler) == 0
    assert b.link.reassembler.counters["reassembly-timeouts"] == 1


_SAMPLE: list[bytes] = []


def _sample(index: int) -> bytes:
    """Frames from ...01 to ...02: a packet in fragments, one in one frame, one in the clear."""
    if not _SAMPLE:
        a = LinkNode(Eui64(bytes([2, 0, 0, 0, 0, 0, 0, 1])))
        b = LinkNode(Eui64(bytes([2, 0, 0, 0, 0, 0, 0, 2])))
        _SAMPLE.extend(all_frames(a.link, c1222_packet(a, b, 300), b.eui))
        _SAMPLE.extend(all_frames(a.link, c1222_packet(a, b, 10), b.eui))
        _SAMPLE.extend(all_frames(a.link, c1222_packet(a, b, 10), None, secure=False))
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
    not_drops = ("packets-received", "acks-sent")
    dropped = sum(v for k, v in node.link.counters.items() if k not in not_drops) > 0
    kept_fragment = len(node.link.reassembler) == 1
    assert (got is not None) + dropped + kept_fragment == 1  # exactly one of the three


def test_hidden_terminals_collide_and_back_off_until_both_get_through() -> None:
    """a and c cannot hear each other; both send to b at once: their frames collide at b, the
    random back-off (macMinBE .. macMaxBE) separates the retries."""
    net, (a, b, c) = mesh([0.0, 80.0, 160.0], collisions=True)
    send(net, a, c1222_packet(a, b, 40), b.eui)
    send(net, c, c1222_packet(c, b, 40), b.eui)
    net.run_until_idle()
    assert net.medium.counters["collided"] >= 2
    done = [net.events_of(radio_addr(n.eui), Transmitted) for n in (a, c)]
    assert all(len(d) == 1 and d[0].acked and d[0].attempts >= 2 for d in done)
    assert len(b.got) == 2
