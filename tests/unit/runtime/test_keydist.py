"""Key distribution over real mutual TLS on loopback (IPv4, IPv6), backed by a real KeyServer.

Keys are installed from real PANA security contexts into the key server's key-ring directory;
the meter side derives its own copy with a KeyRing, as a meter does. The lab PKI is real too.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from tests.conftest import loopback_hosts, require_ipv6_loopback

from amistack.crypto import PrfHash, seeded_random
from amistack.keymgmt import pki
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.keydist import (
    AUDIT_KEY_EXPORT,
    AUDIT_KEY_REFUSED,
    KeyDistConfig,
    KeyDistError,
    KeyDistRefused,
    KeyDistService,
    KeyDistUnavailable,
)
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.server import KeyServer
from amistack.keymgmt.store import CredentialStore
from amistack.keymgmt.ukmf import KeyId, PurposeRegistry
from amistack.pana.keys import PanaSecurityContext
from amistack.runtime.keydist import (
    KeyDistClient,
    KeyDistServer,
    TlsFiles,
    client_ssl_context,
    start_keydist,
)
from amistack.runtime.loop import new_event_loop

T = TypeVar("T")
T0 = 1_790_000_000.0  # the key server's (epoch-aligned) clock at the start of each test
LIFETIME = 600.0
METER = b"meter-1"
PSK = bytes.fromhex("11112222333344445555666677778888")


def run(coro_fn: Callable[[], Awaitable[T]], uv: bool = False) -> T:
    loop = new_event_loop(uv)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro_fn(), 20))
    finally:
        loop.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our CA, the key server's certificate and three application-server clients."""
    d = tmp_path_factory.mktemp("lab")
    pki.init_ca(d)
    pki.issue_server(d, "keyserver", ["localhost", "127.0.0.1", "::1"])
    pki.issue_client(d, "headend", ["c1222"], meters=["meter-*"])
    pki.issue_client(d, "concentrator", ["link"], meters=["*"])
    pki.issue_client(d, "ops", ["c1222", "link"], meters=["*"])
    return d


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA, with a client certificate for the same name and purpose as the head-end."""
    d = tmp_path_factory.mktemp("rogue")
    pki.init_ca(d, common_name="amistack lab CA")  # same CA name: only the key differs
    pki.issue_client(d, "headend", ["c1222"], meters=["*"])
    return d


@dataclass
class Clock:
    t: float = T0

    def __call__(self) -> float:
        return self.t


def context(session_id: int = 0x4097DCD8, key_id: int = 1, seed: int = 5) -> PanaSecurityContext:
    rng = seeded_random(seed * 7919 + key_id)
    return PanaSecurityContext(
        session_id=session_id,
        key_id=key_id,
        prf=PrfHash.SHA256,
        msk=rng(64),
        pac_nonce=rng(16),
        paa_nonce=rng(16),
        i_par=b"\x00\x00\x00\x10PAR" + rng(13),
        i_pan=b"\x00\x00\x00\x10PAN" + rng(13),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CredentialStore]:
    s = CredentialStore(tmp_path / "ks.db", FileKek.create(tmp_path / "kek.key", seeded_random(9)))
    s.enroll(METER, PSK, now=0.0)
    yield s
    s.close()


@pytest.fixture
def key_server(store: CredentialStore) -> KeyServer:
    return KeyServer(store, rng=seeded_random(3), now=T0)


def install(ks: KeyServer, ctx: PanaSecurityContext, lifetime: float = LIFETIME) -> KeyRing:
    """Keys for one authentication on both ends: the key server's directory and the meter's ring."""
    ks.directory.install(METER, ctx, lifetime, T0)
    meter = KeyRing(METER, PurposeRegistry())
    meter.install(ctx, lifetime, T0)
    return meter


def client(lab: Path, name: str, addr: tuple[str, int], **kw: object) -> KeyDistClient:
    f = TlsFiles.client(lab, name)
    return KeyDistClient(addr[0], addr[1], f.ca, f.cert, f.key, **kw)  # type: ignore[arg-type]


def service_for(ks: KeyServer) -> KeyDistService:
    return KeyDistService(ks.key_for, current=ks.current_key, audit=ks.store.audit)


async def serve(
    ks: KeyServer,
    lab: Path,
    clock: Clock,
    host: str = "127.0.0.1",
    config: KeyDistConfig | None = None,
) -> KeyDistServer:
    server = KeyDistServer(
        service_for(ks), TlsFiles.server(lab), clock=clock, config=config or KeyDistConfig()
    )
    await server.start([host], 0)
    return server


def audit_kinds(store: CredentialStore) -> list[tuple[str, bytes | None, str]]:
    return [(e.kind, e.device_id, e.detail) for e in reversed(store.audit_log(1000))]


# -- the happy path ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "uv"),
    [
        pytest.param("127.0.0.1", False, id="ipv4-asyncio"),
        pytest.param("127.0.0.1", True, id="ipv4-uvloop"),
        pytest.param("::1", False, id="ipv6-asyncio"),
    ],
)
def test_authorised_client_gets_the_key_the_meter_derived(
    lab: Path, key_server: KeyServer, store: CredentialStore, host: str, uv: bool
) -> None:
    if host == "::1":
        require_ipv6_loopback()
    ctx = context()
    meter = install(key_server, ctx)
    meter_key = meter.current("c1222", T0)
    assert meter_key is not None
    clock = Clock()

    async def main() -> None:
        server = await serve(key_server, lab, clock, host)
        assert server.addresses[0][0] == host
        try:
            async with client(lab, "headend", server.addresses[0]) as hc:
                got = await hc.fetch(str(KeyId.of(ctx)), "c1222")
                assert got.key == meter_key.key
                assert got.device == METER  # the head-end attributes the message to meter-1
                assert got.not_after == T0 + LIFETIME
                assert got.key_id == KeyId.of(ctx)
                assert "key=" not in repr(got) and meter_key.key.hex() not in repr(got)
                # From the cache now: no second request reaches the server.
                assert await hc.get_key(KeyId.of(ctx), "c1222") == meter_key.key
                assert server.counters["requests"] == 1
                assert hc.counters["cache_hits"] == 1
                # Head-end initiated traffic: the current key of the device.
                cur = await hc.current_key("meter-1", "c1222")
                assert cur.key == meter_key.key and cur.key_id == KeyId.of(ctx)
                who = await hc.ping()
                assert who["client"] == "headend" and who["purposes"] == ["c1222"]
        finally:
            await server.close()

    run(main, uv)
    exports = [a for a in audit_kinds(store) if a[0] == AUDIT_KEY_EXPORT]
    assert len(exports) == 2
    _, device, detail = exports[0]
    assert device == METER
    assert "'headend'" in detail and str(KeyId.of(ctx)) in detail and "granted" in detail
    assert meter_key.key.hex() not in detail
    # the device id reads as text in the audit trail, not as a Python bytes literal
    current = exports[1][2]
    assert "current_key meter-1 " in current and "b'" not in current


def test_rotation_overlap_and_many_concurrent_clients(
    lab: Path, key_server: KeyServer, store: CredentialStore
) -> None:
    ctx1, ctx2 = context(key_id=1), context(key_id=2)
    meter = install(key_server, ctx1)
    old = meter.lookup(KeyId.of(ctx1), "c1222", T0)
    assert old is not None
    old_key = old.key
    # Re-authentication at T0+10: generation 2; generation 1 still decrypts for the overlap.
    key_server.directory.install(METER, ctx2, LIFETIME, T0 + 10)
    meter.install(ctx2, LIFETIME, T0 + 10)
    new = meter.current("c1222", T0 + 10)
    assert new is not None and new.key != old_key
    clock = Clock(T0 + 11)

    async def main() -> None:
        server = await serve(key_server, lab, clock)
        try:
            clients = [client(lab, "headend", server.addresses[0]) for _ in range(40)]
            results = await asyncio.gather(
                *(
                    c.get_key(KeyId.of(ctx1 if i % 2 else ctx2), "c1222")
                    for i, c in enumerate(clients)
                )
            )
            assert results == [old_key if i % 2 else new.key for i in range(40)]
            cur = await clients[0].current_key(METER, "c1222")
            assert cur.key_id == KeyId.of(ctx2)  # the key to send with is the new one
            # The superseded generation's not_after was cut to the overlap window (client 1
            # already holds it in its cache: no request).
            superseded = await clients[1].fetch(KeyId.of(ctx1), "c1222")
            assert superseded.not_after == T0 + 10 + key_server.directory.overlap
            await asyncio.gather(*(c.close() for c in clients))
            assert server.counters["requests"] == 41
            assert clients[1].counters["cache_hits"] == 1
        finally:
            await server.close()

    run(main)


# -- refusals ------------------------------------------------------------------------------------


def test_client_certificate_from_another_ca_is_refused_at_the_handshake(
    lab: Path, rogue: Path, key_server: KeyServer, store: CredentialStore
) -> None:
    ctx = context()
    install(key_server, ctx)
    clock = Clock()

    async def main() -> None:
        server = await serve(key_server, lab, clock)
        try:
            # Trusts our CA (so the server is verified) but presents the rogue CA's cert.
            f = TlsFiles.client(rogue, "headend")
            bad = KeyDistClient(*server.addresses[0], pki.PkiLayout.of(lab).ca_cert, f.cert, f.key)
            with pytest.raises(KeyDistUnavailable):
                await bad.get_key(KeyId.of(ctx), "c1222")
            await bad.close()
            for _ in range(50):  # the server's side of the failed handshake is asynchronous
                if server.counters["handshake_refused"]:
                    break
                await asyncio.sleep(0.01)
            assert server.counters["handshake_refused"] == 1
            assert server.counters["requests"] == 0
            # A client that trusts only the rogue CA refuses our server in turn.
            r = TlsFiles.client(rogue, "headend")
            blind = KeyDistClient(*server.addresses[0], r.ca, r.cert, r.key)
            with pytest.raises(KeyDistUnavailable, match="server certificate refused"):
                await blind.get_key(KeyId.of(ctx), "c1222")
            await blind.close()
            # ... and the server keeps serving legitimate clients.
            async with client(lab, "headend", server.addresses[0]) as good:
                assert len(await good.get_key(KeyId.of(ctx), "c1222")) == 16
        finally:
            await server.close()

    run(main)
    assert not [a for a in audit_kinds(store) if a[0] == AUDIT_KEY_REFUSED]  # unauthenticated


def test_client_without_the_purpose_is_refused(
    lab: Path, key_server: KeyServer, store: CredentialStore
) -> None:
    ctx = context()
    meter = install(key_server, ctx)
    link = meter.current("link", T0)
    assert link is not None
    clock = Clock()

    async def main() -> None:
        server = await serve(key_server, lab, clock)
        try:
            async with client(lab, "concentrator", server.addresses[0]) as conc:
                with pytest.raises(KeyDistRefused) as info:
                    await conc.get_key(KeyId.of(ctx), "c1222")
                assert info.value.code == "forbidden"
                # Its own purpose works.
                assert await conc.get_key(KeyId.of(ctx), "link") == link.key
                # PANA_AUTH_KEY never leaves the key server, whatever a certificate says.
                with pytest.raises(KeyDistRefused) as info:
                    await conc.get_key(KeyId.of(ctx), "pana-auth")
                assert info.value.code == "forbidden"
            async with client(lab, "ops", server.addresses[0]) as ops:
                with pytest.raises(KeyDistRefused) as info:
                    await ops.get_key(KeyId.of(ctx), "pana-auth")
                assert info.value.code == "forbidden"
        finally:
            await server.close()

    run(main)
    refused = [a for a in audit_kinds(store) if a[0] == AUDIT_KEY_REFUSED]
    assert len(refused) == 3
    assert "'concentrator'" in refused[0][2] and "forbidden" in refused[0][2]


def test_unknown_expired_and_revoked_keys_are_refused_and_the_cache_honours_not_after(
    lab: Path, key_server: KeyServer, store: CredentialStore
) -> None:
    ctx = context()
    meter = install(key_server, ctx, lifetime=5.0)
    key = meter.current("c1222", T0)
    assert key is not None
    clock = Clock()
    local = Clock(100.0)  # the head-end's own monotonic clock: a different time base

    async def main() -> None:
        server = await serve(key_server, lab, clock)
        try:
            async with client(
                lab, "headend", server.addresses[0], clock=local, cache_margin=1.0
            ) as hc:
                with pytest.raises(KeyDistRefused) as info:
                    await hc.get_key(KeyId(0x4097DCD8, 99), "c1222")
                assert info.value.code == "not-found"
                assert await hc.get_key(KeyId.of(ctx), "c1222") == key.key
                # 5 s left on the server's clock, 1 s margin: cached for 4 s of local time.
                clock.t, local.t = T0 + 3.5, 103.5
                assert await hc.get_key(KeyId.of(ctx), "c1222") == key.key
                assert server.counters["requests"] == 2
                clock.t, local.t = T0 + 5.0, 104.5  # past the cache entry and past not_after
                with pytest.raises(KeyDistRefused) as info:
                    await hc.get_key(KeyId.of(ctx), "c1222")
                assert info.value.code == "not-found"
                assert server.counters["requests"] == 3

                # Revocation: a fresh generation, then the device is revoked.
                ctx2 = context(session_id=0x11, key_id=7)
                clock.t = T0 + 10
                key_server.directory.install(METER, ctx2, LIFETIME, clock.t)
                hc.max_cache_ttl = 0.0  # look the key up every time
                assert len(await hc.get_key(KeyId.of(ctx2), "c1222")) == 16
                key_server.revoke(METER, clock.t)
                with pytest.raises(KeyDistRefused) as info:
                    await hc.get_key(KeyId.of(ctx2), "c1222")
                assert info.value.code == "not-found"
        finally:
            await server.close()

    run(main)


# -- hostile and broken input --------------------------------------------------------------------


async def raw_tls(
    lab: Path, name: str, addr: tuple[str, int]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    f = TlsFiles.client(lab, name)
    ctx = client_ssl_context(f.ca, f.cert, f.key)
    return await asyncio.open_connection(addr[0], addr[1], ssl=ctx, server_hostname=addr[0])


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> dict:  # type: ignore[type-arg]
    writer.write(line)
    await writer.drain()
    answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
    assert isinstance(answer, dict)
    return answer


def test_malformed_requests_get_a_clear_error_and_the_server_keeps_serving(
    lab: Path, key_server: KeyServer, store: CredentialStore
) -> None:
    ctx = context()
    meter = install(key_server, ctx)
    key = meter.current("c1222", T0)
    assert key is not None
    clock = Clock()
    cfg = KeyDistConfig(max_request=512)

    async def main() -> None:
        server = await serve(key_server, lab, clock, config=cfg)
        addr = server.addresses[0]
        try:
            reader, writer = await raw_tls(lab, "headend", addr)
            cases = [
                (b"this is not json\n", "bad-request", "not JSON"),
                (b"\xff\xfe\n", "bad-request", "UTF-8"),
                (b"[1, 2, 3]\n", "bad-request", "object"),
                (b'{"op": "get_key", "key_id": "zz", "purpose": "c1222"}\n', "bad-request", "hex"),
                (b'{"op": "get_key", "key_id": 5, "purpose": "c1222"}\n', "bad-request", "string"),
                (
                    b'{"op": "get_key", "key_id": "4097dcd8.00000001", "purpose": "C 1"}\n',
                    "bad-request",
                    "purpose",
                ),
                (b'{"op": "drop_tables", "id": 9}\n', "unknown-op", "drop_tables"),
                (b'{"op": "current_key", "purpose": "c1222"}\n', "bad-request", "device"),
                (b"[" * 5000 + b"\n", "too-large", "512"),
            ]
            for line, code, words in cases[:-1]:
                answer = await ask(reader, writer, line)
                assert answer["ok"] is False and answer["error"] == code, line
                assert words in answer["detail"], (line, answer)
            # The same connection still serves a good request (with its id echoed).
            good = json.dumps(
                {"op": "get_key", "key_id": str(KeyId.of(ctx)), "purpose": "c1222", "id": "x1"}
            ).encode()
            answer = await ask(reader, writer, good + b"\n")
            assert answer["ok"] is True and answer["id"] == "x1"
            assert bytes.fromhex(answer["key"]) == key.key
            # An oversized request is answered, then the connection is closed...
            answer = await ask(reader, writer, cases[-1][0])
            assert answer["error"] == "too-large"
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            # ... and other clients are served as before.
            async with client(lab, "headend", addr) as hc:
                assert await hc.get_key(KeyId.of(ctx), "c1222") == key.key
            assert server.counters["too_large"] == 1
        finally:
            await server.close()

    run(main)
    refused = [a for a in audit_kinds(store) if a[0] == AUDIT_KEY_REFUSED]
    assert len(refused) == 9  # every request of an authenticated client is audited


def test_idle_and_handshake_timeouts_and_a_silent_tcp_peer(
    lab: Path, key_server: KeyServer
) -> None:
    install(key_server, context())
    clock = Clock()
    cfg = KeyDistConfig(idle_timeout=0.2, handshake_timeout=0.2)

    async def main() -> None:
        server = await serve(key_server, lab, clock, config=cfg)
        addr = server.addresses[0]
        try:
            reader, writer = await raw_tls(lab, "headend", addr)
            assert await asyncio.wait_for(reader.read(), 5) == b""  # hung up on after 0.2 s
            writer.close()
            assert server.counters["idle_timeouts"] == 1
            # Plain TCP that never starts TLS is dropped at the handshake timeout.
            r2, w2 = await asyncio.open_connection(*addr)
            assert await asyncio.wait_for(r2.read(), 5) == b""
            w2.close()
            assert server.counters["handshake_refused"] == 1
            # The client reconnects transparently after its connection was idled out.
            async with client(lab, "headend", addr) as hc:
                await hc.ping()
                await asyncio.sleep(0.4)
                assert (await hc.ping())["client"] == "headend"
                assert hc.counters["connects"] == 2
        finally:
            await server.close()

    run(main)


def test_revoked_or_reissued_client_certificate_is_refused_on_a_live_connection(
    tmp_path: Path, key_server: KeyServer, store: CredentialStore
) -> None:
    lab = tmp_path / "lab2"
    pki.init_ca(lab)
    pki.issue_server(lab, "keyserver", ["127.0.0.1"])
    pki.issue_client(lab, "headend", ["c1222", "link"], meters=["*"])
    ctx = context()
    install(key_server, ctx)
    clock = Clock()

    async def main() -> None:
        server = await serve(key_server, lab, clock)
        addr = server.addresses[0]
        try:
            old = client(lab, "headend", addr)
            old.max_cache_ttl = 0.0
            assert len(await old.get_key(KeyId.of(ctx), "link")) == 16
            # Re-issued without "link": the old certificate (wider) is revoked at once.
            issued = pki.issue_client(lab, "headend", ["c1222"], meters=["*"], force=True)
            assert issued.revoked_serial is not None
            with pytest.raises(KeyDistRefused) as info:
                await old.get_key(KeyId.of(ctx), "c1222")
            assert info.value.code == "forbidden" and "revoked" in info.value.detail
            await old.close()
            async with client(lab, "headend", addr) as new:
                with pytest.raises(KeyDistRefused) as info:
                    await new.get_key(KeyId.of(ctx), "link")
                assert info.value.code == "forbidden"
                assert len(await new.get_key(KeyId.of(ctx), "c1222")) == 16
                # Revoked outright: refused on its next request.
                pki.revoke(lab, "headend")
                new.invalidate(KeyId.of(ctx))
                with pytest.raises(KeyDistRefused):
                    await new.get_key(KeyId.of(ctx), "c1222")
            # A damaged CRL fails closed.
            pki.issue_client(lab, "ops", ["c1222"], meters=["*"])
            pki.PkiLayout.of(lab).crl.write_bytes(b"garbage")
            async with client(lab, "ops", addr) as ops:
                with pytest.raises(KeyDistRefused) as info:
                    await ops.get_key(KeyId.of(ctx), "c1222")
                assert "revocation status unavailable" in info.value.detail
        finally:
            await server.close()

    run(main)


def test_audit_failure_fails_closed_and_start_keydist_wires_a_key_server(
    lab: Path, key_server: KeyServer, store: CredentialStore
) -> None:
    ctx = context()
    install(key_server, ctx)
    clock = Clock()

    async def main() -> None:
        server = await start_keydist(
            key_server,
            TlsFiles.server(lab),
            loopback_hosts(),
            0,
            clock=clock,
        )
        try:
            ports = {p for _, p in server.addresses}
            assert len(ports) == 1  # both families on the same port
            async with client(lab, "headend", server.addresses[-1]) as hc:
                assert len(await hc.get_key(KeyId.of(ctx), "c1222")) == 16
                store.close()  # the audit trail is gone: no key may leave without an entry
                hc.invalidate()
                with pytest.raises(KeyDistRefused) as info:
                    await hc.get_key(KeyId.of(ctx), "c1222")
                assert info.value.code == "internal" and "audit" in info.value.detail
            assert server.service.counters["audit_errors"] >= 1
        finally:
            await server.close()

    run(main)


# -- the lab PKI ---------------------------------------------------------------------------------


def test_pki_files_modes_contents_and_refusals(tmp_path: Path) -> None:
    d = tmp_path / "data"
    ca = pki.init_ca(d, now=T0)
    lay = pki.PkiLayout.of(d)
    assert stat.S_IMODE(lay.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(lay.root.stat().st_mode) == 0o700
    assert ca.not_after > T0
    with pytest.raises(pki.PkiExists):
        pki.init_ca(d)
    srv = pki.issue_server(d, "keyserver", ["ks.example.net", "192.0.2.1", "2001:db8::1"])
    assert stat.S_IMODE(srv.key_path.stat().st_mode) == 0o600
    cert = pki.load_certificate(srv.cert_path)
    with pytest.raises(pki.PkiError, match="not for TLS client"):
        pki.client_identity(cert)
    cl = pki.issue_client(d, "headend-1", ["c1222", "link"], meters=["meter-*"], now=T0)
    ident = pki.client_identity(pki.load_certificate(cl.cert_path))
    assert ident.name == "headend-1" and ident.purposes == {"c1222", "link"}
    assert ident.may_fetch("c1222") and not ident.may_fetch("pana-auth")
    assert ident.serial == cl.serial and ident.not_after == cl.not_after
    with pytest.raises(pki.PkiExists):
        pki.issue_client(d, "headend-1", ["c1222"], meters=["*"])
    assert ident.meters == {"meter-*"} and ident.may_serve(b"meter-7")
    assert not ident.may_serve(b"other-7") and not ident.may_serve(b"\xff")
    unscoped = pki.issue_client(d, "z", ["c1222"])  # names no meter: gets no meter's key
    assert not pki.client_identity(pki.load_certificate(unscoped.cert_path)).may_serve(b"m")
    with pytest.raises(pki.PkiError, match="meter selector"):
        pki.issue_client(d, "z", ["c1222"], meters=["a*b"])
    for bad_args in (
        ("../evil", ["c1222"]),
        ("x", []),
        ("x", ["pana-auth"]),
        ("x", ["C1222!"]),
    ):
        with pytest.raises(pki.PkiError):
            pki.issue_client(d, *bad_args)  # type: ignore[arg-type]
    with pytest.raises(pki.PkiError, match="neither an IP"):
        pki.issue_server(d, "s2", ["bad host!"])
    with pytest.raises(pki.PkiNotInitialised):
        pki.issue_client(tmp_path / "empty", "x", ["c1222"], meters=["*"])
    # A private key readable by others is refused (for the CA key, and for TLS use).
    os.chmod(lay.ca_key, 0o644)
    with pytest.raises(pki.PkiError, match="chmod 600"):
        pki.issue_client(d, "y", ["c1222"], meters=["*"])
    os.chmod(lay.ca_key, 0o600)
    os.chmod(cl.key_path, 0o640)
    with pytest.raises(pki.PkiError, match="chmod 600"):
        client_ssl_context(lay.ca_cert, cl.cert_path, cl.key_path)
    # Revocation is signed by the CA, and a CRL from elsewhere does not verify.
    serial = pki.revoke(d, "headend-1")
    ca_cert = pki.load_certificate(lay.ca_cert)
    assert serial in pki.load_revoked_serials(lay.crl, ca_cert)
    other = tmp_path / "other"
    pki.init_ca(other)
    with pytest.raises(pki.PkiError, match=r"signature|not issued"):
        pki.load_revoked_serials(pki.PkiLayout.of(other).crl, ca_cert)


def test_service_answers_without_any_network(key_server: KeyServer) -> None:
    """The sans-IO core the demo can call in process: same answers, same audit."""
    ctx = context()
    meter = install(key_server, ctx)
    key = meter.current("c1222", T0)
    assert key is not None
    svc = service_for(key_server)
    who = pki.ClientIdentity("headend", frozenset({"c1222"}), 1, T0 + 1e6, frozenset({"meter-*"}))
    line = json.dumps({"op": "get_key", "key_id": str(KeyId.of(ctx)), "purpose": "c1222"})
    answer = json.loads(svc.handle(line.encode(), who, T0))
    assert bytes.fromhex(answer["key"]) == key.key and answer["device"] == "meter-1"
    answer = json.loads(svc.handle(line.encode(), who, T0 + LIFETIME))
    assert answer == {
        "ok": False,
        "id": None,
        "error": "not-found",
        "detail": "no valid key (unknown, expired, revoked or not exportable)",
    }
    with pytest.raises(KeyDistError):
        raise KeyDistRefused("x", "y")


def test_a_head_end_certificate_is_scoped_to_the_meters_it_serves(
    key_server: KeyServer, store: CredentialStore
) -> None:
    """Red team: any head-end certificate could fetch every meter's key. Now its
    `urn:amistack:meters:` selectors scope it; outside them the answer is `forbidden`, audited."""
    ctx = context()
    install(key_server, ctx)
    svc = service_for(key_server)
    line = json.dumps({"op": "get_key", "key_id": str(KeyId.of(ctx)), "purpose": "c1222"})
    current = json.dumps({"op": "current_key", "device": "meter-1", "purpose": "c1222"})
    other_cell = pki.ClientIdentity(
        "headend-2", frozenset({"c1222"}), 2, T0 + 1e6, frozenset({"meter-2*"})
    )
    unscoped = pki.ClientIdentity("old", frozenset({"c1222"}), 3, T0 + 1e6)
    for who in (other_cell, unscoped):
        for req in (line, current):
            answer = json.loads(svc.handle(req.encode(), who, T0))
            assert answer["error"] == "forbidden", (who.name, req)
            assert answer["detail"] == "certificate does not cover this meter"
    refused = [e for e in store.audit_log() if e.kind == AUDIT_KEY_REFUSED]
    assert len(refused) == 4 and any("headend-2" in e.detail for e in refused)
    mine = pki.ClientIdentity(
        "headend-1", frozenset({"c1222"}), 4, T0 + 1e6, frozenset({"meter-1"})
    )
    assert json.loads(svc.handle(line.encode(), mine, T0))["ok"] is True
    assert json.loads(svc.handle(current.encode(), mine, T0))["ok"] is True
