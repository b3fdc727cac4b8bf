"""The B-route link frame: what the Wi-SUN / IEEE 802.15.4 link under IPv6/UDP does for the B
route, modelled over one UDP port so the two ends can be driven as sans-IO engines.

Every datagram on the link starts with a type octet:

    PANA frame      0x01 | PANA message (RFC 5191), in the clear -- as 802.15.4 carries PANA
                    before any link key exists; PANA protects itself with AUTH once keyed.
    secured frame   0x02 | flags (1) | key id (8) | frame counter (4) | source EUI-64 (8)
                    | AES-CCM*(src port (2) | dst port (2) | payload) | MIC (8)

The secured frame is IEEE 802.15.4-2015 security level 6, ENC-MIC-64: AES-128-CCM* with an
8-octet MIC and the 13-octet nonce `source EUI-64 | frame counter (big-endian) | 0x06` (§9.3.2.2).
The whole 22-octet header is the authenticated data; the ports and the payload are encrypted,
so ECHONET Lite (UDP 3610) and any other UDP service fit. The key is the UKMF `link` key of the
PANA session (amistack.keymgmt.ukmf), and the key id is that generation's `KeyId` (PANA session
id | PANA Key-Id), so a re-authentication switches to a new key with a new id.

flags: bit 0 = the sender addressed the payload to a multicast group (the meter's startup INF,
EA/EB announcements); the other bits are reserved and must be zero.

Receiving rules (what `LinkKey.unprotect` checks, in this order, each failure a `DropReason`):
the frame decodes (`truncated`, `malformed`), the key id names a key we hold (`unknown_key_id`,
checked by the engine), the source is not our own EUI-64 (`own_source`: both ends share one key,
so a nonce is unique only per sender), the counter is inside the 64-frame sliding window of that
(key, sender) and not seen before (`out_of_window`, `replayed`), the MIC verifies (`forged`).
The window moves only after the MIC verified, so forged frames cannot shift it.

Sending: the frame counter of a key starts at 0, only grows and is never reused; 0xFFFFFFFF is
never sent (802.15.4 §9.2.2: counter exhausted): the key must be replaced by re-authentication.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum, IntEnum

from amistack.addr import EUI64_LENGTH, Eui64
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

__all__ = [
    "EUI64_LENGTH",
    "HEADER_LENGTH",
    "MAX_FRAME_COUNTER",
    "MIC_LENGTH",
    "SECURITY_LEVEL",
    "CounterExhausted",
    "DropReason",
    "FrameType",
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
FLAG_MULTICAST = 0x01
_HEADER = struct.Struct("!BB8sI8s")
HEADER_LENGTH = _HEADER.size  # 22
PORTS_LENGTH = 4
MIN_SECURED_LENGTH = HEADER_LENGTH + PORTS_LENGTH + MIC_LENGTH
MAX_FRAME_COUNTER = 0xFFFFFFFE  # 0xFFFFFFFF means "exhausted" (802.15.4 §9.2.2)


class FrameType(IntEnum):
    PANA = 0x01
    SECURED = 0x02


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


@dataclass(frozen=True)
class PanaFrame:
    """A PANA message carried in the clear (it has its own AUTH once a PANA SA exists)."""

    message: bytes

    def encode(self) -> bytes:
        return bytes((FrameType.PANA,)) + self.message

    @classmethod
    def decode(cls, data: bytes) -> PanaFrame:
        if not data:
            raise LinkDecodeError(0, "empty datagram", DropReason.TRUNCATED)
        if data[0] != FrameType.PANA:
            raise LinkDecodeError(0, f"type {data[0]:#04x} is not a PANA frame")
        return cls(bytes(data[1:]))


@dataclass(frozen=True)
class SecuredFrame:
    """A secured data frame as it is on the wire (`sealed` = ciphertext | MIC)."""

    key_id: KeyId
    counter: int
    source: bytes  # the sender's EUI-64
    multicast: bool
    sealed: bytes

    def header(self) -> bytes:
        """The authenticated data: everything before the ciphertext."""
        flags = FLAG_MULTICAST if self.multicast else 0
        return _HEADER.pack(
            FrameType.SECURED, flags, self.key_id.encode(), self.counter, self.source
        )

    def nonce(self) -> bytes:
        return ccm_star_nonce(self.source, self.counter, SECURITY_LEVEL)

    def encode(self) -> bytes:
        return self.header() + self.sealed

    @classmethod
    def decode(cls, data: bytes) -> SecuredFrame:
        if len(data) < MIN_SECURED_LENGTH:
            raise LinkDecodeError(
                len(data),
                f"secured frame needs {MIN_SECURED_LENGTH} octets, got {len(data)}",
                DropReason.TRUNCATED,
            )
        ftype, flags, kid, counter, source = _HEADER.unpack_from(data)
        if ftype != FrameType.SECURED:
            raise LinkDecodeError(0, f"type {ftype:#04x} is not a secured frame")
        if flags & ~FLAG_MULTICAST:
            raise LinkDecodeError(1, f"reserved flag bits set ({flags:#04x})")
        if counter > MAX_FRAME_COUNTER:
            raise LinkDecodeError(10, "frame counter 0xFFFFFFFF is never sent")
        session_id, generation = struct.unpack("!II", kid)
        return cls(
            KeyId(session_id, generation),
            counter,
            bytes(source),
            bool(flags & FLAG_MULTICAST),
            bytes(data[HEADER_LENGTH:]),
        )


@dataclass(frozen=True)
class Plaintext:
    """What a secured frame carries: a UDP datagram's ports and payload."""

    src_port: int
    dst_port: int
    payload: bytes


def decode_frame(data: bytes) -> PanaFrame | SecuredFrame:
    """Decode one link datagram; raises only `LinkDecodeError`."""
    if not data:
        raise LinkDecodeError(0, "empty datagram", DropReason.TRUNCATED)
    if data[0] == FrameType.PANA:
        return PanaFrame.decode(data)
    if data[0] == FrameType.SECURED:
        return SecuredFrame.decode(data)
    raise LinkDecodeError(0, f"unknown frame type {data[0]:#04x}")


def _open(cipher: CcmStar, nonce: bytes, aad: bytes, sealed: bytes) -> bytes:
    try:
        return cipher.open(nonce, aad, sealed)
    except CcmStarAuthError:
        raise LinkDecodeError(HEADER_LENGTH, "MIC does not verify", DropReason.FORGED) from None


def _cipher(key: bytes | CcmStar) -> CcmStar:
    return key if isinstance(key, CcmStar) else CcmStar(key, SECURITY_LEVEL)


def seal(
    key: bytes | CcmStar,
    key_id: KeyId,
    counter: int,
    source: bytes,
    plaintext: Plaintext,
    multicast: bool = False,
) -> SecuredFrame:
    """Protect one datagram (the caller owns the counter: see `LinkKey`)."""
    if not 0 <= counter <= MAX_FRAME_COUNTER:
        raise CounterExhausted(f"frame counter {counter} cannot be sent")
    if not (0 <= plaintext.src_port <= 0xFFFF and 0 <= plaintext.dst_port <= 0xFFFF):
        raise ValueError("ports are 0..65535")
    frame = SecuredFrame(key_id, counter, source, multicast, b"")
    body = struct.pack("!HH", plaintext.src_port, plaintext.dst_port) + plaintext.payload
    sealed = _cipher(key).seal(frame.nonce(), frame.header(), body)
    return SecuredFrame(key_id, counter, source, multicast, sealed)


def open_frame(frame: SecuredFrame, key: bytes | CcmStar) -> Plaintext:
    """Verify and decrypt; a bad MIC raises LinkDecodeError(FORGED)."""
    body = _open(_cipher(key), frame.nonce(), frame.header(), frame.sealed)
    src_port, dst_port = struct.unpack_from("!HH", body)
    return Plaintext(src_port, dst_port, body[PORTS_LENGTH:])


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
    ) -> None:
        if len(key) != KEY_LENGTH:
            raise ValueError("link keys are AES-128 (16 octets)")
        if len(own_source) != EUI64_LENGTH:
            raise ValueError("the own source address must be an EUI-64 (8 octets)")
        self.key_id = key_id
        self.own_source = own_source
        self._cipher = CcmStar(key, SECURITY_LEVEL)
        self._windows: ReplayWindows[bytes] = ReplayWindows(window, max_senders)
        self.next_counter = 0

    @property
    def exhausted(self) -> bool:
        return self.next_counter > MAX_FRAME_COUNTER

    def protect(self, plaintext: Plaintext, multicast: bool = False) -> SecuredFrame:
        """Seal with the next counter value; never reuses one (raises CounterExhausted)."""
        counter = self.next_counter
        if counter > MAX_FRAME_COUNTER:
            raise CounterExhausted(f"key {self.key_id} has sent {counter} frames")
        self.next_counter = counter + 1
        return seal(self._cipher, self.key_id, counter, self.own_source, plaintext, multicast)

    def unprotect(self, frame: SecuredFrame) -> Plaintext:
        """Replay check, MIC check, then move that sender's window; raises LinkDecodeError."""
        if frame.key_id != self.key_id:
            raise LinkDecodeError(2, "frame is for another key", DropReason.UNKNOWN_KEY_ID)
        if frame.source == self.own_source:
            # both ends share the key: a frame claiming our address would reuse our nonces
            raise LinkDecodeError(14, "frame claims our own source address", DropReason.OWN_SOURCE)
        verdict = self._windows.check(frame.source, frame.counter)
        if verdict is Replay.REPLAYED:
            raise LinkDecodeError(
                10, f"counter {frame.counter} was seen before", DropReason.REPLAYED
            )
        if verdict is Replay.STALE:
            raise LinkDecodeError(
                10, f"counter {frame.counter} is older than the window", DropReason.OUT_OF_WINDOW
            )
        plain = open_frame(frame, self._cipher)
        self._windows.accept(frame.source, frame.counter)  # bounded: least recent forgotten
        return plain

    def __repr__(self) -> str:  # never the key
        return f"LinkKey({self.key_id}, next_counter={self.next_counter})"
