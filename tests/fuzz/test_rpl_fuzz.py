"""RPL decoders under hostile input: random and mutated control messages, SRHs and Hop-by-Hop
headers raise only the typed error (RplDecodeError / Icmpv6DecodeError, offset inside the
input), and whatever decodes re-encodes to something that decodes to the same value."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from tests.unit.mesh.rpl.rpl_strategies import messages, source_routes

from amistack.mesh.icmpv6 import Icmpv6DecodeError
from amistack.mesh.rpl.errors import RplDecodeError
from amistack.mesh.rpl.messages import RplMessage, decode_message, from_icmpv6
from amistack.mesh.rpl.srh import RplHopOption, SourceRoutingHeader

SRC = bytes.fromhex("fe800000000000000000000000000001")
DST = bytes.fromhex("ff02000000000000000000000000001a")


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
