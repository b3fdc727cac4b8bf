"""Property maps: list form below 16 EPCs, bitmap from 16 on, strict decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amistack.echonet.errors import EchonetDecodeError
from amistack.echonet.propmap import decode_propmap, encode_propmap

epc_sets = st.frozensets(st.integers(0x80, 0xFF), max_size=128)


def test_list_form() -> None:
    edt = encode_propmap([0x9F, 0x80, 0x9D])
    assert edt == bytes([3, 0x80, 0x9D, 0x9F])
    assert decode_propmap(edt) == {0x80, 0x9D, 0x9F}


def test_boundary_15_is_a_list_16_is_a_bitmap() -> None:
    fifteen = list(range(0x80, 0x8F))
    sixteen = list(range(0x80, 0x90))
    assert len(encode_propmap(fifteen)) == 16 and encode_propmap(fifteen)[1:] == bytes(fifteen)
    edt = encode_propmap(sixteen)
    assert len(edt) == 17 and edt[0] == 16
    # 0x80..0x8F: bit 0 of each of the 16 bytes.
    assert edt[1:] == bytes([0x01] * 16)
    assert decode_propmap(edt) == set(sixteen)


def test_bitmap_layout_of_the_spec() -> None:
    epcs = {0x80 + i for i in range(15)} | {0xE7, 0xFF}
    edt = encode_propmap(epcs)
    # EPC 0xE7: byte 0x7, bit (0xE - 8) = 6; EPC 0xFF: byte 0xF, bit 7.
    assert edt[1 + 0x7] & (1 << 6)
    assert edt[1 + 0xF] & (1 << 7)
    assert decode_propmap(edt) == epcs


@given(epc_sets)
def test_round_trip(epcs: frozenset[int]) -> None:
    edt = encode_propmap(epcs)
    assert len(edt) == (1 + len(epcs) if len(epcs) < 16 else 17)
    assert decode_propmap(edt) == epcs


@pytest.mark.parametrize(
    "edt",
    [
        b"",
        bytes([2, 0x80]),
        bytes([1, 0x80, 0x81]),
        bytes([2, 0x80, 0x80]),
        bytes([1, 0x10]),
        bytes([16]) + bytes(15),
        bytes([16]) + bytes(16),
        bytes([17]) + bytes([0x01] * 16),
    ],
)
def test_malformed_maps(edt: bytes) -> None:
    with pytest.raises(EchonetDecodeError):
        decode_propmap(edt)


def test_encode_refuses_low_epcs() -> None:
    with pytest.raises(ValueError):
        encode_propmap([0x7F])


@given(st.binary(max_size=20))
def test_random_maps_only_raise_typed(edt: bytes) -> None:
    try:
        out = decode_propmap(edt)
    except EchonetDecodeError:
        return
    assert encode_propmap(out) == edt
