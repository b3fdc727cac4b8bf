"""Whatever arrives over the radio or the WAN, a mesh node neither raises nor forwards it
unless it is PANA to a relay: random and mutated frames against a joined meter, a newcomer and
the concentrator."""

from __future__ import annotations

import functools

from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.mesh.node import MeshNode, radio_addr
from amistack.sim.mesh import KEYSERVER_HOST, MeshConfig, MeshSim, build_mesh


@functools.cache
def formed() -> MeshSim:
    sim = build_mesh(MeshConfig(nodes=6, seed=2))
    assert sim.run(120.0)
    return sim


@functools.cache
def captured_frames() -> list[bytes]:
    """Real frames of the run (secured DODAG frames, beacons, PANA), to mutate."""
    sim = build_mesh(MeshConfig(nodes=6, seed=2))
    frames: list[bytes] = []
    sim.net.capture_hooks.append(lambda _t, _s, _d, data: frames.append(data))
    sim.run(120.0)
    return frames[:200]


def feed(node: MeshNode, data: bytes, now: float) -> None:
    node.receive_datagram(data, radio_addr(node.eui), now)
    node.datagrams_to_send(now)
    while node.next_event() is not None:
        pass


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 199),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
    st.binary(max_size=40),
)
def test_mutated_frames_raise_nothing(pick: int, flips: list[tuple[int, int]], tail: bytes) -> None:
    sim = formed()
    frames = captured_frames()
    data = bytearray(frames[pick % len(frames)])
    for at, value in flips:
        if data:
            data[at % len(data)] = value
    now = sim.net.now
    wan_out = sim.concentrator.counters["wan-out"]
    for node in (sim.meters[0], sim.concentrator):
        feed(node, bytes(data), now)
        feed(node, bytes(data) + tail, now)
    sim.concentrator.receive_datagram(bytes(data), KEYSERVER_HOST, now)  # as if from the WAN
    sim.concentrator.datagrams_to_send(now)
    assert sim.concentrator.counters["wan-out"] - wan_out <= 2  # at most the frames themselves


@functools.cache
def unjoined() -> MeshNode:
    return build_mesh(MeshConfig(nodes=2, seed=5)).meters[0]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=127))
def test_random_bytes_raise_nothing_at_a_newcomer(data: bytes) -> None:
    newcomer = unjoined()
    feed(newcomer, data, 0.0)
    assert not newcomer.authenticated
