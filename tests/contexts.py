"""Made-up PANA security contexts, for unit tests of one side (a key ring, a head-end, a C12.22
server) without running PANA. The fleet simulator and every scenario run real PANA + EAP-PSK."""

from __future__ import annotations

from amistack.crypto import PrfHash, seeded_random
from amistack.pana.keys import PanaSecurityContext


def make_ctx(
    session_id: int = 0x1000, key_id: int = 1, seed: int = 7, prf: PrfHash = PrfHash.SHA256
) -> PanaSecurityContext:
    """The same arguments give the same context, as on both ends of a real authentication."""
    rng = seeded_random(seed * 1_000_003 + session_id * 31 + key_id)
    return PanaSecurityContext(
        session_id=session_id,
        key_id=key_id,
        prf=prf,
        msk=rng(64),
        pac_nonce=rng(16),
        paa_nonce=rng(16),
        i_par=b"\x00\x00\x00\x10PAR" + rng(13),
        i_pan=b"\x00\x00\x00\x10PAN" + rng(13),
    )
