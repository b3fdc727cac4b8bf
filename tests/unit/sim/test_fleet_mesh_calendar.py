"""The mesh fleet's head-end on the meters' calendar: `Calendar` shifts an engine's clock, and
a due timer fires (the shift there and back is exact near the epoch: no rounding below it);
`CalendarKeys` shifts key lifetimes."""

from __future__ import annotations

from amistack.addr import Addr, TimerlessEngine
from amistack.keymgmt.server import IssuedKey
from amistack.keymgmt.ukmf import KeyId
from amistack.sim.fleet_mesh import Calendar, CalendarKeys
from amistack.sim.mesh import METER_EPOCH


class _Clocked(TimerlessEngine):
    def __init__(self, at: float) -> None:
        self.at: float | None = at
        self.seen: list[float] = []

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self.seen.append(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return []

    def get_timer(self) -> float | None:
        return self.at

    def handle_timer(self, now: float) -> None:
        if self.at is not None and self.at <= now:
            self.at = None


def test_the_engine_sees_calendar_time_and_its_due_timer_fires() -> None:
    for t in (0.1, 1e-7, 12345.678901, 0.3 + 1e-9):
        due = METER_EPOCH + t
        engine = _Clocked(due)
        cal = Calendar(engine, METER_EPOCH)
        wake = cal.get_timer()
        assert wake is not None
        cal.handle_timer(wake)
        assert engine.at is None
        cal.receive_datagram(b"x", ("::1", 1), 5.0)
        assert engine.seen == [METER_EPOCH + 5.0]


class _Source:
    def __init__(self) -> None:
        self.asked: list[float] = []

    def key_for(self, key_id: KeyId, purpose: str, now: float) -> IssuedKey | None:
        self.asked.append(now)
        return IssuedKey(b"m", key_id, purpose, b"k" * 16, 100.0)

    def current_key(self, device_id: bytes, purpose: str, now: float) -> IssuedKey | None:
        self.asked.append(now)
        return None


def test_keys_come_on_the_calendar() -> None:
    source = _Source()
    keys = CalendarKeys(source, 1000.0)
    k = keys.key_for(KeyId(1, 1), "c1222", 1050.0)
    assert k is not None and k.not_after == 1100.0 and k.key == b"k" * 16
    assert keys.current_key(b"m", "c1222", 1060.0) is None
    assert source.asked == [50.0, 60.0]
