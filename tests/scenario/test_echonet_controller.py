"""Guideline case 6.6 on the virtual clock: the controller never depends on the meter's startup
INF and tolerates slow meters.

The B route has no multicast, so the controller probes the meter's address (unicast). It may
wait `inf_wait` for the meter's instance list notification (D5, §4.2); when that INF is lost it
asks with a Get of D6 after the wait, and a meter that does not answer that gets an INF_REQ of
D5. A slow meter (seconds of latency each way) is served by retries with the same TID; answers
that come late -- even after the last attempt timed out, within `late_grace` -- complete the
request once, the answers to the other attempts are counted as duplicates.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
from tests.conftest import IN_CI
from tests.netns import A4, A6, B4, B6, NetnsPair, enter, make_netns_pair

from amistack.addr import Addr
from amistack.crypto.rand import seeded_random
from amistack.echonet.controller import ControllerConfig, EchonetController
from amistack.echonet.events import (
    NodeDiscovered,
    PropertyMapsRetrieved,
    RequestCompleted,
    RequestFailed,
)
from amistack.echonet.frame import Eoj, Esv, Frame
from amistack.echonet.node import MULTICAST_V4, MULTICAST_V6, EchonetNode, NodeConfig
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.meter.model import MeterModel
from amistack.runtime.echonet import EchonetDriver
from amistack.runtime.echonet_controller import ControllerDriver, RequestTimeout
from amistack.runtime.loop import new_event_loop
from amistack.sim import LinkConfig, VirtualClock, VirtualNetwork

METER = Eoj(0x02, 0x88, 0x01)
HEMS: Addr = ("fe80::1", 3610)
SM: Addr = ("fe80::2", 3610)
T0 = 1_760_000_000.0
T = TypeVar("T")


def b_route(
    config: ControllerConfig, latency: float = 0.05
) -> tuple[VirtualNetwork, EchonetController, EchonetNode]:
    net = VirtualNetwork(
        VirtualClock(T0), default_link=LinkConfig(latency=latency), capture=100_000
    )
    ctl = EchonetController(config, seeded_random(66))
    meter = EchonetNode(
        NodeProfile([]),
        [SmartMeterObject(MeterModel(6))],
        seeded_random(6),
        NodeConfig(multicast_groups=(MULTICAST_V4,)),  # its startup INF goes to the group...
    )
    net.add_node(HEMS, ctl)
    net.add_node(SM, meter)
    net.join_group(MULTICAST_V4, HEMS)  # ...which reaches the controller, unless lost
    return net, ctl, meter


def is_startup_inf(data: bytes) -> bool:
    f = Frame.decode(data)
    return f.esv == Esv.INF and f.props[0].epc == 0xD5


def read_e7(net: VirtualNetwork, ctl: EchonetController, max_s: float = 120.0) -> RequestCompleted:
    h = ctl.get(SM, METER, [0xE7], net.now)
    net.service(HEMS)

    def waiting() -> bool:
        return not any(
            isinstance(e, RequestCompleted | RequestFailed) and e.handle == h
            for e in net.events[HEMS]
        )

    net.run_while(waiting, net.now + max_s)
    [ev] = [
        e
        for e in net.events[HEMS]
        if isinstance(e, RequestCompleted | RequestFailed) and e.handle == h
    ]
    assert isinstance(ev, RequestCompleted) and ev.ok, ev
    assert len(ev.value(0xE7) or b"") == 4
    return ev


def run_until_discovered(net: VirtualNetwork, max_s: float = 120.0) -> NodeDiscovered:
    net.run_while(lambda: not net.events_of(HEMS, PropertyMapsRetrieved), net.now + max_s)
    [ev] = net.events_of(HEMS, NodeDiscovered)
    return ev


def start_both(net: VirtualNetwork, ctl: EchonetController, meter: EchonetNode) -> None:
    net.call_at(T0, SM, meter.start)
    net.call_at(T0, HEMS, lambda now: ctl.probe(SM, now))


def test_startup_inf_lost_controller_asks_after_the_wait() -> None:
    net, ctl, meter = b_route(ControllerConfig(multicast_groups=(), inf_wait=5.0))
    net.filters.append(
        lambda _t, src, dst, data: not (dst == MULTICAST_V4 and is_startup_inf(data))
    )
    start_both(net, ctl, meter)
    net.run_until(T0 + 4.9)
    assert net.events_of(HEMS, NodeDiscovered) == []  # still waiting for the INF
    assert meter.counters["startup_inf"] == 1 and net.counters["filtered"] == 1
    ev = run_until_discovered(net)
    assert ev.via == "get" and ev.addr == SM and ev.instances == (METER,)
    assert ctl.counters["inf_wait_expired"] == 1
    first_get = next(t for t, s, d, _ in net.capture if s == HEMS and d == SM)
    assert first_get == pytest.approx(T0 + 5.0)
    read_e7(net, ctl)


def test_startup_inf_received_no_need_to_ask() -> None:
    net, ctl, meter = b_route(ControllerConfig(multicast_groups=(), inf_wait=5.0))
    start_both(net, ctl, meter)
    ev = run_until_discovered(net)
    assert ev.via == "inf" and net.now < T0 + 5.0
    net.run_until(T0 + 30.0)
    to_meter = [Frame.decode(d) for _, s, dst, d in net.capture if s == HEMS and dst == SM]
    assert all(0xD6 not in {p.epc for p in f.props} for f in to_meter)  # never asked for D6
    assert ctl.counters["inf_wait_expired"] == 0
    read_e7(net, ctl)


def test_meter_that_ignores_get_d6_is_found_by_inf_req() -> None:
    net, ctl, meter = b_route(ControllerConfig(multicast_groups=(), request_timeout=2.0, retries=1))
    net.filters.append(
        lambda _t, src, dst, data: not (dst == MULTICAST_V4 and is_startup_inf(data))
    )

    def no_d6_get(_t: float, _s: Addr, dst: Addr, data: bytes) -> bool:
        f = Frame.decode(data)
        return not (dst == SM and f.esv == Esv.GET and f.props[0].epc == 0xD6)

    net.filters.append(no_d6_get)
    start_both(net, ctl, meter)
    ev = run_until_discovered(net)
    assert ev.via == "inf_req" and ev.instances == (METER,)
    assert ctl.counters["probe_fallback_inf_req"] == 1
    read_e7(net, ctl)


def test_slow_meter_retries_do_not_duplicate_completions() -> None:
    # 4 s each way: every answer comes 8 s after its request, 3 s after the retry went out.
    cfg = ControllerConfig(multicast_groups=(), request_timeout=5.0, retries=2, late_grace=5.0)
    net, ctl, meter = b_route(cfg, latency=4.0)
    start_both(net, ctl, meter)
    ev = run_until_discovered(net, max_s=300.0)
    assert ev.via in ("get", "inf")
    r = read_e7(net, ctl)
    assert r.elapsed == pytest.approx(8.0)
    net.run_until(net.now + 30.0)  # let the answers to the retries arrive
    completions = [e for e in net.events[HEMS] if isinstance(e, RequestCompleted)]
    assert len({e.handle for e in completions}) == len(completions)  # each request once
    assert ctl.counters["retry"] >= 1 and ctl.counters["duplicate_response"] >= 1
    assert ctl.counters["unmatched_response"] == 0 and ctl.counters["timeout"] == 0


def test_answer_after_the_last_attempt_accepted_within_grace() -> None:
    # 8.5 s each way: attempts at 0, 5, 10 s; the first answer arrives at 17 s, after the last
    # attempt's 15 s timeout but within its 5 s grace.
    cfg = ControllerConfig(multicast_groups=(), request_timeout=5.0, retries=2, late_grace=5.0)
    net, ctl, _ = b_route(cfg, latency=0.01)
    net.run_until(T0 + 1.0)
    net.set_link(HEMS, SM, LinkConfig(latency=8.5))
    r = read_e7(net, ctl)
    assert r.elapsed == pytest.approx(17.0)
    assert ctl.counters["retry"] == 2 and ctl.counters["timeout"] == 0


# -- over real UDP: ControllerDriver against the EchonetDriver meter on loopback 127.0.10.x ------

NODE_HOST = "127.0.10.1"
HEMS_HOST = "127.0.10.2"
NOBODY_HOST = "127.0.10.3"


def test_controller_driver_against_the_meter_over_udp() -> None:
    async def main() -> None:
        node = EchonetNode(
            NodeProfile([]),
            [SmartMeterObject(MeterModel(1))],
            seeded_random(3),
            NodeConfig(multicast_groups=()),
        )
        meter = EchonetDriver(node)
        ctl = EchonetController(
            ControllerConfig(multicast_groups=(), request_timeout=0.2, retries=1, late_grace=0.1),
            seeded_random(4),
        )
        driver = ControllerDriver(ctl)
        try:
            try:
                await meter.open(ipv4=NODE_HOST, multicast=False)
                opened = await driver.open(ipv4=HEMS_HOST, multicast=False, ephemeral_source=True)
            except OSError as exc:
                if IN_CI or exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    raise
                pytest.skip(f"cannot bind loopback UDP 3610: {exc}")
            assert opened[1] == (HEMS_HOST, 3610) and opened[0][1] != 3610
            driver.start(probe=[(NODE_HOST, 3610)])
            found = await driver.wait_for_node(0x0288, timeout=5.0)
            assert found is not None and found.addr == (NODE_HOST, 3610)
            assert 0xE7 in found.maps[METER].get
            r = await driver.get(found.addr, METER, [0xE7, 0xE0, 0xE1, 0xD3])
            assert r.ok and len(r.value(0xE7) or b"") == 4
            r = await driver.set(found.addr, METER, [(0xE5, b"\x01")])
            assert r.ok and r.esv == Esv.SET_RES
            r = await driver.setget(found.addr, METER, [(0xE5, b"\x02")], [0xE2])
            assert r.ok and (r.value(0xE2) or b"")[:2] == b"\x00\x02"
            r = await driver.inf_req(found.addr, METER, [0x80])
            assert r.ok and r.value(0x80) == b"\x30"
            r = await driver.get(found.addr, METER, [0xE7, 0xAA])
            assert not r.ok and r.unavailable == (0xAA,)  # partial, not an exception
            rs = await asyncio.gather(*(driver.get(found.addr, METER, [0xE7]) for _ in range(50)))
            assert all(x.ok for x in rs)
            assert len({x.handle for x in rs}) == 50
            with pytest.raises(RequestTimeout) as info:
                await driver.get((NOBODY_HOST, 3610), METER, [0xE7])
            assert info.value.event is not None and "2 attempts" in info.value.event.reason
            with pytest.raises(RequestTimeout):
                await driver.get((NOBODY_HOST, 3610), METER, [0xE7], timeout=0.05)
            assert node.counters["malformed"] == 0 and ctl.counters["unmatched_response"] == 0
        finally:
            driver.close()
            meter.close()

    loop = new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


# -- multicast for real: two network namespaces joined by a veth pair ----------------------------
#
# Multicast never leaves the machine: the meter runs in netns A, the controller in netns B, both
# created here (random suffix) and deleted afterwards; 192.0.2.0/24 (TEST-NET-1) and fe80::a/b
# exist only on that veth link. Each side runs its own event loop in a thread that entered its
# namespace with setns(2); `amistack hems` runs as a process under `ip netns exec`.


@pytest.fixture
def pair() -> Iterator[NetnsPair]:
    yield from make_netns_pair("amictl", group_routes=False)


class LoopInNetns:
    """An event loop in a thread that entered netns `ns`; `call(coro_fn)` runs a coroutine on it."""

    def __init__(self, ns: str) -> None:
        self.loop = new_event_loop()
        self._entered = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(ns,), daemon=True)
        self._thread.start()
        self._entered.wait(10)
        if self._error is not None:
            raise self._error

    def _run(self, ns: str) -> None:
        try:
            enter(ns)
        except BaseException as exc:
            self._error = exc
            self._entered.set()
            return
        asyncio.set_event_loop(self.loop)
        self._entered.set()
        self.loop.run_forever()

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        async def wrap() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def test_multicast_discovery_ipv4_and_ipv6_link_local_then_hems_cli(pair: NetnsPair) -> None:
    meter_side = LoopInNetns(pair.ns_a)
    hems_side = LoopInNetns(pair.ns_b)
    node = EchonetNode(
        NodeProfile([]),
        [SmartMeterObject(MeterModel(8))],
        seeded_random(8),
        NodeConfig(multicast_groups=(MULTICAST_V4, MULTICAST_V6), multicast_reply_delay=0.3),
    )
    ctl = EchonetController(
        ControllerConfig(multicast_groups=(MULTICAST_V4, MULTICAST_V6), discovery_window=2.0),
        seeded_random(9),
    )
    meter: list[EchonetDriver] = []
    driver: list[ControllerDriver] = []
    try:

        async def open_meter() -> None:
            d = EchonetDriver(node, wall_clock=True)
            meter.append(d)
            await d.open(ipv4=A4, ipv6=A6, interface=pair.if_a)
            node.start(d.now())
            d.kick()

        meter_side.call(open_meter)

        async def discover() -> list[tuple[Addr, bytes | None]]:
            d = ControllerDriver(ctl)
            driver.append(d)
            await d.open(ipv4=B4, ipv6=B6, interface=pair.if_b, multicast=True)
            d.start()
            deadline = time.monotonic() + 10.0
            while len(ctl.nodes) < 2 or not all(METER in n.maps for n in ctl.nodes.values()):
                assert time.monotonic() < deadline, dict(ctl.nodes)
                await asyncio.sleep(0.05)
            out = []
            for addr in ctl.nodes:
                r = await d.get(addr, METER, [0xE7, 0xE0])
                assert r.ok
                out.append((addr, r.value(0xE0)))
            return out

        found = hems_side.call(discover)
        hosts = sorted(a[0] for a, _ in found)
        assert hosts == [A4, f"{A6}%{pair.if_b}"]  # one node per family; link-local keeps its zone
        assert all(e0 is not None and len(e0) == 4 for _, e0 in found)
        assert ctl.counters["malformed"] == 0 and ctl.counters["unmatched_response"] == 0
        hems_side.loop.call_soon_threadsafe(driver[0].close)
        time.sleep(0.1)  # the controller's sockets are gone before the CLI binds 3610 in B

        for bind in (B4, f"{B6}%{pair.if_b}"):
            proc = subprocess.run(
                ["ip", "netns", "exec", pair.ns_b, sys.executable, "-m", "amistack.cli.main",
                 "hems", "--interface", pair.if_b, "--bind", bind, "--count", "1", "--json",
                 "--timeout", "8"],
                capture_output=True, text=True, timeout=60,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            [line] = proc.stdout.splitlines()
            obj = json.loads(line)
            assert obj["eoj"] == "028801" and obj["energy_kwh"] > 0
            assert obj["meter"] in (A4, f"{A6}%{pair.if_b}")
    finally:
        if meter:
            meter_side.loop.call_soon_threadsafe(meter[0].close)
        if driver:
            hems_side.loop.call_soon_threadsafe(driver[0].close)
        time.sleep(0.05)
        meter_side.close()
        hems_side.close()
