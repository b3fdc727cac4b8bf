"""A scenario run in shards by cell across processes and machines on Dask distributed.

Cells are independent of each other except for the key server and the head-end they share, so
`ScenarioConfig(shards=K)` splits the fleet into K sub-fleets by cell (cell c goes to shard
c % K; meter i is in cell i % cells) and runs each as a task on a Dask cluster: a scheduler's
address (`cluster="tcp://scheduler:8786"`, `amistack sim fleet --cluster`) or a `LocalCluster`
of `workers` processes started for the run. The shards' counts add up
(`scenarios.merge_parts`); what a scenario draws per meter (when its power returns, whether it
is revoked) is drawn over the fleet-wide indices, so a meter does the same in any shard.

What is and is not shared between shards:
- Each shard runs its meters' own engines (PANA PaC + EAP-PSK, C12.22 node, metering model),
  seeded by the meter's fleet-wide index, so a meter is the same meter in any shard count.
- Each shard has its OWN key server engine (its meters enrolled) with 1/K of the modelled
  capacity and of its queue, and its OWN head-end with its own SQLite database. A real
  deployment's single key server would pool its capacity: a shard whose meters cluster in time
  cannot borrow another's idle capacity here, and the reported queue maximum is the busiest
  shard's. So a `blackout` in K shards is K blackouts each against 1/K of the key server:
  the same load per unit of capacity when the returns spread evenly over the cells (they are
  drawn per meter, independent of the cell), but each shard's queue sees 1/K of the meters and
  its random bunching is not pooled with the others'. The head-end's WAN side is not a
  bottleneck in the model, so splitting it changes nothing simulated but its databases.
- Nothing crosses between shards during the run; the results depend on the seed and K, never on
  the number of workers or where the tasks ran (a test runs K = 2 on one and two workers).
"""

from __future__ import annotations

import gc
import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amistack.sim.scenarios import ProgressHook, ScenarioConfig

log = logging.getLogger(__name__)

# `amistack sim fleet --shards auto` (the default): a shard per this many meters. A process's
# CPU per meter grows with the fleet it holds (a larger heap: more of each reading's objects
# are out of the CPU's caches), and a LocalCluster's worker runs its shards one after the
# other, freeing each fleet before it builds the next. The 100,000-meter day on 2 workers
# (docs/simulator.md, "What it costs"): 2 shards of 50,000 took 597 + 598 CPU s, 10 min 8 s;
# 8 of 12,500 took 104 - 114 CPU s each, 893 CPU s in all, 7 min 38 s, 0.55 GB a worker.
AUTO_SHARD_METERS = 12_500


def auto_shards(meters: int, cells: int) -> int:
    """The shards `--shards auto` runs: one per AUTO_SHARD_METERS meters (at most one a cell)."""
    return max(1, min(cells, -(-meters // AUTO_SHARD_METERS)))


# The local cluster's processes watch themselves less: a worker runs one long pure-Python task
# and the main process only waits for it, so Dask's statistical profiler (a stack walk every
# 10 ms inside the worker, holding the GIL the task needs), the event loops' health tick
# (every 20 ms in each process), the nannies' memory checks (every 100 ms, in the main
# process) and the system monitors (every 500 ms) cost CPU that shares the cores with the
# shards and show nothing here. No simulated figure depends on them.
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "2s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.scheduler.work-stealing": False,
}


def run_shard(sc: ScenarioConfig, shard: int, disposable: bool = False) -> dict[str, Any]:
    """One shard's part of the scenario (runs in a Dask worker).

    `disposable`: the worker process ends with the run (a LocalCluster started for it). Its
    fleet, garbage once the part is made, is then left frozen until the process ends instead
    of being walked and freed by a full collection: tens of millions of objects at 50,000
    meters a shard, which took seconds while the part waited to be sent and then held the
    worker's close past its nanny's patience (it was killed after 4 s). A worker of a
    cluster of your own (`cluster=`) lives on, so there the garbage is collected as usual. A
    worker that runs another shard (more shards than workers) collects the last one's fleet
    before it starts: only its last fleet waits for the process's end."""
    from amistack.sim.scenarios import scenario_part

    gc.unfreeze()  # scenario_part's service_gc collects what was left, then freezes the rest
    part = scenario_part(sc, shard)
    if disposable:
        gc.freeze()
    return part


def run_shards(
    sc: ScenarioConfig, progress: ProgressHook | None = None
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Every shard's part, in shard order, run on `sc.cluster` or a LocalCluster; and the
    wall seconds around them (what sharding costs besides the parts: the cluster's start, the
    tasks from submission to the last result, the cluster's close)."""
    import dask
    from distributed import Client, LocalCluster, as_completed

    t0 = time.perf_counter()
    cluster = None
    if sc.cluster is None:
        with dask.config.set(LOCAL_CLUSTER_CONFIG):  # the nannies hand it to their workers
            cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=sc.workers,
                threads_per_worker=1,  # the simulation is pure Python: one process per core
                processes=True,
                host="127.0.0.1",  # the local cluster talks over loopback only
                dashboard_address=":0",  # its HTTP server on a free loopback port
                silence_logs=logging.WARNING,
            )
    try:
        with Client(sc.cluster if cluster is None else cluster) as client:  # type: ignore[no-untyped-call]
            t1 = time.perf_counter()
            futures = client.map(
                run_shard,
                [sc] * sc.shards,
                range(sc.shards),
                disposable=cluster is not None,
                pure=False,
            )
            total = sc.days * 86400.0
            for done, _ in enumerate(as_completed(futures), 1):  # type: ignore[no-untyped-call]
                if progress is not None:
                    progress(total * done / sc.shards, total, 0)
            parts: list[dict[str, Any]] = client.gather(futures)
            t2 = time.perf_counter()
    finally:
        if cluster is not None:
            cluster.close()
    return parts, {
        "cluster_start_s": round(t1 - t0, 3),
        "tasks_s": round(t2 - t1, 3),
        "cluster_close_s": round(time.perf_counter() - t2, 3),
    }


__all__ = ["AUTO_SHARD_METERS", "LOCAL_CLUSTER_CONFIG", "auto_shards", "run_shard", "run_shards"]
