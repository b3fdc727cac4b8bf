"""Users, passwords, bearer tokens and login sessions: one SQLite store (DIR/access.db, 0600).

- Passwords are hashed with Argon2id (argon2-cffi, RFC 9106 parameters of its default profile);
  a hash made under weaker parameters is upgraded at the next successful login.
- Bearer tokens are opaque: 32 random octets, base64url (43 characters). Only their SHA-256 is
  stored (a 256-bit random secret needs no slow hash: nothing to guess), with the user, the kind
  (`api` for scripts, `session` for a login), an expiry and a revoked flag. The first 12 hex
  digits of that digest are the token's id (listing, revoking) and never let anyone use it.
- Failed logins: after `LoginPolicy.max_failures` consecutive failures a user is locked for
  `lockout_s` seconds; a success resets the count. An unknown user costs the same hash as a
  known one, so the answer's timing does not tell which names exist.
- At most `LoginPolicy.max_concurrent_hashes` Argon2 computations run at once (each takes
  64 MiB): a flood of anonymous logins queues instead of exhausting the head-end's memory.

Sans-IO apart from its database: `now` is passed in and randomness comes from an injected source.
Every error is an `AccessError` whose message is fit for a CLI user or an API answer.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from amistack.access.rights import Right, Role, rights_of
from amistack.crypto import RandomSource, system_random
from amistack.keymgmt.pki import meters_cover

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
TOKEN_OCTETS = 32
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 takes anything; a megabyte password is a CPU/memory attack
TOKEN_ID_HEX = 12
# The token kind of a field handheld's API identity: it may act for the technician logged in on
# the handheld (access/http.py `AccessControl.on_behalf`, docs/handheld.md)
HANDHELD_TOKEN = "handheld"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,           -- Argon2id, PHC string format
    roles         TEXT NOT NULL,           -- comma-separated IEC 62351-8 role names
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    DOUBLE PRECISION NOT NULL,
    failures      INTEGER NOT NULL DEFAULT 0,  -- consecutive failed logins
    locked_until  DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
    digest     TEXT PRIMARY KEY,           -- hex SHA-256 of the token (never the token)
    user       TEXT NOT NULL REFERENCES users (name),
    kind       TEXT NOT NULL,              -- api | session | handheld
    label      TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user);
"""


class AccessError(Exception):
    """A user/token operation that cannot be done; `code`: not_found | exists | invalid."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LoginRefused(AccessError):
    """A login that did not succeed. The message never says whether the user exists."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__("refused", message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class LoginPolicy:
    max_failures: int = 5  # consecutive failures before the account is locked
    lockout_s: float = 300.0
    session_ttl_s: float = 8 * 3600.0  # a login session (one working shift)
    token_ttl_s: float = 30 * 86400.0  # an API token's default life
    max_token_ttl_s: float = 366 * 86400.0
    max_concurrent_hashes: int = 2


@dataclass(frozen=True)
class Principal:
    """Who is calling, with which roles, authenticated how (token, session or certificate)."""

    name: str
    roles: frozenset[Role]
    via: str
    token_id: str | None = None
    source: str = ""  # the client's address, set by the HTTP layer (for the audit trail)
    # Area of responsibility (IEC 62351-8 `aor`): meter selectors as keymgmt.pki's (a device id,
    # a prefix ending in *, or *). A role certificate names it; users of this store are unscoped.
    aor: frozenset[str] = frozenset({"*"})

    @property
    def rights(self) -> frozenset[Right]:
        return rights_of(self.roles)

    def may(self, right: Right) -> bool:
        return right in self.rights

    def covers(self, meter: bytes | str) -> bool:
        """Whether `meter` lies in this principal's area of responsibility."""
        return meters_cover(self.aor, meter)


@dataclass(frozen=True)
class User:
    name: str
    roles: frozenset[Role]
    disabled: bool
    created_at: float
    locked_until: float


@dataclass(frozen=True)
class IssuedToken:
    token: str  # shown once; only its digest is stored
    token_id: str
    user: str
    kind: str
    expires_at: float


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    user: str
    kind: str
    label: str
    created_at: float
    expires_at: float
    revoked: bool


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise AccessError("invalid", f"user name {name!r} must be 1-64 of [A-Za-z0-9_.@-]")
    return name


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccessError(
            "invalid", f"a password must be {MIN_PASSWORD}..{MAX_PASSWORD} characters"
        )
    return password


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _roles_text(roles: Iterable[Role]) -> str:
    return ",".join(r.name for r in sorted(set(roles)))


def _roles(text: str) -> frozenset[Role]:
    return frozenset(Role[n] for n in text.split(",") if n)


class AccessStore:
    """The identity store (see the module docstring). Thread-safe: one connection, one lock."""

    FILENAME = "access.db"

    def __init__(
        self,
        path: Path | str,
        *,
        rng: RandomSource = system_random,
        hasher: PasswordHasher | None = None,
        policy: LoginPolicy | None = None,
    ) -> None:
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = path / self.FILENAME
        else:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():  # 0600 from birth: the hashes are still worth protecting
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.path = path
        self.rng = rng
        self.hasher = hasher or PasswordHasher()
        self.policy = policy or LoginPolicy()
        # An unknown user is answered after the same work as a known one (the hash is made at
        # the first login attempt: token-only users of the store, `amistack keys`, skip it).
        self._dummy = ""
        self._lock = threading.Lock()
        self._hashing = threading.BoundedSemaphore(self.policy.max_concurrent_hashes)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._tx() as db:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.rollback()
                raise
            else:
                self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- users ---------------------------------------------------------------------------------

    def add_user(self, name: str, password: str, roles: Iterable[Role], now: float) -> User:
        check_name(name)
        hashed = self.hasher.hash(check_password(password))
        roles = frozenset(roles)
        if not roles:
            raise AccessError("invalid", "a user needs at least one role")
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO users (name, password_hash, roles, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (name, hashed, _roles_text(roles), now),
            )
            if cur.rowcount == 0:
                raise AccessError("exists", f"user {name!r} exists")
        return User(name, roles, False, now, 0.0)

    def get_user(self, name: str) -> User | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT name, roles, disabled, created_at, locked_until FROM users WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else User(row[0], _roles(row[1]), bool(row[2]), row[3], row[4])

    def list_users(self) -> list[User]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT name, roles, disabled, created_at, locked_until FROM users ORDER BY name"
            ).fetchall()
        return [User(r[0], _roles(r[1]), bool(r[2]), r[3], r[4]) for r in rows]

    def _update_user(self, name: str, sql: str, params: tuple[object, ...]) -> None:
        with self._tx() as db:
            if db.execute(f"UPDATE users SET {sql} WHERE name = ?", (*params, name)).rowcount == 0:
                raise AccessError("not_found", f"no user {name!r}")

    def set_roles(self, name: str, roles: Iterable[Role]) -> None:
        roles = frozenset(roles)
        if not roles:
            raise AccessError("invalid", "a user needs at least one role")
        self._update_user(name, "roles = ?", (_roles_text(roles),))

    def set_password(self, name: str, password: str) -> None:
        hashed = self.hasher.hash(check_password(password))
        self._update_user(name, "password_hash = ?, failures = 0, locked_until = 0", (hashed,))

    def set_disabled(self, name: str, disabled: bool) -> int:
        """Disable (or enable) a user; disabling also revokes every token it holds (returned)."""
        self._update_user(name, "disabled = ?", (int(disabled),))
        return self.revoke_tokens(name) if disabled else 0

    # -- tokens --------------------------------------------------------------------------------

    def issue_token(
        self,
        name: str,
        now: float,
        *,
        ttl_s: float | None = None,
        kind: str = "api",
        label: str = "",
    ) -> IssuedToken:
        ttl = self.policy.token_ttl_s if ttl_s is None else ttl_s
        if not 0 < ttl <= self.policy.max_token_ttl_s:
            raise AccessError(
                "invalid", f"a token lives 1 s .. {self.policy.max_token_ttl_s / 86400:.0f} days"
            )
        if len(label) > 64 or not label.isprintable():
            raise AccessError("invalid", "a token label is at most 64 printable characters")
        token = base64.urlsafe_b64encode(self.rng(TOKEN_OCTETS)).rstrip(b"=").decode("ascii")
        digest = token_digest(token)
        with self._tx() as db:
            row = db.execute("SELECT disabled FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise AccessError("not_found", f"no user {name!r}")
            if row[0]:
                raise AccessError("invalid", f"user {name!r} is disabled")
            db.execute(
                "INSERT INTO tokens (digest, user, kind, label, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (digest, name, kind, label, now, now + ttl),
            )
        return IssuedToken(token, digest[:TOKEN_ID_HEX], name, kind, now + ttl)

    def authenticate_token(self, token: str, now: float) -> Principal | None:
        """The principal a bearer token stands for, or None (unknown, expired, revoked, user
        disabled)."""
        if not 20 <= len(token) <= 128:
            return None
        digest = token_digest(token)
        with self._tx() as db:
            row = db.execute(
                "SELECT t.user, t.kind, t.expires_at, t.revoked, u.roles, u.disabled "
                "FROM tokens t JOIN users u ON u.name = t.user WHERE t.digest = ?",
                (digest,),
            ).fetchone()
        if row is None or row[3] or row[5] or not now < row[2]:
            return None
        return Principal(row[0], _roles(row[4]), row[1], digest[:TOKEN_ID_HEX])

    def list_tokens(self, name: str | None = None) -> list[TokenInfo]:
        where, params = ("WHERE user = ?", (name,)) if name is not None else ("", ())
        with self._tx() as db:
            rows = db.execute(
                "SELECT digest, user, kind, label, created_at, expires_at, revoked FROM tokens "
                f"{where} ORDER BY created_at",
                params,
            ).fetchall()
        return [
            TokenInfo(r[0][:TOKEN_ID_HEX], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows
        ]

    def revoke_token(self, token_id: str) -> str:
        """Revoke the token whose id is `token_id` (or the token itself); returns its user."""
        if len(token_id) > TOKEN_ID_HEX:
            token_id = token_digest(token_id)[:TOKEN_ID_HEX]
        if not re.fullmatch(f"[0-9a-f]{{{TOKEN_ID_HEX}}}", token_id):
            raise AccessError("invalid", f"a token id is {TOKEN_ID_HEX} hex digits")
        with self._tx() as db:
            row = db.execute(
                "UPDATE tokens SET revoked = 1 WHERE substr(digest, 1, ?) = ? RETURNING user",
                (TOKEN_ID_HEX, token_id),
            ).fetchone()
        if row is None:
            raise AccessError("not_found", f"no token {token_id}")
        return str(row[0])

    def revoke_tokens(self, name: str) -> int:
        with self._tx() as db:
            return db.execute(
                "UPDATE tokens SET revoked = 1 WHERE user = ? AND revoked = 0", (name,)
            ).rowcount

    # -- login ---------------------------------------------------------------------------------

    def login(self, name: str, password: str, now: float) -> tuple[Principal, IssuedToken]:
        """Check a password and open a login session (a `session` token, `session_ttl_s`).

        LoginRefused on a wrong name or password (the same message for both), on a disabled
        user and while a user is locked out (with `retry_after`)."""
        roles = self.verify_password(name, password, now)
        issued = self.issue_token(name, now, ttl_s=self.policy.session_ttl_s, kind="session")
        return Principal(name, roles, "session", issued.token_id), issued

    def verify_password(self, name: str, password: str, now: float) -> frozenset[Role]:
        """`login`'s check without a session (a step-up before a sensitive action): the user's
        roles, or LoginRefused as `login`; failures count towards the same lock-out."""
        if not _NAME.fullmatch(name) or len(password) > MAX_PASSWORD:
            self._burn(password[:MAX_PASSWORD])
            raise LoginRefused("wrong user name or password")
        with self._tx() as db:
            row = db.execute(
                "SELECT password_hash, roles, disabled, failures, locked_until FROM users "
                "WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            self._burn(password)
            raise LoginRefused("wrong user name or password")
        hashed, roles, disabled, failures, locked_until = row
        if now < locked_until:
            raise LoginRefused(
                "too many failed logins; try again later", retry_after=locked_until - now
            )
        try:
            with self._hashing:
                self.hasher.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            failures += 1
            lock = now + self.policy.lockout_s if failures >= self.policy.max_failures else 0.0
            with self._tx() as db:
                db.execute(
                    "UPDATE users SET failures = ?, locked_until = ? WHERE name = ?",
                    (0 if lock else failures, lock, name),
                )
            raise LoginRefused("wrong user name or password") from None
        if disabled:
            raise LoginRefused(f"user {name!r} is disabled")
        update = "failures = 0, locked_until = 0"
        params: tuple[object, ...] = ()
        if self.hasher.check_needs_rehash(hashed):
            update += ", password_hash = ?"
            params = (self.hasher.hash(password),)
        with self._tx() as db:
            db.execute(f"UPDATE users SET {update} WHERE name = ?", (*params, name))
        return _roles(roles)

    def _burn(self, password: str) -> None:
        if not self._dummy:
            self._dummy = self.hasher.hash(base64.b64encode(self.rng(16)).decode())
        with self._hashing, suppress(VerificationError, InvalidHashError):
            self.hasher.verify(self._dummy, password)
