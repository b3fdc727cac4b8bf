"""Single-block AES, the primitive under EAP-PSK's key derivation (RFC 4764 §3.1)."""

from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 16

_ECB = modes.ECB()  # stateless; one instance serves every context

AesEcb = Callable[[bytes], bytes]
"""E_K over a whole number of 16-byte blocks, each block independently (ECB)."""


def aes_ecb(key: bytes) -> AesEcb:
    """One reusable E_K for several blocks: building a cipher context costs ~25x a block, and the
    key derivations encrypt several blocks under one key. ECB has no chaining state, so the same
    encryptor serves any number of calls; input must be a multiple of 16 bytes."""
    update = Cipher(algorithms.AES(key), _ECB).encryptor().update

    def encrypt(blocks: bytes) -> bytes:
        if len(blocks) % BLOCK:
            raise ValueError(f"AES-ECB input must be a multiple of {BLOCK} bytes")
        return update(blocks)

    return encrypt


def aes_encrypt_block(key: bytes, block: bytes) -> bytes:
    """E_K(block) for one 16-byte block."""
    if len(block) != BLOCK:
        raise ValueError(f"AES block must be {BLOCK} bytes, got {len(block)}")
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def xor_bytes(a: bytes, b: bytes) -> bytes:
    """a XOR b over the length of the shorter."""
    return (int.from_bytes(a[: len(b)], "big") ^ int.from_bytes(b[: len(a)], "big")).to_bytes(
        min(len(a), len(b)), "big"
    )
