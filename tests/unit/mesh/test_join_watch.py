"""`mesh.gateway.JoinWatch`: the border router learns which device each node joined as, from the
PANA-Relay exchanges passing its gateway, for the topology report (meter id). Attacks first: a
claim the PAA never confirmed, a refused join, a "success" that did not come from the PAA, a
claim to another PAA, hostile identities, garbage (fuzzed), a flood of claims (bounded). Real
PANA, PANA-Relay, EAP and EAP-PSK codecs build the datagrams."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.addr import Eui64
from amistack.eap.packet import EapPacket, EapType
from amistack.eap.psk import PskSecond
from amistack.mesh.gateway import JoinWatch, WanDatagram
from amistack.pana.avp import Avp
from amistack.pana.constants import AvpCode, Flag, MessageType, ResultCode
from amistack.pana.message import PanaMessage
from amistack.pana.relay import wrap_relay

PAA = ("127.0.0.1", 716)
FLOW = ("2001:db8::1", 716)


def eui(i: int) -> Eui64:
    return Eui64(bytes((0x02, 0, 0, 0, 0, 0, i >> 8, i & 0xFF)))


def pac(i: int) -> tuple[str, int]:
    return (str(ipaddress.IPv6Address(eui(i).link_local())), 716)


def claim(i: int, device: bytes) -> WanDatagram:
    """The PAN carrying EAP-PSK message 2 (ID_P = device), relayed for PaC i to the PAA."""
    second = PskSecond(b"s" * 16, b"p" * 16, b"m" * 16, device).encode()
    eap = EapPacket.response(7, EapType.PSK, second).encode()
    pan = PanaMessage(MessageType.AUTH, 0, 1, 2, (Avp(AvpCode.EAP_PAYLOAD, eap),)).encode()
    return WanDatagram(FLOW, wrap_relay(pac(i), pan), PAA)


def verdict(i: int, result: ResultCode = ResultCode.PANA_SUCCESS) -> bytes:
    """The PAR with the Result-Code, relayed by the PAA towards PaC i."""
    par = PanaMessage(
        MessageType.AUTH, Flag.R | Flag.C, 1, 3, (Avp.u32(AvpCode.RESULT_CODE, result),)
    ).encode()
    return wrap_relay(pac(i), par)


def test_a_claim_the_paa_never_confirmed_is_not_reported() -> None:
    w = JoinWatch(PAA)
    w.outbound(claim(1, b"meter-0001"))
    assert w.joined == {}


def test_a_refused_join_is_not_reported_and_forgets_an_earlier_one() -> None:
    w = JoinWatch(PAA)
    w.outbound(claim(1, b"meter-0001"))
    w.inbound(verdict(1), PAA)
    w.outbound(claim(1, b"meter-0009"))  # the same node claims another identity: refused
    w.inbound(verdict(1, ResultCode.PANA_AUTHENTICATION_REJECTED), PAA)
    assert w.joined == {}


def test_a_success_that_did_not_come_from_the_paa_is_ignored() -> None:
    w = JoinWatch(PAA)
    w.outbound(claim(1, b"meter-0001"))
    w.inbound(verdict(1), ("127.0.0.2", 716))
    w.inbound(verdict(1), ("127.0.0.1", 717))
    assert w.joined == {}
    w.inbound(verdict(2), PAA)  # a success for another PaC confirms nothing of PaC 1's
    assert w.joined == {}


def test_a_claim_sent_elsewhere_is_not_a_claim() -> None:
    w = JoinWatch(PAA)
    d = claim(1, b"meter-0001")
    w.outbound(WanDatagram(d.flow, d.payload, ("127.0.0.1", 7000)))  # the head-end, say
    w.inbound(verdict(1), PAA)
    assert w.joined == {}


def test_hostile_identities_are_refused() -> None:
    w = JoinWatch(PAA)
    for i, bad in enumerate([b"\xff\xfe", b"a\nb", b"x" * 256, "é\u2028".encode()], 1):
        w.outbound(claim(i, bad))
        w.inbound(verdict(i), PAA)
    assert w.joined == {}
    assert w.counters["join-watch-bad-identity"] + w.counters["join-watch-undecodable"] == 4


def test_claims_are_bounded() -> None:
    w = JoinWatch(PAA, max_nodes=10)
    for i in range(1, 40):
        w.outbound(claim(i, f"meter-{i:04d}".encode()))
        w.inbound(verdict(i), PAA)
    assert len(w.joined) == 10 and eui(39) in w.joined and eui(1) not in w.joined
    for i in range(100, 200):
        w.outbound(claim(i, b"never-confirmed"))
    assert len(w._claimed) <= 10


def test_a_confirmed_join_names_the_node_by_its_eui64() -> None:
    w = JoinWatch(PAA)
    w.outbound(claim(5, b"meter-0005"))
    w.inbound(verdict(5), PAA)
    assert w.joined == {eui(5): "meter-0005"} and w.counters["join-watch-joined"] == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_garbage_never_raises_nor_names_anyone(data: bytes, out: bool) -> None:
    w = JoinWatch(PAA)
    if out:
        w.outbound(WanDatagram(FLOW, data, PAA))
    else:
        w.inbound(data, PAA)
    assert w.joined == {}


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=80))
def test_any_identity_bytes_never_raise(device: bytes) -> None:
    w = JoinWatch(PAA)
    w.outbound(claim(3, device))
    w.inbound(verdict(3), PAA)
    for name in w.joined.values():
        assert name.isprintable() and 1 <= len(name.encode()) <= 255
