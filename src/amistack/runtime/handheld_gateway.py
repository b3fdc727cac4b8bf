"""The office end of the handheld's secure channel (the patent's VPN): mutual TLS 1.3, IPv6 in.

`start_gateway` listens for handhelds. A connection is served only if the TLS handshake verified
a client certificate of the project's CA (`runtime.keydist.server_ssl_context`: TLS 1.3, our CA
alone, client certificate required) that names the purpose `handheld`
(`amistack pki issue-client handheld-7 --purpose handheld --meters 'field-meter-*'`) and is not
on the CRL. The handheld's hello (`handheld.channel.Hello`) must name the certificate's CN as
its device; the gateway logs which technician and work order it serves and, with `audit`
(the key server's `CredentialStore.audit`), records it in the key server's audit trail as
`handheld-session` under the handheld's device id: the key server knows that this device is a
handheld and whom it serves.

Each later frame is an IPv6 packet. UDP for the key server's or the head-end's address inside
the channel (`Welcome`) leaves from a UDP socket of its own per inner source and service, bound
to `source` (the key server accepts PANA-Relay from that address: `amistack keyserver --relay
SOURCE`); answers come back as IPv6 packets to that inner source. To the head-end that is one
socket per inner (address, port). To the key server it is one socket per inner address: the
handheld's own PaC and its relay (RFC 6345 PRE) then reach the key server from the same UDP
address, so the key server knows which meters' sessions a handheld relayed (when it revokes the
handheld, it ends them: `KeyServer.revoke`); answers that are PANA-Relay messages go back to the
port the handheld's PRYs came from, the others to its PaC's port.

Every PANA datagram to the key server is checked against the certificate's `--meters`
selectors (`handheld.scope`): a meter a PRY relays must be one of them, the handheld's own PaC
may claim only the handheld's name. Out of scope: dropped, counted (`refused-scope`) and, the
first time per identity and connection, written to the key server's audit trail as
`handheld-scope`. Anything else is counted and dropped. The CRL is read again before every
frame and every `crl_poll` seconds, so a revoked handheld is cut off at once, even while idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from cryptography import x509

from amistack.addr import Addr
from amistack.handheld.channel import MAX_PACKET, ChannelError, FrameDecoder, Hello, Welcome, frame
from amistack.handheld.scope import ScopeError, claims, scope_refusal
from amistack.keymgmt.pki import ClientIdentity, PkiError, RevocationList, client_identity
from amistack.mesh.errors import MeshDecodeError
from amistack.mesh.ipv6 import NEXT_HEADER_UDP, Ipv6Packet, UdpDatagram
from amistack.pana.constants import MessageType
from amistack.runtime.keydist import TlsFiles, server_ssl_context

__all__ = ["HANDHELD_PURPOSE", "GatewayConfig", "HandheldGateway", "start_gateway"]

log = logging.getLogger(__name__)

HANDHELD_PURPOSE = "handheld"  # urn:amistack:purpose:handheld in the client certificate
KEYSERVER_INSIDE: Addr = ("2001:db8:ffff::1", 716)  # the services as the channel names them
HEADEND_INSIDE: Addr = ("2001:db8:ffff::2", 1153)
SCOPE_AUDITED = 16  # out-of-scope identities audited per connection (the rest only counted)
_RELAY_TYPE = MessageType.RELAY.to_bytes(2, "big")


def _is_relay(payload: bytes) -> bool:
    """A PANA-Relay message (RFC 5191 §6.2: the Message Type is octets 6-7 of the header)."""
    return payload[6:8] == _RELAY_TYPE


@dataclass(frozen=True)
class GatewayConfig:
    keyserver: Addr  # the real key server's PANA address
    headend: Addr | None = None  # the real head-end's C12.22 address
    source: str = "127.0.0.1"  # where the forwarded UDP comes from (the key server's --relay)
    crl_poll: float = 0.2  # s between CRL checks of an idle connection
    handshake_timeout: float = 10.0
    hello_timeout: float = 10.0
    max_flows: int = 256  # UDP sockets per connection (inner source, service)
    max_connections: int = 64


class _Flow(asyncio.DatagramProtocol):
    def __init__(self, deliver: Callable[[_Flow, bytes], None]) -> None:
        self.deliver = deliver
        self.transport: asyncio.DatagramTransport | None = None
        self.ports: dict[bool, int] = {}  # relayed? -> the inner source port it came from

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector transport and uvloop's are not DatagramTransport subclasses
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.deliver(self, data)


@dataclass
class _Connection:
    who: ClientIdentity
    hello: Hello
    writer: asyncio.StreamWriter
    flows: dict[tuple[str, int, Addr], _Flow] = field(default_factory=dict)
    out_of_scope: set[bytes] = field(default_factory=set)  # identities audited as such


class HandheldGateway:
    def __init__(
        self,
        config: GatewayConfig,
        tls: TlsFiles,
        audit: Callable[[str, bytes | None, str, float], object] | None = None,
    ) -> None:
        self.config = config
        self.tls = tls
        self._ctx = server_ssl_context(tls.ca, tls.cert, tls.key)
        with open(tls.ca, "rb") as f:
            ca = x509.load_pem_x509_certificate(f.read())
        if tls.crl is None:
            raise PkiError("the gateway needs the CRL (it checks every handheld against it)")
        self._crl = RevocationList(tls.crl, ca)
        self._audit = audit
        self.counters: Counter[str] = Counter()
        self.connections: dict[str, _Connection] = {}
        self._services: dict[Addr, Addr] = {KEYSERVER_INSIDE: config.keyserver}
        if config.headend is not None:
            self._services[HEADEND_INSIDE] = config.headend
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> Addr:
        self._server = await asyncio.start_server(
            self._accept, host, port, ssl=self._ctx,
            ssl_handshake_timeout=self.config.handshake_timeout,
        )  # fmt: skip
        bound = self._server.sockets[0].getsockname()
        log.info("handheld gateway on %s port %d", bound[0], bound[1])
        return bound[0], bound[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _identity(self, writer: asyncio.StreamWriter) -> tuple[ClientIdentity, x509.Certificate]:
        obj = writer.get_extra_info("ssl_object")
        der = obj.getpeercert(binary_form=True) if obj is not None else None
        if not der:
            raise PkiError("no client certificate")
        cert = x509.load_der_x509_certificate(der)
        who = client_identity(cert)
        if HANDHELD_PURPOSE not in who.purposes:
            raise PkiError(f"certificate of {who.name!r} is not a handheld's (no purpose)")
        return who, cert

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        conn: _Connection | None = None
        try:
            if len(self._tasks) > self.config.max_connections:
                self.counters["busy"] += 1
                return
            try:
                who, cert = self._identity(writer)
            except (PkiError, ValueError) as exc:
                self.counters["refused-certificate"] += 1
                log.warning("handheld gateway: %s refused: %s", peer, exc)
                return
            if self._crl.is_revoked(cert):
                self.counters["refused-revoked"] += 1
                log.warning("handheld gateway: %s refused: certificate revoked", who.name)
                return
            decoder = FrameDecoder()
            hello = await asyncio.wait_for(self._hello(reader, decoder), self.config.hello_timeout)
            if hello.device != who.name:
                self.counters["refused-hello"] += 1
                log.warning("handheld gateway: %s says it is %s", who.name, hello.device)
                return
            conn = _Connection(who, hello, writer)
            self.connections[who.name] = conn
            self.counters["sessions"] += 1
            detail = f"technician {hello.technician}, work order {hello.work_order}, " \
                     f"certificate serial {who.serial:x}"  # fmt: skip
            log.info("handheld gateway: %s serves %s", who.name, detail)
            if self._audit is not None:
                self._audit("handheld-session", who.name.encode(), detail, time.time())
            welcome = Welcome(KEYSERVER_INSIDE, HEADEND_INSIDE if self.config.headend else None)
            writer.write(frame(welcome.encode()))
            watch = asyncio.get_running_loop().create_task(self._watch(conn, cert))
            try:
                await self._frames(conn, cert, reader, decoder)
            finally:
                watch.cancel()
        except (ChannelError, TimeoutError) as exc:
            self.counters["channel-error"] += 1
            log.warning("handheld gateway: %s: %s", peer, exc)
        except (ConnectionError, ssl.SSLError, EOFError):
            self.counters["connection-lost"] += 1
        finally:
            if conn is not None:
                self.connections.pop(conn.who.name, None)
                for flow in conn.flows.values():
                    if flow.transport is not None:
                        flow.transport.close()
                log.info("handheld gateway: %s disconnected", conn.who.name)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _hello(self, reader: asyncio.StreamReader, decoder: FrameDecoder) -> Hello:
        while True:
            data = await reader.read(4096)
            if not data:
                raise EOFError
            frames = decoder.feed(data)
            if frames:
                if len(frames) > 1:
                    raise ChannelError(0, "frames before the welcome")
                return Hello.decode(frames[0])

    async def _watch(self, conn: _Connection, cert: x509.Certificate) -> None:
        """Cut an idle connection as soon as its certificate is revoked or expires."""
        while True:
            await asyncio.sleep(self.config.crl_poll)
            if self._refused(conn, cert):
                conn.writer.transport.abort()
                return

    def _refused(self, conn: _Connection, cert: x509.Certificate) -> bool:
        if self._crl.is_revoked(cert) or time.time() > conn.who.not_after:
            self.counters["cut-revoked"] += 1
            log.warning("handheld gateway: %s revoked or expired: cut off", conn.who.name)
            return True
        return False

    async def _frames(
        self,
        conn: _Connection,
        cert: x509.Certificate,
        reader: asyncio.StreamReader,
        decoder: FrameDecoder,
    ) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for packet in decoder.feed(data):
                if self._refused(conn, cert):
                    return
                await self._forward(conn, packet)

    async def _forward(self, conn: _Connection, data: bytes) -> None:
        try:
            packet = Ipv6Packet.decode(data)
            if packet.next_header != NEXT_HEADER_UDP:
                self.counters["not-udp"] += 1
                return
            udp = UdpDatagram.decode(packet)
        except MeshDecodeError:
            self.counters["decode-error"] += 1
            return
        inside: Addr = (str(packet.dst), udp.dst_port)
        target = self._services.get(inside)
        if target is None:
            self.counters["no-such-service"] += 1
            return
        pana = inside == KEYSERVER_INSIDE
        if pana and not self._in_scope(conn, udp.payload):
            return
        key = (str(packet.src), 0 if pana else udp.src_port, inside)
        flow = conn.flows.get(key)
        if flow is None:
            if len(conn.flows) >= self.config.max_flows:
                self.counters["too-many-flows"] += 1
                return
            flow = await self._open_flow(conn, packet.src, inside, target)
            conn.flows[key] = flow
        flow.ports[pana and _is_relay(udp.payload)] = udp.src_port
        assert flow.transport is not None
        flow.transport.sendto(udp.payload)
        self.counters["forwarded"] += 1

    def _in_scope(self, conn: _Connection, payload: bytes) -> bool:
        """Whether a PANA datagram claims only identities the certificate lets the handheld
        serve (module docstring); counted, and audited once per identity, when not."""
        try:
            bad = scope_refusal(claims(payload), conn.who.name, conn.who.meters)
        except ScopeError as exc:
            self.counters["scope-unreadable"] += 1
            log.warning("handheld gateway: %s: %s", conn.who.name, exc)
            return False
        if bad is None:
            return True
        self.counters["refused-scope"] += 1
        if bad not in conn.out_of_scope and len(conn.out_of_scope) < SCOPE_AUDITED:
            conn.out_of_scope.add(bad)
            detail = f"refused PANA for {bad[:64]!r}: outside the certificate's meters " \
                     f"{sorted(conn.who.meters)} (serial {conn.who.serial:x})"  # fmt: skip
            log.warning("handheld gateway: %s %s", conn.who.name, detail)
            if self._audit is not None:
                self._audit("handheld-scope", conn.who.name.encode(), detail, time.time())
        return False

    async def _open_flow(
        self, conn: _Connection, src: ipaddress.IPv6Address, inside: Addr, target: Addr
    ) -> _Flow:
        service_ip = ipaddress.IPv6Address(inside[0])
        pana = inside == KEYSERVER_INSIDE

        def back(flow: _Flow, payload: bytes) -> None:
            port = flow.ports.get(pana and _is_relay(payload))
            if port is None:
                self.counters["no-return-port"] += 1
                return
            udp = UdpDatagram(inside[1], port, payload).encode(service_ip, src)
            packet = Ipv6Packet(service_ip, src, NEXT_HEADER_UDP, udp).encode()
            if len(packet) > MAX_PACKET or conn.writer.is_closing():
                return
            conn.writer.write(frame(packet))
            self.counters["returned"] += 1

        loop = asyncio.get_running_loop()
        _, flow = await loop.create_datagram_endpoint(
            lambda: _Flow(back), local_addr=(self.config.source, 0), remote_addr=target
        )
        return flow


async def start_gateway(
    config: GatewayConfig,
    tls: TlsFiles,
    host: str,
    port: int,
    audit: Callable[[str, bytes | None, str, float], object] | None = None,
) -> tuple[HandheldGateway, Addr]:
    gw = HandheldGateway(config, tls, audit)
    return gw, await gw.start(host, port)
