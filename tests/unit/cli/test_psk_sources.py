"""PSKs out of the process list: `amistack meter` and `amistack keys enroll/rotate-psk` take
the PSK from a file (--psk-file, owner-only, or '-' for standard input) or, for the meter,
from $AMISTACK_PSK; the meter's --psk still works (tests, labs) but warns, `keys` refuses it.
What an attacker on the same host sees is checked where they would look: /proc/PID/cmdline of
the running process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.cli import run_cli as run
from tests.conftest import key_operator
from tests.scenario.test_keyserver_process import free_port

from amistack.cli.common import open_store

PSK = "00112233445566778899aabbccddeeff"
PY = sys.executable


def psk_file(
    tmp_path: Path, mode: int = 0o600, text: str = PSK + "\n", name: str = "meter.psk"
) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def stored_psk(d: Path, device: str) -> bytes | None:
    with open_store(d, create=False) as store:
        return store.psk(device)


def test_enroll_and_rotate_from_a_file_or_stdin_say_nothing_of_the_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "data"
    token = str(key_operator(d))
    code, out, err = run(capsys, "keys", "enroll", "m1", "--psk-file", str(psk_file(tmp_path)),
                         "--data-dir", str(d), "--token-file", token)  # fmt: skip
    assert (code, err) == (0, "") and PSK not in out
    assert stored_psk(d, "m1") == bytes.fromhex(PSK)
    monkeypatch.setattr(sys, "stdin", io.StringIO("22" * 16 + "\n"))
    code, out, err = run(
        capsys, "keys", "rotate-psk", "m1", "--psk-file", "-", "--data-dir", str(d),
        "--token-file", token,
    )  # fmt: skip
    assert (code, err) == (0, "") and "22" * 16 not in out
    assert stored_psk(d, "m1") == bytes.fromhex("22" * 16)


def test_keys_refuses_a_psk_on_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Attack: a PSK in argv is in /proc/PID/cmdline for every local user to read. `keys`
    refuses it outright (the meter, which may run unattended from a unit file, only warns)."""
    d = tmp_path / "data"
    token = str(key_operator(d))
    for verb in ("enroll", "rotate-psk"):
        code, out, err = run(capsys, "keys", verb, "m1", "--psk", PSK, "--data-dir", str(d),
                             "--token-file", token)  # fmt: skip
        assert (code, out) == (2, "") and "--psk-file" in err and err.count("\n") == 1
    assert not (d / "keyserver.db").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--psk-file", "{group_readable}"], "must not be accessible to group or others"),
        (["--psk-file", "{missing}"], "does not exist"),
        (["--psk-file", "{short}"], "PSK must be 16 bytes"),
        (["--psk-file", "{group_readable}", "--psk", PSK], "not both"),
        (["--psk", "xyz"], "--psk: PSK must be hex digits"),
    ],
)
def test_bad_psk_sources_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    files = {
        "group_readable": str(psk_file(tmp_path, 0o644)),
        "missing": str(tmp_path / "nope"),
        "short": str(psk_file(tmp_path, 0o600, "0011\n", "short.psk")),
    }
    argv = [a.format(**files) for a in argv]
    code, _, err = run(capsys, "keys", "enroll", "m1", *argv, "--data-dir", str(tmp_path / "d"))
    keys_message = "on the command line is visible" if "--psk" in argv else message
    assert code == 2 and keys_message in err and len(err.strip().splitlines()) <= 2, err
    code, _, err = run(capsys, "meter", "--id", "m1", *argv, "--keyserver", "127.0.0.1:9")
    assert code == 2 and message in err, err


def _has_socket(pid: int) -> bool:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd).startswith("socket:"):
                return True
        except FileNotFoundError:
            continue
    return False


def _cmdline_of_running_meter(tmp_path: Path, *argv: str, env: dict[str, str]) -> tuple[bytes, str]:
    """Start `amistack meter` against a key server that is not there (it keeps retrying), read
    its /proc/PID/cmdline and /proc/PID/environ mode as another local user would, stop it."""
    proc = subprocess.Popen(
        [PY, "-m", "amistack.cli.main", "meter", "--id", "m1",
         "--keyserver", f"127.0.0.1:{free_port()}", *argv],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, **env}, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30.0
        while not _has_socket(proc.pid):  # running: it took the PSK and is authenticating
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the meter did not start"
            time.sleep(0.05)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert Path(f"/proc/{proc.pid}/environ").stat().st_mode & 0o077 == 0  # owner only
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    return cmdline, err


@pytest.mark.parametrize("source", ["file", "env"])  # stdin: in-process above
def test_the_psk_is_not_in_the_process_list(tmp_path: Path, source: str) -> None:
    argv: tuple[str, ...] = ()
    env: dict[str, str] = {}
    if source == "file":
        argv = ("--psk-file", str(psk_file(tmp_path)))
    else:
        env = {"AMISTACK_PSK": PSK}
    cmdline, err = _cmdline_of_running_meter(tmp_path, *argv, env=env)
    assert b"amistack.cli.main\x00meter" in cmdline
    assert PSK.encode() not in cmdline.lower() and "warning" not in err


def test_with_psk_the_key_is_in_the_process_list_and_it_warns(tmp_path: Path) -> None:
    cmdline, err = _cmdline_of_running_meter(tmp_path, "--psk", PSK, env={})
    assert PSK.encode() in cmdline  # what every local user sees: hence the warning
    assert "warning: --psk puts the key in the process list" in err
