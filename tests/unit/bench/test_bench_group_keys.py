"""`amistack bench group-keys` at a small size: the rotation reaches every meter but the revoked
one before its activation, and bad arguments are a one-line error (exit 2)."""

from __future__ import annotations

import pytest

from amistack.bench.group_keys import bench_group_keys
from amistack.cli.main import main


def test_rotation_reaches_every_other_meter_before_activation() -> None:
    result = bench_group_keys(12, cells=1, push_rate=5.0)
    rotation = result["rotation"]
    assert rotation["meters"] == rotation["holding_new_ring"] == 11
    assert rotation["reached_before_activation"] == 11
    assert rotation["max_s"] < rotation["activation_delay_s"]
    assert result["baseline_all_reauth_at_once"]["reauthenticated"] == 12


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "group-keys", "--meters", "1"]) == 2
    assert "--meters >= 2" in capsys.readouterr().err
