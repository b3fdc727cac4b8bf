"""An isolated area on the virtual clock: meters no concentrator hears, and a handheld's radio.

`build_area(AreaConfig)` places `meters` meters (`mesh.node.MeshNode`, each with a real PaC and
EAP-PSK) in two rows east of the handheld's position, `spacing` apart, so the farther ones are
several radio hops out; the radio is `sim.radio.RadioMedium` (unit disk). Nothing is at the
handheld's radio address until a work session starts (`Area.attach(session)`), and
`Area.detach()` takes it away again: without the handheld the meters hear no one.

The handheld's channel to the office is the node at `handheld.WAN_ADDR`: the caller puts an
engine there (`office`): in tests a router to the real `KeyServer` engine behind
`mesh.wan.Ipv6Host`, in `runtime/handheld.py` the mutual-TLS channel to the real key server.
Meter `i` (1..N) is `area_meter_id(i)` with PSK `area_meter_psk(seed, i)` (simulation only);
`wrong_psk` meters hold another PSK.
"""

from __future__ import annotations

import ipaddress
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from amistack.addr import Addr, Engine, Eui64, PanId
from amistack.c1222.acse import ApTitle
from amistack.c1222.endpoint import C1222_PORT
from amistack.crypto import seeded_random
from amistack.eap.packet import EapType
from amistack.eap.peer import EapPeer
from amistack.eap.psk import EapPskPeer
from amistack.handheld.session import WAN_ADDR, WorkSession
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.ukmf import PurposeRegistry
from amistack.mesh.link import MeshLink
from amistack.mesh.node import MeshNode, MeshNodeEvent, radio_addr
from amistack.mesh.rpl.config import RplConfig
from amistack.mesh.rpl.node import RplNode
from amistack.mesh.rpl.packet import LINK_LOCAL_PREFIX
from amistack.mesh.security import LinkSecurity, MemoryCounterStore
from amistack.meter.model import DAY_S, MeterConfig, MeterModel
from amistack.meter.node import MeterNode, MeterNodeConfig, PushConfig, ap_title_for
from amistack.meter.tables import TimeScale
from amistack.pana.events import Authenticated
from amistack.pana.pac import PacConfig, PanaClient
from amistack.sim.clock import VirtualClock
from amistack.sim.mesh import MESH_PCI_RETRANSMIT, MESH_REQ_RETRANSMIT, MeshMedium
from amistack.sim.network import Network
from amistack.sim.radio import RadioMedium, UnitDisk

__all__ = [
    "AREA_PAN",
    "AREA_PREFIX",
    "Area",
    "AreaConfig",
    "area_meter_id",
    "area_meter_psk",
    "build_area",
    "handheld_eui",
    "mesh_pac_config",
]

AREA_PAN = PanId(0x0F1E)
AREA_PREFIX = bytes.fromhex("20010db800f1e0000000000000000000")  # 2001:db8:f1:e000::/64


def area_meter_id(i: int) -> str:
    return f"field-meter-{i:03d}"


def area_meter_psk(seed: int, i: int) -> bytes:
    """Meter `i`'s enrolled PSK (simulation only: derived from the seed)."""
    return random.Random(seed * 7_000_003 + i).randbytes(16)


def handheld_eui() -> Eui64:
    return Eui64(bytes.fromhex("02aa00000000fe01"))


def meter_eui(i: int) -> Eui64:
    return Eui64(b"\x02\xaa\x00\x00\x00" + i.to_bytes(3, "big"))


def mesh_pac_config() -> PacConfig:
    """PANA retransmission over several mesh hops (sim/mesh.py's reasoning)."""
    return PacConfig(pci_retransmit=MESH_PCI_RETRANSMIT, req_retransmit=MESH_REQ_RETRANSMIT)


def area_rpl() -> RplConfig:
    return RplConfig(
        dio_interval_min=10, dio_interval_doublings=8, dio_redundancy_constant=3,
        dao_ack_timeout=4.0, dao_retransmissions=6, dis_interval=5.0,
        default_lifetime=30, lifetime_unit=60,
    )  # fmt: skip


@dataclass(frozen=True)
class AreaConfig:
    meters: int = 6
    seed: int = 1
    spacing: float = 70.0  # m between a meter and the next one east
    radius: float = 100.0  # m, unit-disk range
    loss: float = 0.0
    wrong_psk: frozenset[int] = frozenset()  # meter indexes (1..meters) with a PSK not enrolled
    headend_title: ApTitle | None = None  # meters run C12.22 (ap_title_for(id)) for this head-end
    model_epoch: float = 1_790_000_000.0  # the meters' model time when the area's clock starts
    time_factor: float = 1.0  # model seconds per area second (pushes come sooner above 1)
    rpl: RplConfig = field(default_factory=area_rpl)

    def __post_init__(self) -> None:
        if self.meters < 1 or self.spacing <= 0 or self.radius <= 0 or not 0 <= self.loss < 1:
            raise ValueError("invalid area configuration")


def _eap(ident: bytes, psk: bytes, rng: Callable[[int], bytes]) -> Callable[[], EapPeer]:
    def eap() -> EapPeer:
        return EapPeer(ident, {EapType.PSK: lambda: EapPskPeer(ident, psk, rng)})

    return eap


def psk_peer(ident: str, psk: bytes, rng: Callable[[int], bytes]) -> Callable[[], EapPeer]:
    """An EAP-PSK peer factory for `ident` (the handheld's own credential, too)."""
    return _eap(ident.encode(), psk, rng)


class MeshMeter:
    """A meter on the mesh with its C12.22 endpoint: the `MeshNode` joins and routes, the
    `MeterNode` answers the head-end over the DODAG (UDP 1153 to the node's global address),
    under C12.22 keys its key ring derives from each PANA success (as meter/access.py does)."""

    def __init__(self, mesh: MeshNode, meter: MeterNode) -> None:
        self.mesh = mesh
        self.meter = meter
        self._events: deque[MeshNodeEvent] = deque()
        mesh.app = self._app

    def _app(self, src: bytes, sport: int, dport: int, payload: bytes, now: float) -> None:
        if dport == C1222_PORT:
            self.meter.receive_datagram(payload, (str(ipaddress.IPv6Address(src)), sport), now)
        else:
            self.mesh.counters["app-port-closed"] += 1

    def _drain(self, now: float) -> None:
        while (event := self.mesh.next_event()) is not None:
            if isinstance(event, Authenticated):
                keys = self.meter.ring.install(event.context, event.lifetime, now)
                self.meter.key_events(keys, now)
            self._events.append(event)

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        self.mesh.receive_datagram(data, addr, now, multicast)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        self._drain(now)
        for data, (host, port) in self.meter.datagrams_to_send(now):
            self.mesh.send_udp(ipaddress.IPv6Address(host).packed, C1222_PORT, port, data, now)
        out = self.mesh.datagrams_to_send(now)
        self._drain(now)
        return out

    def get_timer(self) -> float | None:
        times = [t for t in (self.mesh.get_timer(), self.meter.get_timer()) if t is not None]
        return min(times, default=None)

    def handle_timer(self, now: float) -> None:
        for engine in (self.mesh, self.meter):
            if (t := engine.get_timer()) is not None and t <= now:
                engine.handle_timer(now)

    def next_event(self) -> object | None:
        return self._events.popleft() if self._events else self.meter.next_event()


class Area:
    def __init__(
        self,
        config: AreaConfig,
        net: Network[MeshMedium],
        meters: list[MeshNode],
        c1222: list[MeterNode],
    ) -> None:
        self.config = config
        self.net = net
        self.meters = meters
        self.c1222 = c1222  # the meters' C12.22 ends (with `headend_title`), same order
        self.handheld_addr = radio_addr(handheld_eui())
        self.session: WorkSession | None = None

    def attach(self, session: WorkSession) -> None:
        """The technician started work: the handheld's radio is on."""
        self.session = session
        self.net.add_node(self.handheld_addr, session)
        self.net.call_at(self.net.now, self.handheld_addr, session.start)

    def detach(self) -> None:
        """The session ended: the handheld's radio is off (its last datagrams already left)."""
        if self.session is not None:
            self.net.remove_node(self.handheld_addr)
            self.session = None

    def authenticated(self) -> list[int]:
        """Meters (1..N) holding a PANA session with the key server."""
        return [i for i, m in enumerate(self.meters, 1) if m.authenticated]

    def relay_ready(self) -> list[int]:
        return [i for i, m in enumerate(self.meters, 1) if m.relay_ready]

    def report(self) -> dict[str, Any]:
        return {
            "meters": len(self.meters),
            "authenticated": self.authenticated(),
            "relay_ready": self.relay_ready(),
            "simulated_s": round(self.net.now, 3),
        }


def build_area(
    config: AreaConfig,
    office: Engine | None,
    keyserver: Addr,
    start: float = 0.0,
    headend: Addr | None = None,
) -> Area:
    """The area with `office` at `WAN_ADDR` (the handheld's channel; None: an offline handheld
    has no channel), meters powered on;
    `keyserver`: the PAA's IPv6 address and port as the channel reaches it (meters that relay
    for their neighbours send PRYs there); `headend`: where the meters push their interval
    data (with `config.headend_title`), every 15 model minutes."""
    radio = RadioMedium(UnitDisk(config.radius, config.loss), seed=config.seed)
    net = Network(MeshMedium(radio, frozenset({WAN_ADDR})), VirtualClock(start))
    if office is not None:
        net.add_node(WAN_ADDR, office)
    radio.place(radio_addr(handheld_eui()), 0.0, 0.0)
    meters: list[MeshNode] = []
    c1222: list[MeterNode] = []
    for i in range(1, config.meters + 1):
        eui = meter_eui(i)
        seed = config.seed * 10_000 + i
        psk = area_meter_psk(config.seed + (i in config.wrong_psk), i)
        rng = seeded_random(seed)
        pac_rng = seeded_random(seed * 3)
        eap = psk_peer(area_meter_id(i), psk, pac_rng)

        def new_pac(parent: Addr, eap: Callable[[], EapPeer] = eap, r: Any = pac_rng) -> Any:
            return PanaClient(mesh_pac_config(), eap, r, parent)

        link = MeshLink(LinkSecurity(eui, MemoryCounterStore()), AREA_PAN, seeded_random(seed * 5))
        rpl = RplNode(LINK_LOCAL_PREFIX + eui.interface_id(), config.rpl, seeded_random(seed * 7))
        meter = MeshNode(link, rpl, keyserver, rng, new_pac=new_pac)
        row = (i - 1) % 2
        radio.place(radio_addr(eui), ((i + 1) // 2) * config.spacing, 30.0 * row)
        engine: Engine = meter
        if config.headend_title is not None:
            node = MeterNode(
                MeterNodeConfig(
                    ap_title_for(area_meter_id(i)), config.headend_title, headend,
                    push=PushConfig(enabled=headend is not None, max_offset_s=120.0),
                    time=TimeScale(start, config.model_epoch, config.time_factor),
                ),
                MeterModel(seed, MeterConfig(install_time=config.model_epoch - 40 * DAY_S,
                                             outage_rate_per_year=0.0)),
                KeyRing(area_meter_id(i).encode(), PurposeRegistry()),
                seeded_random(seed * 11),
            )  # fmt: skip
            node.start(start)
            engine = MeshMeter(meter, node)
            c1222.append(node)
        net.add_node(radio_addr(eui), engine)
        meters.append(meter)
    return Area(config, net, meters, c1222)
