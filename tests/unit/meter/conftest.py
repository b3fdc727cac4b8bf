"""A fresh SoftHSM2 token per test: its own token directory and SOFTHSM2_CONF.

Other test packages reuse it with `from tests.unit.meter.conftest import softhsm_token`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import IN_CI, require_tool

from amistack.crypto import pkcs11_token

SOFTHSM_LIBRARY_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
)
TOKEN_LABEL = "amistack-test"
USER_PIN = "123456"
SO_PIN = "12345678"


@dataclass(frozen=True)
class SoftHsmToken:
    library: str
    label: str
    pin: str
    so_pin: str
    conf: Path
    tokendir: Path

    def spec(self, key_label: str, *, with_pin: bool = True) -> str:
        pin = f"&pin={self.pin}" if with_pin else ""
        return f"pkcs11:{self.library}?token={self.label}&label={key_label}{pin}"


def softhsm_library() -> str:
    found = next((p for p in SOFTHSM_LIBRARY_CANDIDATES if os.path.exists(p)), None)
    if found is None:
        msg = "SoftHSM2's libsofthsm2.so is not installed (make setup installs softhsm2)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return found


def init_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label: str = TOKEN_LABEL
) -> SoftHsmToken:
    util = require_tool("softhsm2-util")
    library = softhsm_library()
    tokendir = tmp_path / "tokens"
    tokendir.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokendir}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--pin", USER_PIN, "--so-pin", SO_PIN],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        timeout=30,
    )
    return SoftHsmToken(library, label, USER_PIN, SO_PIN, conf, tokendir)


@pytest.fixture
def softhsm_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftHsmToken]:
    """An initialised, empty token in tmp_path; the test must close what it opens on it."""
    token = init_token(tmp_path, monkeypatch)
    yield token
    leaked = pkcs11_token.open_logins()
    pkcs11_token.close_all()
    assert leaked == 0, f"the test left {leaked} PKCS#11 login(s) open (close every module/KEK)"
