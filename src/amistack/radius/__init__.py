"""amistack.radius — EAP over RADIUS (RFC 2865, RFC 3579, RFC 2548 MS-MPPE keys).

`RadiusEapServer` runs our EAP methods for existing NASes (802.1X switches, other PAAs);
`RadiusPassthroughBackend` lets our PAA hand EAP to an existing RADIUS server. Both are sans-IO.
"""

from amistack.radius.client import RadiusPassthroughBackend
from amistack.radius.events import AccessAccepted, AccessRejected, RadiusEvent
from amistack.radius.packet import RadiusAttr, RadiusCode, RadiusDecodeError, RadiusPacket
from amistack.radius.server import RadiusEapServer

__all__ = [
    "AccessAccepted",
    "AccessRejected",
    "RadiusAttr",
    "RadiusCode",
    "RadiusDecodeError",
    "RadiusEapServer",
    "RadiusEvent",
    "RadiusPacket",
    "RadiusPassthroughBackend",
]
