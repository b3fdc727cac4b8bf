"""Which collector owns which meter when several share one database (`amistack headend
--shard K/N`, docs/scale-out.md).

Every meter belongs to exactly one of N shards, by a stable hash of its cell (the default: a
concentrator's cell is read by one collector, which keeps its per-cell pacing whole), its
concentrator, or its own id. The hash is SHA-256, not Python's `hash()`, so every process and
every restart agrees. A collector schedules reads for, admits pushes from and executes commands
for its own meters only; storage stays idempotent, so a meter that moves between shards (its
cell re-assigned) is read once by the old or the new owner, never lost.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from amistack.headend.registry import Meter

MAX_SHARDS = 1024


class ShardKey(StrEnum):
    CELL = "cell"
    CONCENTRATOR = "concentrator"
    METER = "meter"


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count), meters placed by `by`."""

    index: int
    count: int
    by: ShardKey = ShardKey.CELL

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS or not 0 <= self.index < self.count:
            raise ValueError(f"a shard is K/N with 0 <= K < N <= {MAX_SHARDS}")

    @classmethod
    def parse(cls, text: str, by: ShardKey | str = ShardKey.CELL) -> Shard:
        """'K/N', e.g. '0/2' and '1/2' for two collectors."""
        k, sep, n = text.partition("/")
        if not sep or not (k.isascii() and k.isdigit() and n.isascii() and n.isdigit()):
            raise ValueError(f"{text!r}: expected K/N, e.g. 0/2")
        return cls(int(k), int(n), ShardKey(by))

    def owns(self, meter: Meter) -> bool:
        return shard_of(meter, self.count, self.by) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count} by {self.by.value}"


def shard_of(meter: Meter, count: int, by: ShardKey = ShardKey.CELL) -> int:
    """The shard (0..count-1) that owns `meter`."""
    key = {
        ShardKey.CELL: meter.cell,
        ShardKey.CONCENTRATOR: meter.concentrator,
        ShardKey.METER: meter.meter_id,
    }[by]
    digest = hashlib.sha256(f"{by.value}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count
