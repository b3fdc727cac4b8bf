"""The key server's admin endpoint over real mutual TLS on loopback, attacked as the brief says:
an anonymous caller, a certificate without a role, the wrong role, a group-A operator on a
group-B meter, a revoked and an expired certificate, a replayed request, a connection flood from
one host -- and `amistack keys --server` acting through it. Real SQLite store, real PKI, real
signed audit trail."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.cli import run_cli

from amistack.access import AuditTrail, Role
from amistack.access.certroles import user_roles_extension
from amistack.access.keyadmin import KeyAdminService
from amistack.crypto import seeded_random
from amistack.keymgmt import pki
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.keydist import KeyDistRefused, KeyDistUnavailable
from amistack.keymgmt.store import CredentialStore
from amistack.runtime.keydist import KeyDistServer, TlsFiles, admin_request, start_keyadmin
from amistack.runtime.loop import new_event_loop

T = TypeVar("T")
PSK = "00112233445566778899aabbccddeeff"
HOST = "127.0.0.1"


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    loop = new_event_loop(False)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro_fn(), 20))
    finally:
        loop.close()


def person(d: Path, name: str, *roles: Role, aor: tuple[str, ...] = ("*",), **kw: Any) -> None:
    ext = [user_roles_extension(set(roles), aor)]
    pki.issue_client(d, name, [], extensions=ext, **kw)


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    pki.init_ca(d)
    pki.issue_server(d, "keyserver", [HOST])
    person(d, "sam", Role.SECADM)
    person(d, "anna", Role.SECADM, aor=("grpA-*",))
    person(d, "olga", Role.OPERATOR)
    person(d, "rex", Role.SECADM)
    pki.revoke(d, "rex")
    person(d, "old", Role.SECADM, valid_days=1, now=time.time() - 3 * 86400)
    pki.issue_client(d, "headend", ["c1222"], meters=["*"])  # a key fetcher, not a person
    return d


@dataclass
class Admin:
    d: Path
    store: CredentialStore
    trail: AuditTrail
    server: KeyDistServer
    port: int

    async def ask(self, who: str, op: str, **req: Any) -> dict[str, Any]:
        body = {"op": op, "id": 1, "at": time.time(), "nonce": f"{time.time_ns():032x}", **req}
        return await admin_request(HOST, self.port, TlsFiles.client(self.d, who), body)

    def actions(self) -> list[tuple[str, str, str, str]]:
        return [(e.who, e.action, e.target, e.outcome) for e in self.trail.entries(limit=500)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[CredentialStore, AuditTrail]]:
    s = CredentialStore(tmp_path / "ks.db", FileKek.create(tmp_path / "kek.key", seeded_random(3)))
    trail = AuditTrail.open(tmp_path, time.time())
    yield s, trail
    trail.close()
    s.close()


def with_admin(
    pki_dir: Path, store: tuple[CredentialStore, AuditTrail], body: Callable[[Admin], Any]
) -> None:
    async def main() -> None:
        service = KeyAdminService(store[0], store[1])
        server = await start_keyadmin(service, TlsFiles.server(pki_dir), [HOST], 0, clock=time.time)
        try:
            await body(Admin(pki_dir, store[0], store[1], server, server.addresses[0][1]))
        finally:
            await server.close()

    run(main)


def test_secadm_administers_keys_and_the_trail_names_the_certificate(
    pki_dir: Path, store: tuple[CredentialStore, AuditTrail]
) -> None:
    async def body(a: Admin) -> None:
        made = await a.ask("sam", "enroll", device="grpA-1", psk=PSK)
        assert made["ok"] and "psk" not in made  # a given PSK is never echoed
        assert (await a.ask("sam", "list"))["devices"][0]["device"] == "grpA-1"
        who = await a.ask("sam", "whoami")
        assert (who["operator"], who["roles"], who["via"]) == ("sam", ["SECADM"], "certificate")
        assert a.store.get_psk("grpA-1") == bytes.fromhex(PSK)
        first = a.trail.entries(limit=1)[0]
        assert (first.who, first.action, first.outcome, first.source) == (
            "sam",
            "keys.enroll",
            "requested",
            HOST,
        )

    with_admin(pki_dir, store, body)


def test_wrong_role_and_foreign_meters_are_refused_and_audited(
    pki_dir: Path, store: tuple[CredentialStore, AuditTrail]
) -> None:
    async def body(a: Admin) -> None:
        await a.ask("sam", "enroll", device="grpB-1", psk=PSK)
        with pytest.raises(KeyDistRefused) as olga:
            await a.ask("olga", "revoke", device="grpB-1")
        assert olga.value.code == "forbidden"
        with pytest.raises(KeyDistRefused) as anna:
            await a.ask("anna", "revoke", device="grpB-1")
        assert anna.value.code == "forbidden" and "area of responsibility" in anna.value.detail
        assert (await a.ask("anna", "enroll", device="grpA-9", psk=PSK))["ok"]
        assert a.store.is_active("grpB-1")
        assert ("olga", "keys.revoke", "grpB-1", "refused: forbidden") in a.actions()
        assert ("anna", "keys.revoke", "grpB-1", "refused: forbidden") in a.actions()

    with_admin(pki_dir, store, body)


def test_anonymous_roleless_revoked_and_expired_callers_are_shut_out(
    pki_dir: Path, store: tuple[CredentialStore, AuditTrail]
) -> None:
    async def body(a: Admin) -> None:
        anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        anonymous.load_verify_locations(str(pki.PkiLayout.of(a.d).ca_cert))
        reader, writer = await asyncio.open_connection(HOST, a.port, ssl=anonymous)
        writer.write(b'{"op":"enroll","device":"x"}\n')
        with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)):
            await reader.readuntil(b"\n")  # TLS 1.3: the refusal arrives after the handshake
        writer.close()
        for who in ("headend", "old"):
            with pytest.raises(KeyDistUnavailable):
                await a.ask(who, "enroll", device="x", psk=PSK)
        with pytest.raises(KeyDistRefused) as rex:
            await a.ask("rex", "enroll", device="x", psk=PSK)
        assert rex.value.code == "forbidden" and "revoked" in rex.value.detail
        assert a.store.list_devices() == []
        c = a.server.counters
        assert c["handshake_refused"] >= 2 and c["bad_client_cert"] == 1
        # the unauthenticated never write to the trail; the revoked operator's try is on it
        assert a.actions() == [("rex", "keys.connection", "", "refused: forbidden")]

    with_admin(pki_dir, store, body)


def test_a_replayed_request_is_refused(
    pki_dir: Path, store: tuple[CredentialStore, AuditTrail]
) -> None:
    async def body(a: Admin) -> None:
        req = {"op": "enroll", "device": "m-1", "psk": PSK, "at": time.time(), "nonce": "ab" * 16}
        files = TlsFiles.client(a.d, "sam")
        assert (await admin_request(HOST, a.port, files, dict(req)))["ok"]
        await a.ask("sam", "revoke", device="m-1")
        with pytest.raises(KeyDistRefused) as again:
            await admin_request(HOST, a.port, files, {**req, "replace": True})
        assert again.value.code == "replayed" and not a.store.is_active("m-1")

    with_admin(pki_dir, store, body)


def test_a_connection_flood_from_one_host_gets_a_few_slots(
    pki_dir: Path, store: tuple[CredentialStore, AuditTrail]
) -> None:
    async def body(a: Admin) -> None:
        idle = [await asyncio.open_connection(HOST, a.port) for _ in range(12)]
        await asyncio.sleep(0.2)
        assert a.server.counters["busy_source"] >= 8  # only 4 wait in a handshake at once
        for _, w in idle:
            w.close()
        await asyncio.sleep(0.1)
        assert (await a.ask("sam", "whoami"))["ok"]  # the operator is served again

    with_admin(pki_dir, store, body)


def test_cli_keys_acts_through_the_admin_endpoint(
    pki_dir: Path,
    store: tuple[CredentialStore, AuditTrail],
    capsys: pytest.CaptureFixture[str],
) -> None:
    psk_file = pki_dir.parent / "cli.psk"
    psk_file.write_text(PSK + "\n")
    psk_file.chmod(0o600)

    async def body(a: Admin) -> None:
        server = ["--server", f"{HOST}:{a.port}", "--data-dir", str(a.d)]
        enroll = ["keys", "enroll", "grpA-5", "--psk-file", str(psk_file), *server]
        code = await asyncio.to_thread(run_cli, capsys, *enroll, "--cert", "sam")
        assert code[0] == 0 and "enrolled grpA-5" in code[1] and PSK not in code[1]
        code = await asyncio.to_thread(
            run_cli, capsys, "keys", "revoke", "grpA-5", *server, "--cert", "olga"
        )
        assert code[0] == 2 and "forbidden" in code[2] and code[2].count("\n") == 1
        assert a.store.is_active("grpA-5")

    with_admin(pki_dir, store, body)


def test_the_key_server_serves_admin_and_seals_the_trail_at_shutdown(
    pki_dir: Path, store: tuple[CredentialStore, AuditTrail]
) -> None:
    from amistack.eventlog.verify import verify_lines
    from amistack.runtime.keyserver import KeyServerRuntime, run_keyserver

    async def main() -> None:
        stop = asyncio.Event()
        started: asyncio.Future[KeyServerRuntime] = asyncio.get_running_loop().create_future()
        service = KeyAdminService(store[0], store[1])
        task = asyncio.create_task(
            run_keyserver(
                store[0], [HOST], 0, stop=stop, ready=started.set_result, now=time.time(),
                admin=(TlsFiles.server(pki_dir), [HOST], 0, service),
            )
        )  # fmt: skip
        rt = await asyncio.wait_for(started, 10)
        port = rt.admin_addresses[0][1]
        body = {"op": "enroll", "device": "m-1", "psk": PSK, "at": time.time(), "nonce": "cd" * 16}
        assert (await admin_request(HOST, port, TlsFiles.client(pki_dir, "sam"), body))["ok"]
        stop.set()
        await task

    run(main)
    trail = store[1]
    assert trail.heads() and trail.heads()[-1].size == trail.size  # sealed at shutdown
    assert verify_lines(list(trail.export_lines()), trail.public_key_pem()).ok
