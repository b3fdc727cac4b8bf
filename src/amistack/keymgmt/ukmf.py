"""The unified key-management function (UKMF): every application key from one PANA session.

After the AMSO idea (Toshiba): a meter authenticates once (PANA + EAP-PSK) and both ends derive
every application key from that authentication with the one session KDF of RFC 5191 §5.3,

    key(purpose) = prf+(MSK, label(purpose) | I_PAR | I_PAN | PaC_nonce | PAA_nonce | Key_ID)

changing only the label. PANA_AUTH_KEY is simply the purpose whose label is "IETF PANA", so no
application protocol needs a key exchange of its own and every key dies with its session.

Purposes live in a `PurposeRegistry` (open: deployments register more). Labels must be
prefix-free so that no two purposes can ever feed the PRF the same seed.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from amistack.crypto import PrfHash, prf_plus
from amistack.frozeninit import frozen_init
from amistack.pana.keys import PANA_AUTH_LABEL, PanaSecurityContext, session_kdf

_U32 = 0xFFFFFFFF
# prf+ counts blocks in one octet (RFC 7296 §2.13); with the smallest PRF (SHA-1, 20 octets)
# that bounds every purpose's length.
MAX_KEY_LENGTH = 255 * PrfHash.SHA1.digest_size


class PurposeError(ValueError):
    """A purpose cannot be registered or is not known to the registry."""


@dataclass(frozen=True)
class Purpose:
    """What a key is for: its name, its KDF label and its length.

    `length=None` means "the PRF's output length" (how RFC 5191 §5.3 sizes PANA_AUTH_KEY).
    """

    name: str
    label: bytes
    length: int | None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,31}", self.name):
            raise PurposeError(f"purpose name {self.name!r} must be 1-32 of [a-z0-9_.-]")
        if not self.label:
            raise PurposeError(f"purpose {self.name!r}: label must not be empty")
        if self.length is not None and not 1 <= self.length <= MAX_KEY_LENGTH:
            raise PurposeError(f"purpose {self.name!r}: length must be 1..{MAX_KEY_LENGTH}")

    def key_length(self, prf: PrfHash) -> int:
        return prf.digest_size if self.length is None else self.length


PANA_AUTH = Purpose("pana-auth", PANA_AUTH_LABEL, None)  # RFC 5191 §5.3
C1222 = Purpose("c1222", b"amistack C12.22 key", 16)  # AES-128 for EAX' (ANSI C12.22)
LINK = Purpose("link", b"amistack link key", 16)  # AES-128 for CCM* (IEEE 802.15.4)
STANDARD_PURPOSES: tuple[Purpose, ...] = (PANA_AUTH, C1222, LINK)
# The key that wraps the mesh group keys delivered to one session (keymgmt/groupkeys.py): an
# AES-128 key-encryption key for RFC 3394 key wrap. Not a standard purpose: it is derived on
# demand at both ends when group keys are delivered, never stored in a key ring nor exported.
GTK_KEK = Purpose("gtk-kek", b"amistack GTK-KEK", 16)


class PurposeRegistry:
    """The purposes a key ring derives for every generation; open for more.

    One per key server / meter (no global registry): both ends of a session must register the
    same purposes with the same labels, or their keys simply will not match.
    """

    def __init__(self, purposes: Iterable[Purpose] = STANDARD_PURPOSES) -> None:
        self._by_name: dict[str, Purpose] = {}
        for purpose in purposes:
            self.register(purpose)

    def register(self, purpose: Purpose) -> Purpose:
        """Add `purpose`; refuses a taken name and any label that is a prefix of another."""
        if purpose.name in self._by_name:
            if self._by_name[purpose.name] == purpose:
                return purpose
            raise PurposeError(f"purpose name {purpose.name!r} is already registered")
        for other in self._by_name.values():
            if other.label.startswith(purpose.label) or purpose.label.startswith(other.label):
                raise PurposeError(
                    f"label of {purpose.name!r} collides with the label of {other.name!r} "
                    "(labels must be prefix-free)"
                )
        self._by_name[purpose.name] = purpose
        return purpose

    def add(self, name: str, label: bytes, length: int | None) -> Purpose:
        return self.register(Purpose(name, label, length))

    def get(self, name: str) -> Purpose:
        try:
            return self._by_name[name]
        except KeyError:
            raise PurposeError(f"unknown key purpose {name!r}") from None

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Purpose):
            return self._by_name.get(item.name) == item
        return item in self._by_name

    def __iter__(self) -> Iterator[Purpose]:
        return iter(tuple(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"PurposeRegistry({', '.join(self._by_name)})"


class KeyIdError(Exception):
    """A key id in text or wire form does not parse; `offset` is where it went wrong."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"bad key id at offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


_KEY_ID_TEXT = re.compile(r"([0-9a-f]{8})[.:]([0-9a-f]{8})")


@frozen_init
@dataclass(frozen=True, order=True)
class KeyId:
    """Names one generation of keys: the PANA session and its Key-Id (RFC 5191 §8.4).

    Each (re-)authentication of a session yields a new PANA Key-Id, so `generation` is it.
    Text form `4097dcd8.fc268032`; wire form 8 octets, session id then generation, big-endian.
    """

    session_id: int
    generation: int

    WIRE_LENGTH = 8

    def __post_init__(self) -> None:
        if not 0 <= self.session_id <= _U32 or not 0 <= self.generation <= _U32:
            raise KeyIdError(0, "session id and generation must be unsigned 32-bit")

    @classmethod
    def of(cls, ctx: PanaSecurityContext) -> KeyId:
        return cls(ctx.session_id, ctx.key_id)

    def __str__(self) -> str:
        return f"{self.session_id:08x}.{self.generation:08x}"

    @classmethod
    def parse(cls, text: str) -> KeyId:
        m = _KEY_ID_TEXT.fullmatch(text.strip().lower())
        if m is None:
            raise KeyIdError(0, f"expected 8 hex digits '.' 8 hex digits, got {text[:40]!r}")
        return cls(int(m.group(1), 16), int(m.group(2), 16))

    def encode(self) -> bytes:
        return struct.pack("!II", self.session_id, self.generation)

    @classmethod
    def decode(cls, data: bytes) -> KeyId:
        if len(data) != cls.WIRE_LENGTH:
            raise KeyIdError(min(len(data), cls.WIRE_LENGTH), f"need 8 octets, got {len(data)}")
        session_id, generation = struct.unpack("!II", data)
        return cls(session_id, generation)


def derive(ctx: PanaSecurityContext, purpose: Purpose) -> bytes:
    """The key for `purpose` in the session `ctx`: the one session KDF, the purpose's label."""
    return session_kdf(ctx, purpose.label, purpose.key_length(ctx.prf))


def derive_all(ctx: PanaSecurityContext, purposes: Iterable[Purpose]) -> dict[Purpose, bytes]:
    """`derive` for each purpose (a registry), the KDF context built once for all of them: a
    key ring derives every purpose of a generation per authentication."""
    prf, msk, context = ctx.prf, ctx.msk, ctx.kdf_context()
    return {p: prf_plus(prf, msk, p.label + context, p.key_length(prf)) for p in purposes}
