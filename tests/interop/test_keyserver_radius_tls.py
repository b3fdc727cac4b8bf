"""`amistack keyserver --radius-listen ... --eap-tls` as a process: wpa_supplicant's eapol_test
authenticates a device enrolled with `keys enroll --method tls` by EAP-TLS through the key
server's RADIUS listener (what an 802.1X authenticator would do), and an EAP-PSK device beside
it; the same certificate fails once `pki revoke --device` put it on the CRL."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.cli import run_cli as run
from tests.cli import run_keys
from tests.interop.conftest import PSK_HEX, PSK_IDENTITY
from tests.interop.test_radius_eapol_test import peer_config, run_eapol_test

pytestmark = pytest.mark.interop

PY = sys.executable
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
HOST = "127.0.51.9"
SECRET = "amistack-interop"  # run_eapol_test's RADIUS secret


def eapol_conf(tmp_path: Path, d: Path, device: str) -> Path:
    pki = d / "pki"
    conf = tmp_path / f"{device}.conf"
    conf.write_text(
        "network={\n    key_mgmt=IEEE8021X\n    eap=TLS\n"
        f'    identity="{device}"\n    ca_cert="{pki / "ca.crt"}"\n'
        f'    client_cert="{pki / "devices" / f"{device}.crt"}"\n'
        f'    private_key="{pki / "devices" / f"{device}.key"}"\n'
        '    phase1="tls_disable_tlsv1_3=1"\n}\n'
    )
    return conf


def test_keyserver_radius_listener_runs_eap_tls(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = tmp_path / "ks"
    for argv in (
        ("pki", "init"),
        ("pki", "issue-server", "keyserver", "--host", HOST),
        ("pki", "issue-device", "meter-r1"),
    ):
        code, out, err = run(capsys, *argv, "--data-dir", str(d))
        assert code == 0, (argv, out, err)
    for argv in (
        ("enroll", "meter-r1", "--method", "tls"),
        ("enroll", PSK_IDENTITY.decode(), "--psk", PSK_HEX),
    ):
        code, out, err = run_keys(capsys, d, *argv)
        assert code == 0, (argv, out, err)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))  # where run_eapol_test sends
        port = s.getsockname()[1]
    log = tmp_path / "keyserver.log"
    with open(log, "wb") as sink:
        keyserver = subprocess.Popen(
            [PY, "-m", "amistack.cli.main", "keyserver", "--data-dir", str(d), "--listen",
             f"{HOST}:0", "--radius-listen", f"127.0.0.1:{port}", "--radius-secret", SECRET,
             "--eap-tls"],
            stdout=sink, stderr=subprocess.STDOUT, env=ENV,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20.0
        while b"RADIUS on 127.0.0.1" not in log.read_bytes():
            assert keyserver.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "key server did not start"
            time.sleep(0.05)
        result = run_eapol_test(eapol_conf(tmp_path, d, "meter-r1"), port)
        assert result.returncode == 0, result.stdout[-3000:]
        assert "MPPE keys OK: 1  mismatch: 0" in result.stdout
        assert re.search(r"EAP-TLS: Derived key", result.stdout)
        result = run_eapol_test(peer_config(tmp_path, PSK_HEX), port)  # EAP-PSK beside it
        assert result.returncode == 0 and "MPPE keys OK: 1  mismatch: 0" in result.stdout
        code, _, err = run(capsys, "pki", "revoke", "meter-r1", "--device", "--data-dir", str(d))
        assert code == 0, err
        result = run_eapol_test(eapol_conf(tmp_path, d, "meter-r1"), port)
        assert result.returncode != 0 and "FAILURE" in result.stdout.splitlines()[-1]
    finally:
        keyserver.terminate()
        keyserver.wait(timeout=10)
