"""The HEMS end of the B route (sans-IO): PANA Client + secured link, with the guideline's
keep-alive (§6.4) and staged reconnection (§6.5).

Link states: CONNECTING (stage 0..3), UP, WAITING (all stages failed: retry later), CLOSED.

§6.4 keep-alive: when nothing authenticated has come from the meter for `keepalive_interval` s,
a PANA ping (PNR with the P flag) goes out; no answer within `keepalive_timeout` s and the link
is down.

§6.5 reconnection when the link is down (keep-alive failed, the PANA session ended, a
re-authentication failed, or `decrypt_failures` secured frames in a row did not decrypt):
  stage 1  PANA re-authentication of the existing session (PNR with the A flag; after a failed
           keep-alive the ping is still outstanding -- PANA allows one request at a time -- so
           the re-authentication follows as soon as the meter answers it);
  stage 2  a new initial authentication (PCI) to the same meter address;
  stage 3  `RescanRequested`: the application (radio) scans again and calls
           `rescan_result(addr, now)`; a new authentication to the address it gives.
Each stage has a timeout (`stage_timeouts`); `ReconnectStage` marks a stage's start and
`ReconnectStageEnded` its end with the time it took; `LinkUp` says which stage brought the link
back. After stage 3 fails, `ReconnectFailed` and a retry from stage 2 after `retry_interval`.
A failed attempt inside stage 2 or 3 (no answer, an unexpected PANA packet that made the meter
restart the authentication: §6.9) is retried with a new PCI after `restart_delay` s while the
stage's time lasts. A refusal of our credentials (the meter's PAR with the C flag and a failure
Result-Code: a wrong B-route ID or password) is not: the HEMS stops at the first one
(`AttemptFailed(final=True)`, link CLOSED) unless `retry_refused`, since retrying the same
password only repeats the refusal (and would look like guessing to the meter).

Key switch on re-authentication: the PaC has the new key one message (its PAN) before the meter,
so the HEMS keeps sending under the previous key until a frame under the new key arrives or
`key_switch_delay` s pass; the meter still decrypts the previous key for its overlap window.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum

from amistack.addr import Addr
from amistack.broute.credentials import BrouteCredentials
from amistack.broute.events import (
    AttemptFailed,
    BrouteHemsEvent,
    KeyRotated,
    LinkDown,
    LinkUp,
    Received,
    ReconnectFailed,
    ReconnectStage,
    ReconnectStageEnded,
    RescanRequested,
    Stage,
)
from amistack.broute.link import (
    EUI64_LENGTH,
    CounterExhausted,
    DropReason,
    LinkDecodeError,
    LinkKey,
    PanaFrame,
    Plaintext,
    SecuredFrame,
    decode_frame,
    random_eui64,
)
from amistack.crypto import RandomSource
from amistack.eap.packet import EapType
from amistack.eap.peer import EapPeer
from amistack.eap.psk import EapPskPeer, PskKeys
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.ukmf import LINK, KeyId, PurposeRegistry
from amistack.pana.events import (
    Authenticated,
    AuthenticationFailed,
    PingCompleted,
    SessionTerminated,
)
from amistack.pana.pac import PacConfig, PacState, PanaClient

logger = logging.getLogger(__name__)

__all__ = ["BrouteHems", "BrouteHemsConfig", "LinkState", "NotConnected"]


class NotConnected(Exception):
    """`send` without a link key (not authenticated yet, or the link is gone)."""


class LinkState(Enum):
    CONNECTING = "connecting"
    UP = "up"
    WAITING = "waiting"  # every stage failed; a retry is scheduled
    CLOSED = "closed"


@dataclass(frozen=True)
class BrouteHemsConfig:
    eui64: bytes | None = None  # the HEMS's link address (CCM* nonce); None: random
    pac: PacConfig = field(default_factory=PacConfig)
    keepalive_interval: float = 60.0  # s of silence before a PANA ping (§6.4)
    keepalive_timeout: float = 10.0  # s for the ping's answer
    decrypt_failures: int = 3  # meter frames in a row that do not decrypt -> link down
    stage_timeouts: tuple[float, float, float] = (30.0, 60.0, 120.0)  # §6.5 stages 1, 2, 3
    initial_timeout: float = 60.0  # s for stage 0 (start) before going to stage 3 (rescan)
    restart_delay: float = 1.0  # s before a new PCI after a failed attempt within a stage
    retry_interval: float = 60.0  # s after ReconnectFailed before stage 2 again
    auto_reconnect: bool = True
    # the meter ended our session on purpose (PTR, e.g. §6.12: a newer HEMS took the B route):
    # by default do not fight back; the application decides (start() again)
    reconnect_after_meter_termination: bool = False
    link_overlap: float = 30.0  # s a superseded link key still decrypts
    key_switch_delay: float = 1.0  # s at most before sending under a re-authentication's key
    replay_window: int = 64
    retry_refused: bool = False  # retry after the meter refused our credentials (see above)

    def __post_init__(self) -> None:
        if self.eui64 is not None and len(self.eui64) != EUI64_LENGTH:
            raise ValueError("eui64 must be 8 octets")
        if len(self.stage_timeouts) != 3 or min(self.stage_timeouts) <= 0:
            raise ValueError("stage_timeouts: three positive durations (stages 1, 2, 3)")
        if self.keepalive_interval <= 0 or self.keepalive_timeout <= 0:
            raise ValueError("keep-alive interval and timeout must be > 0")
        if self.decrypt_failures < 1:
            raise ValueError("decrypt_failures must be >= 1")


class BrouteHems:
    """The HEMS side of the B route: authenticate to the meter at `meter`, then exchange UDP
    payloads (ECHONET Lite on 3610) in secured link frames."""

    def __init__(
        self,
        credentials: BrouteCredentials,
        meter: Addr,
        rng: RandomSource,
        config: BrouteHemsConfig | None = None,
    ) -> None:
        self.config = cfg = config or BrouteHemsConfig()
        self.credentials = credentials
        self.meter = meter
        self._rng = rng
        self.eui64 = cfg.eui64 if cfg.eui64 is not None else random_eui64(rng)
        self._meter_eui: bytes | None = None  # learnt from the meter's PANA frames
        self._psk = PskKeys(credentials.psk)
        self._ring = self._new_ring()
        self._keys: dict[KeyId, LinkKey] = {}
        self._tx: KeyId | None = None
        self._tx_next: tuple[KeyId, float] | None = None  # (new key, switch at the latest)
        self.pac: PanaClient | None = None
        self.state = LinkState.CLOSED
        self.stage: Stage | None = None
        self._stage_started = 0.0
        self._stage_deadline: float | None = None
        self._restart_at: float | None = None
        self._retry_at: float | None = None
        self._down_since: float | None = None
        self._last_rx = 0.0
        self._ping_deadline: float | None = None
        self._reauth_after_ping = False
        self._bad_frames = 0
        self._out: list[tuple[bytes, Addr]] = []
        self._events: deque[BrouteHemsEvent] = deque()
        self.counters: Counter[str] = Counter()

    # -- views ----------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.state is LinkState.UP

    @property
    def session_id(self) -> int | None:
        return None if self.pac is None else self.pac.session_id

    @property
    def key_id(self) -> KeyId | None:
        """The link key generation frames are sent under."""
        return self._tx

    # -- commands -------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Authenticate to the meter (stage 0). Also restarts a terminated or waiting HEMS."""
        if self.state not in (LinkState.CLOSED, LinkState.WAITING):
            self.counters["start_ignored"] += 1
            return
        self._down_since = None
        self._enter_stage(Stage.INITIAL, now)
        self._pump(now)

    def send(
        self, payload: bytes, src_port: int, dst_port: int, now: float, multicast: bool = False
    ) -> None:
        """Send one UDP payload to the meter in a secured frame; NotConnected without a key."""
        self._switch_key(now, None)
        kid = self._tx
        lk = None if kid is None else self._keys.get(kid)
        if kid is None or lk is None or self._ring.lookup(kid, LINK, now) is None:
            raise NotConnected("no B-route link key (not authenticated to the meter)")
        try:
            frame = lk.protect(Plaintext(src_port, dst_port, bytes(payload)), multicast)
        except CounterExhausted:
            self.counters["counter_exhausted"] += 1
            self._reauthenticate(now)
            raise NotConnected("link key used up; re-authenticating") from None
        self.counters["tx_secured"] += 1
        self._out.append((frame.encode(), self.meter))

    def terminate(self, now: float) -> None:
        """End the PANA session (PTR, LOGOUT) and stop reconnecting."""
        was_up = self.state is LinkState.UP
        self.state = LinkState.CLOSED
        self.stage = None
        self._stage_deadline = self._restart_at = self._retry_at = self._ping_deadline = None
        if self.pac is not None:
            self.pac.terminate(now)
        if self.pac is not None and self.pac.session_id is not None:
            self._ring.retire(self.pac.session_id, now)
        self._tx = None
        self._tx_next = None
        if was_up:
            self._events.append(LinkDown("terminated locally"))
        self._pump(now)

    def rescan_result(self, meter: Addr, now: float) -> None:
        """Stage 3: the meter is (now) at `meter`; authenticate to it."""
        self.meter = meter
        if self.state is LinkState.CONNECTING and self.stage is Stage.RESCAN:
            self._new_pac(now)
            self._pump(now)

    def reauthenticate(self, now: float) -> None:
        """PANA re-authentication now (fresh link key; KeyRotated when it completes)."""
        if self.state is LinkState.UP:
            self._reauthenticate(now)
            self._pump(now)

    def reconnect(self, now: float) -> None:
        """Treat the link as down now (e.g. the radio lost the meter) and start at stage 1
        (stage 2 without a PANA session); from WAITING, retry at once."""
        if self.state is LinkState.UP:
            self._link_down("reconnect requested", now)
        elif self.state is LinkState.WAITING:
            self._retry_at = None
            pac = self.pac
            has_session = pac is not None and pac.context is not None
            self._enter_stage(Stage.REAUTH if has_session else Stage.NEW_AUTH, now)
        self._pump(now)

    # -- engine shape ---------------------------------------------------------------------------
    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        try:
            frame = decode_frame(data)
        except LinkDecodeError as exc:
            self._drop(exc)
            return
        try:
            if isinstance(frame, PanaFrame):
                self.counters["rx_pana"] += 1
                self._meter_eui = frame.source  # our unicast frames' destination
                if self.pac is not None:
                    self.pac.receive_datagram(frame.message, addr, now)
            else:
                self._on_secured(frame, addr, now)
        except Exception:  # one datagram must never take the HEMS down
            self.counters["internal_error"] += 1
            logger.exception("B-route HEMS failed on a datagram")
        self._pump(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> BrouteHemsEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = [
            None if self.pac is None else self.pac.get_timer(),
            self._ring.get_timer(),
            self._stage_deadline,
            self._restart_at,
            self._retry_at,
            self._ping_deadline,
            None if self._tx_next is None else self._tx_next[1],
            self._keepalive_at(),
        ]
        return min((t for t in times if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        if self.pac is not None:
            t = self.pac.get_timer()
            if t is not None and t <= now:
                self.pac.handle_timer(now)
        t = self._ring.get_timer()
        if t is not None and t <= now:
            self._ring.expire(now)
            live = set(self._ring.key_ids())
            for kid in [k for k in self._keys if k not in live]:
                del self._keys[kid]
                if self._tx == kid:
                    self._tx = None
        self._switch_key(now, None)
        self._pump(now)  # PaC events first: they may settle what the deadlines below wait for
        if self._ping_deadline is not None and now >= self._ping_deadline:
            self._ping_deadline = None
            self.counters["keepalive_failed"] += 1
            if self.state is LinkState.UP:
                self._link_down("keep-alive: no answer to a PANA ping", now)
        ka = self._keepalive_at()
        if ka is not None and now >= ka:
            self._ping(now)
        if self._stage_deadline is not None and now >= self._stage_deadline:
            self._stage_timed_out(now)
        if self._restart_at is not None and now >= self._restart_at:
            self._restart_at = None
            if self.state is LinkState.CONNECTING:
                self._new_pac(now)
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            if self.state is LinkState.WAITING:
                self._enter_stage(Stage.NEW_AUTH, now)
        self._pump(now)

    # -- input ----------------------------------------------------------------------------------
    def _drop(self, exc: LinkDecodeError) -> None:
        self.counters[f"drop_{exc.kind.value}"] += 1
        logger.debug("B-route HEMS dropped a frame: %s", exc)

    def _on_secured(self, frame: SecuredFrame, addr: Addr, now: float) -> None:
        lk = self._keys.get(frame.key_id)
        try:
            if lk is None or self._ring.lookup(frame.key_id, LINK, now) is None:
                raise LinkDecodeError(2, "no such link key", DropReason.UNKNOWN_KEY_ID)
            plain = lk.unprotect(frame)
        except LinkDecodeError as exc:
            self._drop(exc)
            if exc.kind in (DropReason.UNKNOWN_KEY_ID, DropReason.FORGED):
                self._bad_frames += 1
                if self._bad_frames >= self.config.decrypt_failures and self.connected:
                    self._link_down("secured frames from the meter no longer decrypt", now)
            return
        self._bad_frames = 0
        self._last_rx = now
        self.counters["rx_secured"] += 1
        self._switch_key(now, frame.key_id)
        self._events.append(
            Received(
                plain.payload,
                plain.src_port,
                plain.dst_port,
                (addr[0], plain.src_port),
                plain.multicast,
            )
        )

    # -- PaC events -------------------------------------------------------------------------------
    def _pump(self, now: float) -> None:
        pac = self.pac
        if pac is not None:
            while (ev := pac.next_event()) is not None:
                if pac is not self.pac:
                    break  # a handler replaced the PaC: the old one's news is moot
                if isinstance(ev, Authenticated):
                    self._on_authenticated(ev, now)
                elif isinstance(ev, PingCompleted):
                    self._last_rx = now
                    self._ping_deadline = None
                    if self._reauth_after_ping:
                        self._reauth_after_ping = False
                        self._reauthenticate(now)
                elif isinstance(ev, AuthenticationFailed):
                    self.counters["auth_failed"] += 1
                    reason = f"authentication failed: {ev.reason}"
                    if (
                        ev.refused
                        and self.state is LinkState.CONNECTING
                        and not self.config.retry_refused
                    ):
                        self._refused(reason)
                    else:
                        self._attempt_failed(reason, now)
                elif isinstance(ev, SessionTerminated):
                    self.counters["session_terminated"] += 1
                    if ev.by_peer and self.state is LinkState.UP:
                        self._terminated_by_meter(ev.reason, now)
                    else:
                        self._attempt_failed(f"PANA session ended: {ev.reason}", now)
            for raw, dst in pac.datagrams_to_send(now):
                self._out.append((PanaFrame(raw, self.eui64, self._meter_eui).encode(), dst))
        if self.pac is not None and self.pac is not pac:
            self._pump(now)

    def _new_ring(self) -> KeyRing:
        return KeyRing(b"meter", PurposeRegistry([LINK]), overlap=self.config.link_overlap)

    def _on_authenticated(self, ev: Authenticated, now: float) -> None:
        kid = KeyId.of(ev.context)
        if kid in self._ring.key_ids():
            # A restarted meter drew the session id of the session it forgot: that session's
            # keys are dead, so they go, not the new authentication.
            self.counters["session_id_reused"] += 1
            self._ring = self._new_ring()
            self._keys.clear()
            self._tx = self._tx_next = None
        self._ring.install(ev.context, ev.lifetime, now)
        key = self._ring.lookup(kid, LINK, now)
        assert key is not None  # just installed
        self._keys[kid] = LinkKey(
            kid, key.key, self.eui64, self.config.replay_window, peer=self._meter_eui
        )
        previous = self._tx
        if ev.reauth and previous is not None and previous.session_id == kid.session_id:
            # the meter learns this key from our PAN: keep the old one a moment (module doc)
            self._tx_next = (kid, now + self.config.key_switch_delay)
        else:
            self._tx, self._tx_next = kid, None
        self._last_rx = now
        self._ping_deadline = None
        self._reauth_after_ping = False
        self._bad_frames = 0
        if self.state is LinkState.UP:
            self.counters["key_rotated"] += 1
            self._events.append(KeyRotated(ev.session_id, kid))
            return
        stage = self.stage if self.stage is not None else Stage.INITIAL
        elapsed = now - self._stage_started
        if stage is not Stage.INITIAL:
            self._events.append(ReconnectStageEnded(stage, True, self._stage_started, elapsed))
        downtime = 0.0 if self._down_since is None else now - self._down_since
        self.state = LinkState.UP
        self.stage = None
        self._stage_deadline = self._restart_at = self._retry_at = None
        self._down_since = None
        self.counters["link_up"] += 1
        logger.info(
            "B-route link up",
            extra={"session_id": ev.session_id, "key_id": str(kid), "stage": int(stage)},
        )
        self._events.append(LinkUp(ev.session_id, kid, stage, elapsed, downtime))

    def _terminated_by_meter(self, reason: str, now: float) -> None:
        self.counters["terminated_by_meter"] += 1
        sid = self.session_id
        if sid is not None:
            self._ring.retire(sid, now)
        if self.config.reconnect_after_meter_termination:
            self._link_down(f"PANA session ended: {reason}", now)
            return
        self.state = LinkState.CLOSED
        self.stage = None
        self._stage_deadline = self._restart_at = self._retry_at = self._ping_deadline = None
        self._tx = self._tx_next = None
        self._events.append(LinkDown(f"the meter ended the session: {reason}", by_meter=True))

    def _refused(self, reason: str) -> None:
        """The meter refused our credentials: stop (the module docstring says why)."""
        self.counters["refused"] += 1
        self._events.append(AttemptFailed(self.stage or Stage.INITIAL, reason, final=True))
        logger.warning("B-route authentication refused; not retrying: %s", reason)
        self.state = LinkState.CLOSED
        self.stage = None
        self.pac = None
        self._stage_deadline = self._restart_at = self._retry_at = self._ping_deadline = None
        self._tx = self._tx_next = None

    def _attempt_failed(self, reason: str, now: float) -> None:
        if self.state is LinkState.UP:
            self._link_down(reason, now)
        elif self.state is LinkState.CONNECTING:
            self._events.append(AttemptFailed(self.stage or Stage.INITIAL, reason))
            if self.stage is Stage.REAUTH:  # the session is gone: stage 1 cannot succeed
                self._end_stage(False, now)
                self._enter_stage(Stage.NEW_AUTH, now)
            else:
                self._restart_at = now + self.config.restart_delay

    # -- keep-alive and stages --------------------------------------------------------------------
    def _keepalive_at(self) -> float | None:
        if self.state is not LinkState.UP or self._ping_deadline is not None:
            return None
        return self._last_rx + self.config.keepalive_interval

    def _ping(self, now: float) -> None:
        pac = self.pac
        if pac is None or pac.state is not PacState.OPEN:
            # a request is outstanding (e.g. a re-authentication): its answer is the proof
            self._last_rx = now
            return
        refused = pac.counters["ping_refused"]
        pac.ping(now)
        if pac.counters["ping_refused"] != refused:  # another request is in flight
            self._last_rx = now
            return
        self.counters["keepalive_ping"] += 1
        self._ping_deadline = now + self.config.keepalive_timeout

    def _link_down(self, reason: str, now: float) -> None:
        self.state = LinkState.CONNECTING
        self._down_since = now
        self._ping_deadline = None
        self.counters["link_down"] += 1
        logger.info("B-route link down", extra={"reason": reason})
        self._events.append(LinkDown(reason))
        if not self.config.auto_reconnect:
            self.state = LinkState.WAITING
            return
        pac = self.pac
        if pac is not None and pac.context is not None:
            self._enter_stage(Stage.REAUTH, now)
        else:
            self._enter_stage(Stage.NEW_AUTH, now)

    def _enter_stage(self, stage: Stage, now: float) -> None:
        cfg = self.config
        self.state = LinkState.CONNECTING
        self.stage = stage
        self._stage_started = now
        self._restart_at = None
        timeout = cfg.initial_timeout if stage is Stage.INITIAL else cfg.stage_timeouts[stage - 1]
        self._stage_deadline = now + timeout
        if stage is not Stage.INITIAL:
            self.counters[f"stage{int(stage)}"] += 1
            self._events.append(ReconnectStage(stage, now))
        if stage is Stage.REAUTH:
            self._reauthenticate(now)
        elif stage is Stage.RESCAN:
            self.pac = None
            self._events.append(RescanRequested(now, self._stage_deadline))
        else:
            self._new_pac(now)

    def _end_stage(self, ok: bool, now: float) -> None:
        if self.stage is not None and self.stage is not Stage.INITIAL:
            elapsed = now - self._stage_started
            self._events.append(ReconnectStageEnded(self.stage, ok, self._stage_started, elapsed))

    def _stage_timed_out(self, now: float) -> None:
        self._stage_deadline = None
        stage = self.stage
        if self.state is not LinkState.CONNECTING or stage is None:
            return
        self._end_stage(False, now)
        self.counters["stage_timeout"] += 1
        if stage is Stage.REAUTH:
            self._enter_stage(Stage.NEW_AUTH, now)
        elif stage in (Stage.NEW_AUTH, Stage.INITIAL):
            self._enter_stage(Stage.RESCAN, now)
        else:
            self.state = LinkState.WAITING
            self.stage = None
            self.pac = None
            self._restart_at = None
            self._retry_at = now + self.config.retry_interval
            since = self._down_since if self._down_since is not None else now
            self._events.append(ReconnectFailed(now - since, self._retry_at))

    def _reauthenticate(self, now: float) -> None:
        pac = self.pac
        if pac is None:
            return
        if pac.state is PacState.WAIT_PNA_PING:
            self._reauth_after_ping = True  # one PANA request at a time (RFC 5191 §4.2)
        elif pac.state is PacState.OPEN:
            pac.reauthenticate(now)
        # else a re-authentication is already running

    def _new_pac(self, now: float) -> None:
        ident = self.credentials.identity
        psk, rng = self._psk, self._rng

        def eap_factory() -> EapPeer:
            return EapPeer(ident, {EapType.PSK: lambda: EapPskPeer(ident, psk, rng)})

        self.pac = PanaClient(self.config.pac, eap_factory, rng, self.meter)
        self._reauth_after_ping = False
        self.counters["pci"] += 1
        self.pac.start(now)

    def _switch_key(self, now: float, seen: KeyId | None) -> None:
        nxt = self._tx_next
        if nxt is not None and (seen == nxt[0] or now >= nxt[1]):
            self._tx, self._tx_next = nxt[0], None
