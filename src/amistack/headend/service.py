"""The head-end as one sans-IO engine: C12.22 client + keys + collector + commands + ingest.

`HeadEnd` has the engine shape (ARCHITECTURE.md), so `runtime.udp.EngineDriver` drives it over
UDP port 1153 (runtime/headend.py) and `sim/` over the virtual network (sim/fleet.py).

What it adds to its parts:
- **acks after durability**: the C12.22 client answers a meter's pushed write at once; the reply
  leaves the client as the datagram(s) it queued while that message was received, so the
  head-end takes exactly those and holds them until the collector reports the push's readings
  durable (`Collector.take_durable`). A held reply not released within `held_ack_ttl` is
  dropped: the meter retransmits, the readings are a counted duplicate, and that copy is acked.
- **key misses**: with an asynchronous key source the keys cannot be fetched inside
  `receive_datagram`; a datagram that missed a key is parked and `KeyNeeded` is reported; the
  runtime fetches (`HeadendKeys.fetch_async`) and calls `retry_parked(device, now)`, which
  feeds it again (the replay window has not seen it: only authenticated messages move it).
- **the registry and the API**: commissioned meters are (re)loaded from the repository every
  `meter_refresh_s`; pending commands (created through the REST API) are picked up every
  `command_poll_s` and executed.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from amistack.addr import Addr
from amistack.c1222.acse import ApTitle
from amistack.c1222.endpoint import C1222Client, EndpointConfig, InvocationIdStore
from amistack.c1222.events import RequestReceived
from amistack.crypto import RandomSource
from amistack.headend.collector import Collector, CollectorConfig, MeterTarget, RegisterRead
from amistack.headend.commands import CommandExecutor
from amistack.headend.eventlog_intake import (
    EventLogFetched,
    EventLogFetchFailed,
    EventLogIntake,
    EventLogReader,
)
from amistack.headend.ingest import BatchWriter, Ingestor
from amistack.headend.keys import HeadendKeys
from amistack.headend.registry import Meter, MeterState
from amistack.headend.schema import CommandState
from amistack.headend.shard import Shard
from amistack.headend.storage import ReadingRepository

log = logging.getLogger(__name__)

_KEYED_PAGE = 500  # meters asked about in one query (under SQLite's 999 bound parameters)


@dataclass(frozen=True)
class HeadEndConfig:
    ap_title: ApTitle
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    endpoint: EndpointConfig | None = None  # default EndpointConfig(ap_title)
    ingest_max_batch: int = 5000
    ingest_max_delay: float = 0.05
    command_poll_s: float = 1.0
    meter_refresh_s: float = 60.0
    held_ack_ttl: float = 30.0
    max_parked: int = 10_000
    eventlog_every_s: float = 3600.0  # fetch meters' signed event logs over C12.22 (0: never)
    shard: Shard | None = None  # one of several collectors on one database: its meters only


@dataclass(frozen=True)
class KeyNeeded:
    """A datagram (or a request) waits for a key of `device` (key byte None: a send key)."""

    device: bytes
    key_byte: int | None


HeadEndEvent = KeyNeeded | RegisterRead | EventLogFetched | EventLogFetchFailed


class HeadEnd:
    def __init__(
        self,
        config: HeadEndConfig,
        repo: ReadingRepository,
        keys: HeadendKeys,
        rng: RandomSource,
        now: float,
        *,
        addr_of: Callable[[Meter], Addr | None] | None = None,
        invocation_ids: InvocationIdStore | None = None,
        writer: BatchWriter | None = None,
    ) -> None:
        """`invocation_ids`: where the C12.22 client keeps its invocation-id mark, so that after
        a restart meters accept its messages at once (c1222.endpoint). `writer`: where ingest
        batches are written (default: at once, in the caller; the runtime passes a
        `runtime.ingest_writer.ThreadedBatchWriter`)."""
        self.config = config
        self.repo = repo
        self.keys = keys
        self.addr_of = addr_of or (lambda m: None)
        self.client = C1222Client(
            config.endpoint or EndpointConfig(config.ap_title),
            keys.lookup,
            keys.send_key,
            rng,
            invocation_ids=invocation_ids,
            key_rejected=keys.rejected,
        )
        self.ingestor = Ingestor(
            repo,
            max_batch=config.ingest_max_batch,
            max_delay=config.ingest_max_delay,
            writer=writer,
        )
        self.collector = Collector(
            config.collector, self.client, self.ingestor, now, send_key_byte=self._key_byte
        )
        self.commands = CommandExecutor(repo, self.client)
        # meters' event logs (MT1) are fetched, verified on arrival and stored, or alarmed
        self.eventlogs = EventLogReader(self.client, EventLogIntake(repo))
        self._next_eventlogs = now + config.eventlog_every_s if config.eventlog_every_s else None
        self.counters: Counter[str] = Counter()
        self._out: list[tuple[bytes, Addr]] = []
        self._held: dict[Hashable, tuple[float, list[tuple[bytes, Addr]]]] = {}
        # (deadline, seq, tag) of the held acks, a heap: an entry whose ack was released (or
        # held again) is stale and skipped, so the next expiry costs O(log n), not a walk over
        # every ack held (thousands at load: one per push in the ingest batch)
        self._held_expiry: list[tuple[float, int, Hashable]] = []
        self._held_seq = 0
        self._events: deque[HeadEndEvent] = deque()
        self._parked: dict[bytes, list[tuple[bytes, Addr]]] = {}
        self._next_commands = now
        self._next_refresh = now
        self.refresh_meters(now)

    def _key_byte(self, ap: bytes, now: float) -> int | None:
        k = self.keys.send_key(ap, now)
        return None if k is None else k[0]

    # -- registry / commands ---------------------------------------------------------------------

    def _owns(self, meter: Meter) -> bool:
        shard = self.config.shard
        return shard is None or shard.owns(meter)

    def refresh_meters(self, now: float) -> int:
        """Collect every commissioned meter of this shard (new ones from the next boundary);
        drop the rest."""
        wanted: dict[str, Meter] = {}
        after: str | None = None
        while True:
            page = self.repo.list_meters(state=MeterState.COMMISSIONED, after=after, limit=1000)
            wanted.update((m.meter_id, m) for m in page if self._owns(m))
            if len(page) < 1000:
                break
            after = page[-1].meter_id
        have = set(self.collector.meter_ids())
        for meter_id in have - wanted.keys():
            self.collector.remove_meter(meter_id)
        for meter_id, m in wanted.items():
            if meter_id not in have:
                self._collect(m, now)
        self._next_refresh = now + self.config.meter_refresh_s
        return len(wanted)

    def _collect(self, m: Meter, now: float) -> None:
        step = self.collector.step
        lookback = self.config.collector.lookback_intervals * step
        stored = [
            r.interval_start
            for r in self.repo.readings(
                m.meter_id, int(now) - lookback, int(now), length_min=step // 60, limit=1000
            )
        ]
        target = MeterTarget(m.meter_id, ApTitle.parse(m.ap_title), self.addr_of(m), m.cell)
        self.collector.add_meter(target, now, stored)

    def _admit(self, ev: object, now: float) -> None:
        """A message from a meter commissioned since the last registry refresh: collect it now
        rather than dropping its pushes until the next refresh."""
        if not isinstance(ev, RequestReceived) or self.collector.knows(ev.peer.device_id):
            return
        m = self.repo.meter_by_ap_title(ev.peer.device_id.decode("ascii", "replace"))
        if m is not None and m.state is MeterState.COMMISSIONED and self._owns(m):
            self._collect(m, now)
            self.counters["meters-admitted"] += 1

    def poll_commands(self, now: float) -> int:
        """Execute the pending commands (of this shard's meters) in the repository; how many
        were started."""
        started = 0
        for cmd in self.repo.commands(state=CommandState.PENDING, limit=1000):
            target = self.collector.target(cmd.meter_id)
            if target is None:
                meter = self.repo.get_meter(cmd.meter_id)
                if meter is None or not self._owns(meter):  # another shard's to execute
                    continue
                target = MeterTarget(
                    meter.meter_id, ApTitle.parse(meter.ap_title), self.addr_of(meter), meter.cell
                )
            self.commands.execute(cmd, target, now)
            started += 1
        self._next_commands = now + self.config.command_poll_s
        self._after(now)
        return started

    # -- engine surface --------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self._out.extend(self.client.datagrams_to_send(now))
        self.client.receive_datagram(data, addr, now)
        reply = self.client.datagrams_to_send(now)
        hold: Hashable | None = None
        while (ev := self.client.next_event()) is not None:
            # a meter's request (its push) is neither a command's nor an event-log fetch's
            # answer: those two see only responses and time-outs
            if not isinstance(ev, RequestReceived) and (
                self.commands.handle_event(ev, now) or self.eventlogs.handle_event(ev, now)
            ):
                continue
            self._admit(ev, now)
            tag = self.collector.handle_event(ev, now)
            if tag is not None:
                hold = tag
        if self.keys.missed and (misses := self.keys.take_misses()) and self.keys.source is None:
            device, key_byte = misses[0]
            parked = self._parked.setdefault(device, [])
            if sum(len(v) for v in self._parked.values()) < self.config.max_parked:
                parked.append((data, addr))
                self.counters["parked"] += 1
            self._events.append(KeyNeeded(device, key_byte))
        if hold is not None and reply:
            deadline = now + self.config.held_ack_ttl
            self._held[hold] = (deadline, reply)
            self._held_seq += 1
            heapq.heappush(self._held_expiry, (deadline, self._held_seq, hold))
            self.counters["acks-held"] += 1
        else:
            self._out.extend(reply)
        self._after(now)

    def retry_parked(self, device: bytes, now: float) -> int:
        """Feed again the datagrams that waited for `device`'s key."""
        parked = self._parked.pop(device, [])
        for data, addr in parked:
            self.receive_datagram(data, addr, now)
        return len(parked)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        self._out.extend(self.client.datagrams_to_send(now))
        out, self._out = self._out, []
        return out

    def next_event(self) -> HeadEndEvent | None:
        if self.collector.register_reads:
            return self.collector.register_reads.popleft()
        if (fetched := self.eventlogs.next_event()) is not None:
            return fetched
        return self._events.popleft() if self._events else None

    def fetch_event_logs(self, now: float) -> int:
        """Start fetching the event log of every collected meter whose address is known and
        whose event-log key is registered; returns how many fetches started."""
        started = 0
        meter_ids = self.collector.meter_ids()
        for i in range(0, len(meter_ids), _KEYED_PAGE):
            page = meter_ids[i : i + _KEYED_PAGE]
            keyed = self.repo.eventlog_keyed(page)
            for meter_id in page:
                target = self.collector.target(meter_id)
                if target is None or target.addr is None or meter_id not in keyed:
                    continue
                started += self.eventlogs.fetch(meter_id, target.addr, target.ap_title, now)
        if self.config.eventlog_every_s:
            self._next_eventlogs = now + self.config.eventlog_every_s
        return started

    def get_timer(self) -> float | None:
        # the earliest of these (asked after every datagram: no tuple, no list, no generator)
        best = self._next_commands
        if self._next_refresh < best:
            best = self._next_refresh
        if (t := self.client.get_timer()) is not None and t < best:
            best = t
        if (t := self.collector.get_timer()) is not None and t < best:
            best = t
        if (t := self.commands.get_timer()) is not None and t < best:
            best = t
        if (t := self._next_eventlogs) is not None and t < best:
            best = t
        heap = self._held_expiry
        while heap:
            deadline, _, tag = heap[0]
            held = self._held.get(tag)
            if held is not None and held[0] == deadline:
                return min(best, deadline)
            heapq.heappop(heap)  # released: stale
        return best

    def handle_timer(self, now: float) -> None:
        self.client.handle_timer(now)
        while (ev := self.client.next_event()) is not None:
            if not (self.commands.handle_event(ev, now) or self.eventlogs.handle_event(ev, now)):
                self.collector.handle_event(ev, now)
        self.collector.handle_timer(now)
        for cmd in self.commands.handle_timer(now):
            target = self.collector.target(cmd.meter_id)
            if target is not None:
                self.commands.execute(cmd, target, now)
        if now >= self._next_refresh:
            self.refresh_meters(now)
        if now >= self._next_commands:
            self.poll_commands(now)
        if self._next_eventlogs is not None and now >= self._next_eventlogs:
            self.fetch_event_logs(now)
        heap = self._held_expiry
        while heap and heap[0][0] <= now:
            deadline, _, tag = heapq.heappop(heap)
            held = self._held.get(tag)
            if held is not None and held[0] == deadline:
                del self._held[tag]
                self.counters["held-ack-expired"] += 1
        for miss in self.keys.take_misses():
            self._events.append(KeyNeeded(*miss))
        self._after(now)

    def flush(self, now: float) -> None:
        """Make everything submitted durable now and release its acks (shutdown, tests)."""
        self.collector.flush(now)
        self._after(now)

    def _after(self, now: float) -> None:
        if not self.collector.has_durable:  # the usual datagram: its push is not durable yet
            return
        for tag in self.collector.take_durable():
            held = self._held.pop(tag, None)
            if held is not None:
                self._out.extend(held[1])
                self.counters["acks-released"] += 1


__all__ = ["HeadEnd", "HeadEndConfig", "HeadEndEvent", "KeyNeeded"]
