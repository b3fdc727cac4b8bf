"""`amistack bench mesh`: meshes of growing size form and every meter joins through relays.

For each size: build the mesh (`sim.mesh`), run it on the virtual clock until every meter that
can be reached is relay-ready, and measure wall time. Simulated figures (times to 50/95/100 %
authenticated and relay-ready, link frames per node) are a pure function of the seed; wall
figures are this machine's (`cpu_s`, the process's CPU time, is the steadier one on a shared
machine). Every link frame is CCM*-secured except the newcomers' PANA and the
join beacons, so `link_frames_per_wall_s` is frames put on the air per second of wall time
with the crypto in the loop. The baseline, measured in the same run: CCM* protect + unprotect
of one 80-octet frame per second, alone (what the crypto costs without the rest of the stack).

Placement (`sim.mesh`): the density is the same at every size (12 expected neighbours), and so,
by default, is the size of a DODAG: `meters_per_dodag` M (default 100) gives round(N / M)
concentrators, each at the centre of a square cell, so every DODAG holds about M meters at
every size. That is what the growth clause is about, the simulator's cost as the mesh grows with
the protocol's work per node held fixed. M = 100 is the largest at which every size of the issue's
table (100, 1,000, 10,000) has exactly M meters under each concentrator: 100 nodes hold one
DODAG. The other placement, `per_concentrator` (k x k concentrators, k = round(sqrt(N / 400))),
gives 100 meters a DODAG at 100 nodes, 250 at 1,000 and 400 at 10,000: deeper DODAGs as N grows,
so more frames per node (every PANA message and DAO crosses every hop), which is the protocol's
work growing, not the simulator's; at 10,000 nodes it is the same 5 x 5 placement as
`meters_per_dodag=400`, the harder one for the 10-minute target. Under a single root the depth
grows as sqrt(N) at a fixed density, and so does each join's cost: N^1.5, not N log N.
After formation, one C12.22 read of every meter over the mesh (`MeshSim.read_all`): the
head-end on the WAN reads each relay-ready meter's current registers (ST23), `READ_SPACING`
apart; `c1222` gives the delivery ratio and the simulated latency (request start to answer,
the C12.22 client's retries included) at p50/p99, and the read's own wall time (not in
`wall_s`, which is formation's).

Growth (`growth`): for each size after the first, the ratios to the size before of N log N, CPU
s, wall s, link frames, frames per node and CPU per link frame, and `cpu_vs_nlogn` /
`wall_vs_nlogn` / `cpu_per_frame_vs_log_n` normalised to the smallest size (CPU / N log N; CPU
per frame / log N): values at or below 1 mean no worse than N log N from the smallest size on.
CPU per frame is the simulator's own cost; with frames per node fixed (a fixed DODAG size) CPU
grows as N log N exactly when the CPU per frame grows no faster than log N.
"""

from __future__ import annotations

import math
import time
from typing import Any

from amistack.addr import Eui64, PanId
from amistack.gctune import service_gc, settle_gc
from amistack.mesh.frame import Frame, FrameType
from amistack.mesh.security import LinkSecurity, MemoryCounterStore
from amistack.sim.mesh import MeshConfig, build_mesh

READ_WITHIN = 600.0  # simulated s the C12.22 read of every meter may take

__all__ = ["bench_mesh"]


def _ccm_baseline(rounds: int = 5_000) -> float:
    """CCM* protect + unprotect pairs per wall second for one 80-octet payload."""
    a, b = Eui64(bytes(7) + b"\x01"), Eui64(bytes(7) + b"\x02")
    key = bytes(range(16))
    tx, rx = LinkSecurity(a, MemoryCounterStore()), LinkSecurity(b, MemoryCounterStore())
    tx.install_key(1, key)
    rx.install_key(1, key)
    pan = PanId(0x0AB1)
    started = time.perf_counter()
    for i in range(rounds):
        frame = Frame(FrameType.DATA, i & 0xFF, pan, b, None, a, bytes(80),
                      pan_id_compression=True)  # fmt: skip
        data = tx.protect(frame, 1).encode()
        rx.unprotect(Frame.decode(data), False, data)
    return rounds / (time.perf_counter() - started)


METERS_PER_DODAG = 100  # the default placement (module docstring)


def bench_mesh(
    sizes: list[int],
    seed: int,
    max_time: float,
    *,
    meters_per_dodag: int | None = METERS_PER_DODAG,
    per_concentrator: int = 400,
) -> dict[str, Any]:
    """`meters_per_dodag` None: the k x k placement of `per_concentrator` instead."""
    runs = []
    for n in sizes:
        started, cpu = time.perf_counter(), time.process_time()
        config = MeshConfig(nodes=n, seed=seed, per_concentrator=per_concentrator,
                            meters_per_dodag=meters_per_dodag, c1222=True)  # fmt: skip
        with service_gc():  # as the fleet simulator runs: the built mesh frozen (gctune)
            sim = build_mesh(config)
            settle_gc()
            built = time.perf_counter()
            formed = sim.run(max_time)
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu
        report = sim.report(include_dodag=False)
        read_started = time.perf_counter()
        read = sim.read_all(READ_WITHIN)
        read["wall_s"] = round(time.perf_counter() - read_started, 2)
        read.pop("headend")
        frames = report["radio_counters"].get("sent", 0) - report["radio_counters"].get("wan", 0)
        runs.append({
            "nodes": n,
            "concentrators": config.concentrators,
            "meters_per_dodag": round(n / config.concentrators, 1),
            "cells": "{} x {}".format(*config.shape),
            "formed": formed,
            "expected_to_join": report["expected_to_join"],
            "authenticated": report["authenticated"],
            "relay_ready": report["relay_ready"],
            "simulated_s": report["simulated_s"],
            "authenticated_s": report["authenticated_s"],
            "relay_ready_s": report["relay_ready_s"],
            "frames_per_node": report["frames_per_node"],
            "hops": report["hops"],
            "pana_runs": report["pana_runs"],
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "build_wall_s": round(built - started, 2),
            "link_frames": frames,
            "link_frames_per_wall_s": round(frames / (wall - (built - started)), 1),
            "cpu_per_frame_us": round(cpu / frames * 1e6, 1),
            "c1222": read,
        })  # fmt: skip
    _growth(runs)
    radio = MeshConfig(nodes=sizes[0], seed=seed).radio_model()
    for varies in ("area_m", "concentrators", "placement"):
        radio.pop(varies)
    radio["placement"] = (
        f"uniform random (seed {seed}), a concentrator at the centre of each of round(N / "
        f"{meters_per_dodag}) square cells (rows x cols)"
        if meters_per_dodag is not None
        else f"uniform random (seed {seed}), a concentrator per {per_concentrator} meters on "
        "a k x k grid, k = round(sqrt(N / that))"
    )
    return {
        "benchmark": "mesh",
        "seed": seed,
        "radio": radio,
        "target": "10,000 nodes fully joined in <= 600 s wall on one core; wall no worse "
        "than N log N",
        "meters_per_dodag": meters_per_dodag,
        "baseline_ccm_star_pairs_per_s": round(_ccm_baseline(), 1),
        "runs": runs,
    }


def _growth(runs: list[dict[str, Any]]) -> None:
    """Each run's growth against N log N (module docstring), in place."""

    def nlogn(run: dict[str, Any]) -> float:
        return float(run["nodes"] * math.log(run["nodes"]))

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 2) if b else None

    base = runs[0]
    for before, run in zip([None, *runs], runs, strict=False):
        run["cpu_vs_nlogn"] = ratio(run["cpu_s"] / nlogn(run), base["cpu_s"] / nlogn(base))
        run["wall_vs_nlogn"] = ratio(run["wall_s"] / nlogn(run), base["wall_s"] / nlogn(base))
        run["cpu_per_frame_vs_log_n"] = ratio(
            run["cpu_per_frame_us"] / math.log(run["nodes"]),
            base["cpu_per_frame_us"] / math.log(base["nodes"]),
        )
        if before is not None:
            run["growth"] = {
                "from_nodes": before["nodes"],
                "n_log_n": ratio(nlogn(run), nlogn(before)),
                "cpu": ratio(run["cpu_s"], before["cpu_s"]),
                "wall": ratio(run["wall_s"], before["wall_s"]),
                "link_frames": ratio(run["link_frames"], before["link_frames"]),
                "frames_per_node": ratio(run["frames_per_node"], before["frames_per_node"]),
                "cpu_per_frame": ratio(run["cpu_per_frame_us"], before["cpu_per_frame_us"]),
                "log_n": ratio(math.log(run["nodes"]), math.log(before["nodes"])),
            }
