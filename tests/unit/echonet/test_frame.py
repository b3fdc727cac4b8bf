"""ECHONET Lite frame codec: known bytes, hypothesis round trips, every malformation typed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amistack.echonet.frame import (
    SETGET_ESVS,
    EchonetDecodeError,
    Eoj,
    Esv,
    Frame,
    Frame2,
    Property,
    decode_any,
)

CONTROLLER = Eoj(0x05, 0xFF, 0x01)
METER = Eoj(0x02, 0x88, 0x01)

# A Get of E7 from a controller to the meter, as B-route software sends it.
GET_E7 = bytes.fromhex("1081 0001 05FF01 028801 62 01 E7 00".replace(" ", ""))


def test_known_get_request_decodes() -> None:
    f = Frame.decode(GET_E7)
    assert f == Frame(1, CONTROLLER, METER, Esv.GET, (Property(0xE7),))
    assert f.encode() == GET_E7


def test_known_get_response_with_value() -> None:
    raw = bytes.fromhex("10810001028801 05FF01 72 01 E7 04 000001F4".replace(" ", ""))
    f = Frame.decode(raw)
    assert f.esv == Esv.GET_RES
    assert f.props == (Property(0xE7, (500).to_bytes(4, "big")),)
    assert f.encode() == raw


def test_setget_has_two_lists() -> None:
    f = Frame(7, CONTROLLER, METER, Esv.SETGET, (Property(0xE5, b"\x01"),), (Property(0xE2),))
    raw = f.encode()
    assert raw.hex() == "1081000705ff010288016e01e5010101e200"
    assert Frame.decode(raw) == f


def test_setget_sna_with_zero_counts() -> None:
    raw = bytes.fromhex("1081000102880105ff015e0000")
    f = Frame.decode(raw)
    assert f.esv == Esv.SETGET_SNA and f.props == () and f.props_get == ()


def test_opc_zero_is_decodable() -> None:
    # OPC=0 is a well-formed frame; answering it is the node's business (not-possible response).
    f = Frame.decode(bytes.fromhex("1081000105ff010288016200"))
    assert f.props == ()


@pytest.mark.parametrize(
    ("hexdata", "offset", "fragment"),
    [
        ("", 0, "truncated"),
        ("1081", 2, "truncated"),
        ("2081000105ff010288016200", 0, "EHD1"),
        ("1082000105ff010288016200", 1, "format 1"),
        ("1083000105ff010288016200", 1, "format 1"),
        ("1081000105ff01028801", 10, "truncated"),
        ("1081000105ff0102880162", 11, "needs 12"),
        ("1081000105ff010288016201", 12, "property 1/1"),
        ("1081000105ff010288016201e7", 12, "property 1/1"),
        ("1081000105ff010288016101e502", 13, "PDC 2"),
        ("1081000105ff010288016201e700ff", 14, "trailing"),
        ("1081000105ff010288016202e700", 14, "property 2/2"),
        ("1081000105ff010288016e01e50101", 15, "OPCGet missing"),
    ],
)
def test_malformations_are_typed(hexdata: str, offset: int, fragment: str) -> None:
    with pytest.raises(EchonetDecodeError) as ei:
        Frame.decode(bytes.fromhex(hexdata))
    assert ei.value.offset == offset
    assert fragment in ei.value.reason


def test_format2_passthrough() -> None:
    raw = bytes.fromhex("10820abc") + b"anything at all"
    f = decode_any(raw)
    assert f == Frame2(0x0ABC, b"anything at all")
    assert f.encode() == raw
    assert decode_any(GET_E7) == Frame.decode(GET_E7)
    with pytest.raises(EchonetDecodeError):
        decode_any(bytes.fromhex("10800001"))
    with pytest.raises(EchonetDecodeError):
        Frame2.decode(GET_E7)


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="TID"):
        Frame(0x10000, CONTROLLER, METER, Esv.GET, ()).encode()
    with pytest.raises(ValueError, match="PDC"):
        Frame(1, CONTROLLER, METER, Esv.SETC, (Property(0x80, bytes(256)),)).encode()
    with pytest.raises(ValueError, match="props_get"):
        Frame(1, CONTROLLER, METER, Esv.GET, (), (Property(0x80),)).encode()
    with pytest.raises(ValueError, match="EPC"):
        Frame(1, CONTROLLER, METER, Esv.GET, (Property(0x180),)).encode()


def test_eoj_helpers() -> None:
    assert Eoj.from_int(0x028801) == METER
    assert int(METER) == 0x028801 and METER.class_code == 0x0288 and str(METER) == "028801"
    assert Eoj.decode(METER.encode()) == METER
    with pytest.raises(EchonetDecodeError):
        Eoj.decode(b"\x02\x88")


byte = st.integers(0, 255)
eojs = st.builds(Eoj, byte, byte, byte)
props = st.lists(st.builds(Property, byte, st.binary(max_size=40)), max_size=12).map(tuple)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    esv = draw(st.one_of(st.sampled_from(list(Esv)), byte))
    get = draw(props) if esv in SETGET_ESVS else ()
    return Frame(draw(st.integers(0, 0xFFFF)), draw(eojs), draw(eojs), esv, draw(props), get)


@given(frames())
def test_round_trip(f: Frame) -> None:
    raw = f.encode()
    assert Frame.decode(raw) == f
    assert decode_any(raw) == f


@given(st.integers(0, 0xFFFF), st.binary(max_size=64))
def test_format2_round_trip(tid: int, payload: bytes) -> None:
    assert Frame2.decode(Frame2(tid, payload).encode()) == Frame2(tid, payload)


@given(frames(), st.data())
def test_every_truncation_is_typed(f: Frame, data: st.DataObject) -> None:
    raw = f.encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(EchonetDecodeError) as ei:
        Frame.decode(raw[:cut])
    assert 0 <= ei.value.offset <= cut


# -- the frozen-dataclass behaviour of the hand-written (mypyc-compilable) classes -----------


def test_values_are_immutable_and_compare_by_fields() -> None:
    import copy
    import pickle
    from dataclasses import FrozenInstanceError

    f = Frame.decode(GET_E7)
    built = Frame(1, Eoj(0x05, 0xFF, 0x01), Eoj(0x02, 0x88, 0x01), Esv.GET, (Property(0xE7),))
    assert f == built and hash(f) == hash(built) and f is not built
    assert hash(METER) == hash((0x02, 0x88, 0x01))
    assert hash(Property(0xE7, b"\x01")) == hash((0xE7, b"\x01"))
    assert f != Frame(2, CONTROLLER, METER, Esv.GET, (Property(0xE7),))
    assert Property(0xE7) != (0xE7, b"") and METER != (0x02, 0x88, 0x01)
    for obj, field in ((f, "tid"), (METER, "group"), (Property(1), "edt"), (Frame2(1, b""), "tid")):
        with pytest.raises(FrozenInstanceError):
            setattr(obj, field, 0)
        with pytest.raises(FrozenInstanceError):
            delattr(obj, field)
    assert copy.deepcopy(f) == f and copy.copy(METER) == METER
    assert pickle.loads(pickle.dumps(f)) == f
    assert repr(Property(0xE7)) == "Property(epc=231, edt=b'')"
    assert repr(METER) == "Eoj(group=2, cls=136, instance=1)"
    assert repr(Frame2(1, b"x")) == "Frame2(tid=1, payload=b'x')"
    assert repr(built).startswith("Frame(tid=1, seoj=Eoj(group=5, cls=255, instance=1), ")
    match f:
        case Frame(tid, _, Eoj(0x02, 0x88, inst), _, (Property(epc, edt),)):
            assert (tid, inst, epc, edt) == (1, 1, 0xE7, b"")
        case _:
            pytest.fail("positional patterns follow the field order")


def test_sequences_are_stored_as_tuples() -> None:
    f = Frame(1, CONTROLLER, METER, Esv.GET, [Property(0xE7)])
    assert f.props == (Property(0xE7),) and isinstance(f.props, tuple)
    assert f == Frame(1, CONTROLLER, METER, Esv.GET, (Property(0xE7),))
    assert hash(f) == hash(Frame(1, CONTROLLER, METER, Esv.GET, (Property(0xE7),)))
    assert f.encode() == GET_E7


def test_buffers_decode_like_bytes() -> None:
    for buf in (bytearray(GET_E7), memoryview(GET_E7)):
        assert Frame.decode(buf) == Frame.decode(GET_E7)
        assert Frame.decode(buf).encode() == GET_E7
        assert decode_any(buf) == Frame.decode(GET_E7)
    assert Frame2.decode(bytearray(b"\x10\x82\x00\x01ab")) == Frame2(1, b"ab")


def test_encode_refuses_eoj_and_esv_that_are_not_bytes() -> None:
    for seoj, deoj in ((Eoj(0x100, 0, 1), METER), (CONTROLLER, Eoj(2, -1, 1))):
        with pytest.raises(ValueError, match="EOJ"):
            Frame(1, seoj, deoj, Esv.GET, (Property(0xE7),)).encode()
    with pytest.raises(ValueError, match="ESV"):
        Frame(1, CONTROLLER, METER, 0x162, (Property(0xE7),)).encode()
    with pytest.raises(ValueError, match="EPC"):
        Frame(1, CONTROLLER, METER, Esv.GET, (Property(0xE7), Property(-1))).encode()
    with pytest.raises(ValueError, match="OPC"):
        Frame(1, CONTROLLER, METER, Esv.GET, tuple(Property(0x80) for _ in range(256))).encode()
    # a frame that failed to encode once still fails (nothing half-cached on the way)
    bad = Eoj(0x100, 0, 1)
    for _ in range(2):
        with pytest.raises(ValueError):
            Frame(1, bad, METER, Esv.GET, ()).encode()


@given(frames())
def test_decoded_frame_and_frame_built_anew_encode_alike(f: Frame) -> None:
    raw = f.encode()
    d = Frame.decode(raw)
    anew = Frame(d.tid, d.seoj, d.deoj, d.esv, d.props, d.props_get)
    assert d.encode() == anew.encode() == raw
    # shared (interned) values are equal values, whatever was decoded before
    assert (d.seoj, d.deoj) == (f.seoj, f.deoj) and d.props == f.props


def test_many_props_and_long_lists_round_trip() -> None:
    props = tuple(Property(0x80 + i, bytes([i]) * (i % 5)) for i in range(40))
    for esv, get in ((Esv.SETC, ()), (Esv.SETGET, props[:7]), (Esv.SETGET_RES, ())):
        f = Frame(0xFFFF, CONTROLLER, METER, esv, props, get)
        assert Frame.decode(f.encode()) == f
