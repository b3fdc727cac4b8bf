"""A HEMS on the B route: the ECHONET Lite controller carried by the secured link (sans-IO).

`BrouteController` is one engine made of two: a `BrouteHems` (PANA PaC + AES-CCM* link to the
meter) underneath an `EchonetController`. The controller's datagrams to the meter (host, 3610)
become secured link frames (`BrouteHems.send`, 3610 -> 3610); the link's decrypted datagrams
(`Received`) are handed to the controller as if they had come from (meter host, source port),
multicast-flagged when the meter addressed them to a group (its INFs). Nothing else reaches the
controller: the B route is a point-to-point link to one meter, so there is no multicast
discovery; when the link comes up the controller probes the meter by unicast (`probe`).

While the link is down (reconnection, guideline §6.5) the controller's requests are dropped
and counted (`counters["dropped_link_down"]`); its own retries and timeouts decide what the
application sees, exactly as on a lossy LAN.

Events: the controller's (`NodeDiscovered`, `RequestCompleted`, ...) and the link's (`LinkUp`,
`LinkDown`, `ReconnectStageEnded`, ...) in the order they happened.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping, Sequence

from amistack.addr import Addr
from amistack.broute.events import BrouteHemsEvent, LinkUp, Received
from amistack.broute.hems import BrouteHems, NotConnected
from amistack.echonet.controller import ControllerConfig, EchonetController, KnownNode
from amistack.echonet.events import EchonetEvent
from amistack.echonet.frame import Eoj
from amistack.echonet.node import EL_PORT

__all__ = ["BrouteController"]


class BrouteController:
    """`EchonetController` over `BrouteHems`, with the engine shape of STYLE.md."""

    def __init__(self, hems: BrouteHems, controller: EchonetController) -> None:
        self.hems = hems
        self.controller = controller
        self.counters: Counter[str] = Counter()
        self._events: deque[BrouteHemsEvent | EchonetEvent] = deque()
        self._probed_session: int | None = None

    @property
    def meter(self) -> Addr:
        """The meter's ECHONET Lite address, as the controller addresses it."""
        return (self.hems.meter[0], EL_PORT)

    @property
    def config(self) -> ControllerConfig:
        return self.controller.config

    @property
    def nodes(self) -> Mapping[Addr, KnownNode]:
        return self.controller.nodes

    # -- commands -------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Authenticate to the meter; the controller probes it once the link is up."""
        self.hems.start(now)
        self._pump(now)

    def terminate(self, now: float) -> None:
        self.hems.terminate(now)
        self._pump(now)

    # The controller's commands, so that `runtime.echonet_controller.ControllerDriver` drives
    # this engine as it drives a plain controller; handles are the controller's.
    def probe(self, addr: Addr, now: float) -> None:
        self.controller.probe(addr, now)
        self._pump(now)

    def get(self, dest: Addr, deoj: Eoj, epcs: Sequence[int], now: float) -> int:
        handle = self.controller.get(dest, deoj, epcs, now)
        self._pump(now)
        return handle

    def set(
        self,
        dest: Addr,
        deoj: Eoj,
        props: Sequence[tuple[int, bytes]],
        now: float,
        ack: bool = True,
    ) -> int:
        handle = self.controller.set(dest, deoj, props, now, ack)
        self._pump(now)
        return handle

    def setget(
        self,
        dest: Addr,
        deoj: Eoj,
        set_props: Sequence[tuple[int, bytes]],
        get_epcs: Sequence[int],
        now: float,
    ) -> int:
        handle = self.controller.setget(dest, deoj, set_props, get_epcs, now)
        self._pump(now)
        return handle

    def inf_req(self, dest: Addr, deoj: Eoj, epcs: Sequence[int], now: float) -> int:
        handle = self.controller.inf_req(dest, deoj, epcs, now)
        self._pump(now)
        return handle

    # -- engine shape ---------------------------------------------------------------------------
    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        """A link frame from the meter (`multicast` is the socket's; the frame says its own)."""
        self.hems.receive_datagram(data, addr, now)
        self._pump(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        self._pump(now)
        return self.hems.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        times = (self.hems.get_timer(), self.controller.get_timer())
        return min((t for t in times if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        t = self.hems.get_timer()
        if t is not None and t <= now:
            self.hems.handle_timer(now)
        t = self.controller.get_timer()
        if t is not None and t <= now:
            self.controller.handle_timer(now)
        self._pump(now)

    def next_event(self) -> BrouteHemsEvent | EchonetEvent | None:
        return self._events.popleft() if self._events else None

    # -- plumbing -------------------------------------------------------------------------------
    def _pump(self, now: float) -> None:
        """Move link events up and controller datagrams down until both are quiet."""
        while True:
            moved = False
            while (ev := self.hems.next_event()) is not None:
                moved = True
                if isinstance(ev, Received):
                    self._deliver(ev, now)
                    continue
                self._events.append(ev)
                if isinstance(ev, LinkUp) and ev.session_id != self._probed_session:
                    # A new PANA session may mean a restarted meter: learn it again.
                    self._probed_session = ev.session_id
                    self.controller.probe(self.meter, now)
            for data, dest in self.controller.datagrams_to_send(now):
                moved = True
                self._send(data, dest, now)
            while (cev := self.controller.next_event()) is not None:
                self._events.append(cev)
            if not moved:
                return

    def _deliver(self, ev: Received, now: float) -> None:
        if ev.dst_port != EL_PORT:
            self.counters["dropped_not_echonet"] += 1
            return
        src = (self.hems.meter[0], ev.src_port)
        self.controller.receive_datagram(ev.payload, src, now, multicast=ev.multicast)

    def _send(self, data: bytes, dest: Addr, now: float) -> None:
        if dest[0] != self.hems.meter[0]:
            # multicast discovery or another host: the B route reaches the meter only
            self.counters["dropped_not_meter"] += 1
            return
        try:
            self.hems.send(data, EL_PORT, EL_PORT, now)
        except NotConnected:
            self.counters["dropped_link_down"] += 1
