"""The fleet in a radio mesh: `amistack sim fleet --topology mesh`, every scenario.

Each cell is a radio area of its own, built by `sim.mesh.build_mesh`: the cell's meters placed
at random around k x k concentrators (k = round(sqrt(meters in the cell / per_concentrator))),
each concentrator the root of its own RPL DODAG with its own /64; 802.15.4 frames under CCM*
with the group keys; every meter authenticates with PANA + EAP-PSK to the real key server
engine through its parent (RFC 6345 relays, hop by hop up the DODAG); the meters' C12.22
endpoints (`meter.node.MeterNode`) answer on their global IPv6 address. The head-end is the
real `headend.service.HeadEnd` with the star's collector (`sim.scenarios.fleet_config`: polled,
or pushed with the meters pushing over the mesh, 30-minute slots, backfill, a scratch SQLite file),
behind the WAN router of the concentrators.

Time: the meters' models run on the calendar `METER_EPOCH + t` (sim/mesh.py). The head-end is
put on the same calendar (`Calendar`: it sees the network's time plus METER_EPOCH) and so are
the keys it takes from the key server by key id (`CalendarKeys`), so slot boundaries and the
meters' interval boundaries coincide.

Addresses: a meter's C12.22 address is its global IPv6 address, whose prefix is its DODAG's, so
a meter that re-parents into another DODAG has a new one. The head-end learns it as the
concentrators' topology report would tell it: WAN_LATENCY after the root acknowledged the
meter's DAO (the root then routes to it), `Collector.set_address`; in pushed mode the push's
source address does it as well. The report is modelled, not a packet on the WAN.

Cells are independent simulations (each its own clock, key server and head-end): the WAN is not
a bottleneck and nothing crosses between radio areas, so `--shards K` runs the cells c with
c % K == shard one after another in each shard, and the result does not depend on K. Each
cell's key server engine sits behind a `ServiceQueue` with 1/cells of the fleet's capacity
(`--keyserver-rate`) and queue, as a shard's does in the star.

`blackout`, `rollover`, `revocation` measure what the star's do (sim/scenarios.py, whose merge
code turns the cells' counts into the same figures) with the mesh's engines: a blackout takes
every meter off the radio and brings each back at its drawn time as a rebooted node
(`sim.mesh.meter_node`, boot 1: no keys, no session, no RPL state; frame counters from NVM)
under its C12.22 meter; it rejoins through the beacons of neighbours that are back and
authenticates through them (the concentrators keep power). A rollover's re-authentications
run through each meter's relay; a revocation's shut-out includes the group key rotation the
key server runs on a revocation (keymgmt/groupkeys.py): the key the revoked meter holds is
cut, so from then on its frames are refused by every neighbour.

`concentrator-loss`: at mid-run, ten minutes into a slot, concentrator 0 of cell 0 dies (its
node leaves the radio and the WAN router's route to its prefix leads nowhere). Its meters find
out when their frames to it go unacknowledged (their next DAO refresh or push) or their DAO is
never acknowledged, detach (RFC 6550 §8.2.2.5), join a neighbouring DODAG, move their PANA
session to the new parent by an AUTH-protected ping through the new relay (or authenticate
afresh through it when the session was lost), and the head-end reads them at their new
address, backfilling what it missed.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from amistack.addr import Addr, Engine
from amistack.crypto import seeded_random
from amistack.gctune import settle_gc
from amistack.headend.collector import Mode
from amistack.headend.keys import HeadendKeys, IssuedLike, SyncKeySource, repository_resolver
from amistack.headend.service import HeadEnd, HeadEndConfig
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt.events import GroupKeyInstalled
from amistack.keymgmt.ukmf import KeyId
from amistack.mesh.node import JoinConfig, MeshNode, RelayReady, radio_addr
from amistack.mesh.rpl.events import DaoAcknowledged
from amistack.mesh.security import MemoryCounterStore
from amistack.mesh.wan import Ipv6Host
from amistack.pana.constants import PANA_PORT
from amistack.pana.events import (
    Authenticated,
    AuthenticationFailed,
    PingCompleted,
    SessionTerminated,
)
from amistack.sim.capacity import ServiceQueue
from amistack.sim.mesh import (
    C1222_PORT,
    HEADEND_HOST,
    HEADEND_IP,
    HEADEND_TITLE,
    KEYSERVER_HOST,
    KEYSERVER_IP,
    MESH_PAC,
    METER_EPOCH,
    READ_RETRIES,
    READ_TIMEOUT,
    SESSION_LIFETIME,
    WAN_LATENCY,
    WAN_ROUTER,
    MeshConfig,
    MeshMeter,
    MeshSim,
    build_mesh,
    meter_id,
    meter_node,
    meter_title,
)
from amistack.sim.stats import quantile

if TYPE_CHECKING:
    from amistack.sim.scenarios import ProgressHook, ScenarioConfig

MESH_SCENARIOS = ("day", "blackout", "rollover", "revocation", "concentrator-loss")
FORMATION_S = 600.0  # simulated s the mesh forms before the first slot boundary measured from
LOSS_INTO_SLOT_S = 600.0  # the concentrator dies this long after a slot boundary
LOSS_WATCH_S = (600.0, 3600.0)  # meters per DODAG sampled from this long before to after it
LOSS_SAMPLE_S = 30.0
PER_CONCENTRATOR_READS = 4  # the collector's reads in flight per concentrator of a cell
PER_CONCENTRATOR_RATE = 2.0  # and read starts per second
BLACKOUT_WATCH_S = 900.0  # blackout: sampled every second from 10 s before to this long after
NO_BACKOFF_JOIN = JoinConfig(retry_backoff=(1.0, 1.0))  # a failed PANA run again after ~1 s
BLACKOUT_RUNS = (("with_backoff", True), ("without_backoff", False))
PROBE_AFTER_S = 60.0  # revocation: the revoked meters try to send this long after the cut


class Calendar:
    """An engine on the meters' calendar: it sees the network's time plus `offset`."""

    def __init__(self, engine: Engine, offset: float) -> None:
        self.engine = engine
        self.offset = offset

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self.engine.receive_datagram(data, addr, now + self.offset)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return self.engine.datagrams_to_send(now + self.offset)

    def get_timer(self) -> float | None:
        at = self.engine.get_timer()
        return None if at is None else at - self.offset

    def handle_timer(self, now: float) -> None:
        # exact: (t - offset) + offset == t for t within a factor 2 of offset (Sterbenz)
        self.engine.handle_timer(now + self.offset)

    def next_event(self) -> object | None:
        return self.engine.next_event()


@dataclass(frozen=True)
class _Issued:
    key_id: KeyId | None
    key: bytes
    not_after: float


class CalendarKeys:
    """The key server's C12.22 keys on the head-end's calendar (`offset` s ahead)."""

    def __init__(self, source: SyncKeySource, offset: float) -> None:
        self.source = source
        self.offset = offset

    def _shift(self, k: IssuedLike | None) -> _Issued | None:
        return None if k is None else _Issued(k.key_id, k.key, k.not_after + self.offset)

    def key_for(self, key_id: KeyId, purpose: str, now: float) -> IssuedLike | None:
        return self._shift(self.source.key_for(key_id, purpose, now - self.offset))

    def current_key(self, device_id: bytes, purpose: str, now: float) -> IssuedLike | None:
        return self._shift(self.source.current_key(device_id, purpose, now - self.offset))


@dataclass
class MeshCell:
    """One radio area of the fleet: its mesh, head-end and measured window (simulated s)."""

    index: int
    sim: MeshSim
    headend: HeadEnd
    keyserver: ServiceQueue  # the key server engine of finite capacity (sim/capacity.py)
    start: float  # a slot boundary after formation; slots are measured after it
    end: float
    boundaries: list[int]  # the measured slots' boundaries (calendar time)
    roots: dict[bytes, int] = field(default_factory=dict)  # DODAG ID -> concentrator
    down: set[int] = field(default_factory=set)  # meters without power now

    def authenticated(self) -> int:
        """Meters with power holding a PANA session now (as `sim.fleet.authenticated`)."""
        down = self.down
        meters = enumerate(self.sim.meters, 1)
        return sum(1 for i, m in meters if m.pac and m.pac.context and i not in down)

    def dodag_of(self, i: int) -> int | None:
        """The concentrator whose DODAG meter i is in now (None: in none)."""
        if not self.roots:  # the roots have their DODAG IDs once started
            concentrators = self.sim.concentrators
            self.roots = {k.rpl.dodag_id: j for j, k in enumerate(concentrators) if k.rpl.dodag_id}
        rpl = self.sim.meters[i - 1].rpl
        return self.roots.get(rpl.dodag_id or b"") if rpl.joined else None


def cell_size(sc: ScenarioConfig, c: int) -> int:
    """Meters in cell c (meter i of the fleet is in cell i % cells)."""
    return len(range(c, sc.meters, sc.cells))


def check_mesh(sc: ScenarioConfig) -> None:
    """ValueError unless every cell is a valid mesh (and, for `concentrator-loss`, cell 0 has
    a neighbouring concentrator to re-parent to)."""
    try:
        config = MeshConfig(nodes=cell_size(sc, 0), per_concentrator=sc.per_concentrator)
    except ValueError as exc:
        raise ValueError(f"mesh cell of {cell_size(sc, 0)} meters: {exc}") from None
    if sc.scenario == "concentrator-loss" and config.grid < 2:
        raise ValueError(
            f"concentrator-loss needs >= 2 x 2 concentrators per cell: {cell_size(sc, 0)} "
            f"meters per cell at per_concentrator {sc.per_concentrator} give 1 (need "
            f"meters per cell >= {round(2.25 * sc.per_concentrator)})"
        )


def mesh_config(sc: ScenarioConfig, c: int) -> MeshConfig:
    from amistack.sim.scenarios import fleet_config

    push = fleet_config(sc).push if sc.mode == Mode.PUSHED else None
    rollover = sc.scenario == "rollover"
    return MeshConfig(
        nodes=cell_size(sc, c),
        seed=sc.seed * 1009 + c,
        per_concentrator=sc.per_concentrator,
        c1222=True,
        push=push,
        session_lifetime=sc.rollover_lifetime if rollover else SESSION_LIFETIME,
    )


def cell_meters(sc: ScenarioConfig, c: int) -> dict[int, int]:
    """Cell c's meters: fleet-wide index -> index in the cell's mesh (1..n)."""
    return {g: k for k, g in enumerate(range(c, sc.meters, sc.cells), 1)}


def build_cell(sc: ScenarioConfig, c: int) -> MeshCell:
    """Cell c's mesh with the head-end collecting it, before anything has run."""
    from amistack.sim.scenarios import SLOT_S, fleet_config

    config = mesh_config(sc, c)
    sim = build_mesh(config)
    now = METER_EPOCH
    repo = SqliteRepository.scratch()
    for i in range(1, config.nodes + 1):
        repo.register_meter(meter_id(i), str(meter_title(i).absolute()), f"cell-{c}",
                            f"cell-{c}", now)  # fmt: skip
        repo.commission_meter(meter_id(i), now)
    for mm in sim.c1222:
        mm.meter.tables.retention_days = 1  # as the star's meters: the collector reads 1 day
    concentrators = len(sim.concentrators)
    collector = replace(
        fleet_config(sc).collector,
        mode=sc.mode,
        retention_days=1,
        per_cell_outstanding=PER_CONCENTRATOR_READS * concentrators,
        per_cell_rate=PER_CONCENTRATOR_RATE * concentrators,
        request_timeout=READ_TIMEOUT,
        request_retries=READ_RETRIES,
    )
    headend = HeadEnd(
        HeadEndConfig(HEADEND_TITLE, collector, command_poll_s=60.0, meter_refresh_s=3600.0,
                      eventlog_every_s=0.0),
        repo,
        HeadendKeys(repository_resolver(repo.meter_by_ap_title), CalendarKeys(sim.keyserver, now)),
        seeded_random(config.seed * 47),
        now,
    )  # fmt: skip
    sim.net.remove_node(HEADEND_HOST)  # build_mesh's reads on demand only: ours collects
    host = Ipv6Host(Calendar(headend, now), (HEADEND_IP, C1222_PORT), WAN_ROUTER)
    sim.net.add_node(HEADEND_HOST, host)
    sim.headend = headend
    # the key server of finite capacity: each cell's engine has 1/cells of the fleet's
    star = fleet_config(sc)
    assert star.keyserver_service_s is not None
    queue = ServiceQueue(sim.keyserver, star.keyserver_service_s * sc.cells,
                         max(1, sc.keyserver_queue // sc.cells))  # fmt: skip
    sim.net.remove_node(KEYSERVER_HOST)
    sim.net.add_node(KEYSERVER_HOST, Ipv6Host(queue, (KEYSERVER_IP, PANA_PORT), WAN_ROUTER))
    start = FORMATION_S + (-(METER_EPOCH + FORMATION_S)) % SLOT_S
    slots = round(sc.days * 86400 / SLOT_S)
    first = int(METER_EPOCH + start) + SLOT_S
    cell = MeshCell(c, sim, headend, queue, start, start + slots * SLOT_S + 2 * SLOT_S,
                    list(range(first, first + slots * SLOT_S, SLOT_S)))  # fmt: skip
    _follow_addresses(cell)
    settle_gc()  # the cell lives for its run (the one before, if any, is collected now)
    return cell


def _follow_addresses(cell: MeshCell) -> None:
    """The concentrators' topology report, modelled: once a root acknowledges a meter's DAO it
    routes to the meter's address, and the head-end reads the meter there (module doc)."""
    sim = cell.sim
    index = _meter_index(sim)
    collector = cell.headend.collector

    def moved(i: int, addr: Addr) -> None:
        collector.set_address(meter_id(i), addr)

    def on_event(addr: Addr, event: object, now: float) -> None:
        if isinstance(event, DaoAcknowledged) and event.status < 128 and addr in index:
            i = index[addr]
            own = sim.c1222_addr(i)
            if own is not None:
                sim.net.clock.call_at(now + WAN_LATENCY, functools.partial(moved, i, own))

    sim.net.on_event.append(on_event)


def _sampler(cell: MeshCell, every: float, start: float, until: float) -> list[dict[str, float]]:
    """Every `every` s from `start`: meters holding a session, in a DODAG, the key server's
    queue, readings stored."""
    sim, rows, queue = cell.sim, [], cell.keyserver
    clock = sim.net.clock

    def sample() -> None:
        now = clock.now
        rows.append({
            "t": round(now - cell.start, 3),
            "authenticated": cell.authenticated(),
            "joined": sum(1 for i, m in enumerate(sim.meters, 1)
                          if m.rpl.joined and i not in cell.down),
            "keyserver_queue": queue.depth,
            "keyserver_dropped": queue.counters["dropped"],
            "readings": cell.headend.ingestor.counters["inserted"],
            "authentications": _authentications(sim),
        })  # fmt: skip
        if now + every <= until:
            clock.call_at(now + every, sample)

    clock.call_at(start, sample)
    return rows


def _run(cell: MeshCell, progress: Callable[[float, int], None] | None) -> None:
    clock = cell.sim.net.clock
    while clock.now < cell.end:
        clock.run_until(min(cell.end, clock.now + 600.0))
        if progress is not None:
            progress(clock.now / cell.end, clock.callbacks_run)
    cell.headend.flush(METER_EPOCH + clock.now)


def _slot_counts(cell: MeshCell) -> list[tuple[int, int, int, Counter[int]]]:
    from amistack.sim.scenarios import digest_slot

    slots = cell.headend.collector.slots
    return [digest_slot(slots[b]) if b in slots else (0, 0, 0, Counter()) for b in cell.boundaries]


def _mesh_figures(cell: MeshCell) -> dict[str, Any]:
    """The mesh as formed: meters, concentrators, relay-ready, hops (summed: they add up)."""
    report = cell.sim.report(include_dodag=False)
    return {
        "meters": report["nodes"],
        "concentrators": report["radio"]["concentrators"],
        "reachable": report["reachable"],
        "relay_ready": report["relay_ready"],
        "relay_ready_p100_s": report["relay_ready_s"]["p100"],
        "hops_max": report["hops"]["max"],
        "hops_sum": sum(d["hops"] or 0 for d in cell.sim.dodag() if d["role"] == "meter"),
        "area_m": report["radio"]["area_m"],
    }


def _meter_index(sim: MeshSim) -> dict[Addr, int]:
    """Each meter's radio address -> its index in the mesh (1..n)."""
    return {radio_addr(m.eui): i for i, m in enumerate(sim.meters, 1)}


def _authentications(sim: MeshSim) -> int:
    """The key server's PANA successes: new sessions and re-authentications."""
    counters = sim.keyserver.counters
    return counters["auth-success"] + counters["rekey"]


def _keyserver_figures(cell: MeshCell) -> dict[str, Any]:
    q = cell.keyserver
    return {
        "authentications": _authentications(cell.sim),
        "queue_max": q.max_depth,
        "dropped": q.counters["dropped"],
        "served": q.counters["served"],
    }


def _cell_wall(cell: MeshCell) -> dict[str, Any]:
    """What this machine spent on a cell: events run, the key server engine's CPU."""
    q = cell.keyserver
    return {
        "events": cell.sim.net.clock.callbacks_run,
        "keyserver_cpu_s": q.engine_cpu_s,
        "keyserver_datagrams": q.counters["served"],
    }


def _at_start(cell: MeshCell) -> dict[str, Any]:
    """Filled at the measured window's start: the formed mesh and the counts it starts from."""
    counters = cell.sim.net.counters
    at_start: dict[str, Any] = {}

    def started() -> None:
        at_start.update(sent=counters["sent"], wan=counters["wan"], mesh=_mesh_figures(cell))
        settle_gc()  # the formed mesh (DODAGs, sessions, keys) lives for the run: frozen

    cell.sim.net.clock.call_at(cell.start, started)
    return at_start


def cell_part(
    sc: ScenarioConfig, c: int, progress: Callable[[float, int], None] | None = None
) -> dict[str, Any]:
    """Cell c's counts for the scenario (they add up over the cells)."""
    if sc.scenario == "blackout":
        return _blackout_part(sc, c, progress)
    cell = build_cell(sc, c)
    sim = cell.sim
    series = _sampler(cell, sc.sample_s, cell.start, cell.end)
    at_start = _at_start(cell)
    extra: tuple[str, Callable[[], Any]] | None = None
    if sc.scenario == "concentrator-loss" and c == 0:
        extra = ("concentrator_loss", _concentrator_loss(cell))
    elif sc.scenario == "rollover":
        extra = ("rotations", _rotations(cell))
    elif sc.scenario == "revocation":
        extra = ("revocation", _revocation(sc, cell))
    _run(cell, progress)
    he = cell.headend
    client = he.client.counters
    counters = sim.net.counters
    sent = counters["sent"] - at_start["sent"]
    wan = counters["wan"] - at_start["wan"]
    part: dict[str, Any] = {
        "cell": c,
        "slot_counts": _slot_counts(cell),
        "packets": sent,
        "link_frames": sent - wan,
        "wan_packets": wan,
        "headend": {
            "readings_stored": cell.headend.repo.count_readings(),
            "packets_sent": sent,
            "c1222_auth_failed": client["auth-failed"],
            "c1222_no_key": client["no-key"],
            "c1222_replayed": client["replayed"],
            "meters_refused_requests": sum(m.meter.counters["auth-failures"] for m in sim.c1222),
            "reads_without_address": he.collector.counters["no-address"],
            "address_changes": he.collector.counters["address-changed"],
        },
        "keyserver": _keyserver_figures(cell),
        "mesh": at_start["mesh"],
        "series": series,
        "wall": _cell_wall(cell),
    }
    if extra is not None:
        part[extra[0]] = extra[1]()
    return part


def _rotations(cell: MeshCell) -> Callable[[], tuple[int, int]]:
    """`rollover`: each meter's PANA successes (its first and every re-authentication through
    its relay, each a new key generation); the fewest and most, at the end."""
    sim = cell.sim
    index = _meter_index(sim)
    count: Counter[int] = Counter()

    def on_event(addr: Addr, event: object, now: float) -> None:
        if isinstance(event, Authenticated) and addr in index:
            count[index[addr]] += 1

    sim.net.on_event.append(on_event)
    meters = range(1, len(sim.meters) + 1)
    return lambda: (min(count[i] for i in meters), max(count[i] for i in meters))


def _revocation(sc: ScenarioConfig, cell: MeshCell) -> Callable[[], dict[str, Any]]:
    """`revocation`: the cell's share of the revoked meters (drawn over the fleet's indices)
    revoked at half time. A meter is shut out once its session has ended at the meter and the
    group key it holds is no longer accepted (the rotation the revocation asks for: the
    key server cuts the current key to the new one's activation and pushes the new ring to
    every authenticated meter). `PROBE_AFTER_S` after that cut every revoked meter tries to
    send through the mesh; every packet of a revoked meter's that reaches the WAN after
    the revocation is counted, before and after the cut."""
    from amistack.sim.scenarios import revoked_meters

    sim, clock = cell.sim, cell.sim.net.clock
    local = cell_meters(sc, cell.index)
    revoked = sorted(local[g] for g in revoked_meters(sc) if g in local)
    chosen = set(revoked)
    t_rev = cell.start + sc.days * 86400 / 2
    index = _meter_index(sim)
    iids = {sim.meters[i - 1].eui.interface_id() for i in revoked}
    ended: dict[int, float] = {}
    reauth: set[int] = set()
    cut: list[float] = []
    rotated: list[int] = []  # the serial of the key the rotation installed
    forwarded: list[float] = []
    probes: list[int] = []

    def revoke() -> None:
        for i in revoked:
            sim.keyserver.revoke(meter_id(i), clock.now, reason="fleet scenario")
        sim.net.service(KEYSERVER_HOST)

    def probe() -> None:  # an injection attempt: the revoked meter sends to the head-end
        dst = ipaddress.IPv6Address(HEADEND_IP).packed
        for i in revoked:
            node = sim.meters[i - 1]
            if node.send_udp(dst, C1222_PORT, C1222_PORT, b"revoked meter", clock.now):
                probes.append(i)
            sim.net.service(radio_addr(node.eui))

    def on_event(addr: Addr, event: object, now: float) -> None:
        if now < t_rev:
            return
        if addr == KEYSERVER_HOST:
            if isinstance(event, GroupKeyInstalled) and event.reason == "rotation" and not cut:
                cut.append(event.not_before)
                rotated.append(event.serial)
                clock.call_at(event.not_before + PROBE_AFTER_S, probe)
            return
        i = index.get(addr)
        if i not in chosen:
            return
        if isinstance(event, SessionTerminated | AuthenticationFailed):
            ended.setdefault(i, now)
        elif isinstance(event, Authenticated):
            reauth.add(i)

    roots = {radio_addr(k.eui) for k in sim.concentrators}

    def on_frame(now: float, src: Addr, dst: Addr, data: bytes) -> None:
        # a concentrator puts an IPv6 packet from the mesh on the WAN: whose source IID?
        if src in roots and dst == WAN_ROUTER and now >= t_rev and data[16:24] in iids:
            forwarded.append(now)

    sim.net.on_event.append(on_event)
    if revoked:
        sim.net.capture_hooks.append(on_frame)
        clock.call_at(t_rev, revoke)

    def result() -> dict[str, Any]:
        t_cut = cut[0] if cut else None
        after_cal = METER_EPOCH + t_rev + 1e-6
        holding = [i for i, m in enumerate(sim.meters, 1)
                   if any(k.serial in rotated for k in m.group_keys.held())]  # fmt: skip
        accepted = sum(1 for i in revoked
                       for r in cell.headend.repo.readings(meter_id(i), 0, 2**40, limit=10_000)
                       if r.received_at > after_cal)  # fmt: skip
        return {
            "revoked": len(revoked),
            "revoked_at_s": round(t_rev - cell.start, 3),
            "shut_out_s": [
                max(ended[i], t_cut) - t_rev for i in revoked if i in ended and t_cut is not None
            ],
            "session_ended_s": [ended[i] - t_rev for i in revoked if i in ended],
            "group_key_cut_s": None if t_cut is None else t_cut - t_rev,
            "reauthenticated": len(reauth),
            "accepted_after": accepted,
            "probes_sent": len(probes),
            "revoked_with_new_key": sum(1 for i in holding if i in chosen),
            "others_with_new_key": sum(1 for i in holding if i not in chosen),
            "forwarded_before_cut": sum(1 for t in forwarded if t_cut is None or t < t_cut),
            "forwarded_after_cut": sum(1 for t in forwarded if t_cut is not None and t >= t_cut),
        }

    return result


def _blackout_part(
    sc: ScenarioConfig, c: int, progress: Callable[[float, int], None] | None
) -> dict[str, Any]:
    """`blackout` in cell c: the run with the meters' back-off, and the run without."""
    part: dict[str, Any] = {"cell": c}
    walls = []
    for k, (key, backoff) in enumerate(BLACKOUT_RUNS):

        def hook(fraction: float, n: int, k: int = k) -> None:
            if progress is not None:
                progress((k + fraction) / len(BLACKOUT_RUNS), n)

        part[key], wall = _blackout_run(sc, c, backoff, hook)
        walls.append(wall)
    part["mesh"] = part["with_backoff"].pop("mesh")
    del part["without_backoff"]["mesh"]
    part["wall"] = {k: sum(w[k] for w in walls) for k in walls[0]}
    return part


def _blackout_run(
    sc: ScenarioConfig, c: int, backoff: bool, progress: Callable[[float, int], None] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every meter of the cell loses power `BLACKOUT_INTO_SLOT_S` after the first measured
    boundary and comes back at its drawn time (the star's `return_times`, by fleet index) as
    a rebooted meter: a new mesh node (`sim.mesh.meter_node`, boot 1: no keys, no session,
    no RPL state, its frame counters from non-volatile memory) under the same C12.22 meter,
    which joins and authenticates through relays as at installation. The concentrators keep
    power. Without back-off the rebooted meters retry PANA every second (`NO_BACKOFF_JOIN`,
    the star's `NO_BACKOFF_PCI`)."""
    from amistack.sim.scenarios import (
        BLACKOUT_INTO_SLOT_S,
        NO_BACKOFF_PCI,
        SLOT_S,
        blackout_end,
        return_times,
        slot_boundaries,
    )

    cell = build_cell(sc, c)
    sim = cell.sim
    clock, radio = sim.net.clock, sim.net.medium.radio
    t_black = cell.start + SLOT_S + BLACKOUT_INTO_SLOT_S
    cell.end = blackout_end(sc, t_black)
    cell.boundaries = slot_boundaries(METER_EPOCH + t_black, METER_EPOCH + cell.end)
    at_start = _at_start(cell)
    series = _sampler(cell, 1.0, t_black - 10, t_black + BLACKOUT_WATCH_S)
    back = return_times(sc, t_black, backoff)
    pac = MESH_PAC if backoff else replace(MESH_PAC, pci_retransmit=NO_BACKOFF_PCI)
    join = None if backoff else NO_BACKOFF_JOIN
    index = _meter_index(sim)
    where: dict[int, tuple[float, float]] = {}
    again: dict[int, float] = {}
    ready: dict[int, float] = {}

    def power_off() -> None:
        for i, node in enumerate(sim.meters, 1):
            addr = radio_addr(node.eui)
            where[i] = radio.position(addr)
            sim.net.remove_node(addr)
            cell.down.add(i)

    def power_on(i: int) -> None:
        old = sim.meters[i - 1]
        node = meter_node(sim.config, i, boot=1, counters=_persisted_counters(old), pac=pac,
                          join=join)  # fmt: skip
        sim.meters[i - 1] = node
        sim.c1222[i - 1] = endpoint = MeshMeter(node, sim.c1222[i - 1].meter)
        radio.place(radio_addr(node.eui), *where[i])
        cell.down.discard(i)
        sim.net.add_node(radio_addr(node.eui), endpoint)

    def on_event(addr: Addr, event: object, now: float) -> None:
        i = index.get(addr)
        if i is None or i not in where or i in cell.down:
            return  # not a meter that has power again
        if isinstance(event, Authenticated):
            again.setdefault(i, now - t_black)
        elif isinstance(event, RelayReady):
            ready.setdefault(i, now - t_black)

    sim.net.on_event.append(on_event)
    clock.call_at(t_black, power_off)
    for g, i in cell_meters(sc, c).items():
        clock.call_at(back[g], functools.partial(power_on, i))
    _run(cell, progress)
    return {
        "again": sorted(again.values()),
        "relay_ready_again": sorted(ready.values()),
        "slot_counts": _slot_counts(cell),
        "slots_after_s": [b - (METER_EPOCH + t_black) for b in cell.boundaries],
        "keyserver": _keyserver_figures(cell),
        "blackout_at_s": round(t_black - cell.start, 3),
        "series": series,
        "mesh": at_start["mesh"],
    }, _cell_wall(cell)


def _persisted_counters(node: MeshNode) -> MemoryCounterStore:
    """What a meter's non-volatile memory holds of its link: each key index's next frame
    counter (a rebooted meter never sends a counter its neighbours have already seen)."""
    security, nvm = node.link.security, MemoryCounterStore()
    nvm.save({k: security.next_counter(k) for k in security.key_indexes()})
    return nvm


def _concentrator_loss(cell: MeshCell) -> Callable[[], dict[str, Any]]:
    """Kill concentrator 0 of the cell mid-run; what happened to its meters, at the end."""
    from amistack.sim.scenarios import SLOT_S

    sim = cell.sim
    clock = sim.net.clock
    middle = len(cell.boundaries) // 2
    t_loss = cell.start + middle * SLOT_S + LOSS_INTO_SLOT_S
    dead = sim.concentrators[0]
    dead_id = dead.rpl.dodag_id
    index = _meter_index(sim)
    victims: set[int] = set()
    rehomed: dict[int, float] = {}
    moved: Counter[int] = Counter()
    reauth: Counter[int] = Counter()
    rows: list[dict[str, float]] = []

    def kill() -> None:
        victims.update(i for i in range(1, len(sim.meters) + 1) if cell.dodag_of(i) == 0)
        sim.net.remove_node(radio_addr(dead.eui))

    def on_event(addr: Addr, event: object, now: float) -> None:
        i = index.get(addr)
        if i is None or i not in victims or now < t_loss:
            return
        if isinstance(event, DaoAcknowledged) and i not in rehomed:
            rpl = sim.meters[i - 1].rpl
            if rpl.joined and rpl.dodag_id != dead_id:
                rehomed[i] = now - t_loss
        elif isinstance(event, PingCompleted):
            moved[i] += 1
        elif isinstance(event, Authenticated) and not event.reauth:
            reauth[i] += 1  # a new session (a lost one renewed), not the routine re-auth

    def sample() -> None:
        per = Counter(cell.dodag_of(i) for i in range(1, len(sim.meters) + 1))
        row: dict[str, float] = {"t": round(clock.now - t_loss, 3), "unjoined": per[None]}
        row.update({f"c{j}": per[j] for j in range(len(sim.concentrators))})
        rows.append(row)
        if clock.now + LOSS_SAMPLE_S <= t_loss + LOSS_WATCH_S[1]:
            clock.call_at(clock.now + LOSS_SAMPLE_S, sample)

    sim.net.on_event.append(on_event)
    clock.call_at(t_loss - LOSS_WATCH_S[0], sample)
    clock.call_at(t_loss, kill)

    def result() -> dict[str, Any]:
        loss_cal = METER_EPOCH + t_loss
        slots = cell.headend.collector.slots
        resumed = []
        for i in sorted(victims):
            mid = meter_id(i)
            got = [d.at for s in slots.values() for m, d in s.delivered.items()
                   if m == mid and d.at > loss_cal]  # fmt: skip
            if got:
                resumed.append(min(got) - loss_cal)
        times = sorted(rehomed.values())
        return {
            "cell": cell.index,
            "concentrator": 0,
            "concentrators_in_cell": len(sim.concentrators),
            "at_s": round(t_loss - cell.start, 3),
            "meters_orphaned": len(victims),
            "meters_rehomed": len(rehomed),
            "rehomed_s": {
                "p50": _round(quantile(times, 0.5)),
                "max": _round(times[-1] if times else None),
            },
            "pana_moved_by_ping": sum(1 for i in victims if moved[i]),
            "pana_reauthenticated": sum(1 for i in victims if reauth[i]),
            "collection_resumed": len(resumed),
            "collection_resumed_max_s": round(max(resumed), 3) if resumed else None,
            "slot_after_s": [b - loss_cal for b in cell.boundaries],
            "joined_per_concentrator": rows,
        }

    return result


def _round(t: float | None) -> float | None:
    return None if t is None else round(t, 3)


def mesh_part(
    sc: ScenarioConfig, shard: int, progress: ProgressHook | None = None
) -> dict[str, Any]:
    """Shard `shard`'s cells (c % shards == shard), one after another."""
    from amistack.sim.scenarios import peak_rss_mb, sum_walls

    cpu0 = time.process_time()
    cells = list(range(shard, sc.cells, sc.shards))
    parts: list[dict[str, Any]] = []
    total = sc.days * 86400.0

    def hook(fraction: float, n: int) -> None:
        if progress is not None:
            done = (len(parts) + fraction) / len(cells)
            progress(done * total, total, sum(p["wall"]["events"] for p in parts) + n)

    for c in cells:
        parts.append(cell_part(sc, c, hook))
    walls = [p.pop("wall") for p in parts]  # this machine's figures, apart from the cells'
    return {
        "cells": parts,
        "wall": {
            **sum_walls(walls),
            "cpu_s": round(time.process_time() - cpu0, 3),
            "peak_rss_mb": peak_rss_mb(),
        },
    }


def _merge_mesh_figures(mesh: list[dict[str, Any]]) -> dict[str, Any]:
    """The cells' meshes as formed, together."""
    meters = sum(m["meters"] for m in mesh)
    return {
        "cells": len(mesh),
        "meters": meters,
        "concentrators": sum(m["concentrators"] for m in mesh),
        "reachable": sum(m["reachable"] for m in mesh),
        "relay_ready_at_start": sum(m["relay_ready"] for m in mesh),
        "formed_by_s": max((m["relay_ready_p100_s"] or 0.0) for m in mesh),
        "hops_max": max(m["hops_max"] for m in mesh),
        "hops_mean": round(sum(m["hops_sum"] for m in mesh) / max(meters, 1), 2),
        "area_m_per_cell": [m["area_m"] for m in mesh],
    }


def _merge_blackout(sc: ScenarioConfig, cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Both blackout runs over the cells (the star's figures), and when the rebooted meters
    were relay-ready again (in the DODAG, routable, relaying for their neighbours)."""
    from amistack.sim.scenarios import merge_blackout_run, shares

    out: dict[str, Any] = {"mesh": _merge_mesh_figures([c["mesh"] for c in cells])}
    for key, backoff in BLACKOUT_RUNS:
        runs = [c[key] for c in cells]
        ready = sorted(t for r in runs for t in r["relay_ready_again"])
        out[key] = {
            **merge_blackout_run(sc, runs, backoff),
            "relay_ready_again": len(ready),
            **{f"relay_ready_{k}": v for k, v in shares(ready, sc.meters).items()},
        }
    return out


def _merge_revocation(revs: list[dict[str, Any]]) -> dict[str, Any]:
    """The star's revocation figures over the cells, and the mesh's: the group key cut, the
    sessions ended at the revoked meters, their packets that reached the WAN."""
    from amistack.sim.scenarios import revocation_figures

    cuts = [r["group_key_cut_s"] for r in revs if r["group_key_cut_s"] is not None]
    ended = [t for r in revs for t in r["session_ended_s"]]
    return {
        **revocation_figures(revs),
        "revoked_at_s": revs[0]["revoked_at_s"],
        "group_key_cut_max_s": _round(max(cuts, default=None)),
        "session_ended_at_meter": len(ended),
        "session_ended_max_s": _round(max(ended, default=None)),
        "revoked_probes_sent": sum(r["probes_sent"] for r in revs),
        # the rotated group key: pushed to every other meter, never to a revoked one (which
        # so cannot read the mesh's frames from the cut on either)
        "revoked_meters_holding_new_group_key": sum(r["revoked_with_new_key"] for r in revs),
        "other_meters_holding_new_group_key": sum(r["others_with_new_key"] for r in revs),
        "revoked_packets_to_wan_before_cut": sum(r["forwarded_before_cut"] for r in revs),
        "revoked_packets_to_wan_after_cut": sum(r["forwarded_after_cut"] for r in revs),
    }


def merge_mesh(sc: ScenarioConfig, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The fleet's figures from every cell's counts (in cell order, whatever the shards)."""
    from amistack.sim.scenarios import (
        merge_keyservers,
        merge_series,
        merge_slot_counts,
        rollover_figures,
        slot_summary,
    )

    cells = sorted((c for p in parts for c in p["cells"]), key=lambda c: c["cell"])
    if sc.scenario == "blackout":
        return _merge_blackout(sc, cells)
    stored = sum(c["headend"]["readings_stored"] for c in cells)
    counts = merge_slot_counts([c["slot_counts"] for c in cells])
    out: dict[str, Any] = {
        "slots": slot_summary(counts),
        "readings_expected": sum(e for e, _, _, _ in counts),
        "readings_lost": sum(e - g for e, g, _, _ in counts),
        "packets_per_reading": round(sum(c["packets"] for c in cells) / max(stored, 1), 3),
        "link_frames_per_reading": round(sum(c["link_frames"] for c in cells) / max(stored, 1), 3),
        "wan_packets_per_reading": round(sum(c["wan_packets"] for c in cells) / max(stored, 1), 3),
        "headend": {k: sum(c["headend"][k] for c in cells) for k in cells[0]["headend"]},
        "keyserver": merge_keyservers([c["keyserver"] for c in cells]),
        "mesh": _merge_mesh_figures([c["mesh"] for c in cells]),
        "series": merge_series([c["series"] for c in cells]),
    }
    if sc.scenario == "rollover":
        out.update(rollover_figures(out["headend"], [c["rotations"] for c in cells]))
    elif sc.scenario == "revocation":
        out.update(_merge_revocation([c["revocation"] for c in cells]))
    loss = next((c["concentrator_loss"] for c in cells if "concentrator_loss" in c), None)
    if loss is not None:
        after = loss["slot_after_s"]
        resumed = next((t for t, c in zip(after, out["slots"]["completeness"], strict=True)
                        if t > 0 and c >= 1.0), None)  # fmt: skip
        out["concentrator_loss"] = {
            **{k: v for k, v in loss.items() if k != "slot_after_s"},
            "first_complete_slot_after_s": resumed,
        }
    return out


def mesh_model(sc: ScenarioConfig) -> dict[str, Any]:
    """The report's `model` for the mesh topology."""
    from amistack.sim.scenarios import DATAGRAMS_PER_AUTH

    return {
        "topology": "mesh: each cell a radio area (unit disk, per-frame loss, no collisions; "
        "sim.mesh) of k x k concentrators, k = round(sqrt(meters in cell / per_concentrator)), "
        "each an RPL DODAG root; PANA relayed hop by hop (RFC 6345); 802.15.4 + CCM* frames",
        "radio": mesh_config(sc, 0).radio_model(),
        "formation_s": FORMATION_S,
        "collector_per_concentrator": {
            "reads_in_flight": PER_CONCENTRATOR_READS,
            "read_starts_per_s": PER_CONCENTRATOR_RATE,
            "request_timeout_s": READ_TIMEOUT,
            "request_retries": READ_RETRIES,
        },
        "addresses": "the head-end learns a meter's address WAN_LATENCY after its root "
        "acknowledged its DAO (the concentrators' topology report, modelled)",
        "keyserver": "the real engine per cell behind a ServiceQueue (sim/capacity.py) with "
        "1/cells of the fleet's capacity and queue",
        "keyserver_service_s_per_datagram": 1.0
        / (sc.keyserver_auth_rate * DATAGRAMS_PER_AUTH)
        * sc.cells,
        "keyserver_queue_per_cell": max(1, sc.keyserver_queue // sc.cells),
        "datagrams_per_auth": DATAGRAMS_PER_AUTH,
        "power": "blackout: every meter's mesh node is rebuilt as it comes back (no keys, "
        "session or RPL state; frame counters from NVM; its C12.22 meter and key ring kept); "
        "the concentrators, key server and head-end keep power",
        "packets_per_reading": "every frame put on the radio (data, 802.15.4 acks, RPL, PANA, "
        "retransmissions) and WAN packet over the measured slots, per reading stored",
        "shards": "mesh shards by cell: each cell is an independent simulation (its own clock, "
        "key server and head-end; nothing crosses between radio areas), so the result is the "
        f"same for any --shards; {sc.shards} shard(s) ran the {sc.cells} cell(s)",
    }


__all__ = [
    "MESH_SCENARIOS",
    "Calendar",
    "CalendarKeys",
    "MeshCell",
    "build_cell",
    "cell_part",
    "check_mesh",
    "merge_mesh",
    "mesh_model",
    "mesh_part",
]
