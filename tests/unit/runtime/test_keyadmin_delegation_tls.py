"""Delegated key administration over real mutual TLS (`runtime.keydist.KeyAdminClient`, the
head-end's way to the key server's admin endpoint): the head-end's own certificate revokes on a
named SECADM's behalf and the key server's signed trail names both; the same certificate used on
its own, a revoked delegator certificate, a SECADM certificate that is no delegator naming
someone else, and a key server that is not there are all refused. Real PKI, SQLite, audit."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from tests.unit.runtime.test_keyadmin_tls import HOST, PSK, person, run

from amistack.access import AccessStore, AuditTrail, Role
from amistack.access.keyadmin import KeyAdminService
from amistack.crypto import seeded_random
from amistack.keymgmt import pki
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.store import CredentialStore
from amistack.runtime.keydist import KeyAdminClient, TlsFiles, start_keyadmin

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
DELEGATOR = "headend-dashboard"


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    pki.init_ca(d)
    pki.issue_server(d, "keyserver", [HOST])
    person(d, DELEGATOR, Role.VIEWER)  # a service: its own role grants nothing at the key server
    person(d, "stolen-headend", Role.VIEWER)
    pki.revoke(d, "stolen-headend")
    person(d, "sam", Role.SECADM)
    return d


@pytest.fixture
def keyserver(tmp_path: Path) -> Iterator[tuple[CredentialStore, AuditTrail, AccessStore]]:
    store = CredentialStore(tmp_path / "ks.db", FileKek.create(tmp_path / "kek", seeded_random(3)))
    store.enroll("meter-1", bytes.fromhex(PSK), time.time())
    trail = AuditTrail.open(tmp_path, time.time())
    users = AccessStore(tmp_path / "access", hasher=CHEAP)
    users.add_user("alice", "correct horse battery", {Role.SECADM}, time.time())
    yield store, trail, users
    users.close()
    trail.close()
    store.close()


def request(op: str, **kw: Any) -> dict[str, Any]:
    return {"op": op, "id": 1, "at": time.time(), "nonce": secrets.token_hex(16), **kw}


def test_the_head_end_revokes_for_a_named_secadm_and_is_refused_on_its_own(
    pki_dir: Path, keyserver: tuple[CredentialStore, AuditTrail, AccessStore]
) -> None:
    store, trail, users = keyserver
    service = KeyAdminService(
        store, trail, users=users, delegators=frozenset({DELEGATOR, "stolen-headend"})
    )

    async def main() -> list[dict[str, Any]]:
        server = await start_keyadmin(service, TlsFiles.server(pki_dir), [HOST], 0, clock=time.time)
        port = server.addresses[0][1]

        def client(name: str) -> KeyAdminClient:
            return KeyAdminClient(HOST, port, TlsFiles.client(pki_dir, name), name)

        try:
            return [
                await client(DELEGATOR).delegate(request("revoke", device="meter-1")),
                await client(DELEGATOR).delegate(request("list", on_behalf="alice")),
                await client("sam").delegate(request("revoke", device="meter-1", on_behalf="x")),
                await client("stolen-headend").delegate(
                    request("revoke", device="meter-1", on_behalf="alice")
                ),
                await client(DELEGATOR).delegate(
                    request("revoke", device="meter-1", on_behalf="alice", reason="stolen")
                ),
            ]
        finally:
            await server.close()

    alone, listed, sam, stolen, done = run(main)
    assert alone["error"] == "forbidden" and "on behalf" in alone["detail"]
    assert listed["error"] == "forbidden" and "cannot be delegated" in listed["detail"]
    assert sam["error"] == "forbidden"
    assert stolen["ok"] is False  # the CRL: refused before any request is read
    assert done["ok"] and done["revoked"] is True
    entries = [e for e in trail.entries(-1, 100) if e.action == "keys.revoke" and e.who == "alice"]
    assert [e.outcome for e in entries] == ["requested", "ok"]
    assert entries[0].via.startswith(f"delegated by {DELEGATOR} (cert:")
    assert entries[0].source == HOST


def test_a_key_server_that_is_not_there_is_an_answer_not_an_exception(pki_dir: Path) -> None:
    client = KeyAdminClient(HOST, 1, TlsFiles.client(pki_dir, DELEGATOR), DELEGATOR)

    async def main() -> dict[str, Any]:
        return await client.delegate(request("revoke", device="m", on_behalf="alice"))

    out = run(main)
    assert out["ok"] is False and out["error"] == "unavailable"
