"""The smart-meter ECHONET Lite node over real UDP on port 3610 (loopback, unicast).

The node listens on 127.0.0.1:3610; the test controller sends from an ephemeral port of
127.0.0.2 (any source port is accepted) and listens on 127.0.0.2:3610, where every answer must
arrive (answers always go to port 3610 of the requester).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from tests.conftest import IN_CI

from amistack.crypto.rand import seeded_random
from amistack.echonet.events import PropertiesWritten
from amistack.echonet.frame import Eoj, Esv, Frame, Property
from amistack.echonet.node import MULTICAST_V4, MULTICAST_V6, NODE_PROFILE, EchonetNode, NodeConfig
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.meter.model import MeterModel
from amistack.runtime.echonet import EchonetDriver, multicast_socket
from amistack.runtime.loop import new_event_loop

CONTROLLER = Eoj(0x05, 0xFF, 0x01)
METER = Eoj(0x02, 0x88, 0x01)
NODE_HOST = "127.0.0.1"
HEMS_HOST = "127.0.0.2"

T = TypeVar("T")


def run(main: Callable[[], Awaitable[T]]) -> T:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def _bind_or_skip(sock: socket.socket, addr: tuple[str, int]) -> None:
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if IN_CI or exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        pytest.skip(f"cannot bind {addr[0]}:{addr[1]} for the test controller: {exc}")


class Controller:
    """A bare-socket HEMS: sends from an ephemeral port, reads answers on port 3610."""

    def __init__(self) -> None:
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.bind((HEMS_HOST, 0))
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _bind_or_skip(self.rx, (HEMS_HOST, 3610))
        self.rx.setblocking(False)

    async def ask(self, frame: Frame | bytes, expect: bool = True) -> Frame | None:
        loop = asyncio.get_running_loop()
        data = frame if isinstance(frame, bytes) else frame.encode()
        self.tx.sendto(data, (NODE_HOST, 3610))
        try:
            reply = await asyncio.wait_for(loop.sock_recv(self.rx, 2048), 0.5 if expect else 0.2)
        except TimeoutError:
            if expect:
                raise
            return None
        return Frame.decode(reply)

    def close(self) -> None:
        self.tx.close()
        self.rx.close()


def test_meter_node_served_over_udp_3610() -> None:
    async def main() -> None:
        meter = SmartMeterObject(MeterModel(1))
        node = EchonetNode(
            NodeProfile([]), [meter], seeded_random(3), NodeConfig(multicast_groups=())
        )
        written: list[PropertiesWritten] = []
        driver = EchonetDriver(
            node, on_event=lambda e: written.append(e) if isinstance(e, PropertiesWritten) else None
        )
        try:
            await driver.open(ipv4=NODE_HOST, multicast=False)
        except OSError as exc:
            driver.close()
            if IN_CI:
                raise
            pytest.skip(f"cannot bind UDP {NODE_HOST}:3610: {exc}")
        hems = Controller()
        try:
            r = await hems.ask(Frame(1, CONTROLLER, NODE_PROFILE, Esv.GET, (Property(0xD6),)))
            assert r is not None and r.esv == Esv.GET_RES and r.tid == 1
            assert r.props == (Property(0xD6, b"\x01" + METER.encode()),)

            get = (Property(0x80), Property(0xE7), Property(0xE0), Property(0xE1))
            r = await hems.ask(Frame(2, CONTROLLER, METER, Esv.GET, get))
            assert r is not None and r.esv == Esv.GET_RES and r.seoj == METER
            assert [len(p.edt) for p in r.props] == [1, 4, 4, 1]

            r = await hems.ask(Frame(3, CONTROLLER, METER, Esv.SETC, (Property(0xE5, b"\x01"),)))
            assert r is not None and r.esv == Esv.SET_RES and r.props == (Property(0xE5),)
            r = await hems.ask(Frame(4, CONTROLLER, METER, Esv.GET, (Property(0xE5),)))
            assert r is not None and r.props == (Property(0xE5, b"\x01"),)
            assert [w.props for w in written] == [(Property(0xE5, b"\x01"),)]

            r = await hems.ask(Frame(5, CONTROLLER, METER, Esv.SETC, (Property(0xE5, b"\xc8"),)))
            assert r is not None and r.esv == Esv.SETC_SNA  # §2.2: out of range (0..99)

            r = await hems.ask(Frame(6, CONTROLLER, METER, Esv.GET, (Property(0xAA),)))
            assert r is not None and r.esv == Esv.GET_SNA and r.props == (Property(0xAA),)

            r = await hems.ask(Frame(7, CONTROLLER, Eoj(1, 0x30, 1), Esv.GET, (Property(0x80),)))
            assert r is not None and r.esv == Esv.GET_SNA and r.seoj == Eoj(1, 0x30, 1)

            # a truncated frame is dropped and counted; the node keeps serving
            assert await hems.ask(b"\x10\x81\x00\x08\x05\xff\x01\x02\x88", expect=False) is None
            assert node.counters["malformed"] == 1
            r = await hems.ask(
                Frame(
                    9, CONTROLLER, METER, Esv.SETGET, (Property(0xE5, b"\x02"),), (Property(0xE5),)
                )
            )
            assert r is not None and r.esv == Esv.SETGET_RES
            assert r.props_get == (Property(0xE5, b"\x02"),)
        finally:
            hems.close()
            driver.close()

    run(main)


def _multicast_interface() -> tuple[str, str] | None:
    """(name, IPv4 address) of an up, multicast-capable, non-loopback interface, if any."""
    import fcntl

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            req = struct.pack("16sH14s", name.encode()[:15], 0, bytes(14))
            try:
                flags = struct.unpack("16sH", fcntl.ioctl(probe, 0x8913, req)[:18])[
                    1
                ]  # SIOCGIFFLAGS
                addr = fcntl.ioctl(probe, 0x8915, req)  # SIOCGIFADDR
            except OSError:
                continue
            up, loopback, multicast = flags & 0x1, flags & 0x8, flags & 0x1000
            if up and multicast and not loopback:
                return name, socket.inet_ntoa(addr[20:24])
    finally:
        probe.close()
    return None


def _link_local_v6(ifname: str) -> str | None:
    """The interface's IPv6 link-local address (/proc/net/if_inet6, scope 0x20), if any."""
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hexaddr, _, _, scope, _, name = line.split()
        if name == ifname and scope == "20":
            return socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hexaddr))
    return None


@pytest.mark.parametrize("family", ["ipv4", "ipv6-link-local"])
def test_multicast_get_answered_unicast_after_delay_and_startup_inf(family: str) -> None:
    """§2.4 and §4.2 on a real interface: the startup INF of D5 reaches the group; a multicast Get
    is seen once (on the group socket) and answered unicast to port 3610 of the requester --
    for IPv6 a link-local requester, answered with its zone."""
    found = _multicast_interface()
    if found is None:
        if IN_CI:
            pytest.fail("no multicast-capable interface for the ECHONET Lite multicast scenario")
        pytest.skip("no multicast-capable, non-loopback interface here")
    ifname, host4 = found
    index = socket.if_nametoindex(ifname)
    v6 = family.startswith("ipv6")
    host = _link_local_v6(ifname) if v6 else host4
    if host is None:
        pytest.skip(f"{ifname} has no IPv6 link-local address")
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    group = MULTICAST_V6[0] if v6 else MULTICAST_V4[0]
    local: tuple[str, int] | tuple[str, int, int, int] = (
        (host, 3610, 0, index) if v6 else (host, 3610)
    )

    async def main() -> None:
        meter = SmartMeterObject(MeterModel(1))
        groups = (MULTICAST_V6,) if v6 else (MULTICAST_V4,)
        config = NodeConfig(multicast_groups=groups, multicast_reply_delay=0.3, startup_delay=0.2)
        node = EchonetNode(NodeProfile([]), [meter], seeded_random(5), config)
        driver = EchonetDriver(node)
        try:
            # wildcard unicast socket: the controller's specific bind below takes its answers
            if v6:
                await driver.open(ipv4=None, ipv6="::", interface=ifname)
            else:
                await driver.open(ipv4="0.0.0.0", interface=ifname)
        except OSError as exc:
            driver.close()
            if IN_CI:
                raise
            pytest.skip(f"cannot open UDP 3610 with multicast on {ifname}: {exc}")
        loop = asyncio.get_running_loop()
        rx = socket.socket(fam, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6:
            rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        _bind_or_skip(rx, local)
        rx.setblocking(False)
        mrx = multicast_socket(group, 3610, ifname)
        tx = socket.socket(fam, socket.SOCK_DGRAM)
        if v6:
            tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            tx.bind((host, 0, 0, index))
        else:
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(host))
            tx.bind((host, 0))
        try:
            node.start(driver.now())
            driver.kick()
            inf = Frame.decode(await asyncio.wait_for(loop.sock_recv(mrx, 2048), 2.0))
            assert inf.esv == Esv.INF and inf.seoj == inf.deoj == NODE_PROFILE
            assert inf.props == (Property(0xD5, b"\x01" + METER.encode()),)

            get = Frame(5, CONTROLLER, Eoj(0x0E, 0xF0, 0x00), Esv.GET, (Property(0xD6),))
            sent = loop.time()
            tx.sendto(get.encode(), (group, 3610, 0, index) if v6 else (group, 3610))
            r = Frame.decode(await asyncio.wait_for(loop.sock_recv(rx, 2048), 2.0))
            assert loop.time() - sent < 0.3 + 0.2  # within the configured bound (+ slack)
            assert r.esv == Esv.GET_RES and r.tid == 5
            assert r.props == (Property(0xD6, b"\x01" + METER.encode()),)
            assert node.counters["rx_request"] == 1  # seen once, on the group socket only
            assert node.counters["own_multicast"] == 1  # our INF looped back, dropped
        finally:
            for s in (rx, mrx, tx):
                s.close()
            driver.close()

    run(main)
