"""EAX mode (Bellare, Rogaway, Wagner 2004) over AES: CTR + OMAC (= CMAC).

EAX-PSK's protected channel (RFC 4764 §3.3) uses it with a 16-byte nonce and tag.
`cryptography` has no EAX, so it is composed here from its ECB, CTR and CMAC primitives:

    N' = OMAC_K^0(N)   H' = OMAC_K^1(H)   C = CTR_K^{N'}(M)   C' = OMAC_K^2(C)
    Tag = (N' xor C' xor H')[:tag_len]

where OMAC_K^t(X) = CMAC_K([t]_16 || X), [t]_16 being t as a 16-byte big-endian block.
The keyed contexts are built once per `Eax` object and reused for every message.

`NativeEax` is the same algorithm in one C call per message over OpenSSL (`_eax_prime.c`, the
optional extension that also carries EAX'), for AES-128 keys; `eax(key)` picks it when it is
built. EAP-PSK keys a TEK per authentication and protects two short messages with it, so the
reference's per-key set-up (three keyed CMAC contexts and an ECB context) was most of its cost.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from amistack.crypto.aes import BLOCK, aes_ecb
from amistack.crypto.cmac import AesCmac

try:  # the optional C extension (setup.py); without it `Eax` serves alone
    from amistack.crypto import _eax_prime as _native
except ImportError:  # pragma: no cover - a build without a C compiler or OpenSSL headers
    _native = None  # type: ignore[assignment]

NATIVE = _native is not None
NATIVE_KEY_LEN = 16  # the extension's AES context is AES-128

_MASK128 = (1 << 128) - 1
_ECB_CTR_MAX = 256  # short messages: CTR keystream from the reused ECB context, no new context


class EaxAuthError(Exception):
    """The EAX tag did not verify: the message was forged, altered or keyed wrongly."""


def _check_tag_len(tag_len: int) -> None:
    if not 1 <= tag_len <= BLOCK:
        raise ValueError("EAX tag length must be 1..16 bytes")


class Eax:
    """EAX authenticated encryption under one AES key."""

    __slots__ = ("_ecb", "_key", "_omac", "tag_len")

    def __init__(self, key: bytes, tag_len: int = 16) -> None:
        if len(key) not in (16, 24, 32):
            raise ValueError("EAX key must be 16, 24 or 32 bytes")
        _check_tag_len(tag_len)
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


class NativeEax:
    """`Eax` under one AES-128 key by the C extension: the same interface and results, each
    call one pass in C (key schedule, the three OMACs, CTR); nothing is kept per key."""

    __slots__ = ("_key", "tag_len")

    def __init__(self, key: bytes, tag_len: int = 16) -> None:
        if _native is None:
            raise RuntimeError("the EAX extension (amistack.crypto._eax_prime) is not built")
        if len(key) != NATIVE_KEY_LEN:
            raise ValueError("the native EAX takes AES-128 keys: 16 bytes")
        _check_tag_len(tag_len)
        self._key = bytes(key)
        self.tag_len = tag_len

    def __repr__(self) -> str:  # never the key
        return "NativeEax(<key>)"

    def encrypt(self, nonce: bytes, plaintext: bytes, header: bytes = b"") -> tuple[bytes, bytes]:
        """Return (ciphertext, tag)."""
        assert _native is not None
        ciphertext, tag = _native.eax_encrypt(self._key, nonce, header, plaintext)
        return ciphertext, tag[: self.tag_len]

    def decrypt(self, nonce: bytes, ciphertext: bytes, tag: bytes, header: bytes = b"") -> bytes:
        """Return the plaintext, or raise EaxAuthError if the tag does not verify."""
        assert _native is not None
        plaintext = (
            _native.eax_decrypt(self._key, nonce, header, ciphertext, tag)
            if len(tag) == self.tag_len
            else None
        )
        if plaintext is None:
            raise EaxAuthError("EAX tag mismatch")
        return plaintext


def eax(key: bytes, tag_len: int = 16) -> Eax | NativeEax:
    """EAX under `key`: the C extension for an AES-128 key when it is built, else `Eax`."""
    if _native is not None and len(key) == NATIVE_KEY_LEN:
        return NativeEax(key, tag_len)
    return Eax(key, tag_len)
