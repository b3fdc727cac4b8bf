"""The C entry points for C12.22's common message layout (`_eax_prime.c`: `c1222_seal`,
`c1222_parse`, `c1222_open`) against their Python references. What the engines send (`seal`)
is compared with `protect` + `encode`, and the one-pass reader with the Python reader and the
general decoder, in test_codec.py (every id size, damaged copies); here: what only the C side
has (declining ids past 64 bits, never raising on any bytes) and `unprotect`'s verdicts with
and without the C open. Without the extension the Python path serves alone and these skip."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amistack.c1222 import acse, security
from amistack.c1222.acse import AcseMessage, ApTitle
from amistack.c1222.epsem import ResponseControl, SecurityMode
from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.security import seal, unprotect
from amistack.crypto.eax_prime import NATIVE, native_c1222_parse

pytestmark = pytest.mark.skipif(not NATIVE, reason="the EAX' C extension is not built")


def test_c_seal_declines_ids_beyond_64_bits_and_the_reference_encodes_them() -> None:
    from amistack.crypto.eax_prime import native_c1222_seal

    assert native_c1222_seal is not None
    title = ApTitle((0, 1), relative=True)
    elements = (*title.called_elements, *title.calling_elements)
    args = (1, 2**64, None, 0x8A, 1, bytes(4), b"\x01\x30", True)
    assert native_c1222_seal(bytes(16), *elements, *args) is None
    with pytest.raises(ValueError):  # a short key is refused, never sealed
        native_c1222_seal(bytes(15), *elements, 1, None, None, 0x8A, 1, bytes(4), b"", True)
    wire = seal(
        title,
        title,
        1,
        [b"\x30\x00\x01"],
        SecurityMode.CIPHERTEXT_AUTH,
        ResponseControl.ALWAYS,
        bytes(16),
        1,
        bytes(4),
        called_invocation_id=2**64,
    )
    assert AcseMessage.decode(wire).called_ap_invocation_id == 2**64


@given(st.binary(max_size=140))
def test_c_parse_on_arbitrary_bytes(data: bytes) -> None:
    assert native_c1222_parse is not None
    native_c1222_parse(data)  # never raises, whatever the bytes
    with contextlib.suppress(C1222DecodeError):  # titles into the cache, as a first message
        AcseMessage._decode(data)
    fast = acse._decode_common(data)
    assert fast is None or fast == acse._decode_common_py(data)


@given(
    key=st.binary(min_size=16, max_size=16),
    other=st.binary(min_size=16, max_size=16),
    service=st.binary(min_size=1, max_size=300),
    mode=st.sampled_from([SecurityMode.CIPHERTEXT_AUTH, SecurityMode.CLEARTEXT_AUTH]),
    flip=st.none() | st.tuples(st.integers(0, 400), st.integers(1, 255)),
    short=st.booleans(),
)
def test_c_open_gives_the_python_verdicts(
    key: bytes,
    other: bytes,
    service: bytes,
    mode: SecurityMode,
    flip: tuple[int, int] | None,
    short: bool,
) -> None:
    """`unprotect` with the C open and with the Python EAX' loop: the same EPSEM and key, or
    the same refusal (auth-failed, cleartext-too-short for a key that is not 16 bytes, a
    decode error of a verified body), for right and wrong keys and damaged messages."""
    title = ApTitle((0, 7), relative=True)
    wire = bytearray(
        seal(title, title, 5, [service], mode, ResponseControl.ALWAYS, key, 2, b"\x09" * 4)
    )
    if flip is not None:
        wire[flip[0] % len(wire)] ^= flip[1]
    try:
        msg = AcseMessage.decode(bytes(wire))
    except C1222DecodeError:
        return
    keys = [other[:15] if short else other, key]

    def outcome() -> object:
        try:
            got = unprotect(msg, keys)
        except (security.C1222SecurityError, C1222DecodeError) as exc:
            return type(exc), getattr(exc, "reason", None)
        return got.epsem, got.key, got.key_id

    fast = outcome()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(security, "native_c1222_open", None)
        assert outcome() == fast
