"""wpa_supplicant's EAP-TLS peer (eapol_test) against OUR RadiusEapServer running EapTlsServer.

The device certificate, the key server's certificate and the CA all come from our own PKI
(`amistack.keymgmt.pki`, ECDSA P-256). eapol_test checks our RADIUS answers, decrypts the
MS-MPPE keys and compares them with the MSK its own EAP-TLS derived; we compare that MSK with
ours byte for byte. TLS 1.2 (RFC 5216) and TLS 1.3 both: wpa_supplicant up to 2.10 (Debian's)
derives TLS 1.3 keys as the drafts before RFC 9190 did (exporter context = Type-Code 0x0D), so
against it our server runs with `TLS13_CONTEXT_DRAFT`; a newer one gets RFC 9190's empty context.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import require_tool
from tests.interop.conftest import RADIUS_SECRET, ThreadedRadiusServer
from tests.interop.test_radius_eapol_test import run_eapol_test, succeeded
from tests.tls_pki import LabPki

from amistack.crypto.rand import system_random
from amistack.eap.method import ServerMethod
from amistack.eap.tls import TLS13_CONTEXT_DRAFT, TLS13_CONTEXT_RFC9190, EapTlsServer
from amistack.keymgmt import pki
from amistack.radius.server import RadiusEapServer

pytestmark = pytest.mark.interop

DEVICE = "meter-tls-7"
MSK_LINE = re.compile(r"EAP-TLS: Derived key - hexdump\(len=64\): ([0-9a-f ]+)")


def peer_config(tmp_path: Path, lab: LabPki, device: str, version: str) -> Path:
    layout = lab.layout
    phase1 = "tls_disable_tlsv1_3=0" if version == "1.3" else "tls_disable_tlsv1_3=1"
    conf = tmp_path / "eapol_test.conf"
    conf.write_text(
        "network={\n"
        "    key_mgmt=IEEE8021X\n"
        "    eap=TLS\n"
        f'    identity="{device}"\n'
        f'    ca_cert="{layout.ca_cert}"\n'
        f'    client_cert="{layout.cert(pki.CertKind.DEVICE, device)}"\n'
        f'    private_key="{layout.key(pki.CertKind.DEVICE, device)}"\n'
        f'    phase1="{phase1}"\n'
        "}\n"
    )
    return conf


def supplicant_tls13_context() -> bytes:
    """The TLS 1.3 exporter context the installed wpa_supplicant uses (RFC 9190 from 2.11 on)."""
    out = subprocess.run(
        [require_tool("eapol_test"), "-v"], capture_output=True, text=True, check=False
    )
    found = re.search(r"v(\d+)\.(\d+)", out.stdout + out.stderr)
    assert found is not None, out
    release = (int(found.group(1)), int(found.group(2)))
    return TLS13_CONTEXT_DRAFT if release <= (2, 10) else TLS13_CONTEXT_RFC9190


def our_server(
    lab: LabPki, tls13_context: bytes = TLS13_CONTEXT_RFC9190
) -> tuple[RadiusEapServer, list[EapTlsServer]]:
    created: list[EapTlsServer] = []
    config = lab.server_config({DEVICE.encode()}, tls13_context=tls13_context)

    def method() -> ServerMethod:
        m = EapTlsServer(config, time.time)
        created.append(m)
        return m

    return RadiusEapServer(RADIUS_SECRET, lambda: [method], system_random), created


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_eapol_test_tls_success_same_msk(
    tmp_path: Path,
    threaded_radius_server: Callable[[RadiusEapServer], ThreadedRadiusServer],
    version: str,
) -> None:
    lab = LabPki.create(tmp_path / "pki")
    lab.device(DEVICE)
    server, methods = our_server(lab, supplicant_tls13_context())
    runner = threaded_radius_server(server)
    result = run_eapol_test(peer_config(tmp_path, lab, DEVICE, version), runner.port)
    peer_msk = succeeded(result, runner, MSK_LINE)
    done = [m for m in methods if m.msk is not None]
    assert [m.msk for m in done] == [peer_msk]
    assert done[0].peer_id == DEVICE.encode()
    assert done[0].conn is not None and done[0].conn.get_protocol_version_name() == f"TLSv{version}"
    assert server.counters["access_accept"] == 1


def test_eapol_test_revoked_certificate_rejected(
    tmp_path: Path, threaded_radius_server: Callable[[RadiusEapServer], ThreadedRadiusServer]
) -> None:
    lab = LabPki.create(tmp_path / "pki")
    lab.device(DEVICE)
    pki.revoke(lab.data_dir, DEVICE, kind=pki.CertKind.DEVICE)
    server, methods = our_server(lab)
    runner = threaded_radius_server(server)
    result = run_eapol_test(peer_config(tmp_path, lab, DEVICE, "1.3"), runner.port)
    runner.__exit__()
    assert result.returncode != 0
    assert "FAILURE" in result.stdout.splitlines()[-1]
    assert server.counters["access_reject"] == 1 and server.counters["access_accept"] == 0
    assert all(m.msk is None for m in methods)
