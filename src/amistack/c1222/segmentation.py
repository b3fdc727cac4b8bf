"""Segmentation of C12.22 APDUs larger than one datagram (C12.22 §5.3.2.3, transport layer).

A large table read (a month of 15-minute load profile is ~14 KB) does not fit the datagram size
a constrained network allows, so the sender cuts the encoded APDU into segments and the
receiver reassembles them. Each segment is a BER element whose tag (0x61) can never begin an
ACSE APDU (0x60), so one port carries both:

    61 <len> <apdu-seq: word16> <apdu-length: word24> <segment-offset: word24> <bytes>

(an amistack framing in the spirit of C12.22's segmentation; the standard's own segment header
is not publicly documented). Reassembly is bounded: an APDU of at most `max_apdu` bytes, at
most `max_pending` APDUs in reassembly (the oldest is dropped), each given `timeout` seconds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from amistack.c1222 import ber
from amistack.c1222.errors import C1222DecodeError

SEGMENT_TAG = 0x61
_HEADER = 8


@dataclass(frozen=True)
class Segment:
    apdu_seq: int
    apdu_length: int
    offset: int
    data: bytes

    def encode(self) -> bytes:
        head = (
            self.apdu_seq.to_bytes(2, "big")
            + self.apdu_length.to_bytes(3, "big")
            + self.offset.to_bytes(3, "big")
        )
        return ber.tlv(SEGMENT_TAG, head + self.data)

    @classmethod
    def decode(cls, data: bytes) -> Segment:
        tag, start, end = ber.read_tlv(data, 0)
        if tag != SEGMENT_TAG:
            raise C1222DecodeError(0, f"not a segment (tag {tag:#04x})")
        if end != len(data):
            raise C1222DecodeError(end, "trailing bytes after segment")
        if end - start <= _HEADER:
            raise C1222DecodeError(start, "segment without data")
        body = data[start:end]
        seg = cls(
            int.from_bytes(body[:2], "big"),
            int.from_bytes(body[2:5], "big"),
            int.from_bytes(body[5:8], "big"),
            body[_HEADER:],
        )
        if seg.offset + len(seg.data) > seg.apdu_length:
            raise C1222DecodeError(start + 5, "segment runs past the APDU length")
        return seg


def segment(apdu: bytes, apdu_seq: int, max_datagram: int) -> list[bytes]:
    """`apdu` itself if it fits `max_datagram`, else its segments, each at most that long."""
    if len(apdu) <= max_datagram:
        return [apdu]
    room = max_datagram - 1 - 4 - _HEADER  # tag, up to 4 length bytes, header
    if room < 1:
        raise ValueError("datagram size too small to segment")
    if len(apdu) > 0xFFFFFF:
        raise ValueError("APDU too large to segment")
    return [
        Segment(apdu_seq & 0xFFFF, len(apdu), off, apdu[off : off + room]).encode()
        for off in range(0, len(apdu), room)
    ]


@dataclass
class _Partial:
    length: int
    deadline: float
    chunks: dict[int, bytes]
    received: int = 0


class Reassembler:
    """Collects segments per (source, apdu-seq); `receive` returns the APDU once complete."""

    def __init__(self, timeout: float = 30.0, max_apdu: int = 1 << 16, max_pending: int = 64):
        self.timeout = timeout
        self.max_apdu = max_apdu
        self.max_pending = max_pending
        self._pending: OrderedDict[tuple[Hashable, int], _Partial] = OrderedDict()
        self.dropped = 0

    def receive(self, seg: Segment, source: Hashable, now: float) -> bytes | None:
        """The reassembled APDU, or None (more to come). C1222DecodeError for a segment that
        contradicts what was received (the partial APDU is dropped)."""
        if seg.apdu_length > self.max_apdu:
            raise C1222DecodeError(2, f"segmented APDU of {seg.apdu_length} bytes too large")
        if seg.offset + len(seg.data) > seg.apdu_length or not seg.data:
            raise C1222DecodeError(5, "segment runs past the APDU length")
        key = (source, seg.apdu_seq)
        part = self._pending.get(key)
        if part is None:
            part = _Partial(seg.apdu_length, now + self.timeout, {})
            self._pending[key] = part
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
                self.dropped += 1
        if part.length != seg.apdu_length:
            del self._pending[key]
            raise C1222DecodeError(2, "segment disagrees on the APDU length")
        if seg.offset in part.chunks:
            if part.chunks[seg.offset] != seg.data:
                del self._pending[key]
                raise C1222DecodeError(5, "segment repeated with different data")
            return None
        part.chunks[seg.offset] = seg.data
        part.received += len(seg.data)
        if part.received < part.length:
            return None
        del self._pending[key]
        pos = 0
        for o in sorted(part.chunks):
            if o != pos:
                raise C1222DecodeError(5, "segments overlap or leave a gap")
            pos += len(part.chunks[o])
        return b"".join(part.chunks[o] for o in sorted(part.chunks))

    def expire(self, now: float) -> int:
        expired = [k for k, p in self._pending.items() if p.deadline <= now]
        for k in expired:
            del self._pending[k]
        self.dropped += len(expired)
        return len(expired)

    def get_timer(self) -> float | None:
        if not self._pending:  # the usual case, asked after every datagram
            return None
        return min(p.deadline for p in self._pending.values())

    def __len__(self) -> int:
        return len(self._pending)
