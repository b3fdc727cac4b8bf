"""Delegated key administration (access.keyadmin, `delegators`), attacked first: a delegator
asserting a user the key server does not know, a disabled one, one without SECADM; a delegator
certificate used on its own or for an op that cannot be delegated; a user (not a delegator)
naming someone else; a replayed and a stale delegated change; a delegator outside its area.
Then the happy path: the audit trail names the user and the delegator. Real SQLite stores and a
real signed audit trail; no sockets (tests/unit/runtime/test_keyadmin_tls.py has the TLS)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from tests.unit.access.test_keyadmin import PSK, T0
from tests.unit.access.test_keyadmin import Env as KeyAdminEnv

from amistack.access import AccessStore, Principal, Role
from amistack.access.keyadmin import KeyAdminService
from amistack.crypto import seeded_random

PASSWORD = "correct horse battery staple"
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def cert(name: str, *roles: Role, aor: tuple[str, ...] = ("*",)) -> Principal:
    return Principal(name, frozenset(roles), "certificate", "cert:7", "192.0.2.9", frozenset(aor))


HEADEND = cert("headend-dashboard", Role.VIEWER)  # the delegator: a service, not a person
SCOPED = cert("headend-a", Role.VIEWER, aor=("grpA-*",))
SAM = cert("sam", Role.SECADM)


class Env(KeyAdminEnv):
    """test_keyadmin's store, trail and `call`, with a user store and two delegators."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.users = AccessStore(tmp, rng=seeded_random(3), hasher=CHEAP)
        self.users.add_user("alice", PASSWORD, {Role.SECADM}, T0)
        self.users.add_user("victor", PASSWORD, {Role.VIEWER}, T0)
        self.users.add_user("sue", PASSWORD, {Role.SECAUD}, T0)
        self.users.add_user("gone", PASSWORD, {Role.SECADM}, T0)
        self.users.set_disabled("gone", True)
        self.svc = KeyAdminService(
            self.store,
            self.audit,
            rng=seeded_random(2),
            users=self.users,
            delegators=frozenset({"headend-dashboard", "headend-a"}),
        )
        for device in ("grpA-1", "grpB-1"):
            self.store.enroll(device, PSK, T0)

    def trail_via(self) -> list[tuple[str, str, str, str, str]]:
        return [(e.who, e.via, e.action, e.target, e.outcome) for e in self.audit.entries(-1, 500)]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.users.close()
    e.audit.close()
    e.store.close()


def revoked(env: Env, device: str) -> bool:
    return any(
        d.revoked_at is not None for d in env.store.list_devices() if d.device_id == device.encode()
    )


@pytest.mark.parametrize(
    ("named", "why"),
    [("mallory", "not an enabled user"), ("gone", "not an enabled user"),
     ("victor", "'keys' is needed"), ("sue", "'keys' is needed")],
)  # fmt: skip
def test_a_delegator_naming_an_unknown_disabled_or_unprivileged_user_changes_nothing(
    env: Env, named: str, why: str
) -> None:
    out = env.call(HEADEND, "revoke", device="grpA-1", on_behalf=named)
    assert out["error"] == "forbidden" and why in out["detail"]
    assert not revoked(env, "grpA-1")
    assert env.call(HEADEND, "rotate_psk", device="grpA-1", on_behalf=named)["error"] == "forbidden"
    assert env.store.get_psk("grpA-1") == PSK
    assert env.trail_via()[-1][2:] == ("keys.rotate_psk", "grpA-1", "refused: forbidden")


@pytest.mark.parametrize(
    ("op", "req"),
    [("revoke", {"device": "grpA-1"}), ("rotate_psk", {"device": "grpA-1"}),
     ("enroll", {"device": "new-1", "psk": PSK.hex()}), ("list", {}), ("trail", {}),
     ("audit", {}), ("group_keys", {"pan": 1, "material": True})],
)  # fmt: skip
def test_a_delegator_certificate_used_directly_gets_nothing(
    env: Env, op: str, req: dict[str, Any]
) -> None:
    out = env.call(HEADEND, op, **req)
    assert out["error"] == "forbidden" and "on behalf" in out["detail"]
    assert not revoked(env, "grpA-1") and env.store.get_psk("grpA-1") == PSK
    assert env.call(HEADEND, "whoami")["operator"] == "headend-dashboard"  # only this


@pytest.mark.parametrize(
    ("op", "req"),
    [("enroll", {"device": "new-1", "psk": PSK.hex()}), ("list", {}), ("trail", {}),
     ("audit", {}), ("group_keys", {"pan": 1, "material": True}), ("whoami", {})],
)  # fmt: skip
def test_a_delegator_cannot_ask_for_more_than_revoke_and_rotate_even_for_a_secadm(
    env: Env, op: str, req: dict[str, Any]
) -> None:
    out = env.call(HEADEND, op, on_behalf="alice", **req)
    assert out["error"] == "forbidden" and "cannot be delegated" in out["detail"]
    assert [d.device_id for d in env.store.list_devices()] == [b"grpA-1", b"grpB-1"]


def test_a_user_that_is_no_delegator_cannot_name_someone_else(env: Env) -> None:
    out = env.call(SAM, "revoke", device="grpA-1", on_behalf="alice")
    assert out["error"] == "forbidden" and not revoked(env, "grpA-1")
    out = env.call(cert("alice", Role.VIEWER), "revoke", device="grpA-1", on_behalf="alice")
    assert out["error"] == "forbidden"


def test_a_replayed_or_stale_delegated_change_is_refused(env: Env) -> None:
    nonce = secrets.token_hex(16)
    assert env.call(HEADEND, "rotate_psk", device="grpA-1", on_behalf="alice", nonce=nonce)["ok"]
    rotated = env.store.get_psk("grpA-1")
    again = env.call(HEADEND, "rotate_psk", device="grpA-1", on_behalf="alice", nonce=nonce)
    assert again["error"] == "replayed" and env.store.get_psk("grpA-1") == rotated
    old = env.call(HEADEND, "revoke", device="grpA-1", on_behalf="alice", at=T0 - 3600)
    assert old["error"] == "stale" and not revoked(env, "grpA-1")


def test_a_delegators_area_bounds_what_it_asks_for_anyone(env: Env) -> None:
    out = env.call(SCOPED, "revoke", device="grpB-1", on_behalf="alice")
    assert out["error"] == "forbidden" and not revoked(env, "grpB-1")
    assert env.call(SCOPED, "revoke", device="grpA-1", on_behalf="alice")["ok"]


def test_malformed_on_behalf_is_a_bad_request(env: Env) -> None:
    for bad in (7, "", "a" * 65, "al ice", "alice\n", ["alice"]):
        out = env.call(HEADEND, "revoke", device="grpA-1", on_behalf=bad)
        assert out["error"] == "bad-request", bad
    assert not revoked(env, "grpA-1")


def test_a_delegated_revoke_and_rotation_name_the_user_and_the_delegator(env: Env) -> None:
    out = env.call(HEADEND, "revoke", device="grpA-1", on_behalf="alice", reason="stolen")
    assert out["ok"] and revoked(env, "grpA-1")
    rot = env.call(HEADEND, "rotate_psk", device="grpB-1", on_behalf="alice")
    assert rot["ok"] and env.store.get_psk("grpB-1") == bytes.fromhex(rot["psk"])
    via = "delegated by headend-dashboard (cert:7)"
    assert env.trail_via()[-4:] == [
        ("alice", via, "keys.revoke", "grpA-1", "requested"),
        ("alice", via, "keys.revoke", "grpA-1", "ok"),
        ("alice", via, "keys.rotate_psk", "grpB-1", "requested"),
        ("alice", via, "keys.rotate_psk", "grpB-1", "ok"),
    ]
    assert rot["psk"] not in json.dumps([vars(e) for e in env.audit.entries(-1, 500)])
