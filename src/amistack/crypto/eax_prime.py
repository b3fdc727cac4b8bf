"""EAX' (EAX prime), the data-protection mode of ANSI C12.22-2008 Annex I.

EAX' is EAX with one CMAC pass saved: the "nonce" is the cleartext (the canonified ACSE header
elements, never secret), the header is empty, and the tag is 4 bytes. It differs from EAX in
ways that matter for interoperability, all pinned by the four published vectors
(`tests/vectors/eax_prime.json`, reproduced by Wireshark's `wsutil/eax.c`):

- the doubling treats a block as a LITTLE-endian integer (byte 0 least significant): shift left
  by one, and on carry out of byte 15 XOR 0x87 into byte 0 (not the big-endian CMAC doubling);
- D = dbl(E_K(0^128)), Q = dbl(D); CMAC'_X(M) is CBC-MAC with IV X where the last block is
  XORed with D when complete, else 10*-padded and XORed with Q;
- N' = CMAC'_D(cleartext); the CTR counter is N' with bytes 12 and 14 ANDed with 0x7F
  (so the 32-bit words never carry), incremented as a 128-bit big-endian integer;
- tag = last 4 bytes of (N' XOR CMAC'_Q(ciphertext)); authentication-only mode:
  tag = last 4 bytes of CMAC'_D(cleartext || plaintext).

Security: with a cleartext of one block or less EAX' is broken (Minematsu, Lucks, Morita,
Iwata: ePrint 2012/018, forgeries and plaintext recovery), so cleartext of 16 bytes or less is
refused here. A real C12.22 header (called AP title + invocation id + ...) is always longer.

Two implementations of one interface: `EaxPrime` here, the reference, over `cryptography`; and
`NativeEaxPrime`, the same algorithm in C over OpenSSL (`_eax_prime.c`, an optional extension
built by setup.py), one call per message. A head-end opens each meter's message under that
meter's own key, so building a cipher context per message (~7 - 10 us) cost more than the
message's few AES blocks; the extension re-keys one OpenSSL context instead (~0.5 us a call,
~1 us a message with its wrapper). `eax_prime(key)` gives the extension when it is built
(`NATIVE`), else the reference; the known-answer tests run both.
"""

from __future__ import annotations

import functools
import hmac
import threading

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from amistack.crypto.aes import BLOCK
from amistack.crypto.eax import EaxAuthError

try:  # the optional C extension (setup.py); without it the reference below serves alone
    from amistack.crypto import _eax_prime as _native
except ImportError:  # pragma: no cover - a build without a C compiler or OpenSSL headers
    _native = None  # type: ignore[assignment]

NATIVE = _native is not None

# C12.22's common message layout sealed or parsed in one C call (`_eax_prime.c`), None without
# the extension: amistack.c1222 uses them when present, its Python code is the reference.
native_c1222_seal = None if _native is None else _native.c1222_seal
native_c1222_parse = None if _native is None else _native.c1222_parse
native_c1222_open = None if _native is None else _native.c1222_open

TAG_LEN = 4  # ANSI C12.22 Annex I: a 4-byte MAC
MIN_CLEARTEXT = BLOCK + 1  # ePrint 2012/018: one block or less is attackable
_MASK128 = (1 << 128) - 1
_TAG_MASK = (1 << (8 * TAG_LEN)) - 1
# The CTR counter is N' with the top bits of bytes 12 and 14 cleared (bits 31 and 15 of the
# big-endian integer), so that the 32-bit words never carry.
_CTR_MASK = _MASK128 ^ (0x80 << 24) ^ (0x80 << 8)

__all__ = [
    "MIN_CLEARTEXT",
    "NATIVE",
    "TAG_LEN",
    "EaxAuthError",
    "EaxPrime",
    "EaxPrimeError",
    "NativeEaxPrime",
    "authenticate_with_key",
    "dbl_le",
    "decrypt_with_key",
    "eax_prime",
    "encrypt_with_key",
    "native_c1222_open",
    "native_c1222_parse",
    "native_c1222_seal",
    "verify_with_key",
]


class EaxPrimeError(ValueError):
    """EAX' refuses an input (weak cleartext length, wrong key or tag size)."""


def _check_key(key: bytes) -> None:
    if len(key) != 16:
        raise EaxPrimeError("EAX' (C12.22) keys are AES-128: 16 bytes")


def _check_cleartext(cleartext: bytes) -> None:
    if len(cleartext) < MIN_CLEARTEXT:
        raise EaxPrimeError(
            f"EAX' cleartext of {len(cleartext)} bytes refused: one block or less is "
            "insecure (ePrint 2012/018); at least 17 bytes are required"
        )


def dbl_le(block: bytes) -> bytes:
    """EAX' doubling: the 16 bytes as a little-endian integer, times x in GF(2^128)."""
    n = int.from_bytes(block, "little") << 1
    if n >> 128:
        n = (n & ((1 << 128) - 1)) ^ 0x87
    return n.to_bytes(BLOCK, "little")


class _Verify:
    """`verify` on top of an implementation's `authenticate`."""

    __slots__ = ()

    def authenticate(self, cleartext: bytes, plaintext: bytes) -> bytes:
        raise NotImplementedError

    def verify(self, cleartext: bytes, plaintext: bytes, tag: bytes) -> None:
        """Authentication-only check; EaxAuthError if the tag does not verify."""
        expected = self.authenticate(cleartext, plaintext)
        if len(tag) != TAG_LEN or not hmac.compare_digest(expected, tag):
            raise EaxAuthError("EAX' tag mismatch")


class EaxPrime(_Verify):
    """EAX' under one AES-128 key; D and Q are computed once per key.

    Every AES operation goes through ONE long-lived AES-CBC encryptor per key (building a
    `cryptography` cipher context costs as much as a few dozen blocks, and a C12.22 message is
    only a handful of blocks). The encryptor's chaining state is the last ciphertext block it
    returned (`_prev`), so feeding `B xor _prev` yields E_K(B) (one ECB block), and a CBC-MAC with
    any IV X is one update whose first block is pre-XORed with `X xor _prev`. A lock keeps that
    chaining state consistent when an object is shared between threads.
    """

    __slots__ = ("_d", "_key", "_lock", "_prev", "_q", "_update")

    def __init__(self, key: bytes) -> None:
        _check_key(key)
        self._key = bytes(key)
        self._update = Cipher(algorithms.AES(self._key), modes.CBC(bytes(BLOCK))).encryptor().update
        self._lock = threading.Lock()
        e0 = self._update(bytes(BLOCK))  # IV 0: the first block is plain E_K(0^128)
        self._prev = int.from_bytes(e0, "big")
        d = dbl_le(e0)
        # D and Q as big-endian integers: the CMAC' passes XOR them into whole-message integers
        self._d = int.from_bytes(d, "big")
        self._q = int.from_bytes(dbl_le(d), "big")

    def __repr__(self) -> str:  # never the key
        return "EaxPrime(<key>)"

    def _cmac(self, iv: int, data: bytes) -> int:
        # CBC-MAC with IV `iv`; last block XOR D (complete) or 10*-padded XOR Q.
        n = len(data)
        if n and n % BLOCK == 0:
            last = self._d
            padded = data
        else:
            last = self._q
            padded = data + b"\x80" + bytes(-(n + 1) % BLOCK)
        size = len(padded)
        # One big integer for the whole message: XOR the IV (and the encryptor's chaining state)
        # into the first block and D/Q into the last in one go.
        work = int.from_bytes(padded, "big") ^ last
        shift = (size - BLOCK) * 8
        with self._lock:
            work ^= (iv ^ self._prev) << shift
            out = int.from_bytes(self._update(work.to_bytes(size, "big"))[-BLOCK:], "big")
            self._prev = out
        return out

    def _ctr(self, n_prime: int, data: bytes) -> bytes:
        if not data:
            return b""
        counter = n_prime & _CTR_MASK
        blocks = -(-len(data) // BLOCK)
        ks = 0
        update = self._update
        with self._lock:
            prev = self._prev
            for i in range(blocks):  # E_K(counter + i) through the chained encryptor
                prev = int.from_bytes(
                    update((((counter + i) & _MASK128) ^ prev).to_bytes(BLOCK, "big")), "big"
                )
                ks = (ks << 128) | prev
            self._prev = prev
        ks >>= (blocks * BLOCK - len(data)) * 8
        return (int.from_bytes(data, "big") ^ ks).to_bytes(len(data), "big")

    def encrypt(self, cleartext: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
        """Ciphertext+authentication mode: (ciphertext, 4-byte tag)."""
        _check_cleartext(cleartext)
        n_prime = self._cmac(self._d, cleartext)
        ciphertext = self._ctr(n_prime, plaintext)
        return ciphertext, self._tag(n_prime, ciphertext)

    def _tag(self, n_prime: int, ciphertext: bytes) -> bytes:
        full = n_prime ^ self._cmac(self._q, ciphertext) if ciphertext else n_prime
        return (full & _TAG_MASK).to_bytes(TAG_LEN, "big")

    def decrypt(self, cleartext: bytes, ciphertext: bytes, tag: bytes) -> bytes:
        """The plaintext; EaxAuthError if the tag does not verify (nothing is decrypted then)."""
        _check_cleartext(cleartext)
        n_prime = self._cmac(self._d, cleartext)
        if len(tag) != TAG_LEN or not hmac.compare_digest(self._tag(n_prime, ciphertext), tag):
            raise EaxAuthError("EAX' tag mismatch")
        return self._ctr(n_prime, ciphertext)

    def authenticate(self, cleartext: bytes, plaintext: bytes) -> bytes:
        """Cleartext+authentication mode: the 4-byte tag over cleartext || plaintext."""
        _check_cleartext(cleartext)
        return (self._cmac(self._d, cleartext + plaintext) & _TAG_MASK).to_bytes(TAG_LEN, "big")


class NativeEaxPrime(_Verify):
    """EAX' under one AES-128 key, by the C extension: `EaxPrime`'s interface and results,
    each call one pass in C (key schedule, CMAC' passes, CTR); nothing is kept per key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if _native is None:
            raise RuntimeError("the EAX' extension (amistack.crypto._eax_prime) is not built")
        _check_key(key)
        self._key = bytes(key)

    def __repr__(self) -> str:  # never the key
        return "NativeEaxPrime(<key>)"

    def encrypt(self, cleartext: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
        """Ciphertext+authentication mode: (ciphertext, 4-byte tag)."""
        return encrypt_with_key(self._key, cleartext, plaintext)

    def decrypt(self, cleartext: bytes, ciphertext: bytes, tag: bytes) -> bytes:
        """The plaintext; EaxAuthError if the tag does not verify (nothing is decrypted then)."""
        return decrypt_with_key(self._key, cleartext, ciphertext, tag)

    def authenticate(self, cleartext: bytes, plaintext: bytes) -> bytes:
        """Cleartext+authentication mode: the 4-byte tag over cleartext || plaintext."""
        return authenticate_with_key(self._key, cleartext, plaintext)


EAX_CACHE = 4096  # keys whose EaxPrime is kept (a head-end talks to many meters in turn)


@functools.lru_cache(maxsize=EAX_CACHE)
def _cached(key: bytes) -> EaxPrime:
    return EaxPrime(key)


def eax_prime(key: bytes) -> EaxPrime | NativeEaxPrime:
    """EAX' under `key`: the C extension when it is built (nothing to keep per key), else the
    reference `EaxPrime`, shared by the recent users of that key: building one (an AES context,
    D and Q) costs more than protecting a short C12.22 message, and a request, its response and
    their checks use the same key. At most EAX_CACHE keys stay expanded in memory after their
    last use (in a process that holds them in its key rings anyway)."""
    if _native is not None:
        return NativeEaxPrime(key)
    return _cached(key)


# One call per message without an object per call (the C12.22 engines' path: each message has
# its sender's key); the same results as `eax_prime(key)`'s methods.


def encrypt_with_key(key: bytes, cleartext: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """`eax_prime(key).encrypt(cleartext, plaintext)`."""
    if _native is None:
        return _cached(bytes(key)).encrypt(cleartext, plaintext)
    _check_key(key)
    _check_cleartext(cleartext)
    return _native.encrypt(key, cleartext, plaintext)


def decrypt_with_key(key: bytes, cleartext: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    """`eax_prime(key).decrypt(cleartext, ciphertext, tag)`: EaxAuthError on a bad tag."""
    if _native is None:
        return _cached(bytes(key)).decrypt(cleartext, ciphertext, tag)
    _check_key(key)
    _check_cleartext(cleartext)
    plaintext = _native.decrypt(key, cleartext, ciphertext, tag)
    if plaintext is None:
        raise EaxAuthError("EAX' tag mismatch")
    return plaintext


def authenticate_with_key(key: bytes, cleartext: bytes, plaintext: bytes) -> bytes:
    """`eax_prime(key).authenticate(cleartext, plaintext)`."""
    if _native is None:
        return _cached(bytes(key)).authenticate(cleartext, plaintext)
    _check_key(key)
    _check_cleartext(cleartext)
    return _native.authenticate(key, cleartext, plaintext)


def verify_with_key(key: bytes, cleartext: bytes, plaintext: bytes, tag: bytes) -> None:
    """`eax_prime(key).verify(cleartext, plaintext, tag)`: EaxAuthError on a bad tag."""
    expected = authenticate_with_key(key, cleartext, plaintext)
    if len(tag) != TAG_LEN or not hmac.compare_digest(expected, tag):
        raise EaxAuthError("EAX' tag mismatch")
