"""The C entry points for C12.22's common message layout (`_eax_prime.c`: `c1222_seal`,
`c1222_parse`) against their Python references (`acse.encode_header` + EAX', and
`acse._decode_common_py`): the same bytes, the same messages and cleartexts, the same
refusals, on arbitrary and damaged inputs. Without the extension the Python path serves alone
and these skip (CI builds it: the wheel's optional extension needs only OpenSSL's headers)."""

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

arcs = st.lists(st.integers(0, 2**40), min_size=1, max_size=6)
titles = st.builds(lambda a: ApTitle(tuple(a), relative=True), arcs) | st.builds(
    lambda a: ApTitle((2, 16, 124, *a)), arcs
)
ids = st.integers(0, 2**32 - 1) | st.integers(0, 2**72)  # beyond 64 bits: the Python path


def _reference_seal(monkeypatch: pytest.MonkeyPatch, *args: object, **kw: object) -> bytes:
    with monkeypatch.context() as m:
        m.setattr(security, "native_c1222_seal", None)
        return seal(*args, **kw)  # type: ignore[arg-type]


@given(
    called=titles,
    calling=titles,
    inv=ids,
    called_inv=st.none() | ids,
    qualifier=st.none() | ids,
    services=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=3),
    mode=st.sampled_from([SecurityMode.CIPHERTEXT_AUTH, SecurityMode.CLEARTEXT_AUTH]),
    rc=st.sampled_from(ResponseControl),
    ed_class=st.none() | st.binary(min_size=4, max_size=4),
    key=st.binary(min_size=16, max_size=16),
    key_id=st.integers(0, 255),
    iv=st.binary(min_size=4, max_size=4),
)
def test_c_seal_is_the_python_seal_byte_for_byte(
    called: ApTitle,
    calling: ApTitle,
    inv: int,
    called_inv: int | None,
    qualifier: int | None,
    services: list[bytes],
    mode: SecurityMode,
    rc: ResponseControl,
    ed_class: bytes | None,
    key: bytes,
    key_id: int,
    iv: bytes,
) -> None:
    args = (called, calling, inv, services, mode, rc, key, key_id, iv)
    kw = {"called_invocation_id": called_inv, "calling_ae_qualifier": qualifier}
    kw_all = {**kw, "ed_class": ed_class}
    with pytest.MonkeyPatch.context() as mp:
        expected = _reference_seal(mp, *args, **kw_all)
    assert seal(*args, **kw_all) == expected  # type: ignore[arg-type]
    if max(inv, called_inv or 0, qualifier or 0) >= 2**64:
        return  # beyond what a receiver decodes (INTEGER too large): sealing is the point
    # and the receiving side opens it with the key, whichever path decoded it
    opened = unprotect(AcseMessage.decode(expected), [key])
    assert opened.epsem.services == tuple(services)


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


def _same_decode(data: bytes) -> None:
    """C and Python readers of the common layout: both decline, or both give the same
    message and EAX' cleartext (the C reader may decline 9-octet INTEGERs: the general
    decoder then decides, as it does for everything either declines)."""
    with contextlib.suppress(C1222DecodeError):  # titles into the cache, as a first message
        AcseMessage._decode(data)
    fast = acse._decode_common(data)
    ref = acse._decode_common_py(data)
    if fast is None:
        assert (
            ref is None
            or max(
                ref.calling_ap_invocation_id or 0,
                ref.called_ap_invocation_id or 0,
                ref.calling_ae_qualifier or 0,
            )
            >= 2**64
        )
        return
    assert ref is not None
    assert fast == ref
    assert fast.canonical_cleartext() == ref.canonical_cleartext()
    assert fast.user_information == ref.user_information


@given(
    called=titles,
    calling=titles,
    inv=ids,
    called_inv=st.none() | ids,
    qualifier=st.none() | ids,
    service=st.binary(min_size=1, max_size=140),
    mode=st.sampled_from(SecurityMode),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 255)), max_size=3),
    cut=st.integers(0, 3),
)
def test_c_parse_is_the_python_reader_on_sent_and_damaged_messages(
    called: ApTitle,
    calling: ApTitle,
    inv: int,
    called_inv: int | None,
    qualifier: int | None,
    service: bytes,
    mode: SecurityMode,
    flips: list[tuple[int, int]],
    cut: int,
) -> None:
    data = bytearray(
        seal(
            called,
            calling,
            inv,
            [service],
            mode,
            ResponseControl.ALWAYS,
            bytes(16),
            3,
            b"\x01\x02\x03\x04",
            called_invocation_id=called_inv,
            calling_ae_qualifier=qualifier,
        )
    )
    _same_decode(bytes(data))
    for at, bits in flips:
        data[at % len(data)] ^= bits
    _same_decode(bytes(data[: len(data) - cut]))


@given(st.binary(max_size=140))
def test_c_parse_on_arbitrary_bytes(data: bytes) -> None:
    assert native_c1222_parse is not None
    native_c1222_parse(data)  # never raises, whatever the bytes
    _same_decode(data)


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
