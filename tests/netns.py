"""Network namespace pairs for the multicast and multi-host tests.

Multicast must never leave the machine, so those tests run in two network namespaces they create
(unique names with a random suffix, deleted afterwards) joined by a veth pair:

    netns A                                      netns B
    <if_a>: 192.0.2.1/24, fe80::a/64  <-veth->  <if_b>: 192.0.2.2/24, fe80::b/64

(192.0.2.0/24 is TEST-NET-1: it exists only on this veth link.) Network namespaces are per
thread: `in_netns(ns, fn)` runs `fn` in a thread that entered `ns` with setns(2); a socket stays
in the namespace it was created in, so the caller can use what `fn` made. `MeterInNetns` runs
an ECHONET Lite node inside one.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from amistack.crypto.rand import seeded_random
from amistack.echonet.node import EchonetNode, NodeConfig
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.meter.model import MeterModel
from amistack.meter.tables import TimeScale
from amistack.runtime.echonet import EchonetDriver
from amistack.runtime.loop import new_event_loop
from tests.conftest import require_tool, unavailable

T = TypeVar("T")

CLONE_NEWNET = 0x40000000  # linux/sched.h
A4, B4 = "192.0.2.1", "192.0.2.2"
A6, B6 = "fe80::a", "fe80::b"
MODEL_T = 1_704_034_800.0 + 10 * 86400 + 14 * 3600 + 1200  # ten days after installation


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def enter(ns: str) -> None:
    """Move the calling thread (only it: network namespaces are per thread) into netns `ns`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a fresh thread that has entered netns `ns` (the caller stays where it is)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            enter(ns)
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{ns}")
    thread.start()
    thread.join(30)
    if "error" in box:
        raise box["error"]
    if "value" not in box:
        raise TimeoutError(f"nothing came back from netns {ns}")
    return box["value"]  # type: ignore[no-any-return]


def wait_running(ns: str, ifname: str, timeout: float = 5.0) -> None:
    """Wait until the kernel has activated the veth's queueing discipline: until the link-watch
    event does (rate-limited to about once a second) it is `noop` and drops every packet."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(
            ["ip", "-n", ns, "link", "show", "dev", ifname],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        if "qdisc noop" not in out and "state UP" in out:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{ifname} in {ns} is not running: {out.strip()}")
        time.sleep(0.05)


@dataclass(frozen=True)
class NetnsPair:
    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    index_a: int  # of if_a, inside ns_a
    index_b: int  # of if_b, inside ns_b


def make_netns_pair(prefix: str = "amiel", group_routes: bool = True) -> Iterator[NetnsPair]:
    """Two fresh namespaces joined by a veth pair (see the module docstring), deleted after;
    names start with `prefix`. `group_routes`: a route for 224.0.0.0/4 on each veth."""
    require_tool("ip")
    if os.geteuid() != 0:
        unavailable("network namespaces need root")
    sfx = secrets.token_hex(4)
    ns_a, ns_b = f"{prefix}-a-{sfx}", f"{prefix}-b-{sfx}"
    if_a, if_b = f"va{sfx}", f"vb{sfx}"  # <= 15 characters (IFNAMSIZ)
    created: list[str] = []
    try:
        for ns in (ns_a, ns_b):
            ip("netns", "add", ns)
            created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
        for ns, ifname, v4, v6 in ((ns_a, if_a, A4, A6), (ns_b, if_b, B4, B6)):
            # One well-known link-local address, usable at once (no DAD wait, no EUI-64 twin).
            ip("-n", ns, "link", "set", ifname, "addrgenmode", "none")
            ip("-n", ns, "addr", "add", f"{v4}/24", "dev", ifname)
            ip("-n", ns, "-6", "addr", "add", f"{v6}/64", "dev", ifname, "nodad")
            ip("-n", ns, "link", "set", ifname, "up")
            if group_routes:
                # peers that join 224.0.23.0 without naming an interface (npm echonet-lite) need
                # a route for the group; it exists only in this namespace
                ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", ifname)
        wait_running(ns_a, if_a)
        wait_running(ns_b, if_b)
        index_a = in_netns(ns_a, lambda: socket.if_nametoindex(if_a))
        index_b = in_netns(ns_b, lambda: socket.if_nametoindex(if_b))
        yield NetnsPair(ns_a, ns_b, if_a, if_b, index_a, index_b)
    except subprocess.CalledProcessError as exc:
        unavailable(f"cannot build the netns pair: {exc.stderr.decode(errors='replace').strip()}")
    finally:
        for ns in created:  # deleting a namespace deletes its end of the veth, and so the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


class MeterInNetns:
    """An ECHONET Lite node (our meter) on its own event loop, in a thread that entered `ns`,
    on `EchonetDriver` (unicast and group sockets on `interface`)."""

    def __init__(
        self, ns: str, interface: str, node: EchonetNode, ipv4: str = A4, ipv6: str | None = A6
    ) -> None:
        self.ns = ns
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.interface = interface
        self.node = node
        self.started_at = 0.0  # time.monotonic() when node.start ran
        self.opened: list[Any] = []
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"meter-{ns}", daemon=True)

    def __enter__(self) -> MeterInNetns:
        self._thread.start()
        if not self._ready.wait(15):
            raise TimeoutError("the meter did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        try:
            enter(self.ns)
            loop = self._loop = new_event_loop()
            loop.run_until_complete(self._main())
            loop.close()
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        driver = EchonetDriver(self.node)
        try:
            self.opened = await driver.open(
                ipv4=self.ipv4, ipv6=self.ipv6, interface=self.interface
            )
            self.node.start(driver.now())
            self.started_at = time.monotonic()
            driver.kick()
            self._ready.set()
            await self._stop.wait()
        finally:
            driver.close()


def meter_node(seed: int, config: NodeConfig) -> EchonetNode:
    """Our smart-meter node. Its model time is all but frozen mid-afternoon, ten days after
    installation, so no 30-minute EA/EB announcement falls inside a test."""
    meter = SmartMeterObject(MeterModel(seed), TimeScale(0.0, MODEL_T, factor=1e-9))
    return EchonetNode(NodeProfile([]), [meter], seeded_random(seed), config)
