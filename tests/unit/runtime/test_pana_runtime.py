"""The real PANA engines over real loopback UDP: meter (PaC) vs PAA, IPv4 and IPv6, the PaC mux."""

from __future__ import annotations

import asyncio
import pstats
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.conftest import require_ipv6_loopback

from amistack.bench.auth import bench_auth, bench_key_server_engine, bench_psk, pac_fleet
from amistack.pana import events as pana_events
from amistack.runtime.loop import new_event_loop
from amistack.runtime.meter import MeterResult, run_meter
from amistack.runtime.udp import EngineDriver

T = TypeVar("T")


def run_loop(fn: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(fn(), timeout))  # type: ignore[arg-type]
    finally:
        loop.close()


async def _meter_against_paa(
    host: str, psk: bytes, timeout: float = 5.0
) -> tuple[MeterResult, list[object]]:
    server_events: list[object] = []
    engine = bench_key_server_engine(devices=2, session_lifetime=600.0)
    async with EngineDriver(engine, on_event=server_events.append) as server:
        paa = await server.bind(host, 0)
        result = await run_meter(
            "bench-meter-00001", psk, paa, once=True, timeout=timeout, local_host=host
        )
        await asyncio.sleep(0.05)  # let the PAA take the last PAN in
        return result, server_events


@pytest.mark.parametrize(
    "host", [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6")]
)
def test_meter_once_authenticates(host: str) -> None:
    if host == "::1":
        require_ipv6_loopback()
    result, server_events = run_loop(lambda: _meter_against_paa(host, bench_psk(1)))
    assert result.ok, result.reason
    assert result.session_id is not None and result.key_id is not None
    assert result.lifetime == pytest.approx(600.0)
    auth = [e for e in server_events if isinstance(e, pana_events.Authenticated)]
    assert len(auth) == 1
    assert auth[0].peer_id == b"bench-meter-00001"
    assert auth[0].session_id == result.session_id
    assert auth[0].addr[0] == host
    assert "authenticated" in str(result)
    assert result.exit_code == 0


def test_meter_once_wrong_psk_reports_failure() -> None:
    result, server_events = run_loop(lambda: _meter_against_paa("127.0.0.1", b"\x00" * 16))
    assert not result.ok
    assert result.reason
    assert "failed" in str(result)
    assert not result.timed_out and result.exit_code == 1
    assert not any(isinstance(e, pana_events.Authenticated) for e in server_events)


def test_meter_once_times_out_without_a_paa() -> None:
    async def main() -> MeterResult:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        try:
            addr = silent.getsockname()
            return await run_meter("m", bench_psk(0), (addr[0], addr[1]), once=True, timeout=0.3)
        finally:
            silent.close()

    result = run_loop(main)
    assert not result.ok
    assert "no answer" in result.reason
    assert result.timed_out and result.exit_code == 2


def test_pac_fleet_multiplexes_many_clients_per_socket() -> None:
    async def main() -> dict[str, Any]:
        engine = bench_key_server_engine(devices=5)
        async with EngineDriver(engine) as server:
            paa = await server.bind("127.0.0.1", 0)
            return await pac_fleet(paa, sessions=40, concurrency=12, devices=5, sockets=3)

    result = run_loop(main)
    assert result["failures"] == 0, result["failure_reasons"]
    assert result["completed"] == 40
    assert 0 < result["p50_ms"] <= result["p99_ms"]


def test_bench_auth_small_run_reports_every_key(tmp_path: Path) -> None:
    result = bench_auth(
        sessions=60, concurrency=8, echo_seconds=0.2, timeout=30.0, profile_dir=str(tmp_path)
    )
    # both sides profiled: the server's stats saw the PAA, the PaC process's saw the PaCs
    server = pstats.Stats(str(tmp_path / "server.pstats"))
    pacs = pstats.Stats(str(tmp_path / "pacs-0.pstats"))
    assert any(f.endswith("paa.py") for f, _, _ in server.stats)  # type: ignore[attr-defined]
    assert any(f.endswith("pac.py") for f, _, _ in pacs.stats)  # type: ignore[attr-defined]
    for key in ("auths_per_s", "udp_echo_per_s", "p50_ms", "p99_ms", "sessions", "concurrency"):
        assert key in result
    assert result["failures"] == 0, result["failure_reasons"]
    assert result["completed"] == 60
    assert result["auths_per_s"] > 0 and result["udp_echo_per_s"] > 0
    assert result["uvloop"] is True


def test_bench_auth_two_pac_processes_against_the_store_backed_key_server() -> None:
    result = bench_auth(
        sessions=40, concurrency=8, processes=2, server="keyserver", echo_seconds=0.1
    )
    assert result["failures"] == 0, result["failure_reasons"]
    assert result["completed"] == 40
    assert result["client_processes"] == 2 and result["server"] == "keyserver"
    # the key server really issued keys: one successful authentication per session
    assert result["server_counters"].get("auth-success") == 40
