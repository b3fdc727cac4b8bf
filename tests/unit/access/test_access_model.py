"""The identity model by itself: the one role->rights table, users and Argon2id hashes, tokens
stored as digests, the lock-out, IECUserRoles in certificates (a known answer from another
implementation, round trips, hostile DER), and the audit trail's one signed head per day."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Literal

import pytest
from argon2 import PasswordHasher
from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.access import (
    ROLE_RIGHTS,
    AccessError,
    AccessStore,
    AuditTrail,
    LoginPolicy,
    LoginRefused,
    Right,
    Role,
    parse_roles,
    rights_of,
)
from amistack.access.certroles import (
    CertRolesError,
    decode_user_roles,
    encode_user_roles,
)
from amistack.crypto import seeded_random
from amistack.eventlog.verify import verify_lines

VECTORS = Path(__file__).parents[2] / "vectors"
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery"


def test_role_ids_and_the_rights_table() -> None:
    # IEC 62351-8 mandatory roles and their RoleId numbers
    assert [(r.name, r.value) for r in Role] == [
        ("VIEWER", 0),
        ("OPERATOR", 1),
        ("ENGINEER", 2),
        ("INSTALLER", 3),
        ("SECADM", 4),
        ("SECAUD", 5),
        ("RBACMNT", 6),
    ]
    assert set(ROLE_RIGHTS) == set(Role)
    assert rights_of([Role.VIEWER]) == {Right.READ}
    assert Right.CONTROL in rights_of([Role.OPERATOR]) and Right.SECURITY not in rights_of(
        [Role.OPERATOR]
    )
    only = {right: [r for r in Role if right in ROLE_RIGHTS[r]] for right in Right}
    assert only[Right.SECURITY] == [Role.SECADM] and only[Right.AUDIT] == [Role.SECAUD]
    assert only[Right.COMMISSION] == [Role.INSTALLER, Role.SECADM]
    assert parse_roles(["operator, secaud", "VIEWER"]) == {Role.OPERATOR, Role.SECAUD, Role.VIEWER}
    with pytest.raises(ValueError, match="unknown role 'ROOT'"):
        parse_roles(["root"])


@pytest.fixture
def store(tmp_path: Path) -> AccessStore:
    return AccessStore(
        tmp_path / "d", rng=seeded_random(1), hasher=CHEAP, policy=LoginPolicy(lockout_s=60)
    )


def test_secrets_at_rest_are_hashes_and_files_are_owner_only(
    store: AccessStore, tmp_path: Path
) -> None:
    store.add_user("alice", PASSWORD, {Role.OPERATOR}, 0.0)
    token = store.issue_token("alice", 0.0).token
    db = sqlite3.connect(store.path)
    (hashed,) = db.execute("SELECT password_hash FROM users").fetchone()
    (digest,) = db.execute("SELECT digest FROM tokens").fetchone()
    assert hashed.startswith("$argon2id$") and PASSWORD not in hashed
    assert token not in digest and len(digest) == 64
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    for bad in ("", "a b", "x" * 65, "../x"):
        with pytest.raises(AccessError):
            store.add_user(bad, PASSWORD, {Role.VIEWER}, 0.0)
    with pytest.raises(AccessError, match="password"):
        store.add_user("bob", "short", {Role.VIEWER}, 0.0)
    with pytest.raises(AccessError, match="role"):
        store.add_user("bob", PASSWORD, set(), 0.0)


def test_lockout_after_failures_then_recovery(store: AccessStore) -> None:
    store.add_user("alice", PASSWORD, {Role.OPERATOR}, 0.0)
    for i in range(5):
        with pytest.raises(LoginRefused) as exc:
            store.login("alice", "wrong guess", 10.0 + i)
        assert exc.value.retry_after == 0
    with pytest.raises(LoginRefused) as exc:
        store.login("alice", PASSWORD, 20.0)  # the right password while locked: still refused
    assert 0 < exc.value.retry_after <= 60
    principal, issued = store.login("alice", PASSWORD, 80.0)
    assert principal.name == "alice" and issued.kind == "session"
    assert issued.expires_at == 80.0 + store.policy.session_ttl_s
    store.set_disabled("alice", True)
    with pytest.raises(LoginRefused, match="disabled"):
        store.login("alice", PASSWORD, 90.0)
    with pytest.raises(LoginRefused, match="wrong user name or password"):
        store.login("mallory", PASSWORD, 90.0)


def test_token_expiry_revocation_and_ids(store: AccessStore) -> None:
    store.add_user("alice", PASSWORD, {Role.VIEWER}, 0.0)
    a = store.issue_token("alice", 0.0, ttl_s=100, label="cron")
    b = store.issue_token("alice", 0.0)
    assert store.authenticate_token(a.token, 99.0) is not None
    assert store.authenticate_token(a.token, 100.0) is None
    assert store.revoke_token(b.token_id) == "alice"
    assert store.authenticate_token(b.token, 1.0) is None
    assert [t.label for t in store.list_tokens("alice")] == ["cron", ""]
    with pytest.raises(AccessError):
        store.issue_token("alice", 0.0, ttl_s=0)
    with pytest.raises(AccessError):
        store.revoke_token("not-hex")
    assert (
        store.authenticate_token("", 0.0) is None
        and store.authenticate_token("x" * 500, 0.0) is None
    )


def test_iec_user_roles_known_answer_from_another_implementation() -> None:
    v = json.loads((VECTORS / "iec62351_8_user_roles.json").read_text())
    got = decode_user_roles(bytes.fromhex(v["der_hex"].replace(" ", "")))
    assert got.roles == set() and got.aor == (v["aor"],)  # RoleId 255 grants nothing


def test_iec_user_roles_round_trip() -> None:
    der = encode_user_roles({Role.OPERATOR, Role.SECAUD})
    assert der.hex() == "301c301a30060201010201050c012a0201010c0a49454336323335312d38"
    assert decode_user_roles(der).roles == {Role.OPERATOR, Role.SECAUD}


_VALID = encode_user_roles({Role.OPERATOR, Role.SECAUD})


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(_VALID)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), _mutated()))
def test_iec_user_roles_decoder_fuzz(data: bytes) -> None:
    """Hostile DER: roles or CertRolesError, never anything else."""
    with contextlib.suppress(CertRolesError):
        got = decode_user_roles(data)
        assert got.roles <= set(Role)


@settings(max_examples=100, deadline=None)
@given(
    st.sets(st.sampled_from(list(Role)), min_size=1),
    st.lists(st.text(min_size=1, max_size=64), min_size=1, max_size=4),
)
def test_iec_user_roles_round_trip_property(roles: set[Role], aor: list[str]) -> None:
    got = decode_user_roles(encode_user_roles(roles, aor))
    assert got.roles == roles and got.aor == tuple(aor)


def test_audit_trail_signs_one_head_per_day_and_survives_reopen(tmp_path: Path) -> None:
    day = 86400.0
    trail = AuditTrail.open(tmp_path, 10 * day)
    trail.record(10 * day + 1, "alice", "login")
    trail.record(
        10 * day + 2, "alice", "command.create", target="m1", detail={"kind": "disconnect"}
    )
    assert trail.heads() == [] and trail.next_seal(10 * day + 3) == 11 * day
    trail.record(11 * day + 5, "bob", "login")  # a new day: yesterday's two get their head first
    assert [h.size for h in trail.heads()] == [2]
    trail.close()
    trail = AuditTrail.open(tmp_path, 11 * day + 6)  # reopened: the unsigned entry is remembered
    trail.record(12 * day, "bob", "logout")
    assert [h.size for h in trail.heads()] == [2, 3]
    assert trail.seal(12 * day + 1) is not None and trail.seal(12 * day + 2) is None
    entries = trail.entries()
    assert [(e.who, e.action) for e in entries] == [
        ("alice", "login"),
        ("alice", "command.create"),
        ("bob", "login"),
        ("bob", "logout"),
    ]
    assert entries[1].detail == {"kind": "disconnect"} and entries[1].at.startswith("1970-01-11")
    verdict = verify_lines(list(trail.export_lines()), trail.public_key_pem())
    assert verdict.ok and verdict.heads == 3
    assert stat.S_IMODE((tmp_path / "audit").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "audit/audit.log").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "audit/module.pem").stat().st_mode) == 0o600
    trail.close()


class _CountingHasher(PasswordHasher):
    """Records how many verifications overlap."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.active = 0
        self.most = 0
        self.lock = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(0.02)
            return super().verify(hash, password)
        finally:
            with self.lock:
                self.active -= 1


def test_a_login_flood_runs_at_most_two_hashes_at_once(tmp_path: Path) -> None:
    hasher = _CountingHasher()
    store = AccessStore(tmp_path, hasher=hasher)
    store.add_user("alice", PASSWORD, {Role.VIEWER}, 0.0)

    def attempt(i: int) -> None:
        with contextlib.suppress(LoginRefused):
            store.login("alice" if i % 2 else f"ghost{i}", "wrong guess", 1.0)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert hasher.most == store.policy.max_concurrent_hashes == 2


def test_two_writers_share_the_trail_without_breaking_it(tmp_path: Path) -> None:
    """`amistack users` appends while the head-end runs: both go through the flock and re-read
    what the other wrote, so sequence numbers stay gapless and every head verifies."""
    headend = AuditTrail.open(tmp_path, 100.0)
    cli = AuditTrail.open(tmp_path, 100.0)
    for i in range(6):
        (headend if i % 2 else cli).record(100.0 + i, "x", f"action.{i}")
    assert cli.seal(110.0) is not None
    headend.record(111.0, "x", "action.6")
    assert headend.seal(112.0) is not None
    entries = headend.entries()
    assert [e.seq for e in entries] == list(range(7))
    assert [e.action for e in entries] == [f"action.{i}" for i in range(7)]
    verdict = verify_lines(list(headend.export_lines()), headend.public_key_pem())
    assert verdict.ok and verdict.heads == 2 and verdict.entries == 7
    cli.close()
    headend.close()
