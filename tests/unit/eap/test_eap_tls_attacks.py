"""EAP-TLS attacked: wrong CA, expired, revoked, another device's certificate, cut or reordered
fragments, an oversized fragment train. Each ends in failure with the reason, keys nowhere."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from tests.tls_pki import NOW, LabPki, converse, tls_auth, tls_peer

from amistack.eap import EapAuthenticator, EapOutcome, EapPacket, EapPeerState, EapType
from amistack.eap.tls import (
    MAX_ROUNDS,
    MAX_TLS_MESSAGE,
    EapTlsFrame,
    EapTlsPeer,
    TlsFlags,
    TlsPeerConfig,
)
from amistack.keymgmt import pki

DEVICE = "meter-tls-1"
DAY = 86400.0


@pytest.fixture
def lab(tmp_path: Path) -> LabPki:
    lab = LabPki.create(tmp_path / "ours")
    lab.device(DEVICE)
    return lab


def failed(
    lab: LabPki,
    peer_config: TlsPeerConfig,
    *,
    identity: str = DEVICE,
    now: float = NOW,
    enrolled: set[bytes] | None = None,
) -> str:
    """Run a conversation that must fail; return the authenticator's reason."""
    peer = tls_peer(identity.encode(), peer_config, now)
    auth = tls_auth(lab.server_config(enrolled or {identity.encode()}), now)
    run = converse(peer, auth)
    assert run.last is not None and run.last.outcome is EapOutcome.FAILURE, run.last
    assert run.last.msk is None and peer.msk is None and peer.state is not EapPeerState.SUCCESS
    return run.last.reason


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_device_certificate_from_another_ca(lab: LabPki, tmp_path: Path, version: str) -> None:
    rogue = LabPki.create(tmp_path / "rogue")
    cert, key = rogue.device(DEVICE)  # same name, same shape, wrong issuer
    config = TlsPeerConfig.build(cert, key, [lab.ca], max_version=version)
    assert "does not verify" in failed(lab, config)


def test_meter_refuses_a_server_of_another_ca(lab: LabPki, tmp_path: Path) -> None:
    rogue = LabPki.create(tmp_path / "rogue")
    cert, key = lab.device(DEVICE)
    peer = tls_peer(DEVICE.encode(), TlsPeerConfig.build(cert, key, [rogue.ca]))
    run = converse(peer, tls_auth(lab.server_config({DEVICE.encode()})))
    assert peer.state is EapPeerState.FAILURE and peer.msk is None
    method = peer.method
    assert isinstance(method, EapTlsPeer) and "does not verify" in method.failure_reason
    assert run.last is None or run.last.outcome is not EapOutcome.SUCCESS


def test_meter_refuses_a_server_certificate_for_another_name(lab: LabPki) -> None:
    peer = tls_peer(DEVICE.encode(), lab.peer_config(DEVICE, server_name="evil.example"))
    converse(peer, tls_auth(lab.server_config({DEVICE.encode()})))
    method = peer.method
    assert isinstance(method, EapTlsPeer) and "not for 'evil.example'" in method.failure_reason
    assert peer.msk is None


def test_expired_and_not_yet_valid_certificates_by_the_injected_clock(lab: LabPki) -> None:
    pki.issue_device(lab.data_dir, "short", valid_days=1, now=NOW)
    cert, key = lab.credentials(pki.CertKind.DEVICE, "short")
    config = TlsPeerConfig.build(cert, key, [lab.ca])
    assert "expired" in failed(lab, config, identity="short", now=NOW + 2 * DAY)
    pki.issue_device(lab.data_dir, "later", now=NOW + 10 * DAY)
    cert, key = lab.credentials(pki.CertKind.DEVICE, "later")
    config = TlsPeerConfig.build(cert, key, [lab.ca])
    assert "expired or not yet valid" in failed(lab, config, identity="later")


def test_validity_is_judged_at_now_not_at_the_host_clock(tmp_path: Path) -> None:
    """A certificate that expired by the host's clock but is valid at the engine's `now`
    passes: the engine never reads the clock (sans-IO), OpenSSL's own time check is replaced."""
    then = NOW - 30 * DAY
    lab = LabPki.create(tmp_path, now=then)
    pki.issue_device(lab.data_dir, "old", valid_days=2, now=then)
    cert, key = lab.credentials(pki.CertKind.DEVICE, "old")
    peer = tls_peer(b"old", TlsPeerConfig.build(cert, key, [lab.ca]), then + DAY)
    run = converse(peer, tls_auth(lab.server_config({b"old"}), then + DAY))
    assert run.last is not None and run.last.outcome is EapOutcome.SUCCESS


def test_revoked_certificate_on_the_crl(lab: LabPki) -> None:
    pki.revoke(lab.data_dir, DEVICE, kind=pki.CertKind.DEVICE)
    assert "revoked (CRL)" in failed(lab, lab.peer_config(DEVICE))


def test_a_broken_crl_fails_closed(lab: LabPki) -> None:
    lab.layout.crl.write_bytes(b"-----BEGIN X509 CRL-----\nnope\n-----END X509 CRL-----\n")
    assert "revoked (CRL)" in failed(lab, lab.peer_config(DEVICE))


def test_certificate_for_another_device_id(lab: LabPki) -> None:
    lab.device("meter-tls-2")
    # meter-tls-2's certificate (and key) presented under meter-tls-1's identity
    reason = failed(
        lab,
        lab.peer_config("meter-tls-2"),
        identity=DEVICE,
        enrolled={DEVICE.encode(), b"meter-tls-2"},
    )
    assert "is for device b'meter-tls-2', not b'meter-tls-1'" in reason


def test_device_not_enrolled_for_tls(lab: LabPki) -> None:
    lab.device("meter-tls-2")
    # identity accepted (enrolled), but the certificate's device is not
    reason = failed(lab, lab.peer_config("meter-tls-2"), identity="", enrolled={b""})
    assert "not enrolled for EAP-TLS" in reason


def test_application_server_client_certificate_is_no_device_certificate(lab: LabPki) -> None:
    pki.issue_client(lab.data_dir, "headend", ["c1222"], now=NOW)
    cert, key = lab.credentials(pki.CertKind.CLIENT, "headend")
    reason = failed(lab, TlsPeerConfig.build(cert, key, [lab.ca]), identity="headend")
    assert "names no device" in reason


# -- fragments, hand-made ---------------------------------------------------------------------


def started(lab: LabPki) -> tuple[EapAuthenticator, int]:
    """An authenticator that has sent EAP-TLS/Start; returns it and the next identifier."""
    auth = tls_auth(lab.server_config({DEVICE.encode()}))
    ident = EapPacket.decode(auth.start()).identifier
    step = auth.receive(EapPacket.response(ident, EapType.IDENTITY, DEVICE.encode()).encode())
    assert step.send is not None
    start = EapPacket.decode(step.send)
    assert EapTlsFrame.decode(start.type_data).flags & TlsFlags.START
    return auth, start.identifier


def send(auth: EapAuthenticator, ident: int, frame: bytes) -> tuple[EapOutcome, bytes, str]:
    step = auth.receive(EapPacket.response(ident, EapType.TLS, frame).encode())
    return step.outcome, step.send or b"", step.reason


def first(length: int, data: bytes, more: bool = True) -> bytes:
    flags = TlsFlags.LENGTH | (TlsFlags.MORE if more else 0)
    return bytes([flags]) + struct.pack("!I", length) + data


def test_truncated_fragment_train(lab: LabPki) -> None:
    auth, ident = started(lab)
    outcome, ack, _ = send(auth, ident, first(3000, b"\x16" * 1000))
    assert (
        outcome is EapOutcome.CONTINUE
        and EapTlsFrame.decode(EapPacket.decode(ack).type_data).is_ack
    )
    outcome, _, reason = send(auth, EapPacket.decode(ack).identifier, b"\x00" + b"\x16" * 500)
    assert outcome is EapOutcome.FAILURE and "train ended after 1500 of 3000" in reason


def test_out_of_order_fragment(lab: LabPki) -> None:
    auth, ident = started(lab)
    _, ack, _ = send(auth, ident, first(3000, b"\x16" * 1000))
    # a second "first fragment" with another length in the middle of the train
    outcome, _, reason = send(auth, EapPacket.decode(ack).identifier, first(2000, b"\x16" * 1000))
    assert outcome is EapOutcome.FAILURE and "new TLS Message Length" in reason


def test_train_without_its_first_fragment(lab: LabPki) -> None:
    auth, ident = started(lab)
    outcome, _, reason = send(auth, ident, bytes([TlsFlags.MORE]) + b"\x16" * 100)
    assert outcome is EapOutcome.FAILURE and "without the L flag" in reason


def test_fragments_longer_than_declared(lab: LabPki) -> None:
    auth, ident = started(lab)
    _, ack, _ = send(auth, ident, first(1200, b"\x16" * 1000))
    outcome, _, reason = send(auth, EapPacket.decode(ack).identifier, b"\x40" + b"\x16" * 1000)
    assert outcome is EapOutcome.FAILURE and "exceed the declared length" in reason


def test_declared_oversized_message_is_refused_at_once(lab: LabPki) -> None:
    auth, ident = started(lab)
    outcome, _, reason = send(auth, ident, first(0xFFFFFFFF, b"\x16" * 100))
    assert outcome is EapOutcome.FAILURE and f"> {MAX_TLS_MESSAGE}" in reason


def test_oversized_fragment_train_memory_and_answers_stay_bounded(lab: LabPki) -> None:
    """A peer that keeps sending fragments within a large declared length: every answer is a
    6-byte ACK (less than it sent), buffered bytes never pass the bound, and the round limit
    ends it before the declared length is reached."""
    auth, ident = started(lab)
    frame = first(MAX_TLS_MESSAGE, b"\x16" * 1000)
    rounds = 0
    for _ in range(MAX_ROUNDS + 1):
        rounds += 1
        outcome, answer, reason = send(auth, ident, frame)
        method = auth.method
        assert method is not None and len(method.inbound._buf) <= MAX_TLS_MESSAGE  # type: ignore[attr-defined]
        if outcome is EapOutcome.FAILURE:
            break
        assert (
            len(answer) < len(frame)
            and EapTlsFrame.decode(EapPacket.decode(answer).type_data).is_ack
        )
        ident = EapPacket.decode(answer).identifier
        frame = bytes([TlsFlags.MORE]) + b"\x16" * 1000
    assert outcome is EapOutcome.FAILURE and "too many EAP-TLS rounds" in reason
    assert rounds == MAX_ROUNDS + 1


def test_peer_bounds_a_malicious_servers_train(lab: LabPki) -> None:
    peer = tls_peer(DEVICE.encode(), lab.peer_config(DEVICE, fragment_size=4096))
    assert peer.receive(EapPacket.request(1, EapType.IDENTITY).encode()) is not None
    assert peer.receive(EapPacket.request(2, EapType.TLS, b"\x20").encode()) is not None
    big = first(MAX_TLS_MESSAGE + 1, b"\x16" * 100)
    assert peer.receive(EapPacket.request(3, EapType.TLS, big).encode()) is None
    assert peer.state is EapPeerState.FAILURE and "fragments" in peer.failure_reason


def test_ack_of_nothing_and_start_in_a_response(lab: LabPki) -> None:
    auth, ident = started(lab)
    outcome, _, reason = send(auth, ident, b"\x00")
    assert outcome is EapOutcome.FAILURE and "acknowledgement of nothing" in reason
    auth, ident = started(lab)
    outcome, _, reason = send(auth, ident, b"\x20")
    assert outcome is EapOutcome.FAILURE and "S flag" in reason


def test_malformed_frames_are_dropped_not_fatal(lab: LabPki) -> None:
    auth, ident = started(lab)
    outcome, send_, reason = send(auth, ident, b"\x80\x00")
    assert outcome is EapOutcome.CONTINUE and send_ == b"" and "malformed" in reason
    assert auth.counters["method_ignored:malformed"] == 1


def test_downgrade_nak_to_psk_is_refused_when_psk_does_not_accept_the_identity(
    lab: LabPki,
) -> None:
    """The EAP layer half of the downgrade defence: after EAP-TLS was proposed, a Nak can only
    move to a method that accepts the identity."""
    from amistack.crypto import seeded_random
    from amistack.eap import EapPeer, EapPskPeer, EapPskServer

    psk = bytes(range(1, 17))

    class StrictPsk(EapPskServer):
        def accepts(self, identity: bytes | None) -> bool:
            return identity != DEVICE.encode()

    rng = seeded_random(3)
    auth = tls_auth(
        lab.server_config({DEVICE.encode()}),
        extra=(lambda: StrictPsk(b"ks", lambda _: psk, rng),),
    )
    peer = EapPeer(DEVICE.encode(), {EapType.PSK: lambda: EapPskPeer(DEVICE.encode(), psk, rng)})
    run = converse(peer, auth)
    assert run.last is not None and run.last.outcome is EapOutcome.FAILURE
    assert "no acceptable method" in run.last.reason and peer.msk is None
