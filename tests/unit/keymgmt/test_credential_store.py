"""CredentialStore on real SQLite files: enrollment, revocation, audit, key persistence, crashes."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from amistack.crypto import seeded_random
from amistack.eap.psk import PskKeys
from amistack.keymgmt.kek import FileKek, record_aad
from amistack.keymgmt.keyring import AppKey, KeyRingDirectory
from amistack.keymgmt.store import (
    SCHEMA_VERSION,
    AlreadyEnrolled,
    AuditKind,
    CredentialStore,
    DeviceRevoked,
    InactiveDevices,
    StoreError,
    UnknownDevice,
    WriteBatch,
    _parse_purposes,
)
from amistack.keymgmt.ukmf import C1222, LINK, KeyId, PurposeRegistry, derive
from amistack.pana.keys import PanaSecurityContext

CtxFactory = Callable[..., PanaSecurityContext]
PSK1 = bytes.fromhex("0123456789abcdef0123456789abcdef")
PSK2 = bytes.fromhex("fedcba9876543210fedcba9876543210")


@pytest.fixture
def store(tmp_path: Path, kek: FileKek) -> CredentialStore:
    return CredentialStore(tmp_path / "ks.db", kek)


def test_pragmas_schema_and_file_mode(tmp_path: Path, store: CredentialStore) -> None:
    db = store._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.schema_version() == SCHEMA_VERSION
    assert stat.S_IMODE((tmp_path / "ks.db").stat().st_mode) == 0o600
    store.close()
    # reopening is idempotent: one schema, one version row
    again = CredentialStore(tmp_path / "ks.db", FileKek.load(tmp_path / "kek.key", os.urandom))
    assert again._db.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 1


def test_newer_schema_is_refused(tmp_path: Path, store: CredentialStore, kek: FileKek) -> None:
    store.close()
    with sqlite3.connect(tmp_path / "ks.db") as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer"):
        CredentialStore(tmp_path / "ks.db", kek)


def test_enroll_get_and_list(store: CredentialStore) -> None:
    info = store.enroll(b"meter-1", PSK1, now=100.0)
    assert info.psk_generation == 1 and info.enrolled_at == 100.0 and not info.revoked
    store.enroll("meter-2", PSK2, now=101.0, session_lifetime=600.0)
    assert store.get_psk(b"meter-1") == PSK1
    assert store.get_psk("meter-2") == PSK2
    assert store.get_psk(b"nobody") is None
    assert store.get_psk(b"") is None
    devices = store.list_devices()
    assert [d.device_id for d in devices] == [b"meter-1", b"meter-2"]
    assert devices[1].session_lifetime == 600.0 and store.session_lifetime(b"meter-2") == 600.0
    assert PSK1 not in repr(devices).encode() and PSK1.hex() not in repr(devices)


def test_psk_is_wrapped_at_rest(tmp_path: Path, store: CredentialStore) -> None:
    store.enroll(b"meter-1", PSK1, now=1.0)
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("ks.db*"))
    assert raw and PSK1 not in raw


def test_enroll_refuses_duplicates_and_bad_psks(store: CredentialStore) -> None:
    store.enroll(b"meter-1", PSK1, now=1.0)
    with pytest.raises(AlreadyEnrolled, match="already enrolled"):
        store.enroll(b"meter-1", PSK2, now=2.0)
    assert store.get_psk(b"meter-1") == PSK1
    info = store.enroll(b"meter-1", PSK2, now=3.0, replace=True)
    assert info.psk_generation == 2 and store.get_psk(b"meter-1") == PSK2
    for bad in (b"short", b"\x00" * 16, PSK1 + b"x"):
        with pytest.raises(StoreError, match="PSK"):
            store.enroll(b"meter-9", bad, now=4.0)
    with pytest.raises(StoreError, match="device id"):
        store.enroll(b"", PSK1, now=4.0)


def test_revoke(store: CredentialStore) -> None:
    store.enroll(b"hh-7", PSK1, now=1.0)
    assert store.is_active(b"hh-7")
    assert store.revoke(b"hh-7", "lost in the field", now=50.0) is True
    assert store.get_psk(b"hh-7") is None
    info = store.device(b"hh-7")
    assert info.revoked and info.revoked_at == 50.0 and info.revoke_reason == "lost in the field"
    assert not store.is_active(b"hh-7") and not store.is_active(b"ghost")
    assert store.revoke(b"hh-7", "again", now=51.0) is False
    with pytest.raises(DeviceRevoked):
        store.rotate_psk(b"hh-7", PSK2, now=52.0)
    with pytest.raises(UnknownDevice, match="unknown device 'ghost'"):
        store.revoke(b"ghost", "x", now=1.0)
    # the PSK itself is destroyed, not just hidden
    assert store._db.execute("SELECT psk_blob FROM devices").fetchone()[0] is None
    # re-enrolment is the way back, with a fresh PSK
    store.enroll(b"hh-7", PSK2, now=60.0, replace=True)
    assert store.get_psk(b"hh-7") == PSK2 and not store.device(b"hh-7").revoked


def test_rotate_psk(store: CredentialStore) -> None:
    store.enroll(b"m", PSK1, now=1.0)
    assert store.rotate_psk(b"m", PSK2, now=2.0) == 2
    assert store.get_psk(b"m") == PSK2 and store.device(b"m").psk_generation == 2
    with pytest.raises(UnknownDevice):
        store.rotate_psk(b"x", PSK2, now=2.0)


def test_psk_blob_bound_to_its_row(store: CredentialStore) -> None:
    store.enroll(b"a", PSK1, now=1.0)
    store.enroll(b"b", PSK2, now=1.0)
    db = store._db
    blob_a = db.execute("SELECT psk_blob FROM devices WHERE device_id = ?", (b"a",)).fetchone()[0]
    db.execute("UPDATE devices SET psk_blob = ? WHERE device_id = ?", (blob_a, b"b"))
    with pytest.raises(StoreError, match="does not unwrap"):
        store.psk(b"b")
    assert store.get_psk(b"b") is None  # the engine's lookup fails closed, never raises
    assert store.get_psk(b"a") == PSK1


def _same_keys(a: PskKeys | None, psk: bytes) -> bool:
    expected = PskKeys(psk)
    return a is not None and a.ak.mac(b"probe") == expected.ak.mac(b"probe")


def test_psk_keys_cache_never_outlives_revocation_or_rotation(
    tmp_path: Path, store: CredentialStore, kek: FileKek
) -> None:
    store.enroll(b"m", PSK1, now=1.0, session_lifetime=60.0)
    first, lifetime = store.get_psk_keys_and_lifetime(b"m")
    assert _same_keys(first, PSK1) and lifetime == 60.0
    again, _ = store.get_psk_keys_and_lifetime("m")
    assert again is first  # derived once per PSK generation
    # another process (amistack keys ...) changes the row: seen on the next lookup
    other = CredentialStore(tmp_path / "ks.db", kek)
    other.rotate_psk(b"m", PSK2, now=2.0)
    rotated, _ = store.get_psk_keys_and_lifetime(b"m")
    assert rotated is not first and _same_keys(rotated, PSK2)
    other.revoke(b"m", "stolen", now=3.0)
    assert store.get_psk_keys_and_lifetime(b"m") == (None, 60.0)
    other.enroll(b"m", PSK1, now=4.0, replace=True)
    back, _ = store.get_psk_keys_and_lifetime(b"m")
    assert _same_keys(back, PSK1)
    # a blob moved onto this row misses the cache and fails closed, as the plain lookup does
    store.enroll(b"n", PSK2, now=5.0)
    db = store._db
    blob_n = db.execute("SELECT psk_blob FROM devices WHERE device_id = ?", (b"n",)).fetchone()[0]
    db.execute("UPDATE devices SET psk_blob = ? WHERE device_id = ?", (blob_n, b"m"))
    assert store.get_psk_keys_and_lifetime(b"m") == (None, None)
    assert store.get_psk_keys_and_lifetime(b"ghost") == (None, None)
    assert store.get_psk_keys_and_lifetime(b"") == (None, None)
    # in-process changes drop the entry at once
    store.revoke(b"n", "x", now=6.0)
    assert b"n" not in store._psk_keys
    other.close()


LEGACY_APP_KEYS = """CREATE TABLE app_keys (
    session_id INTEGER NOT NULL, generation INTEGER NOT NULL, purpose TEXT NOT NULL,
    peer_id BLOB NOT NULL, key_blob BLOB NOT NULL, kek_label TEXT NOT NULL,
    not_before REAL NOT NULL, not_after REAL NOT NULL, superseded_at REAL,
    PRIMARY KEY (session_id, generation, purpose))"""


def test_version_1_store_is_migrated(tmp_path: Path, kek: FileKek) -> None:
    old = CredentialStore(tmp_path / "v1.db", kek)
    old.enroll(b"m", PSK1, now=1.0)
    old.close()
    reg = PurposeRegistry()
    legacy = {p.name: bytes([i + 1]) * 16 for i, p in enumerate(reg)}
    with sqlite3.connect(tmp_path / "v1.db") as db:  # the schema as version 1 had it
        db.execute("DROP INDEX audit_revoke")
        db.execute("CREATE INDEX audit_kind ON audit (kind, seq)")
        db.execute("CREATE INDEX IF NOT EXISTS audit_device ON audit (device_id, seq)")
        db.execute("DROP TABLE key_generations")
        db.execute(LEGACY_APP_KEYS)  # one row per purpose, each wrapped on its own
        for name, material in legacy.items():
            aad = record_aad("app-key", b"m", 7, 2, name, 5.0, 500.0)
            db.execute(
                "INSERT INTO app_keys VALUES (7, 2, ?, ?, ?, ?, 5.0, 500.0, NULL)",
                (name, b"m", kek.wrap(material, aad), kek.label),
            )
        db.execute("CREATE INDEX app_keys_peer ON app_keys (peer_id)")
        db.execute("CREATE INDEX app_keys_not_after ON app_keys (not_after)")
        db.execute("UPDATE schema_version SET version = 1")
    store = CredentialStore(tmp_path / "v1.db", kek)
    assert store.schema_version() == SCHEMA_VERSION == 5
    indexes = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "audit_revoke" in indexes
    assert "audit_device" in indexes  # operators query one device's history
    assert not indexes & {"audit_kind", "app_keys_peer", "app_keys_not_after"}
    tables = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "app_keys" not in tables
    # the per-purpose rows became one row of the generation, every key intact
    assert store._db.execute("SELECT count(*) FROM key_generations").fetchone()[0] == 1
    restored = {k.purpose.name: k for _, k in store.load_keys(reg, 0.0)}
    assert {n: k.key for n, k in restored.items()} == legacy
    assert all(k.key_id == KeyId(7, 2) and k.not_after == 500.0 for k in restored.values())
    assert store.get_psk(b"m") == PSK1
    store.revoke(b"m", "gone", now=2.0)
    plan = store._db.execute(
        "EXPLAIN QUERY PLAN SELECT a.seq FROM audit a JOIN devices d ON d.device_id = a.device_id "
        "WHERE a.kind = 'revoke' AND a.seq > 0 ORDER BY a.seq"
    ).fetchall()
    assert any("audit_revoke" in str(row) for row in plan)  # the journal query stays indexed
    assert [r.device_id for r in store.revocations_after(0)] == [b"m"]


def test_wrong_kek_is_a_clear_error(tmp_path: Path, store: CredentialStore) -> None:
    store.enroll(b"a", PSK1, now=1.0)
    store.close()
    other = FileKek.create(tmp_path / "other.key", seeded_random(3))
    reopened = CredentialStore(tmp_path / "ks.db", other)
    with pytest.raises(StoreError, match="wrapped under KEK"):
        reopened.psk(b"a")
    assert reopened.get_psk(b"a") is None
    with pytest.raises(UnknownDevice):
        reopened.psk(b"zz")


def test_audit_trail(store: CredentialStore) -> None:
    store.enroll(b"m1", PSK1, now=1.0)
    store.audit(AuditKind.AUTH_FAILURE, None, "unknown peer b'zz'", now=2.0)
    store.audit(AuditKind.AUTH_SUCCESS, b"m1", "session 0x10", now=3.0)
    store.revoke(b"m1", "stolen", now=4.0)
    log = store.audit_log()
    assert [e.kind for e in log] == ["revoke", "auth-success", "auth-failure", "enroll"]
    assert [e.seq for e in log] == sorted((e.seq for e in log), reverse=True)
    assert log[0].detail == "stolen" and log[0].at == 4.0 and log[0].device_id == b"m1"
    assert [e.kind for e in store.audit_log(device_id=b"m1")] == [
        "revoke",
        "auth-success",
        "enroll",
    ]
    assert [e.kind for e in store.audit_log(kind=AuditKind.AUTH_FAILURE)] == ["auth-failure"]
    assert [e.at for e in store.audit_log(since=3.0)] == [4.0, 3.0]
    assert len(store.audit_log(limit=1)) == 1


def test_audit_is_append_only(store: CredentialStore) -> None:
    store.audit("custom", b"m1", "x", now=1.0)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._db.execute("DELETE FROM audit")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._db.execute("UPDATE audit SET detail = 'y'")
    assert store.audit_log()[0].detail == "x"


def test_failed_operation_leaves_no_audit(store: CredentialStore) -> None:
    store.enroll(b"m1", PSK1, now=1.0)
    with pytest.raises(AlreadyEnrolled):
        store.enroll(b"m1", PSK2, now=2.0)
    assert [e.kind for e in store.audit_log()] == ["enroll"]


def test_session_lifetime(store: CredentialStore) -> None:
    store.enroll(b"m1", PSK1, now=1.0)
    assert store.session_lifetime(b"m1") is None
    store.set_session_lifetime(b"m1", 120.0, now=2.0)
    assert store.session_lifetime(b"m1") == 120.0
    with pytest.raises(UnknownDevice):
        store.set_session_lifetime(b"zz", 1.0, now=2.0)
    with pytest.raises(StoreError):
        store.set_session_lifetime(b"m1", 0.0, now=2.0)


def test_restart_restores_credentials_and_unexpired_keys(
    tmp_path: Path, kek: FileKek, make_ctx: CtxFactory
) -> None:
    reg = PurposeRegistry()
    store = CredentialStore(tmp_path / "ks.db", kek)
    store.enroll(b"m1", PSK1, now=0.0)
    d = KeyRingDirectory(reg, overlap=10.0, persistence=store)
    g1, g2 = make_ctx(session_id=1, key_id=1), make_ctx(session_id=1, key_id=2)
    short = make_ctx(session_id=2, key_id=1)
    d.install(b"m1", g1, 100.0, now=0.0)
    d.install(b"m1", g2, 100.0, now=50.0)  # g1 superseded, valid to 60
    d.install(b"m2", short, 20.0, now=0.0)  # expires at 20
    store.close()

    # restart at t=55: credentials, g1 (in overlap) and g2 come back; m2's key does not
    store2 = CredentialStore(tmp_path / "ks.db", FileKek.load(tmp_path / "kek.key", os.urandom))
    assert store2.get_psk(b"m1") == PSK1
    d2 = KeyRingDirectory(reg, overlap=10.0, persistence=store2)
    d2.restore(store2.load_keys(reg, now=55.0))
    cur = d2.current(b"m1", C1222, 55.0)
    assert cur is not None and cur.key_id == KeyId(1, 2) and cur.key == derive(g2, C1222)
    old = d2.lookup(KeyId(1, 1), LINK, 55.0)
    assert old is not None and old.superseded_at == 50.0 and old.key == derive(g1, LINK)
    assert d2.lookup(KeyId(2, 1), C1222, 55.0) is None
    assert (
        store2._db.execute("SELECT count(*) FROM key_generations WHERE session_id = 2").fetchone()[
            0
        ]
        == 0
    )
    # expiry removes the keys from the database too
    assert d2.get_timer() == 60.0
    d2.expire(60.0)
    rows = store2._db.execute("SELECT DISTINCT generation FROM key_generations").fetchall()
    assert rows == [(2,)]
    d2.expire(150.0)
    assert store2._db.execute("SELECT count(*) FROM key_generations").fetchone()[0] == 0


def test_shortened_lifetime_persists_and_cannot_be_edited_back(
    tmp_path: Path, store: CredentialStore, kek: FileKek, make_ctx: CtxFactory
) -> None:
    reg = PurposeRegistry()
    d = KeyRingDirectory(reg, persistence=store)
    d.install(b"hh", make_ctx(), 3600.0, now=0.0)
    d.shorten(b"hh", 100.0, now=10.0)
    assert {r[0] for r in store._db.execute("SELECT not_after FROM key_generations")} == {100.0}
    # someone with write access to the DB tries to give the lost handheld its lifetime back
    store._db.execute("UPDATE key_generations SET not_after = 3600.0")
    with pytest.raises(StoreError, match="does not unwrap"):
        store.load_keys(reg, now=20.0)


def test_generation_row_edits_and_swaps_do_not_unwrap(
    store: CredentialStore, make_ctx: CtxFactory
) -> None:
    """An attacker with write access to the database reorders the purposes of a generation
    (so the C12.22 key would be read as the link key) or moves one generation's blob onto
    another's row: neither loads."""
    reg = PurposeRegistry()
    d = KeyRingDirectory(reg, persistence=store)
    d.install(b"a", make_ctx(session_id=1), 3600.0, now=0.0)
    d.install(b"b", make_ctx(session_id=2), 3600.0, now=0.0)
    (purposes,) = store._db.execute(
        "SELECT purposes FROM key_generations WHERE session_id = 1"
    ).fetchone()
    swapped = ",".join(reversed(purposes.split(",")))
    store._db.execute("UPDATE key_generations SET purposes = ? WHERE session_id = 1", (swapped,))
    with pytest.raises(StoreError, match="does not unwrap"):
        store.load_keys(reg, now=1.0)
    store._db.execute("UPDATE key_generations SET purposes = ? WHERE session_id = 1", (purposes,))
    assert len(store.load_keys(reg, now=1.0)) == 2 * len(reg)
    store._db.execute(
        "UPDATE key_generations SET keys_blob = "
        "(SELECT keys_blob FROM key_generations WHERE session_id = 2) WHERE session_id = 1"
    )
    with pytest.raises(StoreError, match="does not unwrap"):
        store.load_keys(reg, now=1.0)


def test_app_keys_wrapped_at_rest_one_row_per_generation(
    tmp_path: Path, store: CredentialStore, make_ctx: CtxFactory
) -> None:
    ctx = make_ctx()
    KeyRingDirectory(PurposeRegistry(), persistence=store).install(b"m", ctx, 60.0, now=0.0)
    rows = store._db.execute("SELECT purposes FROM key_generations").fetchall()
    assert rows == [(",".join(f"{p.name}:{len(derive(ctx, p))}" for p in PurposeRegistry()),)]
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("ks.db*"))
    assert derive(ctx, C1222) not in raw and derive(ctx, LINK) not in raw


def test_failed_save_is_all_or_nothing(store: CredentialStore, make_ctx: CtxFactory) -> None:
    ctx = make_ctx()
    keys = [AppKey(KeyId.of(ctx), p, derive(ctx, p), 0.0, 10.0) for p in PurposeRegistry()]
    keys[2].wipe()  # the third key cannot be wrapped: the operation fails half way
    with pytest.raises(Exception, match="wiped"):
        store.save_keys(b"m", keys)
    assert store._db.execute("SELECT count(*) FROM key_generations").fetchone()[0] == 0


CRASH_CHILD = textwrap.dedent(
    """
    import os, sys
    from amistack.crypto import system_random
    from amistack.keymgmt.kek import FileKek
    from amistack.keymgmt.keyring import KeyRingDirectory
    from amistack.keymgmt.store import AuditKind, CredentialStore, WriteBatch
    from amistack.keymgmt.ukmf import PurposeRegistry
    from amistack.pana.keys import PanaSecurityContext
    from amistack.crypto import PrfHash

    store = CredentialStore(sys.argv[1], FileKek.load(sys.argv[2], system_random))
    store.enroll(b"m1", bytes(range(1, 17)), now=1.0)          # committed
    # The process dies (no cleanup at all) inside the group commit's transaction: after the
    # key generation's row is written, at the audit entry that goes with it.
    store._db.create_function("die", 0, lambda: os._exit(17))
    store._db.execute(
        "CREATE TEMP TRIGGER crash AFTER INSERT ON audit WHEN NEW.kind = 'auth-success' "
        "BEGIN SELECT die(); END"
    )
    batch = WriteBatch()
    ctx = PanaSecurityContext(7, 1, PrfHash.SHA256, b"k" * 64, b"n" * 16, b"N" * 16, b"p", b"q")
    KeyRingDirectory(PurposeRegistry(), persistence=batch).install(b"m1", ctx, 60.0, now=2.0)
    batch.audit(AuditKind.AUTH_SUCCESS, b"m1", "session 7", 2.0)
    store.commit(batch)
    """
)


def test_crash_mid_transaction_leaves_nothing_half_written(tmp_path: Path, kek: FileKek) -> None:
    db_path, kek_path = tmp_path / "ks.db", tmp_path / "kek.key"
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_CHILD, str(db_path), str(kek_path)],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 17, proc.stderr.decode()
    store = CredentialStore(db_path, kek)
    assert store.get_psk(b"m1") == bytes(range(1, 17))
    assert store._db.execute("SELECT count(*) FROM key_generations").fetchone()[0] == 0
    assert store.load_keys(PurposeRegistry(), now=3.0) == []
    assert [e.kind for e in store.audit_log()] == ["enroll"]


def test_group_commit_and_background_checkpoints(tmp_path: Path, kek: FileKek) -> None:
    store = CredentialStore(tmp_path / "ks.db", kek)
    store.start_checkpointer(every=0.02)
    assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    size = (tmp_path / "ks.db").stat().st_size
    reg = PurposeRegistry()
    batch = WriteBatch()
    for n in range(200):
        batch.save_keys(
            b"m1", [AppKey(KeyId(n, 1), p, bytes([n % 250 + 1]) * 16, 0.0, 99.0) for p in reg]
        )
        batch.audit(AuditKind.AUTH_SUCCESS, b"m1", f"session {n}", 0.0)
    store.commit(batch)  # one transaction, synchronous=NORMAL (left so for the next batch) ...
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1
    batch.clear()
    store.commit(WriteBatch())  # (an empty batch writes nothing)
    store.audit(AuditKind.LIFETIME, None, "a credential-side write", 1.0)  # ... FULL for any other
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    batch.audit(AuditKind.AUTH_SUCCESS, b"m1", "durable", 0.0)
    store.commit(batch, durable=True)
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    batch.clear()
    deadline = time.monotonic() + 5
    while (tmp_path / "ks.db").stat().st_size == size:  # the thread copied the WAL in
        assert time.monotonic() < deadline
        time.sleep(0.02)
    thread = store._checkpointer[1] if store._checkpointer else None
    store.close()
    assert thread is not None and not thread.is_alive()
    again = CredentialStore(tmp_path / "ks.db", kek)
    assert len(again.load_keys(reg, 0.0)) == 200 * len(reg)
    assert len(again.audit_log(1000, kind=AuditKind.AUTH_SUCCESS)) == 201
    again.close()


def test_commit_requiring_active_devices_writes_nothing_for_a_revoked_one(
    store: CredentialStore,
) -> None:
    store.enroll(b"m1", b"\x01" * 16, now=0.0)
    store.enroll(b"m2", b"\x02" * 16, now=0.0)
    reg = PurposeRegistry()
    batch = WriteBatch()
    batch.save_keys(b"m2", [AppKey(KeyId(2, 1), p, b"\x05" * 16, 0.0, 99.0) for p in reg])
    batch.audit(AuditKind.AUTH_SUCCESS, b"m2", "session 2", 1.0)
    store.commit(batch, require_active=[b"m1", b"m2"])  # both active: written
    assert len(store.load_keys(reg, 0.0)) == len(reg)
    batch.clear()
    batch.save_keys(b"m1", [AppKey(KeyId(1, 1), p, b"\x06" * 16, 0.0, 99.0) for p in reg])
    batch.audit(AuditKind.AUTH_SUCCESS, b"m1", "session 1", 1.0)
    store.revoke(b"m1", "stolen", now=2.0)
    with pytest.raises(InactiveDevices) as exc:
        store.commit(batch, require_active=[b"m1", b"m2", b"never-enrolled"])
    assert exc.value.device_ids == {b"m1", b"never-enrolled"}
    assert len(store.load_keys(reg, 0.0)) == len(reg)  # rolled back: none of the batch
    assert [e.kind for e in store.audit_log(device_id=b"m1")] == ["revoke", "enroll"]
    store.commit(batch, require_active=[b"m2"])  # (the caller refuses m1's session instead)
    assert not store._db.in_transaction


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.text(alphabet="ab:,019\u00b2\u0663", max_size=40))
@example("c1222:\u00b2")  # a Unicode digit int() refuses
@example("c1222:16,")
def test_a_stored_purpose_list_parses_or_is_refused(text: str) -> None:
    """`key_generations.purposes` is read back only after its AAD verified, but a damaged store
    still gets a StoreError, never anything else (fuzz)."""
    try:
        pairs = _parse_purposes(text, KeyId(1, 1))
    except StoreError:
        return
    assert pairs and all(name and length >= 0 for name, length in pairs)
    assert ",".join(f"{n}:{n2}" for n, n2 in pairs).count(",") == text.count(",")


def test_a_schema_4_store_gets_its_generations_in_issue_order(tmp_path: Path, kek: FileKek) -> None:
    # Schema 5 leads key_generations' primary key with not_before, so a group commit appends
    # instead of scattering its rows over the B-tree by random PANA session id.
    reg = PurposeRegistry()
    store = CredentialStore(tmp_path / "v4.db", kek)
    keys = [
        AppKey(KeyId(0xF000_0000 - i, 1), C1222, bytes([i]) * 16, float(i), 900.0) for i in range(3)
    ]
    for k in keys:
        store.save_keys(b"m", [k])
    db = store._db  # as schema 4 laid the table out
    db.execute("ALTER TABLE key_generations RENAME TO kg")
    db.execute(
        "CREATE TABLE key_generations (instance TEXT NOT NULL DEFAULT '', session_id INTEGER "
        "NOT NULL, generation INTEGER NOT NULL, peer_id BLOB NOT NULL, purposes TEXT NOT NULL, "
        "keys_blob BLOB NOT NULL, kek_label TEXT NOT NULL, not_before REAL NOT NULL, "
        "not_after REAL NOT NULL, superseded_at REAL, "
        "PRIMARY KEY (instance, session_id, generation)) WITHOUT ROWID"
    )
    db.execute("INSERT INTO key_generations SELECT * FROM kg")
    db.execute("DROP TABLE kg")
    db.execute("UPDATE schema_version SET version = 4")
    store.close()
    again = CredentialStore(tmp_path / "v4.db", kek)
    assert again.schema_version() == 5
    pk = {r[1]: r[5] for r in again._db.execute("PRAGMA table_info(key_generations)")}
    assert [c for c, n in sorted(pk.items(), key=lambda x: x[1]) if n] == [
        "instance", "not_before", "session_id", "generation"
    ]  # fmt: skip
    assert sorted(k.key for _, k in again.load_keys(reg, 0.0)) == sorted(k.key for k in keys)
    rows = again._db.execute("SELECT session_id FROM key_generations").fetchall()
    assert [r[0] for r in rows] == [k.key_id.session_id for k in keys]  # in issue order
    again.delete_keys([keys[1]])  # by its whole key, not_before included
    assert sorted(k.key for _, k in again.load_keys(reg, 0.0)) == [keys[0].key, keys[2].key]
    again.close()
