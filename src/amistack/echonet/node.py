"""The ECHONET Lite device node engine (sans-IO), per the System Design Guidelines, chapter 2.

`EchonetNode` hosts a node profile (0x0EF001) and device objects and answers the request services
Get (0x62), SetI (0x60), SetC (0x61), SetGet (0x6E), INF_REQ (0x63) and INFC (0x74). It has the
engine shape of STYLE.md: `receive_datagram(data, addr, now, multicast=False)`,
`datagrams_to_send(now)`, `get_timer()`, `handle_timer(now)`, `next_event()`; randomness comes from
an injected `RandomSource`.

Behaviour, by guideline section:

- §2.1 (values a device cannot take): the object's `set` decides -- clamp to the device's range,
  map to the nearest supported step, or ignore an unsupported step -- and the node answers with
  the write response; the value stored is reported in `PropertiesWritten`.
- §2.2 (values outside the property's range): the guideline recommends answering as if
  accepted, and allows the not-possible response from a node that checks before answering, as
  this one does. Default: the not-possible response (SetI_SNA 0x50 / SetC_SNA 0x51 / SetGet_SNA
  0x5E) echoing the rejected EDT, so the controller learns the value was not stored.
  `NodeConfig.out_of_range = OutOfRangeReply.ACCEPT` answers the ordinary response instead (the
  value is still not stored), the guideline's recommendation.
- §2.4 (multicast requests): answered unicast, after a random delay drawn per request from this
  node's RandomSource, bounded by `NodeConfig.multicast_reply_delay`, so that the nodes of a home
  do not answer in one burst. An INF_REQ that came by multicast is answered unicast as well: one
  multicast request never triggers a multicast from every node (no storm).
- §2.5: the instance lists D5/D6 carry at most 84 EOJs; the startup announcement of a node with
  more is one INF with several D5 properties of at most 84 EOJs each (OPC >= 2: the form §2.5
  recommends for 85 or more; a receiver that reads only the first D5 still gets 84).
- §2.6 (SetGet): the writes are applied first, then the reads, so the reads see the writes. With
  `NodeConfig.setget = False` a SetGet is answered 0x5E with OPCSet=0 and OPCGet=0 (the guideline's
  answer for a node that cannot guarantee that order).
- §2.7 / §6.11: no limit on the number of requests -- §6.11 records meters that went deaf for
  10 minutes after 60 requests in a minute and asks for no such restriction, so a controller
  polling at 60 requests/min (or far more) is always served -- but the work held for a source is
  bounded: at most `max_pending_per_source` delayed answers and queued datagrams per source
  address, and `max_pending` delayed answers in all; beyond that requests are dropped and counted
  (`dropped_queue_full`).
- Amplification: what a source gets back is limited in *bytes* (`echonet.budget.ReplyBudget`):
  `reply_burst` bytes at once, then `reply_rate` bytes per second, per source host (at most
  `max_budget_sources` tracked; the rest share one bucket). A request from a source whose budget
  is spent is dropped before any work (`dropped_rate_limited`). A 16-byte Get of E2+E4 is
  answered with 404 bytes; over a one-source flood the bytes out per byte in fall from 25 to
  below 0.2 (`amistack bench echonet-flood`). `reply_rate=None` turns the limit off.
- §2.8: the identification number 0x83 is the node profile object's (unique per node).
- §4.2: `start(now)` multicasts the instance list notification (INF of D5 from 0x0EF001 to
  0x0EF001) after a random delay of at most `NodeConfig.startup_delay`; from then on a smart
  meter's fixed-time values (EA, and EB on a two-way meter) are announced every 30 minutes.
- Every answer goes to port 3610 (`NodeConfig.port`) of the requester's address, whatever the
  request's source port.
- Unknown DEOJ: a unicast request is answered with the not-possible response (SEOJ = the DEOJ
  asked for; `UnknownObjectReply.DROP` discards it; the guideline does not settle the unicast
  case); a multicast request for an object we do not host is always silently ignored (§4.3:
  a node answers discovery requests that concern objects or properties it has). Unknown
  or unreadable EPCs get the not-possible response with PDC=0 for those EPCs. A request with OPC=0
  gets the not-possible response with OPC=0.
- Malformed datagrams (truncated, wrong PDC, trailing bytes, not ECHONET Lite) are dropped and
  counted in `counters`; the node keeps serving everyone else.
- Property-change announcements: a successful write that changes the value of an EPC in the
  object's announcement map is multicast as INF; the application calls `announce(eoj, epcs, now)`
  for changes that come from the device itself (e.g. a new cumulative value).
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from amistack.addr import Addr
from amistack.crypto.rand import RandomSource
from amistack.echonet.budget import ReplyBudget
from amistack.echonet.errors import EchonetDecodeError
from amistack.echonet.events import (
    Announced,
    EchonetEvent,
    Format2Received,
    NotificationReceived,
    PropertiesWritten,
    ResponseReceived,
)
from amistack.echonet.frame import EHD1, EHD2_FORMAT2, Eoj, Esv, Frame, Property
from amistack.echonet.objects.base import SetResult, SetStatus
from amistack.echonet.objects.node_profile import NodeProfile
from amistack.echonet.objects.smart_meter import SmartMeterObject

log = logging.getLogger(__name__)

__all__ = [
    "EL_PORT",
    "MAX_INSTANCE_LIST",
    "MULTICAST_V4",
    "MULTICAST_V6",
    "NODE_PROFILE",
    "EchonetNode",
    "HostedObject",
    "NodeConfig",
    "OutOfRangeReply",
    "UnknownObjectReply",
]

EL_PORT = 3610  # ECHONET Lite spec part 2, §4.2: UDP and TCP port 3610
MULTICAST_V4: Addr = ("224.0.23.0", EL_PORT)  # spec part 2, §4.2 (IPv4 multicast group)
MULTICAST_V6: Addr = ("ff02::1", EL_PORT)  # spec part 2, §4.2 (IPv6 all-nodes, link scope)
NODE_PROFILE = Eoj(0x0E, 0xF0, 0x01)  # general node profile (spec part 2, §6.10.1)
NODE_PROFILE_CLASS = 0x0EF0
MAX_INSTANCE_LIST = 84  # guideline §2.5: D5/D6 carry at most 84 instances

EPC_INSTANCE_LIST_INF = 0xD5  # instance list notification (spec part 2, §6.11.1)
EPC_REMOTE_CONTROL = 0x93  # remote control setting (APPENDIX super class; guideline §5)
FIXED_TIME_EPCS = (
    0xEA,
    0xEB,
)  # smart meter: cumulative amounts at fixed time, announced (APPENDIX)

_RECENT_MULTICAST = 16  # own multicasts remembered, to drop them when the group loops them back

_REQUESTS = frozenset({Esv.SETI, Esv.SETC, Esv.GET, Esv.INF_REQ, Esv.SETGET})
_NOTIFICATIONS = frozenset({Esv.INF, Esv.INFC})
_RESPONSES = frozenset(
    {
        Esv.SET_RES,
        Esv.GET_RES,
        Esv.INFC_RES,
        Esv.SETGET_RES,
        Esv.SETI_SNA,
        Esv.SETC_SNA,
        Esv.GET_SNA,
        Esv.INF_SNA,
        Esv.SETGET_SNA,
    }
)
_SNA_OF = {
    Esv.SETI: Esv.SETI_SNA,
    Esv.SETC: Esv.SETC_SNA,
    Esv.GET: Esv.GET_SNA,
    Esv.INF_REQ: Esv.INF_SNA,
    Esv.SETGET: Esv.SETGET_SNA,
}


class OutOfRangeReply(Enum):
    """How a write outside the property's range is answered (guideline §2.2)."""

    SNA = "sna"  # the not-possible response, echoing the rejected EDT (default)
    CLAMP = "clamp"  # §2.1: store the object's nearest value in range (`clamp`) and answer OK;
    # the not-possible response when the object has no such value
    ACCEPT = "accept"  # the ordinary response; the value is not stored


class UnknownObjectReply(Enum):
    """How a unicast request for an object this node does not host is answered."""

    SNA = "sna"  # the not-possible response from the DEOJ asked for (default)
    DROP = "drop"  # discarded without an answer


class HostedObject(Protocol):
    """What the node needs from an ECHONET Lite object it hosts (`objects.base.DeviceObject`)."""

    @property
    def eoj(self) -> Eoj: ...

    def get(self, epc: int, now: float) -> bytes | None:
        """The EDT for a Get, or None (not readable / unknown EPC)."""
        ...

    def read(self, epc: int, now: float) -> bytes | None:
        """The EDT of any property the object has, whatever its access rule (for INF)."""
        ...

    def set(self, epc: int, edt: bytes, now: float) -> SetResult:
        """Write a property under the object's rules (nearest step, ignored steps: §2.1)."""
        ...

    def clamp(self, epc: int, edt: bytes) -> bytes | None:
        """The nearest acceptable EDT for an out-of-range number, or None (§2.1)."""
        ...

    def begin_write(self, marks: Iterable[bytes]) -> None:
        """A write request is about to be applied; `marks`: the EDTs of its 0x93 properties
        (guideline §5: a request is remote or local as a whole)."""
        ...

    @property
    def inf_map(self) -> frozenset[int]:
        """EPCs with the announcement rule (0x9D)."""
        ...

    def pop_announcements(self) -> list[int]:
        """EPCs of the announcement map (0x9D) whose value changed since the last call."""
        ...


@dataclass(frozen=True)
class NodeConfig:
    """Tunables of a device node; the defaults follow the guidelines."""

    port: int = EL_PORT
    multicast_groups: tuple[Addr, ...] = (MULTICAST_V4,)
    multicast_reply_delay: float = 1.0  # s, bound of the §2.4 random delay
    startup_delay: float = 2.0  # s, bound of the §4.2 random delay
    out_of_range: OutOfRangeReply = OutOfRangeReply.SNA
    unknown_object: UnknownObjectReply = UnknownObjectReply.SNA
    setget: bool = True  # §2.6: False -> 5E with OPCSet=0, OPCGet=0
    max_pending_per_source: int = 64  # §2.7: queued answers held per source address
    max_pending: int = 4096  # delayed (multicast) answers held in all
    # Bytes answered per source host (token bucket; None: unlimited). 2048 B/s is ten of the
    # largest smart-meter answers (E2, 208 bytes) a second, ten times what a controller pacing
    # itself at one request a second (§2.7) reads; a quiet source may draw `reply_burst` at once.
    reply_rate: float | None = 2048.0
    reply_burst: int = 16384
    max_budget_sources: int = 256  # sources with a budget of their own (bounded state)


@dataclass(frozen=True, slots=True)
class _Delayed:
    frame: Frame
    addr: Addr


class EchonetNode:
    """A device node: a node profile plus device objects behind one ECHONET Lite address."""

    def __init__(
        self,
        profile: HostedObject,
        devices: Sequence[HostedObject],
        rng: RandomSource,
        config: NodeConfig | None = None,
    ) -> None:
        self.config = config or NodeConfig()
        self.profile = profile
        self.devices: tuple[HostedObject, ...] = tuple(devices)
        self._rng = rng
        self._objects: dict[Eoj, HostedObject] = {profile.eoj: profile}
        for obj in self.devices:
            if obj.eoj in self._objects:
                raise ValueError(f"EOJ {obj.eoj} is hosted twice")
            if obj.eoj.class_code == NODE_PROFILE_CLASS:
                raise ValueError(f"EOJ {obj.eoj} is a node profile, not a device object")
            self._objects[obj.eoj] = obj
        if isinstance(profile, NodeProfile):  # D3-D7 describe exactly what this node hosts
            profile.set_instances(self.instance_list())
            profile.pop_announcements()  # the startup INF (`start`) announces them
        self._outbox: list[tuple[bytes, Addr]] = []
        self._queued_by_host: Counter[str] = Counter()
        self._delayed: list[tuple[float, int, _Delayed]] = []
        self._delayed_by_host: Counter[str] = Counter()
        self._seq = 0
        self._tid = int.from_bytes(rng(2), "big")  # unlike other nodes' TIDs from the start
        self._recent_multicast: deque[bytes] = deque(maxlen=_RECENT_MULTICAST)
        self._startup_at: float | None = None
        self._fixed_time: dict[Eoj, float] = {}  # smart meters: next 30-minute EA/EB announcement
        self._events: deque[EchonetEvent] = deque()
        cfg = self.config
        self.reply_budget = (
            None
            if cfg.reply_rate is None
            else ReplyBudget(cfg.reply_rate, cfg.reply_burst, cfg.max_budget_sources)
        )
        self.counters: Counter[str] = Counter()

    # -- public API ----------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Schedule the §4.2 startup announcement (INF of D5, multicast, after a random delay)."""
        self._startup_at = now + self._uniform(self.config.startup_delay)
        for obj in self.devices:
            if isinstance(obj, SmartMeterObject):
                self._fixed_time[obj.eoj] = obj.next_fixed_time(now)

    def announce(self, eoj: Eoj, epcs: Iterable[int], now: float) -> None:
        """Multicast an INF with the current values of `epcs` of object `eoj` (those readable)."""
        obj = self._objects.get(eoj)
        if obj is None:
            raise KeyError(f"no object {eoj} on this node")
        props = tuple(Property(epc, v) for epc in epcs if (v := obj.read(epc, now)) is not None)
        if props:
            self._multicast(Frame(self._next_tid(), eoj, NODE_PROFILE, Esv.INF, props))
            self._events.append(Announced(eoj, tuple(p.epc for p in props)))

    def instance_list(self) -> list[Eoj]:
        """Every device object instance of this node (the node profile excluded)."""
        return [obj.eoj for obj in self.devices]

    def object(self, eoj: Eoj) -> HostedObject | None:
        return self._objects.get(eoj)

    # -- engine shape --------------------------------------------------------------------------

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        """Feed one datagram; `multicast` tells that it was sent to a multicast group (§2.4)."""
        self.counters["rx"] += 1
        if multicast and addr[1] == self.config.port and data in self._recent_multicast:
            self.counters["own_multicast"] += 1  # our own INF, looped back by the group
            return
        if len(data) >= 2 and data[0] == EHD1 and data[1] == EHD2_FORMAT2:
            if len(data) < 4:
                self.counters["malformed"] += 1
                return
            self.counters["format2"] += 1
            self._events.append(Format2Received((data[2] << 8) | data[3], bytes(data[4:]), addr))
            return
        try:
            frame = Frame.decode(data)
        except EchonetDecodeError as exc:
            self.counters["malformed"] += 1
            log.debug("dropped a malformed frame from %s: %s", addr, exc)
            return
        esv = frame.esv
        answered = esv in _REQUESTS or (esv == Esv.INFC and not multicast)
        if (
            answered
            and self.reply_budget is not None
            and not self.reply_budget.allows(addr[0], now)
        ):
            self.counters["dropped_rate_limited"] += 1  # before any work: no reflection
            return
        if esv in _REQUESTS:
            if multicast:
                self._delay(frame, addr, now)
            else:
                self._serve(frame, addr, now, multicast=False)
        elif esv in _NOTIFICATIONS:
            self.counters["rx_inf"] += 1
            if esv == Esv.INFC and not multicast:
                self._answer_infc(frame, addr)
            self._events.append(NotificationReceived(frame, addr))
        elif esv in _RESPONSES:
            self.counters["rx_response"] += 1
            self._events.append(ResponseReceived(frame, addr))
        else:  # spec part 2, §3.2.5: an unknown ESV is discarded
            self.counters["unknown_esv"] += 1

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out = self._outbox
        self._outbox = []
        self._queued_by_host.clear()
        return out

    def get_timer(self) -> float | None:
        at = self._startup_at
        for due in self._fixed_time.values():
            if at is None or due < at:
                at = due
        if self._delayed:
            due = self._delayed[0][0]
            if at is None or due < at:
                at = due
        return at

    def handle_timer(self, now: float) -> None:
        if self._startup_at is not None and now >= self._startup_at:
            self._startup_at = None
            self._announce_instances(now)
        for eoj, due in list(self._fixed_time.items()):
            if now >= due:
                meter = self._objects[eoj]
                if not isinstance(meter, SmartMeterObject):
                    continue
                self._fixed_time[eoj] = max(meter.next_fixed_time(now), now + 1.0)
                self.announce(eoj, [e for e in FIXED_TIME_EPCS if e in meter.inf_map], now)
        while self._delayed and self._delayed[0][0] <= now:
            _, _, item = heapq.heappop(self._delayed)
            host = item.addr[0]
            self._delayed_by_host[host] -= 1
            if self._delayed_by_host[host] <= 0:
                del self._delayed_by_host[host]
            self._serve(item.frame, item.addr, now, multicast=True)
        self.poll_announcements(now)

    def next_event(self) -> EchonetEvent | None:
        return self._events.popleft() if self._events else None

    # -- requests ------------------------------------------------------------------------------

    def _delay(self, frame: Frame, addr: Addr, now: float) -> None:
        """§2.4: hold a multicast request's answer for a random, bounded delay (§2.7 bounds)."""
        if not self._targets(frame.deoj):  # not ours: silence, never an SNA to a multicast
            self.counters["multicast_not_ours"] += 1
            return
        host = addr[0]
        if (
            self._delayed_by_host[host] >= self.config.max_pending_per_source
            or len(self._delayed) >= self.config.max_pending
        ):
            self.counters["dropped_queue_full"] += 1
            return
        self._delayed_by_host[host] += 1
        self._seq += 1
        due = now + self._uniform(self.config.multicast_reply_delay)
        heapq.heappush(self._delayed, (due, self._seq, _Delayed(frame, addr)))

    def _targets(self, deoj: Eoj) -> list[HostedObject]:
        if deoj.instance == 0:  # instance code 0x00: every instance of the class
            cc = deoj.class_code
            return [o for e, o in self._objects.items() if e.class_code == cc]
        obj = self._objects.get(deoj)
        return [] if obj is None else [obj]

    def _serve(self, frame: Frame, addr: Addr, now: float, multicast: bool) -> None:
        self.counters["rx_request"] += 1
        dest = (addr[0], self.config.port)
        targets = self._targets(frame.deoj)
        if not targets:
            self.counters["unknown_deoj"] += 1
            if not multicast and self.config.unknown_object is UnknownObjectReply.SNA:
                self._send(self._unknown_object_reply(frame), dest)
            return
        for obj in targets:
            reply = self._answer(obj, frame, addr, now)
            if reply is not None:
                self._send(reply, dest)
        self.poll_announcements(now)  # after the answer to the write

    def _answer(self, obj: HostedObject, req: Frame, addr: Addr, now: float) -> Frame | None:
        esv = req.esv
        if esv == Esv.GET or esv == Esv.INF_REQ:
            props, ok = self._read(obj, req.props, now, esv == Esv.INF_REQ)
            ok = ok and bool(req.props)
            good = Esv.GET_RES if esv == Esv.GET else Esv.INF
            return self._reply(req, obj.eoj, good if ok else _SNA_OF[Esv(esv)], props)
        if esv == Esv.SETI or esv == Esv.SETC:
            props, ok = self._write(obj, req.props, addr, now)
            ok = ok and bool(req.props)
            if ok and esv == Esv.SETI:
                return None  # SetI is answered only when it fails
            good = Esv.SET_RES
            return self._reply(req, obj.eoj, good if ok else _SNA_OF[Esv(esv)], props)
        # SetGet (§2.6)
        if not self.config.setget:
            self.counters["setget_refused"] += 1
            return self._reply(req, obj.eoj, Esv.SETGET_SNA, ())
        set_props, set_ok = self._write(obj, req.props, addr, now)
        get_props, get_ok = self._read(obj, req.props_get, now, False)
        ok = set_ok and get_ok and bool(req.props) and bool(req.props_get)
        return self._reply(
            req, obj.eoj, Esv.SETGET_RES if ok else Esv.SETGET_SNA, set_props, get_props
        )

    def _reply(
        self,
        req: Frame,
        seoj: Eoj,
        esv: Esv,
        props: tuple[Property, ...],
        props_get: tuple[Property, ...] = (),
    ) -> Frame:
        if esv in _SNA_OF.values():
            self.counters["tx_sna"] += 1
        return Frame(req.tid, seoj, req.seoj, esv, props, props_get)

    def _unknown_object_reply(self, req: Frame) -> Frame:
        esv = Esv(req.esv)
        if esv in (Esv.GET, Esv.INF_REQ):
            props = tuple(Property(p.epc) for p in req.props)
            return Frame(req.tid, req.deoj, req.seoj, _SNA_OF[esv], props)
        if esv == Esv.SETGET:
            get = tuple(Property(p.epc) for p in req.props_get)
            return Frame(req.tid, req.deoj, req.seoj, _SNA_OF[esv], req.props, get)
        return Frame(req.tid, req.deoj, req.seoj, _SNA_OF[esv], req.props)

    def _read(
        self, obj: HostedObject, props: tuple[Property, ...], now: float, inf: bool
    ) -> tuple[tuple[Property, ...], bool]:
        """Values for a Get/SetGet (Get rule), or for an INF_REQ (Get or announcement rule: an
        INF_REQ of D5 is how controllers discover nodes)."""
        out: list[Property] = []
        ok = True
        for p in props:
            value = obj.get(p.epc, now)
            if value is None and inf and p.epc in obj.inf_map:
                value = obj.read(p.epc, now)
            if value is None:
                ok = False
                out.append(Property(p.epc))  # PDC=0 marks the EPC that could not be read
            else:
                out.append(Property(p.epc, value))
        return tuple(out), ok

    def _write(
        self, obj: HostedObject, props: tuple[Property, ...], addr: Addr, now: float
    ) -> tuple[tuple[Property, ...], bool]:
        out: list[Property] = []
        written: list[Property] = []
        ok = True
        obj.begin_write(p.edt for p in props if p.epc == EPC_REMOTE_CONTROL)
        for p in props:
            res = obj.set(p.epc, p.edt, now)
            if res.status is SetStatus.INVALID:  # §2.2: size or range the property cannot take
                self.counters["set_invalid"] += 1
                policy = self.config.out_of_range
                if policy is OutOfRangeReply.ACCEPT:
                    out.append(Property(p.epc))
                    continue
                if policy is OutOfRangeReply.CLAMP:
                    fixed = obj.clamp(p.epc, p.edt)
                    if fixed is not None:
                        res = obj.set(p.epc, fixed, now)
            if not res.ok:
                ok = False
                out.append(p)  # the not-possible response echoes the EDT it refused
                continue
            out.append(Property(p.epc))  # accepted: PDC=0
            stored = obj.read(p.epc, now)
            written.append(Property(p.epc, p.edt if stored is None else stored))
        if written:
            self._events.append(PropertiesWritten(obj.eoj, tuple(written), addr))
        return tuple(out), ok

    def _answer_infc(self, frame: Frame, addr: Addr) -> None:
        """INFC (0x74) is acknowledged with INFC_Res (0x7A), PDC=0 (spec part 2, §3.2.5)."""
        targets = self._targets(frame.deoj)
        for obj in targets:
            props = tuple(Property(p.epc) for p in frame.props)
            self._send(
                Frame(frame.tid, obj.eoj, frame.seoj, Esv.INFC_RES, props),
                (addr[0], self.config.port),
            )

    # -- announcements ---------------------------------------------------------------------------

    def poll_announcements(self, now: float) -> None:
        """Multicast an INF for every announced property that changed since the last poll (the
        node polls after every request and timer; call it after changing objects locally)."""
        for obj in self._objects.values():
            epcs = obj.pop_announcements()
            if not epcs:
                continue
            if obj is self.profile and EPC_INSTANCE_LIST_INF in epcs:
                self._announce_instances(now)
                epcs = [e for e in epcs if e != EPC_INSTANCE_LIST_INF]
            if epcs:
                self.announce(obj.eoj, epcs, now)

    def _announce_instances(self, now: float) -> None:
        """§4.2 / §2.5: the instance list notification; more than 84 EOJs go in one INF with a
        D5 property per 84 (OPC >= 2), the form §2.5 recommends."""
        eojs = self.instance_list()
        chunks = [eojs[i : i + MAX_INSTANCE_LIST] for i in range(0, len(eojs), MAX_INSTANCE_LIST)]
        props = tuple(
            Property(EPC_INSTANCE_LIST_INF, _instance_list_edt(chunk)) for chunk in chunks or [[]]
        )
        self._multicast(Frame(self._next_tid(), NODE_PROFILE, NODE_PROFILE, Esv.INF, props))
        self.counters["startup_inf"] += 1
        self._events.append(Announced(self.profile.eoj, (EPC_INSTANCE_LIST_INF,)))

    # -- output --------------------------------------------------------------------------------

    def _send(self, frame: Frame, dest: Addr) -> None:
        host = dest[0]
        if self._queued_by_host[host] >= self.config.max_pending_per_source:
            self.counters["dropped_queue_full"] += 1
            return
        self._queued_by_host[host] += 1
        data = frame.encode()
        if self.reply_budget is not None:
            self.reply_budget.charge(host, len(data))
        self._outbox.append((data, dest))
        self.counters["tx"] += 1

    def _multicast(self, frame: Frame) -> None:
        data = frame.encode()
        self._recent_multicast.append(data)
        for group in self.config.multicast_groups:
            self._outbox.append((data, group))
            self.counters["tx_multicast"] += 1

    def _next_tid(self) -> int:
        self._tid = (self._tid + 1) & 0xFFFF
        return self._tid

    def _uniform(self, bound: float) -> float:
        """A delay in [0, bound) from the injected RandomSource."""
        if bound <= 0:
            return 0.0
        return bound * int.from_bytes(self._rng(4), "big") / 2**32


def _instance_list_edt(eojs: Sequence[Eoj]) -> bytes:
    """D5/D6 EDT: the number of instances, then at most 84 EOJs (guideline §2.5)."""
    head = eojs[:MAX_INSTANCE_LIST]
    return bytes([min(len(eojs), 0xFF)]) + b"".join(e.encode() for e in head)
