"""PANA Relay Element (PRE), RFC 6345, and the PANA-Relay (PRY) message codec.

A PaC that cannot reach the PAA talks to a PRE exactly as it would to a PAA (it is unchanged). The
PRE wraps every PANA message from a PaC in a PRY (message type 5, no flags, Session Identifier
and Sequence Number zero) carrying

  * PaC-Information (AVP 10): the PaC's IP address and UDP port as the PRE saw them: the address in
    network byte order (4 octets IPv4, 16 octets IPv6) followed by the 2-octet port;
  * Relayed-Message (AVP 11): the whole PANA message, untouched,

and sends it to the PAA. The PAA answers with a PRY carrying the same PaC-Information; the PRE
unwraps it and sends the Relayed-Message to that address. The PRE keeps no per-PaC state, does
not retransmit, and cannot read or alter the PANA session (AUTH covers the relayed message).
RFC 6345's optional PRE-PAA security association is not implemented.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from dataclasses import dataclass

from amistack.addr import Addr, TimerlessEngine
from amistack.pana.avp import Avp
from amistack.pana.constants import AvpCode, MessageType
from amistack.pana.errors import PanaDecodeError
from amistack.pana.message import PanaMessage

logger = logging.getLogger(__name__)


def encode_pac_information(addr: Addr) -> bytes:
    """Raises ValueError if the host is not an IPv4/IPv6 literal (RFC 6345 carries only IPs)."""
    host, port = addr
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if not 0 <= port <= 0xFFFF:
        raise ValueError("port out of range")
    return ip.packed + port.to_bytes(2, "big")


# PaC-Information value lengths (RFC 6345 §5: address + 2-octet port). OpenPANA 0.2.4's relay
# counts the AVP's padding in its length (8 for IPv4, 20 for IPv6): accepted, padding ignored.
_PAC_INFO_IPV4 = (6, 8)
_PAC_INFO_IPV6 = (18, 20)


def decode_pac_information(value: bytes) -> Addr:
    n = len(value)
    if n in _PAC_INFO_IPV4:
        host = str(ipaddress.IPv4Address(value[:4]))
        port = value[4:6]
    elif n in _PAC_INFO_IPV6:
        host = str(ipaddress.IPv6Address(value[:16]))
        port = value[16:18]
    else:
        raise PanaDecodeError(0, f"PaC-Information of {n} octets (want 6 or 18, or 8 or 20)")
    return host, int.from_bytes(port, "big")


def wrap_relay(pac: Addr, relayed: bytes) -> bytes:
    """A PRY message carrying `relayed` for/from the PaC at `pac`."""
    return PanaMessage(
        MessageType.RELAY,
        0,
        0,
        0,
        (
            Avp(AvpCode.PAC_INFORMATION, encode_pac_information(pac)),
            Avp(AvpCode.RELAYED_MESSAGE, relayed),
        ),
    ).encode()


def unwrap_relay(msg: PanaMessage) -> tuple[Addr, bytes]:
    """(PaC address, relayed message octets) of a decoded PRY; PanaDecodeError if malformed."""
    if msg.msg_type != MessageType.RELAY:
        raise PanaDecodeError(6, "not a PANA-Relay message")
    info = msg.octets(AvpCode.PAC_INFORMATION)
    relayed = msg.octets(AvpCode.RELAYED_MESSAGE)
    if info is None or relayed is None:
        raise PanaDecodeError(16, "PRY without PaC-Information or Relayed-Message")
    return decode_pac_information(info), relayed


@dataclass(frozen=True)
class RelayConfig:
    max_queue: int = 4096  # datagrams held between datagrams_to_send calls


class PanaRelay(TimerlessEngine):  # no timer: RFC 6345 §3, the PRE does not retransmit
    """Sans-IO PRE. Datagrams from `paa` are PRYs to unwrap; anything else comes from a PaC."""

    def __init__(self, paa: Addr, config: RelayConfig | None = None) -> None:
        self.paa = paa
        self.config = config or RelayConfig()
        self.counters: Counter[str] = Counter()
        self._out: list[tuple[bytes, Addr]] = []

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if addr == self.paa:
            self.receive_from_paa(data, now)
        else:
            self.receive_from_pac(data, addr, now)

    def receive_from_pac(self, data: bytes, addr: Addr, now: float) -> None:
        try:
            msg = PanaMessage.decode(data)
        except PanaDecodeError:
            self.counters["decode_error"] += 1
            return
        if msg.msg_type == MessageType.RELAY:  # a PaC does not send PRY; never relay a relay
            self.counters["unexpected_type"] += 1
            return
        try:
            wrapped = wrap_relay(addr, bytes(data))
        except ValueError:
            self.counters["unencodable_address"] += 1
            return
        self._queue(wrapped, self.paa)
        self.counters["to_paa"] += 1

    def receive_from_paa(self, data: bytes, now: float) -> None:
        try:
            pac, relayed = unwrap_relay(PanaMessage.decode(data))
            PanaMessage.decode(relayed)
        except PanaDecodeError:
            self.counters["decode_error"] += 1
            return
        self._queue(relayed, pac)
        self.counters["to_pac"] += 1

    def _queue(self, data: bytes, addr: Addr) -> None:
        if len(self._out) >= self.config.max_queue:
            self.counters["queue_full"] += 1
            return
        self._out.append((data, addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out
