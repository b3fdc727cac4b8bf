"""The concentrator as C12.22 relay (mesh/gateway.py `UdpGateway`, docs/mesh.md), sans-IO,
attacked first: a title nobody registered, a registration naming another meter's title or
another meter's address, a registration the head-end never granted (or refused), a binding
past its period, a flood of partial segments from one source; then what works: a head-end
request, whole or segmented, relayed by ApTitle to the meter that registered. The last tests
run the real C12.22 engines (meter, head-end, a rogue with a key of its own; EAX' under UKMF
keys) through it."""

from __future__ import annotations

import ipaddress

from tests.unit.c1222.c1222_harness import HEADEND_TITLE as HARNESS_HEADEND
from tests.unit.c1222.c1222_harness import METER_TITLE, T0, make_ctx, make_pair
from tests.unit.mesh.test_mesh_border import (
    HE,
    HEADEND_TITLE,
    KS,
    M1,
    M2,
    ROGUE,
    T1,
    T2,
    c1222,
    gateway,
    granted,
    register,
    up,
)

from amistack.addr import Addr
from amistack.c1222.acse import AcseMessage, ApTitle
from amistack.c1222.endpoint import C1222Server, EndpointConfig
from amistack.c1222.epsem import Epsem, SecurityMode
from amistack.c1222.events import ResponseReceived
from amistack.c1222.registration import Registration, native_address
from amistack.c1222.security import ring_key_lookup, ring_send_key
from amistack.c1222.segmentation import Reassembler, Segment, segment
from amistack.c1222.services import ResponseCode, Write
from amistack.crypto import seeded_random
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.ukmf import PurposeRegistry
from amistack.mesh.gateway import UdpGateway, mesh_side
from amistack.mesh.ipv6 import IPV6_MIN_MTU, Ipv6Packet, UdpDatagram


def bind(gw: UdpGateway, ip: ipaddress.IPv6Address, title: ApTitle, **grant: int) -> None:
    out = gw.outbound(up(ip, HE, register(title, ip), 1153), 0.0)
    assert out is not None
    gw.inbound(out.flow, granted(title, **grant), HE, 0.0)


def delivered(packets: list[bytes]) -> list[tuple[ipaddress.IPv6Address, bytes]]:
    """(destination, UDP payload) of each relayed packet, checked to come from the head-end."""
    out = []
    for packet in packets:
        ip = Ipv6Packet.decode(packet)
        udp = UdpDatagram.decode(ip)
        assert ip.src == ipaddress.IPv6Address(mesh_side(HE[0])) and udp.src_port == HE[1]
        assert len(packet) <= IPV6_MIN_MTU - 200  # room for the root's routing header
        out.append((ip.dst, udp.payload))
    return out


def test_a_title_nobody_registered_is_not_relayed() -> None:
    gw = gateway()
    out = gw.outbound(up(M1, HE, c1222(T1, HEADEND_TITLE), 1153), 0.0)  # a push: no registration
    assert out is not None
    gw.inbound(out.flow, c1222(HEADEND_TITLE, T1), HE, 0.0)  # the head-end's ack binds nothing
    assert gw.relay_in(c1222(HEADEND_TITLE, T1), HE, 0.0) == []
    assert gw.counters["c1222-unknown-title"] == 1 and not gw.titles


def test_the_head_end_reaches_a_registered_meter_through_the_relay_port() -> None:
    gw = gateway()
    out = gw.outbound(up(M1, HE, register(T1, M1), 1153), 0.0)
    assert out is not None and out.flow == (str(M1), 1153)
    assert gw.counters["c1222-registration-out"] == 1
    assert gw.relay_in(c1222(HEADEND_TITLE, T1), HE, 0.0) == []  # claimed, not yet granted
    assert gw.inbound(out.flow, granted(T1), HE, 0.0) is not None  # the grant passes on
    assert gw.counters["c1222-title-bound"] == 1
    request = c1222(HEADEND_TITLE, T1)
    assert delivered(gw.relay_in(request, HE, 1.0)) == [(M1, request)]
    assert gw.relay_in(c1222(HEADEND_TITLE, T2), HE, 1.0) == []  # meter 2 never registered


def test_a_meter_registering_another_meters_title_or_address_gets_no_binding() -> None:
    gw = gateway()
    bind(gw, M1, T1)
    honest = gw.titles[T1.absolute().device_id]
    # a registration naming T1 from the rogue's own title: dropped before it leaves
    forged = register(T1, ROGUE, calling=T2)
    assert gw.outbound(up(ROGUE, HE, forged, 1153), 0.0) is None
    assert gw.counters["c1222-registration-forged"] == 1
    # naming meter 1's address from the rogue's: dropped
    assert gw.outbound(up(ROGUE, HE, register(T2, M1), 1153), 0.0) is None
    assert gw.counters["c1222-registration-wrong-address"] == 1
    # calling T1 itself: it leaves (the head-end decides), but the head-end cannot verify it
    # under meter 1's key and grants nothing; what it does answer on the rogue's flow (its
    # own title's business, or another request's) binds nothing
    rogue = gw.outbound(up(ROGUE, HE, register(T1, ROGUE, invocation=9), 1153), 0.0)
    assert rogue is not None
    gw.inbound(rogue.flow, granted(T2, invocation=9), HE, 0.0)
    gw.inbound(rogue.flow, granted(T1, invocation=8), HE, 0.0)
    gw.inbound(rogue.flow, c1222(HEADEND_TITLE, T1), HE, 0.0)
    assert gw.titles[T1.absolute().device_id] == honest
    # a grant from anyone but the head-end, or to the relay port, is nothing
    assert gw.inbound(rogue.flow, granted(T1, invocation=9), ("127.0.0.9", 1153), 0.0) is None
    assert gw.relay_in(c1222(HEADEND_TITLE, T1), KS, 0.0) == []
    assert gw.relay_in(c1222(HEADEND_TITLE, T1), ("127.0.0.9", 1153), 0.0) == []
    assert gw.counters["c1222-relay-not-allowed"] == 2
    assert gw.titles[T1.absolute().device_id] == honest


def test_a_forger_of_a_meters_address_cannot_displace_its_pending_registration() -> None:
    gw = gateway()
    out = gw.outbound(up(M1, HE, register(T1, M1, invocation=7), 1153), 0.0)
    assert out is not None
    for n in range(3):  # a group-key holder sending as meter 1 (no EAX' tag of meter 1's)
        assert gw.outbound(up(M1, HE, register(T1, M1, invocation=100 + n), 1153), 0.0)
    gw.inbound(out.flow, granted(T1, invocation=7), HE, 0.0)  # the genuine one is granted
    assert gw.titles[T1.absolute().device_id].flow == out.flow


def test_a_refused_registration_binds_nothing_and_a_binding_ends_with_its_period() -> None:
    gw = gateway()
    bind(gw, M1, T1, code=ResponseCode.ISC)
    assert gw.counters["c1222-registration-refused"] == 1 and not gw.titles
    bind(gw, M2, T2, period=60)
    assert len(gw.relay_in(c1222(HEADEND_TITLE, T2), HE, 59.0)) == 1
    assert gw.relay_in(c1222(HEADEND_TITLE, T2), HE, 60.0) == []
    assert gw.counters["c1222-registration-expired"] == 1 and not gw.titles


def test_a_segmented_grant_binds_once_whole_and_its_segments_pass_on() -> None:
    gw = gateway()
    out = gw.outbound(up(M1, HE, register(T1, M1), 1153), 0.0)
    assert out is not None
    parts = segment(granted(T1), 9, 40)  # a head-end with a small datagram size
    assert len(parts) > 2
    for part in parts[:-1]:
        assert gw.inbound(out.flow, part, HE, 0.0) is not None and not gw.titles
    assert gw.inbound(out.flow, parts[-1], HE, 0.0) is not None
    assert gw.titles[T1.absolute().device_id].flow == out.flow


def test_the_title_table_is_bounded() -> None:
    gw = gateway(max_titles=8)
    for n in range(100):
        bind(gw, M1, ApTitle((0, 1000 + n), relative=True))
    assert len(gw.titles) == 8


def _segmented(size: int, seq: int = 5) -> tuple[bytes, list[bytes]]:
    """A head-end request for meter 1 of about `size` octets, and its segments."""
    apdu = AcseMessage(
        Epsem((Write(2050, bytes(size)).encode(),), SecurityMode.CLEARTEXT_AUTH).encode()
        + bytes(4),
        called_ap_title=T1,
        calling_ap_title=HEADEND_TITLE,
        calling_ap_invocation_id=3,
    ).encode()
    return apdu, segment(apdu, seq, 1232)


def _reassembled(payloads: list[bytes]) -> bytes | None:
    whole = Reassembler()
    got = [whole.receive(Segment.decode(p), "meter", 0.0) for p in payloads]
    return got[-1]


def test_a_segmented_head_end_request_reaches_the_registered_meter() -> None:
    gw = gateway()
    bind(gw, M1, T1)
    apdu, parts = _segmented(5000)
    assert len(parts) == 5
    for part in reversed(parts[1:]):  # out of order, as a network may deliver them
        assert gw.relay_in(part, HE, 1.0) == []
    relayed = delivered(gw.relay_in(parts[0], HE, 1.0))
    assert {dst for dst, _ in relayed} == {M1}
    assert len(relayed) == len(segment(apdu, 5, 1024))  # in 1,024-octet segments
    assert _reassembled([p for _, p in relayed]) == apdu
    assert gw.counters["c1222-relayed-in-segmented"] == 1 and gw.counters["c1222-segment-held"] == 4
    # for a meter nobody registered, the whole request is dropped once read
    other = AcseMessage.decode(apdu)
    stray = AcseMessage(other.user_information, called_ap_title=T2, calling_ap_title=HEADEND_TITLE)
    for part in segment(stray.encode(), 6, 1232):
        assert gw.relay_in(part, HE, 1.0) == []
    assert gw.counters["c1222-unknown-title"] == 1


def test_a_flood_of_partial_segments_from_one_source_stays_bounded() -> None:
    gw = gateway(segments_per_source=8)
    bind(gw, M1, T1)
    _, parts = _segmented(5000)
    # 20,000 first segments of APDUs that never complete, from the head-end's address
    for seq in range(20_000):
        head = Segment.decode(parts[0])
        flood = Segment(seq, head.apdu_length, 0, head.data).encode()
        assert gw.relay_in(flood, HE, 1.0) == []
    (reassembly,) = gw._segments.values()
    assert len(reassembly) == 8 and gw.counters["c1222-segment-evicted"] == 20_000 - 8
    # a stranger's segments are refused before they take any memory
    for seq in range(100):
        assert gw.relay_in(Segment(seq, 64, 0, b"x").encode(), ("127.0.0.9", 9), 1.0) == []
    assert len(gw._segments) == 1 and gw.counters["c1222-relay-not-allowed"] == 100
    # nonsense segments are counted and change nothing
    assert gw.relay_in(b"\x61\x03\x00\x00\x00", HE, 1.0) == []
    assert gw.relay_in(Segment(1, 10, 5, b"too long!").encode(), HE, 1.0) == []
    assert gw.counters["c1222-segment-error"] == 2
    # the flood's partials time out; the head-end's next segmented request goes through
    apdu, parts = _segmented(3000, seq=40_000)
    relayed = [p for part in parts for p in gw.relay_in(part, HE, 40.0)]
    assert gw.counters["c1222-segment-timeout"] == 8
    assert _reassembled([p for _, p in delivered(relayed)]) == apdu


def test_real_engines_register_through_the_relay_and_a_segmented_read_comes_back() -> None:
    """A meter and a head-end (the C12.22 harness's engines: EAX' under the meter's UKMF key)
    with the gateway between them: the meter's registration binds it, and the head-end's
    request larger than a datagram, sent to the relay port, reaches it and is answered."""
    pair = make_pair()
    gw = gateway()
    meter_at: Addr = (str(M1), 1153)
    he_in_mesh: Addr = (mesh_side(HE[0]), HE[1])
    relay_port: Addr = ("127.0.0.1", 7153)
    flow = (str(M1), 1153)

    def up_through(now: float) -> None:
        for data, _ in pair.server.datagrams_to_send(now):
            out = gw.outbound(up(M1, HE, data, 1153), now)
            if out is not None:
                pair.client.receive_datagram(data, ("127.0.0.1", 40000), now)

    def down_through(now: float) -> int:
        n = 0
        for data, addr in pair.client.datagrams_to_send(now):
            if addr == relay_port:
                packets = gw.relay_in(data, HE, now)
            else:
                packet = gw.inbound(flow, data, HE, now)
                packets = [] if packet is None else [packet]
            for packet in packets:
                udp = UdpDatagram.decode(Ipv6Packet.decode(packet))
                pair.server.receive_datagram(udp.payload, he_in_mesh, now)
                n += 1
        return n

    registration = Registration(METER_TITLE, native_address(*meter_at), 1800)
    rid = pair.server.request(
        ("127.0.0.1", 1153),
        HARNESS_HEADEND,
        [registration],
        T0,
        security_mode=SecurityMode.CLEARTEXT_AUTH,
    )
    up_through(T0)
    assert down_through(T0) == 1
    answers = [e for e in iter(pair.server.next_event, None) if isinstance(e, ResponseReceived)]
    assert [a.request_id for a in answers if a.ok] == [rid]
    assert METER_TITLE.device_id in gw.titles
    # a write of 3,000 octets (segmented at 1,232) through the relay port
    pair.client.request(relay_port, METER_TITLE, [Write(2050, bytes(3000))], T0 + 1)
    assert down_through(T0 + 1) > 3  # 1,232-octet segments in, 1,024-octet ones out
    assert pair.server.counters["messages-accepted"] == 2  # the registration's answer, the write
    up_through(T0 + 1)
    answers = [e for e in iter(pair.client.next_event, None) if isinstance(e, ResponseReceived)]
    assert len(answers) == 1 and answers[0].responses  # the meter answered the write


def test_real_engines_a_rogue_registering_a_meters_title_under_its_own_key_binds_nothing() -> None:
    """A group-key holder with a C12.22 node of its own (its own UKMF session's key) registers
    meter 1's title from its own address: the registration leaves (the relay cannot judge the
    EAX' tag), the head-end cannot verify it under meter 1's key and answers nothing, so
    nothing is bound; meter 1's own registration then binds meter 1."""
    pair = make_pair()
    rogue_ring = KeyRing(b"rogue", PurposeRegistry())
    rogue_ring.install(make_ctx(seed=99), 3600.0, T0)
    rogue = C1222Server(
        EndpointConfig(METER_TITLE),
        pair.meter,
        ring_key_lookup(rogue_ring),
        ring_send_key(rogue_ring),
        seeded_random(9),
    )
    gw = gateway()
    for node, at in ((rogue, ROGUE), (pair.server, M1)):
        node.request(
            ("127.0.0.1", 1153),
            HARNESS_HEADEND,
            [Registration(METER_TITLE, native_address(str(at), 1153), 1800)],
            T0,
            security_mode=SecurityMode.CLEARTEXT_AUTH,
        )
        for data, _ in node.datagrams_to_send(T0):
            out = gw.outbound(up(at, HE, data, 1153), T0)
            assert out is not None  # it names its own address: the head-end decides
            pair.client.receive_datagram(data, ("127.0.0.1", 40000), T0)
        for data, _ in pair.client.datagrams_to_send(T0):
            gw.inbound(out.flow, data, HE, T0)
        if node is rogue:
            assert pair.client.counters["auth-failed"] == 1 and not gw.titles
    assert gw.titles[METER_TITLE.device_id].flow == (str(M1), 1153)
