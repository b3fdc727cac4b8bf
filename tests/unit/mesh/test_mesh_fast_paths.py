"""The mesh's per-frame shortcuts give what the checked paths give: a data frame built
unchecked equals the dataclass-built one, `protect_encoded` is `protect().encode()`, a packet
copied with `Packet.but` equals `dataclasses.replace`, `heard` answers as `from_icmpv6` and
still raises on every bad message, and a mesh run is a pure function of its seed (the speed
work of benchmarks/README.md "Mesh formation" kept every simulated result)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.addr import BROADCAST_SHORT, Eui64, PanId
from amistack.mesh.frame import Frame, FrameType
from amistack.mesh.icmpv6 import Icmpv6DecodeError
from amistack.mesh.rpl.messages import Dio, from_icmpv6, heard, to_icmpv6
from amistack.mesh.rpl.packet import Packet
from amistack.mesh.security import LinkSecurity, MemoryCounterStore
from amistack.sim.mesh import MeshConfig, build_mesh

PAN = PanId(0x0AB1)
ME = Eui64.parse("02:00:00:00:00:00:00:01")
PEER = Eui64.parse("02:00:00:00:00:00:00:02")
LL1 = bytes.fromhex("fe800000000000000000000000000001")
LL2 = bytes.fromhex("ff02000000000000000000000000001a")


@given(seq=st.integers(0, 255), payload=st.binary(max_size=90), unicast=st.booleans())
@settings(max_examples=60, deadline=None)
def test_an_unchecked_data_frame_is_the_checked_one(
    seq: int, payload: bytes, unicast: bool
) -> None:
    dst = PEER if unicast else BROADCAST_SHORT
    fast = Frame.data(seq, PAN, dst, ME, payload, unicast)
    slow = Frame(FrameType.DATA, seq, PAN, dst, None, ME, payload, pan_id_compression=True,
                 ack_request=unicast)  # fmt: skip
    assert fast == slow and fast.encode() == slow.encode()
    assert Frame.decode(fast.encode()) == slow


def test_protect_encoded_is_protect_then_encode() -> None:
    one, two = LinkSecurity(ME, MemoryCounterStore()), LinkSecurity(ME, MemoryCounterStore())
    for sec in (one, two):
        sec.install_key(1, bytes(range(16)))
    for seq in range(3):
        frame = Frame.data(seq, PAN, PEER, ME, b"\x41" + bytes(40), True)
        assert one.protect_encoded(frame, 1) == two.protect(frame, 1).encode()


def test_packet_but_is_dataclasses_replace_and_refuses_unknown_fields() -> None:
    packet = Packet(LL1, LL2, b"payload", 17, 64)
    assert packet.but(hop_limit=3, dst=LL1) == dataclasses.replace(packet, hop_limit=3, dst=LL1)
    with pytest.raises(TypeError):
        packet.but(hop_limt=3)


def test_heard_decodes_as_from_icmpv6_and_raises_every_time() -> None:
    dio = Dio(instance_id=1, version=240, rank=256, dodag_id=bytes(16), dtsn=240)
    wire = to_icmpv6(dio, LL1, LL2)
    assert heard(wire, LL1, LL2) == from_icmpv6(wire, LL1, LL2) == dio
    damaged = wire[:-1] + bytes((wire[-1] ^ 1,))
    for _ in range(2):  # an error is not remembered as an answer
        with pytest.raises(Icmpv6DecodeError):
            heard(damaged, LL1, LL2)


def test_a_mesh_run_is_a_pure_function_of_its_seed() -> None:
    def run() -> dict[str, object]:
        sim = build_mesh(MeshConfig(nodes=25, seed=3, c1222=True))
        assert sim.run(3_600.0)
        report = sim.report()
        report["read"] = sim.read_all(300.0)
        return report

    first, second = run(), run()
    assert first == second
    assert first["relay_ready"] == first["expected_to_join"]


def test_joined_nodes_compress_under_their_dodag_prefix() -> None:
    """IPHC context 0 follows RPL: every joined node's link holds its DODAG's /64 (the
    concentrator's from the start), and no frame failed to decompress for want of it."""
    sim = build_mesh(MeshConfig(nodes=20, seed=3))
    assert sim.run(300.0)
    for node in [*sim.concentrators, *sim.meters]:
        own = node.rpl.global_address
        assert own is not None and node.link.context == own[:8]
        assert not node.link.counters["lowpan-malformed"]
