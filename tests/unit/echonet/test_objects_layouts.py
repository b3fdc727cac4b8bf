"""The smart meter's EDT layouts read back by independent implementations (docs/echonet.md,
"Verified layouts"): momonga's EchonetDataParser (a B-route library used against real meters)
and momonga's builders for the ED/EF sets. A layout we wrote from memory that disagrees with
them fails here, not in a HEMS in the field."""

from __future__ import annotations

import datetime

import pytest

from amistack.echonet.frame import Eoj
from amistack.echonet.objects import NO_DATA_U32, SetStatus, SmartMeterConfig, SmartMeterObject
from amistack.echonet.objects.node_profile import NodeProfile
from amistack.meter.model import MeterConfig, MeterModel

momonga_data = pytest.importorskip("momonga.momonga_echonet_data")
Parser = momonga_data.EchonetDataParser
Builder = momonga_data.EchonetDataBuilder

NOW = 1_710_040_200.0  # 2024-03-10 12:10 JST
TZ = 9 * 3600


def jst(t: float) -> datetime.datetime:
    return datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=t + TZ)


@pytest.fixture
def meter() -> SmartMeterObject:
    return SmartMeterObject(MeterModel(7, MeterConfig(outage_rate_per_year=0)))


def edt(meter: SmartMeterObject, epc: int, now: float = NOW) -> bytes:
    value = meter.get(epc, now)
    assert value is not None, hex(epc)
    return value


def test_c0_route_b_id_is_16_bytes_zero_maker_free_area(meter: SmartMeterObject) -> None:
    c0 = edt(meter, 0xC0)
    assert len(c0) == 16 and c0[0] == 0x00
    parsed = Parser.parse_route_b_id(c0)
    assert parsed["manufacturer code"] == b"\xff\xff\xff"
    assert parsed["authentication id"] == b"amistack-met"  # the 12-byte free area
    with pytest.raises(ValueError):
        SmartMeterConfig(route_b_id=bytes(17))


def test_scalars_e0_e1_d3_d7_e7_e8(meter: SmartMeterObject) -> None:
    unit = Parser.parse_unit_for_cumulative_energy(edt(meter, 0xE1))
    assert unit == 0.1
    assert Parser.parse_coefficient_for_cumulative_energy(edt(meter, 0xD3)) == 1
    assert Parser.parse_number_of_effective_digits_for_cumulative_energy(edt(meter, 0xD7)) == 6
    e0 = Parser.parse_measured_cumulative_energy(edt(meter, 0xE0), unit, 1)
    wh = meter.model.registers(NOW).active_forward_wh
    assert e0 == pytest.approx((wh // 100) % 10**6 * 0.1)
    inst = meter.model.instantaneous(NOW)
    assert inst is not None
    assert Parser.parse_instantaneous_power(edt(meter, 0xE7)) == round(inst.active_w)
    cur = Parser.parse_instantaneous_current(edt(meter, 0xE8))
    assert cur["r phase current"] == pytest.approx(round(inst.current_r_a * 10) * 0.1)


def test_82_release_reads_as_release_r(meter: SmartMeterObject) -> None:
    assert Parser.parse_standard_version_information(edt(meter, 0x82)) == "R.0"
    m = SmartMeterObject(MeterModel(7), config=SmartMeterConfig(release="R", revision=4))
    assert Parser.parse_standard_version_information(edt(m, 0x82)) == "R.4"
    with pytest.raises(ValueError):
        SmartMeterConfig(release="RR")


def test_every_e1_code_is_a_unit_momonga_knows() -> None:
    for code in (0x00, 0x01, 0x02, 0x03, 0x04, 0x0A, 0x0B, 0x0C, 0x0D):
        m = SmartMeterObject(MeterModel(7), config=SmartMeterConfig(unit=code))
        kwh = Parser.parse_unit_for_cumulative_energy(edt(m, 0xE1))
        assert kwh == pytest.approx(10 ** {0: 0, 1: -1, 2: -2, 3: -3, 4: -4}.get(code, code - 9))


def test_d0_ea_eb_date_time_and_values(meter: SmartMeterObject) -> None:
    d0 = Parser.parse_one_minute_measured_cumulative_energy(edt(meter, 0xD0), 0.1, 1)
    assert d0["timestamp"] == jst(NOW - NOW % 60)
    ea = Parser.parse_cumulative_energy_measured_at_fixed_time(edt(meter, 0xEA), 0.1, 1)
    assert ea["timestamp"] == jst(NOW - NOW % 1800) and ea["cumulative energy"] is not None
    eb = Parser.parse_cumulative_energy_measured_at_fixed_time(edt(meter, 0xEB), 0.1, 1)
    assert eb["timestamp"] == ea["timestamp"]


def test_e2_history_day_and_48_values(meter: SmartMeterObject) -> None:
    assert meter.set(0xE5, Builder.build_edata_to_set_day_for_historical_data_1(1), NOW).ok
    e2 = edt(meter, 0xE2)
    assert int.from_bytes(e2[:2], "big") == 1
    points = Parser.parse_historical_cumulative_energy_1(e2, 0.1, 1)
    assert len(points) == 48 and all(p["cumulative energy"] is not None for p in points)


def test_ed_ec_and_ef_ee_round_trip_through_momonga(meter: SmartMeterObject) -> None:
    when = jst(NOW - 3600)
    ed = Builder.build_edata_to_set_time_for_historical_data_2(when, 5)
    assert meter.set(0xED, ed, NOW).ok
    back = Parser.parse_time_for_historical_data_2(edt(meter, 0xED))
    start = when.replace(second=0, minute=when.minute // 30 * 30)
    assert back == {"timestamp": start, "number of data points": 5}
    ec = Parser.parse_historical_cumulative_energy_2(edt(meter, 0xEC), 0.1, 1)
    assert len(ec) == 5
    assert [p["timestamp"] for p in ec][:2] == [start, start - datetime.timedelta(minutes=30)]

    ef = Builder.build_edata_to_set_time_for_historical_data_3(jst(NOW - 120), 10)
    assert meter.set(0xEF, ef, NOW).ok
    ee = Parser.parse_historical_cumulative_energy_3(edt(meter, 0xEE), 0.1, 1)
    assert len(ee) == 10 and ee[0]["timestamp"] == jst(NOW - 120).replace(second=0)
    assert ee[1]["timestamp"] == ee[0]["timestamp"] - datetime.timedelta(minutes=1)
    assert meter.set(0xEF, ef[:6] + b"\x0b", NOW).status is SetStatus.INVALID  # 1..10


def test_no_data_is_what_momonga_reads_as_none(meter: SmartMeterObject) -> None:
    opened = NOW - 600
    m = SmartMeterObject(meter.model, broute_opened_at=opened)
    e2 = Parser.parse_historical_cumulative_energy_1(edt(m, 0xE2), 0.1, 1)
    assert e2[0]["cumulative energy"] is None  # 00:00 predates the B route (§6.8)
    assert int.from_bytes(edt(m, 0xE2)[2:6], "big") == NO_DATA_U32


def test_node_profile_d6_d7_count_bytes_are_the_number_listed() -> None:
    # uecho (cybergarage) and the spec's table: D6 = count + EOJs (at most 84), D7 = count +
    # class codes (at most 8); D3 counts instances, D4 classes including the node profile.
    devices = [Eoj(0x02, 0x88, i) for i in range(1, 91)] + [Eoj(0x01, c, 1) for c in range(9)]
    p = NodeProfile(devices)
    d6 = p.read(0xD6, 0.0)
    assert d6 is not None and d6[0] == 84 and len(d6) == 1 + 84 * 3
    d7 = p.read(0xD7, 0.0)
    assert d7 is not None and d7[0] == 8 and len(d7) == 1 + 8 * 2
    assert p.read(0xD3, 0.0) == (99).to_bytes(3, "big")
    assert p.read(0xD4, 0.0) == (11).to_bytes(2, "big")
