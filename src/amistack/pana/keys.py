"""PANA session keys (RFC 5191 §5.3) and the one KDF every application key comes from.

    PANA_AUTH_KEY = prf+(MSK, "IETF PANA" | I_PAR | I_PAN | PaC_nonce | PAA_nonce | Key_ID)

The unified key-management function (`amistack.keymgmt.ukmf`) derives every other key with the
same `session_kdf`, changing only the label, so all keys are bound to the same authentication.
"""

from __future__ import annotations

from dataclasses import dataclass

from amistack.crypto import PrfHash, prf_plus
from amistack.frozeninit import frozen_init

PANA_AUTH_LABEL = b"IETF PANA"


@frozen_init
@dataclass(frozen=True)
class PanaSecurityContext:
    """What both ends hold after a successful PANA authentication."""

    session_id: int
    key_id: int
    prf: PrfHash
    msk: bytes
    pac_nonce: bytes
    paa_nonce: bytes
    i_par: bytes  # the first PAR of the session, whole PANA message
    i_pan: bytes  # the first PAN of the session, whole PANA message

    def kdf_context(self) -> bytes:
        """I_PAR | I_PAN | PaC_nonce | PAA_nonce | Key_ID, as RFC 5191 §5.3 orders them."""
        return (
            self.i_par
            + self.i_pan
            + self.pac_nonce
            + self.paa_nonce
            + self.key_id.to_bytes(4, "big")
        )

    def __repr__(self) -> str:  # never print key material
        return f"PanaSecurityContext(session_id={self.session_id:#x}, key_id={self.key_id})"


def session_kdf(ctx: PanaSecurityContext, label: bytes, length: int) -> bytes:
    """prf+(MSK, label | context): the single key-derivation function of the system."""
    return prf_plus(ctx.prf, ctx.msk, label + ctx.kdf_context(), length)


def pana_auth_key(ctx: PanaSecurityContext) -> bytes:
    """PANA_AUTH_KEY; its length is the PRF's output length (RFC 5191 §5.3)."""
    return session_kdf(ctx, PANA_AUTH_LABEL, ctx.prf.digest_size)
