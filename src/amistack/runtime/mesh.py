"""A mesh node (`mesh.node.MeshNode`) on a real transport between processes.

The radio is a UDP socket per node (loopback, or any address) with a static neighbour table:
what a node transmits reaches every neighbour in the table, as a radio frame reaches every node
in range, and a datagram from an address that is not in the table was never heard (counted,
dropped). A line of nodes is a table per node naming only the nodes next to it. The 802.15.4
frames go as they are (without FCS: UDP has its own checksum), so whatever a node may do is up
to `MeshNode` and its link layer: addressing, acknowledgements, CCM*, 6LoWPAN, RPL, PANA relay.

Or the radio is made of network interfaces (`Links`, `multicast_radio_socket`): inside network
namespaces joined by veth links or bridges, each node sends every frame once per interface to
the link-local group ff02::114 (RFC 4727 §2.2: for experiments) on UDP `RADIO_PORT`, and hears
whoever is on its links -- the links, not a table, decide who hears whom.

`RadioEngine` adapts the node to `runtime.udp.EngineDriver` (which owns the socket, the loop's
clock and the timer): radio frames out to every neighbour, frames in from neighbours only,
the concentrator's WAN packets to `wan_out`, and an application engine (the meter's C12.22
`MeterNode`) on one UDP port of the node's global address (`MeshNode.send_udp` / `MeshNode.app`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from amistack.addr import Addr, Engine, Eui64
from amistack.mesh.node import MeshNode, MeshNodeEvent
from amistack.mesh.rpl.config import RplConfig
from amistack.mesh.security import FileCounterStore
from amistack.runtime.udp import EngineDriver, normalize_addr
from amistack.sim.mesh import MeshConfig

__all__ = [
    "RADIO_GROUP",
    "RADIO_PORT",
    "WAN",
    "Links",
    "RadioEngine",
    "counter_store",
    "eui_for",
    "mesh_rpl_config",
    "multicast_radio_socket",
    "open_radio",
]

WAN: Addr = ("wan", 0)  # the concentrator's WAN side as its MeshNode sees it (not a radio)
COUNTER_FILE = "mesh-frame-counters.json"
RADIO_GROUP = "ff02::114"  # link-local scope, the experimental group (RFC 4727 §2.2)
RADIO_PORT = 0xF0B1  # 61617: ours (in 6LoWPAN's compressible 0xF0Bx range, RFC 6282 §4.3.3)


@dataclass(frozen=True)
class Links:
    """A radio made of network interfaces (module docstring): a node on several links relays
    between them, as a node between two radio cells does."""

    interfaces: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.interfaces:
            raise ValueError("a radio of links needs at least one interface")


async def open_radio(driver: EngineDriver[RadioEngine], radio: Addr | Links) -> Addr:
    """Give `driver` its radio: a UDP socket at `radio` (host, port), or the multicast radio
    on the interfaces of `Links`; the bound address."""
    if isinstance(radio, Links):
        return await driver.attach(multicast_radio_socket(radio.interfaces))
    return await driver.bind(radio[0], radio[1])


def multicast_radio_socket(interfaces: Sequence[str], port: int = RADIO_PORT) -> socket.socket:
    """A radio on `interfaces`: a UDP socket on `port` that has joined `RADIO_GROUP` on each,
    sends to it with hop limit 1 and does not hear itself (the group's scope id picks the link
    a frame goes out on)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::", port))
        for interface in interfaces:
            index = socket.if_nametoindex(interface)
            group = socket.inet_pton(socket.AF_INET6, RADIO_GROUP) + index.to_bytes(4, "little")
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def eui_for(device_id: str) -> Eui64:
    """A stable, locally administered unicast EUI-64 for a device id (the U/L bit set, the
    group bit clear: IEEE 802 / RFC 4291 App. A), so a restarted node keeps its address and
    its neighbours' replay windows for it."""
    raw = bytearray(hashlib.sha256(b"amistack-mesh-eui64:" + device_id.encode()).digest()[:8])
    raw[0] = (raw[0] | 0x02) & ~0x01
    return Eui64(bytes(raw))


def mesh_rpl_config() -> RplConfig:
    """RPL as the simulated mesh runs it (sim/mesh.py: non-storing, MRHOF, Imin 2^10 ms,
    8 doublings, k = 3), each DAO describing its node's rank and parent-link ETX for the
    concentrator's topology report (`RplConfig.describe_targets`)."""
    return replace(MeshConfig().rpl, describe_targets=True)


def counter_store(data_dir: Path) -> FileCounterStore:
    """The node's frame counters, persisted ahead (mesh.security), in its data dir."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return FileCounterStore(data_dir / COUNTER_FILE)


class RadioEngine:
    """`node` behind a radio socket (module docstring). `neighbours`: the radios it hears and
    sends to, or `Links`: everyone on those links (`RADIO_GROUP`). `app`: an engine on UDP
    `app_port`."""

    def __init__(
        self,
        node: MeshNode,
        neighbours: Iterable[Addr] | Links,
        *,
        app: Engine | None = None,
        app_port: int = 0,
    ) -> None:
        self.node = node
        self.neighbours: frozenset[Addr] | None = None  # None: whoever is on the links
        if isinstance(neighbours, Links):
            # the group on each link: (host, port, flowinfo, scope id), as the socket layer
            # takes it (a "%IFACE" suffix in the host is not honoured by every event loop)
            self._send_to = tuple(
                cast(Addr, (RADIO_GROUP, RADIO_PORT, 0, socket.if_nametoindex(i)))
                for i in neighbours.interfaces
            )
        else:
            self.neighbours = frozenset(normalize_addr(a) for a in neighbours)
            self._send_to = tuple(self.neighbours)
        self.app = app
        self.app_port = app_port
        self.wan_out: list[bytes] = []
        self.counters: Counter[str] = Counter()
        self._events: deque[MeshNodeEvent | object] = deque()
        self._app_fed = False
        if app is not None:
            node.app = self._to_app

    def _to_app(self, src: bytes, src_port: int, dst_port: int, payload: bytes, now: float) -> None:
        """The node's UDP for its application (`MeshNode.app`)."""
        if self.app is None or dst_port != self.app_port:
            self.counters["app-wrong-port"] += 1
            return
        self.app.receive_datagram(payload, (str(ipaddress.IPv6Address(src)), src_port), now)
        self._app_fed = True

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if self.neighbours is not None and addr not in self.neighbours:
            self.counters["not-a-neighbour"] += 1
            return
        self.counters["frames-in"] += 1
        self.node.receive_datagram(data, addr, now)

    def receive_wan(self, packet: bytes, now: float) -> None:
        """The concentrator: an IPv6 packet from the WAN gateway."""
        self.node.receive_datagram(packet, WAN, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        node = self.node
        out: list[tuple[bytes, Addr]] = []
        busy = True
        while busy:  # an answer of the app may follow from what the node just delivered
            busy, self._app_fed = self._app_fed, False
            if self.app is not None:
                for data, (host, port) in self.app.datagrams_to_send(now):
                    try:
                        ip = ipaddress.IPv6Address(host).packed
                    except ValueError:
                        self.counters["app-not-ipv6"] += 1
                        continue
                    node.send_udp(ip, self.app_port, port, data, now)
                    busy = True
            for data, dst in node.datagrams_to_send(now):
                busy = True
                if dst == WAN:
                    self.wan_out.append(data)
                else:
                    out.extend((data, n) for n in self._send_to)
                    self.counters["frames-out"] += 1
            while (event := node.next_event()) is not None:
                self._events.append(event)
        return out

    def get_timer(self) -> float | None:
        times = [self.node.get_timer(), self.app.get_timer() if self.app is not None else None]
        return min((t for t in times if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        when = self.node.get_timer()
        if when is not None and when <= now:
            self.node.handle_timer(now)
        if self.app is not None:
            when = self.app.get_timer()
            if when is not None and when <= now:
                self.app.handle_timer(now)

    def next_event(self) -> object | None:
        if self._events:
            return self._events.popleft()
        if self.app is not None:
            return self.app.next_event()
        return None
