"""The smart meter as a composition, sans-IO: metering model + C12.22 server + push schedule +
event stream (ARCHITECTURE.md, issue 4).

`MeterNode` has the engine shape (`receive_datagram`, `datagrams_to_send`, `get_timer`,
`handle_timer`, `next_event`), so `runtime.udp.EngineDriver` drives it over UDP and `sim/` over a
virtual network. What it composes:

* a `c1222.endpoint.C1222Server` serving `meter.tables.ModelTables`, with key lookup and send
  key from the meter's `keymgmt.KeyRing` -- the ring the PaC fills on each authentication
  (`runtime.meter.run_meter(keyring=...)`); the node is told of each installation through
  `key_events(events, now)`, which records a `KeyRotated` event;
* a push schedule ("pushed" collection mode): after each 15- or 30-minute boundary, at an offset
  drawn per boundary from a seeded hash (so a fleet spreads itself and a rerun is identical), the
  newest `intervals` values are written to the head-end's load-profile table. Each push carries a
  few intervals, so one lost push is repaired by the next;
* the event-log upload: given `event_log_source` (the `eventlog.EventLog`), its signed export is
  served as manufacturer table MT1 (`c1222.eventlog_table`), which the head-end reads in pieces
  and verifies on arrival (`headend.eventlog_intake`);
* the event stream: model events (power, cover, switch, clock), key rotations and C12.22
  authentication failures (rate-limited), appended to an `eventlog.EventLog` (any `EventSink`)
  when one is given, and reported by `next_event()` as they happen.

Until the ring holds a valid key the node sends nothing: every datagram is dropped unread
(`counters["no-key-yet"]`) and no push goes out (`counters["push-no-key"]`), so the only traffic
of a meter that has not authenticated is its PANA exchange (which is not this engine's).

Time: the engine clock `now` drives the C12.22 engine and the key ring; the model runs on
`TimeScale.model(now)` (accelerated by `factor`). Push offsets and event polling are in model time.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from amistack.addr import Addr
from amistack.c1222.acse import AcseMessage, ApTitle
from amistack.c1222.endpoint import C1222Server, EndpointConfig
from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.eventlog_table import EventLogSource, EventLogTables
from amistack.c1222.events import C1222Event, RequestTimedOut, ResponseReceived
from amistack.c1222.security import ring_key_lookup, ring_send_key
from amistack.c1222.tables import LP_INTERVALS, Identification
from amistack.crypto import RandomSource
from amistack.keymgmt.events import KeysInstalled
from amistack.keymgmt.keyring import AppKey, KeyRing
from amistack.keymgmt.ukmf import C1222
from amistack.meter.events import AuthFailure, KeyRotated, MeterEvent
from amistack.meter.model import MeterModel
from amistack.meter.tables import ModelTables, TimeScale

log = logging.getLogger(__name__)

# C12.22 refusals that are a peer failing to authenticate (endpoint.py counters)
AUTH_REFUSALS = ("auth-failed", "no-key", "missing-auth", "cleartext-refused", "replayed", "stale")
POLL_LAG_S = 0.001  # model seconds (see _poll)
QUIET_HORIZON_S = 86400.0  # model seconds the node looks ahead for the model's next event
QUIET_POLLS = 8  # at most this many event polls that would find nothing are skipped at once
_TABLE_FOR_MINUTES = {m: t for t, m in LP_INTERVALS.items()}


@dataclass(frozen=True)
class PushConfig:
    """Unsolicited interval data to the head-end after each interval boundary."""

    enabled: bool = False
    interval_minutes: int = 15  # 15 -> ST64, 30 -> ST65
    intervals: int = 4  # newest intervals per push (the older ones repair lost pushes)
    min_offset_s: float = 5.0  # model seconds after the boundary
    max_offset_s: float = 300.0
    seed: bytes = b""  # offsets: blake2b(seed | boundary); default the meter's AP title

    def __post_init__(self) -> None:
        if self.interval_minutes not in _TABLE_FOR_MINUTES:
            raise ValueError("push interval must be 15 or 30 minutes")
        if not 0 <= self.min_offset_s <= self.max_offset_s < self.interval_minutes * 60:
            raise ValueError("need 0 <= min_offset_s <= max_offset_s < the interval")
        if not 1 <= self.intervals <= 96:
            raise ValueError("intervals per push must be 1..96")


@dataclass(frozen=True)
class MeterNodeConfig:
    ap_title: ApTitle
    headend_title: ApTitle
    headend_addr: Addr | None = None  # where pushes go (None: no pushes)
    push: PushConfig = field(default_factory=PushConfig)
    time: TimeScale = field(default_factory=TimeScale)
    endpoint: EndpointConfig | None = None  # default: EndpointConfig(ap_title)
    event_poll_s: float = 60.0  # model seconds between polls of the model's events
    auth_failure_events: int = 10  # at most this many AuthFailure events ...
    auth_failure_window_s: float = 60.0  # ... per this many engine seconds (a flood is counted)


@dataclass(frozen=True)
class PushSent:
    boundary: float  # model time of the interval boundary pushed
    request_id: int
    intervals: int


@dataclass(frozen=True)
class PushAcked:
    boundary: float
    request_id: int


@dataclass(frozen=True)
class PushLost:
    """No acknowledgement after every retry (the next push carries these intervals again)."""

    boundary: float
    request_id: int


class EventSink(Protocol):
    """Where events are appended: `eventlog.EventLog` (the event log depends on the meter in
    the package order of ARCHITECTURE.md, so the meter names only this shape)."""

    def append(self, type: int, data: bytes, now: float) -> object: ...


NodeEvent = C1222Event | MeterEvent | PushSent | PushAcked | PushLost


def ap_title_for(device_id: str | bytes) -> ApTitle:
    """A meter's default C12.22 ApTitle, relative to the C12.22 root: `.0.<n>` with n from a
    hash of its device id (stable, so a head-end can compute it too; give titles explicitly
    where a registry assigns them)."""
    raw = device_id.encode() if isinstance(device_id, str) else device_id
    n = int.from_bytes(hashlib.blake2b(raw, digest_size=4, person=b"amistack-title").digest())
    return ApTitle((0, n), relative=True)


def push_offset(seed: bytes, boundary_index: int, lo: float, hi: float) -> float:
    """The seeded offset (model seconds) of the push after boundary `boundary_index`."""
    h = hashlib.blake2b(seed + boundary_index.to_bytes(8, "big", signed=True), digest_size=8)
    u = int.from_bytes(h.digest(), "big") / 2.0**64
    return lo + (hi - lo) * u


class MeterNode:
    """The meter (see the module docstring). `ring` is the meter's own key ring."""

    def __init__(
        self,
        config: MeterNodeConfig,
        model: MeterModel,
        ring: KeyRing,
        rng: RandomSource,
        *,
        identification: Identification | None = None,
        event_log: EventSink | None = None,
        event_log_source: EventLogSource | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.ring = ring
        self.event_log = event_log
        self.tables = ModelTables(model, identification, time=config.time)
        endpoint = config.endpoint or EndpointConfig(config.ap_title)
        self.server = C1222Server(
            endpoint,
            self.tables,
            ring_key_lookup(ring),
            ring_send_key(ring),
            rng,
        )
        if event_log_source is not None:
            # the signed event-log export as manufacturer table MT1 (c1222/eventlog_table.py),
            # read in pieces by the head-end (headend.eventlog_intake.EventLogReader)
            self.server.tables = EventLogTables(
                self.tables, event_log_source, endpoint.ed_class or b"AMST"
            )
        self.counters: Counter[str] = Counter()
        # lists, not deques: an empty deque takes 760 bytes and a fleet holds 100,000 meters
        self._events: list[NodeEvent] = []
        push = config.push
        self._push_on = push.enabled and config.headend_addr is not None
        self._push_seed = push.seed or config.ap_title.device_id
        self._push_step = push.interval_minutes * 60
        self._next_boundary: int | None = None  # index of the next boundary to push after
        # (boundary index, model time, engine time) of the last push time computed: the
        # driver asks get_timer after every datagram, and each push time costs a blake2b
        self._push_at: tuple[int, float, float] | None = None
        self._pushes: dict[int, float] = {}  # request id -> boundary
        self._next_poll: float | None = None  # engine time of the next model-event poll
        self._quiet = -math.inf  # model time up to which the model can have no event (_poll)
        self._auth_window: list[float] = []
        self._valid_key: AppKey | None = None  # see has_key

    # -- keys -------------------------------------------------------------------------------

    def has_key(self, now: float) -> bool:
        """Whether the ring holds any valid C12.22 key (current or within the overlap)."""
        # The key that answered last answers again while valid, without asking the ring (this
        # runs before every datagram): a key leaves the ring only wiped (KeyRing.expire), and
        # a wiped key is valid at no time.
        key = self._valid_key
        if key is not None and key.valid_at(now):
            return True
        key = self.ring.current(C1222, now)  # the usual answer, without a walk
        if key is None:  # perhaps one within the overlap
            ours = (k for k in self.ring.keys() if k.purpose.name == C1222.name)  # noqa: SIM118
            key = next((k for k in ours if k.valid_at(now)), None)
        self._valid_key = key
        return key is not None

    def key_events(self, events: Iterable[object], now: float) -> None:
        """What the key ring did on an authentication (`KeyRing.install`): a rotation event
        per new generation."""
        t = self.tables.model_time(now)
        for ev in events:
            if isinstance(ev, KeysInstalled):
                self._emit(KeyRotated(t, ev.key_id.generation))

    # -- sans-IO surface --------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if not self.has_key(now):
            self.counters["no-key-yet"] += 1
            return
        self.server.receive_datagram(data, addr, now)
        if (reason := self.server.last_refusal) is not None and reason in AUTH_REFUSALS:
            self._auth_failure(data, reason, now)
        self._drain_server()
        self._poll(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return self.server.datagrams_to_send(now)

    def next_event(self) -> NodeEvent | None:
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        best = self._next_poll  # the earliest of these (after every datagram: no list built)
        push = self._push_due() if self._push_on else None
        for t in (self.server.get_timer(), self.ring.get_timer(), push):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timer(self, now: float) -> None:
        if (at := self.ring.get_timer()) is not None and at <= now:
            self.ring.expire(now)
        self.server.handle_timer(now)
        if self._push_on:
            due = self._push_due()
            if due is not None and due <= now:
                self._push(now)
        self._drain_server()
        self._poll(now)

    def start(self, now: float) -> None:
        """Arm the push schedule and the event poll from `now` (called by the first timer
        otherwise; a driver calls it once before `kick`)."""
        if self._next_boundary is None:
            t = self.tables.model_time(now)
            self._next_boundary = math.ceil(t / self._push_step)
        self._poll(now)

    # -- push schedule ----------------------------------------------------------------------

    def next_push_time(self) -> float | None:
        """Engine time of the next push (None: pushing is off or not started)."""
        return self._push_due() if self._push_on else None

    def _push_at_model(self, k: int) -> float:
        return self._push_times(k)[1]

    def _push_times(self, k: int) -> tuple[int, float, float]:
        """(k, model time, engine time) of the push after boundary k (the last one kept)."""
        known = self._push_at
        if known is not None and known[0] == k:
            return known
        p = self.config.push
        at = k * self._push_step + push_offset(self._push_seed, k, p.min_offset_s, p.max_offset_s)
        self._push_at = known = (k, at, self.config.time.engine(at))
        return known

    def _push_due(self) -> float | None:
        if self._next_boundary is None:
            return None
        return self._push_times(self._next_boundary)[2]

    def _push(self, now: float) -> None:
        t = self.tables.model_time(now)
        k = self._next_boundary
        assert k is not None  # _push_due said so
        # after a long pause (a suspended simulator) push only the newest boundary due
        while self._push_at_model(k + 1) <= t:
            self.counters["push-skipped"] += 1
            k += 1
        self._next_boundary = k + 1
        addr = self.config.headend_addr
        if addr is None:
            return
        if self.ring.current(C1222, now) is None:
            self.counters["push-no-key"] += 1
            return
        p = self.config.push
        boundary = float(k * self._push_step)
        lp = self.tables.profile(
            p.interval_minutes, boundary - p.intervals * self._push_step, boundary, t
        )
        if not lp.intervals:
            self.counters["push-empty"] += 1
            return
        table = _TABLE_FOR_MINUTES[p.interval_minutes]
        try:
            rid = self.server.push(addr, self.config.headend_title, table, lp.encode(), now)
        except ValueError as exc:  # no key (just expired) or too many outstanding
            self.counters["push-failed"] += 1
            log.warning("push not sent: %s", exc)
            return
        self._pushes[rid] = boundary
        self.counters["pushes-sent"] += 1
        self._events.append(PushSent(boundary, rid, len(lp.intervals)))

    # -- events -----------------------------------------------------------------------------

    def _drain_server(self) -> None:
        while (ev := self.server.next_event()) is not None:
            if isinstance(ev, ResponseReceived | RequestTimedOut):
                boundary = self._pushes.pop(ev.request_id, None)
                if boundary is not None:
                    if isinstance(ev, ResponseReceived) and ev.ok:
                        self.counters["pushes-acked"] += 1
                        self._events.append(PushAcked(boundary, ev.request_id))
                    else:
                        self.counters["pushes-lost"] += 1
                        self._events.append(PushLost(boundary, ev.request_id))
            self._events.append(ev)

    def _auth_failure(self, data: bytes, reason: str, now: float) -> None:
        self.counters["auth-failures"] += 1
        win = self._auth_window
        while win and win[0] <= now - self.config.auth_failure_window_s:
            win.pop(0)
        if len(win) >= self.config.auth_failure_events:
            self.counters["auth-failures-not-logged"] += 1
            return
        win.append(now)
        peer = b""
        try:
            title = AcseMessage.decode(data).calling_ap_title
            peer = b"" if title is None else title.device_id
        except C1222DecodeError:
            pass  # a segment, or garbage: the peer stays unknown
        self._emit(AuthFailure(self.tables.model_time(now), peer, "c1222 " + reason))

    def _poll(self, now: float) -> None:
        """Hand the model's events up to now to the event log and the event queue."""
        # Poll up to just before now: MeterModel.poll_events takes switch events in (polled, now],
        # so a command at exactly a time already polled would never be reported.
        scale = self.config.time
        t = scale.model(now) - POLL_LAG_S
        # The polls that would find nothing are skipped: before `_quiet` the model has no
        # event (see MeterModel.quiet_until), and the next timer is the first poll of the
        # every-event_poll_s sequence that can find one (or the QUIET_POLLS-th), so events
        # are reported at the same times, with fewer wake-ups and model polls.
        if t >= self._quiet or not self._model_idle():
            while (ev := self.model.next_event(t)) is not None:
                self._emit(ev)
            self._quiet = self.model.quiet_until(t, QUIET_HORIZON_S)
        step = self.config.event_poll_s
        quiet = self._quiet
        # TimeScale.model and .engine spelt out (the same arithmetic, so the same times): this
        # runs after every datagram, and the calls cost more than the sums
        o_now, o_model, factor = scale.origin_now, scale.origin_model, scale.factor
        nxt = o_now + (t + step - o_model) / factor
        for _ in range(QUIET_POLLS - 1):
            # what the poll at nxt polls up to
            polled_to = o_model + (nxt - o_now) * factor - POLL_LAG_S
            if polled_to >= quiet:
                break
            nxt = o_now + (polled_to + step - o_model) / factor
        self._next_poll = nxt

    def _model_idle(self) -> bool:
        """Whether the model's switch and event queue keep `_quiet` valid (see `_poll`)."""
        return self.model.switch.idle and not len(self.model.events)

    def _emit(self, ev: MeterEvent) -> None:
        """Into the event log and the event queue (the node's own events -- key rotations,
        auth failures -- go straight here: they happen now, not in the model's past)."""
        self._events.append(ev)
        self.counters["events"] += 1
        if self.event_log is None:
            return
        try:
            # the log keeps the meter's clock (true time + what time syncs changed)
            self.event_log.append(ev.event_type, ev.data(), ev.time + self.tables.clock_offset)
        except Exception:  # LogStoreError (a full disk...) must not stop the meter measuring
            self.counters["event-log-errors"] += 1
            log.exception("event log append failed")


__all__ = [
    "AUTH_REFUSALS",
    "EventSink",
    "MeterNode",
    "MeterNodeConfig",
    "NodeEvent",
    "PushAcked",
    "PushConfig",
    "PushLost",
    "PushSent",
    "ap_title_for",
    "push_offset",
]
