"""Multicast on the virtual network: a datagram to a group reaches every member but its sender,
flagged multicast=True, over each member's own link; unicast delivery is unchanged."""

from __future__ import annotations

import pytest

from amistack.addr import Addr
from amistack.crypto.rand import seeded_random
from amistack.echonet.frame import Eoj, Esv, Frame, Property
from amistack.echonet.node import MULTICAST_V4, NODE_PROFILE, EchonetNode, NodeConfig
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.meter.model import MeterModel
from amistack.sim import LinkConfig, VirtualNetwork

GROUP: Addr = ("224.0.23.0", 3610)


class Recorder:
    """An engine that records what it receives and sends what it is told to."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Addr, float, bool]] = []
        self.outbox: list[tuple[bytes, Addr]] = []

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        self.received.append((data, addr, now, multicast))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def next_event(self) -> object | None:
        return None


def test_group_datagram_reaches_every_member_but_the_sender() -> None:
    net = VirtualNetwork(default_link=LinkConfig(latency=0.01), capture=100)
    a, b, c, d = (Recorder() for _ in range(4))
    addrs: list[Addr] = [(f"10.0.0.{i}", 3610) for i in range(1, 5)]
    for addr, eng in zip(addrs, (a, b, c, d), strict=True):
        net.add_node(addr, eng)
    for addr in addrs[:3]:  # d stays out of the group
        net.join_group(GROUP, addr)
    net.set_link(addrs[0], addrs[2], LinkConfig(latency=0.5))
    a.outbox.append((b"hello", GROUP))
    net.service(addrs[0])
    net.run_until_idle()
    assert a.received == [] and d.received == []
    assert b.received == [(b"hello", addrs[0], pytest.approx(0.01), True)]
    assert c.received == [(b"hello", addrs[0], pytest.approx(0.5), True)]
    assert [r[2] for r in net.capture] == [GROUP]  # captured once, to the group
    assert net.counters["multicast"] == 1

    # unicast is unchanged: multicast=False (the plain call), only the addressee
    b.outbox.append((b"uni", addrs[2]))
    net.service(addrs[1])
    net.run_until_idle()
    assert c.received[-1][0] == b"uni" and c.received[-1][3] is False
    assert len(a.received) == 0

    # leave: no more copies; an empty group is undeliverable like an unknown address
    net.leave_group(GROUP, addrs[1])
    net.leave_group(GROUP, addrs[2])
    a.outbox.append((b"again", GROUP))
    net.service(addrs[0])
    net.run_until_idle()
    assert len(b.received) == 1 and len(c.received) == 2
    net.leave_group(GROUP, addrs[0])
    a.outbox.append((b"nobody", GROUP))
    net.service(addrs[0])
    net.run_until_idle()
    assert net.counters["undeliverable"] == 1


def test_filters_see_the_group_and_loss_is_per_member() -> None:
    net = VirtualNetwork(seed=3)
    send, m1, m2 = Recorder(), Recorder(), Recorder()
    s_addr, a1, a2 = ("10.0.0.1", 3610), ("10.0.0.2", 3610), ("10.0.0.3", 3610)
    for addr, eng in ((s_addr, send), (a1, m1), (a2, m2)):
        net.add_node(addr, eng)
        net.join_group(GROUP, addr)
    net.set_link(s_addr, a2, LinkConfig(loss=1.0))
    net.filters.append(lambda _t, _s, dst, data: not (dst == GROUP and data == b"drop"))
    send.outbox += [(b"drop", GROUP), (b"keep", GROUP)]
    net.service(s_addr)
    net.run_until_idle()
    assert [r[0] for r in m1.received] == [b"keep"]
    assert m2.received == []
    assert net.counters["filtered"] == 1 and net.counters["lost"] == 1


def test_join_checks_and_remove_node_leaves_groups() -> None:
    net = VirtualNetwork()
    r = Recorder()
    net.add_node(("10.0.0.1", 3610), r)
    with pytest.raises(KeyError):
        net.join_group(GROUP, ("10.0.0.9", 3610))
    with pytest.raises(ValueError):
        net.join_group(("10.0.0.1", 3610), ("10.0.0.1", 3610))
    net.join_group(GROUP, ("10.0.0.1", 3610))
    net.join_group(GROUP, ("10.0.0.1", 3610))  # idempotent
    assert net.members(GROUP) == [("10.0.0.1", 3610)]
    net.remove_node(("10.0.0.1", 3610))
    assert net.members(GROUP) == []


def test_echonet_nodes_answer_a_multicast_get_after_their_delay() -> None:
    """Real engines: two meter nodes in the group answer a multicast Get of D6 unicast to port
    3610 of the asker, each after its own §2.4 random delay (they knew it was multicast)."""
    net = VirtualNetwork()
    asker = Recorder()
    hems: Addr = ("10.0.0.100", 3610)
    net.add_node(hems, asker)
    for i in (1, 2):
        node = EchonetNode(
            NodeProfile([]),
            [SmartMeterObject(MeterModel(i))],
            seeded_random(i),
            NodeConfig(multicast_groups=(MULTICAST_V4,), multicast_reply_delay=1.0),
        )
        net.add_node((f"10.0.0.{i}", 3610), node)
        net.join_group(MULTICAST_V4, (f"10.0.0.{i}", 3610))
    get = Frame(7, Eoj(0x05, 0xFF, 0x01), NODE_PROFILE, Esv.GET, (Property(0xD6),))
    asker.outbox.append((get.encode(), MULTICAST_V4))
    net.service(hems)
    net.run_until(5.0)
    answers = [(Frame.decode(d), a, t) for d, a, t, _ in asker.received]
    assert sorted(a[0] for _, a, _ in answers) == ["10.0.0.1", "10.0.0.2"]
    for frame, _, t in answers:
        assert frame.esv == Esv.GET_RES and frame.tid == 7
        assert 0.01 <= t <= 1.01 + 0.005  # the delay, bounded by multicast_reply_delay
    assert len({t for _, _, t in answers}) == 2
