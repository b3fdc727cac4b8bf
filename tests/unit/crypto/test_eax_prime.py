"""EAX' (ANSI C12.22 Annex I): the four published vectors, the little-endian doubling, and the
refusal of a one-block cleartext (ePrint 2012/018) - for both implementations: the reference
(`EaxPrime`, over `cryptography`) and the C extension (`NativeEaxPrime`, over OpenSSL), which
must also agree with each other on arbitrary input and be built (and current) under CI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.conftest import load_vector, unavailable

from amistack.crypto import eax_prime as module
from amistack.crypto.eax import EaxAuthError
from amistack.crypto.eax_prime import (
    NATIVE,
    EaxPrime,
    EaxPrimeError,
    NativeEaxPrime,
    dbl_le,
    eax_prime,
)

VECTORS: list[dict[str, Any]] = load_vector("eax_prime.json")["vectors"]
SOURCE = Path(__file__).resolve().parents[3] / "src" / "amistack" / "crypto" / "_eax_prime.c"
Impl = type[EaxPrime] | type[NativeEaxPrime]
IMPLS: list[Impl] = [EaxPrime, NativeEaxPrime] if NATIVE else [EaxPrime]
impls = pytest.mark.parametrize("impl", IMPLS, ids=lambda c: c.__name__)


def _require_native() -> None:
    if not NATIVE:
        unavailable(
            "amistack.crypto._eax_prime is not built: `pip install -e .` (make setup) compiles "
            "it (setup.py; needs a C compiler and OpenSSL's headers, Debian libssl-dev)"
        )


def test_the_extension_is_built_under_ci() -> None:
    _require_native()
    assert isinstance(eax_prime(bytes(16)), NativeEaxPrime)


def test_the_extension_is_not_older_than_its_source() -> None:
    # an editable install keeps the .so it built: an edited _eax_prime.c needs a rebuild
    _require_native()
    assert module._native is not None
    built = Path(module._native.__file__).stat().st_mtime
    assert built >= SOURCE.stat().st_mtime, f"rebuild {module._native.__file__}: make setup"


@given(
    key=st.binary(min_size=16, max_size=16),
    clear=st.binary(min_size=17, max_size=80),
    plain=st.binary(max_size=200),
    flip=st.integers(0, 1000),
)
def test_the_extension_agrees_with_the_reference(
    key: bytes, clear: bytes, plain: bytes, flip: int
) -> None:
    if not NATIVE:
        return
    ref, native = EaxPrime(key), NativeEaxPrime(key)
    ct, tag = ref.encrypt(clear, plain)
    assert native.encrypt(clear, plain) == (ct, tag)
    assert native.authenticate(clear, plain) == ref.authenticate(clear, plain)
    assert native.decrypt(clear, ct, tag) == plain
    # any one altered bit of cleartext, ciphertext or tag: both refuse
    sealed = bytearray(clear + ct + tag)
    sealed[flip % len(sealed)] ^= 1 << (flip % 8)
    c2, ct2, tag2 = (
        bytes(sealed[: len(clear)]),
        bytes(sealed[len(clear) : -4]),
        bytes(sealed[-4:]),
    )
    for impl in (ref, native):
        with pytest.raises(EaxAuthError):
            impl.decrypt(c2, ct2, tag2)


@impls
@pytest.mark.parametrize("vec", VECTORS, ids=[f"vector{i + 1}" for i in range(len(VECTORS))])
def test_published_vectors_encrypt(impl: Impl, vec: dict[str, str]) -> None:
    eax = impl(bytes.fromhex(vec["key"]))
    ct, tag = eax.encrypt(bytes.fromhex(vec["cleartext"]), bytes.fromhex(vec["plaintext"]))
    assert ct.hex() == vec["ciphertext"]
    assert tag.hex() == vec["tag"]


@impls
@pytest.mark.parametrize("vec", VECTORS, ids=[f"vector{i + 1}" for i in range(len(VECTORS))])
def test_published_vectors_decrypt(impl: Impl, vec: dict[str, str]) -> None:
    eax = impl(bytes.fromhex(vec["key"]))
    pt = eax.decrypt(
        bytes.fromhex(vec["cleartext"]), bytes.fromhex(vec["ciphertext"]), bytes.fromhex(vec["tag"])
    )
    assert pt.hex() == vec["plaintext"]


def test_doubling_is_little_endian() -> None:
    # the top bit of byte 15 carries out: 0x87 goes into byte 0, the rest shifts up one bit
    assert dbl_le(bytes(15) + b"\x80") == b"\x87" + bytes(15)
    assert dbl_le(b"\x80" + bytes(15)) == b"\x00\x01" + bytes(14)
    assert dbl_le(b"\x01" + bytes(15)) == b"\x02" + bytes(15)


@impls
@pytest.mark.parametrize("where", ["cleartext", "ciphertext", "tag"])
def test_any_altered_byte_fails(impl: Impl, where: str) -> None:
    vec = VECTORS[2]
    eax = impl(bytes.fromhex(vec["key"]))
    parts = {k: bytearray.fromhex(vec[k]) for k in ("cleartext", "ciphertext", "tag")}
    parts[where][-1] ^= 0x01
    with pytest.raises(EaxAuthError):
        eax.decrypt(bytes(parts["cleartext"]), bytes(parts["ciphertext"]), bytes(parts["tag"]))


@impls
def test_wrong_key_fails(impl: Impl) -> None:
    vec = VECTORS[0]
    with pytest.raises(EaxAuthError):
        impl(bytes(16)).decrypt(
            bytes.fromhex(vec["cleartext"]),
            bytes.fromhex(vec["ciphertext"]),
            bytes.fromhex(vec["tag"]),
        )


@impls
@pytest.mark.parametrize("n", [0, 1, 15, 16])
def test_one_block_cleartext_refused(impl: Impl, n: int) -> None:
    eax = impl(bytes(range(16)))
    with pytest.raises(EaxPrimeError, match="2012/018"):
        eax.encrypt(bytes(n), b"secret")
    with pytest.raises(EaxPrimeError, match="2012/018"):
        eax.decrypt(bytes(n), b"secret", bytes(4))
    with pytest.raises(EaxPrimeError, match="2012/018"):
        eax.authenticate(bytes(n), b"x")


@impls
def test_seventeen_bytes_accepted(impl: Impl) -> None:
    eax = impl(bytes(range(16)))
    ct, tag = eax.encrypt(bytes(17), b"meter")
    assert eax.decrypt(bytes(17), ct, tag) == b"meter"


@impls
def test_authenticate_only_binds_plaintext(impl: Impl) -> None:
    eax = impl(bytes(range(16)))
    clear = b"A" * 40
    tag = eax.authenticate(clear, b"reading=42")
    eax.verify(clear, b"reading=42", tag)
    with pytest.raises(EaxAuthError):
        eax.verify(clear, b"reading=43", tag)
    assert len(tag) == 4


@impls
def test_key_size_and_repr(impl: Impl) -> None:
    with pytest.raises(EaxPrimeError):
        impl(bytes(32))
    assert "01" not in repr(impl(bytes([1] * 16)))
    with pytest.raises(EaxPrimeError):
        impl(bytes(15))


@given(
    key=st.binary(min_size=16, max_size=16),
    clear=st.binary(min_size=17, max_size=100),
    plain=st.binary(max_size=300),
)
def test_round_trip(key: bytes, clear: bytes, plain: bytes) -> None:
    eax = EaxPrime(key)
    ct, tag = eax.encrypt(clear, plain)
    assert len(ct) == len(plain) and len(tag) == 4
    assert eax.decrypt(clear, ct, tag) == plain


@pytest.mark.parametrize("native", [True, False], ids=["extension", "reference"])
@given(
    key=st.binary(min_size=16, max_size=16),
    clear=st.binary(min_size=17, max_size=60),
    plain=st.binary(max_size=100),
)
def test_the_per_call_functions_are_the_methods(
    native: bool, key: bytes, clear: bytes, plain: bytes
) -> None:
    """What the C12.22 engines call per message (no object per call) gives the methods'
    results and refusals, by the extension and by the reference."""
    if native and not NATIVE:
        return
    saved = module._native
    module._native = saved if native else None  # type: ignore[assignment]
    try:
        ref = EaxPrime(key)
        ct, tag = ref.encrypt(clear, plain)
        assert module.encrypt_with_key(key, clear, plain) == (ct, tag)
        assert module.decrypt_with_key(key, clear, ct, tag) == plain
        mac = ref.authenticate(clear, plain)
        assert module.authenticate_with_key(key, clear, plain) == mac
        module.verify_with_key(key, clear, plain, mac)
        bad = bytes([tag[0] ^ 1]) + tag[1:]
        with pytest.raises(EaxAuthError):
            module.decrypt_with_key(key, clear, ct, bad)
        with pytest.raises(EaxAuthError):
            module.verify_with_key(key, clear, plain, bytes([mac[0] ^ 1]) + mac[1:])
        with pytest.raises(EaxPrimeError):
            module.encrypt_with_key(key, clear[:16], plain)
        with pytest.raises(EaxPrimeError):
            module.decrypt_with_key(key[:15], clear, ct, tag)
    finally:
        module._native = saved
