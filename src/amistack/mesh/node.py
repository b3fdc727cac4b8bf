"""A mesh node: the link layer, RPL, and joining through a PANA relay (sans-IO).

    radio frames <-> MeshLink (802.15.4, CCM*, 6LoWPAN) <-> policy here <-> RplNode / PaC / PRE

A meter starts with no link key. It listens for DIOs sent in the clear (every relay-ready node
sends each of its trickle DIOs twice: secured for the DODAG, and unsecured as a join beacon, as
Wi-SUN's PAN Advertisement is), waits `JoinConfig.listen` after the first, and chooses the
neighbour advertising the lowest rank as its parent. It then runs PANA (`pana.pac.PanaClient`,
EAP inside) with that parent as if it were the PAA: UDP port 716, link-local addresses, frames
unsecured. Until PANA succeeds that is all it may send, and all it accepts: unsecured frames that
are not PANA from its chosen parent are dropped and counted.

A node that has joined is a PANA Relay Element (RFC 6345, `pana.relay.PanaRelay`) for its
neighbours: an unsecured UDP datagram to its link-local address, port 716, holding a PANA message
(not a PRY) is wrapped in a PRY with the newcomer's link-local address as PaC-Information and sent
up the DODAG, secured, to the PAA's address on the WAN; the PAA's PRY answers come down the DODAG
and the Relayed-Message goes back to the newcomer in the clear. Nothing else a stranger sends is
forwarded: every frame the DODAG carries is CCM*-secured under the group key.

After PANA success (`Authenticated`) the node opens the group key delivery the key server put
in the final PAR (keymgmt/groupkeys.py: wrapped under the session's GTK-KEK; docs/mesh-keys.md),
installs the keys in its link (`mesh.groupkeys.apply_group_keys`), starts its RPL engine,
joins the DODAG as a router, and once its DAO is acknowledged (the root has a route down to it)
is relay-ready: it sends join beacons and relays for its own neighbours (`RelayReady`). A refused
or timed-out PANA run is tried again after an exponential back-off with jitter; a run that timed
out also drops that parent from the candidates.

PANA follows the DODAG: `JoinConfig.pana_move_delay` after RPL chose a preferred parent other
than the one PANA runs through (joining, or a parent change), the PaC's PAA address becomes the
new parent and the PaC sends a PANA-Ping through it (RFC 5191 §4.2, AUTH-protected), so the PAA
moves the session's route to the new relay (RFC 6345; the PAA's `route_changed`): re-authentications
and the key server's group-key pushes then reach the meter through the parent it has now,
not through one that may be gone. Messages of our session still in flight through the previous
parent are taken too.

A session that ends while the node is in the DODAG (a ping or re-authentication through a
parent that went away unanswered, the PAA's PTR, the lifetime) is run again from scratch:
after the back-off pause a new PaC authenticates through RPL's preferred parent, which relays
it, and the C12.22 keys follow the new session. The node stays in the DODAG meanwhile.

The concentrator is the same node built with `MeshNode.concentrator`: DODAG root, PANA relay for
its own neighbours, keyed and relay-ready from the start, and border router to the WAN: a
secured packet from the mesh for an address outside the mesh prefix goes to `wan` as a plain
IPv6 packet (the RPL extension headers removed, RFC 9008 §5), and an IPv6 packet from the WAN for
a mesh address goes down the DODAG by source route.

Radio addressing (the sim's and a radio driver's convention): a node is at `radio_addr(eui)`,
its link-local address with port 0; a frame for every neighbour goes to `BROADCAST_ADDR`.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from amistack.addr import Addr, Eui64
from amistack.crypto.rand import RandomSource
from amistack.keymgmt.groupkeys import (
    GroupKey,
    GroupKeyDelivery,
    GroupKeyError,
    GroupKeyHolder,
    find_delivery,
    gtk_kek,
)
from amistack.mesh.errors import MeshDecodeError
from amistack.mesh.groupkeys import apply_group_keys, next_switch
from amistack.mesh.icmpv6 import ICMPV6_NEXT_HEADER, Icmpv6DecodeError
from amistack.mesh.ipv6 import NEXT_HEADER_UDP, Ipv6Packet, UdpDatagram, ipv6_address
from amistack.mesh.link import UNSECURED_BROADCAST_FC, MeshLink, Received, Transmitted
from amistack.mesh.rpl.constants import ICMPV6_TYPE_RPL
from amistack.mesh.rpl.errors import RplDecodeError
from amistack.mesh.rpl.events import DaoAcknowledged, DataReceived, Joined, ParentChanged, RplEvent
from amistack.mesh.rpl.messages import Dio, heard
from amistack.mesh.rpl.node import RplNode
from amistack.mesh.rpl.packet import LINK_LOCAL_PREFIX, Packet
from amistack.mesh.rpl.srh import is_multicast
from amistack.pana.constants import PANA_PORT
from amistack.pana.events import (
    Authenticated,
    AuthenticationFailed,
    PanaEvent,
    PingCompleted,
    SessionTerminated,
)
from amistack.pana.pac import PanaClient
from amistack.pana.relay import PanaRelay
from amistack.ratelimit import KeyedBuckets

__all__ = [
    "BROADCAST_ADDR",
    "JoinConfig",
    "MeshNode",
    "MeshNodeEvent",
    "ParentChosen",
    "RelayReady",
    "radio_addr",
]

log = logging.getLogger(__name__)

BROADCAST_ADDR: Addr = ("ff02::1", 0)  # link-local all-nodes: 802.15.4 broadcast (RFC 4944 §9)
RPL_DIO_CODE = 0x01  # RFC 6550 §6.3


@functools.lru_cache(maxsize=65536)
def radio_addr(eui: Eui64) -> Addr:
    return (str(eui.link_local()), 0)


_eui_of_iid = functools.lru_cache(maxsize=65536)(Eui64.from_interface_id)
"""`Eui64.from_interface_id`, interned: the next hop of every packet a node sends."""


@dataclass(frozen=True)
class JoinConfig:
    listen: float = 1.0  # s from the first beacon heard to choosing a parent
    retry_backoff: tuple[float, float] = (2.0, 120.0)  # first and longest pause between PANA runs
    max_candidates: int = 16  # join beacons remembered (the lowest ranks are kept)
    # PANA relayed per neighbour (token bucket per link source, bounded table): one join is
    # about 5 PaC messages in 10 s; a neighbour flooding its relay is cut off here, before
    # the PAA's per-relay limit would hold back every newcomer behind this relay
    relay_rate: float = 2.0  # messages per second
    relay_burst: float = 8.0
    relay_neighbors: int = 64  # buckets kept (the least recently used is forgotten)
    # s from RPL choosing another preferred parent to moving PANA to it (parent flaps settle)
    pana_move_delay: float = 5.0

    def __post_init__(self) -> None:
        first, longest = self.retry_backoff
        if (
            self.listen < 0
            or not 0 < first <= longest
            or self.max_candidates < 1
            or self.pana_move_delay < 0
            or not (self.relay_rate > 0 and self.relay_burst >= 1 and self.relay_neighbors >= 1)
        ):
            raise ValueError("invalid join configuration")


@dataclass(frozen=True)
class ParentChosen:
    """The node chose `parent` (advertising `rank`) to run PANA through."""

    parent: Eui64
    rank: int


@dataclass(frozen=True)
class RelayReady:
    """The node is authenticated, in the DODAG, routable from the root: it now relays."""

    rank: int


MeshNodeEvent = PanaEvent | RplEvent | ParentChosen | RelayReady


def _fraction(rng: RandomSource) -> float:
    return int.from_bytes(rng(2), "big") / 65536


class MeshNode:
    """One node of the mesh (module docstring). Build meters with the constructor and the
    concentrator with `MeshNode.concentrator`."""

    def __init__(
        self,
        link: MeshLink,
        rpl: RplNode,
        paa: Addr,
        rng: RandomSource,
        *,
        new_pac: Callable[[Addr], PanaClient] | None = None,
        config: JoinConfig | None = None,
        wan: Addr | None = None,
    ) -> None:
        """`paa`: the PAA's WAN address (an IPv6 literal, port); `new_pac(parent)`: a PaC
        whose PAA is `parent` (a meter; None for the concentrator); `wan`: where the
        concentrator sends WAN packets."""
        self.link = link
        self._pan = link.pan.value.to_bytes(2, "little")  # the destination PAN id as framed
        self.rpl = rpl
        self.eui = link.own
        self.link_local = LINK_LOCAL_PREFIX + self.eui.interface_id()
        self.paa = paa
        self._paa_ip = ipaddress.IPv6Address(paa[0]).packed
        self._rng = rng
        self._new_pac = new_pac
        self.group_keys = GroupKeyHolder()
        self._key_switch: float | None = None  # when a held key starts or ends
        self.config = config or JoinConfig()
        self.wan = wan
        self.relay = PanaRelay(paa)
        self.counters: Counter[str] = Counter()
        self.pac: PanaClient | None = None
        self.parent: Eui64 | None = None  # the neighbour PANA runs through
        self._previous_parent: Eui64 | None = None  # PANA's parent before the last move
        self._move_at: float | None = None  # when PANA moves to RPL's preferred parent
        self.authenticated = wan is not None
        self.relay_ready = wan is not None
        self._held: tuple[GroupKey, ...] = ()  # the concentrator's keys (meters: group_keys)
        self.candidates: OrderedDict[Eui64, int] = OrderedDict()  # beacon sender -> rank
        cfg = self.config
        # one bucket of relayed PANA per neighbour (RFC 6345 leaves the relay's limits local)
        self._relay_buckets = KeyedBuckets(cfg.relay_rate, cfg.relay_burst, cfg.relay_neighbors)
        self._choose_at: float | None = None
        self._reauth_at: float | None = None  # when a joined node whose session ended retries
        self._relay_dodag: bytes | None = None  # the DODAG PANA's parent relayed in, last heard
        self._pause = self.config.retry_backoff[0]
        self._wan_out: list[bytes] = []
        self._last_dio: Ipv6Packet | None = None
        self._events: deque[MeshNodeEvent] = deque()
        # An application on this node (C12.22): UDP that reached its global address over the
        # secured DODAG on a port other than PANA's, as (source address, source port,
        # destination port, payload, now). Send with `send_udp`.
        self.app: Callable[[bytes, int, int, bytes, float], None] | None = None

    def start(self, now: float) -> None:
        """Power on: the concentrator starts its DODAG; a meter listens for beacons."""
        if self.wan is not None:
            self.rpl.start(now)
            self._follow_prefix()

    def _follow_prefix(self) -> None:
        """IPHC context 0 is the DODAG's /64 (the prefix of our global address): the link
        compresses global addresses under it (`mesh.lowpan`); called when RPL moves."""
        own = self.rpl.global_address
        self.link.context = None if own is None else own[:8]

    @classmethod
    def concentrator(
        cls,
        link: MeshLink,
        rpl: RplNode,
        paa: Addr,
        rng: RandomSource,
        wan: Addr,
        group_keys: Sequence[GroupKey],
        now: float,
    ) -> MeshNode:
        """`group_keys`: the PAN's live keys as the key server holds them (the concentrator
        takes them from its key server over the WAN; `update_group_keys` after a rotation)."""
        if not rpl.is_root:
            raise ValueError("the concentrator is the DODAG root")
        node = cls(link, rpl, paa, rng, wan=wan)
        node.update_group_keys(group_keys, now)
        return node

    def update_group_keys(self, keys: Sequence[GroupKey], now: float) -> None:
        """Concentrator: use these group keys from now on."""
        apply_group_keys(self.link, keys, now)
        self._key_switch = next_switch(keys, now)
        self._held = tuple(keys)

    @property
    def global_address(self) -> bytes | None:
        return self.rpl.global_address

    # -- receiving --------------------------------------------------------------------------

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        if self.wan is not None and addr == self.wan:
            self._from_wan(data, now)
            return
        if self.authenticated and data[:2] == UNSECURED_BROADCAST_FC and data[3:5] == self._pan:
            # a join beacon (the only unsecured broadcast there is) heard by a joined node,
            # which takes RPL secured only: dropped before it is decoded (a dozen neighbours
            # hear every beacon; most of them have joined long ago)
            self.counters["beacons-ignored"] += 1
            return
        got = self.link.receive(data, now, allow_unsecured=True)
        if got is None or not isinstance(got.src, Eui64):
            return
        if got.secured:
            self._secured(got, now)
        else:
            self._unsecured(got, now)

    def _secured(self, got: Received, now: float) -> None:
        if not self.authenticated:  # cannot happen without a key; kept as a policy statement
            self.counters["secured-before-join"] += 1
            return
        try:
            packet = Packet.from_ipv6(got.packet)
        except RplDecodeError:
            self.counters["decode-error"] += 1
            return
        if self.wan is not None and self._outside(packet.dst):
            self._to_wan(packet)
            return
        assert isinstance(got.src, Eui64)
        self.rpl.receive_packet(packet, LINK_LOCAL_PREFIX + got.src.interface_id(), now)

    def _unsecured(self, got: Received, now: float) -> None:
        """The only unsecured traffic there is: join beacons (DIOs), and PANA between a
        newcomer and its parent. Anything else is counted and dropped."""
        packet = got.packet
        assert isinstance(got.src, Eui64)
        if packet.next_header == ICMPV6_NEXT_HEADER:
            if self.authenticated:
                self.counters["beacons-ignored"] += 1  # joined nodes take RPL secured only
            else:
                self._beacon(packet, got.src, now)
            return
        if packet.next_header != NEXT_HEADER_UDP or packet.dst.packed != self.link_local:
            self.counters["unsecured-dropped"] += 1
            return
        try:
            udp = UdpDatagram.decode(packet)
        except MeshDecodeError:
            self.counters["unsecured-dropped"] += 1
            return
        if udp.dst_port != PANA_PORT:
            self.counters["unsecured-dropped"] += 1
            return
        source: Addr = (str(packet.src), udp.src_port)
        ours = got.src in (self.parent, self._previous_parent)
        if self.pac is not None and ours and _of_session(udp.payload, self.pac.session_id):
            # our own session, relayed to us (through the previous parent: still in flight;
            # another session's message from there is a former parent's, now our child's)
            self.pac.receive_datagram(udp.payload, source, now)
        elif self.relay_ready and not self._relay_buckets.allow(got.src, now):
            self.counters["relay-rate-limited"] += 1
        elif self.relay_ready:
            self.relay.receive_from_pac(udp.payload, source, now)
            self.counters["relayed-from-pac"] += 1
        else:
            self.counters["unsecured-dropped"] += 1

    def _beacon(self, packet: Ipv6Packet, sender: Eui64, now: float) -> None:
        try:
            message = heard(packet.payload, packet.src.packed, packet.dst.packed)
        except Icmpv6DecodeError:
            self.counters["beacon-decode-error"] += 1
            return
        if not isinstance(message, Dio) or packet.src.packed[8:] != sender.interface_id():
            self.counters["unsecured-dropped"] += 1
            return
        self.counters["beacons-heard"] += 1
        self.candidates[sender] = message.rank
        if len(self.candidates) > self.config.max_candidates:
            worst = max(self.candidates, key=lambda e: self.candidates[e])
            del self.candidates[worst]
        if self.pac is None and self._choose_at is None:
            self._choose_at = now + self.config.listen

    def _from_wan(self, data: bytes, now: float) -> None:
        """Concentrator: an IPv6 packet from the WAN side."""
        try:
            packet = Ipv6Packet.decode(data)
        except MeshDecodeError:
            self.counters["wan-decode-error"] += 1
            return
        dst = packet.dst.packed
        if dst == self.global_address:
            self._udp_for_me(packet.src.packed, packet.payload, now)
        elif self._outside(dst) or dst[:8] == LINK_LOCAL_PREFIX or is_multicast(dst):
            self.counters["wan-not-for-mesh"] += 1
        else:
            hop = Packet(packet.src.packed, dst, packet.payload, packet.next_header,
                         packet.hop_limit)  # fmt: skip
            self.rpl.receive_packet(hop, self.link_local, now)
            self.counters["wan-in"] += 1

    def _udp_for_me(self, src: bytes, payload: bytes, now: float) -> None:
        """A UDP datagram that came to this node's global address: the PAA's PRYs."""
        own = self.global_address
        assert own is not None
        try:
            ip = Ipv6Packet(ipv6_address(src), ipv6_address(own),
                            NEXT_HEADER_UDP, payload)  # fmt: skip
            udp = UdpDatagram.decode(ip)
        except (MeshDecodeError, ValueError):
            self.counters["udp-decode-error"] += 1
            return
        if src == self._paa_ip and udp.src_port == self.paa[1] and udp.dst_port == PANA_PORT:
            self.relay.receive_from_paa(udp.payload, now)
        elif self.app is not None and udp.dst_port != PANA_PORT and self.authenticated:
            self.counters["app-in"] += 1
            self.app(src, udp.src_port, udp.dst_port, udp.payload, now)
        else:
            self.counters["udp-unexpected"] += 1

    def send_udp(
        self, dst: bytes, src_port: int, dst_port: int, payload: bytes, now: float
    ) -> bool:
        """An application's UDP datagram from this node's global address, over the secured
        DODAG (towards the root, which forwards it to the WAN when `dst` is outside the
        mesh); False (counted) before the node is routable."""
        own = self.global_address
        if own is None or not self.relay_ready or self.wan is not None:
            self.counters["app-not-routable"] += 1
            return False
        src_ip, dst_ip = ipv6_address(own), ipv6_address(dst)
        segment = UdpDatagram(src_port, dst_port, payload).encode(src_ip, dst_ip)
        self.rpl.send(dst, segment, now, NEXT_HEADER_UDP)
        self.counters["app-out"] += 1
        return True

    # -- sending ----------------------------------------------------------------------------

    def _outside(self, dst: bytes) -> bool:
        own = self.global_address
        return (
            own is not None
            and dst[:8] != own[:8]
            and dst[:8] != LINK_LOCAL_PREFIX
            and not is_multicast(dst)
        )

    def _to_wan(self, packet: Packet) -> None:
        if packet.hop_limit <= 1:
            self.counters["hop-limit-exceeded"] += 1
            return
        ip = Ipv6Packet(ipv6_address(packet.src), ipv6_address(packet.dst),
                        packet.next_header, packet.payload, packet.hop_limit - 1)  # fmt: skip
        self._wan_out.append(ip.encode())
        self.counters["wan-out"] += 1

    def _link_local_udp(self, payload: bytes, dst: Addr) -> None:
        """An unsecured PANA datagram to a neighbour's link-local address."""
        ip = ipaddress.IPv6Address(dst[0].split("%", 1)[0])
        if ip.packed[:8] != LINK_LOCAL_PREFIX:
            self.counters["not-link-local"] += 1
            return
        own = ipv6_address(self.link_local)
        packet = UdpDatagram(PANA_PORT, dst[1], payload).packet(own, ip, hop_limit=255)
        self.link.send(packet, _eui_of_iid(ip.packed[8:]), secure=False)

    def _pump(self, now: float) -> None:
        pac = self.pac
        if pac is not None:
            for data, dst in pac.datagrams_to_send(now):
                self._link_local_udp(data, dst)
            while (pana := pac.next_event()) is not None:
                self._on_pana(pana, now)  # may end this PaC (a failed run)
        for data, dst in self.relay.datagrams_to_send(now):
            if dst == self.paa:
                self._up_to_paa(data, now)
            else:
                self._link_local_udp(data, dst)
        self._pump_rpl(now)

    def _up_to_paa(self, data: bytes, now: float) -> None:
        own = self.global_address
        if own is None:
            self.counters["relay-no-address"] += 1
            return
        src, dst = ipv6_address(own), ipv6_address(self._paa_ip)
        udp = UdpDatagram(PANA_PORT, self.paa[1], data).encode(src, dst)
        if self.wan is not None:
            self._wan_out.append(Ipv6Packet(src, dst, NEXT_HEADER_UDP, udp).encode())
        else:
            self.rpl.send(self._paa_ip, udp, now, NEXT_HEADER_UDP)

    def _pump_rpl(self, now: float) -> None:
        if not self.authenticated:
            return
        while True:
            for tx in self.rpl.transmissions():
                hop = None if tx.next_hop is None else _eui_of_iid(tx.next_hop[8:])
                ip = tx.packet.to_ipv6()
                self.link.send(ip, hop)
                if hop is None and _is_dio(tx.packet):
                    self._last_dio = ip
                    if self.relay_ready:
                        self._beacon_out()
            while (sent := self.link.next_event()) is not None:
                self._on_transmitted(sent, now)
            event = self.rpl.next_event()
            if event is None:
                return
            self._on_rpl(event, now)

    def _beacon_out(self) -> None:
        """The join beacon: this node's latest DIO, unsecured, to every neighbour."""
        if self._last_dio is not None:
            self.link.send(self._last_dio, None, secure=False)
            self.counters["beacons-sent"] += 1

    def _on_transmitted(self, sent: Transmitted, now: float) -> None:
        neighbor = LINK_LOCAL_PREFIX + sent.next_hop.interface_id()
        self.rpl.record_transmission(neighbor, sent.attempts, sent.acked, now)
        if not sent.acked:
            self.rpl.neighbor_unreachable(neighbor, now)

    def _on_rpl(self, event: RplEvent, now: float) -> None:
        self._events.append(event)
        self._follow_prefix()
        moved = isinstance(event, Joined | ParentChanged)
        if moved and self.pac is not None and self._move_at is None:
            self._move_at = now + self.config.pana_move_delay
        if isinstance(event, DaoAcknowledged) and event.status < 128 and not self.relay_ready:
            self.relay_ready = True
            self._events.append(RelayReady(self.rpl.rank))
            self._beacon_out()  # announce at once: trickle may be suppressing its DIOs
        elif isinstance(event, DataReceived) and event.next_header == NEXT_HEADER_UDP:
            self._udp_for_me(event.src, event.payload, now)

    def _on_pana(self, event: PanaEvent, now: float) -> None:
        self._events.append(event)
        if isinstance(event, PingCompleted):
            self._previous_parent = None  # the session runs through the new parent now
        elif isinstance(event, Authenticated):
            self._take_group_keys(event, now)
            if not self.authenticated:
                self.authenticated = True
                self.rpl.start(now)
            self._pause = self.config.retry_backoff[0]
        elif isinstance(event, AuthenticationFailed) and not self.authenticated:
            self.counters["pana-refused" if event.refused else "pana-failed"] += 1
            if not event.refused and self.parent is not None:
                self.candidates.pop(self.parent, None)
            self.pac = None
            self._choose_at = now + self._next_pause()
        elif (
            isinstance(event, SessionTerminated | AuthenticationFailed)
            and self.wan is None
            and self._reauth_at is None
        ):  # joined, but the session is gone: authenticate again (module docstring)
            self.counters["pana-session-lost"] += 1
            self.pac = None
            self._reauth_at = now + self._next_pause()

    def _next_pause(self) -> float:
        pause = self._pause * (0.5 + 0.5 * _fraction(self._rng))
        self._pause = min(2 * self._pause, self.config.retry_backoff[1])
        return pause

    def _reauthenticate(self, now: float) -> None:
        """A new PANA session through RPL's preferred parent (or later, when there is none)."""
        self._reauth_at = None
        preferred = self.rpl.preferred if self.rpl.joined else None
        if preferred is None or self._new_pac is None:
            self._reauth_at = now + self._next_pause()
            return
        self.parent = Eui64.from_interface_id(preferred[8:])
        self._previous_parent = None
        self._relay_dodag = self.rpl.dodag_id
        self._events.append(ParentChosen(self.parent, self.rpl.rank))
        self.pac = self._new_pac((str(self.parent.link_local()), PANA_PORT))
        self.pac.start(now)
        self.counters["pana-reauthenticate"] += 1

    def _move_pana(self, now: float) -> None:
        """PANA to RPL's preferred parent, announced to the PAA by an AUTH-protected ping."""
        self._move_at = None
        preferred = self.rpl.preferred if self.rpl.joined else None
        pac = self.pac
        if preferred is None or pac is None:
            return
        parent = Eui64.from_interface_id(preferred[8:])
        dodag, known = self.rpl.dodag_id, self._relay_dodag
        self._relay_dodag = dodag
        if parent == self.parent and (dodag == known or known is None):
            return  # the same relay at the same address (or the first DODAG, PANA's own)
        # a new parent, or the same one in another DODAG: its relay address has a new prefix
        self._previous_parent, self.parent = self.parent, parent
        pac.paa = (str(parent.link_local()), PANA_PORT)  # retransmissions go there too
        pac.ping(now)
        self.counters["pana-moved"] += 1

    def _take_group_keys(self, event: Authenticated, now: float) -> None:
        """Open the group key delivery of a PANA success (initial or re-authentication: a
        rotation's push) and give the link the keys."""
        pac = self.pac
        avp = find_delivery(pac.success_avps) if pac is not None else None
        if avp is None:
            self.counters["group-keys-missing"] += 1
            return
        try:
            self.group_keys.accept(GroupKeyDelivery.open(avp, gtk_kek(event.context), now))
        except GroupKeyError as exc:
            self.counters[f"group-keys-{exc.kind}"] += 1
            return
        self.counters["group-keys-accepted"] += 1
        self._held = self.group_keys.held()
        apply_group_keys(self.link, self._held, now)
        self._key_switch = next_switch(self._held, now)

    def _choose_parent(self, now: float) -> None:
        self._choose_at = None
        if not self.candidates or self._new_pac is None:
            return  # the next beacon heard starts the wait again
        parent = min(self.candidates, key=lambda e: self.candidates[e])
        self.parent = parent
        self._events.append(ParentChosen(parent, self.candidates[parent]))
        self.pac = self._new_pac((str(parent.link_local()), PANA_PORT))
        self.pac.start(now)

    # -- the engine surface -----------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        self._pump(now)
        out = [
            (frame, BROADCAST_ADDR if dst is None else radio_addr(dst))
            for frame, dst in self.link.frames_to_send(now)
        ]
        if self._wan_out:
            assert self.wan is not None
            out += [(packet, self.wan) for packet in self._wan_out]
            self._wan_out = []
        return out

    def get_timer(self) -> float | None:
        # asked after every frame the node hears: the earliest of seven, without a list
        best = self.link.get_timer()
        for t in (
            self._choose_at,
            self._key_switch,
            self._move_at,
            self._reauth_at,
            self.rpl.get_timer() if self.authenticated else None,
            self.pac.get_timer() if self.pac is not None else None,
        ):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timer(self, now: float) -> None:
        when = self.link.get_timer()
        if when is not None and when <= now:
            self.link.handle_timer(now)
        if self.authenticated:
            when = self.rpl.get_timer()
            if when is not None and when <= now:
                self.rpl.handle_timer(now)
        if self.pac is not None:
            when = self.pac.get_timer()
            if when is not None and when <= now:
                self.pac.handle_timer(now)
        if self._key_switch is not None and self._key_switch <= now:  # a key starts or ends
            self.group_keys.expire(now)
            self._held = tuple(k for k in self._held if k.not_after > now)
            apply_group_keys(self.link, self._held, now)
            self._key_switch = next_switch(self._held, now)
        if self._choose_at is not None and self._choose_at <= now and not self.authenticated:
            self._choose_parent(now)
        if self._move_at is not None and self._move_at <= now:
            self._move_pana(now)
        if self._reauth_at is not None and self._reauth_at <= now:
            self._reauthenticate(now)

    def next_event(self) -> MeshNodeEvent | None:
        return self._events.popleft() if self._events else None


def _of_session(payload: bytes, session_id: int | None) -> bool:
    """Whether a PANA message is of our session: its Session Identifier (octets 8-11,
    RFC 5191 §6.2) is ours, or we have none yet (our PCI is still unanswered)."""
    return not session_id or payload[8:12] == session_id.to_bytes(4, "big")


def _is_dio(packet: Packet) -> bool:
    payload = packet.payload
    return (
        packet.next_header == ICMPV6_NEXT_HEADER
        and len(payload) > 1
        and payload[0] == ICMPV6_TYPE_RPL
        and payload[1] == RPL_DIO_CODE
    )
