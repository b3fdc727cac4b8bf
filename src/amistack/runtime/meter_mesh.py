"""A meter whose network is the mesh (`amistack meter --mesh`): its PANA, its C12.22 and its
relaying for others all go over the radio of `runtime.mesh`, through the concentrator.

The node is a `mesh.node.MeshNode` (it chooses its parent from the join beacons, runs PANA +
EAP-PSK through it, installs the group keys, joins the DODAG and relays once its DAO is
acknowledged) whose application (`MeshNode.app`, `send_udp`) on UDP 1153 of its global
address is the meter's C12.22 `MeterNode` (runtime.meter_node.open_meter_node). Each PANA
success installs a key generation in the meter's ring (UKMF, as `meter.access.MeterAccess`
does) and the C12.22 node is told.
It registers (`meter.registration.RegisteringMeter`: C12.22's Registration service, to the
head-end as master relay, when it becomes relay-ready, at each re-authentication and before
the granted period ends); the concentrator, a C12.22 relay, binds the meter's ApTitle to its
address when the head-end's grant passes (mesh.gateway), and from then on the head-end reaches
the meter at the concentrator's C12.22 relay port (docs/mesh.md).
The key server and the head-end are named by their WAN addresses; inside the mesh an IPv4
address is its RFC 6052 form (mesh.gateway.mesh_side). Frame counters are persisted ahead in
DATA_DIR/meters/ID/ beside the event log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from amistack.addr import Addr, PanId
from amistack.c1222.endpoint import C1222_PORT
from amistack.crypto import RandomSource, system_random
from amistack.eap.psk import PSK_LEN, PskKeys
from amistack.eventlog import layout
from amistack.mesh.gateway import mesh_side
from amistack.mesh.link import MeshLink
from amistack.mesh.node import MeshNode
from amistack.mesh.rpl.config import RplConfig
from amistack.mesh.rpl.node import RplNode
from amistack.mesh.rpl.packet import LINK_LOCAL_PREFIX
from amistack.mesh.security import LinkSecurity
from amistack.meter.registration import RegisteringMeter
from amistack.pana.events import Authenticated
from amistack.pana.pac import PacConfig, PanaClient
from amistack.runtime.mesh import (
    Links,
    RadioEngine,
    counter_store,
    eui_for,
    mesh_rpl_config,
    open_radio,
)
from amistack.runtime.meter import build_pac
from amistack.runtime.meter_node import open_meter_node
from amistack.runtime.udp import EngineDriver
from amistack.sim.mesh import MESH_PCI_RETRANSMIT, MESH_REQ_RETRANSMIT

log = logging.getLogger(__name__)

__all__ = ["run_meter_mesh"]


async def run_meter_mesh(
    device_id: str,
    psk: Any,
    keyserver: Addr,
    headend: Addr | None,
    *,
    radio: Addr | Links,
    neighbours: Iterable[Addr] = (),
    data_dir: Path,
    pan: int,
    push: bool = False,
    time_scale: float = 1.0,
    model_seed: int | bytes | None = None,
    model_start: float | None = None,
    rpl_config: RplConfig | None = None,
    rng: RandomSource = system_random,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Addr, RadioEngine], None] | None = None,
    on_event: Callable[[object], None] | None = None,
) -> None:
    """Run the meter on the mesh until `stop` is set (module docstring). `on_ready(radio,
    engine)` once the radio socket is bound; `on_event` gets the node's and the C12.22
    node's events."""
    stop = stop or asyncio.Event()
    keys: Any = PskKeys(bytes(psk)) if isinstance(psk, bytes) and len(psk) == PSK_LEN else psk
    eui = eui_for(device_id)
    store = counter_store(layout.meter_dir(data_dir, device_id))
    link = MeshLink(LinkSecurity(eui, store), PanId(pan), rng)
    rpl = RplNode(LINK_LOCAL_PREFIX + eui.interface_id(), rpl_config or mesh_rpl_config(), rng)
    pac_config = PacConfig(pci_retransmit=MESH_PCI_RETRANSMIT, req_retransmit=MESH_REQ_RETRANSMIT)

    def new_pac(parent: Addr) -> PanaClient:
        pac: PanaClient = build_pac(device_id, keys, parent, rng, pac_config)
        return pac

    node = MeshNode(
        link,
        rpl,
        (mesh_side(keyserver[0]), keyserver[1]),
        rng,
        new_pac=new_pac,
    )
    he = None if headend is None else (mesh_side(headend[0]), headend[1])
    with open_meter_node(
        device_id,
        he,
        model_seed=model_seed,
        model_start=model_start,
        time_scale=time_scale,
        push=push,
        data_dir=data_dir,
        rng=rng,
    ) as meter:

        def where() -> Addr | None:  # the native address the meter registers
            own = node.global_address
            if not node.relay_ready or own is None:
                return None
            return (str(ipaddress.IPv6Address(own)), C1222_PORT)

        registering = RegisteringMeter(meter, where)
        engine = RadioEngine(
            node,
            radio if isinstance(radio, Links) else neighbours,
            app=registering,
            app_port=C1222_PORT,
        )
        driver: EngineDriver[RadioEngine]

        def event(ev: object) -> None:
            if isinstance(ev, Authenticated):  # a key generation for C12.22 (UKMF)
                changed = meter.ring.install(ev.context, ev.lifetime, driver.now())
                meter.key_events(changed, driver.now())
                driver.kick_soon()
            sent = registering.counters["sent"]
            registering.node_event(ev, driver.now())
            if registering.counters["sent"] != sent:  # a registration to send
                driver.kick_soon()
            if on_event is not None:
                on_event(ev)

        async with EngineDriver(engine, on_event=event) as driver:
            bound = await open_radio(driver, radio)
            node.start(driver.now())
            meter.start(driver.now())
            driver.kick()
            log.info("meter %s: mesh node %s on radio %s", device_id, eui, bound)
            if on_ready is not None:
                on_ready(bound, engine)
            await stop.wait()
            log.info(
                "meter %s: counters %s",
                device_id,
                dict(node.counters + engine.counters + node.link.counters),
            )
