"""A fleet of meters under a key server and a head-end on the virtual clock, with shared cells.

`run_fleet(FleetConfig(...))` builds the real engines and runs them over `CellNetwork` for a
number of interval slots: per meter a `meter.access.MeterAccess` (PANA PaC + EAP-PSK, the
access policy, the meter's key ring) on UDP 716 and a `meter.node.MeterNode` (metering model,
C12.22 server, push schedule) on UDP 1153 sharing that ring; one `keymgmt.KeyServer` (PAA +
EAP-PSK + UKMF + an in-memory credential store with every meter enrolled), optionally behind a
`ServiceQueue` of finite capacity; and a `headend.service.HeadEnd` (C12.22 client, collector,
Ingestor into SQLite) that takes its keys from the key server by key id. No key or session is
made up: every meter authenticates before it can answer or push.
`amistack.bench.collection.bench_collection` runs it for several fleet sizes and both modes
(for `amistack bench collection --json`).

The cell model (`CellConfig`): the meters of one cell share one channel (a concentrator's RF or
PLC cell, half duplex, both directions) that carries `rate_pps` packets per second; a packet
waits behind the ones before it (FIFO), and is dropped when `queue` packets are already waiting
(congestion loss); on top, each packet is lost with probability `loss` (radio). The head-end's
WAN side is not a bottleneck here. Utilisation = busy time / elapsed time per cell.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from amistack.addr import Addr, Engine
from amistack.c1222.acse import ApTitle
from amistack.crypto import RandomSource, seeded_random
from amistack.eap.packet import EapType
from amistack.eap.peer import EapPeer
from amistack.eap.psk import EapPskPeer
from amistack.gctune import SIMULATION_YOUNG, building, service_gc
from amistack.headend.collector import CollectorConfig, Mode, SlotStats
from amistack.headend.keys import HeadendKeys, repository_resolver
from amistack.headend.service import HeadEnd, HeadEndConfig
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.server import KeyServer
from amistack.keymgmt.store import CredentialStore
from amistack.keymgmt.ukmf import PurposeRegistry
from amistack.meter.access import AccessConfig, MeterAccess
from amistack.meter.events import AccessGranted, AccessLost, AccessRefused
from amistack.meter.model import DAY_S, MeterConfig, MeterModel
from amistack.meter.node import MeterNode, MeterNodeConfig, PushConfig
from amistack.pana.pac import PacConfig, PanaClient
from amistack.sim.capacity import ServiceQueue
from amistack.sim.clock import VirtualClock
from amistack.sim.drive import Host
from amistack.sim.stats import quantile

log = logging.getLogger(__name__)

HEADEND_TITLE = ApTitle.parse("2.16.124.113620.1.22.0.1")
HEADEND_ADDR: Addr = ("10.255.255.1", 1153)
KEYSERVER_ADDR: Addr = ("10.255.255.2", 716)
PANA_PORT = 716  # RFC 5191 §6.1
C1222_PORT = 1153  # ANSI C12.22 over UDP
UTIL_WINDOW = 10.0  # seconds: peak utilisation is the busiest such window of a cell
JOIN_SETTLE = 30.0  # seconds between the last meter's power-on and the fleet's start
JOIN_PACKETS = 10  # datagrams of one PANA + EAP-PSK authentication, both directions (9, rounded)
# Devices whose derived EAP-PSK keys the simulated key server keeps: each `PskKeys` holds two
# OpenSSL contexts (~2.3 KB of RSS), and a meter authenticates a few times a day, so the store's
# default (100,000) kept ~115 MB in each shard of a 100,000-meter fleet for nothing.
SIM_PSK_KEYS_CACHE = 1024
T0 = 1_790_000_100.0  # 2026-09-21, a little after a 15-minute boundary


@dataclass(frozen=True)
class CellConfig:
    rate_pps: float = 20.0  # packets per second the shared channel carries
    queue: int = 50  # packets that may wait; more are dropped
    latency: float = 0.05  # one way, besides queueing
    loss: float = 0.0  # random radio loss per packet


@dataclass(frozen=True)
class FleetConfig:
    meters: int = 100
    cells: int = 4
    mode: Mode = Mode.POLLED
    slots: int = 2  # measured interval slots (one more runs for backfill)
    seed: int = 1
    cell: CellConfig = field(default_factory=CellConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    push: PushConfig = field(
        default_factory=lambda: PushConfig(
            enabled=True, interval_minutes=15, intervals=4, min_offset_s=5.0, max_offset_s=300.0
        )
    )
    key_lifetime: float = 4 * 3600.0
    key_overlap: float = 60.0
    rotate_at: float | None = None  # seconds after the start: every meter re-authenticates
    silent: Sequence[tuple[int, float, float]] = ()  # (meter index, from, to): unreachable
    retention_days: int = 1
    data_dir: Path | None = None  # None: a scratch SQLite file (SqliteRepository.scratch)
    # Meters power on (start PANA) spread over this many seconds before the start; None: long
    # enough that joining loads each cell to about 1/4 of its rate (see join_window_s).
    join_window: float | None = None
    access: AccessConfig = field(default_factory=AccessConfig)
    pac: PacConfig = field(default_factory=PacConfig)
    # The key server's capacity: simulated seconds per datagram it takes in (None: unlimited)
    # and how many may wait (its socket buffer); see sim/capacity.py.
    keyserver_service_s: float | None = None
    keyserver_queue: int = 2000
    # How often the head-end looks for new commands and meters in its repository (each look
    # is a query; a scenario whose registry does not change looks rarely).
    command_poll_s: float = 1.0
    meter_refresh_s: float = 60.0
    # This fleet is shard `shard` of `shards` (sim/shard.py): it holds the meters of the cells
    # c with c % shards == shard, and its own key server with 1/shards of the capacity.
    shard: int = 0
    shards: int = 1

    def members(self) -> list[int]:
        """The (fleet-wide) indices of this shard's meters; meter i is in cell i % cells."""
        return [i for i in range(self.meters) if (i % self.cells) % self.shards == self.shard]

    @property
    def shard_seed(self) -> int:
        """The seed of this shard's shared parts (key server, head-end, cells, power-on)."""
        return self.seed + 7_777_777 * self.shard


class _Cell:
    def __init__(self, cfg: CellConfig) -> None:
        self.cfg = cfg
        self.service = 1.0 / cfg.rate_pps  # seconds a packet holds the channel
        self.busy_until = 0.0
        self.busy = 0.0
        self.packets = 0
        self.dropped = 0
        self.max_wait = 0.0
        # busy seconds in the current UTIL_WINDOW and in the busiest so far (packets start
        # in time order on a cell, so one window at a time is enough)
        self.window = -1
        self.window_busy = 0.0
        self.peak_busy = 0.0


class CellNetwork:
    """Datagrams between engines on a `VirtualClock`; packets to or from a meter cross its
    cell's shared channel (see the module docstring)."""

    def __init__(self, clock: VirtualClock, cell: CellConfig, cells: int, seed: int) -> None:
        self.clock = clock
        self.cells = [_Cell(cell) for _ in range(cells)]
        self._rng = random.Random(seed)
        self._hosts: dict[Addr, Host] = {}
        self._cell_of: dict[Addr, int | None] = {}
        self.down: set[Addr] = set()
        self.counters: Counter[str] = Counter()
        self.on_event: list[Callable[[Addr, object, float], None]] = []
        # one bound method of each for every host (`self._send` makes a new one each time:
        # 64 bytes a host, two hosts a meter)
        self._transmit, self._on_event = self._send, self._event

    def add(self, addr: Addr, engine: Engine, cell: int | None) -> None:
        self._cell_of[addr] = cell
        host = self._hosts[addr] = Host(addr, engine, self.clock, self._transmit, self._on_event)
        host.service()

    def replace(self, addr: Addr, engine: Engine) -> None:
        """Put a new engine at `addr` (a restarted process); the old one's timer is dropped."""
        self._hosts[addr].detach()
        self.add(addr, engine, self._cell_of[addr])

    def service(self, addr: Addr) -> None:
        self._hosts[addr].service()

    def reset_statistics(self) -> dict[str, Any]:
        """Start the cells' and the network's figures afresh; the old ones, summed."""
        old = {
            "sent": self.counters["sent"],
            "cell_packets": sum(c.packets for c in self.cells),
            "cell_dropped": sum(c.dropped for c in self.cells),
            "cell_max_wait_s": max((c.max_wait for c in self.cells), default=0.0),
        }
        self.counters.clear()
        for c in self.cells:
            c.busy = c.max_wait = 0.0
            c.packets = c.dropped = 0
            c.window, c.window_busy, c.peak_busy = -1, 0.0, 0.0
        return old

    def _event(self, addr: Addr, event: object, now: float) -> None:
        for hook in self.on_event:
            hook(addr, event, now)

    def _send(self, src: Addr, dst_addr: Addr, data: bytes, now: float) -> None:
        # Every datagram of the run passes here (~4 a reading): the figures are kept in locals
        # and plain comparisons, not max(); the arithmetic is the same, operation for operation.
        counters = self.counters
        counters["sent"] += 1
        dst = self._hosts.get(dst_addr)
        if dst is None:
            counters["undeliverable"] += 1
            return
        down = self.down
        if down and (src in down or dst_addr in down):
            counters["unreachable"] += 1
            return
        index = self._cell_of[src]
        if index is None:
            index = self._cell_of[dst_addr]
        at = now
        if index is not None:
            cell = self.cells[index]
            cfg = cell.cfg
            service = cell.service
            start = cell.busy_until
            if start < now:
                start = now
            wait = start - now
            if wait * cfg.rate_pps >= cfg.queue:
                cell.dropped += 1
                counters["cell-dropped"] += 1
                return
            cell.busy_until = start + service
            cell.busy += service
            w = int(start // UTIL_WINDOW)
            if w != cell.window:
                cell.window, cell.window_busy = w, 0.0
            cell.window_busy += service
            if cell.window_busy > cell.peak_busy:
                cell.peak_busy = cell.window_busy
            cell.packets += 1
            if wait > cell.max_wait:
                cell.max_wait = wait
            at = start + service + cfg.latency
            if cfg.loss and self._rng.random() < cfg.loss:
                counters["radio-lost"] += 1
                return
        self.clock.call_at(at, lambda: self._deliver(src, dst, data))

    def _deliver(self, src: Addr, dst: Host, data: bytes) -> None:
        self.counters["delivered"] += 1
        dst.receive(data, src)


@dataclass
class Fleet:
    config: FleetConfig
    clock: VirtualClock
    net: CellNetwork
    headend: HeadEnd
    repo: SqliteRepository
    nodes: list[MeterNode]
    addrs: list[Addr]  # each meter's C12.22 address
    access: list[MeterAccess]  # each meter's network access, on its PANA address
    keyserver: KeyServer
    keyserver_queue: ServiceQueue | None
    start: float
    ids: list[int]  # each meter's fleet-wide index (its id, address and seeds come from it)
    granted_at: dict[int, list[float]] = field(default_factory=dict)  # meter -> grant times
    join: dict[str, Any] = field(default_factory=dict)  # the cells' figures while joining
    # Which meters hold a current key generation, kept from their access events (see
    # `authenticated`); by PANA address, the meter's index.
    held: bytearray = field(default_factory=bytearray)
    holding: int = 0
    granted: int = 0  # AccessGranted events so far: the fleet's authentications
    pana_index: dict[Addr, int] = field(default_factory=dict)

    def pana_addr(self, i: int) -> Addr:
        return (self.addrs[i][0], PANA_PORT)

    def hold(self, i: int, held: bool) -> None:
        """Meter i's PaC now holds a PANA SA (a success) or none (its session ended, failed,
        or the meter rebooted)."""
        if self.held[i] != held:
            self.held[i] = held
            self.holding += 1 if held else -1


def meter_id(i: int) -> str:
    return f"meter-{i:05d}"


def meter_psk(seed: int, i: int) -> bytes:
    """The PSK enrolled for meter `i` (simulation only: derived from the seed)."""
    return random.Random(seed * 1_000_033 + i).randbytes(16)


class _MeterRandom:
    """A meter's deterministic random bytes: BLAKE2b of (seed, counter), about 200 bytes of
    state where `random.Random` keeps 2.5 KB (a fleet has 100,000 of them). Simulation only."""

    __slots__ = ("_buf", "_counter", "_seed")

    def __init__(self, seed: int) -> None:
        self._seed = seed.to_bytes(16, "big", signed=True)
        self._counter = 0
        self._buf = b""

    def __call__(self, n: int) -> bytes:
        while len(self._buf) < n:
            block = hashlib.blake2b(self._counter.to_bytes(8, "big"), key=self._seed)
            self._buf += block.digest()
            self._counter += 1
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


class _NewPac:
    """What `MeterAccess` calls for each new session: a PaC doing EAP-PSK to the key server.
    It keeps the meter's PSK (16 bytes), not its derived keys: a `PskKeys` holds two OpenSSL
    contexts (~2.3 KB of the process, most of it outside Python's heap: 230 MB at 100,000
    meters), and an EAP run derives them again in ~12 us (a few runs a meter a day)."""

    __slots__ = ("config", "ident", "psk", "rng")

    def __init__(self, mid: str, psk: bytes, rng: RandomSource, config: PacConfig) -> None:
        self.ident = mid.encode()
        self.psk = psk
        self.rng = rng
        self.config = config

    def __call__(self) -> PanaClient:
        return PanaClient(self.config, self._eap, self.rng, KEYSERVER_ADDR)

    def _eap(self) -> EapPeer:
        return EapPeer(self.ident, {EapType.PSK: self._psk_peer})

    def _psk_peer(self) -> EapPskPeer:
        return EapPskPeer(self.ident, self.psk, self.rng)


def build_keyserver(config: FleetConfig, registry: PurposeRegistry, start: float) -> KeyServer:
    """The real key server engine over an in-memory store with every meter (of the shard)
    enrolled."""
    seed = config.shard_seed
    kek = FileKek(random.Random(seed * 17).randbytes(32), seeded_random(seed * 19))
    store = CredentialStore(":memory:", kek)
    store.psk_keys_cache = SIM_PSK_KEYS_CACHE
    for i in config.members():
        store.enroll(meter_id(i), meter_psk(config.seed, i), start)
    return KeyServer(
        store,
        rng=seeded_random(seed * 23),
        session_lifetime=config.key_lifetime,
        registry=registry,
        overlap=config.key_overlap,
        now=start,
    )


def build_fleet(config: FleetConfig, repo: SqliteRepository | None = None) -> Fleet:
    """The fleet at its start time (`repo`: a repository of your own). The meters powered on
    over the `join_window` before it and have run PANA with the key server since (JOIN_SETTLE
    more seconds), so at the start they normally hold keys; nothing else has run yet.
    Inside `gctune.service_gc` the fleet is built with the cyclic collector paused and frozen
    once built: it lives for the run, and full collections need not walk it again."""
    with building():
        return _build_fleet(config, repo)


def _build_fleet(config: FleetConfig, repo: SqliteRepository | None) -> Fleet:
    start = T0
    window = join_window_s(config)
    power_on = start - window - JOIN_SETTLE
    clock = VirtualClock(power_on)
    net = CellNetwork(clock, config.cell, config.cells, config.shard_seed)
    if repo is None:
        repo = SqliteRepository(config.data_dir) if config.data_dir else SqliteRepository.scratch()
    registry = PurposeRegistry()
    keyserver = build_keyserver(config, registry, start)
    queue = None
    ks_engine: Engine = keyserver
    if config.keyserver_service_s is not None:  # a shard has 1/shards of the capacity
        ks_engine = queue = ServiceQueue(
            keyserver,
            config.keyserver_service_s * config.shards,
            max(1, config.keyserver_queue // config.shards),
        )
    net.add(KEYSERVER_ADDR, ks_engine, None)
    rng = random.Random(config.shard_seed)
    ids = config.members()
    nodes: list[MeterNode] = []
    addrs: list[Addr] = []
    access: list[MeterAccess] = []
    mcfg = MeterConfig(install_time=start - 40 * DAY_S, outage_rate_per_year=0.0)
    push = replace(config.push, enabled=config.mode == Mode.PUSHED)
    for i in ids:
        mid = meter_id(i)
        title = ApTitle((0, 1000 + i), relative=True)
        addr: Addr = (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1153)
        cell = i % config.cells
        repo.register_meter(mid, str(title.absolute()), f"conc-{cell}", f"cell-{cell}", start)
        repo.commission_meter(mid, start)
        ring = KeyRing(mid.encode(), registry, overlap=config.key_overlap)
        m_rng = _MeterRandom(config.seed * 7919 + i)
        new_pac = _NewPac(mid, meter_psk(config.seed, i), m_rng, config.pac)
        access.append(MeterAccess(mid, new_pac, ring, m_rng, config.access))
        node = MeterNode(
            MeterNodeConfig(title, HEADEND_TITLE, HEADEND_ADDR, push=push, event_poll_s=900.0),
            MeterModel(config.seed * 1_000_003 + i, mcfg),
            ring,
            m_rng,
        )
        node.tables.retention_days = config.retention_days
        node.start(start)
        nodes.append(node)
        addrs.append(addr)
    by_id = {meter_id(i): addr for i, addr in zip(ids, addrs, strict=True)}
    keys = HeadendKeys(repository_resolver(repo.meter_by_ap_title), keyserver)
    collector = replace(config.collector, mode=config.mode, retention_days=config.retention_days)
    headend = HeadEnd(
        HeadEndConfig(
            HEADEND_TITLE,
            collector,
            command_poll_s=config.command_poll_s,
            meter_refresh_s=config.meter_refresh_s,
        ),
        repo,
        keys,
        seeded_random(config.shard_seed),
        start,
        addr_of=lambda m: by_id.get(m.meter_id),
    )
    net.add(HEADEND_ADDR, headend, None)
    fleet = Fleet(
        config, clock, net, headend, repo, nodes, addrs, access, keyserver, queue, start, ids
    )
    index = fleet.pana_index = {fleet.pana_addr(i): i for i in range(len(ids))}
    fleet.held = bytearray(len(ids))

    def on_event(addr: Addr, event: object, now: float) -> None:
        # The meter composition: a key generation installed by network access reaches the
        # C12.22 node that shares the ring (runtime/meter_node.py does the same).
        if isinstance(event, AccessGranted):
            i = index[addr]
            fleet.granted_at.setdefault(i, []).append(now)
            fleet.granted += 1
            fleet.hold(i, True)
            nodes[i].key_events(list(event.key_events), now)
            net.service(addrs[i])
        elif isinstance(event, AccessLost | AccessRefused):  # MeterAccess drops its PaC
            fleet.hold(index[addr], False)

    net.on_event.append(on_event)
    for i, node in enumerate(nodes):
        net.add(addrs[i], node, ids[i] % config.cells)
        net.add(fleet.pana_addr(i), access[i], ids[i] % config.cells)
        at = power_on + window * rng.random()
        clock.call_at(at, functools.partial(start_access, fleet, i))
    if config.rotate_at is not None:
        clock.call_at(start + config.rotate_at, lambda: rotate_keys(fleet))
    for idx, a, b in config.silent:
        for addr in (addrs[idx], fleet.pana_addr(idx)):
            _silence(net, addr, start + a, start + b)
    clock.run_until(start)
    fleet.join = net.reset_statistics()  # the cells' figures from here on describe collection
    return fleet


def join_window_s(config: FleetConfig) -> float:
    """The power-on window: the configured one, or one that loads each cell to ~1/4 of its rate
    with authentications (a fleet installed over time, not a blackout): PANA's 1 s
    retransmission timer (RFC 5191 §9) on a busier shared cell retransmits into its own queue."""
    if config.join_window is not None:
        return config.join_window
    per_cell = -(-config.meters // max(config.cells, 1))
    return max(JOIN_SETTLE, 4.0 * JOIN_PACKETS * per_cell / config.cell.rate_pps)


def start_access(fleet: Fleet, i: int) -> None:
    fleet.access[i].start(fleet.clock.now)
    fleet.net.service(fleet.pana_addr(i))


def _silence(net: CellNetwork, addr: Addr, a: float, b: float) -> None:
    net.clock.call_at(a, lambda: net.down.add(addr))
    net.clock.call_at(b, lambda: net.down.discard(addr))


def rotate_keys(fleet: Fleet) -> None:
    """Every meter's PaC re-authenticates now (PNR with the A flag): a new generation."""
    now = fleet.clock.now
    for i, access in enumerate(fleet.access):
        if access.pac is not None:
            access.pac.reauthenticate(now)
            fleet.net.service(fleet.pana_addr(i))


def measured_slots(fleet: Fleet) -> list[int]:
    step = fleet.config.collector.interval_minutes * 60
    first = (int(fleet.start) // step + 1) * step
    return [first + k * step for k in range(fleet.config.slots)]


def authenticated(fleet: Fleet) -> int:
    """Meters holding a current key generation now and on the network (a meter without power,
    in a blackout, holds none: the state it will forget on reboot is not counted).

    Counted from the meters' access events (`Fleet.hold`), not by asking each meter's PaC: a
    sample looked at every meter (300 samples a day), each look a few cache misses in a heap
    of gigabytes: 5 - 12 us a meter measured alone, a few % of a day's CPU."""
    down = fleet.net.down
    if not down:
        return fleet.holding
    index, held = fleet.pana_index, fleet.held
    return fleet.holding - sum(1 for a in down if (i := index.get(a)) is not None and held[i])


def run(fleet: Fleet) -> float:
    """Run the measured slots and one more (for backfill); the time run to."""
    step = fleet.config.collector.interval_minutes * 60
    end = measured_slots(fleet)[-1] + 2 * step - 1
    fleet.clock.run_until(end)
    fleet.headend.flush(fleet.clock.now)
    return end


def run_fleet(config: FleetConfig) -> dict[str, Any]:
    """Build and run a fleet; the measured findings (see `amistack.bench.collection`). Under
    the GC policy of a scenario (`gctune.service_gc`; the built fleet frozen)."""
    with service_gc(young=SIMULATION_YOUNG):
        t_build = time.process_time()
        fleet = build_fleet(config)
        t_run = time.process_time()
        end = run(fleet)
        cpu_run = time.process_time() - t_run
        return summarize(fleet, measured_slots(fleet), end - fleet.start, cpu_run, t_run - t_build)


def summarize(
    fleet: Fleet, measured: list[int], elapsed: float, cpu_run: float, cpu_build: float
) -> dict[str, Any]:
    cfg = fleet.config
    step = cfg.collector.interval_minutes * 60
    slots: list[SlotStats] = [fleet.headend.collector.slots[b] for b in measured]
    expected = sum(len(s.expected) for s in slots)
    via: Counter[str] = Counter()
    late = 0
    times: list[float] = []
    for s in slots:
        for mid, d in s.delivered.items():
            if mid not in s.expected:
                continue
            via[d.via] += 1
            times.append(d.at - s.boundary)
            if d.at > s.boundary + step or d.via == "backfill":
                late += 1
    delivered = sum(via.values())
    stored = fleet.repo.count_readings()
    cells = fleet.net.cells
    util = [c.busy / elapsed for c in cells]
    he = fleet.headend
    return {
        "mode": cfg.mode.value,
        "meters": cfg.meters,
        "cells": cfg.cells,
        "meters_per_cell": cfg.meters // max(cfg.cells, 1),
        "cell_rate_pps": cfg.cell.rate_pps,
        "slots": len(slots),
        "readings_expected": expected,
        "readings_collected": delivered,
        "readings_lost": expected - delivered,
        "readings_late": late,
        "readings_backfilled": via["backfill"],
        "collected_via": dict(via),
        "slot_time_p50_s": quantile(times, 0.5),
        "slot_time_p99_s": quantile(times, 0.99),
        "slot_time_max_s": max(times, default=None),
        "cell_utilisation_mean": statistics.fmean(util) if util else 0.0,
        "cell_utilisation_max": max(util, default=0.0),
        "cell_utilisation_peak_10s": max((c.peak_busy / UTIL_WINDOW for c in cells), default=0.0),
        "cell_packets": sum(c.packets for c in cells),
        "cell_dropped": sum(c.dropped for c in cells),
        "cell_max_wait_s": max((c.max_wait for c in cells), default=0.0),
        "packets_per_reading": fleet.net.counters["sent"] / max(delivered, 1),
        "rows_stored": stored,
        "headend": {
            "requests": he.collector.counters["requests"],
            "read_failed": he.collector.counters["read-failed"],
            "pushes": he.collector.counters["pushes"],
            "acks_held": he.counters["acks-held"],
            "acks_released": he.counters["acks-released"],
            "duplicates": he.ingestor.counters["duplicates"],
            "c1222": {
                k: v
                for k, v in he.client.counters.items()
                if k in ("timeouts", "retransmissions", "auth-failed", "no-key", "replayed")
            },
        },
        "meters_pushes_lost": sum(n.counters["pushes-lost"] for n in fleet.nodes),
        "authentications": sum(a.authentications for a in fleet.access),
        "meters_authenticated": authenticated(fleet),
        # PANA successes sent whose PAN with the C flag never came back: the key server dropped
        # the generation, the meter may hold it (docs/key-hierarchy.md, "Durability" 3)
        "keyserver_successes_unconfirmed": fleet.keyserver.counters["successes_unconfirmed"],
        "join": fleet.join,
        "cpu_s": round(cpu_run, 2),
        "cpu_build_s": round(cpu_build, 2),
        "simulated_s": elapsed,
    }


__all__ = [
    "CellConfig",
    "CellNetwork",
    "Fleet",
    "FleetConfig",
    "authenticated",
    "build_fleet",
    "build_keyserver",
    "measured_slots",
    "meter_id",
    "meter_psk",
    "rotate_keys",
    "run",
    "run_fleet",
    "start_access",
]
