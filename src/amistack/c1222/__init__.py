"""ANSI C12.22 (ACSE + EPSEM, EAX' protection) and a C12.19 table subset; see docs/c1222.md.

Modules: `acse` (BER ACSE APDU), `epsem`, `services`, `tables` (C12.19 subset, `TableProvider`),
`security` (EAX' protect/unprotect, key ids, replay window), `segmentation`, `events`,
`endpoint` (`C1222Server` for meters, `C1222Client` for the head-end, sans-IO).
"""

from amistack.c1222.acse import AcseMessage, ApTitle, AuthValue
from amistack.c1222.endpoint import (
    C1222_PORT,
    C1222Client,
    C1222Server,
    EndpointConfig,
    InvocationIdStore,
)
from amistack.c1222.epsem import Epsem, ResponseControl, SecurityMode
from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.events import C1222Event, RequestReceived, RequestTimedOut, ResponseReceived
from amistack.c1222.security import (
    C1222SecurityError,
    KeyLookup,
    SendKey,
    key_id_byte,
    protect,
    ring_key_lookup,
    ring_send_key,
    unprotect,
)
from amistack.c1222.tables import MeterTables, TableProvider

__all__ = [
    "C1222_PORT",
    "AcseMessage",
    "ApTitle",
    "AuthValue",
    "C1222Client",
    "C1222DecodeError",
    "C1222Event",
    "C1222SecurityError",
    "C1222Server",
    "EndpointConfig",
    "Epsem",
    "InvocationIdStore",
    "KeyLookup",
    "MeterTables",
    "RequestReceived",
    "RequestTimedOut",
    "ResponseControl",
    "ResponseReceived",
    "SecurityMode",
    "SendKey",
    "TableProvider",
    "key_id_byte",
    "protect",
    "ring_key_lookup",
    "ring_send_key",
    "unprotect",
]
