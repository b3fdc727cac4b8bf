"""`amistack handheld`: its help names every action, and bad usage is one line and exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from tests.cli import run_cli


def test_help_names_the_actions(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "handheld", "--help")
    assert code == 0
    for action in ("gateway", "run", "area", "login", "logout", "start", "stop", "meters", "read",
                   "command", "status"):  # fmt: skip
        assert action in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status"], "no handheld running"),
        (["run", "--device", "handheld-7"], "own PSK is required"),
        (["run", "--device", "handheld-7", "--psk", "00" * 16, "--meters", "0"], "--meters"),
        (["gateway", "--keyserver", "127.0.0.1:716"], "issue-server"),
        (["gateway", "--keyserver", "nowhere"], "expected HOST:PORT"),
        (["area", "--meters", "0"], "--meters"),
        (
            ["run", "--device", "handheld-7", "--psk", "00" * 16, "--screen", "192.0.2.1:8780"],
            "loopback",
        ),
        (
            ["run", "--device", "handheld-7", "--psk", "00" * 16, "--headend-api", "http://x"],
            "AMISTACK_HEADEND_TOKEN",
        ),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("AMISTACK_PSK", raising=False)
    monkeypatch.delenv("AMISTACK_HEADEND_TOKEN", raising=False)
    data = [] if argv[0] == "area" else ["--data-dir", str(tmp_path / "d")]  # area keeps none
    code, _, err = run_cli(capsys, "handheld", *argv, *data)
    assert code == 2 and message in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1  # one line says what is wrong (argparse prints its usage too)


def test_a_screen_address_in_use_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run_cli(capsys, "handheld", "run", "--device", "handheld-7", "--psk",
                               "00" * 16, "--screen", f"127.0.0.1:{port}",
                               "--data-dir", str(tmp_path / "d"))  # fmt: skip
    assert code == 2 and "technician screen" in err and "in use" in err, err
