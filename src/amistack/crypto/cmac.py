"""AES-CMAC (RFC 4493 / NIST SP 800-38B), from `cryptography`."""

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """The 16-byte AES-CMAC of `data` under `key` (16, 24 or 32 bytes)."""
    c = cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()
