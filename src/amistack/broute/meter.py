"""The meter's end of the B route (sans-IO): PANA Authentication Agent + secured link + the
ECHONET Lite node, one engine at one address.

    link datagram --PANA frame-------> PanaAuthAgent (EAP-PSK, one PSK per accepted B-route ID)
                  --secured frame----> LinkKey.unprotect --> EchonetNode.receive_datagram
    EchonetNode output --------------> LinkKey.protect --> the authenticated HEMS(es) only

Nothing ECHONET Lite leaves unencrypted and nothing unauthenticated reaches the node: the node's
multicasts (startup INF of D5, EA/EB every 30 min, property-change INFs) go to every
authenticated HEMS as secured frames with the multicast flag; its unicast answers go to the HEMS
at that host. Datagrams for a host with no authenticated HEMS are dropped and counted.

Guideline chapter 6 cases handled here:
  * §6.7: a new HEMS can connect at any time; nothing locks a B-route ID or a source out after
    failures -- the PAA's only limits are per source and short (PCI token bucket, half-open
    bound; amistack.pana.paa), and no power cycle is needed to accept a new controller.
  * §6.9 (the meter should not stop on an unexpected PANA packet, but discard the PANA
    authentication and start it again): nothing stops the node; the PAA drops and counts what
    does not fit (bad sequence, wrong session, stray source, bad AUTH) and the authentication
    carries on; a new PCI from a source whose authentication is in progress *restarts* it (the
    old half-open session is ended at once so it does not hold a per-source slot), and a
    termination or notification request from that source naming its run -- the HEMS giving
    it up -- discards the run at once, ready for the next PCI.
  * §6.12: while HEMS A is connected, a newcomer's PANA exchange does not touch A; only when
    the newcomer *succeeds* are the oldest sessions beyond `max_sessions` (default 1: the B
    route serves one HEMS) ended with a PTR. A newcomer that fails leaves A as it was.
Re-authentication rotates the link key: the new generation is used at once for sending, the
previous one still decrypts for `link_overlap` seconds (keymgmt.KeyRing).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from amistack.addr import Addr
from amistack.broute.credentials import BrouteCredentials
from amistack.broute.events import (
    BrouteMeterEvent,
    HemsAuthFailed,
    HemsConnected,
    HemsDisconnected,
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
from amistack.eap.psk import EapPskServer, PskKeys
from amistack.echonet.events import EchonetEvent
from amistack.echonet.frame import Esv, Frame, Property
from amistack.echonet.node import NODE_PROFILE, EchonetNode
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.ukmf import LINK, KeyId, PurposeRegistry
from amistack.pana.constants import Flag, MessageType
from amistack.pana.errors import PanaDecodeError
from amistack.pana.events import Authenticated, AuthenticationFailed, SessionTerminated
from amistack.pana.local_backend import LocalEapBackend
from amistack.pana.message import PanaMessage
from amistack.pana.paa import PaaConfig, PaaState, PanaAuthAgent

logger = logging.getLogger(__name__)

__all__ = ["BrouteMeter", "BrouteMeterConfig", "ConnectedHems"]

EPC_INSTANCE_LIST = 0xD5
_MAX_IN_PROGRESS = 4096  # sources with an authentication in progress that we remember (§6.9)
_IN_EAP = frozenset({PaaState.WAIT_EAP_MSG, PaaState.WAIT_PAN_OR_PAR, PaaState.WAIT_SUCC_PAN})
# What a HEMS sends to give an authentication up before it has a PANA SA (guideline §6.9).
_ABANDON_TYPES = frozenset({MessageType.TERMINATION, MessageType.NOTIFICATION})


@dataclass(frozen=True)
class BrouteMeterConfig:
    meter_id: bytes = b"amistack-meter"  # ID_S of EAP-PSK (the server identity)
    eui64: bytes | None = None  # the meter's link address (CCM* nonce); None: random
    max_sessions: int = 1  # §6.12: HEMSes served at once; a newer success ends the oldest
    paa: PaaConfig = field(default_factory=PaaConfig)
    link_overlap: float = 10.0  # s a superseded link key still decrypts after re-auth
    replay_window: int = 64
    announce_on_connect: bool = True  # send the D5 instance list INF to a newly joined HEMS
    pci_restart_guard: float = 2.0  # s: a PCI younger than this is a retransmission, not §6.9

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        if self.eui64 is not None and len(self.eui64) != EUI64_LENGTH:
            raise ValueError("eui64 must be 8 octets")
        if self.link_overlap < 0:
            raise ValueError("link_overlap must be >= 0")


@dataclass
class ConnectedHems:
    """An authenticated HEMS as the meter sees it."""

    session_id: int
    rbid: str
    addr: Addr  # where its link frames come from (PANA route)
    connected_at: float
    ring: KeyRing
    keys: dict[KeyId, LinkKey] = field(default_factory=dict)
    tx: KeyId | None = None

    @property
    def key_id(self) -> KeyId | None:
        return self.tx


class BrouteMeter:
    """The meter side of the B route. `credentials`: the B-route IDs (and passwords) accepted."""

    def __init__(
        self,
        node: EchonetNode,
        credentials: BrouteCredentials | Iterable[BrouteCredentials],
        rng: RandomSource,
        config: BrouteMeterConfig | None = None,
    ) -> None:
        self.config = cfg = config or BrouteMeterConfig()
        self.node = node
        self._rng = rng
        creds = [credentials] if isinstance(credentials, BrouteCredentials) else list(credentials)
        self._psks: dict[bytes, PskKeys] = {}
        for c in creds:
            self.add_credentials(c)
        self.eui64 = cfg.eui64 if cfg.eui64 is not None else random_eui64(rng)
        self._link_addrs: OrderedDict[Addr, bytes] = OrderedDict()  # PANA source -> EUI-64
        self.backend = LocalEapBackend(
            lambda: [lambda: EapPskServer(cfg.meter_id, self._psks.get, rng)], rng
        )
        self.paa = PanaAuthAgent(cfg.paa, self.backend, rng)
        self._registry = PurposeRegistry([LINK])
        self._hems: dict[int, ConnectedHems] = {}  # session id -> HEMS, oldest first
        self._in_progress: dict[Addr, tuple[int, float]] = {}  # PAR(S) sent: (sid, when)
        self._out: list[tuple[bytes, Addr]] = []
        self._events: deque[BrouteMeterEvent | EchonetEvent] = deque()
        self._tid = 0
        self.counters: Counter[str] = Counter()

    # -- configuration and views ----------------------------------------------------------------
    def add_credentials(self, credentials: BrouteCredentials) -> None:
        """Accept one more B-route ID (or replace its password)."""
        self._psks[credentials.identity] = PskKeys(credentials.psk)

    def remove_credentials(self, rbid: str, now: float) -> None:
        """Stop accepting `rbid`; its connected HEMSes are disconnected."""
        self._psks.pop(rbid.encode("ascii"), None)
        for h in [h for h in self._hems.values() if h.rbid == rbid]:
            self._end(h, "B-route ID removed", now)
        self._pump(now)

    @property
    def connected(self) -> list[ConnectedHems]:
        """The authenticated HEMSes, oldest first."""
        return list(self._hems.values())

    # -- commands -------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Start the ECHONET Lite node (its §4.2 startup INF reaches the HEMSes joined by then)."""
        self.node.start(now)

    def link_key(self, key_id: KeyId, now: float) -> bytes | None:
        """A connected HEMS's link key by its id, for a capture's decryption table (Wireshark's
        IEEE 802.15.4 keys, docs/broute.md); None when it is not held."""
        h = self._hems.get(key_id.session_id)
        key = None if h is None else h.ring.lookup(key_id, LINK, now)
        return None if key is None else key.key

    def disconnect(self, session_id: int, now: float, reason: str = "disconnected") -> None:
        h = self._hems.get(session_id)
        if h is not None:
            self._end(h, reason, now)
            self._pump(now)

    # -- engine shape ---------------------------------------------------------------------------
    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        try:
            frame = decode_frame(data)
        except LinkDecodeError as exc:
            self._drop(exc, addr)
            return
        try:
            if isinstance(frame, PanaFrame):
                self._link_addrs[addr] = frame.source  # our unicast frames' destination
                self._link_addrs.move_to_end(addr)
                if len(self._link_addrs) > _MAX_IN_PROGRESS:
                    self._link_addrs.popitem(last=False)
                self._on_pana(frame.message, addr, now)
            else:
                self._on_secured(frame, addr, now)
        except Exception:  # one datagram must never stop the meter (guideline 6.9)
            self.counters["internal_error"] += 1
            logger.exception("B-route meter failed on a datagram")
        self._pump(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> BrouteMeterEvent | EchonetEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = [self.paa.get_timer(), self.node.get_timer()]
        times += [h.ring.get_timer() for h in self._hems.values()]
        return min((t for t in times if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        self.paa.handle_timer(now)
        self.node.handle_timer(now)
        for h in self._hems.values():
            t = h.ring.get_timer()
            if t is not None and t <= now:
                h.ring.expire(now)
                live = set(h.ring.key_ids())
                for kid in [k for k in h.keys if k not in live]:
                    del h.keys[kid]
        self._pump(now)

    # -- input ----------------------------------------------------------------------------------
    def _drop(self, exc: LinkDecodeError, addr: Addr) -> None:
        self.counters[f"drop_{exc.kind.value}"] += 1
        logger.debug("B-route meter dropped a frame from %s: %s", addr, exc)

    def _on_pana(self, message: bytes, addr: Addr, now: float) -> None:
        self.counters["rx_pana"] += 1
        try:
            msg = PanaMessage.decode(message)
        except PanaDecodeError:
            msg = None  # the PAA counts it
        if msg is not None and msg.msg_type == MessageType.PCI:
            self._maybe_restart(addr, now)
        elif msg is not None and self._abandoned(msg, addr, now):
            return
        self.paa.receive_datagram(message, addr, now)

    def _abandoned(self, msg: PanaMessage, addr: Addr, now: float) -> bool:
        """§6.9: a HEMS that, in the middle of its authentication, sends a termination or
        notification request for it (its "error" -- no PANA SA exists yet, so it cannot carry
        AUTH) has given this run up: discard the authentication at once, so that its next PCI
        starts a fresh one, rather than keeping the run until it times out. Only from the
        source the run belongs to; the same from any other address is dropped by the PAA."""
        if msg.msg_type not in _ABANDON_TYPES or not msg.flags & Flag.R:
            return False
        entry = self._in_progress.get(addr)
        if entry is None or entry[0] != msg.session_id or msg.session_id in self._hems:
            return False
        if self.paa.state_of(msg.session_id) not in _IN_EAP:
            return False
        self.counters["auth_abandoned"] += 1
        logger.info("authentication abandoned by the HEMS", extra={"session_id": msg.session_id})
        self.paa.terminate(msg.session_id, now, "the HEMS gave the authentication up (6.9)")
        del self._in_progress[addr]
        return True

    def _maybe_restart(self, addr: Addr, now: float) -> None:
        """§6.9: a new PCI while this source's authentication is in its EAP run restarts it."""
        entry = self._in_progress.get(addr)
        if entry is None:
            return
        sid, since = entry
        if sid in self._hems or now - since < self.config.pci_restart_guard:
            return  # an authenticated session (the newcomer gets its own), or a retransmission
        if self.paa.state_of(sid) in _IN_EAP:
            self.counters["auth_restarted"] += 1
            logger.info("authentication restarted by a new PCI", extra={"session_id": sid})
            self.paa.terminate(sid, now, "authentication restarted by a new PCI (guideline 6.9)")
            del self._in_progress[addr]

    def _on_secured(self, frame: SecuredFrame, addr: Addr, now: float) -> None:
        h = self._hems.get(frame.key_id.session_id)
        lk = None if h is None else h.keys.get(frame.key_id)
        if h is None or lk is None or h.ring.lookup(frame.key_id, LINK, now) is None:
            self._drop(LinkDecodeError(2, "no such link key", DropReason.UNKNOWN_KEY_ID), addr)
            return
        try:
            plain = lk.unprotect(frame)
        except LinkDecodeError as exc:
            self._drop(exc, addr)
            return
        self.counters["rx_secured"] += 1
        if plain.dst_port != self.node.config.port:
            self.counters["port_unreachable"] += 1
            return
        # The node sees the HEMS at the address of its PANA route, whatever address relayed
        # this frame: its answer (to that host, port 3610) then goes to the HEMS whose key
        # protected the request. (One HEMS per host address, as on the radio.)
        self.node.receive_datagram(
            plain.payload, (h.addr[0], plain.src_port), now, multicast=plain.multicast
        )

    # -- PANA outcomes ----------------------------------------------------------------------------
    def _pump(self, now: float) -> None:
        while (ev := self.paa.next_event()) is not None:
            if isinstance(ev, Authenticated):
                self._on_authenticated(ev, now)
            elif isinstance(ev, AuthenticationFailed):
                self._forget_progress(ev.session_id)
                self.counters["auth_failed"] += 1
                self._events.append(HemsAuthFailed(ev.session_id, ev.addr, ev.reason))
            elif isinstance(ev, SessionTerminated):
                self._forget_progress(ev.session_id)
                h = self._hems.pop(ev.session_id, None)
                if h is not None:
                    self._wipe(h, now)
                    self._events.append(HemsDisconnected(ev.session_id, ev.reason))
        for h in self._hems.values():  # an authenticated PANA message may move a HEMS
            route = self.paa.route_of(h.session_id)
            if route is not None and route.relay is None:
                h.addr = route.pac
        for raw, dst in self.paa.datagrams_to_send(now):
            self._note_start(raw, dst, now)
            frame = PanaFrame(raw, self.eui64, self._link_addrs.get(dst))
            self._out.append((frame.encode(), dst))
        for data, dst in self.node.datagrams_to_send(now):
            self._route(data, dst, now)
        while (nev := self.node.next_event()) is not None:
            self._events.append(nev)

    def _note_start(self, raw: bytes, dst: Addr, now: float) -> None:
        """Remember which session a source's PAR(S) opened (for the §6.9 restart)."""
        if len(raw) >= 16 and raw[7] == MessageType.AUTH and raw[4] & (Flag.S >> 8):
            sid = int.from_bytes(raw[8:12], "big")
            if self._in_progress.get(dst, (None, 0.0))[0] != sid:
                self._in_progress[dst] = (sid, now)
                if len(self._in_progress) > _MAX_IN_PROGRESS:
                    self._prune_progress()

    def _prune_progress(self) -> None:
        """Half-open sessions that time out end without an event: forget them here, so a PCI
        flood from many (spoofed) sources leaves a bounded table."""
        for a, (sid, _) in list(self._in_progress.items()):
            if self.paa.state_of(sid) in (None, PaaState.CLOSED):
                del self._in_progress[a]
        while len(self._in_progress) > _MAX_IN_PROGRESS // 2:
            del self._in_progress[next(iter(self._in_progress))]

    def _forget_progress(self, sid: int) -> None:
        for a in [a for a, (s, _) in self._in_progress.items() if s == sid]:
            del self._in_progress[a]

    def _on_authenticated(self, ev: Authenticated, now: float) -> None:
        self._forget_progress(ev.session_id)
        h = self._hems.get(ev.session_id)
        rbid = (ev.peer_id or b"").decode("ascii", "replace")
        if h is None:
            ring = KeyRing(
                ev.session_id.to_bytes(4, "big"), self._registry, overlap=self.config.link_overlap
            )
            h = ConnectedHems(ev.session_id, rbid, ev.addr, now, ring)
        h.ring.install(ev.context, ev.lifetime, now)
        kid = KeyId.of(ev.context)
        key = h.ring.lookup(kid, LINK, now)
        assert key is not None  # just installed
        peer = self._link_addrs.get(ev.addr)
        h.keys[kid] = LinkKey(kid, key.key, self.eui64, self.config.replay_window, peer=peer)
        h.tx = kid
        h.addr = ev.addr
        self.counters["reauthenticated" if ev.reauth else "connected"] += 1
        self._events.append(HemsConnected(ev.session_id, rbid, ev.addr, kid, ev.reauth))
        if ev.session_id in self._hems:
            return
        self._hems[ev.session_id] = h
        # §6.12: only now, with the newcomer authenticated, make room by ending the oldest
        while len(self._hems) > self.config.max_sessions:
            oldest = next(iter(self._hems.values()))
            self._end(oldest, "replaced by a newly authenticated HEMS (guideline 6.12)", now)
        if self.config.announce_on_connect:
            self._announce_instances_to(h, now)

    def _end(self, h: ConnectedHems, reason: str, now: float) -> None:
        self._hems.pop(h.session_id, None)
        self._wipe(h, now)
        self.paa.terminate(h.session_id, now, reason)
        self.counters["ended"] += 1
        self._events.append(HemsDisconnected(h.session_id, reason))

    def _wipe(self, h: ConnectedHems, now: float) -> None:
        h.ring.shorten(now, now)
        h.keys.clear()
        h.tx = None

    # -- output -----------------------------------------------------------------------------------
    def _announce_instances_to(self, h: ConnectedHems, now: float) -> None:
        edt = self.node.profile.read(EPC_INSTANCE_LIST, now)
        if edt is None:
            return
        self._tid = (self._tid + 1) & 0xFFFF
        inf = Frame(self._tid, NODE_PROFILE, NODE_PROFILE, Esv.INF, (Property(0xD5, edt),))
        port = self.node.config.port
        self._send(h, Plaintext(port, port, inf.encode()), True, now)

    def _route(self, data: bytes, dst: Addr, now: float) -> None:
        port = self.node.config.port
        if _is_multicast(dst[0]):
            if not self._hems:
                self.counters["multicast_no_hems"] += 1
            for h in self._hems.values():
                self._send(h, Plaintext(port, dst[1], data), True, now)
            return
        target = None
        for h in self._hems.values():  # the newest HEMS at that host
            if h.addr[0] == dst[0]:
                target = h
        if target is None:
            self.counters["no_link_to_destination"] += 1
            return
        self._send(target, Plaintext(port, dst[1], data), False, now)

    def _send(self, h: ConnectedHems, plain: Plaintext, multicast: bool, now: float) -> None:
        lk = None if h.tx is None else h.keys.get(h.tx)
        if lk is None:
            self.counters["no_link_key"] += 1
            return
        try:
            frame = lk.protect(plain, multicast)
        except CounterExhausted:  # practically never (2**32 frames): a new key via re-auth
            self.counters["counter_exhausted"] += 1
            self.paa.reauthenticate(h.session_id, now)
            return
        self.counters["tx_secured"] += 1
        self._out.append((frame.encode(), h.addr))


def _is_multicast(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_multicast
    except ValueError:
        return False
