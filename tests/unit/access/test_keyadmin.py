"""Key-server administration (access.keyadmin), attacked first: wrong role, outside the area of
responsibility, replayed and stale changes, a flood from one operator, the audit trail down or
tampered with, and PSKs that must never reach the trail. A real SQLite credential store and a
real signed audit trail; no sockets (the TLS listener is tests/unit/runtime/test_keyadmin_tls.py).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.access import AuditTrail, Principal, Role
from amistack.access.keyadmin import KeyAdminConfig, KeyAdminService
from amistack.crypto import seeded_random
from amistack.eventlog.verify import verify_lines
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.store import CredentialStore

T0 = 1_790_000_000.0
PSK = bytes.fromhex("00112233445566778899aabbccddeeff")


def who(name: str, *roles: Role, aor: tuple[str, ...] = ("*",)) -> Principal:
    return Principal(name, frozenset(roles), "certificate", "cert:1", "192.0.2.9", frozenset(aor))


SAM = who("sam", Role.SECADM)
SUE = who("sue", Role.SECAUD)
OLGA = who("olga", Role.OPERATOR)
ANNA = who("anna", Role.SECADM, aor=("grpA-*",))


class Env:
    def __init__(self, tmp: Path) -> None:
        self.store = CredentialStore(
            tmp / "ks.db", FileKek.create(tmp / "kek.key", seeded_random(1))
        )
        self.audit = AuditTrail.open(tmp, T0)
        self.svc = KeyAdminService(self.store, self.audit, rng=seeded_random(2))
        self.tmp = tmp
        self.n = 0

    def call(self, principal: Principal, op: str, now: float = T0, **req: Any) -> dict[str, Any]:
        self.n += 1
        body: dict[str, Any] = {"op": op, "id": self.n, **req}
        if op in ("enroll", "revoke", "rotate_psk"):
            body.setdefault("at", now)
            body.setdefault("nonce", secrets.token_hex(16))
        out: dict[str, Any] = json.loads(self.svc.handle(json.dumps(body).encode(), principal, now))
        assert out["id"] in (self.n, None)  # None: a flood is refused before it is parsed
        return out

    def trail(self) -> list[tuple[str, str, str, str]]:
        return [(e.who, e.action, e.target, e.outcome) for e in self.audit.entries(limit=1000)]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.audit.close()
    e.store.close()


def test_secadm_enrolls_revokes_rotates_and_each_change_is_audited_before_and_after(
    env: Env,
) -> None:
    assert env.call(SAM, "enroll", device="grpA-1", psk=PSK.hex())["ok"]
    made = env.call(SAM, "enroll", device="grpA-2")  # no PSK given: one is generated, shown once
    assert made["ok"] and len(bytes.fromhex(made["psk"])) == 16
    assert env.store.get_psk("grpA-2") == bytes.fromhex(made["psk"])
    rot = env.call(SAM, "rotate_psk", device="grpA-1")
    assert rot["ok"] and rot["generation"] == 2 and env.store.get_psk("grpA-1") != PSK
    assert env.call(SAM, "revoke", device="grpA-1", reason="stolen")["revoked"] is True
    assert not env.store.is_active("grpA-1")
    assert env.trail() == [
        ("sam", "keys.enroll", "grpA-1", "requested"),
        ("sam", "keys.enroll", "grpA-1", "ok"),
        ("sam", "keys.enroll", "grpA-2", "requested"),
        ("sam", "keys.enroll", "grpA-2", "ok"),
        ("sam", "keys.rotate_psk", "grpA-1", "requested"),
        ("sam", "keys.rotate_psk", "grpA-1", "ok"),
        ("sam", "keys.revoke", "grpA-1", "requested"),
        ("sam", "keys.revoke", "grpA-1", "ok"),
    ]
    first = env.audit.entries(limit=1)[0]
    assert first.source == "192.0.2.9" and first.via == "certificate"


def test_psks_never_reach_the_audit_trail_or_the_log(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    made = env.call(SAM, "enroll", device="m-1")
    env.call(SAM, "enroll", device="m-2", psk=PSK.hex())
    rot = env.call(SAM, "rotate_psk", device="m-2")
    env.call(SAM, "enroll", device="m-2", psk=PSK.hex())  # refused (exists): still no PSK shown
    env.audit.seal(T0)
    raw = b"".join(p.read_bytes() for p in (env.tmp / "audit").iterdir())
    text = "".join(env.audit.export_lines()) + caplog.text
    for secret in (made["psk"], PSK.hex(), rot["psk"]):
        assert secret not in text and bytes.fromhex(secret) not in raw
        assert secret.encode() not in raw and secret.encode().hex().encode() not in raw
    for path in (env.tmp / "audit").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path  # nothing group/world-readable


@pytest.mark.parametrize("principal", [OLGA, SUE, who("rb", Role.RBACMNT)])
def test_wrong_roles_are_refused_audited_and_change_nothing(env: Env, principal: Principal) -> None:
    for op, req in (
        ("enroll", {"device": "m-1", "psk": PSK.hex()}),
        ("revoke", {"device": "m-1"}),
        ("rotate_psk", {"device": "m-1"}),
        ("group_keys", {"pan": 0xFACE, "material": True}),
    ):
        out = env.call(principal, op, **req)
        assert (out["ok"], out["error"]) == (False, "forbidden"), op
    assert env.store.list_devices() == []
    assert {o for *_, o in env.trail()} == {"refused: forbidden"}
    assert len(env.trail()) == 4


def test_list_and_audit_follow_the_rights_table(env: Env) -> None:
    env.call(SAM, "enroll", device="m-1", psk=PSK.hex())
    assert [d["device"] for d in env.call(SUE, "list")["devices"]] == ["m-1"]
    assert env.call(SAM, "list")["ok"]  # key_inventory: SECADM and SECAUD
    assert env.call(OLGA, "list")["error"] == "forbidden"
    assert env.call(SUE, "audit", device="m-1")["entries"][0]["kind"] == "enroll"
    assert env.call(SAM, "audit")["error"] == "forbidden"  # audit: SECAUD (separation of duty)
    assert env.call(SUE, "group_keys", pan=1)["keys"] is None
    reads = [(w, a, o) for w, a, _, o in env.trail() if a in ("keys.list", "keys.audit")]
    assert reads == [
        ("sue", "keys.list", "ok"),
        ("sam", "keys.list", "ok"),
        ("olga", "keys.list", "refused: forbidden"),
        ("sue", "keys.audit", "ok"),
        ("sam", "keys.audit", "refused: forbidden"),
    ]


def test_area_of_responsibility_limits_the_meters_an_operator_acts_on(env: Env) -> None:
    env.call(SAM, "enroll", device="grpB-7", psk=PSK.hex())
    assert env.call(ANNA, "enroll", device="grpA-1", psk=PSK.hex())["ok"]
    for op in ("revoke", "rotate_psk"):
        out = env.call(ANNA, op, device="grpB-7")
        assert out["error"] == "forbidden" and "area of responsibility" in out["detail"]
    assert env.call(ANNA, "enroll", device="grpB-8")["error"] == "forbidden"
    assert env.store.is_active("grpB-7") and env.store.get_psk("grpB-7") == PSK
    assert [
        d["device"] for d in env.call(who("al", Role.SECAUD, aor=("grpA-*",)), "list")["devices"]
    ] == ["grpA-1"]
    assert env.call(ANNA, "group_keys", pan=1, material=True)["error"] == "forbidden"
    assert ("anna", "keys.revoke", "grpB-7", "refused: forbidden") in env.trail()


def test_a_replayed_or_stale_change_is_refused(env: Env) -> None:
    nonce = secrets.token_hex(16)
    assert env.call(SAM, "enroll", device="m-1", psk=PSK.hex(), nonce=nonce)["ok"]
    env.call(SAM, "revoke", device="m-1")
    again = env.call(SAM, "enroll", device="m-1", psk=PSK.hex(), nonce=nonce, replace=True)
    assert again["error"] == "replayed"
    assert not env.store.is_active("m-1")  # the replay did not re-enroll the revoked meter
    assert env.call(SAM, "rotate_psk", device="m-1", at=T0 - 3600)["error"] == "stale"
    assert env.call(SAM, "rotate_psk", device="m-1", nonce="short")["error"] == "bad-request"
    outcomes = [o for _, a, _, o in env.trail() if o.startswith("refused")]
    assert outcomes == ["refused: replayed", "refused: stale", "refused: bad-request"]


def test_a_flood_from_one_operator_is_cut_and_audited_once(env: Env) -> None:
    cfg = KeyAdminConfig(rate=1.0, burst=5)
    env.svc = KeyAdminService(env.store, env.audit, config=cfg)
    answers = [env.call(SAM, "list", now=T0)["ok"] for _ in range(200)]
    assert answers[:5] == [True] * 5 and not any(answers[6:])
    assert env.call(SUE, "list", now=T0)["ok"]  # another operator is still served
    floods = [e for e in env.trail() if e[1] == "keys.flood"]
    assert floods == [("sam", "keys.flood", "", "refused: rate-limited")]
    assert len(env.trail()) < 10  # 200 requests did not write 200 entries
    assert env.call(SAM, "list", now=T0 + 10)["ok"]  # the bucket refills


def test_no_change_when_the_audit_trail_cannot_be_written(env: Env) -> None:
    class Broken(AuditTrail):
        def record(self, *a: object, **k: object) -> int:
            raise OSError("disk full")

    broken = Broken.open(env.tmp / "full", T0)
    env.svc = KeyAdminService(env.store, broken)
    out = env.call(SAM, "enroll", device="m-1", psk=PSK.hex())
    assert (out["error"], out["detail"]) == ("internal", "audit unavailable; nothing done")
    assert env.store.list_devices() == []
    assert env.call(SAM, "list")["error"] == "internal"  # no unaudited read either
    broken.close()


def test_the_audit_trail_tampered_at_rest_is_caught(env: Env) -> None:
    """Someone with the files rewrites a key action in the trail: the trail's signed heads no
    longer hold, or the damaged record is set aside and the damage itself recorded and signed."""
    env.call(SAM, "enroll", device="m-1", psk=PSK.hex())
    env.call(SAM, "revoke", device="m-1")
    env.audit.seal(T0 + 1)
    pem = env.audit.public_key_pem()
    assert verify_lines(list(env.audit.export_lines()), pem).ok
    env.audit.close()
    log = env.tmp / "audit" / "audit.log"
    data = log.read_bytes()
    forged = data.replace(b"keys.revoke", b"keys.rev0ke")
    assert forged != data
    log.write_bytes(forged)
    env.audit = AuditTrail.open(env.tmp, T0 + 2)
    lines = list(env.audit.export_lines())
    actions = [e.action for e in env.audit.entries(limit=100)]
    caught = not verify_lines(lines, pem).ok or "keys.rev0ke" not in actions
    assert caught, actions


def test_admin_request_decoder_fuzz(tmp_path: Path) -> None:
    """Hostile lines: always one JSON answer line, never an exception, never a change."""
    e = Env(tmp_path)

    @settings(max_examples=200, deadline=None)
    @given(st.one_of(st.binary(max_size=300), st.dictionaries(st.text(max_size=8), st.text())))
    def one(data: bytes | dict[str, str]) -> None:
        line = data if isinstance(data, bytes) else json.dumps(data).encode()
        out = json.loads(e.svc.handle(line, OLGA, T0))
        assert out["ok"] is False or out.get("operator") == "olga"
        assert e.store.list_devices() == []

    try:
        one()
    finally:
        e.audit.close()
        e.store.close()


def test_secaud_exports_the_trail_and_it_verifies(env: Env) -> None:
    env.call(SAM, "enroll", device="m-1", psk=PSK.hex())
    assert env.call(SAM, "trail")["error"] == "forbidden"  # the administrator cannot fetch it
    scoped = who("al", Role.SECAUD, aor=("grpA-*",))
    assert env.call(scoped, "trail")["error"] == "forbidden"  # it holds every meter's actions
    got = env.call(SUE, "trail")
    verdict = verify_lines(got["export"].split("\n"), got["public_key"].encode())
    assert verdict.ok and verdict.entries >= 4


def test_a_certificate_of_a_disabled_user_is_refused(env: Env) -> None:
    from argon2 import PasswordHasher

    from amistack.access import AccessStore

    users = AccessStore(
        env.tmp / "users", hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    try:
        users.add_user("sam", "correct horse battery", {Role.SECADM}, T0)
        env.svc = KeyAdminService(env.store, env.audit, users=users)
        assert env.call(SAM, "enroll", device="m-1", psk=PSK.hex())["ok"]
        users.set_disabled("sam", True)
        out = env.call(SAM, "revoke", device="m-1")
        assert (out["error"], out["detail"]) == ("forbidden", "user 'sam' is disabled")
        assert env.store.is_active("m-1")
        assert env.trail()[-1] == ("sam", "keys.revoke", "m-1", "refused: forbidden")
    finally:
        users.close()
