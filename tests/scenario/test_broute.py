"""The B route on the virtual clock: a HEMS authenticates to the meter with PANA (EAP-PSK from
the B-route ID and password), then reads the smart meter through the secured link; and the
guideline chapter-6 cases that involve PANA: 6.4 keep-alive, 6.5 reconnection stages (with the
time each takes), 6.7 no lockout, 6.9 unexpected PANA during authentication, 6.12 a newcomer
does not drop the connected HEMS until its own PANA succeeds. Plus key rotation without losing
frames, and forged / replayed / unauthenticated frames dropped and counted while serving."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from amistack.addr import Addr
from amistack.broute import (
    AttemptFailed,
    BrouteCredentials,
    BrouteHems,
    BrouteHemsConfig,
    BrouteMeter,
    BrouteMeterConfig,
    HemsAuthFailed,
    HemsConnected,
    HemsDisconnected,
    KeyRotated,
    LinkDown,
    LinkState,
    LinkUp,
    NotConnected,
    Received,
    ReconnectFailed,
    ReconnectStage,
    ReconnectStageEnded,
    RescanRequested,
    Stage,
)
from amistack.broute.link import LinkDecodeError, PanaFrame, SecuredFrame, decode_frame
from amistack.crypto import seeded_random
from amistack.echonet.frame import Eoj, Esv, Frame, Property
from amistack.echonet.node import NODE_PROFILE, EchonetNode
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.keymgmt.ukmf import KeyId
from amistack.meter.model import MeterConfig, MeterModel
from amistack.meter.tables import TimeScale
from amistack.pana.constants import MessageType
from amistack.pana.message import PanaMessage
from amistack.pana.paa import PaaConfig
from amistack.runtime.udp import EngineDriver
from amistack.sim import LinkConfig, VirtualNetwork

RBID = "00112233445566778899AABBCCDDEEFF"
RBID_B = "0011223344556677889900000000B0B0"
PASSWORD = "0123456789AB"
CREDS = BrouteCredentials(RBID, PASSWORD)
CREDS_B = BrouteCredentials(RBID_B, "HEMSBpassw0d")
WRONG = BrouteCredentials(RBID, "0123456789XX")
METER: Addr = ("fe80::1", 716)
HEMS_A: Addr = ("fe80::a", 716)
HEMS_B: Addr = ("fe80::b", 716)
STRANGER_EUI = bytes.fromhex("02000000000bad00")


def link(raw: bytes) -> PanaFrame | SecuredFrame | None:
    """The link frame a captured datagram is (None: not one)."""
    try:
        return decode_frame(raw)
    except LinkDecodeError:
        return None


def pana(message: bytes) -> bytes:
    """A PANA frame from a stranger's radio."""
    return PanaFrame(message, STRANGER_EUI).encode()


CONTROLLER = Eoj(0x05, 0xFF, 0x01)
SMART_METER = Eoj(0x02, 0x88, 0x01)
DAY = 86400.0


@dataclass
class World:
    net: VirtualNetwork
    meter: BrouteMeter
    meter_obj: SmartMeterObject
    hems: dict[Addr, BrouteHems] = field(default_factory=dict)
    log: list[tuple[float, Addr, object]] = field(default_factory=list)
    tids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add_hems(
        self,
        addr: Addr,
        creds: BrouteCredentials = CREDS,
        config: BrouteHemsConfig | None = None,
        seed: int = 0,
        start: bool = True,
    ) -> BrouteHems:
        h = BrouteHems(creds, METER, seeded_random(1000 + seed + hash(addr) % 997), config)
        self.hems[addr] = h
        self.net.add_node(addr, h)
        if start:
            self.net.call_at(self.net.now, addr, h.start)
        return h

    def until(self, condition: Callable[[], bool], seconds: float) -> bool:
        """Run while `condition` does NOT hold, for at most `seconds`; True once it holds."""
        return self.net.run_while(lambda: not condition(), self.net.now + seconds)

    def of(self, addr: Addr, kind: type[object]) -> list[tuple[float, object]]:
        return [(t, e) for t, a, e in self.log if a == addr and isinstance(e, kind)]

    def events(self, addr: Addr, kind: type[object]) -> list[object]:
        return [e for _, e in self.of(addr, kind)]

    def get(self, addr: Addr, epcs: tuple[int, ...], wait: float = 1.0) -> Frame | None:
        """The HEMS at `addr` sends an ECHONET Lite Get through the envelope; the answer."""
        tid = next(self.tids)
        req = Frame(tid, CONTROLLER, SMART_METER, Esv.GET, tuple(Property(e) for e in epcs))
        h = self.hems[addr]
        h.send(req.encode(), 3610, 3610, self.net.now)
        self.net.service(addr)
        seen = len(self.log)
        self.net.run_until(self.net.now + wait)
        for _, a, e in self.log[seen:]:
            if a == addr and isinstance(e, Received) and not e.multicast:
                f = Frame.decode(e.payload)
                if f.tid == tid:
                    return f
        return None


def build(
    *,
    meter_config: BrouteMeterConfig | None = None,
    link: LinkConfig | None = None,
    credentials: tuple[BrouteCredentials, ...] = (CREDS, CREDS_B),
    seed: int = 1,
) -> World:
    net = VirtualNetwork(seed=seed, default_link=link or LinkConfig(latency=0.02), capture=100_000)
    model = MeterModel(seed, MeterConfig(two_way=True))
    # engine time 0 = 30 days after installation, so the meter has history and values
    scale = TimeScale(origin_now=0.0, origin_model=model.install_time + 30 * DAY)
    obj = SmartMeterObject(model, time=scale)
    node = EchonetNode(NodeProfile([]), [obj], seeded_random(seed))
    meter = BrouteMeter(node, credentials, seeded_random(seed + 1), meter_config)
    w = World(net, meter, obj)
    net.on_event.append(lambda addr, ev, now: w.log.append((now, addr, ev)))
    net.add_node(METER, meter)
    net.call_at(0.0, METER, meter.start)
    return w


def connect(w: World, addr: Addr = HEMS_A, **kw: object) -> BrouteHems:
    h = w.add_hems(addr, **kw)  # type: ignore[arg-type]
    assert w.until(lambda: h.connected, 10.0), "no LinkUp"
    w.net.run_until(w.net.now + 0.1)  # the meter has the key once our last PAN arrived
    return h


def cut(w: World, a: Addr, b: Addr) -> Callable[[], None]:
    """Drop everything between a and b until the returned function is called."""

    def keep(now: float, src: Addr, dst: Addr, data: bytes) -> bool:
        return {src, dst} != {a, b}

    w.net.filters.append(keep)
    return lambda: w.net.filters.remove(keep)


# -- the happy path ---------------------------------------------------------------------------


def test_hems_authenticates_and_reads_e7_through_the_secured_link() -> None:
    w = build()
    h = connect(w)
    [up] = w.events(HEMS_A, LinkUp)
    assert isinstance(up, LinkUp) and up.stage is Stage.INITIAL
    assert up.elapsed < 0.5  # 10 PANA messages at 20 ms
    [conn] = w.events(METER, HemsConnected)
    assert isinstance(conn, HemsConnected) and conn.rbid == RBID and not conn.reauth
    w.net.run_until(w.net.now + 3.0)
    # the node's instance list reaches the new HEMS as a (secured) multicast INF
    infs = [e for e in w.events(HEMS_A, Received) if isinstance(e, Received) and e.multicast]
    assert infs, "no INF of D5 after joining"
    inf = Frame.decode(infs[0].payload)
    assert inf.esv == Esv.INF and inf.props[0].epc == 0xD5 and inf.seoj == NODE_PROFILE
    answer = w.get(HEMS_A, (0xE7, 0xE0))
    assert answer is not None and answer.esv == Esv.GET_RES
    [e7, e0] = answer.props
    # the value is the meter object's at the instant the meter answered
    t_answer = max(t for t, src, _, _ in w.net.capture if src == METER)
    assert e7.edt == w.meter_obj.get(0xE7, t_answer)
    assert e7.edt != b"\x7f\xff\xff\xfe" and len(e0.edt) == 4
    assert h.counters["rx_secured"] >= 2 and w.meter.counters["rx_secured"] == 1
    # nothing ECHONET Lite on the wire in the clear: every datagram is PANA or secured
    for _, _, _, raw in w.net.capture:
        frame = decode_frame(raw)
        if isinstance(frame, PanaFrame):
            PanaMessage.decode(frame.message)
        else:
            assert isinstance(frame, SecuredFrame)
            assert b"\x10\x81" not in frame.sealed[:2]


def test_unauthenticated_traffic_never_reaches_the_node() -> None:
    w = build()
    rx_before = w.meter.node.counters["rx"]
    stranger: Addr = ("fe80::666", 716)
    plain = Frame(1, CONTROLLER, SMART_METER, Esv.GET, (Property(0xE7),)).encode()
    w.net.inject(stranger, METER, plain)  # raw ECHONET Lite, no envelope
    no_key = SecuredFrame(KeyId(1, 1), 0, STRANGER_EUI, None, plain * 3)
    w.net.inject(stranger, METER, no_key.encode())  # looks secured, names no key
    h = w.add_hems(HEMS_B, WRONG)  # wrong password: PANA fails
    w.net.run_until(5.0)
    assert w.meter.node.counters["rx"] == rx_before
    assert w.meter.counters["drop_malformed"] >= 1
    assert w.meter.counters["drop_unknown_key_id"] >= 1
    assert w.events(METER, HemsAuthFailed)
    assert not h.connected
    try:
        h.send(plain, 3610, 3610, w.net.now)
    except NotConnected:
        pass
    else:
        raise AssertionError("send without a link key must raise NotConnected")
    # nothing the meter sent to the stranger or the failed HEMS was ECHONET Lite
    for _, src, dst, raw in w.net.capture:
        if src == METER and dst in (stranger, HEMS_B):
            assert isinstance(decode_frame(raw), PanaFrame)


# -- 6.4 keep-alive ---------------------------------------------------------------------------

KA = BrouteHemsConfig(keepalive_interval=60.0, keepalive_timeout=10.0)


def test_6_4_keepalive_pings_while_idle_and_detects_a_dead_link() -> None:
    w = build()
    h = connect(w, config=KA)
    w.net.run_until(w.net.now + 300.0)  # idle: a ping every 60 s, all answered
    assert 4 <= h.counters["keepalive_ping"] <= 5
    assert not w.events(HEMS_A, LinkDown) and h.connected
    last_pong = w.net.now
    cut(w, METER, HEMS_A)  # the meter goes silent (radio lost)
    assert w.until(lambda: bool(w.events(HEMS_A, LinkDown)), 200.0)
    [(t_down, down)] = w.of(HEMS_A, LinkDown)
    assert isinstance(down, LinkDown) and "keep-alive" in down.reason
    # detected within one interval plus the ping timeout
    assert t_down - last_pong <= KA.keepalive_interval + KA.keepalive_timeout + 1.0
    assert h.counters["keepalive_failed"] == 1


def test_6_4_traffic_counts_as_alive_no_pings_while_reading() -> None:
    w = build()
    h = connect(w, config=KA)
    for _ in range(10):  # one Get every 30 s
        assert w.get(HEMS_A, (0xE7,), wait=30.0) is not None
    assert h.counters["keepalive_ping"] == 0 and h.connected


# -- 6.5 reconnection stages --------------------------------------------------------------------

FAST = BrouteHemsConfig(
    keepalive_interval=30.0, keepalive_timeout=5.0, stage_timeouts=(20.0, 30.0, 60.0)
)


def stage_times(w: World, addr: Addr) -> list[tuple[Stage, bool, float]]:
    return [
        (e.stage, e.ok, round(e.elapsed, 3))
        for e in w.events(addr, ReconnectStageEnded)
        if isinstance(e, ReconnectStageEnded)
    ]


def test_6_5_stage_1_reauthentication_after_a_radio_outage() -> None:
    w = build()
    h = connect(w, config=FAST)
    sid = h.session_id
    restore = cut(w, METER, HEMS_A)
    assert w.until(lambda: bool(w.events(HEMS_A, LinkDown)), 100.0)
    t_down = w.net.now
    w.net.clock.call_at(t_down + 4.0, restore)  # the radio comes back within stage 1
    assert w.until(lambda: h.connected, 60.0)
    up = w.events(HEMS_A, LinkUp)[-1]
    assert isinstance(up, LinkUp) and up.stage is Stage.REAUTH
    assert up.session_id == sid and up.key_id.generation == 2  # same session, new key
    assert [e.stage for e in w.events(HEMS_A, ReconnectStage)] == [Stage.REAUTH]  # type: ignore[attr-defined]
    [(stage, ok, took)] = stage_times(w, HEMS_A)
    assert stage is Stage.REAUTH and ok and 4.0 <= took <= 20.0
    w.net.run_until(w.net.now + 0.2)
    assert w.get(HEMS_A, (0xE7,)) is not None  # served under the new key
    assert [c.reauth for c in w.events(METER, HemsConnected)] == [False, True]  # type: ignore[attr-defined]


def test_6_5_stage_2_new_authentication_after_the_meter_restarted() -> None:
    w = build()
    h = connect(w, config=FAST)
    old_sid = h.session_id
    # the meter restarts: same address, same node, a fresh PAA that knows no session
    w.net.remove_node(METER)
    fresh = BrouteMeter(w.meter.node, (CREDS,), seeded_random(77))
    w.meter = fresh
    w.net.add_node(METER, fresh)
    assert w.until(lambda: len(w.events(HEMS_A, LinkUp)) >= 2, 200.0)
    up = w.events(HEMS_A, LinkUp)[-1]
    assert isinstance(up, LinkUp) and up.stage is Stage.NEW_AUTH and up.session_id != old_sid
    times = stage_times(w, HEMS_A)
    assert [(s, ok) for s, ok, _ in times] == [(Stage.REAUTH, False), (Stage.NEW_AUTH, True)]
    assert times[0][2] == FAST.stage_timeouts[0]  # stage 1 ran to its timeout
    assert times[1][2] < 0.5  # one PANA exchange
    assert up.downtime < FAST.stage_timeouts[0] + 1.0
    w.net.run_until(w.net.now + 0.2)
    assert w.get(HEMS_A, (0xE7,)) is not None


def test_6_5_the_meter_ending_the_session_goes_straight_to_stage_2() -> None:
    w = build()
    cfg = BrouteHemsConfig(reconnect_after_meter_termination=True)
    h = connect(w, config=cfg)
    [conn] = w.meter.connected
    w.net.call_at(w.net.now, METER, lambda now: w.meter.disconnect(conn.session_id, now))
    assert w.until(lambda: len(w.events(HEMS_A, LinkUp)) >= 2, 10.0)
    up = w.events(HEMS_A, LinkUp)[-1]
    assert isinstance(up, LinkUp) and up.stage is Stage.NEW_AUTH and up.elapsed < 0.5
    assert h.connected


def test_6_5_stage_3_rescan_finds_the_meter_at_a_new_address() -> None:
    w = build()
    h = connect(w, config=FAST)
    moved: Addr = ("fe80::1:1", 716)
    w.net.remove_node(METER)
    w.net.add_node(moved, w.meter)  # same meter, new address (e.g. a new PAN after a reset)
    scan_time = 5.0

    def on_event(addr: Addr, ev: object, now: float) -> None:
        if addr == HEMS_A and isinstance(ev, RescanRequested):  # the "radio" scans
            w.net.call_at(now + scan_time, HEMS_A, lambda t: h.rescan_result(moved, t))

    w.net.on_event.append(on_event)
    assert w.until(lambda: len(w.events(HEMS_A, LinkUp)) >= 2, 300.0)
    up = w.events(HEMS_A, LinkUp)[-1]
    assert isinstance(up, LinkUp) and up.stage is Stage.RESCAN
    times = stage_times(w, HEMS_A)
    assert [(s, ok) for s, ok, _ in times] == [
        (Stage.REAUTH, False),
        (Stage.NEW_AUTH, False),
        (Stage.RESCAN, True),
    ]
    assert times[0][2] == FAST.stage_timeouts[0] and times[1][2] == FAST.stage_timeouts[1]
    assert scan_time <= times[2][2] < scan_time + 0.5
    total = sum(t for _, _, t in times)
    assert abs(up.downtime - total) < 1e-6
    w.net.run_until(w.net.now + 0.2)
    assert w.get(HEMS_A, (0xE7,)) is not None
    assert h.meter == moved


# -- 6.7 no lockout -------------------------------------------------------------------------------


def test_6_7_no_lockout_after_failures_and_a_new_hems_connects_any_time() -> None:
    w = build()
    a = connect(w)
    # a HEMS with a wrong password hammers the meter for ten minutes from one address (ours
    # stops at the first refusal unless told to retry: an attacker's would not)
    bad = w.add_hems(
        HEMS_B,
        WRONG,
        BrouteHemsConfig(restart_delay=0.5, initial_timeout=1e9, retry_refused=True),
    )
    w.net.run_until(w.net.now + 600.0)
    failures = len(w.events(METER, HemsAuthFailed))
    assert failures >= 100 and not bad.connected
    assert a.connected and w.get(HEMS_A, (0xE7,)) is not None  # A unaffected throughout
    # the very same address, now with the right credentials (another RBID the meter accepts),
    # connects at once: no lockout, no power cycle
    w.net.remove_node(HEMS_B)
    t0 = w.net.now
    good = connect(w, HEMS_B, creds=CREDS_B, config=BrouteHemsConfig(), seed=5)
    assert w.net.now - t0 < 1.0 and good.connected
    assert w.get(HEMS_B, (0xE7,)) is not None
    # a day later (and more) a new controller still connects at any moment
    w.net.run_until(w.net.now + 25 * 3600.0)
    late: Addr = ("fe80::c", 716)
    t0 = w.net.now
    h = connect(w, late, seed=9)
    assert h.connected and w.net.now - t0 < 1.0
    assert w.get(late, (0xE7,)) is not None


def test_a_wrong_password_stops_at_the_first_refusal() -> None:
    """The meter's refusal is immediate and final for these credentials: one attempt, one
    AttemptFailed(final=True), the link CLOSED -- not ten retries over ten seconds."""
    w = build()
    bad = w.add_hems(HEMS_B, WRONG, BrouteHemsConfig(restart_delay=0.5))
    w.net.run_until(w.net.now + 30.0)
    assert len(w.events(METER, HemsAuthFailed)) == 1
    failed = w.events(HEMS_B, AttemptFailed)
    assert len(failed) == 1
    assert isinstance(failed[0], AttemptFailed) and failed[0].final
    assert "refused" in failed[0].reason
    assert bad.state is LinkState.CLOSED and bad.counters["pci"] == 1


# -- 6.9 unexpected PANA during authentication -----------------------------------------------------


def test_6_9_unexpected_pana_during_authentication_restarts_it_and_never_stops_the_node() -> None:
    w = build(meter_config=BrouteMeterConfig(max_sessions=2))
    connect(w)  # A is connected and keeps reading throughout
    slow = LinkConfig(latency=0.5)  # B's authentication takes seconds: room to disturb it
    w.net.set_link(METER, HEMS_B, slow)
    b1 = w.add_hems(HEMS_B, CREDS_B, seed=1)
    w.net.run_until(w.net.now + 3.2)
    assert not b1.connected and w.meter.paa.half_open_count == 1  # B is in its EAP run
    # stray PANA from elsewhere: garbage, a PAN naming B's session, answers to nobody
    stranger: Addr = ("fe80::bad", 716)
    sid_b = next(
        PanaMessage.decode(f.message).session_id
        for _, src, dst, raw in w.net.capture
        if src == METER and dst == HEMS_B and isinstance(f := link(raw), PanaFrame)
    )
    stray = [
        pana(b"\xff" * 40),
        pana(PanaMessage(MessageType.AUTH, 0, sid_b, 12345).encode()),
        pana(PanaMessage(MessageType.NOTIFICATION, 0x8000, sid_b, 1).encode()),
        pana(PanaMessage(MessageType.TERMINATION, 0x8000, sid_b, 2).encode()),
    ]
    for raw in stray:
        w.net.inject(stranger, METER, raw)
    assert w.get(HEMS_A, (0xE7,), wait=0.2) is not None  # the node never stops
    # B's software restarts mid-authentication and sends a new PCI: the meter restarts it
    w.net.remove_node(HEMS_B)
    b2 = w.add_hems(HEMS_B, CREDS_B, seed=2)
    assert w.until(lambda: b2.connected, 30.0)
    assert w.meter.counters["auth_restarted"] == 1
    pc = w.meter.paa.counters  # the strays were dropped and counted by the PAA
    assert pc["decode_error"] >= 1 and pc["unexpected_answer"] >= 1
    assert pc["unexpected_message"] >= 2
    w.net.run_until(w.net.now + 1.0)
    assert w.meter.paa.half_open_count == 0  # the abandoned run does not linger
    assert {c.rbid for c in w.meter.connected} == {RBID, RBID_B}
    assert w.get(HEMS_A, (0xE7,), wait=0.2) is not None
    assert w.get(HEMS_B, (0xE7,), wait=2.0) is not None


def test_6_9_a_hems_giving_up_mid_authentication_discards_it_at_once() -> None:
    """Guideline §6.9: on an unexpected PANA packet the meter does not stop; it discards the
    PANA authentication and starts again. A HEMS that, mid-run, sends a termination (or
    notification) request for its own run -- it has no PANA SA yet, so no AUTH -- has given
    it up: the half-open session ends at once (it used to linger until its timeout, holding a
    per-source slot), the same packet from another address changes nothing, A is served
    throughout and B's next PCI connects."""
    w = build(meter_config=BrouteMeterConfig(max_sessions=2))
    connect(w)
    w.net.set_link(METER, HEMS_B, LinkConfig(latency=0.5))
    b1 = w.add_hems(HEMS_B, CREDS_B, seed=5)
    w.net.run_until(w.net.now + 3.2)
    assert not b1.connected and w.meter.paa.half_open_count == 1
    sid_b = next(
        PanaMessage.decode(f.message).session_id
        for _, src, dst, raw in w.net.capture
        if src == METER and dst == HEMS_B and isinstance(f := link(raw), PanaFrame)
    )
    give_up = pana(PanaMessage(MessageType.TERMINATION, 0x8000, sid_b, 7).encode())
    w.net.inject(("fe80::bad", 716), METER, give_up)  # a stranger cannot cancel B's run
    w.net.run_until(w.net.now + 0.01)
    assert w.meter.paa.half_open_count == 1 and w.meter.counters["auth_abandoned"] == 0
    w.net.remove_node(HEMS_B)
    w.net.inject(HEMS_B, METER, give_up)
    w.net.run_until(w.net.now + 0.6)  # B's link has 0.5 s latency
    assert w.meter.paa.half_open_count == 0 and w.meter.counters["auth_abandoned"] == 1
    assert w.get(HEMS_A, (0xE7,), wait=0.2) is not None  # the node never stops
    b2 = w.add_hems(HEMS_B, CREDS_B, seed=6)
    assert w.until(lambda: b2.connected, 30.0)
    assert w.get(HEMS_B, (0xE7,), wait=2.0) is not None


# -- 6.12 a newcomer does not drop the connected HEMS until its PANA succeeds ----------------------


def test_6_12_newcomer_replaces_the_connected_hems_only_when_its_pana_succeeds() -> None:
    w = build()  # max_sessions=1: the B route serves one HEMS
    a = connect(w)
    # a newcomer with a wrong password: A is untouched
    w.add_hems(HEMS_B, WRONG, BrouteHemsConfig(initial_timeout=1e9), seed=3)
    w.net.run_until(w.net.now + 5.0)
    assert w.events(METER, HemsAuthFailed) and a.connected
    assert not w.events(METER, HemsDisconnected)
    assert w.get(HEMS_A, (0xE7,)) is not None
    w.net.remove_node(HEMS_B)
    # a real newcomer on a slow link: during its whole PANA exchange A is still served
    w.net.set_link(METER, HEMS_B, LinkConfig(latency=0.4))
    b = w.add_hems(HEMS_B, CREDS_B, seed=4)
    served_during = 0
    while True:
        answer = w.get(HEMS_A, (0xE7,), wait=0.3)
        if [c.rbid for c in w.meter.connected] != [RBID]:
            break  # B's PANA has just succeeded at the meter
        assert answer is not None and a.connected
        served_during += 1
        assert served_during < 30
    assert served_during >= 5 and b.connected
    w.net.run_until(w.net.now + 1.0)
    # B's success ended A's session (PTR); A is told and does not fight back
    assert [c.rbid for c in w.meter.connected] == [RBID_B]
    [gone] = w.events(METER, HemsDisconnected)
    assert isinstance(gone, HemsDisconnected) and "6.12" in gone.reason
    [down] = w.events(HEMS_A, LinkDown)
    assert isinstance(down, LinkDown) and "meter ended" in down.reason
    assert a.state is LinkState.CLOSED
    assert w.get(HEMS_B, (0xE7,)) is not None


# -- key rotation ----------------------------------------------------------------------------------


def test_reauthentication_rotates_the_link_key_without_losing_a_frame() -> None:
    lifetime = 600.0
    w = build(
        meter_config=BrouteMeterConfig(paa=PaaConfig(session_lifetime=lifetime)),
        link=LinkConfig(latency=0.02, jitter=0.03),  # reordering around the switch too
    )
    h = connect(w)
    answered = 0
    for _ in range(1000):  # a Get every second for 1000 s: re-authentications at 450, 900 s
        if w.get(HEMS_A, (0xE7,)) is not None:
            answered += 1
    assert answered == 1000
    rotations = [e for e in w.events(HEMS_A, KeyRotated) if isinstance(e, KeyRotated)]
    assert [r.key_id.generation for r in rotations] == [2, 3]
    assert h.key_id is not None and h.key_id.generation == 3
    assert w.meter.counters["drop_unknown_key_id"] == 0
    assert w.meter.counters["drop_replayed"] == 0 and h.counters["drop_forged"] == 0
    assert [c.reauth for c in w.events(METER, HemsConnected)] == [False, True, True]  # type: ignore[attr-defined]


# -- forged and replayed frames --------------------------------------------------------------------


def test_forged_and_replayed_frames_are_dropped_and_counted_while_the_meter_serves() -> None:
    w = build()
    h = connect(w)
    assert w.get(HEMS_A, (0xE7,)) is not None
    ours = [
        raw
        for _, src, dst, raw in w.net.capture
        if src == HEMS_A and dst == METER and isinstance(link(raw), SecuredFrame)
    ]
    theirs = [
        raw
        for _, src, dst, raw in w.net.capture
        if src == METER and dst == HEMS_A and isinstance(link(raw), SecuredFrame)
    ]
    node_rx = w.meter.node.counters["rx"]
    attacker: Addr = ("fe80::e71", 716)
    last = link(ours[-1])
    assert isinstance(last, SecuredFrame)
    # MIC flipped (and a fresh counter, or it would count as a replay first)
    forged = replace(last, counter=last.counter + 4, sealed=last.sealed[:-1] + b"\x00").encode()
    bumped = replace(last, counter=last.counter + 1).encode()  # the MIC no longer covers it
    kid = last.key_id
    wrong_key = replace(last, key_id=KeyId(kid.session_id, kid.generation ^ 1)).encode()
    for raw in (ours[-1], ours[-1], forged, bumped, wrong_key, ours[-1][:40]):
        w.net.inject(attacker, METER, raw)
    rx_before = h.counters["rx_secured"]
    for raw in theirs:
        w.net.inject(attacker, HEMS_A, raw)  # replayed answers and INF to the HEMS
    w.net.run_until(w.net.now + 1.0)
    mc = w.meter.counters
    assert mc["drop_replayed"] == 2 and mc["drop_forged"] == 2
    assert mc["drop_unknown_key_id"] == 1 and mc["drop_truncated"] == 1
    assert w.meter.node.counters["rx"] == node_rx  # none of it reached the node
    assert h.counters["drop_replayed"] == len(theirs)
    assert h.counters["rx_secured"] == rx_before  # no duplicate Received
    assert h.connected
    assert w.get(HEMS_A, (0xE7,)) is not None  # and the meter keeps serving


def test_decrypt_failures_take_the_link_down_and_stage_1_recovers_it() -> None:
    w = build()
    h = connect(w, config=BrouteHemsConfig(decrypt_failures=3))
    ours = [
        raw
        for _, src, _, raw in w.net.capture
        if src == METER and isinstance(link(raw), SecuredFrame)
    ]
    last = link(ours[-1])
    assert isinstance(last, SecuredFrame)
    kid = last.key_id  # a key generation the HEMS does not hold:
    stale_kid = KeyId(kid.session_id, kid.generation ^ 0x7F)
    for i in range(3):
        stale = bytearray(replace(last, key_id=stale_kid, counter=i).encode())
        w.net.inject(METER, HEMS_A, bytes(stale))
    assert w.until(lambda: len(w.events(HEMS_A, LinkUp)) >= 2, 10.0)
    [down] = w.events(HEMS_A, LinkDown)
    assert isinstance(down, LinkDown) and "decrypt" in down.reason
    up = w.events(HEMS_A, LinkUp)[-1]
    assert isinstance(up, LinkUp) and up.stage is Stage.REAUTH and up.elapsed < 0.5
    assert h.counters["drop_unknown_key_id"] == 3
    w.net.run_until(w.net.now + 0.2)
    assert w.get(HEMS_A, (0xE7,)) is not None


# -- the same engines over real UDP on loopback (127.0.20.0/24) -----------------------------------


def test_over_real_udp_on_loopback() -> None:
    async def run() -> Frame:
        w = build()  # the world supplies the meter engine; the virtual network is not used
        meter = BrouteMeter(w.meter.node, (CREDS,), seeded_random(11))
        got: asyncio.Queue[object] = asyncio.Queue()
        async with EngineDriver(meter) as md:
            meter_addr = await md.bind("127.0.20.1", 0)
            hems = BrouteHems(CREDS, meter_addr, seeded_random(12))
            async with EngineDriver(hems, events=got) as hd:
                await hd.bind("127.0.20.2", 0)
                meter.start(md.now())
                md.kick()
                hems.start(hd.now())
                hd.kick()
                while not isinstance(await asyncio.wait_for(got.get(), 5.0), LinkUp):
                    pass
                await asyncio.sleep(0.05)  # our last PAN reaches the meter
                req = Frame(7, CONTROLLER, SMART_METER, Esv.GET, (Property(0xE7),))
                hems.send(req.encode(), 3610, 3610, hd.now())
                hd.kick()
                while True:
                    ev = await asyncio.wait_for(got.get(), 5.0)
                    if isinstance(ev, Received) and not ev.multicast:
                        return Frame.decode(ev.payload)

    answer = asyncio.run(run())
    assert answer.tid == 7 and answer.esv == Esv.GET_RES and len(answer.props[0].edt) == 4


def test_6_5_all_stages_fail_then_the_hems_retries_from_stage_2() -> None:
    w = build()
    cfg = BrouteHemsConfig(
        keepalive_interval=30.0, stage_timeouts=(20.0, 30.0, 60.0), retry_interval=100.0
    )
    h = connect(w, config=cfg)
    w.net.remove_node(METER)  # the meter is gone and nobody answers the rescan
    assert w.until(lambda: bool(w.events(HEMS_A, ReconnectFailed)), 400.0)
    [failed] = w.events(HEMS_A, ReconnectFailed)
    assert isinstance(failed, ReconnectFailed)
    assert failed.downtime == pytest.approx(20.0 + 30.0 + 60.0)
    assert h.state is LinkState.WAITING
    with pytest.raises(NotConnected):
        h.send(b"\x10\x81", 3610, 3610, w.net.now + 1e6)  # keys long gone by then
    w.net.add_node(METER, w.meter)  # back before the retry
    assert w.until(lambda: len(w.events(HEMS_A, LinkUp)) >= 2, 200.0)
    up = w.events(HEMS_A, LinkUp)[-1]
    assert isinstance(up, LinkUp) and up.stage is Stage.NEW_AUTH
    assert abs(w.net.now - (failed.retry_at + up.elapsed)) < 0.1
    assert up.downtime > failed.downtime + cfg.retry_interval - 1.0


def test_without_auto_reconnect_the_application_decides() -> None:
    w = build()
    h = connect(w, config=BrouteHemsConfig(auto_reconnect=False, keepalive_interval=30.0))
    restore = cut(w, METER, HEMS_A)
    assert w.until(lambda: bool(w.events(HEMS_A, LinkDown)), 100.0)
    w.net.run_until(w.net.now + 300.0)
    assert h.state is LinkState.WAITING and not w.events(HEMS_A, ReconnectStage)
    restore()
    w.net.call_at(w.net.now, HEMS_A, h.reconnect)
    assert w.until(lambda: h.connected, 60.0)
    up = w.events(HEMS_A, LinkUp)[-1]
    assert isinstance(up, LinkUp) and up.stage in (Stage.REAUTH, Stage.NEW_AUTH)


def test_6_7_a_pci_flood_from_many_sources_does_not_lock_a_new_hems_out() -> None:
    w = build()
    connect(w)
    pci = pana(PanaMessage(MessageType.PCI, 0, 0, 0).encode())
    for i in range(6000):  # spoofed sources that never answer
        w.net.inject((f"fe80::f:{i:x}", 716), METER, pci, when=w.net.now + i * 0.001)
    w.net.run_until(w.net.now + 6.5)
    assert w.meter.paa.half_open_count == 6000
    assert len(w.meter._in_progress) <= 4096  # bounded (half-open timeouts are silent)
    assert w.get(HEMS_A, (0xE7,)) is not None  # the connected HEMS is served throughout
    t0 = w.net.now
    h = connect(w, HEMS_B, creds=CREDS_B, seed=6)
    assert h.connected and w.net.now - t0 < 1.0
    w.net.run_until(w.net.now + 60.0)  # the half-open sessions time out
    assert w.meter.paa.half_open_count == 0
