"""Shared pieces of the RADIUS tests: an EAP-PSK server factory and a peer factory."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from amistack.crypto.rand import RandomSource
from amistack.eap.method import ServerMethodFactory
from amistack.eap.packet import EapType
from amistack.eap.peer import EapPeer
from amistack.eap.psk import EapPskPeer, EapPskServer

PSK = bytes.fromhex("0123456789abcdef0123456789abcdef")
PEER = b"meter-1@example.com"


def psk_methods(
    rng: RandomSource, psks: dict[bytes, bytes] | None = None
) -> Callable[[], Sequence[ServerMethodFactory]]:
    table = psks if psks is not None else {PEER: PSK}
    return lambda: [lambda: EapPskServer(b"amistack-ks", table.get, rng)]


def psk_peer(rng: RandomSource, psk: bytes = PSK, identity: bytes = PEER) -> EapPeer:
    return EapPeer(identity, {EapType.PSK: lambda: EapPskPeer(identity, psk, rng)})
