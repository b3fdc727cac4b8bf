"""The key server's credential store on a real PostgreSQL (a throwaway cluster the tests start):
the SQLite store's rules on the shared database several key-server processes use.

Attack-first: a password in the URL is refused before anything connects; the audit trail
cannot be edited, deleted or truncated; a second process cannot take a running one's instance
name; a revocation by another process is never skipped by the journal or crossed by a commit.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest_pg import pg_cluster, pg_dsn  # noqa: F401  (fixtures)
from tests.unit.keymgmt.test_key_server import LIFETIME, PSKS, Meter, Net, start

from amistack.crypto import seeded_random, system_random
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.keyring import AppKey
from amistack.keymgmt.server import KeyServer
from amistack.keymgmt.store import (
    AlreadyEnrolled,
    InactiveDevices,
    StoreError,
    WriteBatch,
)
from amistack.keymgmt.store_pg import PostgresCredentialStore, open_credential_store
from amistack.keymgmt.ukmf import C1222, LINK, KeyId, PurposeRegistry
from amistack.pana.events import Authenticated
from amistack.pana.paa import PaaConfig
from amistack.pgconn import DsnError, check_dsn, describe, read_password_file

PSK = bytes.fromhex("0123456789abcdef0123456789abcdef")
PSK2 = bytes.fromhex("fedcba9876543210fedcba9876543210")


@pytest.fixture
def kek() -> FileKek:
    return FileKek(os.urandom(32), system_random)


@pytest.fixture
def store(pg_dsn: str, kek: FileKek) -> Iterator[PostgresCredentialStore]:  # noqa: F811
    s = PostgresCredentialStore(pg_dsn, kek, instance="ks1")
    yield s
    s.close()


@pytest.fixture
def server_and_operator(
    pg_dsn: str,  # noqa: F811
    kek: FileKek,
) -> Iterator[tuple[PostgresCredentialStore, PostgresCredentialStore]]:
    """A key server's store and an operator's (`amistack keys`), two connections, one database."""
    server = PostgresCredentialStore(pg_dsn, kek, instance="ks1")
    operator = PostgresCredentialStore(pg_dsn, kek)
    server.enroll(b"m1", PSK, 0.0)
    yield server, operator
    server.close()
    operator.close()


def _keys(sid: int, gen: int, nb: float = 0.0, na: float = 500.0) -> list[AppKey]:
    return [AppKey(KeyId(sid, gen), p, bytes([sid, gen]) * 8, nb, na) for p in (C1222, LINK)]


def test_a_password_never_travels_in_the_url(tmp_path: Path) -> None:
    with pytest.raises(DsnError, match="password"):
        check_dsn("postgresql://ks:hunter2@db.example/keys")
    with pytest.raises(DsnError, match="password"):
        check_dsn("host=db.example password=hunter2")
    assert "hunter2" not in describe("postgresql://ks:hunter2@db.example/keys")
    assert (
        describe("postgresql://ks@db.example:5433/keys") == "postgresql://ks@db.example:5433/keys"
    )
    loose = tmp_path / "pw"
    loose.write_text("hunter2\n")
    loose.chmod(0o644)
    with pytest.raises(DsnError, match="chmod 600"):
        read_password_file(loose)
    loose.chmod(0o600)
    assert read_password_file(loose) == "hunter2"
    with pytest.raises(StoreError, match="password"):
        PostgresCredentialStore(
            "postgresql://ks:hunter2@127.0.0.1:1/keys", FileKek(os.urandom(32), system_random)
        )


def test_credentials_psks_and_audit_as_on_sqlite(store: PostgresCredentialStore) -> None:
    store.enroll(b"m1", PSK, 1.0, session_lifetime=60.0)
    with pytest.raises(AlreadyEnrolled):
        store.enroll(b"m1", PSK2, 2.0)
    assert store.get_psk(b"m1") == PSK and store.session_lifetime(b"m1") == 60.0
    raw = store._db.execute("SELECT psk_blob FROM devices").fetchone()[0]
    assert PSK not in bytes(raw)  # wrapped under the KEK at rest
    assert store.rotate_psk(b"m1", PSK2, 3.0) == 2
    keys, lifetime = store.get_psk_keys_and_lifetime(b"m1")
    assert keys is not None and lifetime == 60.0
    store.enroll(b"m1", PSK, 4.0, replace=True)  # re-enrolment replaces every column
    assert store.device(b"m1").psk_generation == 3 and store.session_lifetime(b"m1") is None
    store.enroll_tls(b"t1", 5.0)
    assert store.is_enrolled_for(b"t1", "tls") and store.get_psk(b"t1") is None
    assert store.revoke(b"m1", "stolen", 6.0) and not store.revoke(b"m1", "again", 7.0)
    assert store.get_psk(b"m1") is None and not store.is_active(b"m1")
    assert [r.device_id for r in store.revocations_after(0)] == [b"m1"]
    kinds = [e.kind for e in store.audit_log(device_id=b"m1")]
    assert kinds == ["revoke", "enroll", "rotate-psk", "enroll"]
    # the tables live in their own schema: a head-end may share the database
    where = store._db.execute(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'devices'"
    ).fetchall()
    assert where == [("amistack_keys",)]


@pytest.mark.parametrize(
    "attack",
    [
        "UPDATE audit SET detail = 'nothing happened'",
        "DELETE FROM audit",
        "TRUNCATE audit",
    ],
)
def test_the_audit_trail_is_append_only(store: PostgresCredentialStore, attack: str) -> None:
    store.enroll(b"m1", PSK, 1.0)
    with pytest.raises(Exception, match="append-only"):
        store._db.execute(attack)
    assert len(store.audit_log()) == 1


def test_each_instance_restores_only_its_own_keys(
    pg_dsn: str,  # noqa: F811
    kek: FileKek,
) -> None:
    reg = PurposeRegistry()
    a = PostgresCredentialStore(pg_dsn, kek, instance="ks1")
    b = PostgresCredentialStore(pg_dsn, kek, instance="ks2")
    try:
        for s in (a, b):
            s.enroll(s.instance.encode(), PSK, 0.0)
        # the same (session, generation) on both: PANA session ids are only unique per process
        for s in (a, b):
            batch = WriteBatch()
            batch.save_keys(s.instance.encode(), _keys(7, 1))
            s.commit(batch, require_active={s.instance.encode()})
        assert {p for p, _ in a.load_keys(reg, 0.0)} == {b"ks1"}
        assert {p for p, _ in b.load_keys(reg, 0.0)} == {b"ks2"}
        a.delete_keys(_keys(7, 1))
        assert a.load_keys(reg, 0.0) == [] and len(b.load_keys(reg, 0.0)) == 2
    finally:
        a.close()
        b.close()


def test_a_schema_4_database_gets_its_generations_in_issue_order(
    pg_dsn: str,  # noqa: F811
    kek: FileKek,
) -> None:
    store = PostgresCredentialStore(pg_dsn, kek, instance="ks1")
    store.save_keys(b"m1", _keys(9, 1, nb=3.0))
    db = store._db  # as schema 4 declared the key: (instance, session_id, generation)
    db.execute(
        "ALTER TABLE key_generations DROP CONSTRAINT key_generations_pkey, "
        "ADD PRIMARY KEY (instance, session_id, generation)"
    )
    db.execute("UPDATE schema_version SET version = 4")
    db.conn.commit()
    store.close()
    again = PostgresCredentialStore(pg_dsn, kek, instance="ks1")
    try:
        assert again.schema_version() == 5
        key = again._db.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'key_generations'::regclass "
            "AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)"
        ).fetchall()
        assert [r[0] for r in key] == ["instance", "not_before", "session_id", "generation"]
        assert len(again.load_keys(PurposeRegistry(), 0.0)) == 2
        again.delete_keys(_keys(9, 1, nb=3.0))
        assert again.load_keys(PurposeRegistry(), 0.0) == []
    finally:
        again.close()


def test_a_second_process_cannot_take_a_running_instance_name(
    pg_dsn: str,  # noqa: F811
    kek: FileKek,
) -> None:
    first = open_credential_store(pg_dsn, kek, instance="ks1")
    second = open_credential_store(pg_dsn, kek, instance="ks1")
    other = open_credential_store(pg_dsn, kek, instance="ks2")
    try:
        first.claim_instance()
        with pytest.raises(StoreError, match="another key server runs as instance 'ks1'"):
            second.claim_instance(wait=0.2)
        other.claim_instance()
        first.close()
        second.claim_instance()  # released when its holder's connection went
    finally:
        second.close()
        other.close()


def test_a_commit_never_crosses_a_revocation_by_another_process(
    server_and_operator: tuple[PostgresCredentialStore, PostgresCredentialStore],
) -> None:
    server, operator = server_and_operator
    # the operator's revocation holds the credential lock until it commits ...
    operator._db.execute("BEGIN")
    operator._lock(operator._db, shared=False)
    operator._db.execute(
        "UPDATE devices SET revoked_at = 1.0, psk_blob = NULL WHERE device_id = ?", (b"m1",)
    )
    outcome: list[BaseException | None] = []

    def group_commit() -> None:
        batch = WriteBatch()
        batch.save_keys(b"m1", _keys(3, 1))
        batch.audit("auth-success", b"m1", "x", 1.0)
        try:
            server.commit(batch, require_active={b"m1"})
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=group_commit)
    t.start()
    time.sleep(0.3)
    assert outcome == []  # ... so the key server's check waits for it
    operator._db.execute("COMMIT")
    t.join(5.0)
    assert len(outcome) == 1 and isinstance(outcome[0], InactiveDevices)
    assert server.load_keys(PurposeRegistry(), 0.0) == []  # nothing of the batch written


def test_the_journal_waits_for_a_revocation_in_flight(
    server_and_operator: tuple[PostgresCredentialStore, PostgresCredentialStore],
) -> None:
    """A revocation draws its audit number, then a later entry commits first: a reader that
    went by the numbers alone would pass the revocation and never apply it."""
    server, operator = server_and_operator
    operator._db.execute("BEGIN")
    operator._lock(operator._db, shared=False)
    operator._audit(operator._db, "revoke", b"m1", "stolen", 1.0)
    server.audit("auth-success", b"m2", "a later entry, committed first", 2.0)
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(server.last_audit_seq()))
    t.start()
    time.sleep(0.3)
    assert seen == []  # the reader waits for the revocation to commit
    operator._db.execute("COMMIT")
    t.join(5.0)
    assert seen == [3]
    assert [r.device_id for r in server.revocations_after(1)] == [b"m1"]


def test_change_notifications_reach_other_processes(
    server_and_operator: tuple[PostgresCredentialStore, PostgresCredentialStore],
) -> None:
    server, operator = server_and_operator
    got: list[tuple[str, float]] = []
    done = threading.Event()

    def note(kind: str) -> None:
        got.append((kind, time.monotonic()))
        if kind == "revoke":
            done.set()

    unwatch = server.watch_changes(note)
    try:
        operator.rotate_psk(b"m1", PSK2, 1.0)
        with pytest.raises(StoreError):
            operator.rotate_psk(b"nobody", PSK2, 1.0)  # rolled back: no notification
        t0 = time.monotonic()
        operator.revoke(b"m1", "stolen", 2.0)
        assert done.wait(2.0)
        assert [k for k, _ in got] == ["rotate-psk", "revoke"]
        assert got[-1][1] - t0 < 1.0
    finally:
        unwatch()


def test_key_server_authenticates_and_restarts_on_postgresql(
    pg_dsn: str,  # noqa: F811
    kek: FileKek,
) -> None:
    store = PostgresCredentialStore(pg_dsn, kek, instance="ks1")
    for name, psk in PSKS.items():
        store.enroll(name, psk, now=0.0)
    server = KeyServer(
        store, rng=seeded_random(1), paa_config=PaaConfig(session_lifetime=LIFETIME), now=0.0
    )
    meter = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    net = Net(server, [])
    start(net, meter)
    assert [a.peer_id for a in net.of(Authenticated)] == [b"meter-1"]
    mine = meter.ring.current(C1222, net.now)
    assert mine is not None
    kinds = [e.kind for e in store.audit_log(device_id=b"meter-1")]
    assert kinds == ["auth-success", "enroll"]  # keys and entry committed before the success
    store.close()
    # a restart (same instance) restores the generation; another instance does not see it
    again = PostgresCredentialStore(pg_dsn, kek, instance="ks1")
    other = PostgresCredentialStore(pg_dsn, kek, instance="ks2")
    try:
        restarted = KeyServer(again, rng=seeded_random(3), now=net.now)
        theirs = restarted.key_for(mine.key_id, "c1222", net.now)
        assert theirs is not None and theirs.key == mine.key
        assert (
            KeyServer(other, rng=seeded_random(4), now=net.now).key_for(
                mine.key_id, "c1222", net.now
            )
            is None
        )
    finally:
        again.close()
        other.close()


def test_group_commits_skip_the_wal_flush_and_credentials_wait_for_it(
    store: PostgresCredentialStore,
) -> None:
    """As SQLite's synchronous=NORMAL / FULL split (docs/key-hierarchy.md, "Durability"): a
    killed key server loses no group commit (the database has it), credentials are flushed."""
    seen = {}
    for mode in ("NORMAL", "FULL"):
        with store._tx(mode, lock=None) as db:
            seen[mode] = db.execute("SELECT current_setting('synchronous_commit')").fetchone()[0]
    assert seen == {"NORMAL": "off", "FULL": "on"}
    store.enroll(b"m1", PSK, 0.0)  # a credential: FULL
    assert store._db.execute("SHOW synchronous_commit").fetchone()[0] == "on"
