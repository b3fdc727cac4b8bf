"""EAP-PSK against a live wpa_supplicant 2.10 <-> hostapd 2.10 run, byte for byte, both ways."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.conftest import load_vector

from amistack.crypto import RandomSource
from amistack.eap import (
    EapAuthenticator,
    EapOutcome,
    EapPacket,
    EapPeer,
    EapPeerState,
    EapPskPeer,
    EapPskServer,
    EapType,
    derive_ak_kdk,
    derive_tek_msk_emsk,
)
from amistack.eap.psk import _counter_blocks, compute_mac_p, compute_mac_s, session_id


@pytest.fixture(scope="module")
def v() -> dict[str, Any]:
    data: dict[str, Any] = load_vector("eap_psk_hostapd_transcript.json")
    return data


def h(v: dict[str, Any], key: str) -> bytes:
    return bytes.fromhex(v[key])


def scripted(*chunks: bytes) -> RandomSource:
    """A RandomSource that hands out exactly these byte strings, in order."""
    it: Iterator[bytes] = iter(chunks)

    def rng(n: int) -> bytes:
        chunk = next(it)
        assert len(chunk) == n, f"asked for {n} random bytes, scripted {len(chunk)}"
        return chunk

    return rng


def messages(v: dict[str, Any]) -> list[bytes]:
    return [bytes.fromhex(m["hex"]) for m in v["eap_messages"][1:]]


def test_key_setup(v: dict[str, Any]) -> None:
    ak, kdk = derive_ak_kdk(h(v, "psk"))
    assert ak.hex() == v["ak"]
    assert kdk.hex() == v["kdk"]


def test_session_keys(v: dict[str, Any]) -> None:
    tek, msk, emsk = derive_tek_msk_emsk(h(v, "kdk"), h(v, "rand_p"))
    assert tek.hex() == v["tek"]
    assert msk.hex() == v["msk"]
    assert emsk.hex() == v["emsk"]


def test_macs_and_session_id(v: dict[str, Any]) -> None:
    id_p = v["id_p_ascii"].encode()
    mac_p = compute_mac_p(h(v, "ak"), id_p, h(v, "id_s"), h(v, "rand_s"), h(v, "rand_p"))
    assert mac_p.hex() == v["mac_p"]
    assert compute_mac_s(h(v, "ak"), h(v, "id_s"), h(v, "rand_p")).hex() == v["mac_s"]
    assert session_id(h(v, "rand_p"), h(v, "rand_s")).hex() == v["session_id"]


@given(st.binary(min_size=16, max_size=16), st.integers(1, 12), st.integers(0, 12))
def test_counter_blocks_are_the_definition(x: bytes, first: int, more: int) -> None:
    # RFC 4764 §3.1/§3.2: block i is x XOR c_i, c_i the integer i on 128 bits, per block
    last = first + more
    per_block = [(int.from_bytes(x, "big") ^ i).to_bytes(16, "big") for i in range(first, last + 1)]
    assert _counter_blocks(x, first, last) == b"".join(per_block)


def test_psk_must_be_16_bytes() -> None:
    with pytest.raises(ValueError, match="16-byte"):
        derive_ak_kdk(bytes(15))
    with pytest.raises(ValueError):
        EapPskPeer(b"p", bytes(32), scripted())


def test_peer_reproduces_wpa_supplicant(v: dict[str, Any]) -> None:
    """Feed hostapd's requests to our peer; its answers must be wpa_supplicant's bytes."""
    id_p = v["id_p_ascii"].encode()
    psk, rand_p = h(v, "psk"), h(v, "rand_p")
    peer = EapPeer(id_p, {EapType.PSK: lambda: EapPskPeer(id_p, psk, scripted(rand_p))})
    resp_identity, req1, resp2, req3, resp4, success = messages(v)
    # The transcript records the identity response only; the request had the same identifier.
    req_identity = EapPacket.request(resp_identity[1], EapType.IDENTITY).encode()
    assert peer.receive(req_identity) == resp_identity
    assert peer.receive(req1) == resp2
    assert peer.receive(req3) == resp4
    assert peer.state is EapPeerState.METHOD
    assert peer.receive(success) is None
    assert peer.state is EapPeerState.SUCCESS
    assert peer.msk is not None and peer.msk.hex() == v["msk"]
    assert peer.emsk is not None and peer.emsk.hex() == v["emsk"]
    assert peer.session_id is not None and peer.session_id.hex() == v["session_id"]


def test_server_reproduces_hostapd(v: dict[str, Any]) -> None:
    """Feed wpa_supplicant's responses to our authenticator; it must send hostapd's bytes."""
    id_p = v["id_p_ascii"].encode()
    psk, rand_s = h(v, "psk"), h(v, "rand_s")
    looked_up: list[bytes] = []

    def lookup(peer: bytes) -> bytes | None:
        looked_up.append(peer)
        return psk if peer == id_p else None

    resp_identity, req1, resp2, req3, resp4, success = messages(v)
    auth = EapAuthenticator(
        [lambda: EapPskServer(h(v, "id_s"), lookup, scripted(rand_s))],
        rng=scripted(),
        first_identifier=resp_identity[1],
    )
    assert auth.start() == EapPacket.request(resp_identity[1], EapType.IDENTITY).encode()
    step = auth.receive(resp_identity)
    assert (step.outcome, step.send) == (EapOutcome.CONTINUE, req1)
    step = auth.receive(resp2)
    assert (step.outcome, step.send) == (EapOutcome.CONTINUE, req3)
    assert looked_up == [id_p]
    step = auth.receive(resp4)
    assert step.outcome is EapOutcome.SUCCESS
    assert step.send == success
    assert step.msk is not None and step.msk.hex() == v["msk"]
    assert step.emsk is not None and step.emsk.hex() == v["emsk"]
    assert step.session_id is not None and step.session_id.hex() == v["session_id"]
    assert step.peer_id == id_p
