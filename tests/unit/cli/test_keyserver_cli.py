"""`amistack keyserver` options, in-process: what a new user gets wrong is refused in one line
(exit 2) before anything is created or bound; the PAA options reach the PaaConfig."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from tests.cli import run_cli as run

from amistack.cli.keyserver import _paa_config, register
from amistack.pana.constants import IntegrityAlgorithm, PrfAlgorithm


def test_a_data_dir_without_a_store_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    typo = tmp_path / "typo"
    code, out, err = run(capsys, "keyserver", "--data-dir", str(typo), "--listen", "127.0.0.1:0")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "no key server data in" in err and "--init" in err
    assert not typo.exists()  # nothing created behind the user's back


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["keyserver", *argv])


def test_paa_options_reach_the_paa() -> None:
    default = _paa_config(_args())
    assert default.allowed_relays == frozenset()  # no relay unless configured
    assert default.prf_algorithms[0] == PrfAlgorithm.PRF_HMAC_SHA2_256
    openpana = _paa_config(
        _args("--pana-algorithms", "sha1,sha256", "--relay", "::1", "--relay", "10.0.0.7")
    )
    assert openpana.prf_algorithms == (
        PrfAlgorithm.PRF_HMAC_SHA1,
        PrfAlgorithm.PRF_HMAC_SHA2_256,
    )
    assert openpana.integrity_algorithms[0] == IntegrityAlgorithm.AUTH_HMAC_SHA1_160
    assert openpana.allowed_relays == frozenset({"::1", "10.0.0.7"})
    assert _paa_config(_args("--lifetime-grace", "0")).lifetime_grace == 0.0
    big_cells = _paa_config(_args("--relay-rate", "400"))
    assert (big_cells.relay_pci_rate, big_cells.relay_pci_burst) == (400.0, 800.0)


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (("--relay", "relay.example"), "not an IP address"),
        (("--pana-algorithms", "md5"), "comma-separated list of sha256 and sha1"),
        (("--pana-algorithms", "sha1,sha1"), "each at most once"),
        (("--lifetime-grace", "-1"), "--lifetime-grace must be >= 0"),
        (("--relay-rate", "0"), "--relay-rate must be > 0"),
    ],
)
def test_bad_paa_options_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: tuple[str, ...], why: str
) -> None:
    code, _, err = run(capsys, "keyserver", "--data-dir", str(tmp_path), "--init", *argv)
    assert code == 2 and why in err.strip().splitlines()[-1]  # (argparse prints its usage too)


def test_an_instance_name_needs_a_shared_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(
        capsys, "keyserver", "--data-dir", str(tmp_path), "--init", "--instance", "x"
    )
    assert code == 2 and "--instance goes with --db" in err
