"""Meter events: mapping onto the event log's types, payloads, seeded cover events, the queue."""

from __future__ import annotations

import struct

from amistack.eventlog.record import EventType
from amistack.meter.events import (
    AuthFailure,
    ClockAdjusted,
    CoverClose,
    CoverOpen,
    EventQueue,
    KeyRotated,
    PowerFail,
    PowerRestore,
    ReverseFlowStarted,
    SwitchOperated,
    SwitchReason,
)
from amistack.meter.model import DAY_S, MeterConfig, MeterModel


def test_every_event_maps_onto_an_event_log_type() -> None:
    cases = [
        (PowerFail(1.0), EventType.POWER_FAIL, b""),
        (PowerRestore(2.0, 61.9), EventType.POWER_RESTORE, struct.pack(">I", 61)),
        (CoverOpen(3.0), EventType.COVER_OPEN, b""),
        (CoverClose(4.0), EventType.COVER_CLOSE, b""),
        (
            SwitchOperated(5.0, False, SwitchReason.LOAD_LIMIT, 3),
            EventType.SWITCH_OPENED,
            b"\x02\x00\x00\x00\x03",
        ),
        (SwitchOperated(6.0, True, SwitchReason.REMOTE, 4), EventType.SWITCH_CLOSED, None),
        (ClockAdjusted(7.0, 1.5), EventType.CLOCK_ADJUSTED, struct.pack(">q", 1500)),
        (AuthFailure(8.0, b"hes-1", "bad tag"), EventType.AUTH_FAILURE, b"\x05hes-1bad tag"),
        (KeyRotated(9.0, 0x1_0000_0002), EventType.KEY_ROTATED, struct.pack(">I", 2)),
        (ReverseFlowStarted(10.0), EventType.REVERSE_FLOW, b""),
    ]
    for ev, typ, data in cases:
        assert ev.event_type is typ
        if data is not None:
            assert ev.data() == data
    assert len(AuthFailure(0.0, b"x" * 100, "r" * 500).data()) == 1 + 64 + 200


def test_queue_orders_by_time_then_arrival() -> None:
    q = EventQueue()
    q.record(KeyRotated(5.0, 1))
    q.record(PowerFail(1.0))
    q.record(KeyRotated(5.0, 2))
    assert q.next_event(now=0.5) is None
    assert q.next_event(now=1.0) == PowerFail(1.0)
    assert len(q) == 2
    assert q.next_event() == KeyRotated(5.0, 1)
    assert q.next_event() == KeyRotated(5.0, 2)
    assert q.next_event() is None


def test_seeded_cover_events_pair_up_and_are_deterministic() -> None:
    cfg = MeterConfig(cover_open_rate_per_year=365.25, outage_rate_per_year=0)
    m = MeterModel(3, cfg)
    t0 = m.install_time + 10 * DAY_S
    evs = m.seeded_events(t0, t0 + 5 * DAY_S)
    opens = [e for e in evs if isinstance(e, CoverOpen)]
    closes = [e for e in evs if isinstance(e, CoverClose)]
    assert 4 <= len(opens) <= 6 and 4 <= len(closes) <= 6
    assert not any(isinstance(e, PowerFail) for e in evs)
    assert evs == MeterModel(3, cfg).seeded_events(t0, t0 + 5 * DAY_S)
    # the intervals are split without loss or overlap
    a = m.seeded_events(t0, t0 + 2 * DAY_S) + m.seeded_events(t0 + 2 * DAY_S, t0 + 5 * DAY_S)
    assert a == evs
