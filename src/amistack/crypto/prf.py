"""HMAC PRFs and prf+ (RFC 7296 §2.13), the KDF PANA (RFC 5191 §5.3) and the UKMF use."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from enum import Enum
from typing import Any


class PrfHash(Enum):
    """The hash under an HMAC PRF; values are hashlib names."""

    SHA1 = "sha1"
    SHA256 = "sha256"

    @property
    def digest_size(self) -> int:
        return 20 if self is PrfHash.SHA1 else 32


# HMAC (RFC 2104) over hashlib's one-shot hashes. Python's `hmac.digest` goes through
# OpenSSL 3's EVP_MAC, which looks the algorithm up on every call: ~2.5 us against ~1.1 us
# for the two hashes here, and PANA runs several HMACs per authentication (AUTH, prf+).
_BLOCK = 64  # B, the block size of SHA-1 and SHA-256 (RFC 2104 §2)
_IPAD = bytes(b ^ 0x36 for b in range(256))  # byte-wise key XOR ipad, as a translate table
_OPAD = bytes(b ^ 0x5C for b in range(256))
_HASHES = {PrfHash.SHA1: hashlib.sha1, PrfHash.SHA256: hashlib.sha256}


def hmac_digest(hash_: PrfHash, key: bytes, data: bytes) -> bytes:
    """HMAC(key, data) with SHA-1 or SHA-256 (RFC 2104), what `hmac.digest` returns."""
    return _hmac(_HASHES[hash_], key, data)


def _hmac(new: Callable[[bytes], Any], key: bytes, data: bytes) -> bytes:
    if len(key) > _BLOCK:
        key = new(key).digest()  # RFC 2104 §2: a longer key is hashed first
    key = key.ljust(_BLOCK, b"\0")
    inner: bytes = new(key.translate(_IPAD) + data).digest()
    out: bytes = new(key.translate(_OPAD) + inner).digest()
    return out


def prf_plus(hash_: PrfHash, key: bytes, seed: bytes, length: int) -> bytes:
    """prf+(K, S) = T1 | T2 | ..., T1 = prf(K, S | 0x01), Tn = prf(K, T(n-1) | S | n).

    RFC 7296 §2.13 limits n to 255 octets' worth of counter.
    """
    if length < 0:
        raise ValueError("length must be >= 0")
    size = 20 if hash_ is PrfHash.SHA1 else 32
    if length <= size:  # one block (every UKMF key): T1 = prf(K, S | 0x01)
        return _hmac(_HASHES[hash_], key, seed + b"\x01")[:length]
    rounds = -(-length // size)
    if rounds > 255:
        raise ValueError("prf+ output longer than 255 blocks")
    out = bytearray()
    t = b""
    new = _HASHES[hash_]
    for n in range(1, rounds + 1):
        t = _hmac(new, key, t + seed + bytes([n]))
        out += t
    return bytes(out[:length])
