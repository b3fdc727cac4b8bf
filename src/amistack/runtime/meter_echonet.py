"""The smart meter's ECHONET Lite node on the home LAN, over real UDP 3610.

`run_meter_echonet(...)` builds a `NodeProfile` and a `SmartMeterObject` over a `MeterModel`,
hosts them in an `EchonetNode` and drives it with `runtime.echonet.EchonetDriver` (a unicast
socket per address family, plus a socket bound to the multicast group 224.0.23.0 / ff02::1 and
joined on the chosen interface) until `stop` is set. The node itself sends the startup
announcement (guideline §4.2: INF of D5, multicast, after a random delay) and the fixed-time
values EA/EB every 30 minutes of model time.

A LAN device needs no utility credentials: this runs on its own, or beside the meter's PaC and
C12.22 endpoint (`cli/meter.py` runs both). The metering model runs on
`model_start + (now - start) * time_scale`; built with the same seed, configuration and start as
the C12.22 side's model, both report the same readings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from amistack.addr import Addr
from amistack.crypto import RandomSource, system_random
from amistack.echonet.node import EL_PORT, MULTICAST_V4, MULTICAST_V6, EchonetNode, NodeConfig
from amistack.echonet.objects import NodeProfile, OneWayMode, SmartMeterConfig, SmartMeterObject
from amistack.meter.model import DAY_S, MeterConfig, MeterModel
from amistack.meter.tables import TimeScale
from amistack.runtime.echonet import (
    AddressInUse,
    EchonetDriver,
    multicast_socket,
    unicast_socket,
)
from amistack.runtime.udp import is_ipv6

log = logging.getLogger(__name__)

__all__ = ["EchonetMeterReady", "default_ipv6_interface", "default_model", "run_meter_echonet"]

INSTALL_DAYS_BEFORE_START = 35  # as runtime.meter_node: a fresh model has weeks of history


@dataclass(frozen=True)
class EchonetMeterReady:
    """What `on_ready` is told once the sockets are bound."""

    node: EchonetNode
    meter: SmartMeterObject
    addresses: list[Addr]  # unicast and group sockets, as bound
    groups: tuple[Addr, ...]  # where the node multicasts (empty: multicast off)
    failed: list[tuple[str, str]]  # (bind address, why) for addresses that could not be opened


def default_ipv6_interface(
    routes: str = "/proc/net/ipv6_route", addresses: str = "/proc/net/if_inet6"
) -> str | None:
    """The interface for the IPv6 group ff02::1 when none is given: ff02::1 is link-scoped, so
    the kernel cannot choose one as it does for 224.0.23.0. The interface of the IPv6 default
    route, else the only non-loopback interface with a link-local address; None when neither
    tells (Linux /proc; elsewhere None)."""
    try:
        with open(routes) as f:
            for line in f:
                cols = line.split()
                up = len(cols) >= 10 and int(cols[8], 16) & 0x1  # RTF_UP
                if up and cols[0] == "0" * 32 and cols[1] == "00" and cols[9] != "lo":
                    return cols[9]
        with open(addresses) as f:
            names = {
                c[5]
                for c in (line.split() for line in f)
                if len(c) >= 6 and c[0].startswith("fe80") and c[5] != "lo"
            }
    except (OSError, ValueError):
        return None
    return names.pop() if len(names) == 1 else None


def default_model(seed: int | bytes, start: float, *, two_way: bool = True) -> MeterModel:
    """The model the meter runs by default: installed five weeks before `start`."""
    config = MeterConfig(install_time=start - INSTALL_DAYS_BEFORE_START * DAY_S, two_way=two_way)
    return MeterModel(seed, config)


async def run_meter_echonet(
    *,
    model: MeterModel,
    model_start: float | None = None,
    time_scale: float = 1.0,
    binds: Sequence[str] = ("0.0.0.0",),
    interface: str | None = None,
    port: int = EL_PORT,
    multicast: bool = True,
    one_way: bool = False,
    meter_config: SmartMeterConfig | None = None,
    node_config: NodeConfig | None = None,
    rng: RandomSource = system_random,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[EchonetMeterReady], None] | None = None,
    on_event: Callable[[object], None] | None = None,
) -> None:
    """Serve the meter's node until `stop` is set (see the module docstring).

    `binds`: one host per socket family to open (e.g. "0.0.0.0" and "::"); an address that
    cannot be opened is skipped (reported in `EchonetMeterReady.failed`) as long as one opens,
    else the last error is raised. `one_way`: a one-way meter, its reverse EPCs left out of the
    maps (guideline §6.1) unless `meter_config` says otherwise."""
    loop = asyncio.get_running_loop()
    start_model = time.time() if model_start is None else model_start
    cfg = meter_config or SmartMeterConfig(
        two_way=False if one_way else None, one_way_mode=OneWayMode.ABSENT
    )
    scale = TimeScale(loop.time(), start_model, time_scale)
    meter = SmartMeterObject(model, scale, cfg)
    families = {is_ipv6(h) for h in binds}
    v6_interface = interface
    if v6_interface is None and multicast and True in families:
        v6_interface = default_ipv6_interface()
        if v6_interface is not None:
            log.info("ECHONET Lite: IPv6 multicast on %s (no interface given)", v6_interface)
    groups: tuple[Addr, ...] = ()
    if multicast:
        groups = tuple(
            g for v6, g in ((False, MULTICAST_V4), (True, MULTICAST_V6)) if v6 in families
        )
    node = EchonetNode(
        NodeProfile([], manufacturer=cfg.manufacturer, unique_id=cfg.unique_id),
        [meter],
        rng,
        dataclasses.replace(node_config or NodeConfig(), multicast_groups=groups),
    )
    driver = EchonetDriver(node, on_event=on_event)
    async with driver:
        opened: list[Addr] = []
        failed: list[tuple[str, str]] = []
        last_error: OSError | None = None
        for host in binds:
            v6 = is_ipv6(host)
            group = (MULTICAST_V6 if v6 else MULTICAST_V4)[0]
            ifname = v6_interface if v6 else interface
            socks: list[socket.socket] = []
            try:  # both sockets of a family, or neither: no half-served family
                if v6 and multicast and ifname is None:
                    raise OSError("IPv6 multicast (ff02::1) is link-scoped: give --interface")
                socks.append(unicast_socket(host, port, ifname, group=multicast))
                if multicast:
                    socks.append(multicast_socket(group, port, ifname))
            except OSError as exc:
                for sock in socks:
                    sock.close()
                if isinstance(exc, AddressInUse):  # never serve beside another node
                    raise
                last_error = exc
                failed.append((host, str(exc)))
                log.warning("ECHONET Lite: cannot serve on %s: %s", host, exc)
                continue
            opened.append(await driver.attach_unicast(socks[0]))
            if multicast:
                opened.append(await driver.attach_multicast(socks[1]))
        if not opened:
            assert last_error is not None
            raise last_error
        if failed:  # a family that did not open must not be multicast to
            ok = {is_ipv6(a[0]) for a in opened}
            kept = tuple(g for g in groups if is_ipv6(g[0]) in ok)
            node.config = dataclasses.replace(node.config, multicast_groups=kept)
        node.start(driver.now())
        driver.kick()
        log.info(
            "ECHONET Lite: smart meter %s on %s", meter.eoj, opened, extra={"eoj": str(meter.eoj)}
        )
        if on_ready is not None:
            on_ready(EchonetMeterReady(node, meter, opened, node.config.multicast_groups, failed))
        await (stop or asyncio.Event()).wait()
