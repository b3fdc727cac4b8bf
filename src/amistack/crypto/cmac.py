"""AES-CMAC (RFC 4493 / NIST SP 800-38B), from `cryptography`."""

from __future__ import annotations

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """The 16-byte AES-CMAC of `data` under `key` (16, 24 or 32 bytes)."""
    c = cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


class AesCmac:
    """AES-CMAC under one key, for several messages: the keyed context is built once and copied
    per message (a copy costs about a quarter of a fresh context)."""

    __slots__ = ("_base",)

    def __init__(self, key: bytes, prefix: bytes = b"") -> None:
        # `prefix` is absorbed once: every MAC is then CMAC(key, prefix | data) (EAX's OMAC^t).
        self._base = cmac.CMAC(algorithms.AES(key))
        if prefix:
            self._base.update(prefix)

    def prefixed(self, prefix: bytes) -> AesCmac:
        """CMAC under the same key with `prefix` absorbed too (a copy, no new key schedule)."""
        other: AesCmac = object.__new__(AesCmac)
        other._base = self._base.copy()
        other._base.update(prefix)
        return other

    def mac(self, data: bytes) -> bytes:
        c = self._base.copy()
        c.update(data)
        return c.finalize()
