"""Untrusted bytes into the EAP-TLS engines, at every depth of a real conversation: the peer and
the authenticator never raise, answer only with well-formed EAP, never hold more than the
reassembly bound, and never answer a fragment with more bytes than it carried."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.tls_pki import LabPki, tls_auth, tls_peer

from amistack.eap import EapAuthenticator, EapCode, EapPacket, EapPeer, EapStep, EapType
from amistack.eap.tls import MAX_TLS_MESSAGE, EapTlsPeer, EapTlsServer, TlsFlags

DEVICE = b"meter-fuzz"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> LabPki:
    lab = LabPki.create(Path(tmp_path_factory.mktemp("pki")))
    lab.device(DEVICE.decode())
    return lab


def tls_type_data() -> st.SearchStrategy[bytes]:
    flags = st.sampled_from([0, TlsFlags.LENGTH, TlsFlags.MORE, TlsFlags.LENGTH | TlsFlags.MORE,
                             TlsFlags.START, 0xFF])  # fmt: skip
    length = st.integers(0, 0xFFFFFFFF).map(lambda n: n.to_bytes(4, "big"))
    body = st.one_of(st.binary(max_size=60), st.just(b"\x16\x03\x03\x00\x05hello"))
    return st.one_of(
        st.binary(max_size=80),
        st.builds(
            lambda f, n, b: bytes([f]) + (n if f & TlsFlags.LENGTH else b"") + b,
            flags, length, body,
        ),
    )  # fmt: skip


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def advanced(lab: LabPki, depth: int) -> tuple[EapPeer, EapAuthenticator, bytes]:
    """A peer and an authenticator `depth` steps into a real conversation; the last request."""
    peer = tls_peer(DEVICE, lab.peer_config(DEVICE.decode()))
    auth = tls_auth(lab.server_config({DEVICE}))
    send = auth.start()
    for _ in range(depth):
        response = peer.receive(send)
        if response is None:
            break
        send = auth.receive(response).send or send
    return peer, auth, send


@FUZZ
@given(st.lists(tls_type_data(), max_size=6), st.integers(0, 3))
def test_authenticator_never_raises(lab: LabPki, inputs: list[bytes], depth: int) -> None:
    _, auth, send = advanced(lab, depth)
    ident = EapPacket.decode(send).identifier if send else 0
    for data in inputs:
        response = EapPacket.response(ident, EapType.TLS, data).encode()
        step = auth.receive(response)
        assert isinstance(step, EapStep)
        if step.send is not None:
            out = EapPacket.decode(step.send)
            assert out.code is not EapCode.RESPONSE
            ident = out.identifier
        method = auth.method
        if isinstance(method, EapTlsServer):
            assert len(method.inbound._buf) <= MAX_TLS_MESSAGE


@FUZZ
@given(st.lists(tls_type_data(), max_size=6), st.integers(0, 3))
def test_peer_never_raises(lab: LabPki, inputs: list[bytes], depth: int) -> None:
    peer, _, _ = advanced(lab, depth)
    for n, data in enumerate(inputs):
        out = peer.receive(EapPacket.request(100 + n, EapType.TLS, data).encode())
        assert out is None or EapPacket.decode(out).code is EapCode.RESPONSE
        method = peer.method
        if isinstance(method, EapTlsPeer):
            assert len(method.inbound._buf) <= MAX_TLS_MESSAGE
    assert peer.msk is None  # junk never completes an authentication
