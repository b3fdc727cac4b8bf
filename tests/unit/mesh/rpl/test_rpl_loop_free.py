"""Property: on any connected topology the DODAG RPL forms is loop-free, with ranks strictly
decreasing toward the root, and stays so after a random router dies (RFC 6550 §8.2.2)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.mesh.rpl.rpl_medium import Medium, gua

from amistack.mesh.rpl.config import RFC6550, RplConfig
from amistack.mesh.rpl.constants import Mop
from amistack.mesh.rpl.of import dag_rank

CONFIG = replace(RFC6550, mop=Mop.NON_STORING)
MODES = [CONFIG, replace(RFC6550, mop=Mop.STORING_NO_MULTICAST)]


@st.composite
def topologies(draw: st.DrawFn) -> dict[int, list[int]]:
    n = draw(st.integers(4, 16))
    edges = {(draw(st.integers(0, i - 1)), i) for i in range(1, n)}  # a random spanning tree
    for _ in range(draw(st.integers(0, 2 * n))):
        a, b = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        if a != b:
            edges.add((min(a, b), max(a, b)))
    return {
        i: sorted({b for a, b in edges if a == i} | {a for a, b in edges if b == i})
        for i in range(n)
    }


def connected_to_root(topology: dict[int, list[int]], alive: set[int]) -> set[int]:
    seen, todo = {0}, [0]
    while todo:
        for j in topology[todo.pop()]:
            if j in alive and j not in seen:
                seen.add(j)
                todo.append(j)
    return seen


def assert_loop_free(medium: Medium) -> None:
    step = CONFIG.min_hop_rank_increase
    for i in medium.alive - {0}:
        node = medium.nodes[i]
        if not node.joined:
            continue
        seen = {i}
        current = node
        while current is not medium.root:
            assert current.preferred is not None
            parent = medium.nodes[medium.by_address[current.preferred]]
            assert (
                dag_rank(parent.rank, step) < dag_rank(current.rank, step) or parent is medium.root
            )
            assert medium.by_address[current.preferred] not in seen, "routing loop"
            seen.add(medium.by_address[current.preferred])
            current = parent


@pytest.mark.parametrize("config", MODES, ids=["non-storing", "storing"])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topology=topologies(), data=st.data())
def test_dodags_are_loop_free_before_and_after_a_failure(
    config: RplConfig, topology: dict[int, list[int]], data: st.DataObject
) -> None:
    medium = Medium(topology, config)
    medium.start()
    medium.run(60.0)
    assert all(node.joined for node in medium.nodes.values())
    assert_loop_free(medium)
    victim = data.draw(st.integers(1, len(topology) - 1))
    medium.kill(victim)
    for i in medium.alive - {0}:  # traffic lets the link layer notice the dead router
        medium.send(i, gua(0), b"probe")
    medium.run(medium.now + 120.0)
    assert_loop_free(medium)
    reachable = connected_to_root(topology, medium.alive)
    for i in medium.alive - {0}:
        medium.send(i, gua(0), b"probe")  # a second round: stragglers notice too
    medium.run(medium.now + 120.0)
    assert_loop_free(medium)
    for i in medium.alive - {0}:
        assert medium.nodes[i].joined == (i in reachable), f"node {i}"
    for i in reachable - {0}:  # and the root's downward routes followed the repair
        medium.send(0, gua(i), b"down %d" % i)
    medium.run(medium.now + 5.0)
    for i in reachable - {0}:
        assert b"down %d" % i in medium.received(i), f"root cannot reach node {i}"
