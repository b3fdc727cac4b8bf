"""A made-up PANA security context, for unit tests of one side (a head-end, a C12.22 server)
without running PANA. The fleet simulator and every scenario run real PANA + EAP-PSK."""

from __future__ import annotations

import random

from amistack.crypto import PrfHash
from amistack.pana.keys import PanaSecurityContext


def pana_context(rng: random.Random, session_id: int, key_id: int) -> PanaSecurityContext:
    def b(n: int) -> bytes:
        return rng.getrandbits(8 * n).to_bytes(n, "big")

    return PanaSecurityContext(
        session_id=session_id, key_id=key_id, prf=PrfHash.SHA256, msk=b(64), pac_nonce=b(16),
        paa_nonce=b(16), i_par=b"\x00\x00\x00\x10PAR" + b(13), i_pan=b"\x00\x00\x00\x10PAN" + b(13),
    )  # fmt: skip
