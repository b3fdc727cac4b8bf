"""When a meter behind a mesh concentrator registers with the head-end (sans-IO).

The head-end reaches a meshed meter at its concentrator's C12.22 relay, which routes by
ApTitle; the relay binds the meter's ApTitle to its mesh address once the head-end has
answered a C12.22 message of the meter (mesh.gateway, docs/mesh.md). A meter that only
answers polls would never send one, so it *registers*: its C12.22 node sends the head-end one
Identify (service 0x20)

- each time the mesh node becomes relay-ready (it joined; joined again after a restart or a
  repair: a new place in the DODAG, perhaps a new concentrator), and
- at each PANA re-authentication while relay-ready (a new key generation, which the head-end
  learns from it; and a binding refreshed at least once a session lifetime, so one lost with
  a restarted concentrator comes back).

`Registration.handle(event, relay_ready, now)` takes the mesh node's and the C12.22 node's
events and gives each back, with the head-end's answer to a registration replaced by
`Registered`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from amistack.c1222.events import RequestTimedOut, ResponseReceived
from amistack.c1222.services import Identify
from amistack.mesh.node import RelayReady
from amistack.meter.node import MeterNode
from amistack.pana.events import Authenticated

log = logging.getLogger(__name__)

__all__ = ["Registered", "Registration"]


@dataclass(frozen=True)
class Registered:
    """The head-end answered the meter's registration: the concentrator has bound the meter's
    ApTitle, the head-end can reach it."""

    request_id: int


class Registration:
    """The registration policy of one meshed meter (module docstring)."""

    def __init__(self, meter: MeterNode) -> None:
        self.meter = meter
        self.counters: Counter[str] = Counter()
        self.pending: set[int] = set()  # registrations awaiting the answer

    def handle(self, event: object, relay_ready: bool, now: float) -> object:
        """Feed an event (after the key ring took an `Authenticated`); the event to report."""
        again = isinstance(event, Authenticated) and event.reauth and relay_ready
        if isinstance(event, RelayReady) or again:
            self._register(now)
        if isinstance(event, ResponseReceived | RequestTimedOut) and event.request_id in (
            self.pending
        ):
            self.pending.discard(event.request_id)
            if isinstance(event, ResponseReceived) and event.ok:
                self.counters["registered"] += 1
                return Registered(event.request_id)
            self.counters["not-answered"] += 1
        return event

    def _register(self, now: float) -> None:
        config = self.meter.config
        if config.headend_addr is None:
            return
        try:
            rid = self.meter.server.request(
                config.headend_addr, config.headend_title, [Identify()], now
            )
        except ValueError as exc:  # no key yet, or too many outstanding: the next event retries
            self.counters["not-sent"] += 1
            log.info("meter %s: not registered: %s", config.ap_title, exc)
            return
        self.counters["sent"] += 1
        self.pending.add(rid)
