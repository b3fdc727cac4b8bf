"""C12.22 through the handheld, on the virtual clock: the head-end's C12.22 client (keys from the
real key server engine, as the head-end fetches them) reads a meter of the isolated area and
switches it; the EAX'-protected messages cross the channel, the handheld's DODAG root and the
mesh, and neither the meter's C12.22 key nor its reading is readable by the handheld."""

from __future__ import annotations

from tests.unit.handheld.harness import build_field, global_of
from tests.unit.handheld.test_handheld_attacks import _byte_strings

from amistack.c1222.acse import ApTitle
from amistack.c1222.endpoint import C1222Client, EndpointConfig
from amistack.c1222.events import ResponseReceived
from amistack.c1222.services import ResponseCode
from amistack.c1222.tables import Table
from amistack.crypto import seeded_random
from amistack.handheld import WAN_ADDR
from amistack.headend.keys import HeadendKeys
from amistack.keymgmt.server import KeyServer
from amistack.mesh.node import radio_addr
from amistack.meter.node import ap_title_for
from amistack.sim.handheld_area import AreaConfig, area_meter_id, handheld_eui, meter_eui

HEADEND_TITLE = ApTitle.parse("2.16.124.113620.1.22.0.1")
METERS = 4


def test_the_head_end_reads_an_isolated_meter_through_the_handheld() -> None:
    clients: list[C1222Client] = []

    def headend(ks: KeyServer) -> C1222Client:
        titles = {ap_title_for(area_meter_id(i)).device_id: area_meter_id(i)
                  for i in range(1, METERS + 1)}  # fmt: skip
        keys = HeadendKeys(titles.get, ks)
        clients.append(C1222Client(EndpointConfig(HEADEND_TITLE), keys.lookup, keys.send_key,
                                   seeded_random(7)))  # fmt: skip
        return clients[0]

    field = build_field(AreaConfig(meters=METERS, headend_title=HEADEND_TITLE), headend=headend)
    net, client = field.area.net, clients[0]
    through: list[bytes] = []
    hh = radio_addr(handheld_eui())
    net.capture_hooks.append(
        lambda now, src, dst, data: through.append(data) if hh in (src, dst) else None
    )
    session = field.start_work()
    assert field.run_until_joined(set(range(1, METERS + 1)))
    far = METERS  # the farthest meter: several hops out
    assert len(session.route_table(net.now)[global_of(meter_eui(far).interface_id())]) >= 2
    meter_addr = (global_of(meter_eui(far).interface_id()), 1153)
    rid = client.read(meter_addr, ap_title_for(area_meter_id(far)), Table.CURRENT_REGISTER_DATA,
                      net.now)  # fmt: skip
    net.service(WAN_ADDR)

    def answered() -> list[ResponseReceived]:
        return [a for a in net.events_of(WAN_ADDR, ResponseReceived) if a.request_id == rid]

    net.run_while(lambda: not answered(), net.now + 60.0)
    got = answered()
    assert got and got[0].responses[0].code == ResponseCode.OK, net.events[WAN_ADDR]
    reading = got[0].responses[0].data
    assert len(reading) >= 8
    # the key and the reading: never in the clear through the handheld, never kept in it
    ring = field.area.c1222[far - 1].ring
    c1222_keys = [k.key for k in ring.keys() if k.purpose.name == "c1222"]  # noqa: SIM118
    assert c1222_keys
    for data in through:
        assert not any(k in data for k in c1222_keys) and reading not in data
    held = b"\x00".join(_byte_strings(session))
    assert not any(k in held for k in c1222_keys) and reading not in held
    assert session.root is not None and session.root.counters["wan-out"] > 0
