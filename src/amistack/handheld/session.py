"""A work session on the field handheld (sans-IO): the patent's embodiment 1, online relay.

    isolated mesh (radio) <-> DODAG root + PANA relay <-> IPv6 packets <-> secure channel (WAN)
                                   ^ group keys from the handheld's own PANA run

JP5701792B2, claim 1: the handheld authenticates itself to the key server, then relays the
isolated meters' authentication to it; claim 2: it is the DODAG root and keeps the route table;
claim 3: it displays the work data. A `WorkSession` exists only for a logged-in technician
(`Principal`, from `handheld.technician`) and one work order:

1. `start(now)`: the handheld's own PaC (EAP-PSK with the handheld's credential, PANA session id
   and keys of its own) runs with the key server, through the channel. Its datagrams leave as
   IPv6/UDP packets from the handheld's global address, port `HANDHELD_PAC_PORT`, to
   `(WAN_ADDR)`: the runtime puts them in the mutual-TLS channel.
2. On its `Authenticated`, the key server's group-key delivery (keymgmt/groupkeys.py, wrapped
   under the handheld's GTK-KEK) gives the isolated PAN's link keys; the handheld becomes the
   DODAG root (`mesh.node.MeshNode.concentrator`: RPL root, PANA Relay Element for its radio
   neighbours, border router). A re-authentication's delivery (a rotation) updates the keys.
3. Meters join as under a concentrator (docs/mesh-join.md): their PANA runs end to end with the
   key server inside PRYs (RFC 6345); their keys are wrapped under keys only they and the key
   server hold. The handheld forwards IPv6 between the DODAG and the channel (C12.22 between the
   meters and the head-end too) and sees no meter key.
4. `view(now)` is the work display, filtered by the technician's rights; `authorize(op)` says
   whether the technician may do an operation (`OPERATION_RIGHT`), and `record_result` keeps
   what the head-end answered (in memory, for the display, until the session ends): the last
   answer per meter and operation, and the newest `RESULT_ROWS` answers in order (`results`,
   the screen's table: meter, operation, result, time).
5. `end(reason, now)` (stop, logout, `idle_timeout`/`max_duration`, or the key server refusing or
   ending the handheld's session): PANA termination is sent, the DODAG root, its link keys,
   the group keys and every result are dropped, and the engine refuses all traffic from then on.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from amistack.access.rights import Right, role_names
from amistack.access.users import Principal
from amistack.addr import Addr, Eui64, PanId
from amistack.crypto.rand import RandomSource
from amistack.eap.peer import EapPeer
from amistack.handheld.events import (
    HandheldAuthenticated,
    HandheldRefused,
    MeterRouted,
    WorkEnded,
    WorkEvent,
    WorkStarted,
)
from amistack.keymgmt.groupkeys import GroupKeyDelivery, GroupKeyError, find_delivery, gtk_kek
from amistack.mesh.errors import MeshDecodeError
from amistack.mesh.ipv6 import NEXT_HEADER_UDP, Ipv6Packet, UdpDatagram
from amistack.mesh.link import MeshLink
from amistack.mesh.node import MeshNode
from amistack.mesh.rpl.config import RplConfig
from amistack.mesh.rpl.messages import PrefixInformation
from amistack.mesh.rpl.node import RplNode
from amistack.mesh.rpl.packet import LINK_LOCAL_PREFIX
from amistack.mesh.security import LinkSecurity, MemoryCounterStore
from amistack.pana.events import Authenticated, AuthenticationFailed, SessionTerminated
from amistack.pana.pac import PacConfig, PanaClient

__all__ = [
    "HANDHELD_PAC_PORT",
    "OPERATION_RIGHT",
    "RESULT_ROWS",
    "WAN_ADDR",
    "HandheldConfig",
    "NotPermitted",
    "Operation",
    "WorkSession",
    "WorkState",
]

log = logging.getLogger(__name__)

WAN_ADDR: Addr = ("channel:wan", 0)  # IPv6 packets for the office: the secure channel
# The handheld's own PaC uses another UDP port than 716, on which its relay serves the meters
# (RFC 5191 §6.1 names 716 for the PAA; a PaC may use any source port)
HANDHELD_PAC_PORT = 49716
RESULT_ROWS = 50  # answers the work display lists (older ones drop off; bounded memory)


class Operation(StrEnum):
    """What a technician can do from the handheld."""

    VIEW = "view"  # see the work data: meters, routes, readings and results
    READ = "read"  # a meter's readings, as the head-end collected them
    CONNECT = "connect"
    DISCONNECT = "disconnect"
    COMMISSION = "commission"


# The right each operation needs (access/rights.py's one role -> rights table decides who):
# VIEWER sees and reads, OPERATOR switches, INSTALLER commissions (docs/access-control.md; the
# head-end's own routes need the same rights).
OPERATION_RIGHT: dict[Operation, Right] = {
    Operation.VIEW: Right.READ,
    Operation.READ: Right.READ,
    Operation.CONNECT: Right.CONTROL,
    Operation.DISCONNECT: Right.CONTROL,
    Operation.COMMISSION: Right.COMMISSION,
}


class NotPermitted(Exception):
    """The technician's roles do not grant the operation (or no work session is running)."""

    def __init__(self, operation: Operation, why: str) -> None:
        super().__init__(f"{operation.value}: {why}")
        self.operation = operation
        self.why = why


class WorkState(StrEnum):
    AUTHENTICATING = "authenticating"  # the handheld's own PANA run
    SERVING = "serving"  # DODAG root and relay
    ENDED = "ended"


@dataclass(frozen=True)
class HandheldConfig:
    device_id: str  # the handheld's PANA/EAP identity, enrolled at the key server
    eui: Eui64  # its radio's EUI-64
    pan: PanId  # the isolated mesh's PAN (the key server must deliver its group keys)
    prefix: bytes  # the isolated mesh's /64 (16 octets, low half zero)
    keyserver: Addr  # the key server's IPv6 address and PANA port, as seen through the channel
    rpl: RplConfig = field(default_factory=RplConfig)
    pac: PacConfig = field(default_factory=PacConfig)
    idle_timeout: float = 900.0  # s without a technician's action before the session ends
    max_duration: float = 8 * 3600.0  # s: one working shift at most

    def __post_init__(self) -> None:
        if len(self.prefix) != 16 or any(self.prefix[8:]):
            raise ValueError("prefix: a /64 as 16 octets with the low half zero")
        if not (self.idle_timeout > 0 and self.max_duration > 0):
            raise ValueError("timeouts must be > 0")

    @property
    def address(self) -> bytes:
        """The handheld's global address in the isolated mesh (the DODAG root's)."""
        return self.prefix[:8] + self.eui.interface_id()


class WorkSession:
    """One work session (module docstring): an engine with the usual sans-IO surface. Radio
    frames come from and go to radio addresses (`mesh.node.radio_addr`); IPv6 packets for the
    office come from and go to `WAN_ADDR`."""

    def __init__(
        self,
        config: HandheldConfig,
        technician: Principal,
        work_order: str,
        eap: Callable[[], EapPeer],
        rng: RandomSource,
        now: float,
    ) -> None:
        if not technician.may(OPERATION_RIGHT[Operation.VIEW]):
            raise NotPermitted(Operation.VIEW, "the technician's roles grant no work")
        self.config = config
        self.technician = technician
        self.work_order = work_order
        self.started_at = now
        self.state = WorkState.AUTHENTICATING
        self.counters: Counter[str] = Counter()
        self._rng = rng
        self._ks_ip = ipaddress.IPv6Address(config.keyserver[0])
        self._own_ip = ipaddress.IPv6Address(config.address)
        self._pac: PanaClient | None = PanaClient(config.pac, eap, rng, config.keyserver)
        self._root: MeshNode | None = None
        self._routed: set[bytes] = set()
        self._results: dict[str, dict[str, Any]] = {}  # meter -> last result per operation
        self._log: deque[dict[str, Any]] = deque(maxlen=RESULT_ROWS)  # newest last
        self._wan_out: list[bytes] = []
        self._last_action = now
        self._events: deque[WorkEvent] = deque([WorkStarted(technician.name, work_order)])

    # -- commands -------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        assert self._pac is not None
        self._pac.start(now)

    def end(self, reason: str, now: float) -> None:
        """Tear down: PANA termination out, the DODAG and every key and result dropped."""
        if self.state is WorkState.ENDED:
            return
        if self._pac is not None:
            self._pac.terminate(now)  # its PTR leaves with the next datagrams_to_send
        self._root = None  # the DODAG, its link keys and route table go with it
        self._routed.clear()
        self._results.clear()
        self._log.clear()
        self.state = WorkState.ENDED
        self._events.append(WorkEnded(reason))
        log.info("work session ended", extra={"reason": reason, "work_order": self.work_order})

    def authorize(self, operation: Operation, now: float) -> None:
        """NotPermitted unless the session serves and the technician's roles allow it."""
        if self.state is WorkState.ENDED:
            raise NotPermitted(operation, "no work session")
        right = OPERATION_RIGHT[operation]
        if not self.technician.may(right):
            self.counters["not-permitted"] += 1
            raise NotPermitted(operation, f"needs the {right.value!r} right")
        self._last_action = now

    def record_result(
        self, meter: str, operation: Operation, result: Any, now: float, at: float | None = None
    ) -> None:
        """What the head-end answered for an authorised operation, kept for the display only
        while the session lasts; `at` is the time to show (the runtime's wall clock; default
        `now`)."""
        self.authorize(operation, now)
        self._results.setdefault(meter, {})[operation.value] = result
        self._log.append({"meter": meter, "operation": operation.value, "result": result,
                          "at": now if at is None else at})  # fmt: skip

    def results(self) -> list[dict[str, Any]]:
        """The newest answers first (for the screen: reading it is no technician's action)."""
        return list(reversed(self._log))

    # -- the work display (claim 3) -------------------------------------------------------------

    @property
    def root(self) -> MeshNode | None:
        return self._root

    def route_table(self, now: float) -> dict[str, list[str]]:
        """Claim 2: the DODAG root's route table, target -> source route (addresses)."""
        if self._root is None:
            return {}
        table = self._root.rpl.route_table(now)
        return {
            str(ipaddress.IPv6Address(t)): [str(ipaddress.IPv6Address(h)) for h in (p or [])]
            for t, p in sorted(table.items())
        }

    def view(self, now: float) -> dict[str, Any]:
        """The work data for the logged-in technician, only what their roles allow."""
        self.authorize(Operation.VIEW, now)
        rights = self.technician.rights
        return {
            "technician": self.technician.name,
            "roles": role_names(self.technician.roles),
            "work_order": self.work_order,
            "state": self.state.value,
            "handheld": self.config.device_id,
            "routes": self.route_table(now),
            "meters": sorted(str(ipaddress.IPv6Address(a)) for a in self._routed),
            "joins_relayed": 0 if self._root is None else self._root.relay.counters["to_paa"],
            "results": {m: dict(r) for m, r in sorted(self._results.items())},
            "may": sorted(op.value for op, r in OPERATION_RIGHT.items() if r in rights),
        }

    # -- the engine surface ---------------------------------------------------------------------

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        if self.state is WorkState.ENDED:
            self.counters["after-end"] += 1
            return
        if addr == WAN_ADDR:
            self._from_wan(data, now)
        elif self._root is not None:
            self._root.receive_datagram(data, addr, now, multicast)
        else:
            self.counters["radio-before-root"] += 1  # no keys yet: nothing to serve

    def _from_wan(self, data: bytes, now: float) -> None:
        try:
            packet = Ipv6Packet.decode(data)
            mine = packet.dst == self._own_ip and packet.next_header == NEXT_HEADER_UDP
            udp = UdpDatagram.decode(packet) if mine else None
        except MeshDecodeError:
            self.counters["wan-decode-error"] += 1
            return
        if udp is not None and udp.dst_port == HANDHELD_PAC_PORT:
            if packet.src == self._ks_ip and udp.src_port == self.config.keyserver[1]:
                assert self._pac is not None
                self._pac.receive_datagram(udp.payload, self.config.keyserver, now)
            else:
                self.counters["wan-unexpected"] += 1
        elif self._root is not None:
            self._root.receive_datagram(data, WAN_ADDR, now)
        else:
            self.counters["wan-before-root"] += 1

    def _pump(self, now: float) -> None:
        pac = self._pac
        if pac is None:
            return
        self._pac_out(pac, now)
        while (event := pac.next_event()) is not None:
            if isinstance(event, Authenticated):
                self._authenticated(pac, event, now)
            elif isinstance(event, AuthenticationFailed | SessionTerminated):
                why = "refused" if isinstance(event, AuthenticationFailed) else "session ended"
                if self.state is not WorkState.ENDED:
                    self._events.append(HandheldRefused(why))
                    self.end(f"key server: {why}", now)
        if self.state is WorkState.ENDED:
            self._pac_out(pac, now)  # the PTR terminate() queued
            self._pac = None  # its PANA SA and keys go with it

    def _pac_out(self, pac: PanaClient, now: float) -> None:
        """The PaC's datagrams as IPv6/UDP packets from the handheld to the key server."""
        for data, _ in pac.datagrams_to_send(now):
            udp = UdpDatagram(HANDHELD_PAC_PORT, self.config.keyserver[1], data)
            segment = udp.encode(self._own_ip, self._ks_ip)
            self._wan_out.append(
                Ipv6Packet(self._own_ip, self._ks_ip, NEXT_HEADER_UDP, segment).encode()
            )

    def _authenticated(self, pac: PanaClient, event: Authenticated, now: float) -> None:
        avp = find_delivery(pac.success_avps)
        if avp is None:
            self.counters["group-keys-missing"] += 1
            self._events.append(HandheldRefused("no group keys for the isolated PAN"))
            self.end("key server delivered no group keys", now)
            return
        try:
            delivery = GroupKeyDelivery.open(avp, gtk_kek(event.context), now)
        except GroupKeyError as exc:
            self.counters[f"group-keys-{exc.kind}"] += 1
            self.end(f"group keys unusable ({exc.kind})", now)
            return
        keys = delivery.keys
        if delivery.pan_id != self.config.pan.value:
            self._events.append(HandheldRefused("no group keys for the isolated PAN"))
            self.end("key server delivered no group keys for this PAN", now)
            return
        if self._root is not None:  # a re-authentication: a rotation's keys
            self._root.update_group_keys(keys, now)
            return
        cfg = self.config
        link = MeshLink(LinkSecurity(cfg.eui, MemoryCounterStore()), cfg.pan, self._rng)
        rpl = RplNode(LINK_LOCAL_PREFIX + cfg.eui.interface_id(), cfg.rpl, self._rng,
                      root_prefix=PrefixInformation(cfg.prefix, 64))  # fmt: skip
        self._root = MeshNode.concentrator(link, rpl, cfg.keyserver, self._rng, WAN_ADDR, keys, now)
        self._root.start(now)
        self.state = WorkState.SERVING
        self._events.append(HandheldAuthenticated(str(event.context.key_id)))

    def _pump_root(self, now: float) -> list[tuple[bytes, Addr]]:
        root = self._root
        if root is None:
            return []
        out = root.datagrams_to_send(now)
        while root.next_event() is not None:
            pass  # RPL/relay events of the root: the route table below says what matters
        for target in root.rpl.routes.keys() - self._routed:
            self._routed.add(target)
            self._events.append(MeterRouted(str(ipaddress.IPv6Address(target))))
        return out

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        self._pump(now)
        out = self._pump_root(now)
        if self._wan_out:
            out += [(p, WAN_ADDR) for p in self._wan_out]
            self._wan_out = []
        return out

    def _deadline(self) -> float:
        return min(
            self._last_action + self.config.idle_timeout,
            self.started_at + self.config.max_duration,
        )

    def get_timer(self) -> float | None:
        if self.state is WorkState.ENDED:
            return None
        times = [self._deadline()]
        for engine in (self._pac, self._root):
            if engine is not None and (t := engine.get_timer()) is not None:
                times.append(t)
        return min(times)

    def handle_timer(self, now: float) -> None:
        if self.state is WorkState.ENDED:
            return
        if now >= self._deadline():
            self.end("timeout", now)
            return
        for engine in (self._pac, self._root):
            if engine is not None and (t := engine.get_timer()) is not None and t <= now:
                engine.handle_timer(now)

    def next_event(self) -> WorkEvent | None:
        return self._events.popleft() if self._events else None
