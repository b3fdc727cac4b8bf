"""`amistack bench group-keys`: how long a revocation's group-key rotation takes to reach every
meter of a fleet, on the virtual clock and the shared cells of `sim.fleet` (docs/mesh-keys.md).

The fleet (real key server, real MeterAccess/PaC engines, EAP-PSK) joins; then group keys are
turned on, one meter is revoked, and the key server pushes the rotated ring to every other
meter (paced PAA-initiated re-authentications). Measured: simulated seconds from the rotation
to each meter holding the new ring. Baseline, same fleet and seed, same moment: every meter
re-authenticating at once on its own (`sim.fleet.rotate_keys`), the unpaced way to refresh keys.
"""

from __future__ import annotations

import time
from typing import Any

from amistack.addr import Addr
from amistack.crypto import seeded_random
from amistack.keymgmt.groupkeys import GroupKeyConfig, GroupKeyManager
from amistack.meter.events import AccessGranted, GroupKeysChanged
from amistack.sim.fleet import (
    KEYSERVER_ADDR,
    CellConfig,
    Fleet,
    FleetConfig,
    build_fleet,
    meter_id,
    rotate_keys,
)
from amistack.sim.stats import quantile

PAN_ID = 0xFACE
HORIZON = 1800.0  # simulated seconds measured after the rotation


def _quantiles(delays: list[float]) -> dict[str, float | None]:
    def q(p: float) -> float | None:
        v = quantile(delays, p)
        return None if v is None else round(v, 3)

    return {"p50_s": q(0.5), "p95_s": q(0.95), "max_s": q(1.0)}


def _arrivals(fleet: Fleet, kind: type[object], since: list[float]) -> dict[Addr, float]:
    """Per PANA address, the first event of `kind` at or after `since[0]`."""
    first: dict[Addr, float] = {}

    def hook(addr: Addr, event: object, now: float) -> None:
        if isinstance(event, kind) and now >= since[0] and addr not in first:
            first[addr] = now

    fleet.net.on_event.append(hook)
    return first


def _rotation(config: FleetConfig, group: GroupKeyConfig, push_rate: float) -> dict[str, Any]:
    cpu = time.process_time()
    fleet = build_fleet(config)
    now = fleet.clock.now
    server = fleet.keyserver
    manager = GroupKeyManager(
        [PAN_ID], rng=seeded_random(config.seed * 31), now=now, config=group,
        persistence=server.store,
    )  # fmt: skip
    server.enable_group_keys(manager, push_rate=push_rate)
    server.revoke(meter_id(0), now, reason="bench")
    fleet.net.service(KEYSERVER_ADDR)
    at = manager.rotation_at(PAN_ID)
    assert at is not None
    since = [at]
    first = _arrivals(fleet, GroupKeysChanged, since)
    fleet.clock.run_until(at + HORIZON)
    serial = manager.serial(PAN_ID)
    holding = sum(1 for a in fleet.access[1:] if a.group_keys.serial == serial)
    return {
        "meters": config.meters - 1,
        "holding_new_ring": holding,
        "push_rate_per_s": push_rate,
        "activation_delay_s": group.activation_delay,
        "reached_before_activation": sum(
            1 for t in first.values() if t < at + group.activation_delay
        ),
        **_quantiles([t - at for a, t in first.items() if a != fleet.pana_addr(0)]),
        "pushes": server.counters["group_key_pushes"],
        "cpu_s": round(time.process_time() - cpu, 3),
    }


def _baseline(config: FleetConfig) -> dict[str, Any]:
    cpu = time.process_time()
    fleet = build_fleet(config)
    at = fleet.clock.now
    first = _arrivals(fleet, AccessGranted, [at])
    rotate_keys(fleet)
    fleet.clock.run_until(at + HORIZON)
    return {
        "meters": config.meters,
        "reauthenticated": len(first),
        **_quantiles([t - at for t in first.values()]),
        "cpu_s": round(time.process_time() - cpu, 3),
    }


def bench_group_keys(
    meters: int = 1000,
    *,
    cells: int = 4,
    cell_pps: float | None = None,
    push_rate: float = 5.0,
    activation_delay: float = 300.0,
    seed: int = 1,
) -> dict[str, Any]:
    """One revocation's rotation reaching `meters` meters, and the unpaced baseline."""
    cell = CellConfig(rate_pps=cell_pps) if cell_pps else CellConfig()
    config = FleetConfig(meters=meters, cells=cells, seed=seed, cell=cell)
    group = GroupKeyConfig(rotation_delay=10.0, activation_delay=activation_delay)
    return {
        "benchmark": "group-keys",
        "model": {
            "cells": cells,
            "cell_pps": cell.rate_pps,
            "cell_queue": cell.queue,
            "latency_s": cell.latency,
            "note": "sim.fleet shared cells; PANA+EAP-PSK is ~10 datagrams per meter",
        },
        "rotation": _rotation(config, group, push_rate),
        "baseline_all_reauth_at_once": _baseline(config),
    }


__all__ = ["bench_group_keys"]
