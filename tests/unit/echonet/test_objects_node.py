"""The real smart meter object and node profile behind the real device node: a controller's
frames in, the model's values out (the objects satisfy the node's HostedObject contract)."""

from __future__ import annotations

from amistack.crypto.rand import seeded_random
from amistack.echonet.frame import Eoj, Esv, Frame, Property
from amistack.echonet.node import EchonetNode
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.echonet.propmap import decode_propmap
from amistack.meter.model import MeterConfig, MeterModel

CONTROLLER = Eoj(0x05, 0xFF, 0x01)
HEMS = ("192.0.2.10", 40000)
NOW = 1_710_040_200.0


def exchange(node: EchonetNode, req: Frame) -> Frame:
    node.receive_datagram(req.encode(), HEMS, NOW)
    out = node.datagrams_to_send(NOW)
    assert len(out) == 1 and out[0][1] == (HEMS[0], 3610)
    return Frame.decode(out[0][0])


def test_meter_behind_the_node() -> None:
    model = MeterModel(7, MeterConfig(outage_rate_per_year=0))
    meter = SmartMeterObject(model)
    node = EchonetNode(NodeProfile([meter.eoj]), [meter], seeded_random(1))
    res = exchange(node, Frame(1, CONTROLLER, meter.eoj, Esv.GET, (Property(0xE0),)))
    assert res.esv == Esv.GET_RES and res.tid == 1
    assert res.props == (Property(0xE0, meter.get(0xE0, NOW) or b""),)
    wh = model.registers(NOW).active_forward_wh
    assert int.from_bytes(res.props[0].edt, "big") == (wh // 100) % 10**6
    # SetGet: E5 written first, then E2 read for that day (§2.6).
    res = exchange(
        node,
        Frame(2, CONTROLLER, meter.eoj, Esv.SETGET, (Property(0xE5, b"\x01"),), (Property(0xE2),)),
    )
    assert res.esv == Esv.SETGET_RES
    assert res.props == (Property(0xE5),)
    assert res.props_get[0].edt[:2] == b"\x00\x01" and len(res.props_get[0].edt) == 194
    # Out of range E5 is refused with SetC_SNA echoing the EDT.
    res = exchange(node, Frame(3, CONTROLLER, meter.eoj, Esv.SETC, (Property(0xE5, b"\x64"),)))
    assert res.esv == Esv.SETC_SNA and res.props == (Property(0xE5, b"\x64"),)
    # The node profile's instance list names the meter; the Get map of the meter is a bitmap.
    prof = Eoj(0x0E, 0xF0, 0x01)
    res = exchange(node, Frame(4, CONTROLLER, prof, Esv.GET, (Property(0xD6),)))
    assert res.props == (Property(0xD6, b"\x01\x02\x88\x01"),)
    res = exchange(node, Frame(5, CONTROLLER, meter.eoj, Esv.GET, (Property(0x9F),)))
    assert 0xE7 in decode_propmap(res.props[0].edt)
