"""What the dashboard shows, computed from the repository: pure functions of (repo, now), no
HTTP here (views.py renders them).

- Fleet rows: a meter's registry state plus what its data says: `stale` (commissioned, but no
  reading received for `STALE_AFTER_S`), `disconnected` (the relay last read back open).
- Fleet counts, the whole fleet's: by registry state, `authenticated` (the engine holds a key
  generation for it now), `stale` and `disconnected` (`fleet_counts`; the dashboard refreshes
  them in the background, `views.FLEET_COUNTS_S`).
- The day strip: the 48 half-hour slots of one UTC day, each `full` (30 minutes of readings),
  `partial` (one 15-minute reading of two), `outage` (the meter reported no supply: NO_DATA),
  `missing` or `future`. The day is the one of the page's newest reading (the meters' clock:
  an accelerated demo runs ahead of the wall clock), or of `now` without readings.
- The load profile: one point per interval on a complete time grid, None where nothing came
  or the meter reported no supply, so a chart draws an outage as a gap and never as 0 Wh.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from amistack.headend.registry import Meter, MeterState
from amistack.headend.schema import ReadingStatus, StoredReading
from amistack.headend.storage import ReadingRepository

SLOT_S = 1800  # the strip's slot: half an hour
DAY_S = 86400
SLOTS_PER_DAY = DAY_S // SLOT_S
STALE_AFTER_S = 2 * 3600.0  # four missed half-hour reads
PAGE_SIZE = 50
PROFILE_POINTS = 192  # two days of 15-minute intervals


@dataclass(frozen=True)
class FleetRow:
    meter: Meter
    last: StoredReading | None
    relay: str | None
    stale: bool
    strip: list[str]  # SLOTS_PER_DAY slot classes
    flagged: int  # today's readings VEE flagged (spike, sum mismatch, ...)

    @property
    def complete(self) -> int:
        return sum(1 for s in self.strip if s == "full")


# the order the fleet page shows counts in (the issue's: registered is the registry's installed)
COUNT_ORDER = (
    MeterState.INSTALLED.value,
    MeterState.COMMISSIONED.value,
    "authenticated",
    "stale",
    "disconnected",
    MeterState.DECOMMISSIONED.value,
)


@dataclass(frozen=True)
class FleetPage:
    rows: list[FleetRow]
    total: int  # meters matching the filter
    day: int  # epoch seconds of the strip's UTC midnight
    next_after: str | None


def fleet_counts(repo: ReadingRepository, now: float, authenticated: int | None) -> dict[str, int]:
    """The whole fleet's meters by state (COUNT_ORDER; `authenticated` only with an engine to
    ask): ~100-200 ms at 100,000 meters on SQLite, hence refreshed in the background."""
    counts = {s.value: 0 for s in MeterState} | repo.meter_counts()
    counts |= repo.status_counts(now - STALE_AFTER_S)
    if authenticated is not None:
        counts["authenticated"] = authenticated
    return {k: counts[k] for k in COUNT_ORDER if k in counts}


def day_strip(readings: Sequence[StoredReading], day: int, now: float) -> list[str]:
    minutes: dict[int, int] = defaultdict(int)
    outage: set[int] = set()
    for r in readings:
        slot = (r.interval_start - day) // SLOT_S
        if not 0 <= slot < SLOTS_PER_DAY:
            continue
        if not ReadingStatus.has_data(r.status):
            outage.add(slot)
        minutes[slot] += r.length_min
    newest = max((r.interval_start for r in readings), default=int(now))
    horizon = max(newest + SLOT_S, int(now))
    strip = []
    for slot in range(SLOTS_PER_DAY):
        if slot in outage:
            strip.append("outage")
        elif minutes[slot] >= SLOT_S // 60:
            strip.append("full")
        elif minutes[slot]:
            strip.append("partial")
        elif day + slot * SLOT_S >= horizon:
            strip.append("future")
        else:
            strip.append("missing")
    return strip


def fleet_page(
    repo: ReadingRepository,
    now: float,
    *,
    text: str = "",
    state: MeterState | None = None,
    after: str = "",
    limit: int = PAGE_SIZE,
    covers: Callable[[str], bool] = lambda meter: True,
) -> FleetPage:
    """One page of the fleet; `covers`: the meters the viewer may see (its area of
    responsibility: the page shows those of its meters)."""
    found, total = repo.find_meters(text=text, state=state, after=after, limit=limit)
    meters = [m for m in found if covers(m.meter_id)]
    ids = [m.meter_id for m in meters]
    last = repo.latest_readings(ids)
    newest = max((r.interval_start for r in last.values()), default=int(now))
    day = newest - newest % DAY_S
    today: dict[str, list[StoredReading]] = defaultdict(list)
    for r in repo.readings_of(ids, day, day + DAY_S):
        today[r.meter_id].append(r)
    relay = repo.relay_states(ids)
    rows = []
    for m in meters:
        seen = last.get(m.meter_id)
        stale = m.state is MeterState.COMMISSIONED and (
            seen is None or now - seen.received_at > STALE_AFTER_S
        )
        mine = today[m.meter_id]
        flagged = sum(1 for r in mine if r.vee_flags)
        rows.append(
            FleetRow(m, seen, relay.get(m.meter_id), stale, day_strip(mine, day, now), flagged)
        )
    return FleetPage(rows, total, day, found[-1].meter_id if len(found) == limit else None)


def load_profile(
    readings: Sequence[StoredReading],
) -> tuple[list[int], list[float | None], list[float | None]]:
    """(interval starts, forward Wh, reverse Wh) on a complete grid of the shortest interval
    length present; a missing or no-supply interval is None (a gap), never 0."""
    if not readings:
        return [], [], []
    step = min(r.length_min for r in readings) * 60
    by_start = {r.interval_start: r for r in readings if r.length_min * 60 == step}
    first, last = min(by_start), max(by_start)
    xs, fwd, rev = [], [], []
    for t in range(first, last + step, step):
        r = by_start.get(t)
        ok = r is not None and ReadingStatus.has_data(r.status)
        xs.append(t)
        fwd.append(float(r.forward_wh) if ok and r is not None else None)
        rev.append(float(r.reverse_wh) if ok and r is not None else None)
    return xs, fwd, rev
