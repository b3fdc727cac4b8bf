"""One node's link layer: IPv6 packets in and out of secured 802.15.4 frames (sans-IO).

    send(packet, next_hop)  -> 6LoWPAN (IPHC, fragments if needed) -> MAC frames -> CCM* -> queue
    frames_to_send(now)     -> what goes on the air now: data frames, retransmissions, ACKs
    receive(frame bytes)    -> decode -> address filter -> ACK -> CCM* + counters -> reassembly
    next_event()            -> Transmitted(next_hop, acked, attempts): link feedback (ETX)

A frame goes to one neighbour (its EUI-64, acknowledgement requested) or to every neighbour
(`next_hop=None`: the broadcast short address 0xFFFF, as 6LoWPAN sends link-local multicast,
RFC 4944 §9). Frames are data frames in the node's PAN with PAN ID compression and the node's
EUI-64 as source (the CCM* nonce needs it). The sequence number and the datagram tag start at
values drawn from the injected random source and wrap (802.15.4-2006 §7.5.6.1: macDSN; RFC 4944
§5.3: datagram_tag).

Acknowledgements (802.15.4-2006 §7.5.6.4): a unicast frame waits for an ACK carrying its sequence
number for `ack_wait` seconds and is sent again up to `max_retries` times (macMaxFrameRetries, 3),
each time after a random back-off of 0..2^n - 1 units of `backoff` (n = 3, 4, 5, 5: macMinBE 3 to
macMaxBE 5, §7.5.1.4; the simulated radio has no carrier sense, so the unit is a frame time);
one unicast frame is in flight at a time, later frames queue behind it (at most `max_queue`).
When a frame fails for good, the rest of its packet is dropped. Each unicast frame ends in one
`Transmitted` event, what RPL's link metric (ETX, RFC 6719) counts. A receiver acknowledges a
frame addressed to it before checking its security, as radios do (the ACK is 3 octets, no more
than it was sent); a retransmitted frame is then refused by the counter check (`replayed`).

Receiving: a frame that does not decode, is for another PAN or another node, fails security
(`mesh.security`) or 6LoWPAN (`mesh.lowpan`) is counted under its `kind` and dropped; nothing
raises. Unsecured frames are refused unless the call allows them (a node that has not joined yet
exchanges PANA in the clear with its parent; what it may carry is the caller's policy).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from amistack.addr import BROADCAST_SHORT, Eui64, LinkAddr, PanId, ShortAddr
from amistack.crypto.rand import RandomSource
from amistack.mesh.errors import MeshDecodeError
from amistack.mesh.frame import FCS_LENGTH, MAX_PHY_PACKET_SIZE, Frame, FrameType
from amistack.mesh.ipv6 import Ipv6Packet
from amistack.mesh.lowpan import Reassembler, ReassemblyConfig, fragment
from amistack.mesh.security import LinkSecurity

__all__ = [
    "AUX_HEADER_LENGTH",
    "UNSECURED_BROADCAST_FC",
    "LinkConfig",
    "MeshLink",
    "Received",
    "Transmitted",
]

_ACKS = tuple(Frame(FrameType.ACK, seq).encode() for seq in range(256))  # §7.2.2.3: 3 octets
_ACK_FC = _ACKS[0][:2]
# The frame control of an unsecured data frame to the broadcast short address from an extended
# source with PAN ID compression: how every unsecured broadcast (a join beacon) starts
UNSECURED_BROADCAST_FC = Frame.data(0, PanId(0), BROADCAST_SHORT, Eui64(bytes(8)), b"",
                                    False).encode()[:2]  # fmt: skip

AUX_HEADER_LENGTH = 6  # security control + frame counter + key index (key id mode 1)
MAC_MAX_FRAME_RETRIES = 3  # macMaxFrameRetries default, 802.15.4-2006 table 86
MAC_MIN_BE, MAC_MAX_BE = 3, 5  # macMinBE, macMaxBE defaults, 802.15.4-2006 table 86


@dataclass(frozen=True)
class LinkConfig:
    ack_wait: float = 0.05  # s: covers the frame's and the ACK's airtime at 100 kbit/s, queueing
    max_retries: int = MAC_MAX_FRAME_RETRIES
    backoff: float = 0.012  # s: about one 127-octet frame at 100 kbit/s (see the module doc)
    max_queue: int = 64  # frames waiting to be sent
    key_index: int = 1  # the key frames are sent under

    def __post_init__(self) -> None:
        if self.ack_wait <= 0 or self.backoff < 0 or self.max_retries < 0 or self.max_queue < 1:
            raise ValueError("invalid link configuration")


@dataclass(frozen=True)
class Transmitted:
    """A unicast frame's fate: acknowledged after `attempts` sends, or not after the last one."""

    next_hop: Eui64
    acked: bool
    attempts: int


@dataclass
class _Outgoing:
    frame: bytes
    dst: Eui64 | None
    seq: int
    packet: int  # which packet it belongs to (dropped together)
    attempts: int = 0
    deadline: float = 0.0  # the ACK is due (or, backing off, the next attempt)
    backing_off: bool = False


@dataclass(frozen=True)
class Received:
    """An IPv6 packet that arrived, with who sent it over the link and how it was protected."""

    packet: Ipv6Packet
    src: LinkAddr
    dst: LinkAddr
    secured: bool
    key_index: int | None


class MeshLink:
    """The link layer of one node (module docstring)."""

    def __init__(
        self,
        security: LinkSecurity,
        pan: PanId,
        rng: RandomSource,
        config: LinkConfig | None = None,
        reassembly: ReassemblyConfig | None = None,
    ) -> None:
        self.security = security
        self._rng = rng
        self.own: Eui64 = security.own
        self.pan = pan
        self.config = config or LinkConfig()
        self._seq = rng(1)[0]
        self._tag = int.from_bytes(rng(2), "big")
        self._packets = 0
        self._queue: deque[_Outgoing] = deque()
        self._in_flight: _Outgoing | None = None
        self._out: list[tuple[bytes, Eui64 | None]] = []  # ACKs and retransmissions, now
        self._events: deque[Transmitted] = deque()
        self.reassembler = Reassembler(reassembly)
        self.counters: Counter[str] = Counter()
        # IPHC context 0 (RFC 6282 §3.1.1): the /64 prefix this node shares with its
        # neighbours (the DODAG's, once the node has joined): global addresses under it go
        # out as interface identifiers, and frames that use it can be read
        self.context: bytes | None = None

    # -- sending ----------------------------------------------------------------------------

    def room(self, next_hop: Eui64 | None, secure: bool = True) -> int:
        """Octets of 6LoWPAN payload one frame to `next_hop` carries."""
        dst_len = 8 if next_hop is not None else 2
        header = 2 + 1 + 2 + dst_len + 8  # frame control, seq, PAN id, dst, src (compressed PAN)
        if secure:
            header += AUX_HEADER_LENGTH + self.security.config.level.mic_length
        return MAX_PHY_PACKET_SIZE - FCS_LENGTH - header

    def send(self, packet: Ipv6Packet, next_hop: Eui64 | None, secure: bool = True) -> None:
        """Queue `packet` for `next_hop` (None: every neighbour); see `frames_to_send`."""
        dst: LinkAddr = next_hop if next_hop is not None else BROADCAST_SHORT
        self._tag = (self._tag + 1) & 0xFFFF
        room = self.room(next_hop, secure)
        payloads = fragment(packet, self.own, dst, self._tag, room, context=self.context)
        if len(self._queue) + len(payloads) > self.config.max_queue:
            self.counters["queue-full"] += 1
            return
        self._packets += 1
        for payload in payloads:
            self._seq = (self._seq + 1) & 0xFF
            frame = Frame.data(self._seq, self.pan, dst, self.own, payload, next_hop is not None)
            if secure:
                data = self.security.protect_encoded(frame, self.config.key_index)
            else:
                data = frame.encode()
            self._queue.append(_Outgoing(data, next_hop, self._seq, self._packets))
        self.counters["packets-sent"] += 1

    def frames_to_send(self, now: float) -> list[tuple[bytes, Eui64 | None]]:
        """The frames (without FCS) to put on the air now, each with its link destination:
        a neighbour's EUI-64, or None for every neighbour."""
        out, self._out = self._out, []
        while self._queue and self._in_flight is None:
            item = self._queue.popleft()
            out.append((item.frame, item.dst))
            self.counters["frames-sent"] += 1
            if item.dst is not None:
                item.attempts, item.deadline = 1, now + self.config.ack_wait
                self._in_flight = item
        return out

    def next_event(self) -> Transmitted | None:
        return self._events.popleft() if self._events else None

    def _finish(self, item: _Outgoing, acked: bool) -> None:
        self._in_flight = None
        if item.dst is not None:  # only unicast frames are ever in flight
            self._events.append(Transmitted(item.dst, acked, item.attempts))
        if not acked:  # the rest of that packet cannot be reassembled without this fragment
            self.counters["tx-failed"] += 1
            self._queue = deque(q for q in self._queue if q.packet != item.packet)

    # -- receiving --------------------------------------------------------------------------

    def receive(self, data: bytes, now: float, allow_unsecured: bool = False) -> Received | None:
        """The packet `data` completes, or None (a fragment, or dropped and counted)."""
        if len(data) == 3 and data[:2] == _ACK_FC:  # an ACK as `_ACKS` has them: no decode
            self._on_ack(data[2])
            return None
        try:
            frame = Frame.decode(data)
            if frame.frame_type == FrameType.ACK:
                self._on_ack(frame.seq)
                return None
            if frame.frame_type != FrameType.DATA:
                self.counters["not-data"] += 1
                return None
            # the address checks compare values, not the address objects (every frame heard
            # passes here: the dataclasses' __eq__ showed in the profile)
            pan = self.pan.value
            dst_pan, dst, src = frame.dst_pan, frame.dst, frame.src
            src_pan = dst_pan if frame.pan_id_compression else frame.src_pan
            if src_pan is None or dst_pan is None or src_pan.value != pan or dst_pan.value != pan:
                self.counters["other-pan"] += 1
                return None
            to_us = isinstance(dst, Eui64) and dst.value == self.own.value
            if not to_us and not (
                isinstance(dst, ShortAddr) and dst.value == ShortAddr.BROADCAST_VALUE
            ):
                self.counters["not-for-us"] += 1
                return None
            if src is None or dst is None:
                self.counters["no-address"] += 1
                return None
            if frame.ack_request and to_us and isinstance(src, Eui64):
                self._out.append((_ACKS[frame.seq], src))
                self.counters["acks-sent"] += 1
            plain = self.security.unprotect(frame, allow_unsecured, data)
            packet = self.reassembler.receive(plain.payload, src, dst, now, self.context)
        except MeshDecodeError as exc:
            self.counters[exc.kind] += 1
            return None
        if packet is None:
            return None
        self.counters["packets-received"] += 1
        aux = plain.security
        return Received(packet, src, dst, aux is not None,
                        None if aux is None else aux.key_index)  # fmt: skip

    def _on_ack(self, seq: int) -> None:
        item = self._in_flight
        if item is None or item.seq != seq:
            self.counters["stray-acks"] += 1
            return
        self.counters["acked"] += 1
        self._finish(item, True)

    def get_timer(self) -> float | None:
        when = self.reassembler.get_timer()
        if self._in_flight is None:
            return when
        deadline = self._in_flight.deadline
        return deadline if when is None or deadline < when else when

    def handle_timer(self, now: float) -> None:
        self.reassembler.handle_timer(now)
        item = self._in_flight
        if item is None or now < item.deadline:
            return
        if item.attempts > self.config.max_retries:
            self._finish(item, False)
            return
        if not item.backing_off:  # the ACK did not come: back off, then send again
            exponent = min(MAC_MIN_BE + item.attempts - 1, MAC_MAX_BE)
            slots = int.from_bytes(self._rng(2), "big") % (1 << exponent)
            item.backing_off = True
            item.deadline = now + slots * self.config.backoff
            if slots:
                return
        item.backing_off = False
        item.attempts += 1
        item.deadline = now + self.config.ack_wait
        self._out.append((item.frame, item.dst))
        self.counters["retransmissions"] += 1
