"""Our EAP-TLS peer -> our PAA's RADIUS pass-through -> hostapd's EAP-TLS server (driver=none).

The meter's PaC and the PAA are our sans-IO engines over an in-memory wire; the PAA passes EAP
to a real hostapd over loopback UDP (RFC 3579). hostapd holds the key server's certificate and
trusts our CA; the meter presents its device certificate (both from our PKI, ECDSA P-256). The
PAA ends up with the MSK it learnt from hostapd's MS-MPPE keys, which must be the one our peer
derived. hostapd 2.10 derives TLS 1.3 keys as the RFC 9190 drafts did (context 0x0D): the peer
uses `TLS13_CONTEXT_DRAFT` against it, as a meter would against such a server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.conftest import require_tool
from tests.interop.conftest import (
    RADIUS_SECRET,
    HostapdRadius,
    _start_hostapd,
    free_udp_port,
    stop_process,
)
from tests.interop.test_radius_eapol_test_tls import supplicant_tls13_context
from tests.interop.test_radius_pana_passthrough import run_pana
from tests.tls_pki import SERVER_NAME, LabPki

from amistack.eap.method import PeerMethod
from amistack.eap.packet import EapType
from amistack.eap.tls import EapTlsPeer
from amistack.keymgmt import pki
from amistack.pana.events import Authenticated, AuthenticationFailed

pytestmark = pytest.mark.interop

DEVICE = "meter-tls-9"


@pytest.fixture
def hostapd_tls(tmp_path: Path) -> Iterator[tuple[HostapdRadius, LabPki]]:
    """hostapd as a RADIUS EAP-TLS server with the key server's certificate of our PKI."""
    hostapd = require_tool("hostapd")
    lab = LabPki.create(tmp_path / "pki")
    lab.device(DEVICE)
    layout = lab.layout
    (tmp_path / "eap_user").write_text(f'"{DEVICE}" TLS\n')
    (tmp_path / "radius_clients").write_text(f"127.0.0.1/32 {RADIUS_SECRET.decode()}\n")
    extra = [
        f"ca_cert={layout.ca_cert}",
        f"server_cert={layout.cert(pki.CertKind.SERVER, SERVER_NAME)}",
        f"private_key={layout.key(pki.CertKind.SERVER, SERVER_NAME)}",
        "tls_flags=[ENABLE-TLSv1.3]",
    ]
    for _ in range(3):
        port = free_udp_port()
        proc = _start_hostapd(hostapd, tmp_path, port, extra)
        if proc is not None:
            break
    else:
        pytest.fail(f"hostapd would not start: {(tmp_path / 'hostapd.log').read_text()[-2000:]}")
    try:
        yield (
            HostapdRadius(
                ("127.0.0.1", port), RADIUS_SECRET, DEVICE.encode(), b"", tmp_path / "hostapd.log"
            ),
            lab,
        )
    finally:
        stop_process(proc)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_our_tls_peer_through_paa_and_hostapd(
    hostapd_tls: tuple[HostapdRadius, LabPki], version: str
) -> None:
    hostapd, lab = hostapd_tls
    config = lab.peer_config(DEVICE, max_version=version, tls13_context=supplicant_tls13_context())
    methods: dict[int, Callable[[], PeerMethod]] = {
        EapType.TLS: lambda: EapTlsPeer(config, time.time)
    }
    pac_events, paa_events, peer = run_pana(hostapd, b"", methods)
    pac_ok = [e for e in pac_events if isinstance(e, Authenticated)]
    paa_ok = [e for e in paa_events if isinstance(e, Authenticated)]
    assert pac_ok and paa_ok, (pac_events, paa_events, hostapd.log.read_text()[-3000:])
    assert peer.msk is not None
    assert pac_ok[0].context.msk == peer.msk == paa_ok[0].context.msk
    method = peer.method
    assert isinstance(method, EapTlsPeer) and method.conn is not None
    assert method.conn.get_protocol_version_name() == f"TLSv{version}"


def test_hostapd_refuses_a_certificate_of_another_ca(
    hostapd_tls: tuple[HostapdRadius, LabPki], tmp_path: Path
) -> None:
    hostapd, lab = hostapd_tls
    rogue = LabPki.create(tmp_path / "rogue")
    cert, key = rogue.device(DEVICE)
    from amistack.eap.tls import TlsPeerConfig

    config = TlsPeerConfig.build(cert, key, [lab.ca])
    methods: dict[int, Callable[[], PeerMethod]] = {
        EapType.TLS: lambda: EapTlsPeer(config, time.time)
    }
    pac_events, paa_events, peer = run_pana(hostapd, b"", methods)
    assert not any(isinstance(e, Authenticated) for e in pac_events + paa_events)
    assert any(isinstance(e, AuthenticationFailed) for e in pac_events + paa_events)
    assert peer.msk is None
