"""RPL (RFC 6550): control-message codecs, the data-path headers (RFC 6553, RFC 6554), trickle
(RFC 6206), objective functions OF0 (RFC 6552) and MRHOF (RFC 6719), and the sans-IO node."""

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
from amistack.mesh.rpl.srh import RplHopOption, SourceRoutingHeader

__all__ = [
    "Dao",
    "DaoAck",
    "Dio",
    "Dis",
    "DodagConfiguration",
    "PrefixInformation",
    "RplDecodeError",
    "RplHopOption",
    "RplMessage",
    "RplRoutingError",
    "RplTarget",
    "SourceRoutingHeader",
    "TransitInformation",
    "decode_message",
    "from_icmpv6",
    "to_icmpv6",
]
