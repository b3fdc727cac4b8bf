"""`amistack users`: the people who may use the head-end's API (and later the handheld and the
dashboard): add, list, disable/enable, set roles, and issue or revoke bearer tokens.

Works on DIR/access.db directly (the operator at the machine is trusted with its files, like
`amistack keys`); every change is also written to the operator audit trail (DIR/audit/) as done
by `cli:<login name>`. See docs/access-control.md.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from amistack.access import AccessError, AccessStore, AuditTrail, parse_roles, role_names
from amistack.access.rights import Role
from amistack.access.users import HANDHELD_TOKEN
from amistack.cli.common import CliError, add_data_dir

PASSWORD_ENV = "AMISTACK_PASSWORD"
T = TypeVar("T")


def register(sub: Any) -> None:
    roles = ", ".join(r.name for r in Role)
    p = sub.add_parser(
        "users",
        help="users, roles and API tokens for the head-end's REST API",
        description="Manage the people who may use the head-end's REST API: their IEC 62351-8 "
        f"roles ({roles}), Argon2id-hashed passwords and expiring bearer tokens, in "
        "DIR/access.db. Each change is recorded in the operator audit trail (DIR/audit/). "
        "See docs/access-control.md.",
    )
    usub = p.add_subparsers(dest="users_command", metavar="ACTION", required=True)

    c = usub.add_parser(
        "add",
        help="add a user",
        description="Add a user with one or more roles. The password is read from "
        f"${PASSWORD_ENV} or asked for (twice) on the terminal; it is never a command-line "
        "argument (it would show in ps).",
    )
    c.add_argument("name")
    c.add_argument(
        "--role",
        action="append",
        required=True,
        metavar="ROLE",
        help=f"a role ({roles}); repeatable or comma-separated",
    )
    add_data_dir(c, kek=False)
    c.set_defaults(handler=_add)

    c = usub.add_parser("list", help="list users, their roles and tokens")
    add_data_dir(c, kek=False)
    c.set_defaults(handler=_list)

    for verb, text, handler in (
        ("disable", "disable a user (revokes its tokens)", _disable),
        ("enable", "enable a disabled user", _enable),
    ):
        c = usub.add_parser(verb, help=text)
        c.add_argument("name")
        add_data_dir(c, kek=False)
        c.set_defaults(handler=handler)

    c = usub.add_parser("roles", help="replace a user's roles")
    c.add_argument("name")
    c.add_argument("--role", action="append", required=True, metavar="ROLE")
    add_data_dir(c, kek=False)
    c.set_defaults(handler=_roles)

    c = usub.add_parser(
        "token",
        help="issue a bearer token for a user (printed once)",
        description="Issue an API token for NAME: only the token is printed (for scripts: "
        "TOKEN=$(amistack users token NAME)); its id, expiry and how to revoke it go to stderr. "
        "Rotate by issuing a new one and revoking the old with --revoke ID.",
    )
    c.add_argument("name", nargs="?", help="the user (omit with --revoke)")
    c.add_argument("--days", type=float, default=30.0, help="validity in days (default 30)")
    c.add_argument("--label", default="", help="what the token is for (shown in 'users list')")
    c.add_argument("--handheld", action="store_true",
                   help="a field handheld's token: it may act for the technician logged in on "
                   "the handheld (audited as them via handheld:NAME), within NAME's own roles "
                   "(docs/handheld.md)")  # fmt: skip
    c.add_argument("--revoke", metavar="ID", help="revoke the token with this id instead")
    add_data_dir(c, kek=False)
    c.set_defaults(handler=_token)


@contextmanager
def _opened(args: argparse.Namespace) -> Iterator[tuple[AccessStore, AuditTrail]]:
    if not args.data_dir.exists() and args.users_command != "add":
        raise CliError(f"{args.data_dir}: no such data directory")
    store = AccessStore(args.data_dir)
    audit = AuditTrail.open(args.data_dir, time.time())
    try:
        yield store, audit
    except AccessError as exc:
        raise CliError(exc.message) from None
    finally:
        audit.close()
        store.close()


def _audited(audit: AuditTrail, action: str, target: str, fn: Callable[[], T], **detail: Any) -> T:
    """Audit-before-action, as the API: the request entry first (nothing is done if it cannot
    be written), then the change, then its outcome."""
    who = _who()
    try:
        audit.record(time.time(), who, action, target=target, outcome="requested", detail=detail)
    except Exception as exc:
        raise CliError(f"the audit trail is unavailable ({exc}); nothing done") from None
    try:
        result = fn()
    except AccessError as exc:
        _after(audit, who, action, target, f"refused: {exc.code}", {"reason": exc.message})
        raise
    _after(audit, who, action, target, "ok", {})
    return result


def _after(
    audit: AuditTrail, who: str, action: str, target: str, outcome: str, detail: dict[str, Any]
) -> None:
    with contextlib.suppress(Exception):  # the change stands; its request entry names it
        audit.record(time.time(), who, action, target=target, outcome=outcome, detail=detail)


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _parse_roles(values: list[str]) -> frozenset[Role]:
    try:
        roles = parse_roles(values)
    except ValueError as exc:
        raise CliError(f"--role: {exc}") from None
    if not roles:
        raise CliError("--role: at least one role")
    return roles


def _password() -> str:
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise CliError(f"no terminal to ask for the password: set ${PASSWORD_ENV}")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise CliError("the passwords differ")
    return first


def _add(args: argparse.Namespace) -> int:
    roles = _parse_roles(args.role)
    password = _password()
    with _opened(args) as (store, audit):
        user = _audited(
            audit,
            "user.add",
            args.name,
            lambda: store.add_user(args.name, password, roles, time.time()),
            roles=role_names(roles),
        )
    print(f"user {user.name}: {', '.join(role_names(user.roles))}")
    return 0


def _date(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def _list(args: argparse.Namespace) -> int:
    with _opened(args) as (store, _):
        users, tokens = store.list_users(), store.list_tokens()
    now = time.time()
    for u in users:
        state = "disabled" if u.disabled else ("locked" if u.locked_until > now else "active")
        print(f"{u.name}\t{','.join(role_names(u.roles))}\t{state}")
        for t in tokens:
            if t.user == u.name and not t.revoked and t.expires_at > now:
                label = f" {t.label!r}" if t.label else ""
                print(f"  token {t.token_id} ({t.kind}{label}) until {_date(t.expires_at)}")
    return 0


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    with _opened(args) as (store, audit):
        action = "user.disable" if disabled else "user.enable"
        revoked = _audited(
            audit, action, args.name, lambda: store.set_disabled(args.name, disabled)
        )
    print(f"user {args.name}: {'disabled' if disabled else 'enabled'}", end="")
    print(f"; {revoked} token(s) revoked" if disabled else "")
    return 0


def _disable(args: argparse.Namespace) -> int:
    return _set_disabled(args, True)


def _enable(args: argparse.Namespace) -> int:
    return _set_disabled(args, False)


def _roles(args: argparse.Namespace) -> int:
    roles = _parse_roles(args.role)
    with _opened(args) as (store, audit):
        _audited(
            audit,
            "user.roles",
            args.name,
            lambda: store.set_roles(args.name, roles),
            roles=role_names(roles),
        )
    print(f"user {args.name}: {', '.join(role_names(roles))}")
    return 0


def _token(args: argparse.Namespace) -> int:
    if args.revoke:
        with _opened(args) as (store, audit):
            user = _audited(
                audit, "token.revoke", "", lambda: store.revoke_token(args.revoke),
                token_id=args.revoke,
            )  # fmt: skip
        print(f"token {args.revoke} of {user}: revoked")
        return 0
    if not args.name:
        raise CliError("give the user's NAME (or --revoke ID)")
    with _opened(args) as (store, audit):
        kind = HANDHELD_TOKEN if args.handheld else "api"
        issued = store.issue_token(
            args.name, time.time(), ttl_s=args.days * 86400, kind=kind, label=args.label
        )
        try:  # the token's id exists only now: recorded at once, or the token is revoked
            audit.record(
                time.time(),
                _who(),
                "token.create",
                target=args.name,
                detail={"token_id": issued.token_id, "label": args.label, "kind": kind},
            )
        except Exception as exc:
            store.revoke_token(issued.token_id)
            raise CliError(f"the audit trail is unavailable ({exc}); no token issued") from None
    print(issued.token)
    print(
        f"token {issued.token_id} for {issued.user}, valid until {_date(issued.expires_at)} UTC "
        f"(revoke: amistack users token --revoke {issued.token_id})",
        file=sys.stderr,
    )
    return 0
