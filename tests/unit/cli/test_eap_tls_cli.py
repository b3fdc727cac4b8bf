"""The EAP-TLS commands end to end: `pki issue-device`, `keys enroll --method tls`, `keyserver
--eap-tls` as a real process on loopback UDP (127.0.51.0/24), and `meter --cert/--key/--ca`
authenticating to it beside an EAP-PSK meter; a revoked certificate then fails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.cli import run_cli as run
from tests.cli import run_keys

PY = sys.executable
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
PSK = "00112233445566778899aabbccddeeff"
HOST = "127.0.51.1"


@pytest.fixture
def d(tmp_path: Path) -> Path:
    return tmp_path / "ks"


def setup_pki(capsys: pytest.CaptureFixture[str], d: Path) -> None:
    for argv in (
        ("pki", "init"),
        ("pki", "issue-server", "keyserver", "--host", HOST),
        ("pki", "issue-device", "meter-t1"),
    ):
        code, out, err = run(capsys, *argv, "--data-dir", str(d))
        assert code == 0, (argv, out, err)
    for argv in (("enroll", "meter-t1", "--method", "tls"), ("enroll", "meter-p1", "--psk", PSK)):
        code, out, err = run_keys(capsys, d, *argv)
        assert code == 0, (argv, out, err)


def test_enrol_list_and_option_errors(capsys: pytest.CaptureFixture[str], d: Path) -> None:
    setup_pki(capsys, d)
    code, out, _ = run_keys(capsys, d, "list")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:-1]}
    assert rows["meter-t1"][2] == "tls" and rows["meter-p1"][2] == "psk"
    assert (d / "pki" / "devices" / "meter-t1.crt").exists()
    assert (d / "pki" / "devices" / "meter-t1.key").stat().st_mode & 0o777 == 0o600
    code, _, err = run_keys(capsys, d, "enroll", "m2", "--method", "tls", "--psk", PSK)
    assert code == 2 and "--psk-file goes with --method psk" in err
    code, _, err = run_keys(capsys, d, "rotate-psk", "meter-t1")
    assert code == 2 and "EAP-TLS" in err
    code, _, err = run(capsys, "pki", "issue-device", "bad id!", "--data-dir", str(d))
    assert code == 2 and "must be 1-64" in err
    ca = str(d / "pki" / "ca.crt")
    code, _, err = run(capsys, "meter", "--id", "meter-t1", "--cert", ca, "--keyserver", HOST)
    assert code == 2 and "--cert, --key and --ca together" in err
    key = str(d / "pki" / "devices" / "meter-t1.key")
    code, _, err = run(
        capsys, "meter", "--id", "meter-t1", "--cert", ca, "--key", key, "--ca", ca,
        "--psk", PSK, "--keyserver", HOST,
    )  # fmt: skip
    assert code == 2 and "not both" in err
    code, _, err = run(
        capsys, "keyserver", "--eap-tls", "--eap-tls-cert", "nope", "--data-dir", str(d)
    )
    assert code == 2 and "--eap-tls" in err and "issue-server nope" in err


def test_tls_and_psk_meters_against_one_keyserver_process(
    capsys: pytest.CaptureFixture[str], d: Path, tmp_path: Path
) -> None:
    setup_pki(capsys, d)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    log = tmp_path / "keyserver.log"
    with open(log, "wb") as sink:
        keyserver = subprocess.Popen(
            [PY, "-m", "amistack.cli.main", "keyserver", "--data-dir", str(d), "--listen",
             f"{HOST}:{port}", "--eap-tls"],
            stdout=sink, stderr=subprocess.STDOUT, env=ENV,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20.0
        while f"PANA on {HOST}".encode() not in log.read_bytes():
            assert keyserver.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "key server did not start"
            time.sleep(0.05)
        assert b"methods EAP-TLS and EAP-PSK" in log.read_bytes()
        pki = d / "pki"
        tls_meter = (
            "meter", "--id", "meter-t1", "--keyserver", f"{HOST}:{port}", "--once",
            "--timeout", "10", "--cert", str(pki / "devices" / "meter-t1.crt"),
            "--key", str(pki / "devices" / "meter-t1.key"), "--ca", str(pki / "ca.crt"),
            "--server-name", HOST,
        )  # fmt: skip
        code, out, err = run(capsys, *tls_meter)
        assert code == 0 and "meter-t1: authenticated" in out, (out, err, log.read_text())
        code, out, err = run(
            capsys, "meter", "--id", "meter-p1", "--psk", PSK, "--keyserver", f"{HOST}:{port}",
            "--once", "--timeout", "10",
        )  # fmt: skip
        assert code == 0 and "meter-p1: authenticated" in out, (out, err)
        # the certificate goes on the CRL: the running key server refuses it at once
        code, _, err = run(capsys, "pki", "revoke", "meter-t1", "--device", "--data-dir", str(d))
        assert code == 0, err
        code, out, _ = run(capsys, *tls_meter)
        assert code == 1 and "authentication failed" in out
    finally:
        keyserver.terminate()
        keyserver.wait(timeout=10)
    code, out, _ = run_keys(capsys, d, "audit", "--device", "meter-t1")
    assert "auth-success" in out and "revoked (CRL)" in out
