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


# -- controller (HEMS) events: amistack.echonet.controller ------------------------------------

# A request's "good" responses; anything else that answers it is the not-possible response.
# SetI (0x60) has no good response: the controller reports it as done (esv 0x60) when no SetI_SNA
# arrived within `ControllerConfig.seti_wait`.
GOOD_RESPONSES = frozenset({0x71, 0x72, 0x73, 0x7E, 0x60})


@dataclass(frozen=True, slots=True)
class PropertyMaps:
    """The three property maps of one object (0x9D announcement, 0x9E Set, 0x9F Get); a map the
    device did not give (or gave malformed) is empty."""

    anno: frozenset[int] = frozenset()
    set: frozenset[int] = frozenset()
    get: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class NodeDiscovered(EchonetEvent):
    """A node answered (or announced) its instance list; also reported again when the list
    changes. `via`: "get" (D6 answer), "inf" (D5 announcement), "inf_req" (INF of D5 answering
    our INF_REQ)."""

    addr: Addr
    instances: tuple[Eoj, ...]
    via: str


@dataclass(frozen=True, slots=True)
class PropertyMapsRetrieved(EchonetEvent):
    """The controller read the property maps (9D/9E/9F) of one object of a known node."""

    addr: Addr
    eoj: Eoj
    maps: PropertyMaps


@dataclass(frozen=True, slots=True)
class ProbeFailed(EchonetEvent):
    """A probed address answered neither a Get of D6 nor an INF_REQ of D5 (guideline §6.6)."""

    addr: Addr
    reason: str


@dataclass(frozen=True, slots=True)
class RequestCompleted(EchonetEvent):
    """The answer to a Get/Set/SetGet/INF_REQ of the controller (handle = what the request method
    returned). A request split for the device (§2.3) is reported once, its parts merged in the
    order asked. `esv` is the good response (0x72, 0x71, 0x73, 0x7E; 0x60 for a SetI with no
    not-possible answer) when every part succeeded, else the not-possible response (0x52, 0x51,
    0x50, 0x53, 0x5E): a partial result, where a read EPC with PDC=0 was not available and a
    written EPC echoed with its EDT was refused. `elapsed`: seconds from request to answer."""

    handle: int
    addr: Addr
    deoj: Eoj
    esv: int
    props: tuple[Property, ...]
    props_get: tuple[Property, ...] = ()
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.esv in GOOD_RESPONSES

    def value(self, epc: int) -> bytes | None:
        """The EDT read for `epc` (Get, INF_REQ, or the Get part of a SetGet), or None when the
        device did not give it."""
        reads = self.props_get if self.esv in (0x7E, 0x5E) else self.props
        for p in reads:
            if p.epc == epc and p.edt:
                return p.edt
        return None

    @property
    def unavailable(self) -> tuple[int, ...]:
        """EPCs asked for reading that came back with PDC=0 in a not-possible response."""
        if self.ok:
            return ()
        if self.esv == 0x5E:
            return tuple(p.epc for p in self.props_get if not p.edt)
        if self.esv in (0x52, 0x53):
            return tuple(p.epc for p in self.props if not p.edt)
        return ()

    @property
    def refused(self) -> tuple[int, ...]:
        """EPCs written that the device refused (echoed with their EDT in a not-possible
        response)."""
        if self.ok or self.esv in (0x52, 0x53):
            return ()
        return tuple(p.epc for p in self.props if p.edt)


@dataclass(frozen=True, slots=True)
class RequestFailed(EchonetEvent):
    """A request of the controller got no answer (`reason`: e.g. "timeout after 3 attempts",
    "queue full")."""

    handle: int
    addr: Addr
    deoj: Eoj
    reason: str
