"""Fixtures for the key-management tests: security contexts, the OpenPANA transcript, a KEK."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests import contexts
from tests.conftest import load_vector

from amistack.crypto import PrfHash, seeded_random
from amistack.keymgmt.kek import FileKek
from amistack.pana.constants import AvpCode
from amistack.pana.keys import PanaSecurityContext
from amistack.pana.message import PanaMessage

CtxFactory = Callable[..., PanaSecurityContext]


@pytest.fixture(scope="session")
def openpana() -> tuple[PanaSecurityContext, dict[str, Any]]:
    """The security context of the OpenPANA run, built as the vector's notes describe."""
    vec = load_vector("pana_openpana_transcript.json")
    frames = {f["n"]: bytes.fromhex(f["hex"]) for f in vec["frames"]}
    assert vec["prf_algorithm"] == 2  # PRF_HMAC_SHA1 (RFC 5191 §5.3)
    par, pan = PanaMessage.decode(frames[2]), PanaMessage.decode(frames[3])
    par_c = PanaMessage.decode(frames[16])  # the PAR with the C flag carries the Key-Id
    key_id = par_c.u32(AvpCode.KEY_ID)
    pac_nonce = PanaMessage.decode(frames[5]).octets(AvpCode.NONCE)
    paa_nonce = PanaMessage.decode(frames[4]).octets(AvpCode.NONCE)
    assert key_id is not None and pac_nonce is not None and paa_nonce is not None
    assert par.session_id == pan.session_id == par_c.session_id
    ctx = PanaSecurityContext(
        session_id=par.session_id,
        key_id=key_id,
        prf=PrfHash.SHA1,
        msk=bytes.fromhex(vec["msk"]),
        pac_nonce=pac_nonce,
        paa_nonce=paa_nonce,
        i_par=frames[2],
        i_pan=frames[3],
    )
    return ctx, vec


@pytest.fixture
def make_ctx() -> CtxFactory:
    """Synthetic contexts: the same arguments give the same context on 'both ends'."""
    return contexts.make_ctx


@pytest.fixture
def kek(tmp_path: Path) -> FileKek:
    return FileKek.create(tmp_path / "kek.key", seeded_random(99))
