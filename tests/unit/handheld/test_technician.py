"""The technician's login on the handheld: access/'s users and lock-out, every attempt audited."""

from __future__ import annotations

from pathlib import Path

import pytest
from argon2 import PasswordHasher

from amistack.access import AccessStore, AuditTrail, LoginRefused, Role
from amistack.handheld.technician import TechnicianDesk

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "a long field passphrase"


def desk(tmp_path: Path) -> TechnicianDesk:
    store = AccessStore(tmp_path / "access", hasher=CHEAP)
    store.add_user("tina", PASSWORD, [Role.INSTALLER], 0.0)
    return TechnicianDesk(store, AuditTrail.open(tmp_path, 0.0), "handheld-7")


def test_login_gives_the_roles_and_logout_ends_the_login_session(tmp_path: Path) -> None:
    d = desk(tmp_path)
    s = d.login("tina", PASSWORD, 10.0)
    assert s.principal.roles == frozenset({Role.INSTALLER})
    d.logout(s, 20.0)
    assert d.store.authenticate_token("anything", 21.0) is None
    actions = [(e.action, e.outcome, e.via) for e in d.audit.entries()]
    assert actions == [
        ("login", "ok", "handheld:handheld-7"),
        ("logout", "ok", "handheld:handheld-7"),
    ]


def test_failed_logins_are_limited_and_audited(tmp_path: Path) -> None:
    d = desk(tmp_path)
    for t in range(5):
        with pytest.raises(LoginRefused):
            d.login("tina", "not the passphrase!", 100.0 + t)
    with pytest.raises(LoginRefused) as locked:  # locked: the right password is refused too
        d.login("tina", PASSWORD, 106.0)
    assert locked.value.retry_after > 0
    with pytest.raises(LoginRefused):
        d.login("no such user", PASSWORD, 107.0)  # not a well-formed name: audited as "?"
    entries = d.audit.entries()
    assert [e.outcome for e in entries] == ["failed"] * 7
    assert {e.who for e in entries} == {"tina", "?"}
    assert d.login("tina", PASSWORD, 106.0 + 301.0).principal.name == "tina"  # after 5 min
