"""HMAC PRFs and prf+ (RFC 7296 §2.13), the KDF PANA (RFC 5191 §5.3) and the UKMF use."""

from __future__ import annotations

import hmac
from enum import Enum


class PrfHash(Enum):
    """The hash under an HMAC PRF; values are hashlib names."""

    SHA1 = "sha1"
    SHA256 = "sha256"

    @property
    def digest_size(self) -> int:
        return 20 if self is PrfHash.SHA1 else 32


def hmac_digest(hash_: PrfHash, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hash_.value).digest()


def prf_plus(hash_: PrfHash, key: bytes, seed: bytes, length: int) -> bytes:
    """prf+(K, S) = T1 | T2 | ..., T1 = prf(K, S | 0x01), Tn = prf(K, T(n-1) | S | n).

    RFC 7296 §2.13 limits n to 255 octets' worth of counter.
    """
    if length < 0:
        raise ValueError("length must be >= 0")
    size = 20 if hash_ is PrfHash.SHA1 else 32
    if length <= size:  # one block (every UKMF key): T1 = prf(K, S | 0x01)
        return hmac.digest(key, seed + b"\x01", hash_.value)[:length]
    rounds = -(-length // size)
    if rounds > 255:
        raise ValueError("prf+ output longer than 255 blocks")
    out = bytearray()
    t = b""
    name = hash_.value
    for n in range(1, rounds + 1):
        t = hmac.digest(key, t + seed + bytes([n]), name)  # one-shot: OpenSSL, no HMAC object
        out += t
    return bytes(out[:length])
