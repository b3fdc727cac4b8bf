"""RPL decoders under hostile input: random and mutated control messages, SRHs and Hop-by-Hop
headers raise only the typed error (RplDecodeError / Icmpv6DecodeError, offset inside the
input), and whatever decodes re-encodes to something that decodes to the same value."""

from __future__ import annotations

from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.mesh.rpl.rpl_strategies import messages, source_routes

from amistack.crypto import seeded_random
from amistack.mesh.icmpv6 import Icmpv6DecodeError, Icmpv6Message
from amistack.mesh.rpl.config import RplConfig
from amistack.mesh.rpl.constants import ALL_RPL_NODES
from amistack.mesh.rpl.errors import RplDecodeError, RplRoutingError
from amistack.mesh.rpl.messages import (
    Dio,
    PrefixInformation,
    RplMessage,
    decode_message,
    from_icmpv6,
    to_icmpv6,
)
from amistack.mesh.rpl.node import RplNode
from amistack.mesh.rpl.packet import Packet
from amistack.mesh.rpl.srh import RplHopOption, SourceRoutingHeader

SRC = bytes.fromhex("fe800000000000000000000000000001")
DST = bytes.fromhex("ff02000000000000000000000000001a")
PREFIX = bytes.fromhex("20010db8000000000000000000000000")
ROOT_LL = bytes.fromhex("fe800000000000000000000000000001")
ROOT_GUA = bytes.fromhex("20010db8000000000000000000000001")


def _decode_or_typed_error(code: int, body: bytes) -> None:
    try:
        message = decode_message(code, body)
    except RplDecodeError as exc:
        assert 0 <= exc.offset <= len(body) and exc.reason
        return
    assert decode_message(code, message.encode()) == message


@given(st.integers(0, 255), st.binary(max_size=200))
def test_random_bodies_decode_or_raise_the_typed_error(code: int, body: bytes) -> None:
    _decode_or_typed_error(code, body)


@given(messages, st.data())
def test_mutated_messages_decode_or_raise_the_typed_error(
    msg: RplMessage, data: st.DataObject
) -> None:
    wire = bytearray(msg.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        if wire:
            wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    _decode_or_typed_error(msg.CODE, bytes(wire[:cut]))


@given(st.binary(max_size=120))
def test_random_icmpv6_raises_only_the_typed_errors(wire: bytes) -> None:
    try:
        from_icmpv6(wire, SRC, DST)
    except Icmpv6DecodeError as exc:  # RplDecodeError is one of these
        assert 0 <= exc.offset <= len(wire)


def _srh_or_typed_error(wire: bytes, dst: bytes) -> None:
    try:
        srh = SourceRoutingHeader.decode(wire, dst)
    except RplDecodeError as exc:
        assert 0 <= exc.offset <= len(wire)
        return
    assert SourceRoutingHeader.decode(srh.encode(dst), dst) == srh


@given(st.binary(max_size=300), st.binary(min_size=16, max_size=16))
def test_random_srh_decodes_or_raises_the_typed_error(wire: bytes, dst: bytes) -> None:
    _srh_or_typed_error(wire, dst)


@given(source_routes(), st.integers(0, 400), st.integers(0, 255))
def test_mutated_srh_decodes_or_raises_the_typed_error(
    case: tuple[bytes, SourceRoutingHeader], where: int, value: int
) -> None:
    dst, srh = case
    wire = bytearray(srh.encode(dst))
    wire[where % len(wire)] = value
    _srh_or_typed_error(bytes(wire), dst)


@given(st.binary(max_size=64))
def test_random_hop_by_hop_decodes_or_raises_the_typed_error(wire: bytes) -> None:
    try:
        option, _ = RplHopOption.from_hop_by_hop(wire)
    except RplDecodeError as exc:
        assert 0 <= exc.offset <= len(wire)
        return
    if option is not None:
        assert RplHopOption.decode(option.encode()) == option


@cache
def _joined_template() -> tuple[RplConfig, Packet]:
    config = RplConfig()
    dio = Dio(
        0, 240, 256, ROOT_GUA, options=(config.dodag_configuration(), PrefixInformation(PREFIX, 64))
    )
    return config, Packet(ROOT_LL, ALL_RPL_NODES, to_icmpv6(dio, ROOT_LL, ALL_RPL_NODES))


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.binary(max_size=80), st.booleans(), st.sampled_from([0, 1, 2, 3])), max_size=8
    )
)
def test_a_joined_node_survives_hostile_control_traffic(
    frames: list[tuple[bytes, bool, int]],
) -> None:
    """Random bodies under every RPL code, multicast or unicast, with a valid checksum so they
    reach the RPL decoder: the node counts and drops them and stays attached to its parent."""
    config, dio = _joined_template()
    node = RplNode(SRC, config, seeded_random(7))
    node.start(0.0)
    node.receive_packet(dio, ROOT_LL, 0.1)
    assert node.joined
    attacker = bytes.fromhex("fe800000000000000000000000000099")
    for body, multicast, code in frames:
        dst = ALL_RPL_NODES if multicast else SRC
        wire = Icmpv6Message(155, code, body).encode(attacker, dst)
        node.receive_packet(Packet(attacker, dst, wire), attacker, 1.0)
    assert node.joined and node.preferred == ROOT_LL
    assert len(node.routes) == 0  # a router in non-storing mode stores nothing from DAOs


@given(source_routes(), st.data())
def test_srh_processing_advances_or_refuses(
    case: tuple[bytes, SourceRoutingHeader], data: st.DataObject
) -> None:
    """RFC 6554 §4.2 on arbitrary headers: either one step along the route (the old
    destination written back in place of the new one) or a typed refusal."""
    dst, srh = case
    own = frozenset({dst} | set(data.draw(st.lists(st.sampled_from(srh.addresses), max_size=3))))
    try:
        new_dst, after = srh.advance(dst, own)
    except RplRoutingError as exc:
        assert exc.reason
        return
    assert after.segments_left == srh.segments_left - 1
    i = len(srh.addresses) - srh.segments_left
    assert new_dst == srh.addresses[i] and after.addresses[i] == dst
