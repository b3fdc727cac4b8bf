"""The AUTH AVP, RFC 5191 §5.4/§8.1: a MAC over the whole PANA message with the AUTH value zeroed.

AUTH_HMAC_SHA1_160 (7) is HMAC-SHA1 with the full 20-octet output (RFC 4595);
AUTH_HMAC_SHA2_256_128 (12) is HMAC-SHA256 truncated to 16 octets (RFC 4868). The key is
PANA_AUTH_KEY. Verification works on the received octets, never on a re-encoding.
"""

from __future__ import annotations

import hmac

from amistack.crypto import PrfHash, hmac_digest
from amistack.pana.avp import Avp
from amistack.pana.constants import AVP_HEADER_LENGTH, AvpCode, IntegrityAlgorithm, PrfAlgorithm
from amistack.pana.errors import PanaDecodeError
from amistack.pana.message import PanaMessage, auth_value_span

_AUTH_LEN = {
    IntegrityAlgorithm.AUTH_HMAC_SHA1_160: 20,
    IntegrityAlgorithm.AUTH_HMAC_SHA2_256_128: 16,
}
_AUTH_HASH = {
    IntegrityAlgorithm.AUTH_HMAC_SHA1_160: PrfHash.SHA1,
    IntegrityAlgorithm.AUTH_HMAC_SHA2_256_128: PrfHash.SHA256,
}
_AUTH = int(AvpCode.AUTH)
# the AUTH AVP's header (RFC 5191 §8.1: no V flag, Reserved zero) per value length
_AUTH_AVP_HEADER = {n: Avp(_AUTH, bytes(n)).encode()[:-n] for n in set(_AUTH_LEN.values())}
_PRF_HASH = {
    PrfAlgorithm.PRF_HMAC_SHA1: PrfHash.SHA1,
    PrfAlgorithm.PRF_HMAC_SHA2_256: PrfHash.SHA256,
}


def prf_hash(alg: PrfAlgorithm) -> PrfHash:
    return _PRF_HASH[alg]


def auth_length(alg: IntegrityAlgorithm) -> int:
    return _AUTH_LEN[alg]


def compute_auth(alg: IntegrityAlgorithm, key: bytes, zeroed_message: bytes) -> bytes:
    """The AUTH value for a message whose AUTH value octets are all zero."""
    return hmac_digest(_AUTH_HASH[alg], key, zeroed_message)[: _AUTH_LEN[alg]]


def sign(msg: PanaMessage, alg: IntegrityAlgorithm, key: bytes) -> bytes:
    """Encode `msg` with an AUTH AVP appended last (any AUTH it had is replaced)."""
    n = _AUTH_LEN[alg]
    if any(a.code == _AUTH and a.vendor_id is None for a in msg.avps):
        msg = msg.without(AvpCode.AUTH)
    # The message's own encoding, its Message Length grown by the AUTH AVP, then that AVP:
    # one encoding, no second message built around a zeroed AUTH.
    plain = msg.encode()
    length = len(plain) + AVP_HEADER_LENGTH + n
    if length > 0xFFFF:
        raise ValueError("PANA message longer than 65535 octets")
    head = plain[:2] + length.to_bytes(2, "big") + plain[4:] + _AUTH_AVP_HEADER[n]
    # n is a multiple of 4, so the AUTH value is the last n octets (no padding after it).
    return head + compute_auth(alg, key, head + bytes(n))


def verify(data: bytes, alg: IntegrityAlgorithm, key: bytes) -> bool:
    """True iff `data` decodes and carries an AUTH AVP with the right MAC (constant-time)."""
    data = bytes(data)
    try:
        span = auth_value_span(data)  # the engines decoded `data` already: scan headers only
    except PanaDecodeError:
        return False
    if span is None:
        return False
    start, length = span
    if length != _AUTH_LEN[alg]:
        return False
    zeroed = data[:start] + bytes(length) + data[start + length :]
    expected = compute_auth(alg, key, zeroed)
    return hmac.compare_digest(expected, data[start : start + length])
