"""The credential store: enrolled devices and their PSKs, application keys, and the audit trail.

Each device is enrolled for one EAP method (`devices.eap_method`): ``psk`` with its PSK, or
``tls`` with no secret here at all (its device certificate comes from the PKI, `pki
issue-device`). A device enrolled for one method is refused by the other, so a TLS meter cannot
be downgraded to EAP-PSK.

One SQLite database (WAL, synchronous=FULL: a credential acknowledged is a credential on disk),
or PostgreSQL for several key-server processes (`store_pg.PostgresCredentialStore`: the same
SQL, methods and rules; `open_credential_store` picks by the target).
Every secret is wrapped under the key-encryption key with associated data naming its row, so a
blob copied to another row, another device or another PSK generation does not unwrap. Each
operation is one transaction together with its audit entry: a crash leaves all of it or none.
The audit table is append-only (triggers refuse UPDATE and DELETE). The key server's
per-authentication writes (keys, audit entries) go through `commit(WriteBatch)`, one group
commit with synchronous=NORMAL (docs/key-hierarchy.md, "Durability").

Several key servers may share one database: each names itself (`instance`), and the key
generations it writes and restores are its own (`key_generations.instance`); devices, PSKs and
the audit trail are shared, so a revocation or a new PSK written by any process is seen by all.

Timestamps are passed in; nothing here reads a clock.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from amistack.eap.psk import PskKeys
from amistack.keymgmt.groupkeys import GroupKey
from amistack.keymgmt.kek import KekError, KeyEncryptionKey, record_aad
from amistack.keymgmt.keyring import AppKey
from amistack.keymgmt.ukmf import KeyId, PurposeError, PurposeRegistry

logger = logging.getLogger(__name__)

# 2: no index on the per-authentication path but the primary keys; 3: one row per key generation;
# 4: key generations belong to a key-server instance (several processes on one database);
# 5: key generations in the order they are issued (not_before leads their primary key)
SCHEMA_VERSION = 5
PSK_LENGTH = 16  # EAP-PSK PSKs are 16 octets (RFC 4764 §2.1)
MAX_DEVICE_ID = 255  # an EAP-PSK ID_P fits any reasonable NAI
METHOD_PSK = "psk"  # EAP-PSK, RFC 4764
METHOD_TLS = "tls"  # EAP-TLS, RFC 5216 / RFC 9190
EAP_METHODS = (METHOD_PSK, METHOD_TLS)
PSK_KEYS_CACHE = 100_000  # devices whose derived EAP-PSK keys are kept (get_psk_keys_and_lifetime)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    device_id        BLOB PRIMARY KEY,
    psk_blob         BLOB,              -- NULL once revoked: the PSK is destroyed
    psk_generation   INTEGER NOT NULL,
    kek_label        TEXT NOT NULL,
    enrolled_at      REAL NOT NULL,
    revoked_at       REAL,
    revoke_reason    TEXT,
    revoke_keys_until REAL,             -- revocation: issued keys end by then (NULL = at once)
    session_lifetime REAL               -- seconds; NULL = the PAA's default
);
-- One row per key generation (PANA Key-Id of one authentication): every purpose's key in ONE
-- blob, wrapped once, with the purposes and lengths in `purposes` ("name:len,...", bound in the
-- AAD). The keys of a generation share their lifetime, so they are written and dropped together:
-- one row and one wrap per authentication instead of one per purpose (docs/key-hierarchy.md).
-- Only scanned whole (load_keys, at start-up) or reached by its primary key: no other index,
-- and WITHOUT ROWID so that key is the only B-tree an insert touches. The key leads with
-- not_before (when the generation was issued; the key server holds it in memory for every
-- update and delete): PANA session ids are random, and a key that began with them sent each
-- insert to its own B-tree page, which every group commit then wrote (schema 5).
CREATE TABLE IF NOT EXISTS key_generations (
    instance      TEXT NOT NULL DEFAULT '',  -- the key server that wrote it (and restores it)
    session_id    INTEGER NOT NULL,
    generation    INTEGER NOT NULL,
    peer_id       BLOB NOT NULL,
    purposes      TEXT NOT NULL,
    keys_blob     BLOB NOT NULL,
    kek_label     TEXT NOT NULL,
    not_before    REAL NOT NULL,
    not_after     REAL NOT NULL,
    superseded_at REAL,
    PRIMARY KEY (instance, not_before, session_id, generation)
) WITHOUT ROWID;
-- Mesh group keys (keymgmt/groupkeys.py): a PAN's ring (its key serial and a pending
-- rotation, so a restart neither reuses a serial nor forgets a revocation's rotation) and its
-- live keys, each wrapped under the KEK. A handful of rows per PAN, rewritten on each change.
-- Added tables only: stores of schema 3 gain them when opened.
CREATE TABLE IF NOT EXISTS group_key_rings (
    pan_id    INTEGER PRIMARY KEY,
    serial    INTEGER NOT NULL,
    rotate_at REAL
);
CREATE TABLE IF NOT EXISTS group_keys (
    pan_id     INTEGER NOT NULL,
    serial     INTEGER NOT NULL,
    key_index  INTEGER NOT NULL,
    key_blob   BLOB NOT NULL,
    kek_label  TEXT NOT NULL,
    not_before REAL NOT NULL,
    not_after  REAL NOT NULL,
    PRIMARY KEY (pan_id, serial)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        REAL NOT NULL,
    kind      TEXT NOT NULL,
    device_id BLOB,
    detail    TEXT NOT NULL
);
-- An operator asking for one device's history ('amistack keys audit --device') must not scan
-- millions of entries; the index costs one more B-tree leaf per group commit (~0.01 ms/auth).
CREATE INDEX IF NOT EXISTS audit_device ON audit (device_id, seq);
-- The revocation journal (revocations_after, polled by the key server) is the one query by
-- kind that must stay cheap; a partial index leaves the per-authentication entries out of it.
DROP INDEX IF EXISTS audit_kind;
CREATE INDEX IF NOT EXISTS audit_revoke ON audit (seq) WHERE kind = 'revoke';
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


# A whole device row, as enrolment writes it (a re-enrolment replaces every column). An upsert
# both SQLite (3.24+) and PostgreSQL read the same way.
_PUT_DEVICE = (
    "INSERT INTO devices (device_id, psk_blob, psk_generation, kek_label, enrolled_at, "
    "revoked_at, revoke_reason, revoke_keys_until, session_lifetime, eap_method) "
    "VALUES (?, ?, ?, ?, ?, NULL, NULL, NULL, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
    "psk_blob = excluded.psk_blob, psk_generation = excluded.psk_generation, "
    "kek_label = excluded.kek_label, enrolled_at = excluded.enrolled_at, revoked_at = NULL, "
    "revoke_reason = NULL, revoke_keys_until = NULL, "
    "session_lifetime = excluded.session_lifetime, eap_method = excluded.eap_method"
)


class StoreError(Exception):
    """The credential store cannot do what was asked; the message is fit for a CLI user."""


class UnknownDevice(StoreError):
    def __init__(self, device_id: bytes) -> None:
        super().__init__(f"unknown device {_show(device_id)}")
        self.device_id = device_id


class AlreadyEnrolled(StoreError):
    def __init__(self, device_id: bytes) -> None:
        super().__init__(
            f"device {_show(device_id)} is already enrolled (use replace to re-enroll)"
        )
        self.device_id = device_id


class DeviceRevoked(StoreError):
    def __init__(self, device_id: bytes) -> None:
        super().__init__(f"device {_show(device_id)} is revoked")
        self.device_id = device_id


class InactiveDevices(StoreError):
    """`CredentialStore.commit(require_active=...)` found these devices revoked or removed; the
    batch was rolled back, nothing of it written."""

    def __init__(self, device_ids: set[bytes]) -> None:
        super().__init__(f"{len(device_ids)} device(s) no longer enrolled or revoked")
        self.device_ids = device_ids


class AuditKind(StrEnum):
    ENROLL = "enroll"
    # EAP succeeded, the PANA success (PAR C) may now be sent; only for a PAA engine that cannot
    # show its context ahead (KeyServer.from_parts): otherwise AUTH_SUCCESS / REKEY is written
    # with the keys, before the PANA success is sent
    AUTH_ACCEPTED = "auth-accepted"
    AUTH_SUCCESS = "auth-success"
    AUTH_FAILURE = "auth-failure"
    REKEY = "rekey"
    REVOKE = "revoke"
    ROTATE_PSK = "rotate-psk"
    SESSION_END = "session-end"
    KEYS_SHORTENED = "keys-shortened"
    KEYS_EXPIRED = "keys-expired"
    LIFETIME = "session-lifetime"


@dataclass(frozen=True)
class DeviceInfo:
    """What may be shown about a device: never its PSK."""

    device_id: bytes
    enrolled_at: float
    revoked: bool
    revoked_at: float | None
    revoke_reason: str | None
    psk_generation: int
    session_lifetime: float | None
    method: str = METHOD_PSK  # the EAP method the device is enrolled for


@dataclass(frozen=True)
class Revocation:
    """One revocation as journalled in the audit trail, for a running key server to apply."""

    seq: int
    at: float
    device_id: bytes
    reason: str
    keys_until: float | None


class WriteBatch:
    """Per-authentication writes gathered for one group commit (`CredentialStore.commit`).

    It is also a `KeyPersistence`: key rings "save" into it, and the key server commits it once
    per event-loop flush. A generation is wrapped at commit time from its keys' state then (keys
    saved, then superseded, are written once, superseded); keys wiped before the commit are not
    saved.
    """

    __slots__ = ("audits", "deletes", "saves")

    def __init__(self) -> None:
        self.saves: dict[tuple[int, int], tuple[bytes, dict[str, AppKey]]] = {}
        self.deletes: list[tuple[float, int, int]] = []  # (not_before, session, generation)
        self.audits: list[tuple[str, bytes | None, str, float]] = []

    def save_keys(self, peer_id: bytes, keys: Sequence[AppKey]) -> None:
        saves = self.saves
        for k in keys:
            pk = (k.key_id.session_id, k.key_id.generation)
            entry = saves.get(pk)
            if entry is None:
                saves[pk] = (peer_id, {k.purpose.name: k})
            else:
                entry[1][k.purpose.name] = k

    def delete_keys(self, keys: Sequence[AppKey]) -> None:
        for nb, sid, gen in {
            (k.not_before, k.key_id.session_id, k.key_id.generation) for k in keys
        }:
            self.saves.pop((sid, gen), None)
            self.deletes.append((nb, sid, gen))

    def audit(
        self, kind: AuditKind | str, device_id: bytes | None, detail: str, now: float
    ) -> None:
        self.audits.append((str(kind), device_id, detail, now))

    def clear(self) -> None:
        self.saves.clear()
        self.deletes.clear()
        self.audits.clear()

    def __len__(self) -> int:
        return len(self.saves) + len(self.deletes) + len(self.audits)

    def __bool__(self) -> bool:  # asked after every datagram the key server handles
        return bool(self.audits or self.saves or self.deletes)

    def __repr__(self) -> str:
        return (
            f"WriteBatch(saves={len(self.saves)}, deletes={len(self.deletes)}, "
            f"audits={len(self.audits)})"
        )


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    kind: str
    device_id: bytes | None
    detail: str


def _parse_purposes(text: str, key_id: KeyId) -> list[tuple[str, int]]:
    """`key_generations.purposes` ("c1222:16,link:16,...") as (name, length) pairs."""
    out = []
    for item in text.split(","):
        name, _, length = item.partition(":")
        if not name or not (length.isascii() and length.isdigit()):
            raise StoreError(f"keys {key_id}: malformed purpose list {text!r}")
        out.append((name, int(length)))
    return out


def _show(device_id: bytes) -> str:
    try:
        text = device_id.decode("ascii")
        if text.isprintable():
            return repr(text)
    except UnicodeDecodeError:
        pass
    return device_id.hex()


def _device_id(device_id: bytes | str) -> bytes:
    raw = device_id.encode() if isinstance(device_id, str) else bytes(device_id)
    if not 1 <= len(raw) <= MAX_DEVICE_ID:
        raise StoreError(f"device id must be 1..{MAX_DEVICE_ID} bytes")
    return raw


class CredentialStore:
    """Devices, PSKs, persisted application keys and the audit trail in one SQLite file.

    The SQL is shared with `store_pg.PostgresCredentialStore`, which overrides only how it
    connects, opens transactions and creates its schema. `instance` names this key server among
    several sharing one database: the key generations it saves, deletes and restores are its own.
    """

    # what a database error is for this backend (PostgreSQL: psycopg.Error)
    _DB_ERROR: type[Exception] = sqlite3.Error
    _sync_mode: str | None  # SQLite's PRAGMA synchronous as last set (None: not known)

    def __init__(self, path: Path | str, kek: KeyEncryptionKey, *, instance: str = "") -> None:
        self._setup(str(path), kek, instance)
        self.path = Path(path)
        if str(path) != ":memory:" and not self.path.exists():
            # Create the file owner-only; SQLite gives -wal and -shm the same mode.
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreError(f"{self.where}: cannot create database: {exc.strerror}") from None
        try:
            self._db: Any = sqlite3.connect(str(path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._sync_mode = "FULL"
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA secure_delete=ON")  # freed pages are zeroed
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.where}: cannot open credential store: {exc}") from None

    def _setup(self, where: str, kek: KeyEncryptionKey, instance: str) -> None:
        """What both backends hold; `where` names the database in messages (never a secret)."""
        if len(instance) > 64 or not instance.isprintable():
            raise StoreError("a key-server instance name is at most 64 printable characters")
        self.where = where
        self.instance = instance
        self._kek = kek
        self._checkpointer: tuple[threading.Event, threading.Thread] | None = None
        # device -> (PSK generation, wrapped blob, keys derived from it): see get_psk_keys...
        self._psk_keys: dict[bytes, tuple[int, bytes, PskKeys]] = {}
        self.psk_keys_cache = PSK_KEYS_CACHE  # at most this many (>= 1); a simulator keeps few
        self._sync_mode = None

    def _migrate(self) -> None:
        # One transaction: a crash while creating or converting the schema leaves no half of it.
        db = self._db
        db.executescript(
            "BEGIN IMMEDIATE;"
            + _SCHEMA
            + f"INSERT INTO schema_version (version) SELECT {SCHEMA_VERSION} "
            "WHERE NOT EXISTS (SELECT 1 FROM schema_version);"
        )
        try:
            # 1 -> 2 is the index changes above (idempotent); 2 -> 3 regroups the keys;
            # 3 -> 4 gives each generation its key-server instance
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'app_keys'").fetchone():
                self._regroup_app_keys(db)
            self._add_method_column()
            self._add_instance_column()
            self._order_generations()
            db.execute(
                f"UPDATE schema_version SET version = {SCHEMA_VERSION} "
                f"WHERE version < {SCHEMA_VERSION}"
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.where}: schema version {version} is newer than this amistack "
                f"understands ({SCHEMA_VERSION})"
            )

    def _add_method_column(self) -> None:
        """devices.eap_method, added in place to stores made before EAP-TLS (every existing
        device is an EAP-PSK device)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(devices)")}
        if "eap_method" not in columns:
            self._db.execute(
                f"ALTER TABLE devices ADD COLUMN eap_method TEXT NOT NULL DEFAULT '{METHOD_PSK}'"
            )

    def _add_instance_column(self) -> None:
        """key_generations.instance, in the primary key: a schema-3 table is rebuilt, its rows
        the default instance's (the one key server there was)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(key_generations)")}
        if "instance" not in columns:
            self._rebuild_generations("'', ")

    def _order_generations(self) -> None:
        """Schema 4 -> 5: not_before leads the primary key of key_generations (the table is
        rebuilt, every row kept as it is)."""
        pk = {row[1]: row[5] for row in self._db.execute("PRAGMA table_info(key_generations)")}
        if not pk.get("not_before"):
            self._rebuild_generations("instance, ")

    def _rebuild_generations(self, instance: str) -> None:
        """key_generations as _SCHEMA declares it now, every row copied from the old table
        (`instance`: what the copy takes for that column, with its comma)."""
        cols = "session_id, generation, peer_id, purposes, keys_blob, kek_label, not_before, " \
            "not_after, superseded_at"  # fmt: skip
        self._db.execute("ALTER TABLE key_generations RENAME TO key_generations_old")
        create = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS key_generations") :]
        self._db.execute(create[: create.index(";")])
        self._db.execute(
            f"INSERT INTO key_generations (instance, {cols}) SELECT {instance}{cols} "
            "FROM key_generations_old"
        )
        self._db.execute("DROP TABLE key_generations_old")

    def _regroup_app_keys(self, db: sqlite3.Connection) -> None:
        """Schema 2 -> 3: the per-purpose `app_keys` rows become one `key_generations` row per
        generation (unwrapped and wrapped again under the same KEK), then the table goes."""
        gens: dict[tuple[int, int], list[tuple[Any, ...]]] = {}
        for row in db.execute(
            "SELECT session_id, generation, purpose, peer_id, key_blob, kek_label, not_before, "
            "not_after, superseded_at FROM app_keys ORDER BY session_id, generation, purpose"
        ):
            gens.setdefault((int(row[0]), int(row[1])), []).append(row)
        for (sid, gen), rows in gens.items():
            peer = bytes(rows[0][3])
            not_before = float(rows[0][6])
            not_after = min(float(r[7]) for r in rows)
            sups = [float(r[8]) for r in rows if r[8] is not None]
            materials, names = [], []
            for _, _, name, _, blob, label, nb, na, _ in rows:
                aad = record_aad("app-key", peer, sid, gen, str(name), float(nb), float(na))
                materials.append(self._unwrap(bytes(blob), str(label), aad, f"key {sid}/{name}"))
                names.append(f"{name}:{len(materials[-1])}")
            purposes = ",".join(names)
            aad = self._generation_aad(peer, sid, gen, purposes, not_before, not_after)
            db.execute(
                self._INSERT_GENERATION,
                ("", sid, gen, peer, purposes, self._kek.wrap(b"".join(materials), aad),
                 self._kek.label, not_before, not_after, min(sups) if sups else None),
            )  # fmt: skip
        db.execute("DROP TABLE app_keys")
        logger.info("application keys regrouped by generation", extra={"count": len(gens)})

    def _synchronous(self, mode: str) -> None:
        """Set PRAGMA synchronous only when it changes: a run of group commits (NORMAL) pays
        no PRAGMA per batch, and every other transaction is back on FULL before it begins."""
        if self._sync_mode != mode:
            self._sync_mode = None  # unknown until the PRAGMA has succeeded
            self._db.execute(f"PRAGMA synchronous={mode}")
            self._sync_mode = mode

    @contextmanager
    def _tx(self, synchronous: str = "FULL", *, lock: str | None = "exclusive") -> Iterator[Any]:
        """One write transaction: all of it commits, or (on any exception) none of it.
        Credentials and their audit entries always commit with synchronous=FULL.

        `lock`: the credential lock it takes on PostgreSQL (`_lock`): "exclusive" for a
        credential change, "shared" for a check no change may cross, None for writes that
        change no credential (key rows, audit entries), which run beside other key servers';
        SQLite runs one writer at a time whatever it writes."""
        db = self._db
        try:
            self._synchronous(synchronous)
            db.execute(self._begin_sql(synchronous, lock))
        except self._DB_ERROR as exc:
            raise StoreError(f"{self.where}: cannot start a transaction: {exc}") from exc
        try:
            yield db
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, self._DB_ERROR):
                raise StoreError(f"{self.where}: database error: {exc}") from exc
            raise
        try:
            db.execute("COMMIT")
        except self._DB_ERROR as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreError(f"{self.where}: commit failed: {exc}") from exc

    def _lock(self, db: Any, *, shared: bool) -> None:
        """The credential lock, to the end of the transaction: exclusive for a credential
        change, shared for a check that no change may cross (PostgreSQL); SQLite's BEGIN
        IMMEDIATE has already serialised every writer."""

    def _begin_sql(self, synchronous: str, lock: str | None) -> str:
        """What opens a transaction (PostgreSQL: with its commit mode and lock, one round
        trip)."""
        return "BEGIN IMMEDIATE"  # SQLite: the write lock at once, one writer at a time

    def _changed(self, db: Any, what: str) -> None:
        """A credential changed in transaction `db`: tell other processes when it commits
        (PostgreSQL NOTIFY); SQLite's readers poll."""

    @contextmanager
    def _journal(self) -> Iterator[Any]:
        """A view of the audit trail in which no revocation is half-written (SQLite: a
        revocation is one transaction under the write lock; PostgreSQL waits for it)."""
        yield self._db

    def claim_instance(self, wait: float = 3.0) -> None:
        """Hold this store's instance name for as long as it is open, so a second key server
        started with the same name is refused (PostgreSQL); an SQLite file has one server."""

    def start_checkpointer(self, every: float = 0.5) -> None:
        """Move WAL checkpoints off the caller's thread (the key server's event loop).

        A checkpoint copies the WAL into the database and fsyncs it; SQLite runs one inside
        whichever COMMIT crosses 1000 WAL pages, stalling that caller for milliseconds. Here
        auto-checkpointing is turned off and a daemon thread, with its own connection, runs a
        PASSIVE checkpoint (it never blocks writers) every `every` seconds; sqlite3 releases
        the GIL while it works. `close()` stops it."""
        import threading

        if self._checkpointer is not None or str(self.path) == ":memory:":
            return
        stop = threading.Event()

        def run() -> None:
            conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=30)
            try:
                while not stop.wait(every):
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error as exc:  # busy or I/O: the next round retries
                        logger.warning("WAL checkpoint failed: %s", exc)
                with suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()

        thread = threading.Thread(target=run, name="amistack-wal-checkpoint", daemon=True)
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        thread.start()
        self._checkpointer = (stop, thread)

    def close(self) -> None:
        if self._checkpointer is not None:
            stop, thread = self._checkpointer
            stop.set()
            thread.join(5.0)
            self._checkpointer = None
        self._psk_keys.clear()
        self._db.close()

    def __enter__(self) -> CredentialStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int:
        return int(self._db.execute("SELECT max(version) FROM schema_version").fetchone()[0])

    # -- devices and PSKs ---------------------------------------------------------------------

    def enroll(
        self,
        device_id: bytes | str,
        psk: bytes,
        now: float,
        *,
        replace: bool = False,
        session_lifetime: float | None = None,
    ) -> DeviceInfo:
        """Enroll a device with its PSK; refuses one already known unless `replace`."""
        did = _device_id(device_id)
        self._check_psk(psk)
        with self._tx() as db:
            row = db.execute(
                "SELECT psk_generation FROM devices WHERE device_id = ?", (did,)
            ).fetchone()
            if row is not None and not replace:
                raise AlreadyEnrolled(did)
            generation = 1 if row is None else int(row[0]) + 1
            blob = self._kek.wrap(psk, record_aad("psk", did, generation))
            self._psk_keys.pop(did, None)
            db.execute(
                _PUT_DEVICE,
                (did, blob, generation, self._kek.label, now, session_lifetime, METHOD_PSK),
            )
            self._audit(
                db,
                AuditKind.ENROLL,
                did,
                f"psk generation {generation}" + (" (re-enrolled)" if row is not None else ""),
                now,
            )
            self._changed(db, AuditKind.ENROLL)
        logger.info("device enrolled", extra={"device_id": did, "psk_generation": generation})
        return self.device(did)

    def enroll_tls(
        self,
        device_id: bytes | str,
        now: float,
        *,
        replace: bool = False,
        session_lifetime: float | None = None,
    ) -> DeviceInfo:
        """Enroll a device for EAP-TLS: no secret is stored (its certificate, from `pki
        issue-device`, names it); a PSK it had is destroyed. Refuses a known one unless
        `replace`."""
        did = _device_id(device_id)
        with self._tx() as db:
            row = db.execute(
                "SELECT psk_generation FROM devices WHERE device_id = ?", (did,)
            ).fetchone()
            if row is not None and not replace:
                raise AlreadyEnrolled(did)
            generation = 0 if row is None else int(row[0])
            self._psk_keys.pop(did, None)
            db.execute(
                _PUT_DEVICE,
                (did, None, generation, self._kek.label, now, session_lifetime, METHOD_TLS),
            )
            detail = f"method {METHOD_TLS}" + (" (re-enrolled)" if row is not None else "")
            self._audit(db, AuditKind.ENROLL, did, detail, now)
            self._changed(db, AuditKind.ENROLL)
        logger.info("device enrolled", extra={"device_id": did, "method": METHOD_TLS})
        return self.device(did)

    def eap_method(self, device_id: bytes | str) -> str | None:
        """The EAP method the device is enrolled for; None if unknown. Never raises."""
        try:
            did = _device_id(device_id)
            row = self._db.execute(
                "SELECT eap_method FROM devices WHERE device_id = ?", (did,)
            ).fetchone()
        except (StoreError, self._DB_ERROR):
            return None
        return None if row is None else str(row[0])

    def is_enrolled_for(self, device_id: bytes | str, method: str) -> bool:
        """Enrolled for `method` and not revoked (the EAP-TLS server's question, asked at the
        identity and again for the certificate's device); False on any error."""
        try:
            did = _device_id(device_id)
            row = self._db.execute(
                "SELECT revoked_at, eap_method FROM devices WHERE device_id = ?", (did,)
            ).fetchone()
        except (StoreError, self._DB_ERROR):
            return False
        return row is not None and row[0] is None and row[1] == method

    def get_psk(self, device_id: bytes | str) -> bytes | None:
        """The device's PSK, or None for an unknown or revoked device (EAP-PSK's psk_lookup).

        Runs inside the authentication engine, so it never raises: a record that does not
        unwrap (wrong KEK, tampering) or a database error is logged and fails closed (None).
        `psk()` is the strict form for tools.
        """
        try:
            did = _device_id(device_id)
        except StoreError:
            return None  # no identity that long (or empty) is ever enrolled
        try:
            return self.psk(did)
        except UnknownDevice:
            return None
        except StoreError as exc:
            logger.error("PSK lookup failed closed: %s", exc)
            return None

    def psk(self, device_id: bytes | str) -> bytes | None:
        """The PSK; None if revoked. Raises UnknownDevice, or StoreError if it does not unwrap."""
        return self._psk_and_lifetime(_device_id(device_id))[0]

    def get_psk_and_lifetime(self, device_id: bytes | str) -> tuple[bytes | None, float | None]:
        """`get_psk` and `session_lifetime` in one query (the key server's EAP-PSK lookup)."""
        try:
            return self._psk_and_lifetime(_device_id(device_id))
        except UnknownDevice:
            return None, None
        except StoreError as exc:
            logger.error("PSK lookup failed closed: %s", exc)
            return None, None

    def get_psk_keys_and_lifetime(
        self, device_id: bytes | str
    ) -> tuple[PskKeys | None, float | None]:
        """`get_psk_and_lifetime` as EAP-PSK's derived keys (AK, KDK), cached per device and PSK
        generation. The device's row is read on every call, so a revocation or a new PSK (from
        any process) takes effect at once; a hit only skips the unwrap and the derivation,
        and needs the very blob the keys were derived from. Fails closed like `get_psk`."""
        try:
            did = _device_id(device_id)
            row = self._psk_row(did)
        except UnknownDevice:
            return None, None
        except StoreError as exc:
            logger.error("PSK lookup failed closed: %s", exc)
            return None, None
        blob, generation, label, revoked_at, lifetime_s = row
        lifetime = None if lifetime_s is None else float(lifetime_s)
        if revoked_at is not None or blob is None:
            self._psk_keys.pop(did, None)
            return None, lifetime
        blob = bytes(blob)
        cached = self._psk_keys.get(did)
        if (
            cached is not None
            and cached[0] == generation
            and cached[1] == blob
            and label == self._kek.label
        ):
            return cached[2], lifetime
        try:
            psk = self._unwrap(
                blob, str(label), record_aad("psk", did, int(generation)), f"PSK of {_show(did)}"
            )
            keys = PskKeys(psk)
        except (StoreError, ValueError) as exc:
            logger.error("PSK lookup failed closed: %s", exc)
            return None, None
        if len(self._psk_keys) >= self.psk_keys_cache:
            self._psk_keys.pop(next(iter(self._psk_keys)))  # the oldest entry
        self._psk_keys[did] = (int(generation), blob, keys)
        return keys, lifetime

    def forget_psk_keys(self, device_id: bytes) -> None:
        """Drop the derived keys cached for `device_id` (a revocation another process wrote:
        they would never be used again, but need not stay in memory either)."""
        self._psk_keys.pop(bytes(device_id), None)

    def _psk_row(self, did: bytes) -> tuple[Any, ...]:
        try:
            row = self._db.execute(
                "SELECT psk_blob, psk_generation, kek_label, revoked_at, session_lifetime "
                "FROM devices WHERE device_id = ?",
                (did,),
            ).fetchone()
        except self._DB_ERROR as exc:
            raise StoreError(f"{self.where}: database error: {exc}") from exc
        if row is None:
            raise UnknownDevice(did)
        return tuple(row)

    def _psk_and_lifetime(self, did: bytes) -> tuple[bytes | None, float | None]:
        blob, generation, label, revoked_at, lifetime_s = self._psk_row(did)
        lifetime = None if lifetime_s is None else float(lifetime_s)
        if revoked_at is not None or blob is None:
            return None, lifetime
        aad = record_aad("psk", did, int(generation))
        return self._unwrap(bytes(blob), str(label), aad, f"PSK of {_show(did)}"), lifetime

    def is_active(self, device_id: bytes | str) -> bool:
        """Enrolled and not revoked (without unwrapping the PSK); False on a database error."""
        try:
            did = _device_id(device_id)
            row = self._db.execute(
                "SELECT revoked_at FROM devices WHERE device_id = ?", (did,)
            ).fetchone()
        except (StoreError, self._DB_ERROR):
            return False
        return row is not None and row[0] is None

    def device(self, device_id: bytes | str) -> DeviceInfo:
        did = _device_id(device_id)
        row = self._db.execute(
            "SELECT device_id, enrolled_at, revoked_at, revoke_reason, psk_generation, "
            "session_lifetime, eap_method FROM devices WHERE device_id = ?",
            (did,),
        ).fetchone()
        if row is None:
            raise UnknownDevice(did)
        return self._info(row)

    def list_devices(self) -> list[DeviceInfo]:
        rows = self._db.execute(
            "SELECT device_id, enrolled_at, revoked_at, revoke_reason, psk_generation, "
            "session_lifetime, eap_method FROM devices ORDER BY device_id"
        ).fetchall()
        return [self._info(r) for r in rows]

    @staticmethod
    def _info(row: Any) -> DeviceInfo:
        did, enrolled_at, revoked_at, reason, generation, lifetime, method = row
        return DeviceInfo(
            device_id=bytes(did),
            enrolled_at=float(enrolled_at),
            revoked=revoked_at is not None,
            revoked_at=None if revoked_at is None else float(revoked_at),
            revoke_reason=None if reason is None else str(reason),
            psk_generation=int(generation),
            session_lifetime=None if lifetime is None else float(lifetime),
            method=str(method),
        )

    def revoke(
        self,
        device_id: bytes | str,
        reason: str,
        now: float,
        keys_until: float | None = None,
    ) -> bool:
        """Revoke the device and destroy its PSK. False if it was already revoked.

        `keys_until` is when keys already issued to it must end (None: at once); a running key
        server applies it through `revocations_after` even when another process revoked."""
        did = _device_id(device_id)
        with self._tx() as db:
            row = db.execute(
                "SELECT revoked_at FROM devices WHERE device_id = ?", (did,)
            ).fetchone()
            if row is None:
                raise UnknownDevice(did)
            self._psk_keys.pop(did, None)
            if row[0] is not None:
                return False
            db.execute(
                "UPDATE devices SET revoked_at = ?, revoke_reason = ?, revoke_keys_until = ?, "
                "psk_blob = NULL WHERE device_id = ?",
                (now, reason, keys_until, did),
            )
            self._audit(db, AuditKind.REVOKE, did, reason, now)
            self._changed(db, AuditKind.REVOKE)
        logger.warning("device revoked", extra={"device_id": did, "reason": reason})
        return True

    def revocations_after(self, seq: int) -> list[Revocation]:
        """Revocations journalled after audit entry `seq`, oldest first (cheap when none)."""
        with self._journal() as db:
            rows = db.execute(
                "SELECT a.seq, a.at, a.device_id, a.detail, d.revoke_keys_until FROM audit a "
                # the kind as a literal: what lets SQLite use the partial index audit_revoke
                f"JOIN devices d ON d.device_id = a.device_id WHERE a.kind = '{AuditKind.REVOKE}' "
                "AND a.seq > ? ORDER BY a.seq",
                (seq,),
            ).fetchall()
        return [
            Revocation(int(q), float(at), bytes(d), str(r), None if k is None else float(k))
            for q, at, d, r, k in rows
        ]

    def last_audit_seq(self) -> int:
        """The newest audit sequence number (0 for an empty trail)."""
        with self._journal() as db:
            return int(db.execute("SELECT coalesce(max(seq), 0) FROM audit").fetchone()[0])

    def rotate_psk(self, device_id: bytes | str, new_psk: bytes, now: float) -> int:
        """Replace the PSK of an enrolled, not revoked device; returns the new PSK generation."""
        did = _device_id(device_id)
        self._check_psk(new_psk)
        with self._tx() as db:
            row = db.execute(
                "SELECT psk_generation, revoked_at, eap_method FROM devices WHERE device_id = ?",
                (did,),
            ).fetchone()
            if row is None:
                raise UnknownDevice(did)
            if row[1] is not None:
                raise DeviceRevoked(did)
            if row[2] != METHOD_PSK:
                raise StoreError(f"device {_show(did)} is enrolled for EAP-{str(row[2]).upper()}")
            generation = int(row[0]) + 1
            blob = self._kek.wrap(new_psk, record_aad("psk", did, generation))
            self._psk_keys.pop(did, None)
            db.execute(
                "UPDATE devices SET psk_blob = ?, psk_generation = ?, kek_label = ? "
                "WHERE device_id = ?",
                (blob, generation, self._kek.label, did),
            )
            self._audit(db, AuditKind.ROTATE_PSK, did, f"psk generation {generation}", now)
            self._changed(db, AuditKind.ROTATE_PSK)
        return generation

    def set_session_lifetime(
        self, device_id: bytes | str, seconds: float | None, now: float
    ) -> None:
        """A per-device PANA session lifetime (None: the PAA's default)."""
        did = _device_id(device_id)
        if seconds is not None and seconds <= 0:
            raise StoreError("session lifetime must be > 0 seconds")
        with self._tx() as db:
            cur = db.execute(
                "UPDATE devices SET session_lifetime = ? WHERE device_id = ?", (seconds, did)
            )
            if cur.rowcount == 0:
                raise UnknownDevice(did)
            self._audit(db, AuditKind.LIFETIME, did, f"session lifetime {seconds}", now)

    def session_lifetime(self, device_id: bytes | str) -> float | None:
        try:
            did = _device_id(device_id)
        except StoreError:
            return None
        row = self._db.execute(
            "SELECT session_lifetime FROM devices WHERE device_id = ?", (did,)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    @staticmethod
    def _check_psk(psk: bytes) -> None:
        if not isinstance(psk, bytes | bytearray) or len(psk) != PSK_LENGTH:
            raise StoreError(f"a PSK must be exactly {PSK_LENGTH} bytes (RFC 4764 §2.1)")
        if not any(psk):
            raise StoreError("refusing an all-zero PSK")

    # -- audit ----------------------------------------------------------------------------------

    def audit(
        self, kind: AuditKind | str, device_id: bytes | str | None, detail: str, now: float
    ) -> int:
        """Append one entry to the audit trail; returns its sequence number."""
        did = None if device_id is None else _device_id(device_id)
        with self._tx(lock=None) as db:
            return self._audit(db, kind, did, detail, now)

    @staticmethod
    def _audit(
        db: Any,
        kind: AuditKind | str,
        device_id: bytes | None,
        detail: str,
        now: float,
    ) -> int:
        row = db.execute(
            "INSERT INTO audit (at, kind, device_id, detail) VALUES (?, ?, ?, ?) RETURNING seq",
            (now, str(kind), device_id, detail),
        ).fetchone()
        return int(row[0])

    def audit_log(
        self,
        limit: int = 100,
        *,
        device_id: bytes | str | None = None,
        kind: AuditKind | str | None = None,
        since: float | None = None,
    ) -> list[AuditEntry]:
        """The newest `limit` entries matching the filters, newest first."""
        where: list[str] = []
        args: list[object] = []
        if device_id is not None:
            where.append("device_id = ?")
            args.append(_device_id(device_id))
        if kind is not None:
            where.append("kind = ?")
            args.append(str(kind))
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        sql = "SELECT seq, at, kind, device_id, detail FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(max(0, limit))
        return [
            AuditEntry(int(s), float(a), str(k), None if d is None else bytes(d), str(t))
            for s, a, k, d, t in self._db.execute(sql, args).fetchall()
        ]

    # -- application keys (the key rings' persistence hook) ----------------------------------

    @staticmethod
    def _generation_aad(
        peer_id: bytes, sid: int, gen: int, purposes: str, not_before: float, not_after: float
    ) -> bytes:
        # The purposes and the lifetime are bound too: editing not_after (or the purpose list)
        # in the database breaks the blob.
        return record_aad("app-keys", peer_id, sid, gen, purposes, not_before, not_after)

    def _generation_row(self, peer_id: bytes, keys: Collection[AppKey]) -> tuple[Any, ...] | None:
        """One `key_generations` row for the keys of one generation: every key in one blob,
        wrapped once. None if they were wiped (expired before being written)."""
        first = next(iter(keys))
        if first.wiped:
            return None
        key_id, nb, na, sup = first.key_id, first.not_before, first.not_after, first.superseded_at
        materials = []
        names = []
        for k in keys:
            if (k.key_id, k.not_before, k.not_after, k.superseded_at) != (key_id, nb, na, sup):
                # the ring changes a generation's keys together; anything else is a bug
                raise StoreError(f"keys of generation {key_id} differ in lifetime")
            material = k.key
            materials.append(material)
            names.append(f"{k.purpose.name}:{len(material)}")
        purposes = ",".join(names)
        sid, gen = key_id.session_id, key_id.generation
        aad = self._generation_aad(peer_id, sid, gen, purposes, nb, na)
        try:
            blob = self._kek.wrap(b"".join(materials), aad)
        except KekError as exc:
            raise StoreError(f"keys {key_id} cannot be wrapped: {exc}") from None
        return (self.instance, sid, gen, peer_id, purposes, blob, self._kek.label, nb, na, sup)

    _INSERT_GENERATION = (
        "INSERT INTO key_generations (instance, session_id, generation, peer_id, purposes, "
        "keys_blob, kek_label, not_before, not_after, superseded_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (instance, not_before, session_id, generation) DO UPDATE SET "
        "peer_id = excluded.peer_id, purposes = excluded.purposes, "
        "keys_blob = excluded.keys_blob, kek_label = excluded.kek_label, "
        "not_after = excluded.not_after, superseded_at = excluded.superseded_at"
    )
    _DELETE_GENERATION = (
        "DELETE FROM key_generations WHERE instance = ? AND not_before = ? AND session_id = ? "
        "AND generation = ?"
    )

    @staticmethod
    def _by_generation(keys: Sequence[AppKey]) -> dict[KeyId, list[AppKey]]:
        out: dict[KeyId, list[AppKey]] = {}
        for k in keys:
            out.setdefault(k.key_id, []).append(k)
        return out

    def save_keys(self, peer_id: bytes, keys: Sequence[AppKey]) -> None:
        rows = [
            row
            for gen in self._by_generation(keys).values()
            if (row := self._generation_row(peer_id, gen)) is not None
        ]
        if not rows:
            return
        with self._tx(lock=None) as db:
            db.executemany(self._INSERT_GENERATION, rows)

    def commit(
        self,
        batch: WriteBatch,
        *,
        durable: bool = False,
        require_active: Collection[bytes] = (),
    ) -> None:
        """Write `batch` (key deletions, key saves, audit entries) in ONE transaction.

        `require_active`: devices that must still be enrolled and not revoked for the batch to
        be written, checked inside the transaction (one query, under SQLite's write lock or
        PostgreSQL's shared credential lock, so no revocation by another process can fall
        between the check and the write); if any is not, raises `InactiveDevices` and writes
        nothing.

        `durable=False` commits with synchronous=NORMAL: in WAL mode that survives a crash of
        the process (the WAL is in the OS page cache); only an OS crash or power loss can undo
        the last batches, and the next commit with synchronous=FULL (any credential change)
        makes them durable too. See docs/key-hierarchy.md, "Durability". Credentials never
        go through here: enroll/revoke/rotate stay synchronous=FULL. (PostgreSQL: NORMAL is
        synchronous_commit off for the transaction, store_pg.py.)
        """
        if not batch:
            return
        rows = [
            row
            for peer_id, keys in batch.saves.values()
            if (row := self._generation_row(peer_id, keys.values())) is not None
        ]
        try:
            mode = "FULL" if durable else "NORMAL"
            with self._tx(mode, lock="shared" if require_active else None) as db:
                if require_active:
                    self._check_active(db, require_active)
                if batch.deletes:
                    instance = self.instance
                    db.executemany(
                        self._DELETE_GENERATION, [(instance, *pk) for pk in batch.deletes]
                    )
                if rows:
                    db.executemany(self._INSERT_GENERATION, rows)
                if batch.audits:
                    db.executemany(
                        "INSERT INTO audit (kind, device_id, detail, at) VALUES (?, ?, ?, ?)",
                        batch.audits,
                    )
        except self._DB_ERROR as exc:
            raise StoreError(f"{self.where}: database error: {exc}") from exc

    @staticmethod
    def _check_active(db: Any, device_ids: Collection[bytes]) -> None:
        wanted = list(set(device_ids))
        active: set[bytes] = set()
        for i in range(0, len(wanted), 500):  # below any SQLITE_MAX_VARIABLE_NUMBER
            chunk = wanted[i : i + 500]
            active.update(
                bytes(r[0])
                for r in db.execute(
                    "SELECT device_id FROM devices WHERE revoked_at IS NULL AND device_id IN ("
                    + ",".join("?" * len(chunk))
                    + ")",
                    chunk,
                )
            )
        if len(active) != len(wanted):
            raise InactiveDevices(set(wanted) - active)

    def delete_keys(self, keys: Sequence[AppKey]) -> None:
        if not keys:
            return
        with self._tx(lock=None) as db:
            db.executemany(
                self._DELETE_GENERATION,
                [
                    (self.instance, ks[0].not_before, kid.session_id, kid.generation)
                    for kid, ks in self._by_generation(keys).items()
                ],
            )

    def load_keys(self, registry: PurposeRegistry, now: float) -> list[tuple[bytes, AppKey]]:
        """Unexpired application keys to restore into the key rings; expired ones are deleted.

        Expiry here is by the stored not_after; a superseded generation's cut is not stored
        (KeyRing.restore derives it from its successor), so a key ring restores from
        `now=-math.inf` (every row) and expires afterwards, as KeyServer does.
        Only this instance's keys: other key servers sharing the database restore their own."""
        with self._tx(lock=None) as db:
            gone = db.execute(
                "DELETE FROM key_generations WHERE instance = ? AND not_after <= ?",
                (self.instance, now),
            ).rowcount
            rows = db.execute(
                "SELECT session_id, generation, peer_id, purposes, keys_blob, kek_label, "
                "not_before, not_after, superseded_at FROM key_generations WHERE instance = ? "
                "ORDER BY not_before",
                (self.instance,),
            ).fetchall()
        if gone:
            logger.info("expired application keys dropped at load", extra={"count": gone})
        out: list[tuple[bytes, AppKey]] = []
        skipped: set[str] = set()
        for sid, gen, peer, purposes, blob, label, nb, na, sup in rows:
            key_id = KeyId(int(sid), int(gen))
            peer_id, not_before, not_after = bytes(peer), float(nb), float(na)
            superseded_at = None if sup is None else float(sup)
            material = self._unwrap(
                bytes(blob),
                str(label),
                self._generation_aad(peer_id, key_id.session_id, key_id.generation, purposes,
                                     not_before, not_after),
                f"keys {key_id}",
            )  # fmt: skip
            offset = 0
            for name, length in _parse_purposes(str(purposes), key_id):
                piece = material[offset : offset + length]
                offset += length
                try:
                    purpose = registry.get(name)
                except PurposeError:  # e.g. pana-auth, stored by key servers before issue 12
                    skipped.add(name)
                    continue
                out.append(
                    (peer_id, AppKey(key_id, purpose, piece, not_before, not_after, superseded_at))
                )
            if offset != len(material):
                raise StoreError(f"keys {key_id}: stored lengths do not match the blob")
        if skipped:
            logger.warning(
                "stored keys of unregistered purposes skipped",
                extra={"purposes": sorted(skipped)},
            )
        return out

    # -- mesh group keys (keymgmt/groupkeys.py) ------------------------------------------------

    @staticmethod
    def _group_key_aad(pan_id: int, serial: int, index: int, nb: float, na: float) -> bytes:
        return record_aad("group-key", pan_id, serial, index, nb, na)

    def save_group_keys(
        self, pan_id: int, serial: int, rotate_at: float | None, keys: Sequence[GroupKey]
    ) -> None:
        """Replace the PAN's ring: its serial, pending rotation and live keys (one transaction,
        synchronous=FULL: a key is on disk before any meter is given it)."""
        rows = []
        for k in keys:
            aad = self._group_key_aad(pan_id, k.serial, k.index, k.not_before, k.not_after)
            try:
                blob = self._kek.wrap(k.key, aad)
            except KekError as exc:
                raise StoreError(f"group key {pan_id:#06x}/{k.serial} not wrapped: {exc}") from None
            row = (pan_id, k.serial, k.index, blob, self._kek.label, k.not_before, k.not_after)
            rows.append(row)
        with self._tx() as db:
            db.execute(
                "INSERT INTO group_key_rings (pan_id, serial, rotate_at) VALUES (?, ?, ?) "
                "ON CONFLICT (pan_id) DO UPDATE SET serial = excluded.serial, "
                "rotate_at = excluded.rotate_at",
                (pan_id, serial, rotate_at),
            )
            db.execute("DELETE FROM group_keys WHERE pan_id = ?", (pan_id,))
            db.executemany(
                "INSERT INTO group_keys (pan_id, serial, key_index, key_blob, kek_label, "
                "not_before, not_after) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def load_group_keys(self, pan_id: int) -> tuple[int, float | None, list[GroupKey]] | None:
        """The PAN's stored ring (serial, pending rotation, keys), or None if it has none."""
        try:
            ring = self._db.execute(
                "SELECT serial, rotate_at FROM group_key_rings WHERE pan_id = ?", (pan_id,)
            ).fetchone()
            rows = self._db.execute(
                "SELECT serial, key_index, key_blob, kek_label, not_before, not_after "
                "FROM group_keys WHERE pan_id = ? ORDER BY not_before",
                (pan_id,),
            ).fetchall()
        except self._DB_ERROR as exc:
            raise StoreError(f"{self.where}: database error: {exc}") from exc
        if ring is None:
            return None
        keys = []
        for serial, index, blob, label, nb, na in rows:
            aad = self._group_key_aad(pan_id, int(serial), int(index), float(nb), float(na))
            what = f"group key {pan_id:#06x}/{serial}"
            material = self._unwrap(bytes(blob), str(label), aad, what)
            keys.append(GroupKey(pan_id, int(index), int(serial), material, float(nb), float(na)))
        return int(ring[0]), None if ring[1] is None else float(ring[1]), keys

    def _unwrap(self, blob: bytes, label: str, aad: bytes, what: str) -> bytes:
        if label != self._kek.label:
            raise StoreError(
                f"{what} is wrapped under KEK {label}, but the loaded KEK is {self._kek.label}"
            )
        try:
            return self._kek.unwrap(blob, aad)
        except KekError as exc:
            raise StoreError(f"{what} does not unwrap: {exc}") from None

    def __repr__(self) -> str:
        return f"CredentialStore({str(self.path)!r}, kek={self._kek.label!r})"
