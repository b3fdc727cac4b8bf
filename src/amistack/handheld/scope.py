"""Which devices a handheld may bring to the key server: its certificate's meter selectors.

A handheld's client certificate names the meters it may serve (`amistack pki issue-client
handheld-7 --purpose handheld --meters 'field-meter-*'`). The gateway reads every PANA datagram
a handheld sends to the key server (`claims`) and lets it through only if each identity it
claims is in scope (`scope_refusal`):

- a PANA-Relay (RFC 6345 §4, PRY) carries a meter's message: each identity in it must match
  the certificate's meter selectors (`keymgmt.pki.meters_cover`);
- any other PANA message is the handheld's own PaC: each identity must be the handheld's own
  (the certificate's CN).

The identities a PaC claims sit in the EAP-Payload AVP (RFC 5191 §8.4) of its answers: the
EAP-Response/Identity (RFC 3748 §5.1) and EAP-PSK's second message, whose ID_P is what the key
server looks the PSK up by (RFC 4764 §3.2). EAP methods whose identity the gateway cannot read
(EAP-TLS's is in the certificate) are refused rather than passed unchecked, as is anything in
an EAP payload that is not a Response. Messages without an EAP payload (PCI, PTR, PNR) claim
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from amistack.eap.packet import EapCode, EapDecodeError, EapPacket, EapType
from amistack.eap.psk import PskMessageType, PskSecond
from amistack.keymgmt.pki import meters_cover
from amistack.pana.constants import AvpCode, MessageType
from amistack.pana.errors import PanaDecodeError
from amistack.pana.message import PanaMessage
from amistack.pana.relay import unwrap_relay

__all__ = ["Claims", "ScopeError", "claims", "scope_refusal"]

# EAP types whose Response the gateway reads or that claim nothing (RFC 3748 §5.1, §5.3.1;
# RFC 4764): anything else is refused
_CHECKED_TYPES = frozenset({EapType.IDENTITY, EapType.NAK, EapType.PSK})


class ScopeError(Exception):
    """A datagram the gateway cannot check: `offset` into it and why (counted and dropped)."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"scope: {reason} (offset {offset})")
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True)
class Claims:
    relayed: bool  # a PRY: a meter's message, not the handheld's own
    identities: tuple[bytes, ...]  # every identity its EAP payload claims


def claims(datagram: bytes) -> Claims:
    """The identities a PANA datagram (or the message a PRY relays) claims. ScopeError if it
    is not PANA, relays a relay, or carries EAP the gateway cannot read."""
    try:
        msg = PanaMessage.decode(datagram)
        relayed = msg.msg_type == MessageType.RELAY
        if relayed:
            msg = PanaMessage.decode(unwrap_relay(msg)[1])
            if msg.msg_type == MessageType.RELAY:
                raise ScopeError(0, "a relay inside a relay")
    except PanaDecodeError as exc:
        raise ScopeError(exc.offset, f"PANA: {exc.reason}") from None
    found: list[bytes] = []
    for avp in msg.find_all(AvpCode.EAP_PAYLOAD):
        try:
            eap = EapPacket.decode(avp.value)
        except EapDecodeError as exc:
            raise ScopeError(exc.offset, f"EAP: {exc.reason}") from None
        if eap.code != EapCode.RESPONSE:
            raise ScopeError(0, f"EAP code {eap.code} from a PaC")
        if eap.type not in _CHECKED_TYPES:
            raise ScopeError(4, f"EAP type {eap.type}: its identity is not readable here")
        if eap.type == EapType.IDENTITY:
            found.append(eap.type_data)
        elif eap.type == EapType.PSK and eap.type_data[:1] and (
            eap.type_data[0] >> 6 == PskMessageType.SECOND
        ):  # fmt: skip
            try:
                found.append(PskSecond.decode(eap.type_data).id_p)
            except EapDecodeError as exc:
                raise ScopeError(5 + exc.offset, f"EAP-PSK: {exc.reason}") from None
    return Claims(relayed, tuple(found))


def scope_refusal(c: Claims, device: str, meters: Iterable[str]) -> bytes | None:
    """The first identity of `c` out of the handheld's scope (None: all in scope)."""
    selectors = frozenset(meters)
    for identity in c.identities:
        ok = meters_cover(selectors, identity) if c.relayed else identity == device.encode()
        if not ok:
            return identity
    return None
