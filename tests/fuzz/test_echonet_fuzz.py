"""ECHONET Lite under hostile input: Frame.decode, decode_any and decode_propmap raise only
EchonetDecodeError, and whatever decodes re-encodes to the same bytes; the smart meter node
answers any well-formed request with a decodable frame of the matching service."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.crypto.rand import seeded_random
from amistack.echonet.errors import EchonetDecodeError
from amistack.echonet.frame import Eoj, Esv, Frame, Property, decode_any
from amistack.echonet.node import NODE_PROFILE, EchonetNode, NodeConfig
from amistack.echonet.objects import (
    NodeProfile,
    RemoteControlPolicy,
    SmartMeterConfig,
    SmartMeterObject,
)
from amistack.echonet.propmap import decode_propmap
from amistack.meter.model import MeterModel

VALID = bytes.fromhex("1081000105ff010288016e01e5010101e200")


@settings(max_examples=600)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    try:
        f = Frame.decode(data)
    except EchonetDecodeError as e:
        assert 0 <= e.offset <= len(data)
    else:
        assert f.encode() == data
    with contextlib.suppress(EchonetDecodeError):
        decode_any(data)


@settings(max_examples=600)
@given(st.binary(max_size=40).map(lambda b: bytes.fromhex("1081") + b))
def test_random_format1_bodies(data: bytes) -> None:
    try:
        f = Frame.decode(data)
    except EchonetDecodeError as e:
        assert 0 <= e.offset <= len(data)
    else:
        assert f.encode() == data


@settings(max_examples=600)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=4))
def test_mutated_valid_frame(edits: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for i, v in edits:
        data[i] = v
    with contextlib.suppress(EchonetDecodeError):
        assert Frame.decode(bytes(data)).encode() == bytes(data)


@given(st.binary(max_size=40))
def test_random_propmaps(edt: bytes) -> None:
    try:
        decode_propmap(edt)
    except EchonetDecodeError as e:
        assert e.offset >= 0


# -- the smart meter node under well-formed but arbitrary requests ---------------------------

_REQUESTS = [Esv.SETI, Esv.SETC, Esv.GET, Esv.INF_REQ, Esv.SETGET]
_ANSWERS = {
    Esv.SETI: {Esv.SETI_SNA},
    Esv.SETC: {Esv.SET_RES, Esv.SETC_SNA},
    Esv.GET: {Esv.GET_RES, Esv.GET_SNA},
    Esv.INF_REQ: {Esv.INF, Esv.INF_SNA},
    Esv.SETGET: {Esv.SETGET_RES, Esv.SETGET_SNA},
}
_props = st.lists(
    st.builds(Property, st.sampled_from(list(range(0x80, 0x100))), st.binary(max_size=12)),
    max_size=6,
)
_METER_NODE: list[tuple[EchonetNode, SmartMeterObject]] = []


def _meter_node() -> tuple[EchonetNode, SmartMeterObject]:
    if not _METER_NODE:  # one node for every example: state carries over, as in the field
        meter = SmartMeterObject(
            MeterModel(5), config=SmartMeterConfig(remote_control=RemoteControlPolicy())
        )
        # every request must be answered here: no reply budget (tests/unit/echonet/test_budget.py)
        config = NodeConfig(reply_rate=None)
        node = EchonetNode(NodeProfile([]), [meter], seeded_random(1), config)
        _METER_NODE.append((node, meter))
    return _METER_NODE[0]


@settings(max_examples=400)
@given(
    esv=st.sampled_from(_REQUESTS),
    deoj=st.sampled_from([Eoj(0x02, 0x88, 0x01), Eoj(0x02, 0x88, 0x00), NODE_PROFILE]),
    props=_props,
    props_get=_props,
    now=st.floats(1.7e9, 1.8e9),
)
def test_meter_node_answers_every_request_with_a_decodable_matching_service(
    esv: Esv, deoj: Eoj, props: list[Property], props_get: list[Property], now: float
) -> None:
    node, meter = _meter_node()
    pg = tuple(props_get) if esv == Esv.SETGET else ()
    frame = Frame(0x1234, Eoj(0x05, 0xFF, 0x01), deoj, esv, tuple(props), pg)
    node.receive_datagram(frame.encode(), ("127.0.50.99", 3610), now)
    answers = [
        Frame.decode(d)
        for d, a in node.datagrams_to_send(now)
        if a[1] == 3610 and a[0] == "127.0.50.99"
    ]
    if esv != Esv.SETI:
        assert len(answers) == 1
    for a in answers:
        assert a.esv in _ANSWERS[esv] and a.tid == 0x1234
        assert [p.epc for p in a.props] == [p.epc for p in props]
    assert 0 <= (meter.get(0xE5, now) or b"\xff")[0] <= 99
    assert len(meter.get(0xE2, now) or b"") == 194
