"""The C12.22 Registration service (ANSI C12.22-2008 §5.3.2.4.10; IEEE 1703-2012 same clause).

A C12.22 node registers with its C12.22 relay; the relay keeps ApTitle -> native address and
passes the registration on to its master relay, whose answer comes back through it:

    <register>   ::= 27 <node-type> <connection-type> <device-class> <ap-title>
                     <electronic-serial-number> <native-address-length> <native-address>
                     <registration-period> [<my-domain-pattern>]
    <register-r> ::= <ok> <rel-ap-title> <reg-delay> <reg-period> <reg-info>
                   | <err> | <sns> | <bsy> | <isss> ...

- <node-type>, <connection-type>, <reg-info>: bit flags (`NodeType`, `ConnectionType`,
  `RegInfo`); bit 7 of <node-type> says a <my-domain-pattern> (a length byte and that many
  octets) ends the request.
- <device-class>: 4 octets, the node's ED class (as in the EPSEM's <ed-class>).
- <ap-title>, <electronic-serial-number>, <rel-ap-title>: a <universal-id> element
  (06 <length> <OID>) or a relative one (0D, or 80 as the ACSE's relative titles, <length>
  <relative OID>); this codec writes the universal (absolute) form, which every reader agrees on.
- <native-address-length>: one octet; for C12.22 over UDP/IP amistack's native address is the
  node's IP address and UDP port (`native_address`: 16 + 2 octets for IPv6, 4 + 2 for IPv4).
- <registration-period>, <reg-period>: 24-bit seconds (how long the registration lasts; the
  node registers again before it ends); <reg-delay>: 16-bit seconds, the longest random delay a
  node waits before registering after a restart.

Multi-byte numbers are big-endian (C12.22 §5.3.4). The field layout follows the standard's
grammar as the ICSNPP C12.22 parser (Idaho National Laboratory) reads it; Wireshark 4.0's
dissector names the service only by its code. Decoding untrusted octets raises only
`C1222DecodeError` with the offset and the reason.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntFlag
from typing import ClassVar

from amistack.c1222 import ber
from amistack.c1222.acse import TAG_OID, TAG_RELATIVE_OID, ApTitle
from amistack.c1222.epsem import ED_CLASS_LEN
from amistack.c1222.errors import C1222DecodeError

__all__ = [
    "REGISTRATION",
    "ConnectionType",
    "NodeType",
    "RegInfo",
    "Registration",
    "RegistrationResult",
    "grant",
    "native_address",
    "parse_native_address",
]

REGISTRATION = 0x27  # C12.22 §5.3.2.4.10: the <register> service code
TAG_RELATIVE_UID = 0x0D  # C12.22 §5.2.3 <relative-uid-element> (ASN.1 RELATIVE-OID)
MAX_PERIOD = 0xFFFFFF  # <registration-period>, <reg-period>: 24 bits of seconds
MAX_DELAY = 0xFFFF  # <reg-delay>: 16 bits of seconds
MAX_NATIVE_ADDRESS = 0xFF  # <native-address-length> is one octet
# What a master relay grants (amistack's policy): at least a minute, so a node cannot make its
# relays and the master relay busy with registrations; at most a day, so a binding of a node
# that went away does not outlive it by long.
MIN_GRANTED_PERIOD = 60
MAX_GRANTED_PERIOD = 86_400


class NodeType(IntFlag):
    """<node-type> (C12.22 §5.3.2.4.10), bit 0 first."""

    RELAY = 0x01
    MASTER_RELAY = 0x02
    HOST = 0x04
    NOTIFICATION_HOST = 0x08
    AUTHENTICATION_HOST = 0x10
    END_DEVICE = 0x20
    MY_DOMAIN_PATTERN = 0x80  # a <my-domain-pattern> follows the registration period


class ConnectionType(IntFlag):
    """<connection-type> (C12.22 §5.3.2.4.10), bit 0 first."""

    BROADCAST_AND_MULTICAST = 0x01
    MESSAGE_ACCEPTANCE_WINDOW = 0x02
    PLAYBACK_REJECTION = 0x04
    CONNECTIONLESS_MODE = 0x10
    ACCEPT_CONNECTIONLESS = 0x20
    CONNECTION_MODE = 0x40
    ACCEPT_CONNECTIONS = 0x80


class RegInfo(IntFlag):
    """<reg-info> of the answer (C12.22 §5.3.2.4.10): bit 0 says direct messaging is
    available; bits 1..7 are the connection modes granted, as `ConnectionType`'s bits."""

    DIRECT_MESSAGING_AVAILABLE = 0x01


CONNECTIONLESS = ConnectionType.CONNECTIONLESS_MODE | ConnectionType.ACCEPT_CONNECTIONLESS
GRANTED_CONNECTIONLESS = RegInfo(CONNECTIONLESS)  # <reg-info>: connectionless mode granted


def native_address(host: str, port: int) -> bytes:
    """The native address of a node reached over UDP/IP: its address octets and its port."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError("a UDP port is 16 bits")
    return ipaddress.ip_address(host.split("%", 1)[0]).packed + port.to_bytes(2, "big")


def parse_native_address(data: bytes) -> tuple[str, int] | None:
    """The (host, port) of a UDP/IP native address, None if it is not one."""
    if len(data) not in (4 + 2, 16 + 2):
        return None
    return str(ipaddress.ip_address(data[:-2])), int.from_bytes(data[-2:], "big")


def _uid(title: ApTitle) -> bytes:
    return title.encode_choice()  # absolute: 06 <length> <OID>


def _read_uid(data: bytes, pos: int, what: str) -> tuple[ApTitle, int]:
    """The universal or relative id element at `pos` and the offset after it."""
    tag, start, end = ber.read_tlv(data, pos)
    if start == end:
        raise C1222DecodeError(pos, f"{what}: empty id")
    if tag == TAG_OID:
        return ApTitle(ber.decode_oid(data[start:end], start)), end  # valid arcs by construction
    if tag in (TAG_RELATIVE_UID, TAG_RELATIVE_OID):
        return ApTitle(ber.decode_relative_oid(data[start:end], start), relative=True), end
    raise C1222DecodeError(pos, f"{what}: tag {tag:#04x} is no universal or relative id")


def _need(data: bytes, pos: int, n: int, what: str) -> None:
    if len(data) < pos + n:
        raise C1222DecodeError(len(data), f"{what}: need {n} bytes at offset {pos}")


@dataclass(frozen=True)
class Registration:
    """<register>: the request a node sends its relay (module docstring)."""

    ap_title: ApTitle
    native_address: bytes
    registration_period: int
    node_type: NodeType = NodeType.END_DEVICE
    connection_type: ConnectionType = CONNECTIONLESS
    device_class: bytes = b"AMST"
    serial_number: ApTitle | None = None  # None: the ap-title names the node (absolute form)
    my_domain_pattern: bytes | None = None
    code: ClassVar[int] = REGISTRATION

    def __post_init__(self) -> None:
        # titles are kept (and written) in their absolute form: the same node either way
        object.__setattr__(self, "ap_title", self.ap_title.absolute())
        if self.serial_number is not None:
            object.__setattr__(self, "serial_number", self.serial_number.absolute())
        if len(self.device_class) != ED_CLASS_LEN:
            raise ValueError(f"device class is {ED_CLASS_LEN} bytes")
        if not 1 <= len(self.native_address) <= MAX_NATIVE_ADDRESS:
            raise ValueError("native address is 1..255 bytes")
        if not 0 <= self.registration_period <= MAX_PERIOD:
            raise ValueError("registration period is 24 bits of seconds")
        if not 0 <= self.node_type <= 0xFF or not 0 <= self.connection_type <= 0xFF:
            raise ValueError("node type and connection type are one byte")
        pattern = self.my_domain_pattern
        if (pattern is not None) != bool(self.node_type & NodeType.MY_DOMAIN_PATTERN):
            raise ValueError("a domain pattern goes with the node type's MY_DOMAIN_PATTERN bit")
        if pattern is not None and len(pattern) > 0xFF:
            raise ValueError("domain pattern is at most 255 bytes")

    @property
    def esn(self) -> ApTitle:
        return self.serial_number or self.ap_title

    def encode(self) -> bytes:
        out = [
            bytes([self.code, self.node_type, self.connection_type]),
            self.device_class,
            _uid(self.ap_title),
            _uid(self.esn),
            bytes([len(self.native_address)]),
            self.native_address,
            self.registration_period.to_bytes(3, "big"),
        ]
        if self.my_domain_pattern is not None:
            out += [bytes([len(self.my_domain_pattern)]), self.my_domain_pattern]
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> Registration:
        """One <register> <res-req> (service code first)."""
        _need(data, 0, 3 + ED_CLASS_LEN, "registration")
        if data[0] != REGISTRATION:
            raise C1222DecodeError(0, f"not a registration (service {data[0]:#04x})")
        node_type, connection_type = NodeType(data[1]), ConnectionType(data[2])
        device_class = data[3 : 3 + ED_CLASS_LEN]
        title, pos = _read_uid(data, 3 + ED_CLASS_LEN, "ap-title")
        esn, pos = _read_uid(data, pos, "electronic-serial-number")
        _need(data, pos, 1, "native address length")
        n = data[pos]
        if n == 0:
            raise C1222DecodeError(pos, "empty native address")
        _need(data, pos + 1, n + 3, "native address and registration period")
        address = data[pos + 1 : pos + 1 + n]
        pos += 1 + n
        period = int.from_bytes(data[pos : pos + 3], "big")
        pos += 3
        pattern = None
        if node_type & NodeType.MY_DOMAIN_PATTERN:
            _need(data, pos, 1, "domain pattern length")
            _need(data, pos + 1, data[pos], "domain pattern")
            pattern = data[pos + 1 : pos + 1 + data[pos]]
            pos += 1 + data[pos]
        if pos != len(data):
            raise C1222DecodeError(pos, "trailing bytes after the registration")
        return cls(
            title,
            address,
            period,
            node_type,
            connection_type,
            device_class,
            None if esn.same_node(title) else esn,
            pattern,
        )


@dataclass(frozen=True)
class RegistrationResult:
    """<register-r> after <ok>: the relay the node is registered with, the longest random
    delay before registering after a restart, how long the registration lasts, and flags."""

    relay: ApTitle
    reg_period: int
    reg_delay: int = 0
    reg_info: RegInfo = GRANTED_CONNECTIONLESS

    def __post_init__(self) -> None:
        object.__setattr__(self, "relay", self.relay.absolute())
        if not 0 <= self.reg_period <= MAX_PERIOD or not 0 <= self.reg_delay <= MAX_DELAY:
            raise ValueError("reg-period is 24 bits, reg-delay 16 bits of seconds")
        if not 0 <= self.reg_info <= 0xFF:
            raise ValueError("reg-info is one byte")

    def encode(self) -> bytes:
        return (
            _uid(self.relay)
            + self.reg_delay.to_bytes(2, "big")
            + self.reg_period.to_bytes(3, "big")
            + bytes([self.reg_info])
        )

    @classmethod
    def decode(cls, data: bytes) -> RegistrationResult:
        """The data of an <ok> answer to a registration (after the response code)."""
        relay, pos = _read_uid(data, 0, "rel-ap-title")
        if len(data) - pos != 6:
            raise C1222DecodeError(pos, f"delay, period, info: 6 bytes, not {len(data) - pos}")
        return cls(
            relay,
            int.from_bytes(data[pos + 2 : pos + 5], "big"),
            int.from_bytes(data[pos : pos + 2], "big"),
            RegInfo(data[pos + 5]),
        )


def grant(request: Registration, master: ApTitle, reg_delay: int = 0) -> RegistrationResult:
    """What a master relay answers an authenticated registration with: itself as the relay
    the node is registered with, and the period it asked for within the granted bounds."""
    period = min(max(request.registration_period, MIN_GRANTED_PERIOD), MAX_GRANTED_PERIOD)
    return RegistrationResult(master, period, reg_delay)
