"""The smart meter's B route over real UDP: the meter as PANA PAA with its ECHONET Lite node behind
the secured link (`amistack.broute.BrouteMeter`).

`run_meter_broute(...)` builds a `NodeProfile` and a `SmartMeterObject` over a `MeterModel` (as
`runtime.meter_echonet` does for the home LAN), hosts them in an `EchonetNode`, wraps that in a
`BrouteMeter` that accepts the given B-route credentials, and drives it with `EngineDriver` on
one UDP socket (the B-route link frames: PANA in the clear, everything else AES-CCM*) until
`stop` is set. HEMS software reaches it with `amistack hems --broute` or through the SKSTACK-IP
module emulator (`amistack broute emulate --meter`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from amistack.addr import Addr
from amistack.broute import BrouteCredentials, BrouteMeter, BrouteMeterConfig
from amistack.crypto import RandomSource, system_random
from amistack.echonet.node import EchonetNode
from amistack.echonet.objects import NodeProfile, OneWayMode, SmartMeterConfig, SmartMeterObject
from amistack.meter.model import MeterModel
from amistack.meter.tables import TimeScale
from amistack.runtime.udp import EngineDriver

log = logging.getLogger(__name__)

__all__ = ["BrouteMeterReady", "run_meter_broute"]


@dataclass(frozen=True)
class BrouteMeterReady:
    """What `on_ready` is told once the socket is bound."""

    meter: BrouteMeter
    smart_meter: SmartMeterObject
    address: Addr


async def run_meter_broute(
    *,
    model: MeterModel,
    credentials: Sequence[BrouteCredentials],
    bind: Addr,
    model_start: float | None = None,
    time_scale: float = 1.0,
    one_way: bool = False,
    rng: RandomSource = system_random,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[BrouteMeterReady], None] | None = None,
    on_event: Callable[[object], None] | None = None,
) -> None:
    """Serve the B route until `stop` is set (see the module docstring)."""
    loop = asyncio.get_running_loop()
    start_model = time.time() if model_start is None else model_start
    cfg = SmartMeterConfig(two_way=False if one_way else None, one_way_mode=OneWayMode.ABSENT)
    scale = TimeScale(loop.time(), start_model, time_scale)
    smart_meter = SmartMeterObject(model, scale, cfg)
    node = EchonetNode(
        NodeProfile([], manufacturer=cfg.manufacturer, unique_id=cfg.unique_id), [smart_meter], rng
    )
    meter = BrouteMeter(node, credentials, rng, BrouteMeterConfig())
    driver = EngineDriver(meter, on_event=on_event)
    try:
        address = await driver.bind(*bind)
        meter.start(driver.now())
        driver.kick()
        log.info("B route: meter on %s", address, extra={"addr": address})
        if on_ready is not None:
            on_ready(BrouteMeterReady(meter, smart_meter, address))
        await (stop or asyncio.Event()).wait()
    finally:
        driver.close()
