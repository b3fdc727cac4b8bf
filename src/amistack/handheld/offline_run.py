"""The offline work session in the field (sans-IO): embodiment 2 as one engine.

    isolated mesh (radio) <-> WorkSession (DODAG root, PANA relay) <-> OfflineOffice (in process)
                                                                       key server + collector

`OfflineRun` joins the embodiment-1 `WorkSession` (handheld/session.py), unchanged, to the
`OfflineOffice` (handheld/offline.py) on the handheld itself: the session's IPv6 packets for the
office (`WAN_ADDR`) never leave the engine; only radio frames do. The handheld authenticates to
that office by PANA/EAP-PSK under a PSK made for this run (it exists in RAM only), takes the
isolated PAN's group keys and becomes DODAG root; the meters authenticate through it to the
office's key server with their own PSKs from the opened work order and nothing else.

Only the meters given in `OfflineRunConfig.meters` (a subset of the order's) are served: the
office enrols only their PSKs, so any other meter -- outside the order, or in it but not chosen
-- fails EAP-PSK and never joins. Every meter that joins (its DAO reaches the root) is collected
once, as far as the order's operations *and* the technician's role allow (`allowed_operations`):
"read" reads the newest `intervals` load-profile intervals, "events" fetches the signed event
log; each is sealed at once (`SealedReadings`) and a failed one is tried again `retry_s` later.
"connect" and "disconnect" are the technician's commands (`command`), checked the same way;
after one is confirmed the meter's event log, which records it, is fetched again.
The run ends with the work session (logout, stop, timeout, the order's `not_after`): the
session's keys and DODAG go, and the office's in-memory credential store is closed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from amistack.addr import Addr, Eui64
from amistack.c1222.acse import ApTitle
from amistack.c1222.endpoint import C1222_PORT
from amistack.crypto import RandomSource
from amistack.eap.packet import EapType
from amistack.eap.peer import EapPeer
from amistack.eap.psk import PSK_LEN, EapPskPeer
from amistack.handheld.events import MeterRouted
from amistack.handheld.offline import (
    CollectFailed,
    EventLogSealed,
    OfflineOffice,
    ReadingsSealed,
    SealedReadings,
    SwitchDone,
)
from amistack.handheld.session import (
    OPERATION_RIGHT,
    WAN_ADDR,
    HandheldConfig,
    Operation,
    WorkSession,
    WorkState,
)
from amistack.handheld.workorder import OpenedWorkOrder, WorkOrderError
from amistack.meter.node import ap_title_for
from amistack.pana.paa import PaaConfig

__all__ = ["COLLECT_RIGHT", "MeterCollected", "MeterJoined", "OfflineRun", "OfflineRunConfig"]

# The order's operations the run performs by itself, and the handheld operation (and so the
# role's right, OPERATION_RIGHT) each needs. connect/disconnect/commission are not run offline.
COLLECT_RIGHT: dict[str, Operation] = {"read": Operation.READ, "events": Operation.READ}
_ORDER_OPERATION: dict[str, Operation] = {
    **COLLECT_RIGHT,
    "connect": Operation.CONNECT,
    "disconnect": Operation.DISCONNECT,
    "commission": Operation.COMMISSION,
}


@dataclass(frozen=True)
class OfflineRunConfig:
    handheld: HandheldConfig  # `keyserver`: the office key server's address as the meters know it
    headend: Addr  # the head-end's C12.22 address as the meters know it (IPv6)
    headend_title: ApTitle
    meters: Mapping[str, Eui64]  # the meters to serve (all in the order) and their radio EUI-64
    intervals: int = 4  # newest load-profile intervals read from each meter
    retry_s: float = 30.0
    paa: PaaConfig = field(default_factory=PaaConfig)


@dataclass(frozen=True)
class MeterJoined:
    """Event: a meter of the order is in the DODAG (authenticated, its DAO at the root)."""

    meter_id: str
    address: str


@dataclass(frozen=True)
class MeterCollected:
    """Event: everything the run collects from `meter_id` is sealed."""

    meter_id: str


class OfflineRun:
    """One offline work session (module docstring), with the usual engine surface: radio frames
    in and out; events are the session's (`handheld.events`), the office's key server's (PANA
    `Authenticated`, `AuthenticationFailed`) and collector's (`ReadingsSealed`,
    `EventLogSealed`, `CollectFailed`), `MeterJoined` and `MeterCollected`."""

    def __init__(
        self,
        opened: OpenedWorkOrder,
        readings: SealedReadings,
        config: OfflineRunConfig,
        rng: RandomSource,
        now: float,
    ) -> None:
        order = opened.order
        outside = sorted(set(config.meters) - set(order.meters))
        if outside:
            raise WorkOrderError(
                "refused", f"not in work order {order.order_id}: {', '.join(outside)}"
            )
        self.order = order
        self.config = config
        technician = opened.session.principal
        self.allowed_operations = frozenset(
            op for op in order.operations if technician.may(OPERATION_RIGHT[_ORDER_OPERATION[op]])
        )
        self._collect = frozenset(COLLECT_RIGHT) & self.allowed_operations
        hh = config.handheld
        self._address = {
            str(ipaddress.IPv6Address(hh.prefix[:8] + eui.interface_id())): meter
            for meter, eui in config.meters.items()
        }
        served = dataclasses.replace(opened, psks={m: opened.psks[m] for m in config.meters})
        psk = rng(PSK_LEN)  # the handheld's own credential with its own office, this run only
        ident = hh.device_id.encode()

        def eap() -> EapPeer:
            return EapPeer(ident, {EapType.PSK: lambda: EapPskPeer(ident, psk, rng)})

        # first: NotPermitted for a technician whose roles grant no work, before any key
        self.session = WorkSession(hh, technician, order.order_id, eap, rng, now)
        self.office = OfflineOffice(
            served, readings, handheld_id=hh.device_id, handheld_psk=psk,
            handheld_radio=WAN_ADDR, keyserver_addr=hh.keyserver, headend_addr=config.headend,
            headend_title=config.headend_title,
            titles={ap_title_for(m).device_id: m for m in config.meters},
            relays=frozenset({str(ipaddress.IPv6Address(hh.address)), *self._address}),
            pans=[hh.pan.value], rng=rng, now=now, paa_config=config.paa,
        )  # fmt: skip
        self.joined: dict[str, str] = {}  # meter -> its address, once routed
        self.done: dict[str, set[str]] = {}  # meter -> operations collected
        self._todo: dict[str, set[str]] = {}  # meter -> operations not yet collected
        self._due: dict[str, float] = {}  # meter -> when to start its outstanding operations
        self._busy: dict[str, set[str]] = {}  # meter -> operations under way
        self._events: deque[object] = deque()

    # -- commands -------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self.session.start(now)

    def end(self, reason: str, now: float) -> None:
        """End the session (its PANA termination reaches the office), then drop the office's
        in-memory credentials."""
        if self.session.state is WorkState.ENDED and self.office.closed:
            return
        self.session.end(reason, now)
        self._shuttle(now)
        self.office.close()

    def command(self, meter: str, operation: str, now: float) -> None:
        """The technician's remote `connect` or `disconnect` of a joined meter (its outcome: a
        `SwitchDone` event). NotPermitted when the technician's role does not allow it;
        WorkOrderError when the order does not, or the meter is not served or not joined."""
        if operation not in ("connect", "disconnect"):
            raise WorkOrderError("invalid", f"no such command {operation!r}")
        self.session.authorize(_ORDER_OPERATION[operation], now)  # the role's right
        if meter not in self.config.meters:
            raise WorkOrderError("refused", f"meter {meter} is not served by this session")
        address = self.joined.get(meter)
        if address is None:
            raise WorkOrderError("refused", f"meter {meter} has not joined")
        title = ap_title_for(meter)
        self.office.switch(meter, (address, C1222_PORT), title, operation == "connect", now)

    def collect_again(self, now: float) -> None:
        """Collect every joined meter again (the newest intervals, the log as it is now)."""
        for meter in self.joined:
            self._todo.setdefault(meter, set()).update(self._collect)
            self._due.setdefault(meter, now)

    @property
    def ended(self) -> bool:
        return self.session.state is WorkState.ENDED

    def status(self) -> dict[str, Any]:
        """What the technician's status line shows (no secret, no reading value)."""
        held = self.office.readings.counts()
        return {
            "order": self.order.order_id,
            "technician": self.session.technician.name,
            "state": self.session.state.value,
            "meters": len(self.config.meters),
            "joined": sorted(self.joined),
            "collected": sorted(m for m, ops in self.done.items() if ops >= self._collect),
            "readings_sealed": held[0],
            "event_logs_sealed": held[1],
        }

    # -- collection -----------------------------------------------------------------------------

    def _routed(self, address: str, now: float) -> None:
        meter = self._address.get(address)
        if meter is None or meter in self.joined:
            return
        self.joined[meter] = address
        self._events.append(MeterJoined(meter, address))
        self._todo[meter] = set(self._collect)
        self._due[meter] = now

    def _start_due(self, now: float) -> None:
        if self.ended or self.office.expired:
            return
        for meter, at in list(self._due.items()):
            if at > now:
                continue
            del self._due[meter]
            addr = (self.joined[meter], C1222_PORT)
            title = ap_title_for(meter)
            busy = self._busy.setdefault(meter, set())
            for op in sorted(self._todo[meter] - busy):
                try:
                    if op == "read":
                        self.office.read(meter, addr, title, self.config.intervals, now)
                    else:
                        self.office.fetch_events(meter, addr, title, now)
                except WorkOrderError:  # the order ran out before its timer fell due
                    return
                busy.add(op)

    def _finished(self, meter: str, op: str, ok: bool, now: float) -> None:
        self._busy.get(meter, set()).discard(op)
        if not ok:
            self._due.setdefault(meter, now + self.config.retry_s)
            return
        todo = self._todo.get(meter, set())
        todo.discard(op)
        self.done.setdefault(meter, set()).add(op)
        if not todo:
            self._events.append(MeterCollected(meter))

    # -- the engine surface ---------------------------------------------------------------------

    def _shuttle(self, now: float) -> list[tuple[bytes, Addr]]:
        """Move packets between the session and the office until both are quiet; the radio
        frames that result, and every event, collected on the way."""
        radio: list[tuple[bytes, Addr]] = []
        busy = True
        while busy:
            busy = False
            for data, dst in self.session.datagrams_to_send(now):
                if dst == WAN_ADDR:
                    self.office.receive_datagram(data, WAN_ADDR, now)
                    busy = True
                else:
                    radio.append((data, dst))
            if not self.office.closed:
                for data, _ in self.office.datagrams_to_send(now):
                    self.session.receive_datagram(data, WAN_ADDR, now)
                    busy = True
            busy = self._drain(now) or busy
        return radio

    def _drain(self, now: float) -> bool:
        """Events of both halves; True when one may have queued output."""
        more = False
        while (ev := self.session.next_event()) is not None:
            if isinstance(ev, MeterRouted):
                self._routed(ev.address, now)
                more = True
            self._events.append(ev)
        while (ev2 := self.office.next_event()) is not None:
            self._events.append(ev2)
            if isinstance(ev2, ReadingsSealed):
                self._finished(ev2.meter_id, "read", True, now)
            elif isinstance(ev2, EventLogSealed):
                self._finished(ev2.meter_id, "events", True, now)
            elif isinstance(ev2, CollectFailed):
                self._finished(ev2.meter_id, ev2.what, False, now)
            elif isinstance(ev2, SwitchDone) and ev2.ok and "events" in self._collect:
                # the meter logged the switch: fetch its log again, as evidence for the office
                self._todo.setdefault(ev2.meter_id, set()).add("events")
                self._due.setdefault(ev2.meter_id, now)
        if self._due and min(self._due.values()) <= now:
            self._start_due(now)
            more = True
        return more

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        self.session.receive_datagram(data, addr, now, multicast)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return self._shuttle(now)

    def get_timer(self) -> float | None:
        if self.ended:
            return None
        times = [t for t in (self.session.get_timer(), self.office.get_timer()) if t is not None]
        if self._due and not self.office.expired:
            times.append(min(self._due.values()))
        return min(times, default=None)

    def handle_timer(self, now: float) -> None:
        if self.ended:
            return
        for half in (self.session, self.office):
            if (t := half.get_timer()) is not None and t <= now:
                half.handle_timer(now)
        if self.office.expired:
            self.end("the work order expired", now)

    def next_event(self) -> object | None:
        return self._events.popleft() if self._events else None
