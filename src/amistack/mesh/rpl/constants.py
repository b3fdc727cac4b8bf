"""RPL numbers from the standards, each beside its section (RFC 6550 unless named otherwise)."""

from __future__ import annotations

from enum import IntEnum

ICMPV6_TYPE_RPL = 155  # §6: RPL control messages are ICMPv6 type 155


class RplCode(IntEnum):
    """§6: the ICMPv6 code of an RPL control message (IANA "RPL Control Codes")."""

    DIS = 0x00  # §6.2
    DIO = 0x01  # §6.3
    DAO = 0x02  # §6.4
    DAO_ACK = 0x03  # §6.5
    SECURE_DIS = 0x80  # §6.2 secure variants: not supported here (link-layer security instead)
    SECURE_DIO = 0x81
    SECURE_DAO = 0x82
    SECURE_DAO_ACK = 0x83
    CONSISTENCY_CHECK = 0x8A  # §6.6


class OptionType(IntEnum):
    """§6.7.1: RPL control message option types (IANA "RPL Control Message Options")."""

    PAD1 = 0x00  # §6.7.2
    PADN = 0x01  # §6.7.3
    DAG_METRIC_CONTAINER = 0x02  # §6.7.4 (RFC 6551), carried opaque
    ROUTE_INFORMATION = 0x03  # §6.7.5, carried opaque
    DODAG_CONFIGURATION = 0x04  # §6.7.6
    RPL_TARGET = 0x05  # §6.7.7
    TRANSIT_INFORMATION = 0x06  # §6.7.8
    SOLICITED_INFORMATION = 0x07  # §6.7.9
    PREFIX_INFORMATION = 0x08  # §6.7.10
    TARGET_DESCRIPTOR = 0x09  # §6.7.11


class Mop(IntEnum):
    """§6.3.1: Mode of Operation in the DIO."""

    NO_DOWNWARD_ROUTES = 0
    NON_STORING = 1
    STORING_NO_MULTICAST = 2
    STORING_MULTICAST = 3


class Ocp(IntEnum):
    """Objective Code Points (IANA "Objective Code Point" registry)."""

    OF0 = 0  # RFC 6552 §7
    MRHOF = 1  # RFC 6719 §6


# §17: rank and lollipop counters
INFINITE_RANK = 0xFFFF
ROOT_RANK_FACTOR = 1  # §17: ROOT_RANK = MinHopRankIncrease
SEQUENCE_WINDOW = 16  # §7.2: lollipop counter comparison window

# §17: default values of the DODAG Configuration option fields
DEFAULT_DIO_INTERVAL_MIN = 3  # Imin = 2^3 ms = 8 ms
DEFAULT_DIO_INTERVAL_DOUBLINGS = 20  # Imax = Imin * 2^20 (about 2.3 hours)
DEFAULT_DIO_REDUNDANCY_CONSTANT = 10  # k
DEFAULT_MIN_HOP_RANK_INCREASE = 256
DEFAULT_MAX_RANK_INCREASE = 0  # §17 gives no default; 0 disables the limit (§6.7.6)
DEFAULT_PATH_CONTROL_SIZE = 0
DEFAULT_DAO_DELAY = 1.0  # §17: DEFAULT_DAO_DELAY, seconds
DEFAULT_DEFAULT_LIFETIME = 0xFF  # §6.7.6 Default Lifetime (units of Lifetime Unit); 0xFF = infinite
DEFAULT_LIFETIME_UNIT = 0xFFFF  # §6.7.6
INFINITE_LIFETIME = 0xFF  # §6.7.8 Path Lifetime 0xFF: infinite
ZERO_LIFETIME = 0x00  # §6.7.8 Path Lifetime 0: a No-Path DAO (route removal)

# §6.5: DAO-ACK Status
DAO_ACK_UNQUALIFIED_ACCEPT = 0
DAO_ACK_REJECT_THRESHOLD = 128  # statuses 128..255 reject the DAO
DAO_ACK_REJECT_NO_ROOM = 0x80  # this implementation's "table full"

# RFC 6553 §6 and RFC 9008 §11.1: the RPL Option in a Hop-by-Hop header
RPL_OPTION_TYPE = 0x63  # RFC 6553 §6 (act = 01, chg = 1)
RPL_OPTION_TYPE_RFC9008 = 0x23  # RFC 9008 §11.1 (act = 00, chg = 1)
IPV6_NEXT_HEADER_HOP_BY_HOP = 0
IPV6_NEXT_HEADER_ROUTING = 43
ROUTING_TYPE_RPL_SRH = 3  # RFC 6554 §3

# RFC 6552 (OF0) §6.2 / §6.3
OF0_DEFAULT_STEP_OF_RANK = 3
OF0_MINIMUM_STEP_OF_RANK = 1
OF0_MAXIMUM_STEP_OF_RANK = 9
OF0_DEFAULT_RANK_STRETCH = 0
OF0_MAXIMUM_RANK_STRETCH = 5
OF0_DEFAULT_RANK_FACTOR = 1
OF0_MINIMUM_RANK_FACTOR = 1
OF0_MAXIMUM_RANK_FACTOR = 4

# RFC 6719 (MRHOF) §5: with ETX as the metric (values in ETX * 128, RFC 6551 §4.3.2)
ETX_DIVISOR = 128  # RFC 6551 §4.3.2: ETX is carried * 128
MRHOF_MAX_LINK_METRIC = 512  # ETX 4
MRHOF_MAX_PATH_COST = 32768  # ETX 256
MRHOF_PARENT_SWITCH_THRESHOLD = 192  # ETX 1.5
MRHOF_PARENT_SET_SIZE = 3
MRHOF_ALLOW_FLOATING_ROOT = 0

ALL_RPL_NODES = bytes.fromhex("ff02000000000000000000000000001a")  # §20.19: ff02::1a
