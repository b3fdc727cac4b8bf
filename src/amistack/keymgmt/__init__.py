"""Key management: the UKMF, key rings with lifetimes, the credential store and the key server.

See docs/key-hierarchy.md for the hierarchy (PSK -> MSK -> UKMF -> application keys), key ids,
lifetimes, revocation and distribution to application servers; docs/mesh-keys.md for the mesh
group keys (a ring per PAN, delivered wrapped under each session's GTK-KEK).
"""

from amistack.keymgmt.events import (
    KeyEvent,
    KeysExpired,
    KeysInstalled,
    KeysRetired,
    KeysShortened,
    KeysSuperseded,
)
from amistack.keymgmt.groupkeys import (
    GroupKey,
    GroupKeyConfig,
    GroupKeyDelivery,
    GroupKeyError,
    GroupKeyHolder,
    GroupKeyManager,
)
from amistack.keymgmt.kek import FileKek, KekError, KeyEncryptionKey, record_aad
from amistack.keymgmt.keyring import (
    DEFAULT_OVERLAP,
    AppKey,
    KeyPersistence,
    KeyRing,
    KeyRingDirectory,
    KeyRingError,
)
from amistack.keymgmt.server import IssuedKey, KeyServer, KeyServerEvent, RevocationResult
from amistack.keymgmt.store import (
    AlreadyEnrolled,
    AuditEntry,
    AuditKind,
    CredentialStore,
    DeviceInfo,
    DeviceRevoked,
    Revocation,
    StoreError,
    UnknownDevice,
)
from amistack.keymgmt.ukmf import (
    C1222,
    LINK,
    PANA_AUTH,
    KeyId,
    KeyIdError,
    Purpose,
    PurposeError,
    PurposeRegistry,
    derive,
    derive_all,
)

__all__ = [
    "C1222",
    "DEFAULT_OVERLAP",
    "LINK",
    "PANA_AUTH",
    "AlreadyEnrolled",
    "AppKey",
    "AuditEntry",
    "AuditKind",
    "CredentialStore",
    "DeviceInfo",
    "DeviceRevoked",
    "FileKek",
    "GroupKey",
    "GroupKeyConfig",
    "GroupKeyDelivery",
    "GroupKeyError",
    "GroupKeyHolder",
    "GroupKeyManager",
    "IssuedKey",
    "KekError",
    "KeyEncryptionKey",
    "KeyEvent",
    "KeyId",
    "KeyIdError",
    "KeyPersistence",
    "KeyRing",
    "KeyRingDirectory",
    "KeyRingError",
    "KeyServer",
    "KeyServerEvent",
    "KeysExpired",
    "KeysInstalled",
    "KeysRetired",
    "KeysShortened",
    "KeysSuperseded",
    "Purpose",
    "PurposeError",
    "PurposeRegistry",
    "Revocation",
    "RevocationResult",
    "StoreError",
    "UnknownDevice",
    "derive",
    "derive_all",
    "record_aad",
]
