"""`amistack bench collection`: polled vs pushed collection of one slot at several fleet sizes, on
the virtual clock and network of `sim.fleet` (docs/collection.md)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from amistack.headend.collector import Mode
from amistack.sim.fleet import CellConfig, FleetConfig, run_fleet

log = logging.getLogger(__name__)


def bench_collection(
    sizes: Sequence[int] = (100, 1000, 10_000),
    modes: Sequence[Mode | str] = (Mode.POLLED, Mode.PUSHED),
    *,
    cells: int = 4,
    slots: int = 1,
    cell: CellConfig | None = None,
    seed: int = 1,
) -> dict[str, Any]:
    """Polled vs pushed collection at each fleet size over a fixed number of shared cells
    (so the meters per cell grow with the fleet); for `amistack bench collection --json`."""
    runs = []
    for n in sizes:
        for mode in modes:
            cfg = FleetConfig(
                meters=n, cells=cells, mode=Mode(mode), slots=slots, seed=seed,
                cell=cell or CellConfig(),
            )  # fmt: skip
            result = run_fleet(cfg)
            log.info("collection bench", extra={"result": result})
            runs.append(result)
    return {"benchmark": "collection", "runs": runs}


__all__ = ["bench_collection"]
