"""`amistack concentrator` and `amistack meter --mesh`: their help, and one-line errors
(exit 2) on what cannot run."""

from __future__ import annotations

import pytest
from tests.cli import run_cli as run

PSK = "000102030405060708090a0b0c0d0e0f"
CONC = ["concentrator", "--id", "c", "--psk", PSK, "--keyserver", "127.0.0.1",
        "--radio", "127.0.0.1:7000", "--hear", "127.0.0.1:7001"]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["concentrator", "--radio", "127.0.0.1:7000", "--hear", "127.0.0.1:7001"],
         "the concentrator needs --id"),
        (["concentrator", "--id", "c", "--psk", PSK, "--keyserver", "127.0.0.1"],
         "the mesh needs --radio HOST:PORT and at least one --hear HOST:PORT"),
        (["concentrator", "--prefix", "fd00::/48"], "the mesh prefix is a /64"),
        (["meter", "--mesh", "--id", "m", "--psk", PSK, "--keyserver", "127.0.0.1",
          "--radio", "127.0.0.1:7001"], "at least one --hear"),
        (["meter", "--mesh", "--radio", "127.0.0.1:7001", "--hear", "127.0.0.1:7000"],
         "needs --id, --psk and --keyserver"),
        (["meter", "--id", "m", "--psk", PSK, "--keyserver", "127.0.0.1",
          "--radio", "127.0.0.1:7001"], "--radio, --hear and --radio-if go with --mesh"),
        (["meter", "--mesh", "--once", "--id", "m", "--psk", PSK, "--keyserver", "127.0.0.1",
          "--radio", "127.0.0.1:7001", "--hear", "127.0.0.1:7000"], "do not go with --mesh"),
        (["meter", "--mesh", "--pan", "0xffff"], "PAN id"),
        (["concentrator", "--id", "c", "--psk", PSK, "--keyserver", "127.0.0.1",
          "--radio-if", "eth0", "--radio", "127.0.0.1:7000"], "not both"),
        ([*CONC, "--report-to", "ftp://headend"], "an http:// or https:// URL"),
        ([*CONC, "--report-to", "http://127.0.0.1:8080"], "--report-to needs a token"),
        ([*CONC, "--report-token-file", "t"], "--report-token-file needs --report-to"),
        ([*CONC, "--report-to", "http://h", "--report-token-file", "/nonexistent/t"],
         "cannot read --report-token-file"),
        ([*CONC, "--report-every", "0"], "between 1 and 86400 seconds"),
        ([*CONC, "--relay-pci-rate", "0"], "above 0, at most 10000"),
        ([*CONC, "--relay-pci-rate", "fast"], "is not a number"),
        ([*CONC, "--relay-pci-burst", "0.5"], "--relay-pci-burst must be at least 1"),
        (["headend", "--keyserver", "127.0.0.1", "--concentrator", "conc-1"],
         "want CONCENTRATOR_ID=HOST:PORT"),
    ],
)  # fmt: skip
def test_bad_mesh_options_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    last = err.strip().splitlines()[-1]  # (after argparse's usage or a --psk warning)
    assert last.startswith("amistack ") and message in last


@pytest.mark.parametrize("argv", [["concentrator", "--help"], ["meter", "--help"]])
def test_help_names_the_radio(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "--radio" in out and "--hear" in out and "--pan" in out
    assert ("--report-to" in out) == (argv[0] == "concentrator")
    assert ("--c1222-listen" in out) == ("--relay-pci-rate" in out) == (argv[0] == "concentrator")
