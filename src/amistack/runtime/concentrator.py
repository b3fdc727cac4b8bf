"""The concentrator as a process: DODAG root, PANA relay and border router of a mesh whose
radio is `runtime.mesh` (a UDP socket per node with a neighbour table, or `Links`: network
interfaces with a multicast group), in front of the real
key server and head-end on the WAN.

- Its own link keys: the concentrator is a device of the key server like a meter. It
  authenticates directly over the WAN (`runtime.meter.run_meter`: PANA + EAP-PSK) and takes the
  PAN's group keys from its PANA success, and again from every rotation push; only then does
  it start the DODAG (`MeshNode.concentrator`, `update_group_keys` afterwards).
- The WAN: what the mesh sends outside its prefix leaves through `mesh.gateway.UdpGateway` (one UDP
  socket per meter flow, to the key server or the head-end only; an IPv4 one is 64:ff9b::/96
  inside the mesh), and the answers come back as IPv6 packets into the DODAG. The key server
  therefore sees every relaying meter from this host (`amistack keyserver --relay HOST`).
- The border's policy (`mesh.gateway.BorderPolicy`): packets leave only from the root's own
  address or a DAO target of its DODAG, at most a few flows per meter, PANA to the key server
  only as PRYs with the relayed PCIs limited per relaying meter (so the key server's own
  per-relay limit, which counts this host, is no longer shared by one flooding meter and the
  rest of the mesh).
- With `c1222_relay` (HOST, PORT) the concentrator is a C12.22 relay on the WAN: the head-end
  sends a request for any meshed meter there, and it goes to the meter whose ApTitle it calls
  (`UdpGateway.relay_in`: bindings learned from the meters' C12.22 Registration, bound once
  the head-end, the master relay, granted it; a segmented request is reassembled to read
  its title and relayed in segments); the meter answers from its own flow.
- Frame counters are persisted ahead in DATA_DIR (`runtime.mesh.counter_store`).
- Its DODAG, reported: with a `TopologyReporter`, every `interval` seconds the root's view of
  the DODAG (`dodag_report`: each node's EUI-64, address, parent from its DAO, hops, the
  root's ETX to its children, and the meter id and PANA state of each node whose join the
  gateway watched, `mesh.gateway.JoinWatch`) is POSTed to the head-end's
  `/concentrators/{id}/topology` with a bearer token whose user has the `topology_report`
  right (docs/mesh.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amistack.addr import Addr, Eui64, PanId
from amistack.crypto import RandomSource, system_random
from amistack.mesh.gateway import BorderPolicy, Flow, JoinWatch, UdpGateway, mesh_side
from amistack.mesh.link import MeshLink
from amistack.mesh.node import MeshNode
from amistack.mesh.rpl.config import RplConfig
from amistack.mesh.rpl.constants import ETX_DIVISOR, Mop
from amistack.mesh.rpl.messages import PrefixInformation
from amistack.mesh.rpl.node import RplNode, described
from amistack.mesh.rpl.packet import LINK_LOCAL_PREFIX
from amistack.mesh.security import LinkSecurity
from amistack.runtime.mesh import (
    WAN,
    Links,
    RadioEngine,
    counter_store,
    eui_for,
    mesh_rpl_config,
    open_radio,
)
from amistack.runtime.meter import run_meter
from amistack.runtime.udp import EngineDriver, is_ipv6, make_udp_socket, normalize_addr

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConcentratorReady:
    """The DODAG is up: the concentrator sends DIOs and relays."""

    eui: Eui64
    pan: int
    prefix: ipaddress.IPv6Network
    radio: Addr
    engine: RadioEngine  # the node and its counters (tests, status)
    c1222_relay: Addr | None = None  # where the head-end reaches the meters (bound)


REPORT_TIMEOUT_S = 10.0  # one topology POST to the head-end


def dodag_report(
    rpl: RplNode, now: float, joined: Mapping[Eui64, str] | None = None
) -> list[dict[str, Any]]:
    """The DODAG as its root knows it, as the head-end's topology report takes it (sans-IO):
    the root, then every target with a live DAO route. Non-storing mode (RFC 6550 §9.7): a
    route's `via` is the target's parent, so the parent and the hop count are known; the
    root's own ETX estimate (RFC 6551 §4.3.2, x 128) is given for its direct children. A node
    whose DAO carried a Target Descriptor (`RplConfig.describe_targets`: the process mesh's)
    gave its rank and its own ETX to its parent, as of that DAO. `joined`: the device id of
    each node whose PANA join the gateway saw succeed (`JoinWatch.joined`): its `meter_id`,
    and `authenticated`."""
    own = rpl.global_address
    assert own is not None  # a root has its prefix address
    root = Eui64.from_interface_id(own[8:])
    nodes: list[dict[str, Any]] = [
        {
            "eui64": str(root),
            "role": "concentrator",
            "address": str(ipaddress.IPv6Address(own)),
            "rank": rpl.rank,
            "hops": 0,
            "joined": True,
            "authenticated": True,
        }
    ]
    non_storing = rpl.config.mop == Mop.NON_STORING
    for target, route in sorted(rpl.routes.items()):
        if route.expires is not None and route.expires <= now:
            continue
        eui = Eui64.from_interface_id(target[8:])
        node: dict[str, Any] = {
            "eui64": str(eui),
            "address": str(ipaddress.IPv6Address(target)),
            "joined": True,
        }
        device = None if joined is None else joined.get(eui)
        if device is not None:
            node.update(meter_id=device, authenticated=True)
        if non_storing:
            node["parent"] = str(Eui64.from_interface_id(route.via[8:]))
            path = rpl.source_route(target, now)
            if path is not None:
                node["hops"] = len(path)
            if route.descriptor is not None:  # what the node said of itself in its DAO
                rank, etx = described(route.descriptor)
                node.update(rank=rank, etx=round(etx / ETX_DIVISOR, 2))
            elif route.via == own:
                link_local = LINK_LOCAL_PREFIX + target[8:]
                if rpl.links.known(link_local):
                    node["etx"] = round(rpl.links.etx(link_local) / ETX_DIVISOR, 2)
        nodes.append(node)
    return nodes


@dataclass(frozen=True)
class TopologyReporter:
    """Where and how often the concentrator reports its DODAG (module docstring)."""

    url: str  # the head-end's REST base, e.g. https://headend:8443
    token: str  # bearer token of a user whose role has `topology_report`
    interval: float = 60.0

    def endpoint(self, device_id: str) -> str:
        from urllib.parse import quote

        return f"{self.url.rstrip('/')}/concentrators/{quote(device_id, safe='')}/topology"

    def post(self, device_id: str, nodes: list[dict[str, Any]]) -> int:
        """POST the report (blocking: run it in a thread); the HTTP status."""
        request = urllib.request.Request(
            self.endpoint(device_id),
            data=json.dumps({"nodes": nodes}).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=REPORT_TIMEOUT_S) as answer:
                status: int = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        return status


async def _report_loop(
    reporter: TopologyReporter, device_id: str, rpl: RplNode, now: Callable[[], float],
    stop: asyncio.Event, joined: Mapping[Eui64, str],
) -> None:  # fmt: skip
    """Report the DODAG every `reporter.interval` s until `stop`; a failed POST is logged and
    the next interval tries again."""
    while not stop.is_set():
        nodes = dodag_report(rpl, now(), joined)
        try:
            status = await asyncio.to_thread(reporter.post, device_id, nodes)
        except OSError as exc:
            log.warning("topology report to %s failed: %s", reporter.url, exc)
        else:
            if status != 200:
                log.warning("topology report to %s refused: HTTP %d", reporter.url, status)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), reporter.interval)


class _WanSockets:
    """The gateway's UDP sockets, one per meter flow, read by the loop's reader callbacks."""

    def __init__(
        self,
        gateway: UdpGateway,
        deliver: Callable[[bytes], None],
        loop: asyncio.AbstractEventLoop,
        now: Callable[[], float],
        watch: JoinWatch | None = None,
    ) -> None:
        self.gateway = gateway
        self.watch = watch  # the topology report's meter ids (mesh.gateway.JoinWatch)
        self._deliver = deliver
        self._loop = loop
        self._now = now
        self._socks: dict[Flow, socket.socket] = {}
        self._relay: socket.socket | None = None

    def open_relay(self, host: str, port: int) -> Addr:
        """The C12.22 relay socket the head-end addresses the meters at; its bound address."""
        sock = make_udp_socket(host, port, None)
        self._relay = sock
        self._loop.add_reader(sock.fileno(), self._relay_readable, sock)
        name = sock.getsockname()
        return (str(name[0]), int(name[1]))

    def _relay_readable(self, sock: socket.socket) -> None:
        while True:
            try:
                data, src = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.gateway.counters["wan-socket-error"] += 1
                return
            for packet in self.gateway.relay_in(data, normalize_addr(src), self._now()):
                self._deliver(packet)

    def send(self, packets: Iterable[bytes]) -> None:
        for packet in packets:
            out = self.gateway.outbound(packet, self._now())
            if out is None:
                continue
            if self.watch is not None:
                self.watch.outbound(out)
            sock = self._socks.get(out.flow)
            if sock is None:
                sock = make_udp_socket("::" if is_ipv6(out.dst[0]) else "0.0.0.0", 0, None)
                self._socks[out.flow] = sock
                self._loop.add_reader(sock.fileno(), self._readable, out.flow, sock)
            try:
                sock.sendto(out.payload, out.dst)
            except OSError as exc:
                self.gateway.counters["wan-send-error"] += 1
                log.debug("WAN send to %s: %s", out.dst, exc)
        for flow in self.gateway.evicted:
            self._close(flow)
        self.gateway.evicted.clear()

    def _readable(self, flow: Flow, sock: socket.socket) -> None:
        while True:
            try:
                data, src = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP unreachable and friends: PANA/C12.22 retransmit
                self.gateway.counters["wan-socket-error"] += 1
                return
            if self.watch is not None:
                self.watch.inbound(data, normalize_addr(src))
            packet = self.gateway.inbound(flow, data, normalize_addr(src), self._now())
            if packet is not None:
                self._deliver(packet)

    def _close(self, flow: Flow) -> None:
        sock = self._socks.pop(flow, None)
        if sock is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    def close(self) -> None:
        for flow in list(self._socks):
            self._close(flow)
        if self._relay is not None:
            self._loop.remove_reader(self._relay.fileno())
            self._relay.close()
            self._relay = None


async def run_concentrator(
    device_id: str,
    psk: Any,
    keyserver: Addr,
    headend: Addr | None,
    *,
    radio: Addr | Links,
    neighbours: Iterable[Addr] = (),
    data_dir: Path,
    pan: int,
    prefix: ipaddress.IPv6Network,
    rpl_config: RplConfig | None = None,
    rng: RandomSource = system_random,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[ConcentratorReady], None] | None = None,
    on_event: Callable[[object], None] | None = None,
    reporter: TopologyReporter | None = None,
    c1222_relay: Addr | None = None,
    policy: BorderPolicy | None = None,
) -> None:
    """Run the concentrator until `stop` is set (module docstring). `c1222_relay`: the
    (host, port) of its C12.22 relay socket; `policy`: the border's limits."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    keys_seen: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    access = asyncio.ensure_future(
        run_meter(device_id, psk, keyserver, stop=stop, on_group_keys=keys_seen.put_nowait)
    )
    try:
        first = await _first(keys_seen, stop, access)
        if first is None:
            return
        eui = eui_for(device_id)
        link = MeshLink(LinkSecurity(eui, counter_store(data_dir)), PanId(pan), rng)
        rpl = RplNode(
            LINK_LOCAL_PREFIX + eui.interface_id(),
            rpl_config or mesh_rpl_config(),
            rng,
            root_prefix=PrefixInformation(prefix.network_address.packed, prefix.prefixlen),
        )
        paa = (mesh_side(keyserver[0]), keyserver[1])
        peers = [keyserver] if headend is None else [keyserver, headend]
        engine: RadioEngine | None = None
        sockets: _WanSockets | None = None

        def flushed() -> None:
            if engine is not None and sockets is not None and engine.wan_out:
                sockets.send(engine.wan_out)
                engine.wan_out.clear()

        node = MeshNode.concentrator(link, rpl, paa, rng, WAN, first, loop.time())
        engine = RadioEngine(node, radio if isinstance(radio, Links) else neighbours)
        async with EngineDriver(engine, on_event=on_event, on_flush=flushed) as driver:

            def from_wan(packet: bytes) -> None:
                assert engine is not None
                engine.receive_wan(packet, driver.now())
                driver.kick_soon()

            def known_source(ip: bytes) -> bool:  # the root itself, or a DAO target
                return ip == rpl.global_address or ip in rpl.routes

            watch = None if reporter is None else JoinWatch(keyserver)
            gateway = UdpGateway(peers, paa=keyserver, policy=policy, known_source=known_source)
            sockets = _WanSockets(gateway, from_wan, loop, driver.now, watch)
            try:
                bound = await open_radio(driver, radio)
                relay_at = None if c1222_relay is None else sockets.open_relay(*c1222_relay)
                node.start(driver.now())
                driver.kick()
                if on_ready is not None:
                    on_ready(ConcentratorReady(eui, pan, prefix, bound, engine, relay_at))
                reports = (
                    None
                    if reporter is None
                    else asyncio.ensure_future(
                        _report_loop(
                            reporter,
                            device_id,
                            rpl,
                            driver.now,
                            stop,
                            {} if watch is None else watch.joined,
                        )
                    )
                )
                while not stop.is_set():
                    keys = await _first(keys_seen, stop, access)
                    if keys is not None:  # a rotation push: the DODAG's keys change
                        node.update_group_keys(keys, driver.now())
                        driver.kick()
                if reports is not None:
                    await reports
            finally:
                sockets.close()
                log.info(
                    "concentrator %s: counters %s",
                    eui,
                    dict(node.counters + engine.counters + sockets.gateway.counters),
                )
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await access


async def _first(
    queue: asyncio.Queue[tuple[Any, ...]], stop: asyncio.Event, access: asyncio.Future[Any]
) -> tuple[Any, ...] | None:
    """The next group keys from the access task; None once `stop` is set or access ended."""
    get = asyncio.ensure_future(queue.get())
    halt = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({get, halt, access}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        halt.cancel()
        if not get.done():
            get.cancel()
    if get in done:
        keys: tuple[Any, ...] = get.result()
        return keys if keys else None
    return None


__all__ = ["ConcentratorReady", "TopologyReporter", "dodag_report", "run_concentrator"]
