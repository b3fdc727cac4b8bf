"""EAP (RFC 3748) peer and authenticator, sans-IO, with EAP-PSK (RFC 4764) and EAP-TLS.

packet.py is the codec, method.py the interface a method implements, peer.py and
authenticator.py the EAP layer, psk.py the EAP-PSK method, tls.py the EAP-TLS method (RFC 5216,
RFC 9190; import it from `amistack.eap.tls`: it loads OpenSSL, which PSK-only users need not).
"""

from amistack.eap.authenticator import EapAuthenticator, EapOutcome, EapStep
from amistack.eap.method import (
    Decision,
    MethodState,
    PeerMethod,
    PeerMethodFactory,
    ServerMethod,
    ServerMethodFactory,
    ServerMethodStep,
    ServerOutcome,
)
from amistack.eap.packet import EapCode, EapDecodeError, EapPacket, EapType
from amistack.eap.peer import EapPeer, EapPeerState
from amistack.eap.psk import (
    EapPskPeer,
    EapPskServer,
    PskKeys,
    derive_ak_kdk,
    derive_tek_msk_emsk,
)

__all__ = [
    "Decision",
    "EapAuthenticator",
    "EapCode",
    "EapDecodeError",
    "EapOutcome",
    "EapPacket",
    "EapPeer",
    "EapPeerState",
    "EapPskPeer",
    "EapPskServer",
    "EapStep",
    "EapType",
    "MethodState",
    "PeerMethod",
    "PeerMethodFactory",
    "PskKeys",
    "ServerMethod",
    "ServerMethodFactory",
    "ServerMethodStep",
    "ServerOutcome",
    "derive_ak_kdk",
    "derive_tek_msk_emsk",
]
