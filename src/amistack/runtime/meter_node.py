"""The whole meter over real UDP: its PaC (network access and keys) and its C12.22 endpoint.

`run_meter_node(...)` runs `runtime.meter.run_meter` (the PaC: EAP-PSK with the key server,
re-authentication before each lifetime ends, back-off after failures) with the meter's own key
ring, and beside it a `meter.node.MeterNode` on a UDP socket (`EngineDriver`, IPv4 or IPv6) that
serves C12.22 from that ring: every authentication installs a key generation there and the node
is told (`MeterNode.key_events`), which logs a key rotation. Until the first authentication the
node answers nothing and pushes nothing.

Both engines use the loop's monotonic clock (the ring's key lifetimes are on it); the metering
model runs on `model_start + (now - start) * time_scale`. With `data_dir`, events go to the
meter's signed event log there (eventlog.layout: `meters/<device>/events.log`, key `module.pem`, a
software secure module unless one is given).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from amistack.addr import Addr
from amistack.c1222.acse import ApTitle
from amistack.c1222.endpoint import EndpointConfig
from amistack.crypto import RandomSource, system_random
from amistack.eventlog import layout
from amistack.eventlog.log import EventLog
from amistack.keymgmt.keyring import DEFAULT_OVERLAP, KeyRing
from amistack.keymgmt.ukmf import PurposeRegistry
from amistack.meter.events import AccessGranted
from amistack.meter.model import DAY_S, MeterConfig, MeterModel
from amistack.meter.node import MeterNode, MeterNodeConfig, PushConfig, ap_title_for
from amistack.meter.tables import TimeScale
from amistack.runtime.meter import MeterResult, run_meter
from amistack.runtime.udp import Capture, EngineDriver, is_ipv6
from amistack.securemodule import SecureModule
from amistack.securemodule.software import SoftwareModule

log = logging.getLogger(__name__)

DEFAULT_HEADEND_TITLE = ".0.1"
INSTALL_DAYS_BEFORE_START = 35  # a fresh model still has a full 30-day load profile


def _title(value: str | ApTitle) -> ApTitle:
    return value if isinstance(value, ApTitle) else ApTitle.parse(value)


def open_event_log(
    data_dir: Path | str, device_id: str, now: float, module: SecureModule | None = None
) -> tuple[EventLog, SecureModule]:
    """The meter's event log in `data_dir` (eventlog.layout, as `amistack log` reads it) and the
    module that signs it."""
    layout.meter_dir(data_dir, device_id).mkdir(parents=True, exist_ok=True, mode=0o700)
    mod = module or SoftwareModule.open_or_create(
        layout.module_path(data_dir, device_id), f"{device_id}/eventlog"
    )
    try:
        return EventLog.open(layout.log_path(data_dir, device_id), device_id, mod, now), mod
    except BaseException:
        if module is None:
            mod.close()
        raise


@contextlib.contextmanager
def open_meter_node(
    device_id: str,
    headend_addr: Addr | None,
    *,
    ap_title: str | ApTitle | None = None,
    headend_title: str | ApTitle = DEFAULT_HEADEND_TITLE,
    model_seed: int | bytes | None = None,
    model_config: MeterConfig | None = None,
    model_start: float | None = None,
    time_scale: float = 1.0,
    push: PushConfig | bool = False,
    endpoint: EndpointConfig | None = None,
    data_dir: Path | str | None = None,
    secure_module: SecureModule | None = None,
    overlap: float = DEFAULT_OVERLAP,
    rng: RandomSource = system_random,
) -> Iterator[MeterNode]:
    """The meter's C12.22 `MeterNode` with its own key ring (`node.ring`), its metering model
    and, with `data_dir`, its signed event log (closed on exit); on the running loop's clock."""
    wall = time.time()
    start_model = wall if model_start is None else model_start
    config = model_config or MeterConfig(
        install_time=start_model - INSTALL_DAYS_BEFORE_START * DAY_S
    )
    model = MeterModel(device_id.encode() if model_seed is None else model_seed, config)
    ring = KeyRing(device_id.encode(), PurposeRegistry(), overlap=overlap)
    push_cfg = push if isinstance(push, PushConfig) else PushConfig(enabled=push)
    event_log: EventLog | None = None
    module: SecureModule | None = None
    if data_dir is not None:
        event_log, module = open_event_log(data_dir, device_id, wall, secure_module)
    loop = asyncio.get_running_loop()
    try:
        node_config = MeterNodeConfig(
            ap_title=ap_title_for(device_id) if ap_title is None else _title(ap_title),
            headend_title=_title(headend_title),
            headend_addr=headend_addr,
            push=push_cfg,
            time=TimeScale(loop.time(), start_model, time_scale),
            endpoint=endpoint,
        )
        yield MeterNode(
            node_config, model, ring, rng, event_log=event_log, event_log_source=event_log
        )
    finally:
        if event_log is not None:
            event_log.close()
        if module is not None and secure_module is None:
            module.close()


async def run_meter_node(
    device_id: str,
    psk: Any,  # the PSK, or an eap.tls.TlsPeerConfig (runtime.meter.build_pac)
    keyserver_addr: Addr,
    headend_addr: Addr | None,
    *,
    ap_title: str | ApTitle | None = None,
    headend_title: str | ApTitle = DEFAULT_HEADEND_TITLE,
    model_seed: int | bytes | None = None,
    model_config: MeterConfig | None = None,
    model_start: float | None = None,
    time_scale: float = 1.0,
    push: PushConfig | bool = False,
    endpoint: EndpointConfig | None = None,
    listen: Sequence[str] | None = None,
    port: int = 0,
    local_host: str | None = None,
    data_dir: Path | str | None = None,
    secure_module: SecureModule | None = None,
    pac_config: Any | None = None,
    overlap: float = DEFAULT_OVERLAP,
    rng: RandomSource = system_random,
    capture: Capture | None = None,
    stop: asyncio.Event | None = None,
    on_rotation: Callable[[AccessGranted], None] | None = None,
    on_ready: Callable[[MeterNode, list[Addr]], None] | None = None,
    on_event: Callable[[object], None] | None = None,
) -> MeterResult:
    """Run the meter until `stop` is set (see the module docstring); the PaC's last result.

    `listen`: hosts for the C12.22 socket(s) (default the wildcard of the head-end's family)
    on `port` (0: ephemeral; C12.22's own is 1153). `on_ready(node, addresses)` runs once the
    sockets are bound; `on_event` gets every `MeterNode` event (C12.22 events, meter events,
    push outcomes). `push=True` pushes 15-minute data with the default `PushConfig`, seeded
    by the meter's title."""
    if listen is None:
        ref = headend_addr[0] if headend_addr is not None else keyserver_addr[0]
        listen = ["::" if is_ipv6(ref) else "0.0.0.0"]
    with open_meter_node(
        device_id,
        headend_addr,
        ap_title=ap_title,
        headend_title=headend_title,
        model_seed=model_seed,
        model_config=model_config,
        model_start=model_start,
        time_scale=time_scale,
        push=push,
        endpoint=endpoint,
        data_dir=data_dir,
        secure_module=secure_module,
        overlap=overlap,
        rng=rng,
    ) as node:
        node_config = node.config
        async with EngineDriver(node, on_event=on_event, capture=capture) as driver:
            for host in listen:
                await driver.bind(host, port)
            node.start(driver.now())
            driver.kick()
            log.info(
                "meter %s: C12.22 as %s on %s",
                device_id,
                node_config.ap_title,
                driver.local_addresses,
                extra={"device_id": device_id},
            )
            if on_ready is not None:
                on_ready(node, driver.local_addresses)

            def rotation(r: AccessGranted) -> None:
                node.key_events(r.key_events, driver.now())
                driver.kick_soon()  # new keys: pushes and answers may go out now
                if on_rotation is not None:
                    on_rotation(r)

            return await run_meter(
                device_id,
                psk,
                keyserver_addr,
                local_host=local_host,
                config=pac_config,
                rng=rng,
                capture=capture,
                stop=stop,
                on_rotation=rotation,
                keyring=node.ring,
            )
