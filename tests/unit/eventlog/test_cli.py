"""`amistack log` sub-commands (through their own register(), as cli/commands.py wires them)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from amistack.cli import log as cli_log
from amistack.cli.common import CliError


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="amistack")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_log.register(sub)
    args = parser.parse_args(list(argv))
    code: int = args.handler(args)
    return code


def test_append_export_verify_and_rollback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path / "data")
    for typ in ("POWER_FAIL", "COVER_OPEN", "CLOCK_ADJUSTED", "power_restore"):
        assert run("log", "append", "--meter", "m1", "--data-dir", d, typ, "--data", "0a") == 0
    assert (tmp_path / "data/meters/m1/events.log").exists()
    assert (tmp_path / "data/meters/m1/module.pem").stat().st_mode & 0o077 == 0
    old = tmp_path / "old.log"
    assert run("log", "export", "--meter", "m1", "--data-dir", d, "--out", str(old)) == 0
    pem = tmp_path / "pub.pem"
    capsys.readouterr()
    assert run("log", "pubkey", "--meter", "m1", "--data-dir", d) == 0
    pem.write_text(capsys.readouterr().out)
    assert pem.read_text().startswith("-----BEGIN PUBLIC KEY-----")

    head = tmp_path / "trusted.head"
    assert run("log", "verify", str(old), "--pubkey", str(pem), "--save-head", str(head)) == 0
    assert "OK meter m1: 4 entries" in capsys.readouterr().out

    run("log", "append", "--meter", "m1", "--data-dir", d, "AUTH_FAILURE")
    new = tmp_path / "new.log"
    run("log", "export", "--meter", "m1", "--data-dir", d, "--out", str(new))
    capsys.readouterr()
    assert run("log", "verify", str(new), "--pubkey", str(pem), "--trusted-head", str(head)) == 0
    assert run("log", "verify", str(new), "--pubkey", str(pem), "--save-head", str(head)) == 0

    # the old export is a genuine signed state, but older than what was accepted
    capsys.readouterr()
    code = run("log", "verify", str(old), "--pubkey", str(pem), "--trusted-head", str(head))
    assert code == cli_log.EXIT_REFUSED
    assert capsys.readouterr().out.startswith("FAIL rollback")

    lines = new.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace(" 0a", " 0b")
    new.write_text("".join(lines))
    assert run("log", "verify", str(new), "--pubkey", str(pem), "--json") == 1
    assert '"reason": "edited-entry"' in capsys.readouterr().out

    assert run("log", "show", str(old)) == 0
    out = capsys.readouterr().out
    assert "COVER_OPEN" in out and "signed head: size 2" in out


def test_errors_are_one_line_cli_errors(tmp_path: Path) -> None:
    d = str(tmp_path)
    with pytest.raises(CliError, match="no event log"):
        run("log", "export", "--meter", "m9", "--data-dir", d, "--out", str(tmp_path / "o"))
    with pytest.raises(CliError, match="no secure-module key"):
        run("log", "pubkey", "--meter", "m9", "--data-dir", d)
    with pytest.raises(CliError, match="bad meter id"):
        run("log", "append", "--meter", "../x", "--data-dir", d, "POWER_FAIL")
    bad = tmp_path / "bad.log"
    bad.write_text("not a log\n")
    with pytest.raises(CliError):
        run("log", "show", str(bad))
    with pytest.raises(SystemExit):
        run("log", "append", "--meter", "m1", "--data-dir", d, "NO_SUCH_EVENT")
