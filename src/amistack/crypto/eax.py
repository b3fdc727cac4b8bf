"""EAX mode (Bellare, Rogaway, Wagner 2004) over AES: CTR + OMAC (= CMAC).

EAX-PSK's protected channel (RFC 4764 §3.3) uses it with a 16-byte nonce and tag.
`cryptography` has no EAX, so it is composed here from its CTR and CMAC primitives:

    N' = OMAC_K^0(N)   H' = OMAC_K^1(H)   C = CTR_K^{N'}(M)   C' = OMAC_K^2(C)
    Tag = (N' xor C' xor H')[:tag_len]

where OMAC_K^t(X) = CMAC_K([t]_16 || X), [t]_16 being t as a 16-byte big-endian block.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from amistack.crypto.aes import BLOCK, xor_bytes
from amistack.crypto.cmac import aes_cmac


class EaxAuthError(Exception):
    """The EAX tag did not verify: the message was forged, altered or keyed wrongly."""


def _omac(key: bytes, t: int, data: bytes) -> bytes:
    return aes_cmac(key, t.to_bytes(BLOCK, "big") + data)


class Eax:
    """EAX authenticated encryption under one AES key."""

    __slots__ = ("_key", "tag_len")

    def __init__(self, key: bytes, tag_len: int = 16) -> None:
        if len(key) not in (16, 24, 32):
            raise ValueError("EAX key must be 16, 24 or 32 bytes")
        if not 1 <= tag_len <= BLOCK:
            raise ValueError("EAX tag length must be 1..16 bytes")
        self._key = key
        self.tag_len = tag_len

    def _ctr(self, n_prime: bytes, data: bytes) -> bytes:
        # EAX's counter is the whole 128-bit block incremented modulo 2^128, as OpenSSL's CTR does.
        enc = Cipher(algorithms.AES(self._key), modes.CTR(n_prime)).encryptor()
        return enc.update(data) + enc.finalize()

    def _tag(self, n_prime: bytes, header: bytes, ciphertext: bytes) -> bytes:
        h_prime = _omac(self._key, 1, header)
        c_prime = _omac(self._key, 2, ciphertext)
        return xor_bytes(xor_bytes(n_prime, c_prime), h_prime)[: self.tag_len]

    def encrypt(self, nonce: bytes, plaintext: bytes, header: bytes = b"") -> tuple[bytes, bytes]:
        """Return (ciphertext, tag)."""
        n_prime = _omac(self._key, 0, nonce)
        ciphertext = self._ctr(n_prime, plaintext)
        return ciphertext, self._tag(n_prime, header, ciphertext)

    def decrypt(self, nonce: bytes, ciphertext: bytes, tag: bytes, header: bytes = b"") -> bytes:
        """Return the plaintext, or raise EaxAuthError if the tag does not verify."""
        n_prime = _omac(self._key, 0, nonce)
        expected = self._tag(n_prime, header, ciphertext)
        if len(tag) != self.tag_len or not hmac.compare_digest(expected, tag):
            raise EaxAuthError("EAX tag mismatch")
        return self._ctr(n_prime, ciphertext)
