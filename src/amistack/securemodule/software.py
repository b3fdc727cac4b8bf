"""The software secure module: an EC P-256 key in an owner-only PEM file, on `cryptography`.

For machines without a token. The private key is only as safe as the file: it is created 0600
with O_EXCL|O_NOFOLLOW and a file that group or others could read or write is refused on open,
as `keymgmt.kek.FileKek` does for the KEK. The anchor (`write_anchor`) lives beside the key in
`<key file>.anchor` (0600, two alternating slots): it protects against restoring an old copy of
the event log alone; whoever can rewrite both files can roll both back (use a token for that).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from amistack.crypto.secretfile import SecretFileError, read_secret_file, write_secret_file
from amistack.securemodule.base import (
    SecureModuleError,
    check_digest,
    decode_anchor,
    encode_anchor,
    public_key_to_pem,
    raw_from_der,
)

_MAX_PEM = 64 * 1024
SLOT_SIZE = 512  # one anchor slot per sector: a torn write spoils only one
_LEN = struct.Struct(">H")
_CRC = struct.Struct(">I")


class SoftwareModule:
    """EC P-256 signing key from a PEM file. Thread-safe (cryptography's keys are)."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        label: str,
        source: str = "<memory>",
        anchor_path: Path | None = None,
    ) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise SecureModuleError(f"{source}: the key is not on curve P-256")
        self.label = label
        self._key: ec.EllipticCurvePrivateKey | None = key
        self._source = source
        self._pem = public_key_to_pem(key.public_key())
        self.anchor_path = anchor_path  # None: the anchor is kept in memory only
        self._anchor: tuple[int, bytes] | None = None
        self._anchor_read = anchor_path is None
        # Written in place, not fsynced: the log writes (and fsyncs) its head first, so a crash
        # can only leave the anchor behind the store, never ahead of it.
        self._anchor_fd = -1

    @classmethod
    def create(cls, path: Path | str, label: str | None = None) -> SoftwareModule:
        """Generate a new P-256 key into `path` (which must not exist), mode 0600."""
        path = Path(path)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            write_secret_file(path, pem)
        except SecretFileError as exc:
            raise SecureModuleError(str(exc)) from None
        return cls(key, label or path.stem, str(path), anchor_file(path))

    @classmethod
    def open(cls, path: Path | str, label: str | None = None) -> SoftwareModule:
        """Load the key at `path`; refuses a file its group or others could read or write."""
        path = Path(path)
        try:
            data = read_secret_file(path, _MAX_PEM)
        except SecretFileError as exc:
            raise SecureModuleError(str(exc)) from None
        if len(data) > _MAX_PEM:
            raise SecureModuleError(f"{path}: key file is too large to be a PEM key")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise SecureModuleError(f"{path}: not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SecureModuleError(f"{path}: the key is not an EC key")
        return cls(key, label or path.stem, str(path), anchor_file(path))

    @classmethod
    def open_or_create(cls, path: Path | str, label: str | None = None) -> SoftwareModule:
        path = Path(path)
        if path.exists() or path.is_symlink():
            return cls.open(path, label)
        return cls.create(path, label)

    def public_key_pem(self) -> bytes:
        return self._pem

    def sign_digest(self, digest: bytes) -> bytes:
        check_digest(digest)
        key = self._key
        if key is None:
            raise SecureModuleError(f"secure module {self.label!r} is closed")
        der = key.sign(bytes(digest), ec.ECDSA(Prehashed(hashes.SHA256())))
        return raw_from_der(der)

    def read_anchor(self) -> bytes | None:
        if not self._anchor_read and self.anchor_path is not None:
            self._anchor = _read_slots(self.anchor_path)
            self._anchor_read = True
        return None if self._anchor is None else self._anchor[1]

    def write_anchor(self, value: bytes) -> None:
        self.read_anchor()
        generation = 1 if self._anchor is None else self._anchor[0] + 1
        slot = _slot(generation, value)
        if self.anchor_path is not None:
            if self._anchor_fd < 0:
                self._anchor_fd = _open_anchor_file(self.anchor_path)
            try:
                os.pwrite(self._anchor_fd, slot, generation % 2 * SLOT_SIZE)
            except OSError as exc:
                raise SecureModuleError(
                    f"{self.anchor_path}: cannot store the anchor: {exc.strerror}"
                ) from None
        self._anchor = (generation, bytes(value))

    def close(self) -> None:
        self._key = None
        if self._anchor_fd >= 0:
            os.close(self._anchor_fd)
            self._anchor_fd = -1

    def __enter__(self) -> SoftwareModule:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SoftwareModule(label={self.label!r}, source={self._source!r})"


def anchor_file(key_path: Path) -> Path:
    """Where the software module for `key_path` keeps its anchor."""
    return key_path.with_name(key_path.name + ".anchor")


def _slot(generation: int, value: bytes) -> bytes:
    blob = encode_anchor(generation, value)
    body = _LEN.pack(len(blob)) + blob
    return (body + _CRC.pack(zlib.crc32(body))).ljust(SLOT_SIZE, b"\x00")


def _read_slots(path: Path) -> tuple[int, bytes] | None:
    """The newest intact slot of the anchor file (generation, value); None if there is none.

    Two slots written alternately, each in its own 512-byte sector with a CRC: a write torn by
    a power cut spoils only the slot being written, and the other one is the previous anchor."""
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        data = read_secret_file(path, 2 * SLOT_SIZE, "anchor")
    except SecretFileError as exc:
        raise SecureModuleError(str(exc)) from None
    best: tuple[int, bytes] | None = None
    for off in (0, SLOT_SIZE):
        raw = data[off : off + SLOT_SIZE]
        if len(raw) < _LEN.size:
            continue
        n = _LEN.unpack_from(raw)[0]
        end = _LEN.size + n
        if end + _CRC.size > len(raw) or n > SLOT_SIZE:
            continue
        if zlib.crc32(raw[:end]) != _CRC.unpack_from(raw, end)[0]:
            continue
        found = decode_anchor(raw[_LEN.size : end], str(path))
        if best is None or found[0] > best[0]:
            best = found
    if best is None and data.strip(b"\x00"):
        raise SecureModuleError(f"{path}: no intact anchor slot (damaged anchor file)")
    return best


def _open_anchor_file(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SecureModuleError(f"{path}: cannot store the anchor: {exc.strerror}") from None
    if os.fstat(fd).st_mode & 0o077:
        os.close(fd)
        raise SecureModuleError(f"{path}: anchor file is accessible to group or others")
    return fd
