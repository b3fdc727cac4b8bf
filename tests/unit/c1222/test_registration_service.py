"""The C12.22 Registration service (c1222/registration.py): the request and its <ok> answer
laid out as C12.22 §5.3.2.4.10's grammar says (known bytes built by hand from it), round trips,
typed errors for what does not parse; and served by the head-end's endpoint as master relay
over real EAX' (only a node's own title, only authenticated)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.c1222.c1222_harness import HEADEND_ADDR, HEADEND_TITLE, METER_TITLE, T0, make_pair

from amistack.c1222.acse import ApTitle
from amistack.c1222.epsem import SecurityMode
from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.events import RequestReceived, ResponseReceived
from amistack.c1222.registration import (
    MAX_GRANTED_PERIOD,
    MIN_GRANTED_PERIOD,
    ConnectionType,
    NodeType,
    RegInfo,
    Registration,
    RegistrationResult,
    native_address,
    parse_native_address,
)
from amistack.c1222.services import ResponseCode, decode_request

TITLE = ApTitle.parse("2.16.124.113620.1.22.0.7")  # 06 09 60 7c 86 f7 54 01 16 00 07
TITLE_UID = bytes.fromhex("0609607c86f7540116" + "0007")


def test_a_registration_is_laid_out_as_the_standard_says() -> None:
    reg = Registration(TITLE, native_address("fd00::11", 1153), 1800, device_class=b"AMST")
    assert reg.encode() == (
        b"\x27"  # <register>
        + bytes([NodeType.END_DEVICE])  # 0x20
        + bytes([ConnectionType.CONNECTIONLESS_MODE | ConnectionType.ACCEPT_CONNECTIONLESS])
        + b"AMST"  # <device-class>
        + TITLE_UID  # <ap-title>
        + TITLE_UID  # <electronic-serial-number>: the node's own universal id
        + bytes([18])  # <native-address-length>
        + bytes.fromhex("fd000000000000000000000000000011")
        + (1153).to_bytes(2, "big")
        + (1800).to_bytes(3, "big")  # <registration-period>
    )
    assert decode_request(reg.encode()) == reg
    assert parse_native_address(reg.native_address) == ("fd00::11", 1153)


def test_the_answer_is_laid_out_as_the_standard_says() -> None:
    result = RegistrationResult(TITLE, 3600, 30, RegInfo.DIRECT_MESSAGING_AVAILABLE)
    assert result.encode() == TITLE_UID + bytes.fromhex("001e") + bytes.fromhex("000e10") + b"\x01"
    assert RegistrationResult.decode(result.encode()) == result


def test_relative_ids_and_a_domain_pattern_are_read() -> None:
    relative = ApTitle.parse(".0.7")
    body = (
        bytes([0x27, NodeType.END_DEVICE | NodeType.MY_DOMAIN_PATTERN, 0])
        + b"AMST"
        + b"\x0d\x02\x00\x07"  # <relative-uid-element>
        + b"\x80\x02\x00\x08"  # another node's serial number, in the ACSE's relative form
        + b"\x06\x7f\x00\x00\x01\x04\xd2"
        + b"\x00\x00\x3c"
        + b"\x03abc"
    )
    reg = Registration.decode(body)
    assert reg.ap_title.same_node(TITLE) and reg.esn.same_node(ApTitle.parse(".0.8"))
    assert reg.my_domain_pattern == b"abc" and reg.registration_period == 60
    assert parse_native_address(reg.native_address) == ("127.0.0.1", 1234)
    assert Registration.decode(reg.encode()) == reg
    assert relative.same_node(reg.ap_title)


TITLES = st.lists(st.integers(0, 2**32), min_size=1, max_size=6).map(
    lambda arcs: ApTitle((2, 16, 124, 113620, 1, 22, *arcs))
)


@given(
    TITLES,
    st.one_of(st.none(), TITLES),
    st.binary(min_size=1, max_size=255),
    st.integers(0, 0xFFFFFF),
    st.integers(0, 0x7F),
    st.integers(0, 0xFF),
    st.binary(min_size=4, max_size=4),
    st.one_of(st.none(), st.binary(max_size=255)),
)
def test_registrations_round_trip(
    title: ApTitle,
    esn: ApTitle | None,
    address: bytes,
    period: int,
    node: int,
    conn: int,
    device_class: bytes,
    pattern: bytes | None,
) -> None:
    node_type = NodeType(node | (NodeType.MY_DOMAIN_PATTERN if pattern is not None else 0))
    esn = None if esn is None or esn.same_node(title) else esn
    reg = Registration(
        title, address, period, node_type, ConnectionType(conn), device_class, esn, pattern
    )
    assert Registration.decode(reg.encode()) == reg


@given(TITLES, st.integers(0, 0xFFFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFF))
def test_answers_round_trip(title: ApTitle, period: int, delay: int, info: int) -> None:
    result = RegistrationResult(title, period, delay, RegInfo(info))
    assert RegistrationResult.decode(result.encode()) == result


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        (b"\x27\x20\x30AMS", 6),  # shorter than its fixed head
        (b"\x27\x20\x30AMST\x04\x01\x00", 7),  # an id tagged neither universal nor relative
        (b"\x27\x20\x30AMST" + TITLE_UID + TITLE_UID + b"\x00", 29),  # empty native address
        (b"\x27\x20\x30AMST" + TITLE_UID + TITLE_UID + b"\x06\x7f\x00\x00\x01\x04", 35),
        (b"\x27\x20\x30AMST" + TITLE_UID + TITLE_UID + b"\x01\x01\x00\x00\x3c\xff", 34),
        (b"\x27\xa0\x30AMST" + TITLE_UID + TITLE_UID + b"\x01\x01\x00\x00\x3c\x05ab", 37),
    ],
)
def test_what_does_not_parse_is_a_typed_error(data: bytes, offset: int) -> None:
    with pytest.raises(C1222DecodeError) as err:
        Registration.decode(data)
    assert err.value.offset == offset
    with pytest.raises(C1222DecodeError):
        RegistrationResult.decode(TITLE_UID + b"\x00\x1e\x00")


def test_nonsense_is_refused_when_building() -> None:
    with pytest.raises(ValueError):
        Registration(TITLE, b"", 60)
    with pytest.raises(ValueError):
        Registration(TITLE, b"x", 1 << 24)
    with pytest.raises(ValueError):
        Registration(TITLE, b"x", 60, device_class=b"AM")
    with pytest.raises(ValueError):
        Registration(TITLE, b"x", 60, my_domain_pattern=b"p")  # pattern without its flag
    with pytest.raises(ValueError):
        RegistrationResult(TITLE, 60, 1 << 16)
    with pytest.raises(ValueError):
        native_address("::1", 1 << 16)
    assert parse_native_address(b"\x01\x02") is None


def _register(title: ApTitle, mode: SecurityMode = SecurityMode.CLEARTEXT_AUTH) -> tuple:
    pair = make_pair()
    reg = Registration(title, native_address("fd00::11", 1153), 10)
    pair.server.request(HEADEND_ADDR, HEADEND_TITLE, [reg], T0, security_mode=mode)
    pair.pump(T0)
    served = [e for e in iter(pair.client.next_event, None) if isinstance(e, RequestReceived)]
    answers = [e for e in iter(pair.server.next_event, None) if isinstance(e, ResponseReceived)]
    return served, answers


def test_the_head_end_as_master_relay_grants_a_meters_own_registration() -> None:
    served, answers = _register(METER_TITLE)
    assert len(served) == 1 and served[0].requests[0] == Registration(
        METER_TITLE, native_address("fd00::11", 1153), 10
    )
    (answer,) = answers
    assert answer.ok
    result = RegistrationResult.decode(answer.responses[0].data)
    assert result.relay.same_node(HEADEND_TITLE)
    assert result.reg_period == MIN_GRANTED_PERIOD  # 10 s asked: a minute at least
    assert MIN_GRANTED_PERIOD <= MAX_GRANTED_PERIOD


def test_a_meter_registering_another_title_is_refused() -> None:
    _, answers = _register(ApTitle.parse(".0.7.2"))  # authenticated as .0.7.1
    assert [a.responses[0].code for a in answers] == [ResponseCode.IAR]
