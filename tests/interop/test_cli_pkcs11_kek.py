"""`--kek pkcs11:...`: the key server's stored PSKs wrapped by an AES key inside SoftHSM2."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli import keys_argv
from tests.unit.meter.conftest import SoftHsmToken, softhsm_token

from amistack.cli.main import main

__all__ = ["softhsm_token"]  # the fixture, re-used from the secure-module tests

PSK = "00112233445566778899aabbccddeeff"


def test_keys_on_a_token_kek(
    softhsm_token: SoftHsmToken, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = softhsm_token.spec("amistack-kek")
    data = tmp_path / "ks"
    assert main([*keys_argv(data, "enroll", "m1", "--psk", PSK), "--kek", spec]) == 0
    assert main([*keys_argv(data, "list", "--json"), "--kek", spec]) == 0
    assert '"device_id": "m1"' in capsys.readouterr().out
    assert not (tmp_path / "ks" / "kek.key").exists()  # no key file: the KEK lives in the token
    # the file KEK cannot read what the token wrapped, and a wrong PIN is a one-line error
    assert main(keys_argv(data, "list")) == 2
    bad_pin = spec.replace(f"pin={softhsm_token.pin}", "pin=000000")
    assert main([*keys_argv(data, "list"), "--kek", bad_pin]) == 2
    err = capsys.readouterr().err
    assert "kek.key" in err and "PIN is incorrect" in err
