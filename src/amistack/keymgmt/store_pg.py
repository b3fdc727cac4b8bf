"""The credential store on PostgreSQL: several key-server processes on one database.

`PostgresCredentialStore` is `CredentialStore` with another connection: the same methods, the
same SQL (qmark placeholders translated), the same wrapping and AAD, the same audit trail. What
differs is what one SQLite file gave for free:

- **One writer at a time for credentials.** SQLite's BEGIN IMMEDIATE serialised every write.
  Here a credential change (enroll, revoke, rotate, lifetime) takes a transaction-level advisory
  lock exclusively; a group commit that checks its devices are still active takes it shared,
  so a revocation by any process lands wholly before the check or wholly after the write
  (docs/key-hierarchy.md, "Durability"), while key servers' group commits run side by side.
- **The revocation journal in order.** Audit sequence numbers come from an identity column,
  so a transaction may commit after a later number is visible. A revocation holds the lock
  exclusively from its entry to its commit and the journal is read under the shared lock:
  no revocation is ever half-written when a key server reads past it.
- **Telling the others.** A credential change NOTIFYs `amistack_credentials` at commit;
  `watch_changes` runs a LISTEN connection on a thread, so key servers apply a revocation in
  milliseconds instead of at the next poll (docs/scale-out.md has the measured times).
- **Durability.** Credential changes and durable commits wait for the server's WAL flush
  (synchronous_commit on); the key server's group commits do not (off for that transaction),
  as SQLite's run with synchronous=NORMAL: a killed key server loses nothing committed, only
  a crash of the database server can lose the last fraction of a second (whose meters then
  re-authenticate, as after an OS crash under SQLite).
- **Its own schema.** The tables live in the PostgreSQL schema `amistack_keys`, so the key
  server and the head-end may share one database.
- **One process per instance name.** `claim_instance` holds a session advisory lock on the
  name; a second key server started with it is refused.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from amistack.keymgmt.kek import KeyEncryptionKey
from amistack.keymgmt.store import SCHEMA_VERSION, CredentialStore, StoreError
from amistack.pgconn import DsnError, connect, describe, qmark_to_pyformat

logger = logging.getLogger(__name__)

PG_SCHEMA = "amistack_keys"
CHANNEL = "amistack_credentials"  # the NOTIFY channel of credential changes
_CREDENTIAL_LOCK = 0x414D494B  # pg_advisory_xact_lock key: "AMIK"
_INSTANCE_LOCK = 0x414D4949  # pg_try_advisory_lock(key, hashtext(instance)): "AMII"

# The SQLite schema's tables, columns and indexes in PostgreSQL's types; the audit trail is
# append-only by trigger here too (UPDATE, DELETE and TRUNCATE refused).
_SCHEMA = f"""
CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA};
SET LOCAL search_path TO {PG_SCHEMA};
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device_id         BYTEA PRIMARY KEY,
    psk_blob          BYTEA,
    psk_generation    INTEGER NOT NULL,
    kek_label         TEXT NOT NULL,
    enrolled_at       DOUBLE PRECISION NOT NULL,
    revoked_at        DOUBLE PRECISION,
    revoke_reason     TEXT,
    revoke_keys_until DOUBLE PRECISION,
    session_lifetime  DOUBLE PRECISION,
    eap_method        TEXT NOT NULL DEFAULT 'psk'
);
CREATE TABLE IF NOT EXISTS key_generations (
    instance      TEXT NOT NULL DEFAULT '',
    session_id    BIGINT NOT NULL,
    generation    BIGINT NOT NULL,
    peer_id       BYTEA NOT NULL,
    purposes      TEXT NOT NULL,
    keys_blob     BYTEA NOT NULL,
    kek_label     TEXT NOT NULL,
    not_before    DOUBLE PRECISION NOT NULL,
    not_after     DOUBLE PRECISION NOT NULL,
    superseded_at DOUBLE PRECISION,
    PRIMARY KEY (instance, not_before, session_id, generation)
);
CREATE TABLE IF NOT EXISTS group_key_rings (
    pan_id    INTEGER PRIMARY KEY,
    serial    BIGINT NOT NULL,
    rotate_at DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS group_keys (
    pan_id     INTEGER NOT NULL,
    serial     BIGINT NOT NULL,
    key_index  INTEGER NOT NULL,
    key_blob   BYTEA NOT NULL,
    kek_label  TEXT NOT NULL,
    not_before DOUBLE PRECISION NOT NULL,
    not_after  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (pan_id, serial)
);
CREATE TABLE IF NOT EXISTS audit (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        DOUBLE PRECISION NOT NULL,
    kind      TEXT NOT NULL,
    device_id BYTEA,
    detail    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_device ON audit (device_id, seq);
CREATE INDEX IF NOT EXISTS audit_revoke ON audit (seq) WHERE kind = 'revoke';
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
CREATE OR REPLACE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE OR REPLACE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
INSERT INTO schema_version (version) SELECT {SCHEMA_VERSION}
    WHERE NOT EXISTS (SELECT 1 FROM schema_version);
"""


def _order_generations(db: Any) -> None:
    """Schema 4 -> 5 (store.py): not_before leads the primary key of key_generations."""
    version = db.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    if version is not None and version < 5:
        db.execute(
            "ALTER TABLE key_generations DROP CONSTRAINT key_generations_pkey, "
            "ADD PRIMARY KEY (instance, not_before, session_id, generation)"
        )
        db.execute(f"UPDATE schema_version SET version = {SCHEMA_VERSION}")


def _lock_sql(*, shared: bool) -> str:
    kind = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    return f"SELECT {kind}({_CREDENTIAL_LOCK})"


class _PgDb:
    """A psycopg connection as the store's SQL sees sqlite3's: `execute` / `executemany` with
    qmark placeholders, returning a cursor; `in_transaction`."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> Any:
        if not params:  # no placeholders: the simple protocol (BEGIN, COMMIT, ...)
            return self.conn.execute(sql)
        return self.conn.execute(qmark_to_pyformat(sql), params)

    def executemany(self, sql: str, rows: Any) -> Any:
        cur = self.conn.cursor()
        cur.executemany(qmark_to_pyformat(sql), rows)
        return cur

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return bool(self.conn.info.transaction_status != TransactionStatus.IDLE)

    def close(self) -> None:
        self.conn.close()


class PostgresCredentialStore(CredentialStore):
    """The credential store in PostgreSQL (`dsn` = postgresql://..., no password in it)."""

    def __init__(
        self,
        dsn: str,
        kek: KeyEncryptionKey,
        *,
        instance: str = "",
        password: str | None = None,
    ) -> None:
        import psycopg

        self._DB_ERROR = psycopg.Error
        self._setup(describe(dsn), kek, instance)
        self._dsn, self._password = dsn, password
        self._watchers: list[tuple[threading.Event, threading.Thread]] = []
        try:
            self._db = _PgDb(self._connect())
            with self._tx() as db:  # under the credential lock: processes starting at once
                db.execute(_SCHEMA)
                _order_generations(db)
        except DsnError as exc:
            raise StoreError(str(exc)) from None
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: cannot open credential store: {exc}") from None
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            self.close()
            raise StoreError(
                f"{self.where}: schema version {version} is newer than this amistack "
                f"understands ({SCHEMA_VERSION})"
            )

    def _connect(self) -> Any:
        return connect(self._dsn, self._password, options=f"-c search_path={PG_SCHEMA}")

    def _synchronous(self, mode: str) -> None:
        """No PRAGMA here: the commit mode goes with each BEGIN (`_begin_sql`)."""

    def _begin_sql(self, synchronous: str, lock: str | None) -> str:
        """BEGIN, and in the same round trip: for a group commit (synchronous NORMAL)
        synchronous_commit off - SQLite's NORMAL in kind: the commit is in the server's WAL
        buffers when it returns, so a key server killed at any point loses nothing, and only a
        crash of the database server may lose the last ~3 x wal_writer_delay of them
        (docs/scale-out.md) - and the credential lock (`_lock`)."""
        parts = ["BEGIN"]
        if synchronous != "FULL":
            parts.append("SET LOCAL synchronous_commit = off")
        if lock is not None:
            parts.append(_lock_sql(shared=lock == "shared"))
        return "; ".join(parts)

    def _lock(self, db: Any, *, shared: bool) -> None:
        db.execute(_lock_sql(shared=shared))

    def _changed(self, db: Any, what: str) -> None:
        db.execute(f"NOTIFY {CHANNEL}, '{what}'")  # delivered at COMMIT, dropped on ROLLBACK

    @contextmanager
    def _journal(self) -> Iterator[Any]:
        """Read the audit trail under the shared credential lock: a revocation in flight (its
        sequence number drawn, its commit not yet visible) is waited for, never skipped."""
        db = self._db
        try:
            db.execute("BEGIN READ ONLY")
            self._lock(db, shared=True)
            yield db
        finally:
            if db.in_transaction:
                db.execute("COMMIT")

    def claim_instance(self, wait: float = 3.0) -> None:
        """Take the instance's session lock, waiting up to `wait` seconds: a process killed
        moments ago holds it until its server backend has noticed and exited."""
        db = self._db
        try:
            db.execute("BEGIN")
            db.execute(f"SET LOCAL lock_timeout = {int(wait * 1000)}")
            db.execute("SELECT pg_advisory_lock(?, hashtext(?))", (_INSTANCE_LOCK, self.instance))
            db.execute("COMMIT")  # a session lock: held after the commit, until close
        except self._DB_ERROR as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if getattr(exc, "sqlstate", None) != "55P03":  # lock_not_available
                raise StoreError(f"{self.where}: {exc}") from exc
            raise StoreError(
                f"another key server runs as instance {self.instance!r} on {self.where} "
                "(give each process its own --instance)"
            ) from None

    def watch_changes(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call `callback(kind)` (from a thread) each time any process commits a credential
        change (revoke, rotate-psk, enroll); returns the function that stops watching."""
        stop = threading.Event()
        conn = self._connect()
        conn.execute(f"LISTEN {CHANNEL}")

        def run() -> None:
            try:
                while not stop.is_set():
                    for note in conn.notifies(timeout=0.25):
                        callback(note.payload)
            except Exception as exc:  # the connection broke: polling still applies changes
                if not stop.is_set():
                    logger.warning("credential change listener stopped: %s", exc)
            finally:
                conn.close()

        thread = threading.Thread(target=run, name="amistack-credential-listen", daemon=True)
        thread.start()
        self._watchers.append((stop, thread))

        def unwatch() -> None:
            stop.set()
            thread.join(2.0)

        return unwatch

    def start_checkpointer(self, every: float = 0.5) -> None:
        """PostgreSQL checkpoints by itself."""

    def close(self) -> None:
        for stop, thread in self._watchers:
            stop.set()
            thread.join(2.0)
        self._watchers.clear()
        self._psk_keys.clear()
        self._db.close()

    def __repr__(self) -> str:
        return f"PostgresCredentialStore({self.where!r}, instance={self.instance!r})"


def open_credential_store(
    target: str,
    kek: KeyEncryptionKey,
    *,
    instance: str = "",
    password: str | None = None,
) -> CredentialStore:
    """postgresql://... opens PostgreSQL; anything else is an SQLite file."""
    from amistack.pgconn import is_postgres_url

    if is_postgres_url(target):
        return PostgresCredentialStore(target, kek, instance=instance, password=password)
    return CredentialStore(target, kek, instance=instance)
