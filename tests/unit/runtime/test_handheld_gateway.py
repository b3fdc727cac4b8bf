"""The office end of the handheld's channel over real TLS on loopback, attacked: no certificate
of our CA, a certificate without the handheld purpose, a hello naming another device, a
certificate revoked while connected (cut within the CRL poll), relayed PANA for a meter outside
the certificate's `--meters` (refused, counted, audited), and a real UDP service behind it
answering forwarded packets (the handheld's own PaC and its relay from one UDP address)."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import ssl
import time
from pathlib import Path
from typing import cast

import pytest

from amistack.eap.packet import EapPacket, EapType
from amistack.handheld.channel import FrameDecoder, Hello, Welcome, frame
from amistack.keymgmt import pki
from amistack.mesh.ipv6 import NEXT_HEADER_UDP, Ipv6Packet, UdpDatagram
from amistack.pana.avp import Avp
from amistack.pana.constants import AvpCode, MessageType
from amistack.pana.message import PanaMessage
from amistack.pana.relay import wrap_relay
from amistack.runtime.handheld_gateway import (
    KEYSERVER_INSIDE,
    GatewayConfig,
    HandheldGateway,
)
from amistack.runtime.keydist import TlsFiles, client_ssl_context

INNER = ipaddress.IPv6Address("2001:db8:f1:e000::1")
PCI = PanaMessage(MessageType.PCI, 0, 0, 0).encode()


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("office")
    pki.init_ca(d)
    pki.issue_server(d, "handheld-gateway", ["127.0.0.1"])
    pki.issue_client(d, "handheld-7", ["handheld"], meters=["field-meter-*"])
    pki.issue_client(d, "headend", ["c1222"], meters=["*"])
    pki.issue_client(d, "handheld-8", ["handheld"], meters=["field-meter-*"])
    return d


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory, office: Path) -> Path:
    d = tmp_path_factory.mktemp("rogue")
    pki.init_ca(d)
    pki.issue_client(d, "handheld-7", ["handheld"], meters=["*"])
    shutil.copy(pki.PkiLayout.of(office).ca_cert, pki.PkiLayout.of(d).ca_cert)  # trusts ours
    return d


class Echo(asyncio.DatagramProtocol):
    """The 'key server': answers each datagram with itself, and notes who sent it."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, tuple[str, int]]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen.append((data, addr))
        self.transport.sendto(data, addr)


async def _gateway(
    office: Path, echo: Echo | None = None
) -> tuple[HandheldGateway, tuple[str, int], list[object]]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: echo or Echo(), local_addr=("127.0.0.1", 0)
    )
    ks = transport.get_extra_info("sockname")
    audits: list[object] = []
    gw = HandheldGateway(
        GatewayConfig(ks, crl_poll=0.05),
        TlsFiles.server(office, "handheld-gateway"),
        audit=lambda *a: audits.append(a),
    )
    return gw, await gw.start("127.0.0.1", 0), audits


async def _connect(
    data_dir: Path, name: str, at: tuple[str, int], device: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, FrameDecoder]:
    tls = TlsFiles.client(data_dir, name)
    ctx = client_ssl_context(tls.ca, tls.cert, tls.key)
    reader, writer = await asyncio.open_connection(*at, ssl=ctx, server_hostname="127.0.0.1")
    writer.write(frame(Hello(device or name, "tina", "WO-1").encode()))
    return reader, writer, FrameDecoder()


async def _next(reader: asyncio.StreamReader, dec: FrameDecoder) -> bytes | None:
    while True:
        data = await asyncio.wait_for(reader.read(4096), 5.0)
        if not data:
            return None
        got = dec.feed(data)
        if got:
            return got[0]


def _packet(payload: bytes, port: int = 49716) -> bytes:
    dst = ipaddress.IPv6Address(KEYSERVER_INSIDE[0])
    udp = UdpDatagram(port, KEYSERVER_INSIDE[1], payload).encode(INNER, dst)
    return Ipv6Packet(INNER, dst, NEXT_HEADER_UDP, udp).encode()


def test_a_handheld_reaches_the_service_and_the_session_is_audited(office: Path) -> None:
    async def main() -> None:
        gw, at, audits = await _gateway(office)
        reader, writer, dec = await _connect(office, "handheld-7", at)
        welcome = Welcome.decode(await _next(reader, dec) or b"")
        assert welcome.keyserver == KEYSERVER_INSIDE
        writer.write(frame(_packet(PCI)))
        back = Ipv6Packet.decode(await _next(reader, dec) or b"")
        udp = UdpDatagram.decode(back)
        assert (back.dst, udp.dst_port, udp.payload) == (INNER, 49716, PCI)
        assert str(back.src) == KEYSERVER_INSIDE[0] and udp.src_port == KEYSERVER_INSIDE[1]
        kind, device, detail, _ = audits[0]  # type: ignore[misc]
        assert (kind, device) == ("handheld-session", b"handheld-7")
        assert "technician tina" in detail and "work order WO-1" in detail
        writer.close()
        await gw.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("who", "name", "device"),
    [
        ("rogue", "handheld-7", None),  # a certificate of another CA
        ("office", "headend", None),  # ours, but not a handheld's
        ("office", "handheld-8", "handheld-7"),  # a handheld claiming to be another
    ],
)
def test_the_channel_is_refused(
    office: Path, rogue: Path, who: str, name: str, device: str | None
) -> None:
    async def main() -> None:
        gw, at, audits = await _gateway(office)
        try:
            reader, writer, dec = await _connect(
                rogue if who == "rogue" else office, name, at, device
            )
            assert await _next(reader, dec) is None  # no welcome: hung up
            writer.close()
        except (ssl.SSLError, ConnectionError):
            pass  # refused at the handshake
        assert audits == [] and not gw.connections and gw.counters["forwarded"] == 0
        await gw.close()

    asyncio.run(main())


def test_a_revoked_handheld_is_cut_off_while_connected(tmp_path: Path, office: Path) -> None:
    lab = tmp_path / "lab"
    shutil.copytree(office, lab)

    async def main() -> float:
        gw, at, _ = await _gateway(lab)
        reader, writer, dec = await _connect(lab, "handheld-7", at)
        assert await _next(reader, dec) is not None
        t0 = time.monotonic()
        pki.revoke(lab, "handheld-7")
        assert await _next(reader, dec) is None  # the gateway hung up
        cut = time.monotonic() - t0
        assert gw.counters["cut-revoked"] == 1
        writer.close()
        await gw.close()
        return cut

    cut = asyncio.run(main())
    assert cut < 2.0, cut  # crl_poll 0.05 s here (0.2 s by default)


def test_packets_for_nothing_the_gateway_serves_are_counted_and_dropped(office: Path) -> None:
    async def main() -> None:
        gw, at, _ = await _gateway(office)
        reader, writer, dec = await _connect(office, "handheld-7", at)
        assert await _next(reader, dec) is not None
        elsewhere = ipaddress.IPv6Address("2001:db8::99")  # not a service inside the channel
        udp = UdpDatagram(49716, 716, b"x").encode(INNER, elsewhere)
        writer.write(frame(Ipv6Packet(INNER, elsewhere, 17, udp).encode()))
        writer.write(frame(b"\x60not an ipv6 packet"))
        writer.write(frame(_packet(b"PANA?")))  # not PANA: its claims cannot be checked
        writer.write(frame(_packet(PCI)))  # and the channel still serves
        assert await _next(reader, dec) is not None
        assert gw.counters["no-such-service"] == 1 and gw.counters["decode-error"] == 1
        assert gw.counters["scope-unreadable"] == 1
        assert gw.counters["forwarded"] == 1
        writer.write(b"\x00\x00")  # a zero-length frame: the stream is broken, hang up
        assert await _next(reader, dec) is None
        assert gw.counters["channel-error"] == 1
        writer.close()
        await gw.close()

    asyncio.run(main())


def _pan(*identities: bytes) -> bytes:
    eap = tuple(
        Avp(AvpCode.EAP_PAYLOAD, EapPacket.response(1, EapType.IDENTITY, i).encode())
        for i in identities
    )
    return PanaMessage(MessageType.AUTH, 0, 7, 1, eap).encode()


def _relayed(identity: bytes) -> bytes:
    return _packet(wrap_relay(("fe80::2", 716), _pan(identity)), port=716)


def test_relayed_pana_for_a_meter_outside_the_certificate_is_refused_counted_audited(
    office: Path,
) -> None:
    """handheld-7's certificate says `--meters 'field-meter-*'`: it cannot bring office-meter-9
    to the key server, nor authenticate its own PaC as a meter; what is in scope goes through,
    the handheld's PaC and relay from one UDP address, each answer back to its own port."""

    async def main() -> None:
        echo = Echo()
        gw, at, audits = await _gateway(office, echo)
        reader, writer, dec = await _connect(office, "handheld-7", at)
        assert await _next(reader, dec) is not None
        for _ in range(3):
            writer.write(frame(_relayed(b"office-meter-9")))
        writer.write(frame(_packet(_pan(b"field-meter-001"))))  # its own PaC posing as a meter
        writer.write(frame(_packet(_pan(b"handheld-7"))))  # its own PaC as itself
        writer.write(frame(_relayed(b"field-meter-001")))
        frames: list[bytes] = []
        while len(frames) < 2:
            frames += dec.feed(await asyncio.wait_for(reader.read(4096), 5.0))
        answers = [Ipv6Packet.decode(f) for f in frames]
        ports = sorted(UdpDatagram.decode(p).dst_port for p in answers)
        assert ports == [716, 49716]  # the PRY back to the relay, the PAN to the PaC
        relayed = wrap_relay(("fe80::2", 716), _pan(b"field-meter-001"))
        assert [m for m, _ in echo.seen] == [_pan(b"handheld-7"), relayed]
        assert len({a for _, a in echo.seen}) == 1  # one UDP address: the key server ties them
        assert gw.counters["refused-scope"] == 4 and gw.counters["forwarded"] == 2
        scope = [a for a in audits if a[0] == "handheld-scope"]  # type: ignore[index]
        assert len(scope) == 2  # once per identity, not per datagram
        assert all(a[1] == b"handheld-7" for a in scope)  # type: ignore[index]
        assert "office-meter-9" in scope[0][2] and "field-meter-*" in scope[0][2]  # type: ignore[index]
        writer.close()
        await gw.close()

    asyncio.run(main())
