"""VEE basics (validation, estimation, editing — here validation only): gaps, spikes and sum
checks. Suspect readings are flagged (`readings.vee_flags`), never altered; gaps are reported so
collection can backfill them. The checks are pure functions over readings; `run_vee` reads one
meter's range from a repository, runs them and stores the flags.
"""

from __future__ import annotations

import itertools
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from amistack.headend.schema import ReadingStatus, StoredReading, VeeFlag
from amistack.headend.storage import ReadingRepository


@dataclass(frozen=True)
class VeeConfig:
    spike_factor: float = 5.0  # a spike: more than factor x the median of the recent intervals
    spike_window: int = 96  # recent intervals the median is taken over (a day of 15-min)
    spike_min_history: int = 8  # fewer earlier intervals than this: no judgement
    spike_floor_wh: int = 50  # medians below this count as this (a night at 0 Wh is no baseline)
    sum_tolerance_wh: int = 1  # rounding of the meter's own values
    register_tolerance_wh: int = 1


@dataclass(frozen=True)
class Gap:
    """Missing intervals of one meter: starts in [start, end), none stored."""

    meter_id: str
    length_min: int
    start: int
    end: int

    @property
    def intervals(self) -> int:
        return (self.end - self.start) // (self.length_min * 60)


@dataclass(frozen=True)
class Finding:
    meter_id: str
    interval_start: int
    length_min: int
    flag: VeeFlag
    detail: str


@dataclass
class VeeReport:
    gaps: list[Gap] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    flagged: int = 0  # readings whose flags the run stored


def find_gaps(
    meter_id: str, starts: Iterable[int], start: int, end: int, length_min: int
) -> list[Gap]:
    """Runs of missing intervals in [start, end) (start aligned to the length)."""
    step = length_min * 60
    have = set(starts)
    gaps: list[Gap] = []
    run_start: int | None = None
    t = start
    while t < end:
        if t not in have:
            if run_start is None:
                run_start = t
        elif run_start is not None:
            gaps.append(Gap(meter_id, length_min, run_start, t))
            run_start = None
        t += step
    if run_start is not None:
        gaps.append(Gap(meter_id, length_min, run_start, t))
    return gaps


def find_spikes(readings: Sequence[StoredReading], config: VeeConfig) -> list[Finding]:
    """Readings (one meter, one length, in time order) far above the median of the ones before."""
    findings: list[Finding] = []
    history: dict[str, deque[int]] = {
        "forward": deque(maxlen=config.spike_window),
        "reverse": deque(maxlen=config.spike_window),
    }
    for r in readings:
        if not ReadingStatus.has_data(r.status):  # an outage interval: nothing to judge or learn
            continue
        for channel, value in (("forward", r.forward_wh), ("reverse", r.reverse_wh)):
            past = history[channel]
            if len(past) >= config.spike_min_history:
                base = max(statistics.median(past), config.spike_floor_wh)
                if value > config.spike_factor * base:
                    findings.append(
                        Finding(
                            r.meter_id,
                            r.interval_start,
                            r.length_min,
                            VeeFlag.SPIKE,
                            f"{channel} {value} Wh > {config.spike_factor} x median {base} Wh",
                        )
                    )
            past.append(value)
    return findings


def check_sums(
    r15: Sequence[StoredReading], r30: Sequence[StoredReading], config: VeeConfig
) -> list[Finding]:
    """Each 30-minute value against its two 15-minute intervals (both channels); all three are
    flagged on a mismatch. A 30-minute value missing a half is not judged (that is a gap)."""
    by_start = {r.interval_start: r for r in r15}
    findings: list[Finding] = []
    for h in r30:
        a, b = by_start.get(h.interval_start), by_start.get(h.interval_start + 900)
        if a is None or b is None or not all(ReadingStatus.has_data(x.status) for x in (h, a, b)):
            continue
        for channel, total, parts in (
            ("forward", h.forward_wh, a.forward_wh + b.forward_wh),
            ("reverse", h.reverse_wh, a.reverse_wh + b.reverse_wh),
        ):
            if abs(total - parts) > config.sum_tolerance_wh:
                detail = f"{channel}: 30-min {total} Wh != 15-min sum {parts} Wh"
                findings += [
                    Finding(
                        x.meter_id, x.interval_start, x.length_min, VeeFlag.SUM_MISMATCH, detail
                    )
                    for x in (h, a, b)
                ]
                break
    return findings


def check_register(
    intervals: Sequence[StoredReading],
    registers: Sequence[tuple[int, int]],
    config: VeeConfig,
) -> list[Finding]:
    """Interval sums against forward-energy register deltas.

    `registers`: (time, cumulative forward Wh) register reads, time on interval boundaries.
    Between two reads whose intervals are all present, the intervals' forward energy must add
    up to the register delta; otherwise those intervals are flagged.
    """
    findings: list[Finding] = []
    regs = sorted(registers)
    for (t0, v0), (t1, v1) in itertools.pairwise(regs):
        inside = [
            r
            for r in intervals
            if t0 <= r.interval_start and r.interval_start + r.length_min * 60 <= t1
        ]
        covered = sum(r.length_min * 60 for r in inside)
        if covered != t1 - t0:
            continue  # a gap: nothing to compare
        total = sum(r.forward_wh for r in inside)
        if abs(total - (v1 - v0)) > config.register_tolerance_wh:
            detail = f"intervals {total} Wh != register delta {v1 - v0} Wh over [{t0}, {t1})"
            findings += [
                Finding(
                    r.meter_id, r.interval_start, r.length_min, VeeFlag.REGISTER_MISMATCH, detail
                )
                for r in inside
            ]
    return findings


def _all_readings(
    repo: ReadingRepository, meter_id: str, start: int, end: int, length_min: int
) -> list[StoredReading]:
    out: list[StoredReading] = []
    after: tuple[int, int] | None = None
    while True:
        page = repo.readings(meter_id, start, end, length_min=length_min, after=after, limit=5000)
        out += page
        if len(page) < 5000:
            return out
        after = (page[-1].interval_start, page[-1].length_min)


def run_vee(
    repo: ReadingRepository,
    meter_id: str,
    start: int,
    end: int,
    config: VeeConfig | None = None,
    registers: Sequence[tuple[int, int]] = (),
) -> VeeReport:
    """Check one meter's readings in [start, end) (start on a half-hour boundary), store flags."""
    config = config or VeeConfig()
    report = VeeReport()
    by_length: dict[int, list[StoredReading]] = {}
    for length in (15, 30):
        rows = _all_readings(repo, meter_id, start, end, length)
        by_length[length] = rows
        if rows:  # a meter that reports only one of the two lengths has no gaps in the other
            report.gaps += find_gaps(meter_id, (r.interval_start for r in rows), start, end, length)
        report.findings += find_spikes(rows, config)
    report.findings += check_sums(by_length[15], by_length[30], config)
    if registers:
        report.findings += check_register(by_length[15] or by_length[30], registers, config)
    if report.findings:
        merged: dict[tuple[str, int, int], int] = {}
        for f in report.findings:
            key = (f.meter_id, f.interval_start, f.length_min)
            merged[key] = merged.get(key, 0) | int(f.flag)
        report.flagged = repo.flag_readings([(*k, v) for k, v in merged.items()])
    return report
