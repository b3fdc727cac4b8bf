"""0x93 remote control setting (APPENDIX super class, optional) and its guideline §5 handling:
the object refuses its local-only properties while 0x93 says the operation comes through a
public network; the node answers that with the not-possible response whatever its §2.2 policy."""

from __future__ import annotations

import pytest

from amistack.crypto.rand import seeded_random
from amistack.echonet.frame import Eoj, Esv, Frame, Property
from amistack.echonet.node import MULTICAST_V4, EchonetNode, NodeConfig, OutOfRangeReply
from amistack.echonet.objects import (
    Access,
    DeviceObject,
    NodeProfile,
    PropertySpec,
    RemoteControl,
    RemoteControlPolicy,
    SetStatus,
    SmartMeterConfig,
    SmartMeterObject,
)
from amistack.echonet.objects.base import super_specs
from amistack.echonet.propmap import decode_propmap
from amistack.meter.model import MeterModel

HEATER = Eoj(0x02, 0x6B, 0x01)  # electric water heater: a device one may not run unwatched
HEMS = Eoj(0x05, 0xFF, 0x01)
PEER = ("127.0.50.40", 50000)
VIA, LOCAL = b"\x42", b"\x41"


def heater(policy: RemoteControlPolicy | None) -> DeviceObject:
    specs = [
        *super_specs(),
        PropertySpec(0xB0, "automatic water heating setting", Access.GET | Access.SET, (1,)),
    ]
    specs[0] = PropertySpec(0x80, "operation status", Access.GET | Access.SET | Access.ANNO, (1,))
    obj = DeviceObject(HEATER, specs, remote_control=policy)
    obj.update(0x80, b"\x31")
    obj.pop_announcements()
    return obj


def test_codes_are_the_appendix_ones() -> None:
    assert [int(c) for c in RemoteControl] == [0x41, 0x42, 0x61, 0x62]
    assert RemoteControlPolicy().accepted() == {0x41, 0x42}
    assert RemoteControlPolicy(line_status_settable=True).accepted() == {0x41, 0x42, 0x61, 0x62}


def test_absent_unless_enabled() -> None:
    obj = heater(None)
    assert 0x93 not in obj.get_map and obj.get(0x93, 0.0) is None
    assert obj.set(0x93, VIA, 0.0).status is SetStatus.UNSUPPORTED
    meter = SmartMeterObject(MeterModel(1))
    assert 0x93 not in meter.get_map  # not in the meter's class table: off by default
    with_rc = SmartMeterObject(
        MeterModel(1), config=SmartMeterConfig(remote_control=RemoteControlPolicy())
    )
    assert 0x93 in decode_propmap(with_rc.get(0x9F, 0.0) or b"")
    assert 0x93 in decode_propmap(with_rc.get(0x9E, 0.0) or b"")


def test_get_set_and_values() -> None:
    obj = heater(RemoteControlPolicy(local_only=frozenset({0x80})))
    assert {0x93} <= obj.get_map & obj.set_map and 0x93 not in obj.inf_map
    assert obj.get(0x93, 0.0) == LOCAL
    assert obj.set(0x93, VIA, 0.0).ok and obj.get(0x93, 0.0) == VIA
    assert obj.operated_via_public_network
    for bad in (b"\x43", b"\x61", b"\x62", b"\x41\x41", b""):
        assert obj.set(0x93, bad, 0.0).status is SetStatus.INVALID, bad
    assert obj.get(0x93, 0.0) == VIA
    assert obj.pop_announcements() == []  # 0x93 is not announced


def test_local_only_epcs_are_refused_through_a_public_network() -> None:
    obj = heater(RemoteControlPolicy(local_only=frozenset({0x80})))
    assert obj.set(0x80, b"\x30", 0.0).ok  # local operation: fine
    assert obj.set(0x93, VIA, 0.0).ok
    res = obj.set(0x80, b"\x31", 0.0)
    assert res.status is SetStatus.REFUSED and "§5" in res.reason
    assert obj.get(0x80, 0.0) == b"\x30"
    assert obj.set(0xB0, b"\x41", 0.0).ok  # not local-only: allowed remotely
    assert obj.set(0x93, LOCAL, 0.0).ok
    assert obj.set(0x80, b"\x31", 0.0).ok


def test_line_status_restricts_nothing_and_can_be_reported_by_the_device() -> None:
    obj = heater(RemoteControlPolicy(local_only=frozenset({0x80}), line_status_settable=True))
    assert obj.set(0x93, b"\x62", 0.0).ok and not obj.operated_via_public_network
    assert obj.set(0x80, b"\x30", 0.0).ok
    plain = heater(RemoteControlPolicy(local_only=frozenset({0x80})))
    assert plain.set(0x93, b"\x61", 0.0).status is SetStatus.INVALID
    plain.update(0x93, b"\x61")  # the device reports its own line
    assert plain.get(0x93, 0.0) == b"\x61" and plain.set(0x80, b"\x30", 0.0).ok


def _node(policy: OutOfRangeReply) -> tuple[EchonetNode, DeviceObject]:
    obj = heater(RemoteControlPolicy(local_only=frozenset({0x80})))
    node = EchonetNode(
        NodeProfile([]),
        [obj],
        seeded_random(4),
        NodeConfig(multicast_groups=(), out_of_range=policy),
    )
    return node, obj


def _ask(node: EchonetNode, frame: Frame) -> Frame:
    node.receive_datagram(frame.encode(), PEER, 1.0)
    [(data, dest)] = [(d, a) for d, a in node.datagrams_to_send(1.0) if a != MULTICAST_V4]
    assert dest == (PEER[0], 3610)
    return Frame.decode(data)


@pytest.mark.parametrize("policy", list(OutOfRangeReply))
def test_node_answers_a_refused_remote_operation_not_possible(policy: OutOfRangeReply) -> None:
    """§5 in one SetC: 0x93 = 0x42 first, then the operation; the node writes in order, so the
    operation is judged as remote and refused -- SetC_SNA echoing it, even under ACCEPT/CLAMP."""
    node, obj = _node(policy)
    props = (Property(0x93, VIA), Property(0x80, b"\x30"), Property(0xB0, b"\x42"))
    r = _ask(node, Frame(1, HEMS, HEATER, Esv.SETC, props))
    assert r.esv == Esv.SETC_SNA
    assert r.props == (Property(0x93), Property(0x80, b"\x30"), Property(0xB0))
    assert obj.get(0x80, 0.0) == b"\x31" and obj.get(0xB0, 0.0) == b"\x42"

    r = _ask(
        node,
        Frame(2, HEMS, HEATER, Esv.SETGET, (Property(0x93, LOCAL), Property(0x80, b"\x30")),
              (Property(0x80), Property(0x93))),
    )  # fmt: skip
    assert r.esv == Esv.SETGET_RES
    assert r.props_get == (Property(0x80, b"\x30"), Property(0x93, LOCAL))


def test_each_request_is_judged_remote_or_local_on_its_own() -> None:
    """Guideline §5.2 (APPENDIX Release C): a remote operation carries 0x93 = 0x42 as the first
    property of the same request; a local one carries no 0x93. So a request without 0x93 after
    a remote one is local again (it used to stay remote until 0x41 was written), and a Get of
    0x93 tells what the last operation was (§5.1)."""
    node, obj = _node(OutOfRangeReply.SNA)
    remote = (Property(0x93, VIA), Property(0xB0, b"\x42"))
    assert _ask(node, Frame(1, HEMS, HEATER, Esv.SETC, remote)).esv == Esv.SET_RES
    get93 = Frame(2, HEMS, HEATER, Esv.GET, (Property(0x93),))
    assert _ask(node, get93).props == (Property(0x93, VIA),)
    local = (Property(0x80, b"\x30"),)
    r = _ask(node, Frame(3, HEMS, HEATER, Esv.SETC, local))
    assert r.esv == Esv.SET_RES and obj.get(0x80, 0.0) == b"\x30"
    assert _ask(node, get93).props == (Property(0x93, LOCAL),)


def test_a_remote_mark_later_in_the_request_still_makes_all_of_it_remote() -> None:
    """0x93 = 0x42 belongs first (§5.2); a controller that puts it after the operation is judged
    on the safe side: the whole request is remote, the local-only EPC before it is refused."""
    node, obj = _node(OutOfRangeReply.SNA)
    props = (Property(0x80, b"\x30"), Property(0x93, VIA))
    r = _ask(node, Frame(1, HEMS, HEATER, Esv.SETC, props))
    assert r.esv == Esv.SETC_SNA and r.props == (Property(0x80, b"\x30"), Property(0x93))
    assert obj.get(0x80, 0.0) == b"\x31"


def test_unmarked_requests_as_remote_on_the_safe_side() -> None:
    """§5.1: where controllers do not send 0x93 the device cannot tell, and should treat every
    operation as coming through a public network (`unmarked=VIA_PUBLIC_NETWORK`); an explicit
    0x93 = 0x41 still marks a local one."""
    obj = heater(
        RemoteControlPolicy(local_only=frozenset({0x80}), unmarked=RemoteControl.VIA_PUBLIC_NETWORK)
    )
    node = EchonetNode(NodeProfile([]), [obj], seeded_random(4), NodeConfig(multicast_groups=()))
    r = _ask(node, Frame(1, HEMS, HEATER, Esv.SETC, (Property(0x80, b"\x30"),)))
    assert r.esv == Esv.SETC_SNA and obj.get(0x80, 0.0) == b"\x31"
    marked = (Property(0x93, LOCAL), Property(0x80, b"\x30"))
    assert _ask(node, Frame(2, HEMS, HEATER, Esv.SETC, marked)).esv == Esv.SET_RES
    with pytest.raises(ValueError):
        RemoteControlPolicy(unmarked=RemoteControl.LINE_NORMAL_PUBLIC_ENABLED)


def test_an_unmarked_local_request_keeps_the_devices_line_report() -> None:
    obj = heater(RemoteControlPolicy(local_only=frozenset({0x80})))
    obj.update(0x93, b"\x62")
    node = EchonetNode(NodeProfile([]), [obj], seeded_random(4), NodeConfig(multicast_groups=()))
    assert _ask(node, Frame(1, HEMS, HEATER, Esv.SETC, (Property(0xB0, b"\x41"),))).esv == (
        Esv.SET_RES
    )
    assert obj.get(0x93, 0.0) == b"\x62"
