"""Fixtures for the key-management tests: security contexts, the OpenPANA transcript, a KEK."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import load_vector

from amistack.crypto import PrfHash, seeded_random
from amistack.keymgmt.kek import FileKek
from amistack.pana.keys import PanaSecurityContext

CtxFactory = Callable[..., PanaSecurityContext]


def _avps(message: bytes) -> dict[int, list[bytes]]:
    """The AVPs of one PANA message (RFC 5191 §6.3, §8): a deliberately tiny reader for tests."""
    out: dict[int, list[bytes]] = {}
    off = 16
    while off < len(message):
        code, flags, length, _ = struct.unpack_from("!HHHH", message, off)
        off += 8 + (4 if flags & 0x8000 else 0)  # V flag: Vendor-Id follows
        out.setdefault(code, []).append(message[off : off + length])
        off += (length + 3) & ~3
    return out


AVP_KEY_ID = 4  # RFC 5191 §8.5
AVP_NONCE = 5  # RFC 5191 §8.6


@pytest.fixture(scope="session")
def openpana() -> tuple[PanaSecurityContext, dict[str, Any]]:
    """The security context of the OpenPANA run, built as the vector's notes describe."""
    vec = load_vector("pana_openpana_transcript.json")
    frames = {f["n"]: bytes.fromhex(f["hex"]) for f in vec["frames"]}
    assert vec["prf_algorithm"] == 2  # PRF_HMAC_SHA1 (RFC 5191 §5.3)
    ctx = PanaSecurityContext(
        session_id=struct.unpack_from("!I", frames[2], 8)[0],
        key_id=int.from_bytes(_avps(frames[16])[AVP_KEY_ID][0], "big"),
        prf=PrfHash.SHA1,
        msk=bytes.fromhex(vec["msk"]),
        pac_nonce=_avps(frames[5])[AVP_NONCE][0],
        paa_nonce=_avps(frames[4])[AVP_NONCE][0],
        i_par=frames[2],
        i_pan=frames[3],
    )
    return ctx, vec


@pytest.fixture
def make_ctx() -> CtxFactory:
    """Synthetic contexts: the same arguments give the same context on 'both ends'."""

    def make(
        session_id: int = 0x1000, key_id: int = 1, seed: int = 7, prf: PrfHash = PrfHash.SHA256
    ) -> PanaSecurityContext:
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

    return make


@pytest.fixture
def kek(tmp_path: Path) -> FileKek:
    return FileKek.create(tmp_path / "kek.key", seeded_random(99))
