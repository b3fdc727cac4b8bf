"""ECHONET Lite multicast for real, between two network namespaces joined by a veth pair.

Multicast must never leave the machine, so every case here runs in two network namespaces the
test creates (unique names with a random suffix, deleted afterwards) and links with a veth pair:

    netns A (the meter)                          netns B (a HEMS / a listener)
    va<sfx>: 192.0.2.1/24, fe80::a/64  <-veth->  vb<sfx>: 192.0.2.2/24, fe80::b/64

(192.0.2.0/24 is TEST-NET-1: it exists only on this veth link.) Our meter -- `EchonetNode` with a
node profile and a `SmartMeterObject`, on `EchonetDriver`, IPv4 and IPv6 link-local, interface
va<sfx> chosen explicitly -- runs its own event loop in a thread that has entered netns A with
setns(2), so every socket call it makes (binding, if_nametoindex/if_indextoname for link-local
zones) happens inside A. The test's sockets in B are created by a short-lived thread that entered
B; a socket stays in the namespace it was created in, so the test then uses it from the main
thread. Cases:

- the startup INF of D5 (§4.2) reaches a listener of 224.0.23.0 and one of ff02::1 in B, from port
  3610 of the meter's addresses;
- a multicast Get of D6 to 0EF001 (IPv4 and IPv6) is answered unicast, to port 3610 of the
  requester (it asked from an ephemeral port), each answer after this node's random delay
  (§2.4): the delays are those of a twin node with the same seed on virtual time;
- IPv6 link-local unicast: a Get to fe80::a from B is answered to [fe80::b]:3610 on the right
  link (the requester's zone is kept).
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from tests.netns import (
    A4,
    A6,
    B4,
    B6,
    MeterInNetns,
    NetnsPair,
    in_netns,
    make_netns_pair,
    meter_node,
)

from amistack.echonet.frame import Eoj, Esv, Frame, Property
from amistack.echonet.node import (
    MULTICAST_V4,
    MULTICAST_V6,
    NODE_PROFILE,
    NodeConfig,
)
from amistack.runtime.echonet import multicast_socket

T = TypeVar("T")

CONTROLLER = Eoj(0x05, 0xFF, 0x01)
METER = Eoj(0x02, 0x88, 0x01)
SEED = 23
CONFIG = NodeConfig(
    multicast_groups=(MULTICAST_V4, MULTICAST_V6),
    multicast_reply_delay=0.6,
    startup_delay=0.2,
)


# -- network namespaces ----------------------------------------------------------------------


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    yield from make_netns_pair("amiel")


# -- the meter, inside netns A ---------------------------------------------------------------


# -- the test side's sockets, inside netns B -------------------------------------------------


def _recv(sock: socket.socket, timeout: float) -> tuple[bytes, Any, float] | None:
    """One datagram (data, source, time.monotonic() of arrival) or None after `timeout` s."""
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return None
    data, addr = sock.recvfrom(2048)
    return data, addr, time.monotonic()


def _udp(family: socket.AddressFamily, bind: Any, reuse: bool = False) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(bind)
    sock.setblocking(False)
    return sock


@dataclass
class HemsSockets:
    """B's sockets: answers arrive on port 3610 (rx*), requests leave from ephemeral ports (tx*)."""

    rx4: socket.socket
    tx4: socket.socket
    rx6: socket.socket
    tx6: socket.socket

    def close(self) -> None:
        for s in (self.rx4, self.tx4, self.rx6, self.tx6):
            s.close()


def hems_sockets(pair: NetnsPair) -> HemsSockets:
    def make() -> HemsSockets:
        idx = pair.index_b
        tx4 = _udp(socket.AF_INET, (B4, 0))
        mreqn = struct.pack("4s4si", bytes(4), bytes(4), idx)
        tx4.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        tx4.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        tx6 = _udp(socket.AF_INET6, (B6, 0, 0, idx))
        tx6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
        tx6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        return HemsSockets(
            _udp(socket.AF_INET, (B4, 3610), reuse=True),
            tx4,
            _udp(socket.AF_INET6, (B6, 3610, 0, idx), reuse=True),
            tx6,
        )

    return in_netns(pair.ns_b, make)


def twin_reply_delays(requests: list[bytes], src: tuple[str, int]) -> list[float]:
    """The §2.4 delays our meter draws for `requests` multicast at once, right after start:
    a twin node with the same seed and config, on virtual time."""
    twin = meter_node(SEED, CONFIG)
    twin.start(0.0)
    for data in requests:
        twin.receive_datagram(data, src, 0.0, multicast=True)
    delays: list[float] = []
    while (at := twin.get_timer()) is not None and len(delays) < len(requests):
        twin.handle_timer(at)
        delays += [at for _, dest in twin.datagrams_to_send(at) if dest == (src[0], 3610)]
    return delays


# -- the cases -------------------------------------------------------------------------------


def _instances_inf(data: bytes) -> None:
    frame = Frame.decode(data)
    assert (frame.seoj, frame.deoj, frame.esv) == (NODE_PROFILE, NODE_PROFILE, Esv.INF)
    assert frame.props == (Property(0xD5, b"\x01" + METER.encode()),)


def _recv_d5(sock: socket.socket, timeout: float) -> tuple[bytes, Any, float] | None:
    """The first D5 INF on a group socket (a smart meter also announces EA/EB every 30 min,
    which may fall inside the test)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        got = _recv(sock, left)
        if got is None:
            return None
        if any(p.epc == 0xD5 for p in Frame.decode(got[0]).props):
            return got
    return None


def test_startup_inf_reaches_both_groups_in_the_other_namespace(netns_pair: NetnsPair) -> None:
    pair = netns_pair

    def listeners() -> tuple[socket.socket, socket.socket]:
        v4 = multicast_socket(MULTICAST_V4[0], 3610, pair.if_b)
        v6 = multicast_socket(MULTICAST_V6[0], 3610, pair.if_b)
        return v4, v6

    g4, g6 = in_netns(pair.ns_b, listeners)
    try:
        with MeterInNetns(pair.ns_a, pair.if_a, meter_node(SEED, CONFIG)) as meter:
            got4 = _recv_d5(g4, 3.0)
            got6 = _recv_d5(g6, 3.0)
            assert got4 is not None, "no startup INF on 224.0.23.0"
            assert got6 is not None, "no startup INF on ff02::1"
            _instances_inf(got4[0])
            _instances_inf(got6[0])
            assert got4[1] == (A4, 3610)
            assert got6[1][:2] == (A6, 3610) and got6[1][3] == pair.index_b
            # §4.2: after a random delay, within the configured bound
            assert got4[2] - meter.started_at < CONFIG.startup_delay + 0.3
            assert meter.node.counters["startup_inf"] == 1
    finally:
        g4.close()
        g6.close()


def test_multicast_get_answered_unicast_to_3610_after_the_random_delay(
    netns_pair: NetnsPair,
) -> None:
    pair = netns_pair
    hems = hems_sockets(pair)
    requests = [
        Frame(0x0A00 + i, CONTROLLER, NODE_PROFILE, Esv.GET, (Property(0xD6),)).encode()
        for i in range(3)
    ]
    expected = twin_reply_delays(requests, (B4, 40000))
    assert len(expected) == 3 and len(set(expected)) == 3
    try:
        with MeterInNetns(pair.ns_a, pair.if_a, meter_node(SEED, CONFIG)) as meter:
            sent = time.monotonic()
            for data in requests:
                hems.tx4.sendto(data, (MULTICAST_V4[0], 3610))
            answers = {}
            while len(answers) < 3 and (got := _recv(hems.rx4, 2.0)) is not None:
                frame = Frame.decode(got[0])
                assert got[1] == (A4, 3610)  # unicast, from the meter's port 3610
                assert frame.esv == Esv.GET_RES and frame.seoj == NODE_PROFILE
                assert frame.props == (Property(0xD6, b"\x01" + METER.encode()),)
                answers[frame.tid] = got[2] - sent
            assert sorted(answers) == [0x0A00, 0x0A01, 0x0A02]
            # the ephemeral port the requests left from gets nothing
            assert _recv(hems.tx4, 0.05) is None
            for i, delay in enumerate(expected):
                measured = answers[0x0A00 + i]
                assert delay - 0.03 <= measured <= delay + 0.35, (i, delay, measured)
            assert max(expected) < CONFIG.multicast_reply_delay
            assert meter.node.counters["tx_sna"] == 0
    finally:
        hems.close()


def test_ipv6_link_local_multicast_and_unicast_on_the_chosen_interface(
    netns_pair: NetnsPair,
) -> None:
    pair = netns_pair
    hems = hems_sockets(pair)
    idx = pair.index_b
    try:
        with MeterInNetns(pair.ns_a, pair.if_a, meter_node(SEED, CONFIG)):
            # multicast Get of D6 to ff02::1 on B's link: answered unicast to [fe80::b]:3610
            req = Frame(0x0B01, CONTROLLER, NODE_PROFILE, Esv.GET, (Property(0xD6),))
            sent = time.monotonic()
            hems.tx6.sendto(req.encode(), (MULTICAST_V6[0], 3610, 0, idx))
            got = _recv(hems.rx6, 2.0)
            assert got is not None, "no answer to the IPv6 multicast Get"
            assert got[1][:2] == (A6, 3610) and got[1][3] == idx
            frame = Frame.decode(got[0])
            assert frame.tid == 0x0B01 and frame.esv == Esv.GET_RES
            assert got[2] - sent < CONFIG.multicast_reply_delay + 0.35

            # unicast Get of E7/E0 to the meter's link-local address, from an ephemeral port:
            # answered at once, to port 3610 of the requester's link-local address
            req = Frame(0x0B02, CONTROLLER, METER, Esv.GET, (Property(0xE7), Property(0xE0)))
            hems.tx6.sendto(req.encode(), (A6, 3610, 0, idx))
            got = _recv(hems.rx6, 1.0)
            assert got is not None, "no answer to the IPv6 link-local unicast Get"
            assert got[1][:2] == (A6, 3610)
            frame = Frame.decode(got[0])
            assert (frame.tid, frame.esv, frame.seoj) == (0x0B02, Esv.GET_RES, METER)
            assert [p.epc for p in frame.props] == [0xE7, 0xE0]
            assert all(len(p.edt) == 4 for p in frame.props)
            assert _recv(hems.tx6, 0.05) is None
    finally:
        hems.close()


def test_multicast_inf_req_answered_unicast_and_unknown_objects_ignored(
    netns_pair: NetnsPair,
) -> None:
    """A multicast INF_REQ of D5 is answered by a unicast INF to the requester's port 3610, not
    by a multicast (one request must not make every node of the home multicast: §2.4 of
    docs/echonet.md); a multicast Get for an object the node does not host gets no answer at all,
    and the node keeps serving."""
    pair = netns_pair
    hems = hems_sockets(pair)
    group = in_netns(pair.ns_b, lambda: multicast_socket(MULTICAST_V4[0], 3610, pair.if_b))
    try:
        with MeterInNetns(pair.ns_a, pair.if_a, meter_node(SEED, CONFIG)) as meter:
            startup = _recv_d5(group, 3.0)  # the startup INF, out of the way first
            assert startup is not None
            aircon = Eoj(0x01, 0x30, 0x01)
            hems.tx4.sendto(
                Frame(0x0C01, CONTROLLER, aircon, Esv.GET, (Property(0x80),)).encode(),
                (MULTICAST_V4[0], 3610),
            )
            hems.tx4.sendto(
                Frame(0x0C02, CONTROLLER, NODE_PROFILE, Esv.INF_REQ, (Property(0xD5),)).encode(),
                (MULTICAST_V4[0], 3610),
            )
            got = _recv(hems.rx4, CONFIG.multicast_reply_delay + 0.5)
            assert got is not None, "no answer to the multicast INF_REQ"
            frame = Frame.decode(got[0])
            assert got[1] == (A4, 3610)
            assert (frame.tid, frame.esv, frame.seoj) == (0x0C02, Esv.INF, NODE_PROFILE)
            assert frame.props == (Property(0xD5, b"\x01" + METER.encode()),)
            # nothing more: no answer for the air conditioner, no INF on the group
            assert _recv(hems.rx4, CONFIG.multicast_reply_delay + 0.2) is None
            assert _recv(group, 0.05) is None
            assert meter.node.counters["multicast_not_ours"] == 1
            assert meter.node.counters["tx_multicast"] == 2  # the startup INF, v4 and v6
    finally:
        group.close()
        hems.close()
