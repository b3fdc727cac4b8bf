"""Drive an `EchonetNode` over UDP 3610: IPv4 and IPv6, unicast and multicast (224.0.23.0, ff02::1).

The node must know whether a request came by multicast (guideline §2.4: such requests are
answered after a random delay). asyncio's datagram transports do not expose the destination
address, so each family gets two sockets, both on port 3610:

- the *unicast* socket, bound to the interface address (or the wildcard), which is also the one
  every datagram is sent from (so answers and announcements leave from port 3610). On Linux it is
  opted out of multicast delivery (IP_MULTICAST_ALL / IPV6_MULTICAST_ALL = 0), so it only ever sees
  datagrams addressed to us. It is bound *without* SO_REUSEADDR, so the kernel refuses it when
  any socket already holds that address and port -- a second meter or a HEMS on the same host
  gets `AddressInUse` instead of silently sharing the port and losing the unicast answers to the
  first. Only once it is bound, and only when the node also listens to the group, is
  SO_REUSEADDR switched on: Linux checks the flag of both sockets when the *later* one binds,
  so the group socket below (and other local nodes' group sockets) may then share the port,
  while an exclusive bind of the same address still fails (a program that itself sets
  SO_REUSEADDR before binding could still join it; amistack's unicast sockets never do);
- the *multicast* socket, bound to the group address itself with SO_REUSEADDR (every ECHONET
  Lite node on the host may listen to the group) and joined to the group on the chosen
  interface: the kernel hands it only datagrams sent to the group, which the node is fed with
  `multicast=True`.

Requests are accepted from any source port; the node answers to port 3610 of the requester.
`EchonetDriver` is `runtime.udp.EngineDriver` (batching, timers, events, capture) plus these
sockets.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import sys
from typing import Any

from amistack.addr import Addr
from amistack.echonet.node import EL_PORT, MULTICAST_V4, MULTICAST_V6, EchonetNode
from amistack.runtime.udp import DEFAULT_RCVBUF, EngineDriver, _Endpoint

log = logging.getLogger(__name__)

__all__ = ["AddressInUse", "EchonetDriver", "multicast_socket", "peer_addr", "unicast_socket"]

# Linux socket options that Python's socket module may not name (linux/in.h, linux/in6.h).
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
_IPV6_MULTICAST_ALL = getattr(socket, "IPV6_MULTICAST_ALL", 29)
_LINUX = sys.platform.startswith("linux")


class AddressInUse(OSError):
    """The unicast address and port of a node is already bound (errno EADDRINUSE)."""

    def __init__(self, host: str, port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        super().__init__(
            errno.EADDRINUSE,
            f"UDP {shown}:{port} is already in use (another ECHONET Lite node on this host? "
            "give each its own address)",
        )
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return str(self.strerror)


def _ifindex(interface: str | None) -> int:
    return 0 if not interface else socket.if_nametoindex(interface)


def _base_socket(family: socket.AddressFamily, rcvbuf: int | None) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if rcvbuf:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            except OSError:  # capped by net.core.rmem_max; the default still works
                log.debug("could not enlarge the receive buffer to %d bytes", rcvbuf)
    except BaseException:
        sock.close()
        raise
    return sock


def unicast_socket(
    host: str,
    port: int = EL_PORT,
    interface: str | None = None,
    multicast_loop: bool = True,
    rcvbuf: int | None = DEFAULT_RCVBUF,
    group: bool = True,
) -> socket.socket:
    """The socket a node receives unicast on and sends everything from (multicasts leave on
    `interface`, hop limit 1: ECHONET Lite multicast stays on the link). Bound exclusively
    (`AddressInUse` when taken); `group`: the node will also bind a group socket on this port,
    so the port is opened to sharing once bound (module docstring)."""
    v6 = ":" in host
    sock = _base_socket(socket.AF_INET6 if v6 else socket.AF_INET, rcvbuf)
    try:
        index = _ifindex(interface)
        loop = 1 if multicast_loop else 0
        if v6:
            if _LINUX:
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MULTICAST_ALL, 0)
            if index:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, loop)
            _bind(sock, (host, port, 0, index if host.lower().startswith("fe80") else 0))
        else:
            if _LINUX:
                sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
            if index:  # struct ip_mreqn: group (unused here), local address, interface index
                mreqn = struct.pack("4s4si", bytes(4), bytes(4), index)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            elif host not in ("", "0.0.0.0"):
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(host))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, loop)
            _bind(sock, (host, port))
        if group:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def multicast_socket(
    group: str,
    port: int = EL_PORT,
    interface: str | None = None,
    rcvbuf: int | None = DEFAULT_RCVBUF,
) -> socket.socket:
    """A socket bound to `group` and joined to it on `interface` (None: the kernel's choice):
    it receives only datagrams sent to the group."""
    v6 = ":" in group
    sock = _base_socket(socket.AF_INET6 if v6 else socket.AF_INET, rcvbuf)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # one per node on the host
        index = _ifindex(interface)
        if v6:
            sock.bind((group, port, 0, index))
            mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        else:
            sock.bind((group, port))
            mreqn = struct.pack("4s4si", socket.inet_aton(group), bytes(4), index)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind(sock: socket.socket, addr: tuple[Any, ...]) -> None:
    try:
        sock.bind(addr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(str(addr[0]), int(addr[1])) from None
        raise


def peer_addr(addr: Any) -> Addr:
    """(host, port) of a sender; an IPv6 link-local host keeps its zone ("fe80::1%eth0") so that
    the answer can be sent back to it (B-route and home-LAN peers are often link-local only)."""
    host = str(addr[0])
    if len(addr) >= 4 and addr[3] and "%" not in host:
        try:
            host = f"{host}%{socket.if_indextoname(int(addr[3]))}"
        except OSError:
            host = f"{host}%{int(addr[3])}"
    return (host, int(addr[1]))


class _NodeEndpoint(_Endpoint):
    """A socket of an ECHONET Lite node: feeds the node, telling it whether the datagram came
    to a multicast group (guideline §2.4)."""

    multicast = False

    def datagram_received(self, data: bytes, addr: Any) -> None:
        d = self.driver
        peer = peer_addr(addr)
        if d._capture is not None:
            d._capture(data, peer, self.seen_as(peer))
        node: EchonetNode = d.engine
        try:
            node.receive_datagram(data, peer, d.now(), multicast=self.multicast)
        except Exception:  # an engine bug must not take the socket down with it
            d.counters["engine_error"] += 1
            log.exception("engine failed on a datagram from %s", peer)
        d.kick_soon()


class _MulticastEndpoint(_NodeEndpoint):
    multicast = True


class EchonetDriver(EngineDriver[EchonetNode]):
    """Runs an `EchonetNode` over UDP 3610 (see the module docstring). Typical use::

    driver = EchonetDriver(node, on_event=...)
    await driver.open(ipv4="0.0.0.0", ipv6="::", interface="eth0")
    node.start(driver.now()); driver.kick()
    """

    async def open(
        self,
        *,
        ipv4: str | None = "0.0.0.0",
        ipv6: str | None = None,
        interface: str | None = None,
        port: int = EL_PORT,
        multicast: bool = True,
        multicast_loop: bool = True,
    ) -> list[Addr]:
        """Open the unicast socket of each family asked for, and its multicast socket when
        `multicast`; returns the bound addresses. The node's `multicast_groups` should list the
        groups of the families opened (`MULTICAST_V4`, `MULTICAST_V6`)."""
        opened: list[Addr] = []
        for host, group in ((ipv4, MULTICAST_V4[0]), (ipv6, MULTICAST_V6[0])):
            if host is None:
                continue
            sock = unicast_socket(host, port, interface, multicast_loop, group=multicast)
            opened.append(await self.attach_unicast(sock))
            if multicast:
                opened.append(await self.attach_multicast(multicast_socket(group, port, interface)))
        return opened

    async def attach_unicast(self, sock: socket.socket) -> Addr:
        """Drive the node over a unicast socket; the first of each family is the one it sends
        from (answers, announcements)."""
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(lambda: _NodeEndpoint(self), sock=sock)
        self._endpoints.append(proto)
        if sock.family == socket.AF_INET6:
            self._v6 = self._v6 or proto
        else:
            self._v4 = self._v4 or proto
        return proto.local

    async def attach_multicast(self, sock: socket.socket) -> Addr:
        """Drive the node over a group-bound socket too (receive only; sends go out of the
        unicast sockets)."""
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(lambda: _MulticastEndpoint(self), sock=sock)
        self._endpoints.append(proto)
        return proto.local
