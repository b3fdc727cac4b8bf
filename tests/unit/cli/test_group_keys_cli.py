"""`amistack keyserver --mesh-pan` builds a key server that delivers that PAN's group keys, and
`amistack keys group-keys` shows them (index, serial, validity) or, with --tshark, the options
that let tshark decrypt a capture of the mesh."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.cli import run_cli as run
from tests.cli import run_keys

from amistack.cli.common import open_store
from amistack.runtime.keyserver import build_key_server


def test_group_keys_of_a_pan_for_the_operator_and_for_tshark(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = tmp_path / "data"
    with open_store(d, create=True) as store:
        server = build_key_server(store, now=time.time(), mesh_pan=0xFACE)
        assert server.group_keys is not None
        (key,) = server.group_keys.keys(0xFACE)
    code, out, err = run_keys(capsys, d, "group-keys", "--pan", "0xface")
    assert (code, err) == (0, "")
    assert "PAN 0xface: 1 key(s), serial 1" in out and key.key.hex() not in out
    code, out, _ = run_keys(capsys, d, "group-keys", "--pan", "0xface", "--tshark")
    assert code == 0
    assert out.strip() == f'-o \'uat:ieee802154_keys:"{key.key.hex()}","1","No hash"\''


def test_bad_or_unknown_pan_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = tmp_path / "data"
    open_store(d, create=True).close()
    code, _, err = run_keys(capsys, d, "group-keys", "--pan", "0xbeef")
    assert code == 2 and "no group keys for PAN 0xbeef" in err and len(err.splitlines()) == 1
    code, _, err = run_keys(capsys, d, "group-keys", "--pan", "0xffff")
    assert code == 2 and "need 0..0xfffe" in err
    code, _, err = run(capsys, "keyserver", "--mesh-pan", "pan", "--data-dir", str(d))
    assert code == 2 and "PAN id 'pan'" in err
