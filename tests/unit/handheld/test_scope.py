"""The identities a handheld's PANA datagrams claim, and whether its certificate's `--meters`
allow them (handheld/scope.py), attacked: a relayed meter outside the selectors (by its EAP
Identity or by EAP-PSK's ID_P alone), the handheld's own PaC claiming a meter, a relay inside a
relay, EAP the gateway cannot read, and random bytes (a typed error, never another exception)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amistack.eap.packet import EapCode, EapPacket, EapType
from amistack.eap.psk import PskSecond
from amistack.handheld.scope import Claims, ScopeError, claims, scope_refusal
from amistack.pana.avp import Avp
from amistack.pana.constants import AvpCode, MessageType
from amistack.pana.message import PanaMessage
from amistack.pana.relay import wrap_relay

SELECTORS = ["field-meter-*"]
METER_LL = ("fe80::2", 716)


def pan(*eap: EapPacket) -> bytes:
    """A PANA-Auth-Answer carrying `eap` (the PaC's EAP responses)."""
    avps = tuple(Avp(AvpCode.EAP_PAYLOAD, e.encode()) for e in eap)
    return PanaMessage(MessageType.AUTH, 0, 0x1234, 1, avps).encode()


def identity(name: bytes) -> EapPacket:
    return EapPacket.response(1, EapType.IDENTITY, name)


def psk_second(id_p: bytes) -> EapPacket:
    return EapPacket.response(
        2, EapType.PSK, PskSecond(b"s" * 16, b"p" * 16, b"m" * 16, id_p).encode()
    )


def test_a_relayed_meter_in_scope_passes_and_its_identities_are_read() -> None:
    c = claims(
        wrap_relay(METER_LL, pan(identity(b"field-meter-001"), psk_second(b"field-meter-001")))
    )
    assert c == Claims(True, (b"field-meter-001", b"field-meter-001"))
    assert scope_refusal(c, "handheld-7", SELECTORS) is None


@pytest.mark.parametrize(
    "eap",
    [
        [identity(b"office-meter-9")],  # plainly another meter
        [identity(b"field-meter-001"), psk_second(b"office-meter-9")],  # ID_P is what counts
        [psk_second(b"office-meter-9")],
    ],
)
def test_a_relayed_meter_outside_the_selectors_is_named(eap: list[EapPacket]) -> None:
    c = claims(wrap_relay(METER_LL, pan(*eap)))
    assert scope_refusal(c, "handheld-7", SELECTORS) == b"office-meter-9"


def test_the_handhelds_own_pac_may_claim_only_itself() -> None:
    own = claims(pan(identity(b"handheld-7"), psk_second(b"handheld-7")))
    assert not own.relayed and scope_refusal(own, "handheld-7", SELECTORS) is None
    posing = claims(pan(psk_second(b"field-meter-001")))  # in the selectors, but not relayed
    assert scope_refusal(posing, "handheld-7", SELECTORS) == b"field-meter-001"


def test_messages_without_eap_claim_nothing() -> None:
    pci = PanaMessage(MessageType.PCI, 0, 0, 0).encode()
    assert claims(pci) == Claims(False, ())
    assert claims(wrap_relay(METER_LL, pci)) == Claims(True, ())


@pytest.mark.parametrize(
    ("datagram", "why"),
    [
        (wrap_relay(METER_LL, wrap_relay(METER_LL, pan(identity(b"x")))), "relay inside"),
        (pan(EapPacket.response(3, EapType.TLS, b"\x80")), "EAP type 13"),
        (pan(EapPacket.request(3, EapType.IDENTITY)), "EAP code"),
        (pan(EapPacket(EapCode.SUCCESS, 3)), "EAP code"),
        (b"PANA?", "PANA"),
        (pan(EapPacket.response(2, EapType.PSK, b"\x40short")), "EAP-PSK"),
    ],
)
def test_what_cannot_be_checked_is_refused(datagram: bytes, why: str) -> None:
    with pytest.raises(ScopeError, match=why):
        claims(datagram)


@given(st.binary(max_size=200))
def test_random_bytes_give_claims_or_a_scope_error(data: bytes) -> None:
    try:
        claims(data)
    except ScopeError as exc:
        assert exc.offset >= 0 and exc.reason


@given(st.binary(max_size=120))
def test_random_relayed_eap_gives_claims_or_a_scope_error(eap: bytes) -> None:
    msg = PanaMessage(MessageType.AUTH, 0, 1, 1, (Avp(AvpCode.EAP_PAYLOAD, eap),)).encode()
    try:
        claims(wrap_relay(METER_LL, msg))
    except ScopeError as exc:
        assert exc.reason
