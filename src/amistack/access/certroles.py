"""Roles carried in an X.509 certificate as IEC 62351-8 carries them: the IECUserRoles extension.

IEC 62351-8 binds roles to an identity in a public-key certificate with a private extension,
OID 1.2.840.10070.8.1 (`IEC_USER_ROLES_OID`), whose value is a SEQUENCE OF UserRoleInfo:

    IECUserRoles ::= SEQUENCE SIZE (1..MAX) OF UserRoleInfo
    UserRoleInfo ::= SEQUENCE {
        userRole        SEQUENCE SIZE (1..MAX) OF RoleId,   -- RoleId ::= INTEGER (-32768..32767)
        aor             UTF8String (SIZE(1..64)),           -- area of responsibility
        revision        INTEGER (0..255),
        roleDefinition  UTF8String (SIZE(1..64)),
        ... }                                                -- later fields: ignored here

The mandatory roles are RoleIds 0..6 (`rights.Role`); negative ids are vendor roles and other
values are ignored (never an error: a certificate may carry roles meant for other systems). We
write one UserRoleInfo per area of responsibility, each with our roles, revision 1 and
roleDefinition "IEC62351-8". The `aor` is a meter selector as the key server's
(`urn:amistack:meters:`): a device id, a prefix ending in "*" ("grpA-*") or "*" (all meters);
`principal_from_certificate` turns the certificate into a `Principal` whose `aor` limits which
meters it may act on (the head-end's API, the key server's admin endpoint).

The standard's own ASN.1 module was not at hand: the layout follows the published field order,
and the known-answer test decodes an extension written by another implementation (FreeIPA's
test suite, tests/vectors/iec62351-8/).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import core
from cryptography import x509

from amistack.access.rights import Role
from amistack.access.users import Principal

IEC_USER_ROLES_OID = x509.ObjectIdentifier("1.2.840.10070.8.1")
ROLE_DEFINITION = "IEC62351-8"
MAX_ROLE_INFOS = 16  # a certificate is untrusted input until its roles are read


class CertRolesError(ValueError):
    """The IECUserRoles extension is present but not decodable."""


class _RoleIds(core.SequenceOf):  # type: ignore[misc]
    _child_spec = core.Integer


class _UserRoleInfo(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("userRole", _RoleIds),
        ("aor", core.UTF8String),
        ("revision", core.Integer),
        ("roleDefinition", core.UTF8String),
    ]


class _IecUserRoles(core.SequenceOf):  # type: ignore[misc]
    _child_spec = _UserRoleInfo


class _AnyList(core.SequenceOf):  # type: ignore[misc]
    _child_spec = core.Any


@dataclass(frozen=True)
class CertRoles:
    roles: frozenset[Role]
    aor: tuple[str, ...]  # the areas of responsibility named with them


def encode_user_roles(roles: frozenset[Role] | set[Role], aor: Sequence[str] = ("*",)) -> bytes:
    """The DER value of an IECUserRoles extension carrying `roles` for each area in `aor`."""
    if isinstance(aor, str):
        aor = (aor,)
    if not roles:
        raise ValueError("at least one role")
    if not 1 <= len(aor) <= MAX_ROLE_INFOS:
        raise ValueError(f"1..{MAX_ROLE_INFOS} areas of responsibility")
    infos = []
    for area in aor:
        if not 1 <= len(area) <= 64:
            raise ValueError("an area of responsibility is 1..64 characters")
        infos.append(
            _UserRoleInfo(
                {
                    "userRole": [int(r) for r in sorted(roles)],
                    "aor": area,
                    "revision": 1,
                    "roleDefinition": ROLE_DEFINITION,
                }
            )
        )
    return bytes(_IecUserRoles(infos).dump())


def user_roles_extension(
    roles: frozenset[Role] | set[Role], aor: Sequence[str] = ("*",)
) -> x509.Extension[x509.UnrecognizedExtension]:
    """The extension for `keymgmt.pki.issue_client(..., extensions=[...])` (non-critical, as a
    relying party that does not know it must still accept the certificate)."""
    value = x509.UnrecognizedExtension(IEC_USER_ROLES_OID, encode_user_roles(roles, aor))
    return x509.Extension(IEC_USER_ROLES_OID, False, value)


def decode_user_roles(der: bytes) -> CertRoles:
    """Roles (mandatory ones only) and areas of responsibility from an IECUserRoles value."""
    roles: set[Role] = set()
    aors: list[str] = []
    try:
        infos = _AnyList.load(der, strict=True)
        if not 1 <= len(infos) <= MAX_ROLE_INFOS:
            raise CertRolesError(f"{len(infos)} UserRoleInfo entries")
        for any_info in infos:
            fields = _AnyList.load(any_info.dump(), strict=True)
            if len(fields) < 4:
                raise CertRolesError("UserRoleInfo with fewer than 4 fields")
            ids = _RoleIds.load(fields[0].dump(), strict=True)
            aor = core.UTF8String.load(fields[1].dump(), strict=True).native
            for rid in ids.native:
                if rid in Role._value2member_map_:
                    roles.add(Role(rid))
            aors.append(str(aor))
    except CertRolesError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise CertRolesError(f"IECUserRoles does not decode: {exc}") from None
    return CertRoles(frozenset(roles), tuple(aors))


def roles_of_certificate(cert: x509.Certificate) -> CertRoles:
    """The roles a certificate carries (none when it has no IECUserRoles extension)."""
    try:
        ext = cert.extensions.get_extension_for_oid(IEC_USER_ROLES_OID)
    except x509.ExtensionNotFound:
        return CertRoles(frozenset(), ())
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise CertRolesError("IECUserRoles is not an opaque extension")
    return decode_user_roles(value.value)


def principal_from_certificate(cert: x509.Certificate, source: str = "") -> Principal:
    """The operator a role certificate names: its CN, its IEC 62351-8 roles and their areas of
    responsibility. CertRolesError if it names no one or carries no role. The signature, expiry
    and revocation are the caller's to check (the TLS handshake, the CRL)."""
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    name = str(names[0].value) if len(names) == 1 else ""
    roles = roles_of_certificate(cert)
    if not name or not roles.roles:
        raise CertRolesError("the client certificate carries no IEC 62351-8 role")
    return Principal(
        name,
        roles.roles,
        "certificate",
        f"cert:{cert.serial_number:x}",
        source,
        aor=frozenset(roles.aor),
    )
