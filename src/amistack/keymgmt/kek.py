"""Key-encryption keys: what secrets at rest (PSKs, application keys) are wrapped under.

The protocol is deliberately small so a PKCS#11 backend (SoftHSM2, a real HSM) can implement it
without exposing the key: wrap, unwrap, and a label naming which KEK a record was wrapped under.

`FileKek` is the software backend: a 256-bit key in a file only its owner may read (0600),
AES-256-GCM with a fresh random 96-bit nonce per wrap (NIST SP 800-38D §8.2.2) and associated data
binding each blob to what it is and whose it is, so a blob moved to another row does not unwrap.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from amistack.crypto import RandomSource
from amistack.crypto.secretfile import SecretFileError, read_secret_file, write_secret_file

KEK_LENGTH = 32
NONCE_LENGTH = 12
TAG_LENGTH = 16
BLOB_VERSION = 1
_AAD_DOMAIN = b"amistack-kek-v1"


class KekError(Exception):
    """A KEK cannot be created or loaded, or a blob does not unwrap under it."""


class KeyEncryptionKey(Protocol):
    @property
    def label(self) -> str:
        """A non-secret name for this KEK, stored beside every blob wrapped under it."""
        ...

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext; raises KekError if the blob, the AAD or the KEK is wrong."""
        ...


_INT_HEAD = b"i" + (8).to_bytes(4, "big")
_FLOAT_HEAD = b"f" + (8).to_bytes(4, "big")
_pack_double = struct.Struct("!d").pack


def record_aad(kind: str, *parts: bytes | str | int | float) -> bytes:
    """Associated data naming a record unambiguously: each part is length-prefixed and typed."""
    out = bytearray()
    for part in (kind, *parts):
        # exact types first (one wrap per key per authentication runs through here)
        cls = type(part)
        if cls is str:
            raw = part.encode()  # type: ignore[union-attr]
            out += b"s" + len(raw).to_bytes(4, "big") + raw
            continue
        if cls is bytes:
            out += b"b" + len(part).to_bytes(4, "big") + part  # type: ignore[arg-type, operator]
            continue
        if cls is int:
            out += _INT_HEAD + part.to_bytes(8, "big", signed=True)  # type: ignore[union-attr]
            continue
        if cls is float:
            out += _FLOAT_HEAD + _pack_double(part)
            continue
        if isinstance(part, str):
            tag, raw = b"s", part.encode()
        elif isinstance(part, bytes):
            tag, raw = b"b", part
        elif isinstance(part, bool):
            raise TypeError("record_aad takes no booleans")
        elif isinstance(part, int):
            tag, raw = b"i", part.to_bytes(8, "big", signed=True)
        else:
            tag, raw = b"f", struct.pack("!d", part)
        out += tag + len(raw).to_bytes(4, "big") + raw
    return bytes(out)


class FileKek:
    """A 256-bit AES-GCM KEK kept in an owner-only file."""

    def __init__(self, key: bytes, rng: RandomSource, source: str = "<memory>") -> None:
        if len(key) != KEK_LENGTH:
            raise KekError(f"KEK must be {KEK_LENGTH} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self._rng = rng
        self._source = source
        # A fingerprint, not the key: SHA-256 under a domain prefix, 8 octets.
        self._label = "file:" + hashlib.sha256(b"amistack kek id" + key).hexdigest()[:16]

    @property
    def label(self) -> str:
        return self._label

    @classmethod
    def create(cls, path: Path | str, rng: RandomSource) -> FileKek:
        """Write a new random KEK to `path` (which must not exist) with mode 0600."""
        path = Path(path)
        key = rng(KEK_LENGTH)
        if len(key) != KEK_LENGTH:
            raise KekError("random source returned the wrong number of bytes")
        try:
            write_secret_file(path, key, "KEK")
        except SecretFileError as exc:
            raise KekError(str(exc)) from None
        return cls(key, rng, str(path))

    @classmethod
    def load(cls, path: Path | str, rng: RandomSource) -> FileKek:
        """Read the KEK at `path`; refuses a file that its group or others could read or write."""
        path = Path(path)
        try:
            data = read_secret_file(path, KEK_LENGTH, "KEK")
        except SecretFileError as exc:
            raise KekError(str(exc)) from None
        if len(data) != KEK_LENGTH:
            raise KekError(f"{path}: KEK file must hold exactly {KEK_LENGTH} bytes")
        return cls(data, rng, str(path))

    @classmethod
    def open_or_create(cls, path: Path | str, rng: RandomSource) -> FileKek:
        path = Path(path)
        if path.exists() or path.is_symlink():
            return cls.load(path, rng)
        return cls.create(path, rng)

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        """version(1) | nonce(12) | AES-GCM ciphertext | tag(16)."""
        nonce = self._rng(NONCE_LENGTH)
        if len(nonce) != NONCE_LENGTH:
            raise KekError("random source returned the wrong number of bytes")
        return (
            bytes([BLOB_VERSION]) + nonce + self._aead.encrypt(nonce, plaintext, _AAD_DOMAIN + aad)
        )

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < 1 + NONCE_LENGTH + TAG_LENGTH or blob[0] != BLOB_VERSION:
            raise KekError("wrapped blob is truncated or of an unknown version")
        nonce, body = blob[1 : 1 + NONCE_LENGTH], blob[1 + NONCE_LENGTH :]
        try:
            return self._aead.decrypt(nonce, body, _AAD_DOMAIN + aad)
        except InvalidTag:
            raise KekError(
                "wrapped blob does not authenticate: wrong KEK, or the record was altered or moved"
            ) from None

    def __repr__(self) -> str:
        return f"FileKek(label={self._label!r}, source={self._source!r})"
