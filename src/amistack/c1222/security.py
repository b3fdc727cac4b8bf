"""C12.22 message protection with EAX' (ANSI C12.22 §5.3.2.4.12 and Annex I).

- The EAX' cleartext is `AcseMessage.canonical_cleartext()` (header elements, the
  user-information header and EPSEM control byte, calling AP title, key id, IV); the plaintext
  is the EPSEM after its control byte. Ciphertext mode encrypts it, cleartext-authentication mode
  only MACs it; the 4-byte tag follows the EPSEM in the user-information.
- The key-id byte of a message is the UKMF `KeyId.generation & 0xFF` (`key_id_byte`); the
  receiver resolves the sender's device from the calling AP title and tries that device's valid
  keys carrying that byte (`KeyLookup`); the tag decides which, if any, is right.
- Replays: the endpoint keeps `amistack.crypto.replay.ReplayWindows` over the calling AP
  invocation ids per sender; a repeated id is a replay, one below the window a stale message.
  Both are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from amistack.c1222 import ber
from amistack.c1222.acse import IV_LEN, AcseMessage, ApTitle, AuthValue, encode_header
from amistack.c1222.epsem import (
    ED_CLASS_LEN,
    FLAG_ALWAYS,
    FLAG_ED_CLASS,
    MAC_LEN,
    Epsem,
    EpsemControl,
    ResponseControl,
    SecurityMode,
    split_body,
)
from amistack.c1222.errors import C1222DecodeError
from amistack.crypto.eax import EaxAuthError
from amistack.crypto.eax_prime import (
    MIN_CLEARTEXT,
    EaxPrimeError,
    authenticate_with_key,
    decrypt_with_key,
    eax_prime,
    encrypt_with_key,
    native_c1222_open,
    native_c1222_seal,
    verify_with_key,
)
from amistack.frozeninit import frozen_init
from amistack.keymgmt.keyring import AppKey, KeyRing
from amistack.keymgmt.ukmf import C1222, KeyId

KEY_LEN = 16  # EAX' in C12.22 is AES-128 (Annex I)
_CLEARTEXT = SecurityMode.CLEARTEXT  # module names: an enum class attribute costs a look-up
_CIPHERTEXT_AUTH = SecurityMode.CIPHERTEXT_AUTH

KeyLookup = Callable[[bytes, int, float], list[bytes]]
"""(device id of the sender, key-id byte, now) -> the candidate 16-byte keys (maybe none)."""

SendKey = Callable[[bytes, float], "tuple[int, bytes] | None"]
"""(device id of the peer, now) -> (key-id byte, key) to protect a new message with, or None."""

KeyRejected = Callable[[bytes, int, float], None]
"""(device id of the sender, key-id byte, now): no candidate key verified the message's tag. The
key owner may hold a stale key under that byte (a restarted meter's new PANA session starts its
generations again, docs/c1222.md) and may look for a newer one, within its fetch budget."""


class C1222SecurityError(Exception):
    """A message was refused by security; `reason` is the counter name the engines use."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def key_id_byte(key_id: KeyId) -> int:
    """The C12.22 key-id byte naming a UKMF key generation."""
    return key_id.generation & 0xFF


@frozen_init
@dataclass(frozen=True)
class Unprotected:
    """What `unprotect` found: the EPSEM in clear, and the key that authenticated it (None for a
    cleartext message) so that a reply can use the same generation."""

    epsem: Epsem
    key: bytes | None
    key_id: int | None


def protect(
    header: AcseMessage, epsem: Epsem, key: bytes | None, key_id: int = 0, iv: bytes = b""
) -> AcseMessage:
    """`header` with `epsem` as its user-information, protected as `epsem.security_mode` says.

    For the protected modes `key` (16 bytes), the key-id byte and a fresh 4-byte IV are needed;
    the (calling AP invocation id, IV) pair must never repeat under one key.
    """
    control = epsem.control
    body = epsem.encode_body()
    if epsem.security_mode == SecurityMode.CLEARTEXT:
        return header.with_user_information(bytes([control.encode()]) + body, None)
    if key is None:
        raise ValueError("a protected EPSEM needs a key")
    auth = AuthValue(key_id, iv)
    # the cleartext covers only the EPSEM's header: a placeholder of the final length will do
    shell = header.with_user_information(
        bytes([control.encode()]) + bytes(len(body) + MAC_LEN), auth
    )
    cleartext = shell.canonical_cleartext()
    eax = eax_prime(bytes(key))
    if epsem.security_mode == SecurityMode.CIPHERTEXT_AUTH:
        sealed, tag = eax.encrypt(cleartext, body)
    else:
        sealed, tag = body, eax.authenticate(cleartext, body)
    return header.with_user_information(bytes([control.encode()]) + sealed + tag, auth)


def seal(
    called: ApTitle,
    calling: ApTitle,
    calling_invocation_id: int,
    services: Sequence[bytes],
    mode: SecurityMode,
    response_control: ResponseControl,
    key: bytes | None,
    key_id: int = 0,
    iv: bytes = b"",
    *,
    called_invocation_id: int | None = None,
    calling_ae_qualifier: int | None = None,
    ed_class: bytes | None = None,
) -> bytes:
    """The encoded message `protect(header, Epsem(services, mode, response_control, ed_class),
    key, key_id, iv).encode()`, in one pass (what the endpoints send): the header and the EAX'
    cleartext from `acse.encode_header`, the EPSEM body joined once, no message objects."""
    control = FLAG_ALWAYS | (mode << 2) | response_control
    one = services[0] if len(services) == 1 else b""
    if 0 < len(one) < 0x80 and ed_class is None:
        body = bytes((len(one),)) + one  # one short service: the norm
    else:
        if not services or not all(services):
            raise ValueError("an EPSEM carries at least one non-empty service")
        if ed_class is not None and len(ed_class) != ED_CLASS_LEN:
            raise ValueError("ED class is 4 bytes")
        parts = [ed_class] if ed_class is not None else []
        if ed_class is not None:
            control |= FLAG_ED_CLASS
        for s in services:
            n = len(s)
            parts.append(bytes((n,)) if n < 0x80 else ber.encode_length(n))
            parts.append(s)
        body = b"".join(parts)
    if mode == _CLEARTEXT:
        head, _ = encode_header(
            called,
            calling,
            calling_invocation_id,
            control,
            1 + len(body),
            called_invocation_id=called_invocation_id,
            calling_ae_qualifier=calling_ae_qualifier,
        )
        return head + body
    if key is None:
        raise ValueError("a protected EPSEM needs a key")
    if not 0 <= key_id <= 0xFF or len(iv) != IV_LEN:
        raise ValueError(f"C12.22 key id is one byte and the IV {IV_LEN} bytes")
    if native_c1222_seal is not None and len(key) == KEY_LEN:
        # the same bytes in one C call (tests/unit/c1222/test_codec.py compares them with
        # `protect` + `encode`); None: a number beyond 64 bits, which the reference encodes
        wire = native_c1222_seal(
            key,
            *called.called_elements,
            *calling.calling_elements,
            calling_invocation_id,
            called_invocation_id,
            calling_ae_qualifier,
            control,
            key_id,
            iv,
            body,
            mode == _CIPHERTEXT_AUTH,
        )
        if wire is not None:
            return wire
    head, cleartext = encode_header(
        called,
        calling,
        calling_invocation_id,
        control,
        1 + len(body) + MAC_LEN,
        called_invocation_id=called_invocation_id,
        calling_ae_qualifier=calling_ae_qualifier,
        auth=(key_id, iv),
    )
    if mode == _CIPHERTEXT_AUTH:
        sealed, tag = encrypt_with_key(key, cleartext, body)
        return head + sealed + tag
    return head + body + authenticate_with_key(key, cleartext, body)


def unprotect(
    msg: AcseMessage, keys: Sequence[bytes], control: EpsemControl | None = None
) -> Unprotected:
    """The EPSEM of `msg`, authenticated (and decrypted) with the first of `keys` whose tag
    verifies. C1222SecurityError (reason: "no-key", "cleartext-too-short", "auth-failed",
    "missing-auth") or C1222DecodeError (a verified EPSEM that does not parse). `control`:
    the EPSEM control byte's decoding when the caller has it already."""
    ui = msg.user_information
    if control is None:
        control = EpsemControl.decode(ui[0])
    auth = msg.auth
    if auth is None or control.security_mode == _CLEARTEXT:
        services, ed_class, _ = open_epsem(control, ui, None, b"", keys)
        return Unprotected(Epsem._of(control, services, ed_class), None, None)
    cleartext = msg.canonical_cleartext()
    services, ed_class, key = open_epsem(control, ui, auth.key_id, cleartext, keys)
    return Unprotected(Epsem._of(control, services, ed_class), key, auth.key_id)


def open_epsem(
    control: EpsemControl,
    user_information: bytes,
    key_id: int | None,
    cleartext: bytes,
    keys: Sequence[bytes],
) -> tuple[tuple[bytes, ...], bytes | None, bytes | None]:
    """`unprotect` on a message's fields (`acse.decode_fields`: the EPSEM as carried, whose
    control byte `control` decodes, the key id or None without one, the EAX' cleartext): (the
    services, the ED class or None, the key that authenticated or None in clear), the same
    refusals. What an endpoint calls for every message: no message or EPSEM object."""
    ui = user_information
    if control.security_mode == _CLEARTEXT:
        services, ed_class = split_body(control, ui[1:])
        return services, ed_class, None
    if key_id is None:
        raise C1222SecurityError("missing-auth", "protected EPSEM without key id and IV")
    if len(ui) < 1 + MAC_LEN:
        raise C1222DecodeError(0, "protected EPSEM shorter than its MAC")
    if not keys:
        raise C1222SecurityError("no-key", f"no key for key id {key_id}")
    ciphertext_mode = control.security_mode == _CIPHERTEXT_AUTH
    if native_c1222_open is not None and len(cleartext) >= MIN_CLEARTEXT:
        # the MAC checked (and the body decrypted) in one C call per key: the same verdicts
        # as the loop below (tests/unit/c1222/test_native_codec.py)
        for key in keys:
            if len(key) != KEY_LEN:
                break  # the loop below refuses it as it always has
            body = native_c1222_open(key, cleartext, ui, ciphertext_mode)
            if body is not None:
                services, ed_class = split_body(control, body)
                return services, ed_class, key
        else:
            raise C1222SecurityError("auth-failed", "no key verified the EAX' tag")
    sealed, tag = ui[1:-MAC_LEN], ui[-MAC_LEN:]
    for key in keys:
        try:
            if ciphertext_mode:
                body = decrypt_with_key(key, cleartext, sealed, tag)
            else:
                verify_with_key(key, cleartext, sealed, tag)
                body = sealed
        except EaxPrimeError as exc:
            raise C1222SecurityError("cleartext-too-short", str(exc)) from None
        except EaxAuthError:
            continue
        services, ed_class = split_body(control, body)
        return services, ed_class, key
    raise C1222SecurityError("auth-failed", "no key verified the EAX' tag")


def ring_key_lookup(ring: KeyRing) -> KeyLookup:
    """A `KeyLookup` over one key ring (the meter's own, or one device's at the head-end):
    every valid C12.22 key whose generation's low byte is the message's key-id byte
    (superseded ones within the overlap included), oldest generation first."""
    # Asked for every message received: the ring's C12.22 keys by key-id byte are sorted out
    # once per change of the ring (`KeyRing.version`), each call only asks each candidate
    # whether it is valid now.
    by_byte: dict[int, list[AppKey]] = {}
    seen = [-1]

    def lookup(device_id: bytes, key_id: int, now: float) -> list[bytes]:
        if seen[0] != ring.version:
            by_byte.clear()
            for k in ring.keys():  # noqa: SIM118 - a KeyRing method; by generation
                if k.purpose.name == C1222.name:
                    by_byte.setdefault(key_id_byte(k.key_id), []).append(k)
            seen[0] = ring.version
        return [k.key for k in by_byte.get(key_id, ()) if k.valid_at(now)]

    return lookup


def ring_send_key(ring: KeyRing) -> SendKey:
    """A `SendKey` over one key ring: its current C12.22 key."""

    def current(device_id: bytes, now: float) -> tuple[int, bytes] | None:
        key = ring.current(C1222, now)
        return None if key is None else (key_id_byte(key.key_id), key.key)

    return current
