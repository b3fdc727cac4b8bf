"""Key distribution over mutual TLS: the asyncio server and client around `keymgmt.keydist`.

    head-end --TLS 1.3, client cert (CN, purposes)--> KeyDistServer --lookup(key_id, purpose, now)
             <-- {"ok": true, "key": "<hex>", "not_after": ...} --    (KeyServer.key_for)

The protocol (request/response codec, identity and scope checks, audit) is sans-IO in
`amistack.keymgmt.keydist`; this module only moves its lines over TLS 1.3 with client
certificates: `KeyDistServer` drives `KeyDistService` (and re-checks the client's certificate
against the CRL and its expiry before every request), `KeyDistClient` is the head-end side with
a cache that honours `not_after`. See docs/key-distribution.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from amistack.addr import Addr
from amistack.keymgmt.keydist import (
    DEFAULT_KEYDIST_PORT,
    AuditSink,
    DistributedKey,
    KeyDistConfig,
    KeyDistError,
    KeyDistRefused,
    KeyDistService,
    KeyDistUnavailable,
    decode_answer,
    encode_request,
    key_from_answer,
)
from amistack.keymgmt.pki import (
    CertKind,
    ClientIdentity,
    PkiError,
    PkiLayout,
    check_private_key_file,
    client_identity,
    load_certificate,
    load_revoked_serials,
)
from amistack.keymgmt.ukmf import KeyId

log = logging.getLogger(__name__)


# -- TLS contexts ---------------------------------------------------------------------------------


def server_ssl_context(ca: Path | str, cert: Path | str, key: Path | str) -> ssl.SSLContext:
    """TLS 1.3 only, client certificate required and verified against `ca` alone."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx, ca, cert, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.num_tickets = 0  # no resumption: every connection presents (and we check) its cert
    return ctx


def client_ssl_context(ca: Path | str, cert: Path | str, key: Path | str) -> ssl.SSLContext:
    """TLS 1.3 only, the server verified against `ca` alone, including its name/IP (SAN)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    _harden(ctx, ca, cert, key)
    return ctx


def _harden(ctx: ssl.SSLContext, ca: Path | str, cert: Path | str, key: Path | str) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    try:
        check_private_key_file(key)
        ctx.load_verify_locations(cafile=str(ca))  # our CA only: no system trust store
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise PkiError(f"cannot load TLS credentials ({ca}, {cert}, {key}): {exc}") from None


@dataclass(frozen=True)
class TlsFiles:
    """The CA, certificate and key one end of the interface uses (paths)."""

    ca: Path
    cert: Path
    key: Path
    crl: Path | None = None

    @classmethod
    def server(cls, data_dir: Path | str, name: str = "keyserver") -> TlsFiles:
        """The files `pki init` / `pki issue-server NAME` wrote under `data_dir` (with the CRL)."""
        lay = PkiLayout.of(data_dir)
        return cls(
            lay.ca_cert, lay.cert(CertKind.SERVER, name), lay.key(CertKind.SERVER, name), lay.crl
        )

    @classmethod
    def client(cls, data_dir: Path | str, name: str) -> TlsFiles:
        lay = PkiLayout.of(data_dir)
        return cls(lay.ca_cert, lay.cert(CertKind.CLIENT, name), lay.key(CertKind.CLIENT, name))


class _Revocation:
    """The CRL, re-read when the file changes; fails closed when it cannot be read."""

    def __init__(self, path: Path | None, ca: x509.Certificate) -> None:
        self.path = path
        self.ca = ca
        self._stamp: tuple[int, int, int] | None = None
        self._serials: frozenset[int] | None = frozenset()
        self.error = ""

    def revoked(self, serial: int) -> bool | None:
        """True/False, or None when the CRL is unusable (caller refuses)."""
        if self.path is None:
            return False
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError as exc:
            self.error = f"CRL unavailable: {exc.strerror}"
            return None
        if stamp != self._stamp:
            try:
                self._serials = load_revoked_serials(self.path, self.ca)
                self.error = ""
            except PkiError as exc:
                self._serials, self.error = None, str(exc)
                log.error("key distribution: %s; refusing every client", exc)
            self._stamp = stamp
        return None if self._serials is None else serial in self._serials


# -- the server --------------------------------------------------------------------------------


class LineService(Protocol):
    """What the listener drives: `keymgmt.keydist.KeyDistService`, `access.KeyAdminService`.
    `client` is what the listener's `identify` made of the peer's certificate."""

    def handle(self, line: bytes, client: Any, now: float) -> bytes: ...

    def error(
        self, client: Any, now: float, rid: object, code: str, detail: str, what: str
    ) -> bytes: ...

    def refuse_client(self, client: Any, now: float, why: str) -> bytes: ...


# What the service sees of a client: made from its (verified) certificate and address.
Identify = Callable[[x509.Certificate, str], object]


class KeyDistServer:
    """The key-distribution listener: TLS 1.3 with client certificates, on IPv4 and/or IPv6.

    Usage (inside the key server's event loop, where the `KeyServer` engine lives)::

        kd = KeyDistServer(KeyDistService(engine.key_for, current=engine.current_key,
                                          audit=store.audit),
                           TlsFiles.server(data_dir), clock=driver.now)
        await kd.start(["0.0.0.0", "::"], DEFAULT_KEYDIST_PORT)
        ...
        await kd.close()

    `clock` must be the key server's engine clock (the `now` its keys' `not_after` is on).
    The same listener serves the key server's admin endpoint (`start_keyadmin`): `service` is
    then a `KeyAdminService` and `identify` turns the certificate into the operator it names
    (refusing one without a role). Expiry and the CRL are checked here before every request
    either way.
    """

    def __init__(
        self,
        service: LineService,
        tls: TlsFiles,
        *,
        clock: Callable[[], float] = time.time,
        config: KeyDistConfig | None = None,
        identify: Identify | None = None,
        name: str = "key distribution",
    ) -> None:
        self.service = service
        self.identify = identify
        self.name = name
        self.config = config or KeyDistConfig()
        self.clock = clock
        self._ctx = server_ssl_context(tls.ca, tls.cert, tls.key)
        self._revocation = _Revocation(tls.crl, load_certificate(tls.ca))
        if tls.crl is not None and self._revocation.revoked(0) is None:
            raise PkiError(f"cannot use the CRL: {self._revocation.error}")
        self.counters: Counter[str] = Counter()
        self.addresses: list[Addr] = []
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._per_source: Counter[str] = Counter()

    async def start(self, hosts: Sequence[str] = ("127.0.0.1",), port: int = 0) -> list[Addr]:
        """Listen on every host at `port` (0 = ephemeral, shared by all hosts when possible)."""
        try:
            for host in hosts:
                server = await asyncio.start_server(self._accept, host, port)
                self._servers.append(server)
                for sock in server.sockets:
                    bound = sock.getsockname()
                    self.addresses.append((str(bound[0]), int(bound[1])))
                    if port == 0:
                        port = int(bound[1])
        except BaseException:
            await self.close()
            raise
        for host, bport in self.addresses:
            log.info("%s (mutual TLS) on %s port %d", self.name, host, bport)
        return list(self.addresses)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> KeyDistServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._connection(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else "?"
        where = f"{host}:{peer[1]}" if peer else "?"
        self._writers.add(writer)
        self._per_source[host] += 1
        tls = _ServerTls(reader, writer, self._ctx)
        try:
            if len(self._tasks) > self.config.max_connections:
                self.counters["busy"] += 1
                return
            if self._per_source[host] > self.config.max_connections_per_source:
                self.counters["busy_source"] += 1  # one host cannot take every slot
                return
            self.counters["connections"] += 1
            try:
                await asyncio.wait_for(tls.handshake(), self.config.handshake_timeout)
            except (ssl.SSLError, OSError, TimeoutError, EOFError) as exc:
                # Unauthenticated: logged and counted, not audited (no audit flood from anyone).
                self.counters["handshake_refused"] += 1
                log.warning("%s: TLS handshake from %s refused: %s", self.name, where, exc)
                return
            identified = self._identity(tls.peer_certificate(), host)
            if identified is None:
                self.counters["bad_client_cert"] += 1
                return
            client, principal = identified
            log.info("%s: %s connected from %s", self.name, client.name, where)
            await self._serve(tls, client, principal)
        except (ConnectionError, TimeoutError, ssl.SSLError, EOFError):
            self.counters["connections_lost"] += 1
        finally:
            self._writers.discard(writer)
            self._per_source[host] -= 1
            if self._per_source[host] <= 0:
                del self._per_source[host]
            await tls.close()

    def _identity(self, der: bytes | None, host: str) -> tuple[ClientIdentity, object] | None:
        """The certificate's identity (for the expiry and CRL checks) and what the service is
        given (the same, or what `identify` makes of it)."""
        if not der:
            return None
        try:
            cert = x509.load_der_x509_certificate(der)
            client = client_identity(cert)
            return client, (self.identify(cert, host) if self.identify else client)
        except (PkiError, ValueError) as exc:
            log.warning("%s: unusable client certificate: %s", self.name, exc)
            return None

    def _check(self, client: ClientIdentity) -> str:
        """Why `client` may no longer be served ('' if it may): re-checked before each request,
        so a revocation or expiry ends a long-lived connection too."""
        if time.time() >= client.not_after:  # certificates are on wall-clock time
            return "client certificate has expired"
        revoked = self._revocation.revoked(client.serial)
        if revoked is None:
            return "revocation status unavailable"
        return "client certificate is revoked" if revoked else ""

    async def _serve(self, tls: _ServerTls, client: ClientIdentity, principal: object) -> None:
        cfg = self.config
        while True:
            try:
                line = await asyncio.wait_for(tls.readline(cfg.max_request), cfg.idle_timeout)
            except TimeoutError:
                self.counters["idle_timeouts"] += 1
                return
            except EOFError:
                return  # the client closed (a partial last line is dropped)
            except _TooLarge:
                self.counters["too_large"] += 1
                reply = self.service.error(
                    principal,
                    self.clock(),
                    None,
                    "too-large",
                    f"request longer than {cfg.max_request} octets",
                    "",
                )
                await asyncio.wait_for(tls.write(reply), cfg.write_timeout)
                return  # cannot find the next request boundary reliably: hang up
            now = self.clock()
            why = self._check(client)
            if why:
                self.counters["client_refused"] += 1
                reply = self.service.refuse_client(principal, now, why)
                await asyncio.wait_for(tls.write(reply), cfg.write_timeout)
                return
            self.counters["requests"] += 1
            reply = self.service.handle(line, principal, now)
            await asyncio.wait_for(tls.write(reply), cfg.write_timeout)


class _TooLarge(Exception):
    pass


class _ServerTls:
    """Server-side TLS over a plain asyncio stream, through `ssl.MemoryBIO`.

    Done by hand rather than with `start_server(ssl=...)` so that a refused handshake is seen
    (counted, logged) by us, and rather than `StreamWriter.start_tls`, which does not work
    server-side on uvloop. Raises `EOFError` when the peer goes away."""

    _CHUNK = 16384

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: ssl.SSLContext
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._buf = bytearray()

    async def handshake(self) -> None:
        while True:
            try:
                self._obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                await self._feed()
            except ssl.SSLError:
                with contextlib.suppress(Exception):
                    await self._flush()  # the alert tells the client why
                raise
        await self._flush()

    def peer_certificate(self) -> bytes | None:
        return self._obj.getpeercert(binary_form=True)

    async def readline(self, limit: int) -> bytes:
        """One request line (with its newline); `_TooLarge` past `limit` octets."""
        while True:
            i = self._buf.find(b"\n", 0, limit)
            if i >= 0:
                line = bytes(self._buf[: i + 1])
                del self._buf[: i + 1]
                return line
            if len(self._buf) >= limit:
                raise _TooLarge
            try:
                chunk = self._obj.read(self._CHUNK)
            except ssl.SSLWantReadError:
                await self._flush()
                await self._feed()
                continue
            except ssl.SSLZeroReturnError:
                raise EOFError from None
            if not chunk:
                raise EOFError
            self._buf += chunk

    async def write(self, data: bytes) -> None:
        self._obj.write(data)
        await self._flush()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._obj.version() is not None:
                with contextlib.suppress(ssl.SSLError):
                    self._obj.unwrap()  # our close_notify; the peer's is not awaited
                self._writer.write(self._outgoing.read())
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _feed(self) -> None:
        data = await self._reader.read(self._CHUNK)
        if not data:
            raise EOFError("connection closed")
        self._incoming.write(data)


# -- the client --------------------------------------------------------------------------------


class KeyDistClient:
    """The application-server side: one TLS connection (re-opened when needed) and a cache.

    A cached key is used until the earliest of: its `not_after` (measured as the time left on
    the key server's clock when it answered, so clock skew does not matter) minus
    `cache_margin`, and `max_cache_ttl` after it was fetched (which bounds how long a revocation
    takes to reach this client). `get_key` / `fetch` raise `KeyDistRefused` (the server said no)
    or `KeyDistUnavailable` (no answer).
    """

    def __init__(
        self,
        host: str,
        port: int,
        ca: Path | str,
        cert: Path | str,
        key: Path | str,
        *,
        server_hostname: str | None = None,
        timeout: float = 10.0,
        max_cache_ttl: float = 30.0,
        cache_margin: float = 1.0,
        max_cache_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host.strip("[]")
        self.port = port
        self.server_hostname = server_hostname or self.host
        self.timeout = timeout
        self.max_cache_ttl = max_cache_ttl
        self.cache_margin = cache_margin
        self.max_cache_entries = max_cache_entries
        self.clock = clock
        self._ctx = client_ssl_context(ca, cert, key)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._cache: OrderedDict[tuple[KeyId, str], tuple[float, DistributedKey]] = OrderedDict()
        self._next_id = 0
        self.counters: Counter[str] = Counter()

    async def get_key(self, key_id: KeyId | str, purpose: str) -> bytes:
        """The key `key_id` names for `purpose` (from the cache when still fresh)."""
        return (await self.fetch(key_id, purpose)).key

    async def fetch(self, key_id: KeyId | str, purpose: str) -> DistributedKey:
        kid = KeyId.parse(key_id) if isinstance(key_id, str) else key_id
        hit = self._cache.get((kid, purpose))
        if hit is not None:
            if self.clock() < hit[0]:
                self.counters["cache_hits"] += 1
                self._cache.move_to_end((kid, purpose))
                return hit[1]
            del self._cache[(kid, purpose)]
        self.counters["cache_misses"] += 1
        sent = self.clock()
        answer = await self._request({"op": "get_key", "key_id": str(kid), "purpose": purpose})
        dk = key_from_answer(answer, purpose)
        if dk.key_id != kid:
            raise KeyDistError(f"server answered for key id {dk.key_id}, asked {kid}")
        left = dk.not_after - float(answer.get("now", dk.not_after))
        expires = sent + min(left - self.cache_margin, self.max_cache_ttl)
        if expires > self.clock():
            self._cache[(kid, purpose)] = (expires, dk)
            while len(self._cache) > self.max_cache_entries:
                self._cache.popitem(last=False)
        return dk

    async def current_key(self, device: bytes | str, purpose: str) -> DistributedKey:
        """The key to send to `device` with now (never cached: it changes on rotation)."""
        raw = device.encode() if isinstance(device, str) else bytes(device)
        answer = await self._request(
            {"op": "current_key", "device_hex": raw.hex(), "purpose": purpose}
        )
        return key_from_answer(answer, purpose)

    async def ping(self) -> dict[str, Any]:
        """Who the server thinks we are: {"client": name, "purposes": [...], "now": ...}."""
        return await self._request({"op": "ping"})

    def invalidate(self, key_id: KeyId | None = None) -> None:
        """Forget cached keys (all, or those of one key id)."""
        if key_id is None:
            self._cache.clear()
            return
        for k in [k for k in self._cache if k[0] == key_id]:
            del self._cache[k]

    async def close(self) -> None:
        self._cache.clear()
        await self._disconnect()

    async def __aenter__(self) -> KeyDistClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            self._next_id += 1
            req["id"] = self._next_id
            data = encode_request(req)
            for attempt in (0, 1):
                reused = self._writer is not None
                try:
                    reader, writer = await self._connect()
                    writer.write(data)
                    await asyncio.wait_for(writer.drain(), self.timeout)
                    line = await asyncio.wait_for(reader.readuntil(b"\n"), self.timeout)
                    break
                except (
                    OSError,
                    ssl.SSLError,
                    TimeoutError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                ) as exc:
                    await self._disconnect()
                    # A kept-alive connection may have been closed by the server's idle
                    # timeout: requests are idempotent, so try once on a fresh one.
                    if attempt == 0 and reused:
                        continue
                    raise KeyDistUnavailable(
                        f"key server {self.host} port {self.port}: {_why(exc)}"
                    ) from exc
            try:
                return decode_answer(line, req["id"])
            except KeyDistRefused as exc:
                if exc.code == "forbidden":
                    await self._disconnect()
                raise
            except KeyDistError:
                await self._disconnect()
                raise

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None and not self._writer.is_closing():
            return self._reader, self._writer
        await self._disconnect()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                self.host,
                self.port,
                ssl=self._ctx,
                server_hostname=self.server_hostname,
                ssl_handshake_timeout=self.timeout,
                limit=1 << 16,
            ),
            self.timeout,
        )
        self._reader, self._writer = reader, writer
        self.counters["connects"] += 1
        return reader, writer

    async def _disconnect(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"server certificate refused: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS refused: {exc.reason or exc}"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed by the server (refused or idle)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


# -- wiring helper -------------------------------------------------------------------------------


async def start_keydist(
    engine: Any,
    tls: TlsFiles,
    listen: Sequence[str] = ("0.0.0.0", "::"),
    port: int = DEFAULT_KEYDIST_PORT,
    *,
    clock: Callable[[], float],
    audit: AuditSink | None = None,
    config: KeyDistConfig | None = None,
) -> KeyDistServer:
    """Serve `engine` (a `keymgmt.KeyServer`: `key_for`, `current_key`, `store.audit`) over
    mutual TLS. `clock` is the engine's clock (`KeyServerRuntime.pana.now`)."""
    if audit is None:
        store = getattr(engine, "store", None)
        audit = getattr(store, "audit", None)
    service = KeyDistService(
        engine.key_for, current=getattr(engine, "current_key", None), audit=audit
    )
    server = KeyDistServer(service, tls, clock=clock, config=config)
    await server.start(listen, port)
    return server


# -- the key server's admin endpoint -------------------------------------------------------------

DEFAULT_KEYADMIN_PORT = 7717  # lab choice (unassigned), beside key distribution's 7716
# An operator is one person at a console: a few connections from one host are plenty.
KEYADMIN_CONFIG = KeyDistConfig(max_connections=64, max_connections_per_source=4)
MAX_ADMIN_ANSWER = 64 << 20  # octets: the `trail` answer carries the whole audit trail


async def start_keyadmin(
    service: Any,
    tls: TlsFiles,
    listen: Sequence[str] = ("127.0.0.1", "::1"),
    port: int = DEFAULT_KEYADMIN_PORT,
    *,
    clock: Callable[[], float],
    config: KeyDistConfig = KEYADMIN_CONFIG,
) -> KeyDistServer:
    """Serve `service` (an `access.keyadmin.KeyAdminService`) to operators over mutual TLS: the
    client certificate must come from our CA, not be revoked or expired, and carry IEC 62351-8
    roles (`amistack pki issue-client NAME --role SECADM`); its CN, roles and area of
    responsibility become the `Principal` the service checks and audits."""
    from amistack.access.certroles import principal_from_certificate

    server = KeyDistServer(
        service,
        tls,
        clock=clock,
        config=config,
        identify=lambda cert, host: principal_from_certificate(cert, host),
        name="key administration",
    )
    await server.start(listen, port)
    return server


async def admin_request(
    host: str,
    port: int,
    tls: TlsFiles,
    request: dict[str, Any],
    *,
    server_hostname: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """One request to the admin endpoint on a connection of its own (never retried: a change
    is not idempotent, and the server refuses its nonce a second time anyway). Raises
    `KeyDistRefused` (the server said no) or `KeyDistUnavailable` (no answer)."""
    host = host.strip("[]")
    ctx = client_ssl_context(tls.ca, tls.cert, tls.key)
    opened: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host,
                port,
                ssl=ctx,
                server_hostname=server_hostname or host,
                ssl_handshake_timeout=timeout,
                limit=MAX_ADMIN_ANSWER,
            ),
            timeout,
        )
        opened = writer
        writer.write(encode_request(request))
        await asyncio.wait_for(writer.drain(), timeout)
        line = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
    except (
        OSError,
        ssl.SSLError,
        TimeoutError,
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
    ) as exc:
        raise KeyDistUnavailable(f"key server {host} port {port}: {_why(exc)}") from exc
    finally:
        if opened is not None:
            opened.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(opened.wait_closed(), 1.0)
    return decode_answer(line, request.get("id"))


@dataclass(frozen=True)
class KeyAdminClient:
    """The head-end's way to the key server's admin endpoint as a delegator (its own service
    certificate, `amistack keyserver --admin-delegate CN`): the dashboard's SECADM actions
    (headend.dashboard `KeyAdminPort`). `name` is the certificate's CN, shown on the page."""

    host: str
    port: int
    tls: TlsFiles
    name: str
    server_hostname: str | None = None

    async def delegate(self, request: dict[str, Any]) -> dict[str, Any]:
        """The key server's answer to `request` (`ok` false with `error` when it refused or
        did not answer: `unavailable`)."""
        try:
            return await admin_request(
                self.host, self.port, self.tls, request, server_hostname=self.server_hostname
            )
        except KeyDistRefused as exc:
            return {"ok": False, "error": exc.code, "detail": exc.detail}
        except KeyDistError as exc:  # no answer, or not one of the protocol's
            return {"ok": False, "error": "unavailable", "detail": str(exc)}
