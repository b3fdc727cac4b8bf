"""The meter's event types: what it records in its tamper-evident log (amistack.eventlog).

Below both the meter, which produces the events, and the log, which records and verifies them,
so the generic log does not import the meter.
"""

from enum import IntEnum


class EventType(IntEnum):
    """Meter events (amistack numbering; 0x8000-0xFFFF is free for vendors)."""

    POWER_FAIL = 1
    POWER_RESTORE = 2
    COVER_OPEN = 3
    COVER_CLOSE = 4
    SWITCH_OPENED = 5  # supply disconnected
    SWITCH_CLOSED = 6  # supply reconnected
    CLOCK_ADJUSTED = 7
    AUTH_FAILURE = 8
    KEY_ROTATED = 9
    FIRMWARE_UPDATED = 10
    CONFIG_CHANGED = 11
    MAGNETIC_TAMPER = 12
    REVERSE_FLOW = 13
    LOG_OPENED = 14  # the store was opened (after a restart: a power cycle is evidence too)
    LOG_CHECKPOINT = 15  # a signed head was made
    LOG_TAIL_REPAIRED = 16  # a torn tail from a crash was cut off on open
    LOG_STORE_DAMAGED = 17  # damage before the end of the store: set aside, log continued
    LOG_ROLLED_BACK = 18  # the store lacks the last head the secure module saw signed
