"""A key-encryption key inside a PKCS#11 token (SoftHSM2, a real HSM): `Pkcs11Kek`.

The AES-256 key is generated in the token, sensitive and non-extractable, allowed only to encrypt
and decrypt; PSKs are sealed with CKM_AES_GCM (PKCS#11 v2.40 Curr. Mech. §2.12.3; NIST SP 800-38D)
under a fresh random 96-bit nonce per wrap, with the same blob layout and associated-data binding
as `FileKek` — version(1) | nonce(12) | ciphertext | tag(16), AAD = domain | record_aad(...) — so
`CredentialStore` uses either unchanged, and a blob moved to another row does not unwrap.

GCM rather than CKM_AES_KEY_WRAP_PAD: the PSKs are data, not key objects, and key wrap has no
associated data to bind a blob to its row. SoftHSM2 and python-pkcs11 (GCMParams) support it.

Thread safety: one PKCS#11 session per `Pkcs11Kek`; every PKCS#11 call in the process is
serialised by `amistack.crypto.pkcs11_token.PKCS11_LOCK`, so it may be shared by threads.
"""

from __future__ import annotations

import logging
from typing import Any

from pkcs11 import Attribute, GCMParams, Mechanism, ObjectClass

from amistack.crypto import RandomSource
from amistack.crypto.pkcs11_token import Pkcs11TokenError, TokenSession
from amistack.keymgmt.kek import BLOB_VERSION, NONCE_LENGTH, TAG_LENGTH, KekError

logger = logging.getLogger(__name__)

_AAD_DOMAIN = b"amistack-kek-pkcs11-v1"
KEY_ID_LENGTH = 16
AES256_KEY_LENGTH = 32


class Pkcs11Kek:
    """An AES-256-GCM KEK held in a PKCS#11 token, found by its CKA_LABEL."""

    def __init__(self, session: TokenSession, key: Any, key_label: str, rng: RandomSource) -> None:
        self._session = session
        self._key = key
        self._rng = rng
        self.key_label = key_label
        # Names the token and the key object (its random CKA_ID), never anything secret: a KEK
        # regenerated under the same label gets a new id, so old blobs say which key they need.
        key_id = bytes(key[Attribute.ID]).hex()[:16]
        self._label = f"pkcs11:{session.token_label}/{key_label}#{key_id}"

    @property
    def label(self) -> str:
        return self._label

    @classmethod
    def open(
        cls,
        library: str,
        token_label: str,
        pin: str,
        key_label: str,
        rng: RandomSource,
        *,
        create: bool = False,
    ) -> Pkcs11Kek:
        """Open the AES key `key_label` in the token; with `create`, generate it if absent."""
        try:
            session = TokenSession.open(library, token_label, pin)
        except Pkcs11TokenError as exc:
            raise KekError(str(exc)) from None
        try:
            key = session.find_one(ObjectClass.SECRET_KEY, key_label, "secret key")
            if key is None:
                if not create:
                    raise KekError(
                        f"PKCS#11 token {token_label!r} has no secret key labelled {key_label!r}"
                    )
                key_id = rng(KEY_ID_LENGTH)
                if len(key_id) != KEY_ID_LENGTH:
                    raise KekError("random source returned the wrong number of bytes")
                key = session.generate_aes256_key(key_label, key_id)
                logger.info(
                    "generated an AES-256 KEK in the token",
                    extra={"token": token_label, "key_label": key_label},
                )
            with session.use():
                cls._check_key(key, token_label, key_label)
                kek = cls(session, key, key_label, rng)
        except Pkcs11TokenError as exc:
            session.close()
            raise KekError(str(exc)) from None
        except BaseException:
            session.close()
            raise
        return kek

    @staticmethod
    def _check_key(key: Any, token_label: str, key_label: str) -> None:
        where = f"PKCS#11 key {key_label!r} on token {token_label!r}"
        if key[Attribute.VALUE_LEN] != AES256_KEY_LENGTH:
            raise KekError(f"{where} is not a 256-bit key")
        if not key[Attribute.SENSITIVE] or key[Attribute.EXTRACTABLE]:
            raise KekError(f"{where} is extractable or not sensitive; refusing to use it as a KEK")
        if not (key[Attribute.ENCRYPT] and key[Attribute.DECRYPT]):
            raise KekError(f"{where} is not allowed to encrypt and decrypt")

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        """version(1) | nonce(12) | AES-GCM ciphertext | tag(16)."""
        nonce = self._rng(NONCE_LENGTH)
        if len(nonce) != NONCE_LENGTH:
            raise KekError("random source returned the wrong number of bytes")
        try:
            with self._session.use():
                sealed: bytes = self._key.encrypt(
                    plaintext,
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(nonce, _AAD_DOMAIN + aad, TAG_LENGTH * 8),
                )
        except Pkcs11TokenError as exc:
            raise KekError(f"KEK {self._label}: wrap failed: {exc}") from None
        return bytes([BLOB_VERSION]) + nonce + sealed

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < 1 + NONCE_LENGTH + TAG_LENGTH or blob[0] != BLOB_VERSION:
            raise KekError("wrapped blob is truncated or of an unknown version")
        nonce, body = blob[1 : 1 + NONCE_LENGTH], blob[1 + NONCE_LENGTH :]
        if self._session.closed:
            raise KekError(f"KEK {self._label} is closed")
        try:
            with self._session.use():
                plaintext: bytes = self._key.decrypt(
                    body,
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(nonce, _AAD_DOMAIN + aad, TAG_LENGTH * 8),
                )
        except Pkcs11TokenError:
            # The token reports a tag mismatch as a generic failure (SoftHSM2: CKR_GENERAL_ERROR,
            # others CKR_ENCRYPTED_DATA_INVALID); either way the blob is not ours to trust.
            raise KekError(
                "wrapped blob does not authenticate: wrong KEK, or the record was altered or moved"
            ) from None
        return plaintext

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Pkcs11Kek:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pkcs11Kek(label={self._label!r})"
