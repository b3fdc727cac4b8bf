"""The running head-end engine as the dashboard sees it (`views.HeadEndView`): the C12.22 key
generations it holds per meter (ids and validity, never the keys), how many meters it holds one
for (authenticated), and its counters."""

from __future__ import annotations

from amistack.headend.service import HeadEnd


class EngineView:
    """Reads the engine from the API's threads: snapshots only, nothing is changed."""

    def __init__(self, engine: HeadEnd) -> None:
        self.engine = engine

    def key_generations(self, meter_id: str, now: float) -> list[tuple[str, float]]:
        return [(str(kid), na) for kid, na in self.engine.keys.generations(meter_id.encode(), now)]

    def authenticated(self, now: float) -> int:
        return self.engine.keys.held(now)

    def counters(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for prefix, counter in (
            ("head-end", self.engine.counters),
            ("keys", self.engine.keys.counters),
            ("collector", self.engine.collector.counters),
            ("c12.22", self.engine.client.counters),
        ):
            for name, n in list(counter.items()):
                if n:
                    out[f"{prefix}: {name}"] = n
        return out
