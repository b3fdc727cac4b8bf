"""wpa_supplicant's EAP-PSK peer (eapol_test) against OUR RadiusEapServer over real UDP.

eapol_test plays NAS and peer: it sends the EAP-Response/Identity in the first Access-Request,
checks our Response Authenticator and Message-Authenticator, decrypts MS-MPPE-Recv/Send-Key and
compares them with the MSK its own EAP-PSK derived ("MPPE keys OK: 1  mismatch: 0").
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import require_tool
from tests.interop.conftest import PSK_HEX, PSK_IDENTITY, RADIUS_SECRET, ThreadedRadiusServer

from amistack.crypto.rand import system_random
from amistack.eap.method import ServerMethod
from amistack.eap.psk import EapPskServer
from amistack.radius.server import RadiusEapServer

pytestmark = pytest.mark.interop

MSK_LINE = re.compile(r"EAP-PSK: MSK - hexdump\(len=64\): ([0-9a-f ]+)")


def peer_config(tmp_path: Path, psk_hex: str) -> Path:
    # `password` unquoted is hex: EAP-PSK takes the 16-octet PSK from it (wpa_supplicant.conf).
    conf = tmp_path / "eapol_test.conf"
    conf.write_text(
        "network={\n"
        "    key_mgmt=IEEE8021X\n"
        "    eap=PSK\n"
        f'    identity="{PSK_IDENTITY.decode()}"\n'
        f"    password={psk_hex}\n"
        "}\n"
    )
    return conf


def our_server() -> tuple[RadiusEapServer, list[EapPskServer]]:
    created: list[EapPskServer] = []
    psks = {PSK_IDENTITY: bytes.fromhex(PSK_HEX)}

    def method() -> ServerMethod:
        m = EapPskServer(b"amistack-ks", psks.get, system_random)
        created.append(m)
        return m

    return RadiusEapServer(RADIUS_SECRET, lambda: [method], system_random), created


def run_eapol_test(conf: Path, port: int) -> subprocess.CompletedProcess[str]:
    eapol_test = require_tool("eapol_test")
    # subprocess.run kills the child when the timeout expires.
    return subprocess.run(
        [
            eapol_test,
            "-c",
            str(conf),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-s",
            RADIUS_SECRET.decode(),
            "-t",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def succeeded(
    result: subprocess.CompletedProcess[str],
    runner: ThreadedRadiusServer,
    msk_line: re.Pattern[str],
) -> bytes:
    """Stop `runner`; check eapol_test succeeded with matching MPPE keys; its MSK."""
    out = result.stdout
    runner.__exit__()
    assert not runner.errors
    assert result.returncode == 0, out[-3000:]
    assert "SUCCESS" in out.splitlines()[-1]
    assert "MPPE keys OK: 1  mismatch: 0" in out
    found = msk_line.search(out)
    assert found is not None, out[-3000:]
    return bytes.fromhex(found.group(1).replace(" ", ""))


def test_eapol_test_psk_success_same_msk(
    tmp_path: Path, threaded_radius_server: Callable[[RadiusEapServer], ThreadedRadiusServer]
) -> None:
    server, methods = our_server()
    runner = threaded_radius_server(server)
    result = run_eapol_test(peer_config(tmp_path, PSK_HEX), runner.port)
    peer_msk = succeeded(result, runner, MSK_LINE)
    ours = [m.msk for m in methods if m.msk is not None]
    assert ours == [peer_msk]
    assert server.counters["access_accept"] == 1
    assert server.counters["bad_message_authenticator"] == 0


def test_eapol_test_wrong_psk_rejected(
    tmp_path: Path, threaded_radius_server: Callable[[RadiusEapServer], ThreadedRadiusServer]
) -> None:
    server, methods = our_server()
    runner = threaded_radius_server(server)
    result = run_eapol_test(peer_config(tmp_path, "00" * 16), runner.port)
    runner.__exit__()
    assert not runner.errors
    assert result.returncode != 0
    assert "FAILURE" in result.stdout.splitlines()[-1]
    assert server.counters["access_reject"] == 1
    assert server.counters["access_accept"] == 0
    assert all(m.msk is None for m in methods)
