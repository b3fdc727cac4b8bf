"""B-route credentials: the B-route ID (RBID) and password the utility issues, and the EAP-PSK
key derived from them.

The utility hands the customer a 32-character B-route ID and a 12-character password. The TTC
JJ-300.10 / Wi-SUN B-route profile that maps them onto EAP-PSK is not public to us, so amistack
uses its own, documented derivation (docs/broute.md):

    ID_P = the RBID (ASCII),  ID_S = the meter's identity,
    PSK  = HKDF-SHA256(ikm = password, salt = b"amistack B-route PSK v1", info = RBID)[:16]

HKDF (RFC 5869) binds the key to the RBID (two IDs with the same password get unrelated keys) and
the versioned salt lets a later profile change the derivation without ambiguity. The password is
short and low-entropy: like any PSK scheme its strength is that of the password, which is why the
PAA bounds the attempts per source (amistack.pana.paa) without ever locking a HEMS out.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "PASSWORD_LENGTH",
    "PSK_SALT",
    "RBID_LENGTH",
    "BrouteCredentials",
    "CredentialError",
    "psk_from_password",
]

RBID_LENGTH = 32  # characters of a B-route ID as utilities issue it
PASSWORD_LENGTH = 12  # characters of a B-route password
PSK_LENGTH = 16  # EAP-PSK keys are 16 octets (RFC 4764 §3.1)
PSK_SALT = b"amistack B-route PSK v1"


class CredentialError(ValueError):
    """A B-route ID or password that is not what a utility issues (length, characters)."""


def _check(name: str, value: str, length: int) -> bytes:
    if not isinstance(value, str):
        raise CredentialError(f"{name} must be a string, got {type(value).__name__}")
    if len(value) != length:
        raise CredentialError(f"{name} must be exactly {length} characters, got {len(value)}")
    bad = next((c for c in value if not 0x21 <= ord(c) <= 0x7E), None)
    if bad is not None:
        raise CredentialError(
            f"{name} must be printable ASCII without spaces, found {bad!r} at {value.index(bad)}"
        )
    return value.encode("ascii")


def psk_from_password(rbid: str, password: str) -> bytes:
    """The 16-byte EAP-PSK key of this B-route ID and password (see the module docstring)."""
    info = _check("B-route ID", rbid, RBID_LENGTH)
    ikm = _check("B-route password", password, PASSWORD_LENGTH)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=PSK_LENGTH, salt=PSK_SALT, info=info)
    return hkdf.derive(ikm)


@dataclass(frozen=True)
class BrouteCredentials:
    """One B-route ID and its password; validated on construction."""

    rbid: str
    password: str

    def __post_init__(self) -> None:
        _check("B-route ID", self.rbid, RBID_LENGTH)
        _check("B-route password", self.password, PASSWORD_LENGTH)

    @property
    def identity(self) -> bytes:
        """ID_P of EAP-PSK (and the EAP identity): the RBID's ASCII octets."""
        return self.rbid.encode("ascii")

    @property
    def psk(self) -> bytes:
        return psk_from_password(self.rbid, self.password)

    def __repr__(self) -> str:  # never print the password
        return f"BrouteCredentials(rbid={self.rbid!r}, password=<hidden>)"
