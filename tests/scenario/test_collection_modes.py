"""Which collection mode loses what at what fleet size (docs/collection.md), on the virtual
clock with MeterNodes behind one shared, constrained cell; and the head-end service for real:
UDP, the REST API, a command created through the API executed against a meter over UDP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.contexts import make_ctx

from amistack.access import AccessStore, Role
from amistack.addr import Addr
from amistack.c1222.acse import ApTitle
from amistack.crypto import seeded_random
from amistack.headend.collector import Mode
from amistack.headend.keys import DirectorySource
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt.keyring import KeyRing, KeyRingDirectory
from amistack.keymgmt.ukmf import PurposeRegistry
from amistack.meter.model import DAY_S, MeterConfig, MeterModel
from amistack.meter.node import MeterNode, MeterNodeConfig
from amistack.runtime.headend import HeadEndRuntime, run_headend
from amistack.runtime.udp import EngineDriver
from amistack.sim.fleet import CellConfig, FleetConfig, run_fleet

NARROW = CellConfig(rate_pps=5.0, queue=20)  # a constrained concentrator cell


def _run(meters: int, mode: Mode) -> dict[str, Any]:
    return run_fleet(FleetConfig(meters=meters, cells=1, mode=mode, slots=1, cell=NARROW))


def test_small_fleet_both_modes_lose_nothing() -> None:
    for mode in (Mode.POLLED, Mode.PUSHED):
        r = _run(100, mode)
        assert r["readings_lost"] == r["readings_late"] == r["cell_dropped"] == 0, r
        assert r["meters_pushes_lost"] == 0


def test_at_1000_meters_per_cell_push_congests_and_polling_does_not() -> None:
    polled, pushed = _run(1000, Mode.POLLED), _run(1000, Mode.PUSHED)
    # polled: the concentrator's bounded outstanding reads keep the cell's queue short. What
    # joining the congested cell can cost is apart from collection: a PANA success whose PAN
    # and retransmitted PARs were all dropped leaves a meter with keys the key server withdrew
    # (docs/key-hierarchy.md, "Durability" 3); its reading is lost until it re-authenticates
    assert polled["cell_dropped"] == 0
    assert polled["readings_lost"] <= polled["keyserver_successes_unconfirmed"]
    assert polled["packets_per_reading"] == 4.0  # request + response, two slots' reads
    assert polled["slot_time_max_s"] < 900  # within the slot, but minutes, not seconds
    # pushed: the random offsets put ~7 packets/s on a 5 packets/s cell: drops, lost pushes,
    # retransmissions; the targeted polls after the grace period recover every reading
    assert pushed["cell_dropped"] > 1000 and pushed["meters_pushes_lost"] > 100
    assert pushed["collected_via"].get("targeted", 0) > 100
    assert pushed["readings_lost"] <= pushed["keyserver_successes_unconfirmed"]
    assert pushed["packets_per_reading"] > 2 * polled["packets_per_reading"]
    assert pushed["cell_utilisation_peak_10s"] > 0.95


@pytest.mark.parametrize("kind,relay", [("disconnect", "open")])
def test_service_executes_an_api_command_over_udp(tmp_path: Path, kind: str, relay: str) -> None:
    asyncio.run(_service(tmp_path, kind, relay))


async def _service(tmp_path: Path, kind: str, relay: str) -> None:
    now = time.time()
    title = ApTitle((0, 4242), relative=True)
    repo = SqliteRepository(tmp_path)
    repo.register_meter("m-1", str(title.absolute()), "c1", "cell-1", now)
    repo.commission_meter("m-1", now)
    repo.close()
    users = AccessStore(tmp_path)  # what `amistack users add` + `users token` write
    users.add_user("olga", "correct horse battery", {Role.OPERATOR}, now)
    token = users.issue_token("olga", now).token
    users.close()
    directory = KeyRingDirectory(PurposeRegistry())
    ring = KeyRing(b"m-1", PurposeRegistry())
    ctx = make_ctx(0x4242, 1, seed=11)
    directory.install(b"m-1", ctx, 3600.0, now)
    ring.install(ctx, 3600.0, now)
    node = MeterNode(
        MeterNodeConfig(title, ApTitle.parse("2.16.124.113620.1.22.0.1")),
        MeterModel(5, MeterConfig(install_time=now - 40 * DAY_S)),
        ring,
        seeded_random(3),
    )
    async with EngineDriver(node, wall_clock=True) as meter:
        meter_addr: Addr = await meter.bind("127.0.0.1", 0)
        node.start(meter.now())
        meter.kick()
        stop = asyncio.Event()
        ready: asyncio.Future[HeadEndRuntime] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            run_headend(
                tmp_path,
                listen=[("127.0.0.1", 0)],
                api=("127.0.0.1", 0),
                key_source=DirectorySource(directory),
                addresses={"m-1": meter_addr},
                stop=stop,
                ready=ready.set_result,
            )
        )
        rt = await asyncio.wait_for(ready, 10)
        assert rt.api is not None and rt.udp
        base = f"http://{rt.api[0]}:{rt.api[1]}"
        async with httpx.AsyncClient(base_url=base) as anonymous:
            refused = await anonymous.post("/commands", json={"meter_id": "m-1", "kind": kind})
            assert refused.status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=bearer) as http:
            made = await http.post("/commands", json={"meter_id": "m-1", "kind": kind})
            assert made.status_code == 201, made.text
            cid = made.json()["id"]
            state = None
            for _ in range(100):
                got = (await http.get(f"/commands/{cid}")).json()
                state = got["state"]
                if state in ("confirmed", "failed"):
                    break
                await asyncio.sleep(0.05)
            assert state == "confirmed" and got["relay_state"] == relay, got
        assert not node.model.switch.relay_closed(meter.now())
        stop.set()
        await asyncio.wait_for(task, 10)
