"""EAP-TLS and EAP-PSK side by side in ONE key server, end to end through PANA on the virtual
clock: nothing in PANA, the key rings, the UKMF or the key server knows which method ran."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.tls_pki import NOW, LabPki
from tests.unit.keymgmt.test_key_server import LIFETIME, PAA, PSKS, Meter, Net, start

from amistack.crypto import seeded_random
from amistack.eap import EapPeer, EapPskPeer, EapType
from amistack.eap.tls import EapTlsPeer
from amistack.keymgmt import pki
from amistack.keymgmt.eap_tls import eap_tls_method, tls_server_config
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.server import KeyServer
from amistack.keymgmt.store import AuditKind, CredentialStore, StoreError
from amistack.keymgmt.ukmf import C1222, LINK, PurposeRegistry
from amistack.pana.events import Authenticated, AuthenticationFailed, SessionTerminated
from amistack.pana.paa import PaaConfig
from amistack.pana.pac import PacConfig, PanaClient

TLS_METER = b"meter-tls-1"
OTHER_TLS_METER = b"meter-tls-2"


class TlsMeter(Meter):
    """The same meter, holding a device certificate instead of a PSK."""

    def __init__(self, lab: LabPki, name: bytes, port: int, seed: int, cert_of: str = "") -> None:
        self.name = name
        self.addr = ("198.51.100.7", port)
        config = lab.peer_config(cert_of or name.decode(), server_name="keyserver.test")
        self.pac = PanaClient(
            PacConfig(),
            lambda: EapPeer(name, {EapType.TLS: lambda: EapTlsPeer(config, lambda: NOW)}),
            seeded_random(seed),
            PAA,
        )
        self.ring = KeyRing(name, PurposeRegistry(), overlap=30.0)
        self.events = []


@pytest.fixture
def lab(tmp_path: Path) -> LabPki:
    return LabPki.create(tmp_path)


@pytest.fixture
def store(tmp_path: Path, kek: FileKek) -> Iterator[CredentialStore]:
    s = CredentialStore(tmp_path / "ks.db", kek)
    for name, psk in PSKS.items():
        s.enroll(name, psk, now=0.0)
    s.enroll_tls(TLS_METER, now=0.0)
    s.enroll_tls(OTHER_TLS_METER, now=0.0)
    yield s
    s.close()


def make_server(store: CredentialStore, lab: LabPki) -> KeyServer:
    config = tls_server_config(lab.data_dir, store)
    return KeyServer(
        store,
        rng=seeded_random(1),
        paa_config=PaaConfig(session_lifetime=LIFETIME),
        overlap=30.0,
        now=0.0,
        extra_methods=[eap_tls_method(config, lambda: NOW)],
    )


def test_both_methods_in_one_key_server_same_keys_reauth_and_revocation(
    store: CredentialStore, lab: LabPki
) -> None:
    server = make_server(store, lab)
    psk_meter = Meter(b"meter-1", PSKS[b"meter-1"], 40000, seed=2)
    tls_meter = TlsMeter(lab, TLS_METER, 40001, seed=3)
    net = Net(server, [])
    start(net, psk_meter, tls_meter)
    assert sorted(a.peer_id or b"" for a in net.of(Authenticated)) == [b"meter-1", TLS_METER]
    for meter in (psk_meter, tls_meter):
        for purpose in (C1222, LINK):
            mine = meter.ring.current(purpose, net.now)
            theirs = server.current_key(meter.name, purpose, net.now)
            assert mine is not None and theirs is not None and theirs.key == mine.key
    first = tls_meter.ring.current(C1222, net.now)
    assert first is not None
    # re-authentication (EAP-TLS again, a full handshake) rotates the keys
    net.run_until(LIFETIME * 0.75 + 10.0)
    tls_auths = [a for a in net.of(Authenticated) if a.peer_id == TLS_METER]
    assert [a.reauth for a in tls_auths] == [False, True]
    second = tls_meter.ring.current(C1222, net.now)
    assert second is not None and second.key_id != first.key_id and second.key != first.key
    theirs = server.key_for(second.key_id, C1222, net.now)
    assert theirs is not None and theirs.key == second.key and theirs.peer_id == TLS_METER
    # revocation through the key server's existing path
    result = server.revoke(TLS_METER, net.now)
    assert result.newly_revoked and len(result.sessions_terminated) == 1
    net.run_until(net.now + 1.0)
    assert server.current_key(TLS_METER, C1222, net.now) is None
    assert any(isinstance(e, SessionTerminated) for e in net.events)
    again = TlsMeter(lab, TLS_METER, 40001, seed=9)
    tls_meter.pac = again.pac
    failures = len(net.of(AuthenticationFailed))
    start(net, tls_meter)
    assert len(net.of(AuthenticationFailed)) == failures + 1
    assert server.current_key(TLS_METER, C1222, net.now) is None
    assert server.current_key(b"meter-1", C1222, net.now) is not None  # PSK meter untouched
    kinds = [e.kind for e in store.audit_log(device_id=TLS_METER)]
    assert {"enroll", "auth-success", "rekey", "revoke", "auth-failure"} <= set(kinds)


def test_certificate_on_the_crl_is_refused_while_the_device_is_still_enrolled(
    store: CredentialStore, lab: LabPki
) -> None:
    lab.device(TLS_METER.decode())
    pki.revoke(lab.data_dir, TLS_METER.decode(), kind=pki.CertKind.DEVICE)
    server = make_server(store, lab)
    net = Net(server, [])
    start(net, TlsMeter(lab, TLS_METER, 40001, seed=3))
    assert net.of(Authenticated) == [] and len(net.of(AuthenticationFailed)) == 1
    assert store.is_enrolled_for(TLS_METER, "tls")
    assert "is revoked (CRL)" in store.audit_log(kind=AuditKind.AUTH_FAILURE)[0].detail


def test_downgrade_to_psk_for_a_tls_device_is_refused(store: CredentialStore, lab: LabPki) -> None:
    """An attacker claims the TLS meter's identity with EAP-PSK (any PSK): the key server
    proposes EAP-TLS only, the Nak to PSK finds no method that accepts the identity, and the
    PSK lookup itself has no PSK for the device either."""
    server = make_server(store, lab)
    net = Net(server, [])
    attacker = Meter(TLS_METER, PSKS[b"meter-1"], 40005, seed=4)
    start(net, attacker)
    assert net.of(Authenticated) == [] and len(net.of(AuthenticationFailed)) == 1
    assert store.get_psk(TLS_METER) is None
    assert server.current_key(TLS_METER, C1222, net.now) is None
    with pytest.raises(StoreError, match="EAP-TLS"):
        store.rotate_psk(TLS_METER, bytes(range(1, 17)), 1.0)


def test_tls_meter_with_a_psk_too_is_still_asked_for_tls(
    store: CredentialStore, lab: LabPki
) -> None:
    """A peer offering both methods gets the one its device is enrolled for, first time."""
    server = make_server(store, lab)
    config = lab.peer_config(TLS_METER.decode())
    meter = TlsMeter(lab, TLS_METER, 40001, seed=3)
    rng = seeded_random(7)
    meter.pac = PanaClient(
        PacConfig(),
        lambda: EapPeer(
            TLS_METER,
            {
                EapType.PSK: lambda: EapPskPeer(TLS_METER, PSKS[b"meter-1"], rng),
                EapType.TLS: lambda: EapTlsPeer(config, lambda: NOW),
            },
        ),
        rng,
        PAA,
    )
    net = Net(server, [])
    start(net, meter)
    assert [a.peer_id for a in net.of(Authenticated)] == [TLS_METER]


def test_store_enrolment_method(store: CredentialStore, tmp_path: Path, kek: FileKek) -> None:
    assert store.eap_method(TLS_METER) == "tls" and store.eap_method(b"meter-1") == "psk"
    assert store.eap_method(b"ghost") is None and store.device(TLS_METER).method == "tls"
    assert store.is_enrolled_for(TLS_METER, "tls") and not store.is_enrolled_for(TLS_METER, "psk")
    store.enroll(TLS_METER, PSKS[b"meter-2"], 1.0, replace=True)  # back to PSK
    assert store.eap_method(TLS_METER) == "psk" and store.get_psk(TLS_METER) == PSKS[b"meter-2"]
    store.enroll_tls(TLS_METER, 2.0, replace=True)
    assert store.get_psk(TLS_METER) is None  # the PSK is destroyed
    with pytest.raises(StoreError):
        store.enroll_tls(TLS_METER, 3.0)
    store.revoke(TLS_METER, "lost", 4.0)
    assert not store.is_enrolled_for(TLS_METER, "tls")
