"""tshark dissects an EAP-TLS conversation of ours (peer and server) carried over RADIUS: the
EAP-TLS fragments reassembled, the TLS handshake inside decoded, nothing malformed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.conftest import require_tool
from tests.interop.test_radius_tshark import SECRET, capture_conversation
from tests.tls_pki import NOW, LabPki

from amistack.eap.packet import EapType
from amistack.eap.peer import EapPeer, EapPeerState
from amistack.eap.tls import EapTlsPeer, EapTlsServer

pytestmark = pytest.mark.interop

DEVICE = "meter-tls-3"


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_tshark_decodes_our_eap_tls(tmp_path: Path, version: str) -> None:
    tshark = require_tool("tshark")
    lab = LabPki.create(tmp_path / "pki")
    server_config = lab.server_config({DEVICE.encode()}, fragment_size=400)
    peer_config = lab.peer_config(DEVICE, max_version=version, fragment_size=400)
    peer = EapPeer(DEVICE.encode(), {EapType.TLS: lambda: EapTlsPeer(peer_config, lambda: NOW)})
    pcap = tmp_path / "radius-tls.pcap"
    capture_conversation(
        pcap, [lambda: EapTlsServer(server_config, lambda: NOW)], peer, now=NOW, rounds=40
    )
    assert peer.state is EapPeerState.SUCCESS
    cmd = [
        tshark, "-n", "-r", str(pcap),
        "-o", f"radius.shared_secret:{SECRET.decode()}",
        "-o", "radius.validate_authenticator:TRUE",
        "-T", "fields", "-E", "separator=|", "-E", "aggregator=,",
        "-e", "radius.code", "-e", "eap.code", "-e", "eap.type", "-e", "eap.tls.flags",
        "-e", "tls.handshake.type", "-e", "tls.record.version", "-e", "_ws.malformed",
        "-e", "_ws.expert.severity",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [line.split("|") for line in out.splitlines() if line]
    assert rows and all(r[6] == "" for r in rows), rows  # nothing malformed
    assert {r[2] for r in rows if r[1] in {"1", "2"}} >= {"1", "13"}
    handshake = {t for r in rows for t in r[4].split(",") if t}
    # ClientHello (1) and ServerHello (2) always; in TLS 1.2 the certificates (11) too
    assert {"1", "2"} <= handshake, rows
    if version == "1.2":
        assert {"11", "16", "20"} & handshake, rows
    more = [r for r in rows if r[3] and int(r[3], 16) & 0x40]
    assert more, "expected fragmented EAP-TLS messages (M flag)"
    assert rows[-1][0] == "2" and rows[-1][1] == "3"  # Access-Accept with EAP-Success
