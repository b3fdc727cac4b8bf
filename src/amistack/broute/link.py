"""The B-route link frame: what the Wi-SUN module under IPv6/UDP puts on the air for the B route
-- an IEEE 802.15.4 data frame carrying a 6LoWPAN-compressed IPv6/UDP packet -- one frame per UDP
datagram between the two ends, so they can be driven as sans-IO engines and a capture of them
decodes in Wireshark/tshark as wpan / 6lowpan / IPv6 / UDP / PANA or ECHONET Lite.

Every frame (mesh/frame.py: 802.15.4-2006 data frame, frame version 1, PAN ID compression, the
PAN `BROUTE_PAN`) has the sender's EUI-64 as source address and, as destination, the peer's
EUI-64 once it is known (else the broadcast short address 0xFFFF, which is also what a multicast
datagram goes to, RFC 4944 §9). The payload is IPHC (RFC 6282, mesh/lowpan.py) of an IPv6
packet between the link-local addresses of those link addresses (a multicast datagram to
ff02::1) and a UDP header with its checksum:

    PANA frame      no security; UDP 716 -> 716 (RFC 5191 §6.1) carrying the PANA message, in
                    the clear -- as 802.15.4 carries PANA before any link key exists; PANA
                    protects itself with AUTH once keyed.
    secured frame   auxiliary security header (802.15.4-2006 §7.6.2): security level 6
                    (ENC-MIC-64), key id mode 3 with the 8-octet key source = the key's `KeyId`
                    (PANA session id | PANA Key-Id) and key index 1, and the frame counter; the
                    IPv6/UDP packet (ports and payload) is encrypted with AES-128-CCM*, an
                    8-octet MIC, the 13-octet nonce `source EUI-64 | frame counter (big-endian)
                    | 0x06` (§7.6.3.2) and the MAC header as authenticated data (§7.6.3.4).

The key is the UKMF `link` key of the PANA session (amistack.keymgmt.ukmf); a re-authentication
switches to a new key with a new key source. Frames may be longer than 127 octets: Wi-SUN runs
802.15.4g SUN PHYs, whose aMaxPHYPacketSize is 2047 (802.15.4g-2012 §9.2, table 70), so a B-route
datagram is never fragmented.

Receiving rules (what `LinkKey.unprotect` checks, in this order, each failure a `DropReason`):
the frame decodes (`truncated`, `malformed`), the key id names a key we hold (`unknown_key_id`,
checked by the engine), the source is not our own EUI-64 (`own_source`: both ends share one key,
so a nonce is unique only per sender), the counter is inside the 64-frame sliding window of that
(key, sender) and not seen before (`out_of_window`, `replayed`), the MIC verifies (`forged`),
the plaintext is one IPv6/UDP packet (`malformed`). The window moves only after the MIC
verified, so forged frames cannot shift it.

Sending: the frame counter of a key starts at 0, only grows and is never reused; 0xFFFFFFFF is
never sent (802.15.4-2006 §7.5.8.2.1: counter exhausted): the key must be replaced by
re-authentication.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from enum import Enum

from amistack.addr import EUI64_LENGTH, Eui64, LinkAddr, PanId, ShortAddr
from amistack.crypto import RandomSource
from amistack.crypto.ccm_star import (
    KEY_LENGTH,
    CcmStar,
    CcmStarAuthError,
    SecurityLevel,
    ccm_star_nonce,
)
from amistack.crypto.replay import DEFAULT_WINDOW, Replay, ReplayWindows
from amistack.keymgmt.ukmf import KeyId
from amistack.mesh.errors import MeshDecodeError
from amistack.mesh.frame import AuxSecurityHeader, Frame, FrameType, KeyIdMode
from amistack.mesh.ipv6 import NEXT_HEADER_UDP, UdpDatagram
from amistack.mesh.lowpan import compress, decompress

__all__ = [
    "BROUTE_PAN",
    "EUI64_LENGTH",
    "HEADER_LENGTH",
    "KEY_INDEX",
    "MAX_FRAME_COUNTER",
    "MAX_FRAME_LENGTH",
    "MIC_LENGTH",
    "PANA_PORT",
    "SECURITY_LEVEL",
    "CounterExhausted",
    "DropReason",
    "LinkDecodeError",
    "LinkKey",
    "PanaFrame",
    "Plaintext",
    "SecuredFrame",
    "decode_frame",
    "open_frame",
    "random_eui64",
    "seal",
]

SECURITY_LEVEL = SecurityLevel.ENC_MIC_64
MIC_LENGTH = SECURITY_LEVEL.mic_length
BROUTE_PAN = PanId(0xB0B0)  # ours: the PAN id the two ends' frames carry
KEY_INDEX = 1  # key id mode 3 names the key by its 8-octet source; the index is fixed
PANA_PORT = 716  # RFC 5191 §6.1
BROADCAST = ShortAddr(0xFFFF)  # 802.15.4-2006 §7.2.1.4; RFC 4944 §9 for IPv6 multicast
ALL_NODES = ipaddress.IPv6Address("ff02::1")
HOP_LIMIT = 255  # link-local only (RFC 4861's value; IPHC carries it in no octet)
# MHR of a secured unicast frame: FC 2, seq 1, PAN 2, dst 8, src 8, aux header 1 + 4 + 9
HEADER_LENGTH = 35
MAX_FRAME_LENGTH = 2047 - 4  # SUN PHY aMaxPHYPacketSize (802.15.4g-2012) less a 4-octet FCS
MAX_FRAME_COUNTER = 0xFFFFFFFE  # 0xFFFFFFFF means "exhausted" (802.15.4-2006 §7.5.8.2.1)


class DropReason(Enum):
    """Why a received link frame was dropped; the value is the counter name."""

    TRUNCATED = "truncated"
    MALFORMED = "malformed"
    UNKNOWN_KEY_ID = "unknown_key_id"
    OWN_SOURCE = "own_source"
    OUT_OF_WINDOW = "out_of_window"
    REPLAYED = "replayed"
    FORGED = "forged"


class LinkDecodeError(Exception):
    """The one exception family for untrusted link frames: where, why, and the drop reason."""

    def __init__(self, offset: int, reason: str, kind: DropReason = DropReason.MALFORMED) -> None:
        super().__init__(f"offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason
        self.kind = kind


class CounterExhausted(Exception):
    """The key's frame counter reached its end: re-authenticate to get a new key."""


def _link_addr(eui: bytes | None) -> LinkAddr:
    return BROADCAST if eui is None else Eui64(eui)


def _frame(
    source: bytes, destination: bytes | None, seq: int, security: AuxSecurityHeader | None
) -> Frame:
    return Frame(
        FrameType.DATA, seq, BROUTE_PAN, _link_addr(destination), None, Eui64(source),
        security=security, pan_id_compression=True,
    )  # fmt: skip


@functools.lru_cache(maxsize=256)
def _link_local(addr: LinkAddr) -> ipaddress.IPv6Address:
    """fe80::/64 + the interface identifier of a link address (RFC 4944 §7)."""
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + addr.interface_id())


def _packet(source: bytes, destination: bytes | None, multicast: bool, udp: UdpDatagram) -> bytes:
    """The IPHC payload: UDP between the link-local addresses of the link addresses (to
    ff02::1 when multicast; while the peer is unknown, to the broadcast short address's)."""
    src_ll = Eui64(source)
    dst_ll = _link_addr(destination)
    dst = ALL_NODES if multicast else _link_local(dst_ll)
    return compress(udp.packet(_link_local(src_ll), dst, HOP_LIMIT), src_ll, dst_ll)


def _udp(payload: bytes, src_ll: LinkAddr, dst_ll: LinkAddr, at: int) -> tuple[UdpDatagram, bool]:
    """The UDP datagram of an IPHC payload, and whether it went to a multicast group."""
    try:
        packet = decompress(payload, src_ll, dst_ll)
        if packet.next_header != NEXT_HEADER_UDP:
            raise LinkDecodeError(at, f"next header {packet.next_header} is not UDP")
        return UdpDatagram.decode(packet), packet.dst.is_multicast
    except MeshDecodeError as exc:
        raise LinkDecodeError(at + exc.offset, exc.reason) from None


@dataclass(frozen=True)
class PanaFrame:
    """A PANA message carried in the clear (it has its own AUTH once a PANA SA exists), from
    `source` (EUI-64) to `destination` (EUI-64; None: the broadcast address)."""

    message: bytes
    source: bytes
    destination: bytes | None = None

    def encode(self) -> bytes:
        udp = UdpDatagram(PANA_PORT, PANA_PORT, self.message)
        frame = _frame(self.source, self.destination, 0, None)
        return frame.header() + _packet(self.source, self.destination, False, udp)


@dataclass(frozen=True)
class SecuredFrame:
    """A secured data frame as it is on the wire (`sealed` = ciphertext | MIC)."""

    key_id: KeyId
    counter: int
    source: bytes  # the sender's EUI-64
    destination: bytes | None  # the receiver's EUI-64; None: broadcast
    sealed: bytes

    def security(self) -> AuxSecurityHeader:
        return AuxSecurityHeader(
            SECURITY_LEVEL, self.counter, KeyIdMode.SOURCE8, KEY_INDEX, self.key_id.encode()
        )

    @functools.cached_property
    def _header(self) -> bytes:
        return _frame(self.source, self.destination, self.counter & 0xFF, self.security()).header()

    def header(self) -> bytes:
        """The authenticated data: the MAC header, auxiliary security header included."""
        return self._header

    def nonce(self) -> bytes:
        return ccm_star_nonce(self.source, self.counter, SECURITY_LEVEL)

    def encode(self) -> bytes:
        return self.header() + self.sealed


@dataclass(frozen=True)
class Plaintext:
    """What a secured frame carries: a UDP datagram's ports and payload (`multicast`: it was
    sent to a multicast group, as the meter's startup INF and EA/EB announcements are)."""

    src_port: int
    dst_port: int
    payload: bytes
    multicast: bool = False


def decode_frame(data: bytes) -> PanaFrame | SecuredFrame:
    """Decode one link datagram (a secured frame stays sealed); raises only `LinkDecodeError`."""
    if len(data) < 3:
        raise LinkDecodeError(len(data), "shorter than an 802.15.4 header", DropReason.TRUNCATED)
    if len(data) > MAX_FRAME_LENGTH:
        raise LinkDecodeError(MAX_FRAME_LENGTH, "longer than a SUN PHY frame")
    try:
        frame = Frame.decode(data, max_length=MAX_FRAME_LENGTH)
    except MeshDecodeError as exc:
        raise LinkDecodeError(exc.offset, exc.reason) from None
    if frame.frame_type != FrameType.DATA or not isinstance(frame.src, Eui64):
        raise LinkDecodeError(0, "not a data frame from an extended address")
    if frame.dst is not None and not isinstance(frame.dst, Eui64) and frame.dst != BROADCAST:
        raise LinkDecodeError(5, f"destination {frame.dst} is neither an EUI-64 nor broadcast")
    if frame.dst_pan != BROUTE_PAN or not frame.pan_id_compression:
        raise LinkDecodeError(3, f"PAN {frame.dst_pan} is not the B route's")
    source = frame.src.value
    destination = frame.dst.value if isinstance(frame.dst, Eui64) else None
    at = len(data) - len(frame.payload)
    sec = frame.security
    if sec is None:
        udp, _ = _udp(frame.payload, frame.src, _link_addr(destination), at)
        if udp.dst_port != PANA_PORT:
            raise LinkDecodeError(at, f"an unsecured frame to UDP port {udp.dst_port}")
        pana = PanaFrame(udp.payload, source, destination)
        if pana.encode() != data:
            raise LinkDecodeError(0, "not the B route's PANA frame (sequence, ports, addresses)")
        return pana
    if sec.level != SECURITY_LEVEL or sec.key_id_mode != KeyIdMode.SOURCE8:
        raise LinkDecodeError(at - 1, "not ENC-MIC-64 with an 8-octet key source")
    if sec.counter > MAX_FRAME_COUNTER:
        raise LinkDecodeError(at - 10, "frame counter 0xFFFFFFFF is never sent")
    if len(frame.payload) < MIC_LENGTH:
        raise LinkDecodeError(at, "no room for the MIC", DropReason.TRUNCATED)
    session_id = int.from_bytes(sec.key_source[:4], "big")
    generation = int.from_bytes(sec.key_source[4:], "big")
    secured = SecuredFrame(
        KeyId(session_id, generation), sec.counter, source, destination, frame.payload
    )
    if secured.header() != data[:at]:  # the MIC covers the header as we build it: exactly
        raise LinkDecodeError(0, "header fields other than the B route's (sequence, key index)")
    return secured


def _cipher(key: bytes | CcmStar) -> CcmStar:
    return key if isinstance(key, CcmStar) else CcmStar(key, SECURITY_LEVEL)


def seal(
    key: bytes | CcmStar,
    key_id: KeyId,
    counter: int,
    source: bytes,
    plaintext: Plaintext,
    destination: bytes | None = None,
) -> SecuredFrame:
    """Protect one datagram (the caller owns the counter: see `LinkKey`)."""
    if not 0 <= counter <= MAX_FRAME_COUNTER:
        raise CounterExhausted(f"frame counter {counter} cannot be sent")
    if not (0 <= plaintext.src_port <= 0xFFFF and 0 <= plaintext.dst_port <= 0xFFFF):
        raise ValueError("ports are 0..65535")
    dst = None if plaintext.multicast else destination
    frame = SecuredFrame(key_id, counter, source, dst, b"")
    udp = UdpDatagram(plaintext.src_port, plaintext.dst_port, plaintext.payload)
    body = _packet(source, dst, plaintext.multicast, udp)
    sealed = _cipher(key).seal(frame.nonce(), frame.header(), body)
    return SecuredFrame(key_id, counter, source, dst, sealed)


def open_frame(frame: SecuredFrame, key: bytes | CcmStar) -> Plaintext:
    """Verify and decrypt; a bad MIC raises LinkDecodeError(FORGED)."""
    header = frame.header()
    try:
        body = _cipher(key).open(frame.nonce(), header, frame.sealed)
    except CcmStarAuthError:
        raise LinkDecodeError(len(header), "MIC does not verify", DropReason.FORGED) from None
    udp, multicast = _udp(body, Eui64(frame.source), _link_addr(frame.destination), len(header))
    return Plaintext(udp.src_port, udp.dst_port, udp.payload, multicast)


def random_eui64(rng: RandomSource) -> bytes:
    """A locally administered unicast EUI-64 from `rng` (`amistack.addr.Eui64.random`)."""
    return Eui64.random(rng).value


class LinkKey:
    """One link key generation at one end: the cipher, our send counter, the senders' windows."""

    def __init__(
        self,
        key_id: KeyId,
        key: bytes,
        own_source: bytes,
        window: int = DEFAULT_WINDOW,
        max_senders: int = 16,
        peer: bytes | None = None,
    ) -> None:
        """`peer`: the other end's EUI-64, the destination address of our unicast frames
        (learnt from its first verified frame when not given; until then, broadcast)."""
        if len(key) != KEY_LENGTH:
            raise ValueError("link keys are AES-128 (16 octets)")
        if len(own_source) != EUI64_LENGTH:
            raise ValueError("the own source address must be an EUI-64 (8 octets)")
        self.key_id = key_id
        self.own_source = own_source
        self._cipher = CcmStar(key, SECURITY_LEVEL)
        self._windows: ReplayWindows[bytes] = ReplayWindows(window, max_senders)
        self.next_counter = 0
        self.peer = peer

    @property
    def exhausted(self) -> bool:
        return self.next_counter > MAX_FRAME_COUNTER

    def protect(self, plaintext: Plaintext, multicast: bool = False) -> SecuredFrame:
        """Seal with the next counter value; never reuses one (raises CounterExhausted)."""
        counter = self.next_counter
        if counter > MAX_FRAME_COUNTER:
            raise CounterExhausted(f"key {self.key_id} has sent {counter} frames")
        self.next_counter = counter + 1
        if multicast and not plaintext.multicast:
            plaintext = Plaintext(plaintext.src_port, plaintext.dst_port, plaintext.payload, True)
        return seal(self._cipher, self.key_id, counter, self.own_source, plaintext, self.peer)

    def unprotect(self, frame: SecuredFrame) -> Plaintext:
        """Replay check, MIC check, then move that sender's window; raises LinkDecodeError."""
        if frame.key_id != self.key_id:
            raise LinkDecodeError(24, "frame is for another key", DropReason.UNKNOWN_KEY_ID)
        if frame.source == self.own_source:
            # both ends share the key: a frame claiming our address would reuse our nonces
            raise LinkDecodeError(13, "frame claims our own source address", DropReason.OWN_SOURCE)
        verdict = self._windows.check(frame.source, frame.counter)
        if verdict is Replay.REPLAYED:
            raise LinkDecodeError(
                20, f"counter {frame.counter} was seen before", DropReason.REPLAYED
            )
        if verdict is Replay.STALE:
            raise LinkDecodeError(
                20, f"counter {frame.counter} is older than the window", DropReason.OUT_OF_WINDOW
            )
        plain = open_frame(frame, self._cipher)
        self._windows.accept(frame.source, frame.counter)  # bounded: least recent forgotten
        if self.peer is None:
            self.peer = frame.source
        return plain

    def __repr__(self) -> str:  # never the key
        return f"LinkKey({self.key_id}, next_counter={self.next_counter})"
