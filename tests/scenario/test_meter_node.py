"""A whole meter over real loopback UDP: it authenticates to a real key server (PANA/EAP-PSK),
serves C12.22 under the UKMF key, and a head-end engine that gets its keys from the key server
(in-process key distribution) reads it, commands its switch, receives its pushes, across key
rotations; the meter's signed event log records it all."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import require_ipv6_loopback

from amistack.addr import Addr
from amistack.c1222.acse import ApTitle
from amistack.c1222.endpoint import C1222Client, EndpointConfig
from amistack.c1222.events import RequestReceived, ResponseReceived
from amistack.c1222.security import key_id_byte
from amistack.c1222.services import ReadResult, Write
from amistack.c1222.tables import (
    CurrentRegisters,
    LoadProfile,
    ProcedureResponse,
    Table,
    remote_switch,
)
from amistack.crypto import system_random
from amistack.eventlog import layout
from amistack.eventlog.log import EventLog
from amistack.eventlog.record import EventRecord, EventType
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.server import IssuedKey
from amistack.keymgmt.store import CredentialStore
from amistack.keymgmt.ukmf import C1222
from amistack.meter.events import AccessGranted
from amistack.meter.node import MeterNode, PushConfig
from amistack.pana.pac import PacConfig
from amistack.runtime.keyserver import build_key_server, start_keyserver
from amistack.runtime.loop import new_event_loop
from amistack.runtime.meter_node import run_meter_node
from amistack.runtime.udp import EngineDriver

PSK = bytes.fromhex("00112233445566778899aabbccddeeff")
DEVICE = "meter-1"
METER_TITLE = ApTitle.parse(".0.7.1")
HEADEND_TITLE = ApTitle.parse(".0.1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CredentialStore]:
    s = CredentialStore(tmp_path / "keys.db", FileKek(os.urandom(32), system_random))
    s.enroll(DEVICE, PSK, time.time())
    yield s
    s.close()


class HeadEndKeys:
    """The head-end's C12.22 keys for one meter, from the key server (`current_key`, and the
    generations seen before it while they are valid: the overlap window)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.seen: dict[Any, IssuedKey] = {}

    def _refresh(self, now: float) -> None:
        cur = self.server.current_key(DEVICE.encode(), C1222, now)
        if cur is not None:
            self.seen[cur.key_id] = cur
        for kid in list(self.seen):
            again = self.server.key_for(kid, C1222, now)
            if again is None:
                del self.seen[kid]
            else:
                self.seen[kid] = again

    def lookup(self, device_id: bytes, key_id: int, now: float) -> list[bytes]:
        assert device_id == METER_TITLE.device_id
        self._refresh(now)
        return [k.key for k in self.seen.values() if key_id_byte(k.key_id) == key_id]

    def send_key(self, device_id: bytes, now: float) -> tuple[int, bytes] | None:
        cur = self.server.current_key(DEVICE.encode(), C1222, now)
        return None if cur is None else (key_id_byte(cur.key_id), cur.key)


async def _scenario(host: str, data_dir: Path, store: CredentialStore) -> dict[str, Any]:
    out: dict[str, Any] = {"rotations": [], "pushes": [], "answers": []}
    stop = asyncio.Event()
    ready: asyncio.Future[tuple[MeterNode, list[Addr]]] = asyncio.get_running_loop().create_future()
    authenticated = asyncio.Event()
    # lifetime 4 s, re-authentication at half of it: a key rotation every ~2 s
    engine = build_key_server(store, session_lifetime=4.0)
    rt = await start_keyserver(engine, [host], 0)
    keys = HeadEndKeys(engine)
    client = C1222Client(
        EndpointConfig(HEADEND_TITLE, response_timeout=1.0), keys.lookup, keys.send_key,
        system_random,
    )  # fmt: skip
    events: asyncio.Queue[object] = asyncio.Queue()
    # the key server's clock is epoch-aligned; the head-end uses the same one for its keys
    headend = EngineDriver(client, events=events, wall_clock=True)
    try:
        headend_addr = await headend.bind(host, 0)

        def on_rotation(r: AccessGranted) -> None:
            out["rotations"].append(r)
            authenticated.set()

        meter = asyncio.ensure_future(
            run_meter_node(
                DEVICE,
                PSK,
                rt.pana_addresses[0],
                headend_addr,
                ap_title=METER_TITLE,
                headend_title=HEADEND_TITLE,
                listen=[host],
                local_host=host,
                time_scale=900.0,  # a quarter hour a second
                push=PushConfig(enabled=True, min_offset_s=5, max_offset_s=200),
                data_dir=data_dir,
                pac_config=PacConfig(reauth_fraction=0.5),
                stop=stop,
                on_rotation=on_rotation,
                on_ready=lambda node, addrs: ready.set_result((node, addrs)),
            )
        )
        node, addrs = await asyncio.wait_for(ready, 5)
        meter_addr = addrs[0]
        out["node"] = node
        # before the first authentication the meter answers nothing (it may already be done:
        # then the early read is simply answered)
        await asyncio.wait_for(authenticated.wait(), 10)

        async def ask(send: Any) -> ResponseReceived:
            for _ in range(40):  # at a rotation under load the key server may briefly have no
                try:  # current key for the meter (the head-end proper retries the same way)
                    rid = send(headend.now())
                    break
                except ValueError:
                    out["no_key_waits"] = out.get("no_key_waits", 0) + 1
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("no C12.22 key to send with for 2 s")
            headend.kick()
            while True:
                ev = await asyncio.wait_for(events.get(), 5)
                if isinstance(ev, RequestReceived):
                    out["pushes"].append(ev)
                elif isinstance(ev, ResponseReceived) and ev.request_id == rid:
                    return ev

        regs = await ask(
            lambda now: client.read(meter_addr, METER_TITLE, Table.CURRENT_REGISTER_DATA, now)
        )
        out["registers"] = CurrentRegisters.decode(ReadResult.decode(regs.responses[0].data).data)
        off = await ask(lambda now: client.procedure(meter_addr, METER_TITLE,
                                                     remote_switch(1, False), now))  # fmt: skip
        out["off"] = ProcedureResponse.decode(ReadResult.decode(off.responses[1].data).data)
        on = await ask(lambda now: client.procedure(meter_addr, METER_TITLE,
                                                    remote_switch(2, True), now))  # fmt: skip
        out["on"] = ProcedureResponse.decode(ReadResult.decode(on.responses[1].data).data)
        # keep reading through key rotations: every read must be answered
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            ans = await ask(lambda now: client.read(meter_addr, METER_TITLE, Table.CLOCK, now))
            out["answers"].append(ans.ok)
            await asyncio.sleep(0.1)
        while not events.empty():
            ev = events.get_nowait()
            if isinstance(ev, RequestReceived):
                out["pushes"].append(ev)
        stop.set()
        out["result"] = await asyncio.wait_for(meter, 5)
        out["client_counters"] = dict(client.counters)
    finally:
        stop.set()
        headend.close()
        rt.close()
    return out


@pytest.mark.parametrize(
    "host", [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6")]
)
def test_meter_node_over_udp_with_a_real_key_server(
    host: str, tmp_path: Path, store: CredentialStore
) -> None:
    if host == "::1":
        require_ipv6_loopback()
    loop = new_event_loop()
    try:
        out = loop.run_until_complete(
            asyncio.wait_for(_scenario(host, tmp_path / "meter", store), 40)
        )
    finally:
        loop.close()
    node: MeterNode = out["node"]
    assert out["registers"].active_forward_wh > 0
    assert out["off"].data == b"\x00" and out["on"].data == b"\x01"
    # several key generations, and not one read lost across them
    assert len(out["rotations"]) >= 3, out["rotations"]
    assert out["answers"] and all(out["answers"])
    assert out["client_counters"].get("auth-failed", 0) == 0
    assert node.server.counters["auth-failed"] == 0
    # pushes: 15-minute load profiles, acknowledged, under more than one generation
    pushes = [p for p in out["pushes"] if isinstance(p.requests[0], Write)]
    assert len(pushes) >= 4
    lp = LoadProfile.decode(pushes[-1].requests[0].data)  # type: ignore[attr-defined]
    assert lp.interval_minutes == 15 and lp.end_time % 900 == 0 and lp.intervals
    assert len({p.key_id for p in pushes}) >= 2
    assert node.counters["pushes-acked"] >= len(pushes) - 1
    # the signed event log: key rotations and both switch operations
    log = EventLog.open(layout.log_path(tmp_path / "meter", DEVICE), DEVICE, None, time.time())
    try:
        types = [i.type for i in log.items() if isinstance(i, EventRecord)]
        assert types.count(EventType.KEY_ROTATED) == len(out["rotations"])
        assert EventType.SWITCH_OPENED in types and EventType.SWITCH_CLOSED in types
        assert log.heads
    finally:
        log.close()
