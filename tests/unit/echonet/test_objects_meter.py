"""The smart meter object 0x028801 against the meter model: every EPC, no-data codes, E5/ED/EF
ranges, one-way maps (guidelines chapter 6 at object level)."""

from __future__ import annotations

import datetime
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amistack.echonet.frame import Eoj
from amistack.echonet.objects import (
    NO_DATA_S16,
    NO_DATA_S32,
    NO_DATA_U32,
    OneWayMode,
    SetStatus,
    SmartMeterConfig,
    SmartMeterObject,
)
from amistack.echonet.propmap import decode_propmap
from amistack.meter.model import MeterConfig, MeterModel
from amistack.meter.tables import TimeScale

NOW = 1_710_040_200.0  # 2024-03-10 12:10 JST
OUTAGE = (1710269856.0, 1710278133.0)  # seed 7 with outage_rate_per_year=300 (checked below)
ND = NO_DATA_U32.to_bytes(4, "big")
TZ = 9 * 3600


def u32s(b: bytes) -> list[int]:
    return [int.from_bytes(b[i : i + 4], "big") for i in range(0, len(b), 4)]


def local(t: float) -> bytes:
    d = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=t + TZ)
    return d.year.to_bytes(2, "big") + bytes((d.month, d.day, d.hour, d.minute, d.second))


@pytest.fixture
def model() -> MeterModel:
    return MeterModel(7, MeterConfig(outage_rate_per_year=0))


@pytest.fixture
def meter(model: MeterModel) -> SmartMeterObject:
    return SmartMeterObject(model)


def units(wh: int | None) -> int:
    return NO_DATA_U32 if wh is None else (wh // 100) % 10**6


def test_maps_of_a_two_way_meter(meter: SmartMeterObject) -> None:
    get = meter.get(0x9F, NOW)
    assert get is not None and len(get) == 17  # more than 15 EPCs: the bitmap form
    assert decode_propmap(get) == {
        0x80, 0x81, 0x82, 0x83, 0x88, 0x8A, 0x8D, 0x97, 0x98, 0x9D, 0x9E, 0x9F,
        0xC0, 0xD0, 0xD3, 0xD7, 0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE7, 0xE8,
        0xEA, 0xEB, 0xEC, 0xED, 0xEE, 0xEF,
    }  # fmt: skip
    assert decode_propmap(meter.get(0x9E, NOW) or b"") == {0x81, 0xE5, 0xED, 0xEF}
    assert decode_propmap(meter.get(0x9D, NOW) or b"") == {0x80, 0x81, 0x88, 0xEA, 0xEB}
    assert meter.eoj == Eoj(0x02, 0x88, 0x01)


def test_every_get_epc_has_its_size(meter: SmartMeterObject) -> None:
    sizes = {
        0x80: 1, 0x81: 1, 0x82: 4, 0x83: 17, 0x88: 1, 0x8A: 3, 0x8D: 12, 0x97: 2, 0x98: 4,
        0xC0: 16, 0xD0: 15, 0xD3: 4, 0xD7: 1, 0xE0: 4, 0xE1: 1, 0xE2: 194, 0xE3: 4,
        0xE4: 194, 0xE5: 1, 0xE7: 4, 0xE8: 4, 0xEA: 11, 0xEB: 11, 0xEC: 103, 0xED: 7,
        0xEE: 87, 0xEF: 7,
    }  # fmt: skip
    for epc, size in sizes.items():
        edt = meter.get(epc, NOW)
        assert edt is not None and len(edt) == size, hex(epc)
    assert meter.get(0x80, NOW) == b"\x30" and meter.get(0x88, NOW) == b"\x42"
    assert meter.get(0x82, NOW) == b"\x00\x00R\x00"  # Release R: where C0/D0/EE/EF are defined
    ident = meter.get(0x83, NOW)
    assert ident is not None and ident[0] == 0xFE and ident[1:4] == meter.get(0x8A, NOW)
    assert meter.get(0xD3, NOW) == b"\x00\x00\x00\x01" and meter.get(0xD7, NOW) == b"\x06"
    assert meter.get(0xE1, NOW) == b"\x01"
    assert meter.get(0x97, NOW) == bytes((12, 10)) and meter.get(0x98, NOW) == b"\x07\xe8\x03\x0a"


def test_e0_e3_are_current_values(model: MeterModel, meter: SmartMeterObject) -> None:
    reg = model.registers(NOW)
    assert u32s(meter.get(0xE0, NOW) or b"") == [units(reg.active_forward_wh)]
    assert u32s(meter.get(0xE3, NOW) or b"") == [units(reg.active_reverse_wh)]
    # §6.10: the value moves within the half hour, not only at its end.
    later = NOW + 1500
    assert model.registers(later).active_forward_wh - reg.active_forward_wh >= 100
    assert meter.get(0xE0, later) != meter.get(0xE0, NOW)


def test_e2_is_the_day_in_e5(model: MeterModel, meter: SmartMeterObject) -> None:
    today = model.local_day(NOW)
    e2 = meter.get(0xE2, NOW) or b""
    assert e2[:2] == b"\x00\x00"
    assert u32s(e2[2:]) == [units(v) for v in model.daily_history(today, NOW)]
    assert u32s(e2[2:])[25:] == [NO_DATA_U32] * 23  # 12:30 onwards is still to come
    assert meter.set(0xE5, b"\x01", NOW).ok
    e2 = meter.get(0xE2, NOW) or b""
    assert e2[:2] == b"\x00\x01"
    values = u32s(e2[2:])
    assert values == [units(v) for v in model.daily_history(today - 1, NOW)]
    assert NO_DATA_U32 not in values
    e4 = meter.get(0xE4, NOW) or b""
    assert e4[:2] == b"\x00\x01"
    assert u32s(e4[2:]) == [units(v) for v in model.daily_history(today - 1, NOW, reverse=True)]


def test_e5_range(meter: SmartMeterObject) -> None:
    assert meter.set(0xE5, b"\x63", NOW).ok and meter.get(0xE5, NOW) == b"\x63"
    for bad in (b"\x64", b"\xff", b"", b"\x00\x01"):
        res = meter.set(0xE5, bad, NOW)
        assert res.status is SetStatus.INVALID and res.reason
    assert meter.get(0xE5, NOW) == b"\x63"
    assert meter.clamp(0xE5, b"\x80") == b"\x63"
    assert meter.clamp(0xE0, b"\x80") is None


def test_not_settable_and_unknown(meter: SmartMeterObject) -> None:
    assert meter.set(0xE0, b"\x00\x00\x00\x00", NOW).status is SetStatus.UNSUPPORTED
    assert meter.set(0x42, b"\x00", NOW).status is SetStatus.UNSUPPORTED
    assert meter.get(0x42, NOW) is None and meter.get(0xF0, NOW) is None


def test_announcement_on_change(meter: SmartMeterObject) -> None:
    assert meter.set(0x81, b"\x08", NOW).changed
    assert meter.set(0x81, b"\x08", NOW).ok
    assert meter.set(0xE5, b"\x02", NOW).ok  # E5 is not announced
    assert meter.pop_announcements() == [0x81]
    assert meter.pop_announcements() == []
    meter.update(0x88, b"\x41")
    assert meter.pop_announcements() == [0x88] and meter.get(0x88, NOW) == b"\x41"


def test_instantaneous(model: MeterModel, meter: SmartMeterObject) -> None:
    inst = model.instantaneous(NOW)
    assert inst is not None
    e7 = meter.get(0xE7, NOW) or b""
    assert int.from_bytes(e7, "big", signed=True) == round(inst.active_w)
    e8 = meter.get(0xE8, NOW) or b""
    assert int.from_bytes(e8[:2], "big", signed=True) == round(inst.current_r_a * 10)
    assert int.from_bytes(e8[2:], "big", signed=True) == round(inst.current_t_a * 10)


def test_export_is_negative_e7() -> None:
    pv = MeterModel(3, MeterConfig(pv=True, pv_kw=6.0, annual_kwh=2500, outage_rate_per_year=0))
    noon = pv.day_start(19850) + 12 * 3600
    e7 = SmartMeterObject(pv).get(0xE7, noon) or b""
    assert int.from_bytes(e7, "big", signed=True) < -1000


def test_fixed_time_values(model: MeterModel, meter: SmartMeterObject) -> None:
    x = math.floor(NOW / 1800) * 1800
    ea = meter.get(0xEA, NOW) or b""
    assert ea[:7] == local(x) and ea[4:7] == bytes((12, 0, 0))
    assert u32s(ea[7:]) == [units(model.registers(x).active_forward_wh)]
    eb = meter.get(0xEB, NOW) or b""
    assert eb[:7] == local(x)
    assert u32s(eb[7:]) == [units(model.registers(x).active_reverse_wh)]
    assert meter.next_fixed_time(NOW) == x + 1800
    d0 = meter.get(0xD0, NOW) or b""
    assert d0[:7] == local(math.floor(NOW / 60) * 60)
    assert u32s(d0[7:]) == [
        units(model.registers(NOW).active_forward_wh),
        units(model.registers(NOW).active_reverse_wh),
    ]


def test_history2_and_3(model: MeterModel, meter: SmartMeterObject) -> None:
    ed = b"\x07\xe8\x03\x09\x17\x1e\x03"  # 2024-03-09 23:30, 3 segments
    assert meter.set(0xED, ed, NOW).ok and meter.get(0xED, NOW) == ed
    ec = meter.get(0xEC, NOW) or b""
    assert ec[:7] == ed and len(ec) == 7 + 3 * 8
    ref = 1709994600.0  # 2024-03-09 23:30 JST
    want = []
    for k in range(3):
        reg = model.registers(ref - k * 1800)
        want += [units(reg.active_forward_wh), units(reg.active_reverse_wh)]
    assert u32s(ec[7:]) == want
    for bad in (
        b"\x07\xe8\x03\x09\x17\x0f\x03",  # 23:15 is not a half hour
        b"\x07\xe8\x03\x09\x17\x1e\x0d",  # 13 segments
        b"\x07\xe8\x03\x09\x17\x1e\x00",
        b"\x07\xe8\x02\x1e\x00\x00\x01",  # 30 February
        b"\x07\xe8\x03\x09\x18\x00\x01",  # 24:00
        b"\x07\xe8\x03\x09\x17\x1e",
    ):
        assert meter.set(0xED, bad, NOW).status is SetStatus.INVALID
    assert meter.get(0xED, NOW) == ed
    ef = b"\x07\xe8\x03\x0a\x0c\x07\x0a"  # 12:07, 10 one-minute segments
    assert meter.set(0xEF, ef, NOW).ok
    ee = meter.get(0xEE, NOW) or b""
    assert ee[:7] == ef and len(ee) == 7 + 10 * 8
    ref3 = NOW - 180  # 12:07
    assert u32s(ee[7:15])[0] == units(model.registers(ref3).active_forward_wh)
    assert u32s(ee[-8:])[0] == units(model.registers(ref3 - 9 * 60).active_forward_wh)
    assert meter.set(0xEF, b"\x07\xe8\x03\x0a\x0c\x07\x0b", NOW).status is SetStatus.INVALID
    # A reference in the future reads no data.
    assert meter.set(0xEF, b"\x07\xe8\x03\x0a\x0d\x00\x01", NOW).ok
    assert (meter.get(0xEE, NOW) or b"")[7:] == ND + ND


def test_outage_reads_no_data_never_zero() -> None:
    model = MeterModel(7, MeterConfig(outage_rate_per_year=300))
    a, b = OUTAGE
    assert any(o == OUTAGE for o in model.outages_between(a - 1, b + 1))
    meter = SmartMeterObject(model)
    x = math.ceil(a / 1800) * 1800  # a half-hour boundary inside the outage
    assert x < b
    during = x + 60
    assert (meter.get(0xEA, during) or b"")[7:] == ND
    assert int.from_bytes(meter.get(0xE7, during) or b"", "big") == NO_DATA_S32
    e8 = meter.get(0xE8, during) or b""
    assert int.from_bytes(e8[:2], "big") == NO_DATA_S16 == int.from_bytes(e8[2:], "big")
    later = b + 3 * 86400
    day = model.local_day(x)
    e5 = model.local_day(later) - day
    assert meter.set(0xE5, bytes((e5,)), later).ok
    values = u32s((meter.get(0xE2, later) or b"")[2:])
    slot = int((x - model.day_start(day)) // 1800)
    assert values[slot] == NO_DATA_U32
    assert values[slot - 1] not in (0, NO_DATA_U32) or model.in_outage(x - 1800)
    assert 0 not in values


def test_history_before_b_route_opened(model: MeterModel) -> None:
    opened = NOW - 3600  # 11:10
    meter = SmartMeterObject(model, broute_opened_at=opened)
    values = u32s((meter.get(0xE2, NOW) or b"")[2:])
    assert values[:23] == [NO_DATA_U32] * 23  # 00:00 .. 11:00
    assert values[23] == units(model.registers(opened + 20 * 60).active_forward_wh)
    assert meter.set(0xED, b"\x07\xe8\x03\x0a\x0b\x00\x02", NOW).ok  # 11:00, 10:30
    assert (meter.get(0xEC, NOW) or b"")[7:] == ND * 4


def test_one_way_absent_from_maps() -> None:
    model = MeterModel(7, MeterConfig(two_way=False, outage_rate_per_year=0))
    meter = SmartMeterObject(model)
    for epc in (0xE3, 0xE4, 0xEB):
        assert meter.get(epc, NOW) is None
        assert epc not in decode_propmap(meter.get(0x9F, NOW) or b"")
    assert 0xEB not in decode_propmap(meter.get(0x9D, NOW) or b"")
    ec = meter.get(0xEC, NOW) or b""
    assert u32s(ec[7:])[1::2] == [NO_DATA_U32] * 12  # the reverse halves of EC
    assert u32s(ec[7:])[0] != NO_DATA_U32


def test_one_way_reading_no_data() -> None:
    model = MeterModel(7, MeterConfig(two_way=False, outage_rate_per_year=0))
    meter = SmartMeterObject(model, config=SmartMeterConfig(one_way_mode=OneWayMode.NO_DATA))
    assert meter.get(0xE3, NOW) == ND
    assert (meter.get(0xEB, NOW) or b"")[7:] == ND
    assert u32s((meter.get(0xE4, NOW) or b"")[2:]) == [NO_DATA_U32] * 48
    assert 0xE4 in decode_propmap(meter.get(0x9F, NOW) or b"")
    # A two-way model shown as one-way by configuration.
    forced = SmartMeterObject(MeterModel(7), config=SmartMeterConfig(two_way=False))
    assert forced.get(0xE3, NOW) is None


def test_time_scale_and_units(model: MeterModel) -> None:
    scale = TimeScale(origin_now=0.0, origin_model=NOW, factor=60.0)
    meter = SmartMeterObject(
        model, scale, SmartMeterConfig(unit=0x02, effective_digits=8, coefficient=2, instance=3)
    )
    assert meter.eoj == Eoj(0x02, 0x88, 0x03)
    t = NOW + 600 * 60
    want = (model.registers(t).active_forward_wh // 10 // 2) % 10**8
    assert u32s(meter.get(0xE0, 600.0) or b"") == [want]
    assert meter.get(0x97, 600.0) == bytes((22, 10))
    with pytest.raises(ValueError):
        SmartMeterConfig(unit=0x05)
    with pytest.raises(ValueError):
        SmartMeterConfig(effective_digits=9)


@given(st.binary(max_size=3))
def test_e5_accepts_exactly_0_to_99(edt: bytes) -> None:
    meter = SmartMeterObject(MeterModel(7, MeterConfig(outage_rate_per_year=0)))
    res = meter.set(0xE5, edt, NOW)
    assert res.ok == (len(edt) == 1 and edt[0] <= 99)
    assert meter.get(0xE5, NOW) == (edt if res.ok else b"\x00")


@given(st.sampled_from([0xED, 0xEF]), st.binary(min_size=0, max_size=8))
def test_history_settings_never_raise(epc: int, edt: bytes) -> None:
    meter = SmartMeterObject(MeterModel(7, MeterConfig(outage_rate_per_year=0)))
    before = meter.get(epc, NOW)
    res = meter.set(epc, edt, NOW)
    after = meter.get(epc, NOW)
    assert after == (edt if res.ok else before)
