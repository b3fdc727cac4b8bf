"""Known answers for the crypto layer: RFC 4493 (CMAC), the EAX paper, RFC 7296 prf+,
RFC 4231 / RFC 2202 (HMAC)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from Crypto.Cipher import AES
from hypothesis import given
from hypothesis import strategies as st

from amistack.crypto import Eax, EaxAuthError, PrfHash, aes_cmac, hmac_digest, prf_plus
from amistack.crypto import eax as eax_module
from amistack.crypto.eax import NativeEax

K4493 = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")


@pytest.mark.parametrize(
    ("msg", "mac"),
    [
        ("", "bb1d6929e95937287fa37d129b756746"),
        ("6bc1bee22e409f96e93d7e117393172a", "070a16b46b4d4144f79bdd9dd04a287c"),
        (
            "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411",
            "dfa66747de9ae63030ca32611497c827",
        ),
    ],
)
def test_cmac_rfc4493(msg: str, mac: str) -> None:
    assert aes_cmac(K4493, bytes.fromhex(msg)).hex() == mac


# Bellare, Rogaway, Wagner, "The EAX Mode of Operation", Appendix: test vectors.
EAX_VECTORS = [
    (
        "233952dee4d5ed5f9b9c6d6ff80ff478",
        "62ec67f9c3a4a407fcb2a8c49031a8b3",
        "6bfb914fd07eae6b",
        "",
        "e037830e8389f27b025a2d6527e79d01",
    ),
    (
        "91945d3f4dcbee0bf45ef52255f095a4",
        "becaf043b0a23d843194ba972c66debd",
        "fa3bfd4806eb53fa",
        "f7fb",
        "19dd5c4c9331049d0bdab0277408f67967e5",
    ),
    (
        "01f74ad64077f2e704c0f60ada3dd523",
        "70c3db4f0d26368400a10ed05d2bff5e",
        "234a3463c1264ac6",
        "1a47cb4933",
        "d851d5bae03a59f238a23e39199dc9266626c40f80",
    ),
]


# the reference and the C extension (crypto/_eax_prime.c) pass the same tests; that CI builds
# the extension is tests/unit/crypto/test_eax_prime.py's
EAX_KINDS: list[type[Eax] | type[NativeEax]] = [Eax, NativeEax] if eax_module.NATIVE else [Eax]
eax_kinds = pytest.mark.parametrize("eax_kind", EAX_KINDS, ids=lambda c: c.__name__)


@eax_kinds
@pytest.mark.parametrize(("key", "nonce", "header", "msg", "ct_tag"), EAX_VECTORS)
def test_eax_paper_vectors(
    key: str, nonce: str, header: str, msg: str, ct_tag: str, eax_kind: type[Eax]
) -> None:
    eax = eax_kind(bytes.fromhex(key))
    ct, tag = eax.encrypt(bytes.fromhex(nonce), bytes.fromhex(msg), bytes.fromhex(header))
    assert (ct + tag).hex() == ct_tag
    assert eax.decrypt(bytes.fromhex(nonce), ct, tag, bytes.fromhex(header)).hex() == msg


@given(
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=1, max_size=32),
    st.binary(max_size=64),
    st.binary(max_size=200),
)
def test_eax_matches_pycryptodome(key: bytes, nonce: bytes, header: bytes, msg: bytes) -> None:
    ref = AES.new(key, AES.MODE_EAX, nonce=nonce, mac_len=16)
    ref.update(header)
    ref_ct, ref_tag = ref.encrypt_and_digest(msg)
    ct, tag = Eax(key).encrypt(nonce, msg, header)
    assert (ct, tag) == (ref_ct, ref_tag)
    if eax_module.NATIVE:
        native = NativeEax(key)
        assert native.encrypt(nonce, msg, header) == (ref_ct, ref_tag)
        assert native.decrypt(nonce, ref_ct, ref_tag, header) == msg
        short = NativeEax(key, tag_len=8)  # a truncated tag is a prefix of the full one
        assert short.encrypt(nonce, msg, header) == (ref_ct, ref_tag[:8])
        assert short.decrypt(nonce, ref_ct, ref_tag[:8], header) == msg


@eax_kinds
def test_eax_rejects_tampering(eax_kind: type[Eax]) -> None:
    eax = eax_kind(bytes(16))
    ct, tag = eax.encrypt(b"n" * 16, b"secret reading", b"hdr")
    with pytest.raises(EaxAuthError):
        eax.decrypt(b"n" * 16, ct[:-1] + bytes([ct[-1] ^ 1]), tag, b"hdr")
    with pytest.raises(EaxAuthError):
        eax.decrypt(b"n" * 16, ct, tag, b"hdX")
    with pytest.raises(EaxAuthError):
        eax.decrypt(b"n" * 16, ct, tag[:8], b"hdr")  # a cut tag is no tag
    with pytest.raises(EaxAuthError):
        eax.decrypt(b"n" * 16, ct, b"", b"hdr")


def test_eax_picks_the_extension_for_aes128_only() -> None:
    assert isinstance(eax_module.eax(bytes(32)), Eax)
    want = NativeEax if eax_module.NATIVE else Eax
    assert isinstance(eax_module.eax(bytes(16)), want)
    if eax_module.NATIVE:
        with pytest.raises(ValueError):
            NativeEax(bytes(24))
        assert "00" not in repr(NativeEax(bytes(16)))


@given(st.binary(max_size=64), st.binary(max_size=64), st.integers(0, 400))
def test_prf_plus_definition(key: bytes, seed: bytes, length: int) -> None:
    # Independent re-statement of RFC 7296 §2.13 with the standard library only.
    out, t, n = b"", b"", 1
    while len(out) < length:
        t = hmac.new(key, t + seed + bytes([n]), hashlib.sha256).digest()
        out, n = out + t, n + 1
    assert prf_plus(PrfHash.SHA256, key, seed, length) == out[:length]


@pytest.mark.parametrize(
    ("hash_", "key", "data", "mac"),
    [
        # RFC 4231 §4.2 (test case 1) and §4.7 (test case 6: a key longer than the block)
        (
            PrfHash.SHA256,
            "0b" * 20,
            b"Hi There".hex(),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            PrfHash.SHA256,
            "aa" * 131,
            b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
        # RFC 2202 §3 (test cases 1 and 6)
        (PrfHash.SHA1, "0b" * 20, b"Hi There".hex(), "b617318655057264e28bc0b6fb378c8ef146be00"),
        (
            PrfHash.SHA1,
            "aa" * 80,
            b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112",
        ),
    ],
)
def test_hmac_digest_known_answers(hash_: PrfHash, key: str, data: str, mac: str) -> None:
    assert hmac_digest(hash_, bytes.fromhex(key), bytes.fromhex(data)).hex() == mac


@given(st.sampled_from(list(PrfHash)), st.binary(max_size=200), st.binary(max_size=300))
def test_hmac_digest_is_the_standard_librarys(hash_: PrfHash, key: bytes, data: bytes) -> None:
    # every key length around the 64-octet block (shorter, equal, longer: hashed first)
    assert hmac_digest(hash_, key, data) == hmac.digest(key, data, hash_.value)
    assert hmac_digest(hash_, bytearray(key), data) == hmac.digest(key, data, hash_.value)


def test_prf_plus_pana_auth_key_length() -> None:
    assert len(prf_plus(PrfHash.SHA1, b"k", b"IETF PANA", 20)) == 20
    with pytest.raises(ValueError):
        prf_plus(PrfHash.SHA1, b"k", b"s", 20 * 256)
