"""The ECHONET Lite controller (HEMS) engine (sans-IO), per the System Design Guidelines,
chapters 2 and 6.

`EchonetController` finds nodes, learns their objects and property maps, and runs the request
services Get (0x62), SetC (0x61), SetI (0x60), SetGet (0x6E) and INF_REQ (0x63) against them,
with the engine shape of STYLE.md (`receive_datagram(data, addr, now, multicast=False)`,
`datagrams_to_send(now)`, `get_timer()`, `handle_timer(now)`, `next_event()`). Commands return a
handle; the answer is a `RequestCompleted` (or `RequestFailed`) event with that handle.

Behaviour, by guideline section:

- Discovery: `start(now)` multicasts a Get of D6 (self-node instance list S) to the node profile
  0x0EF001 and repeats it every `rediscover_interval`; answers are collected for
  `discovery_window` s (nodes answer multicast requests after a random delay, §2.4). A unicast
  `probe(addr, now)` does the same for one address (the B route has no multicast). An INF from a
  node we do not know -- its startup instance list notification D5 (§4.2), or any announcement --
  makes the controller learn (D5) or probe (anything else) that node. For every object of a node
  the property maps 9D/9E/9F are read (both encodings: `echonet.propmap`).
- §6.6 (no dependence on the partner's startup INF): nothing waits for a D5 announcement unless
  `inf_wait` > 0 asks to; even then, when none arrives within `inf_wait`, the controller asks with
  a Get of D6, and when that gets no usable answer, with a unicast INF_REQ of D5. A multicast
  discovery nobody answered is asked once more (a Get of D6 again: §2.4.1 and §4.3 advise
  against a multicast INF_REQ, which every node would answer by multicast). Slow partners are
  tolerated: a request is retried (same TID) after `request_timeout`, up to `retries` times, and
  an answer to any attempt -- even one arriving `late_grace` s after the last attempt timed out
  -- completes it; the answers to the other attempts are counted as duplicates, never completed
  twice.
- TID matching: a response completes a request only if its TID, its source host and its SEOJ
  (the DEOJ asked, or any instance of that class for instance code 0) match and its ESV answers
  the request's service. The source *port* is not checked: answers should come from 3610, but
  not every device sends them from there. Unmatched responses are counted and dropped.
- Per-device pacing (§2.7 from the controller's side): at most `max_outstanding_per_device`
  requests in flight per device and at least `min_interval_per_device` s between two sends to
  it; the rest waits in a per-device queue (bounded by `max_queued_per_device`).
- §2.3 (OPC): when a response carries fewer properties than asked, the controller asks for the
  missing ones, and from then on splits every request to that device into that many properties
  each. When a device answers a multi-property request with a not-possible response in which no
  property succeeded, the properties are asked one by one; if any of those succeed, the device
  is limited to one property per request. The limit is remembered per device (`opc_limit`).
  SetGet requests are never split.
- Not-possible responses are partial results: `RequestCompleted.unavailable` lists the EPCs read
  with PDC=0, `.refused` the writes the device echoed back.
- Answers to the controller go to its port 3610; requests are accepted from any source port.
  Requests aimed at the controller itself (e.g. a Get of its node profile's D6 or 0x80) are
  answered by an `EchonetNode` the controller hosts (node profile + controller object 0x05FF01),
  which also multicasts the controller's startup instance list (§4.2).
- Malformed datagrams (`EchonetDecodeError`) are counted in `counters["malformed"]` and dropped.
"""

from __future__ import annotations

import heapq
import ipaddress
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from amistack.addr import Addr
from amistack.crypto.rand import RandomSource
from amistack.echonet.errors import EchonetDecodeError
from amistack.echonet.events import (
    GOOD_RESPONSES,
    EchonetEvent,
    NodeDiscovered,
    NotificationReceived,
    ProbeFailed,
    PropertyMaps,
    PropertyMapsRetrieved,
    RequestCompleted,
    RequestFailed,
)
from amistack.echonet.frame import EHD1, EHD2_FORMAT1, EHD2_FORMAT2, Eoj, Esv, Frame, Property
from amistack.echonet.node import (
    EL_PORT,
    MULTICAST_V4,
    NODE_PROFILE,
    EchonetNode,
    NodeConfig,
)
from amistack.echonet.objects.base import (
    NO_FAULT,
    OPERATION_ON,
    DeviceObject,
    identification_number,
    super_specs,
)
from amistack.echonet.objects.node_profile import NodeProfile
from amistack.echonet.propmap import decode_propmap

log = logging.getLogger(__name__)

__all__ = [
    "CONTROLLER_EOJ",
    "ControllerConfig",
    "EchonetController",
    "KnownNode",
    "PropertyMaps",
    "decode_instance_list",
]

CONTROLLER_EOJ = Eoj(0x05, 0xFF, 0x01)  # controller class 0x05FF (APPENDIX, management group)
NODE_PROFILE_CLASS = 0x0EF0
EPC_INSTANCE_LIST_INF = 0xD5  # spec part 2, §6.11.1
EPC_INSTANCE_LIST = 0xD6
MAP_EPCS = (0x9D, 0x9E, 0x9F)

_SNA_OF = {
    Esv.SETI: Esv.SETI_SNA,
    Esv.SETC: Esv.SETC_SNA,
    Esv.GET: Esv.GET_SNA,
    Esv.INF_REQ: Esv.INF_SNA,
    Esv.SETGET: Esv.SETGET_SNA,
}
_GOOD_OF = {
    Esv.SETI: Esv.SETI,  # no answer when it worked (see events.GOOD_RESPONSES)
    Esv.SETC: Esv.SET_RES,
    Esv.GET: Esv.GET_RES,
    Esv.INF_REQ: Esv.INF,
    Esv.SETGET: Esv.SETGET_RES,
}
# Which response ESVs answer which request ESV (spec part 2, §3.2.5).
_ANSWERS: dict[int, frozenset[int]] = {
    Esv.GET: frozenset({Esv.GET_RES, Esv.GET_SNA}),
    Esv.SETC: frozenset({Esv.SET_RES, Esv.SETC_SNA}),
    Esv.SETI: frozenset({Esv.SETI_SNA}),
    Esv.INF_REQ: frozenset({Esv.INF, Esv.INF_SNA}),
    Esv.SETGET: frozenset({Esv.SETGET_RES, Esv.SETGET_SNA}),
}
_READS = frozenset({Esv.GET, Esv.INF_REQ})
_RESPONSES = frozenset().union(*_ANSWERS.values()) - {Esv.INF}
_REQUESTS_TO_US = frozenset(
    {Esv.SETI, Esv.SETC, Esv.GET, Esv.INF_REQ, Esv.SETGET, Esv.INFC}
)  # handled by the hosted node

_FORMAT1 = bytes((EHD1, EHD2_FORMAT1))  # the head of a format-1 frame (spec part 2, §3.2.1)
_GET_CACHE = 256  # Get requests whose encoded form is kept
_MAX_PROBES = 64  # unicast probes in flight at once
_RECENT_MULTICAST = 32  # own multicasts remembered, to drop them when the group loops them back
_DONE_MEMORY = 4096  # TIDs of finished requests remembered, to tell duplicates from strangers

# Timer kinds in the heap.
_T_PART = 0
_T_PACE = 1
_T_REDISCOVER = 2
_T_WINDOW = 3
_T_INF_WAIT = 4

# Internal purposes of a request (None: the application's).
_P_MAPS = "maps"


@dataclass(frozen=True)
class ControllerConfig:
    """Tunables of the controller; the defaults suit a home LAN and a slow B-route meter."""

    port: int = EL_PORT  # ours (answers come here) and the devices' (requests go there)
    multicast_groups: tuple[Addr, ...] = (MULTICAST_V4,)  # discovery goes to these
    request_timeout: float = 5.0  # s per attempt
    retries: int = 2  # resends (same TID) after the first attempt
    late_grace: float = 5.0  # s an answer is still awaited after the last attempt timed out
    max_outstanding_per_device: int = 1
    min_interval_per_device: float = 0.0  # s between two sends to one device
    max_queued_per_device: int = 1024
    max_opc: int = 0  # properties per request before any device told us less; 0 = no limit
    discovery_window: float = 5.0  # s multicast discovery answers are collected
    rediscover_interval: float | None = 3600.0  # s; None: only at start
    inf_wait: float = 0.0  # §6.6: s to wait for a probed node's D5 before asking (0: ask at once)
    seti_wait: float = 1.0  # s a SetI waits for a not-possible answer before it counts as done
    fetch_property_maps: bool = True
    manufacturer: bytes = b"\xff\xff\xff"
    unique_id: bytes = b""

    def __post_init__(self) -> None:
        if self.request_timeout <= 0 or self.retries < 0 or self.late_grace < 0:
            raise ValueError("request_timeout must be > 0, retries and late_grace >= 0")
        if self.max_outstanding_per_device < 1 or self.max_queued_per_device < 0:
            raise ValueError("max_outstanding_per_device must be >= 1")
        if not 0 <= self.max_opc <= 0xFF:
            raise ValueError("max_opc must be 0..255")


@dataclass(slots=True)
class KnownNode:
    """A node the controller found: its device objects and, per object, its property maps."""

    addr: Addr
    instances: tuple[Eoj, ...]
    maps: dict[Eoj, PropertyMaps] = field(default_factory=dict)
    discovered_at: float = 0.0
    last_seen: float = 0.0

    def find(self, class_code: int) -> Eoj | None:
        """The first object of class `class_code` (e.g. 0x0288, the smart meter), or None."""
        return next((e for e in self.instances if e.class_code == class_code), None)


def decode_instance_list(edt: bytes) -> tuple[Eoj, ...]:
    """EOJs of a D5/D6 EDT (count, then at most 84 EOJs: guideline §2.5). The count may exceed
    the EOJs listed (a node with more than 84 objects), never the other way round."""
    if not edt:
        raise EchonetDecodeError(0, "empty instance list")
    n = edt[0]
    body = edt[1:]
    if len(body) % 3:
        raise EchonetDecodeError(1, f"instance list of {len(body)} bytes is not whole EOJs")
    listed = len(body) // 3
    if listed > n:
        raise EchonetDecodeError(0, f"count {n} is below the {listed} EOJs listed")
    return tuple(Eoj(body[i], body[i + 1], body[i + 2]) for i in range(0, len(body), 3))


class _ControllerObject(DeviceObject):
    """The controller's own device object 0x05FF01: the super-class properties only."""

    def __init__(self, eoj: Eoj, manufacturer: bytes, unique_id: bytes) -> None:
        super().__init__(eoj, super_specs(), manufacturer=manufacturer)
        self._values.update(
            {
                0x80: bytes((OPERATION_ON,)),
                0x81: b"\x00",
                0x82: b"\x00\x00R\x00",  # APPENDIX release R
                0x83: identification_number(manufacturer, unique_id),
                0x88: bytes((NO_FAULT,)),
                0x8A: manufacturer,
                0x8D: b"\x00" * 12,
            }
        )


class _Device:
    """Pacing and OPC state of one device (by host)."""

    __slots__ = ("last_sent", "opc_limit", "outstanding", "queue", "wake")

    def __init__(self) -> None:
        self.outstanding = 0
        self.queue: deque[_Part] = deque()
        self.last_sent = float("-inf")
        self.opc_limit = 0  # 0: none known (§2.3)
        self.wake: float | None = None


_Callback = Callable[["_Op", bool, str, float], None]
"""(op, ok, failure reason or "", now): how discovery learns the outcome of its requests."""


class _Op:
    """One request of the application (or of discovery), maybe split into several parts."""

    __slots__ = (
        "deoj",
        "dest",
        "device",
        "done",
        "esv",
        "good",
        "handle",
        "on_done",
        "order",
        "order_get",
        "parts",
        "results",
        "results_get",
        "started",
    )

    def __init__(
        self,
        handle: int,
        dest: Addr,
        deoj: Eoj,
        esv: int,
        order: tuple[int, ...],
        order_get: tuple[int, ...],
        device: _Device,
        started: float,
        on_done: _Callback | None,
    ) -> None:
        self.handle = handle
        self.dest = dest
        self.deoj = deoj
        self.esv = esv
        self.order = order
        self.order_get = order_get
        self.device = device
        self.started = started
        self.on_done = on_done
        self.parts = 0  # parts not finished yet
        self.results: dict[int, Property] = {}
        self.results_get: dict[int, Property] = {}
        self.good = True
        self.done = False


_QUEUED = 0
_SENT = 1
_DONE = 2


class _Part:
    """One frame on the wire (one TID): the whole request, or a §2.3 slice of it."""

    __slots__ = ("attempts", "data", "op", "probe", "props", "props_get", "state", "tid")

    def __init__(
        self,
        op: _Op,
        tid: int,
        data: bytes,
        props: tuple[Property, ...],
        props_get: tuple[Property, ...],
        probe: bool,
    ) -> None:
        self.op = op
        self.tid = tid
        self.data = data
        self.props = props
        self.props_get = props_get
        self.probe = probe  # one of the single-EPC requests of a §2.3 SNA probe
        self.attempts = 0
        self.state = _QUEUED


@dataclass(slots=True)
class _Multicast:
    """A multicast discovery request whose answers are being collected."""

    group: Addr
    until: float
    retry: bool = False  # the second (last) Get of D6 to this group
    answered: int = 0


def _same_host(a: str, b: str) -> bool:
    """Whether two host strings name one address ("::1" and "0::1"; a zone suffix is kept)."""
    if a == b:
        return True
    try:
        ha, _, za = a.partition("%")
        hb, _, zb = b.partition("%")
        return ipaddress.ip_address(ha) == ipaddress.ip_address(hb) and (
            not za or not zb or za == zb
        )
    except ValueError:
        return False


class EchonetController:
    """An ECHONET Lite controller node (see the module docstring)."""

    def __init__(
        self, config: ControllerConfig, rng: RandomSource, seoj: Eoj = CONTROLLER_EOJ
    ) -> None:
        cfg = config
        self.config = cfg
        self.seoj = seoj
        self._rng = rng
        self.own_object = _ControllerObject(seoj, cfg.manufacturer, cfg.unique_id)
        self.node = EchonetNode(
            NodeProfile([], manufacturer=cfg.manufacturer, unique_id=cfg.unique_id),
            [self.own_object],
            rng,
            NodeConfig(port=cfg.port, multicast_groups=cfg.multicast_groups),
        )
        self._nodes: dict[Addr, KnownNode] = {}
        self._devices: dict[str, _Device] = {}
        self._parts: dict[int, _Part] = {}
        self._done: OrderedDict[int, None] = OrderedDict()
        self._multicast: dict[int, _Multicast] = {}
        self._probing: set[str] = set()  # hosts with a D6/D5 probe in flight
        self._probed: dict[str, Addr] = {}  # addresses given to probe(): re-probed on rediscovery
        self._awaiting_inf: dict[str, float] = {}  # §6.6: host -> when to stop waiting for D5
        self._fetching: set[tuple[Addr, Eoj]] = set()
        self._timers: list[tuple[float, int, int, object, int]] = []
        self._seq = 0
        self._handle = 0
        self._tid = int.from_bytes(rng(2), "big")
        self._outbox: list[tuple[bytes, Addr]] = []
        self._get_cache: dict[tuple[Eoj, tuple[int, ...]], tuple[tuple[Property, ...], bytes]] = {}
        self._recent_multicast: deque[bytes] = deque(maxlen=_RECENT_MULTICAST)
        self._groups = frozenset(cfg.multicast_groups)
        self._events: deque[EchonetEvent] = deque()
        self._rediscover_at: float | None = None
        self.counters: Counter[str] = Counter()

    # -- public API ----------------------------------------------------------------------------

    @property
    def nodes(self) -> Mapping[Addr, KnownNode]:
        """The nodes found so far, by address (host, 3610)."""
        return self._nodes

    def opc_limit(self, host: str) -> int:
        """Properties per request the device at `host` is limited to (§2.3); 0 = none known."""
        dev = self._devices.get(host)
        return 0 if dev is None else dev.opc_limit

    def start(self, now: float) -> None:
        """Announce our own instance list (§4.2), discover (multicast), and rediscover every
        `rediscover_interval`."""
        self.node.start(now)
        self.discover(now)

    def discover(self, now: float) -> None:
        """Multicast a Get of D6 to the node profile of every node, and re-probe every address
        given to `probe`."""
        for group in self.config.multicast_groups:
            self._send_multicast(group, now)
        for addr in list(self._probed.values()):
            self._probe_now(addr, now)
        if self.config.rediscover_interval:
            self._rediscover_at = now + self.config.rediscover_interval
            self._push(self._rediscover_at, _T_REDISCOVER, None, 0)

    def probe(self, addr: Addr, now: float) -> None:
        """Find the node at `addr` by unicast (the B route's meter): a Get of D6, falling back to
        INF_REQ of D5 (§6.6); with `inf_wait` > 0, first wait that long for its D5 INF."""
        self._probed[addr[0]] = addr
        if self.config.inf_wait > 0 and (addr[0], self.config.port) not in self._nodes:
            due = now + self.config.inf_wait
            self._awaiting_inf[addr[0]] = due
            self._push(due, _T_INF_WAIT, addr, 0)
            return
        self._probe_now(addr, now)

    def get(self, dest: Addr, deoj: Eoj, epcs: Sequence[int], now: float) -> int:
        """Get (0x62) `epcs` of object `deoj` at `dest`; returns the request's handle."""
        # A controller polls the same few reads over and over: their properties and the frame
        # after the TID are built once (and validated then) and reused.
        key = (deoj, tuple(epcs))
        hit = self._get_cache.get(key)
        if hit is None:
            props = tuple(Property(e) for e in epcs)
            if not props:
                raise ValueError("a request needs at least one property")
            body = Frame(0, self.seoj, deoj, Esv.GET, props).encode()[4:]
            if len(self._get_cache) >= _GET_CACHE:
                self._get_cache.clear()
            hit = self._get_cache[key] = (props, body)
        return self._submit(dest, deoj, Esv.GET, hit[0], (), now, None, hit[1])

    def set(
        self,
        dest: Addr,
        deoj: Eoj,
        props: Sequence[tuple[int, bytes]],
        now: float,
        ack: bool = True,
    ) -> int:
        """SetC (0x61; `ack=False`: SetI 0x60) of `props` (EPC, EDT) at `deoj` of `dest`."""
        ps = tuple(Property(e, bytes(v)) for e, v in props)
        return self._submit(dest, deoj, Esv.SETC if ack else Esv.SETI, ps, (), now, None)

    def setget(
        self,
        dest: Addr,
        deoj: Eoj,
        set_props: Sequence[tuple[int, bytes]],
        get_epcs: Sequence[int],
        now: float,
    ) -> int:
        """SetGet (0x6E): write `set_props`, then read `get_epcs` (the device does it in that
        order, guideline §2.6). Never split (§2.3 applies to single-service requests)."""
        ps = tuple(Property(e, bytes(v)) for e, v in set_props)
        pg = tuple(Property(e) for e in get_epcs)
        return self._submit(dest, deoj, Esv.SETGET, ps, pg, now, None)

    def inf_req(self, dest: Addr, deoj: Eoj, epcs: Sequence[int], now: float) -> int:
        """INF_REQ (0x63): ask `deoj` to notify `epcs`; answered by INF (0x73) to us."""
        props = tuple(Property(e) for e in epcs)
        return self._submit(dest, deoj, Esv.INF_REQ, props, (), now, None)

    # -- engine shape --------------------------------------------------------------------------

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        self.counters["rx"] += 1
        if multicast and data in self._recent_multicast:
            self.counters["own_multicast"] += 1  # looped back by the group
            return
        if len(data) >= 2 and data[0] == EHD1 and data[1] == EHD2_FORMAT2:
            self.node.receive_datagram(data, addr, now, multicast)  # passed through as an event
            return
        try:
            frame = Frame.decode(data)
        except EchonetDecodeError as exc:
            self.counters["malformed"] += 1
            log.debug("dropped a malformed frame from %s: %s", addr, exc)
            return
        esv = frame.esv
        part = self._parts.get(frame.tid)
        if part is not None and self._matches(part, frame, addr):
            self._on_response(part, frame, now)
            return
        if esv in _RESPONSES or esv == Esv.INF:
            mc = self._multicast.get(frame.tid)
            if mc is not None and frame.seoj.class_code == NODE_PROFILE_CLASS:
                self._on_multicast_answer(mc, frame, addr, now)
                return
            if esv == Esv.INF:
                self._on_inf(frame, addr, now)
                return
            if frame.tid in self._done:
                self.counters["duplicate_response"] += 1
            else:
                self.counters["unmatched_response"] += 1
            return
        if esv in _REQUESTS_TO_US:
            self.node.receive_datagram(data, addr, now, multicast)
            return
        self.counters["unknown_esv"] += 1

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out = self._outbox
        self._outbox = []
        extra = self.node.datagrams_to_send(now)
        if extra:
            for data, dest in extra:
                if dest in self._groups:
                    self._recent_multicast.append(data)
            out.extend(extra)
        return out

    def get_timer(self) -> float | None:
        timers = self._timers
        while timers and not self._live(timers[0]):
            heapq.heappop(timers)
        at = timers[0][0] if timers else None
        node_at = self.node.get_timer()
        if node_at is not None and (at is None or node_at < at):
            at = node_at
        return at

    def handle_timer(self, now: float) -> None:
        node_at = self.node.get_timer()
        if node_at is not None and node_at <= now:
            self.node.handle_timer(now)
        timers = self._timers
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            if not self._live(entry):
                continue
            _, _, kind, obj, _ = entry
            if kind == _T_PART:
                self._on_part_timeout(cast(_Part, obj), now)
            elif kind == _T_PACE:
                dev = cast(_Device, obj)
                dev.wake = None
                self._pump(dev, now)
            elif kind == _T_REDISCOVER:
                self.discover(now)
            elif kind == _T_WINDOW:
                self._on_window_end(cast(int, obj), now)
            elif kind == _T_INF_WAIT:
                addr = cast(Addr, obj)
                if self._awaiting_inf.pop(addr[0], None) is not None:
                    self.counters["inf_wait_expired"] += 1  # §6.6: no D5 came; ask instead
                    self._probe_now(addr, now)

    def next_event(self) -> EchonetEvent | None:
        if self._events:
            return self._events.popleft()
        return self.node.next_event()

    # -- timers --------------------------------------------------------------------------------

    def _push(self, due: float, kind: int, obj: object, gen: int) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (due, self._seq, kind, obj, gen))

    def _live(self, entry: tuple[float, int, int, object, int]) -> bool:
        due, _, kind, obj, gen = entry
        if kind == _T_PART:
            return isinstance(obj, _Part) and obj.state != _DONE and obj.attempts == gen
        if kind == _T_PACE:
            return isinstance(obj, _Device) and obj.wake == due
        if kind == _T_REDISCOVER:
            return self._rediscover_at == due
        if kind == _T_WINDOW:
            return obj in self._multicast
        if kind == _T_INF_WAIT:
            return isinstance(obj, tuple) and self._awaiting_inf.get(obj[0]) == due
        return False

    # -- requests ------------------------------------------------------------------------------

    def _free_tid(self, after: int) -> int:
        """The first TID after `after` that no request in flight uses."""
        tid = (after + 1) & 0xFFFF
        while tid in self._parts or tid in self._multicast:
            tid = (tid + 1) & 0xFFFF
        return tid

    def _next_tid(self) -> int:
        tid = self._tid = self._free_tid(self._tid)
        self._done.pop(tid, None)
        return tid

    def _device(self, host: str) -> _Device:
        dev = self._devices.get(host)
        if dev is None:
            dev = self._devices[host] = _Device()
        return dev

    def _submit(
        self,
        dest: Addr,
        deoj: Eoj,
        esv: int,
        props: tuple[Property, ...],
        props_get: tuple[Property, ...],
        now: float,
        on_done: _Callback | None,
        body: bytes = b"",
    ) -> int:
        """Start a request; `body` is its encoded frame after the TID when the caller has it."""
        if not props or (esv == Esv.SETGET and not props_get):
            raise ValueError("a request needs at least one property (and one of each for SetGet)")
        dev = self._device(dest[0])
        cfg = self.config
        chunks = [props] if esv == Esv.SETGET else self._split(props, dev.opc_limit or cfg.max_opc)
        # Encode every part before any state changes: a bad EPC/EDT raises ValueError here and
        # leaves the engine as it was.
        encoded: list[tuple[int, bytes, tuple[Property, ...]]] = []
        tid = self._tid
        if body and len(chunks) == 1:
            tid = self._free_tid(tid)
            encoded.append((tid, _FORMAT1 + tid.to_bytes(2, "big") + body, props))
        else:
            for chunk in chunks:
                tid = self._free_tid(tid)
                data = Frame(tid, self.seoj, deoj, esv, chunk, props_get).encode()
                encoded.append((tid, data, chunk))
        self._handle += 1
        op = _Op(
            self._handle,
            dest,
            deoj,
            esv,
            tuple(p.epc for p in props),
            tuple(p.epc for p in props_get),
            dev,
            now,
            on_done,
        )
        busy = dev.queue or dev.outstanding >= cfg.max_outstanding_per_device
        if busy and len(dev.queue) + len(chunks) > cfg.max_queued_per_device:
            self.counters["queue_full"] += 1
            self._finish_failed(op, "queue full", now)
            return op.handle
        self._tid = tid
        for tid, data, chunk in encoded:
            self._done.pop(tid, None)
            self._enqueue(_Part(op, tid, data, chunk, props_get, False), now)
        return op.handle

    @staticmethod
    def _split(props: tuple[Property, ...], limit: int) -> list[tuple[Property, ...]]:
        if not limit or len(props) <= limit:
            return [props]
        return [props[i : i + limit] for i in range(0, len(props), limit)]

    def _add_part(
        self,
        op: _Op,
        props: tuple[Property, ...],
        props_get: tuple[Property, ...],
        probe: bool,
        now: float,
    ) -> None:
        tid = self._next_tid()
        data = Frame(tid, self.seoj, op.deoj, op.esv, props, props_get).encode()
        self._enqueue(_Part(op, tid, data, props, props_get, probe), now)

    def _enqueue(self, part: _Part, now: float) -> None:
        """Register a part and send it now, or queue it behind the device's pacing."""
        op = part.op
        self._parts[part.tid] = part
        op.parts += 1
        dev = op.device
        cfg = self.config
        if (
            not dev.queue
            and dev.outstanding < cfg.max_outstanding_per_device
            and (
                not cfg.min_interval_per_device
                or now >= dev.last_sent + cfg.min_interval_per_device
            )
        ):
            self._transmit(part, now)
        else:
            dev.queue.append(part)
            self.counters["queued"] += 1
            self._pump(dev, now)

    def _transmit(self, part: _Part, now: float) -> None:
        op = part.op
        dev = op.device
        cfg = self.config
        part.state = _SENT
        part.attempts += 1
        self._outbox.append((part.data, op.dest))
        self.counters["tx_request"] += 1
        dev.last_sent = now
        if op.esv == Esv.SETI:  # no answer when it works: wait for a SetI_SNA only
            self._push(now + cfg.seti_wait, _T_PART, part, part.attempts)
            return
        if part.attempts == 1:
            dev.outstanding += 1
        else:
            self.counters["retry"] += 1
        due = now + cfg.request_timeout
        if part.attempts > cfg.retries:
            due += cfg.late_grace  # §6.6: a slow partner's late answer is still welcome
        self._push(due, _T_PART, part, part.attempts)

    def _pump(self, dev: _Device, now: float) -> None:
        """Send what the device's queue holds, as far as pacing allows."""
        cfg = self.config
        while dev.queue and dev.outstanding < cfg.max_outstanding_per_device:
            if cfg.min_interval_per_device:
                ready = dev.last_sent + cfg.min_interval_per_device
                if now < ready:
                    if dev.wake is None or dev.wake > ready:
                        dev.wake = ready
                        self._push(ready, _T_PACE, dev, 0)
                    return
            part = dev.queue.popleft()
            if part.state == _QUEUED:
                self._transmit(part, now)

    def _release(self, part: _Part, now: float) -> None:
        """The part is finished (answered, failed or cancelled): free its TID and its slot."""
        was_sent = part.state == _SENT
        part.state = _DONE
        if self._parts.get(part.tid) is part:
            del self._parts[part.tid]
            done = self._done
            done[part.tid] = None
            if len(done) > _DONE_MEMORY:
                done.popitem(last=False)
        op = part.op
        op.parts -= 1
        if was_sent and op.esv != Esv.SETI:
            dev = op.device
            dev.outstanding -= 1
            if dev.queue:
                self._pump(dev, now)

    def _matches(self, part: _Part, frame: Frame, addr: Addr) -> bool:
        op = part.op
        if part.state != _SENT or frame.esv not in _ANSWERS[op.esv]:
            return False
        if addr[0] != op.dest[0] and not _same_host(addr[0], op.dest[0]):
            return False
        d = op.deoj
        s = frame.seoj
        return s == d or (d.instance == 0 and s.class_code == d.class_code)

    def _on_response(self, part: _Part, frame: Frame, now: float) -> None:
        op = part.op
        self.counters["rx_response"] += 1
        if part.state == _SENT and part.attempts > 1:
            self.counters["late_or_retried_answer"] += 1
        self._release(part, now)
        if op.done:
            return
        good = frame.esv in GOOD_RESPONSES
        if op.esv == Esv.SETGET:  # never split: take it as it is
            op.results.update((p.epc, p) for p in frame.props)
            op.results_get.update((p.epc, p) for p in frame.props_get)
            op.good = op.good and good
        else:
            self._merge(part, frame, good, now)
        if op.parts == 0:
            self._finish(op, now)

    def _merge(self, part: _Part, frame: Frame, good: bool, now: float) -> None:
        """Record one part's answer; §2.3: re-ask what a short or all-failed answer left out."""
        op = part.op
        fp = frame.props
        if good and len(fp) == len(part.props):  # the usual case: everything, in order
            res = op.results
            for p, q in zip(fp, part.props, strict=True):
                if p.epc != q.epc:
                    break
                res[p.epc] = p
            else:
                if part.probe:
                    self._probe_succeeded(op)
                return
        dev = op.device
        asked = {p.epc for p in part.props}
        got = {p.epc: p for p in frame.props if p.epc in asked}
        if len(frame.props) != len(got):
            self.counters["unasked_epc_in_response"] += 1
        reads = op.esv in _READS
        if part.probe and good:
            self._probe_succeeded(op)
        missing = tuple(p for p in part.props if p.epc not in got)
        if missing and got:
            # §2.3: fewer properties than asked -- ask for the rest, this many at a time.
            limit = len(got)
            if not dev.opc_limit or limit < dev.opc_limit:
                dev.opc_limit = limit
                self.counters["opc_adapted"] += 1
                log.info("device %s answers %d properties per request (§2.3)", op.dest[0], limit)
            for chunk in self._split(missing, limit):
                self._add_part(op, chunk, (), False, now)
        elif len(part.props) > 1 and (
            missing
            or (
                not good
                and not part.probe
                and not any(
                    (bool(p.edt) if reads else not p.edt) for p in frame.props if p.epc in asked
                )
            )
        ):
            # Nothing of a multi-property request succeeded (or the answer had no properties):
            # maybe the device cannot take that many at once (§2.3) -- ask one by one.
            self.counters["opc_probe"] += 1
            for p in part.props:
                self._add_part(op, (p,), (), True, now)
            return
        for epc, p in got.items():
            op.results[epc] = p
        if not good or missing:
            op.good = False

    def _probe_succeeded(self, op: _Op) -> None:
        """One of the single-property requests of a §2.3 probe worked: one at a time, then."""
        dev = op.device
        if dev.opc_limit != 1:
            self.counters["opc_adapted"] += 1
            log.info("device %s takes one property per request (§2.3)", op.dest[0])
        dev.opc_limit = 1

    def _finish(self, op: _Op, now: float) -> None:
        op.done = True
        esv = _GOOD_OF[Esv(op.esv)] if op.good else _SNA_OF[Esv(op.esv)]
        res = op.results
        props = tuple(res[e] for e in op.order if e in res)
        props_get: tuple[Property, ...] = ()
        if op.esv == Esv.SETGET:
            rg = op.results_get
            props_get = tuple(rg[e] for e in op.order_get if e in rg)
        if op.on_done is not None:
            op.on_done(op, op.good, "", now)
            return
        self._events.append(
            RequestCompleted(op.handle, op.dest, op.deoj, esv, props, props_get, now - op.started)
        )

    def _finish_failed(self, op: _Op, reason: str, now: float) -> None:
        op.done = True
        if op.on_done is not None:
            op.on_done(op, False, reason, now)
            return
        self._events.append(RequestFailed(op.handle, op.dest, op.deoj, reason))

    def _on_part_timeout(self, part: _Part, now: float) -> None:
        op = part.op
        cfg = self.config
        if op.esv == Esv.SETI:  # no SetI_SNA within seti_wait: the write counts as done
            for p in part.props:
                op.results[p.epc] = Property(p.epc)
            self._release(part, now)
            if op.parts == 0 and not op.done:
                self._finish(op, now)
            return
        if part.attempts <= cfg.retries:
            self._transmit(part, now)  # same TID: an answer to any attempt completes it
            return
        self.counters["timeout"] += 1
        self._release(part, now)
        # The whole request fails: cancel its other parts (their late answers count as dups).
        for other in [p for p in self._parts.values() if p.op is op]:
            self._release(other, now)
        if not op.done:
            self._finish_failed(op, f"timeout after {part.attempts} attempts", now)

    # -- discovery -----------------------------------------------------------------------------

    def _send_multicast(self, group: Addr, now: float, retry: bool = False) -> None:
        """The §4.3 node discovery message: a Get of D6 to the node profile, multicast."""
        tid = self._next_tid()
        props = (Property(EPC_INSTANCE_LIST),)
        data = Frame(tid, self.seoj, NODE_PROFILE, Esv.GET, props).encode()
        until = now + self.config.discovery_window
        self._multicast[tid] = _Multicast(group, until, retry)
        self._push(until, _T_WINDOW, tid, 0)
        self._recent_multicast.append(data)
        self._outbox.append((data, group))
        self.counters["tx_discovery"] += 1

    def _on_multicast_answer(self, mc: _Multicast, frame: Frame, addr: Addr, now: float) -> None:
        mc.answered += 1
        for p in frame.props:
            if p.epc == EPC_INSTANCE_LIST and p.edt:
                self._learn(addr, [p.edt], "get", now)
                return
        self.counters["discovery_answer_without_list"] += 1

    def _on_window_end(self, tid: int, now: float) -> None:
        mc = self._multicast.pop(tid)
        if mc.answered == 0 and not mc.retry:
            # Nobody answered: the Get may have been lost, so ask once more. Never a multicast
            # INF_REQ -- guideline §2.4.1 and §4.3 advise against it (every node would answer
            # by multicast); §6.6's INF_REQ of D5 is unicast, in `probe`. Nodes that stay
            # silent are still learnt from their startup INF (§4.2) or the next rediscovery.
            self.counters["discovery_retry"] += 1
            self._send_multicast(mc.group, now, retry=True)

    def _probe_now(self, addr: Addr, now: float) -> None:
        host = addr[0]
        if host in self._probing:
            return
        if len(self._probing) >= _MAX_PROBES:  # e.g. a flood of INFs from forged sources
            self.counters["probe_dropped"] += 1
            return
        self._probing.add(host)
        dest = (host, self.config.port)
        self._awaiting_inf.pop(host, None)
        self.counters["probe"] += 1

        def after_d6(op: _Op, ok: bool, reason: str, t: float) -> None:
            edt = _read(op, EPC_INSTANCE_LIST)
            if edt is not None and self._learn(dest, [edt], "get", t):
                self._probing.discard(host)
                return
            # §6.6: no usable D6 -- ask the node to announce its instance list instead.
            self.counters["probe_fallback_inf_req"] += 1
            self._submit(
                dest,
                NODE_PROFILE,
                Esv.INF_REQ,
                (Property(EPC_INSTANCE_LIST_INF),),
                (),
                t,
                after_d5,
            )

        def after_d5(op: _Op, ok: bool, reason: str, t: float) -> None:
            self._probing.discard(host)
            edt = _read(op, EPC_INSTANCE_LIST_INF)
            if edt is not None and self._learn(dest, [edt], "inf_req", t):
                return
            self._events.append(ProbeFailed(dest, reason or "no instance list in the answers"))

        self._submit(dest, NODE_PROFILE, Esv.GET, (Property(EPC_INSTANCE_LIST),), (), now, after_d6)

    def _on_inf(self, frame: Frame, addr: Addr, now: float) -> None:
        self.counters["rx_inf"] += 1
        self._events.append(NotificationReceived(frame, addr))
        key = (addr[0], self.config.port)
        if frame.seoj.class_code == NODE_PROFILE_CLASS:
            # §2.5: a node with more than 84 objects may list them all in one INF, one D5
            # property (of at most 84 EOJs each) after the other.
            lists = [p.edt for p in frame.props if p.epc == EPC_INSTANCE_LIST_INF and p.edt]
            if lists:
                self._awaiting_inf.pop(addr[0], None)
                self._learn(key, lists, "inf", now)
                return
        node = self._nodes.get(key)
        if node is None:
            self.counters["inf_from_unknown"] += 1
            self._probe_now(key, now)
        else:
            node.last_seen = now

    def _learn(self, addr: Addr, edts: Sequence[bytes], via: str, now: float) -> bool:
        """A node's instance list arrived (the EDTs of the D5/D6 properties of one message);
        False when it was malformed."""
        try:
            listed = tuple(e for edt in edts for e in decode_instance_list(edt))
        except EchonetDecodeError as exc:
            self.counters["bad_instance_list"] += 1
            log.debug("bad instance list from %s: %s", addr, exc)
            return False
        key = (addr[0], self.config.port)
        eojs = tuple(dict.fromkeys(e for e in listed if e.class_code != NODE_PROFILE_CLASS))
        node = self._nodes.get(key)
        if node is None:
            node = self._nodes[key] = KnownNode(key, eojs, discovered_at=now, last_seen=now)
            self.counters["node_discovered"] += 1
            self._events.append(NodeDiscovered(key, eojs, via))
        else:
            node.last_seen = now
            if set(eojs) != set(node.instances):
                if len(edts) == 1 and edts[0][0] > len(listed):  # one D5 of several INFs (§2.5)
                    eojs = tuple(dict.fromkeys(node.instances + eojs))
                node.instances = eojs
                for gone in [e for e in node.maps if e not in eojs]:
                    del node.maps[gone]
                self._events.append(NodeDiscovered(key, eojs, via))
        if self.config.fetch_property_maps:
            for eoj in node.instances:
                if eoj not in node.maps and (key, eoj) not in self._fetching:
                    self._fetch_maps(node, eoj, now)
        return True

    def _fetch_maps(self, node: KnownNode, eoj: Eoj, now: float) -> None:
        key = (node.addr, eoj)
        self._fetching.add(key)

        def after(op: _Op, ok: bool, reason: str, t: float) -> None:
            self._fetching.discard(key)
            if op.results == {} and reason:
                self.counters["maps_failed"] += 1
                return
            found: list[frozenset[int]] = []
            for epc in MAP_EPCS:
                edt = _read(op, epc)
                decoded: frozenset[int] = frozenset()
                if edt is not None:
                    try:
                        decoded = decode_propmap(edt)
                    except EchonetDecodeError:
                        self.counters["bad_propmap"] += 1
                found.append(decoded)
            maps = PropertyMaps(found[0], found[1], found[2])
            node.maps[eoj] = maps
            self._events.append(PropertyMapsRetrieved(node.addr, eoj, maps))

        props = tuple(Property(e) for e in MAP_EPCS)
        self._submit(node.addr, eoj, Esv.GET, props, (), now, after)

    # -- introspection -------------------------------------------------------------------------

    def pending(self) -> int:
        """Requests (parts) sent or queued and not finished."""
        return len(self._parts)


def _read(op: _Op, epc: int) -> bytes | None:
    p = op.results.get(epc)
    return p.edt if p is not None and p.edt else None
