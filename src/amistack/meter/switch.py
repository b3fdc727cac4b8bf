"""The meter's remote service switch (connect/disconnect relay) and its load limit.

Sans-IO and a function of time like the metering model: every operation carries `now`, and the
switch keeps its whole timeline, so `state_at(t)`, `relay_closed(t)` and `closed_seconds(a, b)`
answer for any time already decided. Operations must come in time order (`SwitchError` otherwise).

States (the usual ANSI C12.19 / DLMS disconnect-control shape):
  CONNECTED     relay closed, supply on
  DISCONNECTED  relay open (remote command, or tripped by the load limit)
  ARMED         relay open, the customer may close it with the button (reconnect without a truck
                roll while making sure someone is on site)

The load limit (demand response) is evaluated by `amistack.meter.model.MeterModel`, which knows the
power: when the instantaneous power exceeds the limit at one of its once-a-minute checks, the model
calls `trip(t)`.
"""

from __future__ import annotations

import bisect
import logging
from enum import Enum

from amistack.meter.events import SwitchOperated, SwitchReason

logger = logging.getLogger(__name__)


class SwitchState(Enum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    ARMED = "armed"


class SwitchError(Exception):
    """An operation the switch cannot do now (wrong state, or a time before its last change)."""


class RemoteSwitch:
    def __init__(self, initial: SwitchState = SwitchState.CONNECTED) -> None:
        self._times: list[float] = [float("-inf")]
        self._states: list[SwitchState] = [initial]
        self._limit_times: list[float] = [float("-inf")]
        self._limits: list[float | None] = [None]
        self.events: list[SwitchOperated] = []
        self.operations = 0  # relay actuations (open or close), as the meter counts them
        self.trips = 0  # load-limit trips
        self.version = 0  # bumped on every change; the model drops caches on it

    # --- reading ---------------------------------------------------------------------------

    @property
    def last_change(self) -> float:
        return max(self._times[-1], self._limit_times[-1])

    @property
    def state(self) -> SwitchState:
        """The latest state."""
        return self._states[-1]

    def state_at(self, t: float) -> SwitchState:
        return self._states[bisect.bisect_right(self._times, t) - 1]

    def relay_closed(self, t: float) -> bool:
        """Relay-state read-back at `t`."""
        return self.state_at(t) is SwitchState.CONNECTED

    def operations_at(self, t: float) -> int:
        return sum(1 for ev in self.events if ev.time <= t)

    @property
    def idle(self) -> bool:
        """Never operated and never given a load limit: it has produced no event and will
        produce none until a command comes."""
        return not self.events and len(self._limit_times) == 1

    def load_limit_at(self, t: float) -> float | None:
        """The load limit in W in force at `t` (None: no limit)."""
        return self._limits[bisect.bisect_right(self._limit_times, t) - 1]

    def closed_seconds(self, a: float, b: float) -> float:
        """Seconds of [a, b) during which the relay was closed."""
        if b <= a:
            return 0.0
        i = bisect.bisect_right(self._times, a) - 1
        total = 0.0
        t = a
        n = len(self._times)
        while t < b:
            nxt = self._times[i + 1] if i + 1 < n else float("inf")
            end = min(nxt, b)
            if self._states[i] is SwitchState.CONNECTED:
                total += end - t
            t = end
            i += 1
        return total

    def changes_between(self, a: float, b: float) -> list[tuple[float, SwitchState]]:
        """State changes with a < time <= b."""
        lo = bisect.bisect_right(self._times, a)
        hi = bisect.bisect_right(self._times, b)
        return list(zip(self._times[lo:hi], self._states[lo:hi], strict=True))

    def limit_changes_between(self, a: float, b: float) -> list[tuple[float, float | None]]:
        lo = bisect.bisect_right(self._limit_times, a)
        hi = bisect.bisect_right(self._limit_times, b)
        return list(zip(self._limit_times[lo:hi], self._limits[lo:hi], strict=True))

    # --- operating -------------------------------------------------------------------------

    def _check_time(self, now: float) -> None:
        if now < self.last_change:
            raise SwitchError(f"operation at {now} before the last change at {self.last_change}")

    def _set(self, now: float, state: SwitchState, reason: SwitchReason) -> SwitchOperated | None:
        before = self._states[-1]
        if now == self._times[-1]:
            self._states[-1] = state
        else:
            self._times.append(now)
            self._states.append(state)
        self.version += 1
        was_closed = before is SwitchState.CONNECTED
        closed = state is SwitchState.CONNECTED
        if was_closed == closed:
            return None
        self.operations += 1
        ev = SwitchOperated(now, closed, reason, self.operations)
        self.events.append(ev)
        logger.info(
            "relay %s", "closed" if closed else "opened", extra={"reason": reason.name, "t": now}
        )
        return ev

    def disconnect(
        self, now: float, reason: SwitchReason = SwitchReason.REMOTE
    ) -> SwitchOperated | None:
        """Open the relay (no-op event when already open; an ARMED switch goes DISCONNECTED)."""
        self._check_time(now)
        return self._set(now, SwitchState.DISCONNECTED, reason)

    def arm(self, now: float) -> None:
        """Allow the customer to reconnect with the button. Only from DISCONNECTED."""
        self._check_time(now)
        if self.state is SwitchState.CONNECTED:
            raise SwitchError("cannot arm a connected switch")
        self._set(now, SwitchState.ARMED, SwitchReason.REMOTE)

    def connect(
        self, now: float, reason: SwitchReason = SwitchReason.REMOTE
    ) -> SwitchOperated | None:
        """Close the relay directly (remote reconnect)."""
        self._check_time(now)
        return self._set(now, SwitchState.CONNECTED, reason)

    def press_button(self, now: float) -> SwitchOperated | None:
        """The customer's button: closes an ARMED switch, does nothing otherwise."""
        self._check_time(now)
        if self.state is not SwitchState.ARMED:
            return None
        return self._set(now, SwitchState.CONNECTED, SwitchReason.BUTTON)

    def set_load_limit(self, limit_w: float | None, now: float) -> None:
        """Demand response: trip when the power exceeds `limit_w` (None removes the limit)."""
        self._check_time(now)
        if limit_w is not None and limit_w <= 0:
            raise SwitchError("load limit must be positive")
        if now == self._limit_times[-1]:
            self._limits[-1] = limit_w
        else:
            self._limit_times.append(now)
            self._limits.append(limit_w)
        self.version += 1

    def rollback_after(self, t: float) -> None:
        """Forget relay changes after `t` (load-limit trips the model predicted ahead of a command
        that may now change them)."""
        n = bisect.bisect_right(self._times, t)
        if n == len(self._times):
            return
        del self._times[n:]
        del self._states[n:]
        kept = [ev for ev in self.events if ev.time <= t]
        self.trips -= sum(
            1 for ev in self.events[len(kept) :] if ev.reason is SwitchReason.LOAD_LIMIT
        )
        self.events = kept
        self.operations = len(kept)
        self.version += 1

    def trip(self, t: float) -> SwitchOperated | None:
        """The load limit was exceeded at `t` (called by the model)."""
        self.trips += 1
        return self.disconnect(t, SwitchReason.LOAD_LIMIT)
