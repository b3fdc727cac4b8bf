"""PANA numbers: message types, flags, AVP codes, result codes, algorithms (RFC 5191 §6-§8, §11).

RFC 6345 adds the relay message and AVPs; RFC 6786 adds Encryption-Encap.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

PANA_PORT = 716  # RFC 5191 §6.1, IANA-assigned UDP port
HEADER_LENGTH = 16  # RFC 5191 §6.2
AVP_HEADER_LENGTH = 8  # RFC 5191 §8.1, +4 when the V bit is set


class MessageType(IntEnum):
    """RFC 5191 §7 and RFC 6345 §4."""

    PCI = 1  # PANA-Client-Initiation
    AUTH = 2  # PANA-Auth-Request / -Answer (PAR/PAN)
    TERMINATION = 3  # PANA-Termination-Request / -Answer (PTR/PTA)
    NOTIFICATION = 4  # PANA-Notification-Request / -Answer (PNR/PNA)
    RELAY = 5  # PANA-Relay (PRY), RFC 6345 §4


class Flag(IntFlag):
    """Message header flags, RFC 5191 §6.2 (bit 0 is the most significant)."""

    R = 0x8000  # request
    S = 0x4000  # start
    C = 0x2000  # complete
    A = 0x1000  # re-authentication
    P = 0x0800  # ping
    I = 0x0400  # IP reconfiguration  # noqa: E741


# The same bits as plain ints, for per-message tests and arithmetic: `int & Flag` and
# `Flag | Flag` build a new enum member each time, a measurable cost per message.
FLAG_R = int(Flag.R)
FLAG_S = int(Flag.S)
FLAG_C = int(Flag.C)
FLAG_A = int(Flag.A)
FLAG_P = int(Flag.P)


AVP_FLAG_V = 0x8000  # RFC 5191 §8.1: Vendor-Id present. PANA has no M bit (unlike Diameter).


class AvpCode(IntEnum):
    """RFC 5191 §8, RFC 6345 §5, RFC 6786 §3."""

    AUTH = 1
    EAP_PAYLOAD = 2
    INTEGRITY_ALGORITHM = 3
    KEY_ID = 4
    NONCE = 5
    PRF_ALGORITHM = 6
    RESULT_CODE = 7
    SESSION_LIFETIME = 8
    TERMINATION_CAUSE = 9
    PAC_INFORMATION = 10  # RFC 6345 §5.1
    RELAYED_MESSAGE = 11  # RFC 6345 §5.2
    ENCRYPTION_ENCAP = 12  # RFC 6786 §3


# Vendor-specific AVPs (RFC 5191 §8.1: the V bit and a Vendor-Id, an IANA Private Enterprise
# Number). amistack has no PEN of its own yet: 32473 is the enterprise number RFC 5612 §2 reserves
# for documentation and examples; a deployment replaces it with its registered PEN.
AMISTACK_VENDOR_ID = 32473


class VendorAvpCode(IntEnum):
    """AVP codes under AMISTACK_VENDOR_ID (our own numbering; docs/mesh-keys.md)."""

    GROUP_KEY_DELIVERY = 1  # mesh group keys, AES key wrap under the session's GTK-KEK


class ResultCode(IntEnum):
    """RFC 5191 §8.7."""

    PANA_SUCCESS = 0
    PANA_AUTHENTICATION_REJECTED = 1
    PANA_AUTHORIZATION_REJECTED = 2


class TerminationCause(IntEnum):
    """RFC 5191 §8.9 (values from the Diameter Termination-Cause space)."""

    LOGOUT = 1
    ADMINISTRATIVE = 4
    SESSION_TIMEOUT = 8


class PrfAlgorithm(IntEnum):
    """IKEv2 transform type 2 numbers, RFC 5191 §8.6 / RFC 4306 §3.3.2."""

    PRF_HMAC_SHA1 = 2
    PRF_HMAC_SHA2_256 = 5  # RFC 4868


class IntegrityAlgorithm(IntEnum):
    """IKEv2 transform type 3 numbers, RFC 5191 §8.3 / RFC 4306 §3.3.2."""

    AUTH_HMAC_SHA1_160 = 7  # RFC 4595
    AUTH_HMAC_SHA2_256_128 = 12  # RFC 4868


NONCE_LENGTH = 20  # RFC 5191 §8.5: at least 8 octets, at most 256; 20 as OpenPANA sends
