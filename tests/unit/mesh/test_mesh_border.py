"""The concentrator's border (mesh/gateway.py `UdpGateway` with its `BorderPolicy`), sans-IO,
attacked first: forged sources, a meter taking the NAPT's table, PANA straight to the key
server, a relay flooding PCIs for fake PaCs; and its inputs fuzzed, the C12.22 relay port
among them (the relay itself: tests/unit/mesh/test_mesh_c1222_relay.py)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.pana.pana_harness import make_paa

from amistack.addr import Addr
from amistack.c1222.acse import AcseMessage, ApTitle
from amistack.c1222.epsem import MAC_LEN, Epsem, SecurityMode
from amistack.c1222.registration import Registration, RegistrationResult, native_address
from amistack.c1222.services import Response, ResponseCode
from amistack.mesh.border import BorderPolicy
from amistack.mesh.gateway import UdpGateway, mesh_side
from amistack.mesh.ipv6 import Ipv6Packet, UdpDatagram
from amistack.pana.constants import PANA_PORT, MessageType
from amistack.pana.message import PanaMessage
from amistack.pana.paa import PaaConfig
from amistack.pana.relay import unwrap_relay, wrap_relay
from amistack.ratelimit import KeyedBuckets

KS: Addr = ("127.0.0.1", PANA_PORT)
HE: Addr = ("127.0.0.1", 1153)
ROOT = ipaddress.IPv6Address("fd00:a3e5:1::1")
M1 = ipaddress.IPv6Address("fd00:a3e5:1::11")
M2 = ipaddress.IPv6Address("fd00:a3e5:1::12")
ROGUE = ipaddress.IPv6Address("fd00:a3e5:1::66")
JOINED = {ip.packed for ip in (ROOT, M1, M2, ROGUE)}
HEADEND_TITLE = ApTitle.parse("2.16.124.113620.1.22.0.1")
T1, T2 = ApTitle((0, 11), relative=True), ApTitle((0, 12), relative=True)


def c1222(calling: ApTitle, called: ApTitle) -> bytes:
    return AcseMessage(b"\x80\x00", called_ap_title=called, calling_ap_title=calling).encode()


def readable(called: ApTitle, calling: ApTitle, service: bytes, **ids: int) -> bytes:
    """A C12.22 message of one service, cleartext with authentication (the MAC is the ends'
    business: a relay does not check it)."""
    ui = Epsem((service,), SecurityMode.CLEARTEXT_AUTH).encode() + bytes(MAC_LEN)
    return AcseMessage(ui, called_ap_title=called, calling_ap_title=calling, **ids).encode()


def register(
    title: ApTitle,
    at: ipaddress.IPv6Address,
    port: int = 1153,
    *,
    calling: ApTitle | None = None,
    invocation: int = 7,
) -> bytes:
    """A meter's <register> to the head-end, naming `title` at native address (at, port)."""
    service = Registration(title, native_address(str(at), port), 1800).encode()
    return readable(HEADEND_TITLE, calling or title, service, calling_ap_invocation_id=invocation)


def granted(
    title: ApTitle, *, invocation: int = 7, period: int = 1800, code: int = ResponseCode.OK
) -> bytes:
    """The head-end's answer to registration `invocation` of `title`."""
    data = RegistrationResult(HEADEND_TITLE, period).encode() if code == ResponseCode.OK else b""
    service = Response(ResponseCode(code), data).encode()
    return readable(
        title,
        HEADEND_TITLE,
        service,
        calling_ap_invocation_id=99,
        called_ap_invocation_id=invocation,
    )


def gateway(**policy: float) -> UdpGateway:
    return UdpGateway(
        [KS, HE],
        paa=KS,
        policy=BorderPolicy(**policy),  # type: ignore[arg-type]
        known_source=JOINED.__contains__,
    )


def up(src: ipaddress.IPv6Address, dst: Addr, payload: bytes, src_port: int = PANA_PORT) -> bytes:
    """An IPv6 packet from the mesh to WAN `dst`."""
    ip = ipaddress.IPv6Address(mesh_side(dst[0]))
    return UdpDatagram(src_port, dst[1], payload).packet(src, ip).encode()


def pci() -> bytes:
    return PanaMessage(MessageType.PCI, 0, 0, 0, ()).encode()


def pry(pac: int) -> bytes:
    """A relayed PCI for the (fake) PaC number `pac`."""
    host = str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("fe80::")) + pac))
    return wrap_relay((host, PANA_PORT), pci())


def test_packets_from_addresses_the_root_does_not_know_do_not_leave() -> None:
    gw = gateway()
    forged = ipaddress.IPv6Address("fd00:a3e5:1::bad")
    assert gw.outbound(up(forged, KS, pry(1)), 0.0) is None
    assert gw.outbound(up(forged, HE, c1222(T1, HEADEND_TITLE), 1153), 0.0) is None
    assert gw.counters["wan-unknown-source"] == 2 and not gw.flows


def test_one_meter_cannot_take_the_flow_table_by_changing_its_port() -> None:
    gw = gateway(flows_per_source=4)
    hello = c1222(T1, HEADEND_TITLE)
    sent = [gw.outbound(up(ROGUE, HE, hello, 40000 + i), 0.0) for i in range(1000)]
    assert sum(s is not None for s in sent) == 4
    assert gw.counters["wan-flow-source-limit"] == 996 and not gw.evicted
    assert gw.outbound(up(M1, HE, hello, 1153), 0.0) is not None  # another meter still can


def test_pana_to_the_key_server_must_be_relayed() -> None:
    gw = gateway()
    assert gw.outbound(up(M1, KS, pci()), 0.0) is None  # a meter's own PCI, not through a relay
    assert gw.outbound(up(M1, KS, b"\x00\x00garbage"), 0.0) is None
    assert gw.outbound(up(M1, KS, wrap_relay(("fe80::1", PANA_PORT), b"junk")), 0.0) is None
    c = gw.counters
    assert c["wan-pana-not-relayed"] == 1 and c["wan-pana-decode-error"] == 2
    assert gw.outbound(up(M1, KS, pry(1)), 0.0) is not None


def test_a_relay_flooding_pcis_for_fake_pacs_is_throttled_and_the_others_go_on() -> None:
    gw = gateway(relay_pci_rate=1.0, relay_pci_burst=8.0, max_relays=16)
    passed = sum(gw.outbound(up(ROGUE, KS, pry(n)), n / 1000) is not None for n in range(5000))
    # five seconds of flood: the burst, then one per second
    assert passed <= 8 + 5 + 1
    assert gw.counters["relay-pci-limited"] >= 4985
    # the honest relays' newcomers still reach the key server, at once
    assert gw.outbound(up(M1, KS, pry(1)), 5.0) is not None
    assert gw.outbound(up(M2, KS, pry(2)), 5.0) is not None
    # a relayed message that is not a PCI is the PAA's to judge (its session lookups)
    answer = wrap_relay(("fe80::1", PANA_PORT), PanaMessage(MessageType.AUTH, 0, 7, 1, ()).encode())
    assert gw.outbound(up(ROGUE, KS, answer), 5.0) is not None
    assert len(gw.flows) == 3  # one flow per relay (its port 716): bounded by the relays


@pytest.mark.parametrize("border", [True, False])
def test_behind_the_border_the_key_servers_one_relay_budget_is_not_one_meters(
    border: bool,
) -> None:
    """The key server sees the whole mesh as one relay (the concentrator's host, 5 PCIs a
    second for all of it). A relay floods PCIs for fake PaCs, 500 a second; an honest relay's
    newcomer sends its PCI (and again 4 s later, as the mesh's PaC retransmits) meanwhile.
    Through the border the newcomer is answered; without it, the flood spends the one
    budget and the newcomer is dropped with it."""
    gw = gateway() if border else UdpGateway([KS, HE])
    paa = make_paa(
        config=PaaConfig(
            allowed_relays=frozenset({KS[0]}), relay_pci_rate=5.0, relay_pci_burst=10.0
        )
    )
    relay_of = {}
    answered = False
    for n in range(5000):
        now = n / 500
        sources = [(ROGUE, 10_000 + n)]
        if n in (2000, 4000):  # the newcomer's PCI, and its retransmission
            sources.append((M1, 1))
        for relay, pac in sources:
            out = gw.outbound(up(relay, KS, pry(pac)), now)
            if out is None:
                continue
            relay_of[out.flow] = relay
            paa.receive_datagram(out.payload, (KS[0], 40000 + list(relay_of).index(out.flow)), now)
            for data, _ in paa.datagrams_to_send(now):  # the PAR(S) to the newcomer, relayed
                answered |= unwrap_relay(PanaMessage.decode(data))[0] == ("fe80::1", PANA_PORT)
    assert answered == border
    if border:
        assert gw.counters["relay-pci-limited"] > 4900
    else:
        assert paa.counters["pci_relay_rate_limited"] > 4900


def test_policy_and_buckets_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        BorderPolicy(relay_pci_rate=0)
    with pytest.raises(ValueError):
        BorderPolicy(flows_per_source=0)
    with pytest.raises(ValueError):
        BorderPolicy(segments_per_source=0)
    with pytest.raises(ValueError):
        BorderPolicy(relay_segment=32)  # no room for a segment's header
    with pytest.raises(ValueError):
        KeyedBuckets(1.0, 0.5, 4)
    buckets = KeyedBuckets(1.0, 2.0, 2)
    assert [buckets.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    for key in "bcd":  # a flood of new keys: the table stays at its size
        buckets.allow(key, 0.0)
    assert len(buckets) == 2


def _mutated(base: bytes) -> st.SearchStrategy[bytes]:
    """`base` with a few octets changed, cut short or lengthened."""
    return st.tuples(
        st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), max_size=4),
        st.integers(0, len(base)),
        st.binary(max_size=8),
    ).map(lambda t: bytes(_flip(base, t[0]))[: t[1]] + t[2])


def _flip(base: bytes, changes: list[tuple[int, int]]) -> bytearray:
    out = bytearray(base)
    for at, value in changes:
        out[at] = value
    return out


PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b"\x60" + b),
    _mutated(register(T1, M1)),
    _mutated(granted(T1)),
    _mutated(pry(1)),
)


@settings(max_examples=400, deadline=None)
@given(PAYLOADS, st.sampled_from([KS, HE, ("127.0.0.9", 9)]))
def test_fuzz_the_relay_port_and_the_border(data: bytes, src: Addr) -> None:
    gw = gateway()
    assert gw.relay_in(data, src, 0.0) == []  # nothing is bound: nothing is relayed
    registered = gw.outbound(up(M2, HE, register(T2, M2), 1153), 0.0)
    assert registered is not None
    gw.inbound(registered.flow, granted(T2), HE, 0.0)
    assert T2.absolute().device_id in gw.titles
    for out in gw.relay_in(data, src, 0.0):  # only ever to the registered meter, from the peer
        ip = Ipv6Packet.decode(out)
        assert src == HE and ip.dst == M2 and UdpDatagram.decode(ip).payload == data
    for dst in (KS, HE):
        gw.outbound(up(M1, dst, data, 1153), 0.0)
        gw.outbound(data, 0.0)
    for flow in list(gw.flows):
        gw.inbound(flow, data, HE, 0.0)
    assert gw.titles[T2.absolute().device_id].flow == registered.flow  # noise binds nothing
    assert sum(gw.counters.values()) > 0
