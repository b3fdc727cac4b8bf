"""EAP-PSK (RFC 4764): mutual authentication and key derivation from a 16-byte pre-shared key.

    1. server -> peer   Flags(T=0) | RAND_S | ID_S
    2. peer -> server   Flags(T=1) | RAND_S | RAND_P | MAC_P | ID_P
    3. server -> peer   Flags(T=2) | RAND_S | MAC_S | PCHANNEL(nonce 0, R=DONE_SUCCESS)
    4. peer -> server   Flags(T=3) | RAND_S | PCHANNEL(nonce 1, R=DONE_SUCCESS)

Keys (§3.1, §3.2): AK and KDK from the PSK; TEK, MSK, EMSK from KDK and RAND_P with the
"modified counter mode" (E_KDK(E_KDK(RAND_P) xor c_i), c_i = i as a 128-bit integer).
MAC_P = CMAC-AES-128(AK, ID_P|ID_S|RAND_S|RAND_P), MAC_S = CMAC-AES-128(AK, ID_S|RAND_P) (§3.2).
PCHANNEL (§3.3) = nonce (4) | tag (16) | EAX_TEK(R|E|reserved [| EXT]) with the 16-byte EAX
nonce 0^96 | nonce and the first 22 bytes of the EAP packet (EAP header, Type, Flags, RAND_S)
as EAX header. Session-Id = 0x2F | RAND_P | RAND_S (RFC 5247 appendix).

Policy: malformed or out-of-order messages are discarded (the conversation may still
complete); a failed MAC, PCHANNEL tag or nonce check, an unknown ID_P or a DONE_FAILURE result
ends the conversation in failure. Extensions (E flag, R=CONT) are not supported: a peer that is
offered one answers DONE_FAILURE.
"""

from __future__ import annotations

import functools
import hmac
import logging
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum

from amistack.crypto import Eax, EaxAuthError, RandomSource, aes_cmac
from amistack.crypto.aes import AesEcb, aes_ecb
from amistack.crypto.cmac import AesCmac
from amistack.crypto.eax import NativeEax, eax
from amistack.eap.method import (
    Decision,
    MethodState,
    PeerMethod,
    ServerMethod,
    ServerMethodStep,
    ServerOutcome,
    request_header,
    response_header,
)
from amistack.eap.packet import EapDecodeError, EapPacket, EapType
from amistack.frozeninit import frozen_init

logger = logging.getLogger(__name__)

PSK_LEN = 16
RAND_LEN = 16  # §4.1
MAC_LEN = 16
NONCE_LEN = 4  # §3.3
TAG_LEN = 16
EAX_HEADER_LEN = 22  # EAP header (4) + Type + Flags + RAND_S
MSK_LEN = 64
EMSK_LEN = 64
SESSION_ID_PREFIX = bytes([EapType.PSK])  # RFC 5247 appendix: Type-Code | RAND_P | RAND_S


class PskMessageType(IntEnum):
    """The T field: the two most significant bits of Flags (RFC 4764 §5.1)."""

    FIRST = 0
    SECOND = 1
    THIRD = 2
    FOURTH = 3


class ResultFlag(IntEnum):
    """R, the two most significant bits of the PCHANNEL plaintext (RFC 4764 §5.3)."""

    CONT = 1
    DONE_SUCCESS = 2
    DONE_FAILURE = 3


_E_FLAG = 0x20  # §5.3: the extension flag, bit 2 of the first plaintext byte


# -- key derivation (§3.1, §3.2) ------------------------------------------------------------


@functools.cache
def _counters(first: int, last: int) -> int:
    """c_first | ... | c_last (each i as a 128-bit integer) as one integer."""
    return int.from_bytes(b"".join(i.to_bytes(16, "big") for i in range(first, last + 1)), "big")


def _counter_blocks(x: bytes, first: int, last: int) -> bytes:
    """x xor c_i for i in first..last, concatenated (c_i = i as a 128-bit integer): one XOR
    of x repeated against the counters, not one integer round trip per block."""
    n = last - first + 1
    return (int.from_bytes(x * n, "big") ^ _counters(first, last)).to_bytes(16 * n, "big")


def derive_ak_kdk(psk: bytes) -> tuple[bytes, bytes]:
    """AK = E_PSK(E_PSK(0) xor c1), KDK = E_PSK(E_PSK(0) xor c2) (RFC 4764 §3.1)."""
    if len(psk) != PSK_LEN:
        raise ValueError(f"EAP-PSK needs a {PSK_LEN}-byte PSK, got {len(psk)}")
    e_psk = aes_ecb(psk)  # one context for the three blocks; ECB encrypts each independently
    out = e_psk(_counter_blocks(e_psk(bytes(16)), 1, 2))
    return out[:16], out[16:]


def derive_tek_msk_emsk(kdk: bytes, rand_p: bytes) -> tuple[bytes, bytes, bytes]:
    """TEK (16), MSK (64), EMSK (64) by the modified counter mode (RFC 4764 §3.2)."""
    return _tek_msk_emsk(aes_ecb(kdk), rand_p)


def _tek_msk_emsk(e_kdk: AesEcb, rand_p: bytes) -> tuple[bytes, bytes, bytes]:
    if len(rand_p) != RAND_LEN:
        raise ValueError(f"RAND_P must be {RAND_LEN} bytes")
    out = e_kdk(_counter_blocks(e_kdk(rand_p), 1, 9))
    return out[:16], out[16:80], out[80:144]


class PskKeys:
    """What a conversation needs of a PSK: AK as a keyed CMAC context and E_KDK as a keyed AES
    context (RFC 4764 §3.1). Deriving them costs several AES contexts; a peer or server that
    authenticates under the same PSK again can reuse one `PskKeys` (it holds no per-run state).
    Whoever caches it must drop it when the PSK changes or is revoked."""

    __slots__ = ("ak", "e_kdk")

    def __init__(self, psk: bytes) -> None:
        ak, kdk = derive_ak_kdk(psk)
        self.ak = AesCmac(ak)  # MAC_P and MAC_S
        self.e_kdk = aes_ecb(kdk)  # TEK, MSK, EMSK

    def __repr__(self) -> str:  # never the keys
        return "PskKeys(<secret>)"


def _cmac(ak: bytes | AesCmac, data: bytes) -> bytes:
    return ak.mac(data) if isinstance(ak, AesCmac) else aes_cmac(ak, data)


def compute_mac_p(
    ak: bytes | AesCmac, id_p: bytes, id_s: bytes, rand_s: bytes, rand_p: bytes
) -> bytes:
    """MAC_P = CMAC-AES-128(AK, ID_P || ID_S || RAND_S || RAND_P) (RFC 4764 §3.2).

    `ak` may be an `AesCmac` keyed with AK, so a conversation keys it once for both MACs."""
    return _cmac(ak, id_p + id_s + rand_s + rand_p)


def compute_mac_s(ak: bytes | AesCmac, id_s: bytes, rand_p: bytes) -> bytes:
    """MAC_S = CMAC-AES-128(AK, ID_S || RAND_P) (RFC 4764 §3.2)."""
    return _cmac(ak, id_s + rand_p)


def session_id(rand_p: bytes, rand_s: bytes) -> bytes:
    return SESSION_ID_PREFIX + rand_p + rand_s


def _eax_nonce(counter: int) -> bytes:
    return bytes(12) + struct.pack("!I", counter)


def seal_pchannel(
    tek: bytes | Eax | NativeEax, counter: int, header: bytes, result: ResultFlag
) -> bytes:
    """PCHANNEL = nonce | tag | EAX_TEK(R) with the 22-byte EAX header (RFC 4764 §3.3).

    `tek` may be an EAX already keyed with the TEK (`crypto.eax.eax`), so one conversation
    keys it once."""
    cipher = tek if isinstance(tek, (Eax, NativeEax)) else eax(tek)
    ciphertext, tag = cipher.encrypt(_eax_nonce(counter), bytes([result << 6]), header)
    return struct.pack("!I", counter) + tag + ciphertext


@frozen_init
@dataclass(frozen=True)
class PchannelContent:
    result: ResultFlag | None  # None: R = 0, which RFC 4764 leaves unassigned
    extension: bool


def open_pchannel(
    tek: bytes | Eax | NativeEax, counter: int, header: bytes, pchannel: bytes
) -> PchannelContent:
    """Verify and decrypt; raise EaxAuthError if forged (the nonce is checked by the caller)."""
    tag = pchannel[NONCE_LEN : NONCE_LEN + TAG_LEN]
    cipher = tek if isinstance(tek, (Eax, NativeEax)) else eax(tek)
    plaintext = cipher.decrypt(_eax_nonce(counter), pchannel[NONCE_LEN + TAG_LEN :], tag, header)
    r = plaintext[0] >> 6
    return PchannelContent(ResultFlag(r) if r else None, bool(plaintext[0] & _E_FLAG))


# -- message codecs (§5) --------------------------------------------------------------------


def _flags(t: PskMessageType) -> bytes:
    return bytes([t << 6])


def _check(data: bytes, t: PskMessageType, min_len: int) -> None:
    if len(data) < min_len:
        raise EapDecodeError(0, f"EAP-PSK message {t + 1} needs {min_len} bytes, got {len(data)}")
    got = data[0] >> 6
    if got != t:
        raise EapDecodeError(0, f"EAP-PSK T flag {got}, expected {int(t)}")


@frozen_init
@dataclass(frozen=True)
class PskFirst:
    rand_s: bytes
    id_s: bytes

    @classmethod
    def decode(cls, data: bytes) -> PskFirst:
        _check(data, PskMessageType.FIRST, 1 + RAND_LEN)
        return cls(data[1:17], data[17:])

    def encode(self) -> bytes:
        return _flags(PskMessageType.FIRST) + self.rand_s + self.id_s


@frozen_init
@dataclass(frozen=True)
class PskSecond:
    rand_s: bytes
    rand_p: bytes
    mac_p: bytes
    id_p: bytes

    @classmethod
    def decode(cls, data: bytes) -> PskSecond:
        _check(data, PskMessageType.SECOND, 1 + 2 * RAND_LEN + MAC_LEN)
        return cls(data[1:17], data[17:33], data[33:49], data[49:])

    def encode(self) -> bytes:
        return _flags(PskMessageType.SECOND) + self.rand_s + self.rand_p + self.mac_p + self.id_p


_PCHANNEL_MIN = NONCE_LEN + TAG_LEN + 1


@frozen_init
@dataclass(frozen=True)
class PskThird:
    rand_s: bytes
    mac_s: bytes
    pchannel: bytes

    @property
    def nonce(self) -> int:
        return int.from_bytes(self.pchannel[:NONCE_LEN], "big")

    @classmethod
    def decode(cls, data: bytes) -> PskThird:
        _check(data, PskMessageType.THIRD, 1 + RAND_LEN + MAC_LEN + _PCHANNEL_MIN)
        return cls(data[1:17], data[17:33], data[33:])

    def encode(self) -> bytes:
        return _flags(PskMessageType.THIRD) + self.rand_s + self.mac_s + self.pchannel


@frozen_init
@dataclass(frozen=True)
class PskFourth:
    rand_s: bytes
    pchannel: bytes

    @property
    def nonce(self) -> int:
        return int.from_bytes(self.pchannel[:NONCE_LEN], "big")

    @classmethod
    def decode(cls, data: bytes) -> PskFourth:
        _check(data, PskMessageType.FOURTH, 1 + RAND_LEN + _PCHANNEL_MIN)
        return cls(data[1:17], data[17:])

    def encode(self) -> bytes:
        return _flags(PskMessageType.FOURTH) + self.rand_s + self.pchannel


# -- peer -----------------------------------------------------------------------------------


class _PeerPhase(Enum):
    WAIT_FIRST = "wait_first"
    WAIT_THIRD = "wait_third"
    DONE = "done"


class EapPskPeer(PeerMethod):
    """The peer side of EAP-PSK (RFC 4764 §4, §5)."""

    method_type = EapType.PSK

    def __init__(self, id_p: bytes, psk: bytes | PskKeys, rng: RandomSource) -> None:
        """`psk`: the 16-byte PSK, or `PskKeys` derived from it once for many runs."""
        super().__init__()
        self.id_p = id_p
        self._keys = psk if isinstance(psk, PskKeys) else PskKeys(psk)
        self._rng = rng
        self._phase = _PeerPhase.WAIT_FIRST
        self._rand_s = b""
        self._rand_p = b""
        self._id_s = b""
        self._tek: Eax | NativeEax | None = None
        self._msk: bytes | None = None
        self._emsk: bytes | None = None
        self.counters: Counter[str] = Counter()
        self.failure_reason = ""

    @property
    def id_s(self) -> bytes:
        return self._id_s

    @property
    def msk(self) -> bytes | None:
        return self._msk if self.decision is not Decision.FAIL else None

    @property
    def emsk(self) -> bytes | None:
        return self._emsk if self.decision is not Decision.FAIL else None

    @property
    def session_id(self) -> bytes | None:
        if self.decision is Decision.FAIL or not self._rand_p:
            return None
        return session_id(self._rand_p, self._rand_s)

    def _fail(self, reason: str) -> None:
        logger.info("EAP-PSK peer failed: %s", reason, extra={"id_p": self.id_p})
        self.counters[reason] += 1
        self.failure_reason = reason
        self._phase = _PeerPhase.DONE
        self.state = MethodState.DONE
        self.decision = Decision.FAIL

    def process(self, request: EapPacket) -> bytes | None:
        try:
            if self._phase is _PeerPhase.WAIT_FIRST:
                return self._on_first(PskFirst.decode(request.type_data))
            if self._phase is _PeerPhase.WAIT_THIRD:
                return self._on_third(request, PskThird.decode(request.type_data))
        except EapDecodeError as exc:
            logger.debug("EAP-PSK peer discards a request: %s", exc)
            self.counters["malformed"] += 1
            return None
        self.counters["after_done"] += 1
        return None

    def _on_first(self, msg: PskFirst) -> bytes:
        self._rand_s, self._id_s = msg.rand_s, msg.id_s
        self._rand_p = self._rng(RAND_LEN)
        mac_p = compute_mac_p(self._keys.ak, self.id_p, self._id_s, self._rand_s, self._rand_p)
        self._phase = _PeerPhase.WAIT_THIRD
        self.state = MethodState.CONT
        self.decision = Decision.FAIL
        return PskSecond(self._rand_s, self._rand_p, mac_p, self.id_p).encode()

    def _on_third(self, request: EapPacket, msg: PskThird) -> bytes | None:
        if msg.rand_s != self._rand_s:
            self.counters["rand_s_mismatch"] += 1  # a stale or foreign message: discard
            return None
        expected = compute_mac_s(self._keys.ak, self._id_s, self._rand_p)
        if not hmac.compare_digest(expected, msg.mac_s):
            self._fail("mac_s_mismatch")
            return None
        tek, msk, emsk = _tek_msk_emsk(self._keys.e_kdk, self._rand_p)
        if msg.nonce != 0:
            self._fail("bad_nonce")
            return None
        cipher = eax(tek)  # opens nonce 0 and seals nonce 1
        try:
            content = open_pchannel(cipher, 0, request.encode()[:EAX_HEADER_LEN], msg.pchannel)
        except EaxAuthError:
            self._fail("pchannel_auth")
            return None
        self._tek = cipher
        if content.result is ResultFlag.DONE_SUCCESS and not content.extension:
            answer = ResultFlag.DONE_SUCCESS
        else:
            answer = ResultFlag.DONE_FAILURE  # server failure, or an extension we lack (§5.3)
        payload_len = 1 + RAND_LEN + _PCHANNEL_MIN
        header = response_header(request.identifier, EapType.PSK, payload_len)
        header += _flags(PskMessageType.FOURTH) + self._rand_s
        pchannel = seal_pchannel(cipher, 1, header, answer)
        self._phase = _PeerPhase.DONE
        self.state = MethodState.DONE
        if answer is ResultFlag.DONE_SUCCESS:
            self._msk, self._emsk = msk, emsk
            self.decision = Decision.UNCOND_SUCC
        else:
            self.failure_reason = "server_done_failure"
            self.decision = Decision.FAIL
        return PskFourth(self._rand_s, pchannel).encode()


# -- server ---------------------------------------------------------------------------------


class _ServerPhase(Enum):
    START = "start"
    WAIT_SECOND = "wait_second"
    WAIT_FOURTH = "wait_fourth"
    DONE = "done"


PskLookup = Callable[[bytes], bytes | PskKeys | None]


class EapPskServer(ServerMethod):
    """The server side of EAP-PSK. `psk_lookup(ID_P)` gives the PSK (or `PskKeys` derived from
    it, e.g. cached per PSK generation) or None (unknown/revoked)."""

    method_type = EapType.PSK

    def __init__(self, id_s: bytes, psk_lookup: PskLookup, rng: RandomSource) -> None:
        self.id_s = id_s
        self._lookup = psk_lookup
        self._rng = rng
        self._phase = _ServerPhase.START
        self._rand_s = b""
        self._rand_p = b""
        self._id_p: bytes | None = None
        self._tek: Eax | NativeEax | None = None
        self._msk: bytes | None = None
        self._emsk: bytes | None = None
        self._success = False
        self.counters: Counter[str] = Counter()

    @property
    def msk(self) -> bytes | None:
        return self._msk if self._success else None

    @property
    def emsk(self) -> bytes | None:
        return self._emsk if self._success else None

    @property
    def session_id(self) -> bytes | None:
        return session_id(self._rand_p, self._rand_s) if self._success else None

    @property
    def peer_id(self) -> bytes | None:
        return self._id_p

    def initial_request(self, identity: bytes | None, identifier: int) -> bytes:
        self._rand_s = self._rng(RAND_LEN)
        self._phase = _ServerPhase.WAIT_SECOND
        return PskFirst(self._rand_s, self.id_s).encode()

    def _failure(self, reason: str) -> ServerMethodStep:
        logger.info("EAP-PSK server failure: %s", reason, extra={"id_p": self._id_p})
        self.counters[reason] += 1
        self._phase = _ServerPhase.DONE
        return ServerMethodStep(ServerOutcome.FAILURE, reason=reason)

    def _ignore(self, reason: str) -> ServerMethodStep:
        self.counters[reason] += 1
        return ServerMethodStep(ServerOutcome.IGNORE, reason=reason)

    def process(self, response: EapPacket, next_identifier: int) -> ServerMethodStep:
        try:
            if self._phase is _ServerPhase.WAIT_SECOND:
                return self._on_second(PskSecond.decode(response.type_data), next_identifier)
            if self._phase is _ServerPhase.WAIT_FOURTH:
                return self._on_fourth(response, PskFourth.decode(response.type_data))
        except EapDecodeError as exc:
            logger.debug("EAP-PSK server discards a response: %s", exc)
            return self._ignore("malformed")
        return self._ignore("unexpected")

    def _on_second(self, msg: PskSecond, next_identifier: int) -> ServerMethodStep:
        if msg.rand_s != self._rand_s:
            return self._ignore("rand_s_mismatch")
        self._id_p = msg.id_p
        psk = self._lookup(msg.id_p)
        if psk is None:
            return self._failure("unknown_peer")
        if not isinstance(psk, PskKeys):
            if len(psk) != PSK_LEN:
                return self._failure("bad_psk_length")
            psk = PskKeys(psk)
        ak = psk.ak
        expected = compute_mac_p(ak, msg.id_p, self.id_s, self._rand_s, msg.rand_p)
        if not hmac.compare_digest(expected, msg.mac_p):
            return self._failure("mac_p_mismatch")
        self._rand_p = msg.rand_p
        tek, self._msk, self._emsk = _tek_msk_emsk(psk.e_kdk, msg.rand_p)
        self._tek = eax(tek)  # seals nonce 0 now, opens nonce 1 later
        mac_s = compute_mac_s(ak, self.id_s, msg.rand_p)
        payload_len = 1 + RAND_LEN + MAC_LEN + _PCHANNEL_MIN
        header = request_header(next_identifier, EapType.PSK, payload_len)
        header += _flags(PskMessageType.THIRD) + self._rand_s
        pchannel = seal_pchannel(self._tek, 0, header, ResultFlag.DONE_SUCCESS)
        self._phase = _ServerPhase.WAIT_FOURTH
        return ServerMethodStep(
            ServerOutcome.REQUEST, PskThird(self._rand_s, mac_s, pchannel).encode()
        )

    def _on_fourth(self, response: EapPacket, msg: PskFourth) -> ServerMethodStep:
        if msg.rand_s != self._rand_s:
            return self._ignore("rand_s_mismatch")
        if msg.nonce != 1:
            return self._failure("bad_nonce")
        header = response.encode()[:EAX_HEADER_LEN]
        if self._tek is None:  # unreachable: WAIT_FOURTH is entered only after the TEK is set
            return self._failure("no_tek")
        try:
            content = open_pchannel(self._tek, 1, header, msg.pchannel)
        except EaxAuthError:
            return self._failure("pchannel_auth")
        if content.extension or content.result is not ResultFlag.DONE_SUCCESS:
            return self._failure("peer_done_failure")
        self._phase = _ServerPhase.DONE
        self._success = True
        return ServerMethodStep(ServerOutcome.SUCCESS)
