"""EAX' (ANSI C12.22 Annex I): the four published vectors, the little-endian doubling, and the
refusal of a one-block cleartext (ePrint 2012/018)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.conftest import load_vector

from amistack.crypto.eax import EaxAuthError
from amistack.crypto.eax_prime import EaxPrime, EaxPrimeError, dbl_le

VECTORS: list[dict[str, Any]] = load_vector("eax_prime.json")["vectors"]


@pytest.mark.parametrize("vec", VECTORS, ids=[f"vector{i + 1}" for i in range(len(VECTORS))])
def test_published_vectors_encrypt(vec: dict[str, str]) -> None:
    eax = EaxPrime(bytes.fromhex(vec["key"]))
    ct, tag = eax.encrypt(bytes.fromhex(vec["cleartext"]), bytes.fromhex(vec["plaintext"]))
    assert ct.hex() == vec["ciphertext"]
    assert tag.hex() == vec["tag"]


@pytest.mark.parametrize("vec", VECTORS, ids=[f"vector{i + 1}" for i in range(len(VECTORS))])
def test_published_vectors_decrypt(vec: dict[str, str]) -> None:
    eax = EaxPrime(bytes.fromhex(vec["key"]))
    pt = eax.decrypt(
        bytes.fromhex(vec["cleartext"]), bytes.fromhex(vec["ciphertext"]), bytes.fromhex(vec["tag"])
    )
    assert pt.hex() == vec["plaintext"]


def test_doubling_is_little_endian() -> None:
    # the top bit of byte 15 carries out: 0x87 goes into byte 0, the rest shifts up one bit
    assert dbl_le(bytes(15) + b"\x80") == b"\x87" + bytes(15)
    assert dbl_le(b"\x80" + bytes(15)) == b"\x00\x01" + bytes(14)
    assert dbl_le(b"\x01" + bytes(15)) == b"\x02" + bytes(15)


@pytest.mark.parametrize("where", ["cleartext", "ciphertext", "tag"])
def test_any_altered_byte_fails(where: str) -> None:
    vec = VECTORS[2]
    eax = EaxPrime(bytes.fromhex(vec["key"]))
    parts = {k: bytearray.fromhex(vec[k]) for k in ("cleartext", "ciphertext", "tag")}
    parts[where][-1] ^= 0x01
    with pytest.raises(EaxAuthError):
        eax.decrypt(bytes(parts["cleartext"]), bytes(parts["ciphertext"]), bytes(parts["tag"]))


def test_wrong_key_fails() -> None:
    vec = VECTORS[0]
    with pytest.raises(EaxAuthError):
        EaxPrime(bytes(16)).decrypt(
            bytes.fromhex(vec["cleartext"]),
            bytes.fromhex(vec["ciphertext"]),
            bytes.fromhex(vec["tag"]),
        )


@pytest.mark.parametrize("n", [0, 1, 15, 16])
def test_one_block_cleartext_refused(n: int) -> None:
    eax = EaxPrime(bytes(range(16)))
    with pytest.raises(EaxPrimeError, match="2012/018"):
        eax.encrypt(bytes(n), b"secret")
    with pytest.raises(EaxPrimeError, match="2012/018"):
        eax.decrypt(bytes(n), b"secret", bytes(4))
    with pytest.raises(EaxPrimeError, match="2012/018"):
        eax.authenticate(bytes(n), b"x")


def test_seventeen_bytes_accepted() -> None:
    eax = EaxPrime(bytes(range(16)))
    ct, tag = eax.encrypt(bytes(17), b"meter")
    assert eax.decrypt(bytes(17), ct, tag) == b"meter"


def test_authenticate_only_binds_plaintext() -> None:
    eax = EaxPrime(bytes(range(16)))
    clear = b"A" * 40
    tag = eax.authenticate(clear, b"reading=42")
    eax.verify(clear, b"reading=42", tag)
    with pytest.raises(EaxAuthError):
        eax.verify(clear, b"reading=43", tag)
    assert len(tag) == 4


def test_key_size_and_repr() -> None:
    with pytest.raises(EaxPrimeError):
        EaxPrime(bytes(32))
    assert "01" not in repr(EaxPrime(bytes([1] * 16)))


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
