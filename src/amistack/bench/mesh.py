"""`amistack bench mesh`: meshes of growing size form and every meter joins through relays.

For each size: build the mesh (`sim.mesh`), run it on the virtual clock until every meter that
can be reached is relay-ready, and measure wall time. Simulated figures (times to 50/95/100 %
authenticated and relay-ready, link frames per node) are a pure function of the seed; wall
figures are this machine's (`cpu_s`, the process's CPU time, is the steadier one on a shared
machine). Every link frame is CCM*-secured except the newcomers' PANA and the
join beacons, so `link_frames_per_wall_s` is frames put on the air per second of wall time
with the crypto in the loop. The baseline, measured in the same run: CCM* protect + unprotect
of one 80-octet frame per second, alone (what the crypto costs without the rest of the stack).

Concentrators: one per `per_concentrator` meters (default 400), on a k x k grid
(`sim.mesh`): a DODAG's depth, and with it the frames one meter's join costs, stays bounded as
the mesh grows. Under a single root the depth grows as sqrt(N) at a fixed density, and so does
each join's cost (every PANA message and DAO crosses every hop): N^1.5, not N log N.

After formation, one C12.22 read of every meter over the mesh (`MeshSim.read_all`): the
head-end on the WAN reads each relay-ready meter's current registers (ST23), `READ_SPACING`
apart; `c1222` gives the delivery ratio and the simulated latency (request start to answer,
the C12.22 client's retries included) at p50/p99, and the read's own wall time (not in
`wall_s`, which is formation's).

The scaling figure `wall_vs_nlogn` divides each size's wall time by N log N, normalised to the
smallest size: values that stay near 1 (or fall) mean wall time grows no worse than N log N.
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


def bench_mesh(
    sizes: list[int], seed: int, max_time: float, per_concentrator: int = 400
) -> dict[str, Any]:
    runs = []
    for n in sizes:
        started, cpu = time.perf_counter(), time.process_time()
        config = MeshConfig(nodes=n, seed=seed, per_concentrator=per_concentrator, c1222=True)
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
            "concentrators": config.grid**2,
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
            "c1222": read,
        })  # fmt: skip
    base = runs[0]
    for run in runs:
        scale = run["nodes"] * math.log(run["nodes"])
        ref = base["nodes"] * math.log(base["nodes"])
        run["wall_vs_nlogn"] = round((run["wall_s"] / scale) / (base["wall_s"] / ref), 2)
        run["cpu_vs_nlogn"] = round((run["cpu_s"] / scale) / (base["cpu_s"] / ref), 2)
    radio = MeshConfig(nodes=sizes[0], seed=seed).radio_model()
    for varies in ("area_m", "concentrators", "placement"):
        radio.pop(varies)
    radio["placement"] = (f"uniform random (seed {seed}), a concentrator per "
                          f"{per_concentrator} meters on a k x k grid")  # fmt: skip
    return {
        "benchmark": "mesh",
        "seed": seed,
        "radio": radio,
        "target": "10,000 nodes fully joined in <= 600 s wall on one core; wall no worse "
        "than N log N",
        "baseline_ccm_star_pairs_per_s": round(_ccm_baseline(), 1),
        "runs": runs,
    }
