"""The C12.22 Registration codec (c1222/registration.py) under hostile input: random and
mutated octets raise only C1222DecodeError, and what decodes encodes back to a request that
decodes to the same thing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.c1222.acse import ApTitle
from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.registration import Registration, RegistrationResult, native_address
from amistack.c1222.services import decode_request

TITLE = ApTitle.parse(".0.7.1")
REQUEST = Registration(TITLE, native_address("fd00::11", 1153), 1800).encode()
ANSWER = RegistrationResult(TITLE, 1800, 30).encode()


def _mutated(base: bytes) -> st.SearchStrategy[bytes]:
    """`base` with a few octets changed, cut short or lengthened."""
    changes = st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), max_size=4)
    return st.tuples(changes, st.integers(0, len(base)), st.binary(max_size=8)).map(
        lambda t: _apply(base, t[0])[: t[1]] + t[2]
    )


def _apply(base: bytes, changes: list[tuple[int, int]]) -> bytes:
    out = bytearray(base)
    for at, value in changes:
        out[at] = value
    return bytes(out)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_mutated(REQUEST), st.binary(max_size=80).map(lambda b: b"\x27" + b)))
def test_registration_requests(data: bytes) -> None:
    try:
        reg = Registration.decode(data)
    except C1222DecodeError:
        return
    assert decode_request(data) == reg
    assert Registration.decode(reg.encode()) == reg


@settings(max_examples=500, deadline=None)
@given(st.one_of(_mutated(ANSWER), st.binary(max_size=40)))
def test_registration_answers(data: bytes) -> None:
    try:
        result = RegistrationResult.decode(data)
    except C1222DecodeError:
        return
    assert RegistrationResult.decode(result.encode()) == result
