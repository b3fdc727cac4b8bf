"""One node's link layer: IPv6 packets in and out of secured 802.15.4 frames (sans-IO).

    send(packet, next_hop)  -> 6LoWPAN (IPHC, fragments if needed) -> MAC frames -> CCM*
    receive(frame bytes)    -> decode -> address filter -> CCM* + counters -> reassembly -> packet

A frame goes to one neighbour (its EUI-64, acknowledgement requested) or to every neighbour
(`next_hop=None`: the broadcast short address 0xFFFF, as 6LoWPAN sends link-local multicast,
RFC 4944 §9). Frames are data frames in the node's PAN with PAN ID compression and the node's
EUI-64 as source (the CCM* nonce needs it). The sequence number and the datagram tag start at
values drawn from the injected random source and wrap (802.15.4-2006 §7.5.6.1: macDSN; RFC 4944
§5.3: datagram_tag).

Receiving: a frame that does not decode, is for another PAN or another node, fails security
(`mesh.security`) or 6LoWPAN (`mesh.lowpan`) is counted under its `kind` and dropped; nothing
raises. Unsecured frames are refused unless the call allows them (a node that has not joined yet
exchanges PANA in the clear with its parent; what it may carry is the caller's policy).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from amistack.addr import BROADCAST_SHORT, Eui64, LinkAddr, PanId
from amistack.crypto.rand import RandomSource
from amistack.mesh.errors import MeshDecodeError
from amistack.mesh.frame import FCS_LENGTH, MAX_PHY_PACKET_SIZE, Frame, FrameType
from amistack.mesh.ipv6 import Ipv6Packet
from amistack.mesh.lowpan import Reassembler, ReassemblyConfig, fragment
from amistack.mesh.security import LinkSecurity

__all__ = ["AUX_HEADER_LENGTH", "MeshLink", "Received"]

AUX_HEADER_LENGTH = 6  # security control + frame counter + key index (key id mode 1)


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
        reassembly: ReassemblyConfig | None = None,
        key_index: int = 1,
    ) -> None:
        self.security = security
        self.own: Eui64 = security.own
        self.pan = pan
        self.key_index = key_index
        self._seq = rng(1)[0]
        self._tag = int.from_bytes(rng(2), "big")
        self.reassembler = Reassembler(reassembly)
        self.counters: Counter[str] = Counter()

    # -- sending ----------------------------------------------------------------------------

    def room(self, next_hop: Eui64 | None, secure: bool = True) -> int:
        """Octets of 6LoWPAN payload one frame to `next_hop` carries."""
        dst_len = 8 if next_hop is not None else 2
        header = 2 + 1 + 2 + dst_len + 8  # frame control, seq, PAN id, dst, src (compressed PAN)
        if secure:
            header += AUX_HEADER_LENGTH + self.security.config.level.mic_length
        return MAX_PHY_PACKET_SIZE - FCS_LENGTH - header

    def send(self, packet: Ipv6Packet, next_hop: Eui64 | None, secure: bool = True) -> list[bytes]:
        """The MAC frames (without FCS) that carry `packet` to `next_hop` (None: broadcast)."""
        dst: LinkAddr = next_hop if next_hop is not None else BROADCAST_SHORT
        self._tag = (self._tag + 1) & 0xFFFF
        payloads = fragment(packet, self.own, dst, self._tag, self.room(next_hop, secure))
        frames = []
        for payload in payloads:
            self._seq = (self._seq + 1) & 0xFF
            frame = Frame(FrameType.DATA, self._seq, self.pan, dst, None, self.own, payload,
                          pan_id_compression=True, ack_request=next_hop is not None)  # fmt: skip
            if secure:
                frame = self.security.protect(frame, self.key_index)
            frames.append(frame.encode())
        self.counters["packets-sent"] += 1
        self.counters["frames-sent"] += len(frames)
        return frames

    # -- receiving --------------------------------------------------------------------------

    def receive(self, data: bytes, now: float, allow_unsecured: bool = False) -> Received | None:
        """The packet `data` completes, or None (a fragment, or dropped and counted)."""
        try:
            frame = Frame.decode(data)
            if frame.frame_type != FrameType.DATA:
                self.counters["not-data"] += 1
                return None
            if frame.source_pan != self.pan or frame.dst_pan != self.pan:
                self.counters["other-pan"] += 1
                return None
            if frame.dst != self.own and frame.dst != BROADCAST_SHORT:
                self.counters["not-for-us"] += 1
                return None
            if frame.src is None or frame.dst is None:
                self.counters["no-address"] += 1
                return None
            plain = self.security.unprotect(frame, allow_unsecured, data)
            packet = self.reassembler.receive(plain.payload, frame.src, frame.dst, now)
        except MeshDecodeError as exc:
            self.counters[exc.kind] += 1
            return None
        if packet is None:
            return None
        self.counters["packets-received"] += 1
        aux = plain.security
        return Received(packet, frame.src, frame.dst, aux is not None,
                        None if aux is None else aux.key_index)  # fmt: skip

    def get_timer(self) -> float | None:
        return self.reassembler.get_timer()

    def handle_timer(self, now: float) -> None:
        self.reassembler.handle_timer(now)
