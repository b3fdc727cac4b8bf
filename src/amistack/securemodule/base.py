"""The secure-module interface: the meter's MCU hashes, the module signs.

The split follows the issue's design: the MCU computes a SHA-256 digest of what is to be signed
(a log state) and hands the 32 octets to the module, which holds an EC P-256 private key that never
leaves it and returns an ECDSA signature over that digest (CKM_ECDSA, PKCS#11 v2.40 Curr. Mech.
§2.3.6: the mechanism signs the digest as given, it does not hash). Signatures travel as raw
r || s, 32 octets each, big-endian (the PKCS#11 CKM_ECDSA output format, also IEEE P1363).
"""

from __future__ import annotations

import struct
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

DIGEST_LENGTH = 32  # SHA-256
SCALAR_LENGTH = 32  # P-256
SIGNATURE_LENGTH = 2 * SCALAR_LENGTH
MAX_ANCHOR = 256  # octets a module keeps for `write_anchor`
ANCHOR_MAGIC = b"AMIANCH\x01"
_GENERATION = struct.Struct(">Q")


class SecureModuleError(Exception):
    """A secure-module backend cannot be opened or do what was asked; the message says why."""


class SecureModule(Protocol):
    """A key that signs SHA-256 digests and never leaves its module."""

    label: str  # which key, e.g. "meter-0001/eventlog"

    def public_key_pem(self) -> bytes:
        """The public key as SubjectPublicKeyInfo PEM (RFC 5480), EC P-256."""
        ...

    def sign_digest(self, digest: bytes) -> bytes:
        """ECDSA P-256 over a 32-octet SHA-256 digest computed outside; raw r || s (64 octets)."""
        ...

    def read_anchor(self) -> bytes | None:
        """The value last stored with `write_anchor`; None if there never was one."""
        ...

    def write_anchor(self, value: bytes) -> None:
        """Keep `value` (at most MAX_ANCHOR octets) inside the module, durably, before returning.

        The event log keeps its last signed head here, out of reach of whoever can rewrite the
        meter's files, as a TPM keeps a monotonic counter in an NV index: a restored old copy
        of the log is then told apart from the current one (eventlog/log.py)."""
        ...

    def close(self) -> None: ...


def check_digest(digest: bytes) -> None:
    if not isinstance(digest, bytes | bytearray) or len(digest) != DIGEST_LENGTH:
        raise SecureModuleError(
            f"sign_digest takes a {DIGEST_LENGTH}-octet SHA-256 digest, got "
            f"{len(digest) if isinstance(digest, bytes | bytearray) else type(digest).__name__}"
        )


def encode_anchor(generation: int, value: bytes) -> bytes:
    """What a backend stores: magic | generation u64 (one more on every write) | value."""
    if len(value) > MAX_ANCHOR:
        raise SecureModuleError(f"an anchor holds at most {MAX_ANCHOR} octets, not {len(value)}")
    return ANCHOR_MAGIC + _GENERATION.pack(generation) + bytes(value)


def decode_anchor(blob: bytes, where: str) -> tuple[int, bytes]:
    """(generation, value) from what `encode_anchor` wrote; SecureModuleError if it is not that."""
    head = len(ANCHOR_MAGIC) + _GENERATION.size
    if len(blob) < head or len(blob) > head + MAX_ANCHOR or not blob.startswith(ANCHOR_MAGIC):
        raise SecureModuleError(f"{where}: the stored anchor is damaged")
    return _GENERATION.unpack_from(blob, len(ANCHOR_MAGIC))[0], blob[head:]


def raw_from_der(der: bytes) -> bytes:
    """DER ECDSA-Sig-Value (RFC 3279 §2.2.3) -> raw r || s."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(SCALAR_LENGTH, "big") + s.to_bytes(SCALAR_LENGTH, "big")


def load_p256_public_key(public_key_pem: bytes) -> ec.EllipticCurvePublicKey:
    """Parse an SPKI PEM and insist on EC P-256; SecureModuleError otherwise."""
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError) as exc:
        raise SecureModuleError(f"not a PEM SubjectPublicKeyInfo public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SecureModuleError("the public key is not an EC P-256 key")
    return key


def public_key_to_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verify_digest(public_key_pem: bytes, digest: bytes, signature: bytes) -> bool:
    """Whether `signature` (raw r || s) is a valid ECDSA P-256 signature of `digest` (32 octets).

    A malformed signature or digest is simply not valid (False); a public key that is not P-256
    SPKI PEM is a configuration error (SecureModuleError).
    """
    key = load_p256_public_key(public_key_pem)
    if len(digest) != DIGEST_LENGTH or len(signature) != SIGNATURE_LENGTH:
        return False
    r = int.from_bytes(signature[:SCALAR_LENGTH], "big")
    s = int.from_bytes(signature[SCALAR_LENGTH:], "big")
    if r == 0 or s == 0:
        return False
    try:
        key.verify(encode_dss_signature(r, s), bytes(digest), ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True
