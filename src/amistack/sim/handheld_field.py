"""The field of a handheld work session on the virtual clock: an isolated area, the real key
server engine (and optionally a head-end engine) behind the handheld's channel (`build_field`);
or, offline, the handheld itself as key server and collector for an opened work order
(`build_offline_field`: the engine of `amistack workorder run`, docs/handheld-offline.md).

Used by `amistack demo` (cli/demo_handheld.py) and the handheld tests alike."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass

from amistack.access import Principal, Role
from amistack.addr import Addr, Engine
from amistack.c1222.acse import ApTitle
from amistack.crypto import seeded_random
from amistack.handheld import HandheldConfig, WorkSession
from amistack.handheld.offline import OfflineOffice, SealedReadings
from amistack.handheld.offline_run import OfflineRun, OfflineRunConfig
from amistack.handheld.workorder import OpenedWorkOrder
from amistack.keymgmt.groupkeys import GroupKeyManager
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.server import KeyServer
from amistack.keymgmt.store import CredentialStore
from amistack.mesh.ipv6 import Ipv6Packet
from amistack.mesh.node import radio_addr
from amistack.mesh.wan import Ipv6Host
from amistack.pana.paa import PaaConfig
from amistack.sim.handheld_area import (
    AREA_PAN,
    AREA_PREFIX,
    Area,
    AreaConfig,
    area_meter_id,
    area_meter_psk,
    area_rpl,
    build_area,
    handheld_eui,
    mesh_pac_config,
    meter_eui,
    psk_peer,
)
from amistack.sim.mesh import MESH_REQ_RETRANSMIT

KEYSERVER: Addr = ("2001:db8:ffff::1", 716)
HEADEND: Addr = ("2001:db8:ffff::2", 1153)
HANDHELD_ID = "handheld-7"
HANDHELD_PSK = bytes.fromhex("5a" * 16)
HEADEND_TITLE = ApTitle.parse("2.16.124.113620.1.22.0.1")


def global_of(eui_iid: bytes) -> str:
    return str(ipaddress.IPv6Address(AREA_PREFIX[:8] + eui_iid))


@dataclass
class Field:
    area: Area
    keyserver: KeyServer
    store: CredentialStore
    config: HandheldConfig

    def start_work(
        self, roles: frozenset[Role] = frozenset({Role.OPERATOR}), psk: bytes = HANDHELD_PSK,
        work_order: str = "WO-1", idle_timeout: float = 900.0, technician: Principal | None = None,
    ) -> WorkSession:  # fmt: skip
        """`technician`: who logged in on the handheld (else "tina" with `roles`)."""
        tech = technician or Principal("tina", roles, "session")
        rng = seeded_random(99)
        cfg = HandheldConfig(
            HANDHELD_ID, handheld_eui(), AREA_PAN, AREA_PREFIX, KEYSERVER, rpl=area_rpl(),
            pac=mesh_pac_config(), idle_timeout=idle_timeout,
        )  # fmt: skip
        session = WorkSession(cfg, tech, work_order, psk_peer(HANDHELD_ID, psk, rng), rng,
                              self.area.net.now)  # fmt: skip
        self.area.attach(session)
        return session

    def run_until_joined(self, expected: set[int], max_time: float = 600.0) -> bool:
        area = self.area
        return area.net.run_while(lambda: not expected <= set(area.relay_ready()), max_time)


class Office:
    """The WAN behind the channel: IPv6 packets go to the key server's or the head-end's host."""

    def __init__(self, *hosts: Ipv6Host) -> None:
        self.hosts = {h.address[0]: h for h in hosts}

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        dst = str(Ipv6Packet.decode(data).dst)
        if dst in self.hosts:
            self.hosts[dst].receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return [d for h in self.hosts.values() for d in h.datagrams_to_send(now)]

    def get_timer(self) -> float | None:
        return min((t for h in self.hosts.values() if (t := h.get_timer()) is not None),
                   default=None)  # fmt: skip

    def handle_timer(self, now: float) -> None:
        for h in self.hosts.values():
            if (t := h.get_timer()) is not None and t <= now:
                h.handle_timer(now)

    def next_event(self) -> object | None:
        for h in self.hosts.values():
            if (e := h.next_event()) is not None:
                return e
        return None


def build_field(
    config: AreaConfig | None = None,
    seed: int = 1,
    headend: Callable[[KeyServer], Engine] | None = None,
) -> Field:
    """`headend(key_server)`: an engine put at `HEADEND` behind the channel too."""
    config = config or AreaConfig(seed=seed)
    kek = FileKek(random.Random(seed).randbytes(32), seeded_random(seed * 19))
    store = CredentialStore(":memory:", kek)
    store.enroll(HANDHELD_ID, HANDHELD_PSK, 0.0)
    allowed = {global_of(handheld_eui().interface_id())}
    for i in range(1, config.meters + 1):
        store.enroll(area_meter_id(i), area_meter_psk(config.seed, i), 0.0)
        allowed.add(global_of(meter_eui(i).interface_id()))
    keyserver = KeyServer(
        store,
        rng=seeded_random(seed * 23),
        paa_config=PaaConfig(allowed_relays=frozenset(allowed), req_retransmit=MESH_REQ_RETRANSMIT),
        session_lifetime=86_400.0,
        now=0.0,
    )
    keyserver.enable_group_keys(GroupKeyManager([AREA_PAN.value], rng=seeded_random(seed), now=0.0))
    hh = radio_addr(handheld_eui())
    office: Engine = Ipv6Host(keyserver, KEYSERVER, hh)
    if headend is not None:
        office = Office(
            Ipv6Host(keyserver, KEYSERVER, hh), Ipv6Host(headend(keyserver), HEADEND, hh)
        )
    area = build_area(config, office, KEYSERVER)
    cfg = HandheldConfig(HANDHELD_ID, handheld_eui(), AREA_PAN, AREA_PREFIX, KEYSERVER)
    return Field(area, keyserver, store, cfg)


@dataclass
class OfflineField:
    area: Area
    run: OfflineRun

    @property
    def office(self) -> OfflineOffice:
        return self.run.office

    @property
    def session(self) -> WorkSession:
        return self.run.session


def build_offline_field(
    opened: OpenedWorkOrder,
    readings: SealedReadings,
    meters: int,
    seed: int = 5,
    intervals: int = 4,
) -> OfflineField:
    """An area of `meters` meters (C12.22 for `HEADEND_TITLE`) and, at the handheld's radio
    address, the `OfflineRun` of `amistack workorder run` for the opened order (serving those
    of the area's meters the order names), started at time 0: the handheld is key server and
    collector, with no channel at all."""
    served = {area_meter_id(i): meter_eui(i) for i in range(1, meters + 1)
              if area_meter_id(i) in opened.order.meters}  # fmt: skip
    cfg = HandheldConfig(HANDHELD_ID, handheld_eui(), AREA_PAN, AREA_PREFIX, KEYSERVER,
                         rpl=area_rpl(), pac=mesh_pac_config())  # fmt: skip
    config = OfflineRunConfig(cfg, HEADEND, HEADEND_TITLE, served, intervals=intervals,
                              paa=PaaConfig(req_retransmit=MESH_REQ_RETRANSMIT))  # fmt: skip
    run = OfflineRun(opened, readings, config, seeded_random(seed), 0.0)
    area = build_area(AreaConfig(meters=meters, headend_title=HEADEND_TITLE), None, KEYSERVER)
    area.net.add_node(area.handheld_addr, run)
    area.net.call_at(0.0, area.handheld_addr, run.start)
    return OfflineField(area, run)
