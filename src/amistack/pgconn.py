"""PostgreSQL connections for the services' stores (key server, head-end).

One place for how a database URL is checked and connected, so a password never travels on a
command line or into a log line: a URL carrying one is refused; the password comes from a file
(`password_file`, owner-only like every key file), or from libpq's own PGPASSWORD / PGPASSFILE /
~/.pgpass. psycopg is imported only when PostgreSQL is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from amistack.crypto.secretfile import SecretFileError, read_secret_file

URL_SCHEMES = ("postgresql://", "postgres://")
MAX_PASSWORD = 1024


class DsnError(ValueError):
    """The database URL cannot be used as given; the message says why (never the password)."""


def is_postgres_url(target: object) -> bool:
    return str(target).startswith(URL_SCHEMES)


def check_dsn(dsn: str) -> dict[str, str]:
    """The URL's parameters; refuses a malformed URL and one that holds a password."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except ProgrammingError:
        raise DsnError("not a valid postgresql:// URL") from None
    if "password" in params:
        raise DsnError(
            "the database URL holds a password: give it in a file (--db-password-file), "
            "PGPASSWORD or ~/.pgpass instead, never on the command line"
        )
    return params


def describe(dsn: str) -> str:
    """The URL as a message may show it: user, host, port and database, nothing else."""
    try:
        params = check_dsn(dsn)
    except DsnError:
        return "postgresql://(invalid)"
    host = params.get("host", "")
    where = f"{host}:{params['port']}" if "port" in params else host
    return f"postgresql://{params.get('user', '')}@{where}/{params.get('dbname', '')}"


def read_password_file(path: Path) -> str:
    """The password in `path` (its first line), which only its owner may read."""
    try:
        raw = read_secret_file(path, MAX_PASSWORD, "database password")
    except SecretFileError as exc:
        raise DsnError(str(exc)) from None
    if len(raw) > MAX_PASSWORD:
        raise DsnError(f"{path}: a database password is at most {MAX_PASSWORD} bytes")
    try:
        return raw.decode().splitlines()[0] if raw.strip() else ""
    except UnicodeDecodeError:
        raise DsnError(f"{path}: the database password is not UTF-8") from None


def connect(dsn: str, password: str | None = None, **options: Any) -> Any:
    """A psycopg connection (autocommit unless `options` say otherwise) to `dsn`."""
    import psycopg

    check_dsn(dsn)
    options.setdefault("autocommit", True)
    if password is not None:
        options["password"] = password
    return psycopg.connect(dsn, **options)


def qmark_to_pyformat(sql: str) -> str:
    """The stores' shared SQL uses qmark placeholders; psycopg wants %s (no query of theirs has
    a literal ?)."""
    return sql.replace("%", "%%").replace("?", "%s")
