"""ECHONET Lite under hostile input: Frame.decode, decode_any and decode_propmap raise only
EchonetDecodeError, and whatever decodes re-encodes to the same bytes."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.echonet.errors import EchonetDecodeError
from amistack.echonet.frame import Frame, decode_any
from amistack.echonet.propmap import decode_propmap

VALID = bytes.fromhex("1081000105ff010288016e01e5010101e200")


@settings(max_examples=600)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    try:
        f = Frame.decode(data)
    except EchonetDecodeError as e:
        assert 0 <= e.offset <= len(data)
    else:
        assert f.encode() == data
    with contextlib.suppress(EchonetDecodeError):
        decode_any(data)


@settings(max_examples=600)
@given(st.binary(max_size=40).map(lambda b: bytes.fromhex("1081") + b))
def test_random_format1_bodies(data: bytes) -> None:
    try:
        f = Frame.decode(data)
    except EchonetDecodeError as e:
        assert 0 <= e.offset <= len(data)
    else:
        assert f.encode() == data


@settings(max_examples=600)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=4))
def test_mutated_valid_frame(edits: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for i, v in edits:
        data[i] = v
    with contextlib.suppress(EchonetDecodeError):
        assert Frame.decode(bytes(data)).encode() == bytes(data)


@given(st.binary(max_size=40))
def test_random_propmaps(edt: bytes) -> None:
    try:
        decode_propmap(edt)
    except EchonetDecodeError as e:
        assert e.offset >= 0
