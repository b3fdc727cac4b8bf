"""RADIUS packets (RFC 2865 §3) as carried for EAP (RFC 3579): a strict decoder and signed builders.

Our own decoder walks the attributes so that garbage raises exactly one `RadiusDecodeError` with
an offset; pyrad (with the dictionary shipped below, no external files) builds and signs packets
and checks the Request/Response and Message-Authenticators, so the MD5/HMAC rules come from a
library many servers already interoperate with.

Binary values always travel under numeric keys in pyrad: its "octets" encoder would rewrite a
value that happens to start with b"0x", which an EAP fragment can.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from pyrad.dictionary import Dictionary
from pyrad.packet import AuthPacket, Packet

HEADER_LEN = 20
MAX_PACKET_LEN = 4096  # RFC 2865 §3
MAX_ATTR_VALUE = 253  # RFC 2865 §5: Length is one octet and counts the 2-octet header
AUTHENTICATOR_LEN = 16


class RadiusCode(IntEnum):
    """Packet codes, RFC 2865 §3 (and §4 for the access packets)."""

    ACCESS_REQUEST = 1
    ACCESS_ACCEPT = 2
    ACCESS_REJECT = 3
    ACCESS_CHALLENGE = 11


class RadiusAttr(IntEnum):
    """Attribute types, RFC 2865 §5, RFC 2869 §5, RFC 3579 §3."""

    USER_NAME = 1  # RFC 2865 §5.1
    NAS_IP_ADDRESS = 4  # RFC 2865 §5.4
    FRAMED_MTU = 12  # RFC 2865 §5.12
    REPLY_MESSAGE = 18  # RFC 2865 §5.18
    STATE = 24  # RFC 2865 §5.24
    CLASS = 25  # RFC 2865 §5.25
    VENDOR_SPECIFIC = 26  # RFC 2865 §5.26
    SESSION_TIMEOUT = 27  # RFC 2865 §5.27
    CALLED_STATION_ID = 30  # RFC 2865 §5.30
    CALLING_STATION_ID = 31  # RFC 2865 §5.31
    NAS_IDENTIFIER = 32  # RFC 2865 §5.32
    PROXY_STATE = 33  # RFC 2865 §5.33
    NAS_PORT_TYPE = 61  # RFC 2865 §5.41
    CONNECT_INFO = 77  # RFC 2869 §5.11
    EAP_MESSAGE = 79  # RFC 3579 §3.1
    MESSAGE_AUTHENTICATOR = 80  # RFC 3579 §3.2 (RFC 2869 §5.14)


VENDOR_MICROSOFT = 311  # RFC 2548 §2


class MsAttr(IntEnum):
    """Microsoft vendor-specific attributes, RFC 2548 §2.4."""

    MS_MPPE_SEND_KEY = 16  # RFC 2548 §2.4.2
    MS_MPPE_RECV_KEY = 17  # RFC 2548 §2.4.3


AttrKey = int | tuple[int, int]
"""An attribute type, or (vendor id, vendor type) for a vendor-specific sub-attribute."""

# The part of the FreeRADIUS/pyrad dictionary this package speaks; shipped as text so that
# nothing depends on a file path at run time.
DICTIONARY_TEXT = """
ATTRIBUTE User-Name 1 string
ATTRIBUTE User-Password 2 string
ATTRIBUTE NAS-IP-Address 4 ipaddr
ATTRIBUTE NAS-Port 5 integer
ATTRIBUTE Service-Type 6 integer
ATTRIBUTE Framed-MTU 12 integer
ATTRIBUTE Reply-Message 18 string
ATTRIBUTE State 24 octets
ATTRIBUTE Class 25 octets
ATTRIBUTE Vendor-Specific 26 octets
ATTRIBUTE Session-Timeout 27 integer
ATTRIBUTE Idle-Timeout 28 integer
ATTRIBUTE Called-Station-Id 30 string
ATTRIBUTE Calling-Station-Id 31 string
ATTRIBUTE NAS-Identifier 32 string
ATTRIBUTE Proxy-State 33 octets
ATTRIBUTE Acct-Session-Id 44 string
ATTRIBUTE Event-Timestamp 55 integer
ATTRIBUTE NAS-Port-Type 61 integer
ATTRIBUTE Connect-Info 77 string
ATTRIBUTE EAP-Message 79 octets
ATTRIBUTE Message-Authenticator 80 octets
ATTRIBUTE EAP-Key-Name 102 octets
VENDOR Microsoft 311
BEGIN-VENDOR Microsoft
ATTRIBUTE MS-MPPE-Send-Key 16 octets
ATTRIBUTE MS-MPPE-Recv-Key 17 octets
END-VENDOR Microsoft
"""


@functools.cache
def radius_dictionary() -> Dictionary:
    """The pyrad dictionary of the attributes above (parsed once; it is never mutated)."""
    return Dictionary(io.StringIO(DICTIONARY_TEXT))


def attribute_name(key: AttrKey) -> str:
    """A readable name for logs: the dictionary name, or the number."""
    index = radius_dictionary().attrindex
    return str(index.GetBackward(key)) if index.HasBackward(key) else str(key)


class RadiusDecodeError(Exception):
    """A RADIUS datagram that cannot be decoded; `offset` is where decoding stopped."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"{reason} (at offset {offset})")
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True)
class RadiusPacket:
    """One RADIUS packet as on the wire: header fields and the attributes in their order.

    Vendor-Specific attributes in the RFC 2865 §5.26 form are split into (vendor, type) keys;
    any other Vendor-Specific value stays raw under type 26.
    """

    code: int
    identifier: int
    authenticator: bytes
    attributes: tuple[tuple[AttrKey, bytes], ...] = ()

    @classmethod
    def decode(cls, data: bytes) -> RadiusPacket:
        if len(data) < HEADER_LEN:
            raise RadiusDecodeError(0, f"packet shorter than the {HEADER_LEN}-octet header")
        code, identifier, length = struct.unpack_from("!BBH", data)
        if length < HEADER_LEN or length > MAX_PACKET_LEN:
            raise RadiusDecodeError(2, f"invalid Length {length}")
        if length > len(data):
            raise RadiusDecodeError(2, f"Length {length} exceeds the {len(data)}-octet datagram")
        # Octets past Length are padding (RFC 2865 §3).
        attrs: list[tuple[AttrKey, bytes]] = []
        pos = HEADER_LEN
        while pos < length:
            if length - pos < 2:
                raise RadiusDecodeError(pos, "truncated attribute header")
            atype, alen = data[pos], data[pos + 1]
            if alen < 2 or pos + alen > length:
                raise RadiusDecodeError(pos + 1, f"invalid attribute length {alen}")
            value = bytes(data[pos + 2 : pos + alen])
            if atype == RadiusAttr.VENDOR_SPECIFIC:
                attrs.extend(_split_vendor(value))
            else:
                attrs.append((atype, value))
            pos += alen
        return cls(code, identifier, bytes(data[4:HEADER_LEN]), tuple(attrs))

    def encode(self) -> bytes:
        """The packet exactly as its fields say (no authenticator is recomputed)."""
        body = b"".join(_encode_attribute(k, v) for k, v in self.attributes)
        if HEADER_LEN + len(body) > MAX_PACKET_LEN:
            raise ValueError("RADIUS packet longer than 4096 octets")
        header = struct.pack("!BBH", self.code, self.identifier, HEADER_LEN + len(body))
        return header + self.authenticator + body

    def get(self, key: AttrKey) -> list[bytes]:
        return [v for k, v in self.attributes if k == key]

    def first(self, key: AttrKey) -> bytes | None:
        return next((v for k, v in self.attributes if k == key), None)

    def eap_message(self) -> bytes | None:
        """The EAP packet reassembled from every EAP-Message, in order (RFC 3579 §3.1)."""
        parts = self.get(RadiusAttr.EAP_MESSAGE)
        return b"".join(parts) if parts else None


def _split_vendor(value: bytes) -> list[tuple[AttrKey, bytes]]:
    if len(value) < 6:
        return [(RadiusAttr.VENDOR_SPECIFIC, value)]
    vendor = int.from_bytes(value[:4], "big")
    subs: list[tuple[AttrKey, bytes]] = []
    pos = 4
    while pos < len(value):
        if len(value) - pos < 2 or value[pos + 1] < 2 or pos + value[pos + 1] > len(value):
            return [(RadiusAttr.VENDOR_SPECIFIC, value)]
        subs.append(((vendor, value[pos]), value[pos + 2 : pos + value[pos + 1]]))
        pos += value[pos + 1]
    return subs


def _encode_attribute(key: AttrKey, value: bytes) -> bytes:
    if isinstance(key, tuple):
        vendor, vtype = key
        inner = struct.pack("!BB", vtype, len(value) + 2) + value
        key, value = RadiusAttr.VENDOR_SPECIFIC, struct.pack("!L", vendor) + inner
    if len(value) > MAX_ATTR_VALUE:
        raise ValueError(f"attribute {attribute_name(key)} value of {len(value)} octets")
    return struct.pack("!BB", key, len(value) + 2) + value


def eap_message_attributes(eap: bytes) -> list[tuple[AttrKey, bytes]]:
    """An EAP packet split into 253-octet EAP-Message attributes (RFC 3579 §3.1)."""
    if not eap:
        # EAP-Start: an EAP-Message with no data (RFC 3579 §2.1).
        return [(RadiusAttr.EAP_MESSAGE, b"")]
    return [
        (RadiusAttr.EAP_MESSAGE, eap[i : i + MAX_ATTR_VALUE])
        for i in range(0, len(eap), MAX_ATTR_VALUE)
    ]


def _pyrad_packet(
    code: int,
    identifier: int,
    authenticator: bytes,
    attributes: Iterable[tuple[AttrKey, bytes]],
    secret: bytes,
) -> AuthPacket:
    pkt = AuthPacket(
        code=code,
        id=identifier,
        secret=secret,
        authenticator=authenticator,
        dict=radius_dictionary(),
    )
    # RFC 3579 §3.2 / BlastRADIUS: Message-Authenticator in every packet, placed first.
    pkt.add_message_authenticator()
    for key, value in attributes:
        if key == RadiusAttr.MESSAGE_AUTHENTICATOR:
            continue
        values: list[bytes] = pkt.setdefault(key, [])
        values.append(value)
    return pkt


def build_request(
    identifier: int,
    authenticator: bytes,
    attributes: Sequence[tuple[AttrKey, bytes]],
    secret: bytes,
) -> bytes:
    """An Access-Request with a Message-Authenticator; `authenticator` from the caller's RNG."""
    if len(authenticator) != AUTHENTICATOR_LEN:
        raise ValueError("the Request Authenticator is 16 octets")
    pkt = _pyrad_packet(RadiusCode.ACCESS_REQUEST, identifier, authenticator, attributes, secret)
    raw: bytes = pkt.RequestPacket()
    return _checked_length(raw)


def build_reply(
    code: RadiusCode,
    request: RadiusPacket,
    attributes: Sequence[tuple[AttrKey, bytes]],
    secret: bytes,
) -> bytes:
    """An answer to `request`: Response Authenticator and Message-Authenticator (RFC 3579 §3.2).

    Proxy-State attributes of the request are copied in order (RFC 2865 §5.33).
    """
    proxy = [(k, v) for k, v in request.attributes if k == RadiusAttr.PROXY_STATE]
    pkt = _pyrad_packet(
        code, request.identifier, request.authenticator, [*attributes, *proxy], secret
    )
    pkt._request_code = RadiusCode.ACCESS_REQUEST
    raw: bytes = pkt.ReplyPacket()
    return _checked_length(raw)


def _checked_length(raw: bytes) -> bytes:
    if len(raw) > MAX_PACKET_LEN:
        raise ValueError(f"RADIUS packet of {len(raw)} octets exceeds 4096")
    return raw


def _pyrad_decoded(raw: bytes, secret: bytes) -> Packet:
    return Packet(secret=secret, dict=radius_dictionary(), packet=raw)


def has_single_message_authenticator(packet: RadiusPacket) -> bool:
    values = packet.get(RadiusAttr.MESSAGE_AUTHENTICATOR)
    return len(values) == 1 and len(values[0]) == AUTHENTICATOR_LEN


def verify_request(raw: bytes, packet: RadiusPacket, secret: bytes) -> bool:
    """Message-Authenticator of an Access-Request (RFC 3579 §3.2); False when absent or wrong."""
    if not has_single_message_authenticator(packet):
        return False
    try:
        pkt = _pyrad_decoded(raw, secret)
        return bool(pkt.verify_message_authenticator())
    except Exception:  # pyrad raises bare Exception for its own inconsistencies
        return False


def verify_reply(
    raw: bytes,
    packet: RadiusPacket,
    request_raw: bytes,
    secret: bytes,
) -> bool:
    """Response Authenticator (RFC 2865 §3) and Message-Authenticator (RFC 3579 §3.2) of an
    answer to the Access-Request `request_raw`; the Message-Authenticator is required."""
    if not has_single_message_authenticator(packet):
        return False
    try:
        request = AuthPacket(
            secret=secret, dict=radius_dictionary(), packet=request_raw, id=packet.identifier
        )
        reply = _pyrad_decoded(raw, secret)
        return bool(request.VerifyReply(reply, enforce_ma=True))
    except Exception:  # pyrad raises bare Exception for its own inconsistencies
        return False


def response_authenticator(raw_reply: bytes, request_authenticator: bytes, secret: bytes) -> bytes:
    """MD5(Code+ID+Length+RequestAuth+Attributes+Secret), RFC 2865 §3 — for tests and logs."""
    return hashlib.md5(
        raw_reply[:4] + request_authenticator + raw_reply[HEADER_LEN:] + secret
    ).digest()


def message_authenticator(raw: bytes, vector: bytes, secret: bytes) -> bytes:
    """HMAC-MD5 over the packet with the Authenticator field replaced by `vector` and the
    Message-Authenticator value zeroed (RFC 3579 §3.2); an independent check of pyrad."""
    RadiusPacket.decode(raw)  # well-formed, or RadiusDecodeError
    length = int.from_bytes(raw[2:4], "big")
    buf = bytearray(raw[:length])
    buf[4:HEADER_LEN] = vector
    pos = HEADER_LEN
    while pos < length:
        if buf[pos] == RadiusAttr.MESSAGE_AUTHENTICATOR:
            buf[pos + 2 : pos + buf[pos + 1]] = bytes(buf[pos + 1] - 2)
        pos += buf[pos + 1]
    return hmac.new(secret, bytes(buf), "md5").digest()
