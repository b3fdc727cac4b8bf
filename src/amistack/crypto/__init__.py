"""Cryptographic building blocks: a thin, typed layer over `cryptography`.

Everything here is a pure function or a small immutable object; nothing draws randomness
it was not given (see `rand.RandomSource`).
"""

from amistack.crypto.aes import aes_encrypt_block
from amistack.crypto.cmac import aes_cmac
from amistack.crypto.eax import Eax, EaxAuthError
from amistack.crypto.prf import PrfHash, hmac_digest, prf_plus
from amistack.crypto.rand import RandomSource, seeded_random, system_random

__all__ = [
    "Eax",
    "EaxAuthError",
    "PrfHash",
    "RandomSource",
    "aes_cmac",
    "aes_encrypt_block",
    "hmac_digest",
    "prf_plus",
    "seeded_random",
    "system_random",
]
