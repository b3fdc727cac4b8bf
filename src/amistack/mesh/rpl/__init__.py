"""RPL (RFC 6550): control-message codecs, the data-path headers (RFC 6553, RFC 6554), trickle
(RFC 6206), objective functions OF0 (RFC 6552) and MRHOF (RFC 6719), and the sans-IO node
(docs/mesh-rpl.md)."""

from amistack.mesh.rpl.config import PRESETS, RplConfig
from amistack.mesh.rpl.errors import RplDecodeError, RplRoutingError
from amistack.mesh.rpl.messages import (
    Dao,
    DaoAck,
    Dio,
    Dis,
    DodagConfiguration,
    PrefixInformation,
    RplMessage,
    RplTarget,
    TransitInformation,
    decode_message,
    from_icmpv6,
    to_icmpv6,
)
from amistack.mesh.rpl.node import RplNode
from amistack.mesh.rpl.packet import Packet, Transmission
from amistack.mesh.rpl.srh import RplHopOption, SourceRoutingHeader
from amistack.mesh.rpl.trickle import Trickle, TrickleConfig

__all__ = [
    "PRESETS",
    "Dao",
    "DaoAck",
    "Dio",
    "Dis",
    "DodagConfiguration",
    "Packet",
    "PrefixInformation",
    "RplConfig",
    "RplDecodeError",
    "RplHopOption",
    "RplMessage",
    "RplNode",
    "RplRoutingError",
    "RplTarget",
    "SourceRoutingHeader",
    "TransitInformation",
    "Transmission",
    "Trickle",
    "TrickleConfig",
    "decode_message",
    "from_icmpv6",
    "to_icmpv6",
]
