"""RFC 6345: a PaC authenticates through a PANA Relay Element without knowing it."""

from __future__ import annotations

import pytest
from tests.unit.pana.pana_harness import (
    PAA_ADDR,
    PSK,
    RELAY_ADDR,
    World,
    make_paa,
    make_pac,
    pac_addr,
)

from amistack.pana.constants import AvpCode, Flag, MessageType
from amistack.pana.errors import PanaDecodeError
from amistack.pana.events import Authenticated, PingCompleted
from amistack.pana.message import PanaMessage
from amistack.pana.paa import PaaConfig, Route
from amistack.pana.relay import (
    PanaRelay,
    decode_pac_information,
    encode_pac_information,
    unwrap_relay,
    wrap_relay,
)

A1, A2 = pac_addr(1), pac_addr(2)


@pytest.mark.parametrize(
    ("addr", "hexval"),
    [
        (("192.0.2.7", 716), "c000020702cc"),
        (("fe80::1", 40000), "fe8000000000000000000000000000019c40"),
    ],
)
def test_pac_information_format(addr: tuple[str, int], hexval: str) -> None:
    assert encode_pac_information(addr).hex() == hexval
    assert decode_pac_information(bytes.fromhex(hexval)) == addr


def test_pac_information_bad_length_and_host() -> None:
    with pytest.raises(PanaDecodeError):
        decode_pac_information(b"\x01\x02\x03")
    with pytest.raises(ValueError):
        encode_pac_information(("not-an-ip", 1))


def test_pry_wrap_unwrap() -> None:
    inner = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    raw = wrap_relay(A1, inner)
    msg = PanaMessage.decode(raw)
    assert (msg.msg_type, msg.flags, msg.session_id, msg.seq) == (MessageType.RELAY, 0, 0, 0)
    assert msg.name == "PRY"
    assert unwrap_relay(msg) == (A1, inner)
    with pytest.raises(PanaDecodeError):
        unwrap_relay(PanaMessage(MessageType.RELAY, 0, 0, 0))
    with pytest.raises(PanaDecodeError):
        unwrap_relay(PanaMessage.decode(inner))


RELAYS = PaaConfig(allowed_relays=frozenset({RELAY_ADDR[0]}))


def test_pac_authenticates_through_relay_unchanged() -> None:
    paa = make_paa({b"meter-1": PSK, b"meter-2": PSK}, config=RELAYS)
    w = World(paa, relay=PanaRelay(PAA_ADDR))
    relayed = w.add(A1, make_pac(b"meter-1", paa=RELAY_ADDR))
    direct = w.add(A2, make_pac(b"meter-2", seed=5))
    relayed.start(0.0)
    direct.start(0.0)
    w.run_until(5)
    pac_ev = w.of(A1, Authenticated)
    assert len(pac_ev) == 1 and len(w.of(A2, Authenticated)) == 1
    by_peer = {e.peer_id: e for e in w.of("paa", Authenticated)}
    paa_ev = by_peer[b"meter-1"]
    assert paa_ev.context == pac_ev[0].context and paa_ev.addr == A1
    assert w.paa.route_of(paa_ev.session_id) == Route(A1, RELAY_ADDR)
    assert w.paa.route_of(by_peer[b"meter-2"].session_id) == Route(A2)
    # on the wire: plain PANA between PaC and PRE, PRY between PRE and PAA
    for src, dst, data in w.wire:
        msg = PanaMessage.decode(data)
        if {src, dst} == {A1, RELAY_ADDR}:
            assert msg.msg_type != MessageType.RELAY
        elif {src, dst} == {RELAY_ADDR, PAA_ADDR}:
            assert msg.msg_type == MessageType.RELAY
            assert decode_pac_information(msg.octets(AvpCode.PAC_INFORMATION) or b"") == A1
        else:
            assert {src, dst} == {A2, PAA_ADDR}
    assert w.relay is not None and w.relay.counters["to_paa"] >= 4
    # ping and re-authentication go through the relay too
    relayed.ping(w.now)
    w.run_until(w.now + 1)
    assert w.of(A1, PingCompleted)
    relayed.reauthenticate(w.now)
    w.run_until(w.now + 5)
    again = w.of(A1, Authenticated)
    assert len(again) == 2 and again[1].reauth and again[1].context.key_id == 2


def test_relay_drops_what_it_must() -> None:
    relay = PanaRelay(PAA_ADDR)
    relay.receive_datagram(b"junk", A1, 0.0)
    relay.receive_datagram(wrap_relay(A2, b"x" * 16), A1, 0.0)  # a PaC sending PRY
    relay.receive_datagram(b"junk", PAA_ADDR, 0.0)
    bad_inner = wrap_relay(A1, b"\x00\x00\x00\x20" + bytes(12))  # relayed message is malformed
    relay.receive_datagram(bad_inner, PAA_ADDR, 0.0)
    assert relay.datagrams_to_send(0.0) == []
    assert relay.counters["decode_error"] == 3 and relay.counters["unexpected_type"] == 1
    assert relay.get_timer() is None and relay.next_event() is None
    pci = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    relay.receive_datagram(pci, ("pac.example", 1), 0.0)  # not an IP: cannot be described
    assert relay.counters["unencodable_address"] == 1


def test_paa_rejects_nested_relay_and_bad_pry() -> None:
    paa = make_paa(config=RELAYS)
    pci = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    paa.receive_datagram(wrap_relay(A1, wrap_relay(A1, pci)), RELAY_ADDR, 0.0)
    assert paa.counters["nested_relay"] == 1
    paa.receive_datagram(PanaMessage(MessageType.RELAY, 0, 0, 0).encode(), RELAY_ADDR, 0.0)
    assert paa.counters["decode_error"] == 1
    paa.receive_datagram(wrap_relay(A1, pci), RELAY_ADDR, 0.0)
    ((data, dst),) = paa.datagrams_to_send(0.0)
    assert dst == RELAY_ADDR
    pac, inner = unwrap_relay(PanaMessage.decode(data))
    assert pac == A1 and PanaMessage.decode(inner).has(Flag.S)


def test_paa_accepts_only_allowed_relays() -> None:
    pci = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    default = make_paa()  # a PAA without configured relays accepts none
    default.receive_datagram(wrap_relay(A1, pci), RELAY_ADDR, 0.0)
    assert default.counters["relay_not_allowed"] == 1 and default.datagrams_to_send(0.0) == []
    assert default.half_open_count == 0
    paa = make_paa(config=RELAYS)
    paa.receive_datagram(wrap_relay(A1, pci), ("10.9.9.9", 716), 0.0)
    assert paa.counters["relay_not_allowed"] == 1 and paa.datagrams_to_send(0.0) == []
    paa.receive_datagram(wrap_relay(A1, pci), RELAY_ADDR, 0.0)
    assert len(paa.datagrams_to_send(0.0)) == 1


def test_pry_flood_is_limited_per_relay_as_well_as_per_pac() -> None:
    """One relay wrapping PCIs from ever new PaC addresses (each with a fresh per-PaC budget)
    gets the relay's budget only, and a meter authenticates meanwhile."""
    other_relay = ("10.0.2.2", 716)
    config = PaaConfig(
        allowed_relays=frozenset({RELAY_ADDR[0], other_relay[0]}),
        relay_pci_rate=10.0,
        relay_pci_burst=20.0,
        per_relay_limit=15,
    )
    w = World(make_paa(config=config), relay=PanaRelay(PAA_ADDR))
    pci = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    sent = answered = 0
    for i in range(5000):
        data = wrap_relay((f"10.{i >> 8}.{i & 0xFF}.9", 2000 + i), pci)
        w.paa.receive_datagram(data, RELAY_ADDR, w.now + i / 1000)
        sent += len(data)
    out = w.paa.datagrams_to_send(w.now)
    answered = sum(len(d) for d, _ in out)
    assert w.paa.half_open_count <= 15
    assert len(out) <= 20 + 10 * 5 and answered < sent
    assert w.paa.counters["pci_relay_rate_limited"] + w.paa.counters["pci_relay_limit"] >= 4900
    # another relay and a direct meter are untouched
    w.now = 5.0
    w.add(A1, make_pac(b"meter-1"))
    w.pacs[A1].start(w.now)
    w.run_until(w.now + 5)
    assert len(w.of(A1, Authenticated)) == 1
    w.paa.receive_datagram(wrap_relay(A2, pci), other_relay, w.now)
    assert w.paa.counters["pci_accepted"] >= 2
