"""EAP-TLS (RFC 5216, RFC 9190): framing, fragmentation, the handshake through the EAP layer,
and the keys both ends derive."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from OpenSSL import SSL
from tests.tls_pki import NOW, LabPki, converse, tls_auth, tls_peer

from amistack.crypto import seeded_random
from amistack.eap import EapAuthenticator, EapOutcome, EapPacket, EapPeerState, EapType
from amistack.eap.tls import (
    ACK,
    EapTlsDecodeError,
    EapTlsFrame,
    EapTlsPeer,
    EapTlsServer,
    Fragmenter,
    Reassembly,
    TlsFlags,
)

DEVICE = b"meter-tls-1"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> LabPki:
    lab = LabPki.create(tmp_path_factory.mktemp("pki"))
    lab.device(DEVICE.decode())
    return lab


# -- framing -----------------------------------------------------------------------------------


def test_frame_codec_known_bytes() -> None:
    assert EapTlsFrame.decode(b"\x20").flags == TlsFlags.START
    frame = EapTlsFrame.decode(b"\xc0\x00\x00\x01\x00" + b"x" * 10)
    assert frame.flags == TlsFlags.LENGTH | TlsFlags.MORE and frame.message_length == 256
    assert frame.encode() == b"\xc0\x00\x00\x01\x00" + b"x" * 10
    assert EapTlsFrame.decode(b"\x00").is_ack and ACK.encode() == b"\x00"
    assert EapTlsFrame.decode(b"\x1f").is_ack  # reserved bits are ignored on receipt (§3.1)


@pytest.mark.parametrize(
    "data", [b"", b"\x80", b"\x80\x00\x00\x01", b"\x80\x00\x00\x00\x01" + b"ab"]
)
def test_frame_decode_errors_are_typed(data: bytes) -> None:
    with pytest.raises(EapTlsDecodeError):
        EapTlsFrame.decode(data)


@given(st.binary(max_size=64))
def test_frame_decode_fuzz(data: bytes) -> None:
    try:
        frame = EapTlsFrame.decode(data)
    except EapTlsDecodeError as exc:
        assert 0 <= exc.offset <= len(data)
        return
    assert EapTlsFrame.decode(frame.encode()) == frame


@given(st.binary(max_size=5000), st.integers(1, 1500))
def test_fragment_and_reassemble_round_trip(message: bytes, size: int) -> None:
    out, back = Fragmenter(size), Reassembly()
    frames = [out.first(message)]
    while out.in_progress:
        frames.append(out.next())
    assert all(len(f.data) <= size for f in frames)
    if len(frames) > 1:
        assert frames[0].flags & TlsFlags.LENGTH and frames[0].message_length == len(message)
    assert not frames[-1].flags & TlsFlags.MORE
    results = [back.add(EapTlsFrame.decode(f.encode())) for f in frames]
    assert results[:-1] == [None] * (len(frames) - 1)
    assert results[-1] == message


@given(st.lists(st.binary(max_size=40), max_size=8))
def test_reassembly_fuzz_only_typed_errors_and_bounded(raw: list[bytes]) -> None:
    back = Reassembly(max_message=100)
    for data in raw:
        try:
            got = back.add(EapTlsFrame.decode(data))
        except EapTlsDecodeError:
            return
        assert got is None or len(got) <= 100
        assert len(back._buf) <= 100


# -- the handshake through the EAP layer -----------------------------------------------------


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_tls_authenticates_and_both_sides_derive_the_same_keys(lab: LabPki, version: str) -> None:
    peer = tls_peer(DEVICE, lab.peer_config(DEVICE.decode(), max_version=version))
    auth = tls_auth(lab.server_config({DEVICE}))
    run = converse(peer, auth)
    assert run.last is not None and run.last.outcome is EapOutcome.SUCCESS, run.last
    assert peer.state is EapPeerState.SUCCESS
    assert run.last.peer_id == DEVICE  # from the certificate
    assert run.last.msk == peer.msk and peer.msk is not None and len(peer.msk) == 64
    assert run.last.emsk == peer.emsk and peer.emsk is not None and len(peer.emsk) == 64
    assert run.last.session_id == peer.session_id and peer.session_id is not None
    assert peer.session_id[0] == EapType.TLS and len(peer.session_id) == 65  # both versions
    server = auth.method
    assert isinstance(server, EapTlsServer) and server.conn is not None
    assert server.conn.get_protocol_version_name() == f"TLSv{version}"


def test_tls12_msk_is_the_rfc5216_prf_of_the_master_secret(lab: LabPki) -> None:
    """RFC 5216 §2.3 computed here from the master secret with our own TLS 1.2 PRF (RFC 5246
    §5), independently of OpenSSL's exporter the method uses."""
    peer = tls_peer(DEVICE, lab.peer_config(DEVICE.decode(), max_version="1.2"))
    auth = tls_auth(lab.server_config({DEVICE}))
    run = converse(peer, auth)
    assert run.last is not None and run.last.outcome is EapOutcome.SUCCESS
    method = peer.method
    assert isinstance(method, EapTlsPeer) and method.conn is not None
    conn = method.conn
    digest = hashlib.sha384 if "SHA384" in (conn.get_cipher_name() or "") else hashlib.sha256
    seed = b"client EAP encryption" + conn.client_random() + conn.server_random()  # type: ignore[operator]
    secret = conn.master_key()
    assert secret is not None
    out, a = b"", seed
    while len(out) < 128:  # P_hash (RFC 5246 §5)
        a = hmac.new(secret, a, digest).digest()
        out += hmac.new(secret, a + seed, digest).digest()
    assert peer.msk == out[:64] and peer.emsk == out[64:128]
    assert peer.session_id == bytes([13]) + conn.client_random() + conn.server_random()  # type: ignore[operator]


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_small_fragments_are_acknowledged_one_by_one(lab: LabPki, version: str) -> None:
    peer = tls_peer(
        DEVICE, lab.peer_config(DEVICE.decode(), max_version=version, fragment_size=200)
    )
    auth = tls_auth(lab.server_config({DEVICE}, fragment_size=150))
    run = converse(peer, auth)
    assert run.last is not None and run.last.outcome is EapOutcome.SUCCESS
    assert run.last.msk == peer.msk
    frames = [EapPacket.decode(w) for w in run.wire]
    tls = [EapTlsFrame.decode(p.type_data) for p in frames if p.type == EapType.TLS]
    assert any(f.flags & TlsFlags.MORE for f in tls)
    assert sum(1 for f in tls if f.is_ack) >= 4  # fragments acknowledged both ways
    assert all(len(f.data) <= 200 for f in tls)


def test_tls13_peer_waits_for_the_commitment_message(lab: LabPki) -> None:
    """RFC 9190 §2.5: an EAP-Success before the 0x00 application data is not accepted."""
    peer = tls_peer(DEVICE, lab.peer_config(DEVICE.decode(), max_version="1.3"))
    auth = tls_auth(lab.server_config({DEVICE}))
    sent: list[bytes] = []

    def early_success(n: int, response: bytes) -> bytes | None:
        sent.append(response)
        method = peer.method
        if isinstance(method, EapTlsPeer) and method.keys is None and n >= 2:
            # the peer has sent its Finished: forge an EAP-Success instead of the commitment
            assert (
                peer.receive(EapPacket.success(EapPacket.decode(response).identifier).encode())
                is None
            )
            return None
        return response

    converse(peer, auth, tamper=early_success)
    assert peer.state is not EapPeerState.SUCCESS and peer.msk is None
    assert peer.counters["early_success"] == 1


class CloseNotifyServer(EapTlsServer):
    """A server of the drafts before RFC 9190: close_notify where the commitment goes."""

    def _commit(self, conn: SSL.Connection) -> None:
        conn.shutdown()


class WrongCommitmentServer(EapTlsServer):
    def _commit(self, conn: SSL.Connection) -> None:
        conn.send(b"\x01")


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        (CloseNotifyServer, "close_notify instead of the commitment message"),
        (WrongCommitmentServer, "other than the commitment message"),
    ],
)
def test_tls13_success_needs_exactly_the_commitment_message(
    lab: LabPki, server: type[EapTlsServer], reason: str
) -> None:
    peer = tls_peer(DEVICE, lab.peer_config(DEVICE.decode(), max_version="1.3"))
    config = lab.server_config({DEVICE})
    auth = EapAuthenticator([lambda: server(config, lambda: NOW)], seeded_random(5), 0)
    converse(peer, auth)
    method = peer.method
    assert isinstance(method, EapTlsPeer) and reason in method.failure_reason
    assert peer.state is EapPeerState.FAILURE and peer.msk is None


def test_server_method_is_cheap_until_offered(lab: LabPki) -> None:
    config = lab.server_config(set())
    method = EapTlsServer(config, lambda: 0.0)
    assert method.conn is None and not method.accepts(DEVICE) and not method.accepts(None)
    assert EapTlsServer(lab.server_config({DEVICE}), lambda: 0.0).accepts(DEVICE)


def test_pki_issue_device_certificate(lab: LabPki, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from amistack.eap.tls import device_id_of

    cert, key = lab.device(DEVICE.decode())
    assert device_id_of(cert) == DEVICE
    assert isinstance(key.curve, ec.SECP256R1)
    eku = cert.extensions.get_extension_for_class(__import__("cryptography").x509.ExtendedKeyUsage)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku.value
