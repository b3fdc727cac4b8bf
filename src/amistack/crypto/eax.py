"""EAX mode (Bellare, Rogaway, Wagner 2004) over AES: CTR + OMAC (= CMAC).

EAX-PSK's protected channel (RFC 4764 §3.3) uses it with a 16-byte nonce and tag.
`cryptography` has no EAX, so it is composed here from its ECB, CTR and CMAC primitives:

    N' = OMAC_K^0(N)   H' = OMAC_K^1(H)   C = CTR_K^{N'}(M)   C' = OMAC_K^2(C)
    Tag = (N' xor C' xor H')[:tag_len]

where OMAC_K^t(X) = CMAC_K([t]_16 || X), [t]_16 being t as a 16-byte big-endian block.
The keyed contexts are built once per `Eax` object and reused for every message.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from amistack.crypto.aes import BLOCK, aes_ecb
from amistack.crypto.cmac import AesCmac

_MASK128 = (1 << 128) - 1
_ECB_CTR_MAX = 256  # short messages: CTR keystream from the reused ECB context, no new context


class EaxAuthError(Exception):
    """The EAX tag did not verify: the message was forged, altered or keyed wrongly."""


class Eax:
    """EAX authenticated encryption under one AES key."""

    __slots__ = ("_ecb", "_key", "_omac", "tag_len")

    def __init__(self, key: bytes, tag_len: int = 16) -> None:
        if len(key) not in (16, 24, 32):
            raise ValueError("EAX key must be 16, 24 or 32 bytes")
        if not 1 <= tag_len <= BLOCK:
            raise ValueError("EAX tag length must be 1..16 bytes")
        self._key = key
        self.tag_len = tag_len
        self._ecb = aes_ecb(key)
        cmac = AesCmac(key)
        self._omac = tuple(cmac.prefixed(t.to_bytes(BLOCK, "big")) for t in range(3))

    def _ctr(self, n_prime: bytes, data: bytes) -> bytes:
        # EAX's counter is the whole 128-bit block incremented modulo 2^128, as OpenSSL's CTR does.
        if not data:
            return b""
        if len(data) > _ECB_CTR_MAX:
            enc = Cipher(algorithms.AES(self._key), modes.CTR(n_prime)).encryptor()
            return enc.update(data) + enc.finalize()
        n = int.from_bytes(n_prime, "big")
        counters = b"".join(
            ((n + i) & _MASK128).to_bytes(BLOCK, "big") for i in range(-(-len(data) // BLOCK))
        )
        stream = self._ecb(counters)[: len(data)]
        return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(
            len(data), "big"
        )

    def _tag(self, n_prime: bytes, header: bytes, ciphertext: bytes) -> bytes:
        h_prime = self._omac[1].mac(header)
        c_prime = self._omac[2].mac(ciphertext)
        tag = (
            int.from_bytes(n_prime, "big")
            ^ int.from_bytes(c_prime, "big")
            ^ int.from_bytes(h_prime, "big")
        )
        return tag.to_bytes(BLOCK, "big")[: self.tag_len]

    def encrypt(self, nonce: bytes, plaintext: bytes, header: bytes = b"") -> tuple[bytes, bytes]:
        """Return (ciphertext, tag)."""
        n_prime = self._omac[0].mac(nonce)
        ciphertext = self._ctr(n_prime, plaintext)
        return ciphertext, self._tag(n_prime, header, ciphertext)

    def decrypt(self, nonce: bytes, ciphertext: bytes, tag: bytes, header: bytes = b"") -> bytes:
        """Return the plaintext, or raise EaxAuthError if the tag does not verify."""
        n_prime = self._omac[0].mac(nonce)
        expected = self._tag(n_prime, header, ciphertext)
        if len(tag) != self.tag_len or not hmac.compare_digest(expected, tag):
            raise EaxAuthError("EAX tag mismatch")
        return self._ctr(n_prime, ciphertext)
