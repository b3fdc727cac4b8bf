"""The meter's network-access policy as a sans-IO engine: one PANA session after another.

`MeterAccess` owns the meter's side of network access (AMSO's "automatic renewal"): it runs a
PANA client (PaC) with EAP against the key server, installs each authentication's key generation
(UKMF) in the meter's `KeyRing`, lets old generations expire on the ring's own timer, retires the
keys of a session that ended, and after a failure or termination starts a new session after an
exponential back-off with jitter. Re-authentication before the session lifetime ends is the PaC's
own timer (`pana.pac`); this engine adds what happens *between* sessions.

It has the shape of every amistack engine (`receive_datagram / datagrams_to_send / get_timer /
handle_timer / next_event`), so `runtime.meter` drives it over a real UDP socket and `sim/` over
the virtual clock, and both run the same decisions. Its events are in `meter.events`:
`AccessGranted` (a generation installed), `AccessRefused`, `AccessLost`, `RetryScheduled` and
`KeysChanged` (what the ring did on its own: expiry).

Mesh group keys (docs/mesh-keys.md): a PANA success that carries a group key delivery (the key
server's vendor AVP, keymgmt/groupkeys.py) is opened under the session's GTK-KEK into
`group_keys`; `GroupKeysChanged` reports the key indexes and their validity (never the keys),
`GroupKeysRefused` a delivery that does not open or is older than the newest accepted.

Back-off: the first pause is `retry_backoff[0]`, each failure doubles it up to
`retry_backoff[1]`, and a success resets it. Each pause is drawn from
[(1 - jitter) x pause, pause] with the injected random source, so a fleet that lost its sessions
together (a blackout, a key-server restart) does not come back together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amistack.addr import Addr
from amistack.crypto import RandomSource
from amistack.keymgmt.groupkeys import (
    GroupKeyDelivery,
    GroupKeyError,
    GroupKeyHolder,
    find_delivery,
    gtk_kek,
)
from amistack.keymgmt.keyring import KeyRing
from amistack.meter.events import (
    AccessEvent,
    AccessGranted,
    AccessLost,
    AccessRefused,
    GroupKeysChanged,
    GroupKeysRefused,
    KeysChanged,
    RetryScheduled,
)
from amistack.pana.events import Authenticated, AuthenticationFailed, SessionTerminated
from amistack.pana.keys import PanaSecurityContext

# s between two requests for the group keys (request_group_keys): wsbrd DEFAULT_GTK_REQUEST_IMIN,
# 4 minutes (a Wi-SUN node's first GTK request interval)
GROUP_KEY_REQUEST_INTERVAL = 240.0


@dataclass(frozen=True)
class AccessConfig:
    """When the meter tries again. `retry_backoff`: (first, longest) pause in seconds before a new
    session after a refusal or a lost session; `jitter`: the random share of each pause (0 = the
    pause exactly, 0.5 = uniform in [pause/2, pause])."""

    retry_backoff: tuple[float, float] = (1.0, 60.0)
    jitter: float = 0.5

    def __post_init__(self) -> None:
        first, longest = self.retry_backoff
        if not 0 < first <= longest:
            raise ValueError(f"retry_backoff {self.retry_backoff}: need 0 < first <= longest")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter {self.jitter}: need 0 <= jitter <= 1")


class MeterAccess:
    """The meter's network access: PaC sessions, their keys, and the pauses between them.

    `new_pac()` builds a fresh PaC (a `pana.pac.PanaClient` or anything of its shape) for each
    session. Commands: `start(now)` once, `stop(now)` to leave the network (terminates a live
    session with a PTR and schedules nothing more)."""

    def __init__(
        self,
        device_id: str,
        new_pac: Callable[[], Any],
        keyring: KeyRing,
        rng: RandomSource,
        config: AccessConfig | None = None,
    ) -> None:
        self.device_id = device_id
        self.keyring = keyring
        self.config = config or AccessConfig()
        self._new_pac = new_pac
        self._rng = rng
        self._pac: Any | None = None
        self._closing: list[Any] = []  # ended PaCs whose last datagrams are still to be sent
        self._backoff = self.config.retry_backoff[0]
        self._retry_at: float | None = None
        self._stopped = False
        self._events: list[AccessEvent] = []  # not a deque: 760 bytes empty, per meter
        self.sessions = 0  # PaCs started
        self.authentications = 0
        self.group_keys = GroupKeyHolder()  # the mesh group keys last delivered
        self.counters: Counter[str] = Counter()
        self._group_keys_asked: float | None = None  # when request_group_keys last asked

    @property
    def pac(self) -> Any | None:
        """The PaC of the current session (None between sessions)."""
        return self._pac

    # -- commands ------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        if self._pac is not None or self._retry_at is not None:
            raise RuntimeError("network access already started")
        self._stopped = False
        self._begin(now)

    def stop(self, now: float) -> None:
        """Leave the network: end a live session (PTR) and start no new one."""
        self._stopped = True
        self._retry_at = None
        if self._pac is not None:
            self._pac.terminate(now)

    def request_group_keys(self, now: float) -> bool:
        """Ask for the current group keys now (a PaC-initiated re-authentication, whose success
        carries them): for the mesh layer when neighbours send under a key index this meter
        lacks, i.e. it missed a rotation's push. At most once per GROUP_KEY_REQUEST_INTERVAL
        (wsbrd's DEFAULT_GTK_REQUEST_IMIN); True if it asked."""
        asked = self._group_keys_asked
        pac = self._pac
        if pac is None or (asked is not None and now < asked + GROUP_KEY_REQUEST_INTERVAL):
            self.counters["group-keys-request-held"] += 1
            return False
        self._group_keys_asked = now
        self.counters["group-keys-requested"] += 1
        pac.reauthenticate(now)
        return True

    def reboot(self, now: float) -> None:
        """The meter lost power and came back: its session is gone without a word (no PTR, the
        key server finds out by itself), the back-off starts afresh, a new session starts now.
        Keys already in the ring stay until they expire or the new generation supersedes them."""
        self._pac = None
        self._closing.clear()
        self._retry_at = None
        self._stopped = False
        self._backoff = self.config.retry_backoff[0]
        self._begin(now)

    # -- engine interface ----------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if self._pac is not None:
            self._pac.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out: list[tuple[bytes, Addr]] = []
        if self._closing:
            for pac in self._closing:
                out.extend(pac.datagrams_to_send(now))
            self._closing.clear()
        if self._pac is not None:
            out.extend(self._pac.datagrams_to_send(now))
            self._pump(now)
            if self._closing:  # the session ended just now: its answer (e.g. a PTA) goes too
                for pac in self._closing:
                    out.extend(pac.datagrams_to_send(now))
                self._closing.clear()
        return out

    def get_timer(self) -> float | None:
        # asked after every input (a simulated fleet: ~10 times per meter per authentication
        # and per reading), so plain comparisons, not a list and min() over a generator
        at = self._retry_at
        for t in (self.keyring.get_timer(), self.group_keys.get_timer()):
            if t is not None and (at is None or t < at):
                at = t
        if self._pac is not None:
            t = self._pac.get_timer()
            if t is not None and (at is None or t < at):
                at = t
        return at

    def handle_timer(self, now: float) -> None:
        at = self.keyring.get_timer()
        if at is not None and at <= now:
            changed = self.keyring.expire(now)
            if changed:
                self._events.append(KeysChanged(self.device_id, tuple(changed)))
        at = self.group_keys.get_timer()
        if at is not None and at <= now:
            dropped = self.group_keys.expire(now)
            if dropped:
                self._group_keys_changed(dropped)
        if self._retry_at is not None and self._retry_at <= now:
            self._retry_at = None
            self._begin(now)
        pac = self._pac
        if pac is not None:
            at = pac.get_timer()
            if at is not None and at <= now:
                pac.handle_timer(now)
            self._pump(now)

    def next_event(self) -> AccessEvent | None:
        return self._events.pop(0) if self._events else None

    # -- the policy ----------------------------------------------------------------------------

    def _begin(self, now: float) -> None:
        self._pac = self._new_pac()
        self.sessions += 1
        self._pac.start(now)

    def _pump(self, now: float) -> None:
        """Act on what the PaC reported."""
        pac = self._pac
        while pac is not None and (event := pac.next_event()) is not None:
            if isinstance(event, Authenticated):
                self.authentications += 1
                self._backoff = self.config.retry_backoff[0]
                changed = self.keyring.install(event.context, event.lifetime, now)
                self._events.append(
                    AccessGranted(
                        self.device_id,
                        event.session_id,
                        event.context.key_id,
                        event.lifetime,
                        event.reauth,
                        tuple(changed),
                    )
                )
                self._take_group_keys(getattr(pac, "success_avps", ()), event.context, now)
            elif isinstance(event, AuthenticationFailed):
                self._events.append(
                    AccessRefused(self.device_id, event.session_id, event.reason, event.result_code)
                )
                self._end(now)
                return
            elif isinstance(event, SessionTerminated):
                changed = self.keyring.retire(event.session_id, now)
                self._events.append(
                    AccessLost(
                        self.device_id,
                        event.session_id,
                        event.reason,
                        event.by_peer,
                        tuple(changed),
                    )
                )
                self._end(now)
                return

    def _take_group_keys(self, avps: object, ctx: PanaSecurityContext, now: float) -> None:
        """Open the group key delivery of a PANA success, if it carries one."""
        avp = find_delivery(avps) if isinstance(avps, tuple) else None
        if avp is None:
            return
        try:
            self.group_keys.accept(GroupKeyDelivery.open(avp, gtk_kek(ctx), now))
        except GroupKeyError as exc:
            self.counters[f"group-keys-{exc.kind}"] += 1
            self._events.append(GroupKeysRefused(self.device_id, exc.kind, exc.reason))
            return
        self.counters["group-keys-accepted"] += 1
        self._group_keys_changed(())

    def _group_keys_changed(self, dropped: tuple[int, ...]) -> None:
        holder = self.group_keys
        assert holder.pan_id is not None and holder.serial is not None
        keys = tuple((k.index, k.not_before, k.not_after) for k in holder.held())
        self._events.append(
            GroupKeysChanged(self.device_id, holder.pan_id, holder.serial, keys, dropped)
        )

    def _end(self, now: float) -> None:
        """The session is over: keep its PaC until its last datagrams are out, then pause."""
        assert self._pac is not None
        self._closing.append(self._pac)
        self._pac = None
        if self._stopped:
            return
        pause = self._backoff * (1.0 - self.config.jitter * _unit(self._rng))
        self._retry_at = now + pause
        self._events.append(RetryScheduled(self.device_id, pause))
        self._backoff = min(self._backoff * 2, self.config.retry_backoff[1])


def _unit(rng: RandomSource) -> float:
    """A uniform draw in [0, 1) from the injected source."""
    return int.from_bytes(rng(4), "big") / 2**32
