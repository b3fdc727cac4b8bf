"""MS-MPPE-Send-Key / MS-MPPE-Recv-Key salt encryption (RFC 2548 §2.4.2, §2.4.3).

EAP puts the MSK into these two attributes of the Access-Accept: MS-MPPE-Recv-Key carries
MSK[0:32] and MS-MPPE-Send-Key MSK[32:64] (RFC 3748 §1.2 / the convention of hostapd,
FreeRADIUS and RFC 5216 §2.3). pyrad's salt helper draws its salt from a global RNG, so this
module does the (small) encryption itself with an injected salt.
"""

from __future__ import annotations

import hashlib

from amistack.radius.packet import AUTHENTICATOR_LEN, RadiusDecodeError

SALT_LEN = 2
MSK_LEN = 64
MPPE_KEY_LEN = 32


def _keystream_xor(data: bytes, secret: bytes, first_vector: bytes, encrypt: bool) -> bytes:
    # b(1) = MD5(S + R + A), c(i) = p(i) xor b(i), b(i) = MD5(S + c(i-1))  (RFC 2548 §2.4.2)
    out = bytearray()
    vector = first_vector
    for i in range(0, len(data), 16):
        block = data[i : i + 16]
        pad = hashlib.md5(secret + vector).digest()
        result = bytes(x ^ y for x, y in zip(block, pad, strict=True))
        out += result
        vector = result if encrypt else block
    return bytes(out)


def mppe_encrypt(key: bytes, secret: bytes, request_authenticator: bytes, salt: bytes) -> bytes:
    """The attribute value Salt || String for `key` (the salt's high bit is forced on)."""
    if len(salt) != SALT_LEN:
        raise ValueError("the MPPE salt is 2 octets")
    if len(request_authenticator) != AUTHENTICATOR_LEN:
        raise ValueError("the Request Authenticator is 16 octets")
    if len(key) > 239:  # 1 length octet + key, padded, + 2 salt octets must fit 253
        raise ValueError("MPPE key too long")
    salt = bytes([salt[0] | 0x80, salt[1]])  # RFC 2548 §2.4.2: the high bit MUST be set
    plain = bytes([len(key)]) + key
    plain += bytes(-len(plain) % 16)
    return salt + _keystream_xor(plain, secret, request_authenticator + salt, encrypt=True)


def mppe_decrypt(value: bytes, secret: bytes, request_authenticator: bytes) -> bytes:
    """The key inside an MS-MPPE-*-Key value; RadiusDecodeError when it cannot be one."""
    if len(value) < SALT_LEN + 16 or (len(value) - SALT_LEN) % 16:
        raise RadiusDecodeError(0, f"MS-MPPE key value of {len(value)} octets")
    if not value[0] & 0x80:
        raise RadiusDecodeError(0, "MS-MPPE salt without its high bit")
    salt = value[:SALT_LEN]
    plain = _keystream_xor(value[SALT_LEN:], secret, request_authenticator + salt, encrypt=False)
    if plain[0] > len(plain) - 1:
        raise RadiusDecodeError(SALT_LEN, f"MS-MPPE key length {plain[0]} exceeds the value")
    return plain[1 : 1 + plain[0]]


def msk_to_mppe(msk: bytes) -> tuple[bytes, bytes]:
    """(recv_key, send_key) = (MSK[0:32], MSK[32:64])."""
    if len(msk) < MSK_LEN:
        raise ValueError("the MSK is at least 64 octets (RFC 3748 §7.10)")
    return msk[:MPPE_KEY_LEN], msk[MPPE_KEY_LEN:MSK_LEN]


def mppe_to_msk(recv_key: bytes, send_key: bytes) -> bytes:
    """The 64-octet MSK from the decrypted Recv and Send keys."""
    return recv_key[:MPPE_KEY_LEN] + send_key[:MPPE_KEY_LEN]
