"""EchonetController against real EchonetNode smart meters on the virtual network (multicast
groups included): discovery, property maps, the request services, TID matching, retries,
pacing, §2.3 OPC adaptation and bad input."""

from __future__ import annotations

import itertools
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.addr import Addr
from amistack.crypto.rand import seeded_random
from amistack.echonet.controller import (
    CONTROLLER_EOJ,
    ControllerConfig,
    EchonetController,
    decode_instance_list,
)
from amistack.echonet.errors import EchonetDecodeError
from amistack.echonet.events import (
    NodeDiscovered,
    NotificationReceived,
    ProbeFailed,
    PropertyMaps,
    PropertyMapsRetrieved,
    RequestCompleted,
    RequestFailed,
)
from amistack.echonet.frame import Eoj, Esv, Frame, Property
from amistack.echonet.node import MULTICAST_V4, NODE_PROFILE, EchonetNode, NodeConfig
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.meter.model import MeterModel
from amistack.sim import LinkConfig, VirtualClock, VirtualNetwork

METER = Eoj(0x02, 0x88, 0x01)
HEMS: Addr = ("192.168.10.2", 3610)
M1: Addr = ("192.168.10.21", 3610)
M2: Addr = ("192.168.10.22", 3610)
T0 = 1_750_000_000.0
T = TypeVar("T")


class LimitedNode(EchonetNode):
    """A real meter node that handles at most `opc` properties per request: it answers the first
    `opc` and leaves the rest out (the behaviour guideline §2.3 warns about); with `sna=True` it
    refuses any request with more properties outright (not-possible, all PDC=0)."""

    def __init__(self, *args: Any, opc: int, sna: bool = False, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.opc = opc
        self.sna = sna
        self.seen_opc: list[int] = []

    def _answer(self, obj: Any, req: Frame, addr: Addr, now: float) -> Frame | None:
        self.seen_opc.append(len(req.props))
        if req.esv == Esv.SETGET or len(req.props) <= self.opc:
            return super()._answer(obj, req, addr, now)
        if self.sna:
            sna = Esv.GET_SNA if req.esv == Esv.GET else Esv.SETC_SNA
            props = tuple(Property(p.epc) if req.esv == Esv.GET else p for p in req.props)
            return Frame(req.tid, obj.eoj, req.seoj, sna, props)
        short = Frame(req.tid, req.seoj, req.deoj, req.esv, req.props[: self.opc])
        return super()._answer(obj, short, addr, now)


def meter_node(seed: int = 1, cls: type[EchonetNode] = EchonetNode, **kw: Any) -> EchonetNode:
    return cls(
        NodeProfile([]),
        [SmartMeterObject(MeterModel(seed))],
        seeded_random(seed),
        NodeConfig(multicast_groups=(MULTICAST_V4,), multicast_reply_delay=0.5),
        **kw,
    )


def network(
    config: ControllerConfig | None = None,
    meters: dict[Addr, EchonetNode] | None = None,
    start: bool = True,
    latency: float = 0.005,
) -> tuple[VirtualNetwork, EchonetController]:
    net = VirtualNetwork(
        VirtualClock(T0), default_link=LinkConfig(latency=latency), capture=100_000
    )
    ctl = EchonetController(config or ControllerConfig(), seeded_random(7))
    net.add_node(HEMS, ctl)
    net.join_group(MULTICAST_V4, HEMS)
    for addr, node in (meters if meters is not None else {M1: meter_node()}).items():
        net.add_node(addr, node)
        net.join_group(MULTICAST_V4, addr)
    if start:
        net.call_at(T0, HEMS, ctl.start)
    return net, ctl


def run_for(net: VirtualNetwork, kind: type[T], n: int = 1, max_s: float = 60.0) -> list[T]:
    """Run until the controller has produced `n` events of `kind` (fails after `max_s`)."""
    net.run_while(lambda: len(net.events_of(HEMS, kind)) < n, net.now + max_s)
    found = net.events_of(HEMS, kind)
    assert len(found) >= n, f"only {len(found)} {kind.__name__} after {max_s} s"
    return found


def request(net: VirtualNetwork, ctl: EchonetController, call: Any, *args: Any) -> int:
    handle: int = call(*args, net.now)
    net.service(HEMS)
    return handle


def result(
    net: VirtualNetwork, handle: int, max_s: float = 60.0
) -> RequestCompleted | RequestFailed:
    def pending() -> bool:
        return not any(
            isinstance(e, RequestCompleted | RequestFailed) and e.handle == handle
            for e in net.events[HEMS]
        )

    net.run_while(pending, net.now + max_s)
    [ev] = [
        e
        for e in net.events[HEMS]
        if isinstance(e, RequestCompleted | RequestFailed) and e.handle == handle
    ]
    return ev


def completed(net: VirtualNetwork, handle: int, max_s: float = 60.0) -> RequestCompleted:
    ev = result(net, handle, max_s)
    assert isinstance(ev, RequestCompleted), ev
    return ev


def discovered(
    config: ControllerConfig | None = None, **kw: Any
) -> tuple[VirtualNetwork, EchonetController]:
    net, ctl = network(config, **kw)
    run_for(net, PropertyMapsRetrieved)
    return net, ctl


# -- discovery --------------------------------------------------------------------------------


def test_multicast_discovery_finds_both_meters_and_their_property_maps() -> None:
    net, ctl = network(meters={M1: meter_node(1), M2: meter_node(2)})
    found = run_for(net, NodeDiscovered, 2)
    assert {e.addr for e in found} == {M1, M2}
    assert all(e.instances == (METER,) and e.via == "get" for e in found)
    maps = run_for(net, PropertyMapsRetrieved, 2)
    meter = net.engine(M1)
    assert isinstance(meter, EchonetNode)
    obj = meter.object(METER)
    assert obj is not None
    for ev in maps:
        assert ev.eoj == METER
        assert ev.maps.get == obj.get_map and ev.maps.set == obj.set_map  # 16+: bitmap form
        assert ev.maps.anno == obj.inf_map  # below 16: list form
        assert 0xE7 in ev.maps.get and 0xE5 in ev.maps.set
    assert ctl.nodes[M1].maps[METER] == maps[0].maps or ctl.nodes[M1].maps[METER] == maps[1].maps
    assert ctl.nodes[M2].find(0x0288) == METER
    # the discovery Get went to the group once; the answers came after the §2.4 delay
    gets = [r for r in net.capture if r[1] == HEMS and r[2] == MULTICAST_V4]
    assert Frame.decode(gets[0][3]).props == (Property(0xD6),)
    # the controller's own startup INF (§4.2, within 2 s) listed its controller object
    net.run_until(T0 + 3.0)
    infs = net.events_of(M1, NotificationReceived)
    assert infs and infs[0].frame.props == (Property(0xD5, b"\x01" + CONTROLLER_EOJ.encode()),)


def test_rediscovery_is_periodic_and_reports_only_changes() -> None:
    net, _ctl = network(ControllerConfig(rediscover_interval=600.0))
    run_for(net, PropertyMapsRetrieved)
    net.run_until(T0 + 1300.0)
    d6 = [
        r
        for r in net.capture
        if r[1] == HEMS and r[2] == MULTICAST_V4 and Frame.decode(r[3]).esv == Esv.GET
    ]
    assert len(d6) == 3  # at start, +600 s, +1200 s
    assert len(net.events_of(HEMS, NodeDiscovered)) == 1  # nothing changed
    assert len(net.events_of(HEMS, PropertyMapsRetrieved)) == 1  # maps not read again


def test_unanswered_multicast_get_is_asked_again_never_a_multicast_inf_req() -> None:
    """Guideline §2.4.1 / §4.3: a multicast INF_REQ makes every node answer by multicast, so
    discovery never sends one (it used to, when nobody answered the Get of D6). A discovery
    nobody answered is asked once more with a Get of D6; a lost first Get is then recovered."""
    net, ctl = network(start=False)
    sent: list[Frame] = []
    dropped = 0

    def watch(_t: float, _s: Addr, dst: Addr, data: bytes) -> bool:
        nonlocal dropped
        if dst != MULTICAST_V4:
            return True
        f = Frame.decode(data)
        sent.append(f)
        if f.esv == Esv.GET and not dropped:
            dropped += 1
            return False  # the first discovery Get is lost
        return True

    net.filters.append(watch)
    net.call_at(T0, HEMS, ctl.start)
    [ev] = run_for(net, NodeDiscovered)
    assert ev.via == "get" and ev.addr == M1 and ev.instances == (METER,)
    assert ctl.counters["discovery_retry"] == 1
    assert Esv.INF_REQ not in [f.esv for f in sent]
    gets = [f for f in sent if f.esv == Esv.GET]
    assert len(gets) == 2 and all(f.props == (Property(0xD6),) for f in gets)

    # nobody at all: two Gets per discovery round, still no INF_REQ
    quiet, ctl2 = network(meters={})
    quiet.run_until(T0 + 60.0)
    assert ctl2.counters["discovery_retry"] == 1 and ctl2.counters["tx_discovery"] == 2


def test_inf_from_an_unknown_node_makes_the_controller_learn_it() -> None:
    """A meter that starts after the controller: its startup D5 INF is learnt directly; a node
    whose first sign of life is another INF (EA) is probed with a unicast Get of D6."""
    net, ctl = network(meters={})
    net.run_until(T0 + 10.0)  # discovery found nobody
    late = meter_node(3)
    net.add_node(M1, late)
    net.join_group(MULTICAST_V4, M1)
    net.call_at(net.now, M1, late.start)
    [ev] = run_for(net, NodeDiscovered)
    assert ev.via == "inf" and ev.addr == M1
    run_for(net, PropertyMapsRetrieved)

    other = meter_node(4)
    net.add_node(M2, other)
    net.join_group(MULTICAST_V4, M2)
    net.call_at(net.now, M2, lambda now: other.announce(METER, [0x80], now))
    evs = run_for(net, NodeDiscovered, 2)
    assert evs[1].addr == M2 and evs[1].via == "get"
    assert ctl.counters["inf_from_unknown"] == 1

    # the first node now announces a changed instance list: learnt, old maps dropped, new read
    second = Eoj(0x02, 0x88, 0x02)
    d5 = Frame(1, NODE_PROFILE, NODE_PROFILE, Esv.INF, (Property(0xD5, b"\x01" + second.encode()),))
    net.inject(M1, MULTICAST_V4, d5.encode())
    evs = run_for(net, NodeDiscovered, 3)
    assert evs[2].addr == M1 and evs[2].via == "inf" and evs[2].instances == (second,)
    assert METER not in ctl.nodes[M1].maps
    net.run_until(net.now + 10.0)  # the maps Get of 028802 is refused by the node (unknown EOJ)
    assert ctl.nodes[M1].maps[second] == PropertyMaps()


def test_one_inf_with_several_d5_lists_every_instance() -> None:
    """§2.5: a node with more than 84 objects announces them in one INF, a D5 property per 84
    (OPC >= 2); the controller learns all of them, not just the first 84."""
    net, ctl = network(meters={}, config=ControllerConfig(fetch_property_maps=False))
    net.run_until(T0 + 10.0)
    eojs = [Eoj(0x02, 0x88, i) for i in range(1, 101)]

    def d5(part: list[Eoj]) -> Property:
        return Property(0xD5, bytes([len(part)]) + b"".join(e.encode() for e in part))

    inf = Frame(1, NODE_PROFILE, NODE_PROFILE, Esv.INF, (d5(eojs[:84]), d5(eojs[84:])))
    net.inject(M1, MULTICAST_V4, inf.encode())
    [ev] = run_for(net, NodeDiscovered)
    assert ev.via == "inf" and ev.instances == tuple(eojs)
    assert ctl.nodes[M1].instances == tuple(eojs)


def test_probe_unicast_and_probe_failure() -> None:
    net, ctl = network(
        ControllerConfig(multicast_groups=(), request_timeout=1.0, retries=1, late_grace=0.5),
        start=False,
    )
    net.call_at(T0, HEMS, lambda now: ctl.probe(M1, now))
    [ev] = run_for(net, NodeDiscovered)
    assert ev.addr == M1 and ev.via == "get"
    # nobody at this address: Get D6 (2 attempts), then INF_REQ D5 (2 attempts), then ProbeFailed
    nobody: Addr = ("192.168.10.99", 3610)
    net.call_at(net.now, HEMS, lambda now: ctl.probe(nobody, now))
    [fail] = run_for(net, ProbeFailed)
    assert fail.addr == nobody and "timeout" in fail.reason
    to_nobody = [Frame.decode(r[3]) for r in net.capture if r[2] == nobody]
    assert [f.esv for f in to_nobody] == [Esv.GET, Esv.GET, Esv.INF_REQ, Esv.INF_REQ]


# -- request services ---------------------------------------------------------------------------


def test_get_set_seti_setget_inf_req() -> None:
    net, ctl = discovered()
    r = completed(net, request(net, ctl, ctl.get, M1, METER, [0xE7, 0xE1, 0xD3]))
    assert r.ok and r.esv == Esv.GET_RES and r.addr == M1 and r.deoj == METER
    assert [p.epc for p in r.props] == [0xE7, 0xE1, 0xD3]
    assert len(r.value(0xE7) or b"") == 4 and r.elapsed == pytest.approx(0.01, abs=1e-6)

    r = completed(net, request(net, ctl, ctl.set, M1, METER, [(0xE5, b"\x01")]))
    assert r.ok and r.esv == Esv.SET_RES and r.props == (Property(0xE5),)

    h = ctl.set(M1, METER, [(0xE5, b"\x02")], net.now, ack=False)  # SetI
    net.service(HEMS)
    r = completed(net, h)
    assert r.ok and r.esv == Esv.SETI and r.elapsed == pytest.approx(1.0)  # seti_wait
    r = completed(net, request(net, ctl, ctl.get, M1, METER, [0xE5]))
    assert r.value(0xE5) == b"\x02"

    h = ctl.set(M1, METER, [(0xE5, b"\x64")], net.now, ack=False)  # 100: out of range (§2.2)
    net.service(HEMS)
    r = completed(net, h)
    assert not r.ok and r.esv == Esv.SETI_SNA and r.refused == (0xE5,)

    r = completed(net, request(net, ctl, ctl.setget, M1, METER, [(0xE5, b"\x03")], [0xE5, 0xE2]))
    assert r.ok and r.esv == Esv.SETGET_RES and r.value(0xE5) == b"\x03"
    assert (r.value(0xE2) or b"")[:2] == b"\x00\x03"

    r = completed(net, request(net, ctl, ctl.inf_req, M1, METER, [0x80]))
    assert r.ok and r.esv == Esv.INF and r.value(0x80) == b"\x30"
    assert ctl.counters["unmatched_response"] == 0


def test_not_possible_answers_are_partial_results() -> None:
    net, ctl = discovered()
    r = completed(net, request(net, ctl, ctl.get, M1, METER, [0xE7, 0xAA]))
    assert not r.ok and r.esv == Esv.GET_SNA
    assert r.value(0xE7) is not None and r.unavailable == (0xAA,)
    r = completed(net, request(net, ctl, ctl.set, M1, METER, [(0x81, b"\x08"), (0xE5, b"\xff")]))
    assert not r.ok and r.esv == Esv.SETC_SNA and r.refused == (0xE5,)
    # nothing of it readable: asked one by one (§2.3 probe) -- still not available, and the
    # device is not limited for it
    r = completed(net, request(net, ctl, ctl.get, M1, METER, [0xAA, 0xAB]))
    assert r.esv == Esv.GET_SNA and r.unavailable == (0xAA, 0xAB)
    assert ctl.counters["opc_probe"] == 1 and ctl.opc_limit(M1[0]) == 0


# -- §2.3 OPC adaptation --------------------------------------------------------------------------


def test_short_answers_split_later_requests() -> None:
    node = meter_node(cls=LimitedNode, opc=2)
    assert isinstance(node, LimitedNode)
    net, ctl = discovered(meters={M1: node})  # the 3-map Get already taught it
    assert ctl.opc_limit(M1[0]) == 2
    node.seen_opc.clear()
    r = completed(net, request(net, ctl, ctl.get, M1, METER, [0x80, 0xE7, 0xE0, 0xE1, 0xD3]))
    assert r.ok and [p.epc for p in r.props] == [0x80, 0xE7, 0xE0, 0xE1, 0xD3]
    assert node.seen_opc == [2, 2, 1]
    maps = net.events_of(HEMS, PropertyMapsRetrieved)[0].maps
    assert maps.get and maps.set and maps.anno  # all three maps despite the short answer


def test_sna_for_many_properties_limits_the_device_to_one() -> None:
    node = meter_node(cls=LimitedNode, opc=1, sna=True)
    assert isinstance(node, LimitedNode)
    net, ctl = discovered(meters={M1: node})
    assert ctl.opc_limit(M1[0]) == 1 and ctl.counters["opc_probe"] == 1
    node.seen_opc.clear()
    r = completed(net, request(net, ctl, ctl.get, M1, METER, [0xE7, 0xE0]))
    assert r.ok and node.seen_opc == [1, 1]
    r = completed(net, request(net, ctl, ctl.set, M1, METER, [(0xE5, b"\x01"), (0x81, b"\x08")]))
    assert r.ok and r.esv == Esv.SET_RES


# -- TID matching, retries, pacing ---------------------------------------------------------------


def test_responses_match_tid_source_and_seoj_only() -> None:
    net, ctl = discovered()
    held: list[bytes] = []

    def hold(_t: float, src: Addr, _d: Addr, data: bytes) -> bool:
        if src == M1:
            held.append(data)
            return False
        return True

    net.filters.append(hold)
    h = request(net, ctl, ctl.get, M1, METER, [0xE7])
    net.run_until(net.now + 0.1)
    [answer] = held
    good = Frame.decode(answer)
    net.filters.clear()
    wrong_seoj = Frame(good.tid, Eoj(0x02, 0x88, 0x02), good.deoj, good.esv, good.props)
    net.inject(M2, HEMS, answer)  # right TID, wrong host
    net.inject(M1, HEMS, wrong_seoj.encode())
    net.inject(
        M1, HEMS, Frame(good.tid ^ 0x8000, good.seoj, good.deoj, good.esv, good.props).encode()
    )
    net.run_until(net.now + 0.1)
    assert ctl.counters["unmatched_response"] == 3
    net.inject(("192.168.10.21", 40000), HEMS, answer)  # any source port of the right host
    r = completed(net, h)
    assert r.ok and r.value(0xE7) == good.props[0].edt
    net.inject(M1, HEMS, answer)
    net.run_until(net.now + 0.1)
    assert ctl.counters["duplicate_response"] == 1
    assert (
        len([e for e in net.events[HEMS] if isinstance(e, RequestCompleted) and e.handle == h]) == 1
    )


def test_lost_requests_are_retried_then_fail() -> None:
    cfg = ControllerConfig(request_timeout=2.0, retries=2, late_grace=3.0)
    net, ctl = discovered(cfg)
    dropped = 0

    def drop_two(_t: float, _s: Addr, dst: Addr, _data: bytes) -> bool:
        nonlocal dropped
        if dst == M1 and dropped < 2:
            dropped += 1
            return False
        return True

    net.filters.append(drop_two)
    t = net.now
    r = completed(net, request(net, ctl, ctl.get, M1, METER, [0xE7]))
    assert r.ok and r.elapsed == pytest.approx(4.01)
    assert ctl.counters["retry"] == 2

    net.filters.append(lambda _t, _s, dst, _d: dst != M1)
    t = net.now
    ev = result(net, request(net, ctl, ctl.get, M1, METER, [0xE7]))
    assert isinstance(ev, RequestFailed) and ev.reason == "timeout after 3 attempts"
    assert net.now == pytest.approx(t + 3 * 2.0 + 3.0)


def test_pacing_one_outstanding_and_min_interval() -> None:
    cfg = ControllerConfig(max_outstanding_per_device=1, min_interval_per_device=0.5)
    net, ctl = discovered(cfg)
    start = len(net.capture)
    handles = [ctl.get(M1, METER, [0xE7], net.now) for _ in range(4)]
    net.service(HEMS)
    rs = [completed(net, h) for h in handles]
    assert all(r.ok for r in rs)
    sent = [r[0] for r in list(net.capture)[start:] if r[2] == M1]
    assert len(sent) == 4
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert all(g >= 0.5 - 1e-9 for g in gaps)

    cfg = ControllerConfig(max_outstanding_per_device=2)
    net, ctl = discovered(cfg)
    start = len(net.capture)
    handles = [ctl.get(M1, METER, [0xE7], net.now) for _ in range(5)]
    net.service(HEMS)
    in_flight_now = [r for r in list(net.capture)[start:] if r[2] == M1]
    assert len(in_flight_now) == 2  # the other three wait in the device queue
    assert all(completed(net, h).ok for h in handles)


def test_queue_full_fails_at_once() -> None:
    cfg = ControllerConfig(max_outstanding_per_device=1, max_queued_per_device=2)
    net, ctl = discovered(cfg)
    hs = [ctl.get(M1, METER, [0xE7], net.now) for _ in range(4)]
    net.service(HEMS)
    ev = result(net, hs[3])
    assert isinstance(ev, RequestFailed) and ev.reason == "queue full"
    assert all(completed(net, h).ok for h in hs[:3])


# -- the controller's own node, bad input ----------------------------------------------------------


def test_controller_answers_requests_for_its_own_node_profile() -> None:
    ctl = EchonetController(ControllerConfig(), seeded_random(1))
    asker: Addr = ("192.168.10.50", 51234)  # any source port
    ctl.receive_datagram(
        Frame(9, METER, NODE_PROFILE, Esv.GET, (Property(0xD6), Property(0x80))).encode(),
        asker,
        1.0,
    )
    [(data, dest)] = ctl.datagrams_to_send(1.0)
    assert dest == ("192.168.10.50", 3610)  # answers always to port 3610
    r = Frame.decode(data)
    assert r.esv == Esv.GET_RES and r.tid == 9
    assert r.props == (Property(0xD6, b"\x01" + CONTROLLER_EOJ.encode()), Property(0x80, b"\x30"))
    ctl.receive_datagram(
        Frame(10, METER, CONTROLLER_EOJ, Esv.GET, (Property(0x8A),)).encode(), asker, 1.0
    )
    [(data, _)] = ctl.datagrams_to_send(1.0)
    assert Frame.decode(data).props == (Property(0x8A, b"\xff\xff\xff"),)


def test_malformed_datagrams_are_counted_and_dropped() -> None:
    net, ctl = discovered()
    for junk in (
        b"",
        b"\x10",
        b"\x10\x81\x00\x01\x02\x88\x01\x05\xff\x01\x72\x01\xe7\x04\x00",
        b"\x20\x81" + bytes(10),
    ):
        net.inject(M1, HEMS, junk)
    net.run_until(net.now + 0.1)
    assert ctl.counters["malformed"] == 4
    assert completed(net, request(net, ctl, ctl.get, M1, METER, [0xE7])).ok


def test_infs_from_many_unknown_sources_probe_a_bounded_number() -> None:
    ctl = EchonetController(ControllerConfig(multicast_groups=()), seeded_random(3))
    inf = Frame(1, METER, NODE_PROFILE, Esv.INF, (Property(0x80, b"\x30"),)).encode()
    for i in range(200):
        ctl.receive_datagram(inf, (f"10.9.{i // 250}.{i % 250}", 3610), 1.0, multicast=True)
    sent = ctl.datagrams_to_send(1.0)
    assert len(sent) == 64 and ctl.counters["probe_dropped"] == 136
    assert ctl.counters["inf_from_unknown"] == 200


def test_instance_list_decoding() -> None:
    assert decode_instance_list(b"\x01\x02\x88\x01") == (METER,)
    assert decode_instance_list(b"\x55" + METER.encode()) == (METER,)  # one of several D5
    for bad in (b"", b"\x01\x02\x88", b"\x00\x02\x88\x01"):
        with pytest.raises(EchonetDecodeError):
            decode_instance_list(bad)


def test_bad_requests_raise_before_anything_is_sent() -> None:
    ctl = EchonetController(ControllerConfig(), seeded_random(1))
    with pytest.raises(ValueError):
        ctl.get(M1, METER, [], 0.0)
    with pytest.raises(ValueError):
        ctl.get(M1, METER, [0x1E7], 0.0)
    with pytest.raises(ValueError):
        ctl.set(M1, METER, [(0xE5, bytes(300))], 0.0)
    assert ctl.datagrams_to_send(0.0) == [] and ctl.pending() == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.booleans())
def test_fuzz_random_bytes_never_raise(datagrams: list[bytes], multicast: bool) -> None:
    ctl = EchonetController(ControllerConfig(), seeded_random(2))
    ctl.start(0.0)
    h = ctl.get(M1, METER, [0xE7, 0xE0], 0.0)
    sent = ctl.datagrams_to_send(0.0)
    tid = Frame.decode(next(d for d, a in sent if a == M1)).tid
    for i, data in enumerate(datagrams):
        if len(data) >= 4 and i % 2:  # half of them with a live TID, to reach the matching code
            data = data[:2] + tid.to_bytes(2, "big") + data[4:]
        ctl.receive_datagram(data, M1, 0.1, multicast=multicast)
        ctl.datagrams_to_send(0.1)
        while ctl.next_event() is not None:
            pass
    now = 0.1
    while (t := ctl.get_timer()) is not None and t < 100.0:
        now = t
        ctl.handle_timer(now)
        ctl.datagrams_to_send(now)
        while ctl.next_event() is not None:
            pass
    assert h == 1
