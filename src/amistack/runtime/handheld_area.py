"""The isolated area as a process of its own: the meters of `sim.handheld_area` on a virtual clock
advanced with the loop's, and the handheld's radio carried over loopback UDP (a stand-in for a
radio driver), so that the handheld's process holds nothing of the meters.

A radio datagram is the 16-octet IPv6 address of the other end's radio address (its link-local
address, or ff02::1 for a broadcast frame) followed by the 802.15.4 frame. The area answers the
last address a handheld radio datagram came from; frames from the handheld are put on the
simulated radio at the handheld's position, frames the radio delivers there go to the handheld.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from typing import cast

from amistack.addr import Addr, TimerlessEngine
from amistack.runtime.handheld_gateway import HEADEND_INSIDE, KEYSERVER_INSIDE
from amistack.sim.handheld_area import AreaConfig, build_area

__all__ = ["RadioPort", "decode_radio", "encode_radio", "run_area"]

log = logging.getLogger(__name__)

TICK = 0.02  # s: the longest the area's virtual clock lags the loop's
_HEADER = 16


def encode_radio(addr: Addr, frame: bytes) -> bytes:
    return ipaddress.IPv6Address(addr[0].split("%", 1)[0]).packed + frame


def decode_radio(data: bytes) -> tuple[Addr, bytes] | None:
    """(radio address, frame), or None for a datagram too short to carry both."""
    if len(data) <= _HEADER:
        return None
    return (str(ipaddress.IPv6Address(data[:_HEADER])), 0), data[_HEADER:]


class RadioPort(TimerlessEngine):
    """The area's node at the handheld's radio address: what the radio delivers there goes to
    `send(source radio address, frame)`."""

    def __init__(self, send: Callable[[Addr, bytes], None]) -> None:
        self._send = send

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        self._send(addr, data)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return []


class _Radio(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Addr], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's too

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.on_datagram(data, addr)


async def run_area(
    config: AreaConfig, listen: Addr, stop: asyncio.Event, ready: Callable[[Addr], None]
) -> None:
    """Run the area until `stop` (meters with C12.22 push to the head-end when
    `config.headend_title` is set)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    wake = asyncio.Event()
    peer: list[Addr] = []
    radio = _Radio(lambda data, addr: None)
    transport, _ = await loop.create_datagram_endpoint(lambda: radio, local_addr=listen)
    port = RadioPort(lambda src, frame: transport.sendto(encode_radio(src, frame), peer[0])
                     if peer else None)  # fmt: skip
    headend = HEADEND_INSIDE if config.headend_title is not None else None
    area = build_area(config, RadioPort(lambda src, frame: None), KEYSERVER_INSIDE, 0.0, headend)
    area.net.add_node(area.handheld_addr, port)

    def from_handheld(data: bytes, addr: Addr) -> None:
        got = decode_radio(data)
        if got is None:
            return
        peer[:] = [addr]
        dst, frame = got
        area.net.run_until(loop.time() - t0)
        area.net.inject(area.handheld_addr, dst, frame)
        wake.set()

    radio.on_datagram = from_handheld
    bound = transport.get_extra_info("sockname")
    ready((bound[0], bound[1]))
    try:
        while not stop.is_set():
            area.net.run_until(loop.time() - t0)
            nxt = area.net.clock.next_time()
            delay = TICK if nxt is None else min(TICK, max(0.0, nxt - (loop.time() - t0)))
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)
    finally:
        transport.close()
