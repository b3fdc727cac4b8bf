"""The meter's secure module: a P-256 signing key that never leaves its module.

Backends: `SoftwareModule` (a 0600 PEM file, `cryptography`) and `Pkcs11Module` (a key generated in
a PKCS#11 token such as SoftHSM2). `open_module(spec)` picks one from a string.
"""

from amistack.meter.securemodule.base import (
    DIGEST_LENGTH,
    SIGNATURE_LENGTH,
    SecureModule,
    SecureModuleError,
    verify_digest,
)
from amistack.meter.securemodule.pkcs11_module import Pkcs11Module
from amistack.meter.securemodule.software import SoftwareModule
from amistack.meter.securemodule.spec import PIN_ENV, open_module

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
