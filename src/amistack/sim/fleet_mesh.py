"""The fleet in a radio mesh: `amistack sim fleet --topology mesh` (`day`, `concentrator-loss`).

Each cell is a radio area of its own, built by `sim.mesh.build_mesh`: the cell's meters placed
at random around k x k concentrators (k = round(sqrt(meters in the cell / per_concentrator))),
each concentrator the root of its own RPL DODAG with its own /64; 802.15.4 frames under CCM*
with the group keys; every meter authenticates with PANA + EAP-PSK to the real key server
engine through its parent (RFC 6345 relays, hop by hop up the DODAG); the meters' C12.22
endpoints (`meter.node.MeterNode`) answer on their global IPv6 address. The head-end is the
real `headend.service.HeadEnd` with the star's collector (`sim.scenarios.fleet_config`: polled,
or pushed with the meters pushing over the mesh, 30-minute slots, backfill, SQLite in memory),
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
c % K == shard one after another in each shard, and the result does not depend on K. The key
server has no capacity queue here: the mesh's radio is what limits joining.

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
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amistack.addr import Addr, Engine
from amistack.crypto import seeded_random
from amistack.headend.collector import Mode
from amistack.headend.keys import HeadendKeys, IssuedLike, SyncKeySource, repository_resolver
from amistack.headend.service import HeadEnd, HeadEndConfig
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt.ukmf import KeyId
from amistack.mesh.node import radio_addr
from amistack.mesh.rpl.events import DaoAcknowledged
from amistack.mesh.wan import Ipv6Host
from amistack.pana.events import Authenticated, PingCompleted
from amistack.sim.mesh import (
    C1222_PORT,
    HEADEND_HOST,
    HEADEND_IP,
    HEADEND_TITLE,
    METER_EPOCH,
    READ_RETRIES,
    READ_TIMEOUT,
    WAN_LATENCY,
    WAN_ROUTER,
    MeshConfig,
    MeshSim,
    build_mesh,
    meter_id,
    meter_title,
)
from amistack.sim.stats import quantile

if TYPE_CHECKING:
    from amistack.sim.scenarios import ProgressHook, ScenarioConfig

MESH_SCENARIOS = ("day", "concentrator-loss")
FORMATION_S = 600.0  # simulated s the mesh forms before the first slot boundary measured from
LOSS_INTO_SLOT_S = 600.0  # the concentrator dies this long after a slot boundary
LOSS_WATCH_S = (600.0, 3600.0)  # meters per DODAG sampled from this long before to after it
LOSS_SAMPLE_S = 30.0
PER_CONCENTRATOR_READS = 4  # the collector's reads in flight per concentrator of a cell
PER_CONCENTRATOR_RATE = 2.0  # and read starts per second


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
    start: float  # a slot boundary after formation; slots are measured after it
    end: float
    boundaries: list[int]  # the measured slots' boundaries (calendar time)
    roots: dict[bytes, int] = field(default_factory=dict)  # DODAG ID -> concentrator

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
    return MeshConfig(
        nodes=cell_size(sc, c),
        seed=sc.seed * 1009 + c,
        per_concentrator=sc.per_concentrator,
        c1222=True,
        push=push,
    )


def build_cell(sc: ScenarioConfig, c: int) -> MeshCell:
    """Cell c's mesh with the head-end collecting it, before anything has run."""
    from amistack.sim.scenarios import SLOT_S, fleet_config

    config = mesh_config(sc, c)
    sim = build_mesh(config)
    now = METER_EPOCH
    repo = SqliteRepository(Path(":memory:"))
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
    start = FORMATION_S + (-(METER_EPOCH + FORMATION_S)) % SLOT_S
    slots = round(sc.days * 86400 / SLOT_S)
    first = int(METER_EPOCH + start) + SLOT_S
    cell = MeshCell(c, sim, headend, start, start + slots * SLOT_S + 2 * SLOT_S,
                    list(range(first, first + slots * SLOT_S, SLOT_S)))  # fmt: skip
    _follow_addresses(cell)
    return cell


def _follow_addresses(cell: MeshCell) -> None:
    """The concentrators' topology report, modelled: once a root acknowledges a meter's DAO it
    routes to the meter's address, and the head-end reads the meter there (module doc)."""
    sim = cell.sim
    index = {radio_addr(m.eui): i for i, m in enumerate(sim.meters, 1)}
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


def _sampler(cell: MeshCell, every: float, until: float) -> list[dict[str, float]]:
    """Every `every` s from the start: meters holding keys, in a DODAG, readings stored."""
    sim, rows = cell.sim, []
    clock = sim.net.clock

    def sample() -> None:
        now = clock.now
        rows.append({
            "t": round(now - cell.start, 3),
            "authenticated": sum(1 for m in sim.c1222 if m.meter.has_key(now)),
            "joined": sum(1 for m in sim.meters if m.rpl.joined),
            "keyserver_queue": 0,
            "keyserver_dropped": 0,
            "readings": cell.headend.ingestor.counters["inserted"],
            "authentications": sim.keyserver.counters["auth-success"],
        })  # fmt: skip
        if now + every <= until:
            clock.call_at(now + every, sample)

    clock.call_at(cell.start, sample)
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


def cell_part(
    sc: ScenarioConfig, c: int, progress: Callable[[float, int], None] | None = None
) -> dict[str, Any]:
    """Cell c's counts for the scenario (they add up over the cells)."""
    cell = build_cell(sc, c)
    sim = cell.sim
    series = _sampler(cell, sc.sample_s, cell.end)
    counters = sim.net.counters
    at_start: dict[str, Any] = {}

    def started() -> None:  # the formed mesh, and the counts the measured window starts from
        at_start.update(sent=counters["sent"], wan=counters["wan"], mesh=_mesh_figures(cell))

    sim.net.clock.call_at(cell.start, started)
    loss = None
    if sc.scenario == "concentrator-loss" and c == 0:
        loss = _concentrator_loss(cell)
    _run(cell, progress)
    he = cell.headend
    client = he.client.counters
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
        "keyserver": {
            "authentications": sim.keyserver.counters["auth-success"],
            "queue_max": 0,
            "dropped": 0,
            "served": 0,
        },
        "mesh": at_start["mesh"],
        "series": series,
        "events": sim.net.clock.callbacks_run,
    }
    if loss is not None:
        part["concentrator_loss"] = loss()
    return part


def _concentrator_loss(cell: MeshCell) -> Callable[[], dict[str, Any]]:
    """Kill concentrator 0 of the cell mid-run; what happened to its meters, at the end."""
    from amistack.sim.scenarios import SLOT_S

    sim = cell.sim
    clock = sim.net.clock
    middle = len(cell.boundaries) // 2
    t_loss = cell.start + middle * SLOT_S + LOSS_INTO_SLOT_S
    dead = sim.concentrators[0]
    dead_id = dead.rpl.dodag_id
    index = {radio_addr(m.eui): i for i, m in enumerate(sim.meters, 1)}
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
    from amistack.sim.scenarios import peak_rss_mb

    cpu0 = time.process_time()
    cells = list(range(shard, sc.cells, sc.shards))
    parts: list[dict[str, Any]] = []
    total = sc.days * 86400.0

    def hook(fraction: float, n: int) -> None:
        if progress is not None:
            done = (len(parts) + fraction) / len(cells)
            progress(done * total, total, sum(p["events"] for p in parts) + n)

    for c in cells:
        parts.append(cell_part(sc, c, hook))
    events = sum(p["events"] for p in parts)
    return {
        "cells": parts,
        "wall": {
            "events": events,
            "keyserver_cpu_s": 0.0,
            "keyserver_datagrams": 0,
            "cpu_s": round(time.process_time() - cpu0, 3),
            "peak_rss_mb": peak_rss_mb(),
        },
    }


def merge_mesh(sc: ScenarioConfig, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The fleet's figures from every cell's counts (in cell order, whatever the shards)."""
    from amistack.sim.scenarios import merge_series, merge_slot_counts, slot_summary

    cells = sorted((c for p in parts for c in p["cells"]), key=lambda c: c["cell"])
    stored = sum(c["headend"]["readings_stored"] for c in cells)
    counts = merge_slot_counts([c["slot_counts"] for c in cells])
    mesh = [c["mesh"] for c in cells]
    meters = sum(m["meters"] for m in mesh)
    out: dict[str, Any] = {
        "slots": slot_summary(counts),
        "readings_expected": sum(e for e, _, _, _ in counts),
        "readings_lost": sum(e - g for e, g, _, _ in counts),
        "packets_per_reading": round(sum(c["packets"] for c in cells) / max(stored, 1), 3),
        "link_frames_per_reading": round(sum(c["link_frames"] for c in cells) / max(stored, 1), 3),
        "wan_packets_per_reading": round(sum(c["wan_packets"] for c in cells) / max(stored, 1), 3),
        "headend": {k: sum(c["headend"][k] for c in cells) for k in cells[0]["headend"]},
        "keyserver": {k: sum(c["keyserver"][k] for c in cells) for k in cells[0]["keyserver"]},
        "mesh": {
            "cells": len(cells),
            "meters": meters,
            "concentrators": sum(m["concentrators"] for m in mesh),
            "reachable": sum(m["reachable"] for m in mesh),
            "relay_ready_at_start": sum(m["relay_ready"] for m in mesh),
            "formed_by_s": max((m["relay_ready_p100_s"] or 0.0) for m in mesh),
            "hops_max": max(m["hops_max"] for m in mesh),
            "hops_mean": round(sum(m["hops_sum"] for m in mesh) / max(meters, 1), 2),
            "area_m_per_cell": [m["area_m"] for m in mesh],
        },
        "series": merge_series([c["series"] for c in cells]),
    }
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
        "keyserver": "the real engine per cell, no capacity queue (the radio limits joining)",
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
