"""The PKCS#11 secure module: the meter's signing key inside a token (SoftHSM2, or a real HSM).

The key pair is generated *inside* the token (C_GenerateKeyPair) as token objects; the private key
is CKA_SENSITIVE and not CKA_EXTRACTABLE, so its value can never be read or wrapped out, and it can
only sign. Signing uses CKM_ECDSA over the SHA-256 digest the MCU computed (the token does not
hash), and the token returns raw r || s.

Thread safety: each `Pkcs11Module` has one PKCS#11 session of its own; every PKCS#11 call in the
process is serialised by one lock (`amistack.crypto.pkcs11_token.PKCS11_LOCK`: python-pkcs11
initialises the library without OS locking, and SoftHSM2 fails under concurrent calls otherwise).
So a module object may be shared by threads, or each thread may open its own; either way signing is
safe and runs one signature at a time per process.

The anchor (`write_anchor`, the event log's last signed head) is a private token data object
(CKO_DATA, CKA_PRIVATE: visible only after login) whose CKA_APPLICATION names the key. SoftHSM2
refuses C_SetAttributeValue on a data object's CKA_VALUE, and replacing the object costs ~50 ms
(create + destroy) against ~6 ms for an in-place update of CKA_LABEL, which PKCS#11 v2.40 §4.4
leaves modifiable: so the anchor travels hex-encoded in the object's CKA_LABEL, updated in place
(one C_SetAttributeValue, atomic in the token).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, Mechanism, ObjectClass

from amistack.crypto.pkcs11_token import (
    P256_EC_PARAMS,
    Pkcs11TokenError,
    TokenSession,
    ec_point_from_attribute,
)
from amistack.securemodule.base import (
    SIGNATURE_LENGTH,
    SecureModuleError,
    check_digest,
    decode_anchor,
    encode_anchor,
    public_key_to_pem,
)

logger = logging.getLogger(__name__)

KEY_ID_LENGTH = 16
ANCHOR_APPLICATION = "amistack secure-module anchor"  # CKA_APPLICATION of the anchor objects


class Pkcs11Module:
    """An EC P-256 signing key in a PKCS#11 token, named by its CKA_LABEL."""

    def __init__(self, session: TokenSession, label: str, private_key: Any, public_pem: bytes):
        self.label = label
        self._session = session
        self._private = private_key
        self._pem = public_pem

    @classmethod
    def open(
        cls, library: str, token_label: str, pin: str, key_label: str, *, create: bool = False
    ) -> Pkcs11Module:
        """Open the key pair `key_label` on the token; with `create`, generate it if absent."""
        try:
            session = TokenSession.open(library, token_label, pin)
        except Pkcs11TokenError as exc:
            raise SecureModuleError(str(exc)) from None
        try:
            private = session.find_one(ObjectClass.PRIVATE_KEY, key_label, "private key")
            public = session.find_one(ObjectClass.PUBLIC_KEY, key_label, "public key")
            if private is None and public is None and create:
                public, private = session.generate_ec_p256_keypair(
                    key_label, os.urandom(KEY_ID_LENGTH)
                )
                logger.info(
                    "generated a P-256 key pair in the token",
                    extra={"token": token_label, "key_label": key_label},
                )
            if private is None or public is None:
                missing = (
                    "key pair"
                    if private is None and public is None
                    else ("private key" if private is None else "public key")
                )
                raise SecureModuleError(
                    f"PKCS#11 token {token_label!r} has no {missing} labelled {key_label!r}"
                    + ("" if create else " (create it first)")
                )
            with session.use():
                cls._check_private(private, token_label, key_label)
                pem = cls._public_pem(public, token_label, key_label)
        except Pkcs11TokenError as exc:
            session.close()
            raise SecureModuleError(str(exc)) from None
        except BaseException:
            session.close()
            raise
        return cls(session, key_label, private, pem)

    @classmethod
    def create(cls, library: str, token_label: str, pin: str, key_label: str) -> Pkcs11Module:
        """Generate a new key pair `key_label` in the token; refuses if that label is taken."""
        try:
            session = TokenSession.open(library, token_label, pin)
        except Pkcs11TokenError as exc:
            raise SecureModuleError(str(exc)) from None
        try:
            taken = session.find(ObjectClass.PRIVATE_KEY, key_label) or session.find(
                ObjectClass.PUBLIC_KEY, key_label
            )
        except Pkcs11TokenError as exc:
            raise SecureModuleError(str(exc)) from None
        finally:
            session.close()
        if taken:
            raise SecureModuleError(
                f"PKCS#11 token {token_label!r} already holds a key labelled {key_label!r}; "
                "refusing to create another"
            )
        return cls.open(library, token_label, pin, key_label, create=True)

    @staticmethod
    def _check_private(private: Any, token_label: str, key_label: str) -> None:
        # A key imported in the clear, or one whose flags were relaxed, is not what this module
        # promises; refuse it rather than sign with it.
        where = f"PKCS#11 key {key_label!r} on token {token_label!r}"
        if private[Attribute.EC_PARAMS] != P256_EC_PARAMS:
            raise SecureModuleError(f"{where} is not an EC P-256 key")
        if not private[Attribute.SENSITIVE] or private[Attribute.EXTRACTABLE]:
            raise SecureModuleError(f"{where} is extractable or not sensitive; refusing to use it")
        if not private[Attribute.SIGN]:
            raise SecureModuleError(f"{where} is not allowed to sign (CKA_SIGN is false)")

    @staticmethod
    def _public_pem(public: Any, token_label: str, key_label: str) -> bytes:
        if public[Attribute.EC_PARAMS] != P256_EC_PARAMS:
            raise SecureModuleError(
                f"PKCS#11 public key {key_label!r} on token {token_label!r} is not EC P-256"
            )
        point = ec_point_from_attribute(public[Attribute.EC_POINT])
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError as exc:
            raise SecureModuleError(
                f"PKCS#11 public key {key_label!r} holds an invalid point: {exc}"
            ) from None
        return public_key_to_pem(key)

    @property
    def token_label(self) -> str:
        return self._session.token_label

    def private_key_attribute(self, attribute: Attribute) -> Any:
        """Read one attribute of the private key object (tests use this to show what the token
        refuses to reveal); token errors become SecureModuleError."""
        try:
            with self._session.use():
                return self._private[attribute]
        except Pkcs11TokenError as exc:
            raise SecureModuleError(str(exc)) from None

    def public_key_pem(self) -> bytes:
        return self._pem

    def sign_digest(self, digest: bytes) -> bytes:
        check_digest(digest)
        try:
            with self._session.use():
                signature: bytes = self._private.sign(bytes(digest), mechanism=Mechanism.ECDSA)
        except Pkcs11TokenError as exc:
            raise SecureModuleError(f"secure module {self.label!r}: {exc}") from None
        if len(signature) != SIGNATURE_LENGTH:
            raise SecureModuleError(
                f"secure module {self.label!r}: the token returned a {len(signature)}-octet "
                f"signature, expected raw r||s of {SIGNATURE_LENGTH}"
            )
        return signature

    @property
    def anchor_application(self) -> str:
        """CKA_APPLICATION of this key's anchor object."""
        return f"{ANCHOR_APPLICATION} {self.label}"

    def _anchor_object(self) -> tuple[Any, int, bytes] | None:
        """(object, generation, value) of the anchor object, None if there is none yet."""
        template = {
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.APPLICATION: self.anchor_application,
        }
        with self._session.use() as session:
            found = list(session.get_objects(template))
            if len(found) > 1:
                raise SecureModuleError(
                    f"token {self.token_label!r} holds {len(found)} anchor objects for "
                    f"{self.label!r}; refusing to guess which one is current"
                )
            if not found:
                return None
            label = found[0][Attribute.LABEL]
        try:
            blob = bytes.fromhex(label)
        except ValueError:
            raise SecureModuleError(f"the anchor object of {self.label!r} is damaged") from None
        generation, value = decode_anchor(blob, f"the anchor object of {self.label!r}")
        return found[0], generation, value

    def read_anchor(self) -> bytes | None:
        try:
            found = self._anchor_object()
        except Pkcs11TokenError as exc:
            raise SecureModuleError(f"secure module {self.label!r}: {exc}") from None
        return None if found is None else found[2]

    def write_anchor(self, value: bytes) -> None:
        try:
            found = self._anchor_object()
            label = encode_anchor(1 if found is None else found[1] + 1, value).hex()
            with self._session.use() as session:
                if found is None:
                    session.create_object(
                        {
                            Attribute.CLASS: ObjectClass.DATA,
                            Attribute.TOKEN: True,
                            Attribute.PRIVATE: True,
                            Attribute.MODIFIABLE: True,
                            Attribute.APPLICATION: self.anchor_application,
                            Attribute.LABEL: label,
                            Attribute.VALUE: b"",
                        }
                    )
                else:
                    found[0][Attribute.LABEL] = label
        except Pkcs11TokenError as exc:
            raise SecureModuleError(f"secure module {self.label!r}: {exc}") from None

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Pkcs11Module:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pkcs11Module(label={self.label!r}, token={self._session.token_label!r})"
