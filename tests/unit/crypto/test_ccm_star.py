"""AES-CCM* known answers from IEEE 802.15.4-2006 Annex C, every security level, tampering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.conftest import load_vector

from amistack.crypto.ccm_star import CcmStar, CcmStarAuthError, SecurityLevel, ccm_star_nonce

VECTORS = load_vector("ccm_star_802154.json")["vectors"]


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_annex_c_known_answers(v: dict[str, str]) -> None:
    key = bytes.fromhex(v["key"])
    nonce = bytes.fromhex(v["nonce"])
    aad = bytes.fromhex(v["aad"])
    pt = bytes.fromhex(v["plaintext"])
    expected = bytes.fromhex(v["ciphertext_and_mic"])
    level = SecurityLevel(nonce[-1])
    # the nonce builder gives the vector's nonce: source EUI-64 | counter | level
    assert ccm_star_nonce(nonce[:8], int.from_bytes(nonce[8:12], "big"), level) == nonce
    ccm = CcmStar(key, level)
    if level.encrypts:
        assert ccm.seal(nonce, aad, pt) == expected
        assert ccm.open(nonce, aad, expected) == pt
        sealed = expected
    else:  # MIC-only: the vector's "plaintext" is empty, its payload sits at the end of aad
        assert ccm.seal(nonce, aad, pt) == pt + expected
        sealed = pt + expected
    if level.mic_length:
        bad = bytes([sealed[0] ^ 1]) + sealed[1:]
        with pytest.raises(CcmStarAuthError):
            ccm.open(nonce, aad, bad)
        with pytest.raises(CcmStarAuthError):
            ccm.open(nonce, aad + b"\x00", sealed)


@given(
    level=st.sampled_from(list(SecurityLevel)),
    aad=st.binary(max_size=40),
    payload=st.binary(max_size=120),
    counter=st.integers(0, 0xFFFFFFFF),
)
def test_every_level_round_trips(
    level: SecurityLevel, aad: bytes, payload: bytes, counter: int
) -> None:
    ccm = CcmStar(bytes(range(16)), level)
    nonce = ccm_star_nonce(b"\x02" * 8, counter, level)
    sealed = ccm.seal(nonce, aad, payload)
    assert len(sealed) == len(payload) + level.mic_length
    assert (payload in sealed) or level.encrypts or not payload
    assert ccm.open(nonce, aad, sealed) == payload


def test_levels_and_bad_parameters() -> None:
    assert [lv.mic_length for lv in SecurityLevel] == [0, 4, 8, 16, 0, 4, 8, 16]
    assert [lv.encrypts for lv in SecurityLevel] == [False] * 4 + [True] * 4
    with pytest.raises(ValueError):
        CcmStar(bytes(15))
    with pytest.raises(ValueError):
        ccm_star_nonce(bytes(7), 0, 6)
    with pytest.raises(ValueError):
        ccm_star_nonce(bytes(8), 1 << 32, 6)
    with pytest.raises(ValueError):
        CcmStar(bytes(16)).seal(bytes(12), b"", b"")
    with pytest.raises(CcmStarAuthError):
        CcmStar(bytes(16)).open(bytes(13), b"", b"short")
    assert "key" not in repr(CcmStar(bytes(16)))
