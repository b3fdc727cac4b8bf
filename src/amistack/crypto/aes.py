"""Single-block AES, the primitive under EAP-PSK's key derivation (RFC 4764 §3.1)."""

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 16


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
