"""ICMPv6 message framing (RFC 4443 §2.1) and its checksum over the IPv6 pseudo-header
(RFC 4443 §2.3, RFC 8200 §8.1). RPL control messages (RFC 6550 §6) ride in it as type 155."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from amistack.mesh.ipv6 import pseudo_header_checksum

ICMPV6_NEXT_HEADER = 58  # RFC 8200 §8.1: the pseudo-header's Next Header value for ICMPv6
ICMPV6_HEADER_LEN = 4  # Type, Code, Checksum (RFC 4443 §2.1)
IPV6_ADDR_LEN = 16
MAX_ICMPV6_LEN = 1280 - 40  # RFC 4443 §2.4 (c): an ICMPv6 message fits the IPv6 minimum MTU
_HEADER = struct.Struct("!BBH")


class Icmpv6DecodeError(Exception):
    """A malformed ICMPv6 message: where (byte offset) and why. RPL's errors derive from it."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


def checksum(src: bytes, dst: bytes, message: bytes) -> int:
    """The ICMPv6 checksum of `message` (its checksum field zero) from `src` to `dst`
    (RFC 4443 §2.3: one's complement of the one's complement sum of pseudo-header + message)."""
    if len(src) != IPV6_ADDR_LEN or len(dst) != IPV6_ADDR_LEN:
        raise ValueError("IPv6 addresses are 16 bytes")
    return pseudo_header_checksum(src, dst, ICMPV6_NEXT_HEADER, message)


@dataclass(frozen=True)
class Icmpv6Message:
    """One ICMPv6 message: type, code and the body after the checksum."""

    type: int
    code: int
    body: bytes

    def encode(self, src: bytes, dst: bytes) -> bytes:
        """The message with its checksum computed for the `src` -> `dst` IPv6 header."""
        unchecked = _HEADER.pack(self.type, self.code, 0) + self.body
        return _HEADER.pack(self.type, self.code, checksum(src, dst, unchecked)) + self.body

    @classmethod
    def decode(cls, data: bytes, src: bytes, dst: bytes) -> Icmpv6Message:
        """Parse and verify the checksum; raise Icmpv6DecodeError on anything wrong."""
        if len(data) < ICMPV6_HEADER_LEN:
            raise Icmpv6DecodeError(len(data), "shorter than the 4-byte ICMPv6 header")
        if len(data) > MAX_ICMPV6_LEN:
            raise Icmpv6DecodeError(MAX_ICMPV6_LEN, "longer than the IPv6 minimum MTU allows")
        msg_type, code, received = _HEADER.unpack_from(data)
        if checksum(src, dst, data[:2] + b"\x00\x00" + data[4:]) != received:
            raise Icmpv6DecodeError(2, "checksum mismatch")
        return cls(msg_type, code, bytes(data[ICMPV6_HEADER_LEN:]))
