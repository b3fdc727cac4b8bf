"""VEE: gaps reported, spikes and sum mismatches flagged, stored values never altered."""

from __future__ import annotations

from tests.unit.headend.conftest import T0, reading

from amistack.headend.schema import ReadingStatus, StoredReading, VeeFlag
from amistack.headend.storage import ReadingRepository
from amistack.headend.vee import (
    Gap,
    VeeConfig,
    check_register,
    check_sums,
    find_gaps,
    find_spikes,
    run_vee,
)


def stored(i: int, length: int = 15, fwd: int = 100, rev: int = 0) -> StoredReading:
    r = reading("m1", i, length, fwd, rev)
    return StoredReading(r.meter_id, r.interval_start, length, fwd, rev, 0, 0, 0.0, 1)


def test_gaps_are_merged_runs() -> None:
    have = [T0 + i * 900 for i in (0, 1, 4, 5, 7)]
    gaps = find_gaps("m1", have, T0, T0 + 10 * 900, 15)
    assert gaps == [
        Gap("m1", 15, T0 + 2 * 900, T0 + 4 * 900),
        Gap("m1", 15, T0 + 6 * 900, T0 + 7 * 900),
        Gap("m1", 15, T0 + 8 * 900, T0 + 10 * 900),
    ]
    assert [g.intervals for g in gaps] == [2, 1, 2]
    assert find_gaps("m1", [T0], T0, T0 + 900, 15) == []


def test_spike_against_recent_median() -> None:
    rows = [stored(i, fwd=200 + (i % 3)) for i in range(20)]
    rows.append(stored(20, fwd=1500))  # > 5 x ~201
    rows.append(stored(21, fwd=900))  # 4.5 x: not a spike at factor 5
    found = find_spikes(rows, VeeConfig(spike_factor=5.0))
    assert [(f.interval_start, f.flag) for f in found] == [(T0 + 20 * 900, VeeFlag.SPIKE)]
    # too little history: no judgement at all
    assert find_spikes([stored(0, fwd=1), stored(1, fwd=10_000)], VeeConfig()) == []
    # reverse flow (PV) is judged on its own channel
    pv = [stored(i, rev=300) for i in range(10)] + [stored(10, rev=5000)]
    assert [f.detail.split()[0] for f in find_spikes(pv, VeeConfig())] == ["reverse"]


def test_sum_check_flags_all_three() -> None:
    r15 = [stored(0, fwd=100), stored(1, fwd=120), stored(2, fwd=50), stored(3, fwd=50)]
    r30 = [stored(0, 30, fwd=220), stored(1, 30, fwd=130)]
    found = check_sums(r15, r30, VeeConfig())
    assert {(f.interval_start, f.length_min) for f in found} == {
        (T0 + 1800, 30),
        (T0 + 1800, 15),
        (T0 + 2700, 15),
    }
    assert all(f.flag is VeeFlag.SUM_MISMATCH for f in found)
    assert check_sums(r15[:1], r30[:1], VeeConfig()) == []  # half missing: a gap, not a mismatch


def test_register_delta_check() -> None:
    r15 = [stored(i, fwd=100) for i in range(8)]
    ok = check_register(r15, [(T0, 5000), (T0 + 4 * 900, 5400)], VeeConfig())
    assert ok == []
    bad = check_register(r15, [(T0, 5000), (T0 + 4 * 900, 5400), (T0 + 8 * 900, 5900)], VeeConfig())
    assert {f.interval_start for f in bad} == {T0 + i * 900 for i in range(4, 8)}
    assert all(f.flag is VeeFlag.REGISTER_MISMATCH for f in bad)


def test_run_vee_stores_flags_keeps_values(repo: ReadingRepository) -> None:
    rows = [reading("m1", i, fwd=200) for i in range(12)] + [reading("m1", 12, fwd=5000)]
    rows += [reading("m1", i, fwd=200) for i in range(14, 16)]  # interval 13 missing
    rows += [reading("m1", 0, 30, fwd=400), reading("m1", 1, 30, fwd=999)]
    repo.store_readings(rows, 1.0)
    report = run_vee(repo, "m1", T0, T0 + 16 * 900)
    assert [(g.length_min, g.start, g.end) for g in report.gaps] == [
        (15, T0 + 13 * 900, T0 + 14 * 900),
        (30, T0 + 2 * 1800, T0 + 8 * 1800),
    ]
    by_key = {(r.interval_start, r.length_min): r for r in repo.readings("m1", T0, T0 + 86400)}
    assert by_key[(T0 + 12 * 900, 15)].vee_flags == VeeFlag.SPIKE
    assert by_key[(T0 + 12 * 900, 15)].forward_wh == 5000  # flagged, not altered
    assert by_key[(T0 + 1800, 30)].vee_flags == VeeFlag.SUM_MISMATCH
    assert by_key[(T0 + 900 * 2, 15)].vee_flags == VeeFlag.SUM_MISMATCH
    assert by_key[(T0, 30)].vee_flags == 0
    assert report.flagged == 4


def test_outage_intervals_are_no_data_not_zero() -> None:
    """An interval the meter flags NO_DATA (no supply) is neither a low value nor a mismatch."""
    from amistack.headend.export import reading_dict

    def outage(i: int, length: int = 15) -> StoredReading:
        r = stored(i, length, fwd=0)
        return StoredReading(
            r.meter_id,
            r.interval_start,
            length,
            0,
            0,
            int(ReadingStatus.NO_DATA | ReadingStatus.POWER_FAIL),
            0,
            0.0,
            1,
        )

    rows = [stored(i, fwd=200) for i in range(10)] + [outage(10)] + [stored(11, fwd=210)]
    assert find_spikes(rows, VeeConfig()) == []  # 0 Wh did not drag the median down
    r15 = [outage(0), outage(1)]
    r30 = [stored(0, 30, fwd=0)]
    assert check_sums(r15, r30, VeeConfig()) == []
    row = reading_dict(outage(3))
    assert row["forward_wh"] is None and row["reverse_wh"] is None
    assert reading_dict(stored(3))["forward_wh"] == 100
