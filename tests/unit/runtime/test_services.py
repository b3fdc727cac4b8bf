"""The key server and meter services over real sockets: SQLite store, IPv4 + IPv6, key rotation,
the RADIUS listener, and the epoch-aligned engine clock."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.conftest import loopback_hosts

from amistack.crypto import system_random
from amistack.eap.packet import EapCode, EapPacket, EapType
from amistack.keymgmt.events import KeysInstalled, KeysSuperseded
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.store import CredentialStore
from amistack.keymgmt.ukmf import KeyId, PurposeRegistry
from amistack.meter.events import AccessGranted
from amistack.pana.events import Authenticated
from amistack.pana.pac import PacConfig
from amistack.radius.packet import RadiusAttr, RadiusCode, RadiusPacket, build_request
from amistack.runtime.keyserver import (
    KeyServerRuntime,
    build_key_server,
    build_passthrough_key_server,
    build_radius_server,
    run_keyserver,
    start_keyserver,
)
from amistack.runtime.loop import new_event_loop
from amistack.runtime.meter import run_meter
from amistack.runtime.udp import EngineDriver

T = TypeVar("T")
PSK = bytes.fromhex("00112233445566778899aabbccddeeff")


def run_loop(fn: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(fn(), timeout))  # type: ignore[arg-type]
    finally:
        loop.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CredentialStore]:
    s = CredentialStore(tmp_path / "keys.db", FileKek(os.urandom(32), system_random))
    s.enroll("meter-1", PSK, time.time())
    yield s
    s.close()


def test_key_server_serves_ipv4_and_ipv6_on_one_port(store: CredentialStore) -> None:
    hosts = loopback_hosts()

    async def main() -> tuple[KeyServerRuntime, list[object], list[Any]]:
        events: list[object] = []
        engine = build_key_server(store, session_lifetime=600.0)
        rt = await start_keyserver(engine, hosts, 0, on_event=events.append)
        try:
            results = []
            for addr in rt.pana_addresses:
                results.append(await run_meter("meter-1", PSK, addr, once=True, timeout=5))
            results.append(await run_meter("meter-2", PSK, rt.pana_addresses[0], once=True))
            await asyncio.sleep(0.05)
            return rt, events, results
        finally:
            rt.close()

    rt, events, results = run_loop(main)
    assert len({port for _, port in rt.pana_addresses}) == 1  # both families share the port
    assert [a[0] for a in rt.pana_addresses] == hosts
    *good, unknown = results
    assert all(r.ok for r in good), [str(r) for r in good]
    assert not unknown.ok and unknown.reason  # not enrolled: a clear failure
    auth = [e for e in events if isinstance(e, Authenticated)]
    assert sorted(e.addr[0] for e in auth) == sorted(hosts)
    installed = [e for e in events if isinstance(e, KeysInstalled)]
    assert [e.peer_id for e in installed] == [b"meter-1"] * len(hosts)
    # the key server's clock is epoch-aligned: persisted expiry means the same after a restart
    assert abs(installed[0].not_after - (time.time() + 600.0)) < 30.0


def test_run_keyserver_until_stopped(store: CredentialStore) -> None:
    async def main() -> tuple[bool, str]:
        stop = asyncio.Event()
        ready: asyncio.Future[KeyServerRuntime] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(
            run_keyserver(store, ["127.0.0.1"], 0, stop=stop, ready=ready.set_result)
        )
        rt = await ready
        result = await run_meter("meter-1", PSK, rt.pana_addresses[0], once=True, timeout=5)
        stop.set()
        await task
        return result.ok, str(result)

    ok, text = run_loop(main)
    assert ok, text


def test_meter_rotates_keys_on_reauthentication(store: CredentialStore) -> None:
    async def main() -> tuple[list[AccessGranted], KeyRing, Any]:
        rotations: list[AccessGranted] = []
        stop = asyncio.Event()
        ring = KeyRing(b"meter-1", PurposeRegistry(), overlap=5.0)

        def on_rotation(r: AccessGranted) -> None:
            rotations.append(r)
            if len(rotations) == 3:
                stop.set()

        # Session-Lifetime is whole seconds: 1 s, re-authenticating at 30% of it
        engine = build_key_server(store, session_lifetime=1.0)
        rt = await start_keyserver(engine, ["127.0.0.1"], 0)
        try:
            result = await run_meter(
                "meter-1",
                PSK,
                rt.pana_addresses[0],
                config=PacConfig(reauth_fraction=0.3),
                stop=stop,
                on_rotation=on_rotation,
                keyring=ring,
            )
        finally:
            rt.close()
        return rotations, ring, result

    rotations, ring, result = run_loop(main)
    assert [r.reauth for r in rotations] == [False, True, True]
    assert len({r.session_id for r in rotations}) == 1
    assert [r.key_id for r in rotations] == [1, 2, 3]
    sid = rotations[0].session_id
    assert ring.key_ids() == [KeyId(sid, 1), KeyId(sid, 2), KeyId(sid, 3)]
    assert any(isinstance(e, KeysSuperseded) for e in rotations[1].key_events)
    assert result.ok and result.authentications == 3


def test_radius_listener_answers_an_access_request(store: CredentialStore) -> None:
    secret = b"radius-secret"

    async def main() -> bytes:
        pana = build_key_server(store)
        radius = build_radius_server(store, secret)
        rt = await start_keyserver(
            pana, ["127.0.0.1"], 0, radius_engine=radius, radius_listen=[("127.0.0.1", 0)]
        )
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.connect(rt.radius_addresses[0])
            identity = EapPacket(EapCode.RESPONSE, 1, EapType.IDENTITY, b"meter-1").encode()
            request = build_request(
                7,
                os.urandom(16),
                [(RadiusAttr.USER_NAME, b"meter-1"), (RadiusAttr.EAP_MESSAGE, identity)],
                secret,
            )
            await loop.sock_sendall(sock, request)
            return await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        finally:
            sock.close()
            rt.close()

    answer = RadiusPacket.decode(run_loop(main))
    assert answer.code == RadiusCode.ACCESS_CHALLENGE
    assert answer.identifier == 7
    eap = answer.eap_message()
    assert eap is not None
    first = EapPacket.decode(eap)
    assert first.code == EapCode.REQUEST and first.type == EapType.PSK


class _Clock:
    def __init__(self) -> None:
        self.seen: list[float] = []
        self.deadline: float | None = None
        self.fired: list[float] = []

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        self.seen.append(now)
        self.deadline = now + 0.02

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        return []

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        self.deadline = None

    def next_event(self) -> object | None:
        return None


def test_wall_clock_driver_sees_epoch_time_and_fires_timers() -> None:
    async def main() -> tuple[_Clock, float]:
        engine = _Clock()
        async with EngineDriver(engine, wall_clock=True) as d:
            addr = await d.bind("127.0.0.1")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"x", addr)
            while not engine.fired:
                await asyncio.sleep(0.01)
            return engine, time.time()

    engine, wall = run_loop(main)
    assert abs(engine.seen[0] - wall) < 1.0
    assert engine.fired[0] >= engine.seen[0] + 0.02


def test_pass_through_paa_authenticates_via_the_radius_listener(
    store: CredentialStore, tmp_path: Path
) -> None:
    """Meter -> PAA (EAP pass-through, RADIUS client socket) -> key server's RADIUS listener."""
    secret = b"radius-secret"
    edge_store = CredentialStore(tmp_path / "edge.db", FileKek(os.urandom(32), system_random))

    async def main() -> tuple[Any, list[object]]:
        home = await start_keyserver(
            build_key_server(store),
            ["127.0.0.1"],
            0,
            radius_engine=build_radius_server(store, secret),
            radius_listen=[("127.0.0.1", 0)],
        )
        edge_events: list[object] = []
        engine, backend = build_passthrough_key_server(
            edge_store, home.radius_addresses[0], secret, session_lifetime=600.0
        )
        edge = await start_keyserver(
            engine,
            loopback_hosts()[-1:],
            0,
            aaa_backend=backend,
            aaa_server=home.radius_addresses[0],
            on_event=edge_events.append,
        )
        try:
            result = await run_meter("meter-1", PSK, edge.pana_addresses[0], once=True, timeout=5)
            await asyncio.sleep(0.05)
            return result, edge_events
        finally:
            edge.close()
            home.close()

    try:
        result, edge_events = run_loop(main)
    finally:
        edge_store.close()
    assert result.ok, str(result)
    auth = [e for e in edge_events if isinstance(e, Authenticated)]
    assert len(auth) == 1 and auth[0].peer_id == b"meter-1"
    # keys were issued at the edge from the MSK the RADIUS server sent in MS-MPPE keys
    assert any(isinstance(e, KeysInstalled) for e in edge_events)
