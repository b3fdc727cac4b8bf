"""The remote switch on its own: states, read-back, operation counter, load limit, time order."""

from __future__ import annotations

import pytest

from amistack.eventlog.record import EventType
from amistack.meter.events import SwitchReason
from amistack.meter.switch import RemoteSwitch, SwitchError, SwitchState


def test_disconnect_connect_and_read_back() -> None:
    sw = RemoteSwitch()
    assert sw.state is SwitchState.CONNECTED and sw.relay_closed(0.0)
    ev = sw.disconnect(100.0)
    assert ev is not None and not ev.closed and ev.operations == 1
    assert ev.event_type is EventType.SWITCH_OPENED and ev.reason is SwitchReason.REMOTE
    assert sw.relay_closed(99.0) and not sw.relay_closed(100.0)
    assert sw.state_at(150.0) is SwitchState.DISCONNECTED
    ev = sw.connect(200.0)
    assert ev is not None and ev.closed and ev.event_type is EventType.SWITCH_CLOSED
    assert sw.operations == 2 and sw.operations_at(150.0) == 1
    assert sw.closed_seconds(0.0, 300.0) == pytest.approx(200.0)
    assert sw.closed_seconds(120.0, 180.0) == 0.0


def test_repeated_commands_do_not_count_as_operations() -> None:
    sw = RemoteSwitch()
    sw.disconnect(10.0)
    assert sw.disconnect(20.0) is None
    assert sw.connect(30.0) is not None
    assert sw.connect(40.0) is None
    assert sw.operations == 2 and len(sw.events) == 2


def test_armed_switch_closes_only_by_the_button() -> None:
    sw = RemoteSwitch()
    with pytest.raises(SwitchError):
        sw.arm(1.0)  # a connected switch cannot be armed
    sw.disconnect(10.0)
    sw.arm(20.0)
    assert sw.state is SwitchState.ARMED and not sw.relay_closed(25.0)
    assert sw.operations == 1  # arming does not move the relay
    ev = sw.press_button(30.0)
    assert ev is not None and ev.reason is SwitchReason.BUTTON and sw.relay_closed(30.0)
    assert sw.press_button(40.0) is None  # not armed any more: nothing happens


def test_operations_must_be_in_time_order() -> None:
    sw = RemoteSwitch()
    sw.disconnect(100.0)
    with pytest.raises(SwitchError):
        sw.connect(50.0)
    sw.set_load_limit(1000.0, 150.0)
    with pytest.raises(SwitchError):
        sw.set_load_limit(None, 120.0)
    with pytest.raises(SwitchError):
        sw.set_load_limit(-5.0, 200.0)


def test_load_limit_timeline_and_trip() -> None:
    sw = RemoteSwitch()
    sw.set_load_limit(2000.0, 100.0)
    assert sw.load_limit_at(50.0) is None and sw.load_limit_at(100.0) == 2000.0
    sw.set_load_limit(None, 300.0)
    assert sw.load_limit_at(400.0) is None
    assert sw.limit_changes_between(0.0, 1000.0) == [(100.0, 2000.0), (300.0, None)]
    ev = sw.trip(350.0)
    assert ev is not None and ev.reason is SwitchReason.LOAD_LIMIT and sw.trips == 1
    assert not sw.relay_closed(360.0)


def test_rollback_forgets_predicted_changes() -> None:
    sw = RemoteSwitch()
    sw.trip(500.0)
    sw.rollback_after(400.0)
    assert sw.trips == 0 and sw.operations == 0 and sw.events == []
    assert sw.relay_closed(600.0)
    sw.disconnect(450.0)
    sw.rollback_after(460.0)  # nothing after 460: kept
    assert sw.operations == 1 and not sw.relay_closed(470.0)
