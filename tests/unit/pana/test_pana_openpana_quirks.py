"""OpenPANA 0.2.4's quirks, accepted (be liberal in what you accept):

- its PaC reads only the first PRF/Integrity algorithm AVP of the PAR(S) (and needs HMAC-SHA1):
  the PAA offers in its configured order;
- its relay counts the AVP padding in the PaC-Information length (8 for IPv4, 20 for IPv6);
- its PaC re-authenticates only when the session lifetime has expired: the PAA keeps a session
  `lifetime_grace` seconds past its lifetime for that re-authentication.
"""

from __future__ import annotations

from tests.unit.pana.pana_harness import PSK, RELAY_ADDR, World, make_paa, make_pac, pac_addr

from amistack.pana.avp import Avp
from amistack.pana.constants import (
    AvpCode,
    Flag,
    IntegrityAlgorithm,
    MessageType,
    PrfAlgorithm,
)
from amistack.pana.events import Authenticated, SessionTerminated
from amistack.pana.message import PanaMessage
from amistack.pana.paa import PaaConfig, PaaState
from amistack.pana.relay import decode_pac_information, unwrap_relay

A1 = pac_addr(1)
SHA1_FIRST = PaaConfig(
    prf_algorithms=(PrfAlgorithm.PRF_HMAC_SHA1, PrfAlgorithm.PRF_HMAC_SHA2_256),
    integrity_algorithms=(
        IntegrityAlgorithm.AUTH_HMAC_SHA1_160,
        IntegrityAlgorithm.AUTH_HMAC_SHA2_256_128,
    ),
)


def _par_s(config: PaaConfig) -> PanaMessage:
    paa = make_paa(config=config)
    paa.receive_datagram(PanaMessage(MessageType.PCI, 0, 0, 0).encode(), A1, 0.0)
    ((data, _),) = paa.datagrams_to_send(0.0)
    return PanaMessage.decode(data)


def test_paa_offers_algorithms_in_the_configured_order() -> None:
    default = _par_s(PaaConfig())
    assert next(default.find_all(AvpCode.PRF_ALGORITHM)).as_u32() == PrfAlgorithm.PRF_HMAC_SHA2_256
    par = _par_s(SHA1_FIRST)
    assert par.has(Flag.S)
    assert [a.as_u32() for a in par.find_all(AvpCode.PRF_ALGORITHM)] == list(
        SHA1_FIRST.prf_algorithms
    )
    first_integrity = next(par.find_all(AvpCode.INTEGRITY_ALGORITHM)).as_u32()
    assert first_integrity == IntegrityAlgorithm.AUTH_HMAC_SHA1_160


def test_pac_information_with_the_padding_counted() -> None:
    assert decode_pac_information(bytes.fromhex("c000020702cc0000")) == ("192.0.2.7", 716)
    v6 = bytes.fromhex("fe8000000000000000000000000000019c40") + b"\x00\x00"
    assert decode_pac_information(v6) == ("fe80::1", 40000)
    # a PRY as OpenPANA's relay writes it: PaC-Information length 8, then the PCI
    pci = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    info = bytes.fromhex("0a00010202cc0000")  # 10.0.1.2 port 716, 2 octets of padding
    pry = PanaMessage(
        MessageType.RELAY,
        0,
        0,
        0,
        (Avp(AvpCode.PAC_INFORMATION, info), Avp(AvpCode.RELAYED_MESSAGE, pci)),
    ).encode()
    paa = make_paa(config=PaaConfig(allowed_relays=frozenset({RELAY_ADDR[0]})))
    paa.receive_datagram(pry, RELAY_ADDR, 0.0)
    ((data, dst),) = paa.datagrams_to_send(0.0)
    pac, inner = unwrap_relay(PanaMessage.decode(data))
    assert dst == RELAY_ADDR and pac == ("10.0.1.2", 716)
    assert PanaMessage.decode(inner).has(Flag.S)


def _late_reauth(grace: float) -> World:
    """A PaC that re-authenticates only once the lifetime (30 s) has expired, as OpenPANA's."""
    w = World(make_paa({b"meter-1": PSK}, config=PaaConfig(lifetime_grace=grace)))
    pac = w.add(A1, make_pac())
    pac.start(0.0)
    w.run_until(5.0)
    (ev,) = w.of(A1, Authenticated)
    expiry = 0.0 + ev.lifetime
    # OpenPANA's timing: no re-authentication before expiry, its own session kept past it
    pac._reauth_at = expiry + 0.5
    pac._expires_at = expiry + 120.0
    w.run_until(expiry + 8.0)
    return w


def test_a_late_reauthentication_within_the_grace_keeps_the_session() -> None:
    w = _late_reauth(grace=10.0)
    paa_ok = w.of("paa", Authenticated)
    assert len(paa_ok) == 2 and paa_ok[1].reauth and paa_ok[1].context.key_id == 2
    assert w.of("paa", SessionTerminated) == []
    assert w.paa.state_of(paa_ok[1].session_id) is PaaState.OPEN
    assert w.paa.counters["lifetime_grace"] == 1


def test_without_grace_the_session_ends_at_its_lifetime() -> None:
    w = _late_reauth(grace=0.0)
    assert len(w.of("paa", Authenticated)) == 1
    (ended,) = w.of("paa", SessionTerminated)
    assert ended.reason == "session lifetime expired"
    assert w.paa.counters["unknown_session"] >= 1


def test_the_grace_ends_a_session_nobody_reauthenticates() -> None:
    w = World(make_paa({b"meter-1": PSK}, config=PaaConfig(lifetime_grace=10.0)))
    pac = w.add(A1, make_pac())
    pac.start(0.0)
    w.run_until(5.0)
    (ev,) = w.of(A1, Authenticated)
    pac._reauth_at = None  # a PaC that went away
    pac._expires_at = None
    w.run_until(ev.lifetime + 9.0)
    assert w.of("paa", SessionTerminated) == []
    w.run_until(ev.lifetime + 11.0)
    assert [e.reason for e in w.of("paa", SessionTerminated)] == ["session lifetime expired"]
