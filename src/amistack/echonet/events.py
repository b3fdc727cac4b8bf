"""What an ECHONET Lite engine reports to its application (aioquic `events.py` style).

Small frozen dataclasses; the engine queues them and `next_event()` hands them out in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from amistack.addr import Addr
from amistack.echonet.frame import Eoj, Frame, Property


class EchonetEvent:
    """Base class of every ECHONET Lite engine event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class PropertiesWritten(EchonetEvent):
    """A SetI/SetC/SetGet wrote properties of one of our objects. `props` holds the values as
    stored after the object's §2.1 rule (clamped / nearest step), only for accepted writes."""

    eoj: Eoj
    props: tuple[Property, ...]
    addr: Addr


@dataclass(frozen=True, slots=True)
class NotificationReceived(EchonetEvent):
    """Another node sent an INF (0x73) or INFC (0x74): e.g. its startup instance-list INF."""

    frame: Frame
    addr: Addr


@dataclass(frozen=True, slots=True)
class ResponseReceived(EchonetEvent):
    """A response or not-possible response arrived (a device node sends no requests of its own,
    so these are unsolicited; reported so that the application can see them)."""

    frame: Frame
    addr: Addr


@dataclass(frozen=True, slots=True)
class Format2Received(EchonetEvent):
    """An arbitrary-format frame (EHD 0x1082), passed through unchanged."""

    tid: int
    payload: bytes
    addr: Addr


@dataclass(frozen=True, slots=True)
class Announced(EchonetEvent):
    """We multicast an INF: the startup instance list (§4.2) or a property-change announcement."""

    eoj: Eoj
    epcs: tuple[int, ...]
