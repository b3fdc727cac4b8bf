"""Small helpers both engines share."""

from __future__ import annotations

from amistack.pana.constants import AvpCode, IntegrityAlgorithm, PrfAlgorithm
from amistack.pana.message import PanaMessage

_U32_CODES = frozenset(
    int(c)
    for c in (
        AvpCode.INTEGRITY_ALGORITHM,
        AvpCode.KEY_ID,
        AvpCode.PRF_ALGORITHM,
        AvpCode.RESULT_CODE,
        AvpCode.SESSION_LIFETIME,
        AvpCode.TERMINATION_CAUSE,
    )
)


def check_avp_lengths(msg: PanaMessage) -> None:
    """Raise PanaDecodeError now if a fixed-size AVP has the wrong size, so the engines never meet
    a malformed value half-way through changing state."""
    for avp in msg.avps:  # one pass over the message, not one per code
        if avp.code in _U32_CODES and avp.vendor_id is None and len(avp.value) != 4:
            avp.as_u32()  # raises the typed error


def offered_prfs(msg: PanaMessage) -> list[PrfAlgorithm]:
    out = []
    for avp in msg.find_all(AvpCode.PRF_ALGORITHM):
        v = avp.as_u32()
        if v in PrfAlgorithm._value2member_map_:
            out.append(PrfAlgorithm(v))
    return out


def offered_integrity(msg: PanaMessage) -> list[IntegrityAlgorithm]:
    out = []
    for avp in msg.find_all(AvpCode.INTEGRITY_ALGORITHM):
        v = avp.as_u32()
        if v in IntegrityAlgorithm._value2member_map_:
            out.append(IntegrityAlgorithm(v))
    return out
