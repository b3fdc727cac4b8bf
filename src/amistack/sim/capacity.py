"""A server of finite capacity on the virtual clock: one engine behind a FIFO of its input.

On the virtual clock an engine answers in zero time, so a simulated key server could serve a
million meters in one instant. `ServiceQueue` wraps the engine (it has the engine shape itself)
and lets it take datagrams one at a time, each costing `service_s` seconds of simulated time:
a datagram waits behind the ones before it and is dropped (and counted) when `limit` are
already waiting, as a real server's socket buffer overflows. The engine's own timers run
unchanged. `service_s` comes from the measured CPU cost of the real engine per datagram (see
`docs/simulator.md`), so a blackout builds the queue a real key server would see.
"""

from __future__ import annotations

import time
from collections import Counter, deque

from amistack.addr import Addr, Engine

# One datagram in this many is timed for `engine_cpu_s`: prime, so that it does not keep
# landing on the same message of the 5 a PANA + EAP-PSK authentication brings.
CPU_SAMPLE = 7


class ServiceQueue:
    """`engine` served at 1 / `service_s` datagrams per simulated second, `limit` waiting."""

    def __init__(self, engine: Engine, service_s: float, limit: int) -> None:
        if service_s < 0 or limit < 1:
            raise ValueError(f"service_s {service_s} must be >= 0 and limit {limit} >= 1")
        self.engine = engine
        self.service_s = service_s
        self.limit = limit
        self._queue: deque[tuple[bytes, Addr]] = deque()
        self._busy_until = 0.0  # when the datagram in service is done
        self.counters: Counter[str] = Counter()
        self.max_depth = 0
        # the CPU the real engine spent on the datagrams it was handed (this machine's figure,
        # to check `service_s` against; it never feeds back into the simulated time), measured
        # on every CPU_SAMPLE-th datagram: reading the process's CPU clock is a system call
        # (~2 us here, twice a datagram), and under load the process is often preempted there
        self._sampled = 0
        self._sampled_cpu_s = 0.0

    @property
    def engine_cpu_s(self) -> float:
        """The engine's CPU over every datagram served, estimated from the sampled ones."""
        if not self._sampled:
            return 0.0
        return self._sampled_cpu_s * self.counters["served"] / self._sampled

    @property
    def depth(self) -> int:
        return len(self._queue)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if len(self._queue) >= self.limit:
            self.counters["dropped"] += 1
            return
        if not self._queue:
            self._busy_until = max(self._busy_until, now) + self.service_s
        self._queue.append((data, addr))
        self.max_depth = max(self.max_depth, len(self._queue))
        self._serve(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return self.engine.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        at = self.engine.get_timer()
        if self._queue:
            return self._busy_until if at is None else min(at, self._busy_until)
        return at

    def handle_timer(self, now: float) -> None:
        self._serve(now)
        at = self.engine.get_timer()
        if at is not None and at <= now:
            self.engine.handle_timer(now)

    def next_event(self) -> object | None:
        return self.engine.next_event()

    def _serve(self, now: float) -> None:
        """Hand the engine every datagram whose service time has passed."""
        queue, counters = self._queue, self.counters
        while queue and self._busy_until <= now:
            data, addr = queue.popleft()
            counters["served"] += 1
            if counters["served"] % CPU_SAMPLE:
                self.engine.receive_datagram(data, addr, now)
            else:
                cpu0 = time.process_time()
                self.engine.receive_datagram(data, addr, now)
                self._sampled_cpu_s += time.process_time() - cpu0
                self._sampled += 1
            if queue:
                self._busy_until += self.service_s
