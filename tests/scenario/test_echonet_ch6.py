"""ECHONET Lite System Design Guidelines, chapter 6 (smart-meter implementation cases) and the
bad-input rules, as scenarios on the virtual clock.

The meter is an `EchonetNode` hosting `NodeProfile` + `SmartMeterObject` over a seeded
`MeterModel`; it sits in a `VirtualNetwork` behind `BatchedPort`, which feeds every datagram that
arrives at one virtual instant to the node before a single flush, exactly as the runtime's
`EngineDriver` does with a socket's receive batch. `GroupPort` stands for the multicast group
224.0.23.0: whatever is sent to it reaches every member, flagged as multicast. Controllers are
bare engines (`Controller`) that send the frames a test builds and keep what comes back.

Addresses are in 127.0.50.0/24 (this file's range), though nothing here opens a socket.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence

import pytest

from amistack.addr import Addr
from amistack.crypto.rand import seeded_random
from amistack.echonet.frame import Eoj, Esv, Frame, Property
from amistack.echonet.node import MULTICAST_V4, NODE_PROFILE, EchonetNode, NodeConfig
from amistack.echonet.objects import (
    NO_DATA_S32,
    NO_DATA_U32,
    NodeProfile,
    OneWayMode,
    SmartMeterConfig,
    SmartMeterObject,
)
from amistack.echonet.propmap import decode_propmap
from amistack.meter.model import MeterConfig, MeterModel
from amistack.meter.tables import TimeScale
from amistack.sim import VirtualNetwork

HEMS = Eoj(0x05, 0xFF, 0x01)
METER = Eoj(0x02, 0x88, 0x01)
METER_ADDR: Addr = ("127.0.50.1", 3610)
TZ = 9 * 3600
# Engine time 0 is 2024-03-10 00:00 JST in the model (TimeScale origin).
T0 = (datetime.datetime(2024, 3, 10) - datetime.datetime(1970, 1, 1)).total_seconds() - TZ
DAY = 86400.0
HALF_HOUR = 1800.0
ND = NO_DATA_U32.to_bytes(4, "big")
# Seed 11 with an outage every day: day 0 20:51:51-21:27:50 JST, day 1 12:19:57-13:47:44 JST.
OUTAGE_SEED = 11
OUTAGE_DAY0 = (75111.0, 77270.0)
OUTAGE_DAY1 = (130797.0, 136064.0)


def u32s(b: bytes) -> list[int]:
    return [int.from_bytes(b[i : i + 4], "big") for i in range(0, len(b), 4)]


class Controller:
    """A bare HEMS controller engine: sends what a test asks, keeps every frame it receives."""

    def __init__(self, addr: Addr) -> None:
        self.addr = addr
        self.outbox: list[tuple[bytes, Addr]] = []
        self.received: list[tuple[float, Frame, Addr]] = []
        self.undecodable = 0
        self.tid = 0

    def send(self, frame: Frame | bytes, dest: Addr = METER_ADDR) -> None:
        self.outbox.append((frame if isinstance(frame, bytes) else frame.encode(), dest))

    def request(
        self,
        esv: Esv,
        props: Sequence[Property],
        deoj: Eoj = METER,
        props_get: Sequence[Property] = (),
        dest: Addr = METER_ADDR,
    ) -> int:
        self.tid = (self.tid + 1) & 0xFFFF
        self.send(Frame(self.tid, HEMS, deoj, esv, tuple(props), tuple(props_get)), dest)
        return self.tid

    def answer(self, tid: int) -> Frame | None:
        found = [f for _, f, _ in self.received if f.tid == tid and f.esv != Esv.INF]
        assert len(found) <= 1, f"TID {tid} answered {len(found)} times"
        return found[0] if found else None

    def infs(self) -> list[tuple[float, Frame]]:
        return [(t, f) for t, f, _ in self.received if f.esv == Esv.INF]

    # engine shape
    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        try:
            self.received.append((now, Frame.decode(data), addr))
        except ValueError:
            self.undecodable += 1

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def next_event(self) -> object | None:
        return None


class BatchedPort:
    """The node behind a socket: datagrams arriving at one instant are one receive batch, fed to
    the node before one `datagrams_to_send` (runtime/udp.py `EngineDriver` with batch=True)."""

    def __init__(self, node: EchonetNode) -> None:
        self.node = node
        self.pending: list[tuple[bytes, Addr, bool]] = []
        self.pending_at = 0.0
        self.batches = 0

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        if not self.pending:
            self.pending_at = now
        self.pending.append((data, addr, multicast))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return [] if self.pending else self.node.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self.pending_at if self.pending else self.node.get_timer()

    def handle_timer(self, now: float) -> None:
        if self.pending:
            batch, self.pending = self.pending, []
            self.batches += 1
            for data, addr, multicast in batch:
                self.node.receive_datagram(data, addr, now, multicast=multicast)
        timer = self.node.get_timer()
        if timer is not None and timer <= now:
            self.node.handle_timer(now)

    def next_event(self) -> object | None:
        return self.node.next_event()


class GroupPort:
    """The multicast group: a datagram sent to it reaches every member but its sender."""

    def __init__(self, net: VirtualNetwork) -> None:
        self.net = net
        self.members: dict[Addr, Controller | BatchedPort] = {}

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        for member_addr, member in self.members.items():
            if member_addr != addr and member_addr in self.net.addresses():
                member.receive_datagram(data, addr, now, multicast=True)
                self.net.service(member_addr)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return []

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def next_event(self) -> object | None:
        return None


class Home:
    """One smart meter node and the controllers that talk to it, on a virtual network."""

    def __init__(
        self,
        meter: SmartMeterObject,
        config: NodeConfig | None = None,
        seed: int = 5,
    ) -> None:
        self.meter = meter
        self.net = VirtualNetwork(seed=seed, capture=False)
        self.group = GroupPort(self.net)
        self.net.add_node(MULTICAST_V4, self.group)
        self.config = config or NodeConfig()
        self.seed = seed
        self.power_on()

    def power_on(self) -> None:
        """(Re)boot the meter's communication unit: a fresh node around the same meter object
        (its settings, E5/ED/EF, live in the meter's non-volatile memory)."""
        self.node = EchonetNode(
            NodeProfile([]), [self.meter], seeded_random(self.seed), self.config
        )
        self.seed += 1
        self.port = BatchedPort(self.node)
        self.net.add_node(METER_ADDR, self.port)
        self.group.members[METER_ADDR] = self.port
        self.node.start(self.net.now)
        self.net.service(METER_ADDR)

    def power_off(self) -> None:
        self.net.remove_node(METER_ADDR)

    def controller(self, host: str) -> Controller:
        c = Controller((host, 3610))
        self.net.add_node(c.addr, c)
        self.group.members[c.addr] = c
        return c

    def leave(self, c: Controller) -> None:
        self.net.remove_node(c.addr)
        del self.group.members[c.addr]

    def ask(
        self,
        c: Controller,
        esv: Esv,
        props: Sequence[Property],
        deoj: Eoj = METER,
        props_get: Sequence[Property] = (),
    ) -> Frame:
        tid = c.request(esv, props, deoj, props_get)
        self.net.service(c.addr)
        self.net.run_while(lambda: c.answer(tid) is None, self.net.now + 2.0)
        reply = c.answer(tid)
        assert reply is not None, f"no answer to TID {tid}"
        return reply

    def get(self, c: Controller, *epcs: int) -> dict[int, bytes]:
        reply = self.ask(c, Esv.GET, [Property(e) for e in epcs])
        assert reply.esv == Esv.GET_RES, reply
        return {p.epc: p.edt for p in reply.props}

    def run_to(self, t: float) -> None:
        self.net.run_until(t)


def make_meter(
    *,
    two_way: bool = True,
    one_way_mode: OneWayMode = OneWayMode.ABSENT,
    outages: bool = False,
    unit: int = 0x01,
    broute_opened_at: float | None = None,
) -> SmartMeterObject:
    model = MeterModel(
        OUTAGE_SEED, MeterConfig(two_way=two_way, outage_rate_per_year=366.0 if outages else 0.0)
    )
    return SmartMeterObject(
        model,
        TimeScale(origin_now=0.0, origin_model=T0),
        SmartMeterConfig(one_way_mode=one_way_mode, unit=unit),
        broute_opened_at=broute_opened_at,
    )


# -- 6.1 one-way meter ---------------------------------------------------------------------------


def test_6_1_one_way_meter_leaves_reverse_epcs_out_of_its_maps() -> None:
    """Guideline §6.1 (one-way meter, ABSENT mode): E3, E4 and EB are in none of the maps, a Get
    of them is answered not-possible, and the 30-minute announcement carries EA alone."""
    home = Home(make_meter(two_way=False))
    hems = home.controller("127.0.50.10")
    home.run_to(10 * 60)
    maps = home.get(hems, 0x9D, 0x9E, 0x9F)
    for m in maps.values():
        assert not decode_propmap(m) & {0xE3, 0xE4, 0xEB}
    assert {0xE0, 0xE2, 0xEA} <= decode_propmap(maps[0x9F])
    assert 0xEA in decode_propmap(maps[0x9D])

    reply = home.ask(hems, Esv.GET, [Property(0xE0), Property(0xE3), Property(0xEB)])
    assert reply.esv == Esv.GET_SNA
    assert [p.epc for p in reply.props] == [0xE0, 0xE3, 0xEB]
    assert len(reply.props[0].edt) == 4 and reply.props[1].edt == reply.props[2].edt == b""

    home.run_to(HALF_HOUR + 1)  # the 00:30 fixed-time announcement
    [(t, inf)] = hems.infs()[-1:]
    assert t == pytest.approx(HALF_HOUR, abs=0.1) and inf.seoj == METER
    assert [p.epc for p in inf.props] == [0xEA]


def test_6_1_one_way_meter_in_no_data_mode_reads_fffffffe() -> None:
    """Guideline §6.1 (one-way meter, NO_DATA mode): E3, E4 and EB stay in the maps and read
    0xFFFFFFFE; the reverse halves of D0 and EC read it too; EB is announced with it."""
    home = Home(make_meter(two_way=False, one_way_mode=OneWayMode.NO_DATA))
    hems = home.controller("127.0.50.10")
    home.run_to(2 * 3600 + 60)
    assert {0xE3, 0xE4, 0xEB} <= decode_propmap(home.get(hems, 0x9F)[0x9F])
    v = home.get(hems, 0xE3, 0xE4, 0xEB, 0xD0, 0xEC, 0xE0)
    assert v[0xE3] == ND
    assert v[0xE4][:2] == b"\x00\x00" and u32s(v[0xE4][2:]) == [NO_DATA_U32] * 48
    assert v[0xEB][7:] == ND
    assert v[0xD0][11:] == ND and v[0xD0][7:11] != ND
    segments = u32s(v[0xEC][7:])
    assert segments[1::2] == [NO_DATA_U32] * 12  # reverse halves
    assert NO_DATA_U32 not in segments[0::2] and 0 not in segments[0::2]
    assert v[0xE0] != ND

    home.run_to(2 * 3600 + HALF_HOUR + 1)
    _, inf = hems.infs()[-1]
    assert [p.epc for p in inf.props] == [0xEA, 0xEB] and inf.props[1].edt[7:] == ND


# -- 6.2 E2/E4 start with the day in E5 -------------------------------------------------------


def test_6_2_e2_e4_start_with_e5_across_reconnects_and_outages() -> None:
    """Guideline §6.2: E2 and E4 always begin with the collection day set in E5 -- in the same
    SetGet, in later Gets, from a newly connected controller at another address, across a day
    change and after the meter's power outage (the meter keeps E5 through it)."""
    home = Home(make_meter(outages=True))
    a = home.controller("127.0.50.10")
    home.run_to(10 * 3600)
    reply = home.ask(a, Esv.SETGET, [Property(0xE5, b"\x02")], props_get=[Property(0xE2)])
    assert reply.esv == Esv.SETGET_RES and reply.props_get[0].edt[:2] == b"\x00\x02"
    v = home.get(a, 0xE5, 0xE2, 0xE4)
    assert v[0xE5] == b"\x02" and v[0xE2][:2] == v[0xE4][:2] == b"\x00\x02"

    # A's connection ends; B connects from another address and asks straight away.
    home.leave(a)
    home.run_to(10 * 3600 + 600)
    b = home.controller("127.0.50.11")
    v = home.get(b, 0xE2, 0xE4, 0xE5)
    assert v[0xE5] == b"\x02" and v[0xE2][:2] == v[0xE4][:2] == b"\x00\x02"
    e2_day0 = v[0xE2]

    # Across midnight: still the day in E5 (now counted from the new day).
    home.run_to(DAY + 3600)
    v = home.get(b, 0xE2, 0xE5)
    assert v[0xE5] == b"\x02" and v[0xE2][:2] == b"\x00\x02" and v[0xE2] != e2_day0

    # The meter goes dark for its outage, comes back (a new node), B asks again.
    fail, restore = OUTAGE_DAY1
    home.run_to(fail)
    home.power_off()
    tid = b.request(Esv.GET, [Property(0xE2)])
    home.net.service(b.addr)
    home.run_to(restore)
    assert b.answer(tid) is None  # nobody home while the power is out
    home.power_on()
    home.run_to(restore + 5)
    assert home.node.counters["startup_inf"] == 1  # §4.2 after the reboot
    for epcs in ((0xE2,), (0xE4,), (0xE5, 0xE2, 0xE4)):
        v = home.get(b, *epcs)
        assert all(v[e][:2] == b"\x00\x02" for e in (0xE2, 0xE4) if e in v)
    v = home.get(b, 0xE5)
    assert v[0xE5] == b"\x02"

    # A new E5 takes effect for whoever asks next.
    reply = home.ask(b, Esv.SETC, [Property(0xE5, b"\x00")])
    assert reply.esv == Esv.SET_RES
    e2 = home.get(b, 0xE2)[0xE2]
    assert e2[:2] == b"\x00\x00"
    # E5 names the day of the outage itself (§6.2's 0x00FF case): the day field is still E5's,
    # the half hours inside the outage (12:30, 13:00, 13:30) read no data, the others values.
    slots = u32s(e2[2:])
    assert slots[25:28] == [NO_DATA_U32] * 3 and NO_DATA_U32 not in slots[:25]


# -- 6.3 outages read no-data ------------------------------------------------------------------


def test_6_3_outage_intervals_read_fffffffe_never_zero() -> None:
    """Guideline §6.3: half hours during which the power was out read 0xFFFFFFFE -- never 0 --
    in E2 (history 1), EC (history 2) and EA (fixed-time value, Get and announcement)."""
    meter = make_meter(outages=True)
    home = Home(meter)
    hems = home.controller("127.0.50.10")
    fail, restore = OUTAGE_DAY0  # 20:51:51 .. 21:27:50: the 21:00 value is missing
    inside = 21 * 3600.0
    assert fail < inside < restore

    home.run_to(inside + 60)
    ea = home.get(hems, 0xEA)[0xEA]
    assert ea[:7] == bytes((0x07, 0xE8, 3, 10, 21, 0, 0)) and ea[7:] == ND
    inf = [f for t, f in hems.infs() if t == pytest.approx(inside, abs=0.1)]
    assert inf and inf[0].props[0] == Property(0xEA, ea)
    assert home.get(hems, 0xE7)[0xE7] == NO_DATA_S32.to_bytes(4, "big")  # dark meter

    home.run_to(DAY + 8 * 3600)
    assert home.ask(hems, Esv.SETC, [Property(0xE5, b"\x01")]).esv == Esv.SET_RES
    e2 = u32s(home.get(hems, 0xE2)[0xE2][2:])
    missing = [j for j, v in enumerate(e2) if v == NO_DATA_U32]
    assert missing == [42]  # 21:00, the only half-hour boundary inside the outage
    assert 0 not in e2

    ed = bytes((0x07, 0xE8, 3, 10, 22, 0, 6))  # 22:00 back to 19:30, six segments
    assert home.ask(hems, Esv.SETC, [Property(0xED, ed)]).esv == Esv.SET_RES
    ec = home.get(hems, 0xEC)[0xEC]
    assert ec[:7] == ed
    normal = u32s(ec[7:])[0::2]
    assert normal[2] == NO_DATA_U32  # 21:00
    assert [v for i, v in enumerate(normal) if i != 2] == [
        meter.to_units(meter.model.registers(T0 + h).active_forward_wh)
        for h in (22 * 3600, 21.5 * 3600, 20.5 * 3600, 20 * 3600, 19.5 * 3600)
    ]
    assert 0 not in normal


# -- 6.8 history before the B route opened -------------------------------------------------------


def test_6_8_history_before_the_broute_opened_reads_fffffffe() -> None:
    """Guideline §6.8: readings from before the B route was opened (the HEMS registered) read
    0xFFFFFFFE -- in E2 for that day and the days before, in EC and EE -- and the values after
    it are real ones."""
    opened = T0 + 9 * 3600 + 600  # the B route opened at 09:10 on day 0
    meter = make_meter(broute_opened_at=opened)
    home = Home(meter)
    hems = home.controller("127.0.50.10")
    home.run_to(15 * 3600)

    e2 = u32s(home.get(hems, 0xE2)[0xE2][2:])
    assert e2[:19] == [NO_DATA_U32] * 19  # 00:00 .. 09:00
    assert NO_DATA_U32 not in e2[19:31] and 0 not in e2[19:31]  # 09:30 .. 15:00
    assert e2[31:] == [NO_DATA_U32] * 17  # the future
    for day in (b"\x01", b"\x05", b"\x63"):
        assert home.ask(hems, Esv.SETC, [Property(0xE5, day)]).esv == Esv.SET_RES
        e2 = home.get(hems, 0xE2)[0xE2]
        assert e2[:2] == b"\x00" + day and u32s(e2[2:]) == [NO_DATA_U32] * 48

    ed = bytes((0x07, 0xE8, 3, 10, 10, 0, 4))  # 10:00, 09:30, 09:00, 08:30
    assert home.ask(hems, Esv.SETC, [Property(0xED, ed)]).esv == Esv.SET_RES
    normal = u32s(home.get(hems, 0xEC)[0xEC][7:])[0::2]
    assert normal[2:] == [NO_DATA_U32] * 2 and NO_DATA_U32 not in normal[:2]

    ef = bytes((0x07, 0xE8, 3, 10, 9, 12, 5))  # 09:12 back to 09:08
    assert home.ask(hems, Esv.SETC, [Property(0xEF, ef)]).esv == Esv.SET_RES
    normal = u32s(home.get(hems, 0xEE)[0xEE][7:])[0::2]
    assert normal[3:] == [NO_DATA_U32] * 2 and NO_DATA_U32 not in normal[:3]


# -- 6.10 E0/E3 are current values ---------------------------------------------------------------


def test_6_10_e0_e3_are_the_register_now_not_the_last_half_hour() -> None:
    """Guideline §6.10: E0 and E3 are the cumulative amounts at the moment of the Get (the
    register now), not the last half hour's value that EA/EB carry."""
    meter = make_meter(unit=0x03)  # 0.001 kWh: one minute of load shows
    home = Home(meter)
    hems = home.controller("127.0.50.10")
    seen = []
    for minute in (12 * 60 + 1, 12 * 60 + 10, 12 * 60 + 29):
        home.run_to(minute * 60.0)
        v = home.get(hems, 0xE0, 0xE3, 0xEA)
        reg = meter.model.registers(T0 + minute * 60.0)
        assert int.from_bytes(v[0xE0], "big") == meter.to_units(reg.active_forward_wh)
        assert int.from_bytes(v[0xE3], "big") == meter.to_units(reg.active_reverse_wh)
        assert v[0xEA][4:6] == bytes((12, 0))  # EA stays the 12:00 value all along
        seen.append((v[0xE0], v[0xEA][7:]))
    e0s = [e0 for e0, _ in seen]
    assert len(set(e0s)) == 3 and e0s == sorted(e0s)  # moving within the half hour
    assert len({ea for _, ea in seen}) == 1 and seen[-1][0] != seen[-1][1]


# -- 6.11 / 2.7 no excessive rate limit, bounded floods ------------------------------------------


def test_6_11_a_controller_at_60_per_minute_is_served_for_an_hour_despite_a_flood() -> None:
    """Guideline §6.11 with §2.7: a controller sending one request per second (60/min) is
    answered every time for an hour of virtual time; meanwhile a flooding source (bursts of
    500 unicast requests per second, then multicast ones) gets at most the per-source bound per
    receive batch, the node's queues stay bounded, and the flooder is served normally again once
    it calms down (no lockout)."""
    home = Home(make_meter())
    good = home.controller("127.0.50.10")
    flood = home.controller("127.0.50.66")
    bound = home.config.max_pending_per_source
    tids: list[int] = []
    burst_answers: list[int] = []

    def good_request(now: float) -> None:
        tids.append(good.request(Esv.GET, [Property(0xE7), Property(0xE0)]))

    def burst(multicast: bool) -> None:
        before = len(flood.received)
        for _ in range(500):
            flood.request(Esv.GET, [Property(0xE7)], dest=MULTICAST_V4 if multicast else METER_ADDR)
        home.net.service(flood.addr)

        def count() -> None:
            burst_answers.append(len(flood.received) - before)

        home.net.clock.call_later(0.9, count)

    start = 5.0
    for k in range(3600):
        home.net.call_at(start + k, good.addr, good_request)
    for k in range(60):  # a minute of unicast flood, then a minute of multicast flood
        home.net.clock.call_at(start + 600 + k + 0.0, lambda: burst(False))
        home.net.clock.call_at(start + 1200 + k + 0.0, lambda: burst(True))
    home.run_to(start + 3600 + 5)

    assert len(tids) == 3600
    answers = [good.answer(t) for t in tids]
    assert all(a is not None and a.esv == Esv.GET_RES for a in answers)
    times = {f.tid: t for t, f, _ in good.received}
    assert max(times[t] - (start + i) for i, t in enumerate(tids)) < 0.1  # unicast: no delay

    unicast, multicast = burst_answers[:60], burst_answers[60:]
    assert max(unicast) <= bound and min(unicast) == bound
    assert max(multicast) <= bound  # §2.4 delayed answers: at most `bound` held per source
    assert home.node.counters["dropped_queue_full"] >= 2 * 60 * (500 - bound)
    assert len(home.node._delayed) == 0 and not home.node._outbox  # nothing piles up

    # Calm again: the former flooder's single request is answered like anyone's.
    assert home.get(flood, 0xE7)[0xE7]


def test_6_11_a_get_flood_from_one_source_gets_back_less_than_it_sends() -> None:
    """Amplification (issue 10): a 16-byte Get of E2+E4 is answered with 404 bytes. A source
    sending 500 of them a second, in receive batches of 50 (as a socket delivers them), for a
    minute gets back fewer bytes than it sent -- the per-source reply budget -- while a
    controller at 60 requests/min (§6.11) is answered every time, and the flooder is served
    again once it calms down (no lockout)."""
    home = Home(make_meter())
    good = home.controller("127.0.50.11")
    flood = home.controller("127.0.50.67")
    tids: list[int] = []
    start = 5.0

    def burst() -> None:
        for _ in range(50):
            flood.request(Esv.GET, [Property(0xE2), Property(0xE4)])
        home.net.service(flood.addr)

    for k in range(60):
        home.net.call_at(
            start + k, good.addr, lambda now: tids.append(good.request(Esv.GET, [Property(0xE7)]))
        )
    for k in range(600):
        home.net.clock.call_at(start + k * 0.1, burst)
    home.run_to(start + 62)

    sent = 600 * 50 * 16
    received = sum(len(f.encode()) for _, f, _ in flood.received if f.esv != Esv.INF)
    assert received <= sent  # before the budget: 25 times as much (404 bytes per 16)
    cfg = home.config
    assert cfg.reply_rate is not None
    assert received <= cfg.reply_burst + cfg.reply_rate * 62 + 404
    assert home.node.counters["dropped_rate_limited"] > 0
    answers = [good.answer(t) for t in tids]
    assert len(tids) == 60 and all(a is not None and a.esv == Esv.GET_RES for a in answers)
    home.run_to(start + 70)
    assert home.get(flood, 0xE7)[0xE7]


def test_6_11_a_spoofed_flood_keeps_state_bounded_and_the_controller_served() -> None:
    """A Get flood where every datagram claims a new source address (spoofed, one-off): the
    node keeps at most `max_budget_sources` budgets, newcomers share one, so the flood gets back
    less than it sends in all, and the controller that was talking before is answered every
    second. The node is fed directly (20,000 addresses are too many virtual hosts)."""
    node = EchonetNode(
        NodeProfile([]), [make_meter()], seeded_random(3), NodeConfig(max_budget_sources=32)
    )
    get = Frame(7, HEMS, METER, Esv.GET, (Property(0xE2), Property(0xE4))).encode()
    poll = Frame(8, HEMS, METER, Esv.GET, (Property(0xE7),)).encode()
    good = ("127.0.50.12", 3610)
    sent = received = answered = 0
    for k in range(1000):  # 20 s of 1,000 one-off sources a second, batches of 20
        now = 10.0 + k * 0.02
        if k % 50 == 0:
            node.receive_datagram(poll, good, now)
        for _ in range(20):
            sent += len(get)
            node.receive_datagram(get, (f"10.1.{sent // 4096}.{sent // 16 % 256}", 3610), now)
        for data, dest in node.datagrams_to_send(now):
            if dest[0] == good[0]:
                answered += 1
            else:
                received += len(data)
    assert received <= sent  # before the budget: 25 times as much
    budget = node.reply_budget
    assert budget is not None and len(budget) <= 32 and good[0] in budget
    assert answered == 20


# -- bad input -------------------------------------------------------------------------------


def _bad_frames() -> list[bytes]:
    ok = Frame(0x4242, HEMS, METER, Esv.GET, (Property(0xE7),)).encode()
    return [
        ok[:8],  # truncated inside the header
        ok[:11],  # OPC missing
        ok[:-1] + b"\x05",  # PDC 5 with no EDT behind it
        ok[:-1] + b"\x00\x99",  # trailing byte after the last property
        bytes.fromhex("1081424205ff010288016102e50101e502"),  # second property's PDC too long
        b"\x10\x80" + ok[2:],  # EHD2 neither format
        b"\x11" + ok[1:],  # not ECHONET Lite
        b"",
    ]


def test_bad_input_is_dropped_and_the_node_keeps_serving_others() -> None:
    """Bad input (issue, "Bad input"): truncated frames, a PDC that disagrees with the bytes,
    trailing bytes, wrong headers are dropped and counted -- no answer to them -- while another
    controller asking in the same receive batch is answered."""
    home = Home(make_meter())
    bad = home.controller("127.0.50.20")
    good = home.controller("127.0.50.21")
    home.run_to(60)
    frames = _bad_frames()
    for data in frames:
        bad.send(data)
    home.net.service(bad.addr)
    tid = good.request(Esv.GET, [Property(0xE7)])
    home.net.service(good.addr)
    home.run_to(62)
    assert home.port.batches >= 1
    assert home.node.counters["malformed"] == len(frames)
    assert [f for _, f, _ in bad.received if f.esv != Esv.INF] == []
    reply = good.answer(tid)
    assert reply is not None and reply.esv == Esv.GET_RES


def test_bad_input_gets_the_right_not_possible_response() -> None:
    """Bad input with a well-formed frame: OPC=0, unknown EPC, unknown EOJ, a write to a
    read-only EPC, a wrong EDT size, an unknown ESV -- each gets its not-possible response (or
    is dropped, for the unknown ESV and for a multicast to an object we do not host), and the
    node answers the next request normally."""
    home = Home(make_meter())
    c = home.controller("127.0.50.30")
    home.run_to(60)

    r = home.ask(c, Esv.GET, [])
    assert (r.esv, r.props, r.seoj) == (Esv.GET_SNA, (), METER)
    r = home.ask(c, Esv.SETC, [])
    assert (r.esv, r.props) == (Esv.SETC_SNA, ())
    r = home.ask(c, Esv.SETI, [])
    assert (r.esv, r.props) == (Esv.SETI_SNA, ())
    r = home.ask(c, Esv.INF_REQ, [])
    assert (r.esv, r.props) == (Esv.INF_SNA, ())
    r = home.ask(c, Esv.SETGET, [])
    assert (r.esv, r.props, r.props_get) == (Esv.SETGET_SNA, (), ())

    r = home.ask(c, Esv.GET, [Property(0xE7), Property(0xAA), Property(0x84)])
    assert r.esv == Esv.GET_SNA and [(p.epc, len(p.edt)) for p in r.props] == [
        (0xE7, 4),
        (0xAA, 0),
        (0x84, 0),
    ]

    aircon = Eoj(0x01, 0x30, 0x01)
    r = home.ask(c, Esv.GET, [Property(0x80)], deoj=aircon)
    assert (r.esv, r.seoj, r.props) == (Esv.GET_SNA, aircon, (Property(0x80),))
    r = home.ask(c, Esv.SETC, [Property(0x80, b"\x30")], deoj=Eoj(0x02, 0x88, 0x02))
    assert r.esv == Esv.SETC_SNA and r.props == (Property(0x80, b"\x30"),)

    r = home.ask(c, Esv.SETC, [Property(0xE0, b"\x00\x00\x00\x01")])
    assert r.esv == Esv.SETC_SNA and r.props == (Property(0xE0, b"\x00\x00\x00\x01"),)
    r = home.ask(c, Esv.SETC, [Property(0xE5, b"\x00\x01")])  # E5 is one byte
    assert r.esv == Esv.SETC_SNA and r.props == (Property(0xE5, b"\x00\x01"),)
    r = home.ask(c, Esv.SETI, [Property(0xE5, b"\x64")])  # 100 > 99: SetI answers its failure
    assert r.esv == Esv.SETI_SNA
    tid = c.request(Esv.SETI, [Property(0xE5, b"\x03")])  # a good SetI has no answer
    c.send(Frame(0x7777, HEMS, METER, 0x65, (Property(0xE7),)))  # unknown ESV: dropped
    c.request(Esv.GET, [Property(0x80)], deoj=aircon, dest=MULTICAST_V4)  # not ours: silence
    home.net.service(c.addr)
    home.run_to(home.net.now + 3)
    assert c.answer(tid) is None and c.answer(0x7777) is None and c.answer(c.tid) is None
    assert home.node.counters["unknown_esv"] == 1
    assert home.node.counters["multicast_not_ours"] == 1

    assert home.get(c, 0xE5)[0xE5] == b"\x03"
    assert math.isfinite(int.from_bytes(home.get(c, 0xE7)[0xE7], "big", signed=True))
    r = home.ask(c, Esv.GET, [Property(0xD6)], deoj=NODE_PROFILE)
    assert r.esv == Esv.GET_RES and r.props == (Property(0xD6, b"\x01" + METER.encode()),)
