"""What both ends keep per PANA session: sequence numbers, the answer cache, the one outstanding
request with its retransmission timer, and the PANA SA (RFC 5191 §4.2, §5.3, §9)."""

from __future__ import annotations

from dataclasses import dataclass

from amistack.crypto import RandomSource
from amistack.pana.auth import sign, verify
from amistack.pana.avp import Avp
from amistack.pana.constants import FLAG_R, IntegrityAlgorithm, PrfAlgorithm
from amistack.pana.keys import PanaSecurityContext
from amistack.pana.message import PanaMessage
from amistack.pana.timers import Retransmission, RetransmitParams

SEQ_MOD = 1 << 32


@dataclass
class Outstanding:
    msg_type: int
    flags: int
    seq: int
    raw: bytes
    timer: Retransmission | None  # None: not retransmitted by us (the PAR answering a PCI)


class SessionCore:
    def __init__(self, session_id: int, isn: int) -> None:
        self.session_id = session_id
        self.tx_seq = isn % SEQ_MOD  # the sequence number of our next request
        self.outstanding: Outstanding | None = None
        self.rx_seq: int | None = None  # the last request of the peer we accepted
        self.last_rx_raw: bytes | None = None
        self.last_answer: bytes | None = None
        self.prf: PrfAlgorithm | None = None
        self.integ: IntegrityAlgorithm | None = None
        self.i_par = b""
        self.i_pan = b""
        self.ctx: PanaSecurityContext | None = None  # the PANA SA in force
        self.key: bytes | None = None  # its PANA_AUTH_KEY

    def encode(self, msg: PanaMessage, key: bytes | None) -> bytes:
        if key is None or self.integ is None:
            return msg.encode()
        return sign(msg, self.integ, key)

    def verify(self, raw: bytes, key: bytes) -> bool:
        return self.integ is not None and verify(raw, self.integ, key)

    def request(
        self,
        msg_type: int,
        flags: int,
        avps: tuple[Avp, ...],
        key: bytes | None,
        params: RetransmitParams | None,
        rng: RandomSource,
        now: float,
    ) -> bytes:
        seq = self.tx_seq
        self.tx_seq = (self.tx_seq + 1) % SEQ_MOD
        flags = int(flags) | FLAG_R  # a plain int: see constants.FLAG_R
        raw = self.encode(PanaMessage(msg_type, flags, self.session_id, seq, avps), key)
        timer = None if params is None else Retransmission(params, rng, now)
        self.outstanding = Outstanding(msg_type, flags, seq, raw, timer)
        return raw

    def answer(
        self,
        request: PanaMessage,
        raw_request: bytes,
        flags: int,
        avps: tuple[Avp, ...],
        key: bytes | None,
    ) -> bytes:
        """Build the answer to `request`, accept its sequence number and cache the answer."""
        msg = PanaMessage(
            request.msg_type, int(flags) & ~FLAG_R, self.session_id, request.seq, avps
        )
        raw = self.encode(msg, key)
        self.rx_seq = request.seq
        self.last_rx_raw = raw_request
        self.last_answer = raw
        return raw

    def classify(self, msg: PanaMessage, raw: bytes) -> str:
        """'new' (next in sequence), 'dup' (the last request again) or 'bad' (RFC 5191 §4.2)."""
        if self.rx_seq is None:
            return "new"
        if msg.seq == self.rx_seq:
            return "dup" if raw == self.last_rx_raw else "bad"
        if msg.seq == (self.rx_seq + 1) % SEQ_MOD:
            return "new"
        return "bad"

    def matches_outstanding(self, msg: PanaMessage) -> bool:
        o = self.outstanding
        return o is not None and o.seq == msg.seq and o.msg_type == msg.msg_type
