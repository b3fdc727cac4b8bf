"""B-route credentials: validation and the documented PSK derivation (docs/broute.md)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from amistack.broute.credentials import (
    PSK_SALT,
    BrouteCredentials,
    CredentialError,
    psk_from_password,
)

RBID = "00112233445566778899AABBCCDDEEFF"
PASSWORD = "0123456789AB"


def rfc5869_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF written out from RFC 5869 §2 with hmac/hashlib: an independent implementation."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes((i,)), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def test_psk_is_hkdf_sha256_of_the_password_bound_to_the_rbid() -> None:
    psk = psk_from_password(RBID, PASSWORD)
    assert len(psk) == 16
    assert psk == rfc5869_sha256(PASSWORD.encode(), PSK_SALT, RBID.encode(), 16)
    # pinned, so a change of the derivation cannot go unnoticed (meters in the field use it)
    assert psk.hex() == "fa6d5ea66e119fd625509b2481069b14"


def test_same_password_other_rbid_gives_an_unrelated_key() -> None:
    other = "FFEEDDCCBBAA99887766554433221100"
    assert psk_from_password(RBID, PASSWORD) != psk_from_password(other, PASSWORD)
    assert psk_from_password(RBID, PASSWORD) != psk_from_password(RBID, "0123456789AC")


@pytest.mark.parametrize(
    ("rbid", "password", "message"),
    [
        (RBID[:-1], PASSWORD, "B-route ID must be exactly 32 characters, got 31"),
        (RBID + "0", PASSWORD, "exactly 32"),
        (RBID, PASSWORD[:-1], "B-route password must be exactly 12 characters, got 11"),
        (RBID[:-1] + " ", PASSWORD, "printable ASCII without spaces"),
        (RBID, "0123456789A\u00e9", "printable ASCII"),
        (RBID, "0123456789A\n", "at 11"),
    ],
)
def test_invalid_credentials_are_refused_with_a_clear_error(
    rbid: str, password: str, message: str
) -> None:
    with pytest.raises(CredentialError, match=message):
        BrouteCredentials(rbid, password)
    with pytest.raises(CredentialError):
        psk_from_password(rbid, password)


def test_credentials_never_show_the_password() -> None:
    c = BrouteCredentials(RBID, PASSWORD)
    assert PASSWORD not in repr(c) and RBID in repr(c)
    assert c.identity == RBID.encode()
    assert c.psk == psk_from_password(RBID, PASSWORD)
    with pytest.raises(CredentialError, match="must be a string"):
        BrouteCredentials(RBID, b"0123456789AB")  # type: ignore[arg-type]
