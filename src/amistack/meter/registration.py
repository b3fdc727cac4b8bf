"""When and how a meter behind a mesh concentrator registers, with C12.22's own Registration
service (c1222/registration.py, C12.22 §5.3.2.4.10), sans-IO.

The head-end reaches a meshed meter at its concentrator, a C12.22 relay, which routes by
ApTitle; the relay learns ApTitle -> native address from the meter's <register> and binds it
once the master relay (the head-end) has granted it (mesh.gateway, docs/mesh.md). The meter
sends the head-end one <register> (its ApTitle, its global IPv6 address and C12.22 port as
native address, the period it asks for), in the EPSEM mode "cleartext with authentication":
EAX' under its UKMF C12.22 key makes it unforgeable, and the relay on the way can read it.

- It registers each time the mesh node becomes relay-ready (it joined; joined again after a
  restart or a repair: a new place in the DODAG, perhaps a new concentrator), and at each PANA
  re-authentication while relay-ready (a new key generation, which the head-end learns from it).
- It registers again before the granted <reg-period> ends (at `REFRESH` of it), since the
  relay forgets a binding whose period is over; so a binding lost with a restarted
  concentrator comes back within one period too.
- An unanswered or refused registration is tried again at the next of these.

`RegisteringMeter` is the meter's C12.22 engine with this policy on top (an Engine that wraps
`MeterNode`: the refresh is its timer; the head-end's answer to a registration comes out of
`next_event` as `Registered`); the mesh node's events go to `node_event`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from amistack.addr import Addr
from amistack.c1222.epsem import SecurityMode
from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.events import RequestTimedOut, ResponseReceived
from amistack.c1222.registration import Registration, RegistrationResult, native_address
from amistack.mesh.node import RelayReady
from amistack.meter.node import MeterNode
from amistack.pana.events import Authenticated

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PERIOD", "REFRESH", "Registered", "RegisteringMeter"]

DEFAULT_PERIOD = 1800  # seconds of registration the meter asks for (the head-end may grant other)
REFRESH = 0.75  # register again at this fraction of the granted period (before the relay forgets)


@dataclass(frozen=True)
class Registered:
    """The head-end granted the meter's registration: the concentrator has bound the meter's
    ApTitle, the head-end can reach it, for `period` seconds."""

    request_id: int
    relay: str  # the ApTitle of the relay it is registered with (the master relay, here)
    period: int


class RegisteringMeter:
    """The meter's C12.22 node registering as the module docstring says. `where()`: the
    meter's native address in the mesh ((global IPv6 address, C12.22 port)) while the mesh
    node is relay-ready, else None; `period`: the registration period it asks for."""

    def __init__(
        self, meter: MeterNode, where: Callable[[], Addr | None], period: int = DEFAULT_PERIOD
    ) -> None:
        self.meter = meter
        self.where = where
        self.period = period
        self.counters: Counter[str] = Counter()
        self.pending: set[int] = set()  # registrations awaiting the answer
        self.refresh_at: float | None = None
        self._now = 0.0  # the time of the last input (an answer's arrival: next_event has none)

    # -- the Engine: the meter's, with the refresh timer and the answers turned into events

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self._now = now
        self.meter.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return self.meter.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        own = self.meter.get_timer()
        if self.refresh_at is None:
            return own
        return self.refresh_at if own is None else min(own, self.refresh_at)

    def handle_timer(self, now: float) -> None:
        self._now = now
        if self.refresh_at is not None and self.refresh_at <= now:
            self.refresh_at = None
            self.counters["refreshed"] += 1
            self.register(now)
        self.meter.handle_timer(now)

    def next_event(self) -> object | None:
        event = self.meter.next_event()
        if isinstance(event, ResponseReceived | RequestTimedOut) and event.request_id in (
            self.pending
        ):
            self.pending.discard(event.request_id)
            return self._answered(event, event.request_id)
        return event

    # -- the policy

    def node_event(self, event: object, now: float) -> None:
        """An event of the mesh node (after the key ring took an `Authenticated`)."""
        if isinstance(event, RelayReady) or (isinstance(event, Authenticated) and event.reauth):
            self.register(now)

    def register(self, now: float) -> int | None:
        """Send the head-end a <register> now, if the node is relay-ready; its request id."""
        config = self.meter.config
        at = self.where()
        if at is None or config.headend_addr is None:
            return None
        request = Registration(
            config.ap_title,
            native_address(*at),
            self.period,
            device_class=self.meter.server.tables.config.device_class,
        )
        try:
            rid = self.meter.server.request(
                config.headend_addr,
                config.headend_title,
                [request],
                now,
                security_mode=SecurityMode.CLEARTEXT_AUTH,  # readable by the relay, unforgeable
            )
        except ValueError as exc:  # no key yet, or too many outstanding: the next event retries
            self.counters["not-sent"] += 1
            log.info("meter %s: not registered: %s", config.ap_title, exc)
            return None
        self.counters["sent"] += 1
        self.pending.add(rid)
        return rid

    def _answered(self, event: ResponseReceived | RequestTimedOut, rid: int) -> object:
        if isinstance(event, ResponseReceived) and event.ok:
            try:
                result = RegistrationResult.decode(event.responses[0].data)
            except C1222DecodeError:
                self.counters["bad-answer"] += 1
                return event
            self.counters["registered"] += 1
            self.refresh_at = self._now + result.reg_period * REFRESH
            return Registered(rid, str(result.relay), result.reg_period)
        self.counters["not-answered"] += 1
        return event
