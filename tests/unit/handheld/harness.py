"""An isolated area, a handheld work session and the real key server engine on the virtual clock."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

from amistack.access import Principal, Role
from amistack.addr import Addr
from amistack.crypto import seeded_random
from amistack.handheld import HandheldConfig, WorkSession
from amistack.keymgmt.groupkeys import GroupKeyManager
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.server import KeyServer
from amistack.keymgmt.store import CredentialStore
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
HANDHELD_ID = "handheld-7"
HANDHELD_PSK = bytes.fromhex("5a" * 16)


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
        work_order: str = "WO-1", idle_timeout: float = 900.0,
    ) -> WorkSession:  # fmt: skip
        tech = Principal("tina", roles, "session")
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


def build_field(config: AreaConfig | None = None, seed: int = 1) -> Field:
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
    office = Ipv6Host(keyserver, KEYSERVER, radio_addr(handheld_eui()))
    area = build_area(config, office, KEYSERVER)
    cfg = HandheldConfig(HANDHELD_ID, handheld_eui(), AREA_PAN, AREA_PREFIX, KEYSERVER)
    return Field(area, keyserver, store, cfg)
