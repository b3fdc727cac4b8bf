"""A PKCS#11 token as amistack uses it: load the library, open a token by label, log in, find or
generate the few key objects we keep there (an EC P-256 signing key pair, an AES-256 KEK).

Both the meter's secure module (`amistack.securemodule.pkcs11_module`) and the key server's
key-encryption key (`amistack.keymgmt.kek_pkcs11`) sit on this, so it lives at the bottom layer.

Why there is process-wide state here, against the usual rule: PKCS#11 makes it so. A library is
initialised once per process (C_Initialize; SoftHSM2 reads SOFTHSM2_CONF then), and the login state
belongs to the application, not to a session (PKCS#11 v2.40 §5.6: C_Login on one session logs in
every session of the token; C_Logout or closing the last session logs them all out). So this module
keeps, per (library, token), one *login session* with a reference count, and gives every user its
own ordinary session beside it:

- `TokenSession.open(...)` verifies the PIN (the token checks it on first login; later opens in the
  same process are compared against a salted hash of the PIN that logged in, so a wrong PIN fails
  the same way both times) and opens a fresh R/W session for the caller;
- `TokenSession.close()` closes that session; the last close on a token logs out, and the last close
  on a library finalises it, so the next open re-reads the configuration (a test's token directory).

Thread safety: python-pkcs11 initialises a library with C_Initialize(NULL), which tells it the
application will not call it from several threads at once (PKCS#11 v2.40 §5.4: without
CKF_OS_LOCKING_OK the library need not lock), and SoftHSM2 then really does fail (CKR_GENERAL_ERROR)
when two threads sign on two sessions at the same time. So every call into PKCS#11 from this
process goes through one process-wide lock (`PKCS11_LOCK`, reentrant): any number of
`TokenSession` objects may be used from any threads, safely, one call at a time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e

logger = logging.getLogger(__name__)

# DER of the named-curve OID 1.2.840.10045.3.1.7 (secp256r1 / P-256), RFC 5480 §2.1.1.1: the
# CKA_EC_PARAMS value of every P-256 key (PKCS#11 v2.40 Curr. Mech. §2.3.3).
P256_EC_PARAMS = bytes.fromhex("06082a8648ce3d030107")
P256_POINT_LENGTH = 65  # uncompressed: 0x04 | X(32) | Y(32), SEC 1 §2.3.3


class Pkcs11TokenError(Exception):
    """The library, the token, the PIN or a key object is not usable; the message says which."""


class WrongPin(Pkcs11TokenError):
    """The user PIN was refused."""


@dataclass
class _Login:
    lib: Any
    token: Any
    session: Any  # the session that holds the login
    pin_salt: bytes
    pin_digest: bytes
    refs: int = 0


# Guards the login registry and serialises every PKCS#11 call in the process (see above).
PKCS11_LOCK = threading.RLock()
_registry_lock = PKCS11_LOCK
_logins: dict[tuple[str, str], _Login] = {}


def _pin_digest(salt: bytes, pin: str) -> bytes:
    return hashlib.sha256(b"amistack pkcs11 pin" + salt + pin.encode()).digest()


def _load_library(library: str) -> Any:
    if not os.path.exists(library):
        raise Pkcs11TokenError(f"PKCS#11 library {library} does not exist")
    try:
        return pkcs11.lib(library)
    except p11e.PKCS11Error as exc:
        raise Pkcs11TokenError(
            f"cannot load or initialise PKCS#11 library {library}: {_describe(exc)} "
            "(for SoftHSM2: does SOFTHSM2_CONF name a readable config whose tokendir exists?)"
        ) from None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return type(exc).__name__ + (f": {text}" if text else "")


def _finalize_if_unused(library: str) -> None:
    if any(key[0] == library for key in _logins):
        return
    lib = pkcs11._loaded.get(library)  # the library object python-pkcs11 caches per path
    if lib is not None and lib.initialized:
        try:
            lib.finalize()
        except p11e.PKCS11Error as exc:
            logger.warning("C_Finalize on %s failed: %s", library, _describe(exc))


def _acquire(library: str, token_label: str, pin: str) -> _Login:
    key = (library, token_label)
    with _registry_lock:
        login = _logins.get(key)
        if login is not None:
            if not hmac.compare_digest(login.pin_digest, _pin_digest(login.pin_salt, pin)):
                raise WrongPin(f"PKCS#11 token {token_label!r}: the user PIN is incorrect")
            login.refs += 1
            return login
        lib = _load_library(library)
        try:
            try:
                token = lib.get_token(token_label=token_label)
            except p11e.NoSuchToken:
                labels = sorted(t.label for t in lib.get_tokens())
                raise Pkcs11TokenError(
                    f"no PKCS#11 token labelled {token_label!r} in {library} "
                    f"(tokens present: {', '.join(map(repr, labels)) or 'none'})"
                ) from None
            except p11e.MultipleTokensReturned:
                raise Pkcs11TokenError(
                    f"more than one PKCS#11 token is labelled {token_label!r} in {library}"
                ) from None
            try:
                session = token.open(rw=True, user_pin=pin)
            except (p11e.PinIncorrect, p11e.PinLenRange, p11e.PinInvalid):
                raise WrongPin(
                    f"PKCS#11 token {token_label!r}: the user PIN is incorrect"
                ) from None
            except p11e.PinLocked:
                raise WrongPin(f"PKCS#11 token {token_label!r}: the user PIN is locked") from None
            except p11e.UserPinNotInitialized:
                raise Pkcs11TokenError(
                    f"PKCS#11 token {token_label!r} has no user PIN set (initialise the token)"
                ) from None
            except p11e.PKCS11Error as exc:
                raise Pkcs11TokenError(
                    f"cannot log in to PKCS#11 token {token_label!r}: {_describe(exc)}"
                ) from None
        except Pkcs11TokenError:
            _finalize_if_unused(library)
            raise
        salt = os.urandom(16)
        login = _Login(lib, token, session, salt, _pin_digest(salt, pin), refs=1)
        _logins[key] = login
        logger.info("logged in to PKCS#11 token", extra={"token": token_label, "library": library})
        return login


def _release(library: str, token_label: str) -> None:
    key = (library, token_label)
    with _registry_lock:
        login = _logins.get(key)
        if login is None:
            return
        login.refs -= 1
        if login.refs > 0:
            return
        del _logins[key]
        try:
            login.session.close()  # C_Logout + C_CloseSession: the token is logged out
        except p11e.PKCS11Error as exc:
            logger.warning(
                "closing the login session on %r failed: %s", token_label, _describe(exc)
            )
        _finalize_if_unused(library)


def open_logins() -> int:
    """How many tokens this process is logged in to (tests check that nothing leaks)."""
    with _registry_lock:
        return len(_logins)


class TokenSession:
    """One R/W session on a logged-in token. Close it (or use `with`) when done."""

    def __init__(self, library: str, token_label: str, login: _Login, session: Any) -> None:
        self.library = library
        self.token_label = token_label
        self._login = login
        self._session: Any = session
        self.lock = PKCS11_LOCK

    @classmethod
    def open(cls, library: str, token_label: str, pin: str) -> TokenSession:
        with PKCS11_LOCK:
            login = _acquire(library, token_label, pin)
            try:
                session = login.token.open(rw=True)  # logged in already: login is per application
            except p11e.PKCS11Error as exc:
                _release(library, token_label)
                raise Pkcs11TokenError(
                    f"cannot open a session on PKCS#11 token {token_label!r}: {_describe(exc)}"
                ) from None
        return cls(library, token_label, login, session)

    @property
    def closed(self) -> bool:
        return self._session is None

    def close(self) -> None:
        with self.lock:
            if self._session is None:
                return
            session, self._session = self._session, None
            try:
                session.close()
            except p11e.PKCS11Error as exc:
                logger.warning("closing a PKCS#11 session failed: %s", _describe(exc))
            finally:
                _release(self.library, self.token_label)

    def __enter__(self) -> TokenSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def use(self) -> Iterator[Any]:
        """The raw python-pkcs11 session, under this object's lock; PKCS#11 errors translated."""
        with self.lock:
            if self._session is None:
                raise Pkcs11TokenError(f"the session on token {self.token_label!r} is closed")
            try:
                yield self._session
            except p11e.PKCS11Error as exc:
                raise Pkcs11TokenError(
                    f"PKCS#11 operation on token {self.token_label!r} failed: {_describe(exc)}"
                ) from None

    # -- finding objects -------------------------------------------------------------------------

    def find(self, object_class: ObjectClass, label: str, **attrs: Any) -> list[Any]:
        template: dict[Attribute, Any] = {Attribute.CLASS: object_class, Attribute.LABEL: label}
        template.update({Attribute[name.upper()]: value for name, value in attrs.items()})
        with self.use() as session:
            return list(session.get_objects(template))

    def find_one(self, object_class: ObjectClass, label: str, what: str) -> Any | None:
        """The single object of that class and label, None if absent; several is an error."""
        found = self.find(object_class, label)
        if len(found) > 1:
            raise Pkcs11TokenError(
                f"token {self.token_label!r} holds {len(found)} {what} objects labelled "
                f"{label!r}; refusing to guess which one to use"
            )
        return found[0] if found else None

    # -- generating keys -------------------------------------------------------------------------

    def generate_ec_p256_keypair(self, label: str, key_id: bytes) -> tuple[Any, Any]:
        """A P-256 key pair generated inside the token: the private key is a token object that is
        sensitive, never extractable and can only sign (PKCS#11 v2.40 §4.9)."""
        public_template: Mapping[Attribute, Any] = {
            Attribute.TOKEN: True,
            Attribute.VERIFY: True,
            Attribute.ENCRYPT: False,
            Attribute.WRAP: False,
            Attribute.DERIVE: False,
            Attribute.ID: key_id,
        }
        private_template: Mapping[Attribute, Any] = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.DECRYPT: False,
            Attribute.UNWRAP: False,
            Attribute.DERIVE: False,
            Attribute.ID: key_id,
        }
        with self.use() as session:
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: P256_EC_PARAMS}, local=True
            )
            public, private = params.generate_keypair(
                store=True,
                label=label,
                mechanism=Mechanism.EC_KEY_PAIR_GEN,
                public_template=public_template,
                private_template=private_template,
            )
            return public, private

    def generate_aes256_key(self, label: str, key_id: bytes) -> Any:
        """An AES-256 token key, sensitive and non-extractable, usable only to encrypt/decrypt."""
        template: Mapping[Attribute, Any] = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.ENCRYPT: True,
            Attribute.DECRYPT: True,
            Attribute.WRAP: False,
            Attribute.UNWRAP: False,
            Attribute.SIGN: False,
            Attribute.VERIFY: False,
            Attribute.DERIVE: False,
            Attribute.ID: key_id,
        }
        with self.use() as session:
            return session.generate_key(
                KeyType.AES, 256, label=label, store=True, template=template
            )


def ec_point_from_attribute(value: bytes) -> bytes:
    """The uncompressed P-256 point from CKA_EC_POINT: a DER OCTET STRING per PKCS#11 v2.40
    Curr. Mech. §2.3.3 (some tokens return the bare point; accept that too)."""
    if len(value) == P256_POINT_LENGTH and value[0] == 0x04:
        return value
    if len(value) == P256_POINT_LENGTH + 2 and value[0] == 0x04 and value[1] == P256_POINT_LENGTH:
        return value[2:]
    raise Pkcs11TokenError(f"CKA_EC_POINT is not an uncompressed P-256 point ({len(value)} bytes)")


def close_all() -> None:
    """Log out of every token and finalise every library this module opened (process shutdown;
    tests use it so a leak in one test cannot point the next one at a stale configuration).
    Sessions still held by `TokenSession` objects become invalid."""
    with _registry_lock:
        logins, libraries = list(_logins.items()), {key[0] for key in _logins}
        _logins.clear()
    for (_, token_label), login in logins:
        try:
            login.session.close()
        except p11e.PKCS11Error as exc:
            logger.warning(
                "closing the login session on %r failed: %s", token_label, _describe(exc)
            )
    for library in libraries:
        _finalize_if_unused(library)
