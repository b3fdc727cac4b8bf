"""EchonetNode hosting the real smart meter object (0x028801) and node profile."""

from __future__ import annotations

from amistack.crypto.rand import seeded_random
from amistack.echonet.frame import Eoj, Esv, Frame, Property
from amistack.echonet.node import MULTICAST_V4, NODE_PROFILE, EchonetNode, NodeConfig
from amistack.echonet.objects import NodeProfile, SmartMeterConfig, SmartMeterObject
from amistack.meter.model import MeterConfig, MeterModel

CONTROLLER = Eoj(0x05, 0xFF, 0x01)
METER = Eoj(0x02, 0x88, 0x01)
HEMS = ("fd00::10", 50000)
DAY = 86400.0


def meter_node(two_way: bool = True, seed: int = 1) -> tuple[EchonetNode, SmartMeterObject]:
    meter = SmartMeterObject(
        MeterModel(seed, MeterConfig(two_way=two_way)), config=SmartMeterConfig()
    )
    node = EchonetNode(NodeProfile([]), [meter], seeded_random(seed), NodeConfig())
    return node, meter


def ask(node: EchonetNode, frame: Frame, now: float) -> Frame:
    node.receive_datagram(frame.encode(), HEMS, now)
    [(data, dest)] = [(d, a) for d, a in node.datagrams_to_send(now) if a != MULTICAST_V4]
    assert dest == ("fd00::10", 3610)
    return Frame.decode(data)


def test_profile_lists_the_meter_and_node_answers_meter_gets() -> None:
    node, _ = meter_node()
    now = 30 * DAY
    r = ask(
        node, Frame(1, CONTROLLER, NODE_PROFILE, Esv.GET, (Property(0xD6), Property(0xD3))), now
    )
    assert r.esv == Esv.GET_RES
    assert r.props == (Property(0xD6, b"\x01" + METER.encode()), Property(0xD3, b"\x00\x00\x01"))
    r = ask(node, Frame(2, CONTROLLER, METER, Esv.GET, (Property(0xE7), Property(0xE0))), now)
    assert r.esv == Esv.GET_RES and [len(p.edt) for p in r.props] == [4, 4]


def test_e5_set_then_e2_starts_with_that_day_via_setget() -> None:  # §2.6 with the meter
    node, _ = meter_node()
    now = 30 * DAY
    r = ask(
        node,
        Frame(3, CONTROLLER, METER, Esv.SETGET, (Property(0xE5, b"\x01"),), (Property(0xE2),)),
        now,
    )
    assert r.esv == Esv.SETGET_RES and r.props == (Property(0xE5),)
    e2 = r.props_get[0].edt
    assert e2[:2] == b"\x00\x01" and len(e2) == 2 + 48 * 4


def test_e5_out_of_range_is_setc_sna() -> None:  # §2.2
    node, _ = meter_node()
    r = ask(node, Frame(4, CONTROLLER, METER, Esv.SETC, (Property(0xE5, b"\x64"),)), DAY)
    assert r.esv == Esv.SETC_SNA and r.props == (Property(0xE5, b"\x64"),)


def test_one_way_meter_reverse_epcs_not_possible() -> None:  # §6.1 (ABSENT mode)
    node, _ = meter_node(two_way=False)
    r = ask(node, Frame(5, CONTROLLER, METER, Esv.GET, (Property(0xE0), Property(0xE3))), DAY)
    assert r.esv == Esv.GET_SNA and r.props[1] == Property(0xE3)


def test_fixed_time_value_announced_every_half_hour_after_start() -> None:
    node, meter = meter_node()
    now = 10 * DAY + 100.0
    node.start(now)
    node.handle_timer(node.get_timer() or now)  # the startup INF first (within 2 s)
    node.datagrams_to_send(now)
    boundary = meter.next_fixed_time(now)
    assert node.get_timer() == boundary
    node.handle_timer(boundary)
    [(data, dest)] = node.datagrams_to_send(boundary)
    inf = Frame.decode(data)
    assert dest == MULTICAST_V4 and inf.esv == Esv.INF and inf.seoj == METER
    assert [p.epc for p in inf.props] == [0xEA, 0xEB]
    assert node.get_timer() == meter.next_fixed_time(boundary) > boundary
