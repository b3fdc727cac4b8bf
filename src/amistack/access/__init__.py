"""Identities, roles (IEC 62351-8), rights and the operator audit trail.

One identity model for every amistack service that people use (the head-end's REST API today;
the handheld and the dashboard reuse it): `rights` (roles -> rights, one table), `users`
(Argon2id passwords, bearer tokens, login sessions, failed-login limiting), `certroles` (roles in
X.509 certificates, IECUserRoles), `audit` (the append-only, signed operator audit trail) and
`http` (the FastAPI dependency that authenticates, authorises and audits). See
docs/access-control.md.
"""

from amistack.access.audit import AuditEntry, AuditTrail
from amistack.access.rights import ROLE_RIGHTS, Right, Role, parse_roles, rights_of, role_names
from amistack.access.users import (
    AccessError,
    AccessStore,
    IssuedToken,
    LoginPolicy,
    LoginRefused,
    Principal,
    User,
)

__all__ = [
    "ROLE_RIGHTS",
    "AccessError",
    "AccessStore",
    "AuditEntry",
    "AuditTrail",
    "IssuedToken",
    "LoginPolicy",
    "LoginRefused",
    "Principal",
    "Right",
    "Role",
    "User",
    "parse_roles",
    "rights_of",
    "role_names",
]
