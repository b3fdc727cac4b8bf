"""Roles after IEC 62351-8 and the rights they grant: ONE table (`ROLE_RIGHTS`).

The seven roles and their RoleId numbers are IEC 62351-8's mandatory roles (the numbers are what a
certificate's IECUserRoles extension carries, see `certroles.py`). The rights are the head-end's
own actions; docs/access-control.md prints this table and maps each right onto the standard's
rights (VIEW, READ, CONTROL, CONFIG, SECURITY, ...) and NISTIR 7628 SG.AC. A route declares the one
right it needs; a principal holding several roles has the union of their rights.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum, StrEnum


class Role(IntEnum):
    """IEC 62351-8 mandatory roles; the value is the standard's RoleId."""

    VIEWER = 0  # sees the process (here: meters, readings, events, alarms)
    OPERATOR = 1  # viewer + control: connect/disconnect, demand response, on-demand reads
    ENGINEER = 2  # configuration: meter registration, VEE runs
    INSTALLER = 3  # field work: register, commission, decommission and re-commission meters
    SECADM = 4  # security administrator: keys, event-log keys, users, certificates
    SECAUD = 5  # security auditor: reads the audit trail
    RBACMNT = 6  # role-based access control management: role assignments


class Right(StrEnum):
    """What a route needs. One right per route (docs/access-control.md has the route table)."""

    READ = "read"  # meters, readings, commands, events, alarms
    CONTROL = "control"  # create/cancel commands, acknowledge alarms
    UPLOAD_LOG = "upload_log"  # upload a meter's exported event log (verified on arrival)
    CONFIGURE = "configure"  # VEE runs and other settings
    REGISTER = "register"  # register a new meter (with its first event-log key)
    COMMISSION = "commission"  # commission, decommission, re-commission
    SECURITY = "security"  # replace an event-log key, reset an accepted head, certificates
    USERS = "users"  # add/disable users, issue tokens for others
    ROLES = "roles"  # assign roles
    AUDIT = "audit"  # read and export the operator audit trail (the key server's too)
    KEYS = "keys"  # key server: enroll, revoke, rotate PSKs, export mesh group keys
    KEY_INVENTORY = "key_inventory"  # key server: list devices and group-key validity (no keys)
    TOPOLOGY_REPORT = "topology_report"  # a concentrator reports its DODAG (docs/mesh.md)


ROLE_RIGHTS: dict[Role, frozenset[Right]] = {
    Role.VIEWER: frozenset({Right.READ}),
    Role.OPERATOR: frozenset({Right.READ, Right.CONTROL, Right.UPLOAD_LOG}),
    Role.ENGINEER: frozenset(
        {Right.READ, Right.CONFIGURE, Right.REGISTER, Right.UPLOAD_LOG, Right.TOPOLOGY_REPORT}
    ),
    Role.INSTALLER: frozenset({Right.READ, Right.REGISTER, Right.COMMISSION, Right.UPLOAD_LOG}),
    Role.SECADM: frozenset(
        {
            Right.READ,
            Right.COMMISSION,
            Right.SECURITY,
            Right.USERS,
            Right.ROLES,
            Right.KEYS,
            Right.KEY_INVENTORY,
        }
    ),
    Role.SECAUD: frozenset({Right.READ, Right.AUDIT, Right.KEY_INVENTORY}),
    Role.RBACMNT: frozenset({Right.ROLES}),
}


def rights_of(roles: Iterable[Role]) -> frozenset[Right]:
    out: set[Right] = set()
    for role in roles:
        out |= ROLE_RIGHTS[role]
    return frozenset(out)


def parse_roles(names: Iterable[str]) -> frozenset[Role]:
    """Role names (case-insensitive, comma lists allowed) -> roles; ValueError names a bad one."""
    roles: set[Role] = set()
    for text in names:
        for name in text.split(","):
            name = name.strip().upper()
            if not name:
                continue
            try:
                roles.add(Role[name])
            except KeyError:
                known = ", ".join(r.name for r in Role)
                raise ValueError(f"unknown role {name!r} (known: {known})") from None
    return frozenset(roles)


def role_names(roles: Iterable[Role]) -> list[str]:
    return [r.name for r in sorted(roles)]
