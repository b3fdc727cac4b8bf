"""Secure modules: a P-256 signing key that never leaves its module.

Used by the meter (its event-log signatures), the generic event log and the operator audit trail,
so it sits below all of them, beside `crypto/`.

Backends: `SoftwareModule` (a 0600 PEM file, `cryptography`) and `Pkcs11Module` (a key generated in
a PKCS#11 token such as SoftHSM2). `open_module(spec)` picks one from a string.
"""

from amistack.securemodule.base import (
    DIGEST_LENGTH,
    SIGNATURE_LENGTH,
    SecureModule,
    SecureModuleError,
    verify_digest,
)
from amistack.securemodule.pkcs11_module import Pkcs11Module
from amistack.securemodule.software import SoftwareModule
from amistack.securemodule.spec import PIN_ENV, open_module

__all__ = [
    "DIGEST_LENGTH",
    "PIN_ENV",
    "SIGNATURE_LENGTH",
    "Pkcs11Module",
    "SecureModule",
    "SecureModuleError",
    "SoftwareModule",
    "open_module",
    "verify_digest",
]
