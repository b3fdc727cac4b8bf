"""The EAP codec (RFC 3748 §4): known bytes, every rejection path, and a round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amistack.eap import EapCode, EapDecodeError, EapPacket, EapType


def test_decode_identity_response() -> None:
    raw = bytes.fromhex("029e00190170736b2e75736572406578616d706c652e636f6d")
    p = EapPacket.decode(raw)
    assert p == EapPacket(EapCode.RESPONSE, 0x9E, EapType.IDENTITY, b"psk.user@example.com")
    assert p.encode() == raw
    assert p.length == len(raw)


def test_success_and_failure_have_no_type() -> None:
    assert EapPacket.decode(bytes.fromhex("03a00004")) == EapPacket.success(0xA0)
    assert EapPacket.decode(bytes.fromhex("04070004")) == EapPacket.failure(7)
    assert EapPacket.success(1).encode() == b"\x03\x01\x00\x04"
    assert EapPacket.failure(1).type is None


def test_bytes_past_length_are_padding() -> None:
    p = EapPacket.decode(bytes.fromhex("01050006012a") + b"\x00" * 10)
    assert p == EapPacket.request(5, EapType.IDENTITY, b"\x2a")


def test_expanded_type_is_opaque() -> None:
    type_data = bytes.fromhex("00137f000000010102")  # vendor id, vendor type, data
    p = EapPacket.decode(EapPacket.request(9, EapType.EXPANDED, type_data).encode())
    assert p.type == EapType.EXPANDED and p.type_data == type_data


@pytest.mark.parametrize(
    ("raw", "offset", "fragment"),
    [
        ("", 0, "header needs 4"),
        ("0101", 0, "header needs 4"),
        ("07010004", 0, "unknown EAP code 7"),
        ("00010004", 0, "unknown EAP code 0"),
        ("01010003", 2, "shorter than the header"),
        ("01010009010203", 2, "exceeds"),
        ("03010005ff", 2, "must be 4"),
        ("04010006ffff", 2, "must be 4"),
        ("01010004", 2, "has no Type"),
        ("02010004", 2, "has no Type"),
    ],
)
def test_decode_rejects(raw: str, offset: int, fragment: str) -> None:
    with pytest.raises(EapDecodeError) as info:
        EapPacket.decode(bytes.fromhex(raw))
    assert info.value.offset == offset
    assert fragment in info.value.reason


@pytest.mark.parametrize(
    "make",
    [
        lambda: EapPacket(EapCode.SUCCESS, 1, EapType.IDENTITY),
        lambda: EapPacket(EapCode.FAILURE, 1, None, b"x"),
        lambda: EapPacket(EapCode.REQUEST, 1, None),
        lambda: EapPacket(EapCode.REQUEST, 256, 1),
        lambda: EapPacket(EapCode.RESPONSE, 1, 300),
        lambda: EapPacket(EapCode.RESPONSE, 1, 1, bytes(0xFFFB)),
    ],
)
def test_invalid_packets_cannot_be_built(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


packets = st.one_of(
    st.builds(
        EapPacket,
        st.sampled_from([EapCode.REQUEST, EapCode.RESPONSE]),
        st.integers(0, 255),
        st.integers(0, 255),
        st.binary(max_size=300),
    ),
    st.builds(EapPacket, st.sampled_from([EapCode.SUCCESS, EapCode.FAILURE]), st.integers(0, 255)),
)


@given(packets, st.binary(max_size=8))
def test_round_trip(packet: EapPacket, padding: bytes) -> None:
    raw = packet.encode()
    assert len(raw) == packet.length
    assert int.from_bytes(raw[2:4], "big") == len(raw)
    assert EapPacket.decode(raw + padding) == packet
