"""AES-128-CCM* as IEEE 802.15.4 uses it (802.15.4-2006 §7.6.3 and Annex B; 802.15.4-2015 §9.3).

CCM* is CCM (RFC 3610) with two additions: a MIC length of 0 (encryption only) and the eight
security levels that pick the MIC length and whether the payload is encrypted:

    level  name          MIC   encrypted
      0    none            0   no
      1    MIC-32          4   no         levels 1..3: the payload is authenticated data
      2    MIC-64          8   no
      3    MIC-128        16   no
      4    ENC             0   yes        CTR only (802.15.4-2015 removed it; 2006 has it)
      5    ENC-MIC-32      4   yes
      6    ENC-MIC-64      8   yes        what amistack sends by default
      7    ENC-MIC-128    16   yes

The nonce is 13 octets: the sender's EUI-64 | frame counter (big-endian) | security level
(802.15.4-2006 §7.6.3.2, figure 96), so L = 2 and one key/sender/counter triple must never repeat.
Authenticated levels run on `cryptography`'s AESCCM; level 4 is AES-CTR from counter block A_1
(RFC 3610 §2.3 with M = 0).
"""

from __future__ import annotations

from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from amistack.addr import EUI64_LENGTH

__all__ = [
    "KEY_LENGTH",
    "NONCE_LENGTH",
    "CcmStar",
    "CcmStarAuthError",
    "SecurityLevel",
    "ccm_star_nonce",
]

KEY_LENGTH = 16  # AES-128 only (802.15.4-2006 §7.6.3)
NONCE_LENGTH = 13  # 802.15.4-2006 §7.6.3.2: 8 + 4 + 1
_L_FLAGS = 0x01  # RFC 3610 §2.3: flags of A_i = L - 1, L = 15 - 13 = 2


class SecurityLevel(IntEnum):
    """802.15.4-2006 table 95 (2015: table 9-6)."""

    NONE = 0
    MIC_32 = 1
    MIC_64 = 2
    MIC_128 = 3
    ENC = 4
    ENC_MIC_32 = 5
    ENC_MIC_64 = 6
    ENC_MIC_128 = 7

    @property
    def mic_length(self) -> int:
        return (0, 4, 8, 16)[self & 3]

    @property
    def encrypts(self) -> bool:
        return bool(self & 4)


class CcmStarAuthError(Exception):
    """The MIC did not verify (wrong key, forged or damaged frame)."""


def ccm_star_nonce(source: bytes, counter: int, level: int) -> bytes:
    """The 802.15.4 nonce: source EUI-64 | frame counter (big-endian) | security level."""
    if len(source) != EUI64_LENGTH:
        raise ValueError("the source address must be an EUI-64 (8 octets)")
    if not 0 <= counter <= 0xFFFFFFFF:
        raise ValueError("frame counters are 32-bit")
    return source + counter.to_bytes(4, "big") + bytes((level,))


class CcmStar:
    """One key at one security level: `seal` / `open` of (authenticated data, payload)."""

    __slots__ = ("_aead", "_encrypts", "_key", "_mic", "level")

    def __init__(self, key: bytes, level: SecurityLevel | int = SecurityLevel.ENC_MIC_64) -> None:
        if len(key) != KEY_LENGTH:
            raise ValueError("CCM* keys are AES-128 (16 octets)")
        self.level = SecurityLevel(level)
        self._key = key
        # the level's properties once, not per frame (every mesh frame is sealed or opened here)
        self._mic = mic = self.level.mic_length
        self._encrypts = self.level.encrypts
        self._aead = AESCCM(key, tag_length=mic) if mic else None

    def _ctr(self, nonce: bytes, data: bytes) -> bytes:
        a1 = bytes((_L_FLAGS,)) + nonce + (1).to_bytes(2, "big")
        enc = Cipher(algorithms.AES(self._key), modes.CTR(a1)).encryptor()
        return enc.update(data) + enc.finalize()

    def seal(self, nonce: bytes, aad: bytes, payload: bytes) -> bytes:
        """The payload as it goes on the wire: (ciphertext or plaintext) | MIC."""
        if len(nonce) != NONCE_LENGTH:
            _check_nonce(nonce)
        if self._aead is None:
            return self._ctr(nonce, payload) if self._encrypts else payload
        if self._encrypts:
            return self._aead.encrypt(nonce, payload, aad)
        return payload + self._aead.encrypt(nonce, b"", aad + payload)

    def open(self, nonce: bytes, aad: bytes, sealed: bytes) -> bytes:
        """Inverse of `seal`: the payload, or CcmStarAuthError if the MIC does not verify."""
        if len(nonce) != NONCE_LENGTH:
            _check_nonce(nonce)
        mic = self._mic
        if len(sealed) < mic:
            raise CcmStarAuthError(f"{len(sealed)} octets cannot hold a {mic}-octet MIC")
        if self._aead is None:
            return self._ctr(nonce, sealed) if self._encrypts else sealed
        try:
            if self._encrypts:
                return self._aead.decrypt(nonce, sealed, aad)
            payload = sealed[:-mic]
            self._aead.decrypt(nonce, sealed[-mic:], aad + payload)
            return payload
        except InvalidTag:
            raise CcmStarAuthError("MIC does not verify") from None

    def __repr__(self) -> str:  # never the key
        return f"CcmStar(level={self.level.name})"


def _check_nonce(nonce: bytes) -> None:
    if len(nonce) != NONCE_LENGTH:
        raise ValueError(f"CCM* nonces are {NONCE_LENGTH} octets")
