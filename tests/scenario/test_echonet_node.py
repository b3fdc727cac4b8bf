"""The smart-meter ECHONET Lite node over real UDP on port 3610 (loopback, unicast).

The node listens on 127.0.0.1:3610; the test controller sends from an ephemeral port of
127.0.0.2 (any source port is accepted) and listens on 127.0.0.2:3610, where every answer must
arrive (answers always go to port 3610 of the requester).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from tests.conftest import IN_CI

from amistack.crypto.rand import seeded_random
from amistack.echonet.events import PropertiesWritten
from amistack.echonet.frame import Eoj, Esv, Frame, Property
from amistack.echonet.node import NODE_PROFILE, EchonetNode, NodeConfig
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.meter.model import MeterModel
from amistack.runtime.echonet import EchonetDriver
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
