"""Commands through the head-end engine against real meters: remote disconnect/reconnect with
relay read-back, demand response (curtailment, load limit), time sync; a welded relay that
reads back the wrong state fails the command; timeouts fail it after the retries."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tests.contexts import make_ctx
from tests.unit.c1222.c1222_harness import FakeMeter

from amistack.c1222.acse import ApTitle
from amistack.c1222.endpoint import C1222Server, EndpointConfig
from amistack.c1222.security import ring_key_lookup, ring_send_key
from amistack.crypto import seeded_random
from amistack.headend.collector import Mode
from amistack.headend.keys import DirectorySource, HeadendKeys, repository_resolver
from amistack.headend.schema import Command, CommandKind, CommandState
from amistack.headend.service import HeadEnd, HeadEndConfig
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt.keyring import KeyRing, KeyRingDirectory
from amistack.keymgmt.ukmf import PurposeRegistry
from amistack.sim.clock import VirtualClock
from amistack.sim.fleet import (
    HEADEND_ADDR,
    HEADEND_TITLE,
    T0,
    CellConfig,
    CellNetwork,
    Fleet,
    FleetConfig,
    build_fleet,
    meter_id,
)

M0 = meter_id(0)


def _fleet() -> Fleet:
    return build_fleet(FleetConfig(meters=2, cells=1, mode=Mode.POLLED, slots=1))


def _run_command(fleet: Fleet, kind: CommandKind, params: dict[str, object] | None = None,
                 meter: str = M0, seconds: float = 30.0) -> Command:  # fmt: skip
    cmd = fleet.repo.create_command(meter, kind, params or {}, fleet.clock.now)
    fleet.clock.run_until(fleet.clock.now + seconds)
    got = fleet.repo.get_command(cmd.id)
    assert got is not None
    return got


def _audit(fleet: Fleet, command_id: int) -> list[str]:
    return [
        e.kind
        for e in fleet.repo.events(meter_id=M0, limit=1000)
        if json.loads(e.detail).get("command") == command_id
    ]


def test_disconnect_then_reconnect_confirmed_by_read_back() -> None:
    fleet = _fleet()
    model = fleet.nodes[0].model
    cmd = _run_command(fleet, CommandKind.DISCONNECT)
    assert cmd.state is CommandState.CONFIRMED and cmd.relay_state == "open"
    assert not model.switch.relay_closed(fleet.clock.now)
    assert _audit(fleet, cmd.id) == ["command_sent", "command_readback", "command_confirmed"]
    cmd = _run_command(fleet, CommandKind.RECONNECT)
    assert cmd.state is CommandState.CONFIRMED and cmd.relay_state == "closed", cmd
    assert model.switch.relay_closed(fleet.clock.now)
    assert fleet.nodes[1].model.switch.relay_closed(fleet.clock.now)  # the other meter untouched


def test_time_sync_sets_the_meters_clock() -> None:
    fleet = _fleet()
    tables = fleet.nodes[0].tables
    tables.clock_offset = -120.0  # the meter runs two minutes late
    cmd = _run_command(fleet, CommandKind.TIME_SYNC)
    assert cmd.state is CommandState.CONFIRMED and cmd.confirmation is not None
    assert abs(tables.clock_offset) < 2.0


def test_on_demand_read_returns_the_current_registers() -> None:
    fleet = _fleet()
    fleet.clock.run_until(fleet.clock.now + 3600)  # an hour of consumption
    cmd = _run_command(fleet, CommandKind.READ)
    assert cmd.state is CommandState.CONFIRMED and cmd.confirmation is not None, cmd
    regs = json.loads(cmd.confirmation)
    assert regs["active_forward_wh"] > 0 and len(regs["tiers_wh"]) == 6
    assert _audit(fleet, cmd.id) == ["command_sent", "command_confirmed"]


def test_demand_response_curtailment_reconnects_after_the_duration() -> None:
    fleet = _fleet()
    model = fleet.nodes[0].model
    cmd = _run_command(fleet, CommandKind.DEMAND_RESPONSE, {"curtail_s": 120}, seconds=20)
    assert cmd.state is CommandState.CONFIRMED and cmd.relay_state == "open"
    assert not model.switch.relay_closed(fleet.clock.now)
    fleet.clock.run_until(fleet.clock.now + 150)
    later = fleet.repo.commands(meter_id=M0, after_id=cmd.id)
    assert [(c.kind, c.state, c.relay_state) for c in later] == [
        (CommandKind.RECONNECT, CommandState.CONFIRMED, "closed")
    ]
    assert model.switch.relay_closed(fleet.clock.now)


def test_load_limit_is_set_in_the_meter() -> None:
    fleet = _fleet()
    cmd = _run_command(fleet, CommandKind.DEMAND_RESPONSE, {"limit_w": 2000})
    assert cmd.state is CommandState.CONFIRMED and cmd.confirmation == "load limit 2000 W set"
    model = fleet.nodes[0].model
    assert model.switch.load_limit_at(model.switch.last_change + 10**9) == 2000
    lifted = _run_command(fleet, CommandKind.DEMAND_RESPONSE, {"limit_w": 0})
    assert lifted.state is CommandState.CONFIRMED
    assert model.switch.load_limit_at(model.switch.last_change + 10**9) is None


def test_unreachable_meter_fails_after_retries() -> None:
    fleet = _fleet()
    fleet.net.down.add(fleet.addrs[0])
    cmd = _run_command(fleet, CommandKind.DISCONNECT, seconds=60)
    assert cmd.state is CommandState.FAILED and "no answer" in (cmd.reason or "")
    assert fleet.headend.commands.counters["timeouts"] == 3
    assert fleet.nodes[0].model.switch.relay_closed(fleet.clock.now)


@dataclass
class WeldedRelay(FakeMeter):
    """The contactor is welded shut: the switch reports success, the relay sensor says closed."""

    def set_switch(self, connected: bool, now: float) -> bool:
        self.calls.append(f"switch:{connected}")
        return connected  # the driver believes it


def test_relay_read_back_mismatch_fails_the_command(tmp_path: object) -> None:
    clock = VirtualClock(T0)
    net = CellNetwork(clock, CellConfig(), 1, 1)
    repo = SqliteRepository(str(tmp_path))
    title = ApTitle((0, 77), relative=True)
    repo.register_meter("welded", str(title.absolute()), "c", "cell-0", T0)
    repo.commission_meter("welded", T0)
    directory = KeyRingDirectory(PurposeRegistry())
    ring = KeyRing(b"welded", PurposeRegistry())
    ctx = make_ctx(0x99, 1, seed=5)
    ring.install(ctx, 3600.0, T0)
    directory.install(b"welded", ctx, 3600.0, T0)
    meter = WeldedRelay()
    server = C1222Server(
        EndpointConfig(title), meter, ring_key_lookup(ring), ring_send_key(ring), seeded_random(9)
    )
    addr = ("10.9.9.9", 1153)
    keys = HeadendKeys(repository_resolver(repo.meter_by_ap_title), DirectorySource(directory))
    headend = HeadEnd(
        HeadEndConfig(HEADEND_TITLE), repo, keys, seeded_random(8), T0, addr_of=lambda m: addr
    )
    net.add(HEADEND_ADDR, headend, None)
    net.add(addr, server, 0)
    cmd = repo.create_command("welded", CommandKind.DISCONNECT, {}, T0)
    clock.run_until(T0 + 10)
    got = repo.get_command(cmd.id)
    assert got is not None and meter.calls == ["switch:False"]
    assert got.state is CommandState.FAILED and got.relay_state == "closed"
    assert got.reason == "relay read back closed, expected open"
    kinds = [e.kind for e in repo.events(meter_id="welded")]
    assert kinds == ["command_sent", "command_readback", "command_failed"]


def test_red_team_parameter_jam_fails_the_command_and_later_ones_still_run() -> None:
    """`{"limit_w": [1]}` used to raise inside the timer loop on every poll (jamming every later
    command) and `{"curtail_s": [1]}` opened the relay and never scheduled the reconnect. Stored
    bypassing the API's checks, they now fail at once and change nothing in the meter."""
    fleet = _fleet()
    model = fleet.nodes[0].model
    jam = _run_command(fleet, CommandKind.DEMAND_RESPONSE, {"limit_w": [1]})
    assert jam.state is CommandState.FAILED and "limit_w must be a number" in (jam.reason or "")
    open_forever = _run_command(fleet, CommandKind.DEMAND_RESPONSE, {"curtail_s": [1]})
    assert open_forever.state is CommandState.FAILED
    assert model.switch.relay_closed(fleet.clock.now)  # the relay was never opened
    later = _run_command(fleet, CommandKind.DISCONNECT)
    assert later.state is CommandState.CONFIRMED and later.relay_state == "open"
    assert fleet.headend.commands.get_timer() is None  # nothing left to spin on
