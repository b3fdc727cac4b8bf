"""Collection end to end in memory: real MeterNodes (metering model, C12.22 server, pushes) and
the real head-end engine (C12.22 client, collector, Ingestor into SQLite) under UKMF keys from
PANA security contexts, over the virtual clock and the shared-cell network of sim/fleet.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amistack.addr import Addr
from amistack.headend.collector import CollectorConfig, Mode, _Starts, parse_lp_header
from amistack.headend.schema import IntervalReading
from amistack.headend.storage import SqliteRepository, StoreResult
from amistack.meter.node import PushAcked, PushSent
from amistack.sim.fleet import (
    FleetConfig,
    build_fleet,
    measured_slots,
    meter_id,
    run,
    run_fleet,
)

STEP = 900


def _model_value(fleet_nodes: Sequence[object], i: int, start: int) -> int:
    node = fleet_nodes[i]
    iv = node.model.interval(start // STEP)  # type: ignore[attr-defined]
    return int(iv.forward_wh or 0)


@pytest.mark.parametrize("mode", [Mode.POLLED, Mode.PUSHED])
def test_every_meter_collected_with_the_models_values(mode: Mode) -> None:
    fleet = build_fleet(FleetConfig(meters=12, cells=3, mode=mode, slots=2))
    run(fleet)
    for b in measured_slots(fleet):
        slot = fleet.headend.collector.slots[b]
        assert slot.expected == {meter_id(i) for i in range(12)}
        assert set(slot.delivered) == slot.expected
        assert {d.via for d in slot.delivered.values()} == {
            "poll" if mode is Mode.POLLED else "push"
        }
        for i in range(12):
            rows = fleet.repo.readings(meter_id(i), b - STEP, b, length_min=15)
            assert len(rows) == 1 and rows[0].key_id == 1
            assert rows[0].forward_wh == _model_value(fleet.nodes, i, b - STEP)
    assert fleet.headend.client.counters["auth-failed"] == 0
    # one Delivery per way and batch, shared by its meters (not one object per reading)
    deliveries = [
        d
        for b in measured_slots(fleet)
        for d in fleet.headend.collector.slots[b].delivered.values()
    ]
    assert len({id(d) for d in deliveries}) == len({(d.at, d.via) for d in deliveries})


def test_polling_respects_the_per_cell_limits() -> None:
    cfg = FleetConfig(
        meters=40,
        cells=1,
        mode=Mode.POLLED,
        slots=1,
        collector=CollectorConfig(per_cell_outstanding=2, per_cell_rate=4.0),
    )
    fleet = build_fleet(cfg)
    peak = 0

    def watch(addr: Addr, ev: object, now: float) -> None:
        nonlocal peak
        peak = max(peak, fleet.headend.collector.outstanding())

    fleet.net.on_event.append(watch)
    run(fleet)
    slot = fleet.headend.collector.slots[measured_slots(fleet)[0]]
    times = sorted(d.at - slot.boundary for d in slot.delivered.values())
    assert len(times) == 40 and peak <= 2
    # 40 reads at 4 per second cannot finish in less than ~10 s: the throttle held
    assert times[-1] >= 9.5 and times[0] < 7.0


def test_gap_is_backfilled_from_the_load_profile_with_an_offset() -> None:
    # meter 3 is unreachable over the first measured slot's polls (and their retries)
    cfg = FleetConfig(meters=6, cells=1, mode=Mode.POLLED, slots=1, silent=[(3, 700.0, 1500.0)])
    fleet = build_fleet(cfg)
    run(fleet)
    b = measured_slots(fleet)[0]
    slot = fleet.headend.collector.slots[b]
    assert slot.delivered[meter_id(3)].via == "backfill"
    assert slot.delivered[meter_id(3)].at > b + STEP  # read with the next slot's interval
    assert all(slot.delivered[meter_id(i)].via == "poll" for i in (0, 1, 2, 4, 5))
    rows = fleet.repo.readings(meter_id(3), b - STEP, b + STEP, length_min=15)
    assert [r.interval_start for r in rows] == [b - STEP, b]
    assert [r.forward_wh for r in rows] == [
        _model_value(fleet.nodes, 3, b - STEP),
        _model_value(fleet.nodes, 3, b),
    ]
    assert fleet.headend.collector.counters["read-gave-up"] == 1


def test_pushed_mode_missing_push_triggers_a_targeted_poll() -> None:
    # meter 2 is silent while it pushes (5..300 s after the boundary), back before the grace
    cfg = FleetConfig(meters=5, cells=1, mode=Mode.PUSHED, slots=1, silent=[(2, 800.0, 1150.0)])
    fleet = build_fleet(cfg)
    run(fleet)
    b = measured_slots(fleet)[0]
    slot = fleet.headend.collector.slots[b]
    assert slot.delivered[meter_id(2)].via == "targeted"
    assert b + 360 <= slot.delivered[meter_id(2)].at < b + 400
    assert set(slot.delivered) == slot.expected


class FlakyRepository(SqliteRepository):
    """A real SQLite repository whose disk is 'full' while `broken` is set."""

    broken = False
    commits: list[tuple[float, int]]

    def store_readings(
        self, readings: Sequence[IntervalReading], received_at: float
    ) -> StoreResult:
        if self.broken:
            raise OSError("disk full")
        result = super().store_readings(readings, received_at)
        self.commits.append((received_at, len(readings)))
        return result


def test_push_is_acked_only_after_its_readings_are_durable(tmp_path: Path) -> None:
    repo = FlakyRepository(tmp_path)
    repo.commits = []
    cfg = FleetConfig(meters=4, cells=1, mode=Mode.PUSHED, slots=1)
    fleet = build_fleet(cfg, repo)
    b = measured_slots(fleet)[0]
    acks: list[tuple[float, str, float]] = []
    sent: list[tuple[float, str]] = []
    index = {a: meter_id(i) for i, a in enumerate(fleet.addrs)}

    def watch(addr: Addr, ev: object, now: float) -> None:
        if isinstance(ev, PushAcked):
            acks.append((now, index[addr], ev.boundary))
            # the pushed interval is on disk when the meter hears its ack
            rows = repo.readings(index[addr], int(ev.boundary) - STEP, int(ev.boundary))
            assert len(rows) == 1
        if isinstance(ev, PushSent):
            sent.append((now, index[addr]))

    fleet.net.on_event.append(watch)
    # storage fails for the whole first push window: nothing may be acknowledged
    fleet.clock.call_at(b - 1, lambda: setattr(repo, "broken", True))
    fleet.clock.call_at(b + 320, lambda: setattr(repo, "broken", False))
    fleet.clock.run_until(b + 319)
    assert len(sent) >= 4 and not [a for a in acks if a[2] == b]
    assert repo.count_readings() == sum(n for _, n in repo.commits)
    assert fleet.headend.collector.counters["store-failed"] > 0
    run(fleet)
    # after the disk recovered: targeted polls (or the next pushes) stored everything
    slot = fleet.headend.collector.slots[b]
    assert set(slot.delivered) == slot.expected
    assert all(d.at >= b + 320 for d in slot.delivered.values())
    assert fleet.headend.counters["acks-released"] > 0 and acks


def test_key_rollover_mid_collection_loses_nothing() -> None:
    for mode in (Mode.PUSHED, Mode.POLLED):
        # every meter re-authenticates 150 s after the first measured boundary (mid push window)
        cfg = FleetConfig(meters=8, cells=2, mode=mode, slots=2, rotate_at=800.0 + 150.0)
        fleet = build_fleet(cfg)
        run(fleet)
        slots = [fleet.headend.collector.slots[b] for b in measured_slots(fleet)]
        for s in slots:
            assert set(s.delivered) == s.expected
            assert all(d.via in ("push", "poll") for d in s.delivered.values())
        counters = fleet.headend.client.counters
        assert counters["auth-failed"] == counters["no-key"] == counters["timeouts"] == 0
        b2 = measured_slots(fleet)[1]
        key_ids = {r.key_id for r in fleet.repo.readings(meter_id(0), b2 - STEP, b2)}
        assert key_ids == {2}  # the new generation vouched for the later slot


def test_lp_header_parse() -> None:
    from amistack.c1222.tables import Interval, LoadProfile

    lp = LoadProfile(15, 1_790_000_100.0 - 100, (Interval(5), Interval(6)))
    assert parse_lp_header(lp.encode()[: LoadProfile.HEADER]) == (15, 2, 1_790_000_000.0)


def test_run_fleet_report_shape() -> None:
    r = run_fleet(FleetConfig(meters=8, cells=2, mode=Mode.PUSHED, slots=1))
    assert r["readings_expected"] == 8 and r["readings_lost"] == 0
    assert r["collected_via"] == {"push": 8} and 0 < r["cell_utilisation_max"] < 0.01
    assert r["headend"]["acks_held"] == r["headend"]["acks_released"] > 0


def test_restarted_headend_backfills_what_it_missed_while_down() -> None:
    from amistack.crypto import seeded_random
    from amistack.headend.keys import HeadendKeys, repository_resolver
    from amistack.headend.service import HeadEnd, HeadEndConfig
    from amistack.sim.fleet import HEADEND_ADDR, HEADEND_TITLE

    fleet = build_fleet(FleetConfig(meters=3, cells=1, mode=Mode.POLLED, slots=3))
    b1, b2, b3 = measured_slots(fleet)
    fleet.clock.run_until(b1 + 100)
    assert fleet.repo.count_readings() == 3
    fleet.net.down.add(HEADEND_ADDR)  # the head-end process dies before slot 2
    fleet.clock.run_until(b2 + 200)
    assert fleet.repo.count_readings() == 3
    keys = HeadendKeys(repository_resolver(fleet.repo.meter_by_ap_title), fleet.keyserver)
    by_id = {meter_id(i): a for i, a in enumerate(fleet.addrs)}
    restarted = HeadEnd(
        HeadEndConfig(HEADEND_TITLE, CollectorConfig(retention_days=1)),
        fleet.repo,
        keys,
        seeded_random(77),
        fleet.clock.now,
        addr_of=lambda m: by_id.get(m.meter_id),
    )
    fleet.net.replace(HEADEND_ADDR, restarted)
    fleet.net.down.discard(HEADEND_ADDR)
    fleet.clock.run_until(b3 + 100)
    for i in range(3):
        starts = [r.interval_start for r in fleet.repo.readings(meter_id(i), b1 - STEP, b3)]
        assert starts == [b1 - STEP, b2 - STEP, b3 - STEP]
    slot3 = restarted.collector.slots[b2]
    assert {d.via for d in slot3.delivered.values()} == {"backfill"}


def test_on_demand_register_read() -> None:
    from amistack.headend.collector import RegisterRead
    from amistack.sim.fleet import HEADEND_ADDR

    fleet = build_fleet(FleetConfig(meters=3, cells=1, mode=Mode.PUSHED, slots=1))
    got: list[RegisterRead] = []
    fleet.net.on_event.append(
        lambda a, ev, now: got.append(ev) if isinstance(ev, RegisterRead) else None
    )
    t = fleet.clock.now + 1
    fleet.clock.call_at(t, lambda: fleet.headend.collector.read_registers(meter_id(1), t))
    fleet.clock.call_at(t, lambda: fleet.net.service(HEADEND_ADDR))
    fleet.clock.run_until(t + 5)
    assert [g.meter_id for g in got] == [meter_id(1)]
    regs = got[0].registers
    assert regs is not None
    want = fleet.nodes[1].model.registers(t).active_forward_wh
    assert abs(regs.active_forward_wh - want) < 50  # read a moment later, same meter


def test_malformed_push_is_counted_and_answered_not_held() -> None:
    from amistack.c1222.tables import Table
    from amistack.sim.fleet import HEADEND_ADDR, HEADEND_TITLE

    fleet = build_fleet(FleetConfig(meters=2, cells=1, mode=Mode.PUSHED, slots=1))
    node = fleet.nodes[0]
    t = fleet.clock.now + 1

    def push_garbage() -> None:
        node.server.push(HEADEND_ADDR, HEADEND_TITLE, Table.LOAD_PROFILE_1, b"\x0f\xff\xff", t)
        fleet.net.service(fleet.addrs[0])

    fleet.clock.call_at(t, push_garbage)
    fleet.clock.run_until(t + 3)
    assert fleet.headend.collector.counters["decode-error"] == 1
    assert fleet.headend.counters["acks-held"] == 0
    assert fleet.repo.count_readings() == 0
    assert node.server.counters["messages-accepted"] == 1  # the meter got its (OK) answer


def test_a_meter_that_moved_is_read_at_its_new_address_with_nothing_forgotten() -> None:
    fleet = build_fleet(FleetConfig(meters=4, cells=1, mode=Mode.POLLED, slots=1))
    collector = fleet.headend.collector
    assert not collector.set_address("no-such-meter", ("10.9.9.9", 1153))
    old = collector.target(meter_id(0))
    assert old is not None
    new: Addr = ("10.9.9.9", 1153)
    assert collector.set_address(meter_id(0), new)
    moved = collector.target(meter_id(0))
    assert moved is not None and moved.addr == new
    assert (moved.meter_id, moved.ap_title, moved.cell) == (old.meter_id, old.ap_title, old.cell)
    assert collector.set_address(meter_id(0), new) and collector.counters["address-changed"] == 1
    run(fleet)
    slot = fleet.headend.collector.slots[measured_slots(fleet)[0]]
    assert meter_id(0) not in slot.delivered  # read at the new address, where nobody answers
    assert fleet.net.counters["undeliverable"] > 0
    assert {meter_id(i) for i in (1, 2, 3)} <= set(slot.delivered)


@given(st.lists(st.tuples(st.sampled_from(["add", "forget"]), st.integers(-300, 300)), max_size=60))
def test_stored_starts_behave_as_the_set_of_grid_starts(ops: list[tuple[str, int]]) -> None:
    step = 1800
    base = 1_790_000_000 // step * step
    starts, model = _Starts(step), set[int]()
    for op, k in ops:
        s = base + k * (step // 2)  # half of them off the grid: not kept
        if op == "add":
            starts.add(s)
            if s % step == 0:
                model.add(s)
        else:
            starts.forget_before(s)
            model = {x for x in model if x >= s}
        assert bool(starts) == bool(model)
        assert all(x in starts for x in model)
        assert not any(
            base + j * step in starts for j in range(-160, 160) if base + j * step not in model
        )
        if model:
            assert starts.oldest() == min(model)
        for lo, n in ((k - 3, 4), (k, 1), (k - 1, 2), (k - 200, 400), (k, 0)):
            first = base + lo * step  # `absent`: the set's answer, by mask
            window = range(first, first + n * step, step)
            assert starts.absent(window) == [x for x in window if x not in model]
        off_grid = range(base + step // 2, base + 3 * step, step)
        assert starts.absent(off_grid) == list(off_grid)
