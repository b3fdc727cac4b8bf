"""A HEMS on the B route, end to end on the virtual clock: `BrouteController` authenticates to
the meter (PANA, EAP-PSK from the B-route ID and password), finds the smart meter by unicast
probing through the secured link, reads E7, sets E5 and reads that day's E2 -- and after the
meter restarts (new PANA session) it learns the meter again and keeps reading."""

from __future__ import annotations

import struct

from amistack.addr import Addr
from amistack.broute import BrouteCredentials, BrouteHems, BrouteHemsConfig, BrouteMeter, LinkUp
from amistack.broute.controller import BrouteController
from amistack.broute.link import PanaFrame, SecuredFrame, decode_frame
from amistack.crypto import seeded_random
from amistack.echonet.controller import ControllerConfig, EchonetController
from amistack.echonet.events import (
    NodeDiscovered,
    PropertyMapsRetrieved,
    RequestCompleted,
    RequestFailed,
)
from amistack.echonet.frame import Eoj, Esv
from amistack.echonet.node import EchonetNode
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.meter.model import MeterConfig, MeterModel
from amistack.meter.tables import TimeScale
from amistack.sim import LinkConfig, VirtualNetwork

CREDS = BrouteCredentials("00112233445566778899AABBCCDDEEFF", "0123456789AB")
METER: Addr = ("fe80::1", 716)
HEMS: Addr = ("fe80::a", 716)
SMART_METER = Eoj(0x02, 0x88, 0x01)
DAY = 86400.0


def _meter(seed: int) -> tuple[BrouteMeter, SmartMeterObject]:
    model = MeterModel(seed, MeterConfig(two_way=True))
    scale = TimeScale(origin_now=0.0, origin_model=model.install_time + 30 * DAY)
    obj = SmartMeterObject(model, time=scale)
    node = EchonetNode(NodeProfile([]), [obj], seeded_random(seed))
    return BrouteMeter(node, [CREDS], seeded_random(seed + 1)), obj


def _hems(seed: int) -> BrouteController:
    hems = BrouteHems(CREDS, METER, seeded_random(seed), BrouteHemsConfig())
    controller = EchonetController(
        ControllerConfig(multicast_groups=(), rediscover_interval=None), seeded_random(seed + 1)
    )
    return BrouteController(hems, controller)


def _request(net: VirtualNetwork, handle: int) -> RequestCompleted:
    """Run until the controller's request `handle` (just submitted) completes."""
    net.service(HEMS)  # a command from outside the loop: let the network collect its datagrams
    done: list[RequestCompleted] = []

    def finished() -> bool:
        done.extend(
            e for e in net.events_of(HEMS, RequestCompleted) if e.handle == handle and e not in done
        )
        return bool(done)

    assert net.run_while(lambda: not finished(), net.now + 30.0), "no answer"
    return done[0]


def test_hems_reads_power_sets_e5_and_reads_that_days_history() -> None:
    net = VirtualNetwork(seed=3, default_link=LinkConfig(latency=0.02), capture=100_000)
    meter, obj = _meter(7)
    hc = _hems(11)
    net.add_node(METER, meter)
    net.add_node(HEMS, hc)
    net.call_at(0.0, METER, meter.start)
    net.call_at(0.1, HEMS, hc.start)
    assert net.run_while(lambda: not net.events_of(HEMS, PropertyMapsRetrieved), 30.0)
    node = hc.controller.nodes[hc.meter]
    assert node.find(0x0288) == SMART_METER
    assert 0xE7 in node.maps[SMART_METER].get  # the maps came through the envelope too

    e7 = _request(net, hc.controller.get(hc.meter, SMART_METER, [0xE7], net.now))
    assert e7.esv == Esv.GET_RES
    assert e7.props[0].edt == obj.get(0xE7, net.now)

    setc = _request(net, hc.controller.set(hc.meter, SMART_METER, [(0xE5, b"\x01")], net.now))
    assert setc.esv == Esv.SET_RES
    e2 = _request(net, hc.controller.get(hc.meter, SMART_METER, [0xE2], net.now))
    edt = e2.props[0].edt
    assert struct.unpack(">H", edt[:2])[0] == 1  # yesterday, as E5 says (guideline §6.2)
    assert edt == obj.get(0xE2, net.now)
    # nothing went in the clear: every datagram on the wire is a link frame (PANA or secured)
    for _, _, _, data in net.capture:
        assert isinstance(decode_frame(data), PanaFrame | SecuredFrame)


def test_meter_restart_is_learned_again_through_the_new_session() -> None:
    net = VirtualNetwork(seed=4, default_link=LinkConfig(latency=0.02), capture=100_000)
    meter, _ = _meter(8)
    hc = _hems(12)
    net.add_node(METER, meter)
    net.add_node(HEMS, hc)
    net.call_at(0.0, METER, meter.start)
    net.call_at(0.1, HEMS, hc.start)
    assert net.run_while(lambda: not net.events_of(HEMS, NodeDiscovered), 30.0)

    # the meter reboots: all PANA state gone; the HEMS notices by its keep-alive (§6.4)
    # and reconnects through the stages (§6.5); then the controller probes the meter again
    net.remove_node(METER)
    meter2, obj2 = _meter(8)
    net.add_node(METER, meter2)
    net.call_at(net.now, METER, meter2.start)
    ups = len(net.events_of(HEMS, LinkUp))
    learned = len(net.events_of(HEMS, PropertyMapsRetrieved))
    lost = hc.controller.get(hc.meter, SMART_METER, [0xE7], net.now)  # the meter can't decrypt
    net.service(HEMS)
    assert net.run_while(
        lambda: len(net.events_of(HEMS, PropertyMapsRetrieved)) == learned, net.now + 400.0
    ), "the controller never learned the restarted meter"
    assert len(net.events_of(HEMS, LinkUp)) > ups
    assert any(f.handle == lost for f in net.events_of(HEMS, RequestFailed))
    # same seed, same session id as before the reboot: the stale keys made way (hems.py)
    assert hc.hems.counters["session_id_reused"] == 1
    e7 = _request(net, hc.controller.get(hc.meter, SMART_METER, [0xE7], net.now))
    assert e7.props[0].edt == obj2.get(0xE7, net.now)
