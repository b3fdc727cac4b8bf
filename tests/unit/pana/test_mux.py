"""PacMux rules, sans-IO: demultiplexing by session id, one starting client, a lazy timer heap."""

from __future__ import annotations

import struct
from collections import deque

import pytest

from amistack.addr import Addr
from amistack.pana.mux import Bound, MuxEvent, PacMux

PAA: Addr = ("127.0.0.1", 716)


def pana(flags: int, sid: int, seq: int = 1) -> bytes:
    return struct.pack("!HHHHII", 0, 16, flags, 2, sid, seq)


class FakePac:
    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[bytes] = []
        self.out: list[tuple[bytes, Addr]] = []
        self.timer: float | None = None
        self.fired: list[float] = []
        self.events: deque[object] = deque()

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self.got.append(data)
        self.out.append((b"ack-" + self.name.encode(), addr))
        self.events.append(("got", self.name))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self.out = self.out, []
        return out

    def get_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        self.timer = None

    def next_event(self) -> object | None:
        return self.events.popleft() if self.events else None


def drain(mux: PacMux) -> list[MuxEvent]:
    out = []
    while (ev := mux.next_event()) is not None:
        out.append(ev)
    return out


def test_start_binding_and_demultiplexing() -> None:
    mux = PacMux()
    a, b = FakePac("a"), FakePac("b")
    mux.add(a)
    assert not mux.can_start()
    with pytest.raises(RuntimeError):
        mux.add(b)
    # an answer without the S flag cannot bind the starting client
    mux.receive_datagram(pana(0x8000, 7), PAA, 0.0)
    assert a.got == [] and mux.counters["unknown_session"] == 1
    mux.receive_datagram(pana(0xC000, 7), PAA, 0.0)  # PAR with R and S: session 7 is a's
    assert mux.can_start()
    mux.add(b)
    mux.receive_datagram(pana(0xC000, 9), PAA, 0.0)
    mux.receive_datagram(pana(0x8000, 7, 2), PAA, 0.0)
    assert [d[8:12] for d in a.got] == [b"\x00\x00\x00\x07"] * 2
    assert [d[8:12] for d in b.got] == [b"\x00\x00\x00\x09"]
    assert sorted(mux.datagrams_to_send(0.0)) == sorted(
        [(b"ack-a", PAA), (b"ack-a", PAA), (b"ack-b", PAA)]
    )
    events = drain(mux)
    assert MuxEvent(a, Bound(7)) in events and MuxEvent(b, Bound(9)) in events
    assert [e.event for e in events if e.client is a and not isinstance(e.event, Bound)] == [
        ("got", "a"),
        ("got", "a"),
    ]
    mux.remove(a)
    mux.receive_datagram(pana(0x8000, 7, 3), PAA, 0.0)
    assert len(a.got) == 2 and mux.counters["unknown_session"] == 2
    mux.receive_datagram(b"short", PAA, 0.0)
    assert mux.counters["short"] == 1
    assert len(mux) == 1


def test_timer_heap_orders_clients_and_skips_stale_entries() -> None:
    mux = PacMux()
    a, b = FakePac("a"), FakePac("b")
    mux.add(a)
    a.timer = 5.0
    mux.datagrams_to_send(0.0)
    mux.receive_datagram(pana(0xC000, 1), PAA, 0.0)
    mux.add(b)
    b.timer = 3.0
    mux.datagrams_to_send(0.0)
    assert mux.get_timer() == 3.0
    # a re-arms later: its old entry at 5.0 becomes stale
    a.timer = 8.0
    mux.touch(a)
    mux.datagrams_to_send(0.0)
    mux.handle_timer(3.0)
    assert b.fired == [3.0] and a.fired == []
    mux.datagrams_to_send(3.0)
    assert mux.get_timer() == 8.0  # 5.0 was skipped
    mux.handle_timer(6.0)
    assert a.fired == []
    mux.remove(a)
    assert mux.get_timer() is None
