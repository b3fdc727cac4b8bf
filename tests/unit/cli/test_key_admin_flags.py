"""The delegation flags' one-line errors (exit 2): `keyserver --admin-delegate` without the admin
endpoint, `headend --key-admin` without its delegator certificate."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli import run_cli


def test_admin_delegate_needs_the_admin_endpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(
        capsys, "keyserver", "--data-dir", str(tmp_path), "--init", "--admin-delegate", "he"
    )
    assert code == 2 and "--admin-delegate goes with --admin-listen" in err
    assert len(err.strip().splitlines()) == 1


def test_key_admin_without_its_certificate_says_how_to_make_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from amistack.keymgmt import pki

    pki.init_ca(tmp_path)
    pki.issue_client(tmp_path, "headend", ["c1222"], meters=["*"])
    code, _, err = run_cli(
        capsys, "headend", "--data-dir", str(tmp_path), "--keyserver", "127.0.0.1",
        "--key-admin", "127.0.0.1",
    )  # fmt: skip
    assert code == 2 and "amistack pki issue-client headend-dashboard --role VIEWER" in err
