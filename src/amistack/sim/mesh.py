"""A meter mesh forming on the virtual clock: every meter joins through PANA relays.

`build_mesh(MeshConfig)` places `nodes` meters uniformly at random in a square (random geometric
placement from the seed; the side is chosen for an expected `degree` neighbours per node under the
unit-disk radius) and concentrators at the centres of a k x k grid over it, k = round(sqrt(nodes /
per_concentrator)) (one at the centre up to 900 meters by default): as in a real AMI field network,
a concentrator serves a few hundred meters, so the depth of each DODAG, and with it the cost of one
meter's join, stays bounded as the mesh grows. k = round(sqrt(N / 400)) still gives 100 meters a
DODAG at 100 nodes, 250 at 1,000 and 400 at 10,000; `meters_per_dodag` M keeps that fixed instead:
round(N / M) concentrators, each at the centre of one square cell of the same total area, the cells
in rows x cols (the factorisation nearest a square: 10 cells are 2 x 5, a prime number of cells a
strip), so the density and the meters per DODAG (N / cells, stated in the report) are the same at
every size as far as rounding allows; the DODAGs along the edges differ from the inner ones (fewer
neighbouring DODAGs), as in any placement. Concentrator j is the root of its own DODAG with its
own /64 (2001:db8:1:j::/64); a meter joins whichever it hears. The radio is `sim.radio.RadioMedium`
with `UnitDisk(radius, loss)`, no collisions (stated in every report). Each concentrator is a
`mesh.node.MeshNode` (DODAG root, border router, PANA relay); the key server is the real
`keymgmt.KeyServer` (PAA + EAP-PSK over an in-memory credential store with every meter enrolled)
behind an IPv6 address on the WAN, `WAN_LATENCY` away; its PAA accepts relayed PANA only from the
concentrators' and the meters' own addresses (`allowed_relays`), and its answers go back through the
concentrator whose prefix the destination has. Every meter is a `MeshNode` with a real PaC
(EAP-PSK); `wrong_psk` meters hold a PSK the server does not have.

C12.22 over the mesh (`MeshConfig(c1222=True)`): every meter also runs the real C12.22 meter
endpoint (`meter.node.MeterNode`, its metering model and key ring) on the MeshNode's application
UDP port 1153 (`MeshMeter`); the ring gets the C12.22 keys of the meter's own UKMF session when
its PANA succeeds through the relays. A real head-end (`headend.service.HeadEnd`: C12.22 client,
collector, SQLite in memory) sits at its own IPv6 address on the WAN and takes the meters' keys
from the key server engine by key id (`headend.keys.HeadendKeys`, as sim/fleet.py does). The
concentrators' WAN side is then a router (`WanRouter`) that hands each packet to the key server,
the head-end, or the concentrator whose prefix the destination has. `MeshSim.read_all` has the
head-end read every joined meter's current registers (ST23) once over the mesh, IPv6/UDP
unchanged: nothing above IP knows about the mesh.

`MeshSim.run(max_time)` runs until every meter that can be reached over the radio graph and holds
the right PSK is relay-ready (authenticated, in the DODAG, routable), or `max_time`; `report()`
gives the DODAG, join times and frame counts as a JSON-able dict.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import random
import statistics
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from amistack.addr import Addr, Eui64, PanId, TimerlessEngine
from amistack.c1222.acse import ApTitle
from amistack.c1222.tables import CurrentRegisters
from amistack.crypto import seeded_random
from amistack.eap.packet import EapType
from amistack.eap.peer import EapPeer
from amistack.eap.psk import EapPskPeer
from amistack.headend.collector import CollectorConfig, MeterTarget, Mode, RegisterRead
from amistack.headend.keys import HeadendKeys, repository_resolver
from amistack.headend.service import HeadEnd, HeadEndConfig
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt.events import GroupKeyExpired, GroupKeyInstalled
from amistack.keymgmt.groupkeys import GroupKeyManager
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.server import KeyServer
from amistack.keymgmt.store import CredentialStore
from amistack.keymgmt.ukmf import PurposeRegistry
from amistack.mesh.errors import MeshDecodeError
from amistack.mesh.ipv6 import Ipv6Packet
from amistack.mesh.link import MeshLink
from amistack.mesh.node import JoinConfig, MeshNode, ParentChosen, RelayReady, radio_addr
from amistack.mesh.rpl.config import RplConfig
from amistack.mesh.rpl.messages import PrefixInformation
from amistack.mesh.rpl.node import RplNode
from amistack.mesh.rpl.packet import LINK_LOCAL_PREFIX
from amistack.mesh.security import LinkSecurity, MemoryCounterStore
from amistack.mesh.wan import Ipv6Host
from amistack.meter.model import DAY_S, MeterConfig, MeterModel
from amistack.meter.node import MeterNode, MeterNodeConfig, PushConfig
from amistack.meter.tables import TimeScale
from amistack.pana.constants import PANA_PORT
from amistack.pana.events import Authenticated, SessionTerminated
from amistack.pana.paa import PaaConfig
from amistack.pana.pac import PacConfig, PanaClient
from amistack.pana.timers import PCI_RETRANSMIT, REQ_RETRANSMIT
from amistack.sim.medium import Delivery
from amistack.sim.network import Network
from amistack.sim.radio import RadioMedium, UnitDisk
from amistack.sim.stats import percentile_time, quantile

__all__ = [
    "MeshConfig",
    "MeshMeter",
    "MeshSim",
    "WanRouter",
    "build_mesh",
    "concentrator_eui",
    "meter_node",
    "prefix_of",
    "radio_hops",
]

PAN = PanId(0x0AB1)
MAX_CONCENTRATORS = 225  # DODAG prefixes 2001:db8:1:j::/64 (and the WAN's routes) are kept few
MESH_PREFIX = bytes.fromhex("20010db8000100000000000000000000")
KEYSERVER_IP = "2001:db8:ffff::1"
KEYSERVER_HOST: Addr = ("wan:keyserver", 0)
WAN_LATENCY = 0.010  # s one way between concentrator and key server
HEADEND_IP = "2001:db8:ffff::2"
HEADEND_HOST: Addr = ("wan:headend", 0)
WAN_ROUTER: Addr = ("wan:router", 0)  # the concentrators' WAN side (with c1222)
C1222_PORT = 1153  # ANSI C12.22 over UDP (IANA port 1153; ANSI C12.22-2008 Annex)
HEADEND_TITLE = ApTitle.parse("2.16.124.113620.1.22.0.1")
METER_EPOCH = 1_790_000_100.0  # model time at simulated time 0 (2026-09-21, as sim/fleet.py)
# The meters were installed the day before: a meter's first register read computes its model
# from installation on (40 days cost ~9 ms of CPU per meter, half of the C12.22 read of a
# 1,000-node mesh, and nothing of the mesh's); the history's length changes no octet on the air
METER_HISTORY = 1 * DAY_S
READ_SPACING = 0.05  # s between the head-end's read starts (20 reads/s over the whole mesh)
READ_TIMEOUT = 10.0  # s per C12.22 attempt: a few hops of fragmented, acknowledged frames
READ_RETRIES = 2
SESSION_LIFETIME = 86_400.0  # s: no re-authentication inside a formation run
# PANA retransmission over a multi-hop mesh: a round trip through a few hops of fragmented,
# acknowledged frames takes seconds, so the first retransmission waits 4 s instead of RFC 5191
# §9's 1 s (the other parameters stay; Wi-SUN lengthens its EAPOL timers the same way)
MESH_PCI_RETRANSMIT = replace(PCI_RETRANSMIT, irt=4.0)
MESH_REQ_RETRANSMIT = replace(REQ_RETRANSMIT, irt=4.0)


@dataclass(frozen=True)
class MeshConfig:
    nodes: int = 100
    seed: int = 1
    radius: float = 100.0  # m, unit-disk range
    loss: float = 0.05  # probability that one frame copy is lost on any link
    degree: float = 12.0  # expected neighbours per node (sets the area)
    per_concentrator: int = 400  # meters per concentrator (sets the k x k grid of DODAG roots)
    # Set: round(nodes / this) concentrators, each at the centre of a square cell of the area,
    # the cells in rows x cols (the most nearly square factorisation), so every DODAG has about
    # this many meters at every size (per_concentrator is then unused; module docstring)
    meters_per_dodag: int | None = None
    wrong_psk: frozenset[int] = frozenset()  # meter indexes (1..nodes) with a PSK the server lacks
    c1222: bool = False  # meters run the C12.22 endpoint; a head-end on the WAN reads them
    push: PushConfig | None = None  # with c1222: the meters push their intervals to the head-end
    session_lifetime: float = SESSION_LIFETIME  # the key server's PANA session (key) lifetime
    rpl: RplConfig = field(
        default_factory=lambda: RplConfig(
            dio_interval_min=10, dio_interval_doublings=8, dio_redundancy_constant=3,
            dao_ack_timeout=4.0, dao_retransmissions=6, dis_interval=5.0,
            default_lifetime=30, lifetime_unit=60,
        )
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.radius <= 0 or not 0 <= self.loss < 1 or self.degree <= 0:
            raise ValueError("invalid mesh configuration")
        per_dodag = self.meters_per_dodag
        if self.per_concentrator < 1 or (per_dodag is not None and per_dodag < 1):
            raise ValueError("per_concentrator and meters_per_dodag must be >= 1")
        if self.concentrators > MAX_CONCENTRATORS:
            raise ValueError(f"the placement gives more than {MAX_CONCENTRATORS} concentrators")

    @property
    def grid(self) -> int:
        """k of the `per_concentrator` placement: the concentrators on a k x k grid."""
        return max(1, round(math.sqrt(self.nodes / self.per_concentrator)))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the cells, a concentrator at the centre of each."""
        if self.meters_per_dodag is None:
            return self.grid, self.grid
        cells = max(1, round(self.nodes / self.meters_per_dodag))
        rows = max(r for r in range(1, math.isqrt(cells) + 1) if cells % r == 0)
        return rows, cells // rows

    @property
    def concentrators(self) -> int:
        rows, cols = self.shape
        return rows * cols

    @property
    def side(self) -> float:
        """The area's width: the square's side for `degree` expected neighbours, (n + 1) pi r^2
        / side^2 = degree (n + 1: a one-concentrator mesh's node count); with
        `meters_per_dodag`, that area as rows x cols square cells."""
        area = (self.nodes + 1) * math.pi * self.radius**2 / self.degree
        rows, cols = self.shape
        return math.sqrt(area * (cols / rows))  # rows x cols cells of side s: area = rows cols s^2

    @property
    def cell(self) -> float:
        """A cell's side (a concentrator at its centre)."""
        return self.side / self.shape[1]

    @property
    def height(self) -> float:
        rows, cols = self.shape
        return self.side if rows == cols else self.cell * rows

    def radio_model(self) -> dict[str, Any]:
        rows, cols = self.shape
        model: dict[str, Any] = {
            "model": "unit-disk",
            "radius_m": self.radius,
            "loss_per_frame": self.loss,
            "collisions": False,
            "phy": "FSK 920 MHz, 100 kbit/s (sim.radio.FSK_920)",
            "area_m": round(self.side, 1),
            "expected_degree": self.degree,
            "concentrators": rows * cols,
            "placement": f"uniform random (seed {self.seed}), concentrators at the centres of a "
            f"{rows} x {cols} grid",
        }
        if self.meters_per_dodag is not None:  # a rectangle: its height too
            model["area_m"] = [round(self.side, 1), round(self.height, 1)]
            model["meters_per_dodag"] = round(self.nodes / (rows * cols), 1)
        return model


def meter_id(i: int) -> str:
    return f"mesh-meter-{i:05d}"


def meter_psk(seed: int, i: int) -> bytes:
    """The PSK enrolled for meter `i` (simulation only: derived from the seed)."""
    return random.Random(seed * 1_000_003 + i).randbytes(16)


def node_eui(i: int) -> Eui64:
    """Node 0 is the concentrator, 1..N the meters."""
    return Eui64(b"\x02\x00\x00\x00\x00" + i.to_bytes(3, "big"))


def concentrator_eui(j: int) -> Eui64:
    """Concentrator 0 is node 0; the others have EUI-64s of their own range."""
    return node_eui(0) if j == 0 else Eui64(b"\x02\x00\x00\x00\x01" + j.to_bytes(3, "big"))


def prefix_of(j: int) -> bytes:
    """The /64 of concentrator j's DODAG: 2001:db8:1:j::/64."""
    return MESH_PREFIX[:6] + j.to_bytes(2, "big") + bytes(8)


def global_of(eui: Eui64, prefix: bytes = MESH_PREFIX) -> bytes:
    return prefix[:8] + eui.interface_id()


class MeshRelays:
    """The PAA's allowed relays (`PaaConfig.allowed_relays`): each concentrator's global
    address, and every meter's under every DODAG's prefix (a meter joins whichever DODAG it
    hears). Tested by prefix and interface id apart: the set of every meter under every prefix
    would hold N x N / meters-per-DODAG addresses (a million at 10,000 nodes in 100 DODAGs)."""

    def __init__(self, concentrators: set[str], prefixes: Sequence[bytes]) -> None:
        self.concentrators = concentrators
        self.prefixes = {p[:8] for p in prefixes}
        self.meters: set[bytes] = set()  # interface ids

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        if host in self.concentrators:
            return True
        try:
            ip = ipaddress.IPv6Address(host)
        except ValueError:
            return False
        packed = ip.packed
        return packed[:8] in self.prefixes and packed[8:] in self.meters and str(ip) == host


class MeshMedium:
    """The radio for the mesh, plus the wired WAN between the concentrator and the key
    server (every datagram between the mesh and a WAN address takes `WAN_LATENCY`; between
    two WAN addresses, the router and a server on its LAN, no time)."""

    def __init__(self, radio: RadioMedium, wan: frozenset[Addr]) -> None:
        self.radio = radio
        self.wan = wan
        self.counters: Counter[str] = radio.counters

    def transmit(self, src: Addr, dst: Addr, size: int, now: float) -> Sequence[Delivery]:
        if src in self.wan or dst in self.wan:
            self.counters["wan"] += 1
            lan = src in self.wan and dst in self.wan
            return [Delivery(dst, 0.0 if lan else WAN_LATENCY)]
        return self.radio.transmit(src, dst, size, now)

    def delivered(self, src: Addr, delivery: Delivery) -> None:
        if src not in self.wan and delivery.dst not in self.wan:
            self.radio.delivered(src, delivery)

    def remove(self, addr: Addr) -> None:
        self.radio.remove(addr)


class WanRouter(TimerlessEngine):
    """The WAN behind the concentrators (sans-IO): an IPv6 packet goes to the server whose
    address it is for (`hosts`), else to the concentrator whose /64 holds its destination
    (`routes`); anything else is counted and dropped."""

    def __init__(self, hosts: dict[str, Addr], routes: dict[bytes, Addr]) -> None:
        self.hosts = {ipaddress.IPv6Address(ip).packed: at for ip, at in hosts.items()}
        self.routes = routes
        self.counters: Counter[str] = Counter()
        self._out: list[tuple[bytes, Addr]] = []

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        try:
            dst = Ipv6Packet.decode(data).dst.packed
        except MeshDecodeError:
            self.counters["decode-error"] += 1
            return
        to = self.hosts.get(dst) or self.routes.get(dst[:8])
        if to is None:
            self.counters["no-route"] += 1
            return
        self.counters["routed"] += 1
        self._out.append((data, to))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out


class MeshMeter:
    """A meter on the mesh: its `MeshNode` (radio, RPL, PANA) with the C12.22 meter endpoint
    (`meter.node.MeterNode`) on the node's application UDP port `C1222_PORT`. The meter's
    key ring takes the keys of each PANA session the node completes (`session_event`), as
    `meter.access.MeterAccess` does for a meter on a point-to-point link."""

    def __init__(self, mesh: MeshNode, meter: MeterNode) -> None:
        self.mesh = mesh
        self.meter = meter
        self.counters: Counter[str] = Counter()
        # The meter's timer, as of the last call into it: nothing but this wrapper drives the
        # meter, and its timer changes only when it is called, while the mesh node beside it
        # is serviced for every frame the radio brings (most of which never reach the meter)
        self._meter_timer = meter.get_timer()
        mesh.app = self._app

    def _meter_changed(self) -> None:
        self._meter_timer = self.meter.get_timer()

    def _app(self, src: bytes, src_port: int, dst_port: int, payload: bytes, now: float) -> None:
        if dst_port != C1222_PORT:
            self.counters["app-wrong-port"] += 1
            return
        self.meter.receive_datagram(payload, (str(ipaddress.IPv6Address(src)), src_port), now)
        self._meter_changed()

    def session_event(self, event: object, now: float) -> None:
        """The node's PANA session gave or took keys: the ring and the endpoint follow."""
        ring = self.meter.ring
        if isinstance(event, Authenticated):
            self.meter.key_events(ring.install(event.context, event.lifetime, now), now)
        elif isinstance(event, SessionTerminated):
            self.meter.key_events(ring.retire(event.session_id, now), now)
        self._meter_changed()

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        self.mesh.receive_datagram(data, addr, now, multicast)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        sent = self.meter.datagrams_to_send(now)
        if sent:
            self._meter_changed()
        for data, (host, port) in sent:
            dst = ipaddress.IPv6Address(host).packed
            if not self.mesh.send_udp(dst, C1222_PORT, port, data, now):
                self.counters["c1222-not-sent"] += 1
        return self.mesh.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        mesh, meter = self.mesh.get_timer(), self._meter_timer
        if mesh is None:
            return meter
        return mesh if meter is None or mesh < meter else meter

    def handle_timer(self, now: float) -> None:
        at = self.mesh.get_timer()
        if at is not None and at <= now:
            self.mesh.handle_timer(now)
        at = self._meter_timer
        if at is not None and at <= now:
            self.meter.handle_timer(now)
            self._meter_changed()

    def next_event(self) -> object | None:
        mesh_event = self.mesh.next_event()
        if mesh_event is not None:
            return mesh_event
        meter_event = self.meter.next_event()
        if meter_event is not None:
            self._meter_changed()
        return meter_event


class MeshSim:
    def __init__(
        self,
        config: MeshConfig,
        net: Network[MeshMedium],
        concentrator: MeshNode,
        meters: list[MeshNode],
        keyserver: KeyServer,
        radio_distance: dict[int, int],
        more_concentrators: Sequence[MeshNode] = (),
        *,
        c1222: Sequence[MeshMeter] = (),
        headend: HeadEnd | None = None,
    ) -> None:
        """`c1222` (meter i is `c1222[i - 1]`) and `headend`: with `MeshConfig.c1222`."""
        self.config = config
        self.net = net
        self.concentrator = concentrator  # the first; `concentrators` has them all
        self.concentrators = [concentrator, *more_concentrators]
        self.meters = meters
        self.keyserver = keyserver
        self.radio_distance = radio_distance  # meter index (1..N) -> radio hops to a root
        self.reachable = set(radio_distance)  # the meters with a radio path to the concentrator
        self.authenticated_at: dict[int, float] = {}
        self.ready_at: dict[int, float] = {}
        self.parent_chosen: Counter[int] = Counter()
        self._index = {radio_addr(m.eui): i for i, m in enumerate(meters, 1)}
        self._waiting: set[int] = set()  # expected meters not relay-ready yet (see run)
        self.c1222 = list(c1222)
        self.headend = headend
        # meter index -> (read started, answered or None, registers or None): read_all's reads
        self.reads: dict[int, tuple[float, float | None, CurrentRegisters | None]] = {}
        self._reading: set[int] = set()
        net.on_event.append(self._on_event)

    @property
    def expected(self) -> set[int]:
        """The meters that can join: reachable and holding the enrolled PSK."""
        return self.reachable - self.config.wrong_psk

    def _on_event(self, addr: Addr, event: object, now: float) -> None:
        manager = self.keyserver.group_keys
        if addr == KEYSERVER_HOST and isinstance(event, GroupKeyInstalled | GroupKeyExpired):
            assert manager is not None  # the concentrators follow the key server's ring
            for concentrator in self.concentrators:
                concentrator.update_group_keys(manager.keys(PAN.value), now)
                self.net.service(radio_addr(concentrator.eui))
            return
        if addr == HEADEND_HOST and isinstance(event, RegisterRead):
            self._answered(event, now)
            return
        i = self._index.get(addr)
        if i is None:
            return
        if self.c1222 and isinstance(event, Authenticated | SessionTerminated):
            self.c1222[i - 1].session_event(event, now)
            self.net.service(addr)
        if isinstance(event, Authenticated):
            self.authenticated_at.setdefault(i, now)
        elif isinstance(event, RelayReady):
            self.ready_at.setdefault(i, now)
            self._waiting.discard(i)
        elif isinstance(event, ParentChosen):
            self.parent_chosen[i] += 1

    def on_radio_frame(self, write: Callable[[float, bytes], None], limit: int) -> None:
        """Hand `write(now, frame)` every 802.15.4 frame put on the air (not the WAN's IPv6
        packets), the first `limit` of them: a bounded capture (the CLI writes a pcap)."""
        wan = self.net.medium.wan
        written = 0

        def hook(now: float, src: Addr, dst: Addr, data: bytes) -> None:
            nonlocal written
            if written < limit and src not in wan and dst not in wan:
                written += 1
                write(now, data)

        self.net.capture_hooks.append(hook)

    def wireshark_keys(self) -> list[str]:
        """tshark's `-o` options for every group key the key server holds now (the key
        table of docs/mesh-keys.md; simulation keys, derived from the seed)."""
        manager = self.keyserver.group_keys
        keys = [] if manager is None else manager.keys(PAN.value)
        return [f'uat:ieee802154_keys:"{k.key.hex()}","{k.index}","No hash"' for k in keys]

    def wireshark_contexts(self) -> list[str]:
        """tshark's `-o` option for IPHC context 0 (the nodes compress global addresses under
        their DODAG's /64, `mesh.lowpan`): the first concentrator's prefix. tshark holds one
        context table for a whole capture, so with several DODAGs the other DODAGs' global
        addresses read wrong (their frames still decode and decrypt)."""
        prefix = ipaddress.IPv6Address(prefix_of(0))
        return [f"6lowpan.context0:{prefix}/64"]

    def run(self, max_time: float) -> bool:
        """Run until every expected meter is relay-ready; False if `max_time` came first."""
        self._waiting = self.expected - self.ready_at.keys()  # O(1) per step, not O(N)
        return self.net.run_while(lambda: bool(self._waiting), max_time)

    # -- C12.22 over the mesh ------------------------------------------------------------------

    def c1222_addr(self, i: int) -> Addr | None:
        """Meter i's C12.22 address: its global IPv6 address (once it has one), port 1153."""
        own = self.meters[i - 1].global_address
        return None if own is None else (str(ipaddress.IPv6Address(own)), C1222_PORT)

    def read(self, i: int, now: float) -> None:
        """The head-end starts reading meter i's current registers (ST23) now, at the address
        the meter has now (its prefix is its DODAG's); the answer lands in `reads`."""
        headend = self.headend
        if headend is None:
            raise ValueError("the mesh was built without c1222")
        mid, addr = meter_id(i), self.c1222_addr(i)
        self._reading.add(i)
        self.reads[i] = (now, None, None)
        if addr is None:  # no address, no route: a read that cannot be sent
            self._reading.discard(i)
            return
        target = headend.collector.target(mid)
        if target is None or target.addr != addr:
            headend.collector.remove_meter(mid)
            headend.collector.add_meter(MeterTarget(mid, meter_title(i), addr, "mesh"), now)
        headend.collector.read_registers(mid, now)

    def _answered(self, event: RegisterRead, now: float) -> None:
        i = int(event.meter_id.rsplit("-", 1)[1])
        if i in self._reading:
            self._reading.discard(i)
            self.reads[i] = (self.reads[i][0], now, event.registers)

    def read_all(self, within: float) -> dict[str, Any]:
        """The head-end reads every relay-ready meter still there once, `READ_SPACING` apart,
        over the mesh; runs until every read is answered or failed (the C12.22 client's
        timeout and retries), or `within` simulated seconds. Returns `read_report`."""
        start = self.net.now
        meters = [i for i in sorted(self.ready_at)
                  if radio_addr(self.meters[i - 1].eui) in self.net]  # fmt: skip
        for k, i in enumerate(meters):
            at = start + k * READ_SPACING
            self.net.call_at(at, HEADEND_HOST, functools.partial(self.read, i))
        self._reading.update(meters)  # until each read has started and ended
        self.net.run_while(lambda: bool(self._reading), start + within)
        return self.read_report(meters)

    def read_report(self, meters: Sequence[int]) -> dict[str, Any]:
        """Delivery ratio and simulated latency (request start to answer, retries included)
        of the reads of `meters`."""
        answered = [self.reads[i] for i in meters if i in self.reads]
        latency = sorted(round(t1 - t0, 3) for t0, t1, regs in answered
                         if t1 is not None and regs is not None)  # fmt: skip
        headend = self.headend
        return {
            "meters": len(meters),
            "delivered": len(latency),
            "delivery_ratio": round(len(latency) / len(meters), 4) if meters else None,
            "latency_s": {
                "p50": quantile(latency, 0.5),
                "p99": quantile(latency, 0.99),
                "max": latency[-1] if latency else None,
            },
            "read": "ST23 current registers, one C12.22 read request per meter, EAX'",
            "spacing_s": READ_SPACING,
            "timeout_s": READ_TIMEOUT,
            "retries": READ_RETRIES,
            "headend": {} if headend is None else dict(sorted(headend.collector.counters.items())),
        }

    def frames_sent(self, node: MeshNode) -> int:
        c = node.link.counters
        return c["frames-sent"] + c["retransmissions"] + c["acks-sent"]

    def dodag(self) -> list[dict[str, Any]]:
        """Every node still there (the concentrators first, as node 0, then meters 1..N):
        its EUI-64, role, position, preferred parent, rank and hop count."""
        nodes = [*self.concentrators, *self.meters]
        roots = {c.eui for c in self.concentrators}
        parent_of: dict[Eui64, Eui64 | None] = {}
        for node in nodes:
            pref = node.rpl.preferred if node.rpl.joined else None
            parent_of[node.eui] = None if pref is None else Eui64.from_interface_id(pref[8:])
        hops_of: dict[Eui64, int | None] = {root: 0 for root in roots}

        def hops(eui: Eui64) -> int | None:
            path: list[Eui64] = []
            at: Eui64 | None = eui
            while at is not None and at not in hops_of and at not in path:
                path.append(at)
                at = parent_of.get(at)
            found = None if at is None or at in path else hops_of[at]
            for step in reversed(path):  # memoised: the whole table in O(N)
                found = None if found is None else found + 1
                hops_of[step] = found
            return hops_of[eui]

        out = []
        first_meter = len(self.concentrators)
        for i, node in enumerate(nodes):
            if radio_addr(node.eui) not in self.net:
                continue  # removed (a node that died)
            x, y = self.net.medium.radio.position(radio_addr(node.eui))
            parent = parent_of[node.eui]
            out.append({
                "node": max(0, i - first_meter + 1),
                "role": "concentrator" if node.eui in roots else "meter",
                "eui64": str(node.eui),
                "x": round(x, 1),
                "y": round(y, 1),
                "parent": None if parent is None else str(parent),
                "rank": node.rpl.rank if node.rpl.joined else None,
                "hops": hops(node.eui),
                "authenticated": node.authenticated,
            })  # fmt: skip
        return out

    def report(self, include_dodag: bool = True) -> dict[str, Any]:
        n = len(self.meters)
        auth = sorted(self.authenticated_at.values())
        ready = sorted(self.ready_at.values())
        expected = len(self.expected)
        frames = [self.frames_sent(m) for m in [*self.concentrators, *self.meters]]
        hops = [d["hops"] for d in self.dodag() if d["hops"]]
        report: dict[str, Any] = {
            "nodes": n,
            "seed": self.config.seed,
            "radio": self.config.radio_model(),
            "rpl": {
                "mop": self.config.rpl.mop.name,
                "route_lifetime_s": self.config.rpl.route_lifetime,
                "dao_retransmissions": self.config.rpl.dao_retransmissions,
                "dio_interval_min": self.config.rpl.dio_interval_min,
                "dio_interval_doublings": self.config.rpl.dio_interval_doublings,
                "dio_redundancy_constant": self.config.rpl.dio_redundancy_constant,
            },
            "reachable": len(self.reachable),
            "wrong_psk": len(self.config.wrong_psk),
            "expected_to_join": expected,
            "authenticated": len(auth),
            "relay_ready": len(ready),
            "simulated_s": round(self.net.now, 3),
            "authenticated_s": {
                f"p{p}": percentile_time(auth, expected, p / 100) for p in (50, 95, 100)
            },
            "relay_ready_s": {
                f"p{p}": percentile_time(ready, expected, p / 100) for p in (50, 95, 100)
            },
            "frames_per_node": round(sum(frames) / len(frames), 1),
            "frames_max_node": max(frames),
            "hops": {"max": max(hops, default=0), "mean": round(statistics.fmean(hops or [0]), 2)},
            "pana_runs": sum(self.parent_chosen.values()),
            "keyserver": dict(sorted(self.keyserver.counters.items())),
            "mesh": _sum_counters([*self.concentrators, *self.meters]),
            "radio_counters": dict(sorted(self.net.medium.counters.items())),
        }
        if include_dodag:
            report["dodag"] = self.dodag()
        return report


def _sum_counters(nodes: list[MeshNode]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for node in nodes:
        total.update(node.counters)
        total.update({f"relay-{k}": v for k, v in node.relay.counters.items()})
        total.update({f"link-{k}": v for k, v in node.link.counters.items()})
    return dict(sorted(total.items()))


def radio_hops(
    radio: RadioMedium, start: Addr, index: dict[Addr, int], also: Sequence[Addr] = ()
) -> dict[int, int]:
    """Meter index -> hops over the radio graph from `start` (or the nearest of `start` and
    `also`; breadth first), for the meters that have a path at all."""
    hops = dict.fromkeys([start, *also], 0)
    todo = deque(hops)
    while todo:
        at = todo.popleft()
        for other, _ in radio.neighbours(at):
            if other not in hops:
                hops[other] = hops[at] + 1
                todo.append(other)
    return {index[a]: h for a, h in hops.items() if a in index}


def _link(eui: Eui64, seed: int, counters: MemoryCounterStore | None = None) -> MeshLink:
    """A link with no key yet (the group keys are installed from the key server's)."""
    store = MemoryCounterStore() if counters is None else counters
    return MeshLink(LinkSecurity(eui, store), PAN, seeded_random(seed))


MESH_PAC = PacConfig(pci_retransmit=MESH_PCI_RETRANSMIT, req_retransmit=MESH_REQ_RETRANSMIT)
REBOOT_SEED = 1_000_000_007  # a meter's seeds move on by this at each boot (fresh randomness)


def _new_pac(ident: bytes, psk: bytes, seed: int, config: PacConfig = MESH_PAC) -> Any:
    rng = seeded_random(seed)

    def eap() -> EapPeer:
        return EapPeer(ident, {EapType.PSK: lambda: EapPskPeer(ident, psk, rng)})

    def new(parent: Addr) -> PanaClient:
        return PanaClient(config, eap, rng, parent)

    return new


def meter_node(
    config: MeshConfig,
    i: int,
    *,
    boot: int = 0,
    counters: MemoryCounterStore | None = None,
    pac: PacConfig = MESH_PAC,
    join: JoinConfig | None = None,
) -> MeshNode:
    """Meter i's mesh node as it powers on: `boot` 0 in `build_mesh`; a later boot (power back
    after an outage) draws fresh randomness and keeps only `counters`, the link's frame
    counters from non-volatile memory (IEEE 802.15.4: a frame counter never goes back)."""
    eui, s = node_eui(i), config.seed + boot * REBOOT_SEED
    psk = meter_psk(config.seed + 1 if i in config.wrong_psk else config.seed, i)
    rpl = RplNode(LINK_LOCAL_PREFIX + eui.interface_id(), config.rpl,
                  seeded_random(s * 1_000 + i))  # fmt: skip
    return MeshNode(
        _link(eui, s * 2_000 + i, counters), rpl, (KEYSERVER_IP, PANA_PORT),
        seeded_random(s * 3_000 + i),
        new_pac=_new_pac(meter_id(i).encode(), psk, s * 4_000 + i, pac), config=join,
    )  # fmt: skip


def meter_title(i: int) -> ApTitle:
    return ApTitle((0, 1000 + i), relative=True)


def _concentrator(
    config: MeshConfig, j: int, manager: GroupKeyManager, paa: Addr, wan: Addr
) -> MeshNode:
    """Concentrator j: root of its own DODAG, with its own prefix (seeds apart from the
    meters'; concentrator 0 keeps the seeds a one-concentrator mesh always had)."""
    eui, seed = concentrator_eui(j), config.seed + 1_000_003 * j
    rpl = RplNode(LINK_LOCAL_PREFIX + eui.interface_id(), config.rpl, seeded_random(seed * 31),
                  root_prefix=PrefixInformation(prefix_of(j), 64))  # fmt: skip
    return MeshNode.concentrator(
        _link(eui, seed * 37), rpl, paa, seeded_random(seed * 41), wan,
        manager.keys(PAN.value), 0.0,
    )  # fmt: skip


def build_mesh(config: MeshConfig) -> MeshSim:
    rng = random.Random(config.seed)
    (rows, k), cell = config.shape, config.cell
    width, height = config.side, config.height
    radio = RadioMedium(UnitDisk(config.radius, config.loss), seed=config.seed)
    wan = (
        frozenset({KEYSERVER_HOST, HEADEND_HOST, WAN_ROUTER})
        if config.c1222
        else frozenset({KEYSERVER_HOST})
    )
    net = Network(MeshMedium(radio, wan))
    manager = GroupKeyManager([PAN.value], rng=seeded_random(config.seed * 43), now=0.0)
    paa: Addr = (KEYSERVER_IP, PANA_PORT)
    gateway = WAN_ROUTER if config.c1222 else KEYSERVER_HOST
    concentrators = [_concentrator(config, j, manager, paa, gateway) for j in range(rows * k)]
    prefixes = [prefix_of(j) for j in range(rows * k)]
    for j, concentrator in enumerate(concentrators):
        radio.place(radio_addr(concentrator.eui), (j % k + 0.5) * cell, (j // k + 0.5) * cell)
    relays = MeshRelays(
        {str(ipaddress.IPv6Address(global_of(c.eui, p)))
         for c, p in zip(concentrators, prefixes, strict=True)}, prefixes,
    )  # fmt: skip
    kek = FileKek(random.Random(config.seed * 17).randbytes(32), seeded_random(config.seed * 19))
    store = CredentialStore(":memory:", kek)
    registry = PurposeRegistry()
    meters = []
    c1222: list[MeshMeter] = []
    spots = [(rng.uniform(0.0, width), rng.uniform(0.0, height)) for _ in range(config.nodes)]
    built: dict[int, tuple[MeshNode, MeshMeter | None]] = {}
    for i in _near_first(spots, config.radius):
        meter = meter_node(config, i)
        endpoint = _meter_endpoint(config, i, registry) if config.c1222 else None
        built[i] = (meter, None if endpoint is None else MeshMeter(meter, endpoint))
    for i in range(1, config.nodes + 1):
        eui = node_eui(i)
        store.enroll(meter_id(i), meter_psk(config.seed, i), 0.0)
        relays.meters.add(eui.interface_id())
        radio.place(radio_addr(eui), *spots[i - 1])
        meter, with_c1222 = built.pop(i)
        meters.append(meter)
        if with_c1222 is not None:
            c1222.append(with_c1222)
    keyserver = KeyServer(
        store,
        rng=seeded_random(config.seed * 23),
        paa_config=PaaConfig(allowed_relays=relays, req_retransmit=MESH_REQ_RETRANSMIT),
        session_lifetime=config.session_lifetime,
        registry=registry,
        now=0.0,
    )
    keyserver.enable_group_keys(manager)
    roots = [radio_addr(c.eui) for c in concentrators]
    routes = {p[:8]: root for p, root in zip(prefixes, roots, strict=True)}
    headend = None
    if config.c1222:
        headend = _headend(config, keyserver)
        net.add_node(KEYSERVER_HOST, Ipv6Host(keyserver, (KEYSERVER_IP, PANA_PORT), WAN_ROUTER))
        net.add_node(HEADEND_HOST, Ipv6Host(headend, (HEADEND_IP, C1222_PORT), WAN_ROUTER))
        hosts = {KEYSERVER_IP: KEYSERVER_HOST, HEADEND_IP: HEADEND_HOST}
        net.add_node(WAN_ROUTER, WanRouter(hosts, routes))
    else:
        ks = Ipv6Host(keyserver, (KEYSERVER_IP, PANA_PORT), roots[0], routes)
        net.add_node(KEYSERVER_HOST, ks)
    index = {radio_addr(m.eui): i for i, m in enumerate(meters, 1)}
    distance = radio_hops(radio, roots[0], index, roots[1:])
    for root, concentrator in zip(roots, concentrators, strict=True):
        net.add_node(root, concentrator)
    for i, meter in enumerate(meters):
        net.add_node(radio_addr(meter.eui), c1222[i] if c1222 else meter)
    sim = MeshSim(config, net, concentrators[0], meters, keyserver, distance, concentrators[1:],
                  c1222=c1222, headend=headend)  # fmt: skip
    for root, concentrator in zip(roots, concentrators, strict=True):
        net.call_at(0.0, root, concentrator.start)
    return sim


def _near_first(spots: Sequence[tuple[float, float]], radius: float) -> list[int]:
    """Meter indexes (1..N) in the order of their radio cells along a Z-order curve: built in
    this order, neighbours' objects lie near each other in memory, and a frame's receivers (a
    dozen neighbours) touch fewer cache lines and pages than in index order (random places)."""

    def z(i: int) -> tuple[int, int]:
        x, y = spots[i - 1]
        cx, cy, key = int(x // radius), int(y // radius), 0
        for bit in range(16):
            key |= ((cx >> bit) & 1) << (2 * bit) | ((cy >> bit) & 1) << (2 * bit + 1)
        return key, i

    return sorted(range(1, len(spots) + 1), key=z)


def _meter_endpoint(mesh: MeshConfig, i: int, registry: PurposeRegistry) -> MeterNode:
    """Meter i's C12.22 endpoint: its metering model, an empty key ring (filled by its UKMF
    sessions), pushes to the head-end only with `MeshConfig.push` (else the head-end reads)."""
    seed, push = mesh.seed, mesh.push
    config = MeterNodeConfig(
        meter_title(i), HEADEND_TITLE, None if push is None else (HEADEND_IP, C1222_PORT),
        push=push or PushConfig(enabled=False), time=TimeScale(0.0, METER_EPOCH),
        event_poll_s=900.0,
    )  # fmt: skip
    model = MeterModel(seed * 1_000_003 + i, MeterConfig(install_time=METER_EPOCH - METER_HISTORY))
    node = MeterNode(config, model, KeyRing(meter_id(i).encode(), registry),
                     seeded_random(seed * 5_000 + i))  # fmt: skip
    node.start(0.0)
    return node


def _headend(config: MeshConfig, keyserver: KeyServer) -> HeadEnd:
    """The head-end with every meter registered and commissioned, taking their C12.22 keys
    from the key server by key id. Its collector only reads on demand (`MeshSim.read`): no
    pushes are expected (a grace far beyond any run), no per-cell queueing."""
    repo = SqliteRepository(Path(":memory:"))
    for i in range(1, config.nodes + 1):
        repo.register_meter(meter_id(i), str(meter_title(i).absolute()), "mesh", "mesh", 0.0)
        repo.commission_meter(meter_id(i), 0.0)
    collector = CollectorConfig(
        mode=Mode.PUSHED, push_grace_s=365 * DAY_S, per_cell_outstanding=1_000_000,
        per_cell_rate=1e6, request_timeout=READ_TIMEOUT, request_retries=READ_RETRIES,
    )  # fmt: skip
    return HeadEnd(
        HeadEndConfig(
            HEADEND_TITLE,
            collector,
            command_poll_s=3_600.0,
            meter_refresh_s=3_600.0,
            eventlog_every_s=0.0,
        ),
        repo,
        HeadendKeys(repository_resolver(repo.meter_by_ap_title), keyserver),
        seeded_random(config.seed * 47),
        0.0,
    )
