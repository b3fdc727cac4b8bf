"""Running the `amistack` command in-process from tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from amistack.cli.main import main
from tests.conftest import KEY_OPERATOR, key_operator, secret_file


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """main(argv) -> (exit status, stdout, stderr); argparse errors exit via SystemExit."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def keys_argv(d: Path, *argv: str) -> list[str]:
    """`keys ARGV --data-dir D` as the SECADM+SECAUD operator of D (its token file, made on
    first use), a `--psk HEX` passed as an owner-only --psk-file (`keys` refuses a PSK on the
    command line, see tests/unit/cli/test_keys_identity.py). For in-process or subprocess use."""
    args = list(argv)
    if "--psk" in args:
        i = args.index("--psk")
        args[i : i + 2] = ["--psk-file", str(secret_file(d.parent, args[i + 1]))]
    token = d.parent / f"{d.name}-{KEY_OPERATOR}.token"
    if not token.exists():
        token = key_operator(d)
    return ["keys", *args, "--data-dir", str(d), "--token-file", str(token)]


def run_keys(capsys: pytest.CaptureFixture[str], d: Path, *argv: str) -> tuple[int, str, str]:
    """`amistack keys` in-process as `keys_argv` builds it."""
    return run_cli(capsys, *keys_argv(d, *argv))
