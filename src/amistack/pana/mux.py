"""Many PANA clients over one UDP socket, demultiplexed by PANA Session Identifier.

`PacMux` is itself a datagram engine (the shape `runtime.EngineDriver` and `sim/` drive), so a
load generator or a simulated fleet runs thousands of `PanaClient` engines over a few sockets. The
PaC learns its session identifier from the PAA's first PAR (the one with the 'S' flag, RFC 5191
§4.1); until then nothing on the wire says which client a PAR belongs to, so each socket has at
most one client in that starting phase.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from amistack.addr import Addr

log = logging.getLogger(__name__)

# RFC 5191 §6.2 header: Reserved(2) Length(2) Flags(2) Type(2) Session-Id(4) Seq(4)
_HEADER = 16
_FLAG_REQUEST = 0x8000
_FLAG_START = 0x4000


@dataclass(frozen=True)
class Bound:
    """The starting client of the mux got its session identifier: another client may start."""

    session_id: int


@dataclass(frozen=True)
class MuxEvent:
    """An event of one client of the mux (or `Bound`)."""

    client: Any
    event: object


class PacMux:
    """A datagram engine multiplexing PaC engines that share one socket."""

    def __init__(self) -> None:
        self._by_sid: dict[int, Any] = {}
        self._sid_of: dict[int, int] = {}  # id(client) -> session id
        self._starting: Any | None = None
        self._dirty: dict[int, Any] = {}
        # id(client) -> (deadline, push number); a heap entry is live only while it matches, so
        # entries of re-armed or removed clients (whose id() may be reused) are skipped lazily.
        self._armed: dict[int, tuple[float, int]] = {}
        self._heap: list[tuple[float, int, int, Any]] = []
        self._pushes = 0
        self._events: deque[MuxEvent] = deque()
        self.counters: Counter[str] = Counter()

    # -- client management ---------------------------------------------------------------------

    def can_start(self) -> bool:
        return self._starting is None

    def add(self, client: Any) -> None:
        """Take `client` in as the starting client; call `client.start(now)` and then `touch`."""
        if self._starting is not None:
            raise RuntimeError("a client of this mux is still waiting for its session identifier")
        self._starting = client
        self._dirty[id(client)] = client

    def touch(self, client: Any) -> None:
        """`client` was commanded directly (start, reauthenticate, ...): collect its output."""
        self._dirty[id(client)] = client

    def remove(self, client: Any) -> None:
        """Forget `client`; datagrams for its session are dropped from now on."""
        key = id(client)
        sid = self._sid_of.pop(key, None)
        if sid is not None:
            self._by_sid.pop(sid, None)
        if self._starting is client:
            self._starting = None
        self._armed.pop(key, None)  # its heap entries go stale
        self._dirty.pop(key, None)

    def __len__(self) -> int:
        return len(self._by_sid) + (self._starting is not None)

    # -- engine interface ----------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if len(data) < _HEADER:
            self.counters["short"] += 1
            return
        sid = int.from_bytes(data[8:12], "big")
        client = self._by_sid.get(sid)
        if client is None:
            flags = int.from_bytes(data[4:6], "big")
            client = self._starting
            if client is None or flags & (_FLAG_REQUEST | _FLAG_START) != (
                _FLAG_REQUEST | _FLAG_START
            ):
                self.counters["unknown_session"] += 1
                return
            self._starting = None
            self._by_sid[sid] = client
            self._sid_of[id(client)] = sid
            self._events.append(MuxEvent(client, Bound(sid)))
        client.receive_datagram(data, addr, now)
        self._dirty[id(client)] = client

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        if not self._dirty:
            return []
        out: list[tuple[bytes, Addr]] = []
        dirty, self._dirty = self._dirty, {}
        events = self._events
        armed = self._armed
        for key, client in dirty.items():
            out.extend(client.datagrams_to_send(now))
            event = client.next_event()
            while event is not None:
                events.append(MuxEvent(client, event))
                event = client.next_event()
            at = client.get_timer()
            if at is None:
                armed.pop(key, None)
            else:
                current = armed.get(key)
                if current is None or current[0] != at:
                    self._pushes += 1
                    armed[key] = (at, self._pushes)
                    heapq.heappush(self._heap, (at, self._pushes, key, client))
        return out

    def get_timer(self) -> float | None:
        heap = self._heap
        armed = self._armed
        while heap:
            at, push, key, _ = heap[0]
            if armed.get(key) == (at, push):
                return at
            heapq.heappop(heap)  # stale: re-armed, disarmed or removed since
        return None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        armed = self._armed
        while heap and heap[0][0] <= now:
            at, push, key, client = heapq.heappop(heap)
            if armed.get(key) != (at, push):
                continue
            del armed[key]
            client.handle_timer(now)
            self._dirty[key] = client

    def next_event(self) -> MuxEvent | None:
        return self._events.popleft() if self._events else None
