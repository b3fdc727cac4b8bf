"""A utility in a box: fleet scenarios on the virtual clock with the real engines (sim/fleet.py).

Each scenario builds a star-topology fleet (meters in shared cells, one key server, one
head-end; see `sim.fleet`) from a seed, runs it, samples it every `sample_s` simulated seconds
and returns a report: `simulated` holds what the simulation found and is the same for the same
seed and parameters; `wall` holds what this machine measured (wall time, events/s, peak RSS,
the key server's CPU per datagram) and differs from run to run.

- `day`: `days` x 48 half-hour slots; per-slot completeness (backfill counted), packets per
  reading, p99 lateness of a reading after its slot boundary.
- `blackout`: after the first slot every meter loses power at once and comes back within
  `return_window` seconds (a rebooted meter starts a new PANA session); time until 50/95/100 %
  are authenticated again and the first complete slot after, against the key server's
  capacity; the same blackout run again with the meters' back-off disabled, for comparison.
- `rollover`: key lifetime `rollover_lifetime`, so every meter re-authenticates (and rotates
  its keys) several times a day: readings refused although sent under a valid key must be 0.
- `revocation`: `revoke_fraction` of the meters revoked halfway through `days`: time until each
  is shut out (its session ended at the meter) and readings accepted from them afterwards
  (must be 0). `days` also sets how long `rollover` runs.
- `concentrator-loss` (`topology="mesh"`, sim/fleet_mesh.py): a concentrator dies mid-run; its
  meters re-parent into neighbouring DODAGs, move or renew their PANA sessions through new
  relays, and collection resumes: time to recover, readings lost (must be 0, backfill counted).

`topology="mesh"` runs every scenario with the meters in RPL meshes under several
concentrators per cell (sim/fleet_mesh.py), whose cells' counts are merged by the functions
here (`merge_blackout_run`, `rollover_figures`, `revocation_figures`, ...).

Every scenario runs whole or in `shards` by cell (sim/shard.py): each shard's part returns
counts that add up, and `merge_parts` turns them into the scenario's figures.

The key server's capacity (`keyserver_auth_rate` full authentications per second) becomes a
service time per datagram it takes in (`sim.capacity.ServiceQueue`, DATAGRAMS_PER_AUTH in a
full PANA + EAP-PSK authentication); the CPU the real engine spent per datagram in the same run
is reported beside it (`wall.keyserver_cpu_us_per_datagram`), so the model can be checked
against this machine without making the simulated results depend on how busy it was.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amistack.gctune import SIMULATION_YOUNG, service_gc
from amistack.headend.collector import CollectorConfig, Mode, SlotStats
from amistack.meter.access import AccessConfig
from amistack.meter.events import AccessLost
from amistack.meter.node import PushConfig
from amistack.pana.pac import PacConfig
from amistack.pana.timers import RetransmitParams
from amistack.sim.fleet import (
    KEYSERVER_ADDR,
    CellConfig,
    Fleet,
    FleetConfig,
    authenticated,
    build_fleet,
    meter_id,
)
from amistack.sim.stats import percentile_time

SCENARIOS = ("day", "blackout", "rollover", "revocation", "concentrator-loss")
STAR_SCENARIOS = SCENARIOS[:4]
TOPOLOGIES = ("star", "mesh")
SLOT_S = 1800  # half-hour slots (the B route's and TEPCO's collection interval)
DATAGRAMS_PER_AUTH = 5  # what a key server takes in per authentication: PCI + 4 PAN
NO_BACKOFF_PCI = RetransmitParams(irt=1.0, mrt=1.0, mrc=0, mrd=0.0)  # every second, for ever
BLACKOUT_INTO_SLOT_S = 600.0  # the blackout comes this long after the first measured boundary

ProgressHook = Callable[[float, float, int], None]  # (simulated s done, total, events run)


@dataclass(frozen=True)
class ScenarioConfig:
    scenario: str = "day"
    meters: int = 1000
    cells: int = 10
    seed: int = 1
    days: float = 1.0  # `day`: how many days of slots
    mode: Mode = Mode.POLLED
    cell_rate_pps: float = 50.0  # each cell's shared channel (see sim.fleet.CellConfig)
    keyserver_auth_rate: float = 3000.0  # full authentications per second it can serve
    keyserver_queue: int = 4000  # datagrams that may wait for it
    return_window: float = 60.0  # `blackout`: power returns within this many seconds
    rollover_lifetime: float = 7200.0  # `rollover`: the session (key) lifetime
    revoke_fraction: float = 0.01  # `revocation`
    sample_s: float = 300.0  # each sample counts every meter: a day has 288
    shards: int = 1  # independent shards by cell (sim/shard.py)
    # Where the shards run (they change no simulated figure): a Dask scheduler's address, or
    # a LocalCluster of `workers` processes.
    cluster: str | None = None
    workers: int = 1
    topology: str = "star"  # or "mesh" (sim/fleet_mesh.py)
    per_concentrator: int = 50  # mesh: meters per concentrator (k x k DODAG roots per cell)

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r} (one of {', '.join(SCENARIOS)})")
        if self.meters < 1 or self.cells < 1 or self.cells > self.meters:
            raise ValueError("need 1 <= cells <= meters")
        if self.days <= 0 or self.keyserver_auth_rate <= 0 or self.cell_rate_pps <= 0:
            raise ValueError("days, keyserver_auth_rate and cell_rate_pps must be > 0")
        if not 1 <= self.shards <= self.cells:
            raise ValueError("need 1 <= shards <= cells")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if not 0 < self.revoke_fraction <= 1:
            raise ValueError("revoke_fraction must be in (0, 1]")
        if self.scenario not in scenarios_for(self.topology):
            raise ValueError(
                f"scenario {self.scenario!r} does not run on topology {self.topology!r} "
                f"(it runs: {', '.join(scenarios_for(self.topology))})"
            )
        if self.topology == "mesh":
            from amistack.sim.fleet_mesh import check_mesh

            check_mesh(self)


def scenarios_for(topology: str) -> tuple[str, ...]:
    """The scenarios a topology runs (what `--scenario all` means there)."""
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r} (one of {', '.join(TOPOLOGIES)})")
    if topology == "mesh":
        from amistack.sim.fleet_mesh import MESH_SCENARIOS

        return MESH_SCENARIOS
    return STAR_SCENARIOS


def fleet_config(
    sc: ScenarioConfig, *, backoff: bool = True, slots: int = 1, shard: int = 0
) -> FleetConfig:
    access = AccessConfig() if backoff else AccessConfig(retry_backoff=(1.0, 1.0), jitter=0.0)
    pac = PacConfig() if backoff else PacConfig(pci_retransmit=NO_BACKOFF_PCI)
    lifetime = sc.rollover_lifetime if sc.scenario == "rollover" else 24 * 3600.0
    return FleetConfig(
        meters=sc.meters,
        cells=sc.cells,
        mode=sc.mode,
        slots=slots,
        seed=sc.seed,
        cell=CellConfig(rate_pps=sc.cell_rate_pps, queue=200),
        collector=CollectorConfig(interval_minutes=SLOT_S // 60),
        push=PushConfig(
            enabled=True,
            interval_minutes=SLOT_S // 60,
            intervals=4,
            min_offset_s=5.0,
            max_offset_s=600.0,
        ),
        key_lifetime=lifetime,
        access=access,
        pac=pac,
        keyserver_service_s=1.0 / (sc.keyserver_auth_rate * DATAGRAMS_PER_AUTH),
        keyserver_queue=sc.keyserver_queue,
        command_poll_s=60.0,  # nothing changes the registry or queues commands in a scenario
        meter_refresh_s=86400.0,  # each look lists every meter; the registry never changes here
        shard=shard,
        shards=sc.shards,
    )


class Sampler:
    """Every `every` simulated seconds from `start` (now) to `until` (for ever): authenticated
    meters, the key server's queue, readings. Each sample counts every meter."""

    def __init__(
        self, fleet: Fleet, every: float, start: float | None = None, until: float | None = None
    ) -> None:
        self.fleet = fleet
        self.every = every
        self.until = until
        self.rows: list[dict[str, float]] = []
        fleet.clock.call_at(fleet.clock.now if start is None else start, self._sample)

    def _sample(self) -> None:
        f = self.fleet
        q = f.keyserver_queue
        self.rows.append(
            {
                "t": round(f.clock.now - f.start, 3),
                "authenticated": authenticated(f),
                "keyserver_queue": q.depth if q is not None else 0,
                "keyserver_dropped": q.counters["dropped"] if q is not None else 0,
                "readings": f.headend.ingestor.counters["inserted"],
                "authentications": f.granted,
            }
        )
        if self.until is None or f.clock.now + self.every <= self.until:
            f.clock.call_at(f.clock.now + self.every, self._sample)


def run_for(
    fleet: Fleet, until: float, progress: ProgressHook | None, chunk: float = 600.0
) -> None:
    """Run the clock to `until` (absolute), reporting progress every `chunk` simulated s."""
    clock = fleet.clock
    begin = clock.now
    while clock.now < until:
        clock.run_until(min(until, clock.now + chunk))
        if progress is not None:
            progress(clock.now - begin, until - begin, clock.callbacks_run)


LATENESS_BIN_S = 0.1  # lateness is counted in bins of this width (bounded memory, mergeable)
KEEP_SLOTS = 8  # slots the collector keeps; each is digested into counts 6 slots after it


def _quantile(hist: Counter[int], q: float) -> float | None:
    """The q-quantile (seconds) of a histogram of LATENESS_BIN_S bins."""
    n = sum(hist.values())
    if not n:
        return None
    rank = min(n - 1, int(q * n))
    for b in sorted(hist):
        rank -= hist[b]
        if rank < 0:
            return round(b * LATENESS_BIN_S, 3)
    raise AssertionError("unreachable")


class SlotDigest:
    """Each slot's expected and delivered readings and their lateness, counted as the slot
    ages (the collector then forgets it: memory stays bounded by KEEP_SLOTS, not the run).
    The counts of several shards add up (`merge_slot_counts`)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.end = 0.0
        self.counts: dict[int, tuple[int, int, int, Counter[int]]] = {}

    def follow(self, end: float) -> None:
        """Count slots as they age until `end`; the collector keeps only KEEP_SLOTS."""
        self.end = end
        self.fleet.headend.collector.keep_slots = KEEP_SLOTS
        self.fleet.clock.call_at(self.fleet.clock.now + SLOT_S, self._tick)

    def _tick(self) -> None:
        self.take(self.fleet.clock.now - (KEEP_SLOTS - 2) * SLOT_S)
        if self.fleet.clock.now + SLOT_S < self.end:
            self.fleet.clock.call_at(self.fleet.clock.now + SLOT_S, self._tick)

    def take(self, before: float) -> None:
        """Count the slots whose boundary is at or before `before`."""
        slots = self.fleet.headend.collector.slots
        for b in sorted(b for b in slots if b <= before and b not in self.counts):
            self.counts[b] = digest_slot(slots[b])

    def part(self, boundaries: list[int]) -> list[tuple[int, int, int, Counter[int]]]:
        self.take(self.fleet.clock.now)
        return [self.counts.get(b, (0, 0, 0, Counter())) for b in boundaries]


SlotCounts = list[tuple[int, int, int, Counter[int]]]


def digest_slot(s: SlotStats) -> tuple[int, int, int, Counter[int]]:
    """A slot's expected, delivered and backfilled readings and its lateness histogram."""
    got = [d for mid, d in s.delivered.items() if mid in s.expected]
    late = Counter(int((d.at - s.boundary) / LATENESS_BIN_S) for d in got)
    backfilled = sum(1 for d in got if d.via == "backfill")
    return (len(s.expected), len(got), backfilled, late)


def merge_slot_counts(parts: list[SlotCounts]) -> SlotCounts:
    out: SlotCounts = []
    for per_slot in zip(*parts, strict=True):
        late: Counter[int] = Counter()
        for _, _, _, c in per_slot:
            late.update(c)
        out.append(
            (
                sum(p[0] for p in per_slot),
                sum(p[1] for p in per_slot),
                sum(p[2] for p in per_slot),
                late,
            )
        )
    return out


def slot_summary(counts: SlotCounts) -> dict[str, Any]:
    """Completeness and lateness of slots from their counts."""
    complete = [round(got / max(expected, 1), 6) for expected, got, _, _ in counts]
    lateness: Counter[int] = Counter()
    for _, _, _, c in counts:
        lateness.update(c)
    return {
        "slots": len(counts),
        "slots_complete": sum(1 for c in complete if c >= 1.0),
        "completeness": complete,
        "lateness_p99_s_by_slot": [_quantile(c, 0.99) or 0.0 for _, _, _, c in counts],
        "lateness_p50_s": _quantile(lateness, 0.5),
        "lateness_p99_s": _quantile(lateness, 0.99),
        "readings_backfilled": sum(b for _, _, b, _ in counts),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def fleet_wall(fleet: Fleet) -> dict[str, Any]:
    """What this machine spent on a fleet: events run, the key server engine's CPU."""
    q = fleet.keyserver_queue
    return {
        "events": fleet.clock.callbacks_run,
        "keyserver_cpu_s": q.engine_cpu_s if q is not None else 0.0,
        "keyserver_datagrams": q.counters["served"] if q is not None else 0,
    }


def sum_walls(walls: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        k: sum(w[k] for w in walls) for k in ("events", "keyserver_cpu_s", "keyserver_datagrams")
    }


def slot_boundaries(start: float, end: float) -> list[int]:
    """The slot boundaries after `start` whose slot ends by `end`."""
    first = (int(start) // SLOT_S + 1) * SLOT_S
    return list(range(first, int(end) - SLOT_S + 1, SLOT_S))


def _headend_figures(fleet: Fleet) -> dict[str, Any]:
    he = fleet.headend
    c = he.client.counters
    return {
        "readings_stored": fleet.repo.count_readings(),
        "packets_sent": fleet.net.counters["sent"],
        "c1222_auth_failed": c["auth-failed"],
        "c1222_no_key": c["no-key"],
        "c1222_replayed": c["replayed"],
        "meters_refused_requests": sum(n.counters["auth-failures"] for n in fleet.nodes),
    }


def _keyserver_figures(fleet: Fleet) -> dict[str, Any]:
    q = fleet.keyserver_queue
    return {
        "authentications": sum(a.authentications for a in fleet.access),
        "queue_max": q.max_depth if q is not None else 0,
        "dropped": q.counters["dropped"] if q is not None else 0,
        "served": q.counters["served"] if q is not None else 0,
    }


def shares(times: list[float], total: int) -> dict[str, float | None]:
    times = sorted(times)
    return {f"t{p}_s": percentile_time(times, total, p / 100) for p in (50, 95, 100)}


# -- the scenarios -------------------------------------------------------------------------------
#
# Each scenario runs as parts, one per shard (the whole fleet when sc.shards is 1): a part
# builds the fleet of its cells (`fleet_config(shard=...)`), runs it and returns counts that
# add up; `_MERGES` turns the parts into the scenario's figures. Whatever a scenario draws
# per meter (power return times, which meters are revoked) is drawn over the fleet-wide
# indices, so a meter does the same in any shard count.

Part = dict[str, Any]


def _part_wall(
    fleet_walls: list[dict[str, Any]],
    start: tuple[float, float],
    built: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """A part's machine figures: events and key-server CPU, its process CPU and wall time
    (`start`: `_counters()` when it began; `built`: when its fleet was built, if it has one)
    and its process's RSS. CPU beside wall shows what the part lost to other processes."""
    now = _counters()
    out = {
        **sum_walls(fleet_walls),
        "cpu_s": round(now[0] - start[0], 3),
        "wall_s": round(now[1] - start[1], 3),
        "peak_rss_mb": peak_rss_mb(),
    }
    if built is not None:
        out["build_cpu_s"] = round(built[0] - start[0], 3)
        out["build_wall_s"] = round(built[1] - start[1], 3)
    return out


def _counters() -> tuple[float, float]:
    """(process CPU, perf counter) now: where a part's build ended, for `_part_wall`."""
    return time.process_time(), time.perf_counter()


def merge_keyservers(keyservers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **{k: sum(ks[k] for ks in keyservers) for k in keyservers[0]},
        "queue_max": max(ks["queue_max"] for ks in keyservers),  # the busiest shard's
    }


def merge_series(series: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """The shards' samples, taken at the same simulated times, added up."""
    return [
        {k: (rows[0][k] if k == "t" else sum(r[k] for r in rows)) for k in rows[0]}
        for rows in zip(*series, strict=True)
    ]


def day_part(
    sc: ScenarioConfig, shard: int = 0, progress: ProgressHook | None = None
) -> tuple[Fleet, Part]:
    """Shard `shard` of a `day` (all of it when sc.shards is 1): its counts, which add up."""
    start = _counters()
    fleet = build_fleet(fleet_config(sc, shard=shard))
    built = _counters()
    sampler = Sampler(fleet, sc.sample_s)
    sent0 = fleet.net.counters["sent"]
    end = fleet.start + sc.days * 86400 + 2 * SLOT_S  # two more slots: backfill, acks
    digest = SlotDigest(fleet)
    digest.follow(end)
    run_for(fleet, end, progress)
    boundaries = slot_boundaries(fleet.start, end)[: round(sc.days * 86400 / SLOT_S)]
    return fleet, {
        "wall": _part_wall([fleet_wall(fleet)], start, built),
        "slot_counts": digest.part(boundaries),
        "packets": fleet.net.counters["sent"] - sent0,
        "headend": _headend_figures(fleet),
        "keyserver": _keyserver_figures(fleet),
        "series": sampler.rows,
    }


def merge_day(parts: list[Part]) -> dict[str, Any]:
    """The `day` figures of the whole fleet from its shards' parts."""
    stored = sum(p["headend"]["readings_stored"] for p in parts)
    return {
        "slots": slot_summary(merge_slot_counts([p["slot_counts"] for p in parts])),
        "packets_per_reading": round(sum(p["packets"] for p in parts) / max(stored, 1), 3),
        "headend": {k: sum(p["headend"][k] for p in parts) for k in parts[0]["headend"]},
        "keyserver": merge_keyservers([p["keyserver"] for p in parts]),
        "series": merge_series([p["series"] for p in parts]),
    }


def _day(sc: ScenarioConfig, shard: int, progress: ProgressHook | None) -> Part:
    return day_part(sc, shard, progress)[1]


def _blackout_run(
    sc: ScenarioConfig, backoff: bool, shard: int, progress: ProgressHook | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One blackout of the shard's meters: its counts, and the machine's figures."""
    fleet = build_fleet(fleet_config(sc, backoff=backoff, shard=shard))
    clock = fleet.clock
    first = (int(fleet.start) // SLOT_S + 1) * SLOT_S
    t_black = first + BLACKOUT_INTO_SLOT_S
    # the recovery, second by second: from 10 s before the blackout to 10 minutes after (a
    # sample counts every meter: a whole run of them would cost more than the meters)
    sampler = Sampler(fleet, 1.0, t_black - 10, t_black + 600)
    run_for(fleet, t_black, progress)
    back = return_times(sc, t_black, backoff)
    for i, g in enumerate(fleet.ids):
        for addr in (fleet.addrs[i], fleet.pana_addr(i)):
            fleet.net.down.add(addr)
        clock.call_at(back[g], functools.partial(_power_returns, fleet, i))
    meters = range(len(fleet.ids))
    granted_before = [len(fleet.granted_at.get(i, [])) for i in meters]
    end = blackout_end(sc, t_black)
    run_for(fleet, end, progress)
    again = [
        fleet.granted_at[i][granted_before[i]] - t_black
        for i in meters
        if len(fleet.granted_at.get(i, [])) > granted_before[i]
    ]
    boundaries = slot_boundaries(t_black, end)
    return {
        "again": sorted(again),
        "slot_counts": SlotDigest(fleet).part(boundaries),
        "slots_after_s": [b - t_black for b in boundaries],
        "keyserver": _keyserver_figures(fleet),
        "blackout_at_s": round(t_black - fleet.start, 3),
        "series": sampler.rows,
    }, fleet_wall(fleet)


def blackout_end(sc: ScenarioConfig, t_black: float) -> float:
    """Where a blackout run ends: an hour (or four return windows) of recovery, two slots."""
    return t_black + max(3600.0, 4 * sc.return_window) + 2 * SLOT_S


def return_times(sc: ScenarioConfig, t_black: float, backoff: bool) -> list[float]:
    """When each meter of the fleet (by fleet-wide index) has power again after a blackout at
    `t_black`: uniformly within `return_window` s, 1 s on."""
    rng = random.Random(sc.seed * 101 + backoff)
    return [t_black + 1.0 + sc.return_window * rng.random() for _ in range(sc.meters)]


def _power_returns(fleet: Fleet, i: int) -> None:
    """A rebooted meter: reachable again, its old session forgotten, a new one started."""
    for addr in (fleet.addrs[i], fleet.pana_addr(i)):
        fleet.net.down.discard(addr)
    fleet.access[i].reboot(fleet.clock.now)  # its PaC and SA forgotten
    fleet.hold(i, False)
    fleet.net.service(fleet.pana_addr(i))


def _blackout(sc: ScenarioConfig, shard: int, progress: ProgressHook | None) -> Part:
    start = _counters()
    with_backoff, wall_on = _blackout_run(sc, True, shard, progress)
    without, wall_off = _blackout_run(sc, False, shard, progress)
    return {
        "with_backoff": with_backoff,
        "without_backoff": without,
        "wall": _part_wall([wall_on, wall_off], start),
    }


def merge_blackout_run(sc: ScenarioConfig, runs: list[dict[str, Any]], backoff: bool) -> Any:
    """One blackout run's figures from its parts (shards, or a mesh's cells)."""
    again = sorted(t for r in runs for t in r["again"])
    slots = slot_summary(merge_slot_counts([r["slot_counts"] for r in runs]))
    after = runs[0]["slots_after_s"]
    return {
        "backoff": backoff,
        "reauthenticated": len(again),
        **shares(again, sc.meters),
        "first_complete_slot_after_s": next(
            (t for t, c in zip(after, slots["completeness"], strict=True) if c >= 1.0), None
        ),
        "keyserver": merge_keyservers([r["keyserver"] for r in runs]),
        "slots": slots,
        "blackout_at_s": runs[0]["blackout_at_s"],
        "series": merge_series([r["series"] for r in runs]),
    }


def _merge_blackout(sc: ScenarioConfig, parts: list[Part]) -> dict[str, Any]:
    return {
        "with_backoff": merge_blackout_run(sc, [p["with_backoff"] for p in parts], True),
        "without_backoff": merge_blackout_run(sc, [p["without_backoff"] for p in parts], False),
    }


def _rollover(sc: ScenarioConfig, shard: int, progress: ProgressHook | None) -> Part:
    fleet, part = day_part(sc, shard, progress)
    per_meter = [len(fleet.granted_at.get(i, [])) for i in range(len(fleet.ids))]
    part["rotations"] = (min(per_meter), max(per_meter))
    return part


def _merge_rollover(sc: ScenarioConfig, parts: list[Part]) -> dict[str, Any]:
    out = merge_day(parts)
    out.update(rollover_figures(out["headend"], [p["rotations"] for p in parts]))
    return out


def rollover_figures(headend: dict[str, Any], rotations: list[tuple[int, int]]) -> dict[str, Any]:
    """Re-authentications per meter (each part's fewest and most) and the readings refused
    although sent under a valid key (the head-end's and the meters' refusals: must be 0)."""
    return {
        "rotations_per_meter_min": min(r[0] for r in rotations),
        "rotations_per_meter_max": max(r[1] for r in rotations),
        "readings_refused_with_valid_key": (
            headend["c1222_auth_failed"]
            + headend["c1222_no_key"]
            + headend["meters_refused_requests"]
        ),
    }


def revoked_meters(sc: ScenarioConfig) -> list[int]:
    """The fleet-wide indices of the meters `revocation` revokes: every k-th."""
    count = max(1, int(sc.meters * sc.revoke_fraction))
    return list(range(0, sc.meters, max(1, sc.meters // count)))[:count]


def _revocation(sc: ScenarioConfig, shard: int, progress: ProgressHook | None) -> Part:
    start = _counters()
    fleet = build_fleet(fleet_config(sc, shard=shard))
    built = _counters()
    sampler = Sampler(fleet, sc.sample_s)
    chosen = set(revoked_meters(sc))
    revoked = [i for i, g in enumerate(fleet.ids) if g in chosen]  # this shard's, local
    t_rev = fleet.start + sc.days * 86400 / 2  # midday
    lost_at: dict[int, float] = {}
    index = {fleet.pana_addr(i): i for i in revoked}

    def on_event(addr: Any, event: object, now: float) -> None:
        if isinstance(event, AccessLost) and addr in index and now >= t_rev:
            lost_at.setdefault(index[addr], now)

    fleet.net.on_event.append(on_event)

    def revoke() -> None:
        for i in revoked:
            fleet.keyserver.revoke(meter_id(fleet.ids[i]), fleet.clock.now, reason="fleet scenario")
            fleet.net.service(KEYSERVER_ADDR)

    fleet.clock.call_at(t_rev, revoke)
    end = fleet.start + sc.days * 86400 + 2 * SLOT_S
    digest = SlotDigest(fleet)  # bounded memory, as in a day
    digest.follow(end)
    run_for(fleet, end, progress)
    after = sum(
        1
        for i in revoked
        for r in fleet.repo.readings(meter_id(fleet.ids[i]), 0, 2**40, limit=10_000)
        if r.received_at > t_rev + 1e-6
    )
    return {
        "wall": _part_wall([fleet_wall(fleet)], start, built),
        "revoked": len(revoked),
        "shut_out_s": [lost_at[i] - t_rev for i in revoked if i in lost_at],
        "reauthenticated": sum(
            1 for i in revoked if any(t > t_rev for t in fleet.granted_at.get(i, []))
        ),
        "accepted_after": after,
        "slot_counts": digest.part(slot_boundaries(fleet.start, end)),
        "series": sampler.rows,
    }


def revocation_figures(parts: list[Part]) -> dict[str, Any]:
    """The revoked meters, how many were shut out and how fast, what they got in after."""
    shut = [t for p in parts for t in p["shut_out_s"]]
    return {
        "revoked": sum(p["revoked"] for p in parts),
        "shut_out": len(shut),
        "shut_out_max_s": round(max(shut), 3) if shut else None,
        "reauthenticated_after_revocation": sum(p["reauthenticated"] for p in parts),
        "readings_accepted_after_revocation": sum(p["accepted_after"] for p in parts),
    }


def _merge_revocation(sc: ScenarioConfig, parts: list[Part]) -> dict[str, Any]:
    return {
        **revocation_figures(parts),
        "slots_others": slot_summary(merge_slot_counts([p["slot_counts"] for p in parts])),
        "series": merge_series([p["series"] for p in parts]),
    }


PartRunner = Callable[[ScenarioConfig, int, ProgressHook | None], Part]
_PARTS: dict[str, PartRunner] = {
    "day": _day,
    "blackout": _blackout,
    "rollover": _rollover,
    "revocation": _revocation,
}
_MERGES: dict[str, Callable[[ScenarioConfig, list[Part]], dict[str, Any]]] = {
    "day": lambda _sc, parts: merge_day(parts),
    "blackout": _merge_blackout,
    "rollover": _merge_rollover,
    "revocation": _merge_revocation,
}


def scenario_part(sc: ScenarioConfig, shard: int, progress: ProgressHook | None = None) -> Part:
    """Shard `shard`'s part of the scenario (what a Dask worker runs, sim/shard.py), with the
    garbage collector of a long-running service with the simulation's young threshold
    (`gctune.SIMULATION_YOUNG`): each fleet built is frozen (`build_fleet`)."""
    with service_gc(young=SIMULATION_YOUNG):
        if sc.topology == "mesh":
            from amistack.sim.fleet_mesh import mesh_part

            return mesh_part(sc, shard, progress)
        return _PARTS[sc.scenario](sc, shard, progress)


def merge_parts(sc: ScenarioConfig, parts: list[Part]) -> dict[str, Any]:
    """The scenario's `simulated` figures from its shards' parts, in shard order."""
    if sc.topology == "mesh":
        from amistack.sim.fleet_mesh import merge_mesh

        return merge_mesh(sc, parts)
    return _MERGES[sc.scenario](sc, parts)


def _simulate(sc: ScenarioConfig, progress: ProgressHook | None) -> dict[str, Any]:
    if sc.shards == 1:
        parts = [scenario_part(sc, 0, progress)]
    else:
        from amistack.sim.shard import run_shards

        parts, cluster = run_shards(sc, progress)
    out = merge_parts(sc, parts)
    out["_wall"] = sum_walls([p["wall"] for p in parts])
    if sc.shards > 1:  # each shard's own figures, measured in its worker process
        out["_wall"]["shards"] = [p["wall"] for p in parts]
        out["_wall"]["cluster"] = cluster
    return out


def _star_model(sc: ScenarioConfig) -> dict[str, Any]:
    return {
        "topology": "star: meters in shared cells (FIFO channel, rate_pps, bounded queue)",
        "keyserver_service_s_per_datagram": 1.0 / (sc.keyserver_auth_rate * DATAGRAMS_PER_AUTH),
        "datagrams_per_auth": DATAGRAMS_PER_AUTH,
        "shards": (
            "one fleet: one key server, one head-end"
            if sc.shards == 1
            else f"{sc.shards} shards by cell, each with its own key server (1/{sc.shards} "
            "of the capacity and queue) and head-end; nothing crosses between them"
        ),
    }


def run_scenario(sc: ScenarioConfig, progress: ProgressHook | None = None) -> dict[str, Any]:
    """Run one scenario; {"scenario", "parameters", "simulated", "wall"} (see the module doc)."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    simulated = _simulate(sc, progress)
    wall = time.perf_counter() - wall0
    extra = simulated.pop("_wall")
    events = extra.pop("events")
    ks_cpu, ks_datagrams = extra.pop("keyserver_cpu_s"), extra.pop("keyserver_datagrams")
    model = _star_model(sc)
    if sc.topology == "mesh":
        from amistack.sim.fleet_mesh import mesh_model

        model = mesh_model(sc)
    return {
        "scenario": sc.scenario,
        "parameters": {
            k: (v.value if isinstance(v, Mode) else v) for k, v in dataclasses.asdict(sc).items()
        },
        "model": model,
        "simulated": simulated,
        "wall": {
            "wall_s": round(wall, 3),
            "cpu_s": round(time.process_time() - cpu0, 3),
            "peak_rss_mb": peak_rss_mb(),
            "events": events,
            "events_per_s": round(events / max(wall, 1e-9)),
            # the real key server engine's CPU per datagram on this machine, beside the
            # modelled service time (model.keyserver_service_s_per_datagram)
            "keyserver_cpu_us_per_datagram": round(1e6 * ks_cpu / max(ks_datagrams, 1), 1),
            **extra,
        },
    }


__all__ = [
    "SCENARIOS",
    "TOPOLOGIES",
    "ScenarioConfig",
    "digest_slot",
    "merge_parts",
    "merge_series",
    "run_scenario",
    "scenario_part",
    "scenarios_for",
]
