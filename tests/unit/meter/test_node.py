"""The meter as a composition (MeterNode) against a real head-end engine (C1222Client), in memory,
under UKMF keys from real PANA security contexts: reads, commands, pushes, events, key rotation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.c1222.c1222_harness import (
    HEADEND_ADDR,
    HEADEND_TITLE,
    METER_ADDR,
    METER_TITLE,
    T0,
    make_ctx,
)

from amistack.c1222.endpoint import C1222Client, EndpointConfig
from amistack.c1222.events import RequestReceived, ResponseReceived
from amistack.c1222.security import ring_key_lookup, ring_send_key
from amistack.c1222.services import ReadResult, Write
from amistack.c1222.tables import (
    Clock,
    CurrentRegisters,
    LoadProfile,
    ProcedureResponse,
    ProcedureResult,
    Table,
    demand_reset,
    remote_switch,
    set_date_time,
)
from amistack.crypto import seeded_random
from amistack.eventlog.log import EventLog
from amistack.eventlog.record import EventRecord, EventType
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.ukmf import PurposeRegistry
from amistack.meter.events import AuthFailure, ClockAdjusted, KeyRotated, SwitchOperated
from amistack.meter.model import DAY_S, INTERVAL_S, MeterConfig, MeterModel
from amistack.meter.node import (
    POLL_LAG_S,
    QUIET_POLLS,
    MeterNode,
    MeterNodeConfig,
    NodeEvent,
    PushAcked,
    PushConfig,
    PushSent,
    ap_title_for,
    push_offset,
)
from amistack.meter.tables import TimeScale
from amistack.securemodule.software import SoftwareModule

CONFIG = MeterConfig(install_time=T0 - 40 * DAY_S, outage_rate_per_year=0.0)
LIFETIME = 86400.0
PUSH = PushConfig(enabled=True, interval_minutes=15, intervals=4, min_offset_s=5, max_offset_s=300)


@dataclass
class Rig:
    node: MeterNode
    client: C1222Client
    meter_ring: KeyRing
    headend_ring: KeyRing
    now: float = T0
    node_events: list[NodeEvent] = field(default_factory=list)
    client_events: list[object] = field(default_factory=list)
    arrivals: list[tuple[float, RequestReceived]] = field(default_factory=list)
    meter_sent: int = 0

    def pump(self, rounds: int = 6) -> None:
        for _ in range(rounds):
            moved = False
            for data, addr in self.client.datagrams_to_send(self.now):
                assert addr == METER_ADDR
                self.node.receive_datagram(data, HEADEND_ADDR, self.now)
                moved = True
            for data, addr in self.node.datagrams_to_send(self.now):
                assert addr == HEADEND_ADDR
                self.meter_sent += 1
                self.client.receive_datagram(data, METER_ADDR, self.now)
                moved = True
            self.drain()
            if not moved:
                return

    def drain(self) -> None:
        while (ev := self.node.next_event()) is not None:
            self.node_events.append(ev)
        while (cev := self.client.next_event()) is not None:
            self.client_events.append(cev)
            if isinstance(cev, RequestReceived):
                self.arrivals.append((self.now, cev))

    def run_until(self, until: float) -> None:
        """Advance the clock timer by timer (both engines), delivering everything."""
        while True:
            timers = [t for t in (self.node.get_timer(), self.client.get_timer()) if t is not None]
            at = min(timers, default=None)
            if at is None or at > until:
                self.now = until
                return
            self.now = max(self.now, at)
            if (nt := self.node.get_timer()) is not None and nt <= self.now:
                self.node.handle_timer(self.now)
            if (ct := self.client.get_timer()) is not None and ct <= self.now:
                self.client.handle_timer(self.now)
            self.pump()

    def answer(self, rid: int) -> ResponseReceived:
        self.pump()
        got = [
            e for e in self.client_events if isinstance(e, ResponseReceived) and e.request_id == rid
        ]
        assert len(got) == 1, self.client_events
        return got[0]

    def read(self, table: int) -> bytes:
        ans = self.answer(self.client.read(METER_ADDR, METER_TITLE, table, self.now))
        assert ans.ok, ans.responses
        return ReadResult.decode(ans.responses[0].data).data

    def procedure(self, init: object) -> ProcedureResponse:
        rid = self.client.procedure(METER_ADDR, METER_TITLE, init, self.now)  # type: ignore[arg-type]
        ans = self.answer(rid)
        assert ans.ok, ans.responses
        return ProcedureResponse.decode(ReadResult.decode(ans.responses[1].data).data)

    def authenticate(self, key_id: int, *, headend: bool = True) -> None:
        """What the PaC does on each (re-)authentication, on both ends."""
        ctx = make_ctx(key_id=key_id)
        self.node.key_events(self.meter_ring.install(ctx, LIFETIME, self.now), self.now)
        if headend:
            self.headend_ring.install(ctx, LIFETIME, self.now)


def make_rig(
    *,
    keys: bool = True,
    push: PushConfig | None = None,
    scale: TimeScale | None = None,
    event_log: EventLog | None = None,
    seed: int = 1,
    now: float = T0,
) -> Rig:
    meter_ring = KeyRing(b"meter-1", PurposeRegistry(), overlap=30.0)
    headend_ring = KeyRing(b"meter-1", PurposeRegistry(), overlap=30.0)
    cfg = MeterNodeConfig(
        METER_TITLE,
        HEADEND_TITLE,
        HEADEND_ADDR,
        push=push or PushConfig(),
        time=scale or TimeScale(),
    )
    node = MeterNode(
        cfg, MeterModel(seed, CONFIG), meter_ring, seeded_random(3), event_log=event_log
    )
    client = C1222Client(
        EndpointConfig(HEADEND_TITLE),
        ring_key_lookup(headend_ring),
        ring_send_key(headend_ring),
        seeded_random(4),
    )
    rig = Rig(node, client, meter_ring, headend_ring, now)
    node.start(now)
    if keys:
        rig.authenticate(1)
    return rig


@pytest.fixture
def event_log(tmp_path: Path) -> Iterator[EventLog]:
    module = SoftwareModule.create(tmp_path / "meter.pem", "meter-1/eventlog")
    log = EventLog.open(tmp_path / "meter-1.evlog", "meter-1", module, T0)
    yield log
    log.close()
    module.close()


def _records(log: EventLog) -> list[EventRecord]:
    return [i for i in log.items() if isinstance(i, EventRecord)]


def test_headend_reads_registers_and_load_profile() -> None:
    rig = make_rig()
    model = rig.node.model
    regs = CurrentRegisters.decode(rig.read(Table.CURRENT_REGISTER_DATA))
    assert regs.active_forward_wh == model.registers(T0).active_forward_wh > 0
    lp = LoadProfile.decode(rig.read(Table.LOAD_PROFILE_1))
    assert lp.interval_minutes == 15 and len(lp.intervals) >= 30 * 96 - 1
    newest = model.interval(int(lp.end_time // INTERVAL_S) - 1)
    assert lp.intervals[-1].value_wh == newest.forward_wh and lp.end_time <= T0
    lp30 = LoadProfile.decode(rig.read(Table.LOAD_PROFILE_2))
    want30 = model.load_profile_30min(lp30.end_time - 86400, lp30.end_time, T0)
    assert lp30.interval_minutes == 30
    assert [i.value_wh for i in lp30.intervals[-48:]] == [w.forward_wh for w in want30]


def test_disconnect_reconnect_with_read_back_and_logged_events(event_log: EventLog) -> None:
    rig = make_rig(event_log=event_log)
    resp = rig.procedure(remote_switch(1, False))
    assert resp.result == ProcedureResult.COMPLETED and resp.data == b"\x00"
    assert not rig.node.model.switch.relay_closed(rig.now)
    rig.now += 600
    resp = rig.procedure(remote_switch(2, True))
    assert resp.result == ProcedureResult.COMPLETED and resp.data == b"\x01"
    rig.run_until(rig.now + 120)  # the event poll hands the switch events to the log
    ops = [e for e in rig.node_events if isinstance(e, SwitchOperated)]
    assert [e.closed for e in ops] == [False, True]
    types = [r.type for r in _records(event_log)]
    assert types.count(EventType.SWITCH_OPENED) == 1 and types.count(EventType.SWITCH_CLOSED) == 1
    assert EventType.KEY_ROTATED in types  # the first authentication
    assert event_log.heads, "switch operations are signed events"


def test_time_sync_and_demand_reset() -> None:
    rig = make_rig()
    resp = rig.procedure(set_date_time(1, T0 + 90))
    assert resp.result == ProcedureResult.COMPLETED
    assert Clock.decode(rig.read(Table.CLOCK)).time == T0 + 90
    rig.run_until(rig.now + 60)
    assert any(isinstance(e, ClockAdjusted) and e.delta_s == 90 for e in rig.node_events)
    before = CurrentRegisters.decode(rig.read(Table.CURRENT_REGISTER_DATA))
    rig.now += 60
    assert rig.procedure(demand_reset(2)).result == ProcedureResult.COMPLETED
    after = CurrentRegisters.decode(rig.read(Table.CURRENT_REGISTER_DATA))
    assert after.demand_resets == before.demand_resets + 1
    assert after.cumulative_demand_w == before.max_demand_w > 0


def test_nothing_is_served_or_pushed_before_the_first_authentication() -> None:
    rig = make_rig(keys=False, push=PUSH)
    rig.headend_ring.install(make_ctx(key_id=1), LIFETIME, T0)  # the head-end already has keys
    rig.client.read(METER_ADDR, METER_TITLE, Table.CURRENT_REGISTER_DATA, rig.now)
    rig.run_until(T0 + 3600)
    assert rig.meter_sent == 0
    assert rig.node.counters["no-key-yet"] >= 1
    assert rig.node.counters["push-no-key"] >= 3 and rig.node.counters["pushes-sent"] == 0
    assert rig.node.server.counters["messages-accepted"] == 0
    # once authenticated it answers and pushes
    rig.authenticate(1, headend=False)
    assert CurrentRegisters.decode(rig.read(Table.CURRENT_REGISTER_DATA)).active_forward_wh > 0
    rig.run_until(rig.now + 1800)
    assert rig.node.counters["pushes-sent"] >= 1


def test_pushes_arrive_at_seeded_randomized_offsets() -> None:
    rig = make_rig(push=PUSH)
    rig.run_until(T0 + 6 * 3600)
    pushes = [(t, ev) for t, ev in rig.arrivals if isinstance(ev.requests[0], Write)]
    assert len(pushes) == 24  # one per quarter hour
    offsets = []
    seed = METER_TITLE.device_id
    for t, ev in pushes:
        w = ev.requests[0]
        assert isinstance(w, Write) and w.table == Table.LOAD_PROFILE_1
        lp = LoadProfile.decode(w.data)
        k = int(lp.end_time // INTERVAL_S)
        assert t - lp.end_time == pytest.approx(push_offset(seed, k, 5, 300))
        offsets.append(t - lp.end_time)
        assert len(lp.intervals) == 4
        want = rig.node.model.load_profile(lp.end_time - 3600, lp.end_time, t)
        assert [i.value_wh for i in lp.intervals] == [w.forward_wh for w in want]
    assert all(5 <= o < 300 for o in offsets) and len({round(o) for o in offsets}) > 20
    acked = [e for e in rig.node_events if isinstance(e, PushAcked)]
    assert len(acked) == 24 and rig.node.counters["pushes-lost"] == 0
    other = make_rig(push=replace(PUSH, seed=b"another meter"))
    other.run_until(T0 + 3600)
    first = [t for t, _ in other.arrivals][:2]
    assert first != [t for t, _ in pushes][:2]  # a fleet spreads itself


def test_accelerated_time_pushes_in_model_time() -> None:
    scale = TimeScale(origin_now=1000.0, origin_model=T0, factor=60.0)
    rig = make_rig(push=PUSH, scale=scale, now=1000.0)
    rig.run_until(1000.0 + 60)  # one engine minute = one model hour
    sent = [e for e in rig.node_events if isinstance(e, PushSent)]
    assert len(sent) == 4
    assert all(e.boundary >= T0 and e.boundary % INTERVAL_S == 0 for e in sent)
    regs = CurrentRegisters.decode(rig.read(Table.CURRENT_REGISTER_DATA))
    want = rig.node.model.registers(scale.model(rig.now))
    assert regs.active_forward_wh == want.active_forward_wh


def test_key_rotation_mid_stream_loses_no_message() -> None:
    rig = make_rig(push=PUSH)
    # a request under generation 1 is in flight when both ends rotate to generation 2
    rid = rig.client.read(METER_ADDR, METER_TITLE, Table.CLOCK, rig.now)
    in_flight = rig.client.datagrams_to_send(rig.now)
    rig.now += 5
    rig.authenticate(2)
    for data, _ in in_flight:
        rig.node.receive_datagram(data, HEADEND_ADDR, rig.now)
    rig.pump()
    ans = rig.answer(rid)
    assert ans.ok  # answered under the generation that authenticated it
    # the meter's answers to generation-1 requests ... and its pushes under generation 2
    rig.run_until(rig.now + 3600)
    assert rig.node.counters["pushes-lost"] == 0 and rig.node.counters["pushes-sent"] >= 4
    gens = {ev.key_id for _, ev in rig.arrivals}
    assert gens == {2}
    assert [e.generation for e in rig.node_events if isinstance(e, KeyRotated)] == [1, 2]
    assert rig.node.server.counters["auth-failed"] == 0 and rig.client.counters["auth-failed"] == 0


def test_auth_failures_become_rate_limited_events(event_log: EventLog) -> None:
    rig = make_rig(event_log=event_log)
    rogue_ring = KeyRing(b"meter-1", PurposeRegistry())
    rogue_ring.install(make_ctx(key_id=1, seed=99), 3600.0, T0)  # same key id, wrong key
    rogue = C1222Client(
        EndpointConfig(HEADEND_TITLE, first_invocation_id=1000),
        ring_key_lookup(rogue_ring),
        ring_send_key(rogue_ring),
        seeded_random(5),
    )
    for _ in range(15):
        rogue.read(METER_ADDR, METER_TITLE, Table.CLOCK, rig.now)
    for data, _ in rogue.datagrams_to_send(rig.now):
        rig.node.receive_datagram(data, HEADEND_ADDR, rig.now)
    rig.drain()
    assert rig.node.server.counters["auth-failed"] == 15
    assert not rig.node.datagrams_to_send(rig.now)  # nothing answered
    fails = [e for e in rig.node_events if isinstance(e, AuthFailure)]
    assert len(fails) == 10 and rig.node.counters["auth-failures-not-logged"] == 5
    assert fails[0].peer == HEADEND_TITLE.device_id and "auth-failed" in fails[0].reason
    assert [r.type for r in _records(event_log)].count(EventType.AUTH_FAILURE) == 10
    # the real head-end is still served
    assert Clock.decode(rig.read(Table.CLOCK)).time == T0


def test_a_push_in_flight_across_a_rotation_is_acknowledged() -> None:
    rig = make_rig(push=PUSH)
    at = rig.node.next_push_time()
    assert at is not None
    rig.now = at
    rig.node.handle_timer(at)
    held = rig.node.datagrams_to_send(at)  # a push under generation 1, not yet delivered
    assert held
    rig.now = at + 2
    rig.authenticate(2)  # both ends rotate while it is on the wire
    for data, _ in held:
        rig.client.receive_datagram(data, METER_ADDR, rig.now)
    rig.pump()
    sent = [e for e in rig.node_events if isinstance(e, PushSent)]
    acked = [e for e in rig.node_events if isinstance(e, PushAcked)]
    assert len(sent) == 1 and [a.request_id for a in acked] == [sent[0].request_id]
    assert [ev.key_id for _, ev in rig.arrivals] == [1]  # it went out under generation 1


def test_push_config_validation_and_default_titles() -> None:
    with pytest.raises(ValueError):
        PushConfig(interval_minutes=10)
    with pytest.raises(ValueError):
        PushConfig(min_offset_s=100, max_offset_s=50)
    with pytest.raises(ValueError):
        PushConfig(max_offset_s=900)
    assert ap_title_for("meter-1") == ap_title_for(b"meter-1") != ap_title_for("meter-2")
    assert ap_title_for("meter-1").relative
    rig = make_rig(push=replace(PUSH, interval_minutes=30))
    rig.run_until(T0 + 2 * 3600)
    pushes = [ev.requests[0] for _, ev in rig.arrivals]
    assert len(pushes) == 4
    assert all(isinstance(w, Write) and w.table == Table.LOAD_PROFILE_2 for w in pushes)


def _polled_events(seed: int, days: float) -> tuple[list[tuple[float, NodeEvent]], int]:
    """(engine time each event came out, event) of a node left alone for `days`, and its
    wake-ups: seeded outages and cover openings several times a day, polled every 900 s."""
    busy = replace(CONFIG, outage_rate_per_year=700.0, cover_open_rate_per_year=700.0)
    cfg = MeterNodeConfig(METER_TITLE, HEADEND_TITLE, HEADEND_ADDR, event_poll_s=900.0)
    ring = KeyRing(b"meter-1", PurposeRegistry(), overlap=30.0)
    node = MeterNode(cfg, MeterModel(seed, busy), ring, seeded_random(3))
    node.start(T0)
    out: list[tuple[float, NodeEvent]] = []
    wakeups, now = 0, T0
    while True:
        while (ev := node.next_event()) is not None:
            out.append((now, ev))
        at = node.get_timer()
        if at is None or at > T0 + days * DAY_S:
            return out, wakeups
        now = at
        node.handle_timer(now)
        wakeups += 1


def test_polls_that_would_find_nothing_are_skipped_events_come_out_at_the_same_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    skipping, fewer = _polled_events(5, 3)
    monkeypatch.setattr("amistack.meter.node.QUIET_POLLS", 1)  # a wake-up every 900 s
    every, wakeups = _polled_events(5, 3)
    assert len(every) >= 6 and skipping == every
    assert wakeups >= 3 * 96 - 1 and fewer < wakeups / 2


@pytest.mark.parametrize(
    "scale",
    [TimeScale(), TimeScale(0.0, T0), TimeScale(1000.0, T0, 60.0), TimeScale(3.5, T0, 0.7)],
)
@given(st.floats(0, 2 * DAY_S), st.sampled_from([900.0, 60.0, 7.3]))
@settings(max_examples=40, deadline=None)
def test_the_next_event_poll_is_the_time_scales_arithmetic(
    scale: TimeScale, after: float, step: float
) -> None:
    # _poll spells TimeScale.model/engine out: the timers it sets are the methods' to the bit
    node = MeterNode(
        MeterNodeConfig(METER_TITLE, HEADEND_TITLE, time=scale, event_poll_s=step),
        MeterModel(2, CONFIG),
        KeyRing(b"meter-1", PurposeRegistry()),
        seeded_random(3),
    )
    now = scale.engine(T0) + after / scale.factor
    node.start(now)
    t = scale.model(now) - POLL_LAG_S
    want = scale.engine(t + step)
    for _ in range(QUIET_POLLS - 1):
        polled_to = scale.model(want) - POLL_LAG_S
        if polled_to >= node._quiet:
            break
        want = scale.engine(polled_to + step)
    assert node.get_timer() == want


def test_has_key_follows_revocation_and_expiry_of_the_key_it_remembers() -> None:
    rig = make_rig()
    node, ring = rig.node, rig.meter_ring
    assert node.has_key(T0 + 10)
    ring.shorten(T0 + 100, T0 + 10)  # revoked: the remembered key ends at T0 + 100
    assert node.has_key(T0 + 99) and not node.has_key(T0 + 100)
    rig.now = T0 + 100
    rig.client.read(METER_ADDR, METER_TITLE, Table.CLOCK, rig.now)
    rig.pump()
    assert node.counters["no-key-yet"] == 1 and rig.meter_sent == 0
    rig.authenticate(2)  # a new generation: answered again
    assert node.has_key(rig.now)
    ring.expire(rig.now + LIFETIME)  # every key gone (wiped): none valid
    assert not node.has_key(rig.now)
