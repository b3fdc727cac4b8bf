"""The virtual radio: who hears whom (unit disk, log-distance), broadcast and unicast, seeded
loss, collisions, per-link statistics, the neighbour grid against brute force."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.addr import Addr
from amistack.sim import Network
from amistack.sim.radio import BROADCAST, OQPSK_2450, LogDistance, RadioMedium, UnitDisk, scatter


class Beacon:
    """Sends what it is told to; remembers what it heard."""

    def __init__(self) -> None:
        self.out: list[tuple[bytes, Addr]] = []
        self.heard: list[tuple[bytes, Addr, float]] = []

    def send(self, data: bytes, dst: Addr) -> None:
        self.out.append((data, dst))

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        self.heard.append((data, addr, now))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self.out = self.out, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def next_event(self) -> object | None:
        return None


def node(i: int) -> Addr:
    return (f"fe80::{i:x}", 0)


def line(medium: RadioMedium, xs: list[float]) -> tuple[Network[RadioMedium], list[Beacon]]:
    net = Network(medium, capture=100)
    beacons = []
    for i, x in enumerate(xs):
        medium.place(node(i), x, 0.0)
        b = Beacon()
        net.add_node(node(i), b)
        beacons.append(b)
    return net, beacons


def send(net: Network[RadioMedium], beacons: list[Beacon], i: int, dst: Addr, data: bytes) -> None:
    beacons[i].send(data, dst)
    net.service(node(i))


def test_broadcast_reaches_the_unit_disk_and_nobody_else() -> None:
    medium = RadioMedium(UnitDisk(100.0), phy=OQPSK_2450)
    net, b = line(medium, [0.0, 60.0, 100.0, 150.0])
    send(net, b, 0, BROADCAST, b"dio")
    net.run_until_idle()
    assert [len(x.heard) for x in b] == [0, 1, 1, 0]
    assert b[1].heard[0][1] == node(0)
    # delivered after the airtime: (6 + 3 octets) * 8 / 250 kbit/s
    assert b[1].heard[0][2] == pytest.approx(9 * 8 / 250_000)
    assert sorted(n for n, _ in medium.neighbours(node(1))) == [node(0), node(2), node(3)]
    # unicast: only the addressed neighbour; out of range: nobody, counted
    send(net, b, 0, node(2), b"dao")
    send(net, b, 0, node(3), b"far")
    net.run_until_idle()
    assert [len(x.heard) for x in b] == [0, 1, 2, 0]
    assert medium.counters["out_of_range"] == 1
    assert medium.stats(node(0), node(2)).sent == 2 and medium.stats(node(0), node(2)).prr == 1.0
    assert medium.stats(node(2), node(0)).prr is None


def test_per_link_loss_is_seeded_and_counted() -> None:
    def run(seed: int) -> tuple[int, list[float]]:
        disk = UnitDisk(100.0, loss=0.0)
        medium = RadioMedium(disk, seed=seed)
        net, b = line(medium, [0.0, 50.0, 90.0])
        disk.set_loss(node(0), node(1), 0.5)
        for k in range(200):
            send(net, b, 0, BROADCAST, bytes([k]))
            net.run_until(net.now + 0.1)
        stats = medium.stats(node(0), node(1))
        assert stats.sent == 200 and stats.delivered + stats.lost == 200
        assert medium.stats(node(0), node(2)).prr == 1.0  # the default loss of 0
        return stats.delivered, [t for _, _, t in b[1].heard]

    first = run(7)
    assert 70 < first[0] < 130
    assert run(7) == first
    assert run(8) != first


def test_simultaneous_transmissions_collide_at_a_common_receiver() -> None:
    medium = RadioMedium(UnitDisk(100.0), collisions=True)
    net, b = line(medium, [0.0, 80.0, 160.0])  # 0 and 2 are hidden from each other
    send(net, b, 0, BROADCAST, b"a" * 40)
    send(net, b, 2, BROADCAST, b"b" * 40)
    net.run_until_idle()
    assert b[1].heard == []  # both spoilt at the node in the middle
    assert medium.counters["collided"] == 2
    assert medium.stats(node(0), node(1)).collided == 1
    # one after the other: both arrive
    send(net, b, 0, BROADCAST, b"a")
    net.run_until(net.now + 1.0)
    send(net, b, 2, BROADCAST, b"b")
    net.run_until_idle()
    assert [d for d, _, _ in b[1].heard] == [b"a", b"b"]
    # without collisions the same overlap is heard twice
    quiet = RadioMedium(UnitDisk(100.0))
    net2, b2 = line(quiet, [0.0, 80.0, 160.0])
    send(net2, b2, 0, BROADCAST, b"a" * 40)
    send(net2, b2, 2, BROADCAST, b"b" * 40)
    net2.run_until_idle()
    assert len(b2[1].heard) == 2


def test_log_distance_is_symmetric_seeded_and_fades_with_distance() -> None:
    model = LogDistance(seed=3)
    a, c = node(1), node(2)
    assert model.shadowing(a, c) == model.shadowing(c, a)
    assert LogDistance(seed=3).shadowing(a, c) == model.shadowing(a, c)
    assert LogDistance(seed=4).shadowing(a, c) != model.shadowing(a, c)
    near = model.loss(a, c, 10.0)
    assert near is not None and near < 0.01
    assert model.loss(a, c, model.max_range + 1) is None
    losses = [model.loss(a, c, d) for d in (10.0, 200.0, 400.0, 800.0)]
    known = [x for x in losses if x is not None]
    assert known == sorted(known)  # farther is never better on one link
    with pytest.raises(ValueError):
        LogDistance(exponent=0)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_the_grid_finds_exactly_the_nodes_in_range(seed: int) -> None:
    rng = random.Random(seed)
    medium = RadioMedium(UnitDisk(100.0))
    points = scatter(60, 500.0, 500.0, rng)
    for i, (x, y) in enumerate(points):
        medium.place(node(i), x, y)
    medium.remove(node(0))
    for i in range(1, 60):
        x, y = points[i]
        brute = {
            node(j)
            for j in range(1, 60)
            if j != i and math.hypot(points[j][0] - x, points[j][1] - y) <= 100.0
        }
        assert {n for n, _ in medium.neighbours(node(i))} == brute


def test_placement_is_validated_and_unplaced_senders_counted() -> None:
    medium = RadioMedium(UnitDisk(10.0))
    with pytest.raises(ValueError):
        medium.place(BROADCAST, 0, 0)
    with pytest.raises(ValueError):
        UnitDisk(0.0)
    net = Network(medium)
    b = Beacon()
    net.add_node(node(1), b)
    send(net, [b, b], 1, BROADCAST, b"x")
    assert medium.counters["unplaced"] == 1
    medium.place(node(1), 1.0, 1.0)
    medium.place(node(1), 5.0, 5.0)  # a move
    assert medium.position(node(1)) == (5.0, 5.0) and medium.nodes() == [node(1)]


def test_one_radio_sends_its_frames_one_after_another() -> None:
    medium = RadioMedium(UnitDisk(100.0), phy=OQPSK_2450)
    net, b = line(medium, [0.0, 50.0])
    for size in (100, 10, 50):  # a short frame queued behind a long one still arrives after it
        b[0].send(bytes(size), BROADCAST)
    net.service(node(0))
    net.run_until_idle()
    assert [len(d) for d, _, _ in b[1].heard] == [100, 10, 50]
    ends = [t for _, _, t in b[1].heard]
    assert ends[0] == pytest.approx(106 * 8 / 250_000)
    assert ends[2] == pytest.approx((106 + 16 + 56) * 8 / 250_000)
