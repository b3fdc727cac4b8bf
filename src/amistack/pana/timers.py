"""Retransmission, RFC 5191 §9 (which uses the RFC 3315 §14 algorithm).

RT(1) = IRT + RAND*IRT;  RT(n) = 2*RT(n-1) + RAND*RT(n-1);  if RT > MRT: RT = MRT + RAND*MRT
RAND uniform in [-0.1, +0.1]; give up after MRC retransmissions or MRD seconds (0 = no limit).
"""

from __future__ import annotations

from dataclasses import dataclass

from amistack.crypto import RandomSource


@dataclass(frozen=True)
class RetransmitParams:
    irt: float  # initial retransmission time, s
    mrt: float  # maximum retransmission time, s (0 = no cap)
    mrc: int  # maximum retransmission count (0 = unlimited)
    mrd: float  # maximum retransmission duration, s (0 = unlimited)


# RFC 5191 §9
PCI_RETRANSMIT = RetransmitParams(irt=1.0, mrt=120.0, mrc=0, mrd=0.0)
REQ_RETRANSMIT = RetransmitParams(irt=1.0, mrt=30.0, mrc=10, mrd=0.0)


JITTER_BATCH = 256  # octets of the injected source drawn at a time by `jitter_source`


def jitter_source(rng: RandomSource, batch: int = JITTER_BATCH) -> RandomSource:
    """A RandomSource for RAND alone: small draws served from one `batch`-octet draw of `rng`.
    RAND only spreads retransmissions (RFC 3315 §14) and is no secret, so one call of the
    injected source serves 128 timers instead of one call each (a PAA starts four per
    authentication); never use it for nonces, identifiers or keys."""
    buf = b""
    pos = 0

    def draw(n: int) -> bytes:
        nonlocal buf, pos
        if pos + n > len(buf):
            buf, pos = rng(max(batch, n)), 0
        out = buf[pos : pos + n]
        pos += n
        return out

    return draw


def _rand(rng: RandomSource) -> float:
    return int.from_bytes(rng(2), "big") / 0xFFFF * 0.2 - 0.1


class Retransmission:
    """The timer of one outstanding request."""

    def __init__(self, params: RetransmitParams, rng: RandomSource, now: float) -> None:
        self._p = params
        self._rng = rng
        self._start = now
        self.count = 0
        self.rt = params.irt + _rand(rng) * params.irt
        self.deadline = now + self.rt

    def fire(self, now: float) -> bool:
        """The deadline passed: True = retransmit now (deadline moved on), False = give up."""
        p = self._p
        if p.mrc and self.count >= p.mrc:
            return False
        if p.mrd and now - self._start >= p.mrd:
            return False
        self.count += 1
        rt = 2 * self.rt + _rand(self._rng) * self.rt
        if p.mrt and rt > p.mrt:
            rt = p.mrt + _rand(self._rng) * p.mrt
        self.rt = rt
        self.deadline = now + rt
        if p.mrd:
            self.deadline = min(self.deadline, self._start + p.mrd)
        return True
