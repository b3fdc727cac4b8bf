"""The field handheld (JP5701792B2): a technician's work session that brings isolated meters into
the AMI as DODAG root and PANA relay, keeping no meter secret. docs/handheld.md."""

from amistack.handheld.events import (
    HandheldAuthenticated,
    HandheldRefused,
    MeterRouted,
    WorkEnded,
    WorkEvent,
    WorkStarted,
)
from amistack.handheld.session import (
    HANDHELD_PAC_PORT,
    OPERATION_RIGHT,
    WAN_ADDR,
    HandheldConfig,
    NotPermitted,
    Operation,
    WorkSession,
    WorkState,
)

__all__ = [
    "HANDHELD_PAC_PORT",
    "OPERATION_RIGHT",
    "WAN_ADDR",
    "HandheldAuthenticated",
    "HandheldConfig",
    "HandheldRefused",
    "MeterRouted",
    "NotPermitted",
    "Operation",
    "WorkEnded",
    "WorkEvent",
    "WorkSession",
    "WorkStarted",
    "WorkState",
]
