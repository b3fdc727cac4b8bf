"""EchonetNode: guideline chapter 2 behaviour on tiny in-test objects (real engine, no mocks)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.crypto.rand import seeded_random
from amistack.echonet.events import (
    Announced,
    Format2Received,
    NotificationReceived,
    PropertiesWritten,
)
from amistack.echonet.frame import Eoj, Esv, Frame, Property
from amistack.echonet.node import (
    MAX_INSTANCE_LIST,
    MULTICAST_V4,
    NODE_PROFILE,
    EchonetNode,
    NodeConfig,
    OutOfRangeReply,
    UnknownObjectReply,
)
from amistack.echonet.objects.base import Access, DeviceObject, PropertySpec
from amistack.echonet.objects.node_profile import NodeProfile

CONTROLLER = Eoj(0x05, 0xFF, 0x01)
METER = Eoj(0x02, 0x88, 0x01)
HEMS: tuple[str, int] = ("192.0.2.10", 40000)  # a controller sending from an ephemeral port


class TinyObject(DeviceObject):
    """A stand-in device: 0x80 (set/get, 0x30/0x31), E5 (0..99, announced), E7 (read-only),
    0xB0 (steps of 10: nearest step, §2.1), 0xB1 (0x41/0x42; 0x43 is an unsupported step that is
    ignored, §2.1)."""

    def __init__(self, eoj: Eoj) -> None:
        rw = Access.GET | Access.SET
        super().__init__(
            eoj,
            [
                PropertySpec(
                    0x80, "operation status", rw | Access.ANNO, (1,), values=frozenset({0x30, 0x31})
                ),
                PropertySpec(0xE5, "day", rw | Access.ANNO, (1,), lo=0, hi=99),
                PropertySpec(0xE7, "power", Access.GET),
                PropertySpec(0xB0, "level", rw, (1,), lo=0, hi=100),
                PropertySpec(0xB1, "mode", rw, (1,), values=frozenset({0x41, 0x42, 0x43})),
            ],
        )
        self._values.update(
            {
                0x80: b"\x30",
                0xE5: b"\x00",
                0xE7: (1234).to_bytes(4, "big"),
                0xB0: b"\x14",
                0xB1: b"\x41",
            }
        )

    def _apply(self, epc: int, edt: bytes, now: float) -> None:
        if epc == 0xB0:
            edt = bytes([min(100, round(edt[0] / 10) * 10)])
        if epc == 0xB1 and edt == b"\x43":
            return
        super()._apply(epc, edt, now)


def make_node(config: NodeConfig | None = None, devices: int = 1) -> EchonetNode:
    objs = [TinyObject(Eoj(0x02, 0x88, i + 1)) for i in range(devices)]
    profile = NodeProfile([], unique_id=b"node-1")
    node = EchonetNode(profile, objs, seeded_random(7), config)
    return node


def request(node: EchonetNode, frame: Frame, now: float = 0.0, addr=HEMS) -> list[Frame]:
    node.receive_datagram(frame.encode(), addr, now)
    out = [(d, a) for d, a in node.datagrams_to_send(now) if a != MULTICAST_V4]
    for _, dest in out:
        assert dest == (addr[0], 3610)  # answers always go to port 3610 of the requester
    return [Frame.decode(d) for d, _ in out]


def events(node: EchonetNode) -> list[object]:
    out = []
    while (ev := node.next_event()) is not None:
        out.append(ev)
    return out


def test_get_answers_values_from_the_object() -> None:
    node = make_node()
    [r] = request(node, Frame(0x1234, CONTROLLER, METER, Esv.GET, (Property(0xE7), Property(0x80))))
    assert r.esv == Esv.GET_RES and r.tid == 0x1234
    assert r.seoj == METER and r.deoj == CONTROLLER
    assert r.props == (Property(0xE7, (1234).to_bytes(4, "big")), Property(0x80, b"\x30"))


def test_get_unknown_epc_is_get_sna_with_pdc_zero_for_it_only() -> None:
    node = make_node()
    [r] = request(node, Frame(1, CONTROLLER, METER, Esv.GET, (Property(0x80), Property(0xAA))))
    assert r.esv == Esv.GET_SNA
    assert r.props == (Property(0x80, b"\x30"), Property(0xAA, b""))


def test_unknown_deoj_unicast_gets_sna_from_the_asked_eoj() -> None:
    node = make_node()
    other = Eoj(0x01, 0x30, 0x01)
    [r] = request(node, Frame(9, CONTROLLER, other, Esv.GET, (Property(0x80),)))
    assert r.esv == Esv.GET_SNA and r.seoj == other and r.props == (Property(0x80),)
    assert node.counters["unknown_deoj"] == 1
    dropping = make_node(NodeConfig(unknown_object=UnknownObjectReply.DROP))
    assert request(dropping, Frame(9, CONTROLLER, other, Esv.GET, (Property(0x80),))) == []


def test_opc_zero_get_is_answered_not_possible() -> None:
    node = make_node()
    [r] = request(node, Frame(3, CONTROLLER, METER, Esv.GET, ()))
    assert r.esv == Esv.GET_SNA and r.props == ()


def test_setc_accepted_then_read_back_and_reported() -> None:
    node = make_node()
    [r] = request(node, Frame(5, CONTROLLER, METER, Esv.SETC, (Property(0x80, b"\x31"),)))
    assert r.esv == Esv.SET_RES and r.props == (Property(0x80),)
    [g] = request(node, Frame(6, CONTROLLER, METER, Esv.GET, (Property(0x80),)))
    assert g.props == (Property(0x80, b"\x31"),)
    written = [e for e in events(node) if isinstance(e, PropertiesWritten)]
    assert written == [PropertiesWritten(METER, (Property(0x80, b"\x31"),), HEMS)]


def test_seti_success_is_silent_failure_is_seti_sna_echoing_edt() -> None:
    node = make_node()
    assert request(node, Frame(7, CONTROLLER, METER, Esv.SETI, (Property(0x80, b"\x30"),))) == []
    [r] = request(
        node,
        Frame(8, CONTROLLER, METER, Esv.SETI, (Property(0x80, b"\x31"), Property(0xE7, b"\0" * 4))),
    )
    assert r.esv == Esv.SETI_SNA
    assert r.props == (Property(0x80), Property(0xE7, b"\0" * 4))


def test_out_of_range_set_is_sna_by_default_and_configurable() -> None:  # §2.2
    node = make_node()
    [r] = request(node, Frame(1, CONTROLLER, METER, Esv.SETC, (Property(0xE5, bytes([100])),)))
    assert r.esv == Esv.SETC_SNA and r.props == (Property(0xE5, bytes([100])),)
    clamping = make_node(NodeConfig(out_of_range=OutOfRangeReply.CLAMP))
    [r] = request(clamping, Frame(1, CONTROLLER, METER, Esv.SETC, (Property(0xE5, bytes([100])),)))
    assert r.esv == Esv.SET_RES
    [g] = request(clamping, Frame(2, CONTROLLER, METER, Esv.GET, (Property(0xE5),)))
    assert g.props == (Property(0xE5, bytes([99])),)  # §2.1: clamped into the range
    lenient = make_node(NodeConfig(out_of_range=OutOfRangeReply.ACCEPT))
    [r] = request(lenient, Frame(1, CONTROLLER, METER, Esv.SETC, (Property(0xE5, bytes([100])),)))
    assert r.esv == Esv.SET_RES and r.props == (Property(0xE5),)
    [g] = request(lenient, Frame(2, CONTROLLER, METER, Esv.GET, (Property(0xE5),)))
    assert g.props == (Property(0xE5, b"\x00"),)  # not stored


def test_nearest_step_and_ignored_step_are_answered_as_written() -> None:  # §2.1
    node = make_node()
    [r] = request(
        node,
        Frame(1, CONTROLLER, METER, Esv.SETC, (Property(0xB0, bytes([37])), Property(0xB1, b"C"))),
    )
    assert r.esv == Esv.SET_RES
    [g] = request(node, Frame(2, CONTROLLER, METER, Esv.GET, (Property(0xB0), Property(0xB1))))
    assert g.props == (Property(0xB0, bytes([40])), Property(0xB1, b"\x41"))
    written = [e for e in events(node) if isinstance(e, PropertiesWritten)]
    assert written[0].props == (Property(0xB0, bytes([40])), Property(0xB1, b"\x41"))


def test_setget_writes_first_then_reads() -> None:  # §2.6
    node = make_node()
    [r] = request(
        node,
        Frame(4, CONTROLLER, METER, Esv.SETGET, (Property(0xE5, b"\x05"),), (Property(0xE5),)),
    )
    assert r.esv == Esv.SETGET_RES
    assert r.props == (Property(0xE5),) and r.props_get == (Property(0xE5, b"\x05"),)


def test_setget_unsupported_is_5e_with_both_counts_zero() -> None:  # §2.6
    node = make_node(NodeConfig(setget=False))
    [r] = request(
        node,
        Frame(4, CONTROLLER, METER, Esv.SETGET, (Property(0xE5, b"\x05"),), (Property(0xE5),)),
    )
    assert r.esv == Esv.SETGET_SNA and r.props == () and r.props_get == ()
    assert r.encode()[-2:] == b"\x00\x00"
    [g] = request(node, Frame(5, CONTROLLER, METER, Esv.GET, (Property(0xE5),)))
    assert g.props == (Property(0xE5, b"\x00"),)  # nothing was written


def test_announced_epc_change_is_multicast_as_inf() -> None:
    node = make_node()
    node.receive_datagram(
        Frame(1, CONTROLLER, METER, Esv.SETC, (Property(0xE5, b"\x02"),)).encode(), HEMS, 0.0
    )
    out = node.datagrams_to_send(0.0)
    assert [a for _, a in out] == [(HEMS[0], 3610), MULTICAST_V4]  # the answer first
    infs = [(Frame.decode(d), a) for d, a in out if a == MULTICAST_V4]
    assert len(infs) == 1
    inf = infs[0][0]
    assert inf.esv == Esv.INF and inf.seoj == METER and inf.props == (Property(0xE5, b"\x02"),)
    # writing the same value again changes nothing: no announcement
    node.receive_datagram(
        Frame(2, CONTROLLER, METER, Esv.SETC, (Property(0xE5, b"\x02"),)).encode(), HEMS, 0.0
    )
    assert [a for _, a in node.datagrams_to_send(0.0)] == [(HEMS[0], 3610)]


def test_inf_req_answered_with_inf_to_the_requester() -> None:
    node = make_node()
    [r] = request(node, Frame(2, CONTROLLER, METER, Esv.INF_REQ, (Property(0xE7),)))
    assert r.esv == Esv.INF and r.props[0].epc == 0xE7


def test_multicast_request_answered_unicast_after_bounded_random_delay() -> None:  # §2.4
    node = make_node(NodeConfig(multicast_reply_delay=1.5))
    get = Frame(11, CONTROLLER, NODE_PROFILE, Esv.GET, (Property(0xD6),))
    node.receive_datagram(get.encode(), HEMS, 10.0, multicast=True)
    assert node.datagrams_to_send(10.0) == []
    at = node.get_timer()
    assert at is not None and 10.0 <= at < 11.5
    node.handle_timer(at)
    [(data, dest)] = node.datagrams_to_send(at)
    assert dest == (HEMS[0], 3610)
    r = Frame.decode(data)
    assert r.esv == Esv.GET_RES and r.props == (Property(0xD6, b"\x01" + METER.encode()),)
    assert node.get_timer() is None


def test_multicast_delays_differ_between_requests_and_nodes() -> None:
    delays = set()
    for seed in range(5):
        node = EchonetNode(NodeProfile([]), [TinyObject(METER)], seeded_random(seed))
        get = Frame(1, CONTROLLER, NODE_PROFILE, Esv.GET, (Property(0xD6),))
        node.receive_datagram(get.encode(), HEMS, 0.0, multicast=True)
        delays.add(node.get_timer())
    assert len(delays) == 5


def test_multicast_inf_req_is_answered_unicast_never_multicast() -> None:  # §2.4
    node = make_node()
    req = Frame(3, CONTROLLER, Eoj(0x0E, 0xF0, 0x00), Esv.INF_REQ, (Property(0xD5),))
    node.receive_datagram(req.encode(), HEMS, 0.0, multicast=True)
    at = node.get_timer()
    assert at is not None
    node.handle_timer(at)
    out = node.datagrams_to_send(at)
    assert [a for _, a in out] == [(HEMS[0], 3610)]
    assert Frame.decode(out[0][0]).esv == Esv.INF


def test_multicast_for_a_class_we_do_not_host_is_silent() -> None:
    node = make_node()
    req = Frame(3, CONTROLLER, Eoj(0x01, 0x30, 0x00), Esv.GET, (Property(0x80),))
    node.receive_datagram(req.encode(), HEMS, 0.0, multicast=True)
    assert node.get_timer() is None and node.datagrams_to_send(0.0) == []


def test_instance_zero_addresses_every_instance_of_the_class() -> None:
    node = make_node(devices=3)
    replies = request(node, Frame(1, CONTROLLER, Eoj(0x02, 0x88, 0x00), Esv.GET, (Property(0x80),)))
    assert sorted(r.seoj.instance for r in replies) == [1, 2, 3]


def test_instance_lists_capped_at_84_and_startup_inf_split() -> None:  # §2.5, §4.2
    node = make_node(NodeConfig(startup_delay=3.0), devices=100)
    [r] = request(
        node, Frame(1, CONTROLLER, NODE_PROFILE, Esv.GET, (Property(0xD6), Property(0xD3)))
    )
    d6 = r.props[0].edt
    assert len(d6) == 1 + 3 * MAX_INSTANCE_LIST
    assert r.props[1].edt == (100).to_bytes(3, "big")
    node.start(5.0)
    at = node.get_timer()
    assert at is not None and 5.0 <= at < 8.0
    node.handle_timer(at)
    # §2.5: 85 or more in one message, a D5 property per 84 (OPC 2), not several INFs
    [inf] = [Frame.decode(d) for d, a in node.datagrams_to_send(at) if a == MULTICAST_V4]
    assert inf.esv == Esv.INF and inf.seoj == inf.deoj == NODE_PROFILE
    assert [(p.epc, p.edt[0], len(p.edt)) for p in inf.props] == [
        (0xD5, 84, 1 + 3 * 84),
        (0xD5, 16, 1 + 3 * 16),
    ]
    assert any(isinstance(e, Announced) for e in events(node))


def test_node_profile_class_lists() -> None:
    node = make_node(devices=2)
    [r] = request(
        node, Frame(1, CONTROLLER, NODE_PROFILE, Esv.GET, (Property(0xD4), Property(0xD7)))
    )
    assert r.props == (Property(0xD4, b"\x00\x02"), Property(0xD7, b"\x01\x02\x88"))


def test_identification_number_comes_from_the_profile() -> None:  # §2.8
    node = make_node()
    [r] = request(node, Frame(1, CONTROLLER, NODE_PROFILE, Esv.GET, (Property(0x83),)))
    assert r.esv == Esv.GET_RES and r.props[0].edt[0] == 0xFE and len(r.props[0].edt) == 17


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x10",
        b"\x10\x81\x00\x01\x05\xff\x01\x02\x88\x01\x62",  # OPC missing
        b"\x10\x81\x00\x01\x05\xff\x01\x02\x88\x01\x62\x01\x80\x05\x30",  # PDC too large
        b"\x10\x81\x00\x01\x05\xff\x01\x02\x88\x01\x62\x01\x80\x00\xff",  # trailing byte
        b"\x11\x81\x00\x01\x05\xff\x01\x02\x88\x01\x62\x01\x80\x00",  # not ECHONET Lite
    ],
)
def test_bad_frames_dropped_counted_and_node_keeps_serving(data: bytes) -> None:
    node = make_node()
    node.receive_datagram(data, HEMS, 0.0)
    assert node.datagrams_to_send(0.0) == [] and node.counters["malformed"] == 1
    [r] = request(node, Frame(1, CONTROLLER, METER, Esv.GET, (Property(0x80),)))
    assert r.esv == Esv.GET_RES


def test_format2_passed_through_as_event() -> None:
    node = make_node()
    node.receive_datagram(b"\x10\x82\x00\x07abc", HEMS, 0.0)
    assert events(node) == [Format2Received(7, b"abc", HEMS)]


def test_inf_from_another_node_is_reported_and_infc_acknowledged() -> None:
    node = make_node()
    inf = Frame(1, NODE_PROFILE, NODE_PROFILE, Esv.INF, (Property(0xD5, b"\x01\x05\xff\x01"),))
    assert request(node, inf) == []
    infc = Frame(2, CONTROLLER, METER, Esv.INFC, (Property(0x80, b"\x30"),))
    [r] = request(node, infc)
    assert r.esv == Esv.INFC_RES and r.props == (Property(0x80),)
    assert [type(e) for e in events(node)] == [NotificationReceived, NotificationReceived]


def test_controller_at_60_per_minute_is_always_served() -> None:  # §2.7, §6.11
    node = make_node()
    served = 0
    for i in range(600):  # ten minutes at one request per second
        now = float(i)
        replies = request(node, Frame(i, CONTROLLER, METER, Esv.GET, (Property(0xE7),)), now)
        served += len(replies)
    assert served == 600


def test_per_source_queues_are_bounded() -> None:  # §2.7
    node = make_node(NodeConfig(max_pending_per_source=4, multicast_reply_delay=1.0))
    get = Frame(1, CONTROLLER, NODE_PROFILE, Esv.GET, (Property(0xD6),))
    for _ in range(10):
        node.receive_datagram(get.encode(), HEMS, 0.0, multicast=True)
    node.receive_datagram(get.encode(), ("192.0.2.11", 3610), 0.0, multicast=True)
    assert node.counters["dropped_queue_full"] == 6
    node.handle_timer(2.0)
    dests = [a for _, a in node.datagrams_to_send(2.0)]
    assert dests.count((HEMS[0], 3610)) == 4 and dests.count(("192.0.2.11", 3610)) == 1
    # unicast: a flood between two flushes is cut at the bound too, other sources unaffected
    for _ in range(10):
        node.receive_datagram(get.encode(), HEMS, 3.0)
    node.receive_datagram(get.encode(), ("192.0.2.11", 5000), 3.0)
    dests = [a for _, a in node.datagrams_to_send(3.0)]
    assert dests.count((HEMS[0], 3610)) == 4 and dests.count(("192.0.2.11", 3610)) == 1


def test_announce_api_sends_inf_of_readable_epcs() -> None:
    node = make_node()
    node.announce(METER, [0xE7, 0xAA], 0.0)  # 0xAA: not a property of the object
    [(data, dest)] = node.datagrams_to_send(0.0)
    f = Frame.decode(data)
    assert dest == MULTICAST_V4 and f.esv == Esv.INF and [p.epc for p in f.props] == [0xE7]
    with pytest.raises(KeyError):
        node.announce(Eoj(1, 2, 3), [0x80], 0.0)


def test_own_multicast_looped_back_is_dropped_not_reported() -> None:
    node = make_node(NodeConfig(startup_delay=0.0))
    node.start(0.0)
    node.handle_timer(0.0)
    [(data, dest)] = node.datagrams_to_send(0.0)
    assert dest == MULTICAST_V4
    events(node)
    node.receive_datagram(data, ("192.0.2.2", 3610), 0.1, multicast=True)  # the group's loopback
    assert node.counters["own_multicast"] == 1 and events(node) == []
    other = Frame(0x4242, NODE_PROFILE, NODE_PROFILE, Esv.INF, (Property(0xD5, b"\x00"),))
    node.receive_datagram(other.encode(), ("192.0.2.3", 3610), 0.2, multicast=True)
    assert [type(e) for e in events(node)] == [NotificationReceived]


@settings(max_examples=300, deadline=None)
@given(
    esv=st.sampled_from([0x60, 0x61, 0x62, 0x63, 0x6E, 0x74, 0x73, 0x72, 0x5E, 0x64, 0x00]),
    deoj=st.sampled_from([METER.encode(), NODE_PROFILE.encode(), b"\x02\x88\x00", b"\x0e\xf0\x00"]),
    body=st.binary(max_size=40),
    multicast=st.booleans(),
)
def test_any_input_never_escapes_and_answers_decode(
    esv: int, deoj: bytes, body: bytes, multicast: bool
) -> None:
    node = make_node()
    data = b"\x10\x81\x00\x01\x05\xff\x01" + deoj + bytes([esv]) + body
    node.receive_datagram(data, HEMS, 0.0, multicast=multicast)
    node.handle_timer(5.0)
    for out, dest in node.datagrams_to_send(5.0):
        Frame.decode(out)  # every answer is a well-formed frame
        assert dest in ((HEMS[0], 3610), MULTICAST_V4)
    [r] = request(node, Frame(2, CONTROLLER, METER, Esv.GET, (Property(0x80),)), 6.0)
    assert r.esv == Esv.GET_RES
