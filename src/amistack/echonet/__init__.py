"""ECHONET Lite: frames, property maps and device objects (docs/echonet.md)."""

from __future__ import annotations

from amistack.echonet.errors import EchonetDecodeError
from amistack.echonet.frame import Eoj, Esv, Frame, Frame2, Property, decode_any
from amistack.echonet.propmap import decode_propmap, encode_propmap

__all__ = [
    "EchonetDecodeError",
    "Eoj",
    "Esv",
    "Frame",
    "Frame2",
    "Property",
    "decode_any",
    "decode_propmap",
    "encode_propmap",
]
